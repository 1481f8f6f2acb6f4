"""hybridnb.studies.compare: verdict wording against the paper's directions, and the table layout."""

import pandas as pd
import pytest

from hybridnb.studies import compare


def sig_rows(diff_mono_map, p_mono_map, diff_rd, p_rd):
    return pd.DataFrame([
        {"baseline": "X-Y", "setting": "mono", "metric": "map", "column": "mono map", "diff": diff_mono_map,
         "low": diff_mono_map - 0.01, "high": diff_mono_map + 0.01, "p_value": p_mono_map},
        {"baseline": "X-X-mono", "setting": "rank_distance", "metric": "rank_distance", "column": "rank distance ↓",
         "diff": diff_rd, "low": diff_rd - 1, "high": diff_rd + 1, "p_value": p_rd},
    ])


def test_verdicts_follow_sign_and_significance():
    v = compare.verdicts(sig_rows(+0.02, 0.01, -5.0, 0.001))
    assert len(v) == 2 and all("agrees with the paper" in s for s in v)
    v = compare.verdicts(sig_rows(-0.02, 0.01, +5.0, 0.5))
    assert "contradicts the paper (significantly)" in v[0]
    assert "against the paper's direction, not significantly" in v[1]
    v = compare.verdicts(sig_rows(+0.001, 0.6, -0.1, 0.9))
    assert all("not significant" in s for s in v)


def test_results_table_has_the_paper_layout():
    entry = {"value": 0.5, "ci": [0.4, 0.6], "se": 0.05}
    block = {s: {m: entry for m in compare.METRICS} for s in compare.SETTINGS}
    block["rank_distance"] = {"value": 12.0, "ci": [10.0, 14.0], "se": 1.0}
    systems = {name: {"results": {"datasets": {"xquad-r": block}}} for name in ("zero-shot", "X-X-mono", "hybrid")}
    table = compare.results_table(systems, "xquad-r")
    assert list(table.index) == ["zero-shot", "X-X-mono", "hybrid"]
    assert list(table.columns)[:3] == ["mono map", "mono r@1", "mono r@10"]
    assert table.loc["hybrid", "rank distance ↓"] == "12.00 [10.00, 14.00]"
    assert compare.system_label("cross") == "X-Y" and compare.system_label("mono") == "X-X-mono"


def test_p_at_the_floor_and_every_baseline_in_every_column():
    import pandas as pd

    from hybridnb.studies import compare as cmp

    assert cmp.p_text(2 / 1001, 1000) == "p≤2/1001" and cmp.p_text(0.0312, 1000) == "p=0.031"
    assert cmp.p_text(0.002, None) == "p=0.002"
    sig = pd.DataFrame([
        {"baseline": "X-Y", "column": "mono map", "diff": 0.01, "low": 0.002, "high": 0.02, "p_value": 0.01},
        {"baseline": "X-Y", "column": "multi map", "diff": -0.02, "low": -0.03, "high": -0.01, "p_value": 0.002},
        {"baseline": "X-Y", "column": "rank distance ↓", "diff": 19.0, "low": 9.0, "high": 28.0, "p_value": 0.002},
        {"baseline": "X-X-mono", "column": "rank distance ↓", "diff": -30.0, "low": -35.0, "high": -25.0, "p_value": 0.002},
        {"baseline": "X-X-mono", "column": "mono map", "diff": 0.001, "low": -0.001, "high": 0.003, "p_value": 0.2},
    ])
    assert cmp.baseline_verdicts(sig) == [
        "hybrid vs X-Y: wins on mono map (+0.010); loses on multi map (-0.020), rank distance ↓ (+19.0).",
        "hybrid vs X-X-mono: wins on rank distance ↓ (-30.0); no difference on mono map (+0.001).",
    ]
    seeded = sig.assign(verdict=["win", "loss?", "loss?", "win?", "no difference?"],
                        seed_noise_measured=[True, False, False, False, False])  # image-text: its own verdicts
    assert cmp.baseline_verdicts(seeded)[1] == ("hybrid vs X-X-mono: wins on rank distance ↓ (-30.0); no difference "
                                                "on mono map (+0.001) (one seed: seed noise not measured).")


def _result(languages, mono, cross, q_lang):
    import numpy as np

    from hybridnb.evaluation.metrics import EvalResult

    n = len(q_lang)
    per_query = {"mono_ap": np.asarray(mono, float), "cross_ap": np.asarray(cross, float),
                 "multi_ap": np.zeros(n), "rank_distance": np.zeros(n)}
    return EvalResult(list(languages), per_query, np.asarray(q_lang), np.arange(n))


