"""hybridnb.studies.sweep: the mix-ratio points, their up-front checks, and sharing the baseline runs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml

from hybridnb import config, pipeline
from hybridnb.studies import runs, sweep
from hybridnb.evaluation.metrics import EvalResult


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
    assert runs.check_run(points[1][1]).run_name == "ci-hybrid0.25-mlqa-r-to-xquad-r-seed0"


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


def test_sweep_frame_lines_up_weights_metrics_and_cis():
    def est(v):
        return {"value": v, "ci": [v - 0.1, v + 0.1]}

    def result(weights, m):
        block = {s: {"map": est(m)} for s in ("mono", "cross", "multi")}
        return {"training": {"weights": weights}, "datasets": {"xquad-r": {**block, "rank_distance": est(10 * m)}}}

    frame = sweep.sweep_frame({"alpha=0": result({"cross": 1.0}, 0.5),
                               "mix": result({"mono": 0.5, "mixed": 0.5}, 0.7)})
    assert list(frame.point) == ["alpha=0", "mix"]
    assert frame.loc[1, ["w_mono", "w_cross", "w_mixed"]].tolist() == [0.5, 0.0, 0.5]
    assert frame.loc[1, "multi low"] == pytest.approx(0.6)
    assert frame.loc[0, "rank distance"] == 5.0


def _per_query(tmp_path, name, shift=0.0, seed=0):
    """A saved EvalResult of 30 question groups x 2 languages (the same queries for every point)."""
    rng = np.random.default_rng(seed)
    n_q, q_lang = 60, np.tile([0, 1], 30)
    cross = rng.random((n_q, 2))
    cross[np.arange(n_q), q_lang] = np.nan
    per_query = {"mono_ap": np.clip(rng.random(n_q) + shift, 0, 1), "cross_ap": cross,
                 "multi_ap": rng.random(n_q), "rank_distance": rng.poisson(20, n_q).astype(float)}
    res = EvalResult(languages=["en", "de"], per_query=per_query, q_lang=q_lang, q_group=np.repeat(np.arange(30), 2))
    (tmp_path / name).mkdir()
    res.save(tmp_path / name / "per_query_xquad-r.npz")
    return tmp_path / name


def test_points_are_compared_with_the_papers_hybrid_query_by_query(tmp_path):
    ref = _per_query(tmp_path, "ref")
    same = _per_query(tmp_path, "same")
    better = _per_query(tmp_path, "better", shift=0.0)
    res = EvalResult.load(better / "per_query_xquad-r.npz")
    res.per_query["mono_ap"] = res.per_query["mono_ap"] + 0.05  # every query 0.05 better, nothing else changed
    res.save(better / "per_query_xquad-r.npz")
    sig = sweep.paired_against({"alpha=0": same, "alpha=0.5": ref, "alpha=1": better}, "xquad-r", n_resamples=200)
    assert list(sig.point.unique()) == ["alpha=0", "alpha=1"] and set(sig.column) == set(sweep.SETTINGS)
    row = sig[(sig.point == "alpha=1") & (sig.column == "mono mAP")].iloc[0]
    assert row["diff"] == pytest.approx(0.05) and row.low == pytest.approx(0.05) and row.p_value <= 2 / 201
    for _, r in sig[sig.point == "alpha=0"].iterrows():  # identical per-query results: no difference at all
        assert r["diff"] == 0 and r.p_value == 1
    other = sig[(sig.point == "alpha=1") & (sig.column != "mono mAP")]
    assert (other["diff"] == 0).all()
    with pytest.raises(ValueError, match="reference point 'alpha=0.5'"):
        sweep.paired_against({"alpha=0": same}, "xquad-r")


def test_table_with_cis_prints_each_column_with_its_interval():
    frame = pd.DataFrame([{"dataset": "xquad-r", "point": "alpha=0", "w_mono": 0.0, "w_cross": 1.0, "w_mixed": 0.0,
                           "mono mAP": 0.7123, "mono low": 0.7, "mono high": 0.72, "cross mAP": 0.6, "cross low": 0.59,
                           "cross high": 0.61, "multi mAP": 0.4, "multi low": 0.39, "multi high": 0.41,
                           "rank distance": 463.77, "rd low": 415.5, "rd high": 517.04}])
    row = sweep.table_with_cis(frame).iloc[0]
    assert row["mono mAP"] == "0.712 [0.700, 0.720]" and row["rank distance"] == "463.8 [415.5, 517.0]"


def test_plot_points_draws_every_point_of_one_dataset():
    import matplotlib

    matplotlib.use("Agg")
    rows = []
    for i, (point, dataset) in enumerate([("alpha=0", "xquad-r"), ("mix", "xquad-r"), ("alpha=0", "mlqa-r")]):
        row = {"dataset": dataset, "point": point, "w_mono": 0.5, "w_cross": 0.0, "w_mixed": 0.5}
        for s in ("mono", "cross", "multi"):
            row.update({f"{s} mAP": 0.5 + i / 10, f"{s} low": 0.4, f"{s} high": 0.9})
        rows.append({**row, "rank distance": 10.0, "rd low": 5.0, "rd high": 20.0})
    fig = sweep.plot_points(pd.DataFrame(rows), "xquad-r")
    ticks = {t.get_text(): y for t, y in zip(fig.axes[0].get_yticklabels(), fig.axes[0].get_yticks())}
    assert ticks == {"alpha=0 (0.5/0/0.5)": 1, "mix (0.5/0/0.5)": 0}  # xquad-r's points only, the first on top
    assert len(fig.axes[0].lines) >= 3 and fig.axes[1].get_xlabel().startswith("rank distance")


def test_report_markdown_says_which_points_differ_from_the_papers_hybrid():
    est = {"mono mAP": 0.7, "mono low": 0.69, "mono high": 0.71, "cross mAP": 0.6, "cross low": 0.59, "cross high": 0.61,
           "multi mAP": 0.4, "multi low": 0.39, "multi high": 0.41, "rank distance": 400.0, "rd low": 380.0,
           "rd high": 420.0}
    frame = pd.DataFrame([{"dataset": "xquad-r", "point": p, "w_mono": w, "w_cross": 1 - w, "w_mixed": 0.0, **est}
                          for p, w in (("alpha=0", 0.0), ("alpha=0.5", 0.5), ("alpha=1", 1.0))])
    paired = pd.DataFrame([
        {"dataset": "xquad-r", "point": "alpha=0", "column": "multi mAP", "diff": 0.02, "low": 0.01, "high": 0.03,
         "p_value": 0.002},
        {"dataset": "xquad-r", "point": "alpha=0", "column": "rank distance", "diff": 19.0, "low": 9.0, "high": 28.0,
         "p_value": 0.002},
        {"dataset": "xquad-r", "point": "alpha=1", "column": "mono mAP", "diff": -0.001, "low": -0.003, "high": 0.001,
         "p_value": 0.4}])
    prov = {"commit": "abc", "profile": "cpu", "created": "now", "hardware": {"cuda": None, "cpu": "x", "cores": 2}}
    md = sweep.report_markdown(prov, frame, paired, "One run per point.")
    assert "0.700 [0.690, 0.710]" in md and "400.0 [380.0, 420.0]" in md
    assert "| xquad-r | alpha=0 |  |  | +0.020 [+0.010, +0.030], p = 0.002 | +19.0 [+9.0, +28.0], p = 0.002 |" in md
    assert "- xquad-r, alpha=0: better on multi mAP (+0.020); worse on rank distance (+19.0)" in md
    assert "- xquad-r, alpha=1: no significant difference" in md
    assert "No paired comparison" in sweep.report_markdown(prov, frame, pd.DataFrame(), "")


def test_report_markdown_puts_the_seed_spread_of_the_reference_beside_the_differences():
    est = {"mono mAP": 0.7, "mono low": 0.69, "mono high": 0.71, "cross mAP": 0.6, "cross low": 0.59, "cross high": 0.61,
           "multi mAP": 0.4, "multi low": 0.39, "multi high": 0.41, "rank distance": 400.0, "rd low": 380.0,
           "rd high": 420.0}
    frame = pd.DataFrame([{"dataset": "xquad-r", "point": p, "w_mono": w, "w_cross": 1 - w, "w_mixed": 0.0, **est}
                          for p, w in (("alpha=0", 0.0), ("alpha=0.5", 0.5))])
    paired = pd.DataFrame([
        {"dataset": "xquad-r", "point": "alpha=0", "column": "multi mAP", "diff": 0.02, "low": 0.01, "high": 0.03,
         "p_value": 0.002},
        {"dataset": "xquad-r", "point": "alpha=0", "column": "mono mAP", "diff": -0.004, "low": -0.006, "high": -0.002,
         "p_value": 0.002}])
    # seeds: mono sd 0.005 (2·√2·sd = 0.014 > 0.004: within noise), multi sd 0.002 (0.0057 < 0.02: beyond)
    spread = pd.DataFrame([{"dataset": "xquad-r", "seed": s, "mono mAP": 0.7 + 0.005 * k, "cross mAP": 0.6,
                            "multi mAP": 0.4 + 0.002 * k, "rank distance": 400.0 + k} for s, k in ((0, -1), (1, 0), (2, 1))])
    prov = {"commit": "abc", "profile": "cpu", "created": "now", "hardware": {"cuda": None, "cpu": "x", "cores": 2}}
    md = sweep.report_markdown(prov, frame, paired, "One run per point.", spread=spread)
    assert "## Seed-to-seed spread of alpha=0.5" in md
    assert "- xquad-r, mono mAP: sd 0.0050 over 3 seeds" in md
    assert "beyond seed noise: multi mAP" in md
    one = sweep.report_markdown(prov, frame, paired, "", spread=spread[spread.seed == 0])
    assert "is not measured yet (1 finished seed run(s)" in one and "beyond seed noise" not in one


def test_seed_spread_reads_finished_runs_only(tmp_path, monkeypatch):
    params = {**config.load_profile("ci"), "run_name": None}
    block = {s: {"map": {"value": v, "ci": [v - 0.01, v + 0.01]}}
             for s, v in (("mono", 0.7), ("cross", 0.6), ("multi", 0.4))}
    seen = []

    def finished(cfg):
        seen.append((cfg.seed, cfg.strategy, cfg.alpha))
        return None if cfg.seed == 2 else {"training": {"weights": {"mono": 0.5, "cross": 0.5}},
                                              "datasets": {"xquad-r": {**block, "rank_distance": {"value": 40.0, "ci": [39.0, 41.0]}}}}

    monkeypatch.setattr(sweep.runs, "find_finished", finished)
    spread = sweep.seed_spread(params, [0, 1, 2])
    assert seen == [(0, "hybrid", 0.5), (1, "hybrid", 0.5), (2, "hybrid", 0.5)]
    assert spread.seed.tolist() == [0, 1] and spread["rank distance"].tolist() == [40.0, 40.0]


def _points_and_spread():
    rows = []
    for point, w in (("alpha=0", 0.0), ("alpha=0.5", 0.5), ("alpha=1", 1.0)):
        row = {"dataset": "xquad-r", "point": point, "w_mono": w, "w_cross": 1 - w, "w_mixed": 0.0}
        for s, v in (("mono", 0.7), ("cross", 0.6), ("multi", 0.4)):
            row.update({f"{s} mAP": v, f"{s} low": v - 0.01, f"{s} high": v + 0.01})
        rows.append({**row, "rank distance": 400.0, "rd low": 380.0, "rd high": 420.0})
    spread = pd.DataFrame([{"dataset": "xquad-r", "seed": s, "mono mAP": 0.7 + 0.005 * k, "cross mAP": 0.6,
                            "multi mAP": 0.4, "rank distance": 400.0 + 10 * k} for s, k in ((0, -1), (1, 0), (2, 1))])
    return pd.DataFrame(rows), spread


def test_noise_threshold_is_two_root_two_sd_and_needs_two_seeds():
    _, spread = _points_and_spread()
    threshold = sweep.noise_threshold(spread)
    assert threshold[("xquad-r", "mono mAP")] == pytest.approx(2 * math.sqrt(2) * 0.005)  # sd of -1, 0, 1 is 1
    assert threshold[("xquad-r", "rank distance")] == pytest.approx(2 * math.sqrt(2) * 10)
    assert threshold[("xquad-r", "cross mAP")] == 0.0
    assert sweep.noise_threshold(spread[spread.seed == 0]) == {} and sweep.noise_threshold(None) == {}


def test_the_sweep_figures_draw_the_reference_seeds_and_the_noise_lines():
    import matplotlib

    matplotlib.use("Agg")
    frame, spread = _points_and_spread()
    fig = sweep.plot_alpha_line(frame, spread)
    rd = fig.axes[1]
    crosses = [line for line in rd.lines if line.get_marker() == "x"]
    assert len(crosses) == 1 and list(crosses[0].get_xdata()) == [0.5] * 3
    assert sorted(crosses[0].get_ydata()) == [390.0, 400.0, 410.0]
    noise = sorted(line.get_ydata()[0] for line in rd.lines if line.get_linestyle() == ":")
    assert noise == pytest.approx([400 - 20 * math.sqrt(2), 400 + 20 * math.sqrt(2)])
    assert "seed noise" in " ".join(t.get_text() for t in rd.get_legend().get_texts())
    points = sweep.plot_points(frame, "xquad-r", spread)
    marks = [line for line in points.axes[1].lines if line.get_marker() == "x"]
    assert len(marks) == 1 and set(marks[0].get_ydata()) == {1}  # on alpha=0.5's row (the middle of three)
    assert len([line for line in points.axes[0].lines if line.get_linestyle() == ":"]) == 6  # 2 per mAP setting
    assert "alpha=0.5 at each seed" in [t.get_text() for t in points.legends[0].get_texts()]
