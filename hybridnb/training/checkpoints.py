"""Checkpoint plumbing of the trainer: every RNG state (per rank), atomic checkpoint and encoder writes, and
the JSONL log of a resumed run. A kill at any moment leaves either the previous or the new file, never a torn one.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import socket
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hybridnb.training import distributed
from hybridnb import file_hashes, reporting

__all__ = ["rng_state", "set_rng_state", "rank_rng_state", "set_rank_rng_state", "save_checkpoint", "save_encoder",
           "checkpoint_problem", "read_log", "link_identical", "state_bytes", "check_free_disk", "run_lock", "RunLocked"]


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


def state_bytes(obj) -> int:
    """Bytes of every tensor in a (nested) state: what torch.save will write, give or take the pickled rest."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(state_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(state_bytes(v) for v in obj)
    return 0


def check_free_disk(folder: Path, need: int, what: str) -> None:
    """Raise OSError naming the folder, what needs the room and both sizes when ``folder``'s filesystem has
    less than ``need`` bytes free: a full disk found up front, not as a torn torch error mid-save."""
    folder = Path(folder)
    probe = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free
    if free < need:
        raise OSError(f"not enough free disk for {what} in {folder}: needs about {_size(need)}, {_size(free)} free")


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def save_checkpoint(path: Path, **state) -> None:
    """torch.save to a temp file of its own (unique per process), then an atomic rename: a kill never leaves a
    torn checkpoint, two processes never write one temp file, and a failed save (a full disk: checked first,
    with a clear error) leaves no temp file behind."""
    check_free_disk(path.parent, int(state_bytes(state) * 1.05) + 2**20, f"the checkpoint {path.name}")
    with reporting.atomic_path(path) as tmp:
        torch.save(state, tmp)
        # its sha256 is recorded before the rename, beside the previous one: a kill anywhere in between leaves a
        # checkpoint (old or new) that one of the two matches, so only a changed file fails (checkpoint_problem)
        side = file_hashes.sidecar(path)
        try:
            before = json.loads(side.read_text(encoding="utf-8"))["accepted"][:1]
        except (OSError, ValueError, KeyError, TypeError):
            before = []
        reporting.write_json(side, {"accepted": [{"sha256": file_hashes.sha256_file(tmp),
                                                   "bytes": tmp.stat().st_size}] + before})


def checkpoint_problem(path: Path) -> str | None:
    """Why the resume checkpoint at ``path`` does not match a sha256 its saves recorded (see
    :func:`save_checkpoint`), or None. A flipped byte still loads in torch: the hash is what sees it."""
    try:
        accepted = json.loads(file_hashes.sidecar(path).read_text(encoding="utf-8"))["accepted"]
    except FileNotFoundError:
        return f"no {file_hashes.sidecar(path).name} beside it (written before checkpoints were hashed)"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"its {file_hashes.sidecar(path).name} is unreadable ({type(e).__name__})"
    size = path.stat().st_size
    if not any(a.get("bytes") == size for a in accepted) or \
            file_hashes.sha256_file(path) not in {a.get("sha256") for a in accepted}:
        return "it does not match the sha256 its save recorded"
    return None


class RunLocked(RuntimeError):
    """Another process holds the run's lock (it is training or evaluating the same run)."""


@contextmanager
def run_lock(path: Path):
    """An exclusive lock on ``path`` (a file beside the run's folders) for as long as the block runs: a second
    process starting the same run stops at once with :class:`RunLocked` instead of both writing one folder.
    The lock is the kernel's (``fcntl.flock``), so a killed holder releases it; the file keeps the holder's pid
    and start time for the message. Without ``fcntl`` (Windows) no lock is taken."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux or macOS
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            pid = holder.split()[1] if holder.startswith("pid ") else "<pid>"
            raise RunLocked(f"this run is already running ({holder}; lock {path}): wait for it to finish, "
                            f"then rerun to reuse its results; or stop it (kill {pid} on its host) and rerun to "
                            "resume from its last checkpoint") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


def save_encoder(encoder, path: Path, about: dict | None = None) -> None:
    """Encoder.save into a temp folder, then swap it in (the previous copy stays until the swap); ``about``
    goes into the folder's model card."""
    with reporting.atomic_dir(path) as tmp:
        encoder.save(tmp, about)
        file_hashes.write_tree_manifests(tmp)  # last: Encoder.from_pretrained checks the weights against them


def link_identical(folder: Path, reference: Path) -> int:
    """Replace each file of ``folder`` whose bytes equal the file at the same place in ``reference`` by a hard
    link to it; returns the bytes saved.

    Why: with the learning rate decaying to zero the best checkpoint is usually the last, so a run's final/
    is its best/ byte for byte but the model card, and a second copy doubles its disk (470 MB of float32
    e5-small weights per run). The files stay whole (``best/`` is replaced by a rename, never rewritten in
    place, so a later best does not change final/); where the filesystem has no hard links the copy stays.
    """
    import filecmp

    saved = 0
    folder, reference = Path(folder), Path(reference)
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        twin = reference / f.relative_to(folder)
        if not twin.is_file() or twin.stat().st_size != f.stat().st_size or twin.stat().st_ino == f.stat().st_ino:
            continue
        if not filecmp.cmp(f, twin, shallow=False):
            continue
        tmp = f.with_name(f".{f.name}.link")
        try:
            os.link(twin, tmp)
        except OSError:  # no hard links here (or across filesystems): keep the copy
            continue
        os.replace(tmp, f)
        saved += f.stat().st_size
    return saved


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
