"""LAReQA-style retrieval metrics: mono-, cross- and multilingual mAP, recall@k and rank distance.

Inputs are plain arrays, independent of how data were loaded or encoded: ``q_emb (Nq, D)``,
``c_emb (Nc, D)`` (score = inner product; `evaluate_scores` takes a score matrix instead, e.g. BM25),
``q_lang``/``c_lang`` (strings from ``languages`` or integer positions in it), relevance in CSR form
(query i's relevant candidates are ``relevant_indices[relevant_indptr[i]:relevant_indptr[i + 1]]``; in
LAReQA they span languages) and ``q_group`` (shared question id; the resampling unit of `hybridnb.evaluation.stats`).

Settings (Elmahdy et al. 2024, after LAReQA): mono X->X (pool = candidates in X), cross X->Y for every
Y != X (pool = candidates in Y; 110 settings on XQuAD-R, 42 on MLQA-R) and multi X->all (pool = all
candidates). Relevant = the query's relevant candidates in the pool; a (query, pool) pair without one is
undefined (NaN) and skipped by every average.

Per query and pool:
* AP exactly as ``sklearn.metrics.average_precision_score`` (ties included): the mean over relevant
  items i of #(relevant with score >= s_i) / #(pool with score >= s_i).
* R@k = fraction of the query's relevant pool items ranked in the top k (the hit rate when the pool
  holds one relevant item; at most 1/11 for R@1 in an 11-language multilingual pool).
* Ranks are strict: decreasing score, **ties broken by candidate index** (lower index first), i.e. the
  order of ``np.argsort(-scores, kind="stable")``.
* Rank distance (language bias, Huang et al. 2023): in the multilingual pool, rank of the lowest-ranked
  relevant minus rank of the highest-ranked one; NaN with fewer than two relevant. Lower is better.

Aggregation (macro, as the paper): a setting = mean over its defined queries; mono = mean of the L X->X
settings, cross = mean of the L(L-1) X->Y settings, multi and rank distance = mean over query languages.

How: scores are float64 (products of float32 numbers are exact in float64, so results do not depend on
chunking or BLAS blocking), computed ``chunk_size`` queries at a time. Each language block of a chunk is
sorted row-wise and a batched binary search counts, for every relevant candidate of every query, the
pool items per language scoring >= and > it (multilingual counts are their sums); relevant-vs-relevant
comparisons use a (B, K, K) array, and exact ties get an index tie-break from a direct comparison on the
tied rows only. No Python loop runs over queries or candidates.

The result container, macro-averaging and input checks live in :mod:`hybridnb.evaluation.results`, the sklearn
reference in :mod:`hybridnb.evaluation.reference`; this module re-exports both.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hybridnb.evaluation.results import DEFAULT_KS, EvalResult, _prepare, _split_pools, cell_sums, macro_average, metric_cells
from hybridnb.evaluation.results import json_safe  # noqa: F401 (re-exported: hybridnb.evaluation.stats imports it from here)
from hybridnb.evaluation.reference import reference_evaluate

__all__ = ["EvalResult", "evaluate", "evaluate_scores", "reference_evaluate", "topk", "metric_cells",
           "cell_sums", "macro_average", "DEFAULT_KS"]


# --- core ----------------------------------------------------------------------------------------


def _searchsorted_rows(sorted_rows: np.ndarray, rows: np.ndarray, t: np.ndarray, side: str) -> np.ndarray:
    """Row-wise ``np.searchsorted`` (exact, vectorised binary search): #entries of ascending row
    ``rows[i]`` that are < t[i] (side="left") or <= t[i] (side="right")."""
    n = sorted_rows.shape[1]
    flat, base = sorted_rows.ravel(), rows.astype(np.int64) * n
    lo, hi = np.zeros(t.shape, np.int64), np.full(t.shape, n, np.int64)
    for _ in range(int(n).bit_length()):
        mid = (lo + hi) >> 1
        v = flat[base + np.minimum(mid, n - 1)]
        right = ((v < t) if side == "left" else (v <= t)) & (lo < hi)
        lo, hi = np.where(right, mid + 1, lo), np.where(right, hi, np.minimum(hi, mid))
    return lo


def _chunk_metrics(S, R, valid, c_code, perm, inv_perm, offsets, ks) -> dict:
    """Metrics of a chunk. S (B, Nc): scores, columns in language-contiguous order (column j is
    candidate perm[j]; language p spans offsets[p]:offsets[p+1]). R (B, K): relevant candidates
    (original numbering), valid (B, K): which entries of R are real."""
    B, K = R.shape
    L = len(offsets) - 1
    rows = np.broadcast_to(np.arange(B)[:, None], (B, K))
    s_rel, r_lang = S[rows, inv_perm[R]], c_code[R]

    # per pool language: #items scoring < and <= each relevant score; blocks are sorted as contiguous
    # copies (fast in numpy, cache-friendly for the search)
    lt = np.zeros((B, K, L), np.int64)
    le = np.zeros((B, K, L), np.int64)
    for p in range(L):
        a, b = offsets[p], offsets[p + 1]
        if b > a:
            block = np.sort(S[:, a:b], axis=1)
            lt_p = _searchsorted_rows(block, rows, s_rel, "left")
            le_p = lt_p.copy()  # equal entries exist only where block[lt] == t (always in the own language)
            eq = block[rows, np.minimum(lt_p, b - a - 1)] == s_rel
            if eq.any():
                le_p[eq] = _searchsorted_rows(block, rows[eq], s_rel[eq], "right")
            lt[..., p], le[..., p] = lt_p, le_p
    n_lang = np.diff(offsets)
    ge, gt = n_lang - lt, n_lang - le  # #items with score >= / > s_i

    # index tie-break: #items with score == s_i and a lower index, on rows with an exact tie only
    tie = np.zeros_like(lt)
    tb, ti = np.nonzero(valid & ((le - lt).sum(-1) > 1))
    step = max(1, 2**22 // S.shape[1])
    for a in range(0, len(tb), step):
        b_, i_ = tb[a:a + step], ti[a:a + step]
        mask = (S[b_] == s_rel[b_, i_, None]) & (perm < R[b_, i_, None])
        csum = np.pad(np.cumsum(mask, axis=1), ((0, 0), (1, 0)))
        tie[b_, i_] = csum[:, offsets[1:]] - csum[:, offsets[:-1]]

    own = r_lang[..., None]
    rank_own = np.take_along_axis(gt + tie, own, 2)[..., 0]
    rank_all = (gt + tie).sum(-1)
    rel_ge = valid[:, None, :] & (s_rel[:, None, :] >= s_rel[:, :, None])  # [b, i, j]: s_j >= s_i
    same = r_lang[:, None, :] == r_lang[:, :, None]
    prec_own = (rel_ge & same).sum(-1) / np.maximum(np.take_along_axis(ge, own, 2)[..., 0], 1)
    prec_all = rel_ge.sum(-1) / np.maximum(ge.sum(-1), 1)

    in_pool = ((r_lang[..., None] == np.arange(L)) & valid[..., None]).astype(np.float64)  # (B, K, L)
    n_pool, n_all = in_pool.sum(1), valid.sum(1)

    def pool_mean(x):  # mean over each pool's relevant items: (B, L)
        x = (x * valid).astype(np.float64)
        return np.where(n_pool > 0, np.einsum("bk,bkl->bl", x, in_pool) / np.maximum(n_pool, 1), np.nan)

    def all_mean(x):
        return np.where(n_all > 0, (x * valid).sum(1) / np.maximum(n_all, 1), np.nan)

    out = {"pool_ap": pool_mean(prec_own), "multi_ap": all_mean(prec_all)}
    for k in ks:
        out[f"pool_r@{k}"], out[f"multi_r@{k}"] = pool_mean(rank_own < k), all_mean(rank_all < k)
    spread = np.where(valid, rank_all, -1).max(1) - np.where(valid, rank_all, np.iinfo(np.int64).max).min(1)
    out["rank_distance"] = np.where(n_all >= 2, spread, np.nan)
    return out


def _evaluate(make_block, n_q, n_c, q_lang, c_lang, indptr, indices, languages, q_group, chunk_size, ks, meta):
    languages, q_code, c_code, indptr, indices, q_group, ks = _prepare(
        n_q, n_c, q_lang, c_lang, indptr, indices, languages, q_group, ks)
    L = len(languages)
    perm = np.argsort(c_code, kind="stable")  # language-contiguous, index order within a language
    inv_perm = np.empty_like(perm)
    inv_perm[perm] = np.arange(n_c)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(c_code, minlength=L))])
    score_block = make_block(None if np.array_equal(perm, np.arange(n_c)) else perm)
    n_rel = np.diff(indptr)
    pool = {name: np.full((n_q, L), np.nan) for name in ["ap"] + [f"r@{k}" for k in ks]}
    multi = {key: np.full(n_q, np.nan) for key in ["multi_ap", "rank_distance"] + [f"multi_r@{k}" for k in ks]}
    for a in range(0, n_q, max(1, int(chunk_size))):
        b = min(a + max(1, int(chunk_size)), n_q)
        S = np.asarray(score_block(a, b), dtype=np.float64)
        K = max(int(n_rel[a:b].max(initial=0)), 1)
        valid = np.arange(K) < n_rel[a:b, None]
        R = np.zeros((b - a, K), np.int64)
        R[valid] = indices[indptr[a]:indptr[b]]
        res = _chunk_metrics(S, R, valid, c_code, perm, inv_perm, offsets, ks)
        for name in pool:
            pool[name][a:b] = res[f"pool_{name}"]
        for key in multi:
            multi[key][a:b] = res[key]
    return EvalResult(languages=languages, per_query={**_split_pools(pool, q_code, ks), **multi},
                      q_lang=q_code, q_group=q_group, ks=ks, meta=meta)


def evaluate(q_emb, c_emb, q_lang, c_lang, relevant_indptr, relevant_indices, languages, q_group=None,
             chunk_size: int = 512, ks: Sequence[int] = DEFAULT_KS) -> EvalResult:
    """All LAReQA metrics of embeddings (score = inner product, in float64); see the module docstring.
    Memory ~ 3 x chunk_size x Nc x 8 bytes. ``q_group`` defaults to one group per query."""
    q_emb, c_emb = np.asarray(q_emb), np.asarray(c_emb)
    if q_emb.ndim != 2 or c_emb.ndim != 2 or q_emb.shape[1] != c_emb.shape[1]:
        raise ValueError(f"q_emb and c_emb must be 2-D with equal widths, got {q_emb.shape} and {c_emb.shape}")
    if not (np.isfinite(q_emb).all() and np.isfinite(c_emb).all()):
        raise ValueError("embeddings contain NaN or inf")

    def make_block(perm):
        c64_t = np.ascontiguousarray(np.asarray(c_emb if perm is None else c_emb[perm], dtype=np.float64)).T
        return lambda a, b: np.asarray(q_emb[a:b], dtype=np.float64) @ c64_t

    return _evaluate(make_block, len(q_emb), len(c_emb), q_lang, c_lang, relevant_indptr, relevant_indices,
                     languages, q_group, chunk_size, ks, meta={"scores": "inner product (float64)"})


def evaluate_scores(scores, q_lang, c_lang, relevant_indptr, relevant_indices, languages, q_group=None,
                    chunk_size: int = 512, ks: Sequence[int] = DEFAULT_KS) -> EvalResult:
    """Like `evaluate`, from a precomputed (Nq, Nc) score matrix (higher = more relevant)."""
    scores = np.asarray(scores)
    if scores.ndim != 2 or not np.isfinite(scores).all():
        raise ValueError(f"scores must be a finite 2-D (Nq, Nc) array, got shape {scores.shape}")

    def make_block(perm):
        return (lambda a, b: scores[a:b]) if perm is None else (lambda a, b: scores[a:b][:, perm])

    return _evaluate(make_block, *scores.shape, q_lang, c_lang, relevant_indptr, relevant_indices, languages,
                     q_group, chunk_size, ks, meta={"scores": "given"})


def topk(q_emb, c_emb, k: int, candidates=None):
    """Exact inner-product top-k with ``faiss.IndexFlatIP`` (e.g. to show retrieved examples).

    ``candidates`` optionally restricts the pool (indices into ``c_emb``). Returns ``(scores, indices)``,
    each (Nq, min(k, pool)), best first, indices into ``c_emb``. faiss scores in float32, so its order
    among near-ties may differ from `evaluate`'s float64 ranking.
    """
    import faiss  # heavy; only needed here

    cand = None if candidates is None else np.asarray(candidates, dtype=np.int64)
    c = np.ascontiguousarray(np.asarray(c_emb, dtype=np.float32)[cand] if cand is not None else c_emb, np.float32)
    q = np.ascontiguousarray(q_emb, dtype=np.float32)
    k = int(min(k, len(c)))
    if k <= 0 or len(q) == 0:
        return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
    index = faiss.IndexFlatIP(c.shape[1])
    index.add(c)
    scores, idx = index.search(q, k)
    return scores, (idx.astype(np.int64) if cand is None else cand[idx])
