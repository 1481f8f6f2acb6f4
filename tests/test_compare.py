"""hybridnb.studies.compare: verdict wording against the paper's directions, and the table layout."""

import pandas as pd

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
    assert cmp.baseline_summary(sig) == [
        "vs X-Y: hybrid is better in mono map; worse in multi map, rank distance ↓.",
        "vs X-X-mono: hybrid is better in rank distance ↓; no different in mono map.",
    ]
