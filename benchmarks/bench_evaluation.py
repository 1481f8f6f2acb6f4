"""Full XQuAD-R evaluation time against the time to encode its texts once (target: at most 1.10x).

Runs :func:`hybridnb.evaluation.runner.evaluate_encoder` (what notebook 02 and every trained run call) on the whole
of XQuAD-R (13,090 questions, 13,014 sentence+paragraph candidates) with a profile's model settings, and
compares its wall time with the time its two encoding passes took inside the same call (every text is
encoded exactly once; the rest is scoring, the 110 cross-lingual pools, rank distance and the bootstrap).
Results: reports/benchmarks/evaluation.json and .md.

    python benchmarks/bench_evaluation.py [--profile cpu]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="cpu")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    from hybridnb import config, reporting
    from hybridnb.evaluation import runner
    from hybridnb.data import lareqa
    from hybridnb.models import precision
    from hybridnb.models.encoders import Encoder
    from hybridnb.paths import reports_root

    prof = config.load_profile(args.profile)
    dtype = precision.encode_arg(prof["encode_dtype"])
    task = lareqa.load_task("xquad-r")
    encoder = Encoder.from_pretrained(prof["model"], max_length=prof["max_length"])
    start = time.perf_counter()
    ev = runner.evaluate_encoder(encoder, task, prof["candidate_mode"], prof["encode_batch_size"],
                                 prof["n_resamples"], prof["seed"], autocast_dtype=dtype)
    total = time.perf_counter() - start
    encode = ev.timings["encode_queries_s"] + ev.timings["encode_candidates_s"]
    ratio = total / encode
    prov = reporting.provenance(prof["profile"])
    out = args.out or reports_root() / "benchmarks" / "evaluation.json"
    doc = {"benchmark": "full XQuAD-R evaluation vs encoding once", "provenance": prov, "target_ratio_max": 1.10,
           "settings": {k: prof[k] for k in ("model", "max_length", "encode_dtype", "candidate_mode",
                                             "encode_batch_size", "n_resamples")},
           "n_queries": len(task.questions), "n_candidates": len(task.candidates),
           "evaluation_s": total, "encode_once_s": encode, "ratio": ratio, "timings": ev.timings,
           "map": {s: ev.block[s]["map"]["value"] for s in ("mono", "cross", "multi")}}
    reporting.write_json(out, doc)
    rows = [{"step": k, "seconds": f"{v:.1f}"} for k, v in ev.timings.items()]
    rows.append({"step": "full evaluation (wall)", "seconds": f"{total:.1f}"})
    reporting.write_text(out.with_suffix(".md"),
                         "# Full XQuAD-R evaluation vs encoding its texts once\n\n"
                         f"{reporting.stamp(prov)}\n\n{len(task.questions):,} questions, {len(task.candidates):,} "
                         f"candidates ({prof['candidate_mode']}, max length {prof['max_length']}, "
                         f"{prof['encode_dtype']}), {prof['n_resamples']} bootstrap resamples. "
                         f"**Evaluation / encode-once = {ratio:.3f}** (target <= 1.10).\n\n"
                         + reporting.markdown_table(rows))
    print(f"evaluation {total:.1f} s, encoding once {encode:.1f} s, ratio {ratio:.3f}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
