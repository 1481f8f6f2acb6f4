"""sentence-transformers' trainer against hybridnb's own, on the same recipe and seeds (notebook 08, `make st-compare`).

Two questions, each answered by a measurement:

1. **Same numbers?** Every seed of the profile is trained twice on the same data: by hybridnb's trainer (the
   study's runs, reused by config hash from ``reports/runs/``; trained only when missing) and by
   ``SentenceTransformerTrainer`` with hybridnb's sampler, loss, optimizer, schedule, precision and checkpoint rule
   (:mod:`hybridnb.integrations.st_training`). Both are scored on the same evaluation set by the same metric
   code (sentence-transformers' side through :class:`hybridnb.integrations.LAReQAEvaluator`). Per column, the
   difference of the means over seeds (ST - hybridnb) gets the report's seed-aware interval and verdict
   (:func:`hybridnb.evaluation.seed_stats.seed_compare` and :func:`~hybridnb.evaluation.seed_stats.verdict`):
   "no difference" means the difference is within seed and question noise.
2. **Same speed?** The median time per training step of each side's runs, each with the machine that ran it
   (the committed hybridnb runs may come from another machine or another day), and a short same-machine
   timing: both trainers alternately, a few steps each, on the recipe's batches (the first step of each
   timing run, which carries warm-up, left out), so the ratio compares like with like.

sentence-transformers' columns hold one text, so both sides use ``candidate_mode="sentence"`` (the cpu recipe's
choice; the ci profile's ``sentence+context`` is replaced here, and its hybridnb runs are trained tiny). A
sentence-transformers run is a run folder of its own (``reports/runs/<profile>-st-<...>``; config hash =
hybridnb's run config plus ``trainer: sentence-transformers``), reused like any run.
"""

from __future__ import annotations

import gc
import json
import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from hybridnb import allocator, config, paths, reporting
from hybridnb.evaluation import runner, seed_stats, stats
from hybridnb.evaluation.metrics import EvalResult
from hybridnb.studies import budget, runs, seed_tables
from hybridnb.studies.compare import digits, load_per_query
from hybridnb.training import distributed, loop
from hybridnb.training import trainer as hybridnb_trainer
from hybridnb.training.run_folder import RunOutput, RunTaskBase, execute, run_dirs

__all__ = ["TRAINER", "CANDIDATE_MODE", "comparison_params", "STRunConfig", "st_run_config", "plan", "STRun",
           "load_st_model",
           "hybridnb_runs", "st_runs", "comparison_frame", "comparison_display", "step_seconds",
           "same_machine_timing", "timing_frame", "Comparison", "compare"]

TRAINER = "sentence-transformers"
CANDIDATE_MODE = "sentence"  # a sentence-transformers column holds one text


def comparison_params(params: dict[str, Any]) -> dict[str, Any]:
    """The profile's parameters as both sides train them: sentence inputs, each run under its default name, or,
    when the profile's own input is another (the ci profile's sentence+context), under that name with
    ``-sent<max_length>`` before the seed: the default name leaves the input out, and the profile's own run of the
    same strategy and seed (notebook 03) already holds it. Idempotent (the profile on disk decides, not ``params``)."""
    # one padded batch on both sides: the sentence-transformers route has no length groups (it refuses them), so
    # a profile whose own runs use them (a speed path, other dropout masks) is compared at length_groups 1
    out = {**params, "candidate_mode": CANDIDATE_MODE, "run_name": None, "length_groups": 1}
    try:
        own_input = config.load_profile(out.get("profile", "custom"))["candidate_mode"]
    except (OSError, ValueError, KeyError):
        own_input = CANDIDATE_MODE  # not a profile on disk: nothing of its own to collide with
    if own_input != CANDIDATE_MODE:
        evaluated = out["eval_data"]
        name = runs.default_run_name(out.get("profile", "custom"),
                                     {**out, "eval_data": [evaluated] if isinstance(evaluated, str) else evaluated})
        out["run_name"] = name.replace(f"-seed{out['seed']}", f"-sent{out['max_length']}-seed{out['seed']}")
    return out


# --------------------------------------------------------------------------------------------------
# a sentence-transformers run: its config, its run folder
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class STRunConfig:
    """A sentence-transformers run of hybridnb's run config ``text``: the same hashed settings plus the trainer,
    so its hash (and folder) is never a hybridnb run's."""

    text: config.TextRunConfig
    run_name: str
    hash: str

    def hash_values(self) -> dict[str, Any]:
        return {**self.text.hash_values(), "trainer": TRAINER}

    def to_json(self) -> dict[str, Any]:
        return {**self.hash_values(), "hash": self.hash, "run_name": self.run_name,
                "hybridnb_hash": self.text.hash, "encode_batch_size": self.text.encode_batch_size}


