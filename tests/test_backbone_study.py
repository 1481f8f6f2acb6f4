"""hybridnb.studies.backbone_study (notebook 06): up-front checks, run naming, zero-shot reuse, paired gains."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import needs_mirror
from hybridnb.studies import backbone_study as study, runs, zero_shot
from hybridnb import config
from hybridnb.data import lareqa
from hybridnb.evaluation.metrics import EvalResult


def ci_params(**change):
    return {**config.load_profile("ci"), **change}


@pytest.mark.parametrize("change, message", [
    ({"backbones": []}, "at least one backbone"),
    ({"backbones": ["e5-small-offline", "labse-large"]}, "unknown backbone 'labse-large'"),
    ({"finetune_backbones": ["bm25"], "backbones": ["bm25"]}, "zero-shot only"),
    ({"finetune_backbones": ["use-multilingual"]}, "zero-shot only"),
    ({"finetune_backbones": ["labse"], "backbones": ["e5-small-offline"]}, "must also be in `backbones`"),
    ({"strategies": ["mono", "bilingual"]}, "bilingual"),
    ({"eval_datasets": {"xquad-r": {"languages": ["xx"]}}}, "not in the data"),
])
def test_bad_studies_fail_before_any_work(change, message):
    with pytest.raises(ValueError, match=message):
        study.check_study(ci_params(**change))


def test_profiles_make_valid_studies():
    for name in ("ci", "cpu", "paper"):
        out = study.check_study(config.load_profile(name))
        assert out["finetune"] and set(out["finetune"]) <= set(out["backbones"])
    assert study.check_study(config.load_profile("paper"))["finetune"] == ["xlm-roberta-base", "labse", "mbert",
                                                                            "mt5-base"]


def test_the_profile_model_reuses_notebook_03_runs_and_other_backbones_get_their_own():
    params = ci_params()
    own = runs.check_run(study.finetune_params(params, "e5-small-offline", "hybrid"))
    assert own == runs.check_run({**params, "strategy": "hybrid", "run_name": None})   # notebook 03's run
    labse = runs.check_run(study.finetune_params(params, "labse", "hybrid"))
    mbert = runs.check_run(study.finetune_params(params, "mbert", "hybrid"))
    assert labse.model == "sentence-transformers/LaBSE" and labse.hash != own.hash
    assert labse.run_name == "ci-labse-hybrid-mlqa-r-to-xquad-r-seed0" != mbert.run_name
    paper = config.load_profile("paper")     # model: xlm-roberta-base, an alias of the registry's source
    assert study.model_name("xlm-roberta-base", paper) == "xlm-roberta-base"
    assert study.finetune_params(paper, "xlm-roberta-base", "mono")["run_name"] is None
    assert study.zero_shot_dir(paper, "xlm-roberta-base").name == "xlm-roberta-base"
    assert study.zero_shot_dir(paper, "labse").name == "sentence-transformers__LaBSE"


@needs_mirror
def test_bm25_zero_shot_is_written_atomically_reused_and_paired(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDNB_REPORTS", str(tmp_path / "reports"))
    params = ci_params(eval_datasets={"xquad-r": {"languages": ["en", "de"], "max_ids": 30}}, n_resamples=50)
    tasks = {"xquad-r": lareqa.load_task("xquad-r", languages=["en", "de"], max_ids=30)}
    res = study.zero_shot_results("bm25", tasks, params, show_progress=False)
    out = study.zero_shot_dir(params, "bm25")
    assert out.name == "bm25s" and (out / "per_query_xquad-r.npz").is_file()
    assert not list(out.parent.glob(f".{out.name}.*"))  # no temp or previous copy left beside it
    block = res["datasets"]["xquad-r"]
    assert 0 < block["mono"]["map"]["value"] <= 1 and block["cross"]["map"]["value"] is None

    calls = []
    monkeypatch.setattr(study.backbones, "evaluate_backbone", lambda *a, **k: calls.append(1))
    assert study.zero_shot_results("bm25", tasks, params, show_progress=False) == res and not calls   # reused
    assert not zero_shot.matches(res, {**res["model"], "max_length": 7}, tasks, 50, 0)
    assert not zero_shot.matches(res, res["model"], tasks, 51, 0)
    assert zero_shot.find(out, res["model"], tasks, 50, 0) == res
    (out / "per_query_xquad-r.npz").rename(out / "moved.npz")
    assert zero_shot.find(out, res["model"], tasks, 50, 0) is None      # incomplete: evaluated again
    (out / "moved.npz").rename(out / "per_query_xquad-r.npz")

    # paired gains: a "trained" system whose mono AP is the zero-shot one + 0.1 on every query
    zs = EvalResult.load(out / "per_query_xquad-r.npz")
    systems = {}
    for name, shift in (("X-X-mono", 0.0), ("hybrid", 0.1)):
        d = tmp_path / name
        d.mkdir()
        zs.per_query["mono_ap"] = EvalResult.load(out / "per_query_xquad-r.npz").per_query["mono_ap"] + shift
        zs.save(d / "per_query_xquad-r.npz")
        systems[name] = {"results": {"datasets": {"xquad-r": block}}, "dir": d}
    gains = study.gains_table("bm25", systems, params).set_index(["comparison", "column"])
    assert set(gains.index.get_level_values(0)) == {"X-X-mono - zero-shot", "hybrid - zero-shot",
                                                    "hybrid - X-X-mono"}
    assert gains.loc[("hybrid - X-X-mono", "mono map"), "diff"] == pytest.approx(0.1)
    assert gains.loc[("X-X-mono - zero-shot", "mono map"), "diff"] == pytest.approx(0.0)
    row = gains.loc[("hybrid - zero-shot", "mono map")]
    assert row.low <= 0.1 <= row.high and row.p_value < 0.05
    assert json.loads((out / "results.json").read_text())["backbone"] == "bm25"
    assert np.isnan(gains.loc[("hybrid - X-X-mono", "cross map"), "diff"])


def test_the_backbone_figures_have_one_tick_per_bar_group_and_draw_na():
    """The hybrid-gain figure once put bars at x = 0, 3, 6 under ticks 0, 1, 2 (an index into a list with
    repeats); BM25's missing settings were blank gaps."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    block = lambda v: {"map": {"value": v, "ci": None if v is None else [v - 0.05, v + 0.05]}}  # noqa: E731
    results = {"e5": {"datasets": {"xquad-r": {s: block(0.7) for s in ("mono", "cross", "multi")}}},
               "bm25": {"datasets": {"xquad-r": {"mono": block(0.8), "cross": block(None), "multi": block(None)}}}}
    frame = study.zero_shot_frame(results)
    assert math.isnan(frame.set_index(["backbone", "setting"]).loc[("bm25", "cross"), "mAP"])
    fig = study.plot_zero_shot(frame, "test")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["mono", "cross", "multi"]
    assert sum(t.get_text() == "n/a" for t in ax.texts) == 2
    plt.close(fig)

    rows = [{"backbone": b, "dataset": "xquad-r", "comparison": c, "column": col, "diff": 0.01, "low": 0.0,
             "high": 0.02, "p_value": 0.04}
            for b in ("e5", "labse") for c in ("hybrid - zero-shot", "hybrid - X-X-mono", "hybrid - X-Y")
            for col in ("mono map", "cross map", "multi map", "rank distance ↓")]
    fig = study.plot_hybrid_gains(pd.DataFrame(rows))
    ax = fig.axes[0]
    ticks = list(ax.get_xticks())
    assert len(ticks) == 6 and len(ax.patches) == 6 * 3  # six (backbone, baseline) groups, three mAP columns
    bars = sorted(p.get_x() + p.get_width() / 2 for p in ax.patches)
    for i, tick in enumerate(ticks):  # every group's three bars sit around its own tick
        assert all(abs(x - tick) < 0.5 for x in bars[3 * i:3 * i + 3])
    assert "e5\nX-Y" in [t.get_text() for t in ax.get_xticklabels()]
    plt.close(fig)
    wide = study.gains_wide(pd.DataFrame(rows))
    assert list(wide.columns) == ["mono map", "cross map", "multi map", "rank distance ↓"] and len(wide) == 6
