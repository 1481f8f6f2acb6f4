"""The result of an evaluation (:class:`EvalResult`), its macro-averaging, and the input checks.

Split out of :mod:`hybridnb.evaluation.metrics` (which re-exports these names) so that the fast evaluator there,
the slow reference (:mod:`hybridnb.evaluation.reference`) and the bootstrap (:mod:`hybridnb.evaluation.stats`) share
one definition of what goes in (validated by ``_prepare``) and what comes out, without an import cycle.
The metrics and their macro-averaging are defined in the docstring of :mod:`hybridnb.evaluation.metrics`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["EvalResult", "metric_cells", "cell_sums", "macro_average", "json_safe", "DEFAULT_KS"]

DEFAULT_KS = (1, 10)


# --- aggregation (shared with hybridnb.evaluation.stats) ----------------------------------------------------


def metric_cells(values: np.ndarray, q_lang: np.ndarray, n_lang: int):
    """Macro-averaging cells of a per-query metric: ``(vals (Nq, m), cells (Nq, m), n_cells)``.
    (Nq, L) cross metrics: one cell per (query language, pool language); others: per query language."""
    values = np.asarray(values, dtype=np.float64)
    q_lang = np.asarray(q_lang, dtype=np.int64)
    if values.ndim == 2:
        return values, q_lang[:, None] * n_lang + np.arange(n_lang), n_lang * n_lang
    return values[:, None], q_lang[:, None], n_lang


def cell_sums(vals, cells, n_cells: int, group=None, n_groups: int = 1):
    """Per-(group, cell) sums and counts of the defined (finite) values, each (n_groups, n_cells)."""
    ok = np.isfinite(vals)
    flat = cells[ok]
    if group is not None:
        flat = np.broadcast_to(np.asarray(group)[:, None], vals.shape)[ok] * n_cells + flat
    size = n_groups * n_cells
    sums = np.bincount(flat, weights=vals[ok], minlength=size).reshape(n_groups, n_cells)
    counts = np.bincount(flat, minlength=size).astype(np.float64).reshape(n_groups, n_cells)
    return sums, counts


def macro_average(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean over the defined cells (count > 0) of sums / counts along the last axis; NaN if none."""
    defined = counts > 0
    means = np.divide(sums, counts, out=np.zeros(np.broadcast(sums, counts).shape), where=defined)
    n = defined.sum(axis=-1)
    return np.where(n > 0, means.sum(axis=-1) / np.maximum(n, 1), np.nan)


def json_safe(x):
    """Nested dicts/lists with numpy scalars -> plain Python; NaN/inf -> None (strict JSON)."""
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    return int(x) if isinstance(x, np.integer) else x


@dataclass
class EvalResult:
    """Per-query metrics of one system. ``per_query`` holds ``mono_ap``, ``mono_r@k``, ``multi_ap``,
    ``multi_r@k``, ``rank_distance`` (Nq,) and ``cross_ap``, ``cross_r@k`` (Nq, L): column Y = pool
    language Y, NaN on the query's own language (that is mono). ``q_lang``: positions in ``languages``."""

    languages: list[str]
    per_query: dict[str, np.ndarray]
    q_lang: np.ndarray
    q_group: np.ndarray
    ks: tuple[int, ...] = DEFAULT_KS
    meta: dict = field(default_factory=dict)

    @property
    def n_queries(self) -> int:
        return int(len(self.q_lang))

    def metric_keys(self) -> list[tuple[str, str, str]]:
        """(setting, name, per-query key) of every summary metric, e.g. ("mono", "map", "mono_ap")."""
        keys = [(s, name, f"{s}_{name.replace('map', 'ap')}")
                for s in ("mono", "cross", "multi") for name in ["map"] + [f"r@{k}" for k in self.ks]]
        return keys + [("rank_distance", "rank_distance", "rank_distance")]

    def nest(self, values: dict) -> dict:
        """{per-query key: v} -> {"mono": {"map": v, ...}, ..., "rank_distance": v}; a derived key (not a
        summary metric, e.g. ``mono_ap_seen``) stays at the top level under its own name."""
        out: dict = {}
        known = set()
        for setting, name, key in self.metric_keys():
            known.add(key)
            if key in values:
                if setting == "rank_distance":
                    out[setting] = values[key]
                else:
                    out.setdefault(setting, {})[name] = values[key]
        out.update({key: v for key, v in values.items() if key not in known})
        return out

    def cells(self, key: str):
        return metric_cells(self.per_query[key], self.q_lang, len(self.languages))

    def macro(self, key: str, query_lang: int | None = None) -> float:
        """Macro-average of one per-query metric, optionally for one query language only."""
        sums, counts = cell_sums(*self.cells(key))
        if query_lang is not None:
            m = sums.shape[1] // len(self.languages)  # cells per query language: L (cross) or 1
            sums, counts = (a[:, query_lang * m:(query_lang + 1) * m] for a in (sums, counts))
        return float(macro_average(sums, counts)[0])

    def matrix(self, metric: str = "ap") -> np.ndarray:
        """L x L setting means: row = query language, column = pool language, diagonal = mono."""
        L = len(self.languages)
        sums, counts = (a.reshape(L, L) for a in cell_sums(*self.cells(f"cross_{metric}")))
        msums, mcounts = cell_sums(*self.cells(f"mono_{metric}"))
        sums[np.diag_indices(L)], counts[np.diag_indices(L)] = msums[0], mcounts[0]
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)

    def summary(self) -> dict:
        """Macro-averaged metrics, the mAP matrix and a per-language breakdown (strict JSON: None = undefined)."""
        keys = [key for _, _, key in self.metric_keys()]
        out = {"languages": list(self.languages), "n_queries": self.n_queries,
               **self.nest({k: self.macro(k) for k in keys}), "map_matrix": self.matrix("ap").tolist()}
        n_per_lang = np.bincount(self.q_lang, minlength=len(self.languages))
        out["per_language"] = {lang: {"n_queries": int(n_per_lang[x]), **self.nest({k: self.macro(k, x) for k in keys})}
                               for x, lang in enumerate(self.languages)}
        return json_safe(out)

    def save(self, path: str | Path) -> Path:
        """Write everything (per-query arrays included) to a compressed ``.npz``, atomically."""
        path = Path(path)
        path = path if path.suffix == ".npz" else path.with_name(path.name + ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        q_group = np.asarray(self.q_group)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez_compressed(tmp, **{f"per_query/{k}": np.asarray(v) for k, v in self.per_query.items()},
                            languages=np.asarray(self.languages, dtype=str), q_lang=self.q_lang,
                            q_group=q_group.astype(str) if q_group.dtype == object else q_group,
                            ks=np.asarray(self.ks, dtype=np.int64), meta=np.asarray(json.dumps(json_safe(self.meta))))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "EvalResult":
        with np.load(Path(path), allow_pickle=False) as z:
            per_query = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("per_query/")}
            return cls(languages=[str(x) for x in z["languages"]], per_query=per_query, q_lang=z["q_lang"],
                       q_group=z["q_group"], ks=tuple(int(k) for k in z["ks"]), meta=json.loads(str(z["meta"])))


