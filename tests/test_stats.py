"""Tests of hybridnb.evaluation.stats: bootstrap CIs over question groups and paired comparisons."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from hybridnb.evaluation.metrics import EvalResult, evaluate
from hybridnb.evaluation.stats import compare, confidence_intervals, group_tables

LANGS = ["en", "de", "ar"]


def _synthetic(n_groups, seed=0, shift=0.0, langs=LANGS):
    """EvalResult with random per-query metrics: every question group has one query per language."""
    rng = np.random.default_rng(seed)
    L = len(langs)
    n_q = n_groups * L
    q_lang = np.tile(np.arange(L), n_groups)
    q_group = np.repeat(np.arange(n_groups), L)
    per_query = {}
    for setting in ("mono", "multi"):
        per_query[f"{setting}_ap"] = np.clip(rng.beta(2, 2, n_q) + shift, 0, 1)
        per_query[f"{setting}_r@1"] = (rng.random(n_q) < 0.4 + shift).astype(float)
        per_query[f"{setting}_r@10"] = (rng.random(n_q) < 0.8 + shift).astype(float)
    for name, draw in [("ap", lambda: rng.beta(2, 3, (n_q, L)) + shift),
                       ("r@1", lambda: (rng.random((n_q, L)) < 0.3 + shift).astype(float)),
                       ("r@10", lambda: (rng.random((n_q, L)) < 0.7 + shift).astype(float))]:
        m = draw()
        m[np.arange(n_q), q_lang] = np.nan
        per_query[f"cross_{name}"] = m
    per_query["rank_distance"] = rng.poisson(20, n_q).astype(float) - 10 * shift
    return EvalResult(languages=list(langs), per_query=per_query, q_lang=q_lang, q_group=q_group)


def _flat(d):
    """{"mono": {"map": {...}}, "rank_distance": {...}} -> {("mono", "map"): {...}, ...}"""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and "estimate" not in v and "diff" not in v:
            out.update({(k, name): x for name, x in v.items()})
        elif isinstance(v, dict):
            out[(k,)] = v
    return out


def test_ci_contains_estimate_and_matches_summary():
    res = _synthetic(60)
    ci = _flat(confidence_intervals(res, n_resamples=300))
    summary = res.summary()
    assert len(ci) == 10
    for key, v in ci.items():
        assert v["low"] <= v["estimate"] <= v["high"], key
        assert v["high"] > v["low"], key
        expected = summary[key[0]] if len(key) == 1 else summary[key[0]][key[1]]
        assert v["estimate"] == pytest.approx(expected, abs=1e-12), key


def test_ci_shrinks_with_more_groups():
    small = _flat(confidence_intervals(_synthetic(40, seed=1), n_resamples=400))
    large = _flat(confidence_intervals(_synthetic(640, seed=1), n_resamples=400))
    for key in small:
        w_small = small[key]["high"] - small[key]["low"]
        w_large = large[key]["high"] - large[key]["low"]
        assert w_large < 0.5 * w_small, key  # ~ 1/sqrt(16) = 1/4 expected


def test_deterministic_for_seed():
    res = _synthetic(30, seed=2)
    a = confidence_intervals(res, n_resamples=200, seed=5)
    assert a == confidence_intervals(res, n_resamples=200, seed=5)
    assert a != confidence_intervals(res, n_resamples=200, seed=6)
    b = _synthetic(30, seed=3)
    assert compare(res, b, n_resamples=200, seed=5) == compare(res, b, n_resamples=200, seed=5)


@pytest.mark.parametrize("method", ["BCa", "percentile"])
def test_plain_mean_matches_scipy_bootstrap(method):
    # one language and one query per group: the macro-average is the plain mean of the values, so the
    # group bootstrap must coincide with scipy.stats.bootstrap of np.mean on the same data and seed
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 1.0, 50)
    res = EvalResult(languages=["en"], per_query={"mono_ap": x}, q_lang=np.zeros(50, int), q_group=np.arange(50))
    ours = confidence_intervals(res, n_resamples=999, seed=3, method=method, metrics=["mono_ap"])["mono"]["map"]
    ref = sps.bootstrap((x,), np.mean, n_resamples=999, method=method, rng=np.random.default_rng(3))
    assert ours["estimate"] == pytest.approx(x.mean())
    assert ours["low"] == pytest.approx(ref.confidence_interval.low, rel=1e-10)
    assert ours["high"] == pytest.approx(ref.confidence_interval.high, rel=1e-10)
    assert ours["se"] == pytest.approx(ref.standard_error, rel=1e-10)


def test_paired_mean_difference_matches_scipy():
    # linear case: with one query per group the paired difference of means is the mean of the
    # differences; the bootstrap CI and the sign-flip p-value match scipy's one-sample versions
    rng = np.random.default_rng(1)
    a = rng.random(40)
    b = a - 0.05 + 0.2 * rng.standard_normal(40)
    mk = lambda v: EvalResult(languages=["en"], per_query={"mono_ap": v}, q_lang=np.zeros(40, int),
                              q_group=np.arange(40))
    ours = compare(mk(a), mk(b), n_resamples=999, seed=4, metrics=["mono_ap"])["mono"]["map"]
    d = a - b
    ci = sps.bootstrap((d,), np.mean, n_resamples=999, rng=np.random.default_rng(4))
    perm = sps.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=999,
                                rng=np.random.default_rng(4))
    assert ours["diff"] == pytest.approx(d.mean())
    assert ours["low"] == pytest.approx(ci.confidence_interval.low, rel=1e-9)
    assert ours["high"] == pytest.approx(ci.confidence_interval.high, rel=1e-9)
    assert ours["p_value"] == pytest.approx(perm.pvalue)


def test_compare_with_itself():
    res = _synthetic(50, seed=4)
    out = _flat(compare(res, res, n_resamples=300))
    assert len(out) == 10
    for key, v in out.items():
        assert v["diff"] == 0.0, key
        assert v["low"] == 0.0 and v["high"] == 0.0, key
        assert v["p_value"] == 1.0, key


def test_clearly_better_system():
    a = _synthetic(80, seed=5)
    b = EvalResult(languages=a.languages, q_lang=a.q_lang, q_group=a.q_group,
                   per_query={k: v - 0.05 for k, v in a.per_query.items()})
    out = compare(a, b, n_resamples=500)
    for setting in ("mono", "cross", "multi"):
        v = out[setting]["map"]
        assert v["diff"] == pytest.approx(0.05)
        assert v["low"] == pytest.approx(0.05) and v["high"] == pytest.approx(0.05)
        assert v["p_value"] <= 2 / 501
    # a noisy but real improvement is detected too, and its CI excludes 0
    c = _synthetic(80, seed=6)
    better = EvalResult(languages=c.languages, q_lang=c.q_lang, q_group=c.q_group,
                        per_query={**c.per_query, "mono_ap": c.per_query["mono_ap"] + 0.1})
    v = compare(better, c, n_resamples=500)["mono"]["map"]
    assert v["p_value"] <= 2 / 501 and v["low"] > 0


def test_groups_are_the_resampling_unit():
    # duplicating every query inside its group changes nothing (the group is the unit); treating the
    # copies as separate groups narrows the CI (pseudo-replication)
    res = _synthetic(40, seed=7)
    idx = np.repeat(np.arange(res.n_queries), 2)
    dup = EvalResult(languages=res.languages, q_lang=res.q_lang[idx], q_group=res.q_group[idx],
                     per_query={k: v[idx] for k, v in res.per_query.items()})
    a = confidence_intervals(res, n_resamples=300, metrics=["mono_ap"])["mono"]["map"]
    b = confidence_intervals(dup, n_resamples=300, metrics=["mono_ap"])["mono"]["map"]
    assert b["low"] == pytest.approx(a["low"]) and b["high"] == pytest.approx(a["high"])
    split = EvalResult(languages=dup.languages, q_lang=dup.q_lang, q_group=np.arange(dup.n_queries),
                       per_query=dup.per_query)
    c = confidence_intervals(split, n_resamples=300, metrics=["mono_ap"])["mono"]["map"]
    assert c["high"] - c["low"] < b["high"] - b["low"]


def test_group_tables_and_real_evaluation():
    # end to end on a small evaluated problem with string question ids
    rng = np.random.default_rng(0)
    n_groups, L = 30, len(LANGS)
    c_lang = np.repeat(np.arange(L), n_groups)  # candidate g + L*p answers question g in language p
    c = rng.standard_normal((n_groups * L, 8)).astype(np.float32)
    q_lang = np.tile(np.arange(L), n_groups)
    q_group = np.array([f"id{g}" for g in np.repeat(np.arange(n_groups), L)])
    g = np.repeat(np.arange(n_groups), L)
    q = c[g] + 0.8 * rng.standard_normal((n_groups * L, 8)).astype(np.float32)
    indices = (np.arange(L)[None, :] * n_groups + g[:, None]).ravel()
    res = evaluate(q, c, q_lang, c_lang, np.arange(0, len(indices) + 1, L), indices, LANGS, q_group=q_group)
    sums, counts = group_tables(res, "cross_ap")
    assert sums.shape == (n_groups, L * L)
    assert counts.sum() == n_groups * L * (L - 1)
    ci = confidence_intervals(res, n_resamples=200)
    assert ci["n_groups"] == n_groups
    assert ci["mono"]["map"]["low"] <= res.summary()["mono"]["map"] <= ci["mono"]["map"]["high"]
    with pytest.raises(ValueError, match="same queries"):
        compare(res, _synthetic(n_groups))


def test_mean_of_macro_ci_with_one_table_is_that_metrics_ci():
    from hybridnb.evaluation.stats import mean_of_macro_ci

    res = _synthetic(50)
    single = mean_of_macro_ci([group_tables(res, "mono_ap")], n_resamples=300, seed=3)
    expected = confidence_intervals(res, n_resamples=300, seed=3, metrics=["mono_ap"])["mono"]["map"]
    for k in ("estimate", "low", "high", "se"):
        assert single[k] == pytest.approx(expected[k], abs=1e-12), k


def test_mean_of_macro_ci_of_two_metrics():
    from hybridnb.evaluation.stats import mean_of_macro_ci

    res = _synthetic(80)
    tables = [group_tables(res, "mono_ap"), group_tables(res, "cross_ap")]
    ci = mean_of_macro_ci(tables, n_resamples=400, seed=0)
    s = res.summary()
    assert ci["estimate"] == pytest.approx((s["mono"]["map"] + s["cross"]["map"]) / 2, abs=1e-12)
    assert ci["low"] < ci["estimate"] < ci["high"]
    # averaging two (partly independent) metrics narrows the interval below the wider one's
    wide = max(confidence_intervals(res, n_resamples=400, seed=0, metrics=[k])[s_][m]["high"]
               - confidence_intervals(res, n_resamples=400, seed=0, metrics=[k])[s_][m]["low"]
               for k, s_, m in (("mono_ap", "mono", "map"), ("cross_ap", "cross", "map")))
    assert ci["high"] - ci["low"] < wide
    with pytest.raises(ValueError, match="same number of groups"):
        mean_of_macro_ci([tables[0], group_tables(_synthetic(10), "mono_ap")])
    with pytest.raises(ValueError, match="no metric tables"):
        mean_of_macro_ci([])
