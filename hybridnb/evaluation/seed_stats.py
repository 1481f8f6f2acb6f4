"""Statistics over training seeds and questions: what a claim about training strategies has to beat.

A strategy's number varies for two reasons: another training seed gives another model (training noise),
and another sample of questions gives another score for the same model (test-set noise).
:mod:`hybridnb.evaluation.stats` covers the second only. Here both are counted, as two variance components of a
strategy's mean over its seeds:

* **seed component**: ``s² / S``, the sample variance of the S per-seed values over S (each per-seed value
  is the macro-average over all questions, so ``s²`` measures training noise on this question set);
* **question component**: the question-group bootstrap variance (:func:`hybridnb.evaluation.stats.confidence_intervals`,
  resampling all language versions of a question together) of the *seed-averaged* system, i.e. the
  per-query metrics averaged over the seeds. Its macro-average equals the mean of the per-seed values
  (the defined cells do not depend on the model, and a cell mean is linear).

The interval is ``mean ± t(df) · sqrt(seed + question)`` with Welch–Satterthwaite degrees of freedom
(S - 1 for the seed part, G - 1 for the question part): with 3 seeds the seed part has 2 degrees of
freedom, so a seed spread that dominates gives a wide t(2) interval, as it should. Why not a two-level
bootstrap (seeds, then questions): with 3 seeds, resampling seeds with replacement sees 10 distinct
multisets and underestimates the seed standard error by a factor sqrt(2/3) before any t correction, which
makes intervals about 2.5 times too narrow; the t-interval does not have that problem.

A difference ``a - b`` (hybrid minus a baseline) uses the same components: ``s²_a / S_a + s²_b / S_b``
(the seeds of two strategies are independent training runs, not pairs) plus the *paired* question
bootstrap variance of the difference of the two seed-averaged systems (the same resampled questions for
both, :func:`hybridnb.evaluation.stats.compare`), and a two-sided Welch t-test of ``diff / se`` with the
Satterthwaite df, so the test's unit includes the seed. A deterministic system (zero-shot: no training)
has a seed component of exactly 0; a trained system with one seed has an unknown one, and its result says
so (``seed_noise_measured: False``) instead of pretending it is 0.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

from hybridnb.evaluation import stats
from hybridnb.evaluation.metrics import EvalResult

__all__ = ["average_over_seeds", "seed_summary", "seed_compare", "verdict", "format_p", "KEYS", "REPORTED"]

#: the ten reported columns (per-query key -> (setting, metric)); rank distance: lower is better
KEYS = {"mono_ap": ("mono", "map"), "cross_ap": ("cross", "map"), "multi_ap": ("multi", "map"),
        "mono_r@1": ("mono", "r@1"), "cross_r@1": ("cross", "r@1"), "multi_r@1": ("multi", "r@1"),
        "mono_r@10": ("mono", "r@10"), "cross_r@10": ("cross", "r@10"), "multi_r@10": ("multi", "r@10"),
        "rank_distance": ("rank_distance", None)}
REPORTED = tuple(KEYS)  # the ten columns every LAReQA result has
#: derived columns of a result split by whether its languages were trained on
#: (:func:`hybridnb.studies.report.split_seen_unseen` adds them; other results do not carry them)
KEYS.update({"mono_ap_seen": ("mono (seen)", "map"), "mono_ap_unseen": ("mono (unseen)", "map"),
             "cross_ap_seen": ("cross (both seen)", "map"), "cross_ap_unseen": ("cross (any unseen)", "map")})
LOWER_IS_BETTER = {"rank_distance"}


def average_over_seeds(results: list[EvalResult]) -> EvalResult:
    """The seed-averaged system: per-query metrics averaged over the seeds' results (same queries)."""
    if not results:
        raise ValueError("no results to average")
    first = results[0]
    for r in results[1:]:
        stats._check_paired(first, r)
    per_query = {k: np.mean([np.asarray(r.per_query[k], dtype=np.float64) for r in results], axis=0)
                 for k in first.per_query if all(k in r.per_query for r in results)}
    return EvalResult(list(first.languages), per_query, first.q_lang, first.q_group, first.ks,
                      {"averaged_over": len(results)})


def _flat(nested: dict, key: str) -> dict:
    if key not in REPORTED:  # a derived column: nested under its own name (EvalResult.nest)
        return nested[key]
    setting, metric = KEYS[key]
    return nested[setting] if metric is None else nested[setting][metric]


def _satterthwaite(components: list[tuple[float, float]]) -> float:
    """Effective df of a sum of variance components [(variance, df)] (Welch–Satterthwaite)."""
    total = sum(v for v, _ in components)
    denom = sum(v * v / d for v, d in components if v > 0 and d > 0)
    return total * total / denom if denom > 0 else math.inf


def _interval(estimate: float, var_seed: float, df_seed: float, var_q: float, df_q: float,
              confidence: float) -> dict:
    se = math.sqrt(var_seed + var_q)
    df = _satterthwaite([(var_seed, df_seed), (var_q, df_q)])
    half = float(sps.t.ppf(0.5 + confidence / 2, df)) * se if se > 0 else 0.0
    return {"se_seed": math.sqrt(var_seed), "se_question": math.sqrt(var_q), "se": se, "df": df,
            "low": estimate - half, "high": estimate + half}


