"""benchmarks/bench_spine.py's bookkeeping (issue #35): which steps are timed, how rounds pair into ratios, the
"no slower" rule, the encoded subset, and that a revision's tree imports its own hybridnb. The end-to-end run
(models, two revisions) is the benchmark itself; these parts decide what its verdict says."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_spine.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_spine", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_spine = _module()


def _train_round(periods: list[float]) -> dict:
    # periods[i - 1]: the time from step i-1's AdamW step to step i's
    steps = len(periods) + 1
    return {"step_period_s": periods, "loop_step_s": [0.5] * steps, "loss": [1.0] * steps, "max_rss_mb": 100.0,
            "autocast": "float32", "config_class": "x.TextTraining"}


def test_warmup_steps_are_left_out_of_the_step_time():
    # 5 steps, warm-up 2: steps 0 and 1 untimed; steps 2, 3, 4 take 1, 2, 3 s (periods 2..4, at index 1..3)
    summary = bench_spine.summarise_train([_train_round([50.0, 1.0, 2.0, 3.0])], warmup=2, batch_size=4)
    assert summary["s_per_step_median"] == 2.0
    assert summary["pairs_per_s"] == pytest.approx(4 * 3 / 6.0)
    assert summary["s_per_step_rounds"] == [2.0]


def test_rounds_pair_into_ratios_and_the_rule_needs_the_spread_to_reach_one():
    before = {"pairs_per_s": 10.0, "pairs_per_s_rounds": [10.0, 10.0, 10.0]}
    overlapping = bench_spine.comparison(before, {"pairs_per_s": 9.9, "pairs_per_s_rounds": [9.5, 10.2, 9.9]},
                                         "pairs_per_s")
    assert overlapping["ratio_rounds"] == pytest.approx([0.95, 1.02, 0.99])
    assert overlapping["verdict"] == "no slower"
    above = bench_spine.comparison(before, {"pairs_per_s": 11.0, "pairs_per_s_rounds": [10.5, 11.0, 11.5]},
                                   "pairs_per_s")
    assert above["verdict"] == "no slower"
    below = bench_spine.comparison(before, {"pairs_per_s": 9.0, "pairs_per_s_rounds": [8.8, 9.0, 9.9]},
                                   "pairs_per_s")
    assert below["spread"] == pytest.approx([0.88, 0.99])
    assert below["verdict"] == "slower"


def test_round_order_alternates():
    assert [bench_spine.round_order(r) for r in range(3)] == [("before", "after"), ("after", "before"),
                                                              ("before", "after")]


def test_eval_subset_is_evenly_spaced_and_capped():
    texts = [f"t{i}" for i in range(10)]
    assert bench_spine.eval_subset(texts, 5) == ["t0", "t2", "t4", "t6", "t8"]
    assert bench_spine.eval_subset(texts, 50) == texts


def test_a_worker_refuses_a_hybridnb_from_outside_its_tree(tmp_path):
    # the side's tree holds no hybridnb: the one found elsewhere (this checkout, or an editable install) must not do
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(SCRIPT), "--worker", "prepare", json.dumps({"tree": str(tmp_path)})],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "not from the side's tree" in proc.stderr


def test_an_exported_revision_imports_its_own_hybridnb(tmp_path):
    head = bench_spine.git("rev-parse", "HEAD")
    tree = bench_spine.export_tree(head, tmp_path / "after")
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, "-c", "import hybridnb; print(hybridnb.__file__)"], cwd=tree, env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert Path(out).resolve().is_relative_to(tree.resolve())
    assert (tree / "pyproject.toml").exists() and (tree / "params" / "cpu.yaml").exists()
