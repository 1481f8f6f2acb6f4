"""Papermill parameter profiles (params/*.yaml) and the checks every entry point runs first.

A profile is a flat YAML mapping of notebook parameters. Checking it up front is what lets bad input fail
in a second, with a message naming the problem, instead of after an hour of encoding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hybridnb.paths import repo_root
from hybridnb.sources import MLQA_R_LANGUAGES, XQUAD_R_LANGUAGES

DATASET_LANGUAGES = {"xquad-r": XQUAD_R_LANGUAGES, "mlqa-r": MLQA_R_LANGUAGES}
CANDIDATE_MODES = ("sentence+context", "sentence")
ENCODE_DTYPES = ("float32", "bfloat16", "float16")  # float32 = the model's own precision, no autocast


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


def check_candidate_mode(mode: str) -> str:
    if mode not in CANDIDATE_MODES:
        raise ValueError(f"unknown candidate_mode {mode!r}; choose one of {list(CANDIDATE_MODES)}")
    return mode


def check_encode_dtype(name: str):
    """Map a profile's ``encode_dtype`` to the autocast dtype for encoding (None = no autocast)."""
    import torch

    if name not in ENCODE_DTYPES:
        raise ValueError(f"unknown encode_dtype {name!r}; choose one of {list(ENCODE_DTYPES)}")
    return None if name == "float32" else getattr(torch, name)
