"""The seed-aware tables and figures of REPORT.md (:mod:`hybridnb.studies.report` composes them).

Per evaluation dataset, from per-query results of every system at every seed:

* the seed table: per system and column, the mean over seeds with its interval over seeds and questions
  (:func:`hybridnb.evaluation.seed_stats.seed_summary`) and the per-seed values;
* the verdicts: hybrid minus every baseline in every column, win / loss / no difference beyond seed and
  question noise (:func:`hybridnb.evaluation.seed_stats.seed_compare`);
* the paper beside us: its rows for XLM-R and LaBSE (:mod:`hybridnb.studies.paper_numbers`) and, per column and
  baseline, whether our direction of effect agrees with the paper's;
* figures: per-seed points with means and intervals, the differences with their intervals, validation curves.

Relations: :mod:`hybridnb.studies.recipe` plans and trains the runs; :mod:`hybridnb.studies.report` writes REPORT.md
from these parts; :mod:`hybridnb.evaluation.seed_stats` does the statistics; :mod:`hybridnb.studies.compare` holds
the column names and system labels.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from hybridnb.studies import compare, paper_numbers
from hybridnb import reporting
from hybridnb.evaluation import seed_stats

__all__ = ["SYSTEMS", "BASELINES", "per_seed_table", "verdict_table", "wide", "paper_agreement",
           "budget_rows", "frame_markdown", "column", "is_zero_shot", "summary_cell", "system_table", "paper_rows",
           "plot_points", "plot_differences", "grouped_bars", "alpha_of", "plot_alpha_sweep", "plot_validation_curves"]

SYSTEMS = ("zero-shot", "X-X-mono", "X-Y", "hybrid")
BASELINES = ("X-X-mono", "X-Y", "zero-shot")
TARGET = "hybrid"
PAPER_MODELS = ("XLM-R", "LaBSE")


def column(key: str) -> str:
    """The report's name of a seed_stats column (``mono_ap`` -> ``mono map``)."""
    return compare.column_name(*seed_stats.KEYS[key])


def is_zero_shot(name: str) -> bool:
    """A zero-shot row ("zero-shot", "zero-shot (<input>)"): one deterministic result, no training seeds."""
    return name.startswith("zero-shot")


def summary_cell(entry: dict | None, name: str) -> str:
    """A seed summary as 'mean [low, high]' with the decimals of its column (``name``: a key or a column name,
    :func:`hybridnb.studies.compare.digits`); "n/a" where the system has no such column."""
    if entry is None:
        return "n/a"
    return reporting.interval(entry["mean"], entry["low"], entry["high"], compare.digits(name))


def system_table(summaries: dict[str, dict], keys, labels: dict[str, str] | None = None, title=column) -> pd.DataFrame:
    """Rows: systems (or sweep points, ``labels`` renaming some); columns: the seeds and each key's
    'mean [low, high]', headed ``title(key)``."""
    rows = {}
    for name, summary in summaries.items():
        row = {"seeds": "—" if is_zero_shot(name) else len(summary[keys[0]]["per_seed"])}
        row.update({title(key): summary_cell(summary[key], key) for key in keys})
        rows[(labels or {}).get(name, name)] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def per_seed_table(summaries: dict[str, dict], keys=("mono_ap", "cross_ap", "multi_ap", "rank_distance")) -> pd.DataFrame:
    """Rows: systems; columns: the per-seed values of the headline columns, and their standard deviation."""
    rows = {}
    for name, summary in summaries.items():
        row = {}
        for key in keys:
            vals = summary[key]["per_seed"]
            d = compare.digits(key)
            sd = f", sd {np.std(vals, ddof=1):.{d}f}" if len(vals) > 1 else ""
            row[column(key)] = " / ".join(f"{v:.{d}f}" for v in vals) + sd
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def verdict_table(comparisons: dict[str, dict], name: str = "baseline") -> pd.DataFrame:
    """Long frame: baseline (or ``name``: a sweep's "point"), column, key, hybrid, baseline value, diff, low, high,
    p, verdict."""
    rows = []
    for baseline, cmp in comparisons.items():
        for key, e in cmp.items():
            rows.append({name: baseline, "column": column(key), "key": key, "hybrid": e["a"],
                         "baseline value": e["b"], "diff": e["diff"], "low": e["low"], "high": e["high"],
                         "p_value": e["p_value"], "df": e["df"], "verdict": seed_stats.verdict(e, key)})
    return pd.DataFrame(rows)


