"""Full-ranking top-N evaluation.

Every user with at least one held-out item is ranked against **all** items;
the user's training items are masked out (score :math:`-\\infty`) and, as an
option at test time, the validation items too. The metrics follow the MMRec
definitions, computed with :mod:`torch_geometric.metrics` fed only the users
that have held-out items:

.. math::
    \\mathrm{Recall@k} = \\frac{\\mathrm{hits}}{|T_u|}, \\qquad
    \\mathrm{Precision@k} = \\frac{\\mathrm{hits}}{k}, \\qquad
    \\mathrm{NDCG@k} = \\frac{\\sum_{r \\le k,\\, \\mathrm{rel}(r)} 1/\\log_2(r+1)}
    {\\sum_{r \\le \\min(|T_u|, k)} 1/\\log_2(r+1)},

.. math::
    \\mathrm{MAP@k} = \\frac{1}{\\min(|T_u|, k)} \\sum_{r \\le k}
    \\mathrm{Precision@r} \\cdot \\mathrm{rel}(r),

each averaged over users with :math:`|T_u| > 0`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor
from torch_geometric.metrics import (
    LinkPredMAP,
    LinkPredMetricCollection,
    LinkPredNDCG,
    LinkPredPrecision,
    LinkPredRecall,
)

from mllmrec_pyg.threads import tuned_evaluation

log = logging.getLogger(__name__)

DEFAULT_KS: tuple[int, ...] = (5, 10, 20, 50)
_PYG_NAMES = {
    "recall": LinkPredRecall,
    "ndcg": LinkPredNDCG,
    "precision": LinkPredPrecision,
    "map": LinkPredMAP,
}


def _check_pairs(pairs: Tensor, what: str) -> Tensor:
    if not isinstance(pairs, Tensor) or pairs.dim() != 2 or pairs.size(0) != 2:
        shape = tuple(pairs.shape) if isinstance(pairs, Tensor) else type(pairs).__name__
        raise ValueError(f"{what} must be a LongTensor of shape [2, E], got {shape}")
    if pairs.dtype != torch.long:
        raise ValueError(f"{what} must be torch.long, got {pairs.dtype}")
    return pairs


def ranking_metrics(
    topk_items: Tensor,
    held_out: Tensor,
    ks: Sequence[int] = (10, 20),
) -> dict[str, float]:
    """Recall, NDCG, Precision and MAP at every ``k`` in ``ks``.

    Args:
        topk_items: ``LongTensor [U, K]`` of ranked item ids, row ``u`` for
            user ``u`` (all users; rows of users without held-out items are
            ignored). ``K`` must be at least ``max(ks)``.
        held_out: ``LongTensor [2, E]`` of held-out ``(user, item)`` pairs.
        ks: cut-offs.

    Returns:
        ``{"recall@10": ..., "ndcg@10": ..., "precision@10": ..., "map@10": ...,
        ...}`` as Python floats, averaged over the users that have at least one
        held-out pair.

    Raises:
        ValueError: if ``held_out`` is empty, refers to a user outside
            ``topk_items`` or ``K < max(ks)``.
    """
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) <= 0:
        raise ValueError(f"ks must be positive cut-offs, got {ks}")
    if topk_items.dim() != 2:
        raise ValueError(f"topk_items must be [U, K], got shape {tuple(topk_items.shape)}")
    if topk_items.size(1) < max(ks):
        raise ValueError(
            f"topk_items has {topk_items.size(1)} columns but metrics up to k={max(ks)} "
            "were asked for"
        )
    _check_pairs(held_out, "held_out")
    if held_out.size(1) == 0:
        raise ValueError("held_out is empty: there is no user to evaluate")
    users = held_out[0]
    if users.min() < 0 or users.max() >= topk_items.size(0):
        bad = users[(users < 0) | (users >= topk_items.size(0))][:10].tolist()
        raise ValueError(
            f"held_out names user id(s) {bad} outside topk_items' {topk_items.size(0)} rows"
        )
    held_out = unique_pairs(held_out)  # a pair counted twice is one relevant item
    users = held_out[0]
    eval_users, local = torch.unique(users, return_inverse=True)
    pred = topk_items[eval_users, : max(ks)]
    labels = torch.stack([local, held_out[1]])
    metrics = LinkPredMetricCollection(
        {f"{name}@{k}": cls(k=k) for k in ks for name, cls in _PYG_NAMES.items()}
    )
    metrics.update(pred, labels)
    return {name: float(value) for name, value in metrics.compute().items()}


def unique_pairs(pairs: Tensor) -> Tensor:
    """``torch.unique(pairs, dim=1)`` (distinct ``(user, item)`` columns, sorted by user,
    then item) through one flat key per pair; ``unique(dim=...)`` splits the tensor into
    one slice per column and is ~100x slower on an evaluation split."""
    if pairs.size(1) == 0 or int(pairs.min()) < 0:
        return torch.unique(pairs, dim=1)
    width = int(pairs[1].max()) + 1
    key = torch.unique(pairs[0] * width + pairs[1])
    return torch.stack([key.div(width, rounding_mode="floor"), key.remainder(width)])


def _topk_items_exact(scores: Tensor, k: int) -> Tensor:
    """:func:`topk_items` for rows whose ``k``-th score is tied with unselected items."""
    kth = scores.topk(k, dim=1).values[:, -1:]
    above = scores > kth
    tied = scores == kth
    need = k - above.sum(dim=1, keepdim=True)
    chosen = above | (tied & (tied.cumsum(dim=1) <= need))
    idx = chosen.nonzero()[:, 1].view(-1, k)  # row-major: ascending item id
    order = scores.gather(1, idx).argsort(dim=1, descending=True, stable=True)
    return idx.gather(1, order)


def topk_items(scores: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` highest scores per row, ties broken by lower item id.

    :func:`torch.topk` leaves the order of equal scores unspecified; here a row
    is ranked by score (descending) and, among equal scores, by item id
    (ascending), so rankings do not depend on the backend.

    :func:`torch.topk` already picks the right set of items unless the
    ``k``-th score is shared with an item it left out (the ``k+1``-th score
    equals the ``k``-th); only those rows (rare with learned float scores)
    take the slower exact path that breaks the tie by item id. The selected
    ids are then ordered by score, ties by id.

    Args:
        scores: ``[B, I]`` float scores (masked entries at ``-inf``).
        k: how many items to return, ``1 <= k <= I``.

    Returns:
        ``LongTensor [B, k]``.
    """
    num_items = scores.size(1)
    if not 1 <= k <= num_items:
        raise ValueError(f"k={k} must be between 1 and the number of items ({num_items})")
    # a row sum is NaN whenever the row holds a NaN (and also for +inf + -inf: re-checked)
    suspect = torch.isnan(scores.sum(dim=1))
    if suspect.any():
        nan_rows = suspect.nonzero().flatten()
        nan_rows = nan_rows[torch.isnan(scores[nan_rows]).any(dim=1)]
        if nan_rows.numel():
            raise ValueError(f"scores contain NaN (in block row(s) {nan_rows[:10].tolist()})")
    if k == num_items:
        idx = torch.arange(num_items).expand(scores.size(0), -1)
    else:
        # the k-th score ties with an item left out iff the (k+1)-th score equals it
        values, idx = scores.topk(k + 1, dim=1)
        ambiguous = values[:, k] == values[:, k - 1]
        idx = idx[:, :k]
    idx = idx.sort(dim=1).values  # ascending item id: the stable sort breaks ties by id
    order = scores.gather(1, idx).argsort(dim=1, descending=True, stable=True)
    out = idx.gather(1, order)
    if k < num_items and ambiguous.any():
        rows = ambiguous.nonzero().flatten()
        out[rows] = _topk_items_exact(scores[rows], k)
    return out


