"""Several processes (torchrun, DistributedDataParallel): the process group, the global-batch loss, rank 0.

    torchrun --standalone --nproc_per_node 4 -m hybridnb train --profile paper       # 4 GPUs, one machine
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv-id run1 --rdzv-backend c10d \
             --rdzv-endpoint node0:29500 -m hybridnb train --profile paper          # on each of 2 machines

``torchrun`` starts one process per GPU (or per CPU worker) and sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT. :func:`init` joins the process group from them (NCCL on CUDA, gloo on CPU) and
selects this rank's GPU; in a plain single process it does nothing, and every helper below then falls
back to the single-process behaviour, so the trainer has one code path. ``batch_size`` stays the global
batch (each rank embeds batch_size / world size pairs), so a run's config and hash do not depend on the
number of GPUs (its dropout masks do). Several machines need ``cache/`` on a filesystem they share.

The global batch. Every rank draws the same global batch of B pairs and embeds its own shard of B/W
(:mod:`hybridnb.training.sampling`). InfoNCE's in-batch negatives must span the global batch, so the loss
(:class:`GlobalLoss`) gathers the queries, positives and hard negatives of all ranks first:
:func:`gather_with_grad` all-gathers, then puts this rank's own tensor back in its slot, so autograd reaches
this rank's rows while the other ranks' rows are constants here. Every rank computes the same global loss
L; rank r's parameter gradient is the part of dL/dθ that flows through its own rows, and DDP *averages*
over ranks, i.e. divides their sum, dL/dθ, by W. So the loss is multiplied by W before the backward pass,
and W ranks x B/W give the gradients of one process x B (tests/test_distributed.py checks it).

GradCache: its loss stage runs the same global loss on the cached (detached) embeddings, which gives each
rank the cached gradients of its own rows; the chunk re-forwards and backwards run under ``no_sync()``
and :func:`all_reduce_grads` averages the accumulated gradients once per step, not once per chunk.

Control messages (barriers, small Python objects) go through a separate gloo group with a long timeout,
so ranks can wait there while rank 0 alone prepares data, validates, saves or evaluates without
tripping the NCCL watchdog (10 min). A failed rank still ends the job: torchrun stops the others.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from hybridnb.training import gradcache

__all__ = ["CONTROL_TIMEOUT", "GlobalLoss", "all_gather_object", "all_reduce_grads", "barrier", "broadcast_object",
           "check_device", "check_global_batch", "cleanup", "contrastive_step", "gather_with_grad", "init",
           "is_distributed", "is_main", "local_rank", "main_first", "rank", "world_size", "wrap"]

CONTROL_TIMEOUT = timedelta(hours=6)  # rank 0 alone may build the data caches or evaluate for a long while
_control: Any = None  # the gloo group for barriers and objects


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def init(backend: str | None = None) -> int:
    """Join the torchrun process group (idempotent); returns the world size (1: a plain process, no group).

    Call it before creating the encoder: on CUDA it selects this rank's GPU (cuda:LOCAL_RANK), which is
    where ``Encoder.from_pretrained`` then puts the model. `backend` defaults to nccl on CUDA, else gloo.
    """
    global _control
    if not dist.is_available():
        return 1
    if not dist.is_initialized():
        world = _env_int("WORLD_SIZE", 1)
        if world <= 1:
            return 1
        missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise RuntimeError(f"WORLD_SIZE={world} but {missing} are not set: launch with torchrun")
        cuda = torch.cuda.is_available() and backend in (None, "nccl")
        if cuda:
            torch.cuda.set_device(_env_int("LOCAL_RANK", 0))
        dist.init_process_group(backend=backend or ("nccl" if cuda else "gloo"))
    if _control is None and dist.get_world_size() > 1:
        _control = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
    return dist.get_world_size()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def check_global_batch(batch_size: int) -> int:
    """The global batch must split evenly over the job's processes (each embeds its share). Checked before the
    process group is up, from torchrun's ``WORLD_SIZE``, so a wrong batch fails in a second with the run's other
    checks, not after every process has joined the group and loaded the model."""
    world = world_size() if is_distributed() else max(1, _env_int("WORLD_SIZE", 1))
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} (the global batch) is not divisible by the {world} processes "
                         f"of this torchrun job (WORLD_SIZE={world}): choose a multiple of {world}, e.g. "
                         f"{max(world, batch_size // world * world)}")
    return batch_size


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def local_rank() -> int:
    return _env_int("LOCAL_RANK", 0) if is_distributed() else 0


def is_main() -> bool:
    """True on global rank 0 (and in a plain process): the rank that writes checkpoints, logs and reports."""
    return rank() == 0


def cleanup() -> None:
    """Leave the process group (at the end of a torchrun script)."""
    global _control
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _control = None


# ---------------------------------------------------------------------------- control messages


def barrier() -> None:
    if is_distributed():
        dist.barrier(group=_control)


def broadcast_object(obj: Any = None, src: int = 0) -> Any:
    """`obj` as given on rank `src`, on every rank (picklable; the other ranks' `obj` is ignored)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=_control)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj, group=_control)
    return out


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Run the block on global rank 0, then on each node's local rank 0, then on the other ranks.

    For deterministic work that fills a cache (data preparation, model conversion): rank 0 builds it and
    the others read it, on a shared filesystem; on per-node disks each node builds its own copy once.
    """
    phase = 0 if rank() == 0 else 1 if local_rank() == 0 else 2
    for _ in range(phase):
        barrier()
    yield
    for _ in range(phase, 2):
        barrier()


# ---------------------------------------------------------------------------- the training step


def check_device(device: torch.device) -> None:
    """Under NCCL the encoder must sit on this rank's GPU (raises ValueError naming the problem)."""
    if is_distributed() and dist.get_backend() == "nccl":
        expected = torch.device("cuda", local_rank())
        if torch.device(device) != expected:
            raise ValueError(f"rank {rank()}: the encoder is on {device} but this rank's GPU is {expected}; "
                             "call hybridnb.training.distributed.init() before creating the encoder")


def wrap(module: torch.nn.Module) -> torch.nn.Module:
    """`module` in DistributedDataParallel when distributed (it broadcasts rank 0's weights), else itself."""
    if not is_distributed():
        return module
    from torch.nn.parallel import DistributedDataParallel

    device = next(module.parameters()).device
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                   forward_sync_buffers=False)  # an encoder's buffers are constants


