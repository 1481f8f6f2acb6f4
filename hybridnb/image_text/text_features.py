"""The text tower's frozen lower layers, run once per caption and cached on disk; only the top layers train.

Why: on 2 CPU cores the text tower is the whole cost of an image-text step once the image features are
cached (multilingual-e5-small, batch 32: ~0.75 s a mono step, ~1.7 s a cross step, and 39 s to embed the
5,698 test captions of every run; freezing the lower layers alone saved little, 0.75 -> 0.55 s, because
their forward pass still ran). With the word embeddings and the first ``n_frozen`` transformer layers
frozen, their output for a caption is a fixed function of its tokens, so it is computed once (in eval
mode, no dropout), kept on disk, and every step, validation and evaluation runs only the top layers from
there. The outputs are those of the full model with the same weights (a test checks it to 1e-5).

It is the text side of LiT's trade (Zhai et al. 2022 lock the image tower): on 3,000 training emojis few
trainable parameters generalise better (the frozen-everything linear probe of
reports/benchmarks/image_towers.md beat full fine-tuning, 0.495 vs 0.471 t2i R@10), and the rows of caption
languages never trained on are not moved by the languages that are.

Cache: ``cache_root()/text_states/<key>/{states.npy, offsets.npy, texts.json, meta.json}``: the token states
(float32 (tokens, hidden)) of the captions of one call of :meth:`FrozenTextLayers.prepare`, ragged
(``offsets``), keyed by the frozen weights' sha256, ``n_frozen``, ``max_length``, the prefix and the captions;
written atomically, with a ``manifest.json`` (last, :mod:`hybridnb.file_hashes`) that is checked before every
read: a folder that does not match it is computed again.

    frozen = FrozenTextLayers(encoder, n_frozen=10)   # captions embedded as E5 "query: " texts
    frozen.prepare(captions)            # once per caption set: read from disk or computed
    emb = frozen(captions)              # (B, D) differentiable through the top layers only
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence
from tqdm.auto import tqdm

from hybridnb import file_hashes, reporting
from hybridnb.paths import cache_root
from hybridnb.training.length_groups import split_by_length

__all__ = ["FrozenTextLayers", "transformer_layers"]


def transformer_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer layers of a BERT-style encoder (``model.encoder.layer``)."""
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"frozen text layers need a BERT-style encoder (model.encoder.layer); "
                         f"{type(model).__name__} has none")
    return layers


def _texts_json(texts: list[str]) -> bytes:
    """The cache's ``texts.json``: the captions in order, as UTF-8 JSON."""
    return json.dumps(texts, ensure_ascii=False).encode("utf-8")


class _StatesIn(nn.Module):
    """Stands in for the embedding layer while the top layers run: passes the cached states through."""

    def forward(self, input_ids=None, position_ids=None, token_type_ids=None, inputs_embeds=None, **_):
        return inputs_embeds


