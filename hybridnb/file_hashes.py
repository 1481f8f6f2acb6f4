"""Verify, do not trust: every cache and every committed result is checked against a recorded sha256 before use.

A file that changed after it was written (a flipped byte, a hand edit, a torn copy) but still parses is the
worst kind of fault: the numbers come out wrong and nothing fails. Shape and finiteness checks do not see it
(a flipped weight is still a finite float; an edited ``results.json`` is still JSON), so what was written is
hashed when it is written and compared when it is read.

Two records, both JSON:

* a **folder manifest** ``manifest.json`` (:func:`write_manifest`, :func:`check_manifest`): ``{"schema",
  "files": {name: {"sha256", "bytes"}}}`` for every file of a folder that is written as a whole: a run's report
  folder ``reports/runs/<name>/`` (config.json, results.json, the per-query files, the log, the figures) and the
  cache folders written by :func:`hybridnb.reporting.atomic_dir` (image features, caption states, a MIRACL
  language's Arrow cache). It is written last, into the temp folder, after the files it covers, so a folder
  with a manifest is complete; the folder's rename makes both appear together.
* a **sidecar** ``<file>.sha256`` (:func:`write_sidecar`, :func:`check_sidecar`) for a file written on its own
  beside others (a corpus-index shard), written after the file it covers.

The cost is reading the file once: sha256 runs at ~1.5 GB/s here (470 MB converted model: 0.25-0.4 s on the
2-core AMD EPYC with SHA-NI, page cache warm). :func:`sha256_file` remembers a hash within one process by
(path, inode, size, mtime_ns), so a file read several times in one process is hashed once; nothing is trusted
across processes by size and modification time (a bit flipped on disk or in a copy keeps both).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from hybridnb import paths, reporting

__all__ = ["MANIFEST", "SIDECAR_SUFFIX", "BACKFILL_COMMAND", "VerifyError", "MissingManifest", "sha256_file",
           "write_manifest", "check_manifest", "manifest_problem", "write_sidecar", "check_sidecar",
           "sidecar_problem", "check_result_folder", "committed_roots", "result_folders", "backfill", "verify"]

MANIFEST = "manifest.json"
SIDECAR_SUFFIX = ".sha256"
SCHEMA = "hybridnb.manifest/1"
#: records the hashes of committed result folders that predate manifests (made by an older commit): every
#: folder of :func:`committed_roots` that has none
BACKFILL_COMMAND = "python -m hybridnb verify --backfill"

_MEMO: dict[tuple[str, int, int, int], str] = {}


class VerifyError(ValueError):
    """A file does not match its recorded hash (or its record is missing): one line naming it and the fix."""


class MissingManifest(VerifyError):
    """A folder that should carry a manifest has none (written by an older commit, or copied without it)."""


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 (hex) of the file's bytes, read in 4 MiB chunks; remembered within this process by (path, inode,
    size, mtime_ns)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _MEMO[key] = h.hexdigest()
    return _MEMO[key]


def _entry(path: Path) -> dict:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def _covered(folder: Path) -> list[str]:
    """The files a folder manifest covers: every plain file in the folder (not below it) except the manifest
    and hidden files (temp files of an interrupted writer)."""
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST
                  and not p.name.startswith("."))


def write_manifest(folder: str | os.PathLike) -> Path:
    """Hash every file of ``folder`` and write ``folder/manifest.json`` atomically (call it last, after every
    file it covers is written)."""
    folder = Path(folder)
    files = {name: _entry(folder / name) for name in _covered(folder)}
    return reporting.write_json(folder / MANIFEST, {"schema": SCHEMA, "files": files})


def manifest_problem(folder: str | os.PathLike) -> str | None:
    """What is wrong with ``folder`` against its manifest (no manifest, an unreadable one, a file missing, changed
    or not covered), or None when every file matches."""
    folder = Path(folder)
    try:
        saved = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = saved["files"]
        if saved.get("schema") != SCHEMA or not isinstance(files, dict):
            raise ValueError(saved.get("schema"))
    except FileNotFoundError:
        return f"{paths.shown(folder)} has no {MANIFEST}"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{paths.shown(folder / MANIFEST)} is unreadable ({type(e).__name__})"
    for name, want in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            return f"{paths.shown(path)} is missing (its folder's {MANIFEST} lists it)"
        if path.stat().st_size != want.get("bytes") or sha256_file(path) != want.get("sha256"):
            return f"{paths.shown(path)} does not match its recorded sha256 (changed since it was written)"
    extra = [n for n in _covered(folder) if n not in files]
    if extra:
        return f"{paths.shown(folder / extra[0])} is not in its folder's {MANIFEST} (added after it was written)"
    return None


def check_manifest(folder: str | os.PathLike, fix: str) -> None:
    """Raise one-line :class:`VerifyError` (:class:`MissingManifest` when there is none) naming the file and
    ``fix`` (the command that makes it again) unless every file of ``folder`` matches its manifest."""
    why = manifest_problem(folder)
    if why is not None:
        cls = MissingManifest if why.endswith(f"has no {MANIFEST}") else VerifyError
        raise cls(f"{why}: {fix}")


def write_tree_manifests(folder: str | os.PathLike) -> list[Path]:
    """A manifest in ``folder`` and in every folder below it that holds files (a saved encoder keeps its
    weights in ``0_Transformer/``); call it last."""
    folder = Path(folder)
    dirs = [folder] + sorted(p for p in folder.rglob("*") if p.is_dir() and not p.name.startswith("."))
    return [write_manifest(d) for d in dirs if _covered(d)]


def check_tree(folder: str | os.PathLike, fix: str) -> None:
    """:func:`check_manifest` for ``folder`` and every folder below it that has a manifest."""
    folder = Path(folder)
    for d in [folder] + sorted(p.parent for p in folder.rglob(f"*/{MANIFEST}")):
        check_manifest(d, fix)


def sidecar(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def write_sidecar(path: str | os.PathLike) -> Path:
    """Write ``<path>.sha256`` (JSON ``{"sha256", "bytes"}``) atomically, after ``path`` is complete."""
    return reporting.write_json(sidecar(path), _entry(Path(path)))


def sidecar_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` does not match its sidecar (none, unreadable, another size or hash), or None."""
    path = Path(path)
    try:
        want = json.loads(sidecar(path).read_text(encoding="utf-8"))
        if path.stat().st_size != want["bytes"]:
            return f"{path.stat().st_size} bytes, its {SIDECAR_SUFFIX} record says {want['bytes']}"
        if sha256_file(path) != want["sha256"]:
            return "it does not match its recorded sha256"
    except FileNotFoundError:
        return f"no {sidecar(path).name} records its hash"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"its {SIDECAR_SUFFIX} record is unreadable ({type(e).__name__})"
    return None


