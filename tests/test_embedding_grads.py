"""hybridnb.training.embedding_grads: the row-wise embedding gradient equals autograd's, bit for bit, in the real loops."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import save_tiny_bert, synthetic_table  # noqa: E402

from hybridnb.training import embedding_grads
from hybridnb import training
from hybridnb.training.embedding_grads import row_grads  # noqa: E402
from hybridnb.models.encoders import Encoder  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_bert(seed: int = 0, vocab: int = 300) -> BertModel:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, pad_token_id=0, hidden_dropout_prob=0.1)
    return BertModel(cfg, add_pooling_layer=False)


def chunks(seed: int = 0, vocab: int = 300) -> list[torch.Tensor]:
    """Three chunks of ids with repeated ids within and across chunks, and padding (id 0) in each."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 40, (9, 12), generator=g)  # few distinct ids: many repeats
    ids[:, -4:] = 0
    ids[0, :3] = torch.tensor([vocab - 1, 5, 5])
    return list(ids.split(3))


def train_steps(model: BertModel, fast: bool, steps: int = 3):
    """GradCache-like steps: several backwards per step, clipping, fused AdamW, grads set to None."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01, fused=True)
    grads, seen = [], []
    torch.manual_seed(1)  # dropout
    with row_grads(model, enabled=fast) as state:
        seen.append(state)
        for step in range(steps):
            for ids in chunks(step):
                model(input_ids=ids).last_hidden_state.pow(2).mean().backward()
            grads.append(model.embeddings.word_embeddings.weight.grad)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)
            opt.step()
            opt.zero_grad(set_to_none=True)
    return seen[0], grads


def test_weights_after_steps_are_bit_identical_to_autograds():
    plain, fast = tiny_bert(), tiny_bert()
    off, _ = train_steps(plain, fast=False)
    state, grads = train_steps(fast, fast=True)
    assert off is None and state is not None
    assert all(g is grads[0] for g in grads)  # one buffer, reused: no new full-size gradient per step
    for (name, p), q in zip(plain.named_parameters(), fast.parameters()):
        assert torch.equal(p, q), name
    assert not torch.equal(plain.embeddings.word_embeddings.weight, tiny_bert().embeddings.word_embeddings.weight)


def test_the_padding_row_gets_no_gradient_and_the_buffer_is_zeroed_between_steps():
    model = tiny_bert()
    with row_grads(model) as state:
        for step in range(2):
            for ids in chunks(step):
                model(input_ids=ids).last_hidden_state.sum().backward()
            grad = model.embeddings.word_embeddings.weight.grad
            used = torch.unique(torch.cat([c.flatten() for c in chunks(step)]))
            unused = torch.ones(len(grad), dtype=torch.bool)
            unused[used] = False
            assert torch.all(grad[0] == 0)  # padding_idx
            assert torch.all(grad[unused] == 0)  # rows of the other step were zeroed again
            assert torch.all(grad[used[used != 0]].abs().sum(dim=1) > 0)
            model.zero_grad(set_to_none=True)
        assert state.touched and not state.dirty


def test_a_gradient_never_cleared_keeps_a_bounded_list_and_stays_correct(monkeypatch):
    monkeypatch.setattr(embedding_grads, "MAX_TOUCHED", 2)
    plain, fast = tiny_bert().eval(), tiny_bert().eval()
    for model, enabled in ((plain, False), (fast, True)):
        with row_grads(model, enabled=enabled) as state:
            for step in range(3):  # zero_grad(set_to_none=False): the same .grad, zeroed in place
                for ids in chunks(step):
                    model(input_ids=ids).last_hidden_state.pow(2).mean().backward()
                if state is not None:
                    assert len(state.touched) <= 2
                    assert state.dirty  # three chunks per step: over the bound, so a full zeroing is due
                model.zero_grad(set_to_none=False)
            for ids in chunks(5):
                model(input_ids=ids).last_hidden_state.pow(2).mean().backward()
    assert torch.equal(plain.embeddings.word_embeddings.weight.grad, fast.embeddings.word_embeddings.weight.grad)


def tied_rounds(model: BertModel, fast: bool, rounds: int = 3) -> tuple[list[torch.Tensor], list[bool]]:
    """Gradients of rounds of backwards where the matrix is also used outside its module (a tied layer)."""
    grads, dirty = [], []
    weight = model.embeddings.word_embeddings.weight
    with row_grads(model, enabled=fast) as state:
        for r in range(rounds):
            for ids in chunks(r):
                loss = model(input_ids=ids).last_hidden_state.pow(2).mean() + weight[30 * r: 30 * r + 60].sum()
                loss.backward()
            grads.append(weight.grad.clone())
            dirty.append(bool(state and state.dirty))
            model.zero_grad(set_to_none=True)
    return grads, dirty


def test_a_tied_use_of_the_matrix_is_added_and_the_buffer_fully_zeroed():
    model = tiny_bert().eval()  # no dropout: the rounds are comparable
    expected, _ = tied_rounds(model, fast=False)
    got, dirty = tied_rounds(model, fast=True)
    assert all(dirty)
    for e, g in zip(expected, got):  # rows 0..149 get the tied term in some round: stale rows would show
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("change", ["frozen", "bfloat16", "sparse", "max_norm", "disabled", "no_getter"])
def test_unsupported_cases_keep_autograds_path(change):
    model = tiny_bert()
    emb = model.embeddings.word_embeddings
    target, enabled = model, True
    if change == "frozen":
        emb.weight.requires_grad_(False)
    elif change == "bfloat16":
        emb.to(torch.bfloat16)
    elif change == "sparse":
        emb.sparse = True
    elif change == "max_norm":
        emb.max_norm = 1.0
    elif change == "disabled":
        enabled = False
    else:
        target = torch.nn.Sequential(emb)
    with row_grads(target, enabled=enabled) as state:
        assert state is None
        assert "forward" not in emb.__dict__


def test_the_forward_is_restored_after_an_error_and_unchanged_without_grad():
    model = tiny_bert()
    emb = model.embeddings.word_embeddings
    ids = chunks()[0]
    expected = emb(ids)
    with pytest.raises(RuntimeError, match="boom"):
        with row_grads(model):
            assert "forward" in emb.__dict__
            with torch.no_grad():
                assert torch.equal(emb(ids), expected)
            assert torch.equal(emb(ids), expected) and emb(ids).grad_fn is not None
            raise RuntimeError("boom")
    assert "forward" not in emb.__dict__


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("eg") / "bert", dropout=0.1)


def disable_row_grads(monkeypatch):
    real = embedding_grads.row_grads
    monkeypatch.setattr(embedding_grads, "row_grads", lambda model, enabled=True: real(model, enabled=False))


def spy_row_grads(monkeypatch) -> list:
    """Patch row_grads to record the state each training loop got (None: the path was not taken)."""
    real, states = embedding_grads.row_grads, []

    @contextlib.contextmanager
    def spy(model, enabled=True):
        with real(model, enabled) as state:
            states.append(state)
            yield state
    monkeypatch.setattr(embedding_grads, "row_grads", spy)
    return states


def test_training_train_uses_the_row_path_and_matches_autograd(bert_dir, tmp_path, monkeypatch):
    table = synthetic_table()
    config = training.TextTraining(steps=4, batch_size=8, save_every=4, val_every=2, val_batches=2, lr=1e-3,
                                   seed=0, train_dtype="float32", gradcache=True, chunk_size=4)
    with monkeypatch.context() as m:
        disable_row_grads(m)
        plain = Encoder.from_pretrained(bert_dir, max_length=32)
        training.train(plain, table, table.subset(range(10)), config, tmp_path / "plain", show_progress=False)
    states = spy_row_grads(monkeypatch)
    fast = Encoder.from_pretrained(bert_dir, max_length=32)
    result = training.train(fast, table, table.subset(range(10)), config, tmp_path / "fast", show_progress=False)
    assert len(states) == 1 and states[0] is not None and states[0].touched
    assert len(result.history) == 4
    for (name, p), q in zip(plain.model.named_parameters(), fast.model.parameters()):
        assert torch.equal(p, q), name


def test_image_text_training_uses_the_row_path_and_matches_autograd(bert_dir, monkeypatch):
    from test_image_text_train import cfg_for, model_for, synthetic

    from hybridnb.image_text import trainer as itt

    train, val = synthetic(), synthetic(12, seed=1)
    cfg = cfg_for(steps=6, val_every=3)
    with monkeypatch.context() as m:
        disable_row_grads(m)
        plain = model_for(cfg, str(bert_dir))
        a = itt.train_image_text(plain, train, val, cfg, None, show_progress=False)
    states = spy_row_grads(monkeypatch)
    fast = model_for(cfg, str(bert_dir))
    b = itt.train_image_text(fast, train, val, cfg, None, show_progress=False)
    assert len(states) == 1 and states[0] is not None
    assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]
    for (name, p), q in zip(plain.named_parameters(), fast.parameters()):
        assert torch.equal(p, q), name