def _seed_var(values: list[float], deterministic: bool) -> tuple[float, float, bool]:
    """(variance of the mean over seeds, its df, measured?)"""
    if deterministic:
        return 0.0, math.inf, True
    if len(values) < 2:
        return 0.0, math.inf, False
    return float(np.var(values, ddof=1)) / len(values), len(values) - 1.0, True


def _keys(keys, *results: EvalResult) -> list[str]:
    wanted = KEYS if keys is None else keys
    unknown = [k for k in wanted if k not in KEYS]
    if unknown:
        raise ValueError(f"unknown column(s) {unknown}; valid: {list(KEYS)}")
    return [k for k in wanted if all(k in r.per_query for r in results)]


def seed_summary(results: list[EvalResult], n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
                 deterministic: bool = False, keys=None) -> dict:
    """Per column (:data:`KEYS`, or those of `keys`): ``{"per_seed", "mean", "se_seed", "se_question", "se",
    "df", "low", "high", "seed_noise_measured"}`` for one strategy's results over its seeds
    (``deterministic``: zero-shot)."""
    avg = average_over_seeds(results)
    columns = _keys(keys, avg)
    q_ci = stats.confidence_intervals(avg, n_resamples=n_resamples, confidence=confidence, seed=seed,
                                      metrics=columns)
    n_groups = q_ci["n_groups"]
    out = {}
    for key in columns:
        if key not in avg.per_query:
            continue
        per_seed = [float(r.macro(key)) for r in results]
        mean = float(np.mean(per_seed))
        entry = _flat(q_ci, key)
        var_q = (entry["se"] or 0.0) ** 2 if entry["se"] is not None else 0.0
        var_s, df_s, measured = _seed_var(per_seed, deterministic)
        out[key] = {"per_seed": per_seed, "mean": mean, "seed_noise_measured": measured,
                    **_interval(mean, var_s, df_s, var_q, n_groups - 1, confidence)}
    return out


def seed_compare(a: list[EvalResult], b: list[EvalResult], n_resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0, a_deterministic: bool = False, b_deterministic: bool = False, keys=None) -> dict:
    """Per column, system a minus system b over seeds: ``{"a", "b", "diff", "se_seed", "se_question", "se",
    "df", "low", "high", "p_value", "seed_noise_measured"}``; ``p_value`` is the two-sided Welch t-test of
    ``diff / se`` (seed and question components, Satterthwaite df)."""
    avg_a, avg_b = average_over_seeds(a), average_over_seeds(b)
    keys = _keys(keys, avg_a, avg_b)
    paired = stats.compare(avg_a, avg_b, n_resamples=n_resamples, confidence=confidence, seed=seed, metrics=keys)
    n_groups = paired["n_groups"]
    out = {}
    for key in keys:
        va = [float(r.macro(key)) for r in a]
        vb = [float(r.macro(key)) for r in b]
        diff = float(np.mean(va) - np.mean(vb))
        var_a, df_a, ok_a = _seed_var(va, a_deterministic)
        var_b, df_b, ok_b = _seed_var(vb, b_deterministic)
        var_q = (_flat(paired, key)["se"] or 0.0) ** 2
        var_s = var_a + var_b
        df_s = _satterthwaite([(var_a, df_a), (var_b, df_b)]) if var_s > 0 else math.inf
        entry = {"a": float(np.mean(va)), "b": float(np.mean(vb)), "diff": diff,
                 "seed_noise_measured": ok_a and ok_b,
                 **_interval(diff, var_s, df_s, var_q, n_groups - 1, confidence)}
        if entry["se"] > 0:
            entry["p_value"] = float(2 * sps.t.sf(abs(diff) / entry["se"], entry["df"]))
        else:
            entry["p_value"] = 1.0 if diff == 0 else 0.0
        out[key] = entry
    return out


def verdict(entry: dict, key: str) -> str:
    """"win" / "loss" for system a when the interval of ``a - b`` excludes 0 (rank distance: lower is
    better), else "no difference"; "win?" / "loss?" when seed noise was not measured (one seed)."""
    better = -1 if key in LOWER_IS_BETTER else 1
    if entry["low"] > 0 or entry["high"] < 0:
        word = "win" if better * entry["diff"] > 0 else "loss"
    else:
        word = "no difference"
    return word if entry["seed_noise_measured"] or word == "no difference" else word + "?"


def format_p(p: float | None, n_resamples: int | None = None) -> str:
    """A p-value for a report. With ``n_resamples`` (a two-sided randomisation test of N resamples, whose
    smallest attainable value is 2 / (N + 1) in scipy's convention), a value at that floor is printed as
    ``≤ 2/(N+1)``: the test can say no more than that."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "—"
    if n_resamples:
        floor = 2.0 / (n_resamples + 1)
        if p <= floor * (1 + 1e-9):
            return f"≤ {floor:.2g} (floor of {n_resamples} resamples)"
    return f"{p:.2g}" if p >= 0.001 else "< 0.001"
