"""Gradient caching for contrastive training (GradCache: Gao, Zhang, Han, Callan 2021, arXiv:2101.06983).

An in-batch-negatives loss couples every query with every passage, so the batch cannot be split into
independent micro-batches with ordinary gradient accumulation. GradCache splits the computation instead:

1. Embed queries, passages (and hard negatives) with gradients off, `chunk_size` rows at a time. Only
   the (B, D) embeddings are kept, not the activations.
2. Compute the loss on the detached embeddings, made leaves with `requires_grad_()`, and backpropagate
   to them: this gives d loss / d embedding for every row (the "gradient cache").
3. Re-run each chunk's forward with gradients on and call `embeddings.backward(cached_grad_chunk)`, so
   the parameter gradients accumulate chunk by chunk. Peak activation memory is one chunk's.

By the chain rule, the accumulated parameter gradients equal those of the full-batch loss, so the
paper's batch of 100 fits a small GPU. The price is a second forward per chunk.

Dropout: step 3 must draw the same dropout masks as step 1, or the cached gradients belong to a
different function. The RNG state (CPU, and CUDA on the devices in use) is captured before each chunk's
no-grad forward and restored, in a `torch.random.fork_rng` block, for its re-forward. Only the default
generators are covered: a module that draws from its own `torch.Generator` is not.

Mixed precision: the encoder forwards may run under autocast (bf16 on CUDA; on CPU `torch.autocast("cpu",
dtype=torch.bfloat16)` works too), passed as `autocast=` (a dtype or a context-manager factory). The
loss always runs with autocast disabled, on the embeddings upcast to float32. Each re-forward is its own
autocast region, so each chunk's weight gradients reach the float32 `.grad` separately (autocast caches
one bf16 copy of a weight per region, and gradients summed into that copy are summed in bf16).

Other caveats: modules with forward side effects run twice per chunk (BatchNorm running statistics
would be updated twice; transformers use LayerNorm, so this does not arise for the dual encoder).

Both entry points accumulate into `.grad` (they never zero it and never step an optimizer) and return
the loss as a Python float. Parameters the loss function itself holds (e.g. a learnable temperature)
get their gradients too, in both.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from numbers import Integral
from typing import ContextManager, Union

import torch
from torch import Tensor, nn

from hybridnb.training.length_groups import LengthGroups

__all__ = [
    "AutocastArg",
    "LossFn",
    "RandContext",
    "gradcache_step",
    "make_autocast",
    "plain_step",
    "split_features",
]

Features = Mapping[str, Tensor]
#: loss_fn(q, p, n) -> scalar tensor; n is None when there are no hard negatives.
LossFn = Callable[[Tensor, Tensor, Union[Tensor, None]], Tensor]
#: None (no autocast), a dtype (autocast to it on the features' device; float32 means none), or a
#: zero-argument factory returning a fresh context manager each call.
AutocastArg = Union[None, torch.dtype, Callable[[], ContextManager]]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def make_autocast(device: torch.device | str, dtype: torch.dtype | None) -> Callable[[], ContextManager]:
    """A factory of autocast contexts for `device`'s type; `dtype` None or float32 gives no autocast.

    E.g. `make_autocast("cuda", torch.bfloat16)` for the trainer on a GPU.
    """
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext
    if dtype not in _LOW_PRECISION:
        raise ValueError(f"autocast dtype must be float16, bfloat16 or float32, got {dtype}")
    return functools.partial(torch.autocast, device_type=torch.device(device).type, dtype=dtype)


def split_features(features: Features, chunk_size: int) -> list[dict[str, Tensor]]:
    """Split every tensor of a tokenizer output along dim 0 into chunks of `chunk_size` rows."""
    chunk_size = _check_chunk_size(chunk_size)
    _batch_size(features, "features")
    keys = list(features)
    pieces = [features[k].split(chunk_size, dim=0) for k in keys]
    return [dict(zip(keys, chunk)) for chunk in zip(*pieces)]


class RandContext:
    """The CPU RNG state and the CUDA RNG states of `cuda_devices`, captured at construction.

    `with ctx.restored(): ...` runs the block from that state and afterwards puts back the state the
    generators had before the block, so the re-forwards do not disturb the global RNG stream.
    """

    def __init__(self, cuda_devices: Iterable[int] = ()) -> None:
        self.cuda_devices = list(cuda_devices)
        self.cpu_state = torch.get_rng_state()
        self.cuda_states = [torch.cuda.get_rng_state(d) for d in self.cuda_devices]

    @contextlib.contextmanager
    def restored(self) -> Iterator[None]:
        with torch.random.fork_rng(devices=self.cuda_devices, device_type="cuda"):
            torch.set_rng_state(self.cpu_state)
            for device, state in zip(self.cuda_devices, self.cuda_states):
                torch.cuda.set_rng_state(state, device)
            yield


def gradcache_step(
    model: nn.Module | Callable[[Features], Tensor],
    query_features: Features,
    passage_features: Features,
    loss_fn: LossFn,
    chunk_size: int,
    negative_features: Features | None = None,
    *,
    autocast: AutocastArg = None,
) -> float:
    """One GradCache forward+backward: accumulates parameter `.grad`, returns the loss; no optimizer step.

    Args:
        model: maps a tokenizer-output dict (a chunk of it) to (rows, D) embeddings.
        query_features, passage_features: tokenizer outputs for B queries and their B positives.
        loss_fn: `loss_fn(q, p, n)` on the full-batch float32 embeddings (n None without negatives).
        chunk_size: rows per forward (> 0). A value >= every group's size means one chunk per group.
        negative_features: optional tokenizer output for the hard negatives (B*h rows).
        autocast: see `AutocastArg`; applies to the encoder forwards only.
    """
    chunk_size = _check_chunk_size(chunk_size)
    groups = _groups(query_features, passage_features, negative_features)
    ctx = _resolve_autocast(autocast, groups, model)
    cuda_devices = _cuda_devices(model, groups)
    chunked = [split_features(g, chunk_size) for g in groups]

    # 1. Embed every chunk without gradients, remembering the RNG state each forward started from.
    states: list[list[RandContext]] = []
    reps: list[Tensor] = []
    with torch.no_grad():
        for chunks in chunked:
            group_states, group_reps = [], []
            for chunk in chunks:
                group_states.append(RandContext(cuda_devices))
                with ctx():
                    group_reps.append(_encode(model, chunk))
            states.append(group_states)
            reps.append(torch.cat(group_reps) if len(group_reps) > 1 else group_reps[0])

    # 2. Loss on detached float32 leaves; backward fills the gradient cache (and any loss parameters).
    leaves = [_to_loss_dtype(r).detach().requires_grad_() for r in reps]
    loss = _compute_loss(loss_fn, leaves)
    loss.backward()

    # 3. Re-forward each chunk from its saved RNG state and backpropagate its cached gradient.
    for chunks, group_states, leaf in zip(chunked, states, leaves):
        if leaf.grad is None:  # the loss ignored this group: no parameter gradient flows through it
            continue
        for chunk, state, grad in zip(chunks, group_states, leaf.grad.split(chunk_size, dim=0)):
            with state.restored(), ctx():
                emb = _encode(model, chunk)
            emb.backward(grad.to(emb.dtype))
    return float(loss.detach())


def plain_step(
    model: nn.Module | Callable[[Features], Tensor],
    query_features: Features,
    passage_features: Features,
    loss_fn: LossFn,
    negative_features: Features | None = None,
    *,
    autocast: AutocastArg = None,
    chunk_size: int | None = None,
    length_groups: int = 1,
) -> float:
    """The ordinary full-batch forward+backward (the no-cache path); accumulates `.grad`, returns the loss.

    Queries, passages and negatives are encoded by separate forwards, in that order (as in
    `gradcache_step`). `chunk_size`, if given, runs each forward in chunks of that size, all with
    gradients and all graphs kept, so it saves no memory: it only makes the forwards draw exactly the
    dropout masks that `gradcache_step` with the same `chunk_size` draws, which makes this an exact
    reference for it with dropout on (dropout masks depend on how a batch is split). Leave it None
    in training. `length_groups` > 1 runs each forward in that many length-sorted groups, each padded to its own
    longest text (:class:`~hybridnb.training.length_groups.LengthGroups`: the same function on fewer tokens).
    """
    groups = _groups(query_features, passage_features, negative_features)
    ctx = _resolve_autocast(autocast, groups, model)
    encoder = model if length_groups == 1 else LengthGroups(model, length_groups)
    reps = []
    for features in groups:
        chunks = [dict(features)] if chunk_size is None else split_features(features, chunk_size)
        with ctx():
            embs = [_encode(encoder, chunk) for chunk in chunks]
        reps.append(torch.cat(embs) if len(embs) > 1 else embs[0])
    loss = _compute_loss(loss_fn, [_to_loss_dtype(r) for r in reps])
    loss.backward()
    return float(loss.detach())


# --------------------------------------------------------------------------------------- helpers


def _check_chunk_size(chunk_size: int) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, Integral):
        raise TypeError(f"chunk_size must be an int, got {type(chunk_size).__name__}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
    return int(chunk_size)


def _batch_size(features: Features, name: str) -> int:
    if not isinstance(features, Mapping) or not features:
        raise TypeError(f"{name} must be a non-empty mapping of tensors (a tokenizer output)")
    sizes = set()
    for key, value in features.items():
        if not isinstance(value, Tensor):
            raise TypeError(
                f"{name}[{key!r}] must be a torch.Tensor, got {type(value).__name__} "
                "(tokenize with return_tensors='pt')"
            )
        if value.ndim == 0:
            raise ValueError(f"{name}[{key!r}] has no batch dimension")
        sizes.add(value.shape[0])
    if len(sizes) != 1:
        raise ValueError(f"{name} tensors disagree on the batch size: {sorted(sizes)}")
    (size,) = sizes
    if size == 0:
        raise ValueError(f"{name} is an empty batch")
    return size


def _groups(query: Features, passage: Features, negative: Features | None) -> list[Features]:
    n_q = _batch_size(query, "query_features")
    n_p = _batch_size(passage, "passage_features")
    if n_q != n_p:
        raise ValueError(f"{n_q} queries but {n_p} passages: each query needs exactly one positive")
    if negative is None:
        return [query, passage]
    _batch_size(negative, "negative_features")
    return [query, passage, negative]


def _resolve_autocast(autocast: AutocastArg, groups: list[Features],
                      model: object = None) -> Callable[[], ContextManager]:
    """A dtype autocasts on the device the model computes on: its parameters' device when it has any
    (the tokenizer's features usually arrive on the CPU and the model moves them to its GPU; an autocast
    keyed on the features' device would then be a CPU autocast, and the GPU would run in float32)."""
    if autocast is None:
        return contextlib.nullcontext
    if isinstance(autocast, torch.dtype):
        param = next(model.parameters(), None) if isinstance(model, nn.Module) else None
        device = param.device if param is not None else next(iter(groups[0].values())).device
        return make_autocast(device, autocast)
    if callable(autocast):
        return autocast
    raise TypeError(f"autocast must be None, a torch.dtype or a context-manager factory, got {autocast!r}")


def _cuda_devices(model: object, groups: list[Features]) -> list[int]:
    tensors: list[Tensor] = [t for g in groups for t in g.values()]
    if isinstance(model, nn.Module):
        tensors.extend(model.parameters())
    devices = set()
    for t in tensors:
        if t.device.type == "cuda":
            devices.add(t.device.index if t.device.index is not None else torch.cuda.current_device())
    return sorted(devices)


def _encode(model: Callable[[Features], Tensor], chunk: Features) -> Tensor:
    emb = model(chunk)
    rows = next(iter(chunk.values())).shape[0]
    if not isinstance(emb, Tensor):
        raise TypeError(f"model must return a (rows, D) tensor, got {type(emb).__name__}")
    if emb.ndim != 2 or emb.shape[0] != rows:
        raise ValueError(f"model returned shape {tuple(emb.shape)} for {rows} inputs; expected ({rows}, D)")
    return emb


def _to_loss_dtype(emb: Tensor) -> Tensor:
    return emb.float() if emb.dtype in _LOW_PRECISION else emb


def _compute_loss(loss_fn: LossFn, reps: list[Tensor]) -> Tensor:
    q, p = reps[0], reps[1]
    n = reps[2] if len(reps) > 2 else None
    with torch.autocast(device_type=q.device.type, enabled=False):
        loss = loss_fn(q, p, n)
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise ValueError("loss_fn must return a scalar tensor")
    return loss.reshape(())
