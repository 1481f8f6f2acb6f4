"""Training data for hybrid batch training: a parallel table of (query, positive, hard negatives).

Hybrid batches (Elmahdy, Lin, Ahmad 2024) pair a query in language X with its positive in language Y, so
the training data must be *parallel*: item -> for each language the same query, its positive passage and
hard negatives. :class:`ParallelTable` holds that table (None where an item lacks a language); the batch
sampler (:mod:`hybridnb.sampling`) only sees ``table.available()`` and :func:`collate` turns its
``(item, query_language, passage_language)`` triples into texts.

Sources: :func:`from_lareqa` (a LAReQA task, e.g. MLQA-R, as training data) and :func:`load_mmarco`
(mMARCO, Bonifacio et al. 2021, parallel MS MARCO in 14 languages). :func:`check_no_overlap` and
:func:`remove_overlap` guard against training on evaluation text.

    table = from_lareqa(load_task("mlqa-r"))                   # train on MLQA-R ...
    table, dropped = remove_overlap(table, load_task("xquad-r"))  # ... evaluate on XQuAD-R
    train, val = split_validation(table, fraction=0.1)
    sampler = HybridBatchSampler(train.available(), train.languages, 32, item_ids=train.ids)
    queries, positives, hard_negatives = collate(train, sampler.next_batch().pairs)
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import tempfile
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["MMARCO_LANGUAGES", "DataLeakError", "ParallelTable", "collate", "from_lareqa", "split_validation",
           "normalize_text", "check_no_overlap", "remove_overlap", "load_mmarco"]

Passage = str | tuple[str, str]  # a text, or a (sentence, context) pair for a text-pair encoder
CANDIDATE_MODES = ("sentence+context", "sentence")


@dataclass
class ParallelTable:
    """Item id -> per language a query, its positive and hard negatives (None / [] where absent).

    ``queries[lang][i]``, ``positives[lang][i]``, ``hard_negatives[lang][i]`` belong to item ``ids[i]``.
    Validated on construction: unique ids and languages, every column of length ``len(ids)``, at least one
    item, and at least one available item per language (the sampler needs every language populated).
    """

    ids: list[str]
    languages: list[str]
    queries: dict[str, list[str | None]]
    positives: dict[str, list[Passage | None]]
    hard_negatives: dict[str, list[list[Passage]]]

    def __post_init__(self) -> None:
        n = len(self.ids)
        if n == 0:
            raise ValueError("empty ParallelTable: no items")
        if len(set(self.ids)) != n:
            raise ValueError("ParallelTable ids are not unique (duplicated items give false in-batch negatives)")
        if not self.languages or len(set(self.languages)) != len(self.languages):
            raise ValueError(f"languages must be non-empty and unique, got {self.languages}")
        for name in ("queries", "positives", "hard_negatives"):
            col = getattr(self, name)
            if set(col) != set(self.languages):
                raise ValueError(f"{name} has languages {sorted(col)}, expected {sorted(self.languages)}")
            bad = [lang for lang in self.languages if len(col[lang]) != n]
            if bad:
                raise ValueError(f"{name} of language(s) {bad} do not have one entry per item ({n})")
        counts = self.available().sum(axis=0)
        empty = [lang for lang, k in zip(self.languages, counts) if k == 0]
        if empty:
            raise ValueError(f"language(s) {empty} have no items (no item has both a query and a positive)")

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        counts = dict(zip(self.languages, self.available().sum(axis=0).tolist()))
        return f"ParallelTable(items={len(self)}, available={counts})"

    def available(self) -> np.ndarray:
        """Bool (n_items, n_languages): the item has both a query and a positive in the language."""
        n = len(self.ids)
        return np.stack([np.fromiter((q is not None and p is not None
                                      for q, p in zip(self.queries[g], self.positives[g])), bool, n)
                         for g in self.languages], axis=1)

    def hard_negative_counts(self) -> np.ndarray:
        """Int (n_items, n_languages): hard negatives stored per item and language (check before training)."""
        n = len(self.ids)
        return np.stack([np.fromiter(map(len, self.hard_negatives[g]), np.int64, n) for g in self.languages],
                        axis=1)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ParallelTable:
        """The items at `indices` (ints, in that order, or a boolean mask over items)."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self.ids),):
                raise ValueError(f"boolean mask has shape {idx.shape}, expected ({len(self.ids)},)")
            idx = np.flatnonzero(idx)
        if idx.size and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 or idx.max() >= len(self.ids)):
            raise ValueError(f"indices must be ints in [0, {len(self.ids)})")
        take = [int(i) for i in idx.reshape(-1)]
        return ParallelTable([self.ids[i] for i in take], list(self.languages),
                             {g: [self.queries[g][i] for i in take] for g in self.languages},
                             {g: [self.positives[g][i] for i in take] for g in self.languages},
                             {g: [list(self.hard_negatives[g][i]) for i in take] for g in self.languages})

    def select_languages(self, languages: Sequence[str]) -> ParallelTable:
        """Keep only `languages` (in that order); items left with no language are dropped."""
        _check_language_list(languages, self.languages, "this table")
        table = ParallelTable(list(self.ids), list(languages), *(
            {g: list(getattr(self, name)[g]) for g in languages}
            for name in ("queries", "positives", "hard_negatives")))
        return table.subset(table.available().any(axis=1))

    def texts(self, contexts: bool = False) -> set[str]:
        """Every query, positive and hard-negative text (the sentence of a pair; also its context if asked)."""
        out: set[str] = set()
        for lang in self.languages:
            out.update(q for q in self.queries[lang] if q is not None)
            for p in self.positives[lang]:
                if p is not None:
                    out.update(_passage_texts(p, contexts))
            for negs in self.hard_negatives[lang]:
                for p in negs:
                    out.update(_passage_texts(p, contexts))
        return out

    def save(self, path: str | Path) -> None:
        """Write the table as JSON (atomically), e.g. to avoid rescanning mMARCO's collections."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"format": 1, "ids": self.ids, "languages": self.languages, "queries": self.queries,
                           "positives": self.positives, "hard_negatives": self.hard_negatives}, f,
                          ensure_ascii=False)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | Path) -> ParallelTable:
        """Read a table written by :meth:`save` (JSON lists turned back into (sentence, context) tuples)."""
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        if not isinstance(d, dict) or d.get("format") != 1:
            raise ValueError(f"{path}: not a ParallelTable file (format 1)")
        tup = lambda p: tuple(p) if isinstance(p, list) else p  # noqa: E731
        return cls(d["ids"], d["languages"], d["queries"],
                   {g: [tup(p) for p in col] for g, col in d["positives"].items()},
                   {g: [[tup(p) for p in negs] for negs in col] for g, col in d["hard_negatives"].items()})


def _passage_texts(p: Passage, contexts: bool) -> tuple[str, ...]:
    if isinstance(p, tuple):
        return p if contexts else p[:1]
    return (p,)


def _check_language_list(languages: Sequence[str], valid: Iterable[str], where: str) -> None:
    valid = list(valid)
    if isinstance(languages, str):
        raise TypeError(f"languages must be a list of language codes, not the string {languages!r}")
    unknown = [g for g in languages if g not in valid]
    if unknown:
        raise ValueError(f"unknown language(s) {unknown} for {where}; valid: {', '.join(valid)}")
    if not languages or len(set(languages)) != len(languages):
        raise ValueError(f"languages must be a non-empty list without duplicates, got {list(languages)}")


def _check_count(name: str, value: object) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def collate(table: ParallelTable, pairs: np.ndarray, n_hard_negatives: int = 1) -> tuple[list, list, list]:
    """Texts of a batch of sampler pairs ``(item, query_language, passage_language)`` (shape (B, 3)).

    Returns ``(queries, positives, hard_negatives)``: B queries in their query language, B positives and
    ``B * n_hard_negatives`` hard negatives (grouped by pair, the layout :func:`hybridnb.losses.info_nce`
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


def _columns(ds, *names: str) -> dict[str, list]:
    """Columns of a datasets.Dataset as lists, read in one batch (iterating a column goes row by row)."""
    return ds.select_columns(list(names))[:]


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
    if candidate_mode not in CANDIDATE_MODES:
        raise ValueError(f"unknown candidate_mode {candidate_mode!r}; valid: {', '.join(CANDIDATE_MODES)}")
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


# --------------------------------------------------------------------------------------------------
# Overlap between training data and an evaluation task
# --------------------------------------------------------------------------------------------------


class DataLeakError(ValueError):
    """Evaluation text occurs in the training data."""


def normalize_text(text: str) -> str:
    """Unicode NFKC, whitespace runs collapsed to one space (and stripped), casefolded."""
    return " ".join(unicodedata.normalize("NFKC", text).split()).casefold()


def _eval_texts(eval_task, candidate_mode: str) -> dict[str, set[str]]:
    if candidate_mode not in CANDIDATE_MODES:
        raise ValueError(f"unknown candidate_mode {candidate_mode!r}; valid: {', '.join(CANDIDATE_MODES)}")
    c = _columns(eval_task.candidates, "sentence", "context")
    kinds = {"questions": _columns(eval_task.questions, "text")["text"], "sentences": c["sentence"]}
    if candidate_mode == "sentence+context":
        kinds["contexts"] = c["context"]
    return {kind: {normalize_text(t) for t in set(texts)} for kind, texts in kinds.items()}


def check_no_overlap(train: ParallelTable, eval_task, candidate_mode: str = "sentence+context") -> None:
    """Raise :class:`DataLeakError` if any evaluation text occurs in the training texts.

    Evaluation texts: the questions and candidate sentences of `eval_task` (a LAReQA ``RetrievalTask``),
    and in ``"sentence+context"`` mode also the candidates' paragraphs, which that mode encodes; they are
    compared with every training query, positive and hard negative (and their contexts in that mode).
    Comparison is *exact* after :func:`normalize_text` (NFKC, whitespace collapse, casefold): it catches
    copied text, not paraphrases, translations or a sentence embedded in a longer passage. The error
    message gives the number of overlapping texts per kind and a few examples.
    """
    evals = _eval_texts(eval_task, candidate_mode)
    train_texts = {normalize_text(t) for t in train.texts(contexts=candidate_mode == "sentence+context")}
    hits = {kind: sorted(texts & train_texts) for kind, texts in evals.items()}
    if any(hits.values()):
        counts = ", ".join(f"{len(v)} {k}" for k, v in hits.items())
        examples = [t[:80] for v in hits.values() for t in v][:5]
        raise DataLeakError(f"evaluation texts occur in the training data ({counts}); examples: {examples}. "
                            "Drop them with remove_overlap(train, eval_task).")


def remove_overlap(train: ParallelTable, eval_task,
                   candidate_mode: str = "sentence+context") -> tuple[ParallelTable, int]:
    """Drop every item with any text (any language) that :func:`check_no_overlap` flags.

    Returns ``(table, dropped)``; raises ValueError when nothing (or no item of some language) is left.
    """
    leaked = set().union(*_eval_texts(eval_task, candidate_mode).values())
    contexts = candidate_mode == "sentence+context"
    norm: dict[str, str] = {}

    def bad(text: str) -> bool:
        if text not in norm:
            norm[text] = normalize_text(text)
        return norm[text] in leaked

    keep = np.ones(len(train), dtype=bool)
    for i in range(len(train)):
        for lang in train.languages:
            texts = [] if train.queries[lang][i] is None else [train.queries[lang][i]]
            for p in [train.positives[lang][i], *train.hard_negatives[lang][i]]:
                if p is not None:
                    texts.extend(_passage_texts(p, contexts))
            if any(bad(t) for t in texts):
                keep[i] = False
                break
    dropped = int((~keep).sum())
    return (train if dropped == 0 else train.subset(keep)), dropped


# --------------------------------------------------------------------------------------------------
# mMARCO
# --------------------------------------------------------------------------------------------------

MMARCO_REPO = "unicamp-dl/mmarco"
#: ISO 639-1 code -> mMARCO's language name (the Google-translated v2 release plus the English original).
MMARCO_LANGUAGES = {"ar": "arabic", "de": "german", "en": "english", "es": "spanish", "fr": "french",
                    "hi": "hindi", "id": "indonesian", "it": "italian", "ja": "japanese", "nl": "dutch",
                    "pt": "portuguese", "ru": "russian", "vi": "vietnamese", "zh": "chinese"}


def _mmarco_file(filename: str, root: Path | None) -> Path:
    if root is not None:
        return root / filename
    from huggingface_hub import hf_hub_download  # only for users with a network

    return Path(hf_hub_download(repo_id=MMARCO_REPO, repo_type="dataset", filename=filename))


def _tsv(path: Path, n_fields: int) -> Iterator[list[str]]:
    """Rows of an id file (triples, qrels), streamed; a malformed line is an error."""
    with open(path, encoding="utf-8", newline="\n") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) != n_fields:
                raise ValueError(f"{path}:{lineno}: expected {n_fields} tab-separated fields, got {len(fields)}")
            yield [x.strip() for x in fields]


