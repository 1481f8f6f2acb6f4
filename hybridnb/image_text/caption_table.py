"""Image-text data: a parallel caption table over images, and the XTD10 / Multi30K task 1 loaders.

:class:`ImageTextTable` is the image-text analogue of :class:`hybridnb.data.train_data.ParallelTable`: item ->
one image and, per language, one caption (None where the item lacks that language). The batch sampler
(:mod:`hybridnb.training.sampling`) only sees ``table.available()``; :func:`hybridnb.image_text.model.collate_image_text`
turns its ``(item, query_language, passage_language)`` triples into captions and images. Images are held
either in memory (a uint8 ``(N, H, W, 3)`` array: the rendered OpenMoji-CLDR set,
:mod:`hybridnb.image_text.openmoji_cldr`) or as file paths read on demand (COCO / Flickr30k photos).

Loaders over the pinned caption files (:mod:`hybridnb.data.sources`; ``HYBRIDNB_MIRROR`` serves them offline):

* :func:`load_xtd10`: XTD10 (Aggarwal & Kale 2020), 1,000 COCO train2014 images with one caption in
  each of 11 languages (en es it ko pl ru tr zh from XTD10, de fr from MIC, ja from STAIR).
* :func:`load_multi30k`: Multi30K task 1 (Elliott et al. 2016), Flickr30k images with one English caption
  and its de / fr / cs translations; splits train (29,000), val (1,014), test_2016_flickr (1,000).

The images are not redistributable here: the user names the folder holding them (``image_root``), and a
FileNotFoundError names that folder, or the missing files, before anything else is done.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

from hybridnb import file_hashes, reporting
from hybridnb.data import sources
from hybridnb.data.languages import (check_every_language_used, check_item_columns, check_languages,
                                     language_counts)

__all__ = ["ImageTextTable", "XTD10_LANGUAGES", "MULTI30K_LANGUAGES", "MULTI30K_SPLITS", "load_xtd10",
           "load_multi30k"]

FORMAT = 1


@dataclass
class ImageTextTable:
    """Item ``ids[i]``: its image (``images[i]`` or the file ``image_paths[i]``) and ``captions[lang][i]``.

    Validated on construction: unique ids and languages, one caption entry (str or None) per item and
    language, every item with at least one caption, every language with at least one item, and exactly one
    of ``images`` (uint8, shape (N, H, W, 3)) or ``image_paths``.
    """

    ids: list[str]
    languages: list[str]
    captions: dict[str, list[str | None]]
    images: np.ndarray | None = None
    image_paths: list[str] | None = None
    name: str = ""
    split: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.ids)
        check_item_columns("ImageTextTable", self.ids, self.languages, {"captions": self.captions},
                           "false negatives: one image twice")
        for lang in self.languages:
            col = self.captions[lang]
            if not all(c is None or (isinstance(c, str) and c.strip()) for c in col):
                raise ValueError(f"captions[{lang!r}] must hold non-empty strings or None")
        if (self.images is None) == (self.image_paths is None):
            raise ValueError("give exactly one of images (a uint8 array) or image_paths")
        if self.images is not None:
            shape = getattr(self.images, "shape", ())
            if getattr(self.images, "dtype", None) != np.uint8 or len(shape) != 4 or shape[0] != n or shape[3] != 3:
                raise ValueError(f"images must be uint8 of shape ({n}, H, W, 3), got "
                                 f"{getattr(self.images, 'dtype', type(self.images))} {shape}")
        elif len(self.image_paths) != n:
            raise ValueError(f"image_paths has {len(self.image_paths)} entries, expected {n}")
        avail = self.available()
        if not avail.any(axis=1).all():
            raise ValueError(f"item {self.ids[int(np.argmin(avail.any(axis=1)))]!r} has no caption in any language")
        check_every_language_used(self.languages, avail, "no captions")

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        counts = language_counts(self.languages, self.available())
        where = f"images {self.images.shape[1:3]}" if self.images is not None else "image files"
        return f"ImageTextTable({self.name or '?'}/{self.split or '-'}: items={len(self)}, {where}, captions={counts})"

    def available(self) -> np.ndarray:
        """Bool (n_items, n_languages): the item has a caption in the language (the sampler's input)."""
        return np.stack([np.array([c is not None for c in self.captions[g]], dtype=bool) for g in self.languages],
                        axis=1)

    def subset(self, indices: Sequence[int] | np.ndarray, split: str | None = None) -> ImageTextTable:
        """The items at `indices` (ints, in that order, or a boolean mask over items)."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"boolean mask has shape {idx.shape}, expected ({len(self)},)")
            idx = np.flatnonzero(idx)
        if idx.size and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 or idx.max() >= len(self)):
            raise ValueError(f"indices must be ints in [0, {len(self)})")
        take = [int(i) for i in idx.reshape(-1)]
        if self.images is not None and take == list(range(len(self))):  # every item in order (e.g. a language
            images = self.images                                          # selection): share, do not copy
        else:
            images = None if self.images is None else np.ascontiguousarray(self.images[take])
        return ImageTextTable(
            [self.ids[i] for i in take], list(self.languages),
            {g: [self.captions[g][i] for i in take] for g in self.languages},
            images=images,
            image_paths=None if self.image_paths is None else [self.image_paths[i] for i in take],
            name=self.name, split=self.split if split is None else split, meta=dict(self.meta))

    def select_languages(self, languages: Sequence[str]) -> ImageTextTable:
        """Keep only `languages` (in that order); items left without a caption are dropped."""
        languages = check_languages(languages, self.languages, "this table")
        keep = self.available()[:, [self.languages.index(g) for g in languages]].any(axis=1)
        sub = self.subset(keep)
        return ImageTextTable(sub.ids, list(languages), {g: sub.captions[g] for g in languages}, sub.images,
                              sub.image_paths, sub.name, sub.split, sub.meta)

    def caption_rows(self, languages: Sequence[str] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Every caption as ``(texts, language codes, item indices)``, language by language (for evaluation)."""
        texts, langs, items = [], [], []
        for g in self.languages if languages is None else languages:
            for i, c in enumerate(self.captions[g]):
                if c is not None:
                    texts.append(c), langs.append(g), items.append(i)
        return texts, np.array(langs, dtype=object), np.array(items, dtype=np.int64)

    def pixels(self, items: Sequence[int] | np.ndarray, size: int | None = None) -> np.ndarray:
        """uint8 (B, size, size, 3) RGB images of `items`.

        In-memory images are returned as stored (resized when `size` differs). Image files are read with
        Pillow, converted to RGB, resized so the shorter side is `size` and centre-cropped (CLIP's
        preprocessing); `size` is required for them.
        """
        items = np.asarray(items, dtype=np.int64).reshape(-1)
        if self.images is not None:
            out = np.asarray(self.images[items])
            if size is None or out.shape[1:3] == (size, size):
                return out
            return np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.Resampling.BICUBIC))
                             for a in out])
        if size is None:
            raise ValueError("this table reads image files of varying size: pass size")
        out = np.empty((len(items), size, size, 3), dtype=np.uint8)
        for r, i in enumerate(items.tolist()):
            with Image.open(self.image_paths[i]) as im:
                out[r] = np.asarray(ImageOps.fit(im.convert("RGB"), (size, size), Image.Resampling.BICUBIC))
        return out

    def save(self, folder: str | Path) -> Path:
        """Write ``table.json`` (+ ``images.npy``) into `folder`, atomically (a complete folder or none)."""
        folder = Path(folder)
        with reporting.atomic_dir(folder) as tmp:
            record = {"format": FORMAT, "ids": self.ids, "languages": self.languages, "captions": self.captions,
                      "image_paths": self.image_paths, "name": self.name, "split": self.split, "meta": self.meta}
            (tmp / "table.json").write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
            if self.images is not None:
                np.save(tmp / "images.npy", np.ascontiguousarray(self.images))
            file_hashes.write_manifest(tmp)  # last: load checks the pixels and captions against it
        return folder

    @classmethod
    def load(cls, folder: str | Path, mmap: bool = False) -> ImageTextTable:
        """Read a table written by :meth:`save` (``mmap=True`` maps the image array instead of reading it)."""
        folder = Path(folder)
        if (folder / file_hashes.MANIFEST).is_file():  # written by save: a changed pixel or caption is refused
            file_hashes.check_manifest(folder, "delete the folder and save the table again (a cache of ours is "
                                               "rebuilt by its loader)")
        record = json.loads((folder / "table.json").read_text(encoding="utf-8"))
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise ValueError(f"{folder}: not an ImageTextTable folder (format {FORMAT})")
        images = np.load(folder / "images.npy", mmap_mode="r" if mmap else None) if record["image_paths"] is None \
            else None
        return cls(record["ids"], record["languages"], record["captions"], images, record["image_paths"],
                   record["name"], record["split"], record["meta"])


