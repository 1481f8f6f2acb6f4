"""How much of the CPU the study's training step and evaluation encoding use, and where a training step's time goes.

For each precision in ``--dtypes`` (default: float32, and bfloat16 where the CPU has native bf16), two workers,
each its own process:

train   the study's training step as a run of the profile trains it (``--profile``, default cpu: E5-small,
        batch 32 + 32 hard negatives, its max length and candidate mode, AdamW, hybrid batches of seed 0), through
        the real loop (``benchmarks/study_steps.py``), ``--steps`` steps; the first ``--warmup`` and the profiled
        one are left out of the timing. One step (the last but one) runs under torch.profiler; its operators are
        grouped (attention, linear matmuls, embedding forward and gradient, dtype casts, loss, optimiser, gradient
        clipping, data, other), forward and backward apart.
encode  evaluation encoding as the study evaluates (``Encoder.encode``: the profile's encode batch size and
        candidate mode, length-sorted batches), over XQuAD-R's questions and candidates (``--max-ids`` ids; all by
        default), after a short warm-up encode.

FLOPs are counted from the model's config and each batch's padded shape (``hybridnb.models.flops``: 2 FLOPs per
multiply-add in the layers' matmuls plus attention's QK^T and AV at the padded length; training 3x the forward;
the loss's similarity matrix included), and checked against ``torch.utils.flop_counter`` on one real step.
The nominal peak is cores x clock x FLOPs/cycle/core for the precision, from /proc/cpuinfo's flags, family and
"cpu MHz" (``--ghz`` overrides the clock); the report states every assumption. Workers of the dtypes alternate for
``--rounds`` rounds. Results: reports/benchmarks/utilisation.json and .md (``--out`` elsewhere).

Run it with nothing else on the cores. Estimated wall time on a 2-core Zen 4 / Sapphire Rapids VM with the defaults,
two precisions x (10 training steps + all of XQuAD-R encoded, 26k texts): 10-20 min; ``--max-ids 300`` encodes a
quarter of it:

    python benchmarks/bench_utilisation.py [--profile cpu] [--steps 10] [--dtypes float32 bfloat16] [--rounds 1]
    python benchmarks/bench_utilisation.py --steps 4 --warmup 1 --max-ids 20 --out /tmp/util.json   # a smoke test
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_steps  # noqa: E402  (puts this checkout's hybridnb first on sys.path)

CATEGORIES = ("attention", "linear matmuls", "embedding (lookup and gradient)", "dtype casts (autocast)", "loss",
              "optimiser (AdamW, zero_grad)", "gradient clipping", "data (sampling, tokenising)", "other")
MATMUL_OPS = {"aten::addmm", "aten::mm", "aten::matmul", "aten::linear", "aten::_addmm_activation"}
ATTENTION_OPS = ("scaled_dot_product", "aten::bmm", "aten::baddbmm", "aten::_softmax", "aten::softmax")
ATTENTION_SCOPES = ("scaled_dot_product", "bmmbackward", "softmaxbackward")
CAST_OPS = {"aten::copy_", "aten::_to_copy", "aten::to"}


def categorise(name: str, ancestors: list[str]) -> str:
    """The category of an event's own (self) time, from its name and the names of the events it ran inside (a
    scope of ours, such as "data: tokenise", holds the Python time of what it wraps as its self time)."""
    ancestors = [name, *ancestors]
    joined = " | ".join(ancestors)
    if "data:" in joined:
        return "data (sampling, tokenising)"
    if "Optimizer.step" in joined or "Optimizer.zero_grad" in joined:
        return "optimiser (AdamW, zero_grad)"
    if "gradient clipping" in joined:
        return "gradient clipping"
    if "loss" in ancestors or "NllLoss" in joined or "LogSoftmax" in joined:
        return "loss"
    if any(k in name for k in ATTENTION_OPS) or any(k in joined.lower() for k in ATTENTION_SCOPES):
        return "attention"  # SDPA's kernels, or its math path's bmm / softmax (training: dropout in attention)
    if "embedding" in name.lower() or "Embedding" in joined:
        return "embedding (lookup and gradient)"
    if name in MATMUL_OPS or name.startswith(("aten::mkldnn", "mkldnn")):
        return "linear matmuls"
    if name in CAST_OPS:
        return "dtype casts (autocast)"
    return "other"


def profile_breakdown(prof) -> dict:
    """Self CPU time of the profiled step's events by category (forward / backward), and the top 'other' ops."""
    table = defaultdict(lambda: {"forward_ms": 0.0, "backward_ms": 0.0})
    other = defaultdict(float)
    events = list(prof.events())
    for evt in events:
        ancestors, parent = [], evt.cpu_parent
        while parent is not None:
            ancestors.append(parent.name)
            parent = parent.cpu_parent
        cat = categorise(evt.name, ancestors)
        backward = any(a.startswith("autograd::engine::evaluate_function") for a in ancestors) or \
            evt.name.startswith("autograd::engine::evaluate_function")
        ms = evt.self_cpu_time_total / 1000.0
        table[cat]["backward_ms" if backward else "forward_ms"] += ms
        if cat == "other":
            other[evt.name] += ms
    roots = [e for e in events if e.cpu_parent is None]
    wall_ms = (max(e.time_range.end for e in roots) - min(e.time_range.start for e in roots)) / 1000.0 if roots else 0.0
    return {"categories": {c: dict(table[c]) for c in CATEGORIES if c in table}, "wall_ms": wall_ms,
            "top_other": sorted(other.items(), key=lambda kv: -kv[1])[:8]}


