"""nDCG@10 and Recall@100 per query by trec_eval itself (``pytrec_eval``), and the adapter that lets
:mod:`hybridnb.evaluation.stats` bootstrap them.

Why trec_eval: MIRACL's official numbers (and the paper's Tables 12-13, which follow MIRACL) come from
``pyserini.eval.trec_eval -c -M 100 -m ndcg_cut.10 -m recall.100``, i.e. trec_eval's C code.
``pytrec-eval-terrier`` binds that same code (``RelevanceEvaluator``), so the per-query values here are what
MIRACL's script prints, including its conventions, which a re-implementation would have to copy by hand:

* nDCG@10 (``ndcg_cut.10``): gain = the judged grade (MIRACL: 0 or 1), discount 1 / log2(rank + 1), normalised
  by the ideal ranking of the query's judged passages; unjudged = grade 0.
* Recall@100 (``recall.100``): relevant (grade >= 1) passages in the top 100 / all relevant passages judged
  for the query (also those not retrieved, and those not in the corpus).
* Ranking: by score, descending; trec_eval breaks score ties by docid (descending string order), not by the
  run's order.
* Every query of the qrels is averaged (``-c``): a query the run misses counts 0.

:class:`TrecResult` stores one value per query and metric, with ``q_lang`` (the query's language) and
``q_group`` (``"lang/qid"``, each query its own resampling unit: MIRACL's queries are not parallel across
languages). Its cells are query languages, so :func:`hybridnb.evaluation.stats.confidence_intervals` gives the
macro average over languages (the paper's "mean" line) with a bootstrap CI, and
:func:`hybridnb.evaluation.stats.compare` pairs two systems query by query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from hybridnb.evaluation.results import EvalResult, cell_sums, json_safe, macro_average, metric_cells

__all__ = ["MEASURES", "library_version", "run_dict", "per_query", "TrecResult", "from_languages"]

#: our metric name -> trec_eval's measure (its per-query key replaces the dot by an underscore)
MEASURES = {"ndcg@10": "ndcg_cut.10", "recall@100": "recall.100"}


def library_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"pytrec-eval-terrier {version('pytrec-eval-terrier')} (trec_eval)"
    except PackageNotFoundError:  # pragma: no cover - another build of pytrec_eval
        return "pytrec_eval (trec_eval)"


def _check_metrics(metrics: Sequence[str]) -> list[str]:
    metrics = list(metrics)
    unknown = [m for m in metrics if m not in MEASURES]
    if unknown or not metrics:
        raise ValueError(f"unknown metric(s) {unknown or metrics}; choose from {list(MEASURES)}")
    return metrics


def run_dict(query_ids: Sequence[str], rows: np.ndarray, scores: np.ndarray,
             docids_of: Callable[[np.ndarray], list[str]]) -> dict[str, dict[str, float]]:
    """A TREC run ``{qid: {docid: score}}`` from top-k corpus rows (Q, k) and their scores; rows of -1 (no hit)
    are left out. ``docids_of`` maps corpus rows to docids (``MiraclLanguage.docids``)."""
    rows, scores = np.asarray(rows), np.asarray(scores)
    if rows.shape != scores.shape or rows.ndim != 2 or len(rows) != len(query_ids):
        raise ValueError(f"rows {rows.shape} and scores {scores.shape} must be (queries={len(query_ids)}, k)")
    docids = docids_of(rows.ravel())
    k = rows.shape[1]
    run: dict[str, dict[str, float]] = {}
    for j, qid in enumerate(query_ids):
        hits = run.setdefault(str(qid), {})
        for c in range(k):
            if rows[j, c] >= 0:
                hits[docids[j * k + c]] = float(scores[j, c])
    return run


def per_query(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], query_ids: Sequence[str],
              metrics: Sequence[str] = tuple(MEASURES)) -> dict[str, np.ndarray]:
    """{metric: (len(query_ids),) float64} by trec_eval, in ``query_ids``' order; every query must have qrels.
    A query absent from the run (or with an empty one) scores 0, as ``trec_eval -c`` counts it."""
    import pytrec_eval

    metrics = _check_metrics(metrics)
    query_ids = [str(q) for q in query_ids]
    missing = [q for q in query_ids if q not in qrels]
    if missing:
        raise ValueError(f"{len(missing)} queries have no qrels (first: {missing[:3]})")
    judged = {q: {str(d): int(r) for d, r in qrels[q].items()} for q in query_ids}
    evaluator = pytrec_eval.RelevanceEvaluator(judged, {MEASURES[m] for m in metrics})
    found = evaluator.evaluate({q: run[q] for q in query_ids if run.get(q)})
    return {m: np.array([found.get(q, {}).get(MEASURES[m].replace(".", "_"), 0.0) for q in query_ids],
                        dtype=np.float64) for m in metrics}


@dataclass
class TrecResult(EvalResult):
    """Per-query trec_eval metrics of one system over several languages (``per_query``: {metric: (Nq,)}).

    One cell per query language: the macro average is the mean over languages of each language's mean, the
    paper's "mean" line; ``q_group`` = ``"lang/qid"`` (the bootstrap resamples queries)."""

    def metric_keys(self) -> list[tuple[str, str, str]]:
        return [("mono", m, m) for m in MEASURES if m in self.per_query]

    def macro(self, key: str, query_lang: int | None = None) -> float:
        sums, counts = cell_sums(*metric_cells(self.per_query[key], self.q_lang, len(self.languages)))
        if query_lang is not None:
            sums, counts = sums[:, query_lang:query_lang + 1], counts[:, query_lang:query_lang + 1]
        return float(macro_average(sums, counts)[0])

    def summary(self) -> dict:
        """Macro averages over languages and the per-language means (strict JSON)."""
        keys = [m for _, m, _ in self.metric_keys()]
        n = np.bincount(self.q_lang, minlength=len(self.languages))
        return json_safe({"languages": list(self.languages), "n_queries": self.n_queries,
                          "macro": {m: self.macro(m) for m in keys},
                          "per_language": {lang: {"n_queries": int(n[x]), **{m: self.macro(m, x) for m in keys}}
                                           for x, lang in enumerate(self.languages)}})

    def subset(self, lang: str) -> "TrecResult":
        """This result restricted to one language (for its own bootstrap CI)."""
        x = list(self.languages).index(lang)
        keep = self.q_lang == x
        return TrecResult([lang], {k: v[keep] for k, v in self.per_query.items()},
                          np.zeros(int(keep.sum()), dtype=np.int64), np.asarray(self.q_group)[keep], (), dict(self.meta))

    def matrix(self, metric: str = "ap"):  # noqa: ARG002 - no cross-lingual cells in monolingual retrieval
        raise NotImplementedError("MIRACL is monolingual: there is no query-language x pool-language matrix")


def from_languages(parts: dict[str, tuple[Sequence[str], dict[str, np.ndarray]]], meta: dict | None = None) -> TrecResult:
    """One :class:`TrecResult` from ``{lang: (query_ids, {metric: values})}``, languages in the given order."""
    languages = list(parts)
    if not languages:
        raise ValueError("no language")
    metrics = list(next(iter(parts.values()))[1])
    per, q_lang, q_group = {m: [] for m in metrics}, [], []
    for x, (lang, (qids, values)) in enumerate(parts.items()):
        if sorted(values) != sorted(metrics):
            raise ValueError(f"{lang}: metrics {sorted(values)}, expected {sorted(metrics)}")
        for m in metrics:
            if len(values[m]) != len(qids):
                raise ValueError(f"{lang}: {len(values[m])} values of {m} for {len(qids)} queries")
            per[m].append(np.asarray(values[m], dtype=np.float64))
        q_lang.append(np.full(len(qids), x, dtype=np.int64))
        q_group += [f"{lang}/{q}" for q in qids]
    return TrecResult(languages, {m: np.concatenate(v) for m, v in per.items()}, np.concatenate(q_lang),
                      np.asarray(q_group), (), dict(meta or {}))
