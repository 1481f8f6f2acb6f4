"""Encoding precision: `auto` follows the CPU's flags, every name maps to what the encoder takes, int8 and
bf16 encode close to float32 without changing the encoder, and `auto` enters records and hashes resolved."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridnb.models import precision
from tiny_models import WORDS, save_tiny_bert


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    from hybridnb.models.encoders import Encoder

    return Encoder.from_pretrained(save_tiny_bert(tmp_path_factory.mktemp("precision") / "bert", dropout=0.0))


@pytest.fixture
def flags(monkeypatch):
    def set_flags(*names):
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(names))
    return set_flags


def test_auto_is_bf16_only_with_native_bf16(flags):
    flags("avx2", "fma")                                   # AMD EPYC (AVX2 only): bf16 would be emulated
    assert precision.resolve("auto") == "float32" and precision.encode_arg("auto") is None
    flags("avx512f", "avx512_bf16", "avx512_vnni")         # Zen 4
    assert precision.resolve("auto") == "bfloat16" and precision.encode_arg("auto") is torch.bfloat16
    flags("avx512f", "amx_bf16", "amx_tile")               # Sapphire Rapids
    assert precision.resolve("auto") == "bfloat16"


def test_every_name_maps_and_a_bad_one_is_named():
    assert precision.encode_arg("float32") is None
    assert precision.encode_arg("bfloat16") is torch.bfloat16
    assert precision.encode_arg("float16") is torch.float16
    assert precision.encode_arg("int8") == "int8"
    assert precision.resolve("int8") == "int8"
    with pytest.raises(ValueError, match="unknown encode_dtype 'int4'"):
        precision.resolve("int4")


def test_cpu_flags_reads_this_machine():
    flags = precision.cpu_flags()
    assert isinstance(flags, frozenset)
    if flags:  # Linux: every x86-64 CPU this runs on has SSE2
        assert "sse2" in flags or "fp" in flags  # (arm64 lists 'fp')


def test_int8_and_bf16_encode_close_to_float32_and_leave_the_encoder_alone(tiny_encoder):
    texts = [" ".join(WORDS[i:i + n]) for i, n in ((0, 3), (5, 8), (11, 12))]
    before = {k: v.clone() for k, v in tiny_encoder.state_dict().items()}
    exact = tiny_encoder.encode(texts, role="query", show_progress=False)
    int8 = tiny_encoder.encode(texts, role="query", show_progress=False, autocast_dtype="int8")
    bf16 = tiny_encoder.encode(texts, role="query", show_progress=False, autocast_dtype=torch.bfloat16)
    for approx in (int8, bf16):
        cos = (exact * approx).sum(1) / np.linalg.norm(exact, axis=1) / np.linalg.norm(approx, axis=1)
        assert cos.min() > 0.98 and not np.array_equal(approx, exact)
    after = tiny_encoder.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not any("quantized" in type(m).__module__ for m in tiny_encoder.modules())
    with pytest.raises(ValueError, match="'int8'"):
        tiny_encoder.encode(texts, role="query", show_progress=False, autocast_dtype="int4")


def test_auto_enters_the_run_hash_resolved(flags):
    from hybridnb import config
    from hybridnb.studies import runs, zero_shot

    base = {**config.load_profile("ci"), "strategy": "hybrid", "run_name": None}
    flags("avx2")
    on_avx2 = runs.check_run({**base, "encode_dtype": "auto"})
    assert on_avx2.encode_dtype == "float32"
    assert on_avx2.hash == runs.check_run({**base, "encode_dtype": "float32"}).hash
    flags("amx_bf16")
    on_amx = runs.check_run({**base, "encode_dtype": "auto"})
    assert on_amx.encode_dtype == "bfloat16" and on_amx.hash != on_avx2.hash
    assert zero_shot.model_record("m", 64, "sentence", "auto")["encode_dtype"] == "bfloat16"
    trains = runs.check_run({**base, "train_dtype": "auto"})          # on this CPU: bf16 autocast
    assert trains.train_dtype == "bfloat16" and trains.hash == runs.check_run({**base, "train_dtype": "bfloat16"}).hash


def test_trainer_auto_follows_the_hardware(flags):
    from hybridnb.training import trainer

    flags("avx2")
    assert trainer.autocast_dtype("auto", torch.device("cpu")) is None
    flags("avx512_bf16")
    assert trainer.autocast_dtype("auto", torch.device("cpu")) is torch.bfloat16
    assert trainer.autocast_dtype("float32", torch.device("cpu")) is None
