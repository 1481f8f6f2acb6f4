"""`python -m hybridnb.train`: one training run from a profile, with overrides, outside Jupyter.

    python -m hybridnb.train --profile cpu --strategy cross
    python -m hybridnb.train --profile ci --set alpha=0.25 steps=10 train_data=xquad-r eval_data=mlqa-r
    torchrun --standalone --nproc_per_node 4 -m hybridnb.train --profile paper  # DDP on 4 GPUs

Does what notebooks/03_train.ipynb does (:func:`hybridnb.runs.run`): checks everything first, reuses a
finished run with the same config hash, resumes a killed one from its last checkpoint, writes
reports/runs/<run_name>/.
"""

from __future__ import annotations

import argparse
import sys

import yaml

from hybridnb import config, distributed, reporting, runs


def parse_overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        out[key] = yaml.safe_load(value)  # numbers, booleans, null, lists and mappings as in the YAML profiles
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu", help="params/<profile>.yaml or a YAML path")
    parser.add_argument("--strategy", help="mono | cross | hybrid | mixed | en (overrides the profile)")
    parser.add_argument("--alpha", type=float, help="hybrid's share of mono batches")
    parser.add_argument("--run-name", help="reports/runs/<run-name>/ (default: derived from the config)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="other parameter overrides")
    args = parser.parse_args(argv)

    params = config.load_profile(args.profile)
    params.update(parse_overrides(args.set))
    for key in ("strategy", "alpha", "run_name"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    try:
        report_dir, results = runs.run(params)
        main = distributed.is_main()
    finally:
        distributed.cleanup()  # under torchrun: leave the process group (a no-op otherwise)
    if main:
        print(f"[hybridnb] {report_dir}")
        print(reporting.markdown_table(reporting.summary_rows(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
