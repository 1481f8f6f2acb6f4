"""Slow per-query reference implementation of the LAReQA metrics, with scikit-learn.

Split out of :mod:`hybridnb.evaluation.metrics` (which re-exports :func:`reference_evaluate`): it exists only to
check the fast evaluator in tests and benchmarks, one query and pool at a time, with
``sklearn.metrics.average_precision_score`` and ``np.argsort(-scores, kind="stable")`` ranks.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hybridnb.evaluation.results import DEFAULT_KS, EvalResult, _prepare, _split_pools

__all__ = ["reference_evaluate"]


def reference_evaluate(q_emb, c_emb, q_lang, c_lang, relevant_indptr, relevant_indices, languages, q_group=None,
                       ks: Sequence[int] = DEFAULT_KS, queries=None, with_ranks: bool = True) -> EvalResult:
    """Slow per-query reference for tests and benchmarks: ``sklearn.metrics.average_precision_score``
    per (query, pool) and ``np.argsort(-scores, kind="stable")`` ranks. ``queries`` restricts the loop
    (other queries stay NaN); ``with_ranks=False`` computes AP only."""
    from sklearn.metrics import average_precision_score

    q64, c64 = np.asarray(q_emb, dtype=np.float64), np.asarray(c_emb, dtype=np.float64)
    languages, q_code, c_code, indptr, indices, q_group, ks = _prepare(
        len(q64), len(c64), q_lang, c_lang, relevant_indptr, relevant_indices, languages, q_group, ks)
    n_q, L = len(q64), len(languages)
    pools = [np.nonzero(c_code == p)[0] for p in range(L)] + [np.arange(len(c64))]  # last = all
    out = {name: np.full((n_q, L + 1), np.nan) for name in ["ap"] + [f"r@{k}" for k in ks]}
    rank_distance = np.full(n_q, np.nan)
    for i in range(n_q) if queries is None else np.asarray(queries):
        scores, y = c64 @ q64[i], np.zeros(len(c64), bool)
        y[indices[indptr[i]:indptr[i + 1]]] = True
        for p, pool in enumerate(pools):
            if not y[pool].any():
                continue
            out["ap"][i, p] = average_precision_score(y[pool], scores[pool])
            if with_ranks:
                ranked = y[pool][np.argsort(-scores[pool], kind="stable")]
                for k in ks:
                    out[f"r@{k}"][i, p] = ranked[:k].sum() / ranked.sum()
                hits = np.nonzero(ranked)[0]
                if p == L and len(hits) >= 2:
                    rank_distance[i] = hits[-1] - hits[0]
    per_query = _split_pools({name: m[:, :L] for name, m in out.items()}, q_code, ks)
    per_query.update({f"multi_{name}": m[:, L] for name, m in out.items()}, rank_distance=rank_distance)
    return EvalResult(languages=languages, per_query=per_query, q_lang=q_code, q_group=q_group, ks=ks,
                      meta={"scores": "reference loop (sklearn)"})
