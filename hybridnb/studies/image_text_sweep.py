"""The image-text ratio sweep: hybrid's alpha (the share of mono batches) at every seed, against alpha = 0.5.

The image-text study keeps its own recipe (frozen image tower, ``mm_*`` settings, :mod:`hybridnb.image_text.runs`);
its sweep trains every ``mm_alphas`` point at every seed of ``mm_seeds`` (alpha 0 / 0.5 / 1 are the cross, hybrid
and mono runs of notebook 07, reused by config hash) and compares each point with alpha = 0.5 by the seed-aware
rule of REPORT.md (:mod:`hybridnb.evaluation.seed_stats`, through :mod:`hybridnb.studies.image_text_compare`).
Relations: :mod:`hybridnb.studies.sweep` (the text sweep's points), :mod:`hybridnb.studies.report` (REPORT.md,
which takes :func:`report_part`).
"""

from __future__ import annotations

from typing import Any

from hybridnb.image_text import runs as mm_runs
from hybridnb.studies import image_text_compare as mm_compare, runs, seed_tables, sweep

__all__ = ["COLUMNS", "plan", "configs", "train", "section", "plot", "lines", "report_part"]


def _point(params: dict[str, Any], alpha: float) -> dict[str, Any]:
    return {**params, "mm_strategies": [sweep.strategy_for_alpha(alpha)], "mm_alpha": float(alpha)}


def plan(params: dict[str, Any]) -> list:
    """Every config of the sweep (the zero-shot baseline included), checked before any work."""
    return [cfg for alpha in params.get("mm_alphas") or [] for cfg in mm_runs.check_runs(_point(params, alpha))]


def train(params: dict[str, Any], compute: bool = True, show_progress: bool = True) -> dict[float, list]:
    """{alpha: [(strategy, seed, report folder, results)]} of the image-text ratio sweep (``mm_alphas`` x
    ``mm_seeds``): trained now where missing (``compute``, ``mm_workers`` at once), else the finished ones."""
    out = {}
    for alpha in params.get("mm_alphas") or []:
        point = _point(params, alpha)
        if compute:
            out[float(alpha)] = mm_runs.run_image_text_all(point, show_progress=show_progress)[1]
        else:
            out[float(alpha)] = [(s, k, *found) for s, k, cfg in configs(point)
                                 if (found := runs.find_finished_dir(cfg)) is not None]
    return out


def configs(params: dict[str, Any]) -> list:
    """(strategy, seed, checked config) of every ``mm_strategies`` x ``mm_seeds`` run of ``params``."""
    return [(s, k, mm_runs.check_run({**params, "seed": k}, s)) for s in params["mm_strategies"]
            for k in mm_runs.seeds(params)]


def section(params: dict[str, Any], n: int, seed: int) -> dict[str, Any] | None:
    """The image-text ratio sweep from its finished runs: {alpha label: system} as
    :mod:`hybridnb.studies.image_text_compare` reads them (alpha 0 / 1 are the cross / mono runs, 0.5 hybrid), the
    seed summaries of its columns, their table (with each point's seeds) and every point minus alpha = 0.5. None
    without the reference and one more."""
    alphas = sorted({0.0, 0.5, 1.0, *map(float, params.get("mm_alphas") or [])})
    systems = {}
    for a in alphas:
        point = _point(params, a)
        done = [(k, f) for _, k, cfg in configs(point) if (f := runs.find_finished_dir(cfg))]
        if done:
            system = {"runs": [{"seed": k, "dir": f[0], "results": f[1]} for k, f in done]}
            systems[f"alpha={a:g}"] = {**system, "results": done[0][1][1], "dir": done[0][1][0]}
    if sweep.REFERENCE not in systems or len(systems) < 2:
        return None
    summaries = mm_compare.seed_summaries(systems, n, seed)
    sig = mm_compare.significance(systems, target=sweep.REFERENCE, n_resamples=n, seed=seed)
    return {"systems": systems, "summaries": summaries,
            "table": seed_tables.system_table(summaries, list(mm_compare.COLUMNS), title=str),
            "verdicts": sig, "seeds": {label: len(s["runs"]) for label, s in systems.items()}}


COLUMNS = ("t2i R@10", "t2i R@10 unseen", "caption X→Y mAP", "caption X→Y mAP unseen")


def plot(sec: dict):
    """Image-text metrics vs alpha (:func:`hybridnb.studies.seed_tables.plot_alpha_sweep`)."""
    return seed_tables.plot_alpha_sweep(sec["summaries"], {c: c for c in COLUMNS}, "image-text (OpenMoji-CLDR)",
                                        unit="test images", colour="C2")


def lines(sec: dict, figure: str) -> list[str]:
    v = sec["verdicts"]
    v = v[v.baseline.str.startswith("alpha=")]
    beyond = v[v.verdict.str.rstrip("?") != "no difference"]
    sentence = ("No point differs from alpha = 0.5 beyond noise in any column." if beyond.empty else
                "Differences from alpha = 0.5 beyond noise: " + "; ".join(
                    f"{r.baseline} {'worse' if r.verdict.startswith('win') else 'better'} than alpha = 0.5 on {r.column}"
                    for _, r in beyond.iterrows()) + ".")  # the verdicts are alpha = 0.5's against each point
    return ["Image-text (the image-text study's own recipe, `reports/<profile>/MULTIMODAL.md`): text→image and caption "
            "retrieval against alpha, mean over seeds [95% interval over seeds and test images]:", "",
            seed_tables.frame_markdown(sec["table"].loc[sorted(sec["table"].index, key=seed_tables.alpha_of)],
                                       index="point"), "",
            sentence, "",
            f"![image-text sweep]({figure})", ""]


def report_part(params: dict[str, Any], n: int, seed: int) -> dict[str, Any] | None:
    """REPORT.md's image-text sweep: {"section", "lines", "figures"} (figure paths relative to the profile's
    report folder), or None while the sweep has no finished point beside alpha = 0.5."""
    sec = section(params, n, seed) if params.get("mm_alphas") else None
    if sec is None:
        return None
    figure = "figures/ratio_sweep_image_text.png"
    return {"section": sec, "lines": lines(sec, figure), "figures": {figure: plot(sec)}}
