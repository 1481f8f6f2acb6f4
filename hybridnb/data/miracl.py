"""MIRACL dev (Zhang et al. 2023): queries, relevance judgements and the passage corpus of each language, fetched
once from the Hugging Face hub or read from a local copy, then cached as Arrow so every later use is offline.

What the paper evaluates (its Tables 12-13): zero-shot *monolingual* retrieval on MIRACL's dev split, each
language's queries against that language's Wikipedia passages, scored by nDCG@10 and Recall@100
(:mod:`hybridnb.evaluation.trec_metrics`), in 15 of MIRACL's 18 languages (:data:`PAPER_LANGUAGES`; not en, de,
yo).

**The relevance judgements.** MIRACL's qrels are graded 0/1 by native speakers over a pool of passages per
query: 1 = relevant, 0 = judged not relevant; every other passage is unjudged (counted as not relevant by
trec_eval, like 0). The dev split's qrels are the file ``qrels.miracl-v1.0-<lang>-dev.tsv`` (TREC format
``qid Q0 docid rel``). The hub's ``miracl/miracl`` dev rows (``query_id, query, positive_passages,
negative_passages``) are built from exactly that file: ``positive_passages`` are the rel = 1 passages,
``negative_passages`` the rel = 0 ones (``miracl.py`` on the hub). So both shapes give the same qrels here:
positives -> 1, negatives -> 0. A query with no relevant passage has no defined nDCG or recall; it is dropped
and counted (``meta["dropped_queries"]``; MIRACL's dev queries all have one). Judged passages that are not in
the corpus stay in the qrels, as in MIRACL's official evaluation (``pyserini.eval.trec_eval`` on the qrels
file); how many there are is recorded (``meta["judged_not_in_corpus"]``, 0 for MIRACL).

**From the hub** (network once). Both hub repos (``miracl/miracl``: topics and qrels, gated: accept its terms
on the dataset page and log in with ``huggingface-cli login`` or ``HF_TOKEN``; ``miracl/miracl-corpus``: the
passages) are built by loading *scripts*, which ``datasets`` >= 4 no longer runs (``load_dataset("miracl/miracl",
lang)`` raises "Dataset scripts are no longer supported"). So the very files those scripts read are used:
topics and qrels through ``huggingface_hub.hf_hub_download``, and the corpus (``docs-*.jsonl.gz``, up to 66
files of ~80 MB per language) through ``datasets.load_dataset("json", ..., streaming=True)`` at the repo's
resolved commit, written row batch by row batch into an Arrow file: the corpus is never held in memory.

**A local copy** (``miracl_local`` in a profile, or the environment variable ``HYBRIDNB_MIRACL_LOCAL``), one of
two layouts under its root:

* per language, ``<root>/<lang>/``: the corpus as ``corpus.jsonl``, ``corpus.jsonl.gz`` or a folder
  ``corpus/`` of ``*.jsonl[.gz]`` files (rows ``{"docid", "title", "text"}``), and the dev queries either as
  ``dev.jsonl`` (the hub's dev rows: ``query_id, query, positive_passages, negative_passages``, each passage
  ``{"docid", ...}``) or as ``topics.tsv`` (``qid<TAB>query``) + ``qrels.tsv`` (TREC ``qid Q0 docid rel``);
* the two hub repos downloaded as they are into the same root
  (``huggingface-cli download miracl/miracl --repo-type dataset --local-dir <root>``, the same for
  ``miracl/miracl-corpus``): ``<root>/miracl-v1.0-<lang>/{topics,qrels}/...-dev.tsv`` and
  ``<root>/miracl-corpus-v1.0-<lang>/docs-*.jsonl.gz``.

A relative root is read from the checkout's root (``tests/data/miracl``, the tiny set of the ci profile).

**The cache**: ``cache_root()/miracl/<source>/<lang>/`` with ``corpus.arrow`` (memory-mapped by
``datasets.Dataset.from_file``), ``dev.json`` (queries and qrels, kilobytes) and ``meta.json`` (written last:
counts, the corpus fingerprint, where it came from), then ``manifest.json`` (the sha256 of each,
:mod:`hybridnb.file_hashes`), built in a temporary folder and renamed when complete. Every load checks the
folder against its manifest first and builds it again when a file differs (or when it has none: a cache made
before manifests). A local copy's cache is rebuilt when one of its files changes (size or modification time).

**Errors before long work**: :func:`check_available` looks at every language first: a missing local file, or
a language neither cached nor reachable (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` set, or no network)
raises :class:`MiraclUnavailable` naming the dataset, the language and how to provide a local copy, before any
corpus is read or encoded.
"""

