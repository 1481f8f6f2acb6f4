"""Tests for hybridnb.image_text.model: the loss against hand computations, image towers, the model, collate."""

import importlib.util
import math
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

from hybridnb.image_text.model import (CLIPVision, ImageTextModel, OpenCLIPVision, PrecomputedFeatures,  # noqa: E402
                                 SmallCNN, TinyViT, batch_loss, build_image_tower, collate_image_text,
                                 image_text_loss, symmetric_info_nce)
from hybridnb.image_text.caption_table import ImageTextTable  # noqa: E402
from hybridnb.training.losses import info_nce  # noqa: E402
from hybridnb.training.sampling import HybridBatchSampler  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
LANGS = ["en", "de", "fr"]


class HashTextEncoder(nn.Module):
    """A tiny text encoder with the Encoder interface (tokenize / forward / dim / device): hashed
    character n-grams, mean-pooled. Tells any two captions apart, needs no tokenizer files."""

    def __init__(self, dim=16, buckets=1021):
        super().__init__()
        self.emb, self.buckets, self.dim = nn.EmbeddingBag(buckets, dim, mode="mean"), buckets, dim

    @property
    def device(self):
        return self.emb.weight.device

    def tokenize(self, texts, kind):
        assert kind == "query"
        ids, offsets = [], []
        for t in texts:
            offsets.append(len(ids))
            grams = [t[i:i + n] for n in (1, 2, 3) for i in range(max(len(t) - n + 1, 1))]
            ids += [zlib.crc32(g.encode()) % self.buckets for g in grams]
        return {"input": torch.tensor(ids), "offsets": torch.tensor(offsets)}

    def forward(self, features):
        return self.emb(features["input"], features["offsets"])


def toy_table(n=12, size=16, missing_fr=(3,)):
    rng = np.random.default_rng(0)
    captions = {g: [None if (g == "fr" and i in missing_fr) else f"{g} caption {i}" for i in range(n)] for g in LANGS}
    return ImageTextTable([f"item{i}" for i in range(n)], list(LANGS), captions,
                          images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))


# ---- losses ------------------------------------------------------------------------------------


def test_symmetric_info_nce_matches_hand_computation():
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    v = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    # similarities t @ v.T = [[1, .6], [0, .8]]; logits / 0.5 = [[2, 1.2], [0, 1.6]]
    t2i = (-math.log(math.exp(2) / (math.exp(2) + math.exp(1.2))) - math.log(math.exp(1.6) / (1 + math.exp(1.6)))) / 2
    # image -> text: columns of the same matrix: [[2, 0], [1.2, 1.6]]
    i2t = (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(math.exp(1.6) / (math.exp(1.2) + math.exp(1.6)))) / 2
    assert symmetric_info_nce(t, v, temperature=0.5).item() == pytest.approx((t2i + i2t) / 2, abs=1e-12)
    assert symmetric_info_nce(v, t, temperature=0.5).item() == pytest.approx((t2i + i2t) / 2, abs=1e-12)


def test_symmetric_info_nce_3x3_against_explicit_cross_entropy():
    g = torch.Generator().manual_seed(0)
    t = torch.nn.functional.normalize(torch.randn(3, 4, generator=g, dtype=torch.float64), dim=1)
    v = torch.nn.functional.normalize(torch.randn(3, 4, generator=g, dtype=torch.float64), dim=1)
    s = (t @ v.T / 0.1).numpy()
    ce = lambda m: np.mean([-m[i, i] + np.log(np.exp(m[i]).sum()) for i in range(3)])  # noqa: E731
    assert symmetric_info_nce(t, v, 0.1).item() == pytest.approx((ce(s) + ce(s.T)) / 2, abs=1e-12)


