"""`make reproduce`: run the notebooks through papermill with one profile and keep the executed copies.

Each executed notebook is written to a temp file and moved into reports/<profile>/notebooks/ only when it
ran to the end, so an interrupted run never leaves a half-executed notebook that looks finished. A run that
finishes writes its own time and memory record, reports/<profile>/BUDGET.md (:mod:`hybridnb.studies.budget`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

from hybridnb.studies import backbone_study, budget, image_text_sweep, miracl_eval, recipe, runs, st_compare, sweep
from hybridnb import config, paths
from hybridnb.data import miracl
from hybridnb.image_text import runs as image_text_runs
from hybridnb.paths import repo_root, reports_root

#: make reproduce: the data, the zero-shot rows, the backbones, the image-text study, then 04, which trains what is
#: missing of the recipe's grid (every strategy x seed x direction) and writes the one REPORT.md
NOTEBOOKS = ("01_data.ipynb", "02_zero_shot.ipynb", "06_backbones.ipynb", "07_multimodal.ipynb", "04_compare.ipynb")
TRAIN_NOTEBOOK = "03_train.ipynb"  # one run (papermill -p strategy ...); executed once per strategy when listed
SWEEP_NOTEBOOK = "05_ratio_sweep.ipynb"  # `make sweep`: its own target, not in NOTEBOOKS
MIRACL_NOTEBOOK = "09_miracl.ipynb"  # in make reproduce when the profile says miracl_in_reproduce (paper)
COMPARE_NOTEBOOK = "04_compare.ipynb"  # writes REPORT.md: MIRACL runs before it, for its MIRACL rows
BACKBONES_NOTEBOOK = "06_backbones.ipynb"  # trains the other backbones' runs that MIRACL evaluates
ST_NOTEBOOK = "08_sentence_transformers.ipynb"  # `make st-compare`: its own target, not in NOTEBOOKS


def ordered(profile: dict, notebooks: tuple[str, ...]) -> list[str]:
    """The notebooks in run order. With ``miracl_in_reproduce``, notebook 09 joins make reproduce after the
    runs it evaluates (03, and 06 for the other backbones) and before 04, whose REPORT.md shows its rows."""
    order = list(notebooks)
    if profile.get("miracl_in_reproduce") and COMPARE_NOTEBOOK in order and MIRACL_NOTEBOOK not in order:
        at = order.index(COMPARE_NOTEBOOK)
        order.remove(COMPARE_NOTEBOOK)
        if BACKBONES_NOTEBOOK in order:
            at = max(at, order.index(BACKBONES_NOTEBOOK) + 1)
        order[at:at] = [MIRACL_NOTEBOOK, COMPARE_NOTEBOOK]
    return order


def jobs(profile: dict, notebooks: tuple[str, ...]) -> list[tuple[str, str, dict]]:
    """(notebook, executed copy's name, parameter overrides) in run order."""
    out = []
    for nb in ordered(profile, notebooks):
        if nb == TRAIN_NOTEBOOK:
            for strategy in profile.get("strategies") or [profile["strategy"]]:
                label = runs.strategy_label(strategy, profile["alpha"])
                out.append((nb, f"03_train-{label}.ipynb", {"strategy": strategy}))
        else:
            out.append((nb, nb, {}))
    return out


def notebook_parameters(notebook: Path, profile: dict) -> dict:
    """The profile's values for the parameters this notebook declares (others are not passed)."""
    import papermill

    declared = papermill.inspect_notebook(str(notebook))
    return {k: v for k, v in profile.items() if k in declared}


def run(profile_name: str, notebooks: tuple[str, ...] = NOTEBOOKS, fresh: bool = False) -> list[Path]:
    """Execute the notebooks; `fresh` recomputes every result and checkpoint this run would otherwise reuse
    (by setting ``HYBRIDNB_FRESH_SINCE`` to now for the kernels), so its BUDGET.md is a from-scratch time."""
    paths.fresh_since()  # HYBRIDNB_FRESH_SINCE, read by every kernel: a bad value fails now, not in one of them
    profile = config.load_profile(profile_name)
    # Validate everything a notebook would check, before the first long step.
    if "eval_datasets" in profile:
        config.check_eval_datasets(profile["eval_datasets"])
    if "candidate_mode" in profile:
        config.check_candidate_mode(profile["candidate_mode"])
    if "encode_dtype" in profile:
        config.check_encode_dtype(profile["encode_dtype"])
    plan = jobs(profile, notebooks)
    for _, _, overrides in plan:
        if "strategy" in overrides:
            runs.check_run({**profile, **overrides})
    if "06_backbones.ipynb" in notebooks:
        backbone_study.check_study(profile)  # backbones and their fine-tuning runs
    if "07_multimodal.ipynb" in notebooks:
        image_text_runs.check_runs(profile)  # the image-text runs and their zero-shot baseline
    if SWEEP_NOTEBOOK in notebooks:
        sweep.sweep_points(profile)  # every alpha and mixture of the sweep
    if COMPARE_NOTEBOOK in notebooks or SWEEP_NOTEBOOK in notebooks:
        recipe.plan(profile)  # the grid, the sweeps and every probe: each run's config checked
        image_text_sweep.plan(profile)  # the image-text sweep's points
    if ST_NOTEBOOK in notebooks:
        st_compare.plan(profile)  # every seed's hybridnb run and its sentence-transformers twin
    if any(nb == MIRACL_NOTEBOOK for nb, _, _ in plan):  # its settings, and every language's data reachable
        settings = miracl_eval.check_settings(profile)
        miracl.check_available(settings.languages, settings.local)
    nb_dir = repo_root() / "notebooks"
    missing = [nb for nb in dict.fromkeys(nb for nb, _, _ in plan) if not (nb_dir / nb).exists()]
    if missing:
        raise FileNotFoundError(f"notebooks not found in {nb_dir}: {missing}")
    out_dir = reports_root() / profile["profile"] / "notebooks"
    if fresh:
        os.environ["HYBRIDNB_FRESH_SINCE"] = repr(time.time())  # inherited by every kernel
    before = budget.results_snapshot(profile["profile"])
    cache_was_empty = budget.cache_is_empty()
    written, records, started = [], [], time.perf_counter()
    fd, reuse_log = tempfile.mkstemp(prefix="hybridnb-reuse-", suffix=".log")  # every kernel notes what it reused
    os.close(fd)
    previous_log = os.environ.get("HYBRIDNB_REUSE_LOG")
    os.environ["HYBRIDNB_REUSE_LOG"] = reuse_log  # inherited by every kernel
    try:
        with terminate_as_exit():
            _execute(plan, nb_dir, out_dir, profile, records, written)
        used = budget.read_reuse_log(Path(reuse_log))
    finally:
        os.unlink(reuse_log)
        if previous_log is None:
            os.environ.pop("HYBRIDNB_REUSE_LOG", None)
        else:
            os.environ["HYBRIDNB_REUSE_LOG"] = previous_log
    commands = {NOTEBOOKS: "make reproduce"}  # not `make sweep` or a subset
    if tuple(notebooks) in commands:
        reused = budget.reused_results(before, used)
        print("[hybridnb] wrote", budget.write_budget(profile, records, time.perf_counter() - started,
                                                      out_dir.parent, reused, cache_was_empty,
                                                      budget.encode_speeds(profile["profile"], before),
                                                      budget.train_step_seconds(profile["profile"], before),
                                                      command=commands[tuple(notebooks)]), flush=True)
    return written


def partial_path(out_dir: Path, name: str) -> Path:
    """Where a notebook executes before it is moved into place: ``.<name>.<pid>.partial.ipynb``, named by its
    pipeline's process so that a later pipeline can tell a dead one's copy from a live one's."""
    return out_dir / f".{name}.{os.getpid()}.partial.ipynb"


def remove_stale_partials(out_dir: Path) -> list[Path]:
    """Delete the executed copies that killed pipelines left in ``out_dir`` (their process is gone; a copy named
    without a process, by earlier versions, too); a live pipeline's copy stays. Returns what was removed."""
    removed = []
    for path in sorted(Path(out_dir).glob(".*.partial.ipynb")) if Path(out_dir).is_dir() else []:
        pid = path.name[:-len(".partial.ipynb")].rsplit(".", 1)[-1]
        if pid.isdigit() and _alive(int(pid)):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def terminate_as_exit():
    """SIGTERM (``kill``, a scheduler's stop) raises SystemExit here while the block runs, so the pipeline's
    ``finally`` blocks run as after Ctrl-C: no executed copy or temp log is left behind. The main thread only
    (signal handlers can be set nowhere else); the previous handler comes back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _execute(plan, nb_dir: Path, out_dir: Path, profile: dict, records: list, written: list) -> None:
    import papermill

    for path in remove_stale_partials(out_dir):
        print(f"[hybridnb] removed {paths.shown(path)}: the executed copy of a pipeline that was killed", flush=True)
    for nb, name, overrides in plan:
        print(f"[hybridnb] {name} with profile {profile['profile']} ...", flush=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        partial = partial_path(out_dir, name)
        try:
            with budget.measure(name, records):
                papermill.execute_notebook(str(nb_dir / nb), str(partial),
                                           parameters=notebook_parameters(nb_dir / nb, {**profile, **overrides}),
                                           cwd=str(nb_dir), progress_bar=False, log_output=False)
            tidy_executed(partial, nb_dir / nb, out_dir / name)
            partial.replace(out_dir / name)
        except BaseException as e:  # the half-executed copy goes; the error stays on screen (raised below)
            print(f"[hybridnb] {name} stopped ({type(e).__name__}); its half-executed copy is removed, "
                  "the error follows", flush=True)
            raise
        finally:
            partial.unlink(missing_ok=True)
        print(f"[hybridnb] {name} done in {records[-1].seconds:.0f} s -> {out_dir / name}", flush=True)
        written.append(out_dir / name)


def tidy_executed(executed: Path, source: Path, final: Path) -> None:
    """Make an executed copy read as one notebook run with one set of values: the notebook's own defaults cell
    (tagged ``parameters``) is collapsed, so the first screen shows papermill's injected values only, and
    papermill's input and output paths are written relative to the checkout (no machine's absolute paths)."""
    import nbformat

    nb = nbformat.read(str(executed), as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            cell.metadata.setdefault("jupyter", {})["source_hidden"] = True  # JupyterLab shows it folded
    pm = nb.metadata.get("papermill", {})
    pm["input_path"], pm["output_path"] = paths.shown(source), paths.shown(final)
    nbformat.write(nb, str(executed))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hybridnb pipeline", description=__doc__)
    parser.add_argument("--profile", default="cpu", help="params/<profile>.yaml (ci, cpu, paper) or a YAML path")
    parser.add_argument("--notebooks", nargs="*", default=list(NOTEBOOKS))
    parser.add_argument("--fresh", action="store_true",
                        help="recompute every run and zero-shot result instead of reusing earlier ones")
    args = parser.parse_args(argv)
    run(args.profile, tuple(args.notebooks), fresh=args.fresh)
    return 0

