"""The fused full-softmax InfoNCE against the same loss written with autograd ops."""

import pytest
import torch

from mllmrec_pyg.metrics import CSRIndex, mask_scores_
from mllmrec_pyg.nn.losses import masked_infonce


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