def st_run_config(params: dict[str, Any]) -> STRunConfig:
    """Check ``params`` as a hybridnb run (:func:`hybridnb.studies.runs.check_run`) and make its
    sentence-transformers twin: run name ``<profile>-st-<the hybridnb run's name without the profile>``."""
    text = runs.check_run(comparison_params(params))
    values = {**text.hash_values(), "trainer": TRAINER}
    profile = params.get("profile", "custom")
    name = text.run_name  # the hybridnb side's name (comparison_params)
    digest = config.config_hash(values, tuple(values), config.HASHED_WHEN_SET)
    return STRunConfig(text, f"{profile}-st-{name.removeprefix(profile + '-')}", digest)


def plan(params: dict[str, Any]) -> list[STRunConfig]:
    """The sentence-transformers runs notebook 08 makes for the profile: one per seed of ``seeds``."""
    return [st_run_config({**params, "seed": seed}) for seed in params["seeds"]]


def load_st_model(model: str, max_length: int):
    """``SentenceTransformer`` of a hybridnb model name (the offline E5 included): :meth:`Encoder.save`'s folder
    under ``cache/st_models/``, written once (atomically), loaded on the run's device with ``max_seq_length``."""
    from sentence_transformers import SentenceTransformer

    from hybridnb.models import precision
    from hybridnb.models.encoders import Encoder

    key = config.config_hash({"model": str(model)}, ("model",))[:8]  # two local folders may share a name
    folder = paths.cache_root() / "st_models" / f"{runs.model_tag(model)}-{key}"
    if not (folder / "modules.json").is_file():
        with reporting.atomic_dir(folder) as tmp:
            Encoder.from_pretrained(model).save(tmp)
    st = SentenceTransformer(str(folder), device=str(precision.run_device()))
    st.max_seq_length = max_length
    return st


def _encode_autocast(encode_dtype: str, device: torch.device):
    """hybridnb's evaluation precision around sentence-transformers' ``encode`` (bf16 autocast, or none)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=encode_dtype == "bfloat16")


@dataclass
class STRun(RunTaskBase):
    """The run skeleton's task (:func:`hybridnb.training.run_folder.execute`) for a sentence-transformers run: the
    data of the hybridnb run, :func:`~hybridnb.integrations.st_training.train_st`, the LAReQA evaluator."""

    cfg: STRunConfig

    def prepare(self):
        return runs.prepare_data(self.cfg.text)

    def train(self, data, show_progress: bool):
        from hybridnb.integrations.st_training import train_st

        text = self.cfg.text
        model = load_st_model(text.model, text.max_length)
        with tempfile.TemporaryDirectory(prefix="st-trainer-", dir=run_dirs(self.cfg)[1].parent) as out:
            return train_st(model, data.train, data.val, text.training(), out, validate=True,
                            show_progress=show_progress)

    def evaluate(self, data, trained, started: float, show_progress: bool) -> RunOutput:
        import sentence_transformers
        import transformers

        from hybridnb.integrations import LAReQAEvaluator

        text = self.cfg.text
        blocks, results, timings = {}, {}, {}
        for name, task in data.eval_tasks.items():
            evaluator = LAReQAEvaluator(task, candidate_mode=CANDIDATE_MODE, batch_size=text.encode_batch_size,
                                        show_progress_bar=show_progress)
            t0 = time.perf_counter()
            with torch.inference_mode(), _encode_autocast(text.encode_dtype, trained.model.device):
                q_emb, c_emb = evaluator.embed(trained.model)
            t1 = time.perf_counter()
            result = evaluator.score(q_emb, c_emb)
            t2 = time.perf_counter()
            cis = stats.confidence_intervals(result, n_resamples=text.n_resamples, seed=text.seed)
            t3 = time.perf_counter()
            results[name] = result
            blocks[name] = runner.results_block(task, result, cis, CANDIDATE_MODE, text.n_resamples, text.seed)
            timings[name] = {"encode_s": t1 - t0, "metrics_s": t2 - t1, "bootstrap_s": t3 - t2}
        history = trained.history
        doc = {
            "schema": reporting.SCHEMA, "kind": "trained", "profile": self.profile,
            "trainer": {"name": TRAINER, "sentence_transformers": sentence_transformers.__version__,
                        "transformers": transformers.__version__, "hybridnb_config_hash": text.hash},
            "model": {"name": text.model, "max_length": text.max_length, "candidate_mode": CANDIDATE_MODE,
                      "encode_dtype": text.encode_dtype, "evaluated": "best validation loss"},
            "training": {"strategy": text.strategy, "alpha": text.alpha, "weights": text.weights,
                         "train_data": str(text.train_data), "train_items": len(data.train),
                         "val_items": len(data.val), "dropped_overlap": data.dropped_overlap,
                         "steps": text.steps, "batch_size": text.batch_size, "seed": text.seed,
                         "best_step": trained.best_step, "best_val_loss": trained.best_val_loss,
                         "final_loss": history[-1]["loss"], "config_hash": self.cfg.hash},
            "provenance": reporting.provenance(self.profile),
            "timings": {"wall_s": time.time() - started, "train_s": sum(r["step_s"] for r in history),
                        "median_step_s": statistics.median(r["step_s"] for r in history),
                        "peak_rss_mb": budget.peak_rss_mb(), **timings},
            "datasets": blocks,
        }
        files = {"train_log.jsonl": lambda path: path.write_text(
                     "".join(json.dumps(r) + "\n" for r in history), encoding="utf-8"),
                 **{f"per_query_{name}.npz": result.save for name, result in results.items()}}
        summary = (f"hybridnb's recipe trained by sentence-transformers' SentenceTransformerTrainer: strategy "
                   f"{text.strategy} (batch kinds {text.weights}), {text.steps} steps of {text.batch_size} pairs on "
                   f"{text.train_data}, evaluated zero-shot on {', '.join(text.eval_data)} with the best checkpoint "
                   f"by validation loss (step {trained.best_step}). Config hash {self.cfg.hash} (hybridnb's run: "
                   f"{text.hash}).")
        figures = {"loss_curve.png": reporting.plot_training_curves(
            [{**r, **{k: math.nan for k in ("loss", "lr") if r.get(k) is None}} for r in history], self.cfg.run_name)}
        return RunOutput(doc, files, figures, summary, reporting.summary_rows(doc))


def hybridnb_runs(params: dict[str, Any], show_progress: bool = False) -> list[tuple[Path, dict]]:
    """hybridnb's runs of every seed of ``seeds`` (reused by config hash, trained when missing)."""
    return [runs.run(comparison_params({**params, "seed": seed}), show_progress=show_progress, announce=True)
            for seed in params["seeds"]]


