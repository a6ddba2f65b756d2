"""Merge several item-item graphs into one by summing edge weights."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch_geometric.data import HeteroData
from torch_geometric.transforms import BaseTransform
from torch_geometric.utils import coalesce

from mllmrec_pyg.data.schema import (
    check_edge_index,
    item_edge_type,
    require_edge_type,
    require_node_type,
)
from mllmrec_pyg.transforms._checks import check_name


class MergeGraphs(BaseTransform):
    r"""Sums item-item graphs into ``data[node_type, out, node_type]``
    (Eq. 10 of MLLMRec):

    .. math::
        S^{*} = \tilde{S} + \tilde{C}

    Edges present in several inputs get the sum of their weights; inputs
    without ``edge_weight`` count as weight 1. The result is coalesced and
    sorted by owner (``edge_index[1]``) then neighbour.

    Args:
        relations (sequence of str): relation names of the graphs to merge.
        out (str): relation name of the merged graph.
        node_type (str): the node type on both ends.
    """

    def __init__(
        self,
        relations: Sequence[str] = ("semantic", "cooccurs"),
        out: str = "related",
        node_type: str = "item",
    ) -> None:
        if isinstance(relations, str) or not isinstance(relations, Sequence):
            raise TypeError(f"relations must be a sequence of relation names, got {relations!r}")
        if len(relations) == 0:
            raise ValueError("MergeGraphs needs at least one relation")
        for rel in relations:
            check_name(rel, "relations")
        if len(set(relations)) != len(relations):
            raise ValueError(f"relations must be distinct, got {tuple(relations)}")
        self.relations = tuple(relations)
        self.out = check_name(out, "out")
        self.node_type = check_name(node_type, "node_type")

    def forward(self, data: HeteroData) -> HeteroData:
        n = require_node_type(data, self.node_type)
        indices, weights = [], []
        for rel in self.relations:
            et = item_edge_type(self.node_type, rel)
            require_edge_type(data, et)
            ei = check_edge_index(data[et].get("edge_index"), n, n, f"data[{et}].edge_index")
            w = data[et].get("edge_weight")
            if w is not None and w.numel() != ei.size(1):
                raise ValueError(
                    f"data[{et}].edge_weight has {w.numel()} entries for {ei.size(1)} edges"
                )
            indices.append(ei)
            weights.append(torch.ones(ei.size(1), device=ei.device) if w is None else w.float())
        edge_index, edge_weight = coalesce(
            torch.cat(indices, dim=1),
            torch.cat(weights),
            num_nodes=n,
            reduce="sum",
            sort_by_row=False,
        )
        store = data[item_edge_type(self.node_type, self.out)]
        store.edge_index, store.edge_weight = edge_index, edge_weight
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(relations={self.relations}, out={self.out!r})"
