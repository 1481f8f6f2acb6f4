"""Candidate modes on full XQuAD-R: what each costs to encode and what E5 scores zero-shot, side by side.

The study's evaluation input is a stated choice (issue 18, item 7). LAReQA defines a candidate as the
answer sentence *with its paragraph as context*; a sentence-only candidate is shorter, so it encodes faster,
and a 64-token cap cuts the paragraph more than the sentence. One run on one machine encodes the same
13,014 XQuAD-R candidates once per mode with the profile's model, length and precision (the 13,090
questions are the same in both modes and are encoded once), and scores both with the same evaluator (no
bootstrap: the difference is paired and deterministic; STUDY.md prints both zero-shot rows with their CIs):

    sentence+context   (sentence, paragraph) text pairs, cut to max_length (the paragraph is cut first)
    sentence           the sentence alone

Per mode: tokens per candidate after the cap (mean, median), the share of candidates that fill the cap,
passages per second, mono / cross / multi mAP and rank distance. Results: reports/benchmarks/candidate_mode.json
and .md.

    python benchmarks/bench_candidate_mode.py [--profile study] [--max-ids N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def token_lengths(encoder, inputs, chunk: int = 1024):
    """Tokens per input as the encoder feeds them (prefix and cap included): the attention mask's row sums."""
    import numpy as np

    out = [encoder.tokenize(inputs[i:i + chunk], role="passage")["attention_mask"].sum(1).numpy()
           for i in range(0, len(inputs), chunk)]
    return np.concatenate(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="study")
    p.add_argument("--max-ids", type=int, default=None, help="fewer question ids (a smoke test; not a report)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    import time

    import numpy as np
    import torch

    from hybridnb import config, reporting
    from hybridnb.data import lareqa
    from hybridnb.evaluation import runner
    from hybridnb.models import precision
    from hybridnb.models.encoders import Encoder
    from hybridnb.paths import reports_root

    prof = config.load_profile(args.profile)
    task = lareqa.load_task("xquad-r", max_ids=args.max_ids)
    encoder = Encoder.from_pretrained(prof["model"], max_length=prof["max_length"])
    batch, dtype = prof["encode_batch_size"], precision.resolve(prof["encode_dtype"])
    autocast = precision.encode_arg(dtype)

    t0 = time.perf_counter()
    q_emb = encoder.encode(list(task.questions["text"]), role="query", batch_size=batch, autocast_dtype=autocast)
    queries_s = time.perf_counter() - t0
    rows = []
    for mode in config.CANDIDATE_MODES:
        inputs = task.candidate_inputs(mode)
        lengths = token_lengths(encoder, inputs)
        t0 = time.perf_counter()
        c_emb = encoder.encode(inputs, role="passage", batch_size=batch, autocast_dtype=autocast)
        seconds = time.perf_counter() - t0
        s = runner.score_task(task, q_emb, c_emb).summary()
        rows.append({"mode": mode, "encode_candidates_s": seconds, "passages_per_s": len(inputs) / seconds,
                     "mean_tokens": float(lengths.mean()), "median_tokens": float(np.median(lengths)),
                     "share_at_cap": float((lengths >= prof["max_length"]).mean()),
                     **{f"{k}_map": s[k]["map"] for k in ("mono", "cross", "multi")},
                     "rank_distance": s["rank_distance"]})
        print(f"{mode}: {rows[-1]['passages_per_s']:.1f} passages/s, mono mAP {rows[-1]['mono_map']:.4f}", flush=True)

    chosen = next(r for r in rows if r["mode"] == prof["candidate_mode"])
    prov = reporting.provenance(prof["profile"])
    doc = {"benchmark": "candidate modes on full XQuAD-R", "provenance": prov,
           "settings": {"model": prof["model"], "max_length": prof["max_length"], "encode_dtype": dtype,
                        "encode_batch_size": batch, "threads": torch.get_num_threads(), "max_ids": args.max_ids,
                        "profile_candidate_mode": prof["candidate_mode"]},
           "n_queries": len(task.questions), "n_candidates": len(task.candidates), "encode_queries_s": queries_s,
           "rows": rows}
    out = args.out or reports_root() / "benchmarks" / ("candidate_mode.json" if args.max_ids is None
                                                       else "candidate_mode-smoke.json")
    reporting.write_json(out, doc)

    table = [{"mode": r["mode"] + (" (the profile's)" if r is chosen else ""),
              "tokens (mean / median)": f"{r['mean_tokens']:.1f} / {r['median_tokens']:.0f}",
              f"at the {prof['max_length']}-token cap": f"{100 * r['share_at_cap']:.0f}%",
              "passages/s": f"{r['passages_per_s']:.1f}", "x profile's": f"{r['passages_per_s'] / chosen['passages_per_s']:.2f}",
              **{f"{k} mAP": f"{r[f'{k}_map']:.4f}" for k in ("mono", "cross", "multi")},
              "rank distance": f"{r['rank_distance']:.1f}"} for r in rows]
    lines = ["# Candidate modes: encoding cost and zero-shot mAP on full XQuAD-R", "", reporting.stamp(prov), "",
             f"{len(task.questions):,} questions (encoded once, {len(task.questions) / queries_s:.1f}/s) and "
             f"{len(task.candidates):,} candidates per mode; model {prof['model']}, max length {prof['max_length']}, "
             f"{dtype}, batch {batch}, {torch.get_num_threads()} threads; scored by the same evaluator.", "",
             reporting.markdown_table(table), "",
             "Tokens are those the encoder sees (the passage prefix included, after the cap). LAReQA's candidate is "
             "the sentence with its paragraph as context; STUDY.md says which mode the study uses and why."]
    reporting.write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
