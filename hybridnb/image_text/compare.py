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


def recall_interval(recall: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson interval of a Recall@k over ``n`` queries: each query has one relevant item here (an image per
    caption, a caption per language per image), so its hit is 0 or 1 and the recall is a proportion."""
    from scipy.stats import binomtest

    hits = int(round(recall * n))
    ci = binomtest(hits, n).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def plot_per_language(systems: dict[str, dict], k: int = 10):
    """Recall@k per caption language with 95% Wilson intervals, text->image above image->text, one bar per
    trained system, chance level dashed; one legend for both panels."""
    import matplotlib.pyplot as plt

    trained = {n: s["results"] for n, s in systems.items() if s["results"]["kind"] == "image-text trained"}
    first = next(iter(trained.values()))
    langs, n = first["summary"]["languages"], first["data"]["items"]["test"]  # one caption per language per image
    fig, axes = plt.subplots(2, 1, figsize=(max(7.0, 0.55 * len(langs) + 2), 6.4), sharex=True, sharey=True)
    width = 0.8 / len(trained)
    x = np.arange(len(langs))
    for ax, d in zip(axes, ("t2i", "i2t")):
        for j, (name, res) in enumerate(trained.items()):
            values = np.array([res["summary"]["per_language"][g][f"{d}_r@{k}"] for g in langs])
            lo, hi = np.array([recall_interval(v, n) for v in values]).T
            ax.bar(x + j * width, values, width, yerr=[values - lo, hi - values], capsize=2,
                   error_kw={"lw": 0.8}, label=name if d == "t2i" else None)
        ax.axhline(min(1.0, k / n), color="0.4", ls="--", lw=1, label=f"chance ({k}/{n})" if d == "t2i" else None)
        ax.set_title(f"{'text→image' if d == 't2i' else 'image→text'} Recall@{k} per caption language "
                     f"(95% Wilson intervals over {n} test images)", fontsize=9)
        ax.set_ylabel(f"Recall@{k}")
    axes[1].set_xticks(x + 0.4 - width / 2, langs)
    axes[1].set_xlabel("caption language")
    fig.legend(loc="lower center", ncol=len(trained) + 1, fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def plot_examples(report_dir: str | os.PathLike, test, n_items: int = 2, max_languages: int = 4, seed: int = 0):
    """Caption queries (`n_items` random test images, in up to `max_languages` languages whose script the
    default font draws): the captioned emoji itself, then the top-5 images of a run's ``topk_t2i.npz``, a hit
    framed green wherever it is ranked."""
    import matplotlib.pyplot as plt

    with np.load(Path(report_dir) / "topk_t2i.npz") as z:
        top, item, lang, ids = z["top"], z["caption_item"], z["caption_lang"], list(z["ids"])
    if ids != list(test.ids):
        raise ValueError("the test table does not match the run's top-k file (other items or order)")
    shown = [g for g in test.languages if g in DISPLAYABLE][:max_languages] or test.languages[:1]
    picks = np.random.default_rng(seed).choice(len(test), size=min(n_items, len(test)), replace=False)
    rows = [np.flatnonzero((item == i) & (lang == g))[0] for i in picks for g in shown
            if ((item == i) & (lang == g)).any()]
    fig, axes = plt.subplots(len(rows), 8, figsize=(13, 1.3 * len(rows) + 0.6), squeeze=False,
                             gridspec_kw={"width_ratios": [2.6, 1, 0.25, 1, 1, 1, 1, 1]})
    frame = lambda ax: ax.add_patch(plt.Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False,  # noqa: E731
                                                  ec="green", lw=4))
    for i, (ax_row, r) in enumerate(zip(axes, rows)):
        text = textwrap.fill(f"[{lang[r]}] {test.captions[str(lang[r])][int(item[r])]}", 30)
        ax_row[0].text(0, 0.5, text, fontsize=9, va="center")
        ax_row[1].imshow(test.pixels([int(item[r])])[0])
        ax_row[2].set_visible(False)  # a gap between the answer and the ranking
        hits = [int(j) == int(item[r]) for j in top[r, :5]]
        rank = hits.index(True) + 1 if any(hits) else None
        for col, (j, hit) in enumerate(zip(top[r, :5], hits)):
            ax = ax_row[3 + col]
            ax.imshow(test.pixels([int(j)])[0])
            if hit:
                frame(ax)
        if i == 0:
            ax_row[1].set_title("captioned emoji", fontsize=8)
            for col in range(5):
                ax_row[3 + col].set_title(f"rank {col + 1}", fontsize=8)
        ax_row[1].set_xlabel(f"rank {rank}" if rank else "not in the top 5", fontsize=7,
                             color="green" if rank else "0.4")
        for ax in ax_row:
            ax.set_xticks([]), ax.set_yticks([])
            ax.spines[:].set_visible(False)
    fig.suptitle("caption query → the captioned emoji, then the top-ranked images (green frame: the captioned "
                 "emoji among them)", fontsize=10)
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
