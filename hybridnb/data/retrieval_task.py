"""A multilingual retrieval task: questions, a candidate pool and relevance in CSR form.

Split out of :mod:`hybridnb.data.lareqa` (which re-exports it): evaluation (:mod:`hybridnb.evaluation.runner`),
baselines and training-data builders use the container without caring how LAReQA builds or caches it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

__all__ = ["RetrievalTask"]


@dataclass
class RetrievalTask:
    """A LAReQA retrieval task: questions, a multilingual candidate pool and relevance in CSR form.

    ``questions`` columns: ``qid`` (``"lang/id"``, unique), ``id`` (shared across languages), ``lang``,
    ``text``, ``answer_cid`` (the question's own answer sentence).
    ``candidates`` columns: ``cid`` (= row index), ``lang``, ``sentence``, ``context`` (its paragraph),
    ``paragraph`` (``"lang/article/para"``), ``sentence_index`` (within the paragraph).
    Candidates relevant to question ``i``: ``relevant_indices[relevant_indptr[i]:relevant_indptr[i+1]]``
    (sorted cids), also :meth:`relevant`.
    """

    name: str
    languages: list[str]
    questions: Any  # datasets.Dataset
    candidates: Any  # datasets.Dataset
    relevant_indptr: np.ndarray
    relevant_indices: np.ndarray

    @property
    def num_questions(self) -> int:
        return len(self.questions)

    @property
    def num_candidates(self) -> int:
        return len(self.candidates)

    def relevant(self, i: int) -> np.ndarray:
        """Sorted cids of the candidates relevant to question `i`."""
        return self.relevant_indices[self.relevant_indptr[i]:self.relevant_indptr[i + 1]]

    @cached_property
    def num_relevant(self) -> np.ndarray:
        """Number of relevant candidates per question."""
        return np.diff(self.relevant_indptr)

    def relevance_matrix(self):
        """Relevance as a boolean ``scipy.sparse.csr_matrix`` of shape (questions, candidates)."""
        from scipy.sparse import csr_matrix

        data = np.ones(len(self.relevant_indices), dtype=bool)
        return csr_matrix((data, self.relevant_indices, self.relevant_indptr),
                          shape=(self.num_questions, self.num_candidates))

    @cached_property
    def question_langs(self) -> np.ndarray:
        return np.asarray(list(self.questions["lang"]))

    @cached_property
    def candidate_langs(self) -> np.ndarray:
        return np.asarray(list(self.candidates["lang"]))

    @cached_property
    def answer_cids(self) -> np.ndarray:
        """Each question's own answer sentence (always among its relevant candidates)."""
        return np.asarray(list(self.questions["answer_cid"]), dtype=np.int64)

    @cached_property
    def question_groups(self) -> np.ndarray:
        """Group of each question by shared `id` (0, 1, ... in order of first appearance)."""
        index: dict[str, int] = {}
        return np.asarray([index.setdefault(q, len(index)) for q in self.questions["id"]], dtype=np.int64)

    def candidate_inputs(self, mode: str = "sentence+context") -> list[str] | list[tuple[str, str]]:
        """Candidate encoder inputs, in cid order.

        ``"sentence+context"`` (default; LAReQA's setup, the answer sentence with its paragraph as context):
        ``(sentence, context)`` pairs for a text-pair encoder. ``"sentence"``: the sentences alone.
        """
        if mode == "sentence+context":
            return list(zip(self.candidates["sentence"], self.candidates["context"]))
        if mode == "sentence":
            return list(self.candidates["sentence"])
        raise ValueError(f"unknown candidate input mode {mode!r}; valid: 'sentence+context', 'sentence'")

    def __repr__(self) -> str:
        return (f"RetrievalTask(name={self.name!r}, languages={self.languages}, "
                f"questions={self.num_questions}, candidates={self.num_candidates})")