def gather_with_grad(t: Tensor) -> Tensor:
    """All ranks' `t` concatenated along dim 0 in rank order; gradients flow to this rank's slice only.

    Every rank must pass the same shape. The other ranks' slices are constants here: each gets its
    gradient on its own rank (see the module docstring for why the loss is then scaled by the world size).
    """
    if not is_distributed():
        return t
    parts = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(parts, t.detach().contiguous())
    parts[rank()] = t
    return torch.cat(parts)


def gather_ids(ids: np.ndarray) -> np.ndarray:
    """All ranks' int64 `ids` (same length on every rank) concatenated in rank order; `ids` itself in one process."""
    if not is_distributed():
        return ids
    t = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64))
    parts = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(parts, t)
    return torch.cat(parts).numpy()


@dataclass(frozen=True)
class GlobalLoss:
    """`loss_fn` on the embeddings of all ranks, times `scale` (the world size: DDP averages gradients)."""

    loss_fn: Callable[[Tensor, Tensor, Tensor | None], Tensor]
    scale: float = 1.0

    def __call__(self, q: Tensor, p: Tensor, n: Tensor | None = None) -> Tensor:
        n = None if n is None else gather_with_grad(n)
        return self.loss_fn(gather_with_grad(q), gather_with_grad(p), n) * self.scale


@torch.no_grad()
def all_reduce_grads(params: Iterable[torch.nn.Parameter], bucket_bytes: int = 64 << 20) -> None:
    """Average `.grad` over ranks, in flat buckets of about `bucket_bytes` (what DDP does after backward)."""
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    bucket: list[Tensor] = []
    for i, g in enumerate(grads):
        bucket.append(g)
        size = sum(b.numel() * b.element_size() for b in bucket)
        if size >= bucket_bytes or i == len(grads) - 1:
            flat = torch.cat([b.reshape(-1) for b in bucket])
            dist.all_reduce(flat)
            flat /= world_size()
            for b, piece in zip(bucket, flat.split([b.numel() for b in bucket])):
                b.copy_(piece.view_as(b))
            bucket = []


def contrastive_step(model, query_features: Mapping[str, Tensor], passage_features: Mapping[str, Tensor],
                     loss_fn, negative_features: Mapping[str, Tensor] | None = None, *,
                     chunk_size: int | None = None, autocast: gradcache.AutocastArg = None,
                     length_groups: int = 1) -> float:
    """One forward+backward of the global-batch loss on this rank's shard; returns the global loss.

    `chunk_size` None: the plain step, else GradCache with chunks of that many rows. In one process this
    is exactly :func:`gradcache.plain_step` / :func:`gradcache.gradcache_step`. Distributed, the `.grad`
    left behind is already averaged over ranks and equals the single-process gradient of the global batch
    (`model` a DDP wrapper from :func:`wrap`, or the bare module: its gradients are then all-reduced here).
    Parameters of `loss_fn` itself (a learnable temperature) are not synchronised. `length_groups`: the plain
    step's forwards in length groups (:mod:`hybridnb.training.length_groups`); not with GradCache.
    """
    if chunk_size is not None and length_groups != 1:
        raise ValueError("length_groups is for the plain step; GradCache already encodes in chunks of chunk_size")
    if not is_distributed():
        if chunk_size is None:
            return gradcache.plain_step(model, query_features, passage_features, loss_fn, negative_features,
                                        autocast=autocast, length_groups=length_groups)
        return gradcache.gradcache_step(model, query_features, passage_features, loss_fn, chunk_size,
                                        negative_features, autocast=autocast)
    world = world_size()
    scaled = GlobalLoss(loss_fn, float(world))
    ddp = hasattr(model, "no_sync")
    if ddp and chunk_size is None:  # one backward: DDP averages the gradients, overlapped with it
        loss = gradcache.plain_step(model, query_features, passage_features, scaled, negative_features,
                                    autocast=autocast, length_groups=length_groups)
        return loss / world
    with model.no_sync() if ddp else contextlib.nullcontext():  # one backward per chunk: sync once, below
        if chunk_size is None:
            loss = gradcache.plain_step(model, query_features, passage_features, scaled, negative_features,
                                        autocast=autocast, length_groups=length_groups)
        else:
            loss = gradcache.gradcache_step(model, query_features, passage_features, scaled, chunk_size,
                                            negative_features, autocast=autocast)
    all_reduce_grads(model.parameters())
    return loss / world