class CSRIndex:
    """Per-user item lists of a ``(user, item)`` pair set, for masking.

    Args:
        pairs: ``LongTensor [2, E]``.
        num_users: number of users (rows).
    """

    def __init__(self, pairs: Tensor, num_users: int) -> None:
        _check_pairs(pairs, "pairs")
        users, items = pairs[0], pairs[1]
        perm = torch.argsort(users, stable=True)
        self.col = items[perm].contiguous()
        counts = torch.bincount(users, minlength=num_users)
        self.rowptr = torch.zeros(num_users + 1, dtype=torch.long)
        self.rowptr[1:] = counts.cumsum(0)
        self.num_users = num_users

    def gather(self, users: Tensor) -> tuple[Tensor, Tensor]:
        """``(row, item)``: for each position ``row`` in ``users``, that user's items."""
        start = self.rowptr[users]
        count = self.rowptr[users + 1] - start
        total = int(count.sum())
        row = torch.repeat_interleave(torch.arange(users.numel()), count)
        offset = torch.arange(total) - torch.repeat_interleave(count.cumsum(0) - count, count)
        return row, self.col[start[row] + offset]


def mask_scores_(scores: Tensor, users: Tensor, masks: Iterable[CSRIndex]) -> Tensor:
    """Set ``scores[b, i] = -inf`` for every item ``i`` of ``users[b]`` in ``masks`` (in place)."""
    for index in masks:
        row, col = index.gather(users)
        scores[row, col] = float("-inf")
    return scores


def _owned(t: Tensor) -> bool:
    """``t`` is a fresh, contiguous tensor that nothing else refers to (safe to modify).

    Two references: the caller's variable and :func:`sys.getrefcount`'s argument.
    A view, an expanded tensor or a tensor a model keeps (a cache) is not owned.
    """
    return t._base is None and t.is_contiguous() and sys.getrefcount(t) <= 3


