"""Checkpoint plumbing of the trainer: every RNG state (per rank), atomic checkpoint and encoder writes, and
the JSONL log of a resumed run. A kill at any moment leaves either the previous or the new file, never a torn one.
"""

from __future__ import annotations

import json
import math
import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hybridnb.training import distributed
from hybridnb import reporting

__all__ = ["rng_state", "set_rng_state", "rank_rng_state", "set_rank_rng_state", "save_checkpoint", "save_encoder",
           "read_log"]


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())  # the checkpoint is loaded with map_location=device
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def rank_rng_state() -> dict[str, Any] | list[dict[str, Any]]:
    """The RNG states to checkpoint: this process's, or with several ranks every rank's in rank order."""
    return distributed.all_gather_object(rng_state()) if distributed.is_distributed() else rng_state()


def set_rank_rng_state(saved: dict[str, Any] | list[dict[str, Any]]) -> None:
    """Restore this rank's RNG state; resuming with another world size cannot, and warns."""
    states = saved if isinstance(saved, list) else [saved]
    if len(states) == distributed.world_size():
        set_rng_state(states[distributed.rank()])
    else:  # keep the seeded state: the dropout masks from here on differ from an uninterrupted run's
        warnings.warn(f"the checkpoint holds the RNG states of {len(states)} rank(s) but {distributed.world_size()} "
                      "run now: the random state (dropout) is not resumed exactly", stacklevel=3)


def save_checkpoint(path: Path, **state) -> None:
    """torch.save to a temp file, then an atomic rename: a kill never leaves a torn checkpoint."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def save_encoder(encoder, path: Path, about: dict | None = None) -> None:
    """Encoder.save into a temp folder, then swap it in (the previous copy stays until the swap); ``about``
    goes into the folder's model card."""
    with reporting.atomic_dir(path) as tmp:
        encoder.save(tmp, about)


def read_log(path: Path, upto_step: int) -> list[dict]:
    """Log records of steps < upto_step (a resumed run rewrites the rest)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line torn by a kill
            continue
        if rec.get("step", math.inf) < upto_step:
            records.append(rec)
    return records
