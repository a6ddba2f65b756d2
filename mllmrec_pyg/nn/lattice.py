"""LATTICE (Zhang et al., ACM MM 2021): a learned item-item graph over modality kNN graphs.

**Graphs.** For every modality :math:`m` two weighted cosine top-:math:`k`
graphs (the item among its own :math:`k` neighbours, edge weight = cosine
similarity, :math:`k = 10`):

* the *initial* graph :math:`S^m` of the raw features :math:`x^m`, built
  once and normalised, :math:`\\hat S^m = D_m^{-1/2} S^m D_m^{-1/2}`;
* the *learned* graph :math:`\\tilde A^m` of the projected features
  :math:`z^m_i = W_m x^m_i + b_m`, rebuilt from the current projections at
  the start of every epoch (its weights carry gradient to :math:`W_m` on
  that epoch's first batch, later batches reuse it detached) and for every
  evaluation.

With modality weights :math:`\\alpha = \\mathrm{softmax}(w)` (learned,
:math:`w` starts equal):

.. math::
    A = (1 - \\lambda)\\, \\mathrm{norm}\\Big(\\sum_m \\alpha_m \\tilde A^m\\Big)
      + \\lambda \\sum_m \\alpha_m \\hat S^m,
    \\qquad \\mathrm{norm}(S) = D^{-1/2} S D^{-1/2},\\ D_{aa} = \\sum_b S_{ab},

:math:`\\lambda = 0.9`. Item ID embeddings are propagated over it,
:math:`h = A^{L} E^{id}_I` (:math:`L = 1`).

**Collaborative part.** LightGCN on the training graph with the
normalisation of LATTICE's code, row-normalised with self-loops,
:math:`P = (D + I)^{-1}(A_{UI} + I)`, :math:`E^{(l)} = P E^{(l-1)}`,
:math:`\\bar E = \\frac{1}{L_{ui}+1}\\sum_{l=0}^{L_{ui}} E^{(l)}`
(:math:`L_{ui} = 2`). Users are :math:`\\bar e_u`, items
:math:`\\bar e_i + h_i / \\lVert h_i \\rVert`, the score their inner product.

**Loss.** BPR plus :math:`\\beta \\frac{1}{2B}(\\lVert P_u\\rVert^2 +
\\lVert Q_i\\rVert^2 + \\lVert Q_j\\rVert^2)` on the batch's final vectors.

**Plug-and-play.** ``item_graph=("item", "related", "item")`` replaces the
initial modality graphs :math:`\\sum_m \\alpha_m \\hat S^m` by the
normalised graph of that edge type (e.g. MLLMRec's refined :math:`S^*`);
the learned graph and everything else stay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mllmrec_pyg.data.schema import RELATED
from mllmrec_pyg.nn.mm_common import (
    MultimodalModel,
    bpr_loss,
    check_feature_count,
    check_modalities,
    cosine_knn_graph,
    feature_parameters,
    graph_label,
    knn_graphs,
    layer_mean,
    propagate,
    require_non_negative,
    require_positive,
    reset_linear_layers,
    sparse_csr,
    sym_norm_graph,
    sym_norm_weights,
)
from mllmrec_pyg.nn.registry import BABY_R20, EMBEDDING, LR, REFINED, REG, register_model
from mllmrec_pyg.nn.spmm import register_with_transpose


@dataclass
class LATTICEConfig:
    """Hyper-parameters of :class:`LATTICE` (defaults of the authors' configuration).

    Args:
        embedding_dim: :math:`d` of the user and item ID embeddings.
        feat_embed_dim: width of the projections :math:`z^m` the learned graph is built from.
        num_ui_layers: LightGCN layers on the user-item graph (2).
        num_item_layers: :math:`L`, propagation steps on the item graph (1).
        knn_k: neighbours per item in every kNN graph (10, the item included).
        lambda_coeff: :math:`\\lambda`, weight of the initial graph (0.9).
        reg_weight: :math:`\\beta` of the embedding penalty (searched in 0, 1e-5,
            1e-4, 1e-3 by the authors' framework; 1e-4 here).
        modalities: attributes of ``data["item"]`` holding the modality features.
        item_graph: read the initial graph from this edge type (plug-and-play);
            ``None`` builds LATTICE's own modality kNN graphs.
        train_features: fine-tune the raw modality features (as the reference)
            instead of keeping them fixed; the initial graph stays frozen either way.
    """

    embedding_dim: int = 64
    feat_embed_dim: int = 64
    num_ui_layers: int = 2
    num_item_layers: int = 1
    knn_k: int = 10
    lambda_coeff: float = 0.9
    reg_weight: float = 1e-4
    modalities: tuple[str, ...] = ("x",)
    item_graph: tuple[str, str, str] | None = None
    train_features: bool = True

    def __post_init__(self) -> None:
        self.modalities, self.item_graph = check_modalities(self.modalities, self.item_graph)
        require_positive(self, "embedding_dim", "feat_embed_dim", "knn_k")
        require_non_negative(self, "num_ui_layers", "num_item_layers")
        if not 0.0 <= self.lambda_coeff <= 1.0:
            raise ValueError(f"lambda_coeff must be in [0, 1], got {self.lambda_coeff}")
        require_non_negative(self, "reg_weight")


def row_normalized_ui_adjacency(pairs: Tensor, num_users: int, num_items: int) -> Tensor:
    """:math:`(D + I)^{-1}(A + I)` of the user-item graph as a sparse CSR ``[N, N]`` matrix
    (users ``0..U-1``, items ``U..``), the LightGCN adjacency of LATTICE's code."""
    pairs = torch.unique(pairs, dim=1)
    n = num_users + num_items
    loops = torch.arange(n)
    rows = torch.cat([pairs[0], pairs[1] + num_users, loops])
    cols = torch.cat([pairs[1] + num_users, pairs[0], loops])
    deg = torch.bincount(rows, minlength=n).float()
    return sparse_csr(torch.stack([rows, cols]), 1.0 / deg[rows], (n, n))


@register_model(
    "lattice",
    label="LATTICE",
    space={"train.lr": LR, "model.reg_weight": REG},
    candidates={
        "lattice-refined": (
            {"item_graph": RELATED},
            {"train.lr": LR, "model.reg_weight": REG, **REFINED},
        )
    },
    flags={"embedding_dim": EMBEDDING},
    host=True,
    paper={BABY_R20: 0.0850},
)
class LATTICE(MultimodalModel):
    """LATTICE on the package's trainer; see the module docstring for the equations.
    Constructor arguments as in :class:`~mllmrec_pyg.nn.mm_common.MultimodalModel`
    (``item_graph`` is the plug-and-play *initial* graph)."""

    config_class = LATTICEConfig

    def __init__(
        self,
        num_users: int,
        num_items: int,
        train_edge_index: Tensor,
        modality_features: Sequence[Tensor],
        item_graph: tuple[Tensor, Tensor] | None = None,
        config: LATTICEConfig | None = None,
    ) -> None:
        super().__init__(num_users, num_items)
        cfg = self.config = config or LATTICEConfig()
        check_feature_count(modality_features, cfg.modalities)
        d = cfg.embedding_dim
        ui_adj = row_normalized_ui_adjacency(train_edge_index.cpu(), num_users, num_items)
        # row-normalised, so not symmetric: the backward pass needs its transpose
        register_with_transpose(self, "ui_adj", ui_adj, "ui_adj_transposed")
        # the initial graphs: one normalised kNN graph per modality, or the given one
        self.own_graph = item_graph is None
        if self.own_graph:
            graphs = knn_graphs(modality_features, cfg.knn_k, num_items)
        else:
            graphs = [sym_norm_graph(*item_graph, num_items)]
        for m, (ei, ew) in enumerate(graphs):
            self.register_buffer(f"init_index_{m}", ei, persistent=False)
            self.register_buffer(f"init_weight_{m}", ew, persistent=False)
        self.num_init_graphs = len(graphs)

        self.user_emb, self.item_emb = self._id_tables(d)
        self.features = feature_parameters(modality_features, cfg.train_features)
        self.projections = nn.ModuleList(
            nn.Linear(x.size(1), cfg.feat_embed_dim) for x in modality_features
        )
        self.modal_weight = nn.Parameter(torch.zeros(len(modality_features)))
        self.reset_parameters()
        self._graph: tuple[Tensor, Tensor] | None = None
        self._rebuild = True

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.user_emb.weight)
        nn.init.xavier_uniform_(self.item_emb.weight)
        reset_linear_layers(self.projections)
        nn.init.zeros_(self.modal_weight)  # softmax -> equal weights

    def _summary(self) -> str:
        return f"initial graph {graph_label(self.config)}"

    # -- the item graph -----------------------------------------------------------------------
    def initial_graph(self) -> tuple[Tensor, Tensor]:
        """:math:`\\sum_m \\alpha_m \\hat S^m` (or the plug-and-play graph) as edges + weights."""
        if not self.own_graph:
            return self.init_index_0, self.init_weight_0
        alpha = torch.softmax(self.modal_weight, 0)
        idx = [getattr(self, f"init_index_{m}") for m in range(self.num_init_graphs)]
        w = [alpha[m] * getattr(self, f"init_weight_{m}") for m in range(self.num_init_graphs)]
        return torch.cat(idx, 1), torch.cat(w)

    def learned_graph(self) -> tuple[Tensor, Tensor]:
        """:math:`\\mathrm{norm}(\\sum_m \\alpha_m \\tilde A^m)` from the current projections."""
        alpha = torch.softmax(self.modal_weight, 0)
        idx, w = [], []
        for m, (x, proj) in enumerate(zip(self.features, self.projections)):
            ei, ew = cosine_knn_graph(proj(x), self.config.knn_k)
            idx.append(ei)
            w.append(alpha[m] * ew)
        ei, ew = torch.cat(idx, 1), torch.cat(w)
        return ei, sym_norm_weights(ei, ew, self.num_items)

    def item_graph(self) -> tuple[Tensor, Tensor]:
        """:math:`A = (1-\\lambda)\\,\\mathrm{norm}(\\sum_m\\alpha_m\\tilde A^m) + \\lambda\\,
        \\sum_m \\alpha_m \\hat S^m` (edges of both parts concatenated; duplicates add up)."""
        lam = self.config.lambda_coeff
        le, lw = self.learned_graph()
        ie, iw = self.initial_graph()
        return torch.cat([le, ie], 1), torch.cat([(1 - lam) * lw, lam * iw])

    def on_train_epoch_start(self, epoch: int) -> None:
        """Rebuild the learned graph on the epoch's first batch (called by the trainer)."""
        self._rebuild = True

    def _current_graph(self) -> tuple[Tensor, Tensor]:
        if not self.training:
            return self.item_graph()
        if self._rebuild or self._graph is None:
            ei, ew = self.item_graph()  # with gradient, for this batch
            self._graph = (ei, ew.detach())
            self._rebuild = False
            return ei, ew
        return self._graph

    # -- representations ------------------------------------------------------------------
    def representations(self) -> tuple[Tensor, Tensor]:
        """Final user and item representations."""
        cfg = self.config
        ei, ew = self._current_graph()
        h = self.item_emb.weight
        for _ in range(cfg.num_item_layers):
            h = propagate(ei, ew, h)
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight])
        out = layer_mean(self.ui_adj, ego, cfg.num_ui_layers, self.ui_adj_transposed)
        users, items = out[: self.num_users], out[self.num_users :]
        return users, items + F.normalize(h, dim=1)

    def batch_loss(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor:
        """BPR + :math:`\\beta (\\lVert P_u\\rVert^2+\\lVert Q_i\\rVert^2+\\lVert Q_j\\rVert^2)/(2B)`."""
        u_all, i_all = self.representations()
        return bpr_loss(
            u_all.index_select(0, users),
            i_all.index_select(0, pos_items),
            i_all.index_select(0, neg_items),
            self.config.reg_weight,
        )

    def extra_repr(self) -> str:
        graph = self._graph_repr("initial_graph")
        return f"{super().extra_repr()}, {graph}, lambda={self.config.lambda_coeff}"


__all__ = ["LATTICE", "LATTICEConfig", "row_normalized_ui_adjacency"]
