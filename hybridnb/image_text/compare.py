"""The image-text strategy comparison of notebook 07: collect the runs, the table, paired tests, verdicts,
figures and reports/<profile>/MULTIMODAL.md (the runs themselves: :mod:`hybridnb.image_text.runs`)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hybridnb.studies import compare
from hybridnb.studies.compare import significance_wide  # noqa: F401  (one table of differences for both wings)
from hybridnb import reporting
from hybridnb.evaluation import stats
from hybridnb.evaluation.metrics import EvalResult
from hybridnb.image_text.metrics import ImageTextResult
from hybridnb.image_text.metrics import compare as compare_results
from hybridnb.image_text.runs import DISPLAYABLE, EXPECTED, PROBLEMS, _rows, check_runs, run_image_text, run_zero_shot

__all__ = ["collect", "load_result", "comparison_table", "significance", "significance_wide", "verdicts",
           "plot_per_language", "plot_examples", "report_markdown"]


def collect(params: dict[str, Any], show_progress: bool = True) -> dict[str, dict]:
    """{system: {"results", "dir"}}: the zero-shot run, then each of ``mm_strategies`` (all checked first;
    finished runs are reused by config hash, the others trained now)."""
    check_runs(params)
    path, results = run_zero_shot(params, show_progress)
    systems = {"zero-shot": {"results": results, "dir": path}}
    for strategy in params["mm_strategies"]:
        path, results = run_image_text(params, strategy, show_progress)
        systems[compare.system_label(strategy)] = {"results": results, "dir": path}
    return systems


def load_result(report_dir: str | os.PathLike) -> ImageTextResult:
    """The per-query results of a run folder (t2i and i2t are None for the zero-shot run)."""
    d = Path(report_dir)
    parts = {p: EvalResult.load(d / f"per_query_{p}.npz") if (d / f"per_query_{p}.npz").is_file() else None
             for p in PROBLEMS}
    return ImageTextResult(list(parts["captions"].languages), parts["t2i"], parts["i2t"], parts["captions"])


def comparison_table(systems: dict[str, dict]) -> pd.DataFrame:
    """Rows: systems; columns: the :data:`TABLE` metrics as 'value [low, high]' (n/a where undefined)."""
    return pd.DataFrame({name: _rows(s["results"])[0] for name, s in systems.items()}).T


def significance(systems: dict[str, dict], target: str = "hybrid", n_resamples: int = 1000,
                 seed: int = 0) -> pd.DataFrame:
    """`target` minus each other system per metric (paired bootstrap CI, permutation p-value); against the
    zero-shot run only the caption metrics exist."""
    a = load_result(systems[target]["dir"])
    rows = []
    for name, s in systems.items():
        if name == target:
            continue
        b = load_result(s["dir"])
        if b.t2i is None:
            nested = stats.compare(a.captions, b.captions, n_resamples=n_resamples, seed=seed,
                                   metrics=["cross_ap", "multi_ap"])
            cmp = {"caption_cross_map": nested["cross"]["map"], "caption_pooled_map": nested["multi"]["map"]}
        else:
            cmp = compare_results(a, b, n_resamples=n_resamples, seed=seed)
        rows += [{"baseline": name, "metric": m, "column": m, "diff": e["diff"], "low": e["low"], "high": e["high"],
                  "p_value": e["p_value"]} for m, e in cmp.items()]
    return pd.DataFrame(rows)


def verdicts(sig: pd.DataFrame, target: str = "hybrid", alpha: float = 0.05) -> list[str]:
    """One sentence per expected direction of :data:`EXPECTED` (the text paper's claims carried over), worded
    as the text comparison's (:func:`hybridnb.studies.compare.direction_verdicts`)."""
    expected = {(metric, compare.system_label(baseline)): sign for (metric, baseline), sign in EXPECTED.items()}
    return compare.direction_verdicts(sig, expected, "the text paper's claim", target, alpha)


def plot_per_language(systems: dict[str, dict], k: int = 10):
    """Recall@k per caption language, text->image and image->text, one bar per trained system."""
    import matplotlib.pyplot as plt

    trained = {n: s["results"] for n, s in systems.items() if s["results"]["kind"] == "image-text trained"}
    langs = next(iter(trained.values()))["summary"]["languages"]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 0.9 * len(langs) * 2), 3.6), sharey=True)
    width = 0.8 / len(trained)
    for ax, d in zip(axes, ("t2i", "i2t")):
        for j, (name, res) in enumerate(trained.items()):
            ax.bar(np.arange(len(langs)) + j * width, [res["summary"]["per_language"][g][f"{d}_r@{k}"] for g in langs],
                   width, label=name)
        n = next(iter(trained.values()))["data"]["items"]["test"]
        ax.axhline(min(1.0, k / n), color="0.4", ls="--", lw=1, label="chance" if d == "i2t" else None)
        ax.set_xticks(np.arange(len(langs)) + 0.4 - width / 2, langs)
        ax.set_title(f"{'text→image' if d == 't2i' else 'image→text'} R@{k}")
    axes[0].set_ylabel(f"Recall@{k}")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_examples(report_dir: str | os.PathLike, test, n_items: int = 2, max_languages: int = 4, seed: int = 0):
    """Caption queries (`n_items` random test images, in up to `max_languages` languages whose script the
    default font draws) and their top-5 images from a run's ``topk_t2i.npz``; the true image is framed green."""
    import matplotlib.pyplot as plt

    with np.load(Path(report_dir) / "topk_t2i.npz") as z:
        top, item, lang, ids = z["top"], z["caption_item"], z["caption_lang"], list(z["ids"])
    if ids != list(test.ids):
        raise ValueError("the test table does not match the run's top-k file (other items or order)")
    shown = [g for g in test.languages if g in DISPLAYABLE][:max_languages] or test.languages[:1]
    picks = np.random.default_rng(seed).choice(len(test), size=min(n_items, len(test)), replace=False)
    rows = [np.flatnonzero((item == i) & (lang == g))[0] for i in picks for g in shown
            if ((item == i) & (lang == g)).any()]
    fig, axes = plt.subplots(len(rows), 6, figsize=(11, 1.3 * len(rows)), squeeze=False,
                             gridspec_kw={"width_ratios": [2.6, 1, 1, 1, 1, 1]})
    for ax_row, r in zip(axes, rows):
        text = textwrap.fill(f"[{lang[r]}] {test.captions[str(lang[r])][int(item[r])]}", 30)
        ax_row[0].text(0, 0.5, text, fontsize=9, va="center")
        for ax, j in zip(ax_row[1:], top[r, :5]):
            ax.imshow(test.pixels([int(j)])[0])
            if j == item[r]:
                ax.add_patch(plt.Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False, ec="green", lw=4))
        for ax in ax_row:
            ax.set_xticks([]), ax.set_yticks([])
            ax.spines[:].set_visible(False)
    fig.suptitle("caption query → top-5 images (green: the captioned emoji)", fontsize=10)
    fig.tight_layout()
    return fig


