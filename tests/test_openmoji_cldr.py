"""Tests for hybridnb.image_text.openmoji_cldr: rendering, empty-glyph detection, captions, the family split, the cache."""

import numpy as np
import pytest

from hybridnb.image_text import openmoji_cldr as om

MEDAL, THUMBS = "\U0001f947", "\U0001f44d"
SKIN = ["\U0001f3fb", "\U0001f3fc", "\U0001f3fd", "\U0001f3fe", "\U0001f3ff"]


def colourfulness(img: np.ndarray) -> float:
    a = img.astype(int)
    return float(((np.abs(a[..., 0] - a[..., 1]) + np.abs(a[..., 1] - a[..., 2])) > 30).mean())


def test_font_is_the_colrv0_file_of_the_package():
    path = om.font_path()
    assert path.name == om.FONT_FILE and path.is_file()


@pytest.mark.parametrize("size", [32, 64])
def test_render_gives_a_non_empty_colour_image_on_white(size):
    img = om.render(MEDAL, size)
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
    assert (img[0, 0] == 255).all()  # white background in the corner
    ink = (img < 250).any(-1).mean()
    assert 0.2 < ink < 0.95
    assert colourfulness(img) > 0.1  # drawn in colour (gold, red ribbon), not as a black outline
    assert om.is_rendered(MEDAL, img, size)


def test_unassigned_codepoint_is_detected_as_empty():
    notdef = om.notdef_image(64)
    img = om.render(om.UNASSIGNED, 64)
    assert np.array_equal(img, notdef)
    assert not om.is_rendered(om.UNASSIGNED, img, 64)
    assert not om.is_rendered("\U0010fffd", om.render("\U0010fffd", 64), 64)  # private use: not in the font


def test_missing_sequence_that_falls_apart_is_detected():
    # not an emoji ligature: the font draws two glyphs side by side (non-blank, but not the emoji)
    text = "\U0001f600\u200d\U0001f600"
    img = om.render(text, 64)
    assert (img != 255).any()
    assert not om.is_single_glyph(text, 64) and not om.is_rendered(text, img, 64)
    assert om.is_single_glyph("\U0001f1e9\U0001f1ea", 64)  # a flag is one ligature glyph


def test_clean_name():
    assert om.clean_name(":thumbs_up:") == "thumbs up"
    assert om.clean_name(":médaille_d’or:") == "médaille d’or"
    assert om.clean_name(":flag__x:") == "flag x"


def test_candidates_have_clean_unique_names_in_all_languages():
    emojis, captions, counts = om.candidate_emojis()
    assert set(captions) == set(om.OPENMOJI_LANGUAGES) and len(om.OPENMOJI_LANGUAGES) == 14
    assert counts["unique_captions"] == len(emojis) > 3000
    for lang, col in captions.items():
        assert len(col) == len(emojis) and all(col)
        assert not any(":" in c or "_" in c for c in col)
        assert len(set(col)) == len(col), lang
    assert "\u263a\ufe0f" in emojis and "\u263a" not in emojis  # fully-qualified kept, unqualified dropped
    i = emojis.index(THUMBS)
    assert captions["en"][i] == "thumbs up" and captions["de"][i] == "daumen hoch"


def test_candidates_subset_of_languages_and_bad_languages():
    _, captions, _ = om.candidate_emojis(["en", "ja"])
    assert list(captions) == ["en", "ja"]
    with pytest.raises(ValueError, match="languages"):
        om.candidate_emojis(["en", "xx"])
    with pytest.raises(TypeError):
        om.candidate_emojis("en")


@pytest.fixture(scope="module")
def small():
    """A few families: medals, flags, and thumbs up with its five skin tones."""
    picks = [MEDAL, "\U0001f948", "\U0001f949", THUMBS] + [THUMBS + s for s in SKIN] + \
        ["\U0001f1e9\U0001f1ea", "\U0001f1eb\U0001f1f7", "\U0001f600", "\U0001f436", "\U0001f431", "\u2764\ufe0f",
         "\U0001f34e", "\U0001f697", "\U0001f3e0", "\u26bd"]
    return om.build_openmoji_cldr(size=32, emojis=picks)


def test_build_small_table(small):
    assert len(small) == 19 and small.images.shape == (19, 32, 32, 3)
    assert small.available().all() and small.languages == list(om.OPENMOJI_LANGUAGES)
    i = small.ids.index("1F44D-1F3FD")
    assert small.captions["en"][i] == "thumbs up medium skin tone"
    assert small.meta["counts"]["requested"] == small.meta["counts"]["rendered"] == 19
    assert all((img != 255).any() for img in small.images)
    assert om.emoji_chars(small.ids[i]) == THUMBS + SKIN[2]
    assert om.ATTRIBUTION.startswith("Emoji images: OpenMoji") and "CC BY-SA 4.0" in small.meta["attribution"]
    with pytest.raises(ValueError, match="not candidates"):
        om.build_openmoji_cldr(size=32, emojis=["\u263a"])  # unqualified spelling


