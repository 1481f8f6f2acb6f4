"""Notebook 06: how hybrid batch training compares across backbones (mBERT, XLM-R, mT5, LaBSE, E5, USE, BM25).

Two questions, two tables:

* **Zero-shot**: every backbone of the profile evaluated untouched on the evaluation sets. Results live in
  ``reports/<profile>/zero_shot/<source slug>/`` (the layout of notebook 02, so the profile's own model's
  zero-shot results from notebook 02 are reused when their settings match, see :func:`hybridnb.studies.zero_shot.find`).
  A backbone that cannot run here (a hub model without network) gets a row saying so, never a silent gap.
* **Fine-tuning gains**: for each backbone the profile fine-tunes, one run per strategy (mono / cross /
  hybrid) through :func:`hybridnb.studies.runs.run` (reused by config hash: the profile's own model's runs are
  notebook 03's), and the paired difference of each run against the backbone's zero-shot start, and of
  hybrid against each baseline, with paired bootstrap CIs and permutation p-values (:func:`hybridnb.evaluation.stats.compare`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd

from hybridnb.models import backbones, precision
from hybridnb.studies import compare, runs, seed_tables, zero_shot
from hybridnb import config, reporting
from hybridnb.evaluation import stats
from hybridnb.evaluation.metrics import EvalResult

__all__ = ["check_study", "model_name", "zero_shot_dir", "zero_shot_results", "zero_shot_table",
           "finetune_params", "finetune", "gains_table", "zero_shot_frame", "plot_zero_shot", "plot_hybrid_gains",
           "gains_wide", "report_markdown"]

SUMMARY = [("mono", "map"), ("cross", "map"), ("multi", "map"), ("mono", "r@1"), ("mono", "r@10"),
           ("rank_distance", None)]


def check_study(params: dict[str, Any]) -> dict[str, Any]:
    """Validate backbones, fine-tuning choices and every run they imply, before any work."""
    names = list(params.get("backbones") or [])
    if not names:
        raise ValueError("`backbones` must name at least one backbone; choose from " + ", ".join(backbones.list_backbones()))
    specs = [backbones.get_backbone(n) for n in names]       # unknown names fail here
    tune = [backbones.get_backbone(n) for n in params.get("finetune_backbones") or []]
    for spec in tune:
        if not spec.trainable:
            raise ValueError(f"{spec.name} is evaluated zero-shot only and cannot be fine-tuned")
        if spec.name not in [s.name for s in specs]:
            raise ValueError(f"fine-tuned backbone {spec.name} must also be in `backbones` (its zero-shot start)")
    config.check_eval_datasets(params["eval_datasets"])
    config.check_candidate_mode(params["candidate_mode"])
    config.check_encode_dtype(params["encode_dtype"])
    for spec in tune:
        for strategy in params.get("strategies") or [params["strategy"]]:
            runs.check_run(finetune_params(params, spec.name, strategy))
    return {"backbones": [s.name for s in specs], "finetune": [s.name for s in tune]}


def model_name(backbone: str, params: dict[str, Any]) -> str:
    """The model string of a backbone: the profile's own ``model`` when the backbone is that model (so
    notebook 02's zero-shot results and notebook 03's runs are found), else the backbone's source."""
    spec = backbones.get_backbone(backbone)
    return params["model"] if params["model"] in (spec.name, spec.source, *spec.aliases) else spec.source


def zero_shot_dir(params: dict[str, Any], backbone: str) -> Path:
    """Same folder as notebook 02 for the same model."""
    return zero_shot.result_dir(params["profile"], model_name(backbone, params))


def zero_shot_results(backbone: str, tasks: dict, params: dict[str, Any], show_progress: bool = True,
                      out: Path | None = None) -> dict[str, Any]:
    """Zero-shot results of one backbone (schema of notebook 02), reused from disk when they match; in
    ``out`` (default: :func:`zero_shot_dir`)."""
    out = zero_shot_dir(params, backbone) if out is None else Path(out)
    record = zero_shot.model_record(model_name(backbone, params), params["max_length"], params["candidate_mode"],
                                    params["encode_dtype"])
    saved = zero_shot.find(out, record, tasks, params["n_resamples"], params["seed"], params["encode_dtype"])
    if saved is not None:
        return saved
    spec = backbones.get_backbone(backbone)
    start = time.time()
    encoder = None if spec.family == "lexical" else backbones.load_backbone(backbone, max_length=params["max_length"])
    evaluations = {name: backbones.evaluate_backbone(
        backbone, task, params["candidate_mode"], params["encode_batch_size"], params["n_resamples"], params["seed"],
        show_progress=show_progress, autocast_dtype=precision.encode_arg(params["encode_dtype"]),
        max_length=params["max_length"], encoder=encoder) for name, task in tasks.items()}
    results = zero_shot.results_json(record, params["profile"], evaluations, time.time() - start, backbone=backbone)
    zero_shot.write(out, results, {n: ev.result for n, ev in evaluations.items()},
                    f"Zero-shot results: {backbone} ({spec.source})")
    return results


