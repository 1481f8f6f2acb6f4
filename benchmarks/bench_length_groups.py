"""Image-text training steps with the captions in length groups (``mm_length_groups``), side by side.

With frozen lower text layers (``mm_frozen_text_layers``) a step runs the top layers on the batch's captions, padded
to the longest one. OpenMoji-CLDR captions are short and uneven, so much of a batch is padding; in G length-sorted
groups, each padded to its own longest, less of it is, at the cost of G smaller matrix products per layer. This
measures, for G in ``--groups``, as notebook 07 runs them (``mm_workers`` processes at once, one torch thread
each, the profile's settings, seed 0, caches filled):

1. the median seconds per step of a cross run and of a mono run trained at the same time, over ``--steps``
   steps (the first 5 left out), in ``--rounds`` rounds with the G values interleaved, so that a slow spell of a
   shared machine touches every G;
2. the share of real (not padding) tokens in the top layers' input over 300 cross batches of the sampler.

    python benchmarks/bench_length_groups.py [--profile cpu] [--groups 1 2 3 4] [--steps 150] [--rounds 2]

Results: reports/benchmarks/length_groups.json and .md.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _params(profile: str, groups: int, steps: int) -> dict:
    from hybridnb import config

    params = config.load_profile(profile)
    return {**params, "profile": profile, "mm_length_groups": groups, "mm_steps": steps, "mm_val_every": steps,
            "seed": 0}


def median_step(profile: str, strategy: str, groups: int, steps: int) -> float:
    """Median seconds per training step of one run (in a worker process of one torch thread)."""
    import torch

    from hybridnb.image_text import runs
    from hybridnb.image_text import trainer as itt

    torch.set_num_threads(1)
    task = runs.ImageTextRun(runs.check_run(_params(profile, groups, steps), strategy), profile)
    data = task.prepare()
    tcfg, model = task.build_model(data, show_progress=False)
    trained = itt.train_image_text(model, data["train"], data["validation"], tcfg, None, show_progress=False)
    return float(np.median([r["step_s"] for r in trained.history[5:]]))


def real_token_share(profile: str, groups_list: list[int], n_batches: int = 300) -> dict[int, float]:
    """Real tokens / tokens through the top layers, over `n_batches` cross batches (captions and parallel
    captions, each their own forward), for each number of length groups."""
    import torch

    from hybridnb.image_text import runs
    from hybridnb.image_text import trainer as itt
    from hybridnb.image_text.model import collate_image_text
    from hybridnb.training.length_groups import split_by_length

    task = runs.ImageTextRun(runs.check_run(_params(profile, 1, 10), "cross"), profile)
    data = task.prepare()
    tcfg, model = task.build_model(data, show_progress=False)
    train, *_ = itt.prepare_inputs(model, data["train"], data["validation"], tcfg)
    sampler = itt.check_config(tcfg, data["train"])
    states = model.frozen_text._states
    real, padded = 0, {g: 0 for g in groups_list}
    for _ in range(n_batches):
        batch = collate_image_text(train, sampler.next_batch().pairs)
        for texts in (batch.captions, batch.parallel_captions):
            lengths = torch.tensor([len(states[t]) for t in texts])
            real += int(lengths.sum())
            for g in groups_list:  # each group padded to its longest, as FrozenTextLayers pads them
                padded[g] += sum(len(group) * int(lengths[group].max()) for group in split_by_length(lengths, g))
    return {g: real / padded[g] for g in groups_list}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--groups", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)

    from hybridnb import reporting
    from hybridnb.paths import reports_root

    share = real_token_share(args.profile, args.groups)
    steps: dict[int, dict[str, list[float]]] = {g: {"cross": [], "mono": []} for g in args.groups}
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        for r in range(args.rounds):
            for g in (args.groups if r % 2 == 0 else args.groups[::-1]):
                futures = {s: pool.submit(median_step, args.profile, s, g, args.steps) for s in ("cross", "mono")}
                for s, future in futures.items():
                    steps[g][s].append(future.result())
                print(f"round {r + 1}, {g} group(s): cross {steps[g]['cross'][-1]:.3f} s, "
                      f"mono {steps[g]['mono'][-1]:.3f} s a step", flush=True)
    base = np.mean(steps[1]["cross"]) if 1 in steps else None
    prov = reporting.provenance(args.profile)
    doc = {"benchmark": "image-text length groups", "provenance": prov, "profile": args.profile,
           "settings": {"steps": args.steps, "rounds": args.rounds, "runs_at_once": 2, "torch_threads": 1},
           "real_token_share": {str(g): v for g, v in share.items()},
           "median_step_s": {str(g): v for g, v in steps.items()}}
    reporting.write_json(reports_root() / "benchmarks" / "length_groups.json", doc)
    rows = [{"length groups": g, "real tokens (cross batches)": f"{share[g]:.0%}",
             "cross s a step": " / ".join(f"{v:.3f}" for v in steps[g]["cross"]),
             "mono s a step": " / ".join(f"{v:.3f}" for v in steps[g]["mono"]),
             "cross steps/s vs 1 group": f"{base / np.mean(steps[g]['cross']):.2f}x" if base else "-"}
            for g in args.groups]
    lines = ["# Image-text steps in length groups (`mm_length_groups`)", "", reporting.stamp(prov), "",
             f"Profile `{args.profile}`, seed 0, {args.steps} steps a run (median over all but the first 5), a cross "
             "and a mono run trained at the same time in two processes of one torch thread (as notebook 07's "
             f"`mm_workers: 2`), {args.rounds} rounds with the group counts interleaved (one value per round in "
             "each cell). Real tokens: the share of the top layers' input that is not padding, over 300 cross "
             "batches.", "", reporting.markdown_table(rows), ""]
    reporting.write_text(reports_root() / "benchmarks" / "length_groups.md", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
