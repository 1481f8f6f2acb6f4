"""hybridnb: hybrid batch training of multilingual dense retrievers, as reproducible notebooks.

Elmahdy, Lin, Ahmad (2024), arXiv:2408.10536. The library holds the logic; the notebooks stay thin.

Where a run's data flows (``python -m hybridnb train --profile cpu``, notebook 03, ``make reproduce``):

1. **profile** -> ``params/<profile>.yaml`` is read by :func:`hybridnb.config.load_profile` (a flat mapping of
   notebook parameters); ``--set key=value`` / papermill ``-p`` override single keys.
2. **config** -> :func:`hybridnb.studies.runs.check_run` builds the run's typed, frozen
   :class:`hybridnb.config.TextRunConfig` once, checking every key before any work (type, choices and bounds
   from its fields, then the strategy, datasets and model); it carries the strategy parsed into batch-kind
   weights, the hash of its result-defining fields (``RUN_KEYS``) and the run's name. A finished run with the
   same hash under ``reports/runs/<name>/`` is reused (:func:`~hybridnb.training.run_folder.find_finished`).
3. **data** -> :mod:`hybridnb.data`: the raw files are fetched and verified (``sources``), parsed into
   LAReQA retrieval tasks (``lareqa``) and into a parallel training table of (query, positive, hard
   negatives) per item and language (``train_data``); evaluation text is removed from the training
   table (``overlap``), and a fixed validation split is held out.
4. **sampler** -> :class:`hybridnb.training.HybridBatchSampler` turns the table's availability matrix into
   batches of (item, query language, passage language): mono with probability ``alpha``, else cross.
5. **trainer** -> :func:`hybridnb.training.train` encodes each batch with the shared-weight
   :class:`hybridnb.models.Encoder`, takes InfoNCE with in-batch and hard negatives
   (:func:`hybridnb.training.info_nce`), validates on the held-out items, keeps the best checkpoint
   and can resume exactly from the last one (the loop :func:`hybridnb.training.train_loop`, which the
   image-text runs share).
6. **evaluator** -> :func:`hybridnb.evaluation.runner.evaluate_encoder` encodes every question and
   candidate of each evaluation task once and :func:`hybridnb.evaluation.evaluate` computes mono, cross
   and multilingual mAP, R@k and rank distance per question, with bootstrap CIs (``evaluation.stats``).
7. **report** -> :func:`hybridnb.training.run_folder.write_run` writes ``reports/runs/<name>/`` (config, results,
   per-query arrays, loss curve) atomically; :mod:`hybridnb.studies.report` (notebooks 04 and 05) reads the
   recipe's runs (:mod:`hybridnb.studies.recipe`) into the one report, ``reports/REPORT.md``.

Steps 2-7 are one skeleton, :func:`hybridnb.training.run_folder.execute` (find finished -> prepare -> train ->
evaluate -> write), run with a small task object: :class:`~hybridnb.studies.runs.TextRun` for these runs,
:class:`~hybridnb.image_text.runs.ImageTextRun` for image-text runs (an image tower in place of the
passage side) and their zero-shot baseline.
"""

__version__ = "0.1.0"
