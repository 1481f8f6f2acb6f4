"""Multilingual image-text retrieval: a text-image dual encoder trained with hybrid batches.

Model
-----
:class:`ImageTextModel` = any :class:`hybridnb.models.encoders.Encoder` as the text tower + a pluggable image tower
(:mod:`hybridnb.image_text.towers`, :func:`build_image_tower`: ``"cnn"`` / ``"vit"`` trained from scratch for
offline runs, ``"precomputed"`` features from a ``.npy`` file, ``"clip"`` (transformers) or ``"open_clip"``
for users with a network), each
followed by a linear projection into a shared space and L2 normalisation. The image-text loss is the
symmetric InfoNCE of CLIP (Radford et al. 2021): the mean of text->image and image->text cross-entropy.

Hybrid batches for image-text
-----------------------------
The batch sampler (:class:`hybridnb.training.sampling.HybridBatchSampler`, over ``table.available()``) is reused
unchanged; its ``(item, query_language, passage_language)`` triples are read as follows by
:func:`collate_image_text`:

* ``mono`` batch (X-X-mono): every caption is in one language X, matched against the B images. All in-batch
  negatives share the positive's language, so the model cannot tell the right caption by its language and
  must match content to pictures in each language separately: it learns image-text alignment per language.
* ``cross`` batch (X-Y): pair i has a caption in its query language X_i (languages vary over the batch)
  matched against the images, and also a *caption-caption* pair: that caption and the parallel caption of
  the same image in its passage language Y_i != X_i, scored with text-text InfoNCE (in-batch negatives: the
  other parallel captions). The image term uses mixed-language captions, so an image must prefer its own
  caption over captions of other images in any language; the text-text term aligns the languages with each
  other directly, which the image pivot only does indirectly. This is the paper's cross-lingual signal.
* ``hybrid`` mixes the two per batch (probability alpha of mono), as in Elmahdy et al. (2024) for text:
  mono batches for strong per-language retrieval, cross batches for cross-lingual alignment and a low
  language bias when captions in many languages are pooled. ``mixed`` / ``en`` batches are read like mono
  ones (one caption per pair in its language, no text-text term).

    tower = build_image_tower("cnn", image_size=64)
    model = ImageTextModel(Encoder.from_pretrained(OFFLINE_E5), tower, dim=256)
    batch = collate_image_text(train, sampler.next_batch().pairs, tower=model.image_tower)
    loss = batch_loss(model, batch)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hybridnb.image_text.caption_table import ImageTextTable
from hybridnb.image_text.towers import (IMAGE_TOWERS, CLIPVision, FrozenFeatures, OpenCLIPVision, PixelTower,
                                       PrecomputedFeatures, SmallCNN, TinyViT, build_image_tower)
from hybridnb.training.losses import DEFAULT_TEMPERATURE, info_nce

__all__ = ["IMAGE_TOWERS", "PixelTower", "SmallCNN", "TinyViT", "PrecomputedFeatures", "FrozenFeatures", "CLIPVision",
           "OpenCLIPVision", "build_image_tower", "ImageTextModel", "symmetric_info_nce", "image_text_loss",
           "ImageTextBatch", "collate_image_text", "batch_embeddings", "batch_loss"]


# --------------------------------------------------------------------------------------------------
# the dual encoder and its loss
# --------------------------------------------------------------------------------------------------


class ImageTextModel(nn.Module):
    """Text encoder + image tower, each with a linear projection to `dim`, outputs L2-normalised.

    Captions are embedded as `caption_role` ("query": E5's prefix for symmetric tasks; a caption is both a
    query and a candidate). The towers and projections are moved to the text encoder's device.
    """

    def __init__(self, text_encoder: nn.Module, image_tower: nn.Module, dim: int = 256,
                 caption_role: str = "query"):
        super().__init__()
        self.text_encoder, self.image_tower, self.caption_role = text_encoder, image_tower, caption_role
        self.text_proj = nn.Linear(int(text_encoder.dim), dim, bias=False)
        self.image_proj = nn.Linear(int(image_tower.out_dim), dim, bias=False)
        self.dim = dim
        self.frozen_text = None  # a text_features.FrozenTextLayers: the lower text layers frozen and cached
        device = getattr(text_encoder, "device", torch.device("cpu"))
        self.image_tower.to(device), self.text_proj.to(device), self.image_proj.to(device)

    @property
    def device(self) -> torch.device:
        return self.text_proj.weight.device

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        if self.frozen_text is not None:  # the top text layers from the cached states of the frozen ones
            return F.normalize(self.text_proj(self.frozen_text(list(texts)).float()), dim=-1)
        features = self.text_encoder.tokenize(list(texts), self.caption_role)
        return F.normalize(self.text_proj(self.text_encoder(features).float()), dim=-1)

    def prepare_texts(self, texts: Sequence[str]) -> None:
        """With frozen lower text layers, read (or compute once and cache) their states for `texts`."""
        if self.frozen_text is not None:
            self.frozen_text.prepare(texts)

    def encode_images(self, inputs: Tensor) -> Tensor:
        """Embed what ``image_tower.inputs(table, items)`` returned."""
        return F.normalize(self.image_proj(self.image_tower(inputs.to(self.device)).float()), dim=-1)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        """float32 (N, dim) caption embeddings, in eval mode (for evaluation)."""
        return self._embed(lambda a, b: self.encode_text(texts[a:b]), len(texts), batch_size)

    @torch.no_grad()
    def embed_images(self, table: ImageTextTable, items=None, batch_size: int = 128) -> np.ndarray:
        """float32 (N, dim) embeddings of the images of `items` (default: all), in eval mode."""
        items = np.arange(len(table)) if items is None else np.asarray(items, dtype=np.int64)
        return self._embed(lambda a, b: self.encode_images(self.image_tower.inputs(table, items[a:b])),
                           len(items), batch_size)

    def _embed(self, fn, n: int, batch_size: int) -> np.ndarray:
        was_training = self.training
        self.eval()
        try:
            parts = [fn(a, min(a + batch_size, n)).float().cpu().numpy() for a in range(0, n, batch_size)]
        finally:
            self.train(was_training)
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)


def symmetric_info_nce(text_emb: Tensor, image_emb: Tensor,
                       temperature: float | Tensor = DEFAULT_TEMPERATURE) -> Tensor:
    """CLIP's loss: mean of text->image and image->text cross-entropy over the in-batch (B, B) similarities."""
    return info_nce(text_emb, image_emb, temperature=temperature, symmetric=True)


