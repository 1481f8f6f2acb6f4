"""One image-text run end to end (notebook 07) and the zero-shot baseline; the comparison is in
:mod:`hybridnb.studies.image_text_compare`.

:func:`run_image_text` runs the skeleton every run shares (:func:`hybridnb.training.run_folder.execute`)
with :class:`ImageTextRun`: check the parameters (notebook 07's ``mm_*`` names
plus the shared ``model``, ``seed``, ``n_resamples``, ``temperature``, ``encode_batch_size``), reuse a finished
run whose ``reports/runs/<run_name>/config.json`` has the same config hash, else build the data, train
(:func:`hybridnb.image_text.trainer.train_image_text`), evaluate the best-by-validation-loss model on the test
split (:func:`hybridnb.image_text.metrics.image_text_metrics`, bootstrap CIs over images) and write the report
folder atomically (a temp folder renamed when complete): ``config.json``, ``results.json``, the per-query
arrays ``per_query_{t2i,i2t,captions}.npz`` (for paired tests between runs), ``topk_t2i.npz`` (each caption's
10 best images), ``train_log.jsonl``, ``loss_curve.png`` and ``results.md``. Weights go to
``cache/runs/<run_name>/<hash>/model.pt``: the trained weights only (:func:`hybridnb.image_text.trainer.trained_state`;
load them into ``trainer.build_model(cfg.training())`` with ``load_state_dict(..., strict=False)``: the frozen
weights are the base model's). Until the report is written, the resume checkpoint (``mm_save_every``) lies beside
them: a killed run resumes from it and ends with the weights of an uninterrupted run.

Zero-shot baseline (:class:`ImageTextZeroShot`, run beside the runs by :func:`run_image_text_all`): an untrained image tower makes text->image retrieval meaningless,
so the starting point reported is the untrained text tower's (E5's own embeddings) cross-lingual
caption-caption retrieval on the same test captions.

Data (``mm_dataset``): ``openmoji-cldr`` (offline; its family split with seed 0), ``multi30k`` (train / val /
test_2016_flickr) or ``xtd10`` (1,000 images with no training split: cut 70/10/20 with seed 0); the last two
need ``mm_image_root``. ``mm_train_items`` / ``mm_val_items`` / ``mm_eval_items`` cap each split (a seeded
subset, the same for every training seed).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from hybridnb.image_text import caption_table, text_features
from hybridnb import allocator, child_processes, config, file_hashes, paths, reporting
from hybridnb.training import distributed, run_folder, sampling
from hybridnb.training.batch_kinds import hashed_alpha, strategy_label
from hybridnb.training.trainer import autocast_dtype
from hybridnb.evaluation import stats
from hybridnb.image_text import trainer as itt
from hybridnb.image_text.metrics import (METRICS, ImageTextResult, caption_retrieval, confidence_intervals,
                                      image_text_metrics)
from hybridnb.image_text.openmoji_cldr import ATTRIBUTION, OPENMOJI_LANGUAGES
from hybridnb.models import precision
from hybridnb.paths import cache_root, reports_root
from hybridnb.training.run_folder import find_finished  # same report folder and hash check as a text run

__all__ = ["DATASETS", "RUN_KEYS", "ZERO_SHOT_KEYS", "check_run", "check_runs", "workers", "prepare_data",
           "eval_table", "find_finished", "ImageTextRun", "ImageTextZeroShot", "task", "metric_rows", "run_image_text",
           "warm_caches", "run_image_text_all"]

DATASETS = {"openmoji-cldr": OPENMOJI_LANGUAGES, "xtd10": caption_table.XTD10_LANGUAGES,
            "multi30k": caption_table.MULTI30K_LANGUAGES}
SHARED = ("model", "seed", "n_resamples")  # notebook parameters without the mm_ prefix (temperature: mm_temperature)
NOTEBOOK_SHARED = ("profile", *SHARED, "encode_batch_size")
RUN_KEYS = config.ImageTextRunConfig.hash_keys()             # the result-defining settings of a run
ZERO_SHOT_KEYS = config.ImageTextZeroShotConfig.hash_keys()  # ... and of the zero-shot baseline
SPLIT_SEED = 0
SAVE_EVERY = config.ImageTextTraining().save_every  # mm_save_every when a profile leaves it out
START_METHOD = "spawn"  # how mm_workers' processes start: a fresh interpreter (no forked OpenMP or torch state)
SCHEMA = "hybridnb.image_text_results/1"
PROBLEMS = ("t2i", "i2t", "captions")
TABLE = {"t2i_r@1": "t2i R@1", "t2i_r@5": "t2i R@5", "t2i_r@10": "t2i R@10", "i2t_r@1": "i2t R@1",
         "i2t_r@5": "i2t R@5", "i2t_r@10": "i2t R@10", "mean_recall": "mean recall",
         "caption_cross_map": "caption X→Y mAP", "i2t_rank_distance": "i2t rank distance ↓"}
DISPLAYABLE = ("en", "de", "es", "fr", "it", "pt", "id", "tr", "ru", "cs", "pl")  # scripts DejaVu Sans draws


# ---- configuration ----------------------------------------------------------------------------------


def check_run(params: dict[str, Any], strategy=None, zero_shot: bool = False):
    """Build the typed, frozen config of one image-text run (or of the zero-shot baseline) from notebook
    parameters, checking every value before any data or model is touched: each key's type, choices and bounds
    first (the config's fields, messages naming the ``mm_`` key), then what depends on other keys (the
    languages, the strategy's mixture against them, the batch against the items)."""
    config_class = config.ImageTextZeroShotConfig if zero_shot else config.ImageTextRunConfig
    speed_only = ("encode_batch_size",) + (("frozen_text_layers",) if zero_shot else ("save_every",))  # not hashed
    keys = [k for k in config_class.parameter_keys() if k not in ("strategy", "image_root", *speed_only)]
    missing = [_name(k) for k in keys if _name(k) not in params]
    if missing:
        raise ValueError(f"image-text run parameters missing: {missing}")
    values = {k: params[_name(k)] for k in keys}
    values["image_root"] = params.get("mm_image_root")
    values["encode_batch_size"] = params.get("encode_batch_size", 64)
    if not zero_shot:
        values["save_every"] = params.get("mm_save_every", SAVE_EVERY)
    if zero_shot:  # the runs' cached frozen layers, if any: the zero-shot tower runs from them
        values["frozen_text_layers"] = params.get("mm_frozen_text_layers", 0)
    if not zero_shot:
        values["strategy"] = params.get("mm_strategy") if strategy is None else strategy
        if values["strategy"] is None:
            raise ValueError("no strategy: pass strategy= or mm_strategy")
    config.check_fields(config_class, values, name=_name)  # messages name the notebook parameter (mm_steps, seed)
    valid, langs = DATASETS[values["dataset"]], values["languages"]
    if langs is not None:
        if not langs or len(set(langs)) != len(langs):
            raise ValueError(f"mm_languages must be null or a list without duplicates, got {langs!r}")
        unknown = [g for g in langs if g not in valid]
        if unknown:
            raise ValueError(f"language(s) {unknown} not in {values['dataset']}; it has {list(valid)}")
    seeds(params)  # mm_seeds: checked with every run, although read by check_runs / collect
    if values["dataset"] != "openmoji-cldr":  # the images are the user's: name the folder before any work
        caption_table._check_image_root(values["image_root"], f"{values['dataset']} images (mm_image_root)")
    derived = {}
    if not zero_shot:
        # auto -> what trains here (bf16 where it is native), before the hash as for a text run; a finished run of
        # either precision is reused first, bf16 first on every machine (run_folder.first_finished, below)
        auto = values["train_dtype"] == "auto"
        values["train_dtype"] = precision.resolve(values["train_dtype"])
        values["train_languages"] = _train_languages(values["train_languages"], langs or list(valid))
        weights = derived["weights"] = sampling.parse_strategy(values["strategy"], values["alpha"])
        trained = values["train_languages"] or langs or list(valid)
        if "en" in weights and "en" not in trained:
            raise ValueError(f"strategy {values['strategy']!r} trains on English captions but 'en' is not among "
                             f"the training languages {trained}")
        if "cross" in weights and len(trained) < 2:
            raise ValueError(f"strategy {values['strategy']!r} pairs captions of two languages but only {trained} "
                             f"are trained on")
        values["alpha"] = hashed_alpha(values["strategy"], values["alpha"])
        if values["train_items"] is not None and values["batch_size"] > values["train_items"]:
            raise ValueError(f"mm_batch_size {values['batch_size']} exceeds mm_train_items {values['train_items']}")
    label = "zero-shot" if zero_shot else strategy_label(values["strategy"], values["alpha"])
    run_name = (None if zero_shot else params.get("mm_run_name")) or \
        f"{params.get('profile', 'custom')}-mm-{label}-{values['dataset']}-seed{values['seed']}"

    def made(values: dict[str, Any]):
        return config_class(**values, **derived, run_name=run_name, hash=config.config_hash(values, config_class.hash_keys()))

    if zero_shot or not auto:
        return made(values)
    return run_folder.first_finished([made({**values, "train_dtype": d}) for d in precision.AUTO_REUSE_ORDER],
                                     made(values))


def _name(key: str) -> str:
    """The notebook parameter of a config key: ``mm_<key>``, except the keys shared with the text runs."""
    return key if key in NOTEBOOK_SHARED else f"mm_{key}"


def _train_languages(train, evaluated: list[str]) -> list[str] | None:
    """``mm_train_languages`` checked against the evaluated languages; None when it is all of them."""
    if train is None:
        return None
    if isinstance(train, str) or not train or len(set(train)) != len(train):
        raise ValueError(f"mm_train_languages must be null or a non-empty list without duplicates, got {train!r}")
    unknown = [g for g in train if g not in evaluated]
    if unknown:
        raise ValueError(f"mm_train_languages {unknown} are not evaluated (mm_languages: {evaluated}); every "
                         f"training language must be among them")
    return None if set(train) == set(evaluated) else [g for g in evaluated if g in train]


def seeds(params: dict[str, Any]) -> list[int]:
    """``mm_seeds`` (the training seeds of every strategy), or ``[seed]``."""
    values = params.get("mm_seeds")
    if values is None:
        return [params["seed"]]
    return config.check_numbers("mm_seeds", values, "null or a list of distinct non-negative ints")


def workers(params: dict[str, Any]) -> int:
    """``mm_workers`` (default 1): how many image-text runs train at once, each in its own process."""
    return config.check_numbers("mm_workers", params.get("mm_workers", 1), "an int >= 1 (1: one run after another)",
                                positive=True, many=False)


def check_runs(params: dict[str, Any]) -> list[dict[str, Any]]:
    """The zero-shot config, then one per (strategy of ``mm_strategies``, seed of ``mm_seeds``): all checked
    before any work."""
    strategies = list(params.get("mm_strategies") or [])
    if not strategies:
        raise ValueError("mm_strategies must list at least one strategy (e.g. [en, mono, cross, hybrid])")
    workers(params)
    return [check_run(params, zero_shot=True)] + [check_run({**params, "seed": k}, s)
                                                  for s in strategies for k in seeds(params)]


def seen_unseen(train: list[str] | None, languages: list[str]) -> tuple[list[str], list[str]]:
    """(languages trained on, languages never trained on) among `languages`; ``train`` None: all trained on."""
    seen = list(languages) if train is None else [g for g in languages if g in train]
    return seen, [g for g in languages if g not in seen]


# ---- data, training, evaluation ---------------------------------------------------------------------


def _cap(table, n: int | None, split: str):
    if n is None or n >= len(table):
        return table
    return table.subset(np.sort(np.random.default_rng(SPLIT_SEED).permutation(len(table))[:n]), split=split)


def prepare_data(cfg: config.ImageTextRunConfig | config.ImageTextZeroShotConfig) -> dict[str, caption_table.ImageTextTable]:
    """``{"train", "validation", "test"}`` tables in the run's languages, capped to the configured sizes."""
    name, langs, root = cfg.dataset, cfg.languages, cfg.image_root
    if name == "openmoji-cldr":
        from hybridnb.image_text.openmoji_cldr import load_openmoji_cldr

        tables = load_openmoji_cldr(int(cfg.image_size or 64), SPLIT_SEED, languages=langs or OPENMOJI_LANGUAGES)
    elif name == "multi30k":
        tables = {s: caption_table.load_multi30k(root, f, langs)
                  for s, f in (("train", "train"), ("validation", "val"), ("test", "test_2016_flickr"))}
    else:  # XTD10 is a test set only: a seeded 70/10/20 split of its 1,000 images
        table = caption_table.load_xtd10(root, langs)
        order = np.random.default_rng(SPLIT_SEED).permutation(len(table))
        cuts = np.split(order, [round(0.7 * len(table)), round(0.8 * len(table))])
        tables = {s: table.subset(np.sort(c), split=s) for s, c in zip(("train", "validation", "test"), cuts)}
    sizes = {"train": getattr(cfg, "train_items", None), "validation": getattr(cfg, "val_items", None),
             "test": cfg.eval_items}  # the zero-shot config has no training splits
    return {s: _cap(t, sizes[s], s) for s, t in tables.items()}


def eval_table(params: dict[str, Any]) -> caption_table.ImageTextTable:
    """The test split every run of these parameters is evaluated on (same items, same order)."""
    return prepare_data(check_run(params, zero_shot=True))["test"]


def run_dirs(cfg: config.RunConfigBase) -> tuple[Path, Path]:
    """(report folder under reports/runs/, weights folder under cache/runs/<run_name>/<hash>/)."""
    return reports_root() / "runs" / cfg.run_name, cache_root() / "runs" / cfg.run_name / cfg.hash


def _entry(ci: dict | None, value) -> dict:
    return {"value": value, "ci": None if ci is None else [ci["low"], ci["high"]]}


def _mean_recall_ci(result: ImageTextResult, n_resamples: int, seed: int) -> dict:
    """Bootstrap CI of the mean of the six recalls, resampling images (the groups of both directions)."""
    tables = [stats.group_tables(result.t2i, f"multi_r@{k}") for k in (1, 5, 10)] + \
             [stats.group_tables(result.i2t, f"cross_r@{k}") for k in (1, 5, 10)]
    ci = stats.mean_of_macro_ci(tables, n_resamples, 0.95, seed, "BCa")
    return {**ci, "estimate": result.mean_recall()}


def evaluate(model, table, cfg: config.ImageTextRunConfig) -> tuple[ImageTextResult, np.ndarray]:
    """The test metrics (:func:`hybridnb.image_text.metrics.image_text_metrics` of the test captions and images,
    the captions embedded length-sorted to cut padding, under the run's training autocast: bf16 where it trained
    in bf16) and each caption's 10 best images."""
    texts, langs, item = table.caption_rows()
    model.prepare_texts(texts)  # frozen lower text layers: their states read from (or written to) the cache
    order = np.argsort([len(t) for t in texts], kind="stable")
    text_emb = np.empty((len(texts), model.dim), np.float32)
    dtype = autocast_dtype(cfg.train_dtype, model.device)  # in the precision it trained (and validated) in:
    with torch.autocast(model.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):  # bf16 2.5x
        text_emb[order] = model.embed_texts([texts[i] for i in order], cfg.encode_batch_size)  # float32's speed
        image_emb = model.embed_images(table, None, cfg.encode_batch_size)
    result = image_text_metrics(text_emb, image_emb, langs, item, np.arange(len(table)), table.languages)
    top = np.argsort(-(text_emb @ image_emb.T), axis=1, kind="stable")[:, :10]
    return result, top.astype(np.int32)


def _metrics(result: ImageTextResult, n_resamples: int, seed: int) -> dict:
    cis = confidence_intervals(result, n_resamples=n_resamples, seed=seed)
    summary = result.summary()
    out = {name: _entry(cis.get(name), summary[name]) for name in METRICS}
    out["mean_recall"] = _entry(_mean_recall_ci(result, n_resamples, seed), summary["mean_recall"])
    return out


def metric_rows(results: dict) -> list[dict]:
    """One table row of a run's metrics with their 95% CIs (README.md of the run folder, the CLI)."""
    m = results["metrics"]
    return [{col: reporting.format_ci(m.get(k), 2 if "distance" in k else 3) for k, col in TABLE.items()}]


@dataclass
class ImageTextRun(run_folder.RunTaskBase):
    """An image-text run for :func:`hybridnb.training.run_folder.execute`: caption tables, the two-tower trainer,
    the image-text evaluator. A killed run resumes from its checkpoint; once the report is written only the
    evaluated weights (model.pt) stay."""

    cfg: config.ImageTextRunConfig
    features_s: float = 0.0  # reading (or computing once) a frozen tower's cached features

    def dirs(self) -> tuple[Path, Path]:
        return run_dirs(self.cfg)

    def prepare(self) -> dict[str, caption_table.ImageTextTable]:
        data = prepare_data(self.cfg)
        itt.check_config(self.cfg.training(), data["train"])  # batch size vs items and pools, before the model loads
        return data

    def build_model(self, data, show_progress: bool) -> tuple[config.ImageTextTraining, Any]:
        """(trainer config, model) with a frozen tower's features of every split read or computed
        (``features_s``); the frozen text layers' states follow in train_image_text / evaluate."""
        tcfg = self.cfg.training()
        model = itt.build_model(tcfg)
        t0 = time.time()
        if model.frozen_text is not None:
            model.frozen_text.show_progress = show_progress
        if hasattr(model.image_tower, "prepare"):  # a frozen tower: every split's features, cached once per image
            model.image_tower.show_progress = show_progress
            with distributed.main_first():  # under torchrun rank 0 computes and caches them, the others read
                for table in data.values():
                    model.image_tower.prepare(table)
        self.features_s = time.time() - t0
        return tcfg, model

    def prune(self, trained) -> None:
        """Delete the resume checkpoint (trained and best weights, AdamW's state); model.pt stays."""
        (run_dirs(self.cfg)[1] / itt.CHECKPOINT).unlink(missing_ok=True)
        file_hashes.sidecar((run_dirs(self.cfg)[1] / itt.CHECKPOINT)).unlink(missing_ok=True)

    def train(self, data, show_progress: bool):
        tcfg, model = self.build_model(data, show_progress)
        _, weights_dir = run_dirs(self.cfg)
        trained = itt.train_image_text(model, data["train"], data["validation"], tcfg, weights_dir, show_progress)
        if distributed.is_main():  # under torchrun the ranks hold the same weights: rank 0 writes them
            with reporting.atomic_path(weights_dir / "model.pt") as tmp:  # what training changed (~16 MB, not the
                torch.save(itt.trained_state(model), tmp)                 # frozen 470 MB): build_model + strict=False
            file_hashes.write_sidecar(weights_dir / "model.pt")  # model.pt.sha256: check_sidecar before use
        return model, trained

    def evaluate(self, data, model_and_log, started: float, show_progress: bool) -> run_folder.RunOutput:
        cfg, (model, trained) = self.cfg, model_and_log
        weights_dir = run_dirs(cfg)[1]
        t_eval = time.time()
        result, top = evaluate(model, data["test"], cfg)
        metrics = _metrics(result, cfg.n_resamples, cfg.seed)
        sizes = {s: len(t) for s, t in data.items()}
        seen, unseen = seen_unseen(cfg.train_languages, data["test"].languages)
        per_language = result.summary()["per_language"]
        languages = {"trained": seen, "unseen": unseen, **{
            f"{part}_t2i_r@10": float(np.mean([per_language[g]["t2i_r@10"] for g in langs])) if langs else None
            for part, langs in (("trained", seen), ("unseen", unseen))}}
        tower = model.image_tower
        tower_key = tower.extractor.key() if hasattr(tower, "extractor") else None
        results = {
            "schema": SCHEMA, "kind": "image-text trained", "profile": self.profile,
            "model": {"text": cfg.model, "image_tower": cfg.image_tower,
                      "image_tower_args": cfg.image_tower_args, "image_size": cfg.image_size, "dim": cfg.dim,
                      "max_length": cfg.max_length, "evaluated": "best validation loss", "frozen_features": tower_key,
                      "freeze_embeddings": cfg.freeze_embeddings, "frozen_text_layers": cfg.frozen_text_layers,
                      "length_groups": cfg.length_groups,
                      "weights": paths.shown(weights_dir / "model.pt")},  # project-relative
            "data": {"dataset": cfg.dataset, "languages": data["test"].languages, "items": sizes,
                     "train_languages": seen, "unseen_languages": unseen,
                     "attribution": ATTRIBUTION if cfg.dataset == "openmoji-cldr" else None},
            "training": {"strategy": cfg.strategy, "alpha": cfg.alpha,
                         "weights": cfg.weights, "steps": cfg.steps,
                         "batch_size": cfg.batch_size, "lr": cfg.lr, "image_lr": cfg.image_lr,
                         "seed": cfg.seed, "best_step": trained.best_step, "best_val_loss": trained.best_val_loss,
                         "final_loss": trained.history[-1]["loss"], "config_hash": cfg.hash,
                         "kinds": pd.Series([r["kind"] for r in trained.history]).value_counts().to_dict()},
            "provenance": reporting.provenance(self.profile),
            "timings": {"wall_s": time.time() - started, "features_s": self.features_s + trained.image_features_s,
                        "text_states_s": trained.text_states_s,
                        "train_s": sum(r["step_s"] for r in trained.history),
                        "eval_s": time.time() - t_eval, "torch_threads": torch.get_num_threads()},
            "metrics": metrics, "summary": {**result.summary(), "languages_seen_unseen": languages},
            "per_query": {p: f"per_query_{p}.npz" for p in PROBLEMS},
        }
        _, langs, item = data["test"].caption_rows()
        files = {f"per_query_{p}.npz": getattr(result, p).save for p in PROBLEMS}
        files["topk_t2i.npz"] = lambda path: np.savez_compressed(path, top=top, caption_item=item, ids=np.array(
            data["test"].ids), caption_lang=langs.astype(str))
        files["train_log.jsonl"] = lambda path: shutil.copy(trained.log_path, path)
        summary = (f"Image-text run: strategy {cfg.strategy} (batch kinds {results['training']['weights']}), "
                   f"{cfg.steps} steps of {cfg.batch_size} images on {cfg.dataset} ({sizes['train']} "
                   f"training items, captions in {', '.join(seen)}"
                   f"{'; never trained on ' + ', '.join(unseen) if unseen else ''}), text tower {cfg.model}, "
                   f"image tower {cfg.image_tower}; evaluated on {sizes['test']} test images with the best model "
                   f"by validation loss (step {trained.best_step}). 95% CIs: bootstrap over images. Config hash "
                   f"{cfg.hash}.")
        curve = reporting.plot_training_curves(trained.history, cfg.run_name)
        return run_folder.RunOutput(results, files, {"loss_curve.png": curve}, summary, metric_rows(results))


@dataclass
class ImageTextZeroShot(run_folder.RunTaskBase):
    """The untrained text tower's cross-lingual caption retrieval on the test captions (nothing trains)."""

    cfg: config.ImageTextZeroShotConfig

    def dirs(self) -> tuple[Path, Path]:
        return run_dirs(self.cfg)

    def prepare(self) -> caption_table.ImageTextTable:
        return prepare_data(self.cfg)["test"]  # under torchrun rank 0 alone evaluates (run_folder.execute)

    def train(self, data, show_progress: bool) -> None:
        return None

    def evaluate(self, test, trained: None, started: float, show_progress: bool) -> run_folder.RunOutput:
        from hybridnb.models.encoders import Encoder

        cfg = self.cfg
        encoder = Encoder.from_pretrained(cfg.model, max_length=cfg.max_length)
        texts, langs, item = test.caption_rows()
        emb = zero_shot_text_embeddings(encoder, texts, cfg.frozen_text_layers, cfg.encode_batch_size, show_progress)
        codes = np.array([test.languages.index(g) for g in langs])
        captions = caption_retrieval(emb, codes, item, test.languages)
        cis = stats.confidence_intervals(captions, cfg.n_resamples, seed=cfg.seed,
                                         metrics=["cross_ap", "multi_ap"])
        metrics = {name: None for name in (*METRICS, "mean_recall")}
        metrics["caption_cross_map"] = _entry(cis["cross"]["map"], captions.macro("cross_ap"))
        metrics["caption_pooled_map"] = _entry(cis["multi"]["map"], captions.macro("multi_ap"))
        results = {"schema": SCHEMA, "kind": "image-text zero-shot", "profile": self.profile,
                   "model": {"text": cfg.model, "max_length": cfg.max_length, "image_tower": None},
                   "data": {"dataset": cfg.dataset, "languages": test.languages, "items": {"test": len(test)}},
                   "note": "text->image and image->text need a trained image tower: only caption-caption retrieval "
                           "of the untrained text tower is a meaningful zero-shot baseline",
                   "provenance": reporting.provenance(self.profile),
                   "timings": {"wall_s": time.time() - started}, "metrics": metrics,
                   "summary": {"languages": test.languages, "caption_map_matrix": captions.matrix("ap").tolist()},
                   "per_query": {"captions": "per_query_captions.npz"}}
        summary = (f"Zero-shot starting point: the untrained text tower {cfg.model} (its own embeddings, no "
                   f"projection) on cross-lingual caption retrieval over the {len(test)} test images of "
                   f"{cfg.dataset}. {results['note']}. Config hash {cfg.hash}.")
        return run_folder.RunOutput(results, {"per_query_captions.npz": captions.save}, {}, summary, metric_rows(results))


def zero_shot_text_embeddings(encoder, texts: list[str], n_frozen: int, batch_size: int,
                              show_progress: bool = True) -> np.ndarray:
    """float32 (N, D) embeddings of `texts` as E5 queries by the untrained text tower, in eval mode.

    With ``n_frozen`` layers (the runs' ``mm_frozen_text_layers``) their cached states are read, as the runs read
    them, and only the layers above run: the same function as :meth:`Encoder.encode` (to 1e-5, tested) in a third
    of the time (5,698 test captions: 6 s instead of 20 s; 42 s in notebook 07's worker pool). 0: ``encode``."""
    if not n_frozen:
        return encoder.encode(texts, "query", batch_size, show_progress)
    frozen = text_features.FrozenTextLayers(encoder, n_frozen, role="query", show_progress=show_progress)
    frozen.prepare(texts)
    order = np.argsort([len(t) for t in texts], kind="stable")  # length-sorted batches: less padding
    out = np.empty((len(texts), encoder.dim), np.float32)
    was_training = encoder.model.training
    encoder.model.eval()
    try:
        with torch.inference_mode():
            for a in range(0, len(texts), batch_size):
                idx = order[a:a + batch_size]
                out[idx] = frozen([texts[i] for i in idx]).float().cpu().numpy()
    finally:
        encoder.model.train(was_training)
    return out


def run_image_text(params: dict[str, Any], strategy=None, show_progress: bool = True,
                   seed: int | None = None) -> tuple[Path, dict]:
    """Check, then reuse or train, evaluate, write (:func:`hybridnb.training.run_folder.execute`); `seed` overrides
    the parameters' ``seed`` (one of ``mm_seeds``)."""
    params = params if seed is None else {**params, "seed": seed}
    return run_folder.execute(ImageTextRun(check_run(params, strategy), params.get("profile", "custom")), show_progress)


def warm_caches(params: dict[str, Any], strategy, seed: int, show_progress: bool = True) -> dict[str, float]:
    """Read, or compute once and cache, what the frozen parts of a run need: a frozen image tower's features of
    every split, the frozen text layers' states of the training, validation and test captions (the same for
    every strategy and seed of these parameters). Run before runs train in parallel processes, so that they only
    read the caches instead of each computing them. Returns the seconds spent on each."""
    task = ImageTextRun(check_run({**params, "seed": seed}, strategy), params.get("profile", "custom"))
    data = task.prepare()
    tcfg, model = task.build_model(data, show_progress)  # the image features of every split
    *_, more_features_s, text_states_s = itt.prepare_inputs(model, data["train"], data["validation"], tcfg)
    t0 = time.perf_counter()
    model.prepare_texts(data["test"].caption_rows()[0])
    text_states_s += time.perf_counter() - t0
    del model, data
    allocator.release_memory()  # the kernel that warmed the caches keeps none of it while the workers train
    return {"features_s": task.features_s + more_features_s, "text_states_s": text_states_s}


def task(cfg: config.ImageTextRunConfig | config.ImageTextZeroShotConfig, profile: str) -> run_folder.RunTaskBase:
    """The :func:`hybridnb.training.run_folder.execute` task of a checked config: a run, or the zero-shot baseline."""
    run_class = ImageTextZeroShot if isinstance(cfg, config.ImageTextZeroShotConfig) else ImageTextRun
    return run_class(cfg, profile)


def _start_worker(threads: int) -> None:
    """A worker process's set-up (it imported this module, and with it torch, when it unpickled this function).
    First of all it ends with its parent: a kernel killed with -9 takes its workers with it."""
    child_processes.end_with_parent()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no weight-loading bars from the workers in the pipeline's log
    torch.set_num_threads(threads)  # the machine's cores shared between the workers


def _worker_ready() -> int:
    return os.getpid()


def _execute_in_worker(cfg, profile: str) -> str:
    try:
        return str(run_folder.execute(task(cfg, profile), show_progress=False)[0])
    finally:
        allocator.release_memory()  # the worker process is reused for the next run: start it from a trimmed heap


def run_image_text_all(params: dict[str, Any], show_progress: bool = True
                       ) -> tuple[tuple[Path, dict], list[tuple[Any, int, Path, dict]]]:
    """The zero-shot baseline and every ``mm_strategies`` x ``mm_seeds`` run: ``((report folder, results),
    [(strategy, seed, report folder, results)])`` in :func:`check_runs`' order, finished ones reused by config
    hash.

    With ``mm_workers`` = W > 1 and at least two of them to compute, W spawned processes of cores / W torch
    threads each start (importing torch and transformers, ~5 s) while this process warms the caches
    (:func:`warm_caches`); then they take the runs, the longest (most cross batches) first and the zero-shot
    evaluation (~20 s) last, where it fills a core that would otherwise wait for the last run. On 2 cores two
    single-threaded runs make ~1.3-1.4x the steps per second of one two-threaded run: a step of the top two
    text layers is too small to keep two threads busy. A failed run stops the others and raises, naming it. Each
    run writes its report folder atomically, as in one process. Memory: each worker holds its own text tower and
    training state (~1.2-1.7 GiB of its own on the cpu profile); the cached caption states and images are
    memory-mapped, so the workers share those pages. A script (not a notebook) that calls this with W > 1 needs
    the usual ``if __name__ == "__main__":`` guard: the workers are spawned, and each imports the script's main
    module.
    """
    configs = check_runs(params)  # [zero-shot, then (strategy, seed) in order]
    jobs = [(s, k) for s in params["mm_strategies"] for k in seeds(params)]
    profile, n_workers = params.get("profile", "custom"), workers(params)
    todo = [i for i, cfg in enumerate(configs) if find_finished(cfg) is None]
    if n_workers > 1 and len(todo) > 1:
        import multiprocessing
        from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        n_processes = min(n_workers, len(todo))
        pool = ProcessPoolExecutor(n_processes, mp_context=multiprocessing.get_context(START_METHOD),
                                   initializer=_start_worker, initargs=(max(1, cores // n_workers),))
        try:
            ready = [pool.submit(_worker_ready) for _ in range(n_processes)]  # start every worker now
            trained = [i for i in todo if i > 0]
            if trained:  # the workers import while the caches are read (or computed once)
                warm_caches(params, *jobs[trained[0] - 1], show_progress=show_progress)
            wait(ready)
            # longest first (a short run finishes last), the zero-shot evaluation (index 0) after every run
            todo.sort(key=lambda i: (i == 0, -configs[i].weights.get("cross", 0.0) if i else 0.0))
            futures = {pool.submit(_execute_in_worker, configs[i], profile): i for i in todo}
            with tqdm(total=len(futures), disable=not show_progress,
                      desc=f"image-text runs, {n_workers} at once") as bar:
                pending = set(futures)
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for future in finished:
                        if future.exception() is not None:
                            cfg = configs[futures[future]]
                            raise RuntimeError(f"image-text run {cfg.run_name} failed in its worker process: "
                                               f"{future.exception()!r}") from future.exception()
                        bar.update(1)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    done = [run_folder.execute(task(cfg, profile), show_progress) for cfg in configs]  # computed now, or reused
    return done[0], [(s, k, *outcome) for (s, k), outcome in zip(jobs, done[1:])]
