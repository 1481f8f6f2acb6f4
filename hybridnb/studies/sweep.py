"""The mix-ratio study (notebook 05): which runs make up the sweep and how their results line up.

``alpha`` is the share of X-X-mono batches in a hybrid (the rest are X-Y): alpha = 1 *is* the mono baseline
and alpha = 0 *is* the cross baseline, so those two points use the plain ``mono``/``cross`` strategies and
share their runs (same config hash) with notebook 04. Mixtures add points inside the (mono, cross, mixed)
simplex. Every point is validated before the first one trains.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from hybridnb import reporting
from hybridnb.studies import runs
from hybridnb.training import sampling
from hybridnb.evaluation import stats
from hybridnb.evaluation.metrics import EvalResult

__all__ = ["REFERENCE", "SETTINGS", "strategy_for_alpha", "sweep_points", "sweep_frame", "table_with_cis",
           "paired_against", "seed_spread", "noise_threshold", "summary_lines", "report_markdown", "plot_alpha_line", "plot_points"]

REFERENCE = "alpha=0.5"  # the paper's hybrid: every other point is compared with it, query by query
SETTINGS = {"mono mAP": "mono_ap", "cross mAP": "cross_ap", "multi mAP": "multi_ap", "rank distance": "rank_distance"}


def strategy_for_alpha(alpha: float) -> str:
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"sweep alpha must be in [0, 1], got {alpha!r}")
    return "cross" if alpha == 0 else "mono" if alpha == 1 else "hybrid"


def sweep_points(params: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, run parameters) for every alpha in ``params['alphas']`` and mixture in ``params['mixtures']``.

    Raises before any work on an empty sweep, an alpha outside [0, 1] or an invalid mixture.
    """
    alphas = list(params.get("alphas") or [])
    mixtures = list(params.get("mixtures") or [])
    if not alphas and not mixtures:
        raise ValueError("the sweep needs at least one value in `alphas` or `mixtures`")
    points = [(f"alpha={float(a):g}", {**params, "strategy": strategy_for_alpha(a), "alpha": float(a),
                                        "run_name": None}) for a in alphas]
    for m in mixtures:
        if not isinstance(m, dict):
            raise ValueError(f"a sweep mixture is a mapping kind -> weight, got {m!r}")
        sampling.parse_strategy(m, 0.5)
        points.append((runs.strategy_label(m, 0.5), {**params, "strategy": m, "run_name": None}))
    labels = [label for label, _ in points]
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate sweep points: {labels}")
    for _, p in points:
        runs.check_run(p)
    return points