def test_image_text_loss_adds_the_weighted_text_term():
    g = torch.Generator().manual_seed(1)
    cap, img, par = (torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=1) for _ in range(3))
    base = symmetric_info_nce(cap, img, 0.05)
    assert image_text_loss(cap, img, None, 0.05).item() == pytest.approx(base.item())
    s = (cap @ par.T / 0.05).double().numpy()
    text = np.mean([-s[i, i] + np.log(np.exp(s[i]).sum()) for i in range(4)])
    assert image_text_loss(cap, img, par, 0.05, text_weight=0.5).item() == pytest.approx(base.item() + 0.5 * text,
                                                                                         rel=1e-5)
    assert image_text_loss(cap, img, par, 0.05).item() == pytest.approx((base + info_nce(cap, par, None, 0.05)).item())


# ---- towers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("tower", [SmallCNN(image_size=16, out_dim=24, width=8, depth=2),
                                   TinyViT(image_size=16, out_dim=24, patch_size=4, width=16, depth=1, heads=2)])
def test_pixel_towers(tower):
    table = toy_table()
    x = tower.inputs(table, [0, 5, 2])
    assert x.shape == (3, 3, 16, 16) and x.dtype == torch.float32 and -1.0 <= x.min() and x.max() <= 1.0
    out = tower(x)
    assert out.shape == (3, 24) and tower.out_dim == 24 and torch.isfinite(out).all()
    # no batch statistics: an image's features do not depend on its batch
    assert torch.allclose(tower(x[:1]), out[:1], atol=1e-5)
    kind = "cnn" if isinstance(tower, SmallCNN) else "vit"
    assert isinstance(build_image_tower(kind, image_size=16), type(tower))


def test_precomputed_features(tmp_path):
    table = toy_table(4)
    feats = np.arange(12, dtype=np.float32).reshape(4, 3)[::-1].copy()
    np.save(tmp_path / "f.npy", feats)
    (tmp_path / "ids.txt").write_text("item3\nitem2\nitem1\nitem0\n", encoding="utf-8")
    tower = build_image_tower("precomputed", features=tmp_path / "f.npy", ids=tmp_path / "ids.txt")
    x = tower.inputs(table, [0, 3])  # item0 is row 3, item3 row 0
    assert torch.equal(tower(x), torch.from_numpy(feats[[3, 0]])) and tower.out_dim == 3
    with pytest.raises(KeyError, match="no precomputed features"):
        PrecomputedFeatures(feats[:2], ["item0", "item1"]).inputs(table, [2])
    with pytest.raises(ValueError, match="one row per id"):
        PrecomputedFeatures(feats, ["a", "b"])
    with pytest.raises(ValueError, match="not unique"):
        PrecomputedFeatures(feats, ["a", "a", "b", "c"])


def test_clip_vision_tower_loads_a_local_model(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8, projection_dim=12)
    CLIPVisionModelWithProjection(cfg).save_pretrained(tmp_path / "clip")
    tower = build_image_tower("clip", name_or_path=str(tmp_path / "clip"))
    assert isinstance(tower, CLIPVision) and tower.image_size == 32 and tower.out_dim == 12
    assert tower(tower.inputs(toy_table(), [0, 1])).shape == (2, 12)


@pytest.mark.skipif(importlib.util.find_spec("open_clip") is not None, reason="open_clip is installed")
def test_open_clip_tower_explains_how_to_install():
    with pytest.raises(ImportError, match="pip install open_clip_torch"):
        OpenCLIPVision("ViT-B-32")


def test_unknown_tower():
    with pytest.raises(ValueError, match="unknown image tower"):
        build_image_tower("resnet")


# ---- collate -----------------------------------------------------------------------------------


def test_collate_mono_and_cross():
    table = toy_table()
    mono = collate_image_text(table, np.array([[0, 1, 1], [4, 1, 1], [2, 1, 1]]))
    assert mono.captions == ["de caption 0", "de caption 4", "de caption 2"]
    assert mono.caption_languages == ["de"] * 3 and mono.parallel_captions is None and mono.images is None
    cross = collate_image_text(table, np.array([[0, 0, 2], [4, 2, 1], [2, 1, 0]]), tower=SmallCNN(16, 8, 8, 1))
    assert cross.captions == ["en caption 0", "fr caption 4", "de caption 2"]
    assert cross.parallel_captions == ["fr caption 0", "de caption 4", "en caption 2"]
    assert cross.parallel_languages == ["fr", "de", "en"] and cross.items.tolist() == [0, 4, 2]
    assert cross.images.shape == (3, 3, 16, 16)
    with pytest.raises(ValueError, match="all cross pairs"):
        collate_image_text(table, np.array([[0, 0, 2], [4, 1, 1]]))
    with pytest.raises(ValueError, match="no caption in 'fr'"):
        collate_image_text(table, np.array([[3, 0, 2]]))
    with pytest.raises(ValueError, match="out of range"):
        collate_image_text(table, np.array([[12, 0, 0]]))
    with pytest.raises(ValueError, match="shape"):
        collate_image_text(table, np.array([0, 1, 1]))


