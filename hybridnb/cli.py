"""`python -m hybridnb`: the command line, outside Jupyter.

    python -m hybridnb train --profile cpu --strategy cross     # one training run (notebook 03)
    python -m hybridnb train --profile ci --set alpha=0.25 steps=10 train_data=xquad-r eval_data=mlqa-r
    torchrun --standalone --nproc_per_node 4 -m hybridnb train --profile paper  # DDP on 4 GPUs
    python -m hybridnb train-image-text --profile cpu --strategy hybrid --seed 0   # one image-text run (notebook 07)
    torchrun --standalone --nproc_per_node 2 -m hybridnb train-image-text --profile ci --strategy hybrid
    python -m hybridnb recipe --profile cpu                     # the recipe's probes, grid and sweep runs
    python -m hybridnb report --profile cpu                     # REPORT.md from the finished runs
    python -m hybridnb pipeline --profile cpu                   # make reproduce: every notebook via papermill
    python -m hybridnb miracl --profile paper                   # MIRACL dev (notebook 09) for the profile's models
    torchrun --standalone --nproc_per_node 4 -m hybridnb miracl --profile paper   # corpus encoding on 4 GPUs
    python -m hybridnb verify                                   # every committed result against its manifest.json
    python -m hybridnb verify --backfill                        # record the hashes of results made before manifests

Errors in the input are one line on stderr (exit status 2); ``--debug`` shows the traceback; ``--help``
prints this to stdout.

``train`` does what notebooks/03_train.ipynb does (:func:`hybridnb.studies.runs.run`): checks everything first, reuses a
finished run with the same config hash, resumes a killed one from its last checkpoint, writes
reports/runs/<run_name>/.
"""

from __future__ import annotations

import argparse
import os
import sys


from hybridnb import config, paths, reporting
from hybridnb.config import parse_overrides  # noqa: F401  (the CLI's --set, also read by studies.matrix)
from hybridnb.training import distributed
from hybridnb.studies import runs


DEFAULT_PROFILE = "cpu"


def check_override_keys(overrides: dict) -> None:
    """Refuse a key no profile or notebook knows (``--set stepz=3`` would otherwise be dropped silently and an
    earlier run reused), naming the closest known keys (:data:`hybridnb.config.PARAMETERS`)."""
    try:
        config.check_parameter_names(overrides, "--set")
    except ValueError as e:
        raise SystemExit(str(e)) from None


def profile_with_overrides(profile: str, settings: list[str]) -> dict:
    """The profile's parameters with ``--set KEY=VALUE`` applied, each key checked first."""
    params = config.load_profile(profile)
    overrides = parse_overrides(settings)
    check_override_keys(overrides)
    params.update(overrides)
    return params


def run_keys_help(profile: str = DEFAULT_PROFILE) -> str:
    """Every key of a text run (:class:`hybridnb.config.TextRunConfig`, set with ``--set KEY=VALUE``): its default
    (the profile's value), its allowed values and unit, and its meaning."""
    try:
        defaults = config.load_profile(profile)
    except (OSError, ValueError):  # an installed package without params/: the keys without their defaults
        defaults, profile = {}, "none"
    return (f"run keys (--set KEY=VALUE): KEY = default (params/{profile}.yaml)  [allowed values; unit]  meaning\n"
            + "\n".join(config.parameter_lines(config.TextRunConfig, defaults)))