def sweep_frame(results: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per (point, evaluation dataset): mixture weights, mAP per setting and rank distance with CIs."""
    rows = []
    for label, res in results.items():
        weights = res["training"]["weights"]
        for name, block in res["datasets"].items():
            row = {"point": label, "dataset": name,
                   **{f"w_{k}": float(weights.get(k, 0.0)) for k in ("mono", "cross", "mixed")}}
            for s in ("mono", "cross", "multi"):
                e = block[s]["map"]
                row.update({f"{s} mAP": e["value"], f"{s} low": e["ci"][0], f"{s} high": e["ci"][1]})
            e = block["rank_distance"]
            row.update({"rank distance": e["value"], "rd low": e["ci"][0], "rd high": e["ci"][1]})
            rows.append(row)
    return pd.DataFrame(rows)


def table_with_cis(frame: pd.DataFrame) -> pd.DataFrame:
    """The sweep table for a reader: mixture weights, then each column as ``value [low, high]`` (95% CI)."""
    out = frame[["dataset", "point", "w_mono", "w_cross", "w_mixed"]].copy()
    bounds = {"rank distance": ("rd low", "rd high")}
    for column in SETTINGS:
        low, high = bounds.get(column, (column.replace("mAP", "low"), column.replace("mAP", "high")))
        digits = 1 if column == "rank distance" else 3
        out[column] = [f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
                       for v, lo, hi in zip(frame[column], frame[low], frame[high])]
    return out


def paired_against(run_dirs: dict[str, Path], dataset: str, reference: str = REFERENCE, n_resamples: int = 1000,
                   seed: int = 0) -> pd.DataFrame:
    """Each point minus ``reference`` per column on the same queries: difference, 95% paired bootstrap CI and
    permutation p-value (:func:`hybridnb.evaluation.stats.compare`).

    The points' own CIs overlap (question difficulty varies far more than the mixes do); differences paired
    by query say which mixes really differ from the paper's hybrid.
    """
    if reference not in run_dirs:
        raise ValueError(f"the reference point {reference!r} is not in the sweep ({sorted(run_dirs)})")

    def load(label):
        return EvalResult.load(Path(run_dirs[label]) / f"per_query_{dataset}.npz")

    ref, rows = load(reference), []
    for label in run_dirs:
        if label == reference:
            continue
        cmp = stats.compare(load(label), ref, n_resamples=n_resamples, seed=seed, metrics=list(SETTINGS.values()))
        for column, key in SETTINGS.items():
            setting, _, _ = next(k for k in ref.metric_keys() if k[2] == key)
            e = cmp[setting] if setting == "rank_distance" else cmp[setting]["map"]
            rows.append({"dataset": dataset, "point": label, "column": column, "diff": e["diff"], "low": e["low"],
                         "high": e["high"], "p_value": e["p_value"]})
    return pd.DataFrame(rows)


def seed_spread(params: dict[str, Any], seeds: list[int]) -> pd.DataFrame:
    """The reference point (hybrid, alpha = 0.5) at every seed in ``seeds`` that has a finished run (none is
    trained here; ``make study`` with the same profile trains them): one row per (dataset, seed).

    Every sweep point is one seed; this is how far another seed moves the same configuration, so a reader can
    see which differences between points exceed training noise.
    """
    finished = {seed: runs.find_finished(runs.check_run({**params, "strategy": "hybrid", "alpha": 0.5,
                                                         "seed": seed, "run_name": None})) for seed in seeds}
    finished = {seed: results for seed, results in finished.items() if results is not None}
    if not finished:
        return pd.DataFrame(columns=["dataset", "seed", *SETTINGS])
    frame = sweep_frame(finished).rename(columns={"point": "seed"})  # the sweep's own table, one row per seed
    return frame[["dataset", "seed", *SETTINGS]]


def _spread_sd(spread: pd.DataFrame | None) -> dict[tuple[str, str], float]:
    """{(dataset, column): standard deviation over seeds} where at least 2 seeds finished."""
    if spread is None or spread.empty:
        return {}
    return {(d, c): float(g[c].std(ddof=1)) for d, g in spread.groupby("dataset") if len(g) >= 2 for c in SETTINGS}


def noise_threshold(spread: pd.DataFrame | None) -> dict[tuple[str, str], float]:
    """{(dataset, column): 2·√2·sd}: how far apart two one-seed points must be before the difference is beyond
    training noise (the sd of a difference of two single runs is √2·sd; two of those is about a 95% band)."""
    return {key: 2 * math.sqrt(2) * v for key, v in _spread_sd(spread).items()}


def _reference_values(frame: pd.DataFrame, dataset: str, reference: str) -> dict[str, float] | None:
    row = frame[(frame.dataset == dataset) & (frame.point == reference)]
    return None if row.empty else {c: float(row.iloc[0][c]) for c in SETTINGS}


def summary_lines(paired: pd.DataFrame, spread: pd.DataFrame | None = None, alpha: float = 0.05) -> list[str]:
    """One sentence per (dataset, point) of :func:`paired_against`'s frame: where the point is better or worse
    than alpha = 0.5 at p < ``alpha``, and (with two or more seeds in ``spread``) which of those differences
    exceed the seed noise of :func:`noise_threshold`. RATIO_SWEEP.md and notebook 05 print them."""
    threshold = noise_threshold(spread)
    lines = []
    for (dataset, point), block in paired.groupby(["dataset", "point"], sort=False):
        verdict = {"better": [], "worse": []}
        for r in block.itertuples():
            if r.p_value < alpha:
                digits = 1 if r.column == "rank distance" else 3
                better = (r.diff < 0) == (r.column == "rank distance")
                verdict["better" if better else "worse"].append(f"{r.column} ({r.diff:+.{digits}f})")
        said = "; ".join(f"{k} on {', '.join(v)}" for k, v in verdict.items() if v) or "no significant difference"
        if threshold:
            beyond = [r.column for r in block.itertuples()
                      if (dataset, r.column) in threshold and abs(r.diff) > threshold[(dataset, r.column)]]
            said += f"; beyond seed noise: {', '.join(beyond) if beyond else 'none'}"
        lines.append(f"{dataset}, {point}: {said}")
    return lines


def report_markdown(prov: dict, frame: pd.DataFrame, paired: pd.DataFrame, run_note: str,
                    reference: str = REFERENCE, alpha: float = 0.05, spread: pd.DataFrame | None = None) -> str:
    """RATIO_SWEEP.md: every point with its CIs, the reference's seed-to-seed spread (when ``spread`` has two
    or more seeds), then every point against the paper's hybrid, paired, with the seed noise beside it."""
    text = (f"# Mix-ratio sweep\n\n{reporting.stamp(prov)}\n\n{run_note} Each cell: value [95% bootstrap CI over "
            "question groups]; sweep.csv has the numbers. Figures: figures/ratio_sweep.png (the alpha line), "
            "figures/ratio_sweep_points_<dataset>.png (every point)\n\n"
            + reporting.markdown_table(table_with_cis(frame).to_dict("records")))
    sd = _spread_sd(spread)
    if sd:
        text += (f"\n\n## Seed-to-seed spread of {reference}\n\nThe same configuration trained with other seeds "
                 "(the study's runs of this profile): a difference between two one-seed points is only beyond "
                 "training noise when it is larger than about 2·√2·sd (the sd of a difference of two single runs "
                 "is √2·sd).\n\n" + reporting.markdown_table(
                     [{k: (f"{v:.1f}" if k == "rank distance" else f"{v:.3f}") if k in SETTINGS else v
                       for k, v in r.items()} for r in spread.to_dict("records")])
                 + "\n" + "".join(f"- {d}, {c}: sd {v:.{1 if c == 'rank distance' else 4}f} over "
                                   f"{int((spread.dataset == d).sum())} seeds\n" for (d, c), v in sd.items()))
    else:
        n = 0 if spread is None else len(spread)
        text += (f"\n\nThe seed-to-seed spread of {reference} is not measured yet ({n} finished seed run(s) of the "
                 "profile's `seeds`; `make study STUDY_PROFILE=<this profile>` trains them), so the differences "
                 "below say nothing about training noise.\n")
    if paired.empty:
        return text + f"\n\nNo paired comparison: the sweep has no {reference} point.\n"
    rows = []
    for (dataset, point), block in paired.groupby(["dataset", "point"], sort=False):
        row = {"dataset": dataset, "point": point, **{column: "" for column in SETTINGS}}
        for r in block.itertuples():
            digits = 1 if r.column == "rank distance" else 3
            row[r.column] = f"{r.diff:+.{digits}f} [{r.low:+.{digits}f}, {r.high:+.{digits}f}], p = {r.p_value:.3g}"
        rows.append(row)
    lines = [f"- {line}" for line in summary_lines(paired, spread, alpha)]
    summary = (f"Against {reference}, at p < 0.05 (no correction for the number of comparisons):\n"
               + "\n".join(lines))
    return (text + f"\n\n## Each point minus {reference} (the paper's hybrid), paired by query\n\n"
            "Difference [95% paired bootstrap CI], two-sided paired permutation p-value; for rank distance "
            "lower is better.\n\n" + reporting.markdown_table(rows) + "\n\n" + summary + "\n")


