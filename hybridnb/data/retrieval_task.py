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

    def restrict_to_ids(self, ids, name: str | None = None) -> "RetrievalTask":
        """The LAReQA pool of the question ``ids`` alone: their questions in every language, every sentence
        of every paragraph holding one of them, and their relevance (the same relevant sentences as in the
        full task: all of them lie in the kept paragraphs).

        A held-out pool built this way from a training set's validation items (see
        :func:`hybridnb.studies.runs.prepare_data`) scores a run like the benchmark does, on text the
        evaluation sets never see: the recipe's choices are made there, not on the test sets.
        """
        keep = set(ids)
        q_rows = [i for i, qid in enumerate(self.questions["id"]) if qid in keep]
        if not q_rows:
            raise ValueError(f"none of the {len(keep)} ids is a question of {self.name}")
        paragraphs = np.asarray(list(self.candidates["paragraph"]))
        kept_paragraphs = set(paragraphs[self.answer_cids[q_rows]].tolist())
        c_rows = np.flatnonzero([p in kept_paragraphs for p in paragraphs])
        new_cid = np.full(self.num_candidates, -1, dtype=np.int64)
        new_cid[c_rows] = np.arange(len(c_rows))
        relevant = [new_cid[self.relevant(i)] for i in q_rows]
        if any((r < 0).any() for r in relevant):  # a relevant sentence outside the kept paragraphs
            raise ValueError(f"{self.name}: a question's relevant sentence lies outside its id's paragraphs")
        indptr = np.zeros(len(q_rows) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(r) for r in relevant])
        # new in-memory tables (a select() on a task loaded from the processed cache would write index files
        # into that cache folder, which its check then finds as damage)
        questions = _rows(self.questions, q_rows, answer_cid=new_cid[self.answer_cids[q_rows]].tolist())
        candidates = _rows(self.candidates, c_rows.tolist(), cid=list(range(len(c_rows))))
        return RetrievalTask(name or f"{self.name}-subset", list(self.languages), questions, candidates, indptr,
                             np.concatenate(relevant).astype(np.int64))

    def __repr__(self) -> str:
        return (f"RetrievalTask(name={self.name!r}, languages={self.languages}, "
                f"questions={self.num_questions}, candidates={self.num_candidates})")


def _rows(table, rows: list[int], **replaced):
    """``table``'s ``rows`` as a new in-memory ``datasets.Dataset`` with the same features, some columns
    ``replaced``."""
    import datasets

    def column(name: str) -> list:
        values = table[name]  # the whole column once (indexing the table per row reads it each time)
        return [values[i] for i in rows]

    columns = {name: replaced[name] if name in replaced else column(name) for name in table.column_names}
    return datasets.Dataset.from_dict(columns, features=table.features)
