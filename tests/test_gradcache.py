"""GradCache must give the plain full-batch loss and parameter gradients, dropout and autocast included.

The encoder is a tiny random BertModel (vocab 100, hidden 32, 2 layers) with masked mean pooling and L2
normalisation: the shape of hybridnb's dual encoder without its weights or tokenizer.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

transformers = pytest.importorskip("transformers")

import hybridnb.training.gradcache as gc  # noqa: E402
from hybridnb.training.gradcache import gradcache_step, make_autocast, plain_step, split_features  # noqa: E402
from hybridnb.training.losses import InfoNCE, info_nce  # noqa: E402

B, H, SEQ = 7, 2, 8  # 7 queries: chunk_size 3 gives uneven chunks (3, 3, 1); 14 hard negatives
LOSS = InfoNCE()


pytestmark = pytest.mark.usefixtures("one_thread")


class TinyEncoder(nn.Module):
    def __init__(self, dropout: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        config = transformers.BertConfig(
            vocab_size=100,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=32,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
        )
        self.bert = transformers.BertModel(config, add_pooling_layer=False)

    def forward(self, features):
        hidden = self.bert(**features).last_hidden_state
        mask = features["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return F.normalize(pooled, dim=-1)


def make_features(n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, SEQ + 1, (n,), generator=g)
    mask = (torch.arange(SEQ) < lengths[:, None]).long()
    ids = torch.randint(1, 100, (n, SEQ), generator=g) * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


QUERIES, PASSAGES, NEGATIVES = make_features(B, 1), make_features(B, 2), make_features(B * H, 3)


def run(model, step, *args, seed=1234, **kwargs):
    """Loss and parameter gradients of one step from fresh .grad and a fixed RNG seed."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = step(model, *args, **kwargs)
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss, grads


def assert_same(result, reference, rtol=1e-5, atol_rel=1e-6, loss_rel=1e-6):
    """Loss equal, and every gradient equal to rtol plus atol_rel * (largest gradient entry overall).

    A per-tensor relative check would be wrong for gradients that are zero in exact arithmetic (the
    attention key bias: softmax ignores it), which hold only ~1e-11 rounding noise.
    """
    loss, grads = result
    ref_loss, ref_grads = reference
    assert loss == pytest.approx(ref_loss, rel=loss_rel, abs=1e-6)
    assert set(grads) == set(ref_grads) and len(ref_grads) > 0
    scale = max(g.abs().max().item() for g in ref_grads.values())
    for name, ref in ref_grads.items():
        torch.testing.assert_close(grads[name], ref, rtol=rtol, atol=atol_rel * scale, msg=name)


def args(with_negatives):
    return (QUERIES, PASSAGES, LOSS), dict(negative_features=NEGATIVES if with_negatives else None)


@pytest.mark.parametrize("with_negatives", [False, True], ids=["in-batch", "hard-negatives"])
@pytest.mark.parametrize("chunk_size", [1, 3, B])
def test_matches_plain_step_without_dropout(chunk_size, with_negatives):
    model = TinyEncoder(dropout=0.0).train()
    a, kw = args(with_negatives)
    reference = run(model, plain_step, *a, **kw)
    assert_same(run(model, gradcache_step, *a, chunk_size=chunk_size, **kw), reference)


@pytest.mark.parametrize("with_negatives", [False, True], ids=["in-batch", "hard-negatives"])
@pytest.mark.parametrize("chunk_size", [1, 3, B])
def test_matches_plain_step_with_dropout(chunk_size, with_negatives):
    # Dropout masks depend on how the batch is split, so the reference is the plain step whose forwards
    # are split the same way (with gradients, all graphs kept): same masks, ordinary autograd.
    model = TinyEncoder(dropout=0.1).train()
    a, kw = args(with_negatives)
    reference = run(model, plain_step, *a, chunk_size=chunk_size, **kw)
    assert_same(run(model, gradcache_step, *a, chunk_size=chunk_size, **kw), reference)
    # dropout really is on: another seed gives another loss
    assert run(model, plain_step, *a, chunk_size=chunk_size, seed=99, **kw)[0] != pytest.approx(reference[0])
    # and the re-forwards leave the global RNG stream where the plain step leaves it
    torch.manual_seed(7)
    plain_step(model, *a, chunk_size=chunk_size, **kw)
    after_plain = torch.rand(3)
    torch.manual_seed(7)
    gradcache_step(model, *a, chunk_size=chunk_size, **kw)
    torch.testing.assert_close(torch.rand(3), after_plain, rtol=0, atol=0)


