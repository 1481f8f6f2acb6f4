"""LAReQA retrieval tasks (XQuAD-R, MLQA-R), built exactly as LAReQA (Roy et al., 2020) defines them.

The raw files are parsed by :mod:`hybridnb.data.lareqa_files` (each question's *answer sentence* is the
sentence of its paragraph whose span contains ``answers[0].answer_start``); the task built from them (a
:class:`~hybridnb.data.retrieval_task.RetrievalTask`):

* **Questions**: every question of every selected language (``qid = "lang/id"``).
* **Candidates**: every sentence of every paragraph of every selected language, without de-duplication
  (XQuAD-R: 13,014; MLQA-R: 20,534). A candidate's text is the entry of `sentences` (not the `context`
  slice, which differs for 2 Turkish sentences); its paragraph is kept as context, since LAReQA encodes
  the answer sentence together with its paragraph.
* **Relevant set** of a question: every candidate, in any selected language, that is the answer sentence
  of some question with the same `id` (question ids are shared by the language versions of a question).
  In XQuAD-R this is exactly one sentence per language (11); in MLQA-R 2 to 4.

:func:`load_task` fetches the raw files (:mod:`hybridnb.data.sources`), builds the task and caches it under
``cache_root()/processed/``; :func:`build_task` builds one from explicit files without caching.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from hybridnb.data import sources
from hybridnb.data.languages import check_languages
from hybridnb.data.lareqa_files import Paragraph, RawQuestion, parse_file
from hybridnb.paths import cache_root
from hybridnb.data.retrieval_task import RetrievalTask

__all__ = ["TASK_LANGUAGES", "RetrievalTask", "RawQuestion", "Paragraph", "parse_file", "build_task",
           "load_task", "processed_dir", "language_stats"]

#: Bump when the processed layout or the task definition changes (invalidates processed caches).
FORMAT_VERSION = 1

TASK_LANGUAGES: dict[str, tuple[str, ...]] = {
    "xquad-r": sources.XQUAD_R_LANGUAGES,
    "mlqa-r": sources.MLQA_R_LANGUAGES,
}


def _select_ids(parsed: Mapping[str, list[Paragraph]], max_ids: int) -> dict[str, list[Paragraph]]:
    """Keep the first `max_ids` ids (order of first appearance in en, else the first language)."""
    ref = "en" if "en" in parsed else next(iter(parsed))
    order: dict[str, None] = {}
    for para in parsed[ref]:
        for q in para.questions:
            order.setdefault(q.id)
    kept = set(list(order)[:max_ids])
    out: dict[str, list[Paragraph]] = {}
    for lang, paras in parsed.items():
        out[lang] = []
        for para in paras:
            qs = [q for q in para.questions if q.id in kept]
            if qs:
                out[lang].append(Paragraph(para.key, para.context, para.sentences, qs))
    return out


def _tables(parsed: Mapping[str, list[Paragraph]]):
    """Column dicts for questions and candidates, and the CSR relevance arrays."""
    q: dict[str, list] = {"qid": [], "id": [], "lang": [], "text": [], "answer_cid": []}
    c: dict[str, list] = {"cid": [], "lang": [], "sentence": [], "context": [], "paragraph": [],
                          "sentence_index": []}
    for lang, paras in parsed.items():
        for para in paras:
            first = len(c["cid"])
            for si, sentence in enumerate(para.sentences):
                c["cid"].append(first + si)
                c["lang"].append(lang)
                c["sentence"].append(sentence)
                c["context"].append(para.context)
                c["paragraph"].append(para.key)
                c["sentence_index"].append(si)
            for rq in para.questions:
                q["qid"].append(f"{lang}/{rq.id}")
                q["id"].append(rq.id)
                q["lang"].append(lang)
                q["text"].append(rq.text)
                q["answer_cid"].append(first + rq.answer_sentence)

    answers_of_id: dict[str, set[int]] = defaultdict(set)
    for qid, cid in zip(q["id"], q["answer_cid"]):
        answers_of_id[qid].add(cid)
    rel = [sorted(answers_of_id[qid]) for qid in q["id"]]
    indptr = np.zeros(len(rel) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(r) for r in rel])
    indices = np.fromiter((cid for r in rel for cid in r), dtype=np.int64, count=int(indptr[-1]))
    return q, c, indptr, indices


_INT_COLUMNS = {"answer_cid", "cid", "sentence_index"}


def _datasets(q: dict, c: dict):
    import datasets

    def features(columns: dict) -> datasets.Features:
        return datasets.Features({k: datasets.Value("int64" if k in _INT_COLUMNS else "string")
                                  for k in columns})

    return (datasets.Dataset.from_dict(q, features=features(q)),
            datasets.Dataset.from_dict(c, features=features(c)))


def _check_max_ids(max_ids: int | None) -> None:
    if max_ids is not None and (not isinstance(max_ids, int) or isinstance(max_ids, bool) or max_ids < 1):
        raise ValueError(f"max_ids must be a positive int or None, got {max_ids!r}")


def build_task(name: str, files: Mapping[str, str | Path], max_ids: int | None = None) -> RetrievalTask:
    """Build a task from explicit raw files ``{lang: path}`` (in that language order), without caching.

    :func:`load_task` is the normal entry point; this one serves tests and custom data.
    """
    _check_max_ids(max_ids)
    if not files:
        raise ValueError("build_task needs at least one language file")
    parsed = {lang: parse_file(p, lang) for lang, p in files.items()}
    if max_ids is not None:
        parsed = _select_ids(parsed, max_ids)
    q, c, indptr, indices = _tables(parsed)
    questions, candidates = _datasets(q, c)
    return RetrievalTask(name, list(files), questions, candidates, indptr, indices)


def _languages(name: str, languages: Sequence[str] | None) -> list[str]:
    if name not in TASK_LANGUAGES:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASK_LANGUAGES)}")
    chosen = set(check_languages(languages, TASK_LANGUAGES[name], repr(name)))
    return [lang for lang in TASK_LANGUAGES[name] if lang in chosen]  # canonical order


def processed_dir(name: str, languages: Sequence[str] | None = None, max_ids: int | None = None) -> Path:
    """The processed-cache folder :func:`load_task` uses for these arguments (it may not exist yet)."""
    langs = _languages(name, languages)
    _check_max_ids(max_ids)
    folder = sources.DATASETS[name].folder
    key = {
        "format": FORMAT_VERSION,
        "name": name,
        "raw_sha256": {lang: sources.RAW_FILES[f"{folder}/{lang}.json"].sha256 for lang in langs},
        "languages": langs,
        "max_ids": max_ids,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return cache_root() / "processed" / f"{name}-{digest}"


def _file_hashes(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``folder`` but meta.json."""
    return {p.relative_to(folder).as_posix(): sources.sha256_file(p)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "meta.json"}


