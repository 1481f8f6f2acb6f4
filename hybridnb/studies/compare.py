"""What the text and image-text comparisons share: the column names and system labels of the paper's tables
(rows: systems; columns: mono / cross / multi mAP, R@1, R@10 and rank distance), the datasets and per-query
results of finished runs, the one wording of hybrid against each baseline, and the training-curve figure.

The seed-aware tables of REPORT.md are :mod:`hybridnb.studies.seed_tables`; the image-text ones,
:mod:`hybridnb.studies.image_text_compare`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from hybridnb.studies import paper_numbers, runs, zero_shot
from hybridnb import reporting
from hybridnb.evaluation.metrics import EvalResult

SETTINGS, METRICS = reporting.SETTINGS, reporting.METRICS  # mono / cross / multi; map, r@1, r@10
COLUMNS = [(s, m) for s in SETTINGS for m in METRICS] + [("rank_distance", None)]
LABELS = {**paper_numbers.LABELS, "mixed": "X-X", "en": "En-En"}


def system_label(strategy) -> str:
    return LABELS.get(strategy, str(strategy)) if isinstance(strategy, str) else runs.strategy_label(strategy, 0.5)


def zero_shot_dir(profile: dict) -> Path:
    return zero_shot.result_dir(profile["profile"], profile["model"])


def datasets(systems: dict) -> list[str]:
    """Datasets every trained system was evaluated on (the zero-shot run usually has more)."""
    names = [set(s["results"]["datasets"]) for k, s in systems.items() if k != "zero-shot"]
    return sorted(set.intersection(*names)) if names else []


def column_name(setting: str, metric: str | None) -> str:
    return "rank distance ↓" if setting == "rank_distance" else f"{setting} {metric}"


def digits(column: str) -> int:
    """Decimals a column's values are printed with, by its name: one for a rank distance, else three."""
    return 1 if "distance" in column else 3


def load_per_query(folder: str | Path, dataset: str, missing_ok: bool = False) -> EvalResult | None:
    """The per-query results a run (or zero-shot) folder holds for ``dataset`` (``per_query_<dataset>.npz``; for
    an image-text run, a problem); None where it has none and ``missing_ok``."""
    path = Path(folder) / f"per_query_{dataset}.npz"
    return None if missing_ok and not path.is_file() else EvalResult.load(path)


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
            cols = [f"{c} ({d:+.{digits(c)}f})" for c, d, w in zip(rows.column, rows["diff"], words)
                    if w == word]
            if cols:
                parts.append(f"{label} {', '.join(cols)}")
        unmeasured = " (one seed: seed noise not measured)" if "seed_noise_measured" in rows and \
            not rows.seed_noise_measured.all() else ""
        out.append(f"{target} vs {baseline}: " + "; ".join(parts) + unmeasured + ".")
    return out


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
