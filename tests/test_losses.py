"""Tests for hybridnb.training.losses.info_nce against hand computations and its invariances."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hybridnb.training.losses import DEFAULT_TEMPERATURE, InfoNCE, info_nce


pytestmark = pytest.mark.usefixtures("one_thread")

# B = 2 queries/passages in D = 2, unit vectors written out so the dot products are easy by hand:
#   q0.p0 = 0.8    q0.p1 = 0.0
#   q1.p0 = 0.96   q1.p1 = 0.8
# and one hard negative per query (h = 1):
#   q0.n0 = 1.0    q0.n1 = 0.0
#   q1.n0 = 0.6    q1.n1 = -0.8
Q = [[1.0, 0.0], [0.6, 0.8]]
P = [[0.8, 0.6], [0.0, 1.0]]
N = [[1.0, 0.0], [0.0, -1.0]]


def t(rows, dtype=torch.float32):
    return torch.tensor(rows, dtype=dtype)


def ce(logits, target):
    """-log softmax(logits)[target] in plain Python."""
    return -logits[target] + math.log(sum(math.exp(x) for x in logits))


@pytest.mark.parametrize("tau", [0.5, DEFAULT_TEMPERATURE])
def test_in_batch_loss_matches_hand_computation(tau):
    row0 = [0.8 / tau, 0.0 / tau]
    row1 = [0.96 / tau, 0.8 / tau]
    expected = (ce(row0, 0) + ce(row1, 1)) / 2
    got = info_nce(t(Q), t(P), temperature=tau)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_default_temperature_is_0_05():
    row0 = [0.8 / 0.05, 0.0]
    row1 = [0.96 / 0.05, 0.8 / 0.05]
    assert info_nce(t(Q), t(P)).item() == pytest.approx((ce(row0, 0) + ce(row1, 1)) / 2, rel=1e-6)


def test_hard_negatives_match_hand_computation():
    tau = 0.5
    # candidates for every query: [p0, p1, n0, n1]; all hard negatives serve every query.
    row0 = [0.8 / tau, 0.0 / tau, 1.0 / tau, 0.0 / tau]
    row1 = [0.96 / tau, 0.8 / tau, 0.6 / tau, -0.8 / tau]
    expected = (ce(row0, 0) + ce(row1, 1)) / 2
    got = info_nce(t(Q), t(P), t(N), temperature=tau)
    assert got.item() == pytest.approx(expected, rel=1e-6)



def test_exclude_leaves_candidates_out_of_the_softmax():
    tau = 0.5
    # q0's candidate n0 and q1's candidate p0 excluded: they vanish from their rows' softmax, nothing else moves
    exclude = torch.tensor([[False, False, True, False], [True, False, False, False]])
    row0 = [0.8 / tau, 0.0 / tau, 0.0 / tau]          # p0, p1, n1
    row1 = [0.8 / tau, 0.6 / tau, -0.8 / tau]         # p1, n0, n1
    expected = (ce(row0, 0) + ce(row1, 0)) / 2
    got = info_nce(t(Q), t(P), t(N), temperature=tau, exclude=exclude)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    nothing = torch.zeros(2, 4, dtype=torch.bool)
    assert info_nce(t(Q), t(P), t(N), temperature=tau, exclude=nothing).item() == \
        info_nce(t(Q), t(P), t(N), temperature=tau).item()
    assert InfoNCE(temperature=tau, exclude=exclude)(t(Q), t(P), t(N)).item() == got.item()
    # the gradient of an excluded candidate's embedding through that row is zero: n0 only enters q1's row
    n = t(N).requires_grad_()
    info_nce(t(Q), t(P), n, temperature=tau, exclude=torch.tensor([[False, False, True, False],
                                                                     [False, False, True, False]])).backward()
    assert n.grad[0].abs().max().item() == 0.0 and n.grad[1].abs().max().item() > 0


def test_exclude_is_checked():
    with pytest.raises(ValueError, match="diagonal"):
        info_nce(t(Q), t(P), exclude=torch.eye(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="shape"):
        info_nce(t(Q), t(P), t(N), exclude=torch.zeros(2, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        info_nce(t(Q), t(P), exclude=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="symmetric"):
        info_nce(t(Q), t(P), symmetric=True, exclude=torch.zeros(2, 2, dtype=torch.bool))

def test_symmetric_matches_hand_computation():
    tau = 0.5
    q2p = (ce([0.8 / tau, 0.0], 0) + ce([0.96 / tau, 0.8 / tau], 1)) / 2
    # passage -> query: p0 against [q0, q1] = [0.8, 0.96]; p1 against [q0, q1] = [0.0, 0.8]
    p2q = (ce([0.8 / tau, 0.96 / tau], 0) + ce([0.0, 0.8 / tau], 1)) / 2
    assert info_nce(t(Q), t(P), temperature=tau, symmetric=True).item() == pytest.approx(
        (q2p + p2q) / 2, rel=1e-6
    )
    # hard negatives only enter the query -> passage direction
    q2p_hn = (
        ce([0.8 / tau, 0.0, 1.0 / tau, 0.0], 0) + ce([0.96 / tau, 0.8 / tau, 0.6 / tau, -0.8 / tau], 1)
    ) / 2
    assert info_nce(t(Q), t(P), t(N), temperature=tau, symmetric=True).item() == pytest.approx(
        (q2p_hn + p2q) / 2, rel=1e-6
    )


def unit(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1).to(dtype)


@pytest.mark.parametrize("symmetric", [False, True])
def test_permutation_invariance(symmetric):
    b, d, h = 6, 8, 3
    q, p, n = unit(b, d, seed=1), unit(b, d, seed=2), unit(b * h, d, seed=3)
    perm = torch.randperm(b, generator=torch.Generator().manual_seed(4))
    perm_n = torch.randperm(b * h, generator=torch.Generator().manual_seed(5))
    base = info_nce(q, p, n, symmetric=symmetric)
    # permuting the (query, positive) pairs jointly, and the hard negatives in any order
    moved = info_nce(q[perm], p[perm], n[perm_n], symmetric=symmetric)
    torch.testing.assert_close(moved, base, rtol=1e-6, atol=1e-6)
    # sanity: breaking the pairing does change it
    assert not torch.allclose(info_nce(q[perm], p, n, symmetric=symmetric), base)


def test_close_hard_negatives_increase_the_loss():
    b, d = 8, 16
    q = unit(b, d, seed=10)
    p = F.normalize(q + 0.5 * unit(b, d, seed=11), dim=-1)  # positives near their queries
    close = F.normalize(q + 0.3 * unit(b, d, seed=12), dim=-1)  # closer to the queries than p
    far = -q  # opposite to its own query (other queries see them as random-ish directions)
    none = info_nce(q, p)
    with_close = info_nce(q, p, close)
    with_far = info_nce(q, p, far)
    assert with_close > none + 0.5
    assert none < with_far  # any extra candidate adds to the partition function...
    assert with_far - none < (with_close - none) / 100  # ...but far ones next to nothing
    # an empty (0, D) hard-negative tensor means none
    torch.testing.assert_close(info_nce(q, p, q[:0]), none)


@pytest.mark.parametrize("symmetric", [False, True])
def test_gradcheck_float64(symmetric):
    b, d, h = 3, 4, 2
    q = unit(b, d, seed=20, dtype=torch.float64).requires_grad_()
    p = unit(b, d, seed=21, dtype=torch.float64).requires_grad_()
    n = unit(b * h, d, seed=22, dtype=torch.float64).requires_grad_()
    tau = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda q, p, n, tau: info_nce(q, p, n, temperature=tau, symmetric=symmetric), (q, p, n, tau)
    )
    assert torch.autograd.gradcheck(lambda q, p: info_nce(q, p, temperature=0.05, symmetric=symmetric), (q, p))
    assert info_nce(q, p, n).dtype == torch.float64


def test_low_precision_inputs_give_a_float32_loss_even_under_autocast():
    q, p, n = unit(4, 8, seed=30), unit(4, 8, seed=31), unit(8, 8, seed=32)
    qb, pb, nb = q.bfloat16(), p.bfloat16(), n.bfloat16()
    reference = info_nce(qb.float(), pb.float(), nb.float())
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        got = info_nce(qb, pb, nb)
        got_from_fp32 = info_nce(qb.float(), pb.float(), nb.float())
    assert got.dtype == torch.float32 and got_from_fp32.dtype == torch.float32
    torch.testing.assert_close(got, reference)
    torch.testing.assert_close(got_from_fp32, reference)


def test_infonce_callable_matches_function():
    q, p, n = unit(4, 8, seed=40), unit(4, 8, seed=41), unit(8, 8, seed=42)
    loss = InfoNCE(temperature=0.1, symmetric=True)
    torch.testing.assert_close(loss(q, p, n), info_nce(q, p, n, temperature=0.1, symmetric=True))
    torch.testing.assert_close(loss(q, p, None), info_nce(q, p, temperature=0.1, symmetric=True))
    with pytest.raises(ValueError):
        InfoNCE(temperature=0.0)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(q=unit(3, 4), p=unit(2, 4)), ValueError),  # B mismatch
        (dict(q=unit(3, 4), p=unit(3, 5)), ValueError),  # D mismatch
        (dict(q=unit(3), p=unit(3)), ValueError),  # not 2-D
        (dict(q=unit(0, 4), p=unit(0, 4)), ValueError),  # empty batch
        (dict(q=unit(3, 4), p=unit(3, 4), hard_negatives=unit(6, 5)), ValueError),  # D mismatch
        (dict(q=unit(3, 4), p=unit(3, 4), hard_negatives=unit(5, 4)), ValueError),  # not B*h rows
        (dict(q=unit(3, 4), p=unit(3, 4), hard_negatives=unit(6)), ValueError),  # not 2-D
        (dict(q=unit(3, 4), p=unit(3, 4), temperature=0.0), ValueError),
        (dict(q=unit(3, 4), p=unit(3, 4), temperature=-0.05), ValueError),
        (dict(q=unit(3, 4), p=unit(3, 4), temperature=float("nan")), ValueError),
        (dict(q=unit(3, 4), p=unit(3, 4), temperature=float("inf")), ValueError),
        (dict(q=unit(3, 4), p=unit(3, 4), temperature=torch.tensor([0.1, 0.2])), ValueError),
        (dict(q=unit(3, 4), p=unit(3, 4), temperature="0.05"), TypeError),
        (dict(q=unit(3, 4), p=unit(3, 4).tolist()), TypeError),
        (dict(q=torch.ones(3, 4, dtype=torch.long), p=torch.ones(3, 4, dtype=torch.long)), TypeError),
    ],
)
def test_validation(kwargs, error):
    with pytest.raises(error):
        info_nce(**kwargs)
