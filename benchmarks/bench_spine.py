"""Training step and evaluation encoding speed, before and after the one-loop rewrite (issue #35), in one run.

Issue #35 keeps the behaviour of the code that made the committed study runs: the results are bit-identical
(tests/test_training_loop.py), and a training step and an evaluation must be no slower. This benchmark measures
the second half, side by side: revision BEFORE (default 22028f8: two training loops, ``TrainConfig``) and
revision AFTER (default HEAD: one loop, ``hybridnb/training/loop.py``, the typed ``TextTraining``).

Each revision's ``hybridnb/`` (with ``pyproject.toml`` and ``params/``) is exported with ``git archive`` into a
temp folder, and every measurement runs in a fresh subprocess with that folder first on ``PYTHONPATH`` (the
worker checks that it imported that side's package), so each side runs its own code and one measurement cannot
warm the next. Each side drives its own public API: ``hybridnb.training.train`` with ``TrainConfig`` (before)
or ``TextTraining`` (after), whichever its ``hybridnb.training`` exports, and ``Encoder.encode``.

1. **Training step**: the profile's recipe shapes (``params/cpu.yaml``: MLQA-R, hybrid alpha 0.5, batch 32, 1
   hard negative, ``sentence`` candidates at 128 tokens, ``train_dtype`` as the profile says, ``auto``: bf16
   autocast where the CPU has native bf16, else float32; the resolved precision is recorded), the offline E5-small.
   A step is the time between two consecutive AdamW steps, stamped by torch's global optimizer-step hook, so it
   covers everything the loop does per step (batch, tokenising, forward and backward, clipping, AdamW, schedule,
   log line) and comes from outside the code under test; the loop's own ``step_s`` (the same span in both loops,
   minus the log line) is kept in the JSON. The first ``--warmup`` steps are left out; validation and the
   saves happen after the last step and are not timed.
2. **Evaluation encoding**: passages/s of ``Encoder.encode`` on a fixed subset of XQuAD-R's candidates (evenly
   spaced over the candidate list, so every language is in it; the same texts both sides, checked by hash), at
   the profile's ``candidate_mode``, ``max_length``, ``encode_dtype`` and ``encode_batch_size``, after an
   untimed warm-up encode of two batches.

Workers run interleaved, round by round, the order alternating (before/after, then after/before, ...) so a
drift of the machine's speed during the run does not favour one side. Each round gives one after/before
throughput ratio. **Rule**: AFTER is called "no slower" when the spread of the per-round ratios (min to max)
reaches 1 (it overlaps 1 or lies above it); otherwise "slower". Peak RSS is each worker's max RSS (model
loading included). Both sides' caches (the offline E5 conversion, the processed data) are built by an untimed
prepare worker per side under ``cache/bench_spine/<hybridnb/'s tree hash>/`` and kept for the next run. AFTER
is the committed revision: uncommitted changes are not measured.

Results: reports/benchmarks/spine.json and .md (``--out`` picks another folder). Timings are only worth
committing from an otherwise idle machine. The raw data come from ``$HYBRIDNB_MIRROR`` (or ``../shared/data``
beside the checkout, as ``make`` finds it), else they are downloaded.

    HYBRIDNB_MIRROR=../shared/data python benchmarks/bench_spine.py [--before 22028f8] [--after HEAD]
        [--steps 10] [--warmup 2] [--rounds 3] [--passages 4096] [--batch-size 32] [--out reports/benchmarks]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
SIDES = ("before", "after")
#: the training settings a worker passes to the side's own config class (the fields TrainConfig and TextTraining
#: share); steps, save_every, val_every and val_batches are the benchmark's own
TRAINING_KEYS = ("strategy", "alpha", "language_sampling", "batch_size", "lr", "weight_decay", "warmup_ratio",
                 "max_grad_norm", "temperature", "n_hard_negatives", "gradcache", "chunk_size", "train_dtype", "seed")
DATA_SEED = 0  # the studies' fixed data seed (hard negatives, validation split) at both revisions
NEVER = 10**9  # save_every / val_every: no checkpoint or validation inside the timed steps (both run after the last)


# ---------------------------------------------------------------- workers (run inside one side's tree)

def _side_package(tree: str):
    """This side's hybridnb, checked to come from `tree` (an installed or editable copy must not answer)."""
    import hybridnb

    where = Path(hybridnb.__file__).resolve()
    if not where.is_relative_to(Path(tree).resolve()):
        raise RuntimeError(f"imported hybridnb from {where}, not from the side's tree {tree}")
    return hybridnb


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def work_prepare(spec: dict) -> dict:
    """Build the side's caches (offline E5 conversion, processed MLQA-R and XQuAD-R) outside the timed workers."""
    from hybridnb.data import lareqa
    from hybridnb.models import precision
    from hybridnb.models.encoders import OFFLINE_E5, Encoder

    t0 = time.perf_counter()
    Encoder.from_pretrained(OFFLINE_E5, max_length=spec["max_length"])
    for name in {spec["train_data"], spec["eval_data"]}:
        lareqa.load_task(name)
    return {"prepare_s": time.perf_counter() - t0, "native_bf16": precision.native_bf16()}