@pytest.mark.parametrize("with_negatives", [False, True], ids=["in-batch", "hard-negatives"])
def test_one_chunk_per_group_with_dropout_matches_unchunked_plain_step(with_negatives):
    model = TinyEncoder(dropout=0.1).train()
    a, kw = args(with_negatives)
    assert_same(run(model, gradcache_step, *a, chunk_size=100, **kw), run(model, plain_step, *a, **kw))


def test_without_rng_restore_dropout_breaks_the_gradients(monkeypatch):
    # Shows the test above has teeth: skip the restore and the re-forward draws other masks.
    model = TinyEncoder(dropout=0.1).train()
    a, kw = args(True)
    reference = run(model, plain_step, *a, chunk_size=3, **kw)
    monkeypatch.setattr(gc.RandContext, "restored", lambda self: contextlib.nullcontext())
    loss, grads = run(model, gradcache_step, *a, chunk_size=3, **kw)
    assert loss == pytest.approx(reference[0])  # the loss comes from the first pass: still right
    worst = max((grads[k] - g).abs().max().item() / g.abs().max().item() for k, g in reference[1].items())
    assert worst > 1e-2


def test_eval_mode_with_dropout_configured_matches_unchunked_plain_step():
    model = TinyEncoder(dropout=0.1).eval()
    a, kw = args(True)
    assert_same(run(model, gradcache_step, *a, chunk_size=3, **kw), run(model, plain_step, *a, **kw))


@pytest.mark.parametrize("autocast", ["factory", "dtype"])
def test_cpu_bf16_autocast_forwards_with_a_float32_loss(autocast):
    seen = []

    def loss_fn(q, p, n):
        seen.append((q.dtype, p.dtype, n.dtype, torch.is_autocast_enabled("cpu")))
        return LOSS(q, p, n)

    model = TinyEncoder(dropout=0.0).train()
    ctx = make_autocast("cpu", torch.bfloat16) if autocast == "factory" else torch.bfloat16
    a, kw = (QUERIES, PASSAGES, loss_fn), dict(negative_features=NEGATIVES, autocast=ctx)
    linear_dtypes = []
    hook = model.bert.encoder.layer[0].intermediate.dense.register_forward_hook(
        lambda module, inputs, output: linear_dtypes.append(output.dtype)
    )
    # One chunk per group: the same bf16 forwards as the plain step, so the same numbers.
    assert_same(run(model, gradcache_step, *a, chunk_size=100, **kw), run(model, plain_step, *a, **kw))
    hook.remove()
    assert set(linear_dtypes) == {torch.bfloat16}  # the encoder matmuls really ran in bf16
    assert seen == [(torch.float32, torch.float32, torch.float32, False)] * 2  # the loss did not

    # Uneven chunks: equal to the fp32 step up to bf16 rounding. (Not compared with the chunked bf16
    # plain step to 1e-6: autocast casts each weight to bf16 once per autocast region, so the plain
    # step sums its chunks' weight gradients in bf16, while each GradCache re-forward is its own
    # region and sums into the fp32 .grad; the two differ by bf16 rounding, ~1e-4 of the scale.)
    fp32 = run(model, plain_step, *a, negative_features=NEGATIVES)
    assert_same(run(model, gradcache_step, *a, chunk_size=3, **kw), fp32, rtol=1e-2, atol_rel=2e-3, loss_rel=1e-3)


def test_outer_autocast_does_not_reach_the_loss():
    seen = []

    def loss_fn(q, p, n):
        seen.append((q.dtype, torch.is_autocast_enabled("cpu")))
        return LOSS(q, p, n)

    model = TinyEncoder().train()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        gradcache_step(model, QUERIES, PASSAGES, loss_fn, chunk_size=3)
    assert seen == [(torch.float32, False)]


