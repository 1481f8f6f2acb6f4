"""Integrations: hybridnb's sampler and evaluator inside other libraries' training and evaluation loops
(sentence-transformers' trainer, mteb), built on the library's own code, never re-implementing it.

Modules:
    st_sampler       Hybrid batches in sentence-transformers' trainer: :class:`HybridBatchSampler` behind its ``batch_sampler`` hook.
    st_evaluator     The LAReQA evaluator as a sentence-transformers evaluator: ``evaluator=LAReQAEvaluator(task)`` in training.
    mteb_task        The pooled LAReQA setting as an mteb retrieval task, built in code from a :class:`RetrievalTask` (no hub data).
    st_training      hybridnb's recipe trained by ``SentenceTransformerTrainer``: the same batches, loss, optimizer, schedule, precision and checkpoint rule.
"""

from hybridnb.integrations import st_sampler, st_evaluator, mteb_task, st_training  # noqa: F401
from hybridnb.integrations.st_sampler import (  # noqa: F401
    LAYOUT_COLUMNS, HybridSTBatchSampler, PairLayout, hybrid_batch_sampler, pair_dataset, pair_layout,
    training_columns,
)
from hybridnb.integrations.st_evaluator import LAReQAEvaluator, flat_metrics  # noqa: F401
from hybridnb.integrations.mteb_task import lareqa_mteb_task  # noqa: F401
from hybridnb.integrations.st_training import build_st_trainer, train_st  # noqa: F401

__all__ = [
    'st_sampler', 'st_evaluator', 'mteb_task', 'LAYOUT_COLUMNS', 'HybridSTBatchSampler', 'PairLayout',
    'hybrid_batch_sampler', 'pair_dataset', 'pair_layout', 'training_columns', 'LAReQAEvaluator',
    'flat_metrics', 'lareqa_mteb_task', 'st_training', 'build_st_trainer', 'train_st',
]
