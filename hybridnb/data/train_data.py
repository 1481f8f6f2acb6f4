"""Training data for hybrid batch training: a parallel table of (query, positive, hard negatives).

Hybrid batches (Elmahdy, Lin, Ahmad 2024) pair a query in language X with its positive in language Y, so
the training data must be *parallel*: item -> for each language the same query, its positive passage and
hard negatives. :class:`ParallelTable` (:mod:`hybridnb.data.parallel_table`) holds that table (None where an
item lacks a language); the batch
sampler (:mod:`hybridnb.training.sampling`) only sees ``table.available()`` and :func:`collate` turns its
``(item, query_language, passage_language)`` triples into texts.

Sources: :func:`from_lareqa` (a LAReQA task, e.g. MLQA-R, as training data) and :func:`load_mmarco`
(:mod:`hybridnb.data.mmarco`: mMARCO, Bonifacio et al. 2021, parallel MS MARCO in 14 languages).
:func:`check_no_overlap` and :func:`remove_overlap` (:mod:`hybridnb.data.overlap`) guard against training on
evaluation text. This module re-exports the names of those modules, so everything below imports from here.

    table = from_lareqa(load_task("mlqa-r"))                   # train on MLQA-R ...
    table, dropped = remove_overlap(table, load_task("xquad-r"))  # ... evaluate on XQuAD-R
    train, val = split_validation(table, fraction=0.1)
    sampler = HybridBatchSampler(train.available(), train.languages, 32, item_ids=train.ids)
    queries, positives, hard_negatives = collate(train, sampler.next_batch().pairs)
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict

import numpy as np

from hybridnb.data.mmarco import MMARCO_LANGUAGES, load_mmarco
from hybridnb.data.overlap import DataLeakError, check_no_overlap, normalize_text, remove_overlap
from hybridnb.data.parallel_table import Passage, ParallelTable, _check_count, _columns, check_candidate_mode  # noqa: F401 (Passage)

__all__ = ["MMARCO_LANGUAGES", "DataLeakError", "ParallelTable", "collate", "false_negatives", "false_negative_mask",
           "from_lareqa", "text_ids", "split_validation", "normalize_text", "check_no_overlap", "remove_overlap",
           "load_mmarco"]


def collate(table: ParallelTable, pairs: np.ndarray, n_hard_negatives: int = 1) -> tuple[list, list, list]:
    """Texts of a batch of sampler pairs ``(item, query_language, passage_language)`` (shape (B, 3)).

    Returns ``(queries, positives, hard_negatives)``: B queries in their query language, B positives and
    ``B * n_hard_negatives`` hard negatives (grouped by pair, the layout :func:`hybridnb.training.losses.info_nce`
    expects) in the passage language. Raises ValueError for a pair whose item lacks the query or positive,
    or has fewer than `n_hard_negatives` negatives (see :meth:`ParallelTable.hard_negative_counts`).
    """
    n_neg = _check_count("n_hard_negatives", n_hard_negatives)
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 3 or not np.issubdtype(pairs.dtype, np.integer):
        raise ValueError(f"pairs must be an int array of shape (B, 3), got {pairs.dtype} {pairs.shape}")
    n_items, n_langs = len(table.ids), len(table.languages)
    if pairs.size and (pairs.min() < 0 or pairs[:, 0].max() >= n_items or pairs[:, 1:].max() >= n_langs):
        raise ValueError(f"pairs out of range: items must be in [0, {n_items}), languages in [0, {n_langs})")
    queries, positives, negatives = [], [], []
    for item, ql, pl in pairs.tolist():
        qlang, plang = table.languages[ql], table.languages[pl]
        q, p = table.queries[qlang][item], table.positives[plang][item]
        if q is None or p is None:
            missing = f"query in {qlang!r}" if q is None else f"positive in {plang!r}"
            raise ValueError(f"item {table.ids[item]!r} has no {missing}")
        negs = table.hard_negatives[plang][item]
        if len(negs) < n_neg:
            raise ValueError(f"item {table.ids[item]!r} has {len(negs)} hard negative(s) in {plang!r}, "
                             f"{n_neg} requested")
        queries.append(q)
        positives.append(p)
        negatives.extend(negs[:n_neg])
    return queries, positives, negatives


def text_ids(texts: list) -> np.ndarray:
    """A 64-bit id per text (blake2b of its JSON: a (sentence, context) pair is one text), equal across processes
    (Python's own ``hash`` of a str is salted per process), so ranks can compare texts by exchanging ids."""
    return np.array([int.from_bytes(hashlib.blake2b(json.dumps(t, ensure_ascii=False).encode(), digest_size=8).digest(),
                                    "little", signed=True) for t in texts], dtype=np.int64)


def false_negative_mask(positive_ids: np.ndarray, negative_ids: np.ndarray) -> np.ndarray:
    """Bool (B, B + B*h): candidate j of query i has the text of i's own positive but is not that positive.

    The candidates are the batch's positives then its hard negatives, the order of
    :func:`hybridnb.training.losses.info_nce`'s logits (its ``exclude``). InfoNCE treats every other passage of the
    batch as a negative for query i; when two items share their answer text (two questions answered by one
    sentence, as in XQuAD-R), or another item's hard negative is item i's answer, the loss pushes query i away
    from its own answer's text: a false negative that no item-id check can see. Ids from :func:`text_ids`.
    """
    positive_ids, negative_ids = np.asarray(positive_ids), np.asarray(negative_ids)
    candidates = np.concatenate([positive_ids, negative_ids])
    mask = positive_ids[:, None] == candidates[None, :]
    mask[np.arange(len(positive_ids)), np.arange(len(positive_ids))] = False
    return mask


def false_negatives(positives: list, hard_negatives: list) -> int:
    """How many (query, in-batch negative) pairs of a collated batch have the text of the query's own answer
    (:func:`false_negative_mask`'s count); 0 for a clean batch."""
    return int(false_negative_mask(text_ids(positives), text_ids(hard_negatives)).sum())

def _rng(seed: int, key: str) -> np.random.Generator:
    """A generator that depends only on (seed, key): results do not change when other items are added."""
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return np.random.default_rng(np.random.SeedSequence([seed, digest]))


def from_lareqa(task, candidate_mode: str = "sentence+context", n_hard_negatives: int = 1,
                seed: int = 0) -> ParallelTable:
    """A LAReQA task as training data: item = question id, per language its question and answer sentence.

    Positives are the question's own answer sentence (with its paragraph as context in
    ``"sentence+context"`` mode). Up to `n_hard_negatives` hard negatives per item and language are the
    other sentences of the same paragraph, in a random order fixed by (seed, item, language); when the
    paragraph has too few, other sentences of the same article, then of the same language, fill in (so a
    batch always gets its negatives). A sentence whose text equals the positive's is never a negative.
    An id with several questions in one language keeps the first (LAReQA files never have that).
    """
    check_candidate_mode(candidate_mode)
    n_neg = _check_count("n_hard_negatives", n_hard_negatives)
    _check_count("seed", seed)
    c = _columns(task.candidates, "sentence", "context", "paragraph", "lang")
    sentences, paragraphs = c["sentence"], c["paragraph"]
    # the inputs of task.candidate_inputs(candidate_mode), built from columns (row iteration is slow)
    inputs = list(zip(sentences, c["context"])) if candidate_mode == "sentence+context" else sentences
    by_para, by_article, by_lang = defaultdict(list), defaultdict(list), defaultdict(list)
    for cid, (para, lang) in enumerate(zip(paragraphs, c["lang"])):
        by_para[para].append(cid)
        by_article[para.rsplit("/", 1)[0]].append(cid)
        by_lang[lang].append(cid)

    languages = list(task.languages)
    rows: dict[str, dict[str, int]] = {}  # id -> lang -> question row (first wins)
    q = _columns(task.questions, "id", "lang", "text", "answer_cid")
    for row, (qid, lang) in enumerate(zip(q["id"], q["lang"])):
        rows.setdefault(qid, {}).setdefault(lang, row)
    ids = list(rows)
    texts, answers = q["text"], q["answer_cid"]
    queries = {g: [None] * len(ids) for g in languages}
    positives = {g: [None] * len(ids) for g in languages}
    negatives = {g: [[] for _ in ids] for g in languages}
    for i, qid in enumerate(ids):
        for lang, row in rows[qid].items():
            answer = answers[row]
            queries[lang][i], positives[lang][i] = texts[row], inputs[answer]
            if n_neg == 0:
                continue
            rng, para = _rng(seed, f"{lang}/{qid}"), paragraphs[answer]
            chosen: list[int] = []
            seen = {sentences[answer]}
            for pool in (by_para[para], by_article[para.rsplit("/", 1)[0]], by_lang[lang]):
                for cid in rng.permutation(pool).tolist():
                    if len(chosen) == n_neg:
                        break
                    if sentences[cid] not in seen:
                        seen.add(sentences[cid])
                        chosen.append(cid)
                if len(chosen) == n_neg:
                    break
            negatives[lang][i] = [inputs[c] for c in chosen]
    return ParallelTable(ids, languages, queries, positives, negatives)


def split_validation(table: ParallelTable, fraction: float = 0.1,
                     seed: int = 0) -> tuple[ParallelTable, ParallelTable]:
    """Split by item id into (train, validation), so no parallel version of a query is on both sides.

    ``round(fraction * n)`` items (at least 1) go to validation, drawn by `seed`; both keep table order.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ValueError(f"fraction must be a number in (0, 1), got {fraction!r}")
    _check_count("seed", seed)
    n = len(table)
    n_val = max(1, round(fraction * n))
    if n_val >= n:
        raise ValueError(f"cannot split {n} item(s) with fraction {fraction}: no training item would remain")
    val = np.zeros(n, dtype=bool)
    val[np.random.default_rng(seed).permutation(n)[:n_val]] = True
    return table.subset(~val), table.subset(val)