def work_train(spec: dict) -> dict:
    """`spec["steps"]` steps of the side's ``hybridnb.training.train``; every AdamW step's end time."""
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from hybridnb import training
    from hybridnb.data import lareqa, train_data
    from hybridnb.models.encoders import OFFLINE_E5, Encoder
    from hybridnb.training import trainer

    table = train_data.from_lareqa(lareqa.load_task(spec["train_data"]), spec["candidate_mode"],
                                   spec["training"]["n_hard_negatives"], seed=DATA_SEED)
    train_table, val_table = train_data.split_validation(table, spec["val_fraction"], seed=DATA_SEED)
    settings = dict(spec["training"], steps=spec["steps"], save_every=NEVER, val_every=NEVER, val_batches=1)
    # the side's own public config: TextTraining (one loop) or TrainConfig (the loops before it)
    config_class = getattr(training, "TextTraining", None) or training.TrainConfig
    cfg = config_class(**settings)
    encoder = Encoder.from_pretrained(OFFLINE_E5, max_length=spec["max_length"])
    autocast = trainer.autocast_dtype(cfg.train_dtype, encoder.device)
    stamps: list[float] = []
    register_optimizer_step_post_hook(lambda *_: stamps.append(time.perf_counter()))
    torch.manual_seed(spec["training"]["seed"])
    with tempfile.TemporaryDirectory(prefix="bench_spine_run_") as tmp:
        result = training.train(encoder, train_table, val_table, cfg, tmp, resume=False, show_progress=False)
    if len(stamps) != spec["steps"]:
        raise RuntimeError(f"{len(stamps)} optimizer steps for {spec['steps']} training steps")
    return {"config_class": f"{config_class.__module__}.{config_class.__qualname__}",
            "train_dtype": cfg.train_dtype, "autocast": str(autocast).replace("torch.", "") if autocast else "float32",
            "step_period_s": [b - a for a, b in zip(stamps, stamps[1:])],  # period i-1 ends at step i
            "loop_step_s": [r["step_s"] for r in result.history], "loss": [r["loss"] for r in result.history],
            "max_rss_mb": _max_rss_mb()}