class FrozenTextLayers:
    """The word embeddings and the first `n_frozen` layers of `encoder`'s transformer, frozen and cached.

    ``encoder`` is a :class:`hybridnb.models.encoders.Encoder` over a BERT-style model (E5, mBERT, XLM-R, LaBSE);
    its frozen parameters get ``requires_grad=False`` here. Not an ``nn.Module``: the weights stay the
    encoder's (and in the model's ``state_dict``); this object holds the cached states.
    """

    def __init__(self, encoder, n_frozen: int, role: str = "query", show_progress: bool = True,
                 length_groups: int = 1):
        self.encoder, self.model, self.role = encoder, encoder.model, role
        self.prefix = encoder.config.prefix(role)  # E5: "query: " (captions are both queries and candidates)
        layers = transformer_layers(self.model)
        if isinstance(n_frozen, bool) or not isinstance(n_frozen, int) or not 0 < n_frozen <= len(layers):
            raise ValueError(f"frozen_text_layers must be an int in [1, {len(layers)}] for this "
                             f"{len(layers)}-layer text tower (0: train every layer), got {n_frozen!r}")
        if isinstance(length_groups, bool) or not isinstance(length_groups, int) or length_groups < 1:
            raise ValueError(f"length_groups must be a positive int (1: a batch padded as one), got {length_groups!r}")
        self.n_frozen, self.show_progress, self.length_groups = n_frozen, show_progress, length_groups
        self.frozen = [self.model.embeddings, *layers[:n_frozen]]
        self.top = nn.ModuleList(layers[n_frozen:])
        for module in self.frozen:
            module.requires_grad_(False)
        self._states: dict[str, Tensor] = {}  # caption -> (tokens, hidden) float32
        self._weights_key: str | None = None

    # ---- the cache -------------------------------------------------------------------------------
    def weights_key(self) -> str:
        """sha256 (16 hex) of the frozen weights: another checkpoint, another cache.

        Hashed once, on first use, not on every ``prepare`` (train, validation, test): a pass over E5-small's
        96M-parameter embedding takes ~0.6 s, and the weights are frozen (the states kept in memory assume it
        too)."""
        if self._weights_key is None:
            h = hashlib.sha256()
            for module in self.frozen:
                for name, tensor in module.state_dict().items():
                    h.update(name.encode())
                    h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy())  # its buffer, not a copy
            self._weights_key = h.hexdigest()[:16]
        return self._weights_key

    def _folder(self, texts: list[str]) -> Path:
        key = {"weights": self.weights_key(), "n_frozen": self.n_frozen, "max_length": self.encoder.config.max_length,
               "prefix": self.prefix, "pooling_input": "hidden_states[n_frozen]",
               "texts": hashlib.sha256(json.dumps(texts).encode()).hexdigest()}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return cache_root() / "text_states" / f"{type(self.model).__name__}-{self.n_frozen}-{digest}"

    def prepare(self, captions: Sequence[str]) -> None:
        """Make the states of `captions` available: from memory, the disk cache (one folder per caption set,
        whatever was prepared before), or computed (longest first, in batches of 64, with a progress bar) and
        cached."""
        texts = sorted(set(captions))
        if all(t in self._states for t in texts):
            return
        folder = self._folder(texts)
        loaded = self._read(folder, texts)
        if loaded is None:
            missing = [t for t in texts if t not in self._states]
            self._states.update(zip(missing, self._compute(missing)))
            loaded = [self._states[t] for t in texts]
            with reporting.atomic_dir(folder) as tmp:
                states = torch.cat(loaded).numpy()
                np.save(tmp / "states.npy", states)
                np.save(tmp / "offsets.npy", np.cumsum([0] + [len(s) for s in loaded]))
                (tmp / "texts.json").write_bytes(_texts_json(texts))
                (tmp / "meta.json").write_text(json.dumps({"model": type(self.model).__name__,
                                                           "n_frozen": self.n_frozen, "texts": len(texts),
                                                           "tokens": int(len(states))}), encoding="utf-8")
                file_hashes.write_manifest(tmp)  # last: what _read verifies before any use
        self._states.update(zip(texts, loaded))

    @staticmethod
    def _read(folder: Path, texts: list[str]) -> list[Tensor] | None:
        if not folder.is_dir():
            return None
        why = file_hashes.manifest_problem(folder)  # a flipped byte is still a finite float: the hash sees it
        if why is not None:
            print(f"[hybridnb] {why}: the caption states are computed again", flush=True)
            return None
        try:
            # compared as bytes, as written: parsing ~55k captions back took ~0.2 s a read, several reads a run
            if (folder / "texts.json").read_bytes() != _texts_json(texts):
                return None
            # memory-mapped (copy-on-write, never written): runs training in parallel processes share the pages
            states, offsets = np.load(folder / "states.npy", mmap_mode="c"), np.load(folder / "offsets.npy")
        except (OSError, ValueError):
            return None  # absent or damaged: computed again and replaced
        if len(offsets) != len(texts) + 1 or offsets[-1] != len(states) or not all(
                np.isfinite(states[a:a + 65536]).all() for a in range(0, len(states), 65536)):  # no 1-byte copy
            return None                                                                          # of it all
        states = torch.from_numpy(states)
        return [states[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]

    @torch.no_grad()
    def _compute(self, texts: list[str]) -> list[Tensor]:
        """The states after layer `n_frozen` (hidden_states[n_frozen] of the full model), in eval mode.

        Each caption is tokenised once (the lengths order the batches) and padded per batch, as the encoder's
        ``tokenize`` would: the same tensors, one tokeniser pass fewer."""
        rows = self.encoder.token_rows(texts, self.role)  # Encoder.tokenize in two steps: tokenised once, padded per batch
        lengths = [len(ids) for ids in rows["input_ids"]]
        order = np.argsort(lengths, kind="stable")[::-1]
        out: list[Tensor | None] = [None] * len(texts)
        was_training = self.model.training
        self.model.eval()
        try:
            for start in tqdm(range(0, len(texts), 64), disable=not self.show_progress, unit="batch",
                              desc=f"text layers 1-{self.n_frozen}"):
                idx = order[start:start + 64]
                features = {k: v.to(self.encoder.device) for k, v in self.encoder.pad_rows(rows, idx).items()}
                hidden = self.model(**features, output_hidden_states=True).hidden_states[self.n_frozen]
                for row, i in enumerate(idx):
                    out[i] = hidden[row, :lengths[i]].float().cpu().clone()
        finally:
            self.model.train(was_training)
        return out

    # ---- the top layers --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _top_only(self):
        """The encoder's model with the embedding layer passing states through and only the top layers."""
        model, encoder = self.model, self.model.encoder
        embeddings, layers = model.embeddings, encoder.layer
        model.embeddings, encoder.layer = _StatesIn(), self.top
        try:
            yield model
        finally:
            model.embeddings, encoder.layer = embeddings, layers

    def __call__(self, captions: Sequence[str]) -> Tensor:
        """(B, D) embeddings of `captions` (pooled, projected and normalised as the encoder's forward),
        differentiable through the top layers; captions not prepared are computed on the fly (not cached).

        The top layers see the captions in ``length_groups`` groups of about equal size, sorted by length, each
        padded to its own longest caption: a caption's attention and pooling see only its own tokens, so this is
        the same function as one batch padded to its longest, on fewer tokens (OpenMoji-CLDR: a batch of 32
        captions padded to its longest is ~49% padding, in 2 length groups ~30%;
        benchmarks/bench_length_groups.py). Dropout draws its masks per group, so a run's results change with
        ``length_groups`` within training noise."""
        texts = list(captions)
        missing = sorted({t for t in texts if t not in self._states})  # not set(self._states): ~55k captions
        if missing:
            self._states.update(zip(missing, self._compute(missing)))
        states = [self._states[t] for t in texts]
        lengths = torch.tensor([len(s) for s in states])
        groups = split_by_length(lengths, self.length_groups) if self.length_groups > 1 and len(self.top) \
            else [torch.arange(len(texts))]
        emb = torch.cat([self._top_pooled([states[i] for i in group.tolist()]) for group in groups])
        if len(groups) > 1:
            emb = emb[torch.argsort(torch.cat(groups))]  # back in the captions' order
        emb = self.encoder.dense(emb)  # (B, D)
        return F.normalize(emb, p=2, dim=-1) if self.encoder.config.normalize else emb

    def _top_pooled(self, states: list[Tensor]) -> Tensor:
        """(b, H) pooled output of the top layers for the cached states of b captions, padded to the longest."""
        hidden = pad_sequence(states, batch_first=True)  # (b, T, H), right-padded with zeros as the tokenizer pads
        lengths = torch.tensor([len(s) for s in states])
        mask = (torch.arange(hidden.shape[1]) < lengths[:, None]).long()  # (b, T)
        device = self.encoder.device
        hidden, mask = hidden.to(device), mask.to(device)
        if len(self.top):
            with self._top_only() as model:
                hidden = model(inputs_embeds=hidden, attention_mask=mask).last_hidden_state.float()
        if self.encoder.config.pooling == "cls":
            return hidden[:, 0]
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
