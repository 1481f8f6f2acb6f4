"""Tests of the hybrid batch sampler (hybridnb.training.sampling)."""

from __future__ import annotations

import json
import math
import pickle
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hybridnb.training.sampling import (
    KINDS,
    Batch,
    HybridBatchSampler,
    availability_matrix,
    language_distribution,
    parse_strategy,
)

LANGS = ["en", "de", "es", "ar", "zh"]


def random_available(seed: int, n_items: int, n_langs: int, density: float = 0.6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    avail = rng.random((n_items, n_langs)) < density
    avail[np.arange(n_langs) % n_items, np.arange(n_langs)] = True  # every language has an item
    return avail


def binomial_ok(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


# --------------------------------------------------------------------------------------------------
# parse_strategy
# --------------------------------------------------------------------------------------------------


def test_parse_strategy_names():
    assert parse_strategy("hybrid") == {"mono": 0.5, "cross": 0.5}
    assert parse_strategy("hybrid", alpha=0.25) == {"mono": 0.25, "cross": 0.75}
    assert parse_strategy("hybrid", alpha=1) == {"mono": 1.0}
    assert parse_strategy("hybrid", alpha=0.0) == {"cross": 1.0}
    for kind in KINDS:
        assert parse_strategy(kind) == {kind: 1.0}
        assert parse_strategy(kind, alpha=None) == {kind: 1.0}
    assert parse_strategy("X-X-mono") == {"mono": 1.0}
    assert parse_strategy("X-Y") == {"cross": 1.0}
    assert parse_strategy("x-x") == {"mixed": 1.0}
    assert parse_strategy("En-En") == {"en": 1.0}
    assert parse_strategy(" Hybrid ") == {"mono": 0.5, "cross": 0.5}


def test_parse_strategy_mixture():
    mix = {"mixed": 0.2, "mono": 0.5, "cross": 0.3}
    out = parse_strategy(mix)
    assert out == {"mono": 0.5, "cross": 0.3, "mixed": 0.2}
    assert list(out) == ["mono", "cross", "mixed"]  # canonical order
    assert parse_strategy({"mono": 1.0, "en": 0.0}) == {"mono": 1.0}  # zero weights dropped
    assert parse_strategy({"mono": 0.5, "cross": 0.5 + 5e-7}) == {"mono": 0.5, "cross": 0.5 + 5e-7}


@pytest.mark.parametrize(
    "strategy, alpha, match",
    [
        ("hybird", 0.5, "unknown strategy 'hybird'"),
        ({"mono": 0.5, "crosss": 0.5}, 0.5, "unknown batch kind 'crosss'"),
        ({"mono": 1.5, "cross": -0.5}, 0.5, "negative weight"),
        ({"mono": 0.5, "cross": 0.4}, 0.5, "sum to 1"),
        ({"mono": 0.5, "cross": 0.5 + 2e-6}, 0.5, "sum to 1"),
        ({"mono": 0.0}, 0.5, "sum to 1"),
        ({}, 0.5, "empty strategy mixture"),
        ({"mono": "1"}, 0.5, "must be a finite number"),
        ({"mono": float("nan")}, 0.5, "must be a finite number"),
        ("hybrid", -0.1, r"alpha must be in \[0, 1\]"),
        ("hybrid", 1.5, r"alpha must be in \[0, 1\]"),
        ("hybrid", float("nan"), r"alpha must be in \[0, 1\]"),
        ("hybrid", "0.5", "alpha must be a number"),
        ("hybrid", True, "alpha must be a number"),
        ("hybrid", None, "needs alpha"),
        ("mono", 2.0, r"alpha must be in \[0, 1\]"),
        (3, 0.5, "strategy must be a name or a mapping"),
    ],
)
def test_parse_strategy_errors(strategy, alpha, match):
    with pytest.raises(ValueError, match=match):
        parse_strategy(strategy, alpha)


# --------------------------------------------------------------------------------------------------
# kind frequencies and schedule
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "strategy, alpha",
    [("hybrid", 0.5), ("hybrid", 0.2), ({"mono": 0.5, "cross": 0.3, "mixed": 0.2}, None),
     ({"mono": 0.25, "cross": 0.25, "mixed": 0.25, "en": 0.25}, None)],
)
def test_kind_frequencies_converge(strategy, alpha):
    avail = random_available(0, 300, 4)
    s = HybridBatchSampler(avail, LANGS[:4], 8, strategy=strategy, alpha=alpha, seed=7)
    n = 4000
    batches = s.take(n)
    kinds = [b.kind for b in batches]
    assert kinds == s.kind_schedule(n)  # the exposed schedule is the realised one
    counts = Counter(kinds)
    weights = parse_strategy(strategy, alpha)
    assert set(counts) == set(weights)
    for kind, w in weights.items():
        assert binomial_ok(counts[kind], n, w), (kind, counts[kind], n * w)


def test_schedule_is_pure_and_windowed():
    s = HybridBatchSampler(random_available(1, 100, 3), LANGS[:3], 4, seed=3)
    full = s.schedule(50)
    assert s.step == 0  # not advanced
    assert s.schedule(20, start=30) == full[30:]
    batches = s.take(50)
    assert [(b.kind, b.language) for b in batches] == full
    assert [b.step for b in batches] == list(range(50))


# --------------------------------------------------------------------------------------------------
# batch invariants (property based)
# --------------------------------------------------------------------------------------------------

strategy_st = st.one_of(
    st.sampled_from(["hybrid", "mono", "cross", "mixed", "en"]),
    st.lists(st.integers(0, 4), min_size=4, max_size=4)
    .filter(lambda w: sum(w) > 0)
    .map(lambda w: {k: x / sum(w) for k, x in zip(KINDS, w)}),
)
sampling_st = st.one_of(st.sampled_from(["uniform", "size"]), st.floats(0.05, 20.0))


def expected_infeasible(avail: np.ndarray, langs: list[str], G: int, weights: dict) -> bool:
    n_lang = avail.sum(axis=0)
    n_avail = avail.sum(axis=1)
    if G > avail.shape[0]:
        return True
    if "mono" in weights and n_lang.min() < G:
        return True
    if "en" in weights and ("en" not in langs or n_lang[langs.index("en")] < G):
        return True
    if "cross" in weights and (len(langs) < 2 or (n_avail >= 2).sum() < G):
        return True
    if "mixed" in weights and (n_avail >= 1).sum() < G:
        return True
    return False


def check_batch(s: HybridBatchSampler, b: Batch) -> None:
    avail = s.available
    items, q, p = b.pairs[:, 0], b.pairs[:, 1], b.pairs[:, 2]
    assert b.pairs.dtype.kind == "i" and b.pairs.shape == (s.global_batch_size, 3)
    assert len(set(items.tolist())) == len(items), "duplicate item in a batch"
    assert avail[items, q].all() and avail[items, p].all(), "pair not available"
    if b.kind in ("mono", "en"):
        j = s.languages.index(b.language)
        assert (q == j).all() and (p == j).all()
        if b.kind == "en":
            assert b.language == "en"
    elif b.kind == "cross":
        assert b.language is None and (q != p).all()
    else:
        assert b.kind == "mixed" and b.language is None and (q == p).all()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data_seed=st.integers(0, 10_000),
    n_items=st.integers(1, 60),
    n_langs=st.integers(1, 5),
    density=st.floats(0.1, 1.0),
    G=st.integers(1, 10),
    strategy=strategy_st,
    sampling=sampling_st,
    seed=st.integers(0, 2**32),
)
def test_batch_invariants_and_coverage(data_seed, n_items, n_langs, density, G, strategy, sampling, seed):
    langs = LANGS[:n_langs]
    avail = random_available(data_seed, n_items, n_langs, density)
    weights = parse_strategy(strategy)
    if expected_infeasible(avail, langs, G, weights):
        event("infeasible configuration")
        with pytest.raises(ValueError):
            HybridBatchSampler(avail, langs, G, strategy=strategy, language_sampling=sampling, seed=seed)
        return
    s = HybridBatchSampler(avail, langs, G, strategy=strategy, language_sampling=sampling, seed=seed)
    # pools, computed independently: one per language (mono / en), cross (>= 2 languages), mixed (>= 1)
    members = {("lang", j): set(np.flatnonzero(avail[:, j]).tolist()) for j in range(n_langs)}
    members["cross"] = set(np.flatnonzero(avail.sum(1) >= 2).tolist())
    members["mixed"] = set(np.flatnonzero(avail.sum(1) >= 1).tolist())
    counts = {k: Counter() for k in members}
    for _ in range(25):
        b = s.next_batch()
        check_batch(s, b)
        pool = ("lang", s.languages.index(b.language)) if b.kind in ("mono", "en") else b.kind
        assert set(b.items.tolist()) <= members[pool]
        counts[pool].update(b.items.tolist())
        # without-replacement cycling: counts within a pool never differ by more than one
        c = [counts[pool][i] for i in members[pool]]
        assert max(c) - min(c) <= 1