def test_collate_follows_the_hybrid_sampler():
    table = toy_table()
    sampler = HybridBatchSampler(table.available(), table.languages, 6, strategy="hybrid", alpha=0.5, seed=0)
    kinds = set()
    for _ in range(12):
        b = sampler.next_batch()
        batch = collate_image_text(table, b.pairs)
        kinds.add(b.kind)
        assert len(set(batch.items.tolist())) == 6
        if b.kind == "mono":  # one language for every caption, no text-text pairs
            assert set(batch.caption_languages) == {b.language} and batch.parallel_captions is None
        else:  # per pair: caption in X, parallel caption of the same item in Y != X
            assert all(x != y for x, y in zip(batch.caption_languages, batch.parallel_languages))
            for item, cap, par in zip(batch.items, batch.captions, batch.parallel_captions):
                assert cap.endswith(f" {item}") and par.endswith(f" {item}")
    assert kinds == {"mono", "cross"}


# ---- model -------------------------------------------------------------------------------------


def test_model_embeddings_and_a_training_step():
    torch.manual_seed(0)
    table = toy_table()
    model = ImageTextModel(HashTextEncoder(), SmallCNN(16, 8, 8, 1), dim=6)
    t = model.encode_text(["en caption 1", "de caption 1"])
    assert t.shape == (2, 6) and torch.allclose(t.norm(dim=1), torch.ones(2))
    batch = collate_image_text(table, np.array([[0, 0, 1], [1, 1, 2], [2, 2, 0]]), tower=model.image_tower)
    loss = batch_loss(model, batch)
    loss.backward()
    for name in ("text_proj.weight", "image_proj.weight", "image_tower.head.weight", "text_encoder.emb.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name
    model.train()
    assert model.embed_texts(["a", "b", "c"], batch_size=2).shape == (3, 6) and model.training
    img = model.embed_images(table, [0, 1, 2], batch_size=2)
    assert img.shape == (3, 6) and img.dtype == np.float32
    assert np.allclose(img, model.encode_images(model.image_tower.inputs(table, [0, 1, 2])).detach().numpy(),
                       atol=1e-5)
    with pytest.raises(ValueError, match="no images"):
        batch_loss(model, collate_image_text(table, np.array([[0, 0, 0]])))


def test_a_fixed_batch_can_be_fitted():
    torch.manual_seed(0)
    table = toy_table(8)
    model = ImageTextModel(HashTextEncoder(), SmallCNN(16, 8, 8, 1), dim=8)
    batch = collate_image_text(table, np.array([[i, i % 3, (i + 1) % 3] for i in (0, 1, 2, 4, 5, 6)]),
                               tower=model.image_tower)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(45):
        loss = batch_loss(model, batch, temperature=0.1)
        opt.zero_grad(), loss.backward(), opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]


def test_model_with_a_real_encoder(tmp_path):
    from tiny_models import save_tiny_bert

    from hybridnb.models.encoders import Encoder

    encoder = Encoder.from_pretrained(str(save_tiny_bert(tmp_path / "bert")))
    model = ImageTextModel(encoder, SmallCNN(16, 8, 8, 1), dim=4)
    table = toy_table()
    loss = batch_loss(model, collate_image_text(table, np.array([[0, 0, 0], [1, 0, 0]]), tower=model.image_tower))
    loss.backward()
    assert torch.isfinite(loss) and model.text_proj.weight.grad is not None