def wide(frame: pd.DataFrame, row, cell, order=None, fill: str | None = None) -> pd.DataFrame:
    """A long frame (one row per compared thing and ``column``) pivoted wide: rows ``row`` (a column name, or a
    list of them) in their first order in ``frame``; columns in theirs, or those of ``order`` present, in its
    order; each cell ``cell(r)`` of the long frame's row ``r`` (an itertuples row); ``fill`` where a row lacks a
    column. Every report's "difference [interval] ..." table; an empty frame gives an empty table."""
    if frame.empty:
        return pd.DataFrame()
    out = frame.assign(cell=[cell(r) for r in frame.itertuples()]).pivot(index=row, columns="column", values="cell")
    rows = frame[row].drop_duplicates()
    out = out[[c for c in (order or dict.fromkeys(frame.column)) if c in out.columns]].reindex(
        pd.MultiIndex.from_frame(rows) if isinstance(row, list) else rows)
    return out if fill is None else out.fillna(fill)


def _paper_diff(frame: pd.DataFrame, model: str, dataset: str, baseline: str, key: str) -> float | None:
    rows = frame[(frame.model == model) & (frame.dataset == dataset)].set_index("strategy")
    value = paper_numbers.value_name(*seed_stats.KEYS[key])
    if value not in rows.columns or "hybrid" not in rows.index or baseline not in rows.index:
        return None
    h, b = rows.at["hybrid", value], rows.at[baseline, value]
    if h is None or b is None or pd.isna(h) or pd.isna(b):
        return None
    return float(h) - float(b)


def _direction(diff: float | None) -> int | None:
    return None if diff is None else int(np.sign(diff))


def paper_agreement(verdicts: pd.DataFrame, paper: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Per column the paper prints and per baseline it has (X-X-mono, X-Y): our hybrid minus baseline with
    its verdict, the paper's difference for XLM-R and LaBSE, and whether the directions agree. "agrees" needs
    our difference to be beyond noise in the paper's direction; "same sign, within noise" otherwise."""
    rows = []
    codes = {"X-X-mono": "mono", "X-Y": "cross"}
    for _, r in verdicts[verdicts.baseline.isin(codes)].iterrows():
        diffs = {m: _paper_diff(paper, m, dataset, codes[r.baseline], r.key) for m in PAPER_MODELS}
        if all(d is None for d in diffs.values()):
            continue
        ours = _direction(r["diff"])
        row = {"column": r.column, "hybrid minus": r.baseline,
               "ours": f"{r['diff']:+.{compare.digits(r.key) + 1}f} ({r.verdict})"}
        for model, d in diffs.items():
            if d is None:
                row[f"paper {model}"], row[f"vs {model}"] = paper_numbers.MISSING, paper_numbers.MISSING
                continue
            row[f"paper {model}"] = f"{d:+.4g}"
            paper_dir = _direction(d)
            row[f"vs {model}"] = ("paper: tie" if paper_dir == 0 else
                                  "agrees" if r.verdict.rstrip("?") != "no difference" and ours == paper_dir else
                                  "opposite" if r.verdict.rstrip("?") != "no difference" else
                                  "same sign, within noise" if ours == paper_dir else "other sign, within noise")
        rows.append(row)
    return pd.DataFrame(rows)


def budget_rows(runs: list[dict]) -> pd.DataFrame:
    """Per run: where, wall time and training time as recorded by the run that trained it."""
    rows = []
    for r in runs:
        t = r["results"].get("timings", {})
        rss = t.get("peak_rss_mb")
        rows.append({"run": r["run"].cfg.run_name, "group": r["run"].group,
                     "wall (min)": round(t.get("wall_s", math.nan) / 60, 1),
                     "training (min)": round(t.get("train_s", math.nan) / 60, 1),
                     "peak RSS (GB)": f"{rss / 1000:.2f}" if rss else "not recorded",
                     "machine": r["results"].get("provenance", {}).get("hardware", {}).get("cpu", "?")})
    return pd.DataFrame(rows)


# ---- figures -------------------------------------------------------------------------------------------

HEADLINE = ("mono_ap", "cross_ap", "multi_ap", "rank_distance")
COLOURS = {"zero-shot": "0.45", "X-X-mono": "C0", "X-Y": "C1", "hybrid": "C3"}


def plot_points(summaries: dict[str, dict], dataset: str):
    """Per headline column: every seed's value (dots), the mean (bar) and its interval over seeds and
    questions (error bar), per system; zero-shot is one deterministic point."""
    import matplotlib.pyplot as plt

    names = [s for s in SYSTEMS if s in summaries]
    fig, axes = plt.subplots(1, len(HEADLINE), figsize=(3.2 * len(HEADLINE), 3.6))
    for ax, key in zip(axes, HEADLINE):
        for i, name in enumerate(names):
            e = summaries[name][key]
            ax.errorbar(i, e["mean"], yerr=[[e["mean"] - e["low"]], [e["high"] - e["mean"]]], fmt="_", ms=22,
                        mew=2.5, capsize=6, color=COLOURS[name], zorder=2)
            vals = e["per_seed"]
            offsets = np.linspace(-0.15, 0.15, len(vals)) if len(vals) > 1 else [0.0]
            ax.scatter(i + np.asarray(offsets), vals, s=18, color=COLOURS[name], edgecolor="k", lw=0.4, zorder=3)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_xlim(-0.6, len(names) - 0.4)  # room for the mean bars at both ends
        ax.set_title(column(key) + (" (lower is better)" if key in seed_stats.LOWER_IS_BETTER else ""), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    n_seeds = max(len(summaries[name][HEADLINE[0]]["per_seed"]) for name in names if name != "zero-shot")
    fig.suptitle(f"{dataset}: per-seed values (dots), mean and 95% interval over "
                 + (f"{n_seeds} seeds and questions" if n_seeds > 1 else "questions (one seed: training noise not measured)"),
                 fontsize=10)
    fig.tight_layout()
    return fig


def plot_differences(verdicts: pd.DataFrame, dataset: str):
    """Hybrid minus each baseline per column with its interval; filled = beyond noise. mAP/recall columns
    and rank distance on separate axes (different units)."""
    import matplotlib.pyplot as plt

    baselines = [b for b in BASELINES if b in set(verdicts.baseline)]
    fig, (ax, ax_rd) = plt.subplots(1, 2, figsize=(10, 4.6), gridspec_kw={"width_ratios": [3, 1]}, layout="constrained")
    for axis, frame in ((ax, verdicts[verdicts.key != "rank_distance"]), (ax_rd, verdicts[verdicts.key == "rank_distance"])):
        columns = list(dict.fromkeys(frame.column))
        for j, baseline in enumerate(baselines):
            sub = frame[frame.baseline == baseline].set_index("column").reindex(columns)
            y = np.arange(len(columns)) + (j - (len(baselines) - 1) / 2) * 0.22
            for yi, (_, r) in zip(y, sub.iterrows()):
                if pd.isna(r["diff"]):
                    continue
                filled = r.verdict in ("win", "loss")  # a one-seed verdict ("win?") is never drawn as beyond noise
                axis.errorbar(r["diff"], yi, xerr=[[r["diff"] - r.low], [r.high - r["diff"]]], fmt="o",
                              color=COLOURS[baseline], mfc=COLOURS[baseline] if filled else "white", capsize=3,
                              label=f"hybrid − {baseline}" if yi == y[0] else None)
        axis.axvline(0, color="k", lw=0.8)
        axis.set_yticks(range(len(columns)), columns)
        axis.set_ylim(len(columns) - 0.5, -0.5)  # first column on top; one row per column, whatever the panel
        axis.grid(axis="x", alpha=0.3)
    ax.set_xlabel("difference (mAP / recall)")
    ax_rd.set_xlabel("difference (ranks; < 0 favours hybrid)")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.01), ncol=3, fontsize=8, frameon=False)
    one_seed = verdicts.verdict.str.endswith("?").any()
    fig.suptitle(f"{dataset}: hybrid minus each baseline, 95% interval over seeds and questions "
                 + ("(one seed: training noise not measured, nothing filled)" if one_seed else "(filled: beyond noise)"),
                 fontsize=10)
    return fig