def st_runs(params: dict[str, Any], show_progress: bool = False) -> list[tuple[Path, dict]]:
    """The sentence-transformers runs of every seed (reused by config hash, trained when missing)."""
    return [execute(STRun(cfg, params.get("profile", "custom")), show_progress=show_progress, announce=True)
            for cfg in plan(params)]


# --------------------------------------------------------------------------------------------------
# the metrics: ST - hybridnb over seeds
# --------------------------------------------------------------------------------------------------


def comparison_frame(st: list[EvalResult], hybridnb: list[EvalResult], n_resamples: int = 1000,
                     seed: int = 0) -> pd.DataFrame:
    """One row per reported column (mono / cross / multi mAP, R@1, R@10, rank distance): each side's mean over its
    seeds with the seed-aware 95% interval, the difference ST - hybridnb with its interval and p-value, and the
    report's verdict; ``within_noise``: the verdict is "no difference" (the interval of the difference holds 0)."""
    sum_st = seed_stats.seed_summary(st, n_resamples=n_resamples, seed=seed)
    sum_h = seed_stats.seed_summary(hybridnb, n_resamples=n_resamples, seed=seed)
    diff = seed_stats.seed_compare(st, hybridnb, n_resamples=n_resamples, seed=seed)
    rows = []
    for key in seed_stats.REPORTED:
        if key not in diff:
            continue
        d = diff[key]
        word = seed_stats.verdict(d, key)
        rows.append({"column": seed_tables.column(key), "key": key,
                     "hybridnb": sum_h[key]["mean"], "hybridnb_low": sum_h[key]["low"],
                     "hybridnb_high": sum_h[key]["high"], "st": sum_st[key]["mean"], "st_low": sum_st[key]["low"],
                     "st_high": sum_st[key]["high"], "diff": d["diff"], "diff_low": d["low"], "diff_high": d["high"],
                     "se_seed": d["se_seed"], "p_value": d["p_value"], "verdict": word,
                     "within_noise": word == "no difference", "seeds": f"{len(st)} / {len(hybridnb)}"})
    return pd.DataFrame(rows).set_index("column")


