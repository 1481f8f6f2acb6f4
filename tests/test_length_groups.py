"""A text training forward in length groups (hybridnb.training.length_groups): the same function on fewer tokens.

- Without dropout the grouped forward gives the one padded batch's embeddings and gradients (to rounding), in the
  batch's order, while each group is cut to its own longest row; a left-padded batch is refused.
- Through the trainer: 3 steps with length_groups=2 give the losses and weights of length_groups=1 (no dropout);
  with dropout they differ (masks are drawn per group), which is why the key enters the hash when it is not 1.
- The run config: at 1 the committed runs' hash and name, at 2 another hash and an ``-lg2`` name; with GradCache
  or the sentence-transformers route it is refused before any work. (Two ranks: test_distributed.)
"""

from __future__ import annotations

import pytest
import torch

from hybridnb import config, training
from hybridnb.data.train_data import split_validation
from hybridnb.models.encoders import Encoder
from hybridnb.studies import runs
from hybridnb.training import gradcache, losses
from hybridnb.training.length_groups import LengthGroups, split_by_length
from tiny_models import save_tiny_bert, synthetic_table

TRAIN = dict(steps=3, batch_size=8, save_every=3, val_every=2, val_batches=2, lr=1e-3, seed=0,
             train_dtype="float32", strategy="hybrid")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("lg")
    return {"nodrop": save_tiny_bert(root / "nodrop", dropout=0.0), "drop": save_tiny_bert(root / "drop", dropout=0.1),
            "table": synthetic_table(48)}


def test_split_by_length_sorts_and_cuts_into_equal_groups():
    groups = split_by_length(torch.tensor([5, 2, 9, 2, 7]), 2)
    assert [g.tolist() for g in groups] == [[1, 3, 0], [4, 2]]  # ties in order
    assert len(split_by_length(torch.tensor([3]), 4)) == 1        # empty groups left out


def test_grouped_forward_is_the_padded_forward_on_fewer_tokens(tiny):
    enc = Encoder.from_pretrained(tiny["nodrop"], max_length=32)
    enc.train()
    texts = ["a " * n + "b" for n in (1, 12, 3, 20, 2, 7, 15, 4)]
    features = enc.tokenize(texts, "passage")
    widths = []
    model = lambda f: widths.append(f["input_ids"].shape[1]) or enc(f)  # noqa: E731
    grouped = LengthGroups(model, 3)(features)
    assert len(widths) == 3 and max(widths) == features["input_ids"].shape[1] and min(widths) < max(widths) / 2
    grouped.pow(2).sum().backward()
    grads = {k: p.grad.clone() for k, p in enc.named_parameters() if p.grad is not None}
    enc.zero_grad(set_to_none=True)
    plain = enc(features)
    plain.pow(2).sum().backward()
    torch.testing.assert_close(grouped, plain, rtol=1e-5, atol=1e-6)  # rows in the batch's order
    for k, p in enc.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[k], p.grad, rtol=1e-4, atol=1e-6, msg=k)
    left = {k: v.flip(1) for k, v in features.items()}  # pads first: cutting to the longest would drop tokens
    with pytest.raises(ValueError, match="right-padded"):
        LengthGroups(enc, 2)(left)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="length_groups must be a positive int"):
            LengthGroups(enc, bad)


def test_plain_step_in_groups_has_the_loss_and_gradients_of_one_batch(tiny):
    enc = Encoder.from_pretrained(tiny["nodrop"], max_length=32)
    enc.train()
    batch = training.check_config(training.TextTraining(batch_size=8, seed=0), tiny["table"]).next_batch()
    qf, pf, nf, _ = training.trainer._features(enc, tiny["table"], batch.pairs, 1)
    loss = gradcache.plain_step(enc, qf, pf, losses.InfoNCE(), nf)
    grads = [p.grad.clone() for p in enc.parameters()]
    enc.zero_grad(set_to_none=True)
    assert gradcache.plain_step(enc, qf, pf, losses.InfoNCE(), nf, length_groups=2) == pytest.approx(loss, rel=1e-6)
    for g, p in zip(grads, enc.parameters()):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="GradCache"):
        training.distributed.contrastive_step(enc, qf, pf, losses.InfoNCE(), nf, chunk_size=4, length_groups=2)


def test_validation_in_groups_is_the_same_function(tiny):
    """Validation runs in eval mode (no dropout): in length groups its scores are those of one padded batch."""
    _, val_t = split_validation(tiny["table"], 0.25, seed=0)
    enc = Encoder.from_pretrained(tiny["drop"], max_length=32)
    enc.train()
    cfg = training.TextTraining(**TRAIN)
    batches = training.trainer.fixed_validation_batches(cfg, val_t)
    one = training.trainer.validation_scores(enc, val_t, batches, cfg)
    two = training.trainer.validation_scores(enc, val_t, batches, cfg.replace(length_groups=2))
    assert two == pytest.approx(one, rel=1e-5) and enc.training  # left in training mode as found


@pytest.mark.parametrize("model", ["nodrop", "drop"])
def test_training_in_groups(tiny, tmp_path, model):
    """No dropout: the same losses and weights as one padded batch (to rounding). Dropout: other masks, so other
    numbers: the key must be in the hash."""
    train_t, val_t = split_validation(tiny["table"], 0.25, seed=0)
    out = {}
    for groups in (1, 2):
        enc = Encoder.from_pretrained(tiny[model], max_length=32)
        cfg = training.TextTraining(**TRAIN, length_groups=groups)
        out[groups] = (training.train(enc, train_t, val_t, cfg, tmp_path / f"lg{groups}", show_progress=False), enc)
    losses_1 = [r["loss"] for r in out[1][0].history]
    losses_2 = [r["loss"] for r in out[2][0].history]
    if model == "nodrop":
        assert losses_2 == pytest.approx(losses_1, rel=1e-5)
        val = [[r["val_loss"] for r in out[g][0].history if "val_loss" in r] for g in (1, 2)]
        assert len(val[0]) == 2 and val[1] == pytest.approx(val[0], rel=1e-5)
        for a, b in zip(out[1][1].parameters(), out[2][1].parameters()):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=2e-5)  # AdamW scales rounding up on tiny gradients
    else:
        assert losses_2[0] != losses_1[0]


def test_run_config_hash_name_and_refusals(tmp_path):
    ci = config.load_profile("ci")
    one = runs.check_run({**ci, "length_groups": 1})
    assert one == runs.check_run(ci)  # the committed runs' config: same hash, same name
    two = runs.check_run({**ci, "length_groups": 2})
    train = f"-fp32-{ci['train_data']}-to-"  # the ci profile asks for float32 by name: its tag follows -lg<n>
    assert two.hash != one.hash and two.run_name == one.run_name.replace(train, "-lg2" + train)
    assert "-lg" not in one.run_name and two.training().length_groups == 2
    assert "length_groups" not in training.TextTraining().stored()  # old checkpoints still resume
    assert training.TextTraining(length_groups=2).stored()["length_groups"] == 2
    with pytest.raises(ValueError, match="length_groups=2 with gradcache"):
        runs.check_run({**ci, "length_groups": 2, "gradcache": True})
    with pytest.raises(ValueError, match=r"^length_groups must be an int >= 1, got 0$"):
        runs.check_run({**ci, "length_groups": 0})
