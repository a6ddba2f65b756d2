"""LightGCN over the (directed, weighted) item-item graph."""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.typing import Adj, OptTensor, SparseTensor
from torch_geometric.utils import is_torch_sparse_tensor, scatter, spmm

from mllmrec_pyg._sparse import csr, quiet_sparse, to_csr


def _inv_sqrt(deg: Tensor) -> Tensor:
    out = deg.pow(-0.5)
    return out.masked_fill(torch.isinf(out) | (deg <= 0), 0.0)


def check_edge_weight(weight: Tensor, what: str = "edge_weight") -> Tensor:
    """``weight`` if every entry is finite and non-negative, else a ``ValueError`` naming the first
    bad edge (a negative row sum would drop a node's neighbours; one NaN spreads to every node)."""
    bad = ~torch.isfinite(weight) | (weight < 0)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"{what} must be finite and >= 0: {int(bad.sum())} of {weight.numel()} entries are "
            f"not, the first at edge {i} ({float(weight[i])})"
        )
    return weight


def item_graph_norm(
    edge_index: Adj, edge_weight: OptTensor = None, num_nodes: int | None = None
) -> tuple[Adj, OptTensor]:
    r"""Symmetric normalisation :math:`D^{-1/2} S D^{-1/2}` of a directed graph
    with :math:`D_{aa} = \sum_b S_{ab}`, the row sum of :math:`S` (the weighted
    in-degree of :math:`a` in PyG's ``source_to_target`` orientation, where an
    edge :math:`b \to a` means :math:`S_{ab} > 0`). The same :math:`D` is used
    on both sides, as in Eq. 11 of MLLMRec. Nodes with zero degree get 0.

    Accepts ``edge_index`` ``[2, E]`` with optional weights, a
    ``torch.sparse`` adjacency ``adj_t`` (``adj_t[a, b] = S_{ab}``, CSR or
    COO), or a ``torch_sparse.SparseTensor`` in the same orientation. Weights
    must be finite and non-negative (:func:`check_edge_weight`).
    """
    if isinstance(edge_index, SparseTensor):
        row, col, value = edge_index.coo()
        value = torch.ones_like(row, dtype=torch.float) if value is None else value
        check_edge_weight(value, "SparseTensor values")
        n = edge_index.size(0)
        dis = _inv_sqrt(scatter(value, row, 0, dim_size=n, reduce="sum"))
        return edge_index.set_value(dis[row] * value * dis[col], layout="coo"), None
    if is_torch_sparse_tensor(edge_index):
        adj = edge_index
        if adj.layout != torch.sparse_csr:
            adj = adj.coalesce().to_sparse_csr()
        crow, col, value = adj.crow_indices(), adj.col_indices(), adj.values()
        check_edge_weight(value, "adjacency values")
        n = adj.size(0)
        row = torch.repeat_interleave(torch.arange(n, device=crow.device), crow.diff())
        dis = _inv_sqrt(scatter(value, row, 0, dim_size=n, reduce="sum"))
        return csr(crow, col, dis[row] * value * dis[col], tuple(adj.size())), None
    src, dst = edge_index[0], edge_index[1]
    if num_nodes is None:
        num_nodes = int(edge_index.max()) + 1 if edge_index.numel() else 0
    if edge_weight is None:
        edge_weight = torch.ones(src.numel(), device=src.device)
    check_edge_weight(edge_weight)
    dis = _inv_sqrt(scatter(edge_weight, dst, 0, dim_size=num_nodes, reduce="sum"))
    return edge_index, dis[src] * edge_weight * dis[dst]


def to_adj_t(edge_index: Tensor, edge_weight: OptTensor, num_nodes: int) -> Tensor:
    """``torch.sparse`` CSR adjacency with ``adj_t[owner, neighbour] = weight``
    (the paper's :math:`S`), from a PyG ``edge_index`` (``[1]`` = owner)."""
    if edge_weight is None:
        edge_weight = torch.ones(edge_index.size(1), device=edge_index.device)
    size = (num_nodes, num_nodes)
    with quiet_sparse():
        return to_csr(torch.sparse_coo_tensor(edge_index.flip(0), edge_weight, size))


class ItemLightGCN(MessagePassing):
    r"""LightGCN on the refined item-item graph :math:`S^*` (Eq. 11-12 of MLLMRec):

    .. math::
        E^{(l)} = D^{-1/2} S^{*} D^{-1/2} E^{(l-1)}, \qquad
        E^{*} = \sum_{l=0}^{L} E^{(l)},

    with :math:`D_{aa} = \sum_b S^*_{ab}` (see :func:`item_graph_norm`). No
    weights are learned; gradients flow to the input features (and to
    ``edge_weight``), so the layer also serves models whose item inputs are
    trainable embeddings.

    Args:
        num_layers (int): :math:`L`, the number of propagation steps.
        normalize (bool): apply the symmetric normalisation; set ``False`` if
            the weights are already normalised.
        cached (bool): cache the normalised graph across calls (only for a
            fixed graph, e.g. transductive training).
        **kwargs: passed to :class:`~torch_geometric.nn.conv.MessagePassing`.

    Shapes:
        - input: node features :math:`(N, F)`, ``edge_index`` :math:`(2, E)`
          with optional ``edge_weight`` :math:`(E)`, or a sparse adjacency
          ``adj_t`` :math:`(N, N)` (``torch.sparse`` or ``SparseTensor``)
          with ``adj_t[owner, neighbour]``.
        - output: :math:`(N, F)`.
    """

    def __init__(
        self, num_layers: int = 1, normalize: bool = True, cached: bool = False, **kwargs
    ) -> None:
        kwargs.setdefault("aggr", "add")
        super().__init__(**kwargs)
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        self.num_layers = num_layers
        self.normalize = normalize
        self.cached = cached
        self._cache: tuple[Adj, OptTensor] | None = None

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self._cache = None

    def forward(self, x: Tensor, edge_index: Adj, edge_weight: OptTensor = None) -> Tensor:
        if self.normalize:
            if self.cached and self._cache is not None:
                edge_index, edge_weight = self._cache
            else:
                edge_index, edge_weight = item_graph_norm(edge_index, edge_weight, x.size(0))
                if self.cached:
                    self._cache = (edge_index, edge_weight)
        out = x
        h = x
        for _ in range(self.num_layers):
            h = self.propagate(edge_index, x=h, edge_weight=edge_weight)
            out = out + h
        return out

    def message(self, x_j: Tensor, edge_weight: OptTensor) -> Tensor:
        return x_j if edge_weight is None else edge_weight.view(-1, 1) * x_j

    def message_and_aggregate(self, adj_t: Adj, x: Tensor) -> Tensor:
        return spmm(adj_t, x, reduce=self.aggr)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(num_layers={self.num_layers})"
