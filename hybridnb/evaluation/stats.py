"""Bootstrap confidence intervals and paired significance tests for `hybridnb.evaluation.metrics` results.

The resampling unit is the question group (``EvalResult.q_group``: all language versions of one
question id), which respects the parallel structure of LAReQA: the 11 translations of a question are
not independent observations. Resampling is done by scipy (`scipy.stats.bootstrap`,
`scipy.stats.permutation_test`) over the group indices ``0..G-1``; the statistic is vectorised: per
(group, cell) sums and counts of the per-query metric are precomputed once, a batch of resampled index
vectors becomes a (batch, G) matrix of group multiplicities, and one matrix product gives every
resample's per-cell sums and counts, from which the macro-average (mean over the defined settings /
query languages, exactly as `EvalResult.summary`) follows. The statistic evaluated on the original
sample therefore equals the reported summary value.

* `confidence_intervals`: a CI for every summary metric (BCa by default).
* `compare`: for two systems evaluated on the same queries, the mean difference ``a - b`` per metric,
  its paired bootstrap CI (the same resampled groups for both systems) and the p-value of a paired
  randomisation test (`permutation_test` with ``permutation_type="samples"``: each group's two
  system assignments are swapped at random, i.e. a sign flip of the group-level difference).

Both are deterministic for a given seed; every metric uses a fresh generator from the same seed, so all
metrics share the same resamples.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats as sps

from hybridnb.evaluation.metrics import EvalResult, cell_sums, json_safe, macro_average

__all__ = ["confidence_intervals", "compare", "group_tables", "mean_of_macro_ci"]


def _group_index(result: EvalResult) -> tuple[np.ndarray, int]:
    _, inverse = np.unique(np.asarray(result.q_group), return_inverse=True)
    inverse = inverse.ravel().astype(np.int64)
    return inverse, int(inverse.max(initial=-1) + 1)


def group_tables(result: EvalResult, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-(question group, cell) sums and counts of one per-query metric: two (G, n_cells) arrays
    (groups in ``np.unique(result.q_group)`` order; cells as in `hybridnb.evaluation.metrics.metric_cells`)."""
    group, n_groups = _group_index(result)
    vals, cells, n_cells = result.cells(key)
    return cell_sums(vals, cells, n_cells, group=group, n_groups=n_groups)


def _multiplicities(idx: np.ndarray, n_bins: int) -> np.ndarray:
    """(..., n) resampled indices -> (..., n_bins) counts of each index along the last axis."""
    idx = np.asarray(idx, dtype=np.int64)
    lead = idx.shape[:-1]
    flat = idx.reshape(-1, idx.shape[-1])
    offsets = (np.arange(flat.shape[0], dtype=np.int64) * n_bins)[:, None]
    counts = np.bincount((flat + offsets).ravel(), minlength=flat.shape[0] * n_bins)
    return counts.reshape(lead + (n_bins,)).astype(np.float64)


def _macro_stat(sums: np.ndarray, counts: np.ndarray):
    """Vectorised statistic: resampled group indices (..., n) -> macro-average (...,)."""

    def statistic(idx, axis=-1):
        idx = np.moveaxis(np.asarray(idx), axis, -1)
        w = _multiplicities(idx, sums.shape[0])
        return macro_average(w @ sums, w @ counts)

    return statistic


def _diff_stat(sa, ca, sb, cb):
    """Paired bootstrap statistic: macro(a) - macro(b) on the same resampled groups."""

    def statistic(idx, axis=-1):
        idx = np.moveaxis(np.asarray(idx), axis, -1)
        w = _multiplicities(idx, sa.shape[0])
        return macro_average(w @ sa, w @ ca) - macro_average(w @ sb, w @ cb)

    return statistic