def report_markdown(params: dict, systems: dict, table: pd.DataFrame, sig: pd.DataFrame, figures: list[str],
                    prov: dict) -> str:
    """reports/<profile>/MULTIMODAL.md: provenance, what was run, the table, paired tests, figures."""
    trained = {n: s["results"] for n, s in systems.items() if s["results"]["kind"] == "image-text trained"}
    r0 = next(iter(trained.values()))
    wall = sum(s["results"]["timings"]["wall_s"] for s in systems.values())
    lines = ["# Multilingual image-text retrieval with hybrid batches", "", reporting.stamp(prov), "",
             f"Wall time of the runs behind this report: {wall / 60:.1f} min.", "", "## What was run", "",
             f"- Data: {r0['data']['dataset']}, languages {', '.join(r0['data']['languages'])}; items "
             f"{r0['data']['items']}.",
             f"- Model: text tower `{r0['model']['text']}` (max length {r0['model']['max_length']}), image tower "
             f"`{r0['model']['image_tower']}` at {r0['model']['image_size']} px from scratch, projections to "
             f"{r0['model']['dim']} dimensions; symmetric image-text InfoNCE, plus caption-caption InfoNCE on cross "
             "batches.",
             f"- Training: {r0['training']['steps']} steps of {r0['training']['batch_size']} images, lr "
             f"{r0['training']['lr']:g} (text) / {r0['training']['image_lr']:g} (image tower, projections), seed "
             f"{r0['training']['seed']}; evaluated with the best model by validation loss.",
             "- Strategies: " + ", ".join(f"{n} (batch kinds {r['training']['kinds']}, best step "
                                          f"{r['training']['best_step']})" for n, r in trained.items()) + ".",
             "- Zero-shot row: the untrained text tower's caption-caption cross-lingual retrieval (text->image "
             "needs a trained image tower, so it is n/a there).",
             "- 95% CIs: bootstrap over test images; hybrid vs each baseline: paired bootstrap CI of the difference "
             "and a paired permutation test. Rank distance: lower is better.", "",
             "## Results", "", reporting.markdown_table(table.reset_index(names="system").to_dict("records")), ""]
    if not sig.empty:
        lines += ["## Hybrid minus baseline (paired)", "",
                  reporting.markdown_table(significance_wide(sig).reset_index().to_dict("records")), ""]
        lines += [f"- {v}" for v in verdicts(sig)] + [""]
    lines += ["## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in figures] + [""]
    if r0["data"]["dataset"] == "openmoji-cldr":
        lines += ["## Attribution", "", "All emojis designed by OpenMoji – the open-source emoji and icon project. "
                  "License: CC BY-SA 4.0. Emoji names: Unicode CLDR, via the emoji package.", ""]
    return "\n".join(lines)
