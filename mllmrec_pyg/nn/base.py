"""What the trainer needs from a model, and a base class that provides the rest.

The trainer (:mod:`mllmrec_pyg.train`) is model-agnostic: it only calls

* ``pair_scores(users, pos_items, neg_items) -> (pos_scores, neg_scores)`` for
  a mini-batch of BPR triples, computing only what the batch needs;
* ``scorer() -> Callable[[users], scores]`` for full ranking, where the
  callable maps a block of user ids to ``[B, num_items]`` scores; ``scorer``
  is called once per evaluation, so it is the place to precompute
  representations shared by all blocks;
* the optional hooks, declared on :class:`RankingModel` with defaults that
  change nothing: ``reg_loss(users, pos_items, neg_items)`` (added to the
  loss), ``batch_loss(users, pos_items, neg_items)`` (replaces BPR when it
  returns a tensor; ``neg_items`` is ``[B, num_negatives]`` when the model
  sets ``num_negatives > 1``) and ``on_train_epoch_start(epoch)`` (called
  before each epoch's first batch).

:class:`RankingModel` adds ``recommend(user_ids, k)`` (top-k unseen items),
construction from a :class:`~torch_geometric.data.HeteroData` and a JSON-able
config so that checkpoints can be rebuilt.
"""

from __future__ import annotations

import dataclasses
import itertools
import numbers
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from mllmrec_pyg.data.schema import RELATED
from mllmrec_pyg.metrics import CSRIndex, mask_scores_, topk_items

ScoreFn = Callable[[Tensor], Tensor]


