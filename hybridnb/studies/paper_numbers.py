"""The paper's own numbers, transcribed by hand into ``paper_numbers.yaml``, for REPORT.md to print beside ours.

Elmahdy, Lin, Ahmad (2024, arXiv:2408.10536), transcribed from the ICLR 2025 submission
(https://openreview.net/pdf?id=zkNCWtw2fd) exactly as printed, nothing estimated or recomputed. ``rows`` hold one
line per model, training data, evaluation dataset and strategy (Table 1's mAP; the recall and rank-distance
"Mean" lines of Tables 3-8), each with its source; ``per_language`` (Tables 3-6), ``rank_distance`` (Tables 7-8)
and ``miracl`` (Tables 12-13) hold the per-language tables, one YAML line per printed line. Every section is
checked strictly (:func:`load`, :func:`load_per_language`, :func:`load_rank_distance`, :func:`load_miracl`), and
REPORT.md shows the rows, labelled as the paper's, with one line per claim saying whether the paper's numbers
point the way it claims.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import yaml

from hybridnb import reporting

__all__ = ["PAPER_NUMBERS", "PAPER_DIRECTION", "STRATEGIES", "VALUES", "MODELS", "LANGUAGES", "MIRACL_LANGUAGES",
           "load", "load_per_language", "load_rank_distance", "load_miracl", "directions", "markdown"]

PAPER_NUMBERS = Path(__file__).with_name("paper_numbers.yaml")
STRATEGIES = ("mono", "cross", "hybrid")  # X-X-mono, X-Y, hybrid
KEYS = ("model", "train", "dataset", "strategy")
VALUES = ("mono_map", "cross_map", "multi_map", "mono_r@1", "cross_r@1", "multi_r@1",
          "mono_r@10", "cross_r@10", "multi_r@10", "rank_distance")  # value_name of each column, the paper's order
LABELS = {"mono": "X-X-mono", "cross": "X-Y", "hybrid": "hybrid"}  # the paper's names (compare.LABELS adds more)
MISSING = "—"  # how a value the paper does not print (null in the YAML) is shown

# The per-language sections: the paper's models, each dataset's languages in the paper's order, which table
# holds what. "mean" (and for MIRACL "median") are the tables' summary lines.
MODELS = ("XLM-R", "LaBSE")
LANGUAGES = {"xquad-r": ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"),
             "mlqa-r": ("ar", "de", "en", "es", "hi", "vi", "zh")}
MIRACL_LANGUAGES = ("sw", "bn", "hi", "ko", "th", "te", "fi", "ja", "es", "fr", "ru", "zh", "fa", "ar", "id")
SETTINGS = ("mono", "cross", "multi")
PER_LANGUAGE_METRICS = ("map", "r@1", "r@10")
MIRACL_METRICS = ("ndcg@10", "recall@100")
PER_LANGUAGE_TABLES = {3: ("XLM-R", "xquad-r"), 4: ("XLM-R", "mlqa-r"), 5: ("LaBSE", "xquad-r"),
                       6: ("LaBSE", "mlqa-r")}
RANK_DISTANCE_TABLES = {7: "xquad-r", 8: "mlqa-r"}
MIRACL_TABLES = {12: "XLM-R", 13: "LaBSE"}
SECTIONS = ("source", "scale", "rows", "per_language", "rank_distance", "miracl")

#: The paper's claims (abstract and conclusions): hybrid is comparable or better than X-X-mono on monolingual
#: retrieval and than X-Y on cross-lingual and multilingual retrieval, and it reduces language bias. As
#: directions of hybrid minus baseline: +1 higher is expected, -1 lower. The paper's own numbers are read against
#: them in :func:`directions`; our runs against the paper's differences in
#: :func:`hybridnb.studies.seed_tables.paper_agreement`.
PAPER_DIRECTION = {("mono", "map"): ("cross", +1), ("cross", "map"): ("mono", +1), ("multi", "map"): ("mono", +1),
                   ("rank_distance", None): ("mono", -1)}


def value_name(setting: str, metric: str | None) -> str:
    """The YAML key of a (setting, metric) column: "mono_map", ..., "rank_distance"."""
    return setting if metric is None else f"{setting}_{metric}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping key given twice (a language line typed twice would else vanish)."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        twice = sorted({str(k) for k in keys if keys.count(k) > 1})
        if twice:
            raise ValueError(f"key {twice} given twice in one mapping (line {node.start_mark.line + 1})")
        return super().construct_mapping(node, deep=deep)


def _read(path: Path) -> dict:
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    unknown = set(doc) - set(SECTIONS)
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)}; expected {', '.join(SECTIONS)}")
    return doc


def _is_number(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def load(path: str | Path = PAPER_NUMBERS) -> tuple[pd.DataFrame, str | None]:
    """(one row per transcribed line, the source) from the YAML; empty frame when no row was filled in.

    A row may carry its own ``source`` (which tables its values come from); the frame's ``source`` column is
    None where it does not. Raises ValueError on anything malformed (unknown keys or strategy, a non-number
    value, rows without a source, a repeated row), so a wrong transcription stops the report instead of printing.
    """
    path = Path(path)
    doc = _read(path)
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
        missing, extra = [k for k in KEYS if not row.get(k)], set(row) - set(KEYS) - set(VALUES) - {"source"}
        if missing or extra:
            raise ValueError(f"{where}: missing {missing}, unknown {sorted(extra)}; keys are {KEYS} + {VALUES}"
                             " + (source)")
        if "source" in row and not (isinstance(row["source"], str) and row["source"].strip()):
            raise ValueError(f"{where}: source must be a non-empty string, got {row['source']!r}")
        if row["strategy"] not in STRATEGIES:
            raise ValueError(f"{where}: unknown strategy {row['strategy']!r}; expected one of {STRATEGIES}")
        for k in VALUES:
            v = row.get(k)
            if v is not None and not _is_number(v):
                raise ValueError(f"{where}: {k} must be a number or null, got {v!r}")
        key = tuple(str(row[k]) for k in KEYS)
        if key in seen:
            raise ValueError(f"{where}: {key} appears twice")
        seen.add(key)
        out.append({**{k: str(row[k]) for k in KEYS}, **{k: row.get(k) for k in VALUES}, "source": row.get("source")})
    return pd.DataFrame(out, columns=[*KEYS, *VALUES, "source"]), (source if rows else None)


def _blocks(path: Path, section: str, keys: tuple[str, ...], tables: dict) -> list[tuple[str, dict]]:
    """The section's blocks, each a mapping with exactly ``keys`` and a known table number."""
    blocks = _read(path).get(section) or []
    if not isinstance(blocks, list):
        raise ValueError(f"{path}: {section} must be a list of blocks, got {type(blocks).__name__}")
    out = []
    for i, block in enumerate(blocks):
        where = f"{path}: {section} block {i + 1}"
        if not isinstance(block, dict):
            raise ValueError(f"{where}: expected a mapping, got {block!r}")
        missing, extra = [k for k in keys if k not in block], sorted(set(block) - set(keys))
        if missing or extra:
            raise ValueError(f"{where}: missing {missing}, unknown {extra}; keys are {keys}")
        table = block["table"]
        if isinstance(table, bool) or table not in tables:
            raise ValueError(f"{where}: table {table!r} is not one of the paper's {section} tables {sorted(tables)}")
        out.append((f"{where} (Table {table})", block))
    return out


