"""Contrastive losses for training the dual encoder.

`info_nce` is InfoNCE with in-batch negatives, the loss of DPR (Karpukhin et al. 2020), E5 (Wang et al.
2022) and sentence-transformers' `MultipleNegativesRankingLoss`: query i should score its own passage i
above every other passage in the batch (and above every hard negative).

    logits = q @ [p; hard_negatives].T / temperature        # (B, B + B*h)
    loss   = mean_i cross_entropy(logits[i], target=i)

The embeddings are expected to be L2-normalised, so `q @ p.T` is cosine similarity in [-1, 1] and the
temperature sets how sharp the softmax over candidates is.

Why temperature 0.05 by default: it is sentence-transformers' `MultipleNegativesRankingLoss` default,
`scale=20.0` on cosine similarity, i.e. logits = 20 * cos = cos / 0.05, the common setting for
fine-tuning a pre-trained embedder. With cosine similarities bounded by 1, a temperature of 1 would cap
the logit gap at 2 and the softmax could never become confident; 0.05 lets it reach 40. Note that E5
itself trains with a lower temperature, 0.01 (stated in the intfloat/e5-* model cards; it is why E5
cosine scores bunch up in 0.7-1.0); pass `temperature=0.01` to match that instead.

The loss is always computed in at least float32, whatever dtype the embeddings arrive in (bf16/fp16
under autocast) and with autocast disabled for the matmul: a bf16 softmax over B + B*h logits scaled by
20 loses too much precision. float64 inputs stay float64 (used by the gradcheck tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

import torch
import torch.nn.functional as F
from torch import Tensor

from hybridnb import config

__all__ = ["DEFAULT_TEMPERATURE", "InfoNCE", "info_nce"]

#: 1 / 20: sentence-transformers' MultipleNegativesRankingLoss scale=20 (see the module docstring).
DEFAULT_TEMPERATURE = config.DEFAULT_TEMPERATURE


def info_nce(
    q: Tensor,
    p: Tensor,
    hard_negatives: Tensor | None = None,
    temperature: float | Tensor = DEFAULT_TEMPERATURE,
    symmetric: bool = False,
    exclude: Tensor | None = None,
) -> Tensor:
    """InfoNCE with in-batch negatives (and optional hard negatives); returns a scalar tensor.

    Args:
        q: (B, D) query embeddings. Row i's positive is `p[i]`.
        p: (B, D) passage embeddings. Every `p[j]`, j != i, is a negative for query i.
        hard_negatives: optional (B*h, D) extra passages, h per query and grouped by query (rows
            `i*h .. i*h+h-1` were mined for query i). As in DPR and sentence-transformers, *all* of them
            are negatives for *every* query, so the grouping does not change the loss; it is only checked
            (B*h rows, h >= 1) to catch misaligned batches. Shape (0, D) means none.
        temperature: > 0; a float or a 0-dim tensor (a learnable temperature gets its gradient).
        symmetric: also add the passage->query direction (passage i should pick query i among the B
            queries) and return the mean of the two directions, as in CLIP. Used for image-text pairs,
            where both retrieval directions matter. Hard negatives only enter the query->passage
            direction: they are passages, and in the passage->query direction the candidates are queries
            (sentence-transformers' MultipleNegativesSymmetricRankingLoss does the same).

    Returns:
        The mean cross-entropy, in float32 (float64 if the inputs are float64).
    """
    _check_embeddings(q, p, hard_negatives)
    _check_temperature(temperature)
    if exclude is not None and symmetric:
        raise ValueError("exclude applies to the query -> passage direction only, not with symmetric=True")

    dtype = torch.promote_types(torch.promote_types(q.dtype, p.dtype), torch.float32)
    if hard_negatives is not None:
        dtype = torch.promote_types(dtype, hard_negatives.dtype)
        if hard_negatives.shape[0] == 0:
            hard_negatives = None

    with torch.autocast(device_type=q.device.type, enabled=False):
        q = q.to(dtype)
        p = p.to(dtype)
        candidates = p if hard_negatives is None else torch.cat([p, hard_negatives.to(dtype)], dim=0)
        target = torch.arange(q.shape[0], device=q.device)
        logits = q @ candidates.T / temperature
        if exclude is not None:
            logits = logits.masked_fill(_check_exclude(exclude, logits), float("-inf"))
        loss = F.cross_entropy(logits, target)
        if symmetric:
            loss_p2q = F.cross_entropy(p @ q.T / temperature, target)
            loss = (loss + loss_p2q) / 2
    return loss


@dataclass(frozen=True)
class InfoNCE:
    """`info_nce` with fixed settings, in the `loss_fn(q, p, n)` form that `hybridnb.training.gradcache` takes."""

    temperature: float = DEFAULT_TEMPERATURE
    symmetric: bool = False
    exclude: Tensor | None = None  # one batch's (B, B + B*h) mask: set per step with dataclasses.replace

    def __post_init__(self) -> None:
        _check_temperature(self.temperature)

    def __call__(self, q: Tensor, p: Tensor, n: Tensor | None = None) -> Tensor:
        return info_nce(q, p, n, temperature=self.temperature, symmetric=self.symmetric, exclude=self.exclude)


def _check_embeddings(q: Tensor, p: Tensor, hard_negatives: Tensor | None) -> None:
    for name, t in (("q", q), ("p", p), ("hard_negatives", hard_negatives)):
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 2:
            raise ValueError(f"{name} must be 2-D (rows, dim), got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be floating point, got {t.dtype}")
    if q.shape[0] == 0:
        raise ValueError("empty batch: q has no rows")
    if q.shape != p.shape:
        raise ValueError(f"q and p must have the same shape (B, D), got {tuple(q.shape)} and {tuple(p.shape)}")
    if hard_negatives is not None:
        batch, dim = q.shape
        if hard_negatives.shape[1] != dim:
            raise ValueError(
                f"hard_negatives must have dim {dim} like q and p, got shape {tuple(hard_negatives.shape)}"
            )
        if hard_negatives.shape[0] % batch != 0:
            raise ValueError(
                f"hard_negatives must have B*h rows (h per query, grouped by query) with B={batch}, "
                f"got {hard_negatives.shape[0]} rows"
            )
        if hard_negatives.device != q.device or p.device != q.device:
            raise ValueError("q, p and hard_negatives must be on the same device")
    elif p.device != q.device:
        raise ValueError("q and p must be on the same device")


def _check_exclude(exclude: Tensor, logits: Tensor) -> Tensor:
    if not isinstance(exclude, Tensor) or exclude.dtype != torch.bool:
        raise TypeError(f"exclude must be a bool torch.Tensor, got {getattr(exclude, 'dtype', type(exclude).__name__)}")
    if exclude.shape != logits.shape:
        raise ValueError(f"exclude must have the logits' shape (B, B + B*h) = {tuple(logits.shape)}, "
                         f"got {tuple(exclude.shape)}")
    if exclude.diagonal().any():
        raise ValueError("exclude removes a query's own positive (its diagonal must be False)")
    return exclude.to(logits.device)


def _check_temperature(temperature: float | Tensor) -> None:
    if isinstance(temperature, Tensor):
        if temperature.numel() != 1:
            raise ValueError(f"temperature must be a scalar, got shape {tuple(temperature.shape)}")
        value = float(temperature.detach())
    elif isinstance(temperature, Real) and not isinstance(temperature, bool):
        value = float(temperature)
    else:
        raise TypeError(f"temperature must be a real number or a scalar tensor, got {type(temperature).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"temperature must be finite and > 0, got {value}")
