"""Batch sampling for hybrid batch training (Elmahdy, Lin, Ahmad 2024, arXiv:2408.10536).

The training data is a parallel table: item -> (query, positive passage, hard negatives) in each of the
languages the item exists in. The sampler never touches text; it works on an availability matrix
``available[i, l]`` (item ``i`` exists in language ``languages[l]``) and emits batches of index triples
``(item_index, query_language_index, passage_language_index)``.

Batch kinds (``mono`` X-X-mono, ``cross`` X-Y, ``mixed`` X-X, ``en`` En-En) and strategies (mixtures of
kinds, e.g. ``hybrid`` = {mono: alpha, cross: 1 - alpha}) are defined in :mod:`hybridnb.training.batch_kinds`; the
language distribution ``p`` (``language_sampling``: ``"uniform"``, ``"size"`` or a temperature T) and the
per-pair language draws in :mod:`hybridnb.training.language_sampling`; the item pools in ``hybridnb.training.sampler_pools``.
This module holds the sampler, and re-exports the public names of the first two.

How a batch is drawn (global batch of size ``G``)
-------------------------------------------------
1. Step ``t`` gets its own generator, ``SeedSequence(seed, spawn_key=(0, t))``. Its first uniform picks the
   kind (inverse CDF of the strategy weights). For ``mono`` its second uniform picks the language X from
   the language distribution ``p`` (see above); ``en`` uses English.
2. Items come from *pools*, each an endless stream of shuffled epochs (sampling without replacement):
   one pool per language (items available in it; used by ``mono`` and ``en``), one ``cross`` pool (items
   available in >= 2 languages) and one ``mixed`` pool (items available in >= 1 language). A batch takes
   the next ``G`` items of its pool. Epoch ``e`` of a pool is the permutation drawn by
   ``SeedSequence(seed, spawn_key=(1, pool, e))``. When a batch straddles two epochs, the items it already
   took from the old epoch's tail are moved to the end of the new epoch, so a batch never holds an item
   twice and every item of a pool is still seen exactly once per epoch of that pool: at any time, the
   counts of the items of a pool differ by at most one (coverage is exact, not just in expectation).
3. ``cross``: for each item, the ordered pair (X, Y), X != Y, is drawn among the item's available
   languages with probability proportional to ``p[X] * p[Y]`` (X is the query language, Y the passage
   language; symmetric in X and Y). ``mixed``: for each item one language X is drawn among its available
   languages with probability proportional to ``p[X]``. These draws use the step generator.

So items are covered uniformly within each pool, while ``p`` steers the language of ``mono`` batches and
the languages of ``cross`` / ``mixed`` pairs. (For ``cross`` / ``mixed`` the realised language marginal is
``p`` restricted to each item's languages, hence close to but not exactly ``p`` when availability is
uneven.)

Several processes: every rank draws the same global batch (all randomness depends only on the seed, the
step and the pool cursors, never on the rank) and returns its contiguous shard
``pairs[rank * b:(rank + 1) * b]`` with ``b = G // world_size``, so item ids are disjoint across ranks.
The state (:meth:`HybridBatchSampler.state_dict`) is therefore the same on every rank, and a state saved
with one world size can be loaded with another as long as the global batch size is unchanged.

Feasibility is checked at construction: a ValueError is raised when ``G`` exceeds the items of a pool a
kind with positive weight draws from (e.g. the smallest language for ``mono``), never mid-training.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from hybridnb.training.sampler_pools import build_pools, check_feasible
from hybridnb.training.batch_kinds import KINDS, STRATEGIES, Batch, _check_int, parse_strategy
from hybridnb.training.language_sampling import (
    _check_available,
    _check_language_sampling,
    _log_language_weights,
    availability_matrix,
    draw_cross_languages,
    draw_mixed_languages,
    language_distribution,
)

__all__ = [
    "KINDS",
    "STRATEGIES",
    "Batch",
    "HybridBatchSampler",
    "availability_matrix",
    "language_distribution",
    "parse_strategy",
]

_STATE_VERSION = 1


class HybridBatchSampler:
    """Infinite, seeded, resumable stream of :class:`Batch` for hybrid batch training.

    Parameters
    ----------
    available: bool array (n_items, n_languages); ``available[i, l]`` = item i exists in ``languages[l]``.
    languages: the language codes, in column order. Every listed language must have at least one item.
    global_batch_size: pairs per step over all ranks; each rank gets ``global_batch_size // world_size``.
    strategy, alpha: see :func:`parse_strategy` (default: the paper's hybrid with alpha = 0.5).
    language_sampling: ``"uniform"`` (default, as in the paper), ``"size"`` or a temperature T > 0.
    seed: non-negative int (None: fresh entropy, readable afterwards as ``.seed``). Must be equal on all
        ranks.
    world_size, rank: the process group; every rank must pass identical arguments except ``rank``.
    item_ids: optional ids of the rows of ``available`` (unique), for :meth:`item_ids_of`.

    The drawing procedure is described in the module docstring.
    """

    def __init__(
        self,
        available: np.ndarray,
        languages: Sequence[str],
        global_batch_size: int,
        strategy: str | Mapping[str, float] = "hybrid",
        alpha: float | None = 0.5,
        language_sampling: str | float = "uniform",
        seed: int | None = 0,
        world_size: int = 1,
        rank: int = 0,
        item_ids: Sequence[Any] | None = None,
    ):
        self.available = _check_available(available, languages).copy()  # never freeze the caller's array
        self.languages: list[str] = list(languages)
        self.available.setflags(write=False)
        n_items = self.available.shape[0]

        self.weights = parse_strategy(strategy, alpha)
        self.language_sampling = _check_language_sampling(language_sampling)
        self.language_probs = language_distribution(self.available, self.languages, self.language_sampling)

        self.global_batch_size = _check_int("global_batch_size", global_batch_size, 1)
        self.world_size = _check_int("world_size", world_size, 1)
        self.rank = _check_int("rank", rank, 0)
        if self.rank >= self.world_size:
            raise ValueError(f"rank must be in [0, world_size={self.world_size}), got {self.rank}")
        if self.global_batch_size % self.world_size:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} is not divisible by world_size {self.world_size}"
            )
        self.local_batch_size = self.global_batch_size // self.world_size

        if seed is None:
            seed = int(np.random.SeedSequence().entropy)  # type: ignore[arg-type]
        self.seed = _check_int("seed", seed, 0)

        if item_ids is not None:
            item_ids = list(item_ids)
            if len(item_ids) != n_items:
                raise ValueError(f"item_ids has {len(item_ids)} entries but available has {n_items} rows")
            if len(set(item_ids)) != n_items:
                raise ValueError("item_ids are not unique (a duplicated item would yield false negatives)")
        self.item_ids = item_ids

        self._lang_pools, self._cross_pool, self._mixed_pool = build_pools(self.available, self.languages, self.seed)
        check_feasible(self.weights, self.languages, self.global_batch_size, n_items,
                       self._lang_pools, self._cross_pool, self._mixed_pool)

        kinds = list(self.weights)
        w = np.array([self.weights[k] for k in kinds], dtype=np.float64)
        self._kinds = kinds
        self._kind_cdf = np.cumsum(w) / w.sum()
        self._log_p = _log_language_weights(self.available, self.language_sampling)
        self._lang_cdf = np.cumsum(self.language_probs)
        self._lang_cdf /= self._lang_cdf[-1]
        self.step = 0

    # ---- schedule ---------------------------------------------------------------------------------

    def _step_rng(self, step: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(0, step)))

    def _kind_and_language(self, rng: np.random.Generator) -> tuple[str, str | None]:
        kind = self._kinds[min(int(np.searchsorted(self._kind_cdf, rng.random(), side="right")), len(self._kinds) - 1)]
        if kind == "mono":
            j = min(int(np.searchsorted(self._lang_cdf, rng.random(), side="right")), len(self.languages) - 1)
            return kind, self.languages[j]
        if kind == "en":
            return kind, "en"
        return kind, None

    def schedule(self, num_steps: int, start: int = 0) -> list[tuple[str, str | None]]:
        """(kind, language) of steps ``start .. start + num_steps - 1``; pure function of seed and step.

        Identical on every rank; does not advance the sampler. ``language`` is set for mono/en batches.
        """
        num_steps = _check_int("num_steps", num_steps, 0)
        start = _check_int("start", start, 0)
        return [self._kind_and_language(self._step_rng(t)) for t in range(start, start + num_steps)]

    def kind_schedule(self, num_steps: int, start: int = 0) -> list[str]:
        """Kinds of steps ``start .. start + num_steps - 1`` (see :meth:`schedule`)."""
        return [k for k, _ in self.schedule(num_steps, start)]

    # ---- drawing ------------------------------------------------------------------------------------

    def _global_batch(self) -> tuple[str, str | None, np.ndarray]:
        G = self.global_batch_size
        rng = self._step_rng(self.step)
        kind, language = self._kind_and_language(rng)
        pairs = np.empty((G, 3), dtype=np.int64)
        if kind in ("mono", "en"):
            j = self.languages.index(language)  # type: ignore[arg-type]
            pairs[:, 0] = self._lang_pools[j].take(G)
            pairs[:, 1] = j
            pairs[:, 2] = j
        elif kind == "cross":
            items = self._cross_pool.take(G)
            q, p = draw_cross_languages(self.available[items], self._log_p, rng)
            pairs[:, 0], pairs[:, 1], pairs[:, 2] = items, q, p
        else:  # mixed
            items = self._mixed_pool.take(G)
            lang = draw_mixed_languages(self.available[items], self._log_p, rng)
            pairs[:, 0], pairs[:, 1], pairs[:, 2] = items, lang, lang
        return kind, language, pairs

    def next_global_batch(self) -> Batch:
        """The whole global batch of the next step (what all ranks together receive); advances the sampler."""
        step = self.step
        kind, language, pairs = self._global_batch()
        self.step += 1
        return Batch(kind, language, pairs, step)

    def next_batch(self) -> Batch:
        """This rank's shard of the next global batch; advances the sampler by one step."""
        g = self.next_global_batch()
        b = self.local_batch_size
        shard = g.pairs[self.rank * b : (self.rank + 1) * b].copy()
        return Batch(g.kind, g.language, shard, g.step)

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        return self.next_batch()

    def take(self, num_steps: int) -> list[Batch]:
        """The next ``num_steps`` batches of this rank."""
        return [self.next_batch() for _ in range(_check_int("num_steps", num_steps, 0))]

    def item_ids_of(self, batch: Batch) -> list[Any]:
        """The item ids (as given to the constructor) of a batch's pairs."""
        if self.item_ids is None:
            raise ValueError("this sampler was built without item_ids")
        return [self.item_ids[int(i)] for i in batch.items]

    def language_codes(self, batch: Batch) -> list[tuple[str, str]]:
        """(query language, passage language) codes of a batch's pairs."""
        return [(self.languages[int(q)], self.languages[int(p)]) for q, p in batch.pairs[:, 1:]]

    # ---- coverage / state ---------------------------------------------------------------------------

    def epochs(self) -> dict[str, float]:
        """Passes made so far over each pool (fractional), e.g. {'lang:en': 2.4, 'cross': 1.1, ...}."""
        pools = [*self._lang_pools, self._cross_pool, self._mixed_pool]
        return {p.name: (p.epoch + p.pos / len(p)) if len(p) else 0.0 for p in pools}

    def _fingerprint(self) -> dict[str, Any]:
        packed = np.packbits(self.available, axis=None).tobytes()
        return {
            "languages": list(self.languages),
            "n_items": int(self.available.shape[0]),
            "available_sha256": hashlib.sha256(
                packed + str(self.available.shape).encode()
            ).hexdigest(),
            "global_batch_size": self.global_batch_size,
            "weights": {k: float(v) for k, v in self.weights.items()},
            "language_sampling": self.language_sampling,
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume the stream: seed, step and pool cursors (plain JSON-able types).

        The same on every rank and independent of world_size. No generator state needs saving: the step
        generators and epoch permutations are re-derived from (seed, step) and (seed, pool, epoch).
        """
        return {
            "version": _STATE_VERSION,
            "seed": self.seed,
            "step": self.step,
            "config": self._fingerprint(),
            "pools": {
                p.name: p.state() for p in (*self._lang_pools, self._cross_pool, self._mixed_pool)
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (also after a JSON or pickle round trip)."""
        try:
            version, seed, step = state["version"], state["seed"], state["step"]
            config, pools = state["config"], state["pools"]
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a HybridBatchSampler state: {e!r}") from None
        if version != _STATE_VERSION:
            raise ValueError(f"unsupported sampler state version {version!r} (expected {_STATE_VERSION})")
        mine = self._fingerprint()
        if dict(config) != mine:
            diff = sorted(k for k in set(mine) | set(config) if mine.get(k) != config.get(k))
            raise ValueError(f"sampler state was saved with a different configuration (differs in: {diff})")
        all_pools = (*self._lang_pools, self._cross_pool, self._mixed_pool)
        if set(pools) != {p.name for p in all_pools}:
            raise ValueError(f"sampler state pools {sorted(pools)} do not match {[p.name for p in all_pools]}")
        self.seed = _check_int("seed", seed, 0)
        for p in all_pools:
            p.seed = self.seed
            p.load(pools[p.name])
        self.step = _check_int("step", step, 0)

    def __repr__(self) -> str:
        return (
            f"HybridBatchSampler(n_items={self.available.shape[0]}, languages={self.languages}, "
            f"global_batch_size={self.global_batch_size}, weights={self.weights}, "
            f"language_sampling={self.language_sampling!r}, seed={self.seed}, step={self.step}, "
            f"rank={self.rank}/{self.world_size})"
        )
