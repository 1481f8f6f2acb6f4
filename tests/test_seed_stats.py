"""Tests of hybridnb.evaluation.seed_stats: intervals and tests over training seeds and questions, on hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from hybridnb.evaluation import seed_stats
from hybridnb.evaluation.metrics import EvalResult
from hybridnb.evaluation.stats import confidence_intervals
from tiny_models import constant_result

LANGS = ["en", "de"]


def _constant(value: float, n_groups: int = 20, jitter: np.ndarray | None = None) -> EvalResult:
    return constant_result(value, LANGS, n_groups, jitter)


def test_average_over_seeds_is_the_mean_of_the_macro_averages():
    rng = np.random.default_rng(0)
    runs = [_constant(0.5, jitter=rng.normal(0, 0.05, 20)) for _ in range(3)]
    avg = seed_stats.average_over_seeds(runs)
    for key in seed_stats.REPORTED:  # the ten columns every result has (the seen/unseen ones are derived)
        assert avg.macro(key) == pytest.approx(np.mean([r.macro(key) for r in runs]), abs=1e-12)


def test_no_question_noise_gives_the_t_interval_over_seeds():
    # identical questions: the question bootstrap has no spread, so the interval is the textbook t-interval
    values = [0.70, 0.72, 0.74]
    out = seed_stats.seed_summary([_constant(v) for v in values], n_resamples=200)["mono_ap"]
    assert out["per_seed"] == pytest.approx(values)
    assert out["mean"] == pytest.approx(0.72)
    assert out["se_question"] == pytest.approx(0.0, abs=1e-12)
    se = 0.02 / math.sqrt(3)  # sd of (0.70, 0.72, 0.74) is 0.02
    assert out["se"] == pytest.approx(se)
    assert out["df"] == pytest.approx(2.0)
    half = sps.t.ppf(0.975, 2) * se  # 4.303 * 0.01155 = 0.0497
    assert (out["low"], out["high"]) == pytest.approx((0.72 - half, 0.72 + half))
    assert out["seed_noise_measured"]


def test_one_seed_adds_question_noise_only_and_says_seed_noise_is_unmeasured():
    rng = np.random.default_rng(1)
    run = _constant(0.6, n_groups=40, jitter=rng.normal(0, 0.1, 40))
    out = seed_stats.seed_summary([run], n_resamples=400, seed=3)["mono_ap"]
    q = confidence_intervals(run, n_resamples=400, seed=3, metrics=["mono_ap"])["mono"]["map"]
    assert out["se_seed"] == 0.0 and not out["seed_noise_measured"]
    assert out["se_question"] == pytest.approx(q["se"])
    assert out["df"] == pytest.approx(39.0)  # the question part's G - 1
    zero_shot = seed_stats.seed_summary([run], n_resamples=400, seed=3, deterministic=True)["mono_ap"]
    assert zero_shot["seed_noise_measured"]


def test_components_add_and_satterthwaite_df():
    rng = np.random.default_rng(2)
    jitter = rng.normal(0, 0.05, 30)
    values = [0.50, 0.53, 0.56, 0.51]
    out = seed_stats.seed_summary([_constant(v, 30, jitter) for v in values], n_resamples=500)["multi_ap"]
    var_s = np.var(values, ddof=1) / 4
    assert out["se_seed"] == pytest.approx(math.sqrt(var_s))
    var_q = out["se_question"] ** 2
    assert var_q > 0
    assert out["se"] == pytest.approx(math.sqrt(var_s + var_q))
    df = (var_s + var_q) ** 2 / (var_s ** 2 / 3 + var_q ** 2 / 29)
    assert out["df"] == pytest.approx(df)
    assert 3 <= out["df"] <= 29


def test_difference_welch_on_seeds_when_questions_are_identical():
    a_vals, b_vals = [0.80, 0.82, 0.84], [0.70, 0.71, 0.72]
    out = seed_stats.seed_compare([_constant(v) for v in a_vals], [_constant(v) for v in b_vals],
                                  n_resamples=200)["mono_ap"]
    assert out["diff"] == pytest.approx(0.11)
    welch = sps.ttest_ind(a_vals, b_vals, equal_var=False)
    assert out["p_value"] == pytest.approx(welch.pvalue, rel=1e-6)
    assert out["df"] == pytest.approx(welch.df, rel=1e-6)
    assert seed_stats.verdict(out, "mono_ap") == "win"
    # rank distance is 100 x the value: a higher one is worse, so the same ordering is a loss
    rd = seed_stats.seed_compare([_constant(v) for v in a_vals], [_constant(v) for v in b_vals],
                                 n_resamples=200)["rank_distance"]
    assert rd["diff"] == pytest.approx(11.0)
    assert seed_stats.verdict(rd, "rank_distance") == "loss"


def test_seed_noise_larger_than_the_difference_is_no_difference():
    a_vals, b_vals = [0.70, 0.80, 0.75], [0.72, 0.69, 0.78]
    out = seed_stats.seed_compare([_constant(v) for v in a_vals], [_constant(v) for v in b_vals],
                                  n_resamples=200)["cross_ap"]
    assert out["low"] < 0 < out["high"]
    assert seed_stats.verdict(out, "cross_ap") == "no difference"


def test_against_a_deterministic_baseline_and_with_one_seed():
    a = [_constant(v) for v in (0.61, 0.62, 0.63)]
    zs = [_constant(0.60)]
    out = seed_stats.seed_compare(a, zs, n_resamples=200, b_deterministic=True)["mono_ap"]
    assert out["seed_noise_measured"]
    assert out["se"] == pytest.approx(0.01 / math.sqrt(3))  # the zero-shot side adds nothing
    assert out["df"] == pytest.approx(2.0)
    one = seed_stats.seed_compare([_constant(0.65)], zs, n_resamples=200, b_deterministic=True)["mono_ap"]
    assert not one["seed_noise_measured"]
    assert one["diff"] == pytest.approx(0.05)


def test_identical_systems_give_zero_difference_and_p_one():
    rng = np.random.default_rng(4)
    runs = [_constant(0.5, jitter=rng.normal(0, 0.05, 20)) for _ in range(2)]
    out = seed_stats.seed_compare(runs, runs, n_resamples=200)
    for key, entry in out.items():
        assert entry["diff"] == pytest.approx(0.0, abs=1e-12), key
        assert seed_stats.verdict(entry, key) == "no difference"


def test_verdict_marks_unmeasured_seed_noise():
    entry = {"diff": 0.1, "low": 0.05, "high": 0.15, "seed_noise_measured": False}
    assert seed_stats.verdict(entry, "mono_ap") == "win?"
    assert seed_stats.verdict({**entry, "seed_noise_measured": True}, "rank_distance") == "loss"


def test_format_p_at_the_resampling_floor():
    assert seed_stats.format_p(2 / 1001, 1000) == "≤ 0.002 (floor of 1000 resamples)"
    assert seed_stats.format_p(0.0123, 1000) == "0.012"
    assert seed_stats.format_p(0.0004) == "< 0.001"
    assert seed_stats.format_p(None) == "—"


def test_mismatched_queries_are_refused():
    with pytest.raises(ValueError, match="same queries"):
        seed_stats.average_over_seeds([_constant(0.5, 20), _constant(0.5, 21)])
    with pytest.raises(ValueError, match="no results"):
        seed_stats.average_over_seeds([])
