"""Overlap between training data and an evaluation task: never train on evaluation text.

Split out of :mod:`hybridnb.data.train_data` (which re-exports these names): :func:`check_no_overlap` and
:func:`remove_overlap` compare a :class:`~hybridnb.data.parallel_table.ParallelTable` with the texts of a LAReQA
``RetrievalTask``, exactly after :func:`normalize_text`.
"""

from __future__ import annotations

import unicodedata

import numpy as np

from hybridnb.data.parallel_table import ParallelTable, _columns, _passage_texts, check_candidate_mode

__all__ = ["DataLeakError", "normalize_text", "check_no_overlap", "remove_overlap"]


class DataLeakError(ValueError):
    """Evaluation text occurs in the training data."""


def normalize_text(text: str) -> str:
    """Unicode NFKC, whitespace runs collapsed to one space (and stripped), casefolded."""
    return " ".join(unicodedata.normalize("NFKC", text).split()).casefold()


def _eval_texts(eval_task, candidate_mode: str) -> dict[str, set[str]]:
    check_candidate_mode(candidate_mode)
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