def _id_rows(path: Path, split: str) -> Iterator[tuple[str, str, str | None]]:
    """(qid, positive pid, negative pid or None) from the training triples or the dev qrels."""
    if split == "train":
        for qid, pos, neg in _tsv(path, 3):
            yield qid, pos, neg
    else:
        for qid, _, pid, _rel in _tsv(path, 4):
            yield qid, pid, None


def _select_items(rows: Iterable[tuple[str, str, str | None]], max_items: int | None, n_neg: int,
                  sample: bool, seed: int) -> dict[str, tuple[str, list[str]]]:
    """qid -> (first positive, up to n_neg distinct negatives): the first `max_items` distinct qids, or a
    seeded uniform sample of them (bottom-k of a seeded hash, one streaming pass, memory O(max_items))."""
    def priority(qid: str) -> int:
        return int.from_bytes(hashlib.blake2b(f"{seed}\t{qid}".encode(), digest_size=8).digest(), "big")

    sample = sample and max_items is not None
    items: dict[str, tuple[str, list[str]]] = {}
    heap: list[tuple[int, str]] = []  # (-priority, qid): the sample's largest priority on top
    needing = 0  # kept items still short of negatives (first-N mode stops once none are)
    for qid, pos, neg in rows:
        if qid not in items:
            if sample:
                pr = priority(qid)
                if len(heap) < max_items:
                    heapq.heappush(heap, (-pr, qid))
                elif pr < -heap[0][0]:
                    del items[heapq.heapreplace(heap, (-pr, qid))[1]]
                else:
                    continue
            elif max_items is not None and len(items) >= max_items:
                if needing == 0:
                    break
                continue
            items[qid] = (pos, [])
            needing += n_neg > 0
        first_pos, negs = items[qid]
        if neg is not None and len(negs) < n_neg and neg != first_pos and neg not in negs:
            negs.append(neg)
            needing -= len(negs) == n_neg
    return items