def grouped_bars(ax, mean: pd.DataFrame, low: pd.DataFrame | None = None, high: pd.DataFrame | None = None,
                 width: float = 0.8) -> np.ndarray:
    """Bars with intervals, grouped: one group per row of ``mean`` (its tick, labelled with the row's name, at
    the group's centre), one bar per column (its legend label; colours C0, C1, ...), ``low`` / ``high`` (same
    shape) drawn as the bar's error bar (none where NaN), "n/a" written where a bar's mean is NaN (a system that
    cannot do it). Returns the bars' centres, one row per group and one column per bar, for marks on them."""
    m = mean.to_numpy(dtype=float)
    lo, hi = (m if f is None else f.to_numpy(dtype=float) for f in (low, high))
    err = np.nan_to_num(np.stack([np.maximum(m - lo, 0), np.maximum(hi - m, 0)]))  # NaN: no error bar
    w = width / max(m.shape[1], 1)
    x = np.arange(len(m))[:, None] - width / 2 + (np.arange(m.shape[1]) + 0.5) * w
    for j, name in enumerate(mean.columns):
        ax.bar(x[:, j], np.nan_to_num(m[:, j]), w, yerr=err[:, :, j], capsize=2, error_kw={"lw": 0.8},
               color=f"C{j}", label=name)
        for xi in x[np.isnan(m[:, j]), j]:
            ax.annotate("n/a", (xi, 0), xytext=(0, 3), textcoords="offset points", ha="center", va="bottom",
                        fontsize=7, color="0.35")
    ax.set_xticks(range(len(m)), list(mean.index))
    return x


