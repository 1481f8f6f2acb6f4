"""Metrics for multilingual image-text retrieval, computed by `hybridnb.evaluation.metrics.evaluate`.

Three retrieval problems over a test table's captions (one per image and language) and images, each an
:class:`~hybridnb.evaluation.metrics.EvalResult`, so `hybridnb.evaluation.stats` gives their bootstrap CIs and paired tests
(:func:`confidence_intervals`, :func:`compare`) unchanged. Images enter the evaluator with the pseudo-language
:data:`IMAGE`, appended to the caption languages:

* ``t2i`` (text->image): query = caption (its language), pool = all images. The evaluator's
  ``cross_*[:, IMAGE]`` = ``multi_*`` columns hold it: ``multi_r@k`` = Recall@k (the hit rate: one relevant
  image), ``multi_ap`` = reciprocal rank. Macro over the caption languages. Group = image.
* ``i2t`` (image->text): query = image, pool = the captions of one language Y (``cross_*[:, Y]``:
  Recall@k per language, the hit rate with one caption per image and language, the fraction of the image's
  captions in the top k with several) or all captions pooled (``multi_ap``, and ``rank_distance``: the
  language bias of Huang et al. 2023, rank of the image's lowest- minus highest-ranked caption, over
  languages; lower is better). Group = image.
* ``captions`` (cross-lingual caption retrieval): query = caption in X, relevant = the same image's captions
  in the other languages; ``cross_ap`` = X->Y mAP, ``multi_ap`` = mAP over all other-language captions
  pooled. A query's own language is left out of its pools (its own caption would be a trivial hit), so
  ``mono_*`` are undefined. Group = image.

Mean recall = the mean of the six text->image and image->text Recall@{1,5,10} (per language, or of the
macro averages).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from hybridnb.evaluation import stats
from hybridnb.evaluation.metrics import EvalResult, evaluate

__all__ = ["IMAGE", "RECALL_KS", "METRICS", "ImageTextResult", "image_text_metrics",
           "confidence_intervals", "compare", "select_queries"]

IMAGE = "image"
RECALL_KS = (1, 5, 10)
#: readable name -> (problem, per-query key of its EvalResult); macro-averaged over languages.
METRICS = {**{f"t2i_r@{k}": ("t2i", f"multi_r@{k}") for k in RECALL_KS},
           **{f"i2t_r@{k}": ("i2t", f"cross_r@{k}") for k in RECALL_KS},
           "t2i_mrr": ("t2i", "multi_ap"), "i2t_pooled_map": ("i2t", "multi_ap"),
           "i2t_rank_distance": ("i2t", "rank_distance"),
           "caption_cross_map": ("captions", "cross_ap"), "caption_pooled_map": ("captions", "multi_ap")}


@dataclass
class ImageTextResult:
    """The three EvalResults of :func:`image_text_metrics` (``captions`` is None when not computed)."""

    languages: list[str]
    t2i: EvalResult
    i2t: EvalResult
    captions: EvalResult | None = None

    def recall(self, direction: str, k: int, language: str | None = None) -> float:
        """Recall@k of ``"t2i"`` / ``"i2t"`` in one caption language, or macro-averaged over them."""
        if direction == "t2i":
            x = None if language is None else self.languages.index(language)
            return self.t2i.macro(f"multi_r@{k}", query_lang=x)
        if direction == "i2t":
            if language is None:
                return self.i2t.macro(f"cross_r@{k}")
            return float(self.i2t.matrix(f"r@{k}")[len(self.languages), self.languages.index(language)])
        raise ValueError(f"direction must be 't2i' or 'i2t', got {direction!r}")

    def mean_recall(self, language: str | None = None) -> float:
        return float(np.mean([self.recall(d, k, language) for d in ("t2i", "i2t") for k in RECALL_KS]))

    def summary(self) -> dict:
        """Macro-averaged metrics (:data:`METRICS`, ``mean_recall``) and a per-language recall table."""
        out = {"languages": list(self.languages), "mean_recall": self.mean_recall()}
        for name, (problem, key) in METRICS.items():
            result = getattr(self, problem)
            out[name] = None if result is None else result.macro(key)
        out["per_language"] = {g: {**{f"{d}_r@{k}": self.recall(d, k, g) for d in ("t2i", "i2t") for k in RECALL_KS},
                                   "mean_recall": self.mean_recall(g)} for g in self.languages}
        if self.captions is not None:
            out["caption_map_matrix"] = self.captions.matrix("ap").tolist()
        return out


def _codes(values, universe: list, what: str) -> np.ndarray:
    index = {v: i for i, v in enumerate(universe)}
    try:
        return np.array([index[v] for v in np.asarray(values).tolist()], dtype=np.int64)
    except KeyError as err:
        raise ValueError(f"{what}: {err.args[0]!r} is not among {universe[:12]}") from None


def _csr(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    return indptr, (np.concatenate(rows) if rows else np.zeros(0)).astype(np.int64)


def _members(keys: np.ndarray, n_keys: int) -> list[np.ndarray]:
    """Positions of each key value 0..n_keys-1 in `keys`, in index order."""
    order = np.argsort(keys, kind="stable")
    return np.split(order, np.searchsorted(keys[order], np.arange(1, n_keys)))


def image_text_metrics(text_emb, image_emb, caption_langs, caption_item, image_item,
                       languages: Sequence[str] | None = None, captions: bool = True,
                       chunk_size: int = 512) -> ImageTextResult:
    """Text->image, image->text and (if `captions`) cross-lingual caption retrieval; see the module docstring.

    text_emb (Nt, D) / image_emb (Ni, D): embeddings (score = inner product). caption_langs (Nt,): language
    codes; caption_item (Nt,) / image_item (Ni,): item keys (any hashable, image_item unique) linking a
    caption to its image. languages: the caption languages, in report order (default: sorted).
    """
    text_emb, image_emb = np.asarray(text_emb), np.asarray(image_emb)
    caption_langs, caption_item, image_item = (np.asarray(x, dtype=object) for x in (caption_langs, caption_item,
                                                                                      image_item))
    if len(caption_langs) != len(text_emb) or len(caption_item) != len(text_emb) or len(image_item) != len(image_emb):
        raise ValueError(f"need one language and item per caption ({len(text_emb)}) and one item per image "
                         f"({len(image_emb)}); got {len(caption_langs)}, {len(caption_item)}, {len(image_item)}")
    languages = sorted(set(caption_langs.tolist())) if languages is None else [str(g) for g in languages]
    if IMAGE in languages:
        raise ValueError(f"{IMAGE!r} is reserved for images and cannot be a caption language")
    items = list(dict.fromkeys(image_item.tolist()))
    if len(items) != len(image_item):
        raise ValueError("image_item must be unique (one image per item)")
    img_of = _codes(caption_item, items, "caption_item (an item without an image)")
    lang = _codes(caption_langs, languages, "caption_langs")
    L, n_img, all_langs = len(languages), len(image_emb), languages + [IMAGE]

    one_image = (np.arange(len(img_of) + 1), img_of)  # CSR: caption i's relevant image is img_of[i]
    t2i = evaluate(text_emb, image_emb, lang, np.full(n_img, L), *one_image, all_langs, q_group=img_of,
                   chunk_size=chunk_size, ks=RECALL_KS)
    i2t = evaluate(image_emb, text_emb, np.full(n_img, L), lang, *_csr(_members(img_of, n_img)), all_langs,
                   q_group=np.arange(n_img), chunk_size=chunk_size, ks=RECALL_KS)
    cap = caption_retrieval(text_emb, lang, img_of, languages, chunk_size=chunk_size) if captions else None
    return ImageTextResult(languages, t2i, i2t, cap)


def caption_retrieval(text_emb, lang: np.ndarray, item: np.ndarray, languages: list[str],
                      ks: Sequence[int] = (1, 10), chunk_size: int = 512) -> EvalResult:
    """Cross-lingual caption retrieval (integer language and item codes): one `evaluate` per query language
    X over the captions of the other languages, put back into one EvalResult in caption order."""
    per_query: dict[str, np.ndarray] = {}
    result = None
    for x in range(len(languages)):
        q, c = np.flatnonzero(lang == x), np.flatnonzero(lang != x)
        if len(q) == 0 or len(c) == 0:
            continue
        members = _members(item[c], int(item.max()) + 1)
        result = evaluate(text_emb[q], text_emb[c], lang[q], lang[c], *_csr([members[i] for i in item[q]]),
                          languages, q_group=item[q], chunk_size=chunk_size, ks=ks)
        for key, v in result.per_query.items():
            per_query.setdefault(key, np.full((len(lang),) + v.shape[1:], np.nan))[q] = v
    if result is None:
        raise ValueError("caption retrieval needs captions in at least two languages")
    return EvalResult(list(languages), per_query, np.asarray(lang), np.asarray(item), tuple(ks),
                      meta={"scores": "inner product (float64)", "pools": "captions of the other languages"})


def _by_name(result: ImageTextResult, fn, names) -> dict:
    """Run `fn(problem, per-query keys)` (a `hybridnb.evaluation.stats` call) per problem; re-key its output by name."""
    if names is not None and set(names) - set(METRICS):
        raise ValueError(f"unknown metrics {sorted(set(names) - set(METRICS))}; choose from {list(METRICS)}")
    out = {}
    for problem in ("t2i", "i2t", "captions"):
        res = getattr(result, problem)
        wanted = {n: key for n, (p, key) in METRICS.items() if p == problem and (names is None or n in names)}
        if res is None or not wanted:
            continue
        nested = fn(problem, sorted(set(wanted.values())))
        where = {key: (s, name) for s, name, key in res.metric_keys()}
        for n, key in wanted.items():
            s, name = where[key]
            out[n] = nested[s] if s == "rank_distance" else nested[s][name]
    return out


def confidence_intervals(result: ImageTextResult, metrics: Sequence[str] | None = None, **kwargs) -> dict:
    """Bootstrap CIs (``hybridnb.evaluation.stats.confidence_intervals``, resampling images) per :data:`METRICS` name."""
    return _by_name(result, lambda p, keys: stats.confidence_intervals(getattr(result, p), metrics=keys, **kwargs),
                    metrics)


def compare(a: ImageTextResult, b: ImageTextResult, metrics: Sequence[str] | None = None, **kwargs) -> dict:
    """Paired bootstrap CIs and randomisation tests of a - b (``hybridnb.evaluation.stats.compare``) per metric name."""
    if (a.captions is None) != (b.captions is None):
        raise ValueError("both results need caption retrieval, or neither")
    return _by_name(a, lambda p, keys: stats.compare(getattr(a, p), getattr(b, p), metrics=keys, **kwargs),
                    metrics)


def select_queries(result: EvalResult, languages: Sequence[str]) -> EvalResult:
    """The queries of `result` whose language is one of `languages` (e.g. the caption languages never trained
    on), everything else as it is: its macro-averages are over those query languages only, and its question
    groups (the images) stay paired with the same selection of another system."""
    unknown = [g for g in languages if g not in result.languages]
    if unknown or not languages:
        raise ValueError(f"languages {list(languages)} must be a non-empty subset of {result.languages}")
    keep = np.isin(result.q_lang, [result.languages.index(g) for g in languages])
    return EvalResult(list(result.languages), {k: np.asarray(v)[keep] for k, v in result.per_query.items()},
                      np.asarray(result.q_lang)[keep], np.asarray(result.q_group)[keep], result.ks,
                      {**result.meta, "query_languages": list(languages)})