def check_sidecar(path: str | os.PathLike, fix: str) -> None:
    """Raise one-line :class:`VerifyError` naming ``path`` and ``fix`` unless it matches its sidecar."""
    why = sidecar_problem(path)
    if why is not None:
        raise VerifyError(f"{paths.shown(path)}: {why}: {fix}")


def check_result_folder(folder: str | os.PathLike, remake: str) -> None:
    """Raise one line unless every file of the finished result folder ``folder`` (a run's report folder, a
    zero-shot or MIRACL result) matches its ``manifest.json``: a hand-edited results.json or a changed per-query
    file is refused, not used, and so is a folder without a manifest (made before manifests: the line names
    :data:`BACKFILL_COMMAND`). ``remake``: the command that makes the folder again."""
    folder = Path(folder)
    shown = paths.shown(folder)
    if not (folder / MANIFEST).is_file():
        raise MissingManifest(f"{shown} has no {MANIFEST}, so its results cannot be verified: if its files are as "
                              f"they were written, record their hashes with `{BACKFILL_COMMAND}`")
    check_manifest(folder, f"restore the folder (git checkout -- {shown}) or delete it and {remake}")


def committed_roots() -> list[Path]:
    """Where committed results live: ``reports/runs`` and each profile's ``zero_shot`` and ``miracl`` folders."""
    root = paths.reports_root()
    return [root / "runs", *sorted(p for p in root.glob("*/zero_shot") if p.is_dir()),
            *sorted(p for p in root.glob("*/miracl") if p.is_dir())]


def result_folders(root: str | os.PathLike) -> list[Path]:
    """The finished result folders under ``root`` (``reports/runs``): each folder holding a ``results.json``,
    ``root`` itself included when it is one (temp folders of an interrupted writer, hidden, are not)."""
    root = Path(root)
    found = [p.parent for p in root.rglob("results.json")
             if not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return sorted(set(found))


def backfill(root: str | os.PathLike) -> list[Path]:
    """Write a manifest into every result folder under ``root`` that has none (made before manifests); a folder
    that has one is left as it is (re-recording it would bless a changed file). Returns the folders written."""
    written = [folder for folder in result_folders(root) if not (folder / MANIFEST).is_file()]
    for folder in written:
        write_manifest(folder)
    return written


def verify(root: str | os.PathLike) -> list[str]:
    """One line per result folder under ``root`` whose files do not match its manifest (or that has none)."""
    return [why for folder in result_folders(root) if (why := manifest_problem(folder)) is not None]
