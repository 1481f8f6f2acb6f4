"""Hugging Face hub models as local folders: the local cache first, a download only when allowed.

A backbone named by hub id (``intfloat/multilingual-e5-small``) is resolved to a snapshot folder of the
Hugging Face cache with :func:`huggingface_hub.snapshot_download`, so both plain transformers repos and
sentence-transformers repos (with their ``1_Pooling`` / ``2_Dense`` modules) load from one local
folder. :func:`cached_snapshot` never touches the network (it answers "can this run here?");
:func:`snapshot` downloads what is missing unless ``HF_HUB_OFFLINE`` is set. A download fetches only
what an encoder needs: configs, tokenizer files and PyTorch weights (safetensors when a folder has them),
never TensorFlow, Flax or ONNX copies.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

__all__ = ["is_offline", "cached_snapshot", "missing_files", "pick_files", "how_to_get", "hub_unreachable", "snapshot",
           "NeedsNetwork"]

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "sentencepiece.bpe.model", "spiece.model", "tokenizer.model", "vocab.txt")
_SUFFIXES = (".json", ".txt", ".model", ".safetensors", ".bin")
_MODULE_DIR = re.compile(r"^\d+_\w+$")  # sentence-transformers module folders: 1_Pooling, 2_Dense, ...
_NOT_MODEL = ("tf_", "flax_", "training_args", "optimizer", "scheduler", "rng_state")  # file name starts
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class NeedsNetwork(OSError):
    """The model is not in the local Hugging Face cache and cannot be downloaded here."""


def is_offline() -> bool:
    """``HF_HUB_OFFLINE`` as set now (the env var is re-read; huggingface_hub reads it once at import)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE")
    if env is not None:
        return env.strip().upper() in {"1", "ON", "YES", "TRUE"}
    return bool(constants.HF_HUB_OFFLINE)


def _check_id(repo_id: str) -> None:
    if not _HUB_ID.match(repo_id) or ".." in repo_id:
        raise ValueError(f"{repo_id!r} is neither an existing folder nor a Hugging Face hub id (org/name)")


def missing_files(folder: Path) -> list[str]:
    """Files an encoder needs that ``folder`` lacks (empty = loadable): config, weights and tokenizer of the
    transformer, and the config (and weights, for Dense) of each sentence-transformers module."""
    folder = Path(folder)
    hf_dir, missing = folder, []
    if (folder / "modules.json").exists():
        for mod in json.loads((folder / "modules.json").read_text(encoding="utf-8")):
            kind, mdir = mod.get("type", "").rsplit(".", 1)[-1], folder / mod.get("path", "")
            if kind == "Transformer":
                hf_dir = mdir
            elif kind in ("Pooling", "Dense") and not (mdir / "config.json").exists():
                missing.append(f"{mod.get('path')}/config.json")
            if kind == "Dense" and not any((mdir / f).exists() for f in ("model.safetensors", "pytorch_model.bin")):
                missing.append(f"{mod.get('path')}/model.safetensors")
    prefix = "" if hf_dir == folder else hf_dir.relative_to(folder).as_posix() + "/"
    if not (hf_dir / "config.json").exists():
        missing.append(prefix + "config.json")
    if not any((hf_dir / f).exists() for f in WEIGHT_FILES):
        missing.append(prefix + "model.safetensors")
    if not any((hf_dir / f).exists() for f in TOKENIZER_FILES):
        missing.append(prefix + "tokenizer.json")
    return missing


def cached_snapshot(repo_id: str, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The cached snapshot folder of ``repo_id`` (main revision), or None; never uses the network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    _check_id(repo_id)
    try:
        return Path(snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=True))
    except LocalEntryNotFoundError:
        return None


def pick_files(files: list[str]) -> list[str]:
    """The repo files to download: root files and sentence-transformers module folders only, configs,
    tokenizers and PyTorch weights; a folder with safetensors skips its ``.bin`` copies."""
    keep = [f for f in files if f.endswith(_SUFFIXES)
            and ("/" not in f or (f.count("/") == 1 and _MODULE_DIR.match(f.split("/")[0])))
            and not f.split("/")[-1].startswith(_NOT_MODEL)]
    with_safetensors = {os.path.dirname(f) for f in keep if f.endswith(".safetensors")}
    return [f for f in keep if not (f.endswith(".bin") and os.path.dirname(f) in with_safetensors)]


def how_to_get(repo_id: str) -> str:
    """The ways to make ``repo_id`` loadable on a machine without the hub."""
    from huggingface_hub import constants

    return (f"download it once where the hub is reachable (huggingface-cli download {repo_id}) and copy the Hugging "
            f"Face cache ({constants.HF_HUB_CACHE}) here, or give the model's local folder instead of its hub id")


def hub_unreachable(timeout: float = 1.5) -> str | None:
    """Why the Hugging Face hub (``HF_ENDPOINT``, through ``HTTPS_PROXY`` when set) cannot be reached within
    ``timeout`` seconds, or None: one TCP connection, in a thread so that a hanging name lookup waits no longer
    than a refused connection."""
    import socket
    import threading
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    proxy = next((os.environ[k] for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
                  if os.environ.get(k) and url.scheme == "https"), None)
    target = urlparse(proxy if "://" in (proxy or "://") else f"http://{proxy}") if proxy else url
    host = target.hostname or ""
    port = target.port or (443 if target.scheme == "https" else 80)
    answer: list = []

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            answer.append(None)
        except OSError as e:
            answer.append(f"{type(e).__name__}: {e}")

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    reason = answer[0] if answer else f"no answer in {timeout:g} s"
    return None if answer and answer[0] is None else f"{host}:{port}{' (the proxy)' if proxy else ''}: {reason}"


def snapshot(repo_id: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local folder with everything an encoder needs from ``repo_id``.

    Uses the cached snapshot when it is complete; otherwise downloads the missing files, unless
    ``HF_HUB_OFFLINE`` is set or the hub cannot be reached (:class:`NeedsNetwork`, naming the model).
    """
    cached = cached_snapshot(repo_id, cache_dir)
    if cached is not None and not missing_files(cached):
        return cached
    where = "incomplete" if cached is not None else "not"
    if is_offline():
        raise NeedsNetwork(f"{repo_id} is {where} in the local Hugging Face cache and HF_HUB_OFFLINE is set: "
                           f"{how_to_get(repo_id)}")
    why = hub_unreachable()
    if why is not None:  # fail now: huggingface_hub's own retries spend ~25 s before the same answer
        raise NeedsNetwork(f"{repo_id} is {where} in the local Hugging Face cache and the hub cannot be reached "
                           f"({why}): {how_to_get(repo_id)}")
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        files = pick_files(HfApi().list_repo_files(repo_id))
        path = Path(snapshot_download(repo_id, cache_dir=cache_dir, allow_patterns=files))
    except (RepositoryNotFoundError, GatedRepoError):  # the hub answered: the name or the access is wrong
        raise
    except Exception as err:  # connection errors: their classes differ between huggingface_hub versions
        raise NeedsNetwork(f"{repo_id} is {where} in the local Hugging Face cache and could not be "
                           f"downloaded ({type(err).__name__}: {err})") from err
    missing = missing_files(path)
    if missing:
        raise ValueError(f"{repo_id}: the downloaded snapshot {path} lacks {missing}")
    return path
