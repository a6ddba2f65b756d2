r"""A full-softmax InfoNCE over every item, fused into one autograd function.

For a batch of training pairs :math:`(u_b, p_b)` and logits
:math:`z_{ui} = \langle u, v_i\rangle` (the caller scales :math:`u` by
:math:`1/\tau`), the loss is

.. math::
    \mathcal L = \frac{1}{B} \sum_b \Big( \log \Big( e^{z_{u_b p_b}} +
    \sum_{i \in \mathcal N_{u_b}} e^{z_{u_b i}} \Big) - z_{u_b p_b} \Big),

where :math:`\mathcal N_u` is every item the user has no training pair with.
The negatives' sum :math:`S_u` depends on the user alone, so it is computed
once per DISTINCT user of the batch: a batch of 2,048 pairs of 610 users
(MovieLens) needs a ``[610, I]`` product, not ``[2048, I]``. Its gradient is
shared the same way: :math:`\partial \mathcal L / \partial z_{ui} = e^{z_{ui}}
\sum_{b: u_b = u} 1 / (B\,(e^{z_{u p_b}} + S_u))` for a negative :math:`i`.

Written with autograd ops the loss allocates about ten ``[B, I]`` tensors per
step; :class:`MaskedInfoNCE` keeps one ``[U_b, I]`` buffer: the forward pass
writes the logits, masks them, exponentiates them in place and keeps the
result; the backward pass scales it into the gradient in place and multiplies
it back. The numbers are those of the per-pair autograd version up to float
rounding (``tests/test_losses.py`` checks the loss and both gradients).
"""

from __future__ import annotations

import torch
from torch import Tensor


class MaskedInfoNCE(torch.autograd.Function):
    """``forward(u, items, inverse, pos, mask_row, mask_col)`` -> the mean InfoNCE loss.

    ``u`` ``[U_b, d]``: the batch's distinct users (divided by the temperature);
    ``items`` ``[I, d]``; ``inverse`` ``[B]``: each pair's row in ``u``; ``pos``
    ``[B]``: each pair's positive; ``(mask_row, mask_col)``: the ``(row of u, item)``
    entries that are no negatives (the users' training items). Every pair's
    positive is left out of its user's negatives too, and counted once in its own
    pair's denominator.
    """

    @staticmethod
    def forward(ctx, u, items, inverse, pos, mask_row, mask_col):  # noqa: D102
        logits = u @ items.t()
        pos_logit = logits[inverse, pos]
        logits[mask_row, mask_col] = float("-inf")
        logits[inverse, pos] = float("-inf")
        # each user's largest logit among its negatives and its pairs' positives
        top = logits.amax(dim=1).scatter_reduce_(0, inverse, pos_logit, "amax")
        weights = logits.sub_(top.unsqueeze(1)).exp_()  # e^{z - top}, no-negatives 0
        neg_sum = weights.sum(dim=1)  # S_u e^{-top}
        pos_exp = (pos_logit - top[inverse]).exp()
        denom = neg_sum[inverse] + pos_exp
        loss = (top[inverse] + denom.log() - pos_logit).mean()
        ctx.save_for_backward(u, items, inverse, pos, weights, denom, pos_exp)
        return loss

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        if getattr(ctx, "spent", False):
            raise RuntimeError(
                "masked_infonce reuses its saved [U_b, I] buffer for the gradient, so its "
                "graph can be backpropagated once only (retain_graph is not supported)"
            )
        ctx.spent = True
        u, items, inverse, pos, weights, denom, pos_exp = ctx.saved_tensors
        scale = grad / inverse.numel()
        # negatives: e^{z_ui} * sum over the user's pairs of 1 / (B * denom_b)
        coef = torch.zeros(u.size(0), dtype=u.dtype, device=u.device)
        coef.index_add_(0, inverse, scale / denom)
        g = weights.mul_(coef.unsqueeze(1))
        # each pair's positive: softmax - 1
        g.index_put_((inverse, pos), scale * (pos_exp / denom - 1.0), accumulate=True)
        grad_u = g @ items if ctx.needs_input_grad[0] else None
        grad_items = g.t() @ u if ctx.needs_input_grad[1] else None
        return grad_u, grad_items, None, None, None, None


def masked_infonce(
    u: Tensor,
    items: Tensor,
    inverse: Tensor,
    pos: Tensor,
    mask_row: Tensor,
    mask_col: Tensor,
) -> Tensor:
    """The mean full-softmax InfoNCE of :class:`MaskedInfoNCE`; see the module docstring.

    Args:
        u: ``[U_b, d]`` the batch's distinct users' vectors divided by the temperature.
        items: ``[I, d]`` item vectors.
        inverse: ``[B]`` each pair's row in ``u``.
        pos: ``[B]`` each pair's positive item.
        mask_row: rows of ``u`` of the entries that are no negatives.
        mask_col: their items.
    """
    return MaskedInfoNCE.apply(u, items, inverse, pos, mask_row, mask_col)


__all__ = ["MaskedInfoNCE", "masked_infonce"]
