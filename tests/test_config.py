"""The typed run configs (hybridnb.config): one checked, frozen object per run, its hash the committed one.

The committed runs' hashes are checked file by file in test_layout; here: the field rules and their messages,
that the Literal types say what the library accepts, that every field is a documented parameter, and that a
config cannot be changed in place.
"""

from __future__ import annotations

import dataclasses
from typing import get_args

import pytest
import torch

from hybridnb import config
from hybridnb.data import miracl, sources
from hybridnb.evaluation import corpus_index
from hybridnb.image_text import runs as mm
from hybridnb.image_text.towers import IMAGE_TOWERS
from hybridnb.studies import runs
from hybridnb.training import trainer
from hybridnb.training.batch_kinds import STRATEGIES

#: the hash keys as they were when the committed runs were made (the dict-based configs of before)
TEXT_KEYS_BEFORE = ("model", "strategy", "alpha", "language_sampling", "train_data", "train_languages",
                    "train_max_ids", "eval_data", "eval_datasets", "candidate_mode", "max_length", "encode_dtype",
                    "steps", "batch_size", "lr", "weight_decay", "warmup_ratio", "max_grad_norm", "temperature",
                    "n_hard_negatives", "gradcache", "chunk_size", "train_dtype", "save_every", "val_every",
                    "val_batches", "val_fraction", "n_resamples", "seed")
IMAGE_TEXT_KEYS_BEFORE = ("model", "dataset", "languages", "train_languages", "train_items", "val_items",
                          "eval_items", "strategy", "alpha", "steps", "batch_size", "lr", "image_lr", "weight_decay",
                          "warmup_ratio", "max_grad_norm", "temperature", "text_weight", "image_tower",
                          "image_tower_args", "image_size", "dim", "max_length", "freeze_embeddings",
                          "frozen_text_layers", "length_groups", "train_dtype", "val_every", "val_batches",
                          "n_resamples", "seed")  # length_groups: added with the runs retrained (issue 19)
ZERO_SHOT_KEYS_BEFORE = ("model", "dataset", "languages", "eval_items", "image_size", "max_length", "n_resamples",
                         "seed")


def test_the_hash_keys_are_the_ones_the_committed_runs_were_hashed_with():
    # mask_false_negatives and length_groups came after the runs: hashed only when not at the runs' value
    # (config.HASHED_WHEN_SET), so theirs hold
    assert runs.RUN_KEYS == (*TEXT_KEYS_BEFORE, "mask_false_negatives", "length_groups")
    assert config.HASHED_WHEN_SET == {"mask_false_negatives": False, "length_groups": 1}
    assert mm.RUN_KEYS == IMAGE_TEXT_KEYS_BEFORE and mm.ZERO_SHOT_KEYS == ZERO_SHOT_KEYS_BEFORE


def test_the_literal_types_say_what_the_library_accepts():
    assert set(get_args(config.CandidateMode)) == set(sources.CANDIDATE_MODES)
    assert set(get_args(config.EvalDataset)) == set(config.DATASET_LANGUAGES)
    assert set(get_args(config.ImageTextDataset)) == set(mm.DATASETS)
    assert set(get_args(config.ImageTower)) == set(IMAGE_TOWERS)
    assert {d: trainer.autocast_dtype(d, torch.device("cpu")) for d in config.TRAIN_DTYPES if d != "auto"} == \
        {"float32": None, "bfloat16": torch.bfloat16}  # every train_dtype but auto names an autocast precision
    assert set(STRATEGIES) <= {"hybrid", "mono", "cross", "mixed", "en"}  # parse_strategy checks the names
    assert get_args(config.MiraclStorage) == corpus_index.DTYPES
    assert get_args(config.PassageFormat) == miracl.PASSAGE_FORMATS


def test_every_config_field_is_a_documented_parameter():
    for key in config.TextRunConfig.parameter_keys():
        assert key in config.PARAMETERS, key
    for kind in (config.ImageTextRunConfig, config.ImageTextZeroShotConfig):
        for key in kind.parameter_keys():
            if key == "strategy":  # one of mm_strategies per run (run_image_text's strategy=)
                continue
            name = key if key in mm.SHARED or key == "encode_batch_size" else f"mm_{key}"
            assert name in config.PARAMETERS, name


