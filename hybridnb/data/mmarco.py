"""mMARCO (Bonifacio et al. 2021, parallel MS MARCO in 14 languages) as a parallel training table.

Split out of :mod:`hybridnb.data.train_data` (which re-exports :func:`load_mmarco` and :data:`MMARCO_LANGUAGES`)
because reading mMARCO is its own job: stream multi-GB id and text files, keep only the needed passages.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from hybridnb.data.languages import check_languages
from hybridnb.data.parallel_table import ParallelTable, _check_count

__all__ = ["MMARCO_LANGUAGES", "load_mmarco"]

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
    languages = check_languages(languages, MMARCO_LANGUAGES, "mMARCO")
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
