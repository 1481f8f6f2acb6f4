"""Batch sampling for hybrid batch training (Elmahdy, Lin, Ahmad 2024, arXiv:2408.10536).

The training data is a parallel table: item -> (query, positive passage, hard negatives) in each of the
languages the item exists in. The sampler never touches text; it works on an availability matrix
``available[i, l]`` (item ``i`` exists in language ``languages[l]``) and emits batches of index triples
``(item_index, query_language_index, passage_language_index)``.

Batch kinds (the LAReQA baselines of Roy et al. 2020):

``mono``  (X-X-mono)  one language X for the whole batch; every query and passage in X.
``cross`` (X-Y)       per pair, query language != passage language, both available for the item.
``mixed`` (X-X)       per pair, query language == passage language; the language varies over the batch.
``en``    (En-En)     English only.

A *strategy* is a mixture of kinds; the kind of each batch is drawn from it independently
(``hybrid`` = {mono: alpha, cross: 1 - alpha}, paper: alpha = 0.5). See :func:`parse_strategy`.

How a batch is drawn (global batch of size ``G``)
-------------------------------------------------
1. Step ``t`` gets its own generator, ``SeedSequence(seed, spawn_key=(0, t))``. Its first uniform picks the
   kind (inverse CDF of the strategy weights). For ``mono`` its second uniform picks the language X from
   the language distribution ``p`` (below); ``en`` uses English.
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

Language distribution ``p`` (``language_sampling``): ``"uniform"`` (the paper), ``"size"`` (proportional
to the number of items available in the language) or a temperature ``T > 0`` (``p_l ~ n_l ** (1/T)``;
T = 1 is ``"size"``, T -> inf is uniform).

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
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "KINDS",
    "STRATEGIES",
    "Batch",
    "HybridBatchSampler",
    "availability_matrix",
    "language_distribution",
    "parse_strategy",
]

KINDS: tuple[str, ...] = ("mono", "cross", "mixed", "en")

# Named strategies; "hybrid" is filled in from alpha. LAReQA-style aliases map to the pure kinds.
STRATEGIES: tuple[str, ...] = ("hybrid", "mono", "cross", "mixed", "en")
_ALIASES = {"x-x-mono": "mono", "x-y": "cross", "x-x": "mixed", "en-en": "en"}

_STATE_VERSION = 1
_TOL = 1e-6


# --------------------------------------------------------------------------------------------------
# strategy and language distribution
# --------------------------------------------------------------------------------------------------


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def _check_alpha(alpha: Any) -> float:
    if not _is_number(alpha):
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r} ({type(alpha).__name__})")
    a = float(alpha)
    if not (0.0 <= a <= 1.0):  # also rejects NaN
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    return a


def parse_strategy(strategy: str | Mapping[str, float], alpha: float | None = 0.5) -> dict[str, float]:
    """Turn a strategy name or an explicit mixture into ``{kind: weight}``.

    ``strategy`` is one of ``"hybrid"`` ({mono: alpha, cross: 1 - alpha}), ``"mono"``, ``"cross"``,
    ``"mixed"``, ``"en"`` (case-insensitive; the LAReQA names ``"X-X-mono"``, ``"X-Y"``, ``"X-X"``,
    ``"En-En"`` are accepted too), or a mapping from kinds to non-negative weights summing to 1
    (tolerance 1e-6). ``alpha`` is required for ``"hybrid"``; when given it is validated for every
    strategy (a number in [0, 1]) but only ``"hybrid"`` uses it.

    Returns the kinds with positive weight, in the order of :data:`KINDS`.
    """
    if alpha is not None:
        alpha = _check_alpha(alpha)

    if isinstance(strategy, str):
        name = strategy.strip().lower()
        name = _ALIASES.get(name, name)
        if name == "hybrid":
            if alpha is None:
                raise ValueError("strategy 'hybrid' needs alpha (the weight of mono batches), got None")
            weights: dict[str, float] = {"mono": alpha, "cross": 1.0 - alpha}
        elif name in KINDS:
            weights = {name: 1.0}
        else:
            raise ValueError(
                f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}, "
                f"a LAReQA name ({', '.join(sorted(_ALIASES))}) or a mapping of kinds to weights"
            )
    elif isinstance(strategy, Mapping):
        if len(strategy) == 0:
            raise ValueError("empty strategy mixture: give at least one kind with a positive weight")
        weights = {}
        for kind, w in strategy.items():
            if kind not in KINDS:
                raise ValueError(f"unknown batch kind {kind!r} in strategy; expected one of {', '.join(KINDS)}")
            if not _is_number(w) or math.isnan(float(w)) or math.isinf(float(w)):
                raise ValueError(f"weight of kind {kind!r} must be a finite number, got {w!r}")
            if float(w) < 0:
                raise ValueError(f"negative weight {w!r} for kind {kind!r}")
            weights[kind] = float(w)
        total = sum(weights.values())
        if abs(total - 1.0) > _TOL:
            raise ValueError(f"strategy weights must sum to 1 (tolerance {_TOL:g}), they sum to {total!r}")
    else:
        raise ValueError(
            f"strategy must be a name or a mapping of kinds to weights, got {type(strategy).__name__}"
        )
    return {k: weights[k] for k in KINDS if weights.get(k, 0.0) > 0.0}


def _check_language_sampling(language_sampling: Any) -> str | float:
    if isinstance(language_sampling, str):
        name = language_sampling.strip().lower()
        if name not in ("uniform", "size"):
            raise ValueError(
                f"unknown language_sampling {language_sampling!r}; expected 'uniform', 'size' "
                "or a temperature T > 0"
            )
        return name
    if _is_number(language_sampling):
        t = float(language_sampling)
        if not t > 0:  # also rejects NaN
            raise ValueError(f"language sampling temperature must be > 0, got {language_sampling!r}")
        return t
    raise ValueError(
        f"language_sampling must be 'uniform', 'size' or a temperature T > 0, got {language_sampling!r}"
    )


def language_distribution(
    available: np.ndarray, languages: Sequence[str], language_sampling: str | float = "uniform"
) -> np.ndarray:
    """Probabilities ``p`` (one per language, summing to 1) for ``"uniform"``, ``"size"`` or temperature T.

    Raises ValueError naming any language without items.
    """
    avail = _check_available(available, languages)
    mode = _check_language_sampling(language_sampling)
    empty = [lang for lang, n in zip(languages, avail.sum(axis=0)) if n == 0]
    if empty:
        raise ValueError(f"language(s) {', '.join(map(repr, empty))} requested but have no items")
    w = np.exp(_log_language_weights(avail, mode))
    return w / w.sum()


def _log_language_weights(avail: np.ndarray, mode: str | float) -> np.ndarray:
    """Unnormalised log p (max 0): 0 (uniform), log n_l (size) or log(n_l) / T, relative to the largest."""
    sizes = avail.sum(axis=0).astype(np.float64)
    if mode == "uniform":
        return np.zeros_like(sizes)
    with np.errstate(divide="ignore"):
        logn = np.log(sizes) - np.log(sizes.max())
    return logn if mode == "size" else logn / float(mode)


def availability_matrix(
    table: Mapping[Any, Mapping[str, Any]], languages: Sequence[str] | None = None
) -> tuple[np.ndarray, list[Any], list[str]]:
    """Availability matrix of a parallel table ``{item_id: {language: entry or None}}``.

    A language counts as available for an item when its entry is present and not None. ``languages``
    defaults to every language seen, sorted. Returns ``(available, item_ids, languages)``.
    """
    if languages is None:
        languages = sorted({lang for row in table.values() for lang, v in row.items() if v is not None})
    languages = list(languages)
    item_ids = list(table.keys())
    avail = np.zeros((len(item_ids), len(languages)), dtype=bool)
    for i, iid in enumerate(item_ids):
        row = table[iid]
        for j, lang in enumerate(languages):
            avail[i, j] = row.get(lang) is not None
    return avail, item_ids, languages


def _check_available(available: Any, languages: Sequence[str]) -> np.ndarray:
    if isinstance(languages, str) or not isinstance(languages, Sequence):
        raise ValueError(f"languages must be a sequence of language codes, got {languages!r}")
    if len(languages) == 0:
        raise ValueError("languages is empty")
    if not all(isinstance(lang, str) and lang for lang in languages):
        raise ValueError(f"languages must be non-empty strings, got {list(languages)!r}")
    if len(set(languages)) != len(languages):
        dups = sorted({lang for lang in languages if list(languages).count(lang) > 1})
        raise ValueError(f"duplicate language(s) {dups}")
    arr = np.asarray(available)
    if arr.ndim != 2:
        raise ValueError(f"available must be a 2-D (n_items, n_languages) array, got shape {arr.shape}")
    if arr.shape[1] != len(languages):
        raise ValueError(
            f"available has {arr.shape[1]} language columns but {len(languages)} languages were given"
        )
    if arr.shape[0] == 0:
        raise ValueError("available has no items (0 rows)")
    if arr.dtype != np.bool_:
        if not np.issubdtype(arr.dtype, np.integer) or not np.isin(arr, (0, 1)).all():
            raise ValueError(f"available must be boolean (or 0/1 integers), got dtype {arr.dtype}")
        arr = arr.astype(bool)
    return arr


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------------
# batches and pools
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Batch:
    """One step's batch (this rank's shard of it).

    ``pairs[:, 0]`` item indices, ``pairs[:, 1]`` query language indices, ``pairs[:, 2]`` passage language
    indices (into the sampler's ``languages``). ``language`` is set for ``mono`` and ``en`` batches.
    """

    kind: str
    language: str | None
    pairs: np.ndarray
    step: int = -1

    @property
    def items(self) -> np.ndarray:
        return self.pairs[:, 0]

    @property
    def query_languages(self) -> np.ndarray:
        return self.pairs[:, 1]

    @property
    def passage_languages(self) -> np.ndarray:
        return self.pairs[:, 2]

    def __len__(self) -> int:
        return int(self.pairs.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Batch):
            return NotImplemented
        return (
            self.kind == other.kind
            and self.language == other.language
            and self.step == other.step
            and np.array_equal(self.pairs, other.pairs)
        )

    __hash__ = None  # type: ignore[assignment]


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


def _draw_index(weights: np.ndarray, u: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Row-wise inverse-CDF draw: index j with probability weights[r, j] / weights[r].sum().

    Rows whose weights all underflowed to 0 (extreme temperatures) fall back to uniform over ``support``.
    """
    dead = ~(weights.sum(axis=1) > 0)
    if dead.any():
        weights = weights.copy()
        weights[dead] = support[dead]
    c = np.cumsum(weights, axis=1)
    x = u * c[:, -1]
    return (c <= x[:, None]).sum(axis=1)  # first index with c > x: never a zero-weight entry


# --------------------------------------------------------------------------------------------------
# the sampler
# --------------------------------------------------------------------------------------------------


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
        n_items, n_langs = self.available.shape

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

        # Pools; spawn keys (1, pool number) for the epoch permutations.
        idx = np.arange(n_items, dtype=np.int64)
        n_avail = self.available.sum(axis=1)
        self._lang_pools = [
            _Pool(f"lang:{lang}", (1, j), idx[self.available[:, j]], self.seed) for j, lang in enumerate(self.languages)
        ]
        self._cross_pool = _Pool("cross", (1, n_langs), idx[n_avail >= 2], self.seed)
        self._mixed_pool = _Pool("mixed", (1, n_langs + 1), idx[n_avail >= 1], self.seed)
        self._check_feasible()

        kinds = list(self.weights)
        w = np.array([self.weights[k] for k in kinds], dtype=np.float64)
        self._kinds = kinds
        self._kind_cdf = np.cumsum(w) / w.sum()
        self._log_p = _log_language_weights(self.available, self.language_sampling)
        self._lang_cdf = np.cumsum(self.language_probs)
        self._lang_cdf /= self._lang_cdf[-1]
        self.step = 0

    # ---- construction-time checks ---------------------------------------------------------------

    def _check_feasible(self) -> None:
        G = self.global_batch_size
        n_items = self.available.shape[0]
        if G > n_items:
            raise ValueError(f"global_batch_size {G} exceeds the number of items ({n_items})")
        if "mono" in self.weights:
            sizes = [len(p) for p in self._lang_pools]
            j = int(np.argmin(sizes))
            if sizes[j] < G:
                small = [f"{lang} ({n})" for lang, n in zip(self.languages, sizes) if n < G]
                raise ValueError(
                    f"mono batches need global_batch_size {G} distinct items in one language, but "
                    f"language(s) {', '.join(small)} have fewer (smallest: {self.languages[j]!r} with "
                    f"{sizes[j]} items)"
                )
        if "en" in self.weights:
            if "en" not in self.languages:
                raise ValueError(f"strategy uses 'en' batches but 'en' is not among the languages {self.languages}")
            n_en = len(self._lang_pools[self.languages.index("en")])
            if n_en < G:
                raise ValueError(f"en batches need global_batch_size {G} English items, only {n_en} exist")
        if "cross" in self.weights:
            if len(self.languages) < 2:
                raise ValueError("cross batches need at least 2 languages")
            n = len(self._cross_pool)
            if n < G:
                raise ValueError(
                    f"cross batches need global_batch_size {G} distinct items available in >= 2 languages, "
                    f"only {n} exist"
                )
        if "mixed" in self.weights:
            n = len(self._mixed_pool)
            if n < G:
                raise ValueError(
                    f"mixed batches need global_batch_size {G} distinct items available in a language, "
                    f"only {n} exist"
                )

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
            avail, w = self._row_weights(items)
            total = w.sum(axis=1, keepdims=True)
            u = rng.random((2, G))
            q = _draw_index(w * (total - w), u[0], avail)  # query marginal under p_X * p_Y, X != Y
            rows = np.arange(G)
            w[rows, q] = 0.0
            avail[rows, q] = False
            p = _draw_index(w, u[1], avail)
            pairs[:, 0], pairs[:, 1], pairs[:, 2] = items, q, p
        else:  # mixed
            items = self._mixed_pool.take(G)
            avail, w = self._row_weights(items)
            lang = _draw_index(w, rng.random(G), avail)
            pairs[:, 0], pairs[:, 1], pairs[:, 2] = items, lang, lang
        return kind, language, pairs

    def _row_weights(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Availability rows of ``items`` and the language weights p restricted to them.

        Computed from log p relative to each row's largest weight, so that a tiny temperature does not
        underflow every weight of a row.
        """
        avail = self.available[items].copy()
        lw = np.where(avail, self._log_p[None, :], -np.inf)
        return avail, np.exp(lw - lw.max(axis=1, keepdims=True))

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
