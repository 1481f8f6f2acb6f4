"""The reproduction matrix: each committed condition, the command that remakes it, the values it should give.

In the style of pyserini's two-click reproductions. ``hybridnb/studies/reproductions.yaml`` lists every
condition of the profile's comparison (the text grid: strategy x direction, every seed; the untrained model in
both candidate modes; hybrid trained by ``SentenceTransformerTrainer``, notebook 08, every seed), with

- the command that makes each run (``python -m hybridnb train ...``; the test checks that it plans exactly
  the committed run's config hash, so the command is the run and not a description of it);
- the values each run gave (4 decimals) and the tolerance a rerun must meet: ``same_machine`` for a rerun on
  the same CPU class, thread count and torch (training and encoding are deterministic there), and for
  **another machine** the mean over seeds within ``max(3 x the seeds' standard deviation, floor)``: another
  CPU rounds bf16 differently, and a trajectory that starts to differ ends within the seed spread, not at the
  same digits. Zero-shot has no seeds: another machine gets the floor.

Why a file and not the reports: the reports say what the last run gave; the matrix says what a run *should*
give, so a change that moves a committed number (a new kernel, a new loop) is caught by
``tests/test_matrix.py`` rather than silently re-committed. ``python -m hybridnb matrix --update`` rewrites it
from the committed runs (a deliberate act, reviewed in its diff) and ``docs/reproductions.md`` from it.
"""

from __future__ import annotations

import json
import shlex
import statistics
from pathlib import Path
from typing import Any

import yaml

from hybridnb import config, reporting
from hybridnb.paths import repo_root
from hybridnb.studies import recipe, runs, st_compare
from hybridnb.training.run_folder import find_finished_dir

__all__ = ["MATRIX", "DOCS", "METRICS", "FLOORS", "SAME_MACHINE", "text_command", "build", "load", "check",
           "docs_markdown", "update"]

MATRIX = Path(__file__).with_name("reproductions.yaml")
#: the command that makes the sentence-transformers runs (notebook 08, every seed; `make st-compare`)
ST_COMMAND = "python -m hybridnb pipeline --profile {profile} --notebooks 08_sentence_transformers.ipynb"
DOCS = Path("docs") / "reproductions.md"  # relative to the repository root
METRICS = ("mono_map", "cross_map", "multi_map", "rank_distance")
FLOORS = {"mono_map": 0.005, "cross_map": 0.005, "multi_map": 0.005, "rank_distance": 20.0}  # ~1 seed's sd
SAME_MACHINE = 1e-4  # the values are stored with 4 decimals (rank distance with 1): their rounding, with room


def _values(block: dict[str, Any]) -> dict[str, float]:
    """The headline metrics of one dataset block of a results.json (text run or zero-shot)."""
    return {"mono_map": round(block["mono"]["map"]["value"], 4), "cross_map": round(block["cross"]["map"]["value"], 4),
            "multi_map": round(block["multi"]["map"]["value"], 4),
            "rank_distance": round(block["rank_distance"]["value"], 1)}


def text_command(base: dict[str, Any], run: Any) -> str:
    """The ``python -m hybridnb train`` line that makes ``run`` (a :class:`recipe.RecipeRun`) from the profile
    ``base`` (its settings are the command's defaults; only what the run changes is passed)."""
    args = ["python", "-m", "hybridnb", "train", "--profile", base["profile"]]
    if run.params["strategy"] != base["strategy"]:
        args += ["--strategy", str(run.params["strategy"])]
    sets = []
    for k in ("seed", "train_data", "eval_data", "mask_false_negatives", "length_groups"):
        value = run.params.get(k, runs.OPTIONAL.get(k))  # a key a profile may leave out takes its default
        if value != base.get(k, runs.OPTIONAL.get(k)):
            sets.append(f"{k}={str(value).lower() if isinstance(value, bool) else value}")  # YAML's true/false
    return shlex.join(args + (["--set", *sets] if sets else []))


def _parse_command(command: str) -> dict[str, Any]:
    """The run parameters a matrix command plans (the same parsing as the CLI's ``train``)."""
    words = shlex.split(command)
    profile = words[words.index("--profile") + 1]
    params = config.load_profile(profile)
    if "--strategy" in words:
        params["strategy"] = words[words.index("--strategy") + 1]
    if "--set" in words:
        params.update(config.parse_overrides(words[words.index("--set") + 1:]))
    return {**params, "run_name": None}


def _relative(path: Path) -> str:
    return path.resolve().relative_to(repo_root()).as_posix()


def _spread(per_seed: list[dict[str, dict[str, float]]], dataset: str) -> dict[str, dict[str, float]]:
    out = {}
    for m in METRICS:
        xs = [s[dataset][m] for s in per_seed]
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        digits = 1 if m == "rank_distance" else 4
        out[m] = {"mean": round(statistics.fmean(xs), digits),
                  "tolerance": round(max(3 * sd, FLOORS[m]), digits)}
    return out


