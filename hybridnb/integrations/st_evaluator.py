"""The LAReQA evaluator as a sentence-transformers evaluator: ``evaluator=LAReQAEvaluator(task)`` in training.

It encodes the task's questions with ``model.encode_query`` and its candidates with ``model.encode_document``
(so the model's ``query`` / ``document`` prompts apply, as :meth:`hybridnb.models.Encoder.save` writes them) and
scores them with hybridnb's own evaluator, :func:`hybridnb.evaluation.runner.score_task` ->
:func:`hybridnb.evaluation.metrics.evaluate`: no metric is computed here. So the numbers are those of
``hybridnb.evaluation`` on the same embeddings (mono / cross / multi mAP over the full pool, R@1 / R@10, rank
distance; definitions in :mod:`hybridnb.evaluation.metrics`), and the trainer logs them as
``eval_<name>_<setting>_<metric>``. No bootstrap intervals here (they cost seconds per call and a training
log has no use for them): :func:`hybridnb.evaluation.runner.evaluate_encoder` gives those on the final model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hybridnb.data.retrieval_task import RetrievalTask
from hybridnb.evaluation import runner
from hybridnb.evaluation.results import EvalResult

__all__ = ["SETTINGS", "METRICS", "LAReQAEvaluator", "flat_metrics"]

SETTINGS = ("mono", "cross", "multi")
METRICS = ("map", "r@1", "r@10")


def _base_evaluator():
    try:
        from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator  # >= 6
    except ImportError:
        from sentence_transformers.evaluation import SentenceEvaluator  # 5.x

    return SentenceEvaluator


def flat_metrics(result: EvalResult) -> dict[str, float]:
    """``{"mono_map": ..., "cross_r@1": ..., "multi_r@10": ..., "rank_distance": ...}`` of a result's summary
    (an undefined metric, e.g. cross with one language, is NaN)."""
    summary = result.summary()
    out = {f"{s}_{m}": summary[s][m] for s in SETTINGS for m in METRICS}
    out["rank_distance"] = summary["rank_distance"]
    return {k: float("nan") if v is None else float(v) for k, v in out.items()}


class LAReQAEvaluator(_base_evaluator()):
    """LAReQA metrics of a SentenceTransformer on a :class:`RetrievalTask` (e.g. ``lareqa.load_task("xquad-r")``).

    ``candidate_mode``: ``"sentence"`` or ``"sentence+context"`` (the candidate with its paragraph, encoded
    as a text pair: sentence-transformers tokenises a ``(sentence, context)`` tuple as a pair, as ``Encoder``
    does). ``primary_metric``: the key the trainer selects the best checkpoint by (default ``multi_map``,
    LAReQA's headline; higher is better, so not ``rank_distance``). ``name`` prefixes every key.
    """

    def __init__(self, task: RetrievalTask, candidate_mode: str = "sentence", name: str = "lareqa",
                 batch_size: int = 64, primary_metric: str = "multi_map", show_progress_bar: bool = False):
        super().__init__()
        self.task = task
        task.candidate_inputs(candidate_mode)  # checks the mode (one clear error now, not mid-training)
        keys = [f"{s}_{m}" for s in SETTINGS for m in METRICS]
        if primary_metric not in keys:
            raise ValueError(f"primary_metric must be one of {keys} (higher is better), got {primary_metric!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.candidate_mode, self.name, self.batch_size = candidate_mode, name, batch_size
        self.primary_metric = primary_metric
        self.greater_is_better = True
        self.show_progress_bar = show_progress_bar

    def embed(self, model) -> tuple[np.ndarray, np.ndarray]:
        """(question embeddings (Nq, D), candidate embeddings (Nc, D)), float32."""
        kwargs = dict(batch_size=self.batch_size, show_progress_bar=self.show_progress_bar, convert_to_numpy=True)
        q_emb = model.encode_query(list(self.task.questions["text"]), **kwargs)
        c_emb = model.encode_document(self.task.candidate_inputs(self.candidate_mode), **kwargs)
        return np.asarray(q_emb, dtype=np.float32), np.asarray(c_emb, dtype=np.float32)

    def score(self, q_emb: np.ndarray, c_emb: np.ndarray) -> EvalResult:
        """hybridnb's evaluation of these embeddings (the same call as :func:`runner.evaluate_encoder`)."""
        return runner.score_task(self.task, q_emb, c_emb)

    def __call__(self, model, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        metrics = flat_metrics(self.score(*self.embed(model)))
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics

    def get_config_dict(self) -> dict[str, Any]:
        return {"task": self.task.name, "languages": list(self.task.languages),
                "candidate_mode": self.candidate_mode}