def _read_texts(path: Path, wanted: set[str]) -> dict[str, str]:
    """id -> text ("id\\ttext" lines) for the wanted ids, streaming the file (collections are several GB).

    Only "\\n" ends a line (translated text may hold a stray "\\r"); the first line of an id wins; lines
    without a tab (text broken by a newline) and empty texts are skipped, so the id reads as missing.
    """
    out: dict[str, str] = {}
    with open(path, encoding="utf-8", newline="\n") as f:
        for line in f:
            key, tab, text = line.rstrip("\r\n").partition("\t")
            key = key.strip()
            if tab and key in wanted and key not in out and text.strip():
                out[key] = text
    return out


def load_mmarco(languages: Sequence[str], max_items: int | None = None, root: str | Path | None = None,
                split: str = "train", seed: int = 0, n_hard_negatives: int = 1,
                sample: bool = False) -> ParallelTable:
    """mMARCO (Hugging Face dataset ``unicamp-dl/mmarco``) as a parallel table; item = MS MARCO query id.

    ``split="train"``: items from ``data/triples.train.ids.small.tsv`` (qid, positive pid, BM25 negative
    pid); the positive is the qid's first triple's, the hard negatives up to `n_hard_negatives` distinct
    negatives of its triples. ``split="dev"``: items from ``data/qrels.dev.small.tsv``, no negatives.
    Texts per language come from ``data/google/queries/{split}/{name}_queries.{split}.tsv`` and
    ``data/google/collections/{name}_collection.tsv`` (``name`` from :data:`MMARCO_LANGUAGES`); an id
    missing from a language's file leaves that item unavailable in that language.

    max_items: the first `max_items` distinct query ids of the id file (None: all), or with `sample` a
        uniform sample of them fixed by `seed` (one pass over the whole file).
    root: a local folder with the repository's layout (``root/data/...``); None downloads the files with
        ``huggingface_hub.hf_hub_download`` (collections are 3-8 GB per language).
    The collections are streamed and only the needed passages kept; :meth:`ParallelTable.save` the result.
    """
    _check_language_list(languages, MMARCO_LANGUAGES, "mMARCO")
    if split not in ("train", "dev"):
        raise ValueError(f"unknown split {split!r}; valid: 'train', 'dev'")
    if max_items is not None and _check_count("max_items", max_items) == 0:
        raise ValueError("max_items must be positive or None")
    n_neg = _check_count("n_hard_negatives", n_hard_negatives) if split == "train" else 0
    _check_count("seed", seed)
    root = None if root is None else Path(root)
    names = ["data/triples.train.ids.small.tsv" if split == "train" else "data/qrels.dev.small.tsv"]
    for lang in languages:
        name = MMARCO_LANGUAGES[lang]
        names += [f"data/google/queries/{split}/{name}_queries.{split}.tsv",
                  f"data/google/collections/{name}_collection.tsv"]
    if root is not None:
        missing = [n for n in names if not (root / n).is_file()]
        if missing:
            raise FileNotFoundError(f"mMARCO root {str(root)!r} lacks {len(missing)} file(s): {missing}")
    files = [_mmarco_file(n, root) for n in names]

    items = _select_items(_id_rows(files[0], split), max_items, n_neg, sample, seed)
    ids = list(items)
    pids = {p for pos, negs in items.values() for p in (pos, *negs)}
    queries, positives, negatives = {}, {}, {}
    for j, lang in enumerate(languages):
        qtext = _read_texts(files[1 + 2 * j], set(ids))
        ptext = _read_texts(files[2 + 2 * j], pids)
        queries[lang] = [qtext.get(q) for q in ids]
        positives[lang] = [ptext.get(items[q][0]) for q in ids]
        negatives[lang] = [[ptext[p] for p in items[q][1] if p in ptext] for q in ids]
    return ParallelTable(ids, list(languages), queries, positives, negatives)