_COLORS = {"mono mAP": "C0", "cross mAP": "C1", "multi mAP": "C2", "rank distance": "C3"}
_NOISE_LABEL = "seed noise: alpha=0.5 ± 2·√2·sd over seeds"
_SEEDS_LABEL = "alpha=0.5 at each seed"


def plot_alpha_line(frame: pd.DataFrame, spread: pd.DataFrame | None = None, reference: str = REFERENCE):
    """mAP (left) and rank distance (right) against alpha, bands = 95% CIs over questions. With ``spread``
    (:func:`seed_spread`), the reference at each of its seeds is drawn as a cross at alpha = 0.5 and dotted lines
    mark the reference ± 2·√2·sd: a one-seed point outside them differs from alpha = 0.5 beyond training noise."""
    import matplotlib.pyplot as plt

    line = frame[frame.point.str.startswith("alpha=")].assign(alpha=lambda d: d.w_mono).sort_values("alpha")
    threshold = noise_threshold(spread)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    for column, color in _COLORS.items():
        ax, lo, hi = ((axes[1], "rd low", "rd high") if column == "rank distance" else
                      (axes[0], f"{column.split()[0]} low", f"{column.split()[0]} high"))
        for name, d in line.groupby("dataset"):
            ax.plot(d.alpha, d[column], "o-", color=color, label=f"{column} ({name})")
            ax.fill_between(d.alpha, d[lo], d[hi], color=color, alpha=0.12)
            ref = _reference_values(frame, name, reference)
            if (name, column) in threshold and ref is not None:
                for sign in (-1, 1):
                    ax.axhline(ref[column] + sign * threshold[(name, column)], color=color, ls=":", lw=1,
                               label=_NOISE_LABEL if (sign == 1 and column in ("mono mAP", "rank distance")) else None)
            if spread is not None and not spread.empty:
                seeds = spread[spread.dataset == name]
                ax.plot([0.5] * len(seeds), seeds[column], "x", color="k", ms=6,
                        label=_SEEDS_LABEL if column in ("mono mAP", "rank distance") else None)
    axes[0].set(xlabel="alpha = P(mono batch)", ylabel="mAP", title="mAP vs mix ratio")
    axes[1].set(xlabel="alpha = P(mono batch)", ylabel="rank distance (lower = less bias)", title="language bias")
    for ax in axes:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)  # below: no point hidden
    fig.tight_layout()
    return fig