from __future__ import annotations

import array
import gzip
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from hybridnb import file_hashes, reporting
from hybridnb.data.languages import check_languages
from hybridnb.paths import cache_root, repo_root

__all__ = ["MIRACL_LANGUAGES", "PAPER_LANGUAGES", "QUERIES_REPO", "CORPUS_REPO", "LOCAL_ENV", "PASSAGE_FORMATS",
           "MiraclUnavailable", "MiraclLanguage", "Passages", "check_passage_format", "local_root",
           "check_available", "load_language", "load", "read_qrels", "read_topics", "read_dev_rows",
           "find_unreadable_line", "hub_offline", "cache_dir"]

#: MIRACL's 18 languages (16 "known" + the surprise languages de and yo), as the hub's configs name them
MIRACL_LANGUAGES = ("ar", "bn", "en", "es", "fa", "fi", "fr", "hi", "id", "ja", "ko", "ru", "sw", "te", "th", "zh",
                    "de", "yo")
#: the 15 languages of the paper's Tables 12-13, in its order (hybridnb.studies.paper_numbers.MIRACL_LANGUAGES)
PAPER_LANGUAGES = ("sw", "bn", "hi", "ko", "th", "te", "fi", "ja", "es", "fr", "ru", "zh", "fa", "ar", "id")
QUERIES_REPO = "miracl/miracl"
CORPUS_REPO = "miracl/miracl-corpus"
LOCAL_ENV = "HYBRIDNB_MIRACL_LOCAL"
#: how a passage becomes encoder input: "title text" (E5, mContriever and BM25 on MIRACL: one string, the
#: encoder adds its passage prefix), "pair" (DPR / mDPR style: (title, text) as a tokenizer text pair, the text
#: cut first), "text" (the passage text alone)
PASSAGE_FORMATS = ("title text", "pair", "text")
SCHEMA = "hybridnb.miracl-cache/1"
BATCH_ROWS = 10_000  # corpus rows per Arrow record batch while caching


def _topics_file(lang: str) -> str:
    return f"miracl-v1.0-{lang}/topics/topics.miracl-v1.0-{lang}-dev.tsv"


def _qrels_file(lang: str) -> str:
    return f"miracl-v1.0-{lang}/qrels/qrels.miracl-v1.0-{lang}-dev.tsv"


def _corpus_pattern(lang: str) -> str:
    return f"miracl-corpus-v1.0-{lang}/docs-*.jsonl.gz"


class MiraclUnavailable(FileNotFoundError):
    """MIRACL data for a language can be neither read from the cache, nor from a local copy, nor fetched."""


def _how_to_provide(lang: str) -> str:
    return (f"provide a local copy with `miracl_local: <root>` in the profile (or {LOCAL_ENV}=<root>) laid out as "
            f"<root>/{lang}/corpus.jsonl[.gz] (or corpus/*.jsonl.gz) with <root>/{lang}/dev.jsonl (the hub's dev rows) "
            f"or <root>/{lang}/topics.tsv + qrels.tsv, or as the two hub repos downloaded into <root> "
            f"(huggingface-cli download {QUERIES_REPO} --repo-type dataset --local-dir <root>; the same for "
            f"{CORPUS_REPO}); see docs/miracl.md")