def _text_runs(params: dict[str, Any]) -> list:
    """The recipe's text runs the matrix lists: the grid (both directions) and the masked reverse grid."""
    return recipe.grid_runs(params) + recipe.masked_runs(params)


def build(params: dict[str, Any]) -> dict[str, Any]:
    """The matrix from the committed runs of ``params``' comparison (the recipe's grid and its masked reverse grid)
    and its zero-shot rows.
    A run that is not committed yet is left out (and named by :func:`check`, which compares against the plan)."""
    conditions = []
    groups: dict[tuple, list] = {}  # (group, train, evaluated, system) -> its runs, seed by seed, in grid order
    for r in _text_runs(params):
        groups.setdefault((r.group, r.params["train_data"], r.params["eval_data"], r.label), []).append(r)
    for (group, train, evaluated, label), members in groups.items():
        seeds = []
        for r in members:
            found = runs.find_finished_dir(r.cfg)
            if found is None:
                continue
            folder, results = found
            seeds.append({"seed": r.seed, "run": _relative(folder), "config_hash": r.cfg.hash,
                          "command": text_command(params, r),
                          "expected": {d: _values(b) for d, b in results["datasets"].items()}})
        if not seeds:
            continue
        datasets = list(seeds[0]["expected"])
        masked = "-fnmask" if group == "masked" else ""  # the reverse grid with in-batch false negatives masked
        conditions.append({"id": f"text/{train}-to-{evaluated}{masked}/{label}", "system": label, "trained_on": train,
                           "evaluated_on": evaluated, "profile": params["profile"], "model": params["model"],
                           "seeds": seeds, "another_machine": {d: _spread([s["expected"] for s in seeds], d)
                                                               for d in datasets}})
    st = _st_condition(params)
    if st is not None:
        conditions.append(st)
    for label, row in _zero_shot_rows(params).items():
        results = row["results"]
        conditions.append({
            "id": f"zero-shot/{results['model']['candidate_mode']}@{results['model']['max_length']}",
            "system": label, "trained_on": None, "evaluated_on": list(results["datasets"]),
            "profile": params["profile"], "model": params["model"], "result": _relative(Path(row["dir"])),
            "command": f"python -m hybridnb report --profile {params['profile']}",
            "expected": {d: _values(b) for d, b in results["datasets"].items()},
            "another_machine": {d: {m: {"mean": _values(b)[m], "tolerance": FLOORS[m]} for m in METRICS}
                                for d, b in results["datasets"].items()}})
    return {"about": "Generated by `python -m hybridnb matrix --update` from the committed runs; checked by "
                     "tests/test_matrix.py. same_machine: a rerun on the same CPU class, threads and torch; "
                     "another_machine: the mean over seeds within the tolerance (max(3 sd, floor)).",
            "same_machine": SAME_MACHINE, "floors": dict(FLOORS), "conditions": conditions}


def _st_runs(params: dict[str, Any]) -> list[tuple[Any, tuple[Path, dict] | None]]:
    """(config, finished (folder, results) or None) of every sentence-transformers run notebook 08 plans."""
    return [(cfg, find_finished_dir(cfg)) for cfg in st_compare.plan(params)]


def _st_condition(params: dict[str, Any]) -> dict[str, Any] | None:
    """hybrid trained by SentenceTransformerTrainer (notebook 08), every committed seed; None when none is."""
    seeds = [{"seed": cfg.text.seed, "run": _relative(found[0]), "st_config_hash": cfg.hash,
              "command": ST_COMMAND.format(profile=params["profile"]),
              "expected": {d: _values(b) for d, b in found[1]["datasets"].items()}}
             for cfg, found in _st_runs(params) if found is not None]
    if not seeds:
        return None
    train, evaluated = params["train_data"], params["eval_data"]
    datasets = list(seeds[0]["expected"])
    return {"id": f"st/{train}-to-{evaluated}/hybrid", "system": "hybrid (SentenceTransformerTrainer)",
            "trained_on": train, "evaluated_on": evaluated, "profile": params["profile"], "model": params["model"],
            "seeds": seeds, "another_machine": {d: _spread([s["expected"] for s in seeds], d) for d in datasets}}


def _zero_shot_rows(params: dict[str, Any]) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for by_label in recipe.zero_shot_rows(params, compute=False, show_progress=False).values():
        for label, row in by_label.items():
            rows.setdefault(label, row)
    return rows