def zero_shot_table(availability: pd.DataFrame, results: dict[str, dict], dataset: str) -> pd.DataFrame:
    """Rows: every backbone of the study; columns: 'value [low, high]' per metric, or why it has none."""
    rows = {}
    for name in availability.index:
        res = results.get(name)
        if res is None:
            rows[name] = {"status": availability.loc[name, "status"]}
            continue
        block = res["datasets"][dataset]
        row = {"status": "ok"}
        for s, m in SUMMARY:
            row[compare.column_name(s, m)] = reporting.format_ci(block[s][m] if m else block[s], 2 if m is None else 3)
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def finetune_params(params: dict[str, Any], backbone: str, strategy) -> dict[str, Any]:
    """Run parameters for fine-tuning ``backbone`` with ``strategy``. The profile's own model keeps the
    default run name (so notebook 03's runs are reused); other backbones get theirs in the name."""
    spec = backbones.get_backbone(backbone)
    model = model_name(backbone, params)
    out = {**params, "model": model, "strategy": strategy, "run_name": None}
    if model != params["model"]:
        cfg = runs.check_run({**out, "run_name": "x"})
        out["run_name"] = (f"{params['profile']}-{spec.name}-{runs.strategy_label(strategy, params['alpha'])}-"
                           f"{Path(str(cfg.train_data)).stem}-to-{'+'.join(cfg.eval_data)}-seed{cfg.seed}")
    return out


def finetune(params: dict[str, Any], backbone: str, show_progress: bool = True) -> dict[str, dict[str, Any]]:
    """{system label: {"results", "dir"}} for each strategy (trained now, or reused by config hash)."""
    systems = {}
    for strategy in params.get("strategies") or [params["strategy"]]:
        run_params = finetune_params(params, backbone, strategy)
        report_dir, results = runs.run(run_params, show_progress=show_progress)
        systems[compare.system_label(strategy)] = {"results": results, "dir": report_dir}
    return systems


def _paired(a: EvalResult, b: EvalResult, params: dict[str, Any]) -> dict:
    return stats.compare(a, b, n_resamples=params["n_resamples"], seed=params["seed"])


def gains_table(backbone: str, systems: dict, params: dict[str, Any], target: str = "hybrid") -> pd.DataFrame:
    """Long frame per (dataset, comparison, column): each strategy minus zero-shot, and ``target`` minus
    each baseline; difference, 95% paired bootstrap CI, permutation p-value."""
    rows = []
    for dataset in compare.datasets(systems):
        zs = compare.load_per_query(zero_shot_dir(params, backbone), dataset)
        per_query = {k: compare.load_per_query(v["dir"], dataset) for k, v in systems.items()}
        pairs = [(f"{k} - zero-shot", per_query[k], zs) for k in systems]
        if target in per_query:
            pairs += [(f"{target} - {k}", per_query[target], per_query[k]) for k in systems if k != target]
        for label, a, b in pairs:
            cmp = _paired(a, b, params)
            for s, m in SUMMARY:
                e = cmp["rank_distance"] if s == "rank_distance" else cmp[s][m]
                rows.append({"backbone": backbone, "dataset": dataset, "comparison": label,
                             "column": compare.column_name(s, m), "diff": e["diff"], "low": e["low"],
                             "high": e["high"], "p_value": e["p_value"]})
    return pd.DataFrame(rows)


# ---- notebook 06's figures and BACKBONES.md ---------------------------------------------------------------


def zero_shot_frame(results: dict[str, dict], backbones_order: list[str] | None = None) -> pd.DataFrame:
    """Long frame: backbone, dataset, setting, mAP (NaN where the backbone cannot do the setting), low, high."""
    rows = []
    for name in backbones_order or list(results):
        for d, b in results[name]["datasets"].items():
            for s in ("mono", "cross", "multi"):
                e = b[s]["map"]
                ci = e.get("ci") or [None, None]
                rows.append({"backbone": name, "dataset": d, "setting": s, "mAP": e["value"], "low": ci[0],
                             "high": ci[1]})
    return pd.DataFrame(rows, columns=["backbone", "dataset", "setting", "mAP", "low", "high"]).astype(
        {"mAP": float, "low": float, "high": float})


