"""Tests of hybridnb.evaluation.metrics: agreement with sklearn per-query loops, hand-worked cases, aggregation."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score

from hybridnb.evaluation.metrics import EvalResult, evaluate, evaluate_scores, reference_evaluate, topk

LANGS = ["en", "de", "ar", "zh"]


def _csr(lists):
    indptr = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int64)
    indices = np.concatenate([np.asarray(x, dtype=np.int64) for x in lists]) if lists else np.zeros(0, np.int64)
    return indptr, indices


def _random_problem(seed, n_q=70, n_c=150, dim=3, integer=True, sorted_langs=False):
    """Random queries/candidates. Integer embeddings in [-2, 2] give many exact score ties. Relevant sets
    have 0..6 candidates in random languages, so some pools (or all) have no relevant item."""
    rng = np.random.default_rng(seed)
    if integer:
        q = rng.integers(-2, 3, (n_q, dim)).astype(np.float32)
        c = rng.integers(-2, 3, (n_c, dim)).astype(np.float32)
    else:
        q = rng.standard_normal((n_q, dim)).astype(np.float32)
        c = rng.standard_normal((n_c, dim)).astype(np.float32)
    q_lang = rng.integers(0, len(LANGS), n_q)
    c_lang = rng.integers(0, len(LANGS), n_c)
    if sorted_langs:
        c_lang = np.sort(c_lang)
    rel = [np.sort(rng.choice(n_c, rng.integers(0, 7), replace=False)) for _ in range(n_q)]
    indptr, indices = _csr(rel)
    return q, c, q_lang, c_lang, indptr, indices


def _assert_same(a: EvalResult, b: EvalResult, atol=1e-9):
    assert set(a.per_query) == set(b.per_query)
    for key in a.per_query:
        np.testing.assert_allclose(a.per_query[key], b.per_query[key], atol=atol, rtol=0, err_msg=key)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("integer", [True, False])
def test_matches_sklearn_reference(seed, integer):
    q, c, q_lang, c_lang, indptr, indices = _random_problem(seed, integer=integer, dim=3 if integer else 8)
    ours = evaluate(q, c, q_lang, c_lang, indptr, indices, LANGS, chunk_size=16, ks=(1, 3, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = reference_evaluate(q, c, q_lang, c_lang, indptr, indices, LANGS, ks=(1, 3, 10))
    _assert_same(ours, ref)
    # the problem really has ties, undefined pools, multi-language relevant sets
    if integer:
        scores = q.astype(np.float64) @ c.astype(np.float64).T
        assert (scores[:, :, None] == scores[:, None, :]).sum() > scores.size * 5
    assert np.isnan(ours.per_query["mono_ap"]).any() and np.isfinite(ours.per_query["mono_ap"]).any()
    assert np.isfinite(ours.per_query["rank_distance"]).sum() > 10


@settings(max_examples=40, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), n_q=st.integers(1, 12), n_c=st.integers(1, 25),
       levels=st.integers(1, 4), n_lang=st.integers(1, 3))
def test_property_scores_with_heavy_ties(seed, n_q, n_c, levels, n_lang):
    # arbitrary small score matrices with few distinct values; the reference sees the same scores through
    # one-hot query embeddings (eye @ scores.T == scores exactly)
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, levels, (n_q, n_c)).astype(np.float64)
    q_lang, c_lang = rng.integers(0, n_lang, n_q), rng.integers(0, n_lang, n_c)
    indptr, indices = _csr([np.sort(rng.choice(n_c, rng.integers(0, n_c + 1), replace=False)) for _ in range(n_q)])
    langs = LANGS[:n_lang]
    ours = evaluate_scores(scores, q_lang, c_lang, indptr, indices, langs, chunk_size=int(rng.integers(1, 5)),
                           ks=(1, 2, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = reference_evaluate(np.eye(n_q), scores.T, q_lang, c_lang, indptr, indices, langs, ks=(1, 2, 5))
    _assert_same(ours, ref)


def test_reference_is_sklearn_directly():
    # independent spot check of the reference itself on a few (query, pool) pairs
    q, c, q_lang, c_lang, indptr, indices = _random_problem(5)
    ours = evaluate(q, c, q_lang, c_lang, indptr, indices, LANGS)
    scores = q.astype(np.float64) @ c.astype(np.float64).T
    checked = 0
    for i in range(len(q)):
        y = np.zeros(len(c), bool)
        y[indices[indptr[i]:indptr[i + 1]]] = True
        pool = c_lang == q_lang[i]
        if y[pool].any():
            assert ours.per_query["mono_ap"][i] == pytest.approx(average_precision_score(y[pool], scores[i, pool]),
                                                                  abs=1e-12)
            checked += 1
        if y.any():
            assert ours.per_query["multi_ap"][i] == pytest.approx(average_precision_score(y, scores[i]), abs=1e-12)
    assert checked > 5


def test_chunk_size_order_and_codes_invariance():
    q, c, q_lang, c_lang, indptr, indices = _random_problem(3)
    base = evaluate(q, c, q_lang, c_lang, indptr, indices, LANGS, chunk_size=1000)
    for chunk in (1, 7):
        _assert_same(base, evaluate(q, c, q_lang, c_lang, indptr, indices, LANGS, chunk_size=chunk), atol=0)
    # string language codes give the same result as integer positions
    names = np.array(LANGS)
    _assert_same(base, evaluate(q, c, names[q_lang], list(names[c_lang]), indptr, indices, LANGS), atol=0)
    # precomputed scores give the same result
    scores = q.astype(np.float64) @ c.astype(np.float64).T
    _assert_same(base, evaluate_scores(scores, q_lang, c_lang, indptr, indices, LANGS, chunk_size=9), atol=0)


def test_language_sorted_candidates_path():
    # candidates already grouped by language take the no-permutation path; same answers as the reference
    q, c, q_lang, c_lang, indptr, indices = _random_problem(4, sorted_langs=True)
    ours = evaluate(q, c, q_lang, c_lang, indptr, indices, LANGS, chunk_size=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = reference_evaluate(q, c, q_lang, c_lang, indptr, indices, LANGS)
    _assert_same(ours, ref)


def test_single_language_hand_worked():
    # one language, five candidates, scores [.9, .8, .7, .6, .5]
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5],
                       # ties: candidates 0, 2, 3 share 0.5, candidate 1 is above them
                       [0.5, 0.9, 0.5, 0.5, 0.1],
                       [0.5, 0.9, 0.5, 0.5, 0.1]])
    indptr, indices = _csr([[1, 3], [2], [0]])
    res = evaluate_scores(scores, [0, 0, 0], [0] * 5, indptr, indices, ["en"], ks=(1, 2, 3))
    pq = res.per_query
    # query 0, relevant {1, 3}: item 1 (0.8): 1 relevant / 2 items >= 0.8 -> 1/2;
    # item 3 (0.6): 2 relevant / 4 items >= 0.6 -> 1/2; AP = 1/2.
    # ranks (0-based): item 1 -> 1, item 3 -> 3: R@1 = 0, R@2 = 1/2, R@3 = 1/2
    assert pq["mono_ap"][0] == pytest.approx(0.5)
    assert [pq["mono_r@1"][0], pq["mono_r@2"][0], pq["mono_r@3"][0]] == [0.0, 0.5, 0.5]
    # query 1, relevant {2} with score 0.5: 4 items score >= 0.5 (0, 1, 2, 3) -> AP = 1/4 (sklearn's tie rule).
    # strict order with ties broken by index: 1, 0, 2, 3, 4 -> item 2 has rank 2: R@2 = 0, R@3 = 1
    assert pq["mono_ap"][1] == pytest.approx(0.25)
    assert average_precision_score([0, 0, 1, 0, 0], scores[1]) == pytest.approx(0.25)
    assert [pq["mono_r@1"][1], pq["mono_r@2"][1], pq["mono_r@3"][1]] == [0.0, 0.0, 1.0]
    # query 2, relevant {0}: same AP 1/4 (same tie group), but rank 1 -> R@2 = 1
    assert pq["mono_ap"][2] == pytest.approx(0.25)
    assert [pq["mono_r@1"][2], pq["mono_r@2"][2]] == [0.0, 1.0]
    # with one pool language, multi = mono and there are no cross settings
    np.testing.assert_allclose(pq["multi_ap"], pq["mono_ap"])
    assert np.isnan(pq["cross_ap"]).all()
    # rank distance needs >= 2 relevant: query 0 has ranks 1 and 3 -> 2; the others are undefined
    assert pq["rank_distance"][0] == 2 and np.isnan(pq["rank_distance"][1:]).all()


def _two_language_case():
    # languages en, de; candidates 0, 1 in en and 2, 3 in de
    scores = np.array([[0.9, 0.2, 0.5, 0.8],   # q0 (en), relevant {0 (en), 2 (de)}
                       [0.1, 0.3, 0.2, 0.4],   # q1 (de), relevant {1 (en), 3 (de)}
                       [0.0, 0.0, 0.0, 0.0]])  # q2 (de), relevant {2 (de)}, all tied
    indptr, indices = _csr([[0, 2], [1, 3], [2]])
    return evaluate_scores(scores, ["en", "de", "de"], ["en", "en", "de", "de"], indptr, indices, ["en", "de"],
                           q_group=[0, 1, 2])


def test_two_language_per_query_by_hand():
    pq = _two_language_case().per_query
    # q0: en pool {0, 1}: relevant 0 is first -> AP 1, R@1 1.
    #     de pool {2, 3}: relevant 2 (0.5) below 3 (0.8) -> AP 1/2, R@1 0, R@10 1.
    #     all: order 0, 3, 2, 1 -> relevant at ranks 0 and 2: AP = (1/1 + 2/3) / 2 = 5/6, R@1 = 1/2,
    #     rank distance = 2 - 0 = 2.
    assert pq["mono_ap"][0] == pytest.approx(1.0) and pq["mono_r@1"][0] == 1.0
    assert pq["cross_ap"][0, 1] == pytest.approx(0.5) and pq["cross_r@1"][0, 1] == 0.0
    assert pq["cross_r@10"][0, 1] == 1.0 and np.isnan(pq["cross_ap"][0, 0])
    assert pq["multi_ap"][0] == pytest.approx(5 / 6) and pq["multi_r@1"][0] == 0.5
    assert pq["rank_distance"][0] == 2
    # q1: de pool: 3 first -> AP 1; en pool: 1 (0.3) first -> AP 1; all: order 3, 1, 2, 0 -> AP 1,
    #     R@1 = 1/2, rank distance 1.
    assert pq["mono_ap"][1] == pytest.approx(1.0) and pq["cross_ap"][1, 0] == pytest.approx(1.0)
    assert pq["multi_ap"][1] == pytest.approx(1.0) and pq["multi_r@1"][1] == 0.5
    assert pq["rank_distance"][1] == 1
    # q2: de pool {2, 3} tied -> AP 1/2; index tie-break puts 2 first -> R@1 = 1.
    #     en pool: no relevant -> undefined. all: 4 tied -> AP 1/4; candidates 0, 1 come first -> rank 2,
    #     R@1 = 0, R@10 = 1; one relevant -> rank distance undefined.
    assert pq["mono_ap"][2] == pytest.approx(0.5) and pq["mono_r@1"][2] == 1.0
    assert np.isnan(pq["cross_ap"][2]).all()
    assert pq["multi_ap"][2] == pytest.approx(0.25)
    assert pq["multi_r@1"][2] == 0.0 and pq["multi_r@10"][2] == 1.0
    assert np.isnan(pq["rank_distance"][2])


def test_two_language_macro_averages_by_hand():
    res = _two_language_case()
    s = res.summary()
    # query languages have unequal sizes: en = {q0}, de = {q1, q2}.
    # mono: en setting = 1, de setting = mean(1, 1/2) = 3/4 -> macro (1 + 3/4) / 2 = 7/8
    #       (a micro-average over queries would give (1 + 1 + 1/2) / 3 = 5/6)
    assert s["mono"]["map"] == pytest.approx(7 / 8)
    # cross: en->de = 1/2 (q0); de->en = 1 (q1 only; q2 is undefined there) -> 3/4
    assert s["cross"]["map"] == pytest.approx(3 / 4)
    # multi: en = 5/6, de = mean(1, 1/4) = 5/8 -> (5/6 + 5/8) / 2 = 35/48
    assert s["multi"]["map"] == pytest.approx(35 / 48)
    # R@1: mono all hits -> 1; multi: en 1/2, de mean(1/2, 0) = 1/4 -> 3/8
    assert s["mono"]["r@1"] == pytest.approx(1.0)
    assert s["multi"]["r@1"] == pytest.approx(3 / 8)
    # rank distance: en = 2, de = 1 (q1; q2 undefined) -> 3/2
    assert s["rank_distance"] == pytest.approx(1.5)
    # mAP matrix: rows = query language, columns = pool language, diagonal = mono
    np.testing.assert_allclose(np.array(s["map_matrix"], dtype=float), [[1.0, 0.5], [1.0, 0.75]])
    assert s["per_language"]["de"]["mono"]["map"] == pytest.approx(0.75)
    assert s["per_language"]["de"]["cross"]["map"] == pytest.approx(1.0)
    assert s["per_language"]["en"]["n_queries"] == 1 and s["per_language"]["de"]["n_queries"] == 2
    json.dumps(s, allow_nan=False)  # strictly JSON-serialisable


def test_summary_macro_structure_random():
    # summary = mean over settings of the mean over defined queries, recomputed here with plain numpy
    q, c, q_lang, c_lang, indptr, indices = _random_problem(7, n_q=90)
    res = evaluate(q, c, q_lang, c_lang, indptr, indices, LANGS)
    pq, L = res.per_query, len(LANGS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mono = np.nanmean([np.nanmean(pq["mono_ap"][q_lang == x]) for x in range(L)])
        cross = np.nanmean([np.nanmean(pq["cross_ap"][q_lang == x, y]) for x in range(L) for y in range(L) if x != y])
        multi = np.nanmean([np.nanmean(pq["multi_ap"][q_lang == x]) for x in range(L)])
        rd = np.nanmean([np.nanmean(pq["rank_distance"][q_lang == x]) for x in range(L)])
    s = res.summary()
    assert s["mono"]["map"] == pytest.approx(mono, abs=1e-12)
    assert s["cross"]["map"] == pytest.approx(cross, abs=1e-12)
    assert s["multi"]["map"] == pytest.approx(multi, abs=1e-12)
    assert s["rank_distance"] == pytest.approx(rd, abs=1e-12)
    m = np.array(s["map_matrix"], dtype=float)
    assert np.nanmean(np.diag(m)) == pytest.approx(mono, abs=1e-12)


def test_save_load_roundtrip(tmp_path):
    q, c, q_lang, c_lang, indptr, indices = _random_problem(8)
    groups = np.array([f"q{i // 3}" for i in range(len(q))])
    res = evaluate(q, c, q_lang, c_lang, indptr, indices, LANGS, q_group=groups)
    path = res.save(tmp_path / "result.npz")
    back = EvalResult.load(path)
    _assert_same(res, back, atol=0)
    assert back.languages == LANGS and back.ks == res.ks
    np.testing.assert_array_equal(back.q_group, groups)
    np.testing.assert_array_equal(back.q_lang, res.q_lang)
    assert back.summary() == res.summary()


def test_input_validation():
    q, c, q_lang, c_lang, indptr, indices = _random_problem(9, n_q=5, n_c=10)
    with pytest.raises(ValueError, match="twice"):
        evaluate(q[:1], c, q_lang[:1], c_lang, [0, 2], [3, 3], LANGS)
    with pytest.raises(ValueError, match="not in languages"):
        evaluate(q, c, ["xx"] * 5, c_lang, indptr, indices, LANGS)
    with pytest.raises(ValueError, match="relevant_indices"):
        evaluate(q[:1], c, q_lang[:1], c_lang, [0, 1], [10], LANGS)
    with pytest.raises(ValueError, match="relevant_indptr"):
        evaluate(q, c, q_lang, c_lang, indptr[:-1], indices, LANGS)


def test_query_without_relevant_and_empty_language():
    # a query with no relevant candidate at all is NaN everywhere; a language without candidates gives
    # undefined settings that the averages skip
    # q1 (en) has one relevant, candidate 2 (de), scored last: de pool {2} -> AP 1; all -> AP 1/3
    scores = np.array([[0.3, 0.2, 0.1], [0.3, 0.2, 0.1]])
    res = evaluate_scores(scores, [0, 0], [0, 0, 1], *_csr([[], [2]]), ["en", "de", "fr"])
    pq = res.per_query
    assert np.isnan(pq["mono_ap"]).all() and np.isnan(pq["multi_ap"][0])
    assert pq["cross_ap"][1, 1] == pytest.approx(1.0) and pq["multi_ap"][1] == pytest.approx(1 / 3)
    s = res.summary()
    assert s["mono"]["map"] is None and s["cross"]["map"] == pytest.approx(1.0)
    assert s["per_language"]["fr"]["n_queries"] == 0


def test_topk_matches_argsort():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((20, 16)).astype(np.float32)
    c = rng.standard_normal((300, 16)).astype(np.float32)
    scores, idx = topk(q, c, 10)
    expected = np.argsort(-(q @ c.T), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(q @ c.T, expected, axis=1), rtol=1e-5)
    # restricted pool: indices refer to c's rows
    cand = np.arange(0, 300, 3)
    _, idx_sub = topk(q, c, 5, candidates=cand)
    expected_sub = cand[np.argsort(-(q @ c[cand].T), axis=1, kind="stable")[:, :5]]
    np.testing.assert_array_equal(idx_sub, expected_sub)
    # k larger than the pool is clipped
    assert topk(q, c[:4], 10)[1].shape == (20, 4)