def test_epoch_boundary_has_no_duplicates_and_exact_coverage():
    avail = np.ones((10, 1), dtype=bool)
    s = HybridBatchSampler(avail, ["en"], 7, strategy="mono", seed=0)
    counts = Counter()
    for t in range(70):  # 490 = 49 epochs of 10 items
        b = s.next_batch()
        assert len(set(b.items.tolist())) == 7
        counts.update(b.items.tolist())
        assert max(counts.values()) - min(counts[i] for i in range(10)) <= 1
    assert set(counts.values()) == {49}
    assert s.epochs()["lang:en"] == pytest.approx(49.0)


def test_cross_pairs_cover_all_ordered_language_pairs_uniformly():
    avail = np.ones((400, 3), dtype=bool)
    s = HybridBatchSampler(avail, LANGS[:3], 20, strategy="cross", seed=5)
    c = Counter()
    for b in s.take(300):
        c.update(zip(b.query_languages.tolist(), b.passage_languages.tolist()))
    n = 300 * 20
    assert len(c) == 6
    for pair, k in c.items():
        assert binomial_ok(k, n, 1 / 6), (pair, k)


def test_extreme_temperature_does_not_break_pair_draws():
    avail = random_available(3, 200, 4, density=0.5)
    avail[:50] = False
    avail[:50, 2:] = True  # items only in the two smallest languages
    for kind in ("cross", "mixed", "mono"):
        s = HybridBatchSampler(avail, LANGS[:4], 8, strategy=kind, language_sampling=1e-4, seed=1)
        for b in s.take(100):
            check_batch(s, b)


