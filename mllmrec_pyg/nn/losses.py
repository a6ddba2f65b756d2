r"""A full-softmax InfoNCE over every item, fused into one autograd function.

For a batch of users :math:`u_b` with positives :math:`p_b` and logits
:math:`z_{bi} = \langle u_b, v_i\rangle` (the caller scales :math:`u` by
:math:`1/\tau`), the loss is

.. math::
    \mathcal L = \frac{1}{B} \sum_b \Big( \log \sum_{i \in \mathcal N_b \cup \{p_b\}}
    e^{z_{bi}} - z_{b p_b} \Big),

where :math:`\mathcal N_b` is every item the user has no training pair with.
Written with autograd ops it allocates about ten ``[B, I]`` tensors per step
(the masked copy, the shifted logits, the exponentials, and as many again in the
backward pass). :class:`MaskedInfoNCE` keeps one: the forward pass writes the
logits, masks them, exponentiates them in place and keeps the result; the
backward pass turns it into the softmax gradient in place and multiplies it
back. The numbers are those of the autograd version up to float rounding
(``tests/test_losses.py`` checks the loss and both gradients against it).
"""

from __future__ import annotations

import torch
from torch import Tensor


class MaskedInfoNCE(torch.autograd.Function):
    """``forward(u, items, pos, mask_row, mask_col)`` -> the mean InfoNCE loss.

    ``u`` ``[B, d]`` (already divided by the temperature), ``items`` ``[I, d]``,
    ``pos`` ``[B]`` the positives, ``(mask_row, mask_col)`` the ``(row in batch,
    item)`` entries left out of the denominator (the user's training items; the
    positive is put back whether it is among them or not).
    """

    @staticmethod
    def forward(ctx, u, items, pos, mask_row, mask_col):  # noqa: D102
        rows = torch.arange(u.size(0), device=u.device)
        logits = u @ items.t()
        pos_logit = logits[rows, pos].clone()
        logits[mask_row, mask_col] = float("-inf")
        logits[rows, pos] = pos_logit
        top = logits.amax(dim=1, keepdim=True)
        weights = logits.sub_(top).exp_()  # e^{z - max}, masked entries 0
        total = weights.sum(dim=1, keepdim=True)
        loss = (top.squeeze(1) + total.squeeze(1).log() - pos_logit).mean()
        ctx.save_for_backward(u, items, pos, weights, total)
        return loss

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        if getattr(ctx, "spent", False):
            raise RuntimeError(
                "masked_infonce reuses its saved [B, I] buffer for the gradient, so its "
                "graph can be backpropagated once only (retain_graph is not supported)"
            )
        ctx.spent = True
        u, items, pos, weights, total = ctx.saved_tensors
        scale = grad / u.size(0)
        # dL/dz = (softmax - onehot(pos)) / B, written over the kept exponentials
        g = weights.mul_(scale / total)
        g[torch.arange(u.size(0), device=u.device), pos] -= scale
        grad_u = g @ items if ctx.needs_input_grad[0] else None
        grad_items = g.t() @ u if ctx.needs_input_grad[1] else None
        return grad_u, grad_items, None, None, None


def masked_infonce(
    u: Tensor, items: Tensor, pos: Tensor, mask_row: Tensor, mask_col: Tensor
) -> Tensor:
    """The mean full-softmax InfoNCE of :class:`MaskedInfoNCE`; see the module docstring.

    Args:
        u: ``[B, d]`` user vectors divided by the temperature.
        items: ``[I, d]`` item vectors.
        pos: ``[B]`` each row's positive item.
        mask_row: rows of the entries left out of the denominator.
        mask_col: their items.
    """
    return MaskedInfoNCE.apply(u, items, pos, mask_row, mask_col)


__all__ = ["MaskedInfoNCE", "masked_infonce"]
