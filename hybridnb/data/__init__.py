"""Data: the raw files (sources), the LAReQA retrieval tasks, the parallel training tables (LAReQA, mMARCO),
the overlap check that keeps evaluation text out of training, and MIRACL dev (the paper's third benchmark).

Modules:
    languages        The one check of a language list (every loader's languages=) and of a table's language columns.
    sources          Fetch and verify the raw data files (LAReQA XQuAD-R / MLQA-R, XTD10 captions, Multi30k captions).
    retrieval_task   A multilingual retrieval task: questions, a candidate pool and relevance in CSR form.
    lareqa_files     Parser of the raw LAReQA files (XQuAD-R, MLQA-R): paragraphs, sentences, questions, answer sentences.
    lareqa           LAReQA retrieval tasks (XQuAD-R, MLQA-R), built exactly as LAReQA (Roy et al., 2020) defines them.
    parallel_table   The parallel training table: item -> per language a query, its positive and hard negatives.
    overlap          Overlap between training data and an evaluation task: never train on evaluation text.
    mmarco           mMARCO (Bonifacio et al. 2021, parallel MS MARCO in 14 languages) as a parallel training table.
    train_data       Training data for hybrid batch training: a parallel table of (query, positive, hard negatives).
    miracl           MIRACL dev: queries, relevance judgements and passages per language, from the hub or a local copy, cached as Arrow.
"""

from hybridnb.data import (  # noqa: F401
    languages, sources, retrieval_task, lareqa_files, lareqa, parallel_table, overlap, mmarco, train_data, miracl,
)
from hybridnb.data.languages import (  # noqa: F401
    check_languages, check_item_columns, language_counts, check_every_language_used,
)
from hybridnb.data.sources import (  # noqa: F401
    ChecksumError, DownloadError, RawFile, DATASETS, RAW_FILES, XQUAD_R_LANGUAGES, MLQA_R_LANGUAGES,
    MIRROR_ENV, dataset_files, dataset_languages, fetch, sha256_file,
)
from hybridnb.data.retrieval_task import RetrievalTask  # noqa: F401
from hybridnb.data.lareqa_files import RawQuestion, Paragraph, parse_file  # noqa: F401
from hybridnb.data.lareqa import (  # noqa: F401
    TASK_LANGUAGES, build_task, load_task, processed_dir, language_stats,
)
from hybridnb.data.parallel_table import ParallelTable, Passage, CANDIDATE_MODES  # noqa: F401
from hybridnb.data.overlap import (  # noqa: F401
    DataLeakError, normalize_text, check_no_overlap, remove_overlap,
)
from hybridnb.data.mmarco import MMARCO_LANGUAGES, load_mmarco  # noqa: F401
from hybridnb.data.train_data import collate, from_lareqa, split_validation  # noqa: F401
from hybridnb.data.miracl import (  # noqa: F401
    MIRACL_LANGUAGES, PAPER_LANGUAGES, MiraclLanguage, MiraclUnavailable, Passages,
)

__all__ = [
    'languages', 'check_languages', 'check_item_columns', 'language_counts', 'check_every_language_used', 'sources', 'retrieval_task', 'lareqa_files', 'lareqa', 'parallel_table', 'overlap', 'mmarco',
    'train_data', 'ChecksumError', 'DownloadError', 'RawFile', 'DATASETS', 'RAW_FILES',
    'XQUAD_R_LANGUAGES', 'MLQA_R_LANGUAGES', 'MIRROR_ENV', 'dataset_files', 'dataset_languages',
    'fetch', 'sha256_file', 'RetrievalTask', 'RawQuestion', 'Paragraph', 'parse_file', 'TASK_LANGUAGES',
    'build_task', 'load_task', 'processed_dir', 'language_stats', 'ParallelTable', 'Passage',
    'CANDIDATE_MODES', 'DataLeakError', 'normalize_text', 'check_no_overlap', 'remove_overlap',
    'MMARCO_LANGUAGES', 'load_mmarco', 'collate', 'from_lareqa', 'split_validation',
    'miracl', 'MIRACL_LANGUAGES', 'PAPER_LANGUAGES', 'MiraclLanguage', 'MiraclUnavailable', 'Passages',
]
