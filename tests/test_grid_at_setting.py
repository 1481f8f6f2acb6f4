"""benchmarks/grid_at_setting.py: a setting's grid against the committed one. Which runs it pairs (the seeds
finished at both settings), and that its summary line names exactly the columns that moved."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from test_report import _entries

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("grid_at_setting", ROOT / "benchmarks" / "grid_at_setting.py")
grid_at_setting = importlib.util.module_from_spec(spec)
spec.loader.exec_module(grid_at_setting)


def _with_costs(entries: list[dict], steps: float, rss_mb: float) -> list[dict]:
    for e in entries:
        e["results"].update(timings={"train_s": steps, "wall_s": steps + 200, "peak_rss_mb": rss_mb},
                            provenance={"created": "2026-12-07T15:00:00+00:00"})
    return entries


def test_only_seeds_finished_at_both_settings_are_compared_and_the_moved_columns_are_named(tmp_path, monkeypatch):
    params = {"n_resamples": 200, "seed": 0, "train_data": "mlqa-r", "eval_data": "xquad-r"}
    before = [*_with_costs(_entries(tmp_path / "b", "X-X-mono", 0.55), 400, 9000),
              *_with_costs(_entries(tmp_path / "b", "hybrid", 0.65), 400, 9000)]
    after = [*_with_costs(_entries(tmp_path / "a", "X-X-mono", 0.65, seeds=(0, 1)), 200, 5000),  # moved, 2 seeds
             *_with_costs(_entries(tmp_path / "a", "hybrid", 0.65, seeds=(1,)), 200, 5000)]  # one seed: "?"
    monkeypatch.setattr(grid_at_setting.recipe, "grid_runs", lambda p: p["which"])
    monkeypatch.setattr(grid_at_setting.recipe, "train", lambda planned, compute: planned)
    monkeypatch.setattr(grid_at_setting.recipe, "zero_shot_rows", lambda p, compute, show_progress: {})
    parts = grid_at_setting.compare({**params, "which": before}, {**params, "which": after})
    (part,) = parts.values()  # no reverse runs at the new setting: that direction is left out
    assert part["runs"] == 3 and [(r["system"], r["seed"]) for r in part["costs"]] == [
        ("X-X-mono", 0), ("X-X-mono", 1), ("hybrid", 1)]
    effect = part["effect"].set_index(["baseline", "key"])
    assert effect.loc[("X-X-mono", "mono_ap"), "verdict"] == "win" and effect.loc[("X-X-mono", "mono_ap"), "seeds"] == 2
    assert set(effect.loc["hybrid"].seeds) == {1}
    text = grid_at_setting.render({"provenance": {"commit": "abc", "profile": "cpu", "created": "now",
                                                  "hardware": {"cuda": None, "cpu": "x", "cores": 2}},
                                   "before": "length_groups=1", "command": "python ..."}, parts, "length_groups=4")
    moved = part["effect"][~part["effect"].verdict.str.rstrip("?").eq("no difference")]
    assert f"moved beyond noise: {len(moved)} of {len(part['effect'])}" in text and "X-X-mono mono map win" in text
    assert "mean steps 400 s before, 200 s after; wall 600 s before, 400 s after" in text
    assert "Not a speed measurement" in text
    assert "- X-X-mono: length_groups=4 against length_groups=1 (2 seeds), better on" in text
    # hybrid against X-X-mono: better at length_groups 1 (0.65 vs 0.55), no different at 4 (0.65 vs 0.65): the
    # verdicts that differ are listed, and each side's summary sentences are shown
    changes = part["verdict_changes"]
    assert changes and all(c["baseline"] == "X-X-mono" and c["before"] != c["after"] for c in changes)
    assert f"{len(changes)} column(s) differ" in text and part["summary_before"][0] in text
