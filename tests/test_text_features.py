"""Tests for hybridnb.image_text.text_features (the text tower's frozen lower layers, cached): the cached path
gives the full model's embeddings, only the top layers get gradients, the disk cache is reused and repaired,
the frozen weights are hashed once and each caption tokenised once, and bad settings are refused; and its use by
the image-text trainer (frozen_text_layers)."""

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import WORDS, save_tiny_bert  # noqa: E402

from hybridnb.image_text import trainer as itt  # noqa: E402
from hybridnb.image_text.text_features import FrozenTextLayers  # noqa: E402
from hybridnb.models.encoders import Encoder  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
CAPTIONS = [" ".join(WORDS[i:i + 1 + i % 5]) for i in range(12)]  # 1-5 words: padding in every batch


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return str(save_tiny_bert(tmp_path_factory.mktemp("bert") / "bert", dropout=0.1))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDNB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def encoder_for(bert, prefix="query: "):
    return Encoder.from_pretrained(bert, max_length=8, query_prefix=prefix)


@pytest.mark.parametrize("n_frozen", [1, 2])
def test_the_cached_path_gives_the_full_models_embeddings(n_frozen, bert, cache):
    encoder = encoder_for(bert).eval()
    with torch.no_grad():
        full = encoder(encoder.tokenize(CAPTIONS, "query"))
    frozen = FrozenTextLayers(encoder, n_frozen, show_progress=False)
    frozen.prepare(CAPTIONS)
    with torch.no_grad():
        cached = frozen(CAPTIONS)
        again = frozen(list(reversed(CAPTIONS)))  # other batch-mates, other padding: the same rows
    torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(again, cached.flip(0), rtol=1e-5, atol=1e-5)
    assert len(encoder.model.encoder.layer) == 2  # the model is whole again after the top-only call
    with torch.no_grad():
        unprepared = frozen(["an unseen caption"])  # computed on the fly, not cached on disk
        torch.testing.assert_close(unprepared, encoder(encoder.tokenize(["an unseen caption"], "query")),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("groups", [2, 3, 5, 40])
def test_length_groups_give_the_same_embeddings_and_gradients(groups, bert, cache):
    """Captions through the top layers in length-sorted groups, each padded to its own longest: the same
    embeddings, in the captions' order, and the same gradients as the batch padded as one (eval mode: no
    dropout); more groups than captions is fine."""
    encoder = encoder_for(bert).eval()
    one = FrozenTextLayers(encoder, 1, show_progress=False)
    grouped = FrozenTextLayers(encoder, 1, show_progress=False, length_groups=groups)
    one.prepare(CAPTIONS)
    grouped.prepare(CAPTIONS)
    batch = [CAPTIONS[i] for i in (7, 0, 11, 3, 9, 4, 1)]  # lengths out of order
    top = list(encoder.model.encoder.layer[1].parameters())
    grads = []
    for frozen in (one, grouped):
        emb = frozen(batch)
        (emb * torch.arange(emb.numel()).reshape(emb.shape)).sum().backward()  # a loss that depends on the order
        grads.append([p.grad.clone() for p in top])
        encoder.zero_grad(set_to_none=True)
        if frozen is one:
            reference = emb.detach()
    torch.testing.assert_close(emb.detach(), reference, rtol=1e-5, atol=1e-6)
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_a_bad_length_groups_is_refused(value, bert):
    with pytest.raises(ValueError, match="length_groups must be a positive int"):
        FrozenTextLayers(encoder_for(bert), 1, show_progress=False, length_groups=value)


def test_only_the_top_layers_get_gradients(bert, cache):
    encoder = encoder_for(bert).train()
    frozen = FrozenTextLayers(encoder, 1, show_progress=False)
    frozen.prepare(CAPTIONS)
    frozen(CAPTIONS[:4]).sum().backward()
    layers = encoder.model.encoder.layer
    assert all(p.grad is None and not p.requires_grad for p in encoder.model.embeddings.parameters())
    assert all(p.grad is None and not p.requires_grad for p in layers[0].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in layers[1].parameters())


def test_the_state_cache_is_reused_keyed_and_repaired(bert, cache, monkeypatch):
    encoder = encoder_for(bert).eval()
    frozen = FrozenTextLayers(encoder, 1, show_progress=False)
    frozen.prepare(CAPTIONS)
    folders = list((cache / "text_states").iterdir())
    assert len(folders) == 1 and {p.name for p in folders[0].iterdir()} == {"states.npy", "offsets.npy",
                                                                             "texts.json", "meta.json",
                                                                             "manifest.json"}
    with torch.no_grad():
        reference = frozen(CAPTIONS)

    fresh = FrozenTextLayers(encoder, 1, show_progress=False)  # a new process: read from disk, nothing computed
    with monkeypatch.context() as m:
        m.setattr(fresh, "_compute", lambda texts: pytest.fail("computed although cached"))
        fresh.prepare(CAPTIONS)
        with torch.no_grad():
            torch.testing.assert_close(fresh(CAPTIONS), reference)

    texts_json = (folders[0] / "texts.json").read_bytes()
    (folders[0] / "texts.json").write_text('["another caption"]', encoding="utf-8")  # other captions: recomputed
    relisted = FrozenTextLayers(encoder, 1, show_progress=False)
    relisted.prepare(CAPTIONS)
    assert (folders[0] / "texts.json").read_bytes() == texts_json
    with torch.no_grad():
        torch.testing.assert_close(relisted(CAPTIONS), reference)

    np.save(folders[0] / "offsets.npy", np.array([0, 1]))  # damaged: recomputed and replaced
    repaired = FrozenTextLayers(encoder, 1, show_progress=False)
    repaired.prepare(CAPTIONS)
    with torch.no_grad():
        torch.testing.assert_close(repaired(CAPTIONS), reference)
    assert len(np.load(folders[0] / "offsets.npy")) == len(CAPTIONS) + 1

    # another prefix, another depth, other weights: other folders
    FrozenTextLayers(encoder_for(bert, prefix="passage: "), 1, show_progress=False).prepare(CAPTIONS)
    FrozenTextLayers(encoder, 2, show_progress=False).prepare(CAPTIONS)
    other = encoder_for(bert)
    with torch.no_grad():
        other.model.embeddings.word_embeddings.weight.add_(0.01)
    FrozenTextLayers(other, 1, show_progress=False).prepare(CAPTIONS)
    assert len(list((cache / "text_states").iterdir())) == 4


def test_the_zero_shot_embeddings_from_cached_states_are_the_full_encoders(bert, cache, monkeypatch):
    """The image-text zero-shot baseline runs the untrained tower from the runs' cached states: the same
    embeddings as Encoder.encode (in eval mode, whatever the mode before), read from the cache a second time."""
    from hybridnb.image_text.runs import zero_shot_text_embeddings

    encoder = encoder_for(bert)
    full = encoder.encode(CAPTIONS, "query", 4, show_progress=False)
    encoder.model.train()  # dropout on: the embeddings are still eval mode's, and the mode is given back
    cached = zero_shot_text_embeddings(encoder, CAPTIONS, 1, 4, show_progress=False)
    assert encoder.model.training and cached.dtype == np.float32 and cached.shape == full.shape
    np.testing.assert_allclose(cached, full, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(FrozenTextLayers, "_compute", lambda self, texts: pytest.fail("computed although cached"))
    np.testing.assert_allclose(zero_shot_text_embeddings(encoder_for(bert), CAPTIONS, 1, 3, show_progress=False),
                               cached, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(zero_shot_text_embeddings(encoder.eval(), CAPTIONS, 0, 4, show_progress=False),
                                  full)  # no frozen layers: Encoder.encode itself


def test_the_frozen_weights_are_hashed_once_to_the_same_key(bert, cache, monkeypatch):
    encoder = encoder_for(bert).eval()
    frozen = FrozenTextLayers(encoder, 1, show_progress=False)
    expected = hashlib.sha256()  # the key's definition: existing caches stay valid
    for module in (encoder.model.embeddings, encoder.model.encoder.layer[0]):
        for name, tensor in module.state_dict().items():
            expected.update(name.encode())
            expected.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    calls = []
    real = encoder.model.embeddings.state_dict
    monkeypatch.setattr(encoder.model.embeddings, "state_dict", lambda *a, **k: calls.append(1) or real(*a, **k))
    for captions in (CAPTIONS[:4], CAPTIONS[4:8], CAPTIONS[8:]):  # train, validation, test
        frozen.prepare(captions)
    assert len(calls) == 1 and frozen.weights_key() == expected.hexdigest()[:16]


class CountingTokenizer:
    """The tokenizer, counting the texts it tokenises."""

    def __init__(self, tokenizer):
        self.tokenizer, self.texts = tokenizer, []

    def __call__(self, texts, **kwargs):
        self.texts += list(texts)
        return self.tokenizer(texts, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


@torch.no_grad()
def states_tokenised_per_batch(encoder, texts, n_frozen):
    """hidden_states[n_frozen] as computed before captions were tokenised once: lengths from a first pass, then
    each batch of 64 (longest first) tokenised again."""
    lengths = encoder.tokenize(texts, "query")["attention_mask"].sum(dim=1).tolist()
    order = np.argsort(lengths, kind="stable")[::-1]
    out = [None] * len(texts)
    for start in range(0, len(texts), 64):
        idx = order[start:start + 64]
        features = encoder.tokenize([texts[i] for i in idx], "query")
        hidden = encoder.model(**features, output_hidden_states=True).hidden_states[n_frozen]
        for row, i in enumerate(idx):
            out[i] = hidden[row, :lengths[i]]
    return out


def test_each_caption_is_tokenised_once_and_its_states_are_unchanged(bert, cache, monkeypatch):
    texts = sorted({" ".join(WORDS[i % 30:i % 30 + 1 + i % 9]) + f" {WORDS[i % 7]}" for i in range(90)})
    assert len(texts) > 64  # two batches, the longest captions truncated at max_length
    encoder = encoder_for(bert).train()  # the states are computed in eval mode all the same
    frozen = FrozenTextLayers(encoder, 1, show_progress=False)
    counting = CountingTokenizer(encoder.tokenizer)
    monkeypatch.setattr(encoder, "tokenizer", counting)
    frozen.prepare(texts)
    assert sorted(counting.texts) == sorted("query: " + t for t in texts)
    monkeypatch.undo()
    expected = states_tokenised_per_batch(encoder.eval(), texts, 1)
    assert all(torch.equal(frozen._states[t], e) for t, e in zip(texts, expected))


@pytest.mark.parametrize("n", [0, 3, -1, True, 1.5])
def test_a_depth_outside_the_model_is_refused(n, bert):
    with pytest.raises(ValueError, match=r"frozen_text_layers must be an int in \[1, 2\]"):
        FrozenTextLayers(encoder_for(bert), n)


def test_the_trainer_setting_builds_the_cached_path_and_checks_its_value(bert, cache):
    cfg = itt.ImageTextTraining(frozen_text_layers=1, image_size=16, dim=8, max_length=8,
                                image_tower_args={"width": 8, "depth": 2})
    model = itt.build_model(cfg, encoder_for(bert))
    assert model.frozen_text is not None and model.frozen_text.prefix == "query: "
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith("text_encoder.model.encoder.layer.0.") for n in trainable)
    assert any(n.startswith("text_encoder.model.encoder.layer.1.") for n in trainable)
    assert "text_proj.weight" in trainable
    model.eval()
    with torch.no_grad():
        cached = model.encode_text(CAPTIONS[:3])
        model.frozen_text = None
        torch.testing.assert_close(cached, model.encode_text(CAPTIONS[:3]), rtol=1e-5, atol=1e-5)
    assert itt.build_model(itt.ImageTextTraining(image_size=16, dim=8, max_length=8,
                                                 image_tower_args={"width": 8, "depth": 2}),
                           encoder_for(bert)).frozen_text is None
    with pytest.raises(ValueError, match="frozen_text_layers must be an int >= 0"):
        itt.ImageTextTraining(frozen_text_layers=-2)
