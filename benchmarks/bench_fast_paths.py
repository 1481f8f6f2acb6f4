"""Faster training and encoding paths measured side by side against today's, with what each costs in exactness.

Every candidate is a set of features joined by ``+`` (``benchmarks/study_steps.py`` lists them: torch.compile,
inductor freezing, length groups, a lazy row-wise AdamW for the word embeddings, foreach AdamW, the attention
implementation, threads, OpenMP wait policy, a preloaded allocator); ``today`` is the study's own path. Nothing
here changes the library's defaults: the features are applied inside the worker processes only.

train   each candidate trains the profile's study run (``--profile``, default cpu) for ``--steps`` steps (default
        60, the issue's end-to-end run) through the real loop, on the same batches for the same seed, with
        validation every ``--val-every`` steps on the study's fixed validation batches, once per seed in
        ``--seeds`` (default 0 1 2); the candidates alternate within every seed (the order reversed from one seed
        to the next) so that a slow spell of the machine touches all. Reported: pairs/s end to end (every
        step, compile time included: the sum of the loop's step times, validation excluded; each worker gets an
        empty inductor cache unless ``--warm-compile-cache``, so every compiled run pays its compilation), pairs/s after
        ``--warmup`` steps, the first step's seconds, the speed-up over today, the largest training-loss
        difference to today's on the same seed, and the validation-loss curve against today's seed spread (a
        path that is not exact AdamW, or whose dropout masks differ, must stay inside it).
encode  each candidate encodes XQuAD-R's questions and candidates as evaluation does (``Encoder.encode``, the
        profile's batch size, candidate mode and max length; ``--max-ids`` ids, all by default) in each precision
        of ``--dtypes``, after a warm-up encode of two batches that compiles what is compiled (its time is
        reported, and counted in the end-to-end rate). Reported: passages/s and queries/s, the speed-up over
        today's same precision, the largest embedding difference to today's, and mono / cross / multi mAP (no
        bootstrap) with the largest difference to today's float32 (the profile's rule: within 0.003).

Measured before and not redone here (:data:`EARLIER`): the row-wise input-embedding gradient (today's path, 1.32x,
reports/benchmarks/embedding_grads.md), glibc's mmap threshold (hybridnb.allocator, within noise:
reports/benchmarks/training_zen4.md), bf16 autocast against float32 (training_zen4.md, precision.md), length groups
of the image-text captions (length_groups.md). Encoding already pads each batch to its own longest text after a
length sort (``Encoder.encode``), which is length bucketing; training pads each of its three forwards to their own
longest, which ``length-groups-N`` and ``joint-forward`` rearrange.

Results: reports/benchmarks/fast_paths.json and .md (``--out`` elsewhere). Run with nothing else on the cores.
Estimated wall time on a 2-core VM (a study step is ~2.5 s in bf16 on a Zen 4, ~6 s on a Sapphire Rapids Xeon; a
compiled run adds 2-5 min of compilation): the default training part, 6 candidates x 3 seeds x 60 steps, 1.3-2.7 h;
the encoding part, full XQuAD-R, 3 float32 + 5 bf16 workers, 30-45 min:

    python benchmarks/bench_fast_paths.py --parts train encode      # the defaults; about 2-3.5 h
    python benchmarks/bench_fast_paths.py --parts train --seeds 0   # a first look at training: 25-55 min
    python benchmarks/bench_fast_paths.py --parts train --seeds 0 --steps 20 \
        --candidates today foreach-adamw omp-active omp-passive eager-attention --out /tmp/settings.json
    python benchmarks/bench_fast_paths.py --parts encode --max-ids 300 --out /tmp/enc.json   # encoding, quick
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_steps  # noqa: E402  (puts this checkout's hybridnb first on sys.path)

EARLIER = ("Measured before, not redone: the row-wise input-embedding gradient, today's path (1.32x the dense one, "
           "bit-identical: reports/benchmarks/embedding_grads.md); glibc's mmap threshold (within noise: "
           "training_zen4.md); bf16 autocast against float32 (2.24x on a Zen 4: training_zen4.md; encoding 2.00x on "
           "an AMX Xeon: precision.md); length groups of the image-text captions (1.09-1.20x: length_groups.md). "
           "Encoding already sorts by length and pads each batch to its own longest text (length bucketing).")
TRAIN_CANDIDATES = ["today", "compile", "length-groups-2", "compile+length-groups-2", "lazy-embedding-adamw",
                    "compile+length-groups-2+lazy-embedding-adamw"]
ENCODE_CANDIDATES = ["today", "compile", "freeze", "bf16-weights", "freeze+bf16-weights"]
MAP_TOLERANCE = 0.003          # the profile's rule for an encoding path (params/cpu.yaml, issue 17)
TRAIN_TARGET, ENCODE_TARGET = 2.0, 1.5   # issue 38's targets on a CPU with AMX, against today's bf16


# ------------------------------------------------------------------------------------------------ workers
def train_worker(args) -> dict:
    import torch

    from hybridnb.models.encoders import Encoder

    feats = study_steps.features(args.candidate, study_steps.TRAIN_FEATURES)
    study_steps.apply_process_features(feats)
    dtype = "float32" if "float32" in feats else args.train_dtype
    cfg, data = study_steps.study_run(args.profile, args.seed, args.steps, args.val_every, dtype,
                                      {"batch_size": args.batch_size, "max_length": args.max_length})
    encoder = Encoder.from_pretrained(cfg.model, max_length=cfg.max_length)
    attn = study_steps.set_attention(encoder.model, feats)
    study_steps.prepare_training_model(encoder, feats)
    t0 = time.perf_counter()
    run = study_steps.train_steps(encoder, data, cfg.training(), feats)
    wall = time.perf_counter() - t0
    return {"step_s": [r["step_s"] for r in run.history], "loss": [r["loss"] for r in run.history],
            "val": [(r["step"] + 1, r["val_loss"]) for r in run.history if "val_loss" in r],
            "wall_s": wall, "attn_implementation": attn, "train_dtype": cfg.train_dtype,
            "batch_size": cfg.batch_size, "torch_threads": torch.get_num_threads()}


def encode_worker(args) -> dict:
    import numpy as np
    import torch

    from hybridnb import config
    from hybridnb.data import lareqa
    from hybridnb.models.encoders import Encoder

    feats = study_steps.features(args.candidate, study_steps.ENCODE_FEATURES)
    study_steps.apply_process_features(feats)
    prof = config.load_profile(args.profile)
    max_length = args.max_length or prof["max_length"]
    batch = args.batch_size or prof["encode_batch_size"]
    task = lareqa.load_task("xquad-r", max_ids=args.max_ids)
    encoder = Encoder.from_pretrained(prof["model"], max_length=max_length)
    attn = study_steps.set_attention(encoder.model, feats)
    study_steps.prepare_encoding_model(encoder, feats)
    dtype = None if args.dtype == "float32" else getattr(torch, args.dtype)
    queries, passages = list(task.questions["text"]), task.candidate_inputs(prof["candidate_mode"])
    t0 = time.perf_counter()
    encoder.encode(passages[: 2 * batch], "passage", batch, show_progress=False, autocast_dtype=dtype)
    t1 = time.perf_counter()
    q = encoder.encode(queries, "query", batch, show_progress=False, autocast_dtype=dtype)
    t2 = time.perf_counter()
    c = encoder.encode(passages, "passage", batch, show_progress=False, autocast_dtype=dtype)
    t3 = time.perf_counter()
    np.savez(args.save, q=q, c=c)
    return {"warmup_s": t1 - t0, "queries_s": t2 - t1, "passages_s": t3 - t2, "n_queries": len(queries),
            "n_passages": len(passages), "attn_implementation": attn, "torch_threads": torch.get_num_threads()}


def run_worker(args, part: str, candidate: str, **extra) -> dict:
    cmd = [sys.executable, __file__, "--worker", part, "--candidate", candidate, "--profile", args.profile,
           "--steps", str(args.steps), "--val-every", str(args.val_every)]
    for flag, value in (("--max-ids", args.max_ids), ("--batch-size", args.batch_size),
                        ("--max-length", args.max_length), ("--train-dtype", args.train_dtype),
                        *((f"--{k.replace('_', '-')}", v) for k, v in extra.items())):
        if value is not None:
            cmd += [flag, str(value)]
    feats = study_steps.features(candidate, study_steps.TRAIN_FEATURES if part == "train" else
                                 study_steps.ENCODE_FEATURES)
    env = {**os.environ, **study_steps.environment(feats)}
    with tempfile.TemporaryDirectory(prefix="inductor-") as cache:
        if not args.warm_compile_cache:  # every compiled run compiles from scratch, as a fresh machine would
            env["TORCHINDUCTOR_CACHE_DIR"] = cache
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{part} worker {candidate!r} failed:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# ------------------------------------------------------------------------------------------------ parts
def measure_training(args) -> dict:
    runs = {c: {} for c in args.candidates}
    for i, seed in enumerate(args.seeds):
        for cand in (args.candidates if i % 2 == 0 else args.candidates[::-1]):
            runs[cand][seed] = run_worker(args, "train", cand, seed=seed)
            r = runs[cand][seed]
            print(f"train seed {seed} {cand}: {r['batch_size'] * len(r['step_s']) / sum(r['step_s']):.2f} pairs/s "
                  f"end to end, last loss {r['loss'][-1]:.4f}", flush=True)
    base = runs["today"]
    rows = []
    for cand, by_seed in runs.items():
        steps = [s for r in by_seed.values() for s in r["step_s"]]
        steady = [s for r in by_seed.values() for s in r["step_s"][args.warmup:]]
        batch = next(iter(by_seed.values()))["batch_size"]
        row = {"candidate": cand, "pairs_per_s_end_to_end": batch * len(steps) / sum(steps),
               "pairs_per_s_steady": batch * len(steady) / sum(steady) if steady else math.nan,
               "first_step_s": statistics.fmean(r["step_s"][0] for r in by_seed.values()),
               "max_rss_mb": max(r["max_rss_mb"] for r in by_seed.values()),
               "max_abs_loss_diff": max(max(abs(a - b) for a, b in zip(r["loss"], base[s]["loss"]))
                                        for s, r in by_seed.items()),
               "final_val_loss": {s: r["val"][-1][1] for s, r in by_seed.items() if r["val"]},
               "val": {s: r["val"] for s, r in by_seed.items()},
               "attn_implementation": next(iter(by_seed.values()))["attn_implementation"],
               "train_dtype": next(iter(by_seed.values()))["train_dtype"]}
        rows.append(row)
    today = rows[0] if rows[0]["candidate"] == "today" else next(r for r in rows if r["candidate"] == "today")
    points = sorted({p for r in base.values() for p, _ in r["val"]})
    spread = {p: [v for r in base.values() for q, v in r["val"] if q == p] for p in points}
    for row in rows:
        row["speedup_end_to_end"] = row["pairs_per_s_end_to_end"] / today["pairs_per_s_end_to_end"]
        row["speedup_steady"] = row["pairs_per_s_steady"] / today["pairs_per_s_steady"]
        inside = 0
        for p in points:
            mine = [v for vals in row["val"].values() for q, v in vals if q == p]
            if mine and min(spread[p]) <= statistics.fmean(mine) <= max(spread[p]):
                inside += 1
        row["val_points_inside_today_spread"] = inside
        row["val_points"] = len(points)
    return {"rows": rows, "runs": runs, "seeds": args.seeds, "val_points": points,
            "today_val_spread": {p: [min(v), max(v)] for p, v in spread.items()}}


def measure_encoding(args, dtypes: list[str]) -> dict:
    import numpy as np

    from hybridnb.data import lareqa
    from hybridnb.evaluation import runner

    task = lareqa.load_task("xquad-r", max_ids=args.max_ids)
    jobs = [(d, c) for d in dtypes for c in args.encode_candidates
            if not (d == "float32" and "bf16-weights" in c)]
    if ("float32", "today") not in jobs:
        jobs.insert(0, ("float32", "today"))  # every mAP is compared with today's float32
    results, embeddings = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for d, cand in (jobs if r % 2 == 0 else jobs[::-1]):
                save = Path(tmp) / f"{d}-{cand}-{r}.npz"
                res = run_worker(args, "encode", cand, dtype=d, save=save)
                results.setdefault((d, cand), []).append(res)
                if (d, cand) not in embeddings:
                    arrays = np.load(save)
                    embeddings[(d, cand)] = (arrays["q"], arrays["c"])
                print(f"encode {d} {cand}: {res['n_passages'] / res['passages_s']:.1f} passages/s", flush=True)
    scores = {}
    for key, (q, c) in embeddings.items():
        s = runner.score_task(task, q, c).summary()
        scores[key] = {k: s[k]["map"] for k in ("mono", "cross", "multi")}
    rows = []
    for (d, cand), res in results.items():
        n_q, n_p = res[0]["n_queries"], res[0]["n_passages"]
        p_s, q_s = sum(r["passages_s"] for r in res), sum(r["queries_s"] for r in res)
        warm = sum(r["warmup_s"] for r in res)
        rows.append({"dtype": d, "candidate": cand, "passages_per_s": n_p * len(res) / p_s,
                     "queries_per_s": n_q * len(res) / q_s,
                     "texts_per_s_end_to_end": (n_p + n_q) * len(res) / (p_s + q_s + warm),
                     "warmup_s": warm / len(res), "max_rss_mb": max(r["max_rss_mb"] for r in res),
                     "map": scores[(d, cand)],
                     "attn_implementation": res[0]["attn_implementation"]})
    ref_map = scores[("float32", "today")]
    for row in rows:
        today = next((r for r in rows if r["dtype"] == row["dtype"] and r["candidate"] == "today"), None)
        base_q, base_c = embeddings.get((row["dtype"], "today"), (None, None))
        q, c = embeddings[(row["dtype"], row["candidate"])]
        row["speedup_vs_today_same_dtype"] = row["passages_per_s"] / today["passages_per_s"] if today else None
        row["speedup_end_to_end_vs_today"] = (row["texts_per_s_end_to_end"] / today["texts_per_s_end_to_end"]
                                              if today else None)
        row["max_abs_embedding_diff_vs_today"] = (float(max(np.abs(q - base_q).max(), np.abs(c - base_c).max()))
                                                  if base_q is not None else None)
        row["max_abs_map_diff_vs_float32"] = max(abs(row["map"][k] - ref_map[k]) for k in ref_map)
        row["within_tolerance"] = row["max_abs_map_diff_vs_float32"] <= MAP_TOLERANCE
    return {"rows": rows, "n_queries": len(task.questions), "n_candidates": len(task.candidates)}


# ------------------------------------------------------------------------------------------------ report
def render(doc: dict, args) -> str:
    from hybridnb import reporting

    lines = ["# Faster training and encoding paths, side by side with today's", "",
             reporting.stamp(doc["provenance"]), "",
             "This run (nothing else on the cores):", "", f"    {doc.get('command', '(not recorded)')}", "",
             "The defaults (about 2-3.5 h on 2 cores): `python benchmarks/bench_fast_paths.py --parts train encode`.",
             "",
             f"CPU flags: {', '.join(doc['cpu']['flags'])}; torch threads {doc['settings']['torch_threads']}.", "",
             EARLIER, "", "Features (a candidate joins them with '+'):", ""]
    used = {f for part in ("train", "encode") if part in doc for r in doc[part]["rows"]
            for f in r["candidate"].split("+")}
    known = {**study_steps.ENCODE_FEATURES, **study_steps.TRAIN_FEATURES}
    for f in sorted(used):
        generic = study_steps._N.sub(lambda m: f"{m.group(1)}-N", f)
        lines.append(f"- `{f}`: {known.get(generic, '?')}")
    lines.append("")
    if "train" in doc:
        t = doc["train"]
        table = [{"candidate": r["candidate"], "pairs/s end to end": f"{r['pairs_per_s_end_to_end']:.2f}",
                  "x today (end to end)": f"{r['speedup_end_to_end']:.2f}",
                  f"pairs/s after {args.warmup} steps": f"{r['pairs_per_s_steady']:.2f}",
                  "x today (after warm-up)": f"{r['speedup_steady']:.2f}", "first step s": f"{r['first_step_s']:.1f}",
                  "max abs loss diff": f"{r['max_abs_loss_diff']:.4f}",
                  "val points inside today's seed spread": f"{r['val_points_inside_today_spread']} / {r['val_points']}",
                  "final val loss (per seed)": ", ".join(f"{v:.4f}" for v in r["final_val_loss"].values()),
                  "peak RSS MB": f"{r['max_rss_mb']:.0f}"} for r in t["rows"]]
        today = next(r for r in t["rows"] if r["candidate"] == "today")
        lines += ["## Training: the study's run", "",
                  f"Profile `{doc['settings']['profile']}`, train_dtype {today['train_dtype']}, attention "
                  f"{today['attn_implementation']}, {doc['settings']['steps']} steps per run, seeds "
                  f"{', '.join(map(str, t['seeds']))} (candidates interleaved within each seed, the order reversed "
                  "from seed to seed). 'End to end' is every step's time including compilation (validation left "
                  f"out); the target on a CPU with AMX is >= {TRAIN_TARGET}x today's bf16 end to end. 'Max abs loss "
                  "diff' is the largest training-loss difference to today's run of the same seed at the same step "
                  "(0 means the same arithmetic; dropout masks drawn differently show up here). A validation point "
                  "is inside when the candidate's seed mean lies within today's seed range at that step.", "",
                  reporting.markdown_table(table), "",
                  "Today's validation-loss range per point: " + ", ".join(
                      f"step {p}: {lo:.4f}-{hi:.4f}" for p, (lo, hi) in t["today_val_spread"].items()) + ".", ""]
    if "encode" in doc:
        e = doc["encode"]
        table = [{"precision": r["dtype"], "candidate": r["candidate"], "passages/s": f"{r['passages_per_s']:.1f}",
                  "queries/s": f"{r['queries_per_s']:.1f}",
                  "x today (same precision)": f"{r['speedup_vs_today_same_dtype']:.2f}"
                  if r["speedup_vs_today_same_dtype"] else "n/a",
                  "x today end to end (warm-up incl.)": f"{r['speedup_end_to_end_vs_today']:.2f}"
                  if r["speedup_end_to_end_vs_today"] else "n/a",
                  "warm-up s": f"{r['warmup_s']:.1f}",
                  "max abs emb diff vs today": "n/a" if r["max_abs_embedding_diff_vs_today"] is None
                  else f"{r['max_abs_embedding_diff_vs_today']:.2e}",
                  **{f"{k} mAP": f"{v:.4f}" for k, v in r["map"].items()},
                  "max abs mAP diff vs float32": f"{r['max_abs_map_diff_vs_float32']:.4f}"
                  + ("" if r["within_tolerance"] else " (over)")} for r in e["rows"]]
        lines += ["## Encoding: XQuAD-R as evaluation encodes it", "",
                  f"{e['n_queries']:,} questions and {e['n_candidates']:,} candidates"
                  + (f" (the first {args.max_ids} question ids)" if args.max_ids else " (all of XQuAD-R)")
                  + f", {args.rounds} round(s). The target on a CPU with AMX is >= {ENCODE_TARGET}x today's bf16 "
                  f"passages/s with every mAP within {MAP_TOLERANCE} of float32's (no bootstrap: the difference is "
                  "paired and deterministic).", "", reporting.markdown_table(table), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="+", default=["train", "encode"], choices=["train", "encode"])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--candidates", nargs="+", default=TRAIN_CANDIDATES, help="training candidates")
    p.add_argument("--encode-candidates", nargs="+", default=ENCODE_CANDIDATES)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--val-every", type=int, default=6)
    p.add_argument("--warmup", type=int, default=5, help="steps left out of the steady-state rate")
    p.add_argument("--dtypes", nargs="+", default=None, help="encoding: default float32, and bfloat16 where native")
    p.add_argument("--train-dtype", default=None, help="default: the profile's, resolved on this CPU")
    p.add_argument("--max-ids", type=int, default=None, help="XQuAD-R question ids to encode (default: all)")
    p.add_argument("--rounds", type=int, default=1, help="encoding: repeat every worker, interleaved")
    p.add_argument("--batch-size", type=int, default=None, help="smoke tests only (default: the profile's)")
    p.add_argument("--max-length", type=int, default=None, help="smoke tests only (default: the profile's)")
    p.add_argument("--warm-compile-cache", action="store_true",
                   help="let compiled runs share inductor's on-disk cache (default: each compiles from scratch)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--worker", choices=["train", "encode"])
    p.add_argument("--candidate", default="today")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--save", type=Path, default=None)
    args = p.parse_args(argv)
    if args.worker:
        return study_steps.run_worker(train_worker if args.worker == "train" else encode_worker, args)
    for cand in args.candidates:
        study_steps.features(cand, study_steps.TRAIN_FEATURES)
    for cand in args.encode_candidates:
        study_steps.features(cand, study_steps.ENCODE_FEATURES)
    if "train" in args.parts and "today" not in args.candidates:
        p.error("--candidates must include today (every candidate is compared with it)")
    if "encode" in args.parts and "today" not in args.encode_candidates:
        p.error("--encode-candidates must include today")

    import torch

    from hybridnb import reporting
    from hybridnb.models import flops, precision
    from hybridnb.paths import reports_root

    dtypes = args.dtypes or (["float32", "bfloat16"] if precision.native_bf16() else ["float32"])
    doc = {"benchmark": "faster paths side by side", "provenance": reporting.provenance(args.profile),
           "cpu": flops.cpu_info().as_dict(),
           "command": " ".join(["python", "benchmarks/bench_fast_paths.py", *(sys.argv[1:] if argv is None else argv)]),
           "settings": {"profile": args.profile, "steps": args.steps, "val_every": args.val_every,
                        "warmup": args.warmup, "seeds": args.seeds, "warm_compile_cache": args.warm_compile_cache,
                        "max_ids": args.max_ids, "rounds": args.rounds,
                        "batch_size": args.batch_size, "max_length": args.max_length,
                        "torch_threads": torch.get_num_threads()}}
    if "train" in args.parts:
        doc["train"] = measure_training(args)
    if "encode" in args.parts:
        doc["encode"] = measure_encoding(args, dtypes)
    doc["provenance"] = reporting.provenance(args.profile)
    out = args.out or reports_root() / "benchmarks" / "fast_paths.json"
    reporting.write_json(out, doc)
    reporting.write_text(out.with_suffix(".md"), render(doc, args))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
