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

from hybridnb.models import backbones
from hybridnb.studies import compare, runs, zero_shot
from hybridnb import config, reporting
from hybridnb.evaluation import stats
from hybridnb.evaluation.metrics import EvalResult

__all__ = ["check_study", "model_name", "zero_shot_dir", "zero_shot_results", "zero_shot_table",
           "finetune_params", "finetune", "gains_table"]

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
    saved = zero_shot.find(out, record, tasks, params["n_resamples"], params["seed"])
    if saved is not None:
        return saved
    spec = backbones.get_backbone(backbone)
    start = time.time()
    encoder = None if spec.kind == "lexical" else backbones.load_backbone(backbone, max_length=params["max_length"])
    evaluations = {name: backbones.evaluate_backbone(
        backbone, task, params["candidate_mode"], params["encode_batch_size"], params["n_resamples"], params["seed"],
        show_progress=show_progress, autocast_dtype=config.check_encode_dtype(params["encode_dtype"]),
        max_length=params["max_length"], encoder=encoder) for name, task in tasks.items()}
    results = zero_shot.results_json(record, params["profile"], evaluations, time.time() - start, backbone=backbone)
    zero_shot.write(out, results, {n: ev.result for n, ev in evaluations.items()},
                    f"Zero-shot results: {backbone} ({spec.source})")
    return results


def _cell(block: dict, setting: str, metric: str | None) -> dict:
    entry = block["rank_distance"] if setting == "rank_distance" else block[setting][metric]
    return entry if entry is not None else {"value": None}


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
            row[compare.column_name(s, m)] = reporting.format_ci(_cell(block, s, m), 2 if m is None else 3)
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
                           f"{Path(str(cfg['train_data'])).stem}-to-{'+'.join(cfg['eval_data'])}-seed{cfg['seed']}")
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
        zs = EvalResult.load(zero_shot_dir(params, backbone) / f"per_query_{dataset}.npz")
        per_query = {k: compare.load_per_query(v, dataset) for k, v in systems.items()}
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
