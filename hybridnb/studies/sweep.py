"""The mix-ratio sweep's points (notebook 05, ``make sweep``): which runs make up the text sweep.

``alpha`` is the share of X-X-mono batches in a hybrid (the rest are X-Y): alpha = 1 *is* the mono baseline
and alpha = 0 *is* the cross baseline, so those two points use the plain ``mono``/``cross`` strategies and
share their runs (same config hash) with the grid of notebook 04. Mixtures add points inside the (mono, cross,
mixed) simplex. Every point is validated before the first one trains. :mod:`hybridnb.studies.recipe` runs every
point at every seed; :mod:`hybridnb.studies.report` compares each with alpha = 0.5.
"""

from __future__ import annotations

from typing import Any

from hybridnb.studies import runs
from hybridnb.training import sampling

__all__ = ["REFERENCE", "strategy_for_alpha", "sweep_points"]

REFERENCE = "alpha=0.5"  # the paper's hybrid: every other point is compared with it (REPORT.md's verdict rule)


def strategy_for_alpha(alpha: float) -> str:
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"sweep alpha must be in [0, 1], got {alpha!r}")
    return "cross" if alpha == 0 else "mono" if alpha == 1 else "hybrid"


def sweep_points(params: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, run parameters) for every alpha in ``params['alphas']`` and mixture in ``params['mixtures']``.

    Raises before any work on an empty sweep, an alpha outside [0, 1] or an invalid mixture.
    """
    alphas = list(params.get("alphas") or [])
    mixtures = list(params.get("mixtures") or [])
    if not alphas and not mixtures:
        raise ValueError("the sweep needs at least one value in `alphas` or `mixtures`")
    points = [(f"alpha={float(a):g}", {**params, "strategy": strategy_for_alpha(a), "alpha": float(a),
                                        "run_name": None}) for a in alphas]
    for m in mixtures:
        if not isinstance(m, dict):
            raise ValueError(f"a sweep mixture is a mapping kind -> weight, got {m!r}")
        sampling.parse_strategy(m, 0.5)
        points.append((runs.strategy_label(m, 0.5), {**params, "strategy": m, "run_name": None}))
    labels = [label for label, _ in points]
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate sweep points: {labels}")
    for _, p in points:
        runs.check_run(p)
    return points