def load(path: Path = MATRIX) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def check(matrix: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """Every way the committed results and the matrix disagree, one line each (empty: they agree):
    a listed run missing or moved beyond ``same_machine``, a command that plans another config, a committed run
    or zero-shot row of the comparison that the matrix does not list."""
    problems = []
    tol = matrix["same_machine"]
    listed_hashes = set()
    for c in matrix["conditions"]:
        entries = c.get("seeds") or [{**c, "run": c["result"]}]
        for e in entries:
            folder = repo_root() / (e["run"])
            path = folder / "results.json"
            if not path.is_file():
                problems.append(f"{c['id']}: {e['run']}/results.json is missing")
                continue
            got = {d: _values(b) for d, b in json.loads(path.read_text(encoding="utf-8"))["datasets"].items()}
            for d, expected in e["expected"].items():
                for m, v in expected.items():
                    if abs(got.get(d, {}).get(m, float("inf")) - v) > (0.05 if m == "rank_distance" else tol):
                        problems.append(f"{c['id']}: {e['run']} {d} {m} = {got.get(d, {}).get(m)}, the matrix "
                                        f"expects {v}")
            if "config_hash" in e:
                listed_hashes.add(e["config_hash"])
                planned = runs.check_run(_parse_command(e["command"])).hash
                if planned != e["config_hash"]:
                    problems.append(f"{c['id']} seed {e['seed']}: `{e['command']}` plans config {planned}, "
                                    f"not the committed run's {e['config_hash']}")
            if "st_config_hash" in e:  # notebook 08's command makes every seed: the run is one of its plan
                listed_hashes.add(e["st_config_hash"])
                words = shlex.split(e["command"])
                profile = config.load_profile(words[words.index("--profile") + 1])
                planned = {cfg.hash for cfg in st_compare.plan(profile)}
                if "08_sentence_transformers.ipynb" not in words or e["st_config_hash"] not in planned:
                    problems.append(f"{c['id']} seed {e['seed']}: `{e['command']}` does not make the committed run "
                                    f"{e['st_config_hash']}")
    for r in _text_runs(params):
        if r.cfg.hash not in listed_hashes and runs.find_finished_dir(r.cfg) is not None:
            problems.append(f"committed run {r.cfg.run_name} ({r.cfg.hash}) is not in the matrix")
    for cfg, found in _st_runs(params):
        if cfg.hash not in listed_hashes and found is not None:
            problems.append(f"committed run {cfg.run_name} ({cfg.hash}) is not in the matrix")
    listed_zs = {c["result"] for c in matrix["conditions"] if "result" in c}
    for row in _zero_shot_rows(params).values():
        if _relative(Path(row["dir"])) not in listed_zs:
            problems.append(f"zero-shot result {_relative(Path(row['dir']))} is not in the matrix")
    return problems


def docs_markdown(matrix: dict[str, Any]) -> str:
    """docs/reproductions.md: one table per condition kind, the command per run and the expected values."""
    lines = ["# Reproductions", "",
             "Generated from `hybridnb/studies/reproductions.yaml` by `python -m hybridnb matrix --update`; do not "
             "edit by hand. Each row is a committed run or result, the command that remakes it and what it gave. A "
             f"rerun on the same CPU class, thread count and torch gives the same values (within {matrix['same_machine']:g}, "
             "the stored rounding); on another machine the mean over seeds should fall within the tolerance "
             "(max(3 x the seeds' standard deviation, a floor of "
             + ", ".join(f"{v:g} {k.replace('_', ' ')}" for k, v in matrix["floors"].items()) + ")). "
             "`tests/test_matrix.py` checks every committed result against this file.", "",
             "## Text runs", "",
             "| condition | seed | command | dataset | mono mAP | cross mAP | multi mAP | rank distance |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in matrix["conditions"]:
        for e in c.get("seeds", []):
            for d, v in e["expected"].items():
                lines.append(f"| {c['id']} | {e['seed']} | `{e['command']}` | {d} | {v['mono_map']:.4f} | "
                             f"{v['cross_map']:.4f} | {v['multi_map']:.4f} | {v['rank_distance']:.1f} |")
    lines += ["", "## Another machine: the mean over seeds and its tolerance", "",
              "| condition | dataset | mono mAP | cross mAP | multi mAP | rank distance |", "| --- | --- | --- | --- | --- | --- |"]
    for c in matrix["conditions"]:
        for d, ms in c["another_machine"].items():
            lines.append(f"| {c['id']} | {d} | " + " | ".join(
                f"{ms[m]['mean']:.{1 if m == 'rank_distance' else 4}f} ± {ms[m]['tolerance']:g}" for m in METRICS) + " |")
    zs = [c for c in matrix["conditions"] if "result" in c]
    if zs:
        lines += ["", "## Zero-shot rows", "", "| condition | command | result | dataset | mono mAP | cross mAP | "
                  "multi mAP | rank distance |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for c in zs:
            for d, v in c["expected"].items():
                lines.append(f"| {c['id']} | `{c['command']}` | `{c['result']}` | {d} | {v['mono_map']:.4f} | "
                             f"{v['cross_map']:.4f} | {v['multi_map']:.4f} | {v['rank_distance']:.1f} |")
    return "\n".join(lines) + "\n"


def update(profile: str = "cpu") -> tuple[Path, Path]:
    """Rewrite the matrix from the committed runs of ``profile`` and the docs page from it."""
    params = config.load_profile(profile)
    matrix = build(params)
    reporting.write_text(MATRIX, yaml.safe_dump(matrix, sort_keys=False, width=120, allow_unicode=True))
    docs = repo_root() / DOCS
    reporting.write_text(docs, docs_markdown(matrix))
    return MATRIX, docs
