"""Whether a model folder's weight files are whole, checked before transformers loads them.

A weights file cut short (a full disk while converting or copying, a download or sync killed halfway) fails
deep inside safetensors or torch with a message that names neither the file nor a way out ("Error while
deserializing header: MetadataIncompleteBuffer", "PytorchStreamReader failed reading zip archive"), and it
fails the same way on every later run. Both formats say their own length up front, so a cut is found by
reading a few bytes: a safetensors file is an 8-byte header length, a JSON header whose ``data_offsets`` give
the data's end, then the data; a torch file (a zip) ends with its central directory. The caller turns the
answer into one line naming the file and the command that makes it again (or makes it again itself, for a
cache of ours: :func:`hybridnb.models.offline_e5.offline_e5_path`).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

__all__ = ["WEIGHT_SUFFIXES", "damaged", "damaged_files"]

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


def damaged(path: str | Path) -> str | None:
    """Why ``path`` is not a whole weights file (``.safetensors``; ``.bin`` / ``.pt`` in torch's zip format), or
    None. Reads the header only: cheap for a file of any size."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if path.suffix == ".safetensors":
            if len(head) < 8:
                return f"{size} bytes: truncated before its header"
            n = int.from_bytes(head, "little")
            if n > size - 8:
                return f"{size} bytes, its header alone says {8 + n}: truncated"
            try:
                header = json.loads(f.read(n))
                end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
            except (ValueError, KeyError, TypeError, IndexError) as e:
                return f"an unreadable header ({type(e).__name__})"
            need = 8 + n + end
            return f"{size} bytes, its header says {need}: truncated" if size < need else None
    if head[:4] == b"PK\x03\x04" and not zipfile.is_zipfile(path):  # torch's zip format, its directory gone
        return f"{size} bytes, its zip directory missing: truncated"
    return None


def damaged_files(folder: str | Path) -> dict[Path, str]:
    """{weights file: why} for every damaged weights file in ``folder`` and its sentence-transformers module
    folders (one level down)."""
    folder = Path(folder)
    files = [p for pattern in ("*", "*/*") for p in folder.glob(pattern)
             if p.suffix in WEIGHT_SUFFIXES and p.is_file()]
    return {p: why for p in sorted(files) if (why := damaged(p)) is not None}