# --------------------------------------------------------------------------------------------------
# XTD10 and Multi30K task 1
# --------------------------------------------------------------------------------------------------

#: XTD10's languages (ISO 639-1; the Japanese STAIR file is named "jp").
XTD10_LANGUAGES = ("en", "de", "es", "fr", "it", "ja", "ko", "pl", "ru", "tr", "zh")
_XTD10_FILES = {**{g: f"XTD10/test_1kcaptions_{g}.txt" for g in ("en", "es", "it", "ko", "pl", "ru", "tr", "zh")},
                "de": "MIC/test_1kcaptions_de.txt", "fr": "MIC/test_1kcaptions_fr.txt",
                "ja": "STAIR/test_1kcaptions_jp.txt"}
MULTI30K_LANGUAGES = ("en", "de", "fr", "cs")
MULTI30K_SPLITS = ("train", "val", "test_2016_flickr")


def _check_image_root(image_root: str | Path | None, what: str) -> Path:
    if image_root is None:
        raise FileNotFoundError(f"no image folder given: pass image_root, the folder holding the {what}")
    root = Path(image_root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist or is not a folder; it must hold the "
                                f"{what}")
    return root


def _check_images(paths: list[Path], root: Path, what: str) -> None:
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"image folder {str(root)!r} lacks {len(missing)} of the {len(paths)} {what}, "
                                f"e.g. {', '.join(missing[:3])}")


