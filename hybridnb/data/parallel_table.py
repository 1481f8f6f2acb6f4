"""The parallel training table: item -> per language a query, its positive and hard negatives.

Hybrid batches (Elmahdy, Lin, Ahmad 2024) pair a query in language X with its positive in language Y, so
the training data must be *parallel*. :class:`ParallelTable` holds that table (None where an item lacks a
language). It lives in its own module, with the small checks its builders share, so that the builders
(:mod:`hybridnb.data.train_data`, :mod:`hybridnb.data.mmarco`) and the leak checks (:mod:`hybridnb.data.overlap`) can
all import it without an import cycle; :mod:`hybridnb.data.train_data` re-exports it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hybridnb.data.sources import CANDIDATE_MODES, check_candidate_mode  # noqa: F401 (re-exported: one definition)
from hybridnb.data.languages import (check_every_language_used, check_item_columns, check_languages,
                                     language_counts)

__all__ = ["ParallelTable", "Passage", "CANDIDATE_MODES", "check_candidate_mode"]

Passage = str | tuple[str, str]  # a text, or a (sentence, context) pair for a text-pair encoder


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
        check_item_columns("ParallelTable", self.ids, self.languages,
                           {name: getattr(self, name) for name in ("queries", "positives", "hard_negatives")},
                           "false in-batch negatives")
        check_every_language_used(self.languages, self.available(),
                                  "no items (no item has both a query and a positive)")

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"ParallelTable(items={len(self)}, available={language_counts(self.languages, self.available())})"

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
        languages = check_languages(languages, self.languages, "this table")
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


def _check_count(name: str, value: object) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def _columns(ds, *names: str) -> dict[str, list]:
    """Columns of a datasets.Dataset as lists, read in one batch (iterating a column goes row by row)."""
    return ds.select_columns(list(names))[:]