def plot_points(frame: pd.DataFrame, dataset: str, spread: pd.DataFrame | None = None, reference: str = REFERENCE):
    """Every point of the sweep (the alpha line and the simplex mixtures) with its 95% CIs, one row per point;
    with ``spread``, the reference at each seed (crosses on its row) and dotted lines at the reference ±
    2·√2·sd per setting, so a point whose marker lies outside its setting's lines differs beyond seed noise."""
    import matplotlib.pyplot as plt

    d = frame[frame.dataset == dataset].reset_index(drop=True)
    y = list(range(len(d))[::-1])  # first point on top
    row_of = dict(zip(d.point, y))
    threshold, ref = noise_threshold(spread), _reference_values(frame, dataset, reference)
    seeds = spread[spread.dataset == dataset] if spread is not None and not spread.empty else None
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(d) + 1.8), sharey=True)
    for offset, column in zip((-0.15, 0.0, 0.15, 0.0), _COLORS):
        ax, s, color = (axes[1] if column == "rank distance" else axes[0]), column.split()[0], _COLORS[column]
        lo, hi = ("rd low", "rd high") if column == "rank distance" else (f"{s} low", f"{s} high")
        v = d[column]
        ax.errorbar(v, [t + offset for t in y], xerr=[v - d[lo], d[hi] - v], fmt="o", color=color, capsize=3,
                    label=None if column == "rank distance" else s)
        if (dataset, column) in threshold and ref is not None:
            for sign in (-1, 1):
                ax.axvline(ref[column] + sign * threshold[(dataset, column)], color=color, ls=":", lw=1,
                           label=_NOISE_LABEL if (sign == 1 and column in ("mono mAP", "rank distance")) else None)
        if seeds is not None and reference in row_of:
            ax.plot(seeds[column], [row_of[reference] + offset] * len(seeds), "x", color="k", ms=6, zorder=3,
                    label=_SEEDS_LABEL if column in ("mono mAP", "rank distance") else None)
    axes[0].set(xlabel="mAP", title=f"{dataset}: mAP per setting")
    axes[1].set(xlabel="rank distance (lower = less bias)", title="language bias")
    axes[0].set_yticks(list(y), [f"{p} ({a:g}/{b:g}/{c:g})" for p, a, b, c in
                                 zip(d.point, d.w_mono, d.w_cross, d.w_mixed)], fontsize=8)
    axes[0].set_ylabel("point (mono/cross/mixed batch weights)")
    legend = {}  # one legend for both panels, below them: no point hidden
    for ax in axes:
        legend.update({label: handle for handle, label in zip(*ax.get_legend_handles_labels())})
    fig.legend(legend.values(), legend.keys(), fontsize=8, loc="lower center", ncol=len(legend))
    fig.tight_layout(rect=(0, 0.6 / fig.get_figheight(), 1, 1))
    return fig
