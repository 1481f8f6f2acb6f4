"""Evaluate an encoder on a LAReQA task: encode every text once, score, add CIs, build the results block.

Shared by the zero-shot notebook, the training notebook and the benchmarks, so every number in
reports/ comes from the same code path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from hybridnb import evaluation
from hybridnb.evaluation import stats
from hybridnb.data.lareqa import RetrievalTask


@dataclass
class TaskEvaluation:
    task: RetrievalTask
    result: evaluation.EvalResult
    block: dict[str, Any]          # the dataset entry of the results JSON schema
    timings: dict[str, float]


def encode_task(encoder, task: RetrievalTask, candidate_mode: str, batch_size: int,
                show_progress: bool = True, autocast_dtype=None) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Query and candidate embeddings, each text encoded exactly once (length-sorted batches)."""
    t0 = time.perf_counter()
    q_emb = encoder.encode(list(task.questions["text"]), role="query", batch_size=batch_size,
                           show_progress=show_progress, autocast_dtype=autocast_dtype)
    t1 = time.perf_counter()
    c_emb = encoder.encode(task.candidate_inputs(candidate_mode), role="passage", batch_size=batch_size,
                           show_progress=show_progress, autocast_dtype=autocast_dtype)
    t2 = time.perf_counter()
    return q_emb, c_emb, {"encode_queries_s": t1 - t0, "encode_candidates_s": t2 - t1}


def score_task(task: RetrievalTask, q_emb: np.ndarray, c_emb: np.ndarray) -> evaluation.EvalResult:
    return evaluation.evaluate(
        q_emb, c_emb,
        q_lang=task.question_langs, c_lang=task.candidate_langs,
        relevant_indptr=task.relevant_indptr, relevant_indices=task.relevant_indices,
        languages=list(task.languages), q_group=np.asarray(task.questions["id"]))  # ids: bootstrap unit


def evaluate_encoder(encoder, task: RetrievalTask, candidate_mode: str = "sentence+context",
                     batch_size: int = 64, n_resamples: int = 1000, seed: int = 0,
                     show_progress: bool = True, autocast_dtype=None) -> TaskEvaluation:
    """Encode once, score, bootstrap. ``autocast_dtype`` (e.g. torch.bfloat16) speeds up encoding."""
    q_emb, c_emb, timings = encode_task(encoder, task, candidate_mode, batch_size, show_progress, autocast_dtype)
    t0 = time.perf_counter()
    result = score_task(task, q_emb, c_emb)
    timings["metrics_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cis = stats.confidence_intervals(result, n_resamples=n_resamples, seed=seed)
    timings["bootstrap_s"] = time.perf_counter() - t0
    block = results_block(task, result, cis, candidate_mode, n_resamples, seed)
    return TaskEvaluation(task, result, block, timings)


def results_block(task, result, cis, candidate_mode, n_resamples, seed) -> dict[str, Any]:
    """One dataset's entry in the results JSON (schema: docs/training.md)."""
    summary = result.summary()
    block: dict[str, Any] = {
        "languages": list(task.languages),
        "n_queries": int(len(task.questions)),
        "n_candidates": int(len(task.candidates)),
        "candidate_mode": candidate_mode,
        "bootstrap": {"unit": "question id", "n_resamples": n_resamples, "confidence": 0.95, "seed": seed},
    }
    block["bootstrap"]["method"] = cis["method"]
    for setting in ("mono", "cross", "multi"):
        block[setting] = {m: _entry(summary[setting][m], cis[setting][m]) for m in ("map", "r@1", "r@10")}
    block["rank_distance"] = _entry(summary["rank_distance"], cis["rank_distance"])
    block["map_matrix"] = {"languages": list(task.languages), "values": summary["map_matrix"]}
    block["per_language"] = summary.get("per_language", {})
    return block


def _entry(value, ci: dict) -> dict[str, Any]:
    """{"value", "ci": [low, high], "se"}: the point estimate is the summary's, the interval the bootstrap's."""
    return {"value": value, "ci": [ci["low"], ci["high"]], "se": ci.get("se")}