def torch_flop_count(encoder, features, loss_fn, dtype) -> dict:
    """torch.utils.flop_counter's count of one forward + backward of the step's loss on the given features."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    encoder.zero_grad(set_to_none=True)
    counter = FlopCounterMode(display=False)
    with counter, torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        embs = [encoder(f) for f in features]
        loss = loss_fn(*[e.float() for e in embs])
        loss.backward()
    encoder.zero_grad(set_to_none=True)
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return {"total": int(counter.get_total_flops()), "by_op": by_op}


def train_worker(args) -> dict:
    import torch

    from hybridnb.models import flops

    study_steps.apply_process_features([])
    cfg, data = study_steps.study_run(args.profile, 0, args.steps, args.steps, args.dtype, smoke_overrides(args))
    tcfg = cfg.training()
    from hybridnb.models.encoders import Encoder
    encoder = Encoder.from_pretrained(cfg.model, max_length=cfg.max_length)
    attn = study_steps.set_attention(encoder.model, [])
    shapes: list = []
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
    profiled = args.steps - 2

    def on_batch(i):
        if i == profiled:
            prof.start()
        elif i == profiled + 1:
            prof.stop()

    run = study_steps.train_steps(encoder, data, tcfg, [], shapes=shapes, on_batch=on_batch)
    breakdown = profile_breakdown(prof)
    shape = flops.encoder_shape(encoder.model.config)
    steps = []
    for rec, groups in zip(run.history, shapes):
        batches = [lengths for lengths, _ in groups]
        count = flops.padded_and_useful(shape, batches)
        n_cand = sum(len(b) for b in batches[1:])
        loss = flops.loss_flops(len(batches[0]), n_cand, encoder.dim)
        steps.append({"step_s": rec["step_s"], "loss": rec["loss"],
                      "executed_flops": flops.TRAINING_FACTOR * (count["executed"] + loss),
                      "useful_flops": flops.TRAINING_FACTOR * (count["useful"] + loss),
                      "attention_flops": flops.TRAINING_FACTOR * count["attention"],
                      "tokens_padded": count["tokens_padded"], "tokens_real": count["tokens_real"],
                      "widths": [w for _, w in groups]})
    # torch's own count of the first batch's forward + backward (the analytic count: 3x forward)
    from hybridnb.training import trainer
    sampler = trainer.check_config(tcfg, data.train)
    pairs = sampler.next_batch().pairs
    feats = [f for f in trainer._features(encoder, data.train, pairs, tcfg.n_hard_negatives) if f is not None]
    dtype = trainer.autocast_dtype(tcfg.train_dtype, encoder.device)
    check = torch_flop_count(encoder, feats, study_steps.make_task(encoder, data, tcfg, []).loss_fn, dtype)
    batches = [f["attention_mask"].sum(dim=1).tolist() for f in feats]
    analytic = flops.padded_and_useful(shape, batches)["executed"] + flops.loss_flops(
        len(batches[0]), sum(len(b) for b in batches[1:]), encoder.dim)
    check["analytic_3x_forward"] = flops.TRAINING_FACTOR * analytic
    return {"steps": steps, "profile": breakdown, "profiled_step": profiled, "attn_implementation": attn,
            "train_dtype": tcfg.train_dtype, "batch_size": tcfg.batch_size, "max_length": cfg.max_length,
            "candidate_mode": cfg.candidate_mode, "flop_counter_check": check,
            "torch_threads": torch.get_num_threads()}


def encode_worker(args) -> dict:
    import torch

    from hybridnb import config
    from hybridnb.data import lareqa
    from hybridnb.models import flops
    from hybridnb.models.encoders import Encoder

    prof = config.load_profile(args.profile)
    task = lareqa.load_task("xquad-r", max_ids=args.max_ids)
    prof.update(smoke_overrides(args))
    encoder = Encoder.from_pretrained(prof["model"], max_length=prof["max_length"])
    attn = study_steps.set_attention(encoder.model, [])
    dtype = None if args.dtype == "float32" else getattr(torch, args.dtype)
    batch = prof["encode_batch_size"]
    texts = {"query": list(task.questions["text"]), "passage": task.candidate_inputs(prof["candidate_mode"])}
    encoder.encode(texts["passage"][: 2 * batch], "passage", batch, show_progress=False, autocast_dtype=dtype)
    shape = flops.encoder_shape(encoder.model.config)
    out = {"attn_implementation": attn, "batch_size": batch, "max_length": prof["max_length"],
           "candidate_mode": prof["candidate_mode"], "torch_threads": torch.get_num_threads()}
    for kind, items in texts.items():
        t0 = time.perf_counter()
        encoder.token_rows(items, kind)
        tokenise_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        encoder.encode(items, kind, batch, show_progress=False, autocast_dtype=dtype)
        seconds = time.perf_counter() - t0
        count = flops.padded_and_useful(shape, study_steps.encode_batches(encoder, items, kind, batch))
        out[kind] = {"texts": len(items), "seconds": seconds, "tokenise_s": tokenise_s, **count}
    return out


def smoke_overrides(args) -> dict:
    """Profile keys a smoke test shrinks (None: the profile's)."""
    return {k: v for k, v in (("batch_size", args.batch_size), ("max_length", args.max_length),
                              ("encode_batch_size", args.batch_size)) if v is not None}


def run_worker(args, part: str, dtype: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", part, "--dtype", dtype, "--profile", args.profile,
           "--steps", str(args.steps), "--warmup", str(args.warmup)]
    for flag, value in (("--max-ids", args.max_ids), ("--batch-size", args.batch_size),
                        ("--max-length", args.max_length)):
        if value is not None:
            cmd += [flag, str(value)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{part} worker ({dtype}) failed:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="cpu")
    p.add_argument("--dtypes", nargs="+", default=None, help="default: float32, and bfloat16 where native")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2, help="first training steps left out of the timing")
    p.add_argument("--max-ids", type=int, default=None, help="XQuAD-R question ids to encode (default: all)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--parts", nargs="+", default=["train", "encode"], choices=["train", "encode"])
    p.add_argument("--ghz", type=float, default=None, help="the clock for the peak (default: /proc/cpuinfo)")
    p.add_argument("--batch-size", type=int, default=None, help="smoke tests only (default: the profile's)")
    p.add_argument("--max-length", type=int, default=None, help="smoke tests only (default: the profile's)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--worker", choices=["train", "encode"])
    p.add_argument("--dtype", default="float32")
    args = p.parse_args(argv)
    if args.worker:
        return study_steps.run_worker(train_worker if args.worker == "train" else encode_worker, args)
    if args.steps < args.warmup + 3:
        p.error("--steps must be at least --warmup + 3 (timed steps, the profiled one, the last)")

    import torch

    from hybridnb import reporting
    from hybridnb.models import flops, precision
    from hybridnb.paths import reports_root

    dtypes = args.dtypes or (["float32", "bfloat16"] if precision.native_bf16() else ["float32"])
    results: dict = {(part, d): [] for part in args.parts for d in dtypes}
    for r in range(args.rounds):
        order = [(part, d) for part in args.parts for d in dtypes]
        for part, d in (order if r % 2 == 0 else order[::-1]):
            results[(part, d)].append(run_worker(args, part, d))
            print(f"round {r + 1}: {part} {d} done", flush=True)

    info = flops.cpu_info()
    threads = torch.get_num_threads()
    peaks = {d: flops.nominal_peak(info, d, threads, args.ghz) for d in dtypes}
    rows, train_rows, encode_rows = [], [], []
    for d in dtypes:
        peak = peaks[d]["flops"]
        if "train" in args.parts:
            runs = results[("train", d)]
            timed = [s for run in runs for i, s in enumerate(run["steps"])
                     if i >= args.warmup and i != run["profiled_step"]]
            seconds = sum(s["step_s"] for s in timed)
            executed, useful = sum(s["executed_flops"] for s in timed), sum(s["useful_flops"] for s in timed)
            row = {"path": f"training step, {d}", "seconds": seconds, "units": len(timed) * runs[0]["batch_size"],
                   "unit": "pairs", "executed_flops": executed, "useful_flops": useful,
                   "attention_share": sum(s["attention_flops"] for s in timed) / executed,
                   "real_token_share": sum(s["tokens_real"] for s in timed) / sum(s["tokens_padded"] for s in timed),
                   "achieved_flops_per_s": executed / seconds, "useful_flops_per_s": useful / seconds,
                   "peak_flops_per_s": peak, "share_of_peak": executed / seconds / peak if peak else None,
                   "median_step_s": statistics.median(s["step_s"] for s in timed)}
            rows.append(row)
            train_rows.append((d, runs[0]))
        if "encode" in args.parts:
            runs = results[("encode", d)]
            for kind in ("query", "passage"):
                seconds = sum(r[kind]["seconds"] for r in runs)
                executed, useful = sum(r[kind]["executed"] for r in runs), sum(r[kind]["useful"] for r in runs)
                plural = {"query": "queries", "passage": "passages"}[kind]
                rows.append({"path": f"encoding {plural}, {d}", "seconds": seconds,
                             "units": sum(r[kind]["texts"] for r in runs), "unit": plural,
                             "executed_flops": executed, "useful_flops": useful,
                             "attention_share": sum(r[kind]["attention"] for r in runs) / executed,
                             "real_token_share": sum(r[kind]["tokens_real"] for r in runs)
                             / sum(r[kind]["tokens_padded"] for r in runs),
                             "achieved_flops_per_s": executed / seconds, "useful_flops_per_s": useful / seconds,
                             "peak_flops_per_s": peak, "share_of_peak": executed / seconds / peak if peak else None,
                             "tokenise_share": sum(r[kind]["tokenise_s"] for r in runs) / seconds})
            encode_rows.append((d, runs[0]))

    prov = reporting.provenance(args.profile)
    out = args.out or reports_root() / "benchmarks" / "utilisation.json"
    doc = {"benchmark": "utilisation: achieved FLOP/s against the nominal peak", "provenance": prov,
           "settings": {"profile": args.profile, "steps": args.steps, **smoke_overrides(args), "warmup_steps_excluded": args.warmup,
                        "rounds": args.rounds, "max_ids": args.max_ids, "torch_threads": threads},
           "cpu": info.as_dict(), "peaks": peaks, "rows": rows,
           "train": {d: r for d, r in train_rows}, "encode": {d: r for d, r in encode_rows},
           "conventions": {"flop": "2 per multiply-add", "training_factor": flops.TRAINING_FACTOR,
                           "counted": "the transformer layers' matmuls and attention's QK^T and AV at each batch's "
                                      "padded shape, plus the loss's similarity matrix; not counted: biases, "
                                      "LayerNorm, GELU, softmax, dropout, embedding lookups, pooling"}}
    reporting.write_json(out, doc)
    reporting.write_text(out.with_suffix(".md"), render(doc, args))
    print(f"wrote {out}")
    for row in rows:
        print(f"{row['path']}: {row['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s, "
              f"{100 * (row['share_of_peak'] or 0):.1f}% of the nominal peak")
    return 0


