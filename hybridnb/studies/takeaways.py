"""One plain sentence under each result table of the notebooks, written from the numbers in that table.

A table of CIs tells a careful reader everything and a hurried one nothing; these sentences say what the
table shows (which setting is hardest, which system is better and by how much, what is within noise) so
that an executed notebook reads as a story. They only restate numbers already computed: the verdict logic
(significance, seed noise) stays where it is computed (:mod:`hybridnb.studies.compare`,
:mod:`hybridnb.studies.sweep`, :mod:`hybridnb.studies.study_report`), and a sentence never claims more
than its source does.

Relations: notebook 02 calls :func:`zero_shot`, 03 :func:`run_vs_zero_shot`, 06 :func:`backbones`,
07 :func:`image_text`; 04, 05 and 08 print the sentences of compare / sweep / study_report.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

SETTING_WORDS = {"mono": "within one language (mono)", "cross": "across languages (cross)",
                 "multi": "in the pooled multilingual setting (multi)"}


def _value(block: dict, *keys: str) -> float | None:
    """The point estimate at ``block[key][key]...`` (``setting, "map"``; ``"rank_distance"``), or None."""
    for key in keys:
        block = (block or {}).get(key)
    return None if block is None or block.get("value") is None else float(block["value"])


def zero_shot(results: dict[str, Any], model: str) -> list[str]:
    """Notebook 02: per dataset, the settings from easiest to hardest and what the rank distance says."""
    out = []
    for name, block in results["datasets"].items():
        maps = {s: _value(block, s, "map") for s in SETTING_WORDS}
        ranked = sorted((s for s in SETTING_WORDS if maps[s] is not None), key=lambda s: -maps[s])
        if not ranked:
            continue
        parts = [f"{SETTING_WORDS[s]} {maps[s]:.3f}" for s in ranked]
        text = (f"On {name}, zero-shot {model} retrieves best {parts[0]}"
                + (f", then {', then '.join(parts[1:])} mAP" if len(parts) > 1 else " mAP"))
        rd = _value(block, "rank_distance")
        if rd is not None and "multi" in ranked and ranked[-1] == "multi":
            text += (f"; pooled retrieval is the hardest because same-language candidates crowd out the answers "
                     f"in other languages (rank distance {rd:.0f}: lower is less language bias)")
        out.append(text + ".")
    return out


def _difference_phrase(diffs: dict[str, float], rd: float | None) -> tuple[list[str], list[str]]:
    better = [f"{s} {d:+.3f}" for s, d in diffs.items() if d > 0]
    worse = [f"{s} {d:+.3f}" for s, d in diffs.items() if d < 0]
    if rd is not None:
        (better if rd < 0 else worse).append(f"rank distance {rd:+.0f}")
    return better, worse


def run_vs_zero_shot(results: dict[str, Any], zero_shot_results: dict[str, Any] | None) -> list[str]:
    """Notebook 03: the trained encoder against its untrained start, per dataset, in point estimates (one run,
    one seed: the sentence says so; the study's seed-aware verdicts are in STUDY.md)."""
    t = results["training"]
    head = (f"{t['strategy']} after {t['steps']} steps (best validation loss at step {t['best_step']}"
            + (", the last step: longer training may still help" if t["best_step"] >= t["steps"] else "") + ")")
    if not zero_shot_results:
        return [f"{head}: no zero-shot result of this model and evaluation settings to compare with yet "
                "(notebook 02 writes it)."]
    out = []
    for name, block in results["datasets"].items():
        base = zero_shot_results.get("datasets", {}).get(name)
        if base is None:
            continue
        trained, untrained = ({s: _value(b, s, "map") for s in SETTING_WORDS} for b in (block, base))
        diffs = {s: trained[s] - untrained[s] for s in SETTING_WORDS
                 if trained[s] is not None and untrained[s] is not None}
        rd, base_rd = _value(block, "rank_distance"), _value(base, "rank_distance")
        rd = rd - base_rd if rd is not None and base_rd is not None else None
        better, worse = _difference_phrase({f"{s} mAP": d for s, d in diffs.items()}, rd)
        text = f"On {name}, {head} against zero-shot: "
        text += ("better on " + ", ".join(better) if better else "better on nothing")
        text += ("; worse on " + ", ".join(worse) if worse else "; worse on nothing")
        out.append(text + " (one run and one seed: point estimates, not verdicts).")
    return out


def backbones(zero_shot_frame: pd.DataFrame, gains: pd.DataFrame) -> list[str]:
    """Notebook 06: the strongest and weakest zero-shot backbone per dataset in multilingual mAP, then each
    fine-tuned backbone's hybrid against its baselines (significant at p < 0.05 or not)."""
    out = []
    for dataset, d in zero_shot_frame.dropna(subset=["mAP"]).groupby("dataset", sort=False):
        multi = d[d.setting == "multi"].sort_values("mAP", ascending=False)
        if len(multi) >= 2:
            top, low = multi.iloc[0], multi.iloc[-1]
            out.append(f"Zero-shot on {dataset}, {top.backbone} is the strongest backbone in multi mAP "
                       f"({top.mAP:.3f}) and {low.backbone} the weakest ({low.mAP:.3f}) of the {len(multi)} that "
                       "can pool languages.")
    if gains is None or gains.empty:
        return out
    for (backbone, dataset), g in gains.groupby(["backbone", "dataset"], sort=False):
        g = g[g.comparison.str.startswith("hybrid - ") & ~g.comparison.str.endswith("zero-shot")]
        for comparison, c in g.groupby("comparison", sort=False):
            sig = c[c.p_value < 0.05]
            said = lambda r: f"{r.column} {r.diff:+.{1 if r.column.startswith('rank') else 3}f}"  # noqa: E731
            wins = [said(r) for r in sig.itertuples() if (r.diff < 0) == r.column.startswith("rank distance")]
            losses = [said(r) for r in sig.itertuples() if (r.diff < 0) != r.column.startswith("rank distance")]
            out.append(f"{backbone} on {dataset}, {comparison.replace(' - ', ' vs ')}: "
                       + (f"better on {', '.join(wins)}" if wins else "better on nothing")
                       + (f"; worse on {', '.join(losses)}" if losses else "; worse on nothing")
                       + f"; the other {len(c) - len(sig)} columns within noise (p >= 0.05, one seed).")
    return out


def image_text(systems: dict[str, dict], summaries: dict[str, dict], k: int = 10) -> list[str]:
    """Notebook 07: the best trained strategy on text->image R@k (mean over seeds) against chance (k / test
    images), whether its interval clears the others', and the unseen languages beside the trained ones."""
    trained = [n for n, s in systems.items() if s["results"]["kind"] == "image-text trained"]
    if not trained:
        return []
    column = f"t2i R@{k}"
    ranked = sorted(trained, key=lambda n: -summaries[n][column]["mean"])
    best = summaries[ranked[0]][column]
    n = systems[ranked[0]]["results"]["data"]["items"]["test"]
    chance = min(1.0, k / n)
    seeds = len(best["per_seed"])
    text = (f"Text→image R@{k} (mean of {seeds} seed{'s' if seeds > 1 else ''}): {ranked[0]} is best at "
            f"{best['mean']:.3f} [{best['low']:.3f}, {best['high']:.3f}], {best['mean'] / chance:.1f}x chance "
            f"({k}/{n} = {chance:.3f})")
    if len(ranked) > 1:
        worst = summaries[ranked[-1]][column]
        overlap = best["low"] <= worst["high"]
        text += (f"; {ranked[-1]} is lowest at {worst['mean']:.3f}"
                 + (", and the intervals overlap: the strategies are not told apart here" if overlap else
                    ", outside the best one's interval"))
    out = [text + "."]
    unseen = summaries[ranked[0]].get(f"{column} unseen")
    if unseen is not None and column in summaries[ranked[0]]:
        seen = summaries[ranked[0]][f"{column} trained"]
        out.append(f"{ranked[0]} on the caption languages never trained on: {unseen['mean']:.3f} "
                   f"[{unseen['low']:.3f}, {unseen['high']:.3f}], against {seen['mean']:.3f} on the trained ones.")
    return out