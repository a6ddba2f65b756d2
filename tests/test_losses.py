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
    want = _reference(u, items, pos, index, users)
    gu, gi = torch.autograd.grad(want * 2.5, (u, items))
    row, col = index.gather(users)
    got = masked_infonce(u, items, pos, row, col)
    hu, hi = torch.autograd.grad(got * 2.5, (u, items))
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    torch.testing.assert_close(hu, gu, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(hi, gi, rtol=1e-10, atol=1e-12)


def test_a_positive_outside_the_mask_and_a_user_with_every_item_masked():
    """The positive counts once whether or not it is masked; a row whose every other
    item is masked has loss 0 and no gradient."""
    u = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    items = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    pos = torch.tensor([1, 3])
    # row 0 masks items 0, 2 (not its positive); row 1 masks everything
    row = torch.tensor([0, 0, 1, 1, 1, 1, 1])
    col = torch.tensor([0, 2, 0, 1, 2, 3, 4])
    got = masked_infonce(u, items, pos, row, col)
    z = u.detach() @ items.detach().t()
    keep0 = z[0, [1, 3, 4]]
    want = (torch.logsumexp(keep0, 0) - z[0, 1] + 0.0) / 2
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    got.backward()
    assert torch.all(u.grad[1] == 0)


def test_a_second_backward_is_refused():
    u, items, users, pos, index = _case(0)
    row, col = index.gather(users)
    loss = masked_infonce(u, items, pos, row, col)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="once"):
        loss.backward()