def gather_triples(
    user_out: Tensor, item_out: Tensor, users: Tensor, pos_items: Tensor, neg_items: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The rows ``user_out[users]``, ``item_out[pos_items]``, ``item_out[neg_items]``.

    The values are those of plain indexing; the items come from one
    ``index_select`` over ``pos_items`` and ``neg_items`` together, so the
    backward pass is one ``index_add`` into one ``[I, d]`` gradient instead of
    two sorted ``index_put`` accumulations (indexing's backward) summed afterwards.
    ``neg_items`` may be ``[B, n]``; its rows come back as ``[B, n, d]``.
    """
    u = user_out.index_select(0, users)
    items = item_out.index_select(0, torch.cat([pos_items, neg_items.reshape(-1)]))
    p, n = items.split([pos_items.numel(), neg_items.numel()])
    return u, p, n.view(*neg_items.shape, -1)


def dot_pair_scores(
    user_out: Tensor, item_out: Tensor, users: Tensor, pos_items: Tensor, neg_items: Tensor
) -> tuple[Tensor, Tensor]:
    """:meth:`RankingModel.pair_scores` as inner products of final representations."""
    u, p, n = gather_triples(user_out, item_out, users, pos_items, neg_items)
    return (u * p).sum(-1), (u * n).sum(-1)


def dot_scorer(user_out: Tensor, item_out: Tensor) -> ScoreFn:
    """:meth:`RankingModel.scorer` as inner products of final representations."""

    def score(users: Tensor) -> Tensor:
        return user_out[users] @ item_out.t()

    return score


def reads_refined_graph(item_graph: Any) -> bool:
    """Whether a model's ``item_graph`` setting names the refined graph ``S*`` that the
    pipeline builds (``("item", "related", "item")``; JSON turns it into a list)."""
    return item_graph is not None and tuple(item_graph) == RELATED


def user_id_tensor(user_ids: Any, num_users: int) -> Tensor:
    """``user_ids`` (an integer tensor or array, a list of ints or one int) as a flat
    ``LongTensor``, each checked to be an integer in ``[0, num_users)``.

    Raises:
        TypeError: a float, bool, string or other non-integer id (never rounded or cast).
        ValueError: an id outside ``[0, num_users)``, however large.
    """
    if isinstance(user_ids, Tensor):
        if user_ids.dtype == torch.bool or user_ids.is_floating_point() or user_ids.is_complex():
            raise TypeError(f"user ids must be integers, got a {user_ids.dtype} tensor")
        users = user_ids.detach().to("cpu", torch.long).flatten()
        outside = users[(users < 0) | (users >= num_users)][:10].tolist()
    else:
        flat = np.asarray(user_ids, dtype=object).reshape(-1).tolist()
        bad = [v for v in flat if isinstance(v, bool) or not isinstance(v, numbers.Integral)]
        if bad:
            raise TypeError(f"user ids must be integers, got {bad[:5]!r}")
        outside = [int(v) for v in flat if not 0 <= v < num_users][:10]
        if not outside:
            users = torch.tensor([int(v) for v in flat], dtype=torch.long)
    if outside:
        raise ValueError(f"user id(s) {outside} outside [0, {num_users})")
    return users


@runtime_checkable
class Recommender(Protocol):
    """The interface :class:`~mllmrec_pyg.train.Trainer` trains and evaluates."""

    num_users: int
    num_items: int

    def pair_scores(
        self, users: Tensor, pos_items: Tensor, neg_items: Tensor
    ) -> tuple[Tensor, Tensor]: ...

    def scorer(self) -> ScoreFn: ...


class RankingModel(nn.Module):
    """Base class of the package's recommenders.

    Subclasses set ``name`` and ``config_class`` (a dataclass), implement
    :meth:`from_data`, :meth:`pair_scores` and :meth:`scorer`, and may override
    :meth:`reg_loss`.

    Args:
        num_users: number of users.
        num_items: number of items.
    """

    name: ClassVar[str] = "model"
    config_class: ClassVar[type] = object

    def __init__(self, num_users: int, num_items: int) -> None:
        super().__init__()
        self.num_users = int(num_users)
        self.num_items = int(num_items)
        self._seen: CSRIndex | None = None
        self.config: Any = None

    # -- construction ---------------------------------------------------------------
    @classmethod
    def requires(cls, config: Any) -> frozenset[str]:
        """What :meth:`from_data` reads besides the training pairs, for ``config``:
        ``"items"`` (``data["item"].x``), ``"users"`` (``data["user"].x``),
        ``"graph"`` (the refined item graph ``data["item", "related", "item"]``) and
        ``"item_head"`` (the head view ``data["item"].x_head``).
        The pipeline prepares exactly these."""
        return frozenset()

    @classmethod
    def from_data(cls, data: HeteroData, config: Any = None) -> RankingModel:
        """Build the model for ``data`` (training pairs, features, graphs)."""
        raise NotImplementedError

    def config_dict(self) -> dict[str, Any]:
        """The config as a JSON-able dict (stored in checkpoints)."""
        if self.config is None or not dataclasses.is_dataclass(self.config):
            return {}
        return dataclasses.asdict(self.config)

    def set_seen(self, edge_index: Tensor) -> RankingModel:
        """Remember the training pairs so that :meth:`recommend` skips them."""
        self._seen = CSRIndex(edge_index.cpu(), self.num_users)
        return self

    def _id_tables(self, dim: int) -> tuple[nn.Embedding, nn.Embedding]:
        """New user and item ID embedding tables, ``[U, dim]`` then ``[I, dim]``."""
        return nn.Embedding(self.num_users, dim), nn.Embedding(self.num_items, dim)

    # -- the trainer's interface -----------------------------------------------------
    def pair_scores(
        self, users: Tensor, pos_items: Tensor, neg_items: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Scores of ``(users, pos_items)`` and ``(users, neg_items)``, each ``[B]``."""
        raise NotImplementedError

    def scorer(self) -> ScoreFn:
        """A function from a block of user ids to ``[B, num_items]`` scores."""
        raise NotImplementedError

    #: negatives the trainer draws per positive (``neg_items`` is ``[B, num_negatives]`` if > 1)
    num_negatives: ClassVar[int] = 1

    def reg_loss(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor | None:
        """An extra loss term for the batch, or ``None``."""
        return None

    def batch_loss(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor | None:
        """The batch's loss, replacing BPR on :meth:`pair_scores`; ``None`` keeps BPR."""
        return None

    def on_train_epoch_start(self, epoch: int) -> None:
        """Called by the trainer before the first batch of ``epoch`` (1-based)."""

    # -- inference ------------------------------------------------------------------
    @torch.no_grad()
    def recommend(
        self, user_ids: Tensor | list[int], k: int = 20, exclude_seen: bool = True
    ) -> Tensor:
        """Top-``k`` items for each user, best first, training items excluded.

        Args:
            user_ids: user ids: an integer tensor or array, a list of ints or one int.
            k: list length, an int in ``[1, num_items]``.
            exclude_seen: skip the user's training items (needs
                :meth:`set_seen`, done by :meth:`from_data`).

        Returns:
            ``LongTensor [len(user_ids), k]`` of item ids, on the CPU wherever
            the model runs; equal scores are ordered by item id. A user with
            fewer than ``k`` unseen items gets them first, then seen items
            (ranked last, by id).

        Raises:
            TypeError: ids or ``k`` that are not integers (floats, bools, strings).
            ValueError: ids outside ``[0, num_users)``, ``k`` outside ``[1, num_items]``.
        """
        users = user_id_tensor(user_ids, self.num_users)
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise TypeError(f"k must be an integer, got {k!r}")
        if not 1 <= k <= self.num_items:
            raise ValueError(f"k={k} must be between 1 and the number of items ({self.num_items})")
        if exclude_seen and self._seen is None:
            raise RuntimeError("recommend(exclude_seen=True) needs set_seen(train_edge_index)")
        was_training = self.training
        self.eval()
        try:
            scores = self.scorer()(users.to(self._device())).float().cpu().clone()
        finally:
            self.train(was_training)
        if exclude_seen:
            mask_scores_(scores, users.cpu(), [self._seen])
        return topk_items(scores, k)

    def _device(self) -> torch.device:
        """Where the model's parameters (or, without any, its buffers) live."""
        for t in itertools.chain(self.parameters(), self.buffers()):
            return t.device
        return torch.device("cpu")

    def extra_repr(self) -> str:
        return f"num_users={self.num_users}, num_items={self.num_items}"