def _read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file (optionally .gz); only "\\n" ends a line, a final empty line is dropped."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r").strip() for line in lines]


def _table(names: list[str], columns: dict[str, list[str]], root: Path, name: str, split: str,
           check_images: bool, what: str) -> ImageTextTable:
    for lang, col in columns.items():
        if len(col) != len(names):
            raise ValueError(f"{name} {split}: {len(col)} captions in {lang!r} for {len(names)} images")
    paths = [root / n for n in names]
    if check_images:
        _check_images(paths, root, what)
    captions = {g: [c or None for c in col] for g, col in columns.items()}
    return ImageTextTable(list(names), list(columns), captions, image_paths=[str(p) for p in paths], name=name,
                          split=split, meta={"image_root": str(root)})


def load_xtd10(image_root: str | Path, languages: Sequence[str] | None = None,
               check_images: bool = True) -> ImageTextTable:
    """XTD10: 1,000 COCO train2014 images, one caption per language (11 languages, :data:`XTD10_LANGUAGES`).

    image_root: the folder with the COCO train2014 images (``COCO_train2014_000000061844.jpg``, ...; the
        names are listed in ``XTD10/test_image_names.txt``). check_images: fail unless all 1,000 exist.
    The caption files come from :func:`hybridnb.data.sources.fetch` (mirror or pinned download). Item ids are the
    image file names. XTD10 is a test set: it has no training split.
    """
    langs = check_languages(languages, XTD10_LANGUAGES, "XTD10")
    what = "COCO train2014 images (e.g. COCO_train2014_000000061844.jpg)"
    root = _check_image_root(image_root, what)
    folder = sources.fetch("xtd10", [{"ja": "jp"}.get(g, g) for g in langs])  # sources uses the file names' code
    names = _read_lines(folder / "XTD10" / "test_image_names.txt")
    columns = {g: _read_lines(folder / _XTD10_FILES[g]) for g in langs}
    return _table(names, columns, root, "xtd10", "test", check_images, what)


def load_multi30k(image_root: str | Path, split: str = "test_2016_flickr", languages: Sequence[str] | None = None,
                  check_images: bool = True) -> ImageTextTable:
    """Multi30K task 1: Flickr30k images with an English caption and its de / fr / cs translations.

    image_root: the folder with the Flickr30k images (``1000092795.jpg``, ...). split: one of
    :data:`MULTI30K_SPLITS`. check_images: fail unless every image of the split exists. Item ids are the
    image file names (``task1/image_splits/<split>.txt``, line-aligned with ``task1/raw/<split>.<lang>.gz``).
    """
    if split not in MULTI30K_SPLITS:
        raise ValueError(f"unknown Multi30K split {split!r}; valid: {', '.join(MULTI30K_SPLITS)}")
    langs = check_languages(languages, MULTI30K_LANGUAGES, "Multi30K task 1")
    what = "Flickr30k images (e.g. 1000092795.jpg)"
    root = _check_image_root(image_root, what)
    folder = sources.fetch("multi30k", langs)
    names = _read_lines(folder / "task1" / "image_splits" / f"{split}.txt")
    columns = {g: _read_lines(folder / "task1" / "raw" / f"{split}.{g}.gz") for g in langs}
    return _table(names, columns, root, "multi30k", split, check_images, what)