def _lines(where: str, rows, languages: tuple[str, ...], summaries: tuple[str, ...], width: int) -> dict:
    """A block's printed lines: exactly ``languages`` + ``summaries`` as keys, each ``width`` numbers."""
    if not isinstance(rows, dict):
        raise ValueError(f"{where}: rows must map each language to its printed line, got {rows!r}")
    expected = (*languages, *summaries)
    missing, extra = [k for k in expected if k not in rows], sorted(str(k) for k in set(rows) - set(expected))
    if missing or extra:
        raise ValueError(f"{where}: missing languages {missing}, unknown languages {extra}; expected {expected}")
    for lang in expected:
        line = rows[lang]
        if not isinstance(line, list) or len(line) != width:
            raise ValueError(f"{where}: {lang} must be a list of {width} values, got {line!r}")
        bad = [v for v in line if not _is_number(v)]
        if bad:
            raise ValueError(f"{where}: {lang} has non-numbers {bad}")
    return {lang: rows[lang] for lang in expected}


def _no_repeats(frame: pd.DataFrame, keys: list[str], path: Path, section: str) -> pd.DataFrame:
    twice = frame[frame.duplicated(keys, keep=False)]
    if not twice.empty:
        raise ValueError(f"{path}: {section} gives {tuple(twice.iloc[0][keys])} twice")
    return frame.reset_index(drop=True)


