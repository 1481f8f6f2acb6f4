"""The image-text ratio sweep (hybridnb.studies.image_text_sweep) on the committed cpu runs: every point at every seed,
compared with alpha = 0.5 by the seed-aware rule, and its part of REPORT.md (read only: nothing trains)."""

from __future__ import annotations

from pathlib import Path

from hybridnb import config
from hybridnb.studies import image_text_sweep

ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_image_text_sweep_has_every_point_at_three_seeds(monkeypatch):
    monkeypatch.setenv("HYBRIDNB_REPORTS", str(ROOT / "reports"))
    params = config.load_profile("cpu")
    names = {cfg.run_name for cfg in image_text_sweep.plan(params)}
    assert {f"cpu-mm-hybrid{a}-openmoji-cldr-seed{k}" for a in ("0.25", "0.75") for k in (0, 1, 2)} <= names
    part = image_text_sweep.report_part(params, 50, 0)
    sec = part["section"]
    assert sec["seeds"] == {f"alpha={a}": 3 for a in ("0", "0.25", "0.5", "0.75", "1")}
    v = sec["verdicts"]
    assert set(v.baseline) == {"alpha=0", "alpha=0.25", "alpha=0.75", "alpha=1"}  # every point against 0.5
    assert set(v.verdict) <= {"win", "loss", "no difference"}                   # 3 seeds: no one-seed verdict
    text = "\n".join(part["lines"])
    assert "| alpha=0.25 | 3 |" in text and "![image-text sweep](figures/ratio_sweep_image_text.png)" in text
    fig = part["figures"]["figures/ratio_sweep_image_text.png"]
    assert "3 seeds" in fig._suptitle.get_text() and len(fig.axes) == len(image_text_sweep.COLUMNS)
