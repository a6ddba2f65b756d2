"""The same post-hoc re-ranking for any trained model, its two weights chosen on validation.

A trained model's scores ``s(u, i)`` become

.. math::

    s(u, i) + \\sigma\\,(\\beta\\, p_{ui} + \\gamma\\, q_i)

with :math:`p_{ui}` the user's co-purchase prior
(:func:`~mllmrec_pyg.nn.ranking_terms.cooccurrence_prior`), :math:`q_i` the item's log
popularity (:func:`~mllmrec_pyg.nn.ranking_terms.log_popularity`), both from the TRAINING pairs
only and both in ``[0, 1]``, and :math:`\\sigma` the model's mean per-user score spread
(:func:`score_spread`), so that one grid fits dot-product and cosine scores alike.
:math:`(\\beta, \\gamma)` is the point of ``grid x grid`` (:data:`GRID`) with the best
VALIDATION metric; ``(0, 0)``, the model alone, is in the grid, so validation never
prefers a re-ranking that does not help there. Test pairs are read by nobody here.

``mllmrec experiment compare --rerank`` gives every compared model this stage, so that a
model whose own scores carry such terms (see :mod:`mllmrec_pyg.nn.ranking_terms`) is not
compared with baselines that never had them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mllmrec_pyg.metrics import FullRankEvaluator, _owned
from mllmrec_pyg.nn.base import ScoreFn
from mllmrec_pyg.nn.ranking_terms import (
    SparseRows,
    cooccurrence_prior,
    log_popularity,
    with_ranking_terms,
)

#: the multiples of the score spread tried for each of the two weights
GRID: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0)
#: users whose score rows give the spread (the first ones, so the number is reproducible)
SPREAD_USERS = 4096
#: score tables up to this many entries are computed once for the whole grid
CACHE_ENTRIES = 1 << 27


@dataclass(frozen=True)
class Reranking:
    """A chosen re-ranking: ``prior`` and ``popularity`` in multiples of ``spread``."""

    prior: float
    popularity: float
    spread: float

    def apply(self, base: ScoreFn, terms: RankingTerms) -> ScoreFn:
        """``base`` with the two terms at this re-ranking's weights."""
        if self.prior == 0.0 and self.popularity == 0.0:
            return base

        def owned(users: Tensor) -> Tensor:  # the terms are added in place
            s = base(users)
            return s if _owned(s) else s.clone()

        return with_ranking_terms(
            owned,
            terms.prior,
            self.prior * self.spread,
            terms.popularity,
            self.popularity * self.spread,
        )


@dataclass
class RankingTerms:
    """The two training-pair terms of a dataset, built once."""

    prior: SparseRows
    popularity: Tensor

    @classmethod
    def of(cls, pairs: Tensor, num_users: int, num_items: int) -> RankingTerms:
        """The terms of the TRAINING ``(user, item)`` ``pairs``."""
        return cls(
            cooccurrence_prior(pairs, num_users, num_items), log_popularity(pairs, num_items)
        )


@torch.no_grad()
def score_spread(base: ScoreFn, num_users: int, users: int = SPREAD_USERS) -> float:
    """The mean over the first ``users`` users of the standard deviation of their scores."""
    ids = torch.arange(min(int(num_users), users))
    return float(base(ids).float().std(1).mean())


def _cached(base: ScoreFn, users: Tensor, num_items: int) -> ScoreFn:
    """``base`` computed once for the sorted ``users`` and then read from a table, where
    the table fits in :data:`CACHE_ENTRIES` (else ``base`` itself); other users are scored
    by ``base``."""
    if users.numel() * num_items > CACHE_ENTRIES:
        return base
    table = torch.empty(users.numel(), num_items)
    for start in range(0, users.numel(), 1024):
        table[start : start + 1024] = base(users[start : start + 1024]).float().cpu()

    def score(block: Tensor) -> Tensor:
        block = block.cpu()
        pos = torch.searchsorted(users, block).clamp_max(users.numel() - 1)
        if not bool((users[pos] == block).all()):
            return base(block).float().cpu()
        return table.index_select(0, pos)  # a copy: the caller may write in it

    return score


@torch.no_grad()
def choose_reranking(
    base: ScoreFn,
    evaluator: FullRankEvaluator,
    terms: RankingTerms,
    monitor: str = "recall@20",
    grid: Sequence[float] = GRID,
) -> tuple[Reranking, dict[str, float]]:
    """The point of ``grid x grid`` with the best VALIDATION ``monitor`` (ties: the
    smaller weights, the model alone first).

    Returns ``(chosen, valid)``: the re-ranking and its full validation metrics.
    """
    if 0.0 not in grid:
        raise ValueError(f"the grid must hold 0 (the model alone), got {tuple(grid)}")
    spread = score_spread(base, evaluator.num_users)
    if not spread > 0.0:
        return Reranking(0.0, 0.0, spread), evaluator.evaluate(base, "valid")
    cached = _cached(base, evaluator.users("valid").cpu(), evaluator.num_items)
    best: tuple[float, Reranking, dict[str, float]] | None = None
    for beta, gamma in itertools.product(sorted(grid), sorted(grid)):
        choice = Reranking(float(beta), float(gamma), spread)
        metrics = evaluator.evaluate(choice.apply(cached, terms), "valid")
        if best is None or metrics[monitor] > best[0]:
            best = (metrics[monitor], choice, metrics)
    assert best is not None
    return best[1], best[2]


__all__ = [
    "CACHE_ENTRIES",
    "GRID",
    "RankingTerms",
    "Reranking",
    "SPREAD_USERS",
    "choose_reranking",
    "score_spread",
]
