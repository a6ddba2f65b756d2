"""MLLMRec's whole graph refinement as one transform: semantic kNN, co-occurrence, merge."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch_geometric.data import HeteroData
from torch_geometric.transforms import BaseTransform

from mllmrec_pyg.transforms.jaccard import JaccardCoOccurrence
from mllmrec_pyg.transforms.merge import MergeGraphs
from mllmrec_pyg.transforms.threshold_knn import ThresholdKNN


class RefineItemGraph(BaseTransform):
    r"""The refined item-item graph :math:`S^{*}` of MLLMRec (Eq. 6-10) in one step.

    Runs, on the same :class:`~torch_geometric.data.HeteroData`,

    .. math::
        \tilde{S} = \mathrm{ThresholdKNN}_{K_s, \alpha}(X), \qquad
        \tilde{C} = \mathrm{Jaccard}_{K_c}(R_{\text{train}}), \qquad
        S^{*} = \tilde{S} + \tilde{C}

    and writes ``data[item, semantic, item]``, ``data[item, cooccurs, item]``
    and the merged ``data[item, out, item]``. The paper's ablations are
    arguments: ``alpha=None`` is plain top-:math:`K_s` (*w/o GD*) and
    ``cooccurrence=False`` keeps the semantic graph alone (*w/o TE*).

    Args:
        k_s (int): semantic top-:math:`K` (the item itself is one of them with ``loop``).
        alpha (float, optional): similarity threshold; ``None`` keeps plain top-:math:`K_s`.
        k_c (int): co-occurrence top-:math:`K`.
        cooccurrence (bool): merge the co-occurrence graph.
        loop (bool): the item counts as one of its own top-:math:`K_s` (a self-loop).
        out (str): relation name of the merged graph.
        knn_options (dict, optional): further keyword arguments of
            :class:`ThresholdKNN` (e.g. its search backend).
        jaccard_options (dict, optional): further keyword arguments of
            :class:`JaccardCoOccurrence`.
        executor (distributed.Client, optional): run both on this Dask cluster
            (:mod:`mllmrec_pyg.transforms.distributed`); same graphs as in-process.
    """

    def __init__(
        self,
        k_s: int = 10,
        alpha: float | None = 0.7,
        k_c: int = 10,
        cooccurrence: bool = True,
        loop: bool = True,
        out: str = "related",
        knn_options: Mapping[str, Any] | None = None,
        jaccard_options: Mapping[str, Any] | None = None,
        executor: Any = None,
    ) -> None:
        knn_options = {"executor": executor, **dict(knn_options or {})}
        jaccard_options = {"executor": executor, **dict(jaccard_options or {})}
        self.knn = ThresholdKNN(k=k_s, threshold=alpha, loop=loop, **knn_options)
        self.jaccard = JaccardCoOccurrence(k=k_c, **jaccard_options) if cooccurrence else None
        relations = (self.knn.relation,) + ((self.jaccard.relation,) if self.jaccard else ())
        self.merge = MergeGraphs(relations=relations, out=out)

    def forward(self, data: HeteroData) -> HeteroData:
        data = self.knn(data)
        if self.jaccard is not None:
            data = self.jaccard(data)
        return self.merge(data)

    def __repr__(self) -> str:
        parts = [repr(self.knn)] + ([repr(self.jaccard)] if self.jaccard else [])
        return f"{self.__class__.__name__}({', '.join(parts)}, out={self.merge.out!r})"


__all__ = ["RefineItemGraph"]