# --------------------------------------------------------------------------------------------------
# determinism and state
# --------------------------------------------------------------------------------------------------


def make(seed=11, **kw):
    kw.setdefault("strategy", {"mono": 0.4, "cross": 0.3, "mixed": 0.2, "en": 0.1})
    return HybridBatchSampler(random_available(2, 60, 4), LANGS[:4], kw.pop("G", 8), seed=seed, **kw)


def test_same_seed_same_batches_different_seed_differs():
    a, b, c = make(seed=11).take(200), make(seed=11).take(200), make(seed=12).take(200)
    assert a == b
    assert a != c
    assert sum(x == y for x, y in zip(a, c)) < 20


def test_seed_none_is_recorded_and_reproducible():
    s = make(seed=None)
    assert isinstance(s.seed, int)
    assert make(seed=s.seed).take(30) == s.take(30)


@settings(max_examples=25, deadline=None)
@given(split=st.integers(0, 120), via=st.sampled_from(["none", "json", "pickle"]))
def test_state_round_trip_mid_stream(split, via):
    ref = make()
    ref.take(split)
    state = ref.state_dict()
    if via == "json":
        state = json.loads(json.dumps(state))
    elif via == "pickle":
        state = pickle.loads(pickle.dumps(state))
    expected = ref.take(80)
    restored = make(seed=999)  # the seed comes from the state
    restored.load_state_dict(state)
    assert restored.seed == 11 and restored.step == split
    assert restored.take(80) == expected
    assert restored.state_dict() == ref.state_dict()


def test_state_is_plain_json():
    s = make(seed=None)  # 128-bit entropy seed survives JSON too
    s.take(37)
    state = s.state_dict()
    assert json.loads(json.dumps(state)) == state


def test_state_from_other_world_size_resumes_same_global_stream():
    ref = make(G=8)
    ref.take(33)
    state = ref.state_dict()
    expected = [b.pairs for b in ref.take(20)]
    for rank in range(4):
        s = make(G=8, world_size=4, rank=rank)
        s.load_state_dict(state)
        got = [b.pairs for b in s.take(20)]
        for g, e in zip(got, expected):
            assert np.array_equal(g, e[rank * 2 : rank * 2 + 2])


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(G=4), "different configuration.*global_batch_size"),
        (dict(strategy="hybrid"), "different configuration.*weights"),
        (dict(language_sampling="size"), "different configuration.*language_sampling"),
    ],
)
def test_load_state_rejects_other_config(change, match):
    state = make().state_dict()
    with pytest.raises(ValueError, match=match):
        make(**change).load_state_dict(state)


def test_load_state_rejects_other_data_and_garbage():
    state = make().state_dict()
    other = HybridBatchSampler(random_available(3, 60, 4), LANGS[:4], 8, seed=11)
    with pytest.raises(ValueError, match="available_sha256"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="not a HybridBatchSampler state"):
        make().load_state_dict({"step": 3})
    with pytest.raises(ValueError, match="version"):
        make().load_state_dict({**state, "version": 99})


