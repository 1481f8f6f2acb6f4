"""A training forward in length groups: fewer padding tokens, the same function.

Why: a batch is padded to its longest text, and the study's training batches are about half padding (45% real
tokens for the cpu profile's sentence-only passages at 128 tokens: reports/benchmarks/utilisation.md). Every
linear layer, every dropout mask and the attention run over those pad tokens. Sorted by length and cut into
``n`` groups of about equal size, each padded to its own longest text, the same texts cost far fewer tokens.

What stays and what changes: a text's attention and pooling see only its own tokens, so each embedding is the
same function of the same weights; the loss still sees the whole batch (the groups are put back in the batch's
order before it), so in-batch negatives, the sampler's batches and the gradient are those of the one padded
batch. Dropout draws its masks per group, on other shapes, so a run's numbers change with ``length_groups``
within training noise (never bit for bit); with dropout off the embeddings agree to rounding (a test checks it).
That is why ``length_groups`` enters a run's hash when it is not 1, and why 1 (the committed runs' path) stays
the default: benchmarks/bench_fast_paths.py measures its speed and whether its validation-loss curve stays inside
the seed spread of today's path.

    model = LengthGroups(encoder, 2)        # encoder: features dict -> (B, D) embeddings
    emb = model(features)                   # (B, D), rows in the features' order, differentiable
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import Tensor

__all__ = ["LengthGroups", "split_by_length"]


def split_by_length(lengths: Tensor, n_groups: int) -> list[Tensor]:
    """The indices of `lengths` (B,) sorted by length (ties in order) and cut into `n_groups` groups of about equal
    size, the empty ones left out: the groups a length-grouped forward pads one by one."""
    return [g for g in torch.tensor_split(torch.argsort(lengths, stable=True), n_groups) if len(g)]


class LengthGroups:
    """``model`` (a features dict -> (B, D) embeddings: an :class:`~hybridnb.models.encoders.Encoder`, or its DDP
    wrapper) run on `n_groups` length-sorted groups of a right-padded batch, each cut to its own longest row; the
    embeddings come back in the batch's order. Not an ``nn.Module``: it owns no weights, the model keeps them."""

    def __init__(self, model: Callable[[Mapping[str, Tensor]], Tensor], n_groups: int):
        if isinstance(n_groups, bool) or not isinstance(n_groups, int) or n_groups < 1:
            raise ValueError(f"length_groups must be a positive int (1: a batch padded as one), got {n_groups!r}")
        self.model, self.n_groups = model, n_groups

    def __call__(self, features: Mapping[str, Tensor]) -> Tensor:
        mask = features["attention_mask"]                       # (B, T), 1 on real tokens
        lengths = mask.sum(dim=1)
        groups = split_by_length(lengths, self.n_groups)
        if len(groups) == 1:
            return self.model(features)
        if bool((mask.cumsum(dim=1) != torch.minimum(torch.arange(1, mask.shape[1] + 1, device=mask.device), lengths[:, None])).any()):
            raise ValueError("length groups cut each row to its group's longest: the features must be right-padded "
                             "(every real token before the first pad); this tokenizer pads on the left")
        embs = []
        for group in groups:
            width = int(lengths[group].max())
            embs.append(self.model({k: v[group, :width] for k, v in features.items()}))  # (b, D)
        return torch.cat(embs)[torch.argsort(torch.cat(groups))]  # back in the batch's order
