"""hybridnb.studies.sweep: the mix-ratio points, their up-front checks, and sharing the baseline runs."""

from __future__ import annotations

import pytest
import yaml

from hybridnb import config, pipeline
from hybridnb.studies import runs, sweep


def ci_profile(**change):
    return {**config.load_profile("ci"), **change}


def test_sweep_points_cover_alphas_and_mixtures_and_share_the_baseline_runs():
    cpu = config.load_profile("cpu")  # the full grid (the ci profile sweeps a smaller one)
    profile = ci_profile(alphas=cpu["alphas"], mixtures=cpu["mixtures"])
    points = sweep.sweep_points(profile)
    labels = [label for label, _ in points]
    assert labels == ["alpha=0", "alpha=0.25", "alpha=0.5", "alpha=0.75", "alpha=1",
                      "mix-mixed0.5-mono0.5", "mix-cross0.5-mixed0.5", "mix-cross0.33-mixed0.33-mono0.34"]
    hashes = {label: runs.check_run(p).hash for label, p in points}
    assert len(set(hashes.values())) == len(points)
    # the ends of the alpha line are the notebook-04 baselines, the middle is the paper's hybrid: same runs
    assert hashes["alpha=0"] == runs.check_run(ci_profile(strategy="cross")).hash
    assert hashes["alpha=1"] == runs.check_run(ci_profile(strategy="mono")).hash
    assert hashes["alpha=0.5"] == runs.check_run(ci_profile(strategy="hybrid")).hash
    assert runs.check_run(points[1][1]).run_name == "ci-hybrid0.25-fp32-mlqa-r-to-xquad-r-seed0"


def test_alpha_does_not_change_a_run_that_does_not_read_it():
    assert (runs.check_run(ci_profile(strategy="mono", alpha=0.1)).hash
            == runs.check_run(ci_profile(strategy="mono", alpha=0.9)).hash)
    assert (runs.check_run(ci_profile(strategy="hybrid", alpha=0.1)).hash
            != runs.check_run(ci_profile(strategy="hybrid", alpha=0.9)).hash)


@pytest.mark.parametrize("change, message", [
    ({"alphas": [0.5, 1.5]}, r"alpha must be in \[0, 1\]"),
    ({"alphas": [-0.1]}, r"alpha must be in \[0, 1\]"),
    ({"alphas": [], "mixtures": []}, "at least one"),
    ({"mixtures": [{"mono": 0.7, "cross": 0.7}]}, "sum to 1"),
    ({"mixtures": [{"mono": 0.5, "bilingual": 0.5}]}, "bilingual"),
    ({"mixtures": ["mono"]}, "mapping"),
    ({"alphas": [0.5, 0.5]}, "duplicate"),
])
def test_bad_sweeps_fail_before_any_work(tmp_path, monkeypatch, change, message):
    with pytest.raises(ValueError, match=message):
        sweep.sweep_points(ci_profile(**change))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(ci_profile(profile="bad", **change)))
    monkeypatch.setenv("HYBRIDNB_REPORTS", str(tmp_path / "reports"))
    with pytest.raises(ValueError, match=message):
        pipeline.run(str(bad), (pipeline.SWEEP_NOTEBOOK,))
    assert not (tmp_path / "reports").exists()
