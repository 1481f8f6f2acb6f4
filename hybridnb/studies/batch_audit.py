"""In-batch false negatives of the study's runs, replayed from their own samplers (no model, no training).

The sampler keeps item ids unique within a batch, which rules out the false negatives parallel data makes
(the same question in two languages). It cannot see two *different* items whose answer is the same text:
XQuAD-R asks several questions about one sentence (over half of its questions share their answer sentence
with another), so training on XQuAD-R (the reverse direction) puts the same sentence in a batch as one
query's positive and another query's negative. MLQA-R almost never does. This module counts, for every run
of the grid, how often that happened in the batches the run really trained on: the sampler is rebuilt from
the run's config (same seed, same data, same steps) and each batch collated to texts.

    frame = audit(config.load_profile("cpu"))   # one row per run: direction, system, seed, counts
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from hybridnb import reporting
from hybridnb.data import train_data
from hybridnb.paths import reports_root
from hybridnb.studies import recipe, runs
from hybridnb.training import trainer

__all__ = ["audit", "confounded", "report_lines", "saved_audit", "summary"]


def replay(cfg, data: runs.RunData) -> dict[str, Any]:
    """The false negatives of each of the run's `cfg.steps` training batches (see train_data.false_negatives)."""
    sampler = trainer.check_config(cfg.training(), data.train, world_size=1, rank=0)
    per_batch = []
    for _ in range(cfg.steps):
        _, positives, negatives = train_data.collate(data.train, sampler.next_batch().pairs, cfg.n_hard_negatives)
        per_batch.append(train_data.false_negatives(positives, negatives))
    return {"batches": len(per_batch), "batches_with_false_negatives": sum(n > 0 for n in per_batch),
            "false_negatives": sum(per_batch),
            "pairs": len(per_batch) * cfg.batch_size}


def audit(params: dict[str, Any], show_progress: bool = False, known: dict[str, dict] | None = None) -> pd.DataFrame:
    """One row per grid run (both directions, every strategy and seed) with its batches' false negatives.

    ``known``: rows already counted, by run config hash (:func:`saved_audit`'s file): reused, not replayed."""
    from tqdm.auto import tqdm

    rows, prepared, known = [], {}, known or {}
    for run in tqdm(recipe.grid_runs(params), desc="replay batches", disable=not show_progress):
        cfg = run.cfg
        if cfg.hash in known:
            rows.append(known[cfg.hash])
            continue
        key = (cfg.train_data, tuple(cfg.eval_data), cfg.candidate_mode, cfg.n_hard_negatives, cfg.val_fraction)
        if key not in prepared:  # the data depends on the direction and input only, never on strategy or seed
            prepared[key] = runs.prepare_data(cfg)
        rows.append({"direction": f"{cfg.train_data} → {'+'.join(cfg.eval_data)}", "system": run.label,
                     "seed": cfg.seed, "hash": cfg.hash, **replay(cfg, prepared[key])})
    return pd.DataFrame(rows)


def saved_audit(params: dict[str, Any], show_progress: bool = False) -> pd.DataFrame:
    """:func:`audit`, kept in ``reports/<profile>/batch_audit.json`` by run hash: loading the training data of
    both directions takes a minute or two on 2 cores, so `make reproduce` replays only runs it has not counted."""
    path = reports_root() / params["profile"] / "batch_audit.json"
    known = {}
    if path.is_file():
        known = {row["hash"]: row for row in json.loads(path.read_text(encoding="utf-8"))["runs"]}
    frame = audit(params, show_progress, known)
    rows = frame.to_dict("records")
    if {r["hash"] for r in rows} != set(known) or len(rows) != len(known):
        reporting.write_json(path, {"provenance": reporting.provenance(params["profile"]),
                                    "what": "in-batch false negatives of every grid run's training batches "
                                            "(hybridnb.studies.batch_audit)", "runs": rows})
    return frame


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per direction and system, over seeds: false negatives per batch and the share of batches with any."""
    g = frame.groupby(["direction", "system"], sort=False)
    out = pd.DataFrame({
        "seeds": g["seed"].nunique(),
        "batches": g["batches"].sum(),
        "false negatives per batch": g["false_negatives"].sum() / g["batches"].sum(),
        "batches with one or more": g["batches_with_false_negatives"].sum() / g["batches"].sum(),
        "false negatives per training pair": g["false_negatives"].sum() / g["pairs"].sum(),
    })
    return out.reset_index()


#: false negatives per batch from which a system's verdicts are called confounded: one in every other batch
CONFOUNDING_RATE = 0.5


def confounded(frame: pd.DataFrame) -> list[str]:
    """The directions where some system's batches held at least :data:`CONFOUNDING_RATE` false negatives each."""
    table = summary(frame)
    return [d for d, rows in table.groupby("direction", sort=False)
            if rows["false negatives per batch"].max() >= CONFOUNDING_RATE]


def report_lines(frame: pd.DataFrame, batch_size: int, masked_runs: list[str]) -> list[str]:
    """REPORT.md's section on in-batch false negatives, every number from :func:`summary` of `frame`; `masked_runs`
    names the finished runs trained with ``mask_false_negatives`` (the test of how much the confound moves)."""
    from hybridnb.studies.seed_tables import frame_markdown

    table = summary(frame)
    shown = table.assign(**{c: table[c].map(f) for c, f in (
        ("false negatives per batch", "{:.2f}".format), ("batches with one or more", "{:.0%}".format),
        ("false negatives per training pair", "{:.1%}".format))})
    lines = ["## In-batch false negatives", "",
             "The sampler never puts an item twice in a batch, but two *different* items can share their answer "
             "text (two questions about one sentence), and another item's hard negative can be an item's answer. "
             "InfoNCE then treats the query's own answer text as a negative. Counted in the batches every grid "
             f"run really trained on (its sampler replayed from its config, batch {batch_size}; "
             "`hybridnb.studies.batch_audit`):", "", frame_markdown(shown, index=None).rstrip("\n"), ""]
    for direction, rows in table.groupby("direction", sort=False):
        rate = dict(zip(rows["system"], rows["false negatives per batch"]))
        cross = rate.get("X-Y")
        if cross is None or "hybrid" not in rate:
            continue
        lines.append(f"- {direction}: hybrid's batches held {rate['hybrid']:.2f} false negatives per batch, X-Y's "
                     f"{cross:.2f}" + (f", X-X-mono's {rate['X-X-mono']:.2f}" if "X-X-mono" in rate else "") + ".")
    heavy = confounded(frame)
    if heavy:
        lines += ["", f"Where batches hold one false negative in every other batch or more ({', '.join(heavy)}), "
                  "hybrid's and X-X-mono's verdicts against X-Y mix the batch composition's effect with that of the "
                  "false negatives, which fall mostly on same-language batches. `mask_false_negatives: true` leaves "
                  "those passages out of the query's softmax (docs/training.md)"
                  + (f"; {len(masked_runs)} masked runs ({masked_runs[0]}, ...) have their own section above, with "
                     "what the mask does to each system." if masked_runs else
                     "; no masked run has been made yet, so this report cannot say how much of those verdicts the "
                     "false negatives explain (`python -m hybridnb recipe --stages probes masked` makes them: the "
                     "reverse grid with the mask, about 2 hours on 2 cores).")]
    return lines + [""]
