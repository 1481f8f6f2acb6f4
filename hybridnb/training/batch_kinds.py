"""Batch kinds, strategies (mixtures of kinds) and the :class:`Batch` record of the hybrid batch sampler.

Split out of :mod:`hybridnb.training.sampling` so that configuration code (profiles, run checks) can validate a
strategy without the sampler, and so that the sampler module holds only the drawing procedure.

Batch kinds (the LAReQA baselines of Roy et al. 2020):

``mono``  (X-X-mono)  one language X for the whole batch; every query and passage in X.
``cross`` (X-Y)       per pair, query language != passage language, both available for the item.
``mixed`` (X-X)       per pair, query language == passage language; the language varies over the batch.
``en``    (En-En)     English only.

A *strategy* is a mixture of kinds; the kind of each batch is drawn from it independently
(``hybrid`` = {mono: alpha, cross: 1 - alpha}, paper: alpha = 0.5). See :func:`parse_strategy`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["KINDS", "STRATEGIES", "Batch", "parse_strategy", "hashed_alpha", "strategy_label"]

KINDS: tuple[str, ...] = ("mono", "cross", "mixed", "en")

# Named strategies; "hybrid" is filled in from alpha. LAReQA-style aliases map to the pure kinds.
STRATEGIES: tuple[str, ...] = ("hybrid", "mono", "cross", "mixed", "en")
_ALIASES = {"x-x-mono": "mono", "x-y": "cross", "x-x": "mixed", "en-en": "en"}

_TOL = 1e-6


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


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


def hashed_alpha(strategy, alpha):
    """``alpha`` if the strategy reads it (hybrid), else None: mono with any alpha is the same run (same hash)."""
    return alpha if isinstance(strategy, str) and strategy.strip().lower() == "hybrid" else None


def strategy_label(strategy, alpha) -> str:
    """The strategy in run names: ``mono``, ``hybrid`` (alpha 0.5), ``hybrid0.25``, ``mix-cross0.3-mono0.7``."""
    if isinstance(strategy, str):
        return f"hybrid{alpha:g}" if strategy == "hybrid" and alpha != 0.5 else strategy
    return "mix-" + "-".join(f"{k}{v:g}" for k, v in sorted(strategy.items()))