def _g(x: float) -> str:
    return f"{x / 1e9:,.1f}"


def render(doc: dict, args) -> str:
    from hybridnb import reporting

    cpu, peaks = doc["cpu"], doc["peaks"]
    table = [{"path": r["path"], "rate": f"{r['units'] / r['seconds']:.2f} {r['unit']}/s",
              "executed GFLOP": _g(r["executed_flops"]), "achieved GFLOP/s": _g(r["achieved_flops_per_s"]),
              "nominal peak GFLOP/s": _g(r["peak_flops_per_s"]),
              "% of peak": f"{100 * r['share_of_peak']:.1f}" if r["share_of_peak"] else "n/a",
              "useful GFLOP/s (real tokens)": _g(r["useful_flops_per_s"]),
              "real-token share": f"{100 * r['real_token_share']:.0f}%",
              "attention share of FLOPs": f"{100 * r['attention_share']:.1f}%"} for r in doc["rows"]]
    peak_rows = [{"precision": d, "FLOP/cycle/core": p["flops_per_cycle_per_core"], "cores": p["cores"],
                  "GHz": f"{p['ghz']:.2f} ({p['clock_source']})", "nominal peak GFLOP/s": _g(p["flops"]),
                  "assumption": p["why"]} for d, p in peaks.items()]
    lines = [
        "# Utilisation: achieved FLOP/s of training and encoding against the CPU's nominal peak", "",
        reporting.stamp(doc["provenance"]), "",
        "How to run it (nothing else on the cores; about 10-20 min on 2 cores with the defaults):", "",
        "    python benchmarks/bench_utilisation.py --profile cpu --steps 10", "",
        "This run: " + ", ".join(f"{k} {v}" for k, v in doc["settings"].items())
        + (" (max_ids: XQuAD-R question ids encoded, null = all)" if "max_ids" in doc["settings"] else "") + ".", "",
        f"CPU: {cpu['model_name']} ({cpu['vendor']}, family {cpu['family']}), {cpu['logical_cpus']} logical CPUs, "
        f"{cpu['threads_per_core']} thread(s) per core, so {cpu['physical_cores']} physical core(s) as the guest "
        f"sees them; torch threads {doc['settings']['torch_threads']}; flags: {', '.join(cpu['flags'])}.", "",
        "## Nominal peak", "",
        "cores x clock x FLOPs per cycle per core. A nominal figure: the instruction throughput the vendors state at "
        "the clock /proc/cpuinfo reports (in a VM usually the host's base clock; no turbo, no AVX-512 licence "
        "drop), which no real kernel reaches; bf16 without native instructions is emulated in fp32, so its peak is "
        "fp32's.", "", reporting.markdown_table(peak_rows), "",
        "## Achieved", "",
        f"FLOPs counted from the model's shapes: {doc['conventions']['counted']}; {doc['conventions']['flop']}; "
        f"training = {doc['conventions']['training_factor']}x the forward (backward: input and weight gradients, 2x). "
        "'Executed' counts each batch at its padded shape (what runs); 'useful' at each row's real length; the "
        "real-token share is real tokens / padded tokens. Training: the study's step (data, forward, backward, "
        f"clipping, AdamW) over {args.steps} steps, the first {args.warmup} and the profiled one left out; "
        "encoding: Encoder.encode's wall time (tokenising included) after a warm-up.", "",
        reporting.markdown_table(table), ""]
    for d, run in doc["train"].items():
        check = run["flop_counter_check"]
        lines += [f"torch.utils.flop_counter on one {d} step's forward + backward: {_g(check['total'])} GFLOP against "
                  f"the analytic {_g(check['analytic_3x_forward'])} (by op: "
                  + ", ".join(f"{k} {_g(v)}" for k, v in sorted(check["by_op"].items(), key=lambda kv: -kv[1]))
                  + "). Attention ops it has no formula for count 0 there.", ""]
    for d, run in doc["train"].items():
        prof = run["profile"]
        total = sum(v["forward_ms"] + v["backward_ms"] for v in prof["categories"].values())
        rows = [{"category": c, "forward ms": f"{v['forward_ms']:.0f}", "backward ms": f"{v['backward_ms']:.0f}",
                 "share": f"{100 * (v['forward_ms'] + v['backward_ms']) / total:.1f}%"}
                for c, v in prof["categories"].items()]
        widths = run["steps"][run["profiled_step"]]["widths"]
        lines += [f"## Where a {d} training step's time goes", "",
                  f"torch.profiler, one step (step {run['profiled_step']}, padded widths queries / positives / "
                  f"negatives {widths}), self CPU time of every operator grouped by what it belongs to (the scope "
                  f"it ran in, else its name); the step took {prof['wall_ms']:.0f} ms under the profiler, "
                  f"{total:.0f} ms of it in operators' self time. Attention implementation: "
                  f"{run['attn_implementation']}.", "", reporting.markdown_table(rows), "",
                  "Largest operators in 'other': " + ", ".join(f"{n} {ms:.0f} ms" for n, ms in prof["top_other"])
                  + ".", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
