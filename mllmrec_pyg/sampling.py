"""Randomness the trainer relies on: seeding, and exact uniform negative sampling."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import Tensor


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (call before building a model)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class UniformNegativeSampler:
    """Draws, for each user, an item uniformly from those it has not interacted with.

    Exact and without rejection: with :math:`S_u` the sorted training items of
    :math:`u` and :math:`r` uniform in :math:`[0, I - |S_u|)`, the :math:`r`-th
    item not in :math:`S_u` is :math:`r + |\\{t : S_u[t] - t \\le r\\}|`, found
    for the whole batch with one :func:`torch.searchsorted`.

    Args:
        edge_index: training ``(user, item)`` pairs.
        num_users: number of users.
        num_items: number of items.

    Raises:
        ValueError: if a user has interacted with every item (no negative exists).
    """

    def __init__(self, edge_index: Tensor, num_users: int, num_items: int) -> None:
        self.num_users = int(num_users)
        self.num_items = int(num_items)
        pairs = torch.unique(edge_index.cpu(), dim=1)  # sorted by user, then item
        users, items = pairs[0], pairs[1]
        self.degree = torch.bincount(users, minlength=self.num_users)
        full = (self.degree >= self.num_items).nonzero().flatten()
        if full.numel():
            raise ValueError(
                f"user(s) {full[:10].tolist()} interacted with all {self.num_items} items in "
                "training: no negative item can be drawn for them"
            )
        self.rowptr = torch.zeros(self.num_users + 1, dtype=torch.long)
        self.rowptr[1:] = self.degree.cumsum(0)
        rank = torch.arange(users.numel()) - self.rowptr[users]
        # S_u[t] - t lies in [0, I]; offsetting by u * (I + 1) keeps users apart.
        self._keys = users * (self.num_items + 1) + (items - rank)

    def __call__(self, users: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One negative item per entry of ``users`` (``LongTensor`` of the same shape)."""
        flat = users.reshape(-1).cpu()
        free = (self.num_items - self.degree[flat]).double()
        r = (torch.rand(flat.numel(), generator=generator, dtype=torch.float64) * free).long()
        r = torch.minimum(r, free.long() - 1)
        query = flat * (self.num_items + 1) + r
        below = torch.searchsorted(self._keys, query, right=True) - self.rowptr[flat]
        return (r + below).view(users.shape).to(users.device)


__all__ = ["UniformNegativeSampler", "seed_everything"]
