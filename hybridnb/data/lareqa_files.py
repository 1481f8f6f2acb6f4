"""Parser of the raw LAReQA files (XQuAD-R, MLQA-R): paragraphs, sentences, questions, answer sentences.

Split out of :mod:`hybridnb.data.lareqa` (which re-exports these names) because validating the raw JSON is a
job of its own, with its own error messages; the task built from the parsed files is defined there.

The raw files are SQuAD-format JSON with, per paragraph, a `sentences` list and `sentence_breaks`
([start, end) character spans into `context`). The **answer sentence** of a question is the sentence of
its paragraph whose span contains ``answers[0].answer_start``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["RawQuestion", "Paragraph", "parse_file"]


class RawQuestion(NamedTuple):
    id: str  # shared by the language versions of the question
    text: str
    answer_sentence: int  # index into the paragraph's sentences


@dataclass(frozen=True)
class Paragraph:
    key: str  # "lang/article_index/paragraph_index"
    context: str
    sentences: list[str]
    questions: list[RawQuestion]


def _fail(path: Path, where: str, problem: str) -> ValueError:
    return ValueError(f"{path}: {where}: {problem}" if where else f"{path}: {problem}")


def _field(path: Path, obj: Any, key: str, kind: type, where: str) -> Any:
    """obj[key], checked to exist and be of `kind` (bool is not accepted as int)."""
    if not isinstance(obj, dict):
        raise _fail(path, where, f"expected an object, got {type(obj).__name__}")
    if key not in obj:
        raise _fail(path, where, f"missing key {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _fail(path, f"{where}.{key}" if where else key,
                    f"expected {kind.__name__}, got {type(value).__name__}")
    return value


def parse_file(path: str | Path, lang: str) -> list[Paragraph]:
    """Parse one LAReQA (SQuAD-format, with sentence breaks) JSON file.

    Returns its paragraphs in file order, each with its sentences and its questions (with the index of
    the answer sentence). Raises ValueError naming the file and the problem when the file is not valid
    JSON, lacks a required key, has a wrong type, has mismatched `sentences`/`sentence_breaks`, has a
    question whose ``answers[0].answer_start`` lies in no (or in several) sentence spans, or repeats a
    question id.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _fail(path, "", f"not valid JSON ({e})") from e

    paragraphs: list[Paragraph] = []
    seen_ids: set[str] = set()
    for ai, article in enumerate(_field(path, doc, "data", list, "")):
        where_a = f"data[{ai}]"
        for pi, para in enumerate(_field(path, article, "paragraphs", list, where_a)):
            where_p = f"{where_a}.paragraphs[{pi}]"
            context = _field(path, para, "context", str, where_p)
            sentences = _field(path, para, "sentences", list, where_p)
            breaks = _field(path, para, "sentence_breaks", list, where_p)
            qas = _field(path, para, "qas", list, where_p)
            if len(sentences) != len(breaks):
                raise _fail(path, where_p, f"{len(sentences)} sentences but {len(breaks)} sentence_breaks")
            for si, s in enumerate(sentences):
                if not isinstance(s, str):
                    raise _fail(path, f"{where_p}.sentences[{si}]", f"expected str, got {type(s).__name__}")
            spans: list[tuple[int, int]] = []
            for bi, b in enumerate(breaks):
                if (not isinstance(b, list) or len(b) != 2
                        or not all(isinstance(x, int) and not isinstance(x, bool) for x in b)):
                    raise _fail(path, f"{where_p}.sentence_breaks[{bi}]", f"expected [start, end], got {b!r}")
                spans.append((b[0], b[1]))

            questions: list[RawQuestion] = []
            for qi, qa in enumerate(qas):
                where_q = f"{where_p}.qas[{qi}]"
                qid = _field(path, qa, "id", str, where_q)
                text = _field(path, qa, "question", str, where_q)
                answers = _field(path, qa, "answers", list, where_q)
                if not answers:
                    raise _fail(path, where_q, f"question {qid!r} has no answers")
                start = _field(path, answers[0], "answer_start", int, f"{where_q}.answers[0]")
                hits = [si for si, (b, e) in enumerate(spans) if b <= start < e]
                if len(hits) != 1:
                    raise _fail(path, where_q, f"answer_start {start} of question {qid!r} lies in "
                                               f"{len(hits)} sentence spans (expected exactly 1; spans: {spans})")
                if qid in seen_ids:
                    raise _fail(path, where_q, f"question id {qid!r} appears twice in the file")
                seen_ids.add(qid)
                questions.append(RawQuestion(qid, text, hits[0]))
            paragraphs.append(Paragraph(f"{lang}/{ai}/{pi}", context, list(sentences), questions))
    return paragraphs
