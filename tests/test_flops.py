"""The FLOP count from an encoder's shapes (against torch's own count of a real model) and the nominal CPU peak."""

import pytest
import torch

from hybridnb.models import flops

E5_SMALL = flops.EncoderShape(hidden=384, intermediate=1536, layers=12, heads=12)


def test_e5_small_per_token_count_by_hand():
    # 12 layers x (Q, K, V, O: 4 x 384^2; FFN: 2 x 384 x 1536) weights, 2 FLOPs per multiply-add
    assert E5_SMALL.matmul_params() == 21_233_664
    one = flops.encoder_forward_flops(E5_SMALL, [10])
    assert one["matmul"] == 2 * 21_233_664 * 10
    assert one["attention"] == 12 * 4 * 384 * 10 * 10
    assert one["total"] == one["matmul"] + one["attention"]


def test_padded_count_exceeds_useful_count_by_the_padding():
    counts = flops.padded_and_useful(E5_SMALL, [[10, 5], [3]])
    assert counts["tokens_padded"] == 2 * 10 + 3 and counts["tokens_real"] == 18
    assert counts["executed"] == flops.encoder_forward_flops(E5_SMALL, [10, 10, 3])["total"]
    assert counts["useful"] == flops.encoder_forward_flops(E5_SMALL, [10, 5, 3])["total"]


def _tiny_bert():
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=32, attn_implementation="eager")
    torch.manual_seed(0)
    return BertModel(cfg, add_pooling_layer=False).eval()


def test_count_matches_torch_flop_counter_forward_and_backward():
    from torch.utils.flop_counter import FlopCounterMode

    model = _tiny_bert()
    shape = flops.encoder_shape(model.config)
    ids = torch.randint(3, 50, (3, 7))
    counter = FlopCounterMode(display=False)
    with counter:
        model(input_ids=ids).last_hidden_state.sum()
    forward = flops.encoder_forward_flops(shape, [7, 7, 7])["total"]
    assert counter.get_total_flops() == forward
    counter = FlopCounterMode(display=False)
    with counter:
        model(input_ids=ids).last_hidden_state.sum().backward()
    assert counter.get_total_flops() == flops.TRAINING_FACTOR * forward


CPUINFO = """processor\t: 0
vendor_id\t: {vendor}
cpu family\t: {family}
model name\t: Test CPU
cpu MHz\t\t: 2000.000
siblings\t: {siblings}
cpu cores\t: {cores}
flags\t\t: fpu {flags}

processor\t: 1
vendor_id\t: {vendor}
"""


def _info(vendor="GenuineIntel", family=6, flags="avx2 fma", siblings=2, cores=2):
    return flops.cpu_info(CPUINFO.format(vendor=vendor, family=family, flags=flags, siblings=siblings, cores=cores))


def test_cpuinfo_fields():
    info = _info(siblings=4, cores=2)
    assert info.model_name == "Test CPU" and info.family == 6 and info.mhz == 2000.0
    assert info.threads_per_core == 2 and "avx2" in info.flags


@pytest.mark.parametrize("vendor, family, flags, dtype, per_cycle", [
    ("GenuineIntel", 6, "avx2 fma avx512f avx512_bf16 amx_bf16", "bfloat16", 1024),
    ("GenuineIntel", 6, "avx2 fma avx512f avx512_bf16 amx_bf16", "float32", 64),
    ("AuthenticAMD", 25, "avx2 fma avx512f avx512_bf16", "bfloat16", 64),     # Zen 4
    ("AuthenticAMD", 25, "avx2 fma avx512f avx512_bf16", "float32", 32),
    ("AuthenticAMD", 26, "avx2 fma avx512f avx512_bf16", "bfloat16", 128),    # Zen 5
    ("AuthenticAMD", 23, "avx2 fma", "bfloat16", 32),                         # emulated bf16: fp32's peak
])
def test_nominal_peak_per_cycle(vendor, family, flags, dtype, per_cycle):
    peak = flops.nominal_peak(_info(vendor, family, flags), dtype, threads=1)
    assert peak["flops_per_cycle_per_core"] == per_cycle
    assert peak["flops"] == pytest.approx(1 * 2.0e9 * per_cycle)
    assert flops.nominal_peak(_info(vendor, family, flags), dtype, ghz=3.0)["ghz"] == 3.0
