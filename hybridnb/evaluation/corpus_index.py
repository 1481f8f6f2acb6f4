"""Corpus embeddings on disk in fixed-size shards: encoded once, resumable after a kill, split across processes.

A MIRACL corpus (up to 15M passages per language in the paper's tables) does not fit one process's memory as
float32 embeddings, takes GPU-hours to encode, and should survive a killed job. So the corpus is cut into
shards of ``shard_size`` passages (rows ``[i * shard_size, (i + 1) * shard_size)``), each encoded on its own and
written as one ``.npy`` file (read back memory-mapped by :mod:`hybridnb.evaluation.dense_search`):

* **atomic**: a shard is written to a temp file beside it, fsynced and renamed into place
  (:func:`hybridnb.reporting.atomic_path`), so a shard file that exists is complete, and a finished shard is
  never computed again: a killed job resumes where it stopped, with the same numbers as an uninterrupted one
  (every shard is encoded from the same rows by the same encoder, whatever the order or the process).
* **across processes**: under ``torchrun`` (or any launcher that sets ``RANK`` / ``WORLD_SIZE``), rank r of W
  encodes shards r, r + W, r + 2W, ... and the search reads every shard file; the caller puts a barrier
  between encoding and searching (``hybridnb.training.distributed.barrier`` in
  :mod:`hybridnb.studies.miracl_eval`). This module imports no model and no process group of its own.
* **never mixed**: ``manifest.json`` records what the shards are (the model's identity, the corpus
  fingerprint, the number of passages, the shard size, the storage dtype, the embedding width and any other
  input settings such as the passage format and token limit). An index folder whose manifest differs is
  rebuilt from scratch by rank 0 (``on_mismatch="rebuild"``, the default) or refused (``"refuse"``), never
  extended with shards of another model or corpus.

Layout: ``<folder>/manifest.json``, ``<folder>/shard-00000.npy`` ... (``(rows, dim)``, float32 or float16), each
with its ``shard-00000.npy.sha256`` (written after the shard, :mod:`hybridnb.file_hashes`: a shard whose bytes
differ from it, or that has none, counts as damaged and is encoded again), and the approximate indexes built
from them (``*.faiss``, :mod:`hybridnb.evaluation.dense_search`).

The encoder is any object with ``encode(texts, role="passage", batch_size=..., show_progress=...)`` returning
an ``(N, D)`` array (:class:`hybridnb.models.Encoder`, the frozen baselines, a test's fake); extra keyword
arguments (``autocast_dtype``) pass through ``encode_kwargs``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from hybridnb import file_hashes, reporting

__all__ = ["DTYPES", "MANIFEST", "SCHEMA", "CorpusIndex", "process_rank", "shard_count", "shard_range",
           "owned_shards", "encoder_dim"]

DTYPES = ("float32", "float16")
MANIFEST = "manifest.json"
SCHEMA = "hybridnb.corpus-index/1"


def process_rank() -> tuple[int, int]:
    """(rank, world size): torch.distributed's when a process group is up, else ``RANK`` / ``WORLD_SIZE`` from
    the environment (torchrun sets both), else (0, 1)."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"RANK={os.environ.get('RANK')!r} / WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} "
                         "are not integers") from None
    return _check_rank(rank, world)


def _check_rank(rank: int, world: int) -> tuple[int, int]:
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} of world size {world}: need 0 <= rank < world size")
    return rank, world