def plot_zero_shot(frame: pd.DataFrame, profile: str):
    """backbones_zero_shot.png: mAP per setting, one bar per backbone, 95% CIs; n/a written where a backbone
    cannot do a setting (BM25 is monolingual only)."""
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(frame.dataset))
    backbones_order = list(dict.fromkeys(frame.backbone))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 3.6), squeeze=False, sharey=True)
    for ax, d in zip(axes.flat, datasets):
        values = ["mAP", "low", "high"]
        wide = frame[frame.dataset == d].pivot(index="setting", columns="backbone", values=values)
        seed_tables.grouped_bars(ax, *(wide[v].reindex(["mono", "cross", "multi"], columns=backbones_order)
                                       for v in values))
        ax.set(title=f"{d}: zero-shot", ylabel="mAP" if ax is axes.flat[0] else None, ylim=(0, 1))
    axes.flat[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle(f"zero-shot mAP per backbone, 95% bootstrap CIs ({profile} profile)")
    fig.tight_layout()
    return fig


def plot_hybrid_gains(gains: pd.DataFrame):
    """backbones_hybrid_gain.png: hybrid minus each baseline (and zero-shot) in mono / cross / multi mAP, one
    bar group per (backbone, comparison), 95% paired CIs; one panel per dataset, one y scale."""
    import matplotlib.pyplot as plt

    plot = gains[gains.comparison.str.startswith("hybrid") & gains.column.str.endswith("map")]
    datasets = list(dict.fromkeys(plot.dataset))
    fig, axes = plt.subplots(1, max(len(datasets), 1), figsize=(6.5 * max(len(datasets), 1), 3.8),
                             squeeze=False, sharey=True)
    columns = [c for c in ("mono map", "cross map", "multi map") if c in set(plot.column)]
    for ax, d in zip(axes.flat, datasets):
        g = plot[plot.dataset == d]
        g = g.assign(group=[f"{b}\n{c.removeprefix('hybrid - ')}" for b, c in zip(g.backbone, g.comparison)])
        values = ["diff", "low", "high"]
        wide = g.pivot(index="group", columns="column", values=values)
        seed_tables.grouped_bars(ax, *(wide[v].reindex(list(dict.fromkeys(g.group)), columns=columns)
                                       for v in values))
        ax.axhline(0, color="black", lw=0.8)
        ax.tick_params(axis="x", labelsize=8)  # two-line group names, one per (backbone, baseline)
        ax.set(title=f"{d}: hybrid minus the baseline under each group\n"
                     "one training seed: 95% CIs over questions only, not a claim",
               ylabel="mAP difference" if ax is axes.flat[0] else None)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def gains_wide(gains: pd.DataFrame) -> pd.DataFrame:
    """Rows (backbone, dataset, comparison); columns in :data:`SUMMARY` order; 'diff [low, high] p=...'."""
    if gains.empty:
        return pd.DataFrame()
    rows = ["backbone", "dataset", "comparison"]  # sorted, as BACKBONES.md has always listed them
    return seed_tables.wide(gains.sort_values(rows, kind="stable"), rows, lambda r: reporting.interval(
        r.diff, r.low, r.high, 3, sign=True) + f" p={r.p_value:.2g}", order=list(dict.fromkeys(gains.column)))


def report_markdown(params: dict[str, Any], zs_tables: dict[str, pd.DataFrame], gains: pd.DataFrame,
                    figures: list[str], prov: dict) -> str:
    """reports/<profile>/BACKBONES.md: the zero-shot table per dataset, the fine-tuning gains, the figures."""
    tables = "\n\n".join(f"### {d}: zero-shot\n\n" + reporting.markdown_table(
        t.reset_index(names="backbone").fillna("").to_dict("records")) for d, t in zs_tables.items())
    wide = gains_wide(gains)
    gains_md = (reporting.markdown_table(wide.reset_index().to_dict("records")) if len(wide)
                else "No backbone was fine-tuned here.")
    return (f"# Backbones ({params['profile']} profile)\n\n{reporting.stamp(prov)}\n\nZero-shot: every backbone "
            "of the profile; 95% bootstrap CIs over question ids; rank distance: lower is better; BM25 is "
            "monolingual only (n/a elsewhere); a backbone that could not run here says why.\n\n" + tables +
            f"\n\n## Fine-tuning gains\n\nRuns: {params['steps']} steps of {params['batch_size']} pairs on "
            f"{params['train_data']}, **one training seed** ({params['seed']}). Each cell: paired difference [95% "
            "bootstrap CI over questions] and permutation p-value over questions. These measure question sampling "
            "only, not training noise, so they are not a claim about the strategies: the seed-aware comparison of "
            "the profile's own model, over every seed, is [REPORT.md](../REPORT.md), and where the two disagree "
            "REPORT.md's verdict holds.\n\n" + gains_md + "\n\nFigures: " +
            ", ".join(f"[{Path(f).name}](figures/{Path(f).name})" for f in figures) + "\n")
