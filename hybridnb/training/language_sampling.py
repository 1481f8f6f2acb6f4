"""Languages of the hybrid batch sampler: availability, the language distribution ``p`` and per-pair draws.

Split out of :mod:`hybridnb.training.sampling`: everything here depends only on the availability matrix
``available[i, l]`` (item ``i`` exists in language ``languages[l]``) and on ``p``, not on pools or steps.

Language distribution ``p`` (``language_sampling``): ``"uniform"`` (the paper), ``"size"`` (proportional
to the number of items available in the language) or a temperature ``T > 0`` (``p_l ~ n_l ** (1/T)``;
T = 1 is ``"size"``, T -> inf is uniform). ``p`` steers the language of ``mono`` batches and, through
:func:`draw_cross_languages` / :func:`draw_mixed_languages`, the languages of ``cross`` / ``mixed`` pairs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hybridnb.training.batch_kinds import _is_number

__all__ = ["availability_matrix", "language_distribution", "draw_cross_languages", "draw_mixed_languages"]


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


# --------------------------------------------------------------------------------------------------
# per-pair language draws (cross and mixed batches)
# --------------------------------------------------------------------------------------------------


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


def _row_weights(rows: np.ndarray, log_p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Availability rows (a copy) and the language weights p restricted to them.

    Computed from log p relative to each row's largest weight, so that a tiny temperature does not
    underflow every weight of a row.
    """
    avail = rows.copy()
    lw = np.where(avail, log_p[None, :], -np.inf)
    return avail, np.exp(lw - lw.max(axis=1, keepdims=True))


def draw_cross_languages(
    rows: np.ndarray, log_p: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(query, passage) language indices, one ordered pair X != Y per availability row.

    The pair is drawn among the row's available languages with probability proportional to
    ``p[X] * p[Y]`` (``log_p``: unnormalised log p); every row needs >= 2 available languages.
    Uses two uniforms per row from ``rng``.
    """
    avail, w = _row_weights(rows, log_p)
    n = avail.shape[0]
    total = w.sum(axis=1, keepdims=True)
    u = rng.random((2, n))
    q = _draw_index(w * (total - w), u[0], avail)  # query marginal under p_X * p_Y, X != Y
    idx = np.arange(n)
    w[idx, q] = 0.0
    avail[idx, q] = False
    p = _draw_index(w, u[1], avail)
    return q, p


def draw_mixed_languages(rows: np.ndarray, log_p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One language index per availability row, drawn among its available languages ~ ``p[X]``."""
    avail, w = _row_weights(rows, log_p)
    return _draw_index(w, rng.random(avail.shape[0]), avail)