def comparison_display(frame: pd.DataFrame) -> pd.DataFrame:
    """The table as the notebook shows it: ``mean [low, high]`` strings, 3 decimals (rank distance 1)."""
    def cell(row, name, sign=False):
        return reporting.interval(row[name], row[f"{name}_low"], row[f"{name}_high"], digits(row["key"]), sign)

    return pd.DataFrame({
        "hybridnb trainer": [cell(r, "hybridnb") for _, r in frame.iterrows()],
        "SentenceTransformerTrainer": [cell(r, "st") for _, r in frame.iterrows()],
        "ST − hybridnb": [cell(r, "diff", sign=True) for _, r in frame.iterrows()],
        "p": [seed_stats.format_p(p) for p in frame["p_value"]],
        "verdict": ["within noise" if r["within_noise"] else r["verdict"] for _, r in frame.iterrows()],
        "seeds (ST / hybridnb)": frame["seeds"],
    }, index=frame.index)


# --------------------------------------------------------------------------------------------------
# time per step
# --------------------------------------------------------------------------------------------------


def step_seconds(folder: Path) -> list[float]:
    """``step_s`` of every step in a run folder's ``train_log.jsonl`` (both trainers write it)."""
    lines = (Path(folder) / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
    return [float(json.loads(line)["step_s"]) for line in lines if line.strip()]


class _TimingTextTask(hybridnb_trainer.TextTask):
    """hybridnb's text task with validation switched off (a timing run keeps no best weights, writes nothing)."""

    def validate(self) -> dict[str, float]:
        return {"val_loss": math.inf}

    def new_best(self, step: int) -> None:
        pass


def _time_hybridnb(text: config.TextRunConfig, data, cfg: config.TextTraining) -> list[float]:
    from hybridnb.models.encoders import Encoder

    distributed.init()
    encoder = Encoder.from_pretrained(text.model, max_length=text.max_length)
    sampler = hybridnb_trainer.check_config(cfg, data.train)
    optimizer = hybridnb_trainer.build_optimizer(encoder, cfg.lr, cfg.weight_decay)
    scheduler = hybridnb_trainer.build_scheduler(optimizer, round(cfg.warmup_ratio * cfg.steps), cfg.steps)
    task = _TimingTextTask(encoder, data.train, data.val, [], cfg, None)
    run = loop.train_loop(task, sampler, optimizer, scheduler, cfg, None, resume=False, show_progress=False)
    return [r["step_s"] for r in run.history]


def _time_st(text: config.TextRunConfig, data, cfg: config.TextTraining) -> list[float]:
    from hybridnb.integrations.st_training import train_st

    model = load_st_model(text.model, text.max_length)
    with tempfile.TemporaryDirectory(prefix="st-timing-") as out:
        return train_st(model, data.train, None, cfg, out, validate=False).step_seconds


def same_machine_timing(params: dict[str, Any], rounds: int = 2, steps: int = 6) -> dict[str, Any]:
    """Both trainers on this machine, alternately (hybridnb first in even rounds, ST first in odd ones): each
    round trains ``steps`` steps of the recipe from the pre-trained model with each trainer, without validation.
    The first step of every timing run (warm-up: first batches, kernel set-up) is left out; model loading and
    the trainer's set-up are outside the clock. Returns the per-step seconds of each side and the machine."""
    if steps < 2 or rounds < 1:
        raise ValueError(f"steps must be >= 2 (the first is left out) and rounds >= 1, got {steps}, {rounds}")
    text = runs.check_run(comparison_params({**params, "seed": params["seeds"][0]}))
    data = runs.prepare_data(text)
    cfg = text.training().replace(steps=steps)
    timed = {"hybridnb": [], TRAINER: []}
    fns = {"hybridnb": _time_hybridnb, TRAINER: _time_st}
    for r in range(rounds):
        for side in (("hybridnb", TRAINER) if r % 2 == 0 else (TRAINER, "hybridnb")):
            timed[side].extend(fns[side](text, data, cfg)[1:])
            gc.collect()
            allocator.release_memory()
    hw = reporting.hardware()
    return {"seconds": timed, "machine": f"{hw['cpu']} ({hw['cores']} cores)", "rounds": rounds, "steps": steps,
            "train_dtype": text.train_dtype}


def _machine(results: dict) -> str:
    hw = results.get("provenance", {}).get("hardware", {})
    return hw.get("cuda") or f"{hw.get('cpu', '?')} ({hw.get('cores', '?')} cores)"


def timing_frame(hybridnb: list[tuple[Path, dict]], st: list[tuple[Path, dict]],
                 same_machine: dict[str, Any] | None = None) -> pd.DataFrame:
    """Median seconds per step of each side: over every step of its runs (with the machine(s) and dates that
    ran them), and from the same-machine timing; ``ST / hybridnb`` on the ST row of each measurement, with a
    note when the runs' machines differ."""
    rows = []
    sides = (("hybridnb trainer", hybridnb), ("SentenceTransformerTrainer", st))
    machines = {name: sorted({_machine(res) for _, res in side}) for name, side in sides}
    medians = {}
    for name, side in sides:
        seconds = [s for folder, _ in side for s in step_seconds(folder)]
        medians[name] = statistics.median(seconds)
        dates = sorted(res.get("provenance", {}).get("created", "?")[:10] for _, res in side)
        rows.append({"measurement": f"the runs ({len(side)} seed(s) x {len(seconds) // max(len(side), 1)} steps)",
                     "trainer": name, "machine": ", ".join(machines[name]),
                     "when": dates[0] if dates[0] == dates[-1] else f"{dates[0]} .. {dates[-1]}",
                     "steps timed": len(seconds), "median s/step": medians[name]})
    same = machines["hybridnb trainer"] == machines["SentenceTransformerTrainer"]
    rows[-1]["ST / hybridnb"] = medians["SentenceTransformerTrainer"] / medians["hybridnb trainer"]
    rows[-1]["note"] = "same CPU model (maybe not the same machine or load)" if same else \
        "different machines: not a fair ratio, see the same-machine timing"
    if same_machine:
        sec = same_machine["seconds"]
        m = {k: statistics.median(v) for k, v in sec.items()}
        label = f"same machine, alternating ({same_machine['rounds']} round(s) x {same_machine['steps'] - 1} steps)"
        for name, key in (("hybridnb trainer", "hybridnb"), ("SentenceTransformerTrainer", TRAINER)):
            rows.append({"measurement": label, "trainer": name, "machine": same_machine["machine"], "when": "now",
                         "steps timed": len(sec[key]), "median s/step": m[key]})
        rows[-1]["ST / hybridnb"] = m[TRAINER] / m["hybridnb"]
        rows[-1]["note"] = "like with like"
    frame = pd.DataFrame(rows)
    for column in ("ST / hybridnb", "note"):  # only the ST row of each measurement has them
        frame[column] = frame[column].astype(object).where(frame[column].notna(), "")
    return frame


# --------------------------------------------------------------------------------------------------
# the whole comparison
# --------------------------------------------------------------------------------------------------


@dataclass
class Comparison:
    hybridnb: list[tuple[Path, dict]]       # (run folder, results) per seed
    st: list[tuple[Path, dict]]
    frames: dict[str, pd.DataFrame]         # evaluation dataset -> comparison_frame
    timing: pd.DataFrame
    same_machine: dict[str, Any] | None

    def verdict_lines(self) -> list[str]:
        """One line per dataset: how many columns are within noise, and which are not."""
        out = []
        for dataset, frame in self.frames.items():
            outside = [f"{col} ({row['verdict']}, {row['diff']:+.3f})" for col, row in frame.iterrows()
                       if not row["within_noise"]]
            seeds = frame["seeds"].iloc[0]
            out.append(f"{dataset} ({seeds} seeds): {int(frame['within_noise'].sum())} of {len(frame)} columns within "
                       f"seed and question noise" + (f"; not: {', '.join(outside)}" if outside else "") +
                       (" (one seed: seed noise not measured, so no verdict yet)" if seeds.startswith("1 ") else ""))
        return out


def compare(params: dict[str, Any], show_progress: bool = False, timing_rounds: int = 2,
            timing_steps: int | None = None) -> Comparison:
    """Train (or reuse) both sides' runs of every seed, compare their metrics on every evaluation dataset, and
    time both trainers on this machine (``timing_steps``: default half the run's steps, at most 6 and at least 2,
    so the ci profile's 6-step runs time 3 steps; 0: no timing)."""
    hyb = hybridnb_runs(params, show_progress)
    st = st_runs(params, show_progress)
    datasets = list(hyb[0][1]["datasets"])
    frames = {name: comparison_frame([load_per_query(d, name) for d, _ in st],
                                     [load_per_query(d, name) for d, _ in hyb],
                                     n_resamples=params["n_resamples"], seed=params.get("seed", 0))
              for name in datasets}
    steps = max(2, min(params["steps"] // 2, 6)) if timing_steps is None else timing_steps
    same = same_machine_timing(params, timing_rounds, steps) if steps else None
    return Comparison(hyb, st, frames, timing_frame(hyb, st, same), same)