def check_processed(folder: Path) -> str | None:
    """None when the processed cache in ``folder`` holds exactly the files its meta.json lists, with their
    sha256 (a few MB: milliseconds); otherwise what is wrong. A cache written before the hashes were
    recorded counts as unverifiable, so it is rebuilt once."""
    try:
        recorded = json.loads((folder / "meta.json").read_text(encoding="utf-8")).get("files")
    except (OSError, json.JSONDecodeError) as e:
        return f"meta.json unreadable: {e}"
    if not recorded:
        return "no file hashes recorded (written by an older version)"
    actual = _file_hashes(folder)
    for rel, digest in recorded.items():
        if rel not in actual:
            return f"{rel} is missing"
        if actual[rel] != digest:
            return f"{rel} does not match its recorded sha256"
    extra = sorted(set(actual) - set(recorded))
    return f"unexpected files: {extra}" if extra else None


def _load_processed(path: Path, name: str, languages: list[str]) -> RetrievalTask:
    import datasets

    rel = np.load(path / "relevance.npz")
    return RetrievalTask(
        name, languages,
        datasets.load_from_disk(str(path / "questions")),
        datasets.load_from_disk(str(path / "candidates")),
        rel["indptr"], rel["indices"],
    )


def load_task(name: str, languages: Sequence[str] | None = None, max_ids: int | None = None) -> RetrievalTask:
    """Load the LAReQA task `name` ("xquad-r" or "mlqa-r").

    Args:
        name: "xquad-r" or "mlqa-r".
        languages: a subset of the task's languages (:data:`TASK_LANGUAGES`); None for all. The task keeps
            them in the canonical order (alphabetical), questions and candidates grouped by language.
        max_ids: for small runs: keep only the first `max_ids` question ids (in order of first appearance
            in the English file, or in the first selected language without English), all language
            versions of those questions, and every sentence of every paragraph holding a kept question;
            relevance is computed on that subset.

    Fetches and verifies the raw files first (:func:`hybridnb.data.sources.fetch`), then reuses or builds the
    processed cache ``cache_root()/processed/<name>-<hash>/`` (Arrow datasets + ``relevance.npz``).
    """
    langs = _languages(name, languages)
    _check_max_ids(max_ids)
    raw_dir = sources.fetch(name, langs)
    target = processed_dir(name, langs, max_ids)
    if (target / "meta.json").is_file():
        problem = check_processed(target)
        if problem is None:
            try:
                return _load_processed(target, name, langs)
            except Exception as e:  # noqa: BLE001 - any unreadable cache is rebuilt from the verified raw files
                problem = f"it does not load ({type(e).__name__}: {str(e)[:200]})"
        warnings.warn(f"the processed cache {target} is damaged ({problem}); rebuilding it from the raw files",
                      stacklevel=2)
    if target.exists():  # incomplete leftover or a damaged cache: rebuild
        shutil.rmtree(target)

    task = build_task(name, {lang: raw_dir / f"{lang}.json" for lang in langs}, max_ids=max_ids)
    _save_processed(task, target, {"format": FORMAT_VERSION, "name": name, "languages": langs,
                                   "max_ids": max_ids, "questions": task.num_questions,
                                   "candidates": task.num_candidates})
    return _load_processed(target, name, langs)


