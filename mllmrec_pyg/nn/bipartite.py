"""The user-item training graph as a normalised sparse adjacency."""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from mllmrec_pyg._sparse import quiet_sparse, to_csr
from mllmrec_pyg.metrics import unique_pairs


def bipartite_adjacency(edge_index: Tensor, num_users: int, num_items: int) -> Tensor:
    """Symmetrically normalised user-item adjacency as a sparse CSR ``[N, N]`` matrix.

    Users are nodes ``0..U-1`` and items ``U..U+I-1``; duplicate pairs count
    once. Entry ``[a, b]`` is :math:`1/\\sqrt{d_a d_b}` for every edge.

    Args:
        edge_index: training ``(user, item)`` pairs.
        num_users: number of users.
        num_items: number of items.
    """
    pairs = unique_pairs(edge_index)  # torch.unique(edge_index, dim=1), ~100x faster
    return symmetric_adjacency(
        torch.stack([pairs[0], pairs[1] + num_users]), None, num_users + num_items
    )


def symmetric_adjacency(edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int) -> Tensor:
    """:math:`D^{-1/2} A D^{-1/2}` as a sparse CSR ``[N, N]`` matrix, ``A`` the symmetric
    matrix of the undirected edges ``edge_index`` (each given once, in one direction) with
    weights ``edge_weight`` (``None``: 1) and ``D`` its weighted degrees."""
    src = torch.cat([edge_index[0], edge_index[1]])
    dst = torch.cat([edge_index[1], edge_index[0]])
    weight = None if edge_weight is None else torch.cat([edge_weight, edge_weight])
    (row, col), weight = gcn_norm(  # row: source, col: target
        torch.stack([src, dst]), weight, num_nodes, add_self_loops=False
    )
    with quiet_sparse():
        return to_csr(torch.sparse_coo_tensor(torch.stack([col, row]), weight, (num_nodes,) * 2))