def load_per_language(path: str | Path = PAPER_NUMBERS) -> pd.DataFrame:
    """Tables 3-6, long: table, model, dataset, setting, metric, strategy, language (or "mean"), value.

    Each block is one table's block of metrics (``metrics`` names the metric of each setting's columns) with one
    line of 9 values per language as printed: mono, cross, multi settings, each X-X-mono, X-Y, hybrid.
    """
    path, cols = Path(path), ["table", "model", "dataset", "setting", "metric", "strategy", "language", "value"]
    out = []
    for where, b in _blocks(path, "per_language", ("table", "model", "dataset", "metrics", "rows"),
                            PER_LANGUAGE_TABLES):
        if (b["model"], b["dataset"]) != PER_LANGUAGE_TABLES[b["table"]]:
            raise ValueError(f"{where}: the paper's Table {b['table']} is {PER_LANGUAGE_TABLES[b['table']]}, "
                             f"not {(b['model'], b['dataset'])}")
        metrics = b["metrics"]
        if not isinstance(metrics, dict) or sorted(metrics) != sorted(SETTINGS) or \
                any(m not in PER_LANGUAGE_METRICS for m in metrics.values()):
            raise ValueError(f"{where}: metrics must map each of {SETTINGS} to one of {PER_LANGUAGE_METRICS}, "
                             f"got {metrics!r}")
        lines = _lines(where, b["rows"], LANGUAGES[b["dataset"]], ("mean",), len(SETTINGS) * len(STRATEGIES))
        for lang, line in lines.items():
            for j, v in enumerate(line):
                setting, strategy = SETTINGS[j // len(STRATEGIES)], STRATEGIES[j % len(STRATEGIES)]
                out.append((b["table"], b["model"], b["dataset"], setting, metrics[setting], strategy, lang, v))
    frame = pd.DataFrame(out, columns=cols)
    return _no_repeats(frame, cols[:-1], path, "per_language")


def load_rank_distance(path: str | Path = PAPER_NUMBERS) -> pd.DataFrame:
    """Tables 7-8, long: table, model, dataset, strategy, language (or "mean"), value.

    Each block is one table, one line of 6 values per language as printed: XLM-R then LaBSE, each X-X-mono,
    X-Y, hybrid.
    """
    path, cols = Path(path), ["table", "model", "dataset", "strategy", "language", "value"]
    out = []
    for where, b in _blocks(path, "rank_distance", ("table", "dataset", "rows"), RANK_DISTANCE_TABLES):
        if b["dataset"] != RANK_DISTANCE_TABLES[b["table"]]:
            raise ValueError(f"{where}: the paper's Table {b['table']} is {RANK_DISTANCE_TABLES[b['table']]}, "
                             f"not {b['dataset']!r}")
        lines = _lines(where, b["rows"], LANGUAGES[b["dataset"]], ("mean",), len(MODELS) * len(STRATEGIES))
        for lang, line in lines.items():
            for j, v in enumerate(line):
                model, strategy = MODELS[j // len(STRATEGIES)], STRATEGIES[j % len(STRATEGIES)]
                out.append((b["table"], model, b["dataset"], strategy, lang, v))
    frame = pd.DataFrame(out, columns=cols)
    return _no_repeats(frame, cols[:-1], path, "rank_distance")


def load_miracl(path: str | Path = PAPER_NUMBERS) -> pd.DataFrame:
    """Tables 12-13 (MIRACL dev, monolingual), long: table, model, metric, strategy, language, value.

    Each block is one table, one line of 6 values per language (and "mean", "median") as printed: nDCG@10 then
    Recall@100, each X-X-mono, X-Y, hybrid.
    """
    path, cols = Path(path), ["table", "model", "metric", "strategy", "language", "value"]
    out = []
    for where, b in _blocks(path, "miracl", ("table", "model", "rows"), MIRACL_TABLES):
        if b["model"] != MIRACL_TABLES[b["table"]]:
            raise ValueError(f"{where}: the paper's Table {b['table']} is {MIRACL_TABLES[b['table']]}, "
                             f"not {b['model']!r}")
        lines = _lines(where, b["rows"], MIRACL_LANGUAGES, ("mean", "median"),
                       len(MIRACL_METRICS) * len(STRATEGIES))
        for lang, line in lines.items():
            for j, v in enumerate(line):
                metric, strategy = MIRACL_METRICS[j // len(STRATEGIES)], STRATEGIES[j % len(STRATEGIES)]
                out.append((b["table"], b["model"], metric, strategy, lang, v))
    frame = pd.DataFrame(out, columns=cols)
    return _no_repeats(frame, cols[:-1], path, "miracl")


def _fmt(v) -> str:
    return MISSING if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:g}"


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
        sources = group["source"].notna().any()
        rows = [{"model": r.model, "train": r.train, "system": LABELS[r.strategy], **{c: _fmt(r[c]) for c in cols},
                 **({"source": r.source if isinstance(r.source, str) else MISSING} if sources else {})}
                for _, r in group.iterrows()]
        lines += [f"### {dataset}: the paper's numbers", "", reporting.markdown_table(rows), ""]
    claims = directions(frame)
    if claims:
        lines += ["In the paper's numbers:", ""] + [f"- {c}" for c in claims] + [""]
    return lines