def alpha_of(label: str) -> float | None:
    """The alpha of a sweep point's label (``alpha=0.25`` -> 0.25), None for a mixture."""
    return float(label.split("=", 1)[1]) if label.startswith("alpha=") else None


def plot_alpha_sweep(summaries: dict[str, dict], columns: dict[str, str], title: str, unit: str = "questions",
                     colour: str = "C3"):
    """A ratio sweep against alpha, one panel per column (``{summary key: panel title}``): the mean over seeds
    (line), each seed (dots) and the seed-aware 95% interval (band, over seeds and ``unit``); the points off the
    alpha line (mixtures) are left to the table."""
    import matplotlib.pyplot as plt

    alphas = sorted((a, label) for label in summaries if (a := alpha_of(label)) is not None)
    x = [a for a, _ in alphas]
    fig, axes = plt.subplots(1, len(columns), figsize=(3.3 * len(columns), 3.4), layout="constrained")
    for ax, (key, panel) in zip(np.atleast_1d(axes), columns.items()):
        e = [summaries[label][key] for _, label in alphas]
        ax.plot(x, [v["mean"] for v in e], "o-", color=colour)
        ax.fill_between(x, [v["low"] for v in e], [v["high"] for v in e], color=colour, alpha=0.2)
        for a, v in zip(x, e):
            ax.scatter([a] * len(v["per_seed"]), v["per_seed"], s=10, color="k", zorder=3)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1])
        ax.set_xlabel("alpha (share of mono batches)")
        ax.set_title(panel, fontsize=9)
        ax.grid(alpha=0.3)
    counts = {a: len(summaries[label][next(iter(columns))]["per_seed"]) for a, label in alphas}
    n_seeds = max(counts.values())
    few = [a for a, n in counts.items() if n < n_seeds]
    fig.suptitle(f"{title}: mean over {n_seeds} seeds (line), seeds (dots), 95% interval over seeds and {unit} "
                 "(band)" if n_seeds > 1 else f"{title}: one seed (dots), 95% interval over {unit} only (band)",
                 fontsize=10)
    if few and n_seeds > 1:  # a point with fewer seeds than the rest: say which, and what its band leaves out
        so_far = ", ".join(f"alpha {a:g}: {n} seed{'s' if n > 1 else ''}" for a, n in counts.items() if n < n_seeds)
        note = (f"; with one seed the band is over {unit} only (no verdict)"
                if min(counts.values()) == 1 else "")
        fig.suptitle(f"{title}: mean over seeds (line), seeds (dots), 95% interval over seeds and {unit} (band);\n"
                     f"{so_far} so far (the others {n_seeds}){note}", fontsize=10)
    return fig


def plot_validation_curves(logs: dict[str, dict[int, list[dict]]]):
    """Validation loss and MRR per step, one line per seed, one colour per system (left: loss, right: MRR)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax_loss, ax_mrr) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, by_seed in logs.items():
        for i, (seed, log) in enumerate(sorted(by_seed.items())):
            val = [r for r in log if "val_loss" in r]
            steps = [r["step"] + 1 for r in val]
            label = name if i == 0 else None
            ax_loss.plot(steps, [r["val_loss"] for r in val], "o-", ms=3, color=COLOURS.get(name, "k"), alpha=0.8,
                         label=label)
            if val and "val_mrr" in val[0]:
                ax_mrr.plot(steps, [r["val_mrr"] for r in val], "o-", ms=3, color=COLOURS.get(name, "k"), alpha=0.8,
                            label=label)
    ax_loss.set(xlabel="step", ylabel="validation InfoNCE loss",
                title="validation loss (each strategy's own batch kinds)")
    ax_mrr.set(xlabel="step", ylabel="validation MRR", title="validation MRR (temperature-free)")
    for a in (ax_loss, ax_mrr):
        a.grid(alpha=0.3)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    ax_loss.legend(fontsize=8, title="one line per seed", title_fontsize=8)
    fig.tight_layout()
    return fig


def frame_markdown(frame: pd.DataFrame, index: str | None = "system") -> str:
    """A DataFrame as a markdown table, its index as the first column named ``index`` (None: no index)."""
    if frame.empty:
        return "(none)\n"
    rows = frame.reset_index().rename(columns={"index": index}) if index else frame
    return reporting.markdown_table(rows.to_dict(orient="records"))


def paper_rows(paper: pd.DataFrame, dataset: str) -> pd.DataFrame | None:
    rows = paper[paper.dataset == dataset]
    if rows.empty:
        return None
    cols = ["model", "strategy"] + [c for c in paper_numbers.VALUES if rows[c].notna().any()]
    out = rows[cols].copy()
    out["strategy"] = out.strategy.map(paper_numbers.LABELS)
    return out.fillna(paper_numbers.MISSING)