def image_text_loss(caption_emb: Tensor, image_emb: Tensor, parallel_emb: Tensor | None = None,
                    temperature: float | Tensor = DEFAULT_TEMPERATURE, text_weight: float = 1.0) -> Tensor:
    """Symmetric image-text InfoNCE, plus ``text_weight`` x caption->parallel-caption InfoNCE when the batch
    carries parallel captions (cross batches)."""
    loss = symmetric_info_nce(caption_emb, image_emb, temperature)
    if parallel_emb is not None:
        loss = loss + text_weight * info_nce(caption_emb, parallel_emb, temperature=temperature)
    return loss


# --------------------------------------------------------------------------------------------------
# batches
# --------------------------------------------------------------------------------------------------


@dataclass
class ImageTextBatch:
    """Captions (query language), images and, for cross batches, parallel captions (passage language)."""

    items: np.ndarray
    captions: list[str]
    caption_languages: list[str]
    parallel_captions: list[str] | None = None
    parallel_languages: list[str] | None = None
    images: Tensor | None = None

    def __len__(self) -> int:
        return len(self.items)


def collate_image_text(table: ImageTextTable, pairs: np.ndarray, tower: nn.Module | None = None) -> ImageTextBatch:
    """A batch from sampler triples ``(item, query_language, passage_language)`` (shape (B, 3)).

    Captions are in the query language. If every pair has passage language != query language (a cross
    batch), the parallel captions in the passage language come too; if none has (mono / mixed / en), none
    do; a mixture is an error. With `tower`, ``images`` holds ``tower.inputs(table, items)``.
    """
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 3 or len(pairs) == 0 or not np.issubdtype(pairs.dtype, np.integer):
        raise ValueError(f"pairs must be a non-empty int array of shape (B, 3), got {pairs.dtype} {pairs.shape}")
    n, n_langs = len(table), len(table.languages)
    if pairs.min() < 0 or pairs[:, 0].max() >= n or pairs[:, 1:].max() >= n_langs:
        raise ValueError(f"pairs out of range: items must be in [0, {n}), languages in [0, {n_langs})")
    cross = pairs[:, 1] != pairs[:, 2]
    if cross.any() and not cross.all():
        raise ValueError("a batch must be all cross pairs (query language != passage language) or none")

    def texts(col: int) -> tuple[list[str], list[str]]:
        out, langs = [], []
        for item, lang in pairs[:, [0, col]].tolist():
            g = table.languages[lang]
            caption = table.captions[g][item]
            if caption is None:
                raise ValueError(f"item {table.ids[item]!r} has no caption in {g!r}")
            out.append(caption), langs.append(g)
        return out, langs

    captions, langs = texts(1)
    parallel, parallel_langs = texts(2) if cross.all() else (None, None)
    images = None if tower is None else tower.inputs(table, pairs[:, 0])
    return ImageTextBatch(pairs[:, 0].copy(), captions, langs, parallel, parallel_langs, images)


def batch_embeddings(model: ImageTextModel, batch: ImageTextBatch) -> tuple[Tensor, Tensor, Tensor | None]:
    """(captions, images, parallel captions or None) of one batch, each (B, dim), embedded in this order:
    captions, parallel captions, images (the order dropout draws its masks in)."""
    if batch.images is None:
        raise ValueError("the batch has no images: collate it with tower=model.image_tower")
    captions = model.encode_text(batch.captions)
    parallel = None if batch.parallel_captions is None else model.encode_text(batch.parallel_captions)
    return captions, model.encode_images(batch.images), parallel


def batch_loss(model: ImageTextModel, batch: ImageTextBatch, temperature: float | Tensor = DEFAULT_TEMPERATURE,
               text_weight: float = 1.0) -> Tensor:
    """The loss of one batch (images loaded: ``collate_image_text(..., tower=model.image_tower)``)."""
    captions, images, parallel = batch_embeddings(model, batch)
    return image_text_loss(captions, images, parallel, temperature, text_weight)