def _swap_stat(sa, ca, sb, cb):
    """Permutation statistic for ``permutation_test(..., permutation_type="samples")`` on the pair
    ``(x, y) = (g, G + g)``: a value >= G at position g of x means group g's systems are swapped.
    Returns macro(x side) - macro(y side). The swapped part enters as ``swap @ (b - a)``, so identical
    systems give exactly 0 for every permutation (no rounding noise)."""
    n_groups = sa.shape[0]
    ds, dc = sb - sa, cb - ca
    ta, tca, tb, tcb = sa.sum(0), ca.sum(0), sb.sum(0), cb.sum(0)

    def statistic(x, y, axis=-1):
        swap = (np.moveaxis(np.asarray(x), axis, -1) >= n_groups).astype(np.float64)
        d_s, d_c = swap @ ds, swap @ dc
        return macro_average(ta + d_s, tca + d_c) - macro_average(tb - d_s, tcb - d_c)

    return statistic


def _batch(n_groups: int, n_resamples: int) -> int:
    # bounds the (batch, G) index / weight matrices (also the jackknife of BCa) to ~ 4M entries
    return int(max(1, min(max(n_resamples, n_groups), 4_000_000 // max(n_groups, 1))))


def _bootstrap_ci(statistic, n_groups: int, estimate: float, n_resamples: int, confidence: float,
                  seed: int, method: str) -> dict:
    out = {"estimate": estimate, "low": np.nan, "high": np.nan, "se": np.nan}
    if not np.isfinite(estimate) or n_groups < 2:
        return out
    data = (np.arange(n_groups),)
    kwargs = dict(n_resamples=n_resamples, confidence_level=confidence, vectorized=True,
                  batch=_batch(n_groups, n_resamples))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sps.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        res = sps.bootstrap(data, statistic, method=method, rng=np.random.default_rng(seed), **kwargs)
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        dist = np.asarray(res.bootstrap_distribution)
        if not (np.isfinite(low) and np.isfinite(high)):
            if np.nanmax(dist) - np.nanmin(dist) <= 1e-12 * max(1.0, abs(estimate)):
                low = high = estimate  # degenerate: every resample gives the same value
            else:  # BCa undefined (e.g. jackknife without spread): percentile on the same resamples
                res = sps.bootstrap(data, statistic, method="percentile", bootstrap_result=res,
                                    **{**kwargs, "n_resamples": 0})
                low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    out.update(low=low, high=high, se=float(np.nanstd(dist, ddof=1)))
    return out


def _keys(result: EvalResult, metrics) -> list[str]:
    """The summary metrics present in ``result``, or those of ``metrics``: any per-query array may be asked
    for by name (a derived column such as ``mono_ap_seen`` is macro-averaged like the column it came from)."""
    keys = [key for _, _, key in result.metric_keys() if key in result.per_query]
    keys += [key for key in result.per_query if key not in keys and metrics is not None and key in metrics]
    if metrics is not None:
        unknown = set(metrics) - set(keys)
        if unknown:
            raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {keys}")
        keys = [k for k in keys if k in set(metrics)]
    return keys


def confidence_intervals(result: EvalResult, n_resamples: int = 1000, confidence: float = 0.95,
                         seed: int = 0, method: str = "BCa", metrics=None) -> dict:
    """Bootstrap CIs (resampling question groups) for every summary metric of ``result``.

    Returns ``{"mono": {"map": {"estimate", "low", "high", "se"}, "r@1": ..., ...}, "cross": ...,
    "multi": ..., "rank_distance": {...}, "n_groups", "n_resamples", "confidence", "method", "seed"}``.
    ``metrics`` optionally restricts to some per-query keys (e.g. ``["mono_ap"]``).
    """
    values = {}
    n_groups = 0
    for key in _keys(result, metrics):
        sums, counts = group_tables(result, key)
        n_groups = sums.shape[0]
        estimate = float(macro_average(sums.sum(0), counts.sum(0)))
        values[key] = _bootstrap_ci(_macro_stat(sums, counts), n_groups, estimate, n_resamples,
                                    confidence, seed, method)
    out = result.nest(values)
    out.update(n_groups=n_groups, n_resamples=int(n_resamples), confidence=float(confidence),
               method=method, seed=int(seed))
    return json_safe(out)


def mean_of_macro_ci(tables: list[tuple[np.ndarray, np.ndarray]], n_resamples: int = 1000,
                     confidence: float = 0.95, seed: int = 0, method: str = "BCa") -> dict:
    """Bootstrap CI of the mean of several macro-averaged metrics over the same question groups.

    ``tables`` are (sums, counts) pairs from :func:`group_tables` (or built the same way), each (G, cells)
    with the same G groups in the same order; one resample of the groups is shared by every metric, so the
    CI of a composite score (e.g. image-text retrieval's mean recall over R@1/5/10 in both directions)
    keeps the metrics' correlation. With one table it equals that metric's :func:`confidence_intervals` entry.
    """
    if not tables:
        raise ValueError("no metric tables")
    n_groups = tables[0][0].shape[0]
    if any(s.shape[0] != n_groups or c.shape[0] != n_groups for s, c in tables):
        raise ValueError("every table must have the same number of groups")

    def statistic(idx, axis=-1):
        w = _multiplicities(np.moveaxis(np.asarray(idx), axis, -1), n_groups)
        return np.mean([macro_average(w @ s, w @ c) for s, c in tables], axis=0)

    estimate = float(np.mean([macro_average(s.sum(0), c.sum(0)) for s, c in tables]))
    return json_safe(_bootstrap_ci(statistic, n_groups, estimate, n_resamples, confidence, seed, method))


def _check_paired(a: EvalResult, b: EvalResult):
    if list(a.languages) != list(b.languages):
        raise ValueError("the two results have different languages")
    if a.n_queries != b.n_queries or not np.array_equal(a.q_lang, b.q_lang) \
            or not np.array_equal(np.asarray(a.q_group), np.asarray(b.q_group)):
        raise ValueError("the two results must cover the same queries (same q_lang and q_group, same order)")


def compare(result_a: EvalResult, result_b: EvalResult, n_resamples: int = 1000, confidence: float = 0.95,
            seed: int = 0, method: str = "BCa", metrics=None) -> dict:
    """Paired comparison of two systems evaluated on the same queries (difference = a - b).

    Per metric: ``{"a", "b", "diff", "low", "high", "se", "p_value"}`` where low/high is the paired
    bootstrap CI of the difference of the macro-averages (same resampled question groups for both) and
    p_value is the two-sided paired randomisation test (`scipy.stats.permutation_test`,
    ``permutation_type="samples"``: a random swap of the two systems within each question group).
    For rank distance lower is better, so a negative difference favours system a.
    """
    _check_paired(result_a, result_b)
    values = {}
    n_groups = 0
    for key in _keys(result_a, metrics):
        if key not in result_b.per_query:
            continue
        sa, ca = group_tables(result_a, key)
        sb, cb = group_tables(result_b, key)
        n_groups = sa.shape[0]
        est_a = float(macro_average(sa.sum(0), ca.sum(0)))
        est_b = float(macro_average(sb.sum(0), cb.sum(0)))
        diff = est_a - est_b
        entry = {"a": est_a, "b": est_b}
        ci = _bootstrap_ci(_diff_stat(sa, ca, sb, cb), n_groups, diff, n_resamples, confidence, seed,
                           method)
        entry.update(diff=diff, low=ci["low"], high=ci["high"], se=ci["se"], p_value=np.nan)
        if np.isfinite(diff) and n_groups >= 2:
            g = np.arange(n_groups)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                res = sps.permutation_test(
                    (g, g + n_groups), _swap_stat(sa, ca, sb, cb), permutation_type="samples",
                    vectorized=True, n_resamples=n_resamples, alternative="two-sided",
                    batch=_batch(2 * n_groups, n_resamples), rng=np.random.default_rng(seed))
            entry["p_value"] = float(res.pvalue)
        values[key] = entry
    out = result_a.nest(values)
    out.update(n_groups=n_groups, n_resamples=int(n_resamples), confidence=float(confidence),
               method=method, seed=int(seed))
    return json_safe(out)