def _two_systems(n=40):
    """Two languages, n queries each; b is a minus 0.1 on de->en only, and equal elsewhere but for noise."""
    import numpy as np

    rng = np.random.default_rng(0)
    q_lang = np.repeat([0, 1], n)
    mono = rng.uniform(0.3, 0.9, 2 * n)
    cross = rng.uniform(0.3, 0.9, (2 * n, 2))
    cross[np.arange(2 * n), q_lang] = np.nan  # a query's own language is mono, not cross
    b_cross = cross + rng.normal(0, 1e-4, cross.shape)
    b_cross[q_lang == 1, 0] -= 0.1
    return (_result(["en", "de"], mono, cross, q_lang),
            _result(["en", "de"], mono + rng.normal(0, 1e-4, 2 * n), b_cross, q_lang))


def test_map_difference_cells_are_paired_per_cell_and_bh_adjusted():
    import numpy as np

    a, b = _two_systems()
    diff, q = compare.map_difference_cells(a, b)
    assert diff.shape == q.shape == (2, 2)
    assert diff[1, 0] == pytest.approx(0.1, abs=1e-4)          # de queries, en pool: a is 0.1 better
    assert abs(diff[0, 1]) < 1e-3 and abs(diff[0, 0]) < 1e-3   # elsewhere only the 1e-4 noise
    assert q[1, 0] < 1e-6 and q[0, 1] > 0.01
    assert np.all(q >= 0) and np.all(q <= 1)


def test_the_difference_figure_has_one_colour_scale_and_marks_significant_cells(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    a, b = _two_systems()
    dirs = {}
    for name, result in (("hybrid", a), ("X-X-mono", b), ("X-Y", a)):
        dirs[name] = tmp_path / name
        dirs[name].mkdir()
        result.save(dirs[name] / "per_query_xquad-r.npz")
    systems = {name: {"dir": d, "results": {"datasets": {"xquad-r": {}}}} for name, d in dirs.items()}
    fig = compare.plot_map_differences(systems, "xquad-r")
    from matplotlib.collections import QuadMesh

    meshes = [c for ax in fig.axes[:2] for c in ax.collections if isinstance(c, QuadMesh)]
    assert len(meshes) == 2 and meshes[0].get_clim() == meshes[1].get_clim()    # shared, symmetric scale
    lo, hi = meshes[0].get_clim()
    assert lo == -hi and hi == pytest.approx(10.0, rel=1e-2)                    # x100: the 0.1 difference
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "+10.0*" in texts and all(t.endswith("*") is False for t in texts if t != "+10.0*")
    assert "(1 of 4 cells *)" in fig.axes[0].get_title()


def test_training_curves_label_the_validation_dots_and_use_whole_steps(tmp_path):
    import json

    import matplotlib

    matplotlib.use("Agg")
    systems = {}
    for name in ("X-X-mono", "hybrid"):
        d = tmp_path / name
        d.mkdir()
        rows = [{"step": s, "loss": 2.0 - 0.1 * s, **({"val_loss": 1.5} if s % 3 == 2 else {})} for s in range(6)]
        (d / "train_log.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        systems[name] = {"dir": d}
    fig = compare.plot_training_curves(systems, "curves")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "hybrid: validation" in labels and "X-X-mono: train (5-step mean)" in labels
    ticks = fig.axes[0].get_xticks()
    assert all(float(t).is_integer() for t in ticks)


def test_a_runs_loss_curve_labels_every_line_and_notes_mixed_batch_kinds():
    import matplotlib

    from hybridnb import reporting

    matplotlib.use("Agg")
    history = [{"step": s, "loss": 2.0 - 0.05 * s, "lr": 1e-5, "kind": "mono" if s % 2 else "cross",
                **({"val_loss": 1.5} if s % 4 == 3 else {})} for s in range(12)]
    fig = reporting.plot_training_curves(history, "run", window=5)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["train loss", "train loss (5-step mean)", "validation loss", "learning rate (right axis)"]
    assert all(float(t).is_integer() for t in ax.get_xticks())
    assert any("mixes batch kinds" in t.get_text() for t in ax.texts)
    single = reporting.plot_training_curves([{**r, "kind": "mono"} for r in history], "mono run", window=5)
    assert not any("mixes batch kinds" in t.get_text() for t in single.axes[0].texts)
