r"""Losses fused into one autograd function each: a full-softmax InfoNCE over every
item (:func:`masked_infonce`) and BPR with a norm penalty (:func:`bpr_norm_penalty`).

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


class BPRNormPenalty(torch.autograd.Function):
    r"""``forward(u, p, n, weight)`` -> BPR plus a penalty on the batch's Frobenius norms:

    .. math::
        \mathcal L = \frac{1}{B} \sum_b -\log \sigma(\langle u_b, p_b - n_b\rangle)
        + \frac{\lambda}{B} \big(\lVert U\rVert_F + \lVert P\rVert_F + \lVert N\rVert_F\big)

    (VBPR's objective in the MMRec framework). The gradient is written out:
    with :math:`c_b = -\sigma(-s_b)/B`, :math:`\partial_{u_b} = c_b (p_b - n_b) +
    \lambda u_b / (B \lVert U\rVert_F)`, :math:`\partial_{p_b} = c_b u_b + \lambda p_b /
    (B \lVert P\rVert_F)`, :math:`\partial_{n_b} = -c_b u_b + \lambda n_b / (B \lVert
    N\rVert_F)`: three ``[B, d]`` products instead of the dozen small kernels autograd
    runs for the scores, the log-sigmoid and three norms."""

    @staticmethod
    def forward(ctx, u: Tensor, p: Tensor, n: Tensor, weight: float) -> Tensor:  # type: ignore[override]
        loss, saved = _bpr_norm_forward(u, p, n, weight)
        ctx.weight = weight
        ctx.save_for_backward(*saved)
        return loss

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return (*_bpr_norm_backward(ctx.saved_tensors, ctx.weight, grad), None)


def _bpr_norm_forward(
    u: Tensor, p: Tensor, n: Tensor, weight: float
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """:class:`BPRNormPenalty`'s loss and what its gradient needs."""
    b = u.size(0)
    diff = p - n
    s = (u * diff).sum(-1)
    loss = torch.nn.functional.softplus(-s).mean()  # -log sigmoid(s)
    norms = torch.stack([t.reshape(-1).dot(t.reshape(-1)) for t in (u, p, n)]).sqrt()
    if weight > 0:
        loss = loss + weight * norms.sum() / b
    return loss, (u, p, n, diff, s, norms)


def _bpr_norm_backward(
    saved: tuple[Tensor, ...], weight: float, grad: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The gradients of :class:`BPRNormPenalty`'s loss (times ``grad``) for ``u, p, n``."""
    u, p, n, diff, s, norms = saved
    b = u.size(0)
    c = (torch.sigmoid(-s) * (-grad / b)).unsqueeze(1)
    du, dp = c * diff, c * u
    dn = -dp
    if weight > 0:
        scale = (grad * weight / b) / norms.clamp_min(torch.finfo(norms.dtype).tiny)
        du.add_(u * scale[0])
        dp.add_(p * scale[1])
        dn.add_(n * scale[2])
    return du, dp, dn


def bpr_norm_penalty(u: Tensor, p: Tensor, n: Tensor, weight: float = 0.0) -> Tensor:
    """BPR on ``[B, d]`` user, positive and negative vectors plus ``weight`` times the sum
    of their Frobenius norms over ``B`` (:class:`BPRNormPenalty`); the values and
    gradients of ``-logsigmoid((u*p).sum(-1) - (u*n).sum(-1)).mean() + weight *
    (u.norm() + p.norm() + n.norm()) / B`` up to float rounding."""
    return BPRNormPenalty.apply(u, p, n, float(weight))


class ContentBPR(torch.autograd.Function):
    r"""VBPR's whole objective from its parameters, forward and backward written out.

    ``forward(user_emb, item_emb, weight, bias, features, users, items, l2)`` with
    ``items`` the batch's positives then negatives: item vectors
    :math:`q_i = [\gamma_i \| E f_i + c]` for the batch's DISTINCT items only (one
    ``[I_b, F] x [F, d]`` product instead of one over every item), user vectors
    :math:`P_u`, and :func:`bpr_norm_penalty` on them. The backward pass adds the rows'
    gradients once into ``[U, 2d]`` and ``[I_b, 2d]`` buffers and takes the projection's
    gradient from the latter: autograd would run about thirty kernels and three
    scatters for the same numbers."""

    @staticmethod
    def forward(ctx, user_emb, item_emb, weight, bias, features, users, items, l2):  # type: ignore[override]
        uniq, inv = torch.unique(items, return_inverse=True)
        f = features.index_select(0, uniq)
        q = torch.cat([item_emb.index_select(0, uniq), torch.addmm(bias, f, weight.t())], 1)
        u = user_emb.index_select(0, users)
        p, n = q.index_select(0, inv).split(users.numel())
        loss, saved = _bpr_norm_forward(u, p, n, l2)
        ctx.save_for_backward(users, uniq, inv, f, *saved)
        ctx.l2 = l2
        ctx.shapes = (user_emb.shape, item_emb.shape)
        return loss

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        users, uniq, inv, f, *saved = ctx.saved_tensors
        du, dp, dn = _bpr_norm_backward(tuple(saved), ctx.l2, grad)
        (num_users, d2), (num_items, d) = ctx.shapes
        g_user = du.new_zeros(num_users, d2).index_add_(0, users, du)
        g_rows = du.new_zeros(uniq.numel(), 2 * d).index_add_(0, inv, torch.cat([dp, dn]))
        g_item = du.new_zeros(num_items, d).index_copy_(0, uniq, g_rows[:, :d])
        g_proj = g_rows[:, d:]
        return g_user, g_item, g_proj.t() @ f, g_proj.sum(0), None, None, None, None


def content_bpr(
    user_emb: Tensor,
    item_emb: Tensor,
    weight: Tensor,
    bias: Tensor,
    features: Tensor,
    users: Tensor,
    items: Tensor,
    l2: float = 0.0,
) -> Tensor:
    """VBPR's objective (:class:`ContentBPR`): ``user_emb`` ``[U, 2d]``, ``item_emb``
    ``[I, d]``, the projection ``weight`` ``[d, F]`` and ``bias`` ``[d]`` of the frozen
    ``features`` ``[I, F]``; ``items`` ``[2B]`` the batch's positives then negatives."""
    return ContentBPR.apply(user_emb, item_emb, weight, bias, features, users, items, float(l2))


__all__ = [
    "BPRNormPenalty",
    "ContentBPR",
    "MaskedInfoNCE",
    "bpr_norm_penalty",
    "content_bpr",
    "masked_infonce",
]