def test_gradients_accumulate_and_loss_parameters_get_theirs():
    log_tau = nn.Parameter(torch.tensor(0.05).log())

    def loss_fn(q, p, n):
        return info_nce(q, p, n, temperature=log_tau.exp())

    model = TinyEncoder().train()
    a, kw = (QUERIES, PASSAGES, loss_fn), dict(negative_features=NEGATIVES)
    log_tau.grad = None
    reference = run(model, plain_step, *a, **kw)
    ref_tau_grad = log_tau.grad.clone()
    log_tau.grad = None
    result = run(model, gradcache_step, *a, chunk_size=3, **kw)
    assert_same(result, reference)
    torch.testing.assert_close(log_tau.grad, ref_tau_grad, rtol=1e-5, atol=1e-7)
    # a second step without zeroing doubles every gradient (no zeroing, no optimizer step inside)
    gradcache_step(model, *a, chunk_size=3, **kw)
    doubled = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert_same((result[0], doubled), (result[0], {k: 2 * g for k, g in result[1].items()}))


def test_a_loss_that_ignores_the_negatives():
    model = TinyEncoder().train()
    a = (QUERIES, PASSAGES, lambda q, p, n: LOSS(q, p))
    reference = run(model, plain_step, *a, negative_features=NEGATIVES)
    assert_same(run(model, gradcache_step, *a, chunk_size=3, negative_features=NEGATIVES), reference)


@pytest.mark.parametrize("chunk_size, error", [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError)])
def test_bad_chunk_size(chunk_size, error):
    with pytest.raises(error):
        gradcache_step(TinyEncoder(), QUERIES, PASSAGES, LOSS, chunk_size=chunk_size)


def test_bad_inputs():
    model = TinyEncoder()
    with pytest.raises(ValueError, match="queries but"):
        gradcache_step(model, QUERIES, make_features(B - 1, 5), LOSS, chunk_size=2)
    with pytest.raises(TypeError):
        gradcache_step(model, {"input_ids": QUERIES["input_ids"].tolist()}, PASSAGES, LOSS, chunk_size=2)
    with pytest.raises(ValueError, match="disagree"):
        ragged = dict(QUERIES, attention_mask=QUERIES["attention_mask"][:-1])
        gradcache_step(model, ragged, PASSAGES, LOSS, chunk_size=2)
    with pytest.raises(ValueError, match="model returned shape"):
        gradcache_step(lambda f: model(f)[:1], QUERIES, PASSAGES, LOSS, chunk_size=2)
    with pytest.raises(ValueError, match="scalar"):
        gradcache_step(model, QUERIES, PASSAGES, lambda q, p, n: (q * p).sum(1), chunk_size=2)
    with pytest.raises(TypeError):
        gradcache_step(model, QUERIES, PASSAGES, LOSS, chunk_size=2, autocast="bf16")


def test_split_features():
    chunks = split_features(NEGATIVES, 4)
    assert [c["input_ids"].shape[0] for c in chunks] == [4, 4, 4, 2]
    assert set(chunks[0]) == set(NEGATIVES)
    for key, value in NEGATIVES.items():
        torch.testing.assert_close(torch.cat([c[key] for c in chunks]), value)


def test_a_dtype_autocasts_on_the_model_device_not_the_features_device(monkeypatch):
    # the tokenizer's features arrive on the CPU while the model sits on its GPU: the autocast must follow
    # the model (found by reading benchmarks/gpu_check.py's path; a GPU run would otherwise train in float32)
    seen = []
    monkeypatch.setattr(gc, "make_autocast", lambda device, dtype: seen.append(torch.device(device)) or contextlib.nullcontext)
    model = nn.Linear(2, 2, device="meta")
    features = [{"input_ids": torch.zeros(2, 3, dtype=torch.long)}]
    gc._resolve_autocast(torch.bfloat16, features, model)
    assert seen == [torch.device("meta")]
    gc._resolve_autocast(torch.bfloat16, features, lambda f: None)  # no parameters: the features' device
    assert seen[-1] == torch.device("cpu")
