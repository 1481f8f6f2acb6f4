"""Input-embedding gradients computed on the rows a batch uses: the same values, without a dense fill.

PyTorch's dense embedding backward allocates and zero-fills a gradient the size of the whole matrix
on every backward (E5's 250,037 x 384 = 384 MB), adds the batch's rows into it, then adds all of it
into ``.grad``. On a 2-core CPU that fill was about a third of a training step (GradCache runs six
backwards per step; profiled in issue #4). Inside :func:`row_grads`, the embedding's backward runs the
very same kernel (``aten.embedding_dense_backward``) on the distinct ids of the batch only, in the
same order, and adds the result into the used rows of a ``.grad`` buffer that is kept across steps;
before the buffer is reused, only the rows written since it was last attached are zeroed. The
gradient is bit for bit the one autograd gives (the tests compare weights after training steps).

For a single process only: DDP all-reduces the gradients autograd delivers, and this path
delivers none. Float32 matrices only (the tested case); anything else keeps autograd's path.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F

__all__ = ["row_grads", "RowGradState"]

MAX_TOUCHED = 4096  # id lists remembered for re-zeroing; beyond, the buffer is zeroed in full


class RowGradState:
    """The persistent ``.grad`` buffer of one embedding matrix and the rows written into it."""

    def __init__(self, embedding: torch.nn.Embedding):
        self.weight = embedding.weight
        self.padding_idx = embedding.padding_idx
        self.buffer: torch.Tensor | None = None
        self.touched: list[torch.Tensor] = []
        self.dirty = False  # autograd also wrote into the buffer (weights used elsewhere): zero all of it

    def _grad(self) -> torch.Tensor:
        """``weight.grad``; when cleared (``zero_grad(set_to_none=True)``), the buffer, zeroed again."""
        w = self.weight
        if w.grad is None:
            if self.buffer is None:
                self.buffer = torch.zeros_like(w)
            elif self.dirty:
                self.buffer.zero_()
            else:
                for rows in self.touched:
                    self.buffer.index_fill_(0, rows, 0.0)
            self.touched, self.dirty = [], False
            w.grad = self.buffer
        return w.grad

    def accumulate(self, ids: torch.Tensor, grad_out: torch.Tensor) -> None:
        """Add the gradient of ``embedding(ids)`` (upstream ``grad_out``) into ``weight.grad``."""
        unique, inverse = torch.unique(ids, sorted=True, return_inverse=True)
        pad = -1  # aten's "no padding row"
        if self.padding_idx is not None:
            hit = (unique == self.padding_idx).nonzero()
            pad = int(hit[0, 0]) if len(hit) else -1
        rows = torch.ops.aten.embedding_dense_backward(grad_out, inverse, len(unique), pad, False)
        grad = self._grad()
        grad.index_add_(0, unique, rows.to(grad.dtype))
        if grad is self.buffer:
            self.touched.append(unique)
            if len(self.touched) > MAX_TOUCHED:  # .grad never cleared (zero_grad(set_to_none=False)): bound the list
                self.touched, self.dirty = [], True

    def note_autograd_grad(self, grad: torch.Tensor | None) -> None:
        """Tensor hook: autograd delivers a gradient too (the matrix used outside the embedding module),
        which may land in the buffer's other rows; the buffer is then zeroed in full before reuse."""
        if grad is not None:
            self.dirty = True


class _EmbeddingRows(torch.autograd.Function):
    """``F.embedding`` whose backward writes ``weight.grad`` itself, row-wise (returns no weight grad)."""

    @staticmethod
    def forward(ctx, ids, weight, state: RowGradState):
        ctx.save_for_backward(ids)
        ctx.state = state
        return F.embedding(ids, weight, state.padding_idx)

    @staticmethod
    def backward(ctx, grad_out):
        (ids,) = ctx.saved_tensors
        ctx.state.accumulate(ids, grad_out)
        return None, None, None


def _supported(embedding) -> bool:
    return (isinstance(embedding, torch.nn.Embedding) and not embedding.sparse and embedding.max_norm is None
            and not embedding.scale_grad_by_freq and embedding.weight.requires_grad
            and embedding.weight.dtype == torch.float32 and embedding.weight.device.type == "cpu")


@contextlib.contextmanager
def row_grads(model: torch.nn.Module, enabled: bool = True) -> Iterator[RowGradState | None]:
    """Within the block, ``model``'s input embedding (``get_input_embeddings()``) back-propagates row-wise.

    Yields the :class:`RowGradState`, or None where the path does not apply (disabled, no Hugging Face
    input embedding, not a plain float32 CPU ``nn.Embedding`` that trains); the model is unchanged after
    the block (a ``.grad`` still attached stays as it is).
    """
    getter = getattr(model, "get_input_embeddings", None)
    embedding = getter() if enabled and callable(getter) else None
    if embedding is None or not _supported(embedding):
        yield None
        return
    state = RowGradState(embedding)
    plain = embedding.forward

    def forward(ids: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and embedding.weight.requires_grad:
            return _EmbeddingRows.apply(ids, embedding.weight, state)
        return plain(ids)

    had_own = "forward" in embedding.__dict__
    handle = embedding.weight.register_hook(state.note_autograd_grad)
    embedding.forward = forward
    try:
        yield state
    finally:
        if had_own:
            embedding.forward = plain
        else:
            del embedding.forward  # the class's own forward again
        handle.remove()
        state.buffer = None  # a .grad still attached stays as it is