@pytest.mark.parametrize("key, value, message", [
    ("steps", 0, "steps must be an int >= 1, got 0"),
    ("steps", 2.5, "steps must be an int >= 1, got 2.5"),
    ("steps", True, "steps must be an int >= 1, got True"),
    ("lr", 0, "lr must be a number > 0, got 0"),
    ("lr", "3e-5", "lr must be a number > 0, got '3e-5'"),      # YAML 1.1 reads 3e-5 as a string: a real trap
    ("warmup_ratio", 1.5, r"warmup_ratio must be a number in \[0, 1\], got 1.5"),
    ("val_fraction", 0.0, r"val_fraction must be a number in \(0, 1\), got 0.0"),
    ("gradcache", "yes", "gradcache must be true or false, got 'yes'"),
    ("candidate_mode", "paragraph", "candidate_mode must be one of 'sentence\\+context', 'sentence', got 'paragraph'"),
    ("train_dtype", "fp16", "train_dtype must be one of 'auto', 'float32', 'bfloat16', got 'fp16'"),
    ("train_max_ids", 0, "train_max_ids must be an int >= 1 or null, got 0"),
    ("train_languages", "en", "train_languages must be a list of strings or null, got 'en'"),
    ("language_sampling", -1.0, "language_sampling must be one of 'uniform', 'size' or a number > 0, got -1.0"),
    ("seed", -1, "seed must be an int >= 0, got -1"),
    ("alpha", float("nan"), r"alpha must be a number in \[0, 1\] or null, got nan"),
])
def test_a_bad_value_is_named_with_its_allowed_values(key, value, message):
    params = {**config.load_profile("ci"), key: value}
    with pytest.raises(ValueError, match=f"^{message}$"):
        runs.check_run(params)


def test_image_text_messages_name_the_notebook_parameter():
    params = {**config.load_profile("ci"), "mm_strategy": "hybrid"}
    with pytest.raises(ValueError, match=r"^mm_image_lr must be a number > 0, got -1$"):
        mm.check_run({**params, "mm_image_lr": -1})
    with pytest.raises(ValueError, match=r"^mm_image_tower must be one of 'cnn', .*'open_clip', got 'resnet'$"):
        mm.check_run({**params, "mm_image_tower": "resnet"})
    with pytest.raises(ValueError, match=r"^mm_temperature must be a number > 0, got 0$"):  # its own key (own recipe)
        mm.check_run({**params, "mm_temperature": 0})
    with pytest.raises(ValueError, match=r"^seed must be"):  # a shared key: no prefix
        mm.check_run({**params, "seed": -1})
    with pytest.raises(ValueError, match=r"^encode_batch_size must be an int >= 1, got 0$"):
        mm.check_run({**params, "encode_batch_size": 0})


def test_a_config_is_frozen_and_carries_the_strategy_parsed_once():
    cfg = runs.check_run({**config.load_profile("ci"), "strategy": "hybrid", "alpha": 0.25})
    assert cfg.weights == {"mono": 0.25, "cross": 0.75}
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.steps = 1
    mono = runs.check_run({**config.load_profile("ci"), "strategy": "X-X-mono"})  # a LAReQA alias
    assert mono.weights == {"mono": 1.0} and mono.alpha is None
    image_text = mm.check_run(config.load_profile("ci"), "cross")
    assert image_text.weights == {"cross": 1.0}
    assert set(image_text.to_json()) == {*mm.RUN_KEYS, "hash", "run_name", "image_root", "encode_batch_size",
                                           "save_every"}  # unhashed: checkpoints change no result
    assert set(cfg.to_json()) == {*runs.RUN_KEYS, "hash", "run_name", "encode_batch_size"}


def test_the_hash_is_the_canonical_json_of_the_hash_keys_only():
    cfg = runs.check_run(config.load_profile("ci"))
    assert cfg.hash == config.config_hash(cfg.hash_values(), runs.RUN_KEYS, config.HASHED_WHEN_SET)
    assert cfg.hash == config.config_hash(cfg.hash_values(), TEXT_KEYS_BEFORE)  # a new key at its old value: no trace
    faster = runs.check_run({**config.load_profile("ci"), "encode_batch_size": 7})
    assert faster.hash == cfg.hash and faster != cfg   # speed settings are kept, not hashed


