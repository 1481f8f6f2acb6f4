"""Item pools of :class:`hybridnb.training.sampling.HybridBatchSampler` (private): endless shuffled epochs.

Split out of :mod:`hybridnb.training.sampling` because the pools are the sampler's only mutable state besides the
step, and their epoch / straddling rules (described in :mod:`hybridnb.training.sampling`) are self-contained:
one pool per language, one ``cross`` pool (items in >= 2 languages), one ``mixed`` pool (items in >= 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


class _Pool:
    """Endless stream of shuffled epochs over ``members`` (without-replacement cycling)."""

    def __init__(self, name: str, key: tuple[int, ...], members: np.ndarray, seed: int):
        self.name = name
        self.key = key
        self.members = members
        self.seed = seed
        self.epoch = 0
        self.pos = 0
        self.deferred: list[int] = []  # items moved to the end of the current epoch's order
        self._order: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.members.shape[0])

    def _build_order(self) -> np.ndarray:
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(*self.key, self.epoch)))
        order = rng.permutation(self.members)
        if self.deferred:
            moved = np.isin(order, np.asarray(self.deferred, dtype=order.dtype))
            order = np.concatenate([order[~moved], order[moved]])
        return order

    @property
    def order(self) -> np.ndarray:
        if self._order is None:
            self._order = self._build_order()
        return self._order

    def take(self, k: int) -> np.ndarray:
        n = len(self)
        assert 0 < k <= n
        order = self.order
        if self.pos + k <= n:
            out = order[self.pos : self.pos + k]
            self.pos += k
            return out.copy()
        head = order[self.pos :].copy()
        self.epoch += 1
        self.deferred = [int(x) for x in head]
        self.pos = 0
        self._order = None
        rest = self.order[: k - head.shape[0]]
        self.pos = k - head.shape[0]
        return np.concatenate([head, rest])

    def state(self) -> dict[str, Any]:
        return {"size": len(self), "epoch": self.epoch, "pos": self.pos, "deferred": list(self.deferred)}

    def load(self, state: Mapping[str, Any]) -> None:
        if int(state["size"]) != len(self):
            raise ValueError(f"pool {self.name!r}: state has {state['size']} items, sampler has {len(self)}")
        epoch, pos = int(state["epoch"]), int(state["pos"])
        deferred = [int(x) for x in state["deferred"]]
        if epoch < 0 or not (0 <= pos <= len(self)) or len(deferred) > len(self):
            raise ValueError(f"pool {self.name!r}: invalid cursor in state {dict(state)!r}")
        self.epoch, self.pos, self.deferred = epoch, pos, deferred
        self._order = None


def build_pools(available: np.ndarray, languages: Sequence[str], seed: int) -> tuple[list[_Pool], _Pool, _Pool]:
    """(language pools, cross pool, mixed pool) of an availability matrix.

    Spawn keys (1, pool number) for the epoch permutations: languages 0 .. L-1, cross L, mixed L + 1.
    """
    n_items, n_langs = available.shape
    idx = np.arange(n_items, dtype=np.int64)
    n_avail = available.sum(axis=1)
    lang_pools = [_Pool(f"lang:{lang}", (1, j), idx[available[:, j]], seed) for j, lang in enumerate(languages)]
    cross_pool = _Pool("cross", (1, n_langs), idx[n_avail >= 2], seed)
    mixed_pool = _Pool("mixed", (1, n_langs + 1), idx[n_avail >= 1], seed)
    return lang_pools, cross_pool, mixed_pool


def check_feasible(
    weights: Mapping[str, float],
    languages: Sequence[str],
    global_batch_size: int,
    n_items: int,
    lang_pools: Sequence[_Pool],
    cross_pool: _Pool,
    mixed_pool: _Pool,
) -> None:
    """Raise ValueError when a kind with positive weight draws from a pool smaller than the global batch."""
    G = global_batch_size
    languages = list(languages)
    if G > n_items:
        raise ValueError(f"global_batch_size {G} exceeds the number of items ({n_items})")
    if "mono" in weights:
        sizes = [len(p) for p in lang_pools]
        j = int(np.argmin(sizes))
        if sizes[j] < G:
            small = [f"{lang} ({n})" for lang, n in zip(languages, sizes) if n < G]
            raise ValueError(
                f"mono batches need global_batch_size {G} distinct items in one language, but "
                f"language(s) {', '.join(small)} have fewer (smallest: {languages[j]!r} with "
                f"{sizes[j]} items)"
            )
    if "en" in weights:
        if "en" not in languages:
            raise ValueError(f"strategy uses 'en' batches but 'en' is not among the languages {languages}")
        n_en = len(lang_pools[languages.index("en")])
        if n_en < G:
            raise ValueError(f"en batches need global_batch_size {G} English items, only {n_en} exist")
    if "cross" in weights:
        if len(languages) < 2:
            raise ValueError("cross batches need at least 2 languages")
        n = len(cross_pool)
        if n < G:
            raise ValueError(
                f"cross batches need global_batch_size {G} distinct items available in >= 2 languages, "
                f"only {n} exist"
            )
    if "mixed" in weights:
        n = len(mixed_pool)
        if n < G:
            raise ValueError(
                f"mixed batches need global_batch_size {G} distinct items available in a language, "
                f"only {n} exist"
            )