# --- input checks and per-query layout (shared by evaluation and evaluation_reference) -----------


def _lang_codes(lang, languages: list[str], what: str) -> np.ndarray:
    lang = np.asarray(lang)
    if lang.dtype.kind in "iu":
        if lang.size and (lang.min() < 0 or lang.max() >= len(languages)):
            raise ValueError(f"{what}: integer language codes must lie in [0, {len(languages)})")
        return lang.astype(np.int64)
    index = {x: i for i, x in enumerate(languages)}
    try:
        return np.fromiter((index[str(x)] for x in lang.ravel()), dtype=np.int64, count=lang.size)
    except KeyError as err:
        raise ValueError(f"{what}: language {err.args[0]!r} is not in languages={languages}") from None


def _prepare(n_q, n_c, q_lang, c_lang, indptr, indices, languages, q_group, ks):
    """Validate everything before any long work; returns the normalised inputs."""
    languages = [str(x) for x in languages]
    q_code, c_code = _lang_codes(q_lang, languages, "q_lang"), _lang_codes(c_lang, languages, "c_lang")
    if q_code.shape != (n_q,) or c_code.shape != (n_c,):
        raise ValueError(f"q_lang / c_lang must have {n_q} / {n_c} entries, got {q_code.shape} / {c_code.shape}")
    indptr, indices = np.asarray(indptr, dtype=np.int64), np.asarray(indices, dtype=np.int64)
    if indptr.shape != (n_q + 1,) or indptr[0] != 0 or indptr[-1] != len(indices) or np.any(np.diff(indptr) < 0):
        raise ValueError("relevant_indptr must be non-decreasing, shape (Nq + 1,), from 0 to len(relevant_indices)")
    if indices.size and (indices.min() < 0 or indices.max() >= n_c):
        raise ValueError(f"relevant_indices must lie in [0, {n_c})")
    key = np.repeat(np.arange(n_q, dtype=np.int64), np.diff(indptr)) * n_c + indices
    if np.unique(key).size != key.size:
        raise ValueError("a query lists the same relevant candidate twice")
    q_group = np.arange(n_q) if q_group is None else np.asarray(q_group)
    if q_group.shape != (n_q,):
        raise ValueError(f"q_group must have {n_q} entries, got shape {q_group.shape}")
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError("ks must be positive integers")
    return languages, q_code, c_code, indptr, indices, q_group, ks


def _split_pools(pool: dict, q_code: np.ndarray, ks) -> dict:
    """(Nq, L) per-pool arrays -> mono (Nq,) and cross (Nq, L, own language NaN) per-query metrics."""
    rows, out = np.arange(len(q_code)), {}
    for name in ["ap"] + [f"r@{k}" for k in ks]:
        mat = pool[name]
        out[f"mono_{name}"] = mat[rows, q_code].copy()
        out[f"cross_{name}"] = mat.copy()
        out[f"cross_{name}"][rows, q_code] = np.nan
    return out
