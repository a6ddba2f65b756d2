"""The fused losses (full-softmax InfoNCE, BPR with a norm penalty) against the same
losses written with autograd ops."""

import pytest
import torch

from mllmrec_pyg.metrics import CSRIndex, mask_scores_
from mllmrec_pyg.nn.losses import bpr_norm_penalty, masked_infonce


def _reference(u, items, pos, index, users):
    logits = u @ items.t()
    p = (u * items[pos]).sum(-1)
    neg = mask_scores_(logits, users, [index])
    return (torch.logaddexp(torch.logsumexp(neg, dim=1), p) - p).mean()


def _case(seed, b=17, n_items=40, d=8, n_users=9):
    gen = torch.Generator().manual_seed(seed)
    pairs = torch.stack(
        [
            torch.randint(0, n_users, (120,), generator=gen),
            torch.randint(0, n_items, (120,), generator=gen),
        ]
    )
    pairs = torch.unique(pairs, dim=1)
    pick = torch.randint(0, pairs.size(1), (b,), generator=gen)
    users, pos = pairs[0, pick], pairs[1, pick]  # positives are training items, as in training
    u = (torch.randn(b, d, generator=gen, dtype=torch.float64) * 3).requires_grad_()
    items = torch.randn(n_items, d, generator=gen, dtype=torch.float64).requires_grad_()
    return u, items, users, pos, CSRIndex(pairs, n_users)


@pytest.mark.parametrize("seed", range(4))
def test_loss_and_gradients_equal_the_autograd_version(seed):
    u, items, users, pos, index = _case(seed)
    # the same loss over the distinct users: u's rows picked again by each pair
    distinct, inverse = torch.unique(users, return_inverse=True)
    ud = u.new_zeros(distinct.numel(), u.size(1)).index_add(0, inverse, u) / torch.bincount(
        inverse
    ).unsqueeze(1).to(u.dtype)
    ud = ud.detach().requires_grad_()
    want = _reference(ud[inverse], items, pos, index, users)
    gu, gi = torch.autograd.grad(want * 2.5, (ud, items))
    row, col = index.gather(distinct)
    got = masked_infonce(ud, items, inverse, pos, row, col)
    hu, hi = torch.autograd.grad(got * 2.5, (ud, items))
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    torch.testing.assert_close(hu, gu, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(hi, gi, rtol=1e-10, atol=1e-12)


def test_every_positive_of_a_user_leaves_its_negatives_and_counts_once_in_its_pair():
    """A user's positives are no negatives of its other pairs; a row whose every other
    item is masked has loss 0."""
    u = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    items = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    inverse = torch.tensor([0, 0, 1])
    pos = torch.tensor([1, 3, 2])
    # user 0 masks item 0 (not its positives); user 1 masks every other item
    row = torch.tensor([0, 1, 1, 1, 1])
    col = torch.tensor([0, 0, 1, 3, 4])
    got = masked_infonce(u, items, inverse, pos, row, col)
    z = u.detach() @ items.detach().t()
    neg0 = z[0, [2, 4]]
    want = 0.0
    for p in (1, 3):
        want += torch.logsumexp(torch.cat([neg0, z[0, [p]]]), 0) - z[0, p]
    assert got.item() == pytest.approx(want.item() / 3, rel=1e-12)
    got.backward()
    assert torch.all(u.grad[1] == 0)


def test_a_second_backward_is_refused():
    u, items, users, pos, index = _case(0)
    distinct, inverse = torch.unique(users, return_inverse=True)
    row, col = index.gather(distinct)
    loss = masked_infonce(u[: distinct.numel()], items, inverse, pos, row, col)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="once"):
        loss.backward()


@pytest.mark.parametrize("weight", [0.0, 1e-3, 0.7])
def test_bpr_norm_penalty_equals_the_autograd_version(weight):
    gen = torch.Generator().manual_seed(int(weight * 1000))
    u, p, n = (
        (torch.randn(13, 6, generator=gen, dtype=torch.float64) * 2).requires_grad_()
        for _ in range(3)
    )
    want = -torch.nn.functional.logsigmoid((u * p).sum(-1) - (u * n).sum(-1)).mean()
    want = want + weight * (u.norm() + p.norm() + n.norm()) / u.size(0)
    g_want = torch.autograd.grad(want * 1.7, (u, p, n))
    got = bpr_norm_penalty(u, p, n, weight)
    g_got = torch.autograd.grad(got * 1.7, (u, p, n))
    assert got.item() == pytest.approx(want.item(), rel=1e-10)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_bpr_norm_penalty_is_finite_for_all_zero_vectors():
    """A zero norm (e.g. ID factors initialised at zero) gives a zero penalty gradient,
    not NaN."""
    u = torch.zeros(4, 3, requires_grad=True)
    p = torch.randn(4, 3, requires_grad=True)
    n = torch.randn(4, 3, requires_grad=True)
    bpr_norm_penalty(u, p, n, 0.1).backward()
    assert all(torch.isfinite(t.grad).all() for t in (u, p, n))


@pytest.mark.parametrize("l2", [0.0, 0.3])
def test_content_bpr_equals_vbpr_written_with_autograd(l2):
    """The fused VBPR objective: loss and every parameter's gradient as autograd gives
    them for [gamma_i || E f_i + c], with repeated users and items in the batch."""
    from mllmrec_pyg.nn.losses import content_bpr

    gen = torch.Generator().manual_seed(3)
    n_users, n_items, d, f_dim, b = 7, 11, 3, 5, 9

    def leaf(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_()

    user_emb, item_emb, w, c = leaf(n_users, 2 * d), leaf(n_items, d), leaf(d, f_dim), leaf(d)
    feats = torch.randn(n_items, f_dim, generator=gen, dtype=torch.float64)
    users = torch.randint(0, n_users, (b,), generator=gen)
    items = torch.randint(0, n_items - 2, (2 * b,), generator=gen)  # two items never drawn
    params = (user_emb, item_emb, w, c)

    q = torch.cat([item_emb, feats @ w.t() + c], 1)
    u, qp, qn = user_emb[users], q[items[:b]], q[items[b:]]
    want = -torch.nn.functional.logsigmoid((u * qp).sum(-1) - (u * qn).sum(-1)).mean()
    want = want + l2 * (u.norm() + qp.norm() + qn.norm()) / b
    g_want = torch.autograd.grad(want * 0.9, params)
    got = content_bpr(user_emb, item_emb, w, c, feats, users, items, l2)
    g_got = torch.autograd.grad(got * 0.9, params)
    assert got.item() == pytest.approx(want.item(), rel=1e-10)
    for a, e in zip(g_got, g_want):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)
    assert not g_got[1][-2:].any()  # undrawn items get no gradient
