"""Studies: one training run end to end, zero-shot results on disk, the strategy comparison (REPORT.md),
the paper's numbers, the mix-ratio sweep, the backbone study, the seed study (STUDY.md), the budget and
MIRACL dev (notebook 09).

Modules:
    zero_shot        Zero-shot results on disk: where they live, whether saved ones still match, and writing them atomically.
    runs             One training run end to end: check the config, build the data, train, evaluate zero-shot, write the report.
    paper_numbers    The paper's own numbers, transcribed by hand into ``paper_numbers.yaml``, for REPORT.md to print beside ours.
    compare          The comparison behind notebook 04 and reports/REPORT.md: zero-shot vs X-X-mono vs X-Y vs hybrid.
    sweep            The mix-ratio study (notebook 05): which runs make up the sweep and how their results line up.
    backbone_study   Notebook 06: how hybrid batch training compares across backbones (mBERT, XLM-R, mT5, LaBSE, E5, USE, BM25).
    budget           The pipeline's own record of time and memory: reports/<profile>/BUDGET.md and budget.json.
    study            The study (`make study`, notebook 08): every strategy trained with several seeds, then compared.
    study_report     STUDY.md and its figures: the seed-aware comparison of X-X-mono, X-Y and hybrid (notebook 08).
    miracl_eval      Notebook 09 and `python -m hybridnb miracl`: MIRACL dev (Tables 12-13) for the profile's models and finished runs.
"""

from hybridnb.studies import (  # noqa: F401
    zero_shot, runs, paper_numbers, compare, sweep, backbone_study, budget, study, study_report, miracl_eval,
)

__all__ = [
    'zero_shot', 'runs', 'paper_numbers', 'compare', 'sweep', 'backbone_study', 'budget', 'study',
    'study_report', 'miracl_eval',
]
