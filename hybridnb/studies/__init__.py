"""Studies: they compose runs and write reports. One text training run end to end, zero-shot results on disk,
the strategy comparison (REPORT.md), the paper's numbers, the mix-ratio sweep, the backbone study, the recipe
and its one report (REPORT.md), the budget, MIRACL dev (notebook 09), and the image-text comparison and ratio
sweep (notebooks 07, 05), and sentence-transformers' trainer against hybridnb's (notebook 08).

Modules:
    zero_shot        Zero-shot results on disk: where they live, whether saved ones still match, and writing them atomically.
    runs             One text training run end to end: the text task of the run skeleton (training.run_folder).
    paper_numbers    The paper's own numbers, transcribed by hand into ``paper_numbers.yaml``, for REPORT.md to print beside ours.
    compare          The comparison behind notebook 04 and reports/REPORT.md: zero-shot vs X-X-mono vs X-Y vs hybrid.
    sweep            The mix-ratio study (notebook 05): which runs make up the sweep and how their results line up.
    backbone_study   Notebook 06: how hybrid batch training compares across backbones (mBERT, XLM-R, mT5, LaBSE, E5, USE, BM25).
    budget           The pipeline's own record of time and memory: reports/<profile>/BUDGET.md and budget.json.
    recipe           The recipe, chosen on held-out data, and every run of the report trained with it.
    seed_tables      The seed-aware tables and figures of REPORT.md (report composes them).
    report           REPORT.md, the one report of ``make reproduce``: the recipe's runs, with seeds, in both directions.
    matrix           The reproduction matrix: each committed condition, the command that remakes it, the values it should give.
    miracl_eval      Notebook 09 and `python -m hybridnb miracl`: MIRACL dev (Tables 12-13) for the profile's models and finished runs.
    image_text_compare The image-text strategy comparison of notebook 07: the runs, the table, paired tests, verdicts, MULTIMODAL.md.
    image_text_sweep The image-text ratio sweep: hybrid's alpha at every seed, against alpha = 0.5 (notebook 05, REPORT.md).
    st_compare       Notebook 08 (`make st-compare`): SentenceTransformerTrainer against hybridnb's trainer, same recipe and seeds.
"""

from hybridnb.studies import (  # noqa: F401
    zero_shot, runs, paper_numbers, compare, sweep, backbone_study, budget, recipe, seed_tables, report,
    matrix, miracl_eval, image_text_compare, image_text_sweep, st_compare,
)

__all__ = [
    'zero_shot', 'runs', 'paper_numbers', 'compare', 'sweep', 'backbone_study', 'budget', 'recipe',
    'seed_tables', 'report', 'matrix', 'miracl_eval', 'image_text_compare', 'image_text_sweep',
    'st_compare',
]
