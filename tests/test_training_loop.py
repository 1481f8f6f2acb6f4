"""The one training loop (``hybridnb.training.loop``) computes what the text and image-text loops before it computed.

``tests/fixtures/loop_golden.json`` holds the numbers of four tiny runs (two text, two image-text; every log
field but the timings, the best step, a sha256 of the weights) as the two separate loops of commit 279fed1
computed them (``tests/golden_runs.py`` says how it was written). Today's code must give the same numbers: bit
for bit on the machine kind that recorded them (same torch version and CPU capability, so the same float
kernels); elsewhere each number within 1e-5 relative (another CPU's kernels may round differently) and the
weights' checksums are not compared.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import golden_runs

FIXTURE = Path(__file__).parent / "fixtures" / "loop_golden.json"
GOLDEN = json.loads(FIXTURE.read_text())
SAME_KERNELS = GOLDEN["machine"] == golden_runs.machine()


@pytest.fixture(scope="module")
def now():
    return golden_runs.run_all()


@pytest.mark.parametrize("name", list(GOLDEN["runs"]))
def test_a_tiny_run_gives_the_numbers_of_the_loops_before_the_merge(now, name):
    expected, got = GOLDEN["runs"][name], now[name]
    if SAME_KERNELS:
        assert got == expected  # every logged number, the best step, the weights' sha256
        return
    assert [r.keys() for r in got["log"]] == [r.keys() for r in expected["log"]]
    for mine, theirs in zip(got["log"], expected["log"]):
        for key, value in theirs.items():
            if isinstance(value, float):
                assert mine[key] == pytest.approx(value, rel=1e-5), (mine["step"], key)
            else:
                assert mine[key] == value, (mine["step"], key)
    assert got["best_step"] == expected["best_step"]
    assert got["best_val_loss"] == pytest.approx(expected["best_val_loss"], rel=1e-5)
