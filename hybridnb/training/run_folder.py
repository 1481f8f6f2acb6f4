"""The run skeleton every run follows, text or image-text: its report folder, config hash, lock, reuse, results.

A run is identified by the hash of its config (everything that changes the result); :func:`execute` runs it
as check -> find finished -> prepare -> train -> evaluate -> write, parameterised by a small task object
(:class:`RunTask`: :class:`hybridnb.studies.runs.TextRun` for text, :mod:`hybridnb.image_text.runs` for
image-text), and :func:`write_run` is the one writer of a run's report folder ``reports/runs/<run_name>/``.
A finished folder whose ``config.json`` has the same hash, whose ``manifest.json`` checks and whose named
files are all there is reused, not retrained (:func:`find_finished_dir`); a run in progress holds a lock
(:func:`hybridnb.training.checkpoints.run_lock`), so a second process starting it stops at once; the report
folder is written in a temporary folder and renamed when complete, so an interrupted run never leaves a
half-written report. Weights and checkpoints live in ``cache/runs/<run_name>/`` (gitignored).

It knows no modality: what a run's data, model and metrics are is the task's business. It sits in
``training`` (beside the loop, the checkpoints and the run lock it uses) so that both the modality libraries
(:mod:`hybridnb.image_text`) and the studies (:mod:`hybridnb.studies`) build on it without importing each
other.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hybridnb import config, file_hashes, paths, reporting
from hybridnb.paths import cache_root, reports_root
from hybridnb.training import checkpoints, distributed

__all__ = ["RunOutput", "RunTask", "RunTaskBase", "execute", "run_dirs", "named_files", "find_finished_dir",
           "find_finished", "has_finished", "first_finished", "saved_results", "check_no_other_run", "check_writable", "remove_stale_temps",
           "write_result_folder", "write_run", "KEEP_CHECKPOINTS_ENV", "REPLACE_ENV"]


def run_dirs(cfg: config.RunConfigBase) -> tuple[Path, Path]:
    """(report folder under reports/runs/, weights folder under cache/runs/)."""
    return reports_root() / "runs" / cfg.run_name, cache_root() / "runs" / cfg.run_name


def named_files(results: dict[str, Any]) -> list[str]:
    """The files of a run folder besides config.json and results.json that its results.json names, the ones
    later notebooks read: an image-text run's ``per_query`` files, a text run's ``per_query_<dataset>.npz`` per
    evaluated dataset."""
    if isinstance(results.get("per_query"), dict):
        return [str(f) for f in results["per_query"].values()]
    return [f"per_query_{name}.npz" for name in results.get("datasets") or {}]


def saved_results(folder: Path, remake: str, same: Callable[[dict[str, Any]], bool] = lambda results: True,
                  files: Callable[[dict[str, Any]], list[str]] = lambda results: [], incomplete: str = "",
                  reuse: bool = True) -> dict[str, Any] | None:
    """The results.json of the result folder ``folder`` (a run's, a zero-shot or a MIRACL result) when it reads,
    they are the ones asked for (``same(results)``) and every file ``files(results)`` names is there, else None;
    a folder that passes must match its manifest (:func:`hybridnb.file_hashes.check_result_folder`, ``remake``:
    the command that makes it again), or one line is raised. ``reuse``: the results stand in for a computation,
    so they count only when not older than ``HYBRIDNB_FRESH_SINCE`` and are noted in the reuse log; False
    reads them for a report. ``incomplete``: what happens to a folder that lacks a named file (deleted or lost by
    hand: a folder is written whole), said in one line naming the files; empty, nothing is said."""
    results_path = Path(folder) / "results.json"
    try:
        results = json.loads(results_path.read_text(encoding="utf-8"))
        if reuse and not paths.reusable(results_path):
            return None
    except (OSError, json.JSONDecodeError):
        return None
    if not same(results):
        return None
    missing = [f for f in files(results) if not (Path(folder) / f).is_file()]
    if missing:
        if incomplete and distributed.is_main():
            print(f"[hybridnb] {paths.shown(folder)} is incomplete: it lacks {', '.join(missing)}, which its "
                  f"results.json names; {incomplete}", flush=True)
        return None
    file_hashes.check_result_folder(folder, remake)
    if reuse:
        paths.note_reuse(results_path)
    return results


def _finished_in(report_dir: Path, digest: str) -> dict[str, Any] | None:
    """The results in ``report_dir`` when its config has hash ``digest`` and :func:`saved_results` takes them (a
    folder of this config that lacks a named file counts as unfinished, so the command that meets it makes it
    again); a hand-edited results.json or a changed per-query file is refused, not reused, and so is a folder
    without a manifest (made before manifests: the backfill command records them)."""
    try:
        saved = json.loads((report_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if saved.get("hash") != digest:
        return None
    return saved_results(report_dir, "run the command that made it again (it is retrained)", files=named_files,
                         incomplete="the run is made again")


def _report_dirs(cfg: config.RunConfigBase) -> list[Path]:
    """Where a finished run of ``cfg`` may be: its own report folder first, then every other one under
    ``reports/runs/`` (the hash, not the name, says what a run computed)."""
    own = run_dirs(cfg)[0]
    return [own, *sorted(p for p in own.parent.glob("*") if p.is_dir() and p != own)]


def find_finished_dir(cfg: config.RunConfigBase) -> tuple[Path, dict[str, Any]] | None:
    """(report folder, results) of a finished run with the same config hash, or None (also when older than
    ``HYBRIDNB_FRESH_SINCE``, see :func:`hybridnb.paths.reusable`).

    The run's own folder first, then any folder under ``reports/runs/``: the hash covers everything that
    changes a result, so a run made under another name (a recipe probe that the grid needs again) is the
    same computation and is reused, not retrained."""
    for report_dir in _report_dirs(cfg):
        results = _finished_in(report_dir, cfg.hash)
        if results is not None:
            return report_dir, results
    return None


def find_finished(cfg: config.RunConfigBase) -> dict[str, Any] | None:
    """The results of :func:`find_finished_dir`, or None."""
    found = find_finished_dir(cfg)
    return None if found is None else found[1]


def has_finished(cfg: config.RunConfigBase) -> bool:
    """Whether some folder under ``reports/runs/`` holds a reusable result of ``cfg``'s hash: its config.json has
    the hash and its results.json is there and not older than ``HYBRIDNB_FRESH_SINCE``. A cheap look (no
    manifest check): :func:`find_finished_dir` makes the full checks when the run is reused."""
    for report_dir in _report_dirs(cfg):
        try:
            saved = json.loads((report_dir / "config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        results = report_dir / "results.json"
        if saved.get("hash") == cfg.hash and results.is_file() and paths.reusable(results):
            return True
    return False


def first_finished(candidates: list[config.RunConfigBase], default: config.RunConfigBase) -> config.RunConfigBase:
    """The first of ``candidates`` (the config with ``auto`` precision resolved to each precision in
    :data:`hybridnb.models.precision.AUTO_REUSE_ORDER`) whose run has finished, else ``default`` (resolved for this
    machine: what it computes).

    Why: the committed runs were made in bf16 on CPUs with native bf16; on an AVX2-only CPU `auto` computes in
    float32, another hash, and without this ``make reproduce`` would retrain every committed run (hours) only
    because the reader's CPU differs. The order is the same on every machine (bf16 first), so two machines read
    the same runs and write the same report even where both precisions have finished (a float32 run committed
    for a comparison); config.json and REPORT.md say which precision made them. With ``FRESH=1`` nothing
    finished counts, so this machine's precision is computed."""
    return next((c for c in candidates if has_finished(c)), default)


@dataclass
class RunOutput:
    """Everything a finished run writes into ``reports/runs/<run_name>/`` besides ``config.json``."""

    results: dict[str, Any]                                     # results.json (holds "provenance")
    files: dict[str, Callable[[Path], Any]]                     # file name -> writer(path): per-query arrays, log
    figures: dict[str, Any] = field(default_factory=dict)       # file name -> matplotlib figure
    summary: str = ""                                           # the paragraph that opens results.md
    rows: list[dict[str, Any]] = field(default_factory=list)    # the table of results.md


class RunTask(Protocol):
    """One kind of run for :func:`execute`: :class:`hybridnb.studies.runs.TextRun` (text), the
    image-text runs in :mod:`hybridnb.image_text.runs`. ``cfg`` is already checked (``run_name``, ``hash``)."""

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
        prepared = time.time()
        trained = task.train(data, show_progress)
        outcome = None
        if distributed.is_main():
            trained_at = time.time()
            output = task.evaluate(data, trained, started, show_progress)
            # where a run's wall time goes beyond its steps and encodings (the budget's other part, issue #34)
            output.results.setdefault("timings", {}).update(
                prepare_s=prepared - started, train_wall_s=trained_at - prepared,
                **getattr(trained, "seconds", {}),  # the loop's validate_s, best_s, checkpoint_s (text: final_s)
                evaluate_s=time.time() - trained_at)
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


def check_no_other_run(cfg: config.RunConfigBase, report_dir: Path) -> None:
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


def write_result_folder(folder: Path, results: dict[str, Any], title: str, rows: list[dict[str, Any]],
                        note: str = "", files: dict[str, Callable[[Path], Any]] | None = None,
                        figures: dict[str, Any] | None = None) -> Path:
    """Write the result folder ``folder`` (a run's, a zero-shot or a MIRACL result) completely in a temp folder,
    then swap it in: the ``files`` (name -> writer(path)) and ``figures``, results.json, results.md (``# title``,
    the provenance stamp, ``note`` when there is one, the table of ``rows``), and last manifest.json (the sha256
    of each of them, :mod:`hybridnb.file_hashes`, checked by :func:`saved_results` before any reuse)."""
    with reporting.atomic_dir(folder) as tmp:
        for name, write in (files or {}).items():
            write(tmp / name)
        for name, fig in (figures or {}).items():
            reporting.save_figure(fig, tmp / name)
        reporting.write_json(tmp / "results.json", results)
        reporting.write_text(tmp / "results.md", f"# {title}\n\n{reporting.stamp(results['provenance'])}\n\n"
                             + (note + "\n\n" if note else "") + reporting.markdown_table(rows))
        file_hashes.write_manifest(tmp)
    return Path(folder)


def write_run(cfg: config.RunConfigBase, output: RunOutput) -> Path:
    """Write reports/runs/<run_name>/ (:func:`write_result_folder`): config.json, the output's files and figures,
    results.json and results.md (its summary and table)."""
    config_json = {**cfg.to_json(), "provenance": output.results["provenance"]}
    return write_result_folder(run_dirs(cfg)[0], output.results, f"Run {cfg.run_name}", output.rows, output.summary,
                               {"config.json": lambda path: reporting.write_json(path, config_json), **output.files},
                               output.figures)


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
