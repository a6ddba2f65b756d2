"""Audience co-occurrence item-item graph: top-K Jaccard over training users."""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.transforms import BaseTransform

from mllmrec_pyg._sparse import csr, quiet_sparse
from mllmrec_pyg.data.schema import (
    check_edge_index,
    item_edge_type,
    require_edge_type,
    require_node_type,
)
from mllmrec_pyg.transforms.threshold_knn import _check_k


def _csr(rows: Tensor, cols: Tensor, num_rows: int, num_cols: int) -> Tensor:
    """Binary CSR matrix from (row, col) pairs sorted by row."""
    crow = torch.zeros(num_rows + 1, dtype=torch.long, device=rows.device)
    crow[1:] = torch.bincount(rows, minlength=num_rows).cumsum(0)
    values = torch.ones(rows.numel(), dtype=torch.float32, device=rows.device)
    return csr(crow, cols, values, (num_rows, num_cols))


def rowwise_topk(rows: Tensor, cols: Tensor, vals: Tensor, k: int) -> Tensor:
    """Mask of the ``k`` largest ``vals`` within each row; ties go to the lower column."""
    order = torch.argsort(cols, stable=True)
    order = order[torch.argsort(-vals[order], stable=True)]
    order = order[torch.argsort(rows[order], stable=True)]
    sorted_rows = rows[order]
    start = torch.searchsorted(sorted_rows, sorted_rows, right=False)
    rank = torch.arange(rows.numel(), device=rows.device) - start
    mask = torch.zeros(rows.numel(), dtype=torch.bool, device=rows.device)
    mask[order[rank < k]] = True
    return mask


@torch.no_grad()
def jaccard_topk_graph(
    edge_index: Tensor,
    num_users: int,
    num_items: int,
    k: int = 10,
    block_size: int = 4096,
) -> tuple[Tensor, Tensor]:
    r"""Top-:math:`K` Jaccard co-occurrence graph of items from ``(user, item)`` pairs.

    .. math::
        C_{ab} = \frac{|\mathcal{U}_a \cap \mathcal{U}_b|}{|\mathcal{U}_a \cup \mathcal{U}_b|},
        \qquad \tilde{C}_{ab} = C_{ab}\,\mathbb{1}[b \in \mathrm{top}K(C_{a\cdot})],\ b \neq a

    Duplicate pairs count once. Only strictly positive values become edges;
    self-pairs are excluded (pairs of distinct items with identical audiences,
    Jaccard 1, are kept). Ties at the :math:`K`-th value go to the lower item
    id. Intersections come from a sparse product computed ``block_size``
    owner items at a time, so memory grows with the number of co-occurring
    pairs, never with :math:`I^2`.

    Returns:
        ``edge_index`` (``[1]`` owner, ``[0]`` neighbour), sorted by owner then
        neighbour, and ``edge_weight`` (the Jaccard values).
    """
    _check_k(k)
    device = edge_index.device
    if edge_index.numel() == 0:
        return torch.empty(2, 0, dtype=torch.long, device=device), torch.empty(0, device=device)
    key = torch.unique(edge_index[0] * num_items + edge_index[1])
    users, items = key // num_items, key % num_items
    deg = torch.bincount(items, minlength=num_items).to(torch.float64)
    r_ui = _csr(users, items, num_users, num_items)  # key is sorted by user
    by_item = torch.argsort(items, stable=True)
    items_s, users_s = items[by_item], users[by_item]
    bounds = torch.searchsorted(
        items_s, torch.arange(0, num_items + block_size, block_size, device=device)
    )
    srcs, dsts, weights = [], [], []
    with quiet_sparse():
        for b, start in enumerate(range(0, num_items, block_size)):
            stop = min(start + block_size, num_items)
            lo, hi = int(bounds[b]), int(bounds[b + 1])
            if lo == hi:
                continue
            r_iu = _csr(items_s[lo:hi] - start, users_s[lo:hi], stop - start, num_users)
            inter = (r_iu @ r_ui).to_sparse_coo().coalesce()
            owner, nbr = inter.indices()
            count = inter.values().to(torch.float64)
            owner = owner + start
            ok = (owner != nbr) & (count > 0)
            owner, nbr, count = owner[ok], nbr[ok], count[ok]
            jac = count / (deg[owner] + deg[nbr] - count)
            keep = rowwise_topk(owner, nbr, jac, k)
            srcs.append(nbr[keep])
            dsts.append(owner[keep])
            weights.append(jac[keep])
    if not srcs:
        return torch.empty(2, 0, dtype=torch.long, device=device), torch.empty(0, device=device)
    src, dst, w = torch.cat(srcs), torch.cat(dsts), torch.cat(weights)
    order = torch.argsort(dst * num_items + src)
    return torch.stack([src[order], dst[order]]), w[order].to(torch.float32)


class JaccardCoOccurrence(BaseTransform):
    r"""Builds ``data[item, relation, item]`` from the TRAINING ``(user, item)``
    pairs in ``data[edge_type].edge_index``: for every item its top-:math:`K_c`
    items by Jaccard similarity of their audiences (Eq. 8-9 of MLLMRec),
    weighted by that similarity.

    .. math::
        C_{ab} = \frac{|\mathcal{U}_a \cap \mathcal{U}_b|}{|\mathcal{U}_a \cup \mathcal{U}_b|}

    Held-out pairs (``val_edge_index``, ``test_edge_index``) are never read.
    Self-pairs are excluded; unlike the reference implementation, which drops
    every value equal to exactly 1, distinct items with identical audiences
    stay connected. Only strictly positive values make edges.

    Args:
        k (int): :math:`K_c`, neighbours per item.
        edge_type (tuple): the user-item edge type to read.
        relation (str): relation name of the output item-item edge type.
        block_size (int): owner items per sparse-product block.
    """

    def __init__(
        self,
        k: int = 10,
        edge_type: tuple[str, str, str] = ("user", "interacts", "item"),
        relation: str = "cooccurs",
        block_size: int = 4096,
    ) -> None:
        self.k = _check_k(k)
        self.edge_type = tuple(edge_type)
        self.relation = relation
        self.block_size = _check_k(block_size, "block_size")

    def forward(self, data: HeteroData) -> HeteroData:
        src_type, _, item_type = self.edge_type
        require_edge_type(data, self.edge_type)
        num_users = require_node_type(data, src_type)
        num_items = require_node_type(data, item_type)
        edge_index = data[self.edge_type].get("edge_index")
        if edge_index is None:
            raise ValueError(f"data[{self.edge_type}].edge_index (training pairs) is missing")
        check_edge_index(edge_index, num_users, num_items, f"data[{self.edge_type}].edge_index")
        out_index, out_weight = jaccard_topk_graph(
            edge_index, num_users, num_items, self.k, self.block_size
        )
        store = data[item_edge_type(item_type, self.relation)]
        store.edge_index = out_index
        store.edge_weight = out_weight
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(k={self.k}, relation={self.relation!r})"