def train_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hybridnb train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=run_keys_help())
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="params/<profile>.yaml or a YAML path")
    parser.add_argument("--strategy", help="mono | cross | hybrid | mixed | en (overrides the profile)")
    parser.add_argument("--alpha", type=float, help="hybrid's share of mono batches")
    parser.add_argument("--run-name", help="reports/runs/<run-name>/ (default: derived from the config)")
    parser.add_argument("--replace", action="store_true",
                        help="replace a finished report of another config under the same run name")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="other parameter overrides (YAML values): the run keys below")
    args = parser.parse_args(argv)

    params = profile_with_overrides(args.profile, args.set)
    for key in ("strategy", "alpha", "run_name"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    if args.replace:
        os.environ[runs.REPLACE_ENV] = "1"
    try:  # checks everything before any work, then says whether it reuses a finished run or trains
        report_dir, results = runs.run(params, announce=True)
        main = distributed.is_main()
    finally:
        distributed.cleanup()  # under torchrun: leave the process group (a no-op otherwise)
    if main:
        print(f"[hybridnb] report: {report_dir}")
        if results["model"].get("best_dir"):  # runs written before the path was recorded have none
            print(f"[hybridnb] best encoder (a sentence-transformers folder): {results['model']['best_dir']}")
        print(reporting.markdown_table(reporting.summary_rows(results)))
    return 0


def image_text_main(argv: list[str] | None = None) -> int:
    """``python -m hybridnb train-image-text``: one image-text run as notebook 07 trains it
    (:func:`hybridnb.image_text.runs.run_image_text`: the profile's ``mm_`` keys), also under torchrun, where every
    rank embeds its share of the global batch and rank 0 evaluates and writes reports/runs/<run_name>/. A finished
    run of the same config is reused, a killed one resumes from its checkpoint."""
    from hybridnb.image_text import runs as image_text_runs

    parser = argparse.ArgumentParser(prog="python -m hybridnb train-image-text", description=image_text_main.__doc__)
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="params/<profile>.yaml or a YAML path")
    parser.add_argument("--strategy", help="en | mono | cross | hybrid | mixed (default: the profile's first of "
                                           "mm_strategies)")
    parser.add_argument("--seed", type=int, help="training seed (default: the profile's first of mm_seeds)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="other parameter overrides (YAML values), e.g. mm_steps=8 mm_alpha=0.25")
    args = parser.parse_args(argv)
    params = profile_with_overrides(args.profile, args.set)
    strategy = args.strategy or (params.get("mm_strategies") or [None])[0]
    seed = image_text_runs.seeds(params)[0] if args.seed is None else args.seed
    try:  # every value checked before the data or a model loads
        report_dir, results = image_text_runs.run_image_text(params, strategy, seed=seed)
        main = distributed.is_main()
    finally:
        distributed.cleanup()  # under torchrun: leave the process group (a no-op otherwise)
    if main:
        print(f"[hybridnb] report: {report_dir}")
        print(reporting.markdown_table(image_text_runs.metric_rows(results)))
    return 0


def miracl_main(argv: list[str] | None = None) -> int:
    """``python -m hybridnb miracl``: what notebook 09 does (:func:`hybridnb.studies.miracl_eval.run`), also under
    torchrun, where every process encodes its own corpus shards and process 0 searches, scores and writes
    reports/<profile>/miracl/<system>/ and reports/<profile>/MIRACL.md."""
    from hybridnb.studies import miracl_eval

    parser = argparse.ArgumentParser(prog="python -m hybridnb miracl", description=miracl_main.__doc__)
    parser.add_argument("--profile", default="cpu", help="params/<profile>.yaml or a YAML path")
    parser.add_argument("--languages", nargs="*", help="MIRACL languages (overrides miracl_languages)")
    parser.add_argument("--local", help="a local copy of MIRACL (overrides miracl_local)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="other parameter overrides (YAML values), e.g. miracl_index={type: ivf}")
    args = parser.parse_args(argv)
    params = profile_with_overrides(args.profile, args.set)
    if args.languages:
        params["miracl_languages"] = args.languages
    if args.local:
        params["miracl_local"] = args.local
    try:  # checks every setting and every language's data first, then encodes, searches and scores
        collected = miracl_eval.run(params, show_progress=True, announce=True)
        main = distributed.is_main()
    finally:
        distributed.cleanup()  # under torchrun: leave the process group (a no-op otherwise)
    if main:
        out = miracl_eval.write_report(params, collected)
        for note in collected.get("_notes", []):
            print(f"[hybridnb] not evaluated: {note}")
        table = miracl_eval.results_table(collected)
        if not table.empty:
            print(reporting.markdown_table(table.reset_index(names="system").to_dict("records")))
        print(f"[hybridnb] wrote {out}")
    return 0


def recipe_main(argv: list[str] | None = None) -> int:
    """``python -m hybridnb recipe --profile cpu``: the image-text sweep (short), then the text recipe's probes, grid
    and sweep (:mod:`hybridnb.studies.recipe`), training what is missing, every run checked first."""
    from hybridnb.studies import image_text_sweep
    from hybridnb.studies import recipe

    stages = ("probes", "grid", "sweep", "mm_sweep")
    parser = argparse.ArgumentParser(prog="python -m hybridnb recipe", description=recipe_main.__doc__)
    parser.add_argument("--profile", default="cpu", help="params/<profile>.yaml or a YAML path")
    parser.add_argument("--stages", nargs="+", default=list(stages), choices=stages + ("masked",),
                        help="masked (not a default): the reverse grid again with mask_false_negatives on")
    parser.add_argument("--no-progress", action="store_true", help="one line per run, no progress bars")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="profile overrides (YAML values) for every run, e.g. length_groups=4: runs of another "
                             "config hash, trained beside the committed ones, which stay")
    args = parser.parse_args(argv)
    params = profile_with_overrides(args.profile, args.set)
    recipe.plan(params)
    if "mm_sweep" in args.stages:
        image_text_sweep.plan(params)
        image_text_sweep.train(params, show_progress=not args.no_progress)
    text = tuple(s for s in args.stages if s != "mm_sweep")
    if text:
        done = recipe.collect(params, train_missing=True, show_progress=not args.no_progress, stages=text)
        print(f"[hybridnb] recipe: chosen {done['chosen']}", flush=True)
    return 0


def report_main(argv: list[str] | None = None) -> int:
    """``python -m hybridnb report --profile cpu``: reports/REPORT.md from the finished runs (nothing trains; a
    missing zero-shot row is computed, minutes of encoding). ``make reproduce`` trains what is missing first."""
    from hybridnb.studies import image_text_sweep
    from hybridnb.studies import recipe, report

    parser = argparse.ArgumentParser(prog="python -m hybridnb report", description=report_main.__doc__)
    parser.add_argument("--profile", default="cpu", help="params/<profile>.yaml or a YAML path")
    parser.add_argument("--saved-zero-shot", action="store_true",
                        help="use only the zero-shot rows already saved (a missing one is left out and named)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="profile overrides (YAML values), as given to `recipe --set`: the report of those runs")
    args = parser.parse_args(argv)
    params = profile_with_overrides(args.profile, args.set)
    recipe.plan(params)
    out = report.build(params, recipe.zero_shot_rows(params, compute=not args.saved_zero_shot),
                       image_text_sweep.report_part(params, params["n_resamples"], params["seed"]))
    print("\n".join(out["summary"]) or "no comparison yet")
    print(f"[hybridnb] wrote {paths.shown(out['path'])}")
    return 0


def verify_main(argv: list[str] | None = None) -> int:
    """``python -m hybridnb verify [--backfill] [FOLDER ...]``: check every result folder (one with a results.json)
    under each FOLDER (default: reports/runs and each profile's zero_shot and miracl folders) against its
    manifest.json, naming each mismatch on one line; exit
    status 1 when any folder fails. ``--backfill`` first writes a manifest into each folder that has none (run
    folders made before manifests, copied in by hand), never over an existing one."""
    from hybridnb import file_hashes

    parser = argparse.ArgumentParser(prog="python -m hybridnb verify", description=verify_main.__doc__)
    parser.add_argument("folders", nargs="*", help="folders to check (default: reports/runs, "
                                                   "reports/<profile>/zero_shot, reports/<profile>/miracl)")
    parser.add_argument("--backfill", action="store_true",
                        help="write the missing manifests first (only for folders whose files are as their run "
                             "wrote them)")
    args = parser.parse_args(argv)
    folders = [paths.resolve_shown(f) for f in args.folders] or \
        [f for f in file_hashes.committed_roots() if f.is_dir()]
    for folder in folders:
        if not folder.is_dir():
            raise SystemExit(f"{folder} is not a folder")
    problems, n = [], 0
    for folder in folders:
        if args.backfill:
            written = file_hashes.backfill(folder)
            print(f"[hybridnb] verify: wrote {len(written)} manifest(s) under {paths.shown(folder)}", flush=True)
        n += len(file_hashes.result_folders(folder))
        problems += file_hashes.verify(folder)
    for line in problems:
        print(f"hybridnb verify: mismatch: {line}", file=sys.stderr)
    print(f"[hybridnb] verify: {n - len(problems)} of {n} result folder(s) match their manifest.json"
          + (f"; {len(problems)} do not" + ("" if args.backfill else
                                            f" (a folder without one: `{file_hashes.BACKFILL_COMMAND}`)")
             if problems else ""))
    return 1 if problems else 0


def matrix_main(argv: list[str] | None = None) -> int:
    """``python -m hybridnb matrix``: check every committed result against the reproduction matrix
    (hybridnb/studies/reproductions.yaml, :mod:`hybridnb.studies.matrix`); ``--update`` rewrites it and
    docs/reproductions.md from the committed runs (review the diff: a moved number is a changed result)."""
    from hybridnb.studies import matrix

    parser = argparse.ArgumentParser(prog="python -m hybridnb matrix", description=matrix_main.__doc__)
    parser.add_argument("--profile", default="cpu", help="params/<profile>.yaml or a YAML path")
    parser.add_argument("--update", action="store_true", help="rewrite the matrix and its docs page")
    args = parser.parse_args(argv)
    if args.update:
        for path in matrix.update(args.profile):
            print(f"[hybridnb] wrote {paths.shown(path)}")
    problems = matrix.check(matrix.load(), config.load_profile(args.profile))
    for line in problems:
        print(f"hybridnb matrix: {line}", file=sys.stderr)
    print(f"[hybridnb] matrix: {'every committed result agrees' if not problems else f'{len(problems)} disagreement(s)'}")
    return 1 if problems else 0


USAGE = ("usage: python -m hybridnb {train,train-image-text,recipe,report,pipeline,miracl,verify,matrix} ... [--debug]  "
         "(--help after a command)")


def main(argv: list[str] | None = None) -> int:
    """``python -m hybridnb <command> ...``: dispatch to the command's own parser.

    Exit status: 0 done (``--help`` included, printed to stdout), 2 bad input, as argparse does: an unknown
    command, a bad option or value, a profile that is not valid YAML, a missing or damaged file, a run another
    process holds. Each such error is one line on stderr, ``hybridnb <command>: error: ...``; ``--debug`` raises
    it with its traceback instead."""
    from hybridnb import pipeline
    from hybridnb.training.checkpoints import RunLocked

    commands = {"train": train_main, "train-image-text": image_text_main, "recipe": recipe_main,
                "report": report_main, "pipeline": pipeline.main,
                "miracl": miracl_main, "verify": verify_main, "matrix": matrix_main}
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__ + "\n" + USAGE)
        return 0
    if not argv or argv[0] not in commands:
        said = f"unknown command {argv[0]!r}" if argv else "no command"
        print(f"python -m hybridnb: error: {said}\n{USAGE}", file=sys.stderr)
        return 2
    try:
        paths.fresh_since()  # HYBRIDNB_FRESH_SINCE checked now, not when the first reuse is weighed
        return commands[argv[0]](argv[1:])
    except SystemExit as e:  # argparse (--help: 0, bad options: 2, already printed) and our one-line refusals
        if isinstance(e.code, int) or e.code is None:
            return e.code or 0
        if debug:
            raise
        return _error(argv[0], e.code)
    except (ValueError, TypeError, OSError, RunLocked) as e:  # bad input, named by the check that caught it
        if debug:
            raise
        return _error(argv[0], e)


def _error(command: str, error) -> int:
    """Print ``hybridnb <command>: error: <message>`` as one line on stderr; returns the exit status, 2."""
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"hybridnb {command}: error: {message} (--debug shows the traceback)", file=sys.stderr)
    return 2
