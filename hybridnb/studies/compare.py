"""The comparison behind notebook 04 and reports/REPORT.md: zero-shot vs X-X-mono vs X-Y vs hybrid.

Collects the zero-shot results (notebook 02) and one finished run per strategy (notebook 03, trained here on
demand through :func:`hybridnb.studies.runs.run`, which reuses finished runs by config hash), lays them out as the
paper's tables (rows: systems; columns: mono / cross / multi mAP, R@1, R@10 and rank distance with 95% CIs),
tests hybrid against each baseline per column with the paired bootstrap and permutation test of
:func:`hybridnb.evaluation.stats.compare`, and says in words whether each difference goes the paper's way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hybridnb.studies import paper_numbers, runs, zero_shot
from hybridnb import file_hashes, reporting
from hybridnb.evaluation import stats
from hybridnb.evaluation.metrics import EvalResult

SETTINGS, METRICS = ("mono", "cross", "multi"), ("map", "r@1", "r@10")
COLUMNS = [(s, m) for s in SETTINGS for m in METRICS] + [("rank_distance", None)]
LABELS = {**paper_numbers.LABELS, "mixed": "X-X", "en": "En-En"}
PAPER_DIRECTION = paper_numbers.PAPER_DIRECTION  # the paper's claims, as directions of hybrid minus baseline


def system_label(strategy) -> str:
    return LABELS.get(strategy, str(strategy)) if isinstance(strategy, str) else runs.strategy_label(strategy, 0.5)


def zero_shot_dir(profile: dict) -> Path:
    return zero_shot.result_dir(profile["profile"], profile["model"])


def collect(profile: dict, train: bool = True, show_progress: bool = True) -> dict[str, dict[str, Any]]:
    """{system: {"results", "dir"}}: zero-shot first, then each strategy of ``profile["strategies"]``.

    A strategy's run is read from reports/runs/ when its config hash matches, else trained now (``train``).
    """
    zs = zero_shot_dir(profile)
    if not (zs / "results.json").is_file():
        raise FileNotFoundError(f"no zero-shot results in {zs}: run notebooks/02_zero_shot.ipynb with profile "
                                f"{profile['profile']} first")
    file_hashes.check_result_folder(zs, f"run notebooks/02_zero_shot.ipynb with profile {profile['profile']}")
    systems = {"zero-shot": {"results": json.loads((zs / "results.json").read_text(encoding="utf-8")), "dir": zs}}
    for strategy in profile.get("strategies") or [profile["strategy"]]:
        params = {**profile, "strategy": strategy, "run_name": None}
        cfg = runs.check_run(params)
        found = runs.find_finished_dir(cfg)
        if found is None:
            if not train:
                raise FileNotFoundError(f"no finished run for strategy {strategy!r} ({cfg.run_name})")
            found = runs.run(params, show_progress=show_progress)
        systems[system_label(strategy)] = {"results": found[1], "dir": found[0]}
    return systems


def datasets(systems: dict) -> list[str]:
    """Datasets every trained system was evaluated on (the zero-shot run usually has more)."""
    names = [set(s["results"]["datasets"]) for k, s in systems.items() if k != "zero-shot"]
    return sorted(set.intersection(*names)) if names else []


def _cell(block: dict, setting: str, metric: str | None) -> dict:
    return block["rank_distance"] if setting == "rank_distance" else block[setting][metric]


def column_name(setting: str, metric: str | None) -> str:
    return "rank distance ↓" if setting == "rank_distance" else f"{setting} {metric}"


def results_table(systems: dict, dataset: str) -> pd.DataFrame:
    """Rows: systems; columns: metric 'value [low, high]' strings (the paper's table layout)."""
    rows = {}
    for name, sys in systems.items():
        block = sys["results"]["datasets"].get(dataset)
        if block is None:
            continue
        rows[name] = {column_name(s, m): reporting.format_ci(_cell(block, s, m), 2 if s == "rank_distance" else 3)
                      for s, m in COLUMNS}
    return pd.DataFrame.from_dict(rows, orient="index")


def load_per_query(system: dict, dataset: str) -> EvalResult:
    return EvalResult.load(system["dir"] / f"per_query_{dataset}.npz")


def significance(systems: dict, dataset: str, target: str = "hybrid", n_resamples: int = 1000,
                 seed: int = 0) -> pd.DataFrame:
    """Hybrid minus each other system per column: difference, 95% paired bootstrap CI, permutation p-value."""
    a = load_per_query(systems[target], dataset)
    rows = []
    for name, sys in systems.items():
        if name == target or dataset not in sys["results"]["datasets"]:
            continue
        cmp = stats.compare(a, load_per_query(sys, dataset), n_resamples=n_resamples, seed=seed)
        for s, m in COLUMNS:
            e = cmp["rank_distance"] if s == "rank_distance" else cmp[s][m]
            rows.append({"baseline": name, "setting": s, "metric": m or "rank_distance",
                         "column": column_name(s, m), "diff": e["diff"], "low": e["low"], "high": e["high"],
                         "p_value": e["p_value"], "n_resamples": n_resamples})
    return pd.DataFrame(rows)


def map_difference_cells(a: EvalResult, b: EvalResult) -> tuple[np.ndarray, np.ndarray]:
    """X->Y AP of ``a`` minus ``b`` per (query language, pool language) cell, with a q-value per cell.

    Both systems answer the same queries, so each cell is a paired comparison over that cell's queries (the
    diagonal is mono AP): a paired t-test per cell (scipy.stats.ttest_rel; a cell holds hundreds of queries,
    so the mean difference is close to normal), then Benjamini-Hochberg over all L x L cells
    (scipy.stats.false_discovery_control), because a figure of 121 cells marked at p < 0.05 would mark about
    six by chance. Returns (diff, q), both (L, L); NaN where a cell has fewer than 2 queries.
    """
    from scipy import stats as sps

    L = len(a.languages)
    diff, p = np.full((L, L), np.nan), np.full((L, L), np.nan)
    for x in range(L):
        rows = a.q_lang == x
        for y in range(L):
            if x == y:  # the diagonal is mono
                va, vb = a.per_query["mono_ap"][rows], b.per_query["mono_ap"][rows]
            else:
                va, vb = a.per_query["cross_ap"][rows, y], b.per_query["cross_ap"][rows, y]
            ok = np.isfinite(va) & np.isfinite(vb)
            if ok.sum() < 2:
                continue
            d = va[ok] - vb[ok]
            diff[x, y] = d.mean()
            p[x, y] = 1.0 if np.allclose(d, d[0]) else sps.ttest_rel(va[ok], vb[ok]).pvalue
    q = np.full_like(p, np.nan)
    tested = np.isfinite(p)
    if tested.any():
        q[tested] = sps.false_discovery_control(p[tested], method="bh")
    return diff, q


def plot_map_differences(systems: dict, dataset: str, target: str = "hybrid", alpha: float = 0.05):
    """One heatmap per baseline of ``target`` minus baseline X->Y mAP, all on one colour scale (symmetric
    around 0, red: ``target`` better), in mAP points (x100, one decimal: differences are often below 0.01);
    cells with a BH-adjusted q < ``alpha`` are marked * (:func:`map_difference_cells`)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    a = load_per_query(systems[target], dataset)
    others = [s for s in systems if s != target and dataset in systems[s]["results"]["datasets"]]
    cells = {o: map_difference_cells(a, load_per_query(systems[o], dataset)) for o in others}
    vmax = max([np.nanmax(np.abs(d)) * 100 for d, _ in cells.values()] + [1e-9])
    L = len(a.languages)
    fig, axes = plt.subplots(1, len(others) + 1, figsize=(0.5 * L * len(others) + 2.5, 0.5 * L + 1.6), squeeze=False,
                             gridspec_kw={"width_ratios": [1] * len(others) + [0.04]})  # last: the shared colour bar
    for i, (ax, other) in enumerate(zip(axes[0], others)):
        d, q = cells[other]
        labels = np.array([[("" if not np.isfinite(d[r, c]) else f"{100 * d[r, c]:+.1f}"
                             + ("*" if np.isfinite(q[r, c]) and q[r, c] < alpha else ""))
                            for c in range(L)] for r in range(L)])
        sns.heatmap(100 * d, annot=labels if L <= 12 else False, fmt="", cmap="RdBu_r", center=0, vmin=-vmax,
                    vmax=vmax, xticklabels=a.languages, yticklabels=a.languages, square=True, ax=ax,
                    cbar=i == len(others) - 1, cbar_ax=axes[0][-1] if i == len(others) - 1 else None,
                    annot_kws={"fontsize": 6}, cbar_kws={"label": f"{target} − baseline, mAP × 100"})
        n_sig = int(np.nansum(q < alpha))
        ax.set(title=f"{target} − {other} ({n_sig} of {int(np.isfinite(q).sum())} cells *)",
               xlabel="candidate language (Y)", ylabel="query language (X)" if i == 0 else "")
    fig.suptitle(f"{dataset}: X→Y mAP difference (one colour scale; * = paired t-test, BH q < {alpha:g})")
    fig.tight_layout()
    return fig


def p_text(p: float, n_resamples=None) -> str:
    """'p=0.031', or 'p≤2/1001' where a randomisation test of N resamples is at its floor (it cannot say more)."""
    if n_resamples is not None and not pd.isna(n_resamples) and p <= 2.0 / (int(n_resamples) + 1) * (1 + 1e-9):
        return f"p≤2/{int(n_resamples) + 1}"
    return f"p={p:.3f}"


def baseline_verdicts(sig: pd.DataFrame, target: str = "hybrid") -> list[str]:
    """One sentence per baseline, every column: where ``target`` wins, loses, and cannot be told apart from it.

    The one wording of the text (REPORT.md) and image-text (MULTIMODAL.md) comparisons. ``sig`` has a row per
    (baseline, column) with ``diff``, ``low``, ``high``; a win or loss needs the 95% interval of the difference
    to exclude 0 (rank distance, marked ↓ or "distance": lower is better), unless the rows bring their own
    ``verdict`` (the image-text seed-aware one, ``?`` when one seed leaves seed noise unmeasured)."""
    out = []
    for baseline, rows in sig.groupby("baseline", sort=False):
        if "verdict" in rows:
            words = [v.rstrip("?") for v in rows.verdict]
        else:
            words = ["no difference" if r.low <= 0 <= r.high else
                     "win" if (r.diff < 0) == ("distance" in r.column or r.column.endswith("↓")) else "loss"
                     for r in rows.itertuples()]
        parts = []
        for word, label in (("win", "wins on"), ("loss", "loses on"), ("no difference", "no difference on")):
            cols = [f"{c} ({d:+.{1 if 'distance' in c else 3}f})" for c, d, w in zip(rows.column, rows["diff"], words)
                    if w == word]
            if cols:
                parts.append(f"{label} {', '.join(cols)}")
        unmeasured = " (one seed: seed noise not measured)" if "seed_noise_measured" in rows and \
            not rows.seed_noise_measured.all() else ""
        out.append(f"{target} vs {baseline}: " + "; ".join(parts) + unmeasured + ".")
    return out


def direction_verdicts(sig: pd.DataFrame, expected: dict[tuple[str, str], int], source: str,
                       target: str = "hybrid", alpha: float = 0.05) -> list[str]:
    """One sentence per expected direction of effect: does ``target`` minus the baseline point that way?

    ``sig`` holds one row per (baseline, column) with diff, low, high and p_value (a paired test of one run
    each); ``expected`` maps (column, baseline label) to +1 (target expected higher) or -1 (lower); ``source``
    says whose expectation it is ("the paper"). Text and image-text comparisons both report through this.
    """
    out = []
    for (column, baseline), sign in expected.items():
        rows = sig[(sig.baseline == baseline) & (sig.column == column)]
        if rows.empty:
            continue
        r = rows.iloc[0]
        significant, agrees = r.p_value < alpha, np.sign(r["diff"]) == sign
        verdict = (f"agrees with {source}" if agrees and significant else
                   f"points {source}'s way but is not significant" if agrees else
                   f"contradicts {source} (significantly)" if significant else
                   f"goes against {source}'s direction, not significantly")
        out.append(f"{column}: {source} expects {target} to be {'lower' if sign < 0 else 'higher'} than "
                   f"{baseline}; ours: {r['diff']:+.4g} [{r.low:+.4g}, {r.high:+.4g}], "
                   f"{p_text(r.p_value, r.get('n_resamples'))} "
                   f"→ {verdict}.")
    return out


def verdicts(sig: pd.DataFrame, target: str = "hybrid", alpha: float = 0.05) -> list[str]:
    """One sentence per paper claim (:data:`PAPER_DIRECTION`): does our run agree with the paper's direction?"""
    expected = {(column_name(setting, metric), system_label(baseline)): sign
                for (setting, metric), (baseline, sign) in PAPER_DIRECTION.items()}
    return direction_verdicts(sig, expected, "the paper", target, alpha)


def significance_wide(sig: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """Rows: baselines; columns: ``sig``'s columns (in ``columns``' order); cells 'diff [low, high] p=...'."""
    n = sig["n_resamples"] if "n_resamples" in sig else [None] * len(sig)
    cell = [f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}] {p_text(p, k)}" for d, lo, hi, p, k in
            zip(sig["diff"], sig.low, sig.high, sig.p_value, n)]
    wide = sig.assign(cell=cell).pivot(index="baseline", columns="column", values="cell")
    return wide[columns or list(dict.fromkeys(sig.column))].fillna("n/a")