# --------------------------------------------------------------------------------------------------
# several processes
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_shard_the_global_batch(world_size):
    G, steps = 8, 300
    glob = make(G=G).take(steps)
    ranks = [make(G=G, world_size=world_size, rank=r) for r in range(world_size)]
    for r in ranks:
        assert r.kind_schedule(steps) == [b.kind for b in glob]
    shards = [r.take(steps) for r in ranks]
    for t in range(steps):
        parts = [sh[t] for sh in shards]
        assert {(p.kind, p.language, p.step) for p in parts} == {(glob[t].kind, glob[t].language, t)}
        assert all(len(p) == G // world_size for p in parts)
        assert np.array_equal(np.concatenate([p.pairs for p in parts]), glob[t].pairs)
        ids = [set(p.items.tolist()) for p in parts]
        assert sum(map(len, ids)) == len(set().union(*ids)) == G  # disjoint across ranks
    assert all(r.state_dict() == ranks[0].state_dict() for r in ranks)


def test_next_global_batch_matches_rank_shards():
    a = make(G=8, world_size=2, rank=1)
    b = make(G=8)
    for _ in range(20):
        g = a.next_global_batch()
        assert g == b.next_batch()


# --------------------------------------------------------------------------------------------------
# language distributions
# --------------------------------------------------------------------------------------------------

SIZES = [800, 400, 200, 100]


def sized_available() -> np.ndarray:
    avail = np.zeros((800, 4), dtype=bool)
    for j, n in enumerate(SIZES):
        avail[:n, j] = True
    return avail


@pytest.mark.parametrize(
    "sampling, expected",
    [
        ("uniform", np.full(4, 0.25)),
        ("size", np.array(SIZES) / sum(SIZES)),
        (2.0, np.sqrt(SIZES) / np.sqrt(SIZES).sum()),
        (0.5, np.square(SIZES) / np.square(SIZES).sum()),
        (1.0, np.array(SIZES) / sum(SIZES)),
    ],
)
def test_mono_language_frequencies_converge(sampling, expected):
    avail = sized_available()
    p = language_distribution(avail, LANGS[:4], sampling)
    np.testing.assert_allclose(p, expected, rtol=1e-12)
    s = HybridBatchSampler(avail, LANGS[:4], 8, strategy="mono", language_sampling=sampling, seed=4)
    np.testing.assert_allclose(s.language_probs, expected, rtol=1e-12)
    n = 4000
    c = Counter(b.language for b in s.take(n))
    for lang, pe in zip(LANGS[:4], expected):
        assert binomial_ok(c[lang], n, pe), (lang, c[lang], n * pe)


def test_huge_temperature_is_uniform():
    p = language_distribution(sized_available(), LANGS[:4], 1e9)
    np.testing.assert_allclose(p, 0.25, rtol=1e-6)


def test_mixed_language_frequencies_follow_p_on_full_availability():
    avail = np.ones((500, 3), dtype=bool)
    s = HybridBatchSampler(avail, LANGS[:3], 10, strategy="mixed", seed=9)
    c = Counter()
    for b in s.take(400):
        c.update(b.query_languages.tolist())
    for j in range(3):
        assert binomial_ok(c[j], 4000, 1 / 3)


# --------------------------------------------------------------------------------------------------
# bad inputs
# --------------------------------------------------------------------------------------------------


def test_language_without_items_is_named():
    avail = random_available(0, 30, 3)
    avail[:, 1] = False
    with pytest.raises(ValueError, match="'de'.*no items"):
        HybridBatchSampler(avail, LANGS[:3], 4)
    with pytest.raises(ValueError, match="'de'.*no items"):
        language_distribution(avail, LANGS[:3], "size")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(global_batch_size=31), "exceeds the number of items"),
        (dict(global_batch_size=0), "global_batch_size must be >= 1"),
        (dict(global_batch_size=2.0), "global_batch_size must be an integer"),
        (dict(global_batch_size=6, world_size=4), "not divisible by world_size"),
        (dict(world_size=0), "world_size must be >= 1"),
        (dict(world_size=2, rank=2), "rank must be in"),
        (dict(rank=-1), "rank must be >= 0"),
        (dict(seed=-1), "seed must be >= 0"),
        (dict(seed=1.5), "seed must be an integer"),
        (dict(language_sampling="zipf"), "unknown language_sampling 'zipf'"),
        (dict(language_sampling=0.0), "temperature must be > 0"),
        (dict(language_sampling=-2), "temperature must be > 0"),
        (dict(language_sampling=None), "language_sampling must be"),
        (dict(strategy="bogus"), "unknown strategy"),
        (dict(alpha=7), "alpha must be in"),
        (dict(item_ids=list(range(29))), "item_ids has 29 entries"),
        (dict(item_ids=[0] * 30), "item_ids are not unique"),
    ],
)
def test_constructor_errors(kwargs, match):
    avail = np.ones((30, 3), dtype=bool)
    kwargs = {"global_batch_size": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        HybridBatchSampler(avail, LANGS[:3], **kwargs)


def test_mono_batch_larger_than_smallest_language_names_it():
    avail = sized_available()  # zh has 100 items
    with pytest.raises(ValueError, match=r"mono.*smallest: 'ar' with 100 items"):
        HybridBatchSampler(avail, LANGS[:4], 128, strategy="hybrid")
    HybridBatchSampler(avail, LANGS[:4], 128, strategy="cross")  # fine without mono
    HybridBatchSampler(avail, LANGS[:4], 128, strategy="hybrid", alpha=0.0)  # mono weight 0: fine


def test_en_needs_english():
    avail = np.ones((30, 2), dtype=bool)
    with pytest.raises(ValueError, match="'en' is not among the languages"):
        HybridBatchSampler(avail, ["de", "fr"], 4, strategy="en")
    with pytest.raises(ValueError, match="'en' is not among the languages"):
        HybridBatchSampler(avail, ["de", "fr"], 4, strategy={"mono": 0.9, "en": 0.1})
    avail[5:, 0] = False
    with pytest.raises(ValueError, match="en batches need global_batch_size 8 English items, only 5"):
        HybridBatchSampler(avail, ["en", "fr"], 8, strategy="en")


def test_cross_needs_multilingual_items():
    with pytest.raises(ValueError, match="cross batches need at least 2 languages"):
        HybridBatchSampler(np.ones((30, 1), dtype=bool), ["en"], 4, strategy="hybrid")
    avail = np.zeros((30, 2), dtype=bool)
    avail[:, 0] = True
    avail[:3, 1] = True
    with pytest.raises(ValueError, match=r"cross.*>= 2 languages, only 3"):
        HybridBatchSampler(avail, ["en", "de"], 4, strategy="cross")


@pytest.mark.parametrize(
    "available, languages, match",
    [
        (np.ones(5, dtype=bool), ["en"], "2-D"),
        (np.ones((5, 2), dtype=bool), ["en"], "2 language columns but 1 languages"),
        (np.ones((0, 1), dtype=bool), ["en"], "no items"),
        (np.full((5, 1), 0.5), ["en"], "must be boolean"),
        (np.full((5, 1), 2), ["en"], "must be boolean"),
        (np.ones((5, 2), dtype=bool), ["en", "en"], "duplicate language"),
        (np.ones((5, 2), dtype=bool), "en", "sequence of language codes"),
        (np.ones((5, 0), dtype=bool), [], "languages is empty"),
    ],
)
def test_bad_availability(available, languages, match):
    with pytest.raises(ValueError, match=match):
        HybridBatchSampler(available, languages, 1, strategy="mono")


def test_caller_array_is_copied_not_frozen():
    avail = np.ones((6, 2), dtype=bool)
    s = HybridBatchSampler(avail, ["en", "de"], 2, seed=0)
    avail[:] = False  # still writable, and the sampler keeps its own copy
    assert s.available.all() and not s.available.flags.writeable


def test_integer_availability_accepted():
    a = HybridBatchSampler(np.ones((6, 2), dtype=np.int8), ["en", "de"], 2, seed=0).take(10)
    b = HybridBatchSampler(np.ones((6, 2), dtype=bool), ["en", "de"], 2, seed=0).take(10)
    assert a == b


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def test_availability_matrix_and_item_ids():
    table = {
        "q1": {"en": ("q", "p"), "de": ("q", "p")},
        "q2": {"en": ("q", "p"), "de": None},
        "q3": {"de": ("q", "p"), "ar": ("q", "p")},
    }
    avail, ids, langs = availability_matrix(table)
    assert langs == ["ar", "de", "en"] and ids == ["q1", "q2", "q3"]
    assert avail.tolist() == [[False, True, True], [False, False, True], [True, True, False]]
    avail2, _, langs2 = availability_matrix(table, ["en", "de"])
    assert langs2 == ["en", "de"] and avail2.tolist() == [[True, True], [True, False], [False, True]]
    s = HybridBatchSampler(avail, langs, 2, strategy="mixed", item_ids=ids, seed=0)
    b = s.next_batch()
    assert s.item_ids_of(b) == [ids[i] for i in b.items]
    assert all(q == p for q, p in s.language_codes(b))
    with pytest.raises(ValueError, match="without item_ids"):
        HybridBatchSampler(avail, langs, 2, strategy="mixed").item_ids_of(b)