def check_passage_format(fmt: str) -> str:
    if fmt not in PASSAGE_FORMATS:
        raise ValueError(f"miracl_passage_format must be one of {', '.join(map(repr, PASSAGE_FORMATS))}, got {fmt!r}")
    return fmt


def hub_offline() -> bool:
    """Whether the Hugging Face libraries are told to stay offline (then nothing is fetched, and nothing tried)."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


def local_root(setting: str | os.PathLike | None = None) -> Path | None:
    """The local copy's root: the profile's ``miracl_local``, else ``HYBRIDNB_MIRACL_LOCAL``, else None (the hub).
    A relative path is read from the checkout's root when it exists there, else from the working directory."""
    value = setting if setting not in (None, "") else os.environ.get(LOCAL_ENV, "").strip() or None
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_absolute():
        root = repo_root()
        path = (root / path) if root is not None and (root / path).exists() else Path.cwd() / path
    if not path.is_dir():
        raise MiraclUnavailable(f"the MIRACL local copy {path} (miracl_local / {LOCAL_ENV}) is not a folder")
    return path.resolve()


# ---- reading the files ----------------------------------------------------------------------------------


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _json_line(line: str, path: Path, n: int) -> dict:
    """One JSON object of a JSON-lines file; a line that is not one is an error naming the file and the line."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: line {n} is not JSON ({e.msg}, column {e.colno}): {line.strip()[:80]!r}") from None
    if not isinstance(row, dict):
        raise ValueError(f"{path}: line {n} is {type(row).__name__}, not a JSON object") from None
    return row


def find_unreadable_line(files: Sequence[Path]) -> str | None:
    """Where the first of ``files`` (JSON lines, plain or gzip) stops being readable: ``"<file>: line <n> is not
    JSON (...)"`` or ``"<file> is truncated (...)"``; None when every line of every file reads. Run when the
    corpus reader failed, to name the place (its own errors name neither the file nor the line)."""
    import zlib

    for path in files:
        n = 0
        try:
            with _open_text(Path(path)) as f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        _json_line(line, path, n)
        except ValueError as e:
            if isinstance(e, UnicodeDecodeError):
                return f"{path}: line {n + 1} is not UTF-8 text"
            return str(e)
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            return f"{path} is truncated or damaged after line {n} ({type(e).__name__}: {e})"
    return None


def read_topics(path: Path) -> list[tuple[str, str]]:
    """``qid<TAB>query`` lines (MIRACL's topics files), in file order; a repeated qid is an error."""
    out, seen = [], set()
    with _open_text(Path(path)) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            qid, tab, query = line.partition("\t")
            if not tab or not qid.strip():
                raise ValueError(f"{path}: line {n} is not 'qid<TAB>query': {line[:80]!r}")
            if qid in seen:
                raise ValueError(f"{path}: query id {qid!r} given twice (line {n})")
            seen.add(qid)
            out.append((qid.strip(), query.strip()))
    return out


def read_queries_jsonl(path: Path) -> list[tuple[str, str]]:
    """``{"query_id", "query"}`` rows (one JSON object per line)."""
    out = []
    with _open_text(Path(path)) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                row = _json_line(line, path, n)
                try:
                    out.append((str(row["query_id"]), str(row["query"])))
                except KeyError as e:
                    raise ValueError(f"{path}: line {n} lacks {e}; rows are {{'query_id', 'query'}}") from None
    return out


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """TREC qrels ``qid Q0 docid rel`` (whitespace-separated) -> ``{qid: {docid: rel}}``; rel an integer grade."""
    qrels: dict[str, dict[str, int]] = {}
    with _open_text(Path(path)) as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 4:
                raise ValueError(f"{path}: line {n} is not 'qid Q0 docid rel': {line.strip()[:80]!r}")
            qid, _, docid, rel = parts
            if docid in qrels.get(qid, {}):
                raise ValueError(f"{path}: line {n} judges passage {docid!r} for query {qid!r} a second time")
            try:
                qrels.setdefault(qid, {})[docid] = int(rel)
            except ValueError:
                raise ValueError(f"{path}: line {n}: relevance {rel!r} is not an integer") from None
    return qrels


def read_dev_rows(path: Path) -> tuple[list[tuple[str, str]], dict[str, dict[str, int]]]:
    """The hub's dev rows (``query_id, query, positive_passages, negative_passages``) -> queries and qrels:
    positive passages are grade 1, negative passages grade 0 (how ``miracl.py`` built them from the qrels file)."""
    queries, qrels = [], {}
    with _open_text(Path(path)) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = _json_line(line, path, n)
            missing = [k for k in ("query_id", "query", "positive_passages", "negative_passages") if k not in row]
            if missing:
                raise ValueError(f"{path}: line {n} lacks {missing}; rows are the hub's dev rows "
                                 "(query_id, query, positive_passages, negative_passages)")
            qid = str(row["query_id"])
            if qid in qrels:
                raise ValueError(f"{path}: query id {qid!r} given twice (line {n})")
            queries.append((qid, str(row["query"])))
            judged = {str(p["docid"]): 0 for p in row["negative_passages"]}
            judged.update({str(p["docid"]): 1 for p in row["positive_passages"]})
            qrels[qid] = judged
    return queries, qrels


# ---- where a language's files are -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Files:
    """One language's source: a local copy (paths) or the hub (repo file names)."""

    kind: str                           # "local" | "hub"
    corpus: tuple[Path, ...] = ()       # local corpus files
    dev: Path | None = None             # local dev.jsonl
    topics: Path | None = None          # local topics (tsv or jsonl)
    qrels: Path | None = None           # local qrels.tsv

    def stamp(self) -> list:
        """Name, size and modification time of every local file: what makes a cached copy stale."""
        files = [*self.corpus, *(p for p in (self.dev, self.topics, self.qrels) if p is not None)]
        return [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def _local_files(root: Path, lang: str) -> _Files:
    here, repo_c = root / lang, root / f"miracl-corpus-v1.0-{lang}"
    corpus: list[Path] = []
    for candidate in (here / "corpus.jsonl", here / "corpus.jsonl.gz"):
        if candidate.is_file():
            corpus = [candidate]
    if not corpus and (here / "corpus").is_dir():
        corpus = sorted([*(here / "corpus").glob("*.jsonl"), *(here / "corpus").glob("*.jsonl.gz")])
    if not corpus and repo_c.is_dir():
        corpus = sorted(repo_c.glob("docs-*.jsonl.gz"), key=lambda p: int(p.name.split("-")[1].split(".")[0]))
    dev = next((p for p in (here / "dev.jsonl", here / "dev.jsonl.gz") if p.is_file()), None)
    topics = next((p for p in (here / "topics.tsv", here / "queries.jsonl", root / _topics_file(lang)) if p.is_file()),
                  None)
    qrels = next((p for p in (here / "qrels.tsv", root / _qrels_file(lang)) if p.is_file()), None)
    problems = []
    if not corpus:
        problems.append("no corpus (corpus.jsonl[.gz], corpus/*.jsonl[.gz] or "
                        f"miracl-corpus-v1.0-{lang}/docs-*.jsonl.gz)")
    if dev is None and (topics is None or qrels is None):
        problems.append("no dev queries (dev.jsonl, or topics.tsv / queries.jsonl with qrels.tsv, or "
                        f"miracl-v1.0-{lang}/topics and qrels)")
    if problems:
        raise MiraclUnavailable(f"MIRACL dev, language {lang!r}: the local copy {root} has " + " and ".join(problems)
                                + "; " + _how_to_provide(lang))
    return _Files("local", tuple(corpus), dev, None if dev else topics, None if dev else qrels)


def cache_dir(lang: str, root: Path | None) -> Path:
    """Where a language's Arrow cache lives: per local copy (by its resolved path) or the hub's."""
    source = "hub" if root is None else "local-" + hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return cache_root() / "miracl" / source / lang


def _cached_meta(folder: Path) -> dict | None:
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    ok = meta.get("schema") == SCHEMA and all((folder / f).is_file() for f in ("corpus.arrow", "dev.json"))
    return meta if ok else None


def check_available(languages: Sequence[str] | None, local: str | os.PathLike | None = None) -> dict[str, str]:
    """Per language where its data will come from: ``cached``, ``local`` or ``hub``. Checks every language
    before anything is read, so a missing file or an offline machine fails in a second, naming the dataset, the
    language and how to provide a local copy (:class:`MiraclUnavailable`). Nothing is downloaded here."""
    langs = check_languages(languages, MIRACL_LANGUAGES, "MIRACL")
    root = local_root(local)
    where = {}
    for lang in langs:
        folder = cache_dir(lang, root)
        meta = _cached_meta(folder)
        if root is not None:
            files = _local_files(root, lang)  # raises naming what is missing
            where[lang] = "cached" if meta is not None and meta.get("source", {}).get("files") == files.stamp() \
                else "local"
        elif meta is not None:
            where[lang] = "cached"
        elif hub_offline():
            raise MiraclUnavailable(
                f"MIRACL dev, language {lang!r} ({QUERIES_REPO} topics and qrels, {CORPUS_REPO} passages) is not "
                f"in the cache ({folder}) and the Hugging Face hub is switched off here (HF_HUB_OFFLINE / "
                f"HF_DATASETS_OFFLINE): run once with a network, or {_how_to_provide(lang)}")
        else:
            where[lang] = "hub"
    return where


# ---- the cached language --------------------------------------------------------------------------------


class Passages:
    """A corpus as encoder inputs, sliced by row range (``passages[a:b]``), read from the memory-mapped Arrow
    table slice by slice: ``"title text"`` strings, ``(title, text)`` pairs or the text alone."""

    def __init__(self, table, fmt: str = "title text"):
        self.table, self.fmt = table, check_passage_format(fmt)

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, rows: slice) -> list:
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError("Passages are read by contiguous row ranges: passages[start:stop]")
        start, stop, _ = rows.indices(len(self))
        part = self.table.slice(start, max(0, stop - start))
        titles, texts = part.column("title").to_pylist(), part.column("text").to_pylist()
        if self.fmt == "text":
            return [t or "" for t in texts]
        if self.fmt == "pair":
            return [(ti or "", t or "") for ti, t in zip(titles, texts)]
        return [f"{ti} {t}" if ti else (t or "") for ti, t in zip(titles, texts)]


@dataclass
class MiraclLanguage:
    """One language of MIRACL dev: the queries (only those with a relevant passage), their qrels, the corpus.

    ``corpus`` is a memory-mapped ``datasets.Dataset`` (``docid``, ``title``, ``text``); ``meta`` holds the
    counts, the corpus fingerprint (sha256 of every row in order) and where the data came from."""

    lang: str
    query_ids: list[str]
    queries: list[str]
    qrels: dict[str, dict[str, int]]
    corpus: Any
    meta: dict = field(default_factory=dict)

    @property
    def n_passages(self) -> int:
        return len(self.corpus)

    @property
    def fingerprint(self) -> str:
        return self.meta["corpus_sha256"]

    def passages(self, fmt: str = "title text") -> Passages:
        return Passages(self.corpus.data.table if hasattr(self.corpus.data, "table") else self.corpus.data, fmt)

    def docids(self, rows: np.ndarray) -> list[str]:
        """The docids of corpus rows (any shape's flat order); a row of -1 (no hit) gives ``""``."""
        import pyarrow as pa

        rows = np.asarray(rows, dtype=np.int64).ravel()
        column = self.corpus.data.column("docid")
        got = column.take(pa.array(np.where(rows < 0, 0, rows))).to_pylist()
        return [d if r >= 0 else "" for d, r in zip(got, rows)]


def _corpus_rows(files: _Files | None, lang: str) -> tuple[Iterator[dict], dict]:
    """The corpus rows streamed through ``datasets`` (local files or the hub's at its resolved commit)."""
    import datasets

    features = datasets.Features({k: datasets.Value("string") for k in ("docid", "title", "text")})
    if files is not None:
        data_files, record = [str(p) for p in files.corpus], {}
    else:
        from huggingface_hub import HfApi

        try:
            revision = HfApi().dataset_info(CORPUS_REPO).sha
        except Exception as err:  # noqa: BLE001 - any failure to reach the hub is the same problem for the user
            raise MiraclUnavailable(f"MIRACL corpus, language {lang!r}: {CORPUS_REPO} cannot be reached "
                                    f"({type(err).__name__}: {str(err)[:200]}); {_how_to_provide(lang)}") from err
        data_files = [f"hf://datasets/{CORPUS_REPO}@{revision}/{_corpus_pattern(lang)}"]
        record = {"repo": CORPUS_REPO, "revision": revision, "files": _corpus_pattern(lang)}
    stream = datasets.load_dataset("json", data_files=data_files, split="train", streaming=True, features=features)
    return iter(stream), record


def _dev_rows(files: _Files | None, lang: str) -> tuple[list[tuple[str, str]], dict[str, dict[str, int]], dict]:
    """Queries and qrels of the dev split (local files, or the hub's topics and qrels files)."""
    if files is not None:
        if files.dev is not None:
            queries, qrels = read_dev_rows(files.dev)
        else:
            topics = files.topics
            queries = read_queries_jsonl(topics) if topics.name.endswith(".jsonl") else read_topics(topics)
            qrels = read_qrels(files.qrels)
        return queries, qrels, {}
    from huggingface_hub import hf_hub_download

    got = {}
    for name, path in (("topics", _topics_file(lang)), ("qrels", _qrels_file(lang))):
        try:
            got[name] = Path(hf_hub_download(QUERIES_REPO, path, repo_type="dataset"))
        except Exception as err:  # noqa: BLE001 - offline, gated, missing: the user's fix is the same
            gated = "Gated" in type(err).__name__ or "401" in str(err) or "403" in str(err)
            hint = (f"{QUERIES_REPO} is gated: accept its terms on https://huggingface.co/datasets/{QUERIES_REPO} "
                    "and log in (huggingface-cli login, or HF_TOKEN); or ") if gated else ""
            raise MiraclUnavailable(f"MIRACL dev, language {lang!r}: cannot fetch {QUERIES_REPO}/{path} "
                                    f"({type(err).__name__}: {str(err)[:200]}); {hint}{_how_to_provide(lang)}") from err
    # the hub cache keeps the file under .../snapshots/<commit>/miracl-v1.0-<lang>/topics/<file>: record the commit
    revision = next((p for p in got["topics"].parts[::-1] if len(p) == 40 and all(c in "0123456789abcdef" for c in p)),
                    None)
    return read_topics(got["topics"]), read_qrels(got["qrels"]), {"repo": QUERIES_REPO, "revision": revision,
                                                                  "files": [_topics_file(lang), _qrels_file(lang)]}


def check_dev(queries: list[tuple[str, str]], qrels: dict[str, dict[str, int]], where: str) -> None:
    """The dev queries and their qrels agree: no empty query, no judgement of a query that is not in the
    topics (a qrels file of another split or language would otherwise be scored as misses, silently)."""
    empty = [q for q, text in queries if not text.strip()]
    if empty:
        raise ValueError(f"{where}: query {empty[0]!r} is empty ({len(empty)} empty in all)")
    unknown = sorted(set(qrels) - {q for q, _ in queries})
    if unknown:
        raise ValueError(f"{where}: the qrels judge {len(unknown)} query id(s) the topics do not have (e.g. "
                         f"{', '.join(map(repr, unknown[:3]))}): a qrels file of another split or language?")


def _checked_rows(rows: Iterator[dict], files: _Files | None, lang: str) -> Iterator[dict]:
    """The corpus rows; when the reader fails (a bad JSON line, a truncated ``.jsonl.gz``: pyarrow's error names
    neither), one error naming the file and line (a local copy) or the hub's files and how to fetch them again."""
    try:
        yield from rows
    except Exception as err:  # noqa: BLE001 - pyarrow, datasets, gzip and zlib each raise their own
        if files is None:
            raise ValueError(f"MIRACL {lang} corpus: a file of {CORPUS_REPO} ({_corpus_pattern(lang)}) cannot be "
                             f"read ({type(err).__name__}: {str(err)[:200]}): delete its copy in the Hugging Face "
                             "cache (huggingface-cli delete-cache) and run again to fetch it anew") from err
        where = find_unreadable_line(files.corpus) or (f"{', '.join(map(str, files.corpus))} cannot be read "
                                                       f"({type(err).__name__}: {str(err)[:120]})")
        raise ValueError(f"MIRACL {lang} corpus: {where}; fix or replace the file in the local copy") from err


def _build(lang: str, files: _Files | None, target: Path, show_progress: bool) -> None:
    """Stream the corpus into ``corpus.arrow`` (batches of BATCH_ROWS rows), write dev.json, then meta.json."""
    import pyarrow as pa
    from tqdm.auto import tqdm

    queries, qrels, dev_record = _dev_rows(files, lang)  # the small files first: a gated repo fails here
    named = [str(p) for p in (files.dev, files.topics, files.qrels) if p is not None] if files is not None else []
    check_dev(queries, qrels, f"MIRACL {lang} dev" + (f" ({', '.join(named)})" if named else ""))
    rows, corpus_record = _corpus_rows(files, lang)
    seen = array.array("Q")  # 8 bytes of each docid's blake2b: a duplicate found in 8 B a passage, not a set of str
    judged = {d for judgements in qrels.values() for d in judgements}
    found: set[str] = set()
    digest = hashlib.sha256()
    schema = pa.schema([(k, pa.string()) for k in ("docid", "title", "text")])
    n = 0
    with reporting.atomic_dir(target) as tmp:
        with pa.OSFile(str(tmp / "corpus.arrow"), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer, \
                tqdm(desc=f"MIRACL {lang} corpus", unit="passage", disable=not show_progress) as bar:
            batch: dict[str, list] = {"docid": [], "title": [], "text": []}

            def flush():
                if batch["docid"]:
                    writer.write_batch(pa.record_batch([pa.array(batch[k], pa.string()) for k in batch],
                                                       schema=schema))
                    bar.update(len(batch["docid"]))
                    for k in batch:
                        batch[k] = []

            for row in _checked_rows(rows, files, lang):
                docid, title, text = (str(row.get(k) or "") for k in ("docid", "title", "text"))
                if not docid:
                    raise ValueError(f"MIRACL {lang} corpus: passage {n} has no docid")
                digest.update(f"{docid}\t{title}\t{text}\n".encode())
                seen.append(int.from_bytes(hashlib.blake2b(docid.encode(), digest_size=8).digest(), "little"))
                if docid in judged:
                    found.add(docid)
                for k, v in (("docid", docid), ("title", title), ("text", text)):
                    batch[k].append(v)
                n += 1
                if len(batch["docid"]) >= BATCH_ROWS:
                    flush()
            flush()
        if n == 0:
            raise ValueError(f"MIRACL {lang}: the corpus is empty")
        keys = np.frombuffer(seen, dtype=np.uint64)
        ordered = np.sort(keys)
        if (ordered[1:] == ordered[:-1]).any():  # a passage given twice would be retrieved and counted twice
            twice = set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())
            rows_twice = np.flatnonzero(np.isin(keys, list(twice)))
            with pa.memory_map(str(tmp / "corpus.arrow")) as source:
                ids = pa.ipc.open_stream(source).read_all().column("docid")
                name = ids[int(rows_twice[0])].as_py()
            raise ValueError(f"MIRACL {lang} corpus: passage id {name!r} is given more than once "
                             f"({len(rows_twice)} rows share {len(twice)} id(s)); fix the corpus files")
        kept = [(q, t) for q, t in queries if any(r >= 1 for r in qrels.get(q, {}).values())]
        dropped = len(queries) - len(kept)
        if not kept:
            raise ValueError(f"MIRACL {lang}: no dev query has a relevant passage (grade >= 1) in the qrels")
        reporting.write_json(tmp / "dev.json", {"queries": kept, "qrels": {q: qrels[q] for q, _ in kept}})
        source = ({"kind": "local", "files": files.stamp()} if files is not None else
                  {"kind": "hub", "queries": dev_record, "corpus": corpus_record})
        reporting.write_json(tmp / "meta.json", {
            "schema": SCHEMA, "lang": lang, "n_passages": n, "n_queries": len(kept), "dropped_queries": dropped,
            "judged_not_in_corpus": len({d for q, _ in kept for d in qrels[q]} - found),
            "corpus_sha256": digest.hexdigest(), "source": source})
        file_hashes.write_manifest(tmp)  # last: every file's sha256, verified before each use (load_language)


def load_language(lang: str, local: str | os.PathLike | None = None, show_progress: bool = True) -> MiraclLanguage:
    """One language of MIRACL dev from the cache, or built into the cache first (local copy or hub)."""
    import datasets

    where = check_available([lang], local)[lang]
    root = local_root(local)
    target = cache_dir(lang, root)
    if where != "cached":
        files = _local_files(root, lang) if root is not None else None
        _build(lang, files, target, show_progress)
    meta = _cached_meta(target)
    if meta is None:
        raise MiraclUnavailable(f"MIRACL {lang}: the cache {target} is incomplete; delete it and run again")
    try:
        why = file_hashes.manifest_problem(target)  # a flipped byte in a passage still parses: the hash sees it
        if why is not None:
            raise file_hashes.VerifyError(why)
        dev = json.loads((target / "dev.json").read_text(encoding="utf-8"))
        corpus = datasets.Dataset.from_file(str(target / "corpus.arrow"))
        if len(corpus) != meta["n_passages"]:
            raise ValueError(f"{len(corpus)} passages, meta.json says {meta['n_passages']}")
    except Exception as err:  # noqa: BLE001 - a cut Arrow file fails in pyarrow, a cut JSON in json
        if root is None and hub_offline():
            raise MiraclUnavailable(f"MIRACL {lang}: the cache {target} is damaged ({type(err).__name__}: "
                                    f"{str(err)[:120]}) and the hub is switched off here: delete the folder and run "
                                    "once with a network") from err
        print(f"[hybridnb] MIRACL {lang}: the cache {target} is damaged ({type(err).__name__}: {str(err)[:240]}); "
              "building it again", flush=True)
        _build(lang, _local_files(root, lang) if root is not None else None, target, show_progress)
        meta = _cached_meta(target)
        file_hashes.check_manifest(target, "delete the folder and run again")  # just written: a failure is the disk
        dev = json.loads((target / "dev.json").read_text(encoding="utf-8"))
        corpus = datasets.Dataset.from_file(str(target / "corpus.arrow"))
    return MiraclLanguage(lang, [q for q, _ in dev["queries"]], [t for _, t in dev["queries"]], dev["qrels"], corpus,
                          meta)


def load(languages: Sequence[str] | None, local: str | os.PathLike | None = None,
         show_progress: bool = True) -> dict[str, MiraclLanguage]:
    """Every language of ``languages`` (checked all first: :func:`check_available`), in the given order."""
    langs = list(check_available(languages, local))
    return {lang: load_language(lang, local, show_progress) for lang in langs}
