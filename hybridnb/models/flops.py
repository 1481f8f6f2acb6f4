"""Arithmetic counted from a BERT-style encoder's shapes, and the nominal peak of the CPU it runs on.

Why: a throughput figure (pairs/s, passages/s) says nothing about how much of the machine a path uses. Dividing
the FLOPs a batch needs by the seconds it took, and that by what the cores could do at most, does; and the
shares that padding and attention take say where a faster path could come from. Used by
``benchmarks/bench_utilisation.py`` and ``benchmarks/bench_fast_paths.py``.

The count (:func:`encoder_forward_flops`), per sequence of L positions through a BERT of hidden size H,
feed-forward size F and N layers, one multiply-add = 2 FLOPs:

    matmuls     N * L * 2 * (4 H^2 + 2 H F)     Q, K, V, output projections; the two feed-forward matrices
    attention   N * 4 * L^2 * H                 Q K^T and (softmax) V, over all heads (heads * head_dim = H)

Biases, LayerNorm, GELU, softmax, dropout, the embedding lookups (gathers: no arithmetic) and the pooling are
left out: they are O(L H) each, below 1% of the above at E5-small's sizes. A batch is counted at its padded
shape, (rows, longest row), which is what the kernels execute; the same sum over each row's real length is the
*useful* count, and their ratio is the share that padding costs. Training counts 3x the forward (the usual
convention: the backward computes the gradient of every matmul's input and of its weight, 2x the forward); the
benchmarks also report torch's own count (``torch.utils.flop_counter``) of a real step as a check on it.

The peak (:func:`nominal_peak`): cores x clock x FLOPs per cycle per core, where the last comes from the CPU's
flags and family (:data:`FLOPS_PER_CYCLE` says which figure is assumed and why). It is a nominal figure (the
vendors' instruction throughput at the clock /proc/cpuinfo reports, no turbo, no AVX-512 clock drop), an
upper bound that no real kernel reaches.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["EncoderShape", "encoder_shape", "encoder_forward_flops", "loss_flops", "TRAINING_FACTOR", "CpuInfo",
           "cpu_info", "FLOPS_PER_CYCLE", "nominal_peak", "padded_and_useful"]

#: training FLOPs = this x forward FLOPs (forward + backward: input and weight gradients)
TRAINING_FACTOR = 3


@dataclass(frozen=True)
class EncoderShape:
    """What the count needs of a model's config."""

    hidden: int
    intermediate: int
    layers: int
    heads: int

    def matmul_params(self) -> int:
        """Weights that multiply every token once per forward (the transformer layers' matrices)."""
        return self.layers * (4 * self.hidden * self.hidden + 2 * self.hidden * self.intermediate)


def encoder_shape(hf_config) -> EncoderShape:
    """The shape of a Hugging Face BERT / XLM-R config (``hidden_size``, ``intermediate_size``, ...)."""
    return EncoderShape(int(hf_config.hidden_size), int(hf_config.intermediate_size),
                        int(hf_config.num_hidden_layers), int(hf_config.num_attention_heads))


def encoder_forward_flops(shape: EncoderShape, lengths: Iterable[int]) -> dict[str, int]:
    """Forward FLOPs of sequences of the given lengths: {"matmul": ..., "attention": ..., "total": ...}.

    For a padded batch pass its width once per row (``[width] * rows``); for the useful count, each row's
    real length."""
    lengths = [int(n) for n in lengths]
    tokens = sum(lengths)
    matmul = 2 * shape.matmul_params() * tokens
    attention = shape.layers * 4 * shape.hidden * sum(n * n for n in lengths)
    return {"matmul": matmul, "attention": attention, "total": matmul + attention, "tokens": tokens}


def loss_flops(batch: int, candidates: int, dim: int) -> int:
    """Forward FLOPs of InfoNCE's similarity matrix: (batch x dim) @ (dim x candidates)."""
    return 2 * batch * candidates * dim