# ---- the training parts: what the trainers take ----------------------------------------------------------

#: the settings a checkpoint stored before the training parts (the trainers' own configs of old): a checkpoint
#: written then compares equal now and resumes
TEXT_STORED_BEFORE = {"strategy", "alpha", "language_sampling", "steps", "batch_size", "lr", "weight_decay",
                      "warmup_ratio", "max_grad_norm", "temperature", "n_hard_negatives", "gradcache", "chunk_size",
                      "train_dtype", "save_every", "val_every", "val_batches", "seed", "extra"}
IMAGE_TEXT_STORED_BEFORE = {"strategy", "alpha", "language_sampling", "languages", "steps", "batch_size", "lr",
                            "image_lr", "weight_decay", "warmup_ratio", "max_grad_norm", "temperature",
                            "text_weight", "model", "image_tower", "image_tower_args", "image_size", "dim",
                            "max_length", "freeze_embeddings", "frozen_text_layers", "length_groups", "seed",
                            "val_every", "val_batches", "save_every", "train_dtype"}


def test_every_training_key_has_a_default_and_the_run_configs_bounds():
    for part, run in ((config.TextTraining, config.TextRunConfig), (config.ImageTextTraining,
                                                                      config.ImageTextRunConfig)):
        part()  # every key has its default, and the defaults pass their own checks
        run_fields = {f.name: f for f in dataclasses.fields(run)}
        for f in dataclasses.fields(part):
            if f.name in run_fields:  # a run config that passed its checks makes a training part that does too
                bounds = {k: f.metadata.get(k) for k in ("lo", "hi", "open_lo", "open_hi")}
                assert bounds == {k: run_fields[f.name].metadata.get(k) for k in bounds}, (part, f.name)


def test_a_training_part_is_checked_when_made_in_one_line():
    for part in (config.TextTraining, config.ImageTextTraining):
        with pytest.raises(ValueError, match=r"^max_grad_norm must be a number > 0, got 0$"):
            part(max_grad_norm=0)
        with pytest.raises(ValueError, match=r"^val_every must be an int >= 1, got 0$"):
            part(val_every=0)
        with pytest.raises(ValueError, match=r"^train_dtype must be one of 'auto', 'float32', 'bfloat16', got 'fp8'$"):
            part().replace(train_dtype="fp8")
        with pytest.raises(dataclasses.FrozenInstanceError):
            part().steps = 3
    with pytest.raises(ValueError, match=r"^image_tower must be one of 'cnn', .*got 'resnet'$"):
        config.ImageTextTraining(image_tower="resnet")
    with pytest.raises(ValueError, match=r"^train_languages must be null or a non-empty list without duplicates"):
        config.ImageTextTraining(train_languages=["en", "en"])


def test_a_run_configs_training_part_is_what_a_checkpoint_stored_before():
    text = runs.check_run(config.load_profile("ci"))
    assert set(text.training().stored()) == TEXT_STORED_BEFORE and text.training().stored()["extra"] == {}
    assert all(getattr(text.training(), k) == getattr(text, k) for k in TEXT_STORED_BEFORE - {"extra"})
    image_text = mm.check_run(config.load_profile("ci"), "mono")
    stored = image_text.training().stored()
    assert set(stored) == IMAGE_TEXT_STORED_BEFORE
    assert stored["alpha"] == 0.5 and image_text.alpha is None  # the sampler's default: mono ignores it
    assert stored["languages"] == image_text.train_languages and stored["save_every"] == image_text.save_every


def test_train_help_shows_every_run_key_with_its_default_unit_and_meaning(capsys):
    from hybridnb import cli

    with pytest.raises(SystemExit):
        cli.train_main(["--help"])
    out = capsys.readouterr().out
    profile = config.load_profile(cli.DEFAULT_PROFILE)
    for key in config.TextRunConfig.parameter_keys():
        line = next(line for line in out.splitlines() if line.startswith(f"  {key} = "))
        assert config.PARAMETERS[key] in line
    steps = next(line for line in out.splitlines() if line.startswith("  steps = "))
    assert steps.startswith(f"  steps = {profile['steps']}  [an int >= 1; optimizer steps]")
