"""The study (`make study`, notebook 08): every strategy trained with several seeds, then compared.

What a run's seed controls: the batch kinds, languages and items the sampler draws and the dropout masks.
What it does not: the training data, its hard negatives, the validation split and the validation batches
(:data:`hybridnb.studies.runs.DATA_SEED`, :data:`hybridnb.training.trainer.VALIDATION_SEED`), so two seeds of a strategy
differ only by training randomness, which is the variance a claim about strategies has to beat.

Order of work (each run reused by config hash when it is already in ``reports/runs/``):

1. the temperature probes: hybrid, first seed, at each of ``study_temperatures``;
2. :func:`choose_temperature`: the probe with the higher validation MRR at its best checkpoint (the
   held-out MLQA-R items; MRR does not depend on the temperature, the loss does) sets the grid's temperature;
3. the grid: every strategy x every seed, seed by seed (an interrupted study has balanced seeds);
4. the reverse direction (train on XQuAD-R, evaluate on MLQA-R), one seed per strategy, if
   ``study_reverse``.

    python -m hybridnb study --profile study          # train what is missing (the report is notebook 08)
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from hybridnb.studies import compare, runs
from hybridnb import config

__all__ = ["STUDY_KEYS", "StudyRun", "check_study", "probe_runs", "grid_runs", "reverse_runs", "choose_temperature",
           "train_all", "collect", "zero_shot"]


@dataclass(frozen=True)
class StudyRun:
    group: str                  # "probe" | "grid" | "reverse"
    system: str                 # the comparison's label: X-X-mono, X-Y, hybrid
    seed: int
    params: dict[str, Any]      # the run's parameters (runs.run takes them)

    @cached_property
    def cfg(self) -> dict[str, Any]:
        """The checked run config (name, hash), computed once per planned run."""
        return runs.check_run(self.params)


#: the parameters of a study (notebook 08): a run's (runs.RUN_KEYS) plus the study's own
STUDY_KEYS = (*runs.RUN_KEYS, "profile", "encode_batch_size", "strategies", "seeds", "study_temperatures",
              "study_reverse", "study_candidate_modes", "study_train", "study_budget_minutes")


def _seeds(params: dict[str, Any]) -> list[int]:
    seeds = list(params.get("seeds") or [params["seed"]])
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct non-negative integers, got {seeds!r}")
    return seeds


def _temperatures(params: dict[str, Any]) -> list[float]:
    temps = list(params.get("study_temperatures") or [params["temperature"]])
    if any(isinstance(t, bool) or not isinstance(t, (int, float)) or t <= 0 for t in temps) \
            or len(set(temps)) != len(temps):
        raise ValueError(f"study_temperatures must be distinct positive numbers, got {temps!r}")
    return [float(t) for t in temps]


def probe_runs(params: dict[str, Any]) -> list[StudyRun]:
    """Hybrid at the first seed, once per candidate temperature."""
    seed = _seeds(params)[0]
    return [StudyRun("probe", "hybrid", seed, {**params, "strategy": "hybrid", "seed": seed, "temperature": t,
                                                "run_name": None})
            for t in _temperatures(params)]


def grid_runs(params: dict[str, Any], temperature: float) -> list[StudyRun]:
    """Every strategy x every seed at ``temperature``, seed-major."""
    return [StudyRun("grid", compare.system_label(strategy), seed,
                     {**params, "strategy": strategy, "seed": seed, "temperature": temperature, "run_name": None})
            for seed in _seeds(params) for strategy in params.get("strategies") or [params["strategy"]]]


def reverse_runs(params: dict[str, Any], temperature: float) -> list[StudyRun]:
    """Train on the evaluation dataset and evaluate on the training one, first seed, every strategy."""
    if not params.get("study_reverse"):
        return []
    train, evaluated = params["train_data"], params["eval_data"]
    if not isinstance(evaluated, str) or train not in config.DATASET_LANGUAGES:
        raise ValueError("study_reverse needs one LAReQA train_data and one eval_data (e.g. mlqa-r -> xquad-r)")
    seed = _seeds(params)[0]
    return [StudyRun("reverse", compare.system_label(strategy), seed,
                     {**params, "strategy": strategy, "seed": seed, "temperature": temperature, "run_name": None,
                      "train_data": evaluated, "eval_data": train})
            for strategy in params.get("strategies") or [params["strategy"]]]


def check_study(params: dict[str, Any]) -> list[StudyRun]:
    """Every run the study can imply, validated before the first one trains (any temperature may win)."""
    planned = probe_runs(params)
    for t in _temperatures(params):
        planned += grid_runs(params, t) + reverse_runs(params, t)
    names: dict[str, str] = {}
    for r in planned:
        cfg = r.cfg
        if names.setdefault(cfg.run_name, cfg.hash) != cfg.hash:
            raise ValueError(f"two different study runs would share the report folder {cfg.run_name}")
        runs.check_no_other_run(cfg, runs.run_dirs(cfg)[0])  # another config's report there: refused now, not later
    return planned


def choose_temperature(probes: dict[float, dict[str, Any]]) -> tuple[float, dict[float, float]]:
    """(chosen temperature, {temperature: validation MRR at the best checkpoint}) from the probes' results.

    ``probes`` maps temperature -> {"results", "dir"} as returned by :func:`runs.run`. The MRR is read from
    the run's train log at its best step (the evaluated checkpoint); ties go to the lower temperature.
    """
    from hybridnb.training import checkpoints

    mrr = {}
    for t, probe in probes.items():
        best = probe["results"]["training"]["best_step"]
        log = checkpoints.read_log(probe["dir"] / "train_log.jsonl", math.inf)
        at_best = [r for r in log if r["step"] + 1 == best and "val_mrr" in r]
        if not at_best:
            raise ValueError(f"the probe at temperature {t} has no validation MRR at its best step {best} "
                             f"({probe['dir']}): it was trained before validation MRR was logged")
        mrr[t] = at_best[0]["val_mrr"]
    chosen = max(sorted(mrr), key=lambda t: mrr[t])
    return chosen, mrr


def collect(params: dict[str, Any], train: bool = True, show_progress: bool = True) -> dict[str, Any]:
    """Every study run in order, trained now (``train``) or only the finished ones (``train=False``: an
    interim report from what is committed). Returns {"temperature", "val_mrr", "probes", "grid", "reverse",
    "systems"} with {"run", "results", "dir"} per run; "systems" groups the grid by system label."""
    check_study(params)

    def execute(planned: list[StudyRun]) -> list[dict[str, Any]]:
        out = []
        for r in planned:
            cfg = r.cfg
            report_dir, results = runs.find_finished_dir(cfg) or (runs.run_dirs(cfg)[0], None)
            if results is None and train:
                print(f"[hybridnb] study: training {cfg.run_name} ({r.group}) ...", flush=True)
                report_dir, results = runs.run(r.params, show_progress=show_progress)
            elif results is None:
                print(f"[hybridnb] study: not finished yet: {cfg.run_name}", flush=True)
                continue
            out.append({"run": r, "results": results, "dir": report_dir})
        return out

    probes = execute(probe_runs(params))
    done: dict[str, Any] = {"temperature": None, "val_mrr": {}, "probes": probes, "grid": [], "reverse": [],
                            "systems": {}}
    if len(probes) < len(_temperatures(params)):
        return done  # the temperature is not chosen yet
    done["temperature"], done["val_mrr"] = choose_temperature({p["run"].params["temperature"]: p for p in probes})
    done["grid"] = execute(grid_runs(params, done["temperature"]))
    done["reverse"] = execute(reverse_runs(params, done["temperature"]))
    for r in done["grid"]:
        done["systems"].setdefault(r["run"].system, []).append(r)
    return done


def train_all(params: dict[str, Any], show_progress: bool = True) -> dict[str, Any]:
    """Run (or reuse) every study run: :func:`collect` with training."""
    return collect(params, train=True, show_progress=show_progress)


def zero_shot(params: dict[str, Any], mode: str, compute: bool = True, show_progress: bool = True):
    """The zero-shot row of the study's model in candidate ``mode`` on the profile's ``eval_datasets``:
    {"results", "dir"}, or None when it is neither saved nor ``compute``-d.

    A saved result with the same model, encoding settings, queries, candidates and bootstrap is reused from
    any profile's folder (the same computation, e.g. the cpu profile's notebook 02); otherwise it is
    computed into ``reports/<profile>/zero_shot/<model>[--<mode>]/``.
    """
    from hybridnb.studies import backbone_study, zero_shot as zs
    from hybridnb.models import backbones
    from hybridnb.data import lareqa
    from hybridnb.paths import reports_root

    config.check_candidate_mode(mode)
    # every dataset of the profile, as notebook 02 evaluates them: the folder is 02's for the profile's own
    # mode, and a result of fewer datasets written there would replace 02's (and not match it next time)
    tasks = {name: lareqa.load_task(name, opts["languages"], opts["max_ids"])
             for name, opts in config.check_eval_datasets(params["eval_datasets"]).items()}
    record = zs.model_record(params["model"], params["max_length"], mode, params["encode_dtype"])
    own = zs.result_dir(params["profile"], params["model"])
    own = own if mode == params["candidate_mode"] else own.with_name(f"{own.name}--{mode.replace('+', '-')}")
    candidates = [own] + sorted(p for p in reports_root().glob(f"*/zero_shot/{own.name}") if p != own)
    for folder in candidates:
        saved = zs.find(folder, record, tasks, params["n_resamples"], params["seed"])
        if saved is not None:
            return {"results": saved, "dir": folder}
    if not compute:
        return None
    backbone = backbones.get_backbone(params["model"]).name  # the registry entry of the study's model
    results = backbone_study.zero_shot_results(backbone, tasks, {**params, "candidate_mode": mode},
                                               show_progress=show_progress, out=own)
    return {"results": results, "dir": own}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hybridnb study", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="study", help="params/<profile>.yaml or a YAML path")
    args = parser.parse_args(argv)
    done = train_all(config.load_profile(args.profile))
    print(f"[hybridnb] study temperature {done['temperature']} (validation MRR {done['val_mrr']})")
    for group in ("probes", "grid", "reverse"):
        for r in done[group]:
            print(f"[hybridnb] {group}: {r['dir']}")
    return 0