class FullRankEvaluator:
    """Ranks all items for every user with held-out items and computes the metrics.

    Args:
        train_edge_index: training ``(user, item)`` pairs, always masked.
        num_users: number of users.
        num_items: number of items.
        held_out: ``{"valid": pairs, "test": pairs}``; empty or missing splits
            raise when evaluated.
        ks: cut-offs.
        block_size: users scored at once (memory ``block_size x num_items``).
        mask_valid_at_test: also mask the validation items when ranking for
            ``"test"`` (MMRec does not; default ``False``).
    """

    def __init__(
        self,
        train_edge_index: Tensor,
        num_users: int,
        num_items: int,
        held_out: dict[str, Tensor],
        ks: Sequence[int] = DEFAULT_KS,
        block_size: int = 1024,
        mask_valid_at_test: bool = False,
    ) -> None:
        self.num_users = int(num_users)
        self.num_items = int(num_items)
        self.ks = tuple(ks)
        if max(self.ks) > self.num_items:
            raise ValueError(f"k={max(self.ks)} exceeds the number of items ({self.num_items})")
        self.block_size = int(block_size)
        self.mask_valid_at_test = mask_valid_at_test
        self.held_out = {
            name: _check_pairs(p, f"held-out {name!r} pairs") for name, p in held_out.items()
        }
        self.train_index = CSRIndex(train_edge_index, self.num_users)
        self._valid_index = (
            CSRIndex(self.held_out["valid"], self.num_users) if "valid" in self.held_out else None
        )

    def masks_for(self, split: str) -> list[CSRIndex]:
        """The pair sets masked when ranking for ``split``."""
        masks = [self.train_index]
        if split == "test" and self.mask_valid_at_test and self._valid_index is not None:
            masks.append(self._valid_index)
        return masks

    def users(self, split: str) -> Tensor:
        """Sorted ids of the users with at least one held-out item in ``split``."""
        return torch.unique(self._pairs(split)[0])

    def _pairs(self, split: str) -> Tensor:
        if split not in self.held_out:
            raise ValueError(
                f"no held-out pairs for split {split!r} (have {sorted(self.held_out)})"
            )
        pairs = self.held_out[split]
        if pairs.size(1) == 0:
            raise ValueError(
                f"the {split!r} split is empty: no user has a held-out item there, so "
                "there is nothing to evaluate"
            )
        return pairs

    @torch.no_grad()
    def rank(
        self, score_fn: Callable[[Tensor], Tensor], users: Tensor, k: int, split: str = "valid"
    ) -> Tensor:
        """Top-``k`` unseen items for ``users`` (``LongTensor [len(users), k]``).

        Args:
            score_fn: maps a block of user ids to ``[B, num_items]`` scores.
            users: user ids.
            k: list length.
            split: which masks apply (``"valid"`` or ``"test"``).
        """
        out = []
        # the thread policy times the blocks (mllmrec_pyg.threads)
        for start in tuned_evaluation(range(0, users.numel(), self.block_size)):
            block = users[start : start + self.block_size]
            scores = score_fn(block).float()
            if scores.shape != (block.numel(), self.num_items):
                raise ValueError(
                    f"score function returned shape {tuple(scores.shape)} for "
                    f"{block.numel()} users and {self.num_items} items"
                )
            if not _owned(scores):
                scores = scores.clone()  # masking writes in place
            scores = mask_scores_(scores, block, self.masks_for(split))
            out.append(topk_items(scores, k))
        return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long)

    def evaluate(self, score_fn: Callable[[Tensor], Tensor], split: str) -> dict[str, float]:
        """Metrics of ``score_fn`` on ``split`` (``"valid"`` or ``"test"``)."""
        pairs = self._pairs(split)
        users = torch.unique(pairs[0])
        top = self.rank(score_fn, users, max(self.ks), split=split)
        full = torch.zeros(self.num_users, top.size(1), dtype=torch.long)
        full[users] = top
        return ranking_metrics(full, pairs, self.ks)

    def per_user(
        self, score_fn: Callable[[Tensor], Tensor], split: str, k: int
    ) -> dict[str, Tensor]:
        """Recall@k and NDCG@k of every user with a held-out item in ``split``.

        Returns ``{"users": ids, "recall@k": [U], "ndcg@k": [U]}``; their means
        are the ``recall@k`` and ``ndcg@k`` of :meth:`evaluate`.
        """
        pairs = unique_pairs(self._pairs(split))
        users = torch.unique(pairs[0])
        top = self.rank(score_fn, users, k, split=split)
        row = torch.searchsorted(users, pairs[0])
        pos = torch.zeros(users.numel(), self.num_items, dtype=torch.bool)
        pos[row, pairs[1]] = True
        hits = pos.gather(1, top).float()
        n_pos = pos.sum(1).float()
        discount = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float))
        idcg = torch.cumsum(discount, 0)[(n_pos.clamp(max=k) - 1).long()]
        return {
            "users": users,
            f"recall@{k}": hits.sum(1) / n_pos,
            f"ndcg@{k}": (hits * discount).sum(1) / idcg,
        }
