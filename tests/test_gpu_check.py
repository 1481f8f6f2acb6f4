"""benchmarks/gpu_check.py --dry-run: the GPU check's own code on CPU with tiny sizes (issue #22).

The GPU machine runs the same script at the paper's sizes (benchmarks/gpu_check.sh); here one dry run, after a
dry --prepare (tokenised XQuAD-R candidates, the E5 tokenizer, the tiny profile's raw files), must fill every
part with numbers, find GradCache's loss and gradients equal to the plain step's, and kill and resume a
torchrun training run through the CLI.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REAL_MIRROR, needs_mirror

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"

pytestmark = [needs_mirror, pytest.mark.slow]


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = _module()


def _torchrun_unavailable() -> str | None:
    import torch.distributed

    if not torch.distributed.is_available():
        return "this torch build has no torch.distributed, so torchrun cannot run here"
    if importlib.util.find_spec("torch.distributed.run") is None:
        return "torch.distributed.run (torchrun) is missing from this torch build"
    return None


TORCHRUN_SKIP = _torchrun_unavailable()


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "HYBRIDNB_CACHE": str(tmp / "cache"), "HYBRIDNB_MIRROR": str(REAL_MIRROR),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for cmd in ([sys.executable, str(SCRIPT), "--prepare", str(tmp / "data"), "--dry-run"],
                [sys.executable, str(SCRIPT), "--dry-run", "--data", str(tmp / "data"), "--out", str(tmp / "out" / "gpu.json"),
                 "--parts", "steps,encode" if TORCHRUN_SKIP else "steps,encode,torchrun"]):
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp / "out" / "gpu.json").read_text(encoding="utf-8"))
    return doc, tmp


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def test_every_part_ran_and_the_report_holds_the_environment(dry_run):
    doc, tmp = dry_run
    assert doc["schema"] == gpu_check.SCHEMA and doc["dry_run"] is True
    assert doc["environment"]["torch"] and "driver" in doc["environment"] and "cuda_runtime" in doc["environment"]
    expected = ["steps", "encode"] + ([] if TORCHRUN_SKIP else ["torchrun"])
    assert list(doc["parts"]) == expected
    for name, part in doc["parts"].items():
        assert part["status"] == "ok", (name, part.get("error"), part.get("log_tail"))
        assert _number(part["wall_s"]) and part["wall_s"] <= part["limit_s"]
    md = (tmp / "out" / "gpu.md").read_text(encoding="utf-8")
    for heading in ("## Training steps", "## GradCache vs the plain step", "## Encoding the XQuAD-R candidates"):
        assert heading in md
    assert (tmp / "cache" / "gpu-check-logs" / "gpu_check_steps.log").is_file()


def test_step_times_for_both_models_dtypes_and_gradcache(dry_run):
    doc, _ = dry_run
    steps = [r for r in doc["parts"]["steps"]["records"] if r["kind"] == "step"]
    seen = {(r["model"], r["dtype"], r["gradcache"]) for r in steps}
    assert seen == {(m, d, g) for m in gpu_check.MODELS for d in ("float32", "bfloat16") for g in (False, True)}
    size = gpu_check.SIZES["dry"]
    for r in steps:
        assert "error" not in r, r
        assert len(r["step_s"]) == size["warmup"] + size["timed"] and all(_number(t) and t > 0 for t in r["step_s"])
        assert _number(r["median_step_s"]) and _number(r["pairs_per_s"]) and r["pairs_per_s"] > 0
        assert all(_number(x) for x in r["losses"])
        assert r["matmul_dtype"] == [r["dtype"]]  # on CPU the autocast reaches the matmuls


def test_gradcache_loss_and_gradients_match_the_plain_step(dry_run):
    doc, _ = dry_run
    agree = [r for r in doc["parts"]["steps"]["records"] if r["kind"] == "agreement"]
    assert {(r["model"], r["dtype"], r["dropout"]) for r in agree} == {
        (m, d, o) for m in gpu_check.MODELS for d in ("float32", "bfloat16") for o in (False, True)}
    for r in agree:
        assert r["passed"], r
        for key in ("loss_plain", "loss_gradcache", "loss_rel_diff", "max_abs", "max_rel", "rel_norm"):
            assert _number(r[key]), (key, r)
        assert r["rel_norm"] <= gpu_check.TOLERANCES[r["dtype"]]["grad_rel_norm"]
        assert r["grad_norm"] > 0
    fp32 = [r for r in agree if r["dtype"] == "float32"]
    assert max(r["rel_norm"] for r in fp32) < 1e-4  # on CPU fp32 the two paths agree to rounding
    assert doc["checks"]["gradcache_matches_plain"] and doc["checks"]["trainer_bf16_autocast_reaches_matmuls"]


def test_encoding_rates_of_the_prepared_candidates(dry_run):
    doc, _ = dry_run
    recs = doc["parts"]["encode"]["records"]
    cand = next(r for r in recs if r["kind"] == "candidates")
    assert cand["n"] == gpu_check.SIZES["dry"]["encode_max"] and cand["tokens"] > cand["n"]
    assert cand["candidate_mode"] == "sentence+context" and cand["max_length"] == 256
    enc = [r for r in recs if r["kind"] == "encode"]
    assert {(r["model"], r["dtype"]) for r in enc} == {(m, d) for m in gpu_check.MODELS for d in ("float32", "bfloat16")}
    for r in enc:
        assert "error" not in r and r["finite"] and r["n"] == cand["n"], r
        assert _number(r["passages_per_s"]) and r["passages_per_s"] > 0 and _number(r["tokens_per_s"])


@pytest.mark.skipif(TORCHRUN_SKIP is not None, reason=str(TORCHRUN_SKIP))
def test_torchrun_cli_run_is_killed_after_its_first_checkpoint_and_resumes(dry_run):
    doc, _ = dry_run
    part = doc["parts"]["torchrun"]
    assert part["passed"], (part.get("error"), part.get("traceback"), part.get("checks"))
    assert all(part["checks"].values()) and part["checks"]["trained_on_cpu"]
    size = gpu_check.SIZES["dry"]
    killed, resumed = part["killed_run"], part["resumed_run"]
    assert killed["exit"] == -9 and 0 < killed["checkpoint_step"] < size["train_steps"]
    assert killed["checkpoint_step"] == size["save_every"]  # killed after the first checkpoint
    assert resumed["exit"] == 0 and resumed["resumed_from"] == killed["checkpoint_step"]
    assert resumed["log_steps"] == list(range(size["train_steps"]))
    assert resumed["final_checkpoint_step"] == size["train_steps"]
    assert "torch.distributed.run --standalone --nproc_per_node 1 -m hybridnb train" in part["command"]
    assert doc["checks"]["torchrun_kill_resume"] and doc["passed"]


def test_a_dry_run_never_writes_into_reports():
    from hybridnb.paths import cache_root, reports_root

    assert gpu_check.default_out(dry_run=True).is_relative_to(cache_root())
    assert gpu_check.default_out(dry_run=False) == reports_root() / "benchmarks" / "gpu.json"


def test_the_device_command_fits_the_tool():
    sh = (ROOT / "benchmarks" / "gpu_check.sh").read_text(encoding="utf-8")
    command = "bash benchmarks/gpu_check.sh device " + "0" * 40 + "+dirty"
    assert len(command) <= 2000 and 'carry:     ["cache/gpu-check"]' in sh
    limits = gpu_check.LIMITS
    assert sum(limits.values()) + 30 <= 420  # the parts' own limits end well inside the call's timeout_s