@dataclass(frozen=True)
class CpuInfo:
    """What the peak is derived from, as /proc/cpuinfo and the scheduler report it (in a VM: the guest's view)."""

    model_name: str
    vendor: str
    family: int | None
    flags: frozenset
    logical_cpus: int       # CPUs this process may run on (sched_getaffinity)
    threads_per_core: int   # siblings / cpu cores: 2 when two logical CPUs share a core (SMT)
    mhz: float | None       # "cpu MHz" (a VM usually reports the host's nominal clock)

    @property
    def physical_cores(self) -> int:
        return max(1, self.logical_cpus // max(1, self.threads_per_core))

    def as_dict(self) -> dict:
        d = asdict(self)
        d["flags"] = sorted(f for f in self.flags if f.startswith(("avx", "amx", "fma")))
        d["physical_cores"] = self.physical_cores
        return d


def cpu_info(cpuinfo: str | None = None) -> CpuInfo:
    """Parse /proc/cpuinfo (or the given text): the first processor's fields."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor's block
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    try:
        logical = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        logical = os.cpu_count() or 1

    def number(key, kind):
        try:
            return kind(fields[key])
        except (KeyError, ValueError):
            return None

    siblings, cores = number("siblings", int), number("cpu cores", int)
    tpc = siblings // cores if siblings and cores and siblings >= cores else 1
    return CpuInfo(fields.get("model name", "unknown"), fields.get("vendor_id", "unknown"), number("cpu family", int),
                   frozenset(fields.get("flags", "").split()), logical, tpc, number("cpu MHz", float))


#: FLOPs per cycle per core assumed for each case (key -> (FLOPs, why)); :func:`nominal_peak` picks the key
FLOPS_PER_CYCLE: dict[str, tuple[int, str]] = {
    "amx_bf16": (1024, "AMX TMUL: 1024 bf16 FLOP/cycle/core (Intel: Sapphire Rapids AMX does 2048 int8 ops or "
                       "1024 bf16 FLOPs per cycle per core)"),
    "avx512_bf16 intel": (128, "AVX512_BF16 VDPBF16PS: 32 bf16 multiply-adds (64 FLOPs) per 512-bit instruction, "
                               "2 per cycle on the two FMA ports of a Xeon SP core"),
    "avx512_bf16 zen5": (128, "AVX512_BF16 VDPBF16PS: 64 FLOPs per 512-bit instruction, 2 per cycle (Zen 5: "
                              "full-width 512-bit datapath, two FMA pipes)"),
    "avx512_bf16 zen4": (64, "AVX512_BF16 VDPBF16PS: 64 FLOPs per 512-bit instruction, 1 per cycle (Zen 4 runs "
                             "512-bit ops as two 256-bit halves on its two FMA pipes)"),
    "avx512 fp32 intel": (64, "AVX-512 FMA: 2 units x 16 fp32 lanes x 2 FLOPs (Xeon SP Gold/Platinum)"),
    "avx512 fp32 zen5": (64, "AVX-512 FMA: 2 pipes x 16 fp32 lanes x 2 FLOPs (Zen 5, 512-bit datapath)"),
    "avx512 fp32 zen4": (32, "AVX-512 FMA on 256-bit pipes: 2 x 8 fp32 lanes x 2 FLOPs (Zen 4)"),
    "avx2 fp32": (32, "AVX2 FMA: 2 units x 8 fp32 lanes x 2 FLOPs (Haswell and later, Zen 2-3)"),
    "sse fp32": (8, "no FMA: 4-lane SSE multiply + add, one each per cycle"),
}


def _family_key(info: CpuInfo) -> str:
    if info.vendor == "AuthenticAMD":
        return "zen5" if (info.family or 0) >= 26 else "zen4"  # 0x1A: Zen 5; 0x19 with AVX-512: Zen 4
    return "intel"


def nominal_peak(info: CpuInfo, precision: str, threads: int | None = None, ghz: float | None = None) -> dict:
    """The nominal peak FLOP/s of ``threads`` cores (default: every physical core) in ``precision``
    ("float32" | "bfloat16") at ``ghz`` (default: /proc/cpuinfo's clock): {"flops": ..., "key", "why", ...}.

    bfloat16 without native bf16 instructions is emulated in float32 arithmetic: its peak is float32's."""
    flags = info.flags
    fam = _family_key(info)
    key = None
    if precision == "bfloat16":
        if "amx_bf16" in flags:
            key = "amx_bf16"
        elif "avx512_bf16" in flags:
            key = f"avx512_bf16 {fam}"
    if key is None:
        if "avx512f" in flags:
            key = f"avx512 fp32 {fam}"
        elif "avx2" in flags and "fma" in flags:
            key = "avx2 fp32"
        else:
            key = "sse fp32"
    per_cycle, why = FLOPS_PER_CYCLE[key]
    cores = min(threads or info.physical_cores, info.physical_cores)
    clock = ghz if ghz else (info.mhz or 0.0) / 1000.0
    return {"precision": precision, "flops": cores * clock * 1e9 * per_cycle, "flops_per_cycle_per_core": per_cycle,
            "cores": cores, "ghz": clock, "key": key, "why": why,
            "clock_source": "given" if ghz else "/proc/cpuinfo cpu MHz"}


def padded_and_useful(shape: EncoderShape, batches: Sequence[Sequence[int]]) -> dict[str, int]:
    """Forward FLOPs of several padded batches, each given by its rows' real lengths: the executed count
    (every row at the batch's longest) and the useful one (each row at its own length)."""
    executed = useful = tokens_padded = tokens_real = attention = 0
    for lengths in batches:
        width = max(lengths)
        ex = encoder_forward_flops(shape, [width] * len(lengths))
        us = encoder_forward_flops(shape, lengths)
        executed += ex["total"]
        attention += ex["attention"]
        useful += us["total"]
        tokens_padded += ex["tokens"]
        tokens_real += us["tokens"]
    return {"executed": executed, "useful": useful, "attention": attention, "tokens_padded": tokens_padded,
            "tokens_real": tokens_real}