def test_split_is_disjoint_by_family_and_deterministic(small):
    a = om.split_table(small, (0.5, 0.25, 0.25), seed=3)
    b = om.split_table(small, (0.5, 0.25, 0.25), seed=3)
    assert list(a) == list(om.SPLITS)
    ids = {k: set(t.ids) for k, t in a.items()}
    assert set.union(*ids.values()) == set(small.ids) and sum(map(len, ids.values())) == len(small)
    fams = {k: {om.emoji_family(om.emoji_chars(i)) for i in t.ids} for k, t in a.items()}
    assert not (fams["train"] & fams["test"]) and not (fams["train"] & fams["validation"])
    assert not (fams["validation"] & fams["test"])
    assert all(a[k].ids == b[k].ids for k in a)  # same seed, same split
    thumbs = [k for k, t in a.items() if "1F44D" in t.ids]
    assert all(f"1F44D-{ord(s):04X}" in a[thumbs[0]].ids for s in SKIN)  # skin tones follow their family
    for k, t in a.items():  # images travel with their ids
        assert np.array_equal(t.images[0], small.images[small.ids.index(t.ids[0])]) and t.split == k
    others = [om.split_table(small, (0.5, 0.25, 0.25), seed=s)["test"].ids for s in range(4, 10)]
    assert any(o != a["test"].ids for o in others)


def test_split_rejects_bad_arguments(small):
    for fr in [(0.5, 0.5), (0.8, 0.3, 0.1), (1.0, 0.0, 0.0)]:
        with pytest.raises(ValueError, match="fractions"):
            om.split_table(small, fr)
    with pytest.raises(ValueError, match="seed"):
        om.split_table(small, seed=-1)
    with pytest.raises(ValueError, match="too few"):
        om.split_table(small.subset([0, 1]))


def test_size_is_checked():
    with pytest.raises(ValueError, match="size"):
        om.load_openmoji_cldr(size=4)


@pytest.mark.slow
def test_full_set_renders_caches_and_splits(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDNB_CACHE", str(tmp_path))
    splits = om.load_openmoji_cldr(size=64, seed=0)
    counts = splits["train"].meta["counts"]
    n = sum(len(t) for t in splits.values())
    assert n == counts["rendered"] > 3500 and counts["rendered"] <= counts["requested"]
    assert om.cache_dir(64).joinpath("images.npy").is_file()
    assert 0.7 < len(splits["train"]) / n < 0.9 and min(len(splits["validation"]), len(splits["test"])) > 200
    for t in splits.values():
        assert t.images.dtype == np.uint8 and all((img != 255).any() for img in t.images)
    fams = {k: {om.emoji_family(om.emoji_chars(i)) for i in t.ids} for k, t in splits.items()}
    assert not fams["train"] & fams["test"] and not fams["train"] & fams["validation"]
    again = om.load_openmoji_cldr(size=64, seed=0)  # from the cache: identical
    assert again["test"].ids == splits["test"].ids
    assert np.array_equal(again["test"].images, splits["test"].images)


def test_splits_are_cached_and_read_memory_mapped(small, tmp_path, monkeypatch):
    """Each split is written once and then read memory-mapped (pages shared by the processes that read it); a
    second load reads neither the full table nor renders anything; another split seed is another folder."""
    monkeypatch.setenv("HYBRIDNB_CACHE", str(tmp_path))
    built = []
    monkeypatch.setattr(om, "build_openmoji_cldr", lambda size, languages: built.append(size) or small)
    first = om.load_openmoji_cldr(size=32, seed=0)
    assert built == [32] and all(isinstance(t.images, np.memmap) for t in first.values())
    expected = om.split_table(small, seed=0)
    for name, t in first.items():
        assert t.ids == expected[name].ids and t.split == name and t.meta == expected[name].meta
        assert np.array_equal(t.images, expected[name].images)
    with monkeypatch.context() as m:
        m.setattr(om.ImageTextTable, "load", classmethod(
            lambda cls, folder, mmap=False: pytest.fail("the full table was read") if not mmap else
            _load(cls, folder, mmap)))
        again = om.load_openmoji_cldr(size=32, seed=0)
    assert built == [32] and [t.ids for t in again.values()] == [t.ids for t in first.values()]
    other = om.load_openmoji_cldr(size=32, seed=1)  # another split: from the cached full table, not rendered
    assert built == [32] and other["test"].ids == om.split_table(small, seed=1)["test"].ids


_load = om.ImageTextTable.load.__func__


def test_a_changed_cached_split_is_rendered_and_split_again(small, tmp_path, monkeypatch, capsys):
    """A flipped pixel in a cached split (memory-mapped, never parsed) was used as it was; its manifest now
    sees it, and the cache, being ours, is made again."""
    monkeypatch.setenv("HYBRIDNB_CACHE", str(tmp_path))
    monkeypatch.setattr(om, "build_openmoji_cldr", lambda size, languages: small)
    first = om.load_openmoji_cldr(size=32, seed=0)
    images = next(tmp_path.rglob("split-*/test/images.npy"))
    data = bytearray(images.read_bytes())
    data[-1] ^= 0x01
    images.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"images\.npy does not match its recorded sha256"):
        om.ImageTextTable.load(images.parent)  # any reader of the table checks it
    again = om.load_openmoji_cldr(size=32, seed=0)
    assert "images.npy does not match its recorded sha256" in capsys.readouterr().out
    assert np.array_equal(again["test"].images, om.split_table(small, seed=0)["test"].images)  # made again
    assert first["test"].ids == again["test"].ids