def eval_subset(texts: list, n: int) -> list:
    """`n` candidates evenly spaced over the list (every language of XQuAD-R has a share), in list order."""
    n = min(n, len(texts))
    return [texts[(i * len(texts)) // n] for i in range(n)]


def work_encode(spec: dict) -> dict:
    """Passages/s of the side's ``Encoder.encode`` on the fixed candidate subset, after a two-batch warm-up."""
    import numpy as np

    from hybridnb.data import lareqa
    from hybridnb.models import precision
    from hybridnb.models.encoders import OFFLINE_E5, Encoder

    texts = eval_subset(lareqa.load_task(spec["eval_data"]).candidate_inputs(spec["candidate_mode"]),
                        spec["passages"])
    encoder = Encoder.from_pretrained(OFFLINE_E5, max_length=spec["max_length"])
    dtype = precision.encode_arg(spec["encode_dtype"])
    bs = spec["encode_batch_size"]
    encoder.encode(texts[: 2 * bs], "passage", bs, show_progress=False, autocast_dtype=dtype)  # warm-up, untimed
    t0 = time.perf_counter()
    emb = encoder.encode(texts, "passage", bs, show_progress=False, autocast_dtype=dtype)
    seconds = time.perf_counter() - t0
    return {"passages": len(texts), "encode_s": seconds, "passages_per_s": len(texts) / seconds,
            "encode_dtype": precision.resolve(spec["encode_dtype"]),
            "texts_sha256": hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest(),
            "embeddings_sha256": hashlib.sha256(np.ascontiguousarray(emb, dtype=np.float32).tobytes()).hexdigest(),
            "max_rss_mb": _max_rss_mb()}


WORKERS = {"prepare": work_prepare, "train": work_train, "encode": work_encode}


def worker(kind: str, spec_json: str) -> None:
    spec = json.loads(spec_json)
    _side_package(spec["tree"])
    print("RESULT " + json.dumps(WORKERS[kind](spec)), flush=True)


# ---------------------------------------------------------------- the parent: trees, rounds, report

def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def export_tree(commit: str, dest: Path) -> Path:
    """The revision's package, pyproject.toml (paths.repo_root looks for it) and profiles, as committed."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", commit, "hybridnb", "pyproject.toml", "params"],
                             cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def mirror_folder() -> Path | None:
    """$HYBRIDNB_MIRROR, else ``../shared/data`` beside the checkout when it holds the mirror (as make does)."""
    if os.environ.get("HYBRIDNB_MIRROR"):
        return Path(os.environ["HYBRIDNB_MIRROR"]).expanduser().resolve()
    beside = ROOT.parent / "shared" / "data"
    return beside.resolve() if (beside / "MANIFEST.md").exists() else None


def run_worker(kind: str, spec: dict, tree: Path, cache: Path) -> dict:
    """One fresh process with `tree` first on the import path and the side's own cache."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               HYBRIDNB_CACHE=str(cache))
    env.pop("HYBRIDNB_FRESH_SINCE", None)  # the caches are the benchmark's own, never "fresh" work
    mirror = mirror_folder()
    if mirror is not None:  # absolute: the worker runs in the side's tree
        env["HYBRIDNB_MIRROR"] = str(mirror)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", kind,
                           json.dumps(dict(spec, tree=str(tree)))],
                          cwd=tree, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{kind} worker in {tree} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def round_order(r: int) -> tuple[str, str]:
    """Before first in even rounds, after first in odd ones: a drift of the machine's speed cancels in pairs."""
    return SIDES if r % 2 == 0 else SIDES[::-1]


def spread_verdict(ratios: list[float]) -> str:
    """The rule: after/before throughput ratios whose spread reaches 1 (overlaps it or lies above) are no slower."""
    return "no slower" if max(ratios) >= 1 else "slower"


def summarise_train(results: list[dict], warmup: int, batch_size: int) -> dict:
    """One side's training rounds: s/step (median over all timed steps, and per round), pairs/s, peak RSS."""
    timed = [r["step_period_s"][warmup - 1:] for r in results]  # period i-1 is step i's; steps < warmup dropped
    pooled = [s for t in timed for s in t]
    return {"s_per_step_median": median(pooled), "s_per_step_rounds": [median(t) for t in timed],
            "pairs_per_s": batch_size * len(pooled) / sum(pooled),
            "pairs_per_s_rounds": [batch_size * len(t) / sum(t) for t in timed],
            "loop_step_s_median": median(s for r in results for s in r["loop_step_s"][warmup:]),
            "max_rss_mb": max(r["max_rss_mb"] for r in results), "autocast": results[0]["autocast"],
            "config_class": results[0]["config_class"], "loss": results[0]["loss"], "rounds": results}


def summarise_encode(results: list[dict]) -> dict:
    return {"passages_per_s": sum(r["passages"] for r in results) / sum(r["encode_s"] for r in results),
            "passages_per_s_rounds": [r["passages_per_s"] for r in results],
            "max_rss_mb": max(r["max_rss_mb"] for r in results), "encode_dtype": results[0]["encode_dtype"],
            "texts_sha256": results[0]["texts_sha256"], "embeddings_sha256": results[0]["embeddings_sha256"],
            "rounds": results}


def comparison(before: dict, after: dict, key: str) -> dict:
    ratios = [a / b for a, b in zip(after[f"{key}_rounds"], before[f"{key}_rounds"])]
    return {"ratio": after[key] / before[key], "ratio_rounds": ratios, "spread": [min(ratios), max(ratios)],
            "verdict": spread_verdict(ratios)}


def specs(args, prof: dict) -> dict:
    training = {k: prof[k] for k in TRAINING_KEYS}
    if args.batch_size is not None:
        training["batch_size"] = args.batch_size
    return {"train_data": prof["train_data"], "eval_data": prof["eval_data"], "candidate_mode": prof["candidate_mode"],
            "max_length": prof["max_length"], "val_fraction": prof["val_fraction"], "training": training,
            "steps": args.steps, "passages": args.passages, "encode_dtype": prof["encode_dtype"],
            "encode_batch_size": prof["encode_batch_size"]}


def report(doc: dict, out: Path, args) -> None:
    from hybridnb import reporting

    s, tr, en = doc["settings"], doc["training"], doc["encoding"]
    fmt = lambda xs, d=2: ", ".join(f"{x:.{d}f}" for x in xs)  # noqa: E731
    rows = []
    for side in SIDES:
        t, e = tr[side], en[side]
        rows.append({"side": f"{side} `{doc['revisions'][side][:10]}`",
                     "s/step (median)": f"{t['s_per_step_median']:.3f}",
                     "s/step per round": fmt(t["s_per_step_rounds"], 3), "pairs/s": f"{t['pairs_per_s']:.2f}",
                     "train peak RSS MB": f"{t['max_rss_mb']:.0f}", "passages/s": f"{e['passages_per_s']:.1f}",
                     "passages/s per round": fmt(e["passages_per_s_rounds"], 1),
                     "encode peak RSS MB": f"{e['max_rss_mb']:.0f}"})
    verdicts = [{"measure": "training (pairs/s)", "after/before": f"{tr['comparison']['ratio']:.3f}",
                 "per round": fmt(tr["comparison"]["ratio_rounds"], 3), "verdict": tr["comparison"]["verdict"]},
                {"measure": "evaluation encoding (passages/s)", "after/before": f"{en['comparison']['ratio']:.3f}",
                 "per round": fmt(en["comparison"]["ratio_rounds"], 3), "verdict": en["comparison"]["verdict"]}]
    same_loss = tr["before"]["loss"] == tr["after"]["loss"]
    same_emb = en["before"]["embeddings_sha256"] == en["after"]["embeddings_sha256"]
    text = (f"# Training step and evaluation encoding, before and after the one training loop (#35)\n\n"
            f"{reporting.stamp(doc['provenance'])}\n\n"
            f"Before: `{doc['revisions']['before']}` (two training loops, `{tr['before']['config_class']}`); after: "
            f"`{doc['revisions']['after']}` (one loop, `{tr['after']['config_class']}`). Each side ran its own "
            f"`hybridnb` (exported with `git archive`, first on `PYTHONPATH`) in a fresh process per measurement, "
            f"{s['rounds']} round(s), interleaved with the order alternating per round.\n\n"
            f"Training: {s['train_data']}, {s['training']['strategy']} (alpha {s['training']['alpha']}), batch "
            f"{s['training']['batch_size']}, {s['training']['n_hard_negatives']} hard negative(s), "
            f"{s['candidate_mode']}@{s['max_length']}, `train_dtype: {s['training']['train_dtype']}` = "
            f"{tr['after']['autocast']} on this CPU, the offline E5-small; {s['steps']} steps a round, the first "
            f"{s['warmup']} left out; a step is the time between two AdamW steps (torch's optimizer-step hook). "
            f"Encoding: {en['after']['rounds'][0]['passages']} {s['eval_data']} candidates ({s['candidate_mode']}, "
            f"evenly spaced over the list, the same texts both sides), batch {s['encode_batch_size']}, "
            f"`encode_dtype: {s['encode_dtype']}` = {en['after']['encode_dtype']}, after a two-batch warm-up. "
            "Peak RSS: each worker's max RSS, model loading included.\n\n"
            + reporting.markdown_table(rows)
            + "\n\n**Rule**: after/before is a throughput ratio (above 1: after is faster); each round gives one. "
            "After is called *no slower* when the spread of the per-round ratios reaches 1 (overlaps 1 or lies "
            "above it), else *slower*.\n\n" + reporting.markdown_table(verdicts)
            + f"\n\nSame work both sides: training losses {'identical' if same_loss else 'DIFFERENT'} at every "
            f"step of a round; embeddings {'bit-identical' if same_emb else 'DIFFERENT'} (sha256).\n")
    reporting.write_json(out / "spine.json", doc)
    reporting.write_text(out / "spine.md", text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", default="22028f8", help="the revision that made the committed study runs")
    p.add_argument("--after", default="HEAD")
    p.add_argument("--profile", default="cpu", help="the recipe shapes and precisions come from this profile")
    p.add_argument("--steps", type=int, default=10, help="training steps a round, warm-up included")
    p.add_argument("--warmup", type=int, default=2, help="first steps of a round left out")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=None, help="pairs a step (default: the profile's)")
    p.add_argument("--passages", type=int, default=4096, help="XQuAD-R candidates encoded a round")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for spine.md / spine.json (default reports/benchmarks)")
    p.add_argument("--worker", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return 0
    if args.warmup < 1 or args.steps <= args.warmup:
        raise SystemExit("--warmup must be >= 1 (a step's time is measured from the previous step's end) "
                         "and --steps must exceed it")
    if args.rounds < 1 or args.passages < 1:
        raise SystemExit("--rounds and --passages must be >= 1")

    sys.path.insert(0, str(ROOT))  # the parent (report, profile, paths) runs this checkout's hybridnb
    from hybridnb import config, reporting
    from hybridnb.paths import cache_root, reports_root

    prof = config.load_profile(args.profile)
    spec = specs(args, prof)
    revisions = {side: git("rev-parse", f"{rev}^{{commit}}") for side, rev in zip(SIDES, (args.before, args.after))}
    out = args.out or reports_root() / "benchmarks"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_spine_") as tmp:
        trees = {side: export_tree(revisions[side], Path(tmp) / side) for side in SIDES}
        # keyed by the package's tree hash: a commit that leaves hybridnb/ as it was reuses the converted E5 and data
        caches = {side: cache_root() / "bench_spine" / git("rev-parse", f"{revisions[side]}:hybridnb")[:12]
                  for side in SIDES}
        prepared = {}
        for side in SIDES:
            print(f"prepare {side} ({revisions[side][:10]})", flush=True)
            prepared[side] = run_worker("prepare", spec, trees[side], caches[side])
        train_runs: dict[str, list] = {side: [] for side in SIDES}
        encode_runs: dict[str, list] = {side: [] for side in SIDES}
        for r in range(args.rounds):
            for side in round_order(r):
                res = run_worker("train", spec, trees[side], caches[side])
                train_runs[side].append(res)
                print(f"round {r + 1} train {side}: {median(res['step_period_s'][args.warmup - 1:]):.3f} s/step",
                      flush=True)
            for side in round_order(r):
                res = run_worker("encode", spec, trees[side], caches[side])
                encode_runs[side].append(res)
                print(f"round {r + 1} encode {side}: {res['passages_per_s']:.1f} passages/s", flush=True)
    train = {side: summarise_train(train_runs[side], args.warmup, spec["training"]["batch_size"]) for side in SIDES}
    encode = {side: summarise_encode(encode_runs[side]) for side in SIDES}
    if encode["before"]["texts_sha256"] != encode["after"]["texts_sha256"]:
        raise RuntimeError("the two sides encoded different texts")
    train["comparison"] = comparison(train["before"], train["after"], "pairs_per_s")
    encode["comparison"] = comparison(encode["before"], encode["after"], "passages_per_s")
    doc = {"benchmark": "training step and evaluation encoding, before and after the one training loop (#35)",
           "provenance": reporting.provenance(prof["profile"]), "revisions": revisions,
           "rule": "after/before throughput ratio per round; 'no slower' when max(per-round ratios) >= 1",
           "settings": {**spec, "warmup": args.warmup, "rounds": args.rounds, "threads": os.cpu_count()},
           "prepare": prepared, "training": train, "encoding": encode,
           "wall_s": time.perf_counter() - started}
    report(doc, Path(out), args)
    for name, part in (("training", train), ("encoding", encode)):
        c = part["comparison"]
        print(f"{name}: after/before {c['ratio']:.3f} (rounds {', '.join(f'{x:.3f}' for x in c['ratio_rounds'])}): "
              f"{c['verdict']}")
    print(f"wrote {Path(out) / 'spine.md'} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
