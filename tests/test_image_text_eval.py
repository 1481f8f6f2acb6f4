"""Tests for hybridnb.image_text.metrics: recall, rank distance and caption mAP on a hand-made case,
agreement with a brute-force computation, and the stats wrappers."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from hybridnb.image_text.metrics import METRICS, compare, confidence_intervals, image_text_metrics

# 3 images, captions in en and de (item = image index); unit vectors so every score is easy to read.
IMAGES = np.array([[1, 0], [0, 1], [-1, 0]], dtype=np.float64)
TEXTS = np.array([[1, 0], [0.6, 0.8], [0.8, 0.6],   # en captions of items 0, 1, 2
                  [0, 1], [0, 1], [-1, 0]])         # de captions of items 0, 1, 2
LANGS = ["en"] * 3 + ["de"] * 3
ITEMS = [0, 1, 2, 0, 1, 2]


@pytest.fixture(scope="module")
def hand():
    return image_text_metrics(TEXTS, IMAGES, LANGS, ITEMS, [0, 1, 2], languages=["en", "de"])


def test_hand_made_recall(hand):
    # text->image: en c2 (.8,.6) ranks image 2 last; de d0 (0,1) ties images 0 and 2 below image 1
    assert hand.recall("t2i", 1, "en") == pytest.approx(2 / 3) and hand.recall("t2i", 1, "de") == pytest.approx(2 / 3)
    assert hand.recall("t2i", 5, "en") == 1.0 and hand.recall("t2i", 10) == 1.0
    # image->text: image 2 prefers en c1 (-.6) over c2 (-.8); image 1 ties de d0 and d1 (index order: d0 first)
    assert hand.recall("i2t", 1, "en") == pytest.approx(2 / 3) and hand.recall("i2t", 1, "de") == pytest.approx(2 / 3)
    assert hand.mean_recall() == pytest.approx((2 / 3 + 1 + 1) / 3)
    s = hand.summary()
    assert s["t2i_r@1"] == pytest.approx(2 / 3) and s["i2t_r@5"] == 1.0
    assert s["per_language"]["de"]["mean_recall"] == pytest.approx(8 / 9)


def test_hand_made_rank_distance_and_caption_map(hand):
    # pooled captions, ranks of the image's en and de caption: image 0: 0 and 3; image 1: 2 and 1; image 2: 4, 0
    assert hand.summary()["i2t_rank_distance"] == pytest.approx((3 + 1 + 4) / 3)
    # caption en->de APs 1/2, 1/2, 1/3 (ties count against); de->en 1/3, 1, 1/2
    assert hand.captions.matrix("ap")[0, 1] == pytest.approx(4 / 9)
    assert hand.captions.matrix("ap")[1, 0] == pytest.approx(11 / 18)
    assert hand.summary()["caption_cross_map"] == pytest.approx((4 / 9 + 11 / 18) / 2)
    assert hand.summary()["caption_pooled_map"] == pytest.approx((4 / 9 + 11 / 18) / 2)  # 2 languages: same pool
    assert np.isnan(hand.captions.macro("mono_ap"))  # own-language pool left out


def brute_force(text, image, lang, item, g, k):
    s = text @ image.T
    rows = [i for i in range(len(text)) if lang[i] == g]
    t2i = np.mean([np.argsort(-s[i], kind="stable")[:k].tolist().count(item[i]) for i in rows])
    cand = np.array(rows)
    i2t = np.mean([j in item[cand[np.argsort(-s[cand, j], kind="stable")[:k]]] for j in range(len(image))])
    return t2i, i2t


def test_random_case_matches_brute_force():
    rng = np.random.default_rng(0)
    n, langs = 30, ["en", "de", "ja"]
    image = rng.normal(size=(n, 8))
    text = np.concatenate([image + rng.normal(scale=1.5, size=image.shape) for _ in langs])
    lang = np.repeat(langs, n)
    item = np.tile(np.arange(n), len(langs))
    res = image_text_metrics(text, image, lang, item, np.arange(n), languages=langs)
    for g in langs:
        for k in (1, 5, 10):
            t2i, i2t = brute_force(text, image, lang, item, g, k)
            assert res.recall("t2i", k, g) == pytest.approx(t2i) and res.recall("i2t", k, g) == pytest.approx(i2t)
    q = 0  # caption retrieval of the first en caption: APs per other language with sklearn
    s = text @ text[q]
    for y, g in enumerate(langs[1:], 1):
        pool = np.flatnonzero(lang == g)
        ap = average_precision_score(item[pool] == item[q], s[pool])
        assert res.captions.per_query["cross_ap"][q, y] == pytest.approx(ap)
    # shuffled inputs, string item keys: the same metrics
    perm = rng.permutation(len(text))
    keys = np.array([f"k{i}" for i in range(n)], dtype=object)
    res2 = image_text_metrics(text[perm], image, lang[perm], keys[item[perm]], keys, languages=langs)
    for name in METRICS:
        assert res2.summary()[name] == pytest.approx(res.summary()[name])


def test_stats_wrappers(hand):
    rng = np.random.default_rng(1)
    a = image_text_metrics(TEXTS + rng.normal(scale=0.1, size=TEXTS.shape), IMAGES, LANGS, ITEMS, [0, 1, 2],
                           languages=["en", "de"])
    ci = confidence_intervals(a, n_resamples=50)
    assert set(ci) == set(METRICS)
    assert ci["t2i_r@1"]["estimate"] == pytest.approx(a.summary()["t2i_r@1"])
    same = compare(a, a, n_resamples=50, metrics=["t2i_r@1", "i2t_rank_distance"])
    assert set(same) == {"t2i_r@1", "i2t_rank_distance"}
    assert same["t2i_r@1"]["diff"] == 0 and same["t2i_r@1"]["p_value"] == 1.0
    with pytest.raises(ValueError, match="unknown metrics"):
        confidence_intervals(a, metrics=["r@1"])


def test_bad_input():
    with pytest.raises(ValueError, match="unique"):
        image_text_metrics(TEXTS, IMAGES, LANGS, ITEMS, [0, 1, 1])
    with pytest.raises(ValueError, match="caption_item"):
        image_text_metrics(TEXTS, IMAGES, LANGS, [0, 1, 2, 0, 1, 7], [0, 1, 2])
    with pytest.raises(ValueError, match="reserved"):
        image_text_metrics(TEXTS, IMAGES, ["image"] * 6, ITEMS, [0, 1, 2])
    with pytest.raises(ValueError, match="one language and item per caption"):
        image_text_metrics(TEXTS, IMAGES, LANGS[:5], ITEMS, [0, 1, 2])