def _save_processed(task: RetrievalTask, target: Path, meta: dict) -> None:
    """Write the task into a temp folder beside `target`, then rename it: never a half-written cache."""
    import datasets

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    bars_were_on = not datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        task.questions.save_to_disk(str(tmp / "questions"))
        task.candidates.save_to_disk(str(tmp / "candidates"))
        np.savez(tmp / "relevance.npz", indptr=task.relevant_indptr, indices=task.relevant_indices)
        meta = {**meta, "files": _file_hashes(tmp)}  # checked on every load (check_processed)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")  # written last: marks completion
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "meta.json").is_file():  # re-raise unless a concurrent build got there first
                raise
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
        shutil.rmtree(tmp, ignore_errors=True)


def language_stats(task: RetrievalTask, total: bool = True):
    """Per-language statistics of a task as a pandas DataFrame indexed by language.

    Columns: ``questions``, ``candidates``, ``paragraphs``, ``mean_sentence_chars`` (mean candidate
    length in characters), ``mean_relevant`` (mean number of relevant candidates per question of that
    language). With `total`, a last row ``"all"`` covers the whole task.
    """
    import pandas as pd

    qlang, clang = task.question_langs, task.candidate_langs
    sent_len = np.asarray([len(s) for s in task.candidates["sentence"]], dtype=np.float64)
    paragraphs = np.asarray(list(task.candidates["paragraph"]))
    n_rel = task.num_relevant.astype(np.float64)

    def row(qmask, cmask):
        return {
            "questions": int(qmask.sum()),
            "candidates": int(cmask.sum()),
            "paragraphs": int(len(np.unique(paragraphs[cmask]))),
            "mean_sentence_chars": float(sent_len[cmask].mean()) if cmask.any() else float("nan"),
            "mean_relevant": float(n_rel[qmask].mean()) if qmask.any() else float("nan"),
        }

    rows = {lang: row(qlang == lang, clang == lang) for lang in task.languages}
    if total:
        rows["all"] = row(np.ones(len(qlang), bool), np.ones(len(clang), bool))
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "lang"
    return df