def shard_count(n_passages: int, shard_size: int) -> int:
    return -(-n_passages // shard_size)


def shard_range(i: int, n_passages: int, shard_size: int) -> tuple[int, int]:
    """Rows [start, stop) of shard ``i``."""
    return i * shard_size, min(n_passages, (i + 1) * shard_size)


def owned_shards(n_shards: int, rank: int, world: int) -> range:
    """The shards rank ``rank`` of ``world`` encodes: rank, rank + world, ... (round robin: every rank gets a
    share of the long and the short shards, and the last, shorter shard goes to whichever rank it falls on)."""
    return range(rank, n_shards, world)


def encoder_dim(encoder) -> int:
    """The embedding width of ``encoder``: its ``dim`` attribute, else the width of one encoded probe text."""
    dim = getattr(encoder, "dim", None)
    if isinstance(dim, int) and dim > 0:
        return dim
    return int(np.asarray(encoder.encode(["dim probe"], role="passage", batch_size=1, show_progress=False)).shape[1])


@dataclass(frozen=True)
class CorpusIndex:
    """A folder of corpus embedding shards and the manifest that says what they are."""

    folder: Path
    manifest: dict[str, Any]

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, folder: str | os.PathLike, *, model: str, corpus: str, n_passages: int, dim: int,
             shard_size: int, dtype: str = "float32", inputs: dict | None = None, on_mismatch: str = "rebuild",
             rank: int | None = None) -> "CorpusIndex":
        """The index at ``folder`` for these settings: created when absent; when its manifest differs, rebuilt
        (rank 0 only: other ranks raise, since rank 0 goes first, see ``distributed.main_first``) or refused.

        ``model``: the encoder's identity (name, weights' hash); ``corpus``: the corpus fingerprint; ``inputs``:
        anything else that changes the embeddings (passage format, max length, precision)."""
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        for name, value in (("shard_size", shard_size), ("n_passages", n_passages), ("dim", dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if on_mismatch not in ("rebuild", "refuse"):
            raise ValueError(f"on_mismatch must be 'rebuild' or 'refuse', got {on_mismatch!r}")
        rank = process_rank()[0] if rank is None else rank
        folder = Path(folder)
        manifest = {"schema": SCHEMA, "model": model, "corpus": corpus, "n_passages": n_passages, "dim": dim,
                    "shard_size": shard_size, "dtype": dtype, "inputs": dict(inputs or {})}
        manifest = json.loads(json.dumps(manifest))  # the JSON form: what is compared with the file
        index = cls(folder, manifest)
        saved = index._saved_manifest()
        if saved is not None and saved != manifest:
            differ = sorted(k for k in set(saved) | set(manifest) if saved.get(k) != manifest.get(k))
            what = ", ".join(f"{k}: {saved.get(k)!r} on disk, {manifest.get(k)!r} now" for k in differ)
            if on_mismatch == "refuse":
                raise ValueError(f"the corpus index {folder} was made for other settings ({what}); delete it or "
                                 "pass on_mismatch='rebuild'")
            if rank != 0:
                raise RuntimeError(f"rank {rank}: the corpus index {folder} was made for other settings ({what}); "
                                   "rank 0 rebuilds it: open it on rank 0 first")
            print(f"[hybridnb] rebuilding the corpus index {folder}: it was made for other settings ({what})",
                  flush=True)
            index._clear()
            saved = None
        if rank == 0:
            index._remove_temp_files()  # a killed writer's leftovers (no other rank writes yet: rank 0 goes first)
        if saved is None:
            reporting.write_json(folder / MANIFEST, manifest)  # identical content whichever rank writes it
        return index

    def _saved_manifest(self) -> dict | None:
        try:
            return json.loads((self.folder / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError):
            return {"unreadable": True}

    def _clear(self) -> None:
        for path in self.folder.iterdir():
            if path.is_file() and (path.name.startswith(("shard-", ".shard-", "run.")) or path.suffix == ".faiss"
                                   or path.name == MANIFEST):  # everything made from the old embeddings
                path.unlink()

    def _remove_temp_files(self) -> None:
        if self.folder.is_dir():
            for path in self.folder.glob(".*.tmp"):
                path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ shards
    @property
    def n_passages(self) -> int:
        return self.manifest["n_passages"]

    @property
    def dim(self) -> int:
        return self.manifest["dim"]

    @property
    def shard_size(self) -> int:
        return self.manifest["shard_size"]

    @property
    def n_shards(self) -> int:
        return shard_count(self.n_passages, self.shard_size)

    def shard_path(self, i: int) -> Path:
        return self.folder / f"shard-{i:05d}.npy"

    def missing(self) -> list[int]:
        """Shards without a whole file: absent, or damaged (:meth:`damaged`). A shard is renamed into place when
        written, so a file is whole unless something outside the writer cut it (a full disk on copy, a torn
        sync, a hand edit)."""
        return [i for i in range(self.n_shards) if not self.shard_path(i).is_file() or self.damaged(i)]

    def damaged(self, i: int) -> str | None:
        """Why the file of shard ``i`` cannot be read as its ``(rows, dim)`` array, or None: its ``.npy`` header
        against the manifest, its size against the header (cheap: the data is not read)."""
        path = self.shard_path(i)
        start, stop = shard_range(i, self.n_passages, self.shard_size)
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if read_header is None:
                    return f".npy format version {version}, not one np.save writes here"
                shape, fortran, dtype = read_header(f)
                data_start = f.tell()
        except (ValueError, OSError, EOFError, SyntaxError) as e:
            return f"no readable .npy header ({e})"
        if shape != (stop - start, self.dim) or dtype != np.dtype(self.manifest["dtype"]) or fortran:
            return f"shape {shape} {dtype}, expected ({stop - start}, {self.dim}) {self.manifest['dtype']}"
        size, need = path.stat().st_size, data_start + (stop - start) * self.dim * dtype.itemsize
        if size != need:
            return f"{size} bytes, its header says {need}: truncated" if size < need else \
                f"{size} bytes, its header says {need}"
        return file_hashes.sidecar_problem(path)  # a flipped byte keeps header and size: its sha256 does not

    def complete(self) -> bool:
        return not self.missing()

    def shard(self, i: int) -> np.ndarray:
        """Shard ``i`` memory-mapped, (rows, dim) in the stored dtype; its shape is checked against the manifest."""
        why = self.damaged(i)
        if why is not None:
            raise ValueError(f"{self.shard_path(i)} is damaged ({why}): rerun the encoding (python -m hybridnb "
                             "miracl, or notebook 09), which encodes a damaged shard again")
        arr = np.load(self.shard_path(i), mmap_mode="r")
        start, stop = shard_range(i, self.n_passages, self.shard_size)
        if arr.shape != (stop - start, self.dim) or arr.dtype != np.dtype(self.manifest["dtype"]):
            raise ValueError(f"{self.shard_path(i)}: shape {arr.shape} {arr.dtype}, expected "
                             f"({stop - start}, {self.dim}) {self.manifest['dtype']}")
        return arr

    def shards(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, memory-mapped shard) for every shard, in order; raises if one is missing."""
        missing = self.missing()
        if missing:
            raise FileNotFoundError(f"the corpus index {self.folder} lacks {len(missing)} of {self.n_shards} shards "
                                    f"(first: {missing[:5]}, absent or damaged); encode them first (python -m "
                                    "hybridnb miracl, or notebook 09)")
        for i in range(self.n_shards):
            yield shard_range(i, self.n_passages, self.shard_size)[0], self.shard(i)

    def load(self) -> np.ndarray:
        """All embeddings as one float32 (N, dim) array: for small corpora and tests only."""
        return np.concatenate([s.astype(np.float32) for _, s in self.shards()], axis=0)

    # ------------------------------------------------------------------ encoding
    def encode(self, encoder, passages: Sequence, batch_size: int = 64, show_progress: bool = True,
               encode_kwargs: dict | None = None, rank: int | None = None, world_size: int | None = None,
               stop_after: int | None = None) -> dict[str, Any]:
        """Encode this rank's missing shards of ``passages`` (sliceable: ``passages[a:b]`` -> encoder inputs).

        One progress bar over this rank's passages (the encoder's own bar is off). Returns what was done:
        ``{"rank", "world_size", "encoded": [shards], "skipped": [finished shards of this rank], "passages",
        "seconds"}``. ``stop_after`` ends after that many shards (a deliberate interruption, for tests)."""
        from tqdm.auto import tqdm

        if len(passages) != self.n_passages:
            raise ValueError(f"{len(passages)} passages, but the index {self.folder} is for {self.n_passages}")
        if rank is None or world_size is None:
            rank, world_size = process_rank()
        rank, world_size = _check_rank(rank, world_size)
        mine = list(owned_shards(self.n_shards, rank, world_size))
        todo = [i for i in mine if not self.shard_path(i).is_file() or self.damaged(i)]
        for i in todo:
            if self.shard_path(i).is_file():  # a shard we wrote, cut later: encoded again, said once
                print(f"[hybridnb] {self.shard_path(i)} is damaged ({self.damaged(i)}): encoding it again", flush=True)
        rows = {i: shard_range(i, self.n_passages, self.shard_size) for i in todo}
        total = sum(b - a for a, b in rows.values())
        done, t0 = [], time.perf_counter()
        desc = "encode corpus" + (f" (rank {rank} of {world_size})" if world_size > 1 else "")
        with tqdm(total=total, unit="passage", desc=desc, disable=not show_progress) as bar:
            for i in todo:
                if stop_after is not None and len(done) >= stop_after:
                    break
                start, stop = rows[i]
                emb = np.asarray(encoder.encode(passages[start:stop], role="passage", batch_size=batch_size,
                                                show_progress=False, **(encode_kwargs or {})))
                self._write(i, emb, stop - start)
                done.append(i)
                bar.update(stop - start)
        return {"rank": rank, "world_size": world_size, "encoded": done,
                "skipped": [i for i in mine if i not in todo], "passages": sum(rows[i][1] - rows[i][0] for i in done),
                "seconds": time.perf_counter() - t0}

    def _write(self, i: int, emb: np.ndarray, rows: int) -> None:
        if emb.shape != (rows, self.dim):
            raise ValueError(f"the encoder returned {emb.shape} for shard {i}, expected ({rows}, {self.dim})")
        if not np.isfinite(emb).all():
            raise ValueError(f"the encoder returned non-finite values for shard {i} (rows "
                             f"{shard_range(i, self.n_passages, self.shard_size)})")
        path = self.shard_path(i)
        with reporting.atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(emb, dtype=self.manifest["dtype"]))
                f.flush()
                os.fsync(f.fileno())
        file_hashes.write_sidecar(path)  # after the shard: a shard without one is encoded again
