"""Evaluation: LAReQA metrics (mAP, recall@k, rank distance) and their result container, the slow reference
implementation, bootstrap CIs and paired tests, seed-aware statistics, the encode-once runner, and for large
corpora (MIRACL) sharded corpus embeddings, faiss search and trec_eval metrics.

Modules:
    results          The result of an evaluation (:class:`EvalResult`), its macro-averaging, and the input checks.
    reference        Slow per-query reference implementation of the LAReQA metrics, with scikit-learn.
    metrics          LAReQA-style retrieval metrics: mono-, cross- and multilingual mAP, recall@k and rank distance.
    stats            Bootstrap confidence intervals and paired significance tests for `hybridnb.evaluation.metrics` results.
    seed_stats       Statistics over training seeds and questions: what a claim about training strategies has to beat.
    runner           Evaluate an encoder on a LAReQA task: encode every text once, score, add CIs, build the results block.
    corpus_index     Corpus embeddings on disk in fixed-size shards: encoded once, resumable after a kill, split across processes.
    dense_search     Top-k inner-product search over a sharded corpus index with faiss: exact by default, approximate on request.
    trec_metrics     nDCG@10 and Recall@100 per query by trec_eval itself (pytrec_eval), and the adapter for the bootstrap.
"""

from hybridnb.evaluation import (  # noqa: F401
    results, reference, metrics, stats, seed_stats, runner, corpus_index, dense_search, trec_metrics,
)
from hybridnb.evaluation.results import (  # noqa: F401
    EvalResult, metric_cells, cell_sums, macro_average, json_safe, DEFAULT_KS,
)
from hybridnb.evaluation.reference import reference_evaluate  # noqa: F401
from hybridnb.evaluation.metrics import evaluate, evaluate_scores, topk  # noqa: F401
from hybridnb.evaluation.stats import (  # noqa: F401
    confidence_intervals, compare, group_tables, mean_of_macro_ci,
)
from hybridnb.evaluation.seed_stats import (  # noqa: F401
    average_over_seeds, seed_summary, seed_compare, verdict, format_p, KEYS,
)
from hybridnb.evaluation.runner import (  # noqa: F401
    TaskEvaluation, encode_task, evaluate_encoder, results_block, score_task,
)
from hybridnb.evaluation.corpus_index import CorpusIndex, process_rank, encoder_dim  # noqa: F401
from hybridnb.evaluation.dense_search import INDEX_TYPES, check_index, search  # noqa: F401
from hybridnb.evaluation.trec_metrics import MEASURES, TrecResult, per_query, run_dict  # noqa: F401

__all__ = [
    'results', 'reference', 'metrics', 'stats', 'seed_stats', 'runner', 'EvalResult', 'metric_cells',
    'cell_sums', 'macro_average', 'json_safe', 'DEFAULT_KS', 'reference_evaluate', 'evaluate',
    'evaluate_scores', 'topk', 'confidence_intervals', 'compare', 'group_tables', 'mean_of_macro_ci',
    'average_over_seeds', 'seed_summary', 'seed_compare', 'verdict', 'format_p', 'KEYS',
    'TaskEvaluation', 'encode_task', 'evaluate_encoder', 'results_block', 'score_task',
    'corpus_index', 'dense_search', 'trec_metrics', 'CorpusIndex', 'process_rank', 'encoder_dim', 'INDEX_TYPES',
    'check_index', 'search', 'MEASURES', 'TrecResult', 'per_query', 'run_dict',
]
