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


def _finish(cfg, stamp=None):
    """A finished run folder of ``cfg`` as far as the reuse look needs: config.json with its hash, results.json."""
    import json
    import os

    from hybridnb.training import run_folder

    folder = run_folder.run_dirs(cfg)[0]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"hash": cfg.hash}))
    (folder / "results.json").write_text("{}")
    if stamp is not None:
        os.utime(folder / "results.json", (stamp, stamp))


def test_auto_reuses_a_finished_run_of_either_precision_bf16_first(flags, tmp_path, monkeypatch):
    """On an AVX2-only CPU `auto` computes float32, another hash than the committed bf16 runs': a finished bf16 run
    stands in (reused, not retrained); where both precisions have finished, every machine reads the bf16 one (the
    same report everywhere); FRESH (results older than the cutoff do not count) computes this machine's precision;
    a run asked for in an explicit precision is never swapped."""
    from hybridnb import config
    from hybridnb.studies import runs

    monkeypatch.setenv("HYBRIDNB_REPORTS", str(tmp_path / "reports"))
    monkeypatch.delenv("HYBRIDNB_FRESH_SINCE", raising=False)
    base = {**config.load_profile("ci"), "strategy": "hybrid", "run_name": None, "train_dtype": "auto",
            "encode_dtype": "auto"}
    explicit = {**base, "train_dtype": "float32", "encode_dtype": "float32"}
    flags("amx_bf16")
    bf16 = runs.check_run(base)
    assert (bf16.train_dtype, bf16.encode_dtype) == ("bfloat16", "bfloat16")
    flags("avx2")
    fp32 = runs.check_run(explicit)
    assert runs.check_run(base).hash == fp32.hash                       # nothing finished: this machine's
    _finish(bf16, stamp=1_000_000)
    stood_in = runs.check_run(base)
    assert stood_in.hash == bf16.hash and stood_in.train_dtype == "bfloat16" and stood_in.run_name == bf16.run_name
    assert runs.check_run(explicit).hash == fp32.hash                  # asked by name: never swapped
    monkeypatch.setenv("HYBRIDNB_FRESH_SINCE", "2000000")              # FRESH=1: the old bf16 run does not count
    assert runs.check_run(base).hash == fp32.hash
    monkeypatch.delenv("HYBRIDNB_FRESH_SINCE")
    _finish(fp32)                                                       # both finished (fp32 under its -fp32 name)
    assert fp32.run_name != bf16.run_name
    assert runs.check_run(base).hash == bf16.hash                       # bf16 first, on this machine ...
    flags("amx_bf16")
    assert runs.check_run(base).hash == bf16.hash                       # ... and on a bf16 machine
    only_train = runs.check_run({**base, "encode_dtype": "float32"})    # one key auto: only that one varies, and
    assert only_train.hash == fp32.hash                                 # float32 training has finished: reused
    nothing = runs.check_run({**base, "encode_dtype": "float32", "lr": 1e-4})
    assert (nothing.encode_dtype, nothing.train_dtype) == ("float32", "bfloat16")  # none finished: this machine's


def test_a_zero_shot_result_of_the_other_precision_is_found_for_auto(flags, tmp_path, monkeypatch):
    from hybridnb.studies import zero_shot

    monkeypatch.setenv("HYBRIDNB_REPORTS", str(tmp_path / "reports"))
    flags("amx_bf16")
    saved = zero_shot.model_record("m", 64, "sentence", "auto")
    folder = tmp_path / "zs"
    folder.mkdir()
    import json

    (folder / "results.json").write_text(json.dumps({"model": saved, "datasets": {}}))
    monkeypatch.setattr(zero_shot.run_folder.file_hashes, "check_result_folder", lambda folder, remake: None)
    flags("avx2")
    here = zero_shot.model_record("m", 64, "sentence", "auto")
    assert here["encode_dtype"] == "float32"
    assert zero_shot.find(folder, here, {}, 10, 0) is None                       # as before: no stand-in asked
    assert zero_shot.find(folder, here, {}, 10, 0, "auto")["model"] == saved     # auto: the bf16 result stands in
    assert zero_shot.find(folder, here, {}, 10, 0, "float32") is None            # an explicit precision: never