def per_language_frame(systems: dict, dataset: str) -> pd.DataFrame:
    """Long frame: system, language, setting (mono/cross/multi mAP and rank distance), value."""
    rows = []
    for name, sys in systems.items():
        block = sys["results"]["datasets"].get(dataset)
        for lang, d in (block or {}).get("per_language", {}).items():
            for s in SETTINGS:
                rows.append({"system": name, "language": lang, "measure": f"{s} mAP", "value": d[s]["map"]})
            rows.append({"system": name, "language": lang, "measure": "rank distance", "value": d["rank_distance"]})
    return pd.DataFrame(rows)


def training_logs(systems: dict) -> pd.DataFrame:
    rows = []
    for name, sys in systems.items():
        log = sys["dir"] / "train_log.jsonl"
        if log.is_file():
            for line in log.read_text(encoding="utf-8").splitlines():
                rows.append({"system": name, **json.loads(line)})
    return pd.DataFrame(rows)


def plot_training_curves(systems: dict, title: str, window: int = 5):
    """Each trained system's training loss (a ``window``-step moving average: a step's loss depends on its
    batch kind, so the raw losses of a hybrid run jump between the mono and cross levels) and its validation
    loss (dots, on one fixed validation set, so the systems are comparable there), integer step ticks."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    logs = training_logs(systems)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for system, log in logs.groupby("system", sort=False):
        line, = ax.plot(log.step + 1, log.loss.rolling(window, min_periods=1).mean(),
                        label=f"{system}: train ({window}-step mean)")
        val = log.dropna(subset=["val_loss"]) if "val_loss" in log else log.iloc[:0]
        if len(val):
            ax.plot(val.step + 1, val.val_loss, "o", color=line.get_color(), label=f"{system}: validation")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="step", ylabel="InfoNCE loss", title=title)
    ax.legend(fontsize=7, ncol=2)
    ax.annotate(reporting.MIXED_KINDS_NOTE, (0.0, -0.2), xycoords="axes fraction", fontsize=7, color="0.35")
    fig.tight_layout()
    return fig
