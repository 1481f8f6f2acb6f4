"""Tests for hybridnb.image_text.caption_table: the ImageTextTable and the XTD10 / Multi30K loaders.

The loaders run on the real caption files of the mirror ($HYBRIDNB_MIRROR or /work/shared/data) with
generated placeholder JPEGs standing in for the COCO / Flickr30k photos.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from conftest import REAL_MIRROR, needs_mirror  # noqa: E402

from hybridnb.image_text.caption_table import (MULTI30K_LANGUAGES, XTD10_LANGUAGES, ImageTextTable,  # noqa: E402
                                      load_multi30k, load_xtd10)


def make_table(n=4, size=8):
    rng = np.random.default_rng(0)
    captions = {"en": [f"picture {i}" for i in range(n)], "de": [f"Bild {i}" if i != 1 else None for i in range(n)]}
    return ImageTextTable([f"id{i}" for i in range(n)], ["en", "de"], captions,
                          images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), name="toy")


def write_jpegs(folder: Path, names, size=(40, 30)):
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        Image.new("RGB", size, (k % 256, 100, 200)).save(folder / name, quality=90)


# ---- the table ---------------------------------------------------------------------------------


def test_table_basics():
    t = make_table()
    assert len(t) == 4 and t.available().tolist() == [[True, True], [True, False], [True, True], [True, True]]
    sub = t.subset([2, 0])
    assert sub.ids == ["id2", "id0"] and sub.captions["de"] == ["Bild 2", "Bild 0"]
    assert np.array_equal(sub.images[0], t.images[2])
    de = t.select_languages(["de"])
    assert de.ids == ["id0", "id2", "id3"] and de.languages == ["de"]
    texts, langs, items = t.caption_rows()
    assert texts == ["picture 0", "picture 1", "picture 2", "picture 3", "Bild 0", "Bild 2", "Bild 3"]
    assert langs.tolist() == ["en"] * 4 + ["de"] * 3 and items.tolist() == [0, 1, 2, 3, 0, 2, 3]
    assert t.pixels([1, 3]).shape == (2, 8, 8, 3) and np.array_equal(t.pixels([1])[0], t.images[1])
    assert t.pixels([0], size=16).shape == (1, 16, 16, 3)


@pytest.mark.parametrize("change, match", [
    (dict(ids=["a", "a", "b", "c"]), "not unique"),
    (dict(images=None), "exactly one"),
    (dict(image_paths=["x"] * 4), "exactly one"),
    (dict(images=np.zeros((4, 8, 8, 3), np.float32)), "uint8"),
    (dict(captions={"en": ["a", "b", "c", "d"], "de": ["a", "b", "c"]}), "one entry per item"),
    (dict(captions={"en": ["a", None, "c", "d"], "de": ["a", None, "c", "d"]}), "no caption"),
    (dict(captions={"en": ["a", "", "c", "d"], "de": ["a", "b", "c", "d"]}), "non-empty"),
    (dict(captions={"en": ["a", "b", "c", "d"], "de": [None] * 4}), "have no captions"),
    (dict(languages=["en", "fr"]), "expected"),
])
def test_table_validation(change, match):
    t = make_table()
    args = dict(ids=t.ids, languages=t.languages, captions=t.captions, images=t.images)
    args.update(change)
    with pytest.raises(ValueError, match=match):
        ImageTextTable(**args)


def test_table_save_load_roundtrip(tmp_path):
    t = make_table()
    t.meta["counts"] = {"kept": 4}
    t.save(tmp_path / "toy")
    u = ImageTextTable.load(tmp_path / "toy")
    assert u.ids == t.ids and u.captions == t.captions and np.array_equal(u.images, t.images)
    assert u.meta == t.meta and u.name == "toy"
    t.subset([0]).save(tmp_path / "toy")  # overwrite: a complete folder, no leftovers
    assert len(ImageTextTable.load(tmp_path / "toy", mmap=True)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]
    write_jpegs(tmp_path / "img", ["a.jpg"])
    paths = ImageTextTable(["a"], ["en"], {"en": ["x"]}, image_paths=[str(tmp_path / "img" / "a.jpg")])
    paths.save(tmp_path / "p")
    assert ImageTextTable.load(tmp_path / "p").image_paths == paths.image_paths


def test_pixels_from_files_resize_and_centre_crop(tmp_path):
    write_jpegs(tmp_path, ["wide.jpg"], size=(60, 30))
    t = ImageTextTable(["w"], ["en"], {"en": ["wide"]}, image_paths=[str(tmp_path / "wide.jpg")])
    px = t.pixels([0], size=20)
    assert px.shape == (1, 20, 20, 3) and px.dtype == np.uint8
    assert abs(int(px[0, 10, 10, 1]) - 100) < 8 and abs(int(px[0, 10, 10, 2]) - 200) < 8
    with pytest.raises(ValueError, match="size"):
        t.pixels([0])


# ---- loaders -----------------------------------------------------------------------------------


@pytest.fixture
def mirror(monkeypatch, tmp_path):
    if REAL_MIRROR is None:
        pytest.skip("no raw-data mirror (HYBRIDNB_MIRROR)")
    monkeypatch.setenv("HYBRIDNB_MIRROR", str(REAL_MIRROR))
    monkeypatch.setenv("HYBRIDNB_CACHE", str(tmp_path / "cache"))
    return REAL_MIRROR


def test_missing_image_folder_is_named(tmp_path):
    missing = tmp_path / "coco" / "train2014"
    with pytest.raises(FileNotFoundError, match="train2014.*COCO train2014 images"):
        load_xtd10(missing)
    with pytest.raises(FileNotFoundError, match="Flickr30k"):
        load_multi30k(tmp_path / "flickr30k-images")
    with pytest.raises(FileNotFoundError, match="image_root"):
        load_xtd10(None)


def test_bad_languages_and_split(tmp_path):
    with pytest.raises(ValueError, match="unknown language"):
        load_xtd10(tmp_path, languages=["en", "jp"])  # Japanese is "ja"
    with pytest.raises(ValueError, match="split"):
        load_multi30k(tmp_path, split="test")
    with pytest.raises(ValueError, match="unknown language"):
        load_multi30k(tmp_path, languages=["en", "es"])


@needs_mirror
def test_xtd10_real_captions_with_placeholder_images(mirror, tmp_path):
    names = (mirror / "xtd10/XTD10/test_image_names.txt").read_text(encoding="utf-8").split()
    root = tmp_path / "train2014"
    write_jpegs(root, names[:5])
    with pytest.raises(FileNotFoundError, match=r"lacks 995 of the 1000 COCO train2014 images.*COCO_train2014_"):
        load_xtd10(root)
    t = load_xtd10(root, check_images=False)
    assert len(t) == 1000 and t.languages == list(XTD10_LANGUAGES) and len(t.languages) == 11
    assert t.available().all() and t.ids[0] == "COCO_train2014_000000061844.jpg"
    assert t.captions["en"][0] == "major league baseball game with player from pittsburgh pirates crossing home plate"
    assert t.captions["ja"][0] == "黒いユニフォームのランナーがホームに帰ってきた"
    assert t.captions["de"][0].startswith("Oberliga Basketball Spiel")
    assert t.captions["zh"][-1] == "一位棒球运动员在接手和裁判的注视下挥动棒球棍"  # file without a final newline
    assert t.pixels([0, 4], size=16).shape == (2, 16, 16, 3)
    write_jpegs(root, names[5:])
    sub = load_xtd10(root, languages=["ja", "en"])
    assert sub.languages == ["ja", "en"] and sub.captions["en"] == t.captions["en"]


@needs_mirror
def test_multi30k_real_captions_with_placeholder_images(mirror, tmp_path):
    names = (mirror / "multi30k/task1/image_splits/test_2016_flickr.txt").read_text(encoding="utf-8").split()
    root = tmp_path / "flickr30k-images"
    write_jpegs(root, names)
    t = load_multi30k(root)  # every image present: passes the check
    assert len(t) == 1000 and t.languages == list(MULTI30K_LANGUAGES) and t.split == "test_2016_flickr"
    assert t.available().all() and t.ids[:2] == ["1007129816.jpg", "1009434119.jpg"]
    assert t.captions["en"][0] == "A man in an orange hat starring at something."
    assert t.captions["de"][0] == "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt."
    assert t.captions["cs"][0] == "Muž v oranžovém klobouku na něco zírá."
    assert t.pixels([999], size=8).shape == (1, 8, 8, 3)
    val = load_multi30k(root, split="val", languages=["fr"], check_images=False)
    assert len(val) == 1014 and val.captions["fr"][0] == "Un groupe d'hommes chargent du coton dans un camion"
    with pytest.raises(FileNotFoundError, match="lacks 1014 of the 1014 Flickr30k"):
        load_multi30k(root, split="val")
