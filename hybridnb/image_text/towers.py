"""Image towers for :class:`hybridnb.image_text.model.ImageTextModel`, each a `torch.nn.Module` with ``out_dim``.

A tower's ``inputs(table, items)`` makes what its ``forward`` takes for items of an
:class:`~hybridnb.image_text.caption_table.ImageTextTable` (normalised pixels, or looked-up feature rows), and
``forward`` returns (B, out_dim) features; the model's projection maps them into the shared space.

* offline, trained from scratch: :class:`SmallCNN`, :class:`TinyViT`;
* fixed features from a ``.npy`` file: :class:`PrecomputedFeatures`;
* pre-trained and frozen, offline (LiT): :class:`FrozenFeatures`, e.g. ``"efficientnet-lite0"``, features
  computed once per image and cached on disk (:mod:`hybridnb.image_text.image_features`);
* pre-trained, for users with a network: :class:`CLIPVision` (transformers) and :class:`OpenCLIPVision`
  (open_clip, an optional dependency).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import weakref

import numpy as np
import torch
from torch import Tensor, nn

from hybridnb.image_text import image_features
from hybridnb.image_text.caption_table import ImageTextTable

__all__ = ["IMAGE_TOWERS", "FROZEN_TOWERS", "PixelTower", "SmallCNN", "TinyViT", "PrecomputedFeatures",
           "FrozenFeatures", "EfficientNetLite0Features", "CLIPVision", "OpenCLIPVision", "build_image_tower"]


class PixelTower(nn.Module):
    """Base of the towers that see pixels: ``inputs`` gives normalised float (B, 3, S, S) images."""

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
            raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(3, 1, 1), persistent=False)

    def inputs(self, table: ImageTextTable, items) -> Tensor:
        pixels = torch.from_numpy(table.pixels(items, self.image_size)).to(self.mean.device)
        return (pixels.permute(0, 3, 1, 2).float() / 255 - self.mean) / self.std


class SmallCNN(PixelTower):
    """A small convolutional network trained from scratch: a stem and `depth` stride-2 conv blocks
    (channels doubling from `width`), global average pooling, a linear head. GroupNorm, not BatchNorm,
    so an embedding never depends on the other images of its batch (chunked / GradCache steps and
    evaluation see the same function as training)."""

    def __init__(self, image_size: int = 64, out_dim: int = 256, width: int = 32, depth: int = 4):
        super().__init__(image_size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        chans = [width * 2 ** k for k in range(depth + 1)]
        layers = [nn.Conv2d(3, width, 3, padding=1), nn.GroupNorm(8, width), nn.GELU()]
        for c_in, c_out in zip(chans, chans[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GroupNorm(8, c_out), nn.GELU()]
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(chans[-1], out_dim)
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


class TinyViT(PixelTower):
    """A small Vision Transformer (Dosovitskiy et al. 2021) trained from scratch: patch embedding, a class
    token, learned positions, pre-norm `torch.nn.TransformerEncoder` layers, the class token's output."""

    def __init__(self, image_size: int = 64, out_dim: int = 256, patch_size: int = 8, width: int = 192,
                 depth: int = 4, heads: int = 3):
        super().__init__(image_size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.patch = nn.Conv2d(3, width, patch_size, stride=patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.randn(1, 1 + (image_size // patch_size) ** 2, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, out_dim)
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1) + self.pos
        return self.head(self.norm(self.blocks(tokens)[:, 0]))


class PrecomputedFeatures(nn.Module):
    """Fixed image features (e.g. from a CLIP run elsewhere): row ``r`` of `features` belongs to ``ids[r]``.

    `features`: a (N, D) array or a ``.npy`` path; `ids`: the item ids (as in ``ImageTextTable.ids``) or a
    text file with one id per line. ``inputs`` looks the table's items up by id; ``forward`` is the identity
    (only the model's projection is trained).
    """

    def __init__(self, features: np.ndarray | str | Path, ids: Sequence[str] | str | Path):
        super().__init__()
        if isinstance(features, (str, Path)):
            features = np.load(features)
        if isinstance(ids, (str, Path)):
            ids = Path(ids).read_text(encoding="utf-8").split("\n")
            ids = ids[:-1] if ids and ids[-1] == "" else ids
        feats = np.asarray(features, dtype=np.float32)
        ids = [str(i) for i in ids]
        if feats.ndim != 2 or len(feats) != len(ids) or not np.isfinite(feats).all():
            raise ValueError(f"features must be a finite (N, D) array with one row per id; got shape {feats.shape} "
                             f"for {len(ids)} ids")
        if len(set(ids)) != len(ids):
            raise ValueError("ids of the precomputed features are not unique")
        self.row = {i: r for r, i in enumerate(ids)}
        self.register_buffer("features", torch.from_numpy(feats), persistent=False)
        self.out_dim = feats.shape[1]

    def inputs(self, table: ImageTextTable, items) -> Tensor:
        ids = [table.ids[i] for i in np.asarray(items, dtype=np.int64).reshape(-1).tolist()]
        missing = [i for i in ids if i not in self.row]
        if missing:
            raise KeyError(f"{len(missing)} item(s) have no precomputed features, e.g. {missing[:3]}")
        return self.features[torch.tensor([self.row[i] for i in ids], device=self.features.device)]

    def forward(self, x: Tensor) -> Tensor:
        return x


class FrozenFeatures(nn.Module):
    """A frozen pre-trained image tower whose features come from the on-disk cache (LiT's locked tower).

    ``prepare(table)`` reads (or computes once and caches) the features of every image of `table`
    (:func:`hybridnb.image_text.image_features.cached_features`), or takes them from the table it was cut from
    (``prepare(table, parent)``); ``inputs(table, items)`` looks rows up, preparing a table it has not seen;
    ``forward`` is the identity, so only the model's image projection trains. Nothing of the tower is in
    ``state_dict()``: a run's ``model.pt`` holds the trained text layers and the projections.
    """

    def __init__(self, extractor: str, image_size: int = 224, batch_size: int = 64, show_progress: bool = True):
        super().__init__()
        self.extractor = image_features.build_extractor(extractor, image_size=image_size, batch_size=batch_size)
        self.out_dim = self.extractor.dim
        self.show_progress = show_progress
        self._tables: dict[int, tuple[weakref.ref, Tensor]] = {}  # id(table) -> (table, its features)

    def prepare(self, table: ImageTextTable, parent: ImageTextTable | None = None) -> Tensor:
        """(len(table), out_dim) features of `table`, kept for its later ``inputs`` calls.

        `parent`: the table `table` was cut from (``parent.select_languages(...)``: each item keeps its image).
        When it kept every item, `table` gets `parent`'s features, its images neither hashed nor read: a language
        selection holds a copy of the images, so the memo misses it, and the cache key would hash every pixel
        again (~470 MB for the 224 px OpenMoji training split) only to name `parent`'s folder. Otherwise
        `table`'s own cache, as without `parent`: rows computed in other batches differ in the last bits.
        """
        known = self._tables.get(id(table))
        if known is not None and known[0]() is table:
            return known[1]
        if parent is not None and _same_images(table, parent):
            features = self.prepare(parent)
        else:
            features = torch.from_numpy(image_features.cached_features(table, self.extractor, self.show_progress))
        self._tables = {k: v for k, v in self._tables.items() if v[0]() is not None}  # forget collected tables
        self._tables[id(table)] = (weakref.ref(table), features)
        return features

    def inputs(self, table: ImageTextTable, items) -> Tensor:
        rows = torch.from_numpy(np.asarray(items, dtype=np.int64).reshape(-1))
        return self.prepare(table)[rows]

    def forward(self, x: Tensor) -> Tensor:
        return x


def _same_images(table: ImageTextTable, parent: ImageTextTable) -> bool:
    """Whether `table`, cut from `parent`, holds all of its items in order, stored alike (the same image size,
    or the same files); the pixels themselves are the caller's word (reading them is what this saves)."""
    if table.ids != parent.ids:
        return False
    if table.images is not None:
        return parent.images is not None and table.images.shape == parent.images.shape
    return table.image_paths == parent.image_paths


class EfficientNetLite0Features(FrozenFeatures):
    """EfficientNet-Lite0 ImageNet features (1280-d), frozen and cached: the offline default (see
    :mod:`hybridnb.image_text.image_features` and reports/benchmarks/image_towers.md for why this one)."""

    def __init__(self, image_size: int = 224, batch_size: int = 64, show_progress: bool = True):
        super().__init__("efficientnet-lite0", image_size, batch_size, show_progress)


class CLIPVision(PixelTower):
    """A Hugging Face CLIP vision tower with its projection (``CLIPVisionModelWithProjection``), by hub name
    (e.g. ``"openai/clip-vit-base-patch32"``, needs a network or the local HF cache) or local folder."""

    def __init__(self, name_or_path: str):
        from transformers import CLIPVisionModelWithProjection
        from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

        model = CLIPVisionModelWithProjection.from_pretrained(name_or_path)
        super().__init__(int(model.config.image_size), OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
        self.model = model
        self.out_dim = int(model.config.projection_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(pixel_values=x).image_embeds


class OpenCLIPVision(PixelTower):
    """The image encoder of an open_clip model (``pip install open_clip_torch``), e.g.
    ``OpenCLIPVision("ViT-B-32", pretrained="laion2b_s34b_b79k")``; weights come from open_clip's hub."""

    def __init__(self, model_name: str, pretrained: str | None = None):
        try:
            import open_clip
        except ImportError as err:
            raise ImportError("the open_clip image tower needs open_clip: pip install open_clip_torch") from err
        model = open_clip.create_model(model_name, pretrained=pretrained)
        visual = model.visual
        size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
        cfg = getattr(visual, "preprocess_cfg", None) or {}
        super().__init__(int(size), cfg.get("mean", open_clip.OPENAI_DATASET_MEAN),
                         cfg.get("std", open_clip.OPENAI_DATASET_STD))
        self.visual = visual
        self.out_dim = int(visual.output_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.visual(x)


IMAGE_TOWERS = {"cnn": SmallCNN, "vit": TinyViT, "efficientnet-lite0": EfficientNetLite0Features,
                "precomputed": PrecomputedFeatures, "clip": CLIPVision, "open_clip": OpenCLIPVision}
FROZEN_TOWERS = ("efficientnet-lite0",)  # pre-trained, frozen, features cached at ``image_size``


def build_image_tower(kind: str, **kwargs) -> nn.Module:
    """An image tower by name (:data:`IMAGE_TOWERS`); `kwargs` go to its constructor."""
    if kind not in IMAGE_TOWERS:
        raise ValueError(f"unknown image tower {kind!r}; valid: {', '.join(IMAGE_TOWERS)}")
    return IMAGE_TOWERS[kind](**kwargs)
