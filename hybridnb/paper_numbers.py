"""The paper's own numbers, transcribed by hand into ``paper_numbers.yaml``, for REPORT.md to print beside ours.

The tables of Elmahdy, Lin, Ahmad (2024, arXiv:2408.10536) are not reachable from this project's offline
machines, so the shipped file holds none; nothing here invents or estimates one. Whoever has the paper fills
``rows`` (one per model, training data, evaluation dataset and strategy, values as printed) and ``source``
(the table they came from); the file is checked strictly, and REPORT.md then shows them, labelled as the
paper's, with one line per claim saying whether the paper's numbers and ours point the same way.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import yaml

from hybridnb import reporting

__all__ = ["PAPER_NUMBERS", "PAPER_DIRECTION", "STRATEGIES", "VALUES", "load", "directions", "markdown"]

PAPER_NUMBERS = Path(__file__).with_name("paper_numbers.yaml")
STRATEGIES = ("mono", "cross", "hybrid")  # X-X-mono, X-Y, hybrid
KEYS = ("model", "train", "dataset", "strategy")
VALUES = ("mono_map", "cross_map", "multi_map", "mono_r@1", "cross_r@1", "multi_r@1",
          "mono_r@10", "cross_r@10", "multi_r@10", "rank_distance")  # value_name of each column, the paper's order
LABELS = {"mono": "X-X-mono", "cross": "X-Y", "hybrid": "hybrid"}  # the paper's names (compare.LABELS adds more)

#: The paper's claims (abstract and conclusions): hybrid is comparable or better than X-X-mono on monolingual
#: retrieval and than X-Y on cross-lingual and multilingual retrieval, and it reduces language bias. As
#: directions of hybrid minus baseline: +1 higher is expected, -1 lower. Our runs are tested against them in
#: :func:`hybridnb.compare.verdicts`, the paper's own numbers in :func:`directions`.
PAPER_DIRECTION = {("mono", "map"): ("cross", +1), ("cross", "map"): ("mono", +1), ("multi", "map"): ("mono", +1),
                   ("rank_distance", None): ("mono", -1)}


def value_name(setting: str, metric: str | None) -> str:
    """The YAML key of a (setting, metric) column: "mono_map", ..., "rank_distance"."""
    return setting if metric is None else f"{setting}_{metric}"


def load(path: str | Path = PAPER_NUMBERS) -> tuple[pd.DataFrame, str | None]:
    """(one row per transcribed line, the source) from the YAML; empty frame when no row was filled in.

    Raises ValueError on anything malformed (unknown keys or strategy, a non-number value, rows without a
    source, a repeated row), so a wrong transcription stops the report instead of printing.
    """
    path = Path(path)
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(doc) - {"source", "scale", "rows"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)}; expected source, scale, rows")
    rows, source = doc.get("rows") or [], doc.get("source")
    if rows and not (isinstance(source, str) and source.strip()):
        raise ValueError(f"{path}: rows without a source (say which table of the paper they come from)")
    if doc.get("scale") not in (None, "percent", "fraction"):
        raise ValueError(f"{path}: scale must be 'percent' or 'fraction', got {doc.get('scale')!r}")
    seen, out = set(), []
    for i, row in enumerate(rows):
        where = f"{path}: row {i + 1}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a mapping, got {row!r}")
        missing, extra = [k for k in KEYS if not row.get(k)], set(row) - set(KEYS) - set(VALUES)
        if missing or extra:
            raise ValueError(f"{where}: missing {missing}, unknown {sorted(extra)}; keys are {KEYS} + {VALUES}")
        if row["strategy"] not in STRATEGIES:
            raise ValueError(f"{where}: unknown strategy {row['strategy']!r}; expected one of {STRATEGIES}")
        for k in VALUES:
            v = row.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise ValueError(f"{where}: {k} must be a number or null, got {v!r}")
        key = tuple(str(row[k]) for k in KEYS)
        if key in seen:
            raise ValueError(f"{where}: {key} appears twice")
        seen.add(key)
        out.append({**{k: str(row[k]) for k in KEYS}, **{k: row.get(k) for k in VALUES}})
    return pd.DataFrame(out, columns=[*KEYS, *VALUES]), (source if rows else None)


def _fmt(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:g}"


def directions(frame: pd.DataFrame) -> list[str]:
    """Per model, training data and dataset: the paper's hybrid minus baseline for each claim, in words."""
    out = []
    for (model, train, dataset), group in frame.groupby(["model", "train", "dataset"], sort=True):
        by = group.set_index("strategy")
        for (setting, metric), (baseline, sign) in PAPER_DIRECTION.items():
            value = value_name(setting, metric)
            if "hybrid" not in by.index or baseline not in by.index:
                continue
            h, b = by.at["hybrid", value], by.at[baseline, value]
            if h is None or b is None or pd.isna(h) or pd.isna(b):
                continue
            diff = float(h) - float(b)
            way = "as claimed" if diff * sign > 0 else "tie" if diff == 0 else "against the claim"
            out.append(f"{model} ({train} → {dataset}), {value}: hybrid {_fmt(h)} vs {LABELS[baseline]} {_fmt(b)} "
                       f"({diff:+.4g}, {way}).")
    return out


def markdown(frame: pd.DataFrame, source: str | None) -> list[str]:
    """The paper's block of REPORT.md: per dataset, the transcribed rows, then the claims in the paper's numbers."""
    if frame.empty:
        return []
    lines = [f"Transcribed by hand from the paper ({source}); not measured here. Their setup differs from this "
             "profile's (see the paper), so compare directions of effect, not values.", ""]
    for dataset, group in frame.groupby("dataset", sort=True):
        cols = [v for v in VALUES if group[v].notna().any()]
        rows = [{"model": r.model, "train": r.train, "system": LABELS[r.strategy],
                 **{c: _fmt(r[c]) for c in cols}}
                for _, r in group.iterrows()]
        lines += [f"### {dataset}: the paper's numbers", "", reporting.markdown_table(rows), ""]
    claims = directions(frame)
    if claims:
        lines += ["In the paper's numbers:", ""] + [f"- {c}" for c in claims] + [""]
    return lines
