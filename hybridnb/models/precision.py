"""Encoding precision: which arithmetic the encoder's matmuls use, and how `auto` picks one for this CPU.

Why a choice at all: on a CPU with native bf16 dot products (AVX512_BF16, AMX) bf16 autocast encodes
2-4x faster than float32 at a mAP cost the benchmark measures (``benchmarks/bench_precision.py``); on a
CPU without them (AVX2 only) torch emulates bf16 and autocast is about 6x *slower*. So `auto` decides from
the CPU's flags, and the decision is what gets recorded: a profile's ``encode_dtype: auto`` is resolved to
``float32`` or ``bfloat16`` before the config hash is taken, so results from two machines that encoded
differently never share a hash.

The precisions (``encode_dtype``):
    float32   the model's own precision: the exact numbers, identical on every CPU.
    bfloat16  matmuls under ``torch.autocast`` in bf16; pooling and normalisation stay float32.
    float16   the same with fp16 (for GPUs; slow on most CPUs).
    int8      dynamic int8 quantisation of every ``nn.Linear`` (weights int8 per tensor, activations
              quantised per batch), through ``torch.ao.quantization.quantize_dynamic``; embeddings,
              LayerNorm and attention's softmax stay float32. A quantised copy is made per encode call,
              so the encoder itself is never changed.
    auto      bfloat16 on a CUDA device with bf16 or a CPU with native bf16, float32 elsewhere.

Relations: :meth:`hybridnb.models.encoders.Encoder.encode` takes the value :func:`encode_arg` returns;
:func:`hybridnb.config.check_encode_dtype` checks the name (``ENCODE_DTYPES``); the run checks resolve
`auto` with :func:`resolve` before hashing, and reuse a finished result of either precision, bf16 first, on
every machine (:data:`AUTO_REUSE_ORDER`), computing this machine's only when none has finished.
"""

from __future__ import annotations

import copy
import functools
import warnings
from pathlib import Path

import torch

from hybridnb.config import check_encode_dtype

#: /proc/cpuinfo flags that mean bf16 dot products in hardware (Zen 4 and later, Cooper Lake, Sapphire Rapids)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where that file does not exist."""
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return frozenset()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether bf16 matmuls run in hardware on `device` (a CUDA GPU with bf16, or a CPU with the flags)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return any(flag in cpu_flags() for flag in NATIVE_BF16_FLAGS)


def run_device() -> torch.device:
    """The device a run trains and encodes on: the GPU when there is one (as ``Encoder.from_pretrained`` picks)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve(name: str, device: torch.device | str | None = None) -> str:
    """`name` with `auto` replaced by what it means on `device` (default: the run's, :func:`run_device`)."""
    if check_encode_dtype(name) != "auto":
        return name
    return "bfloat16" if native_bf16(run_device() if device is None else device) else "float32"


#: the precisions whose finished results a run asking for `auto` reuses, in order: the same on every machine, so
#: two machines read the same committed runs (bf16 first: the committed runs' precision); a result of another
#: precision is the same computation but for its rounding, and what made it is recorded
#: (:func:`hybridnb.training.run_folder.first_finished`). Only when none has finished does `auto` compute, in
#: what :func:`resolve` picks for this machine. An explicit precision is never swapped.
AUTO_REUSE_ORDER = ("bfloat16", "float32")


def encode_arg(name: str) -> torch.dtype | str | None:
    """What :meth:`Encoder.encode` takes as ``autocast_dtype``: None (float32), a dtype, or ``"int8"``."""
    name = resolve(name)
    if name == "float32":
        return None
    return "int8" if name == "int8" else getattr(torch, name)


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` with dynamic int8 ``nn.Linear`` layers (CPU only; the original is untouched)."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch warns that its quantised tensor types are deprecated; the path
        warnings.simplefilter("ignore")  # is kept because the benchmark measures it, not as the default
        return quantize_dynamic(copy.deepcopy(model).cpu().eval(), {torch.nn.Linear}, dtype=torch.qint8)
