"""FREEDOM (Zhou & Shen, ACM MM 2023): a frozen item-item graph and a pruned user-item graph.

FREEDOM learns ID embeddings for users and items. Two graphs shape them:

* a **frozen item-item graph**, built once before training: for every raw
  modality :math:`m` (text, image, ...), the top-:math:`k` cosine neighbours
  of each item (the item itself included, :math:`k = 10`), symmetrically
  normalised, :math:`\\hat S^m = D_m^{-1/2} S^m D_m^{-1/2}`, and summed with
  modality weights :math:`\\hat S = \\sum_m w_m \\hat S^m`. The item ID
  embeddings are propagated over it,
  :math:`h_i = (\\hat S^{L_{ii}} E^{id})_i` (:math:`L_{ii} = 1`);
* the **user-item training graph** with **degree-sensitive edge pruning**:
  at each epoch a fraction ``dropout`` (:math:`\\rho`, 0.8 or 0.9 in the
  paper's search) of the edges is dropped, the kept ones being sampled
  without replacement with probability proportional to
  :math:`1/\\sqrt{d_u d_i}`, so edges between popular nodes, the likeliest
  noise, go first. A LightGCN (:math:`L_{ui} = 2` layers, mean over layers
  ``0..L``) runs on the symmetrically renormalised kept graph during
  training and on the full graph for evaluation.

The item representation is :math:`\\bar e_i + h_i`, the user representation
:math:`\\bar e_u`, the score :math:`\\langle \\bar e_u, \\bar e_i + h_i \\rangle`.
The loss is BPR plus the paper's regulariser: each modality's raw features
are projected to :math:`d` (a linear layer) and scored against the user
representation with a second BPR term, weighted by :math:`\\lambda`
(``reg_weight``):

.. math::
    \\mathcal L = \\mathcal L_{BPR}(\\bar e_u, \\bar e_i + h_i, \\bar e_j + h_j)
    + \\lambda \\sum_m \\mathcal L_{BPR}(\\bar e_u, W_m x^m_i + b_m, W_m x^m_j + b_m)
    \\;[+\\; \\beta \\lVert E^{(0)}_{batch} \\rVert^2].

The optional L2 term :math:`\\beta` (``l2_weight``) is off by default.

**Plug-and-play.** ``item_graph=("item", "related", "item")`` replaces the
frozen kNN graph with any item-item edge type already on the
:class:`~torch_geometric.data.HeteroData`, e.g. the output of
:class:`~mllmrec_pyg.transforms.ThresholdKNN` +
:class:`~mllmrec_pyg.transforms.JaccardCoOccurrence` +
:class:`~mllmrec_pyg.transforms.MergeGraphs`; it is normalised the same way
(:func:`~mllmrec_pyg.nn.item_lightgcn.item_graph_norm`) and nothing else
changes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from mllmrec_pyg._sparse import quiet_sparse
from mllmrec_pyg.data.schema import RELATED
from mllmrec_pyg.nn.base import gather_triples
from mllmrec_pyg.nn.bipartite import bipartite_adjacency
from mllmrec_pyg.nn.item_lightgcn import item_graph_norm, to_adj_t
from mllmrec_pyg.nn.mm_common import (
    MultimodalModel,
    bpr_loss,
    check_item_graph,
    feature_parameters,
    graph_label,
    l2_penalty,
    layer_mean,
    power_matmul,
    project_rows,
    read_inputs,
    read_item_edges,
    require_non_negative,
    require_positive,
    reset_linear_layers,
)
from mllmrec_pyg.nn.registry import BABY_R20, EMBEDDING, LR, REFINED, RQ3_HOST, Flag, register_model
from mllmrec_pyg.nn.spmm import register_with_transpose
from mllmrec_pyg.transforms.threshold_knn import threshold_knn_graph

log = logging.getLogger(__name__)


@dataclass
class FREEDOMConfig:
    """Hyper-parameters of :class:`FREEDOM` (defaults from its paper and public config).

    Args:
        embedding_dim: :math:`d`, ID embedding and projection width.
        num_ui_layers: LightGCN layers on the user-item graph (2).
        num_item_layers: propagation steps on the item-item graph (1).
        knn_k: neighbours per item in each modality's kNN graph (10).
        modalities: attributes of ``data["item"]`` holding the raw modality
            features (float ``[I, d_m]`` each).
        modality_weights: weight of each modality's normalised kNN graph;
            ``None`` gives equal weights summing to 1 (the paper weights image
            0.1 and text 0.9).
        item_graph: read the item-item graph from this edge type instead of
            building the kNN graph (the plug-and-play variant); ``None`` builds
            FREEDOM's own graph.
        dropout: :math:`\\rho`, the fraction of user-item edges pruned each
            epoch (0.8 or 0.9 in the paper's search); 0 disables pruning.
        reg_weight: :math:`\\lambda`, weight of the modality BPR terms (the
            paper searches 0, 1e-5, 1e-4, 1e-3).
        l2_weight: optional L2 on the batch's layer-0 embeddings, divided by
            the batch size as in BPR-MF (0 = off, as in the reference).
        train_features: fine-tune the raw modality features (as the reference
            does) instead of keeping them fixed; the item-item graph stays frozen
            either way.
        seed: seeds the per-epoch pruning (epoch ``e`` always draws the same
            subgraph, so an interrupted run resumes identically).
    """

    embedding_dim: int = 64
    num_ui_layers: int = 2
    num_item_layers: int = 1
    knn_k: int = 10
    modalities: tuple[str, ...] = ("x",)
    modality_weights: tuple[float, ...] | None = None
    item_graph: tuple[str, str, str] | None = None
    dropout: float = 0.8
    reg_weight: float = 1e-4
    l2_weight: float = 0.0
    train_features: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        # JSON round trips (checkpoints) turn tuples into lists
        self.modalities = tuple(self.modalities)
        if not self.modalities:
            raise ValueError("FREEDOM needs at least one modality")
        if self.modality_weights is not None:
            self.modality_weights = tuple(float(w) for w in self.modality_weights)
            if len(self.modality_weights) != len(self.modalities):
                raise ValueError(
                    f"{len(self.modality_weights)} modality weights for "
                    f"{len(self.modalities)} modalities {self.modalities}"
                )
        self.item_graph = check_item_graph(self.item_graph)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        require_positive(self, "embedding_dim", "knn_k")
        require_non_negative(self, "num_ui_layers", "num_item_layers")


# -- the two graphs --------------------------------------------------------------------------


def knn_item_graph(
    features: Sequence[Tensor], k: int = 10, weights: Sequence[float] | None = None
) -> tuple[Tensor, Tensor]:
    """FREEDOM's frozen item-item graph: :math:`\\sum_m w_m D_m^{-1/2} S^m D_m^{-1/2}`.

    :math:`S^m` is the top-``k`` cosine graph of modality ``m`` with the item
    counted among its own neighbours (the exact top-``k`` of
    :func:`~mllmrec_pyg.transforms.threshold_knn.threshold_knn_graph`, no
    threshold), normalised with its row sums on both sides.

    Args:
        features: one ``[I, d_m]`` matrix per modality.
        k: neighbours per item (self included).
        weights: per-modality weights; ``None`` = equal weights summing to 1.

    Returns:
        ``edge_index`` (``[1]`` = owner) and the normalised, weighted
        ``edge_weight``; edges of several modalities are summed.
    """
    if not features:
        raise ValueError("knn_item_graph needs at least one feature matrix")
    n = features[0].size(0)
    if weights is None:
        weights = [1.0 / len(features)] * len(features)
    indices, values = [], []
    for x, w in zip(features, weights):
        if x.size(0) != n:
            raise ValueError(
                f"modality features disagree on the number of items: {x.size(0)} vs {n}"
            )
        ei, ew = threshold_knn_graph(x.detach(), k=k, threshold=None, loop=True)
        ei, ew = item_graph_norm(ei, ew, n)
        indices.append(ei)
        values.append(float(w) * ew)
    with quiet_sparse():
        adj = torch.sparse_coo_tensor(torch.cat(indices, 1), torch.cat(values), (n, n)).coalesce()
    return adj.indices(), adj.values()


def pruning_weights(edge_index: Tensor, num_users: int, num_items: int) -> Tensor:
    """:math:`1/\\sqrt{d_u d_i}` of every ``(user, item)`` edge, degrees from ``edge_index``."""
    du = torch.bincount(edge_index[0], minlength=num_users).double()
    di = torch.bincount(edge_index[1], minlength=num_items).double()
    return (du[edge_index[0]] * di[edge_index[1]]).rsqrt()


def expected_kept(num_edges: int, dropout: float) -> int:
    """How many edges :func:`degree_sensitive_prune` keeps: :math:`\\lfloor E (1 - \\rho) \\rfloor`
    (computed so that e.g. 100 edges at ``dropout=0.8`` keep exactly 20)."""
    return min(num_edges, int(math.floor(num_edges * (1.0 - dropout) + 1e-9)))


def degree_sensitive_prune(
    edge_index: Tensor,
    num_users: int,
    num_items: int,
    dropout: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Keep ``floor(E (1 - dropout))`` distinct edges, drawn with probability :math:`\\propto 1/\\sqrt{d_u d_i}`.

    Sequential sampling without replacement (each draw picks a remaining edge
    with probability proportional to its weight) is done in one shot with the
    Gumbel-top-:math:`k` trick: the kept edges are the ``n`` largest
    :math:`\\log w_e + G_e`, :math:`G_e \\sim \\mathrm{Gumbel}(0, 1)`.

    Args:
        edge_index: training ``(user, item)`` pairs without duplicates.
        num_users: number of users.
        num_items: number of items.
        dropout: fraction of edges to drop, in ``[0, 1)``.
        generator: random generator (CPU).

    Returns:
        The kept ``(user, item)`` pairs, in their original order.
    """
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    num = edge_index.size(1)
    keep = expected_kept(num, dropout)
    if keep >= num:
        return edge_index
    logw = pruning_weights(edge_index, num_users, num_items).log().cpu()
    u = torch.rand(num, generator=generator, dtype=torch.float64).clamp_(1e-300, 1.0 - 1e-16)
    keys = logw - torch.log(-torch.log(u))
    idx = keys.topk(keep).indices.sort().values
    return edge_index[:, idx.to(edge_index.device)]


# -- the model -------------------------------------------------------------------------------


#: FREEDOM's search space, with and without the refined graph
FREEDOM_SPACE = {
    "train.lr": LR,
    "model.reg_weight": (1e-5, 1e-4, 1e-3),
    "model.dropout": (0.5, 0.8, 0.9),
}


@register_model(
    "freedom",
    label="FREEDOM",
    space=FREEDOM_SPACE,
    candidates={"freedom-refined": ({"item_graph": RELATED}, {**FREEDOM_SPACE, **REFINED})},
    flags={
        "embedding_dim": EMBEDDING,
        "item_layers": Flag("num_item_layers", "item-item GCN depth L"),
        "num_layers": Flag("num_ui_layers", "user-item GCN depth"),
        "edge_dropout": Flag("dropout", "user-item edges pruned"),
        "freedom_reg": Flag("reg_weight", "modality BPR weight"),
    },
    host=True,
    from_options={"knn_k": "k_s"},  # its own kNN graph takes --k-s too
    paper={BABY_R20: 0.0992, RQ3_HOST: 1},
)
class FREEDOM(MultimodalModel):
    """FREEDOM on the package's trainer; see the module docstring for the equations.

    Args:
        num_users: number of users.
        num_items: number of items.
        train_edge_index: training ``(user, item)`` pairs.
        modality_features: raw features per modality, ``[I, d_m]`` each.
        item_edge_index: the item-item graph (``[1]`` = owner).
        item_edge_weight: its weights; normalised here with
            :func:`~mllmrec_pyg.nn.item_lightgcn.item_graph_norm` unless
            ``item_graph_normalized``.
        item_graph_normalized: the weights are already normalised (FREEDOM's own
            kNN graph from :func:`knn_item_graph`).
        config: :class:`FREEDOMConfig`.
    """

    config_class = FREEDOMConfig

    def __init__(
        self,
        num_users: int,
        num_items: int,
        train_edge_index: Tensor,
        modality_features: Sequence[Tensor],
        item_edge_index: Tensor,
        item_edge_weight: Tensor | None = None,
        item_graph_normalized: bool = False,
        config: FREEDOMConfig | None = None,
    ) -> None:
        super().__init__(num_users, num_items)
        cfg = self.config = config or FREEDOMConfig()
        d = cfg.embedding_dim
        pairs = torch.unique(train_edge_index.cpu(), dim=1)
        self.register_buffer("train_pairs", pairs, persistent=False)
        self.register_buffer(
            "full_adj", bipartite_adjacency(pairs, num_users, num_items), persistent=False
        )
        if item_graph_normalized:
            item_adj = to_adj_t(item_edge_index, item_edge_weight, num_items)
        else:
            item_adj, _ = item_graph_norm(to_adj_t(item_edge_index, item_edge_weight, num_items))
        # the backward pass of item_adj @ g multiplies by the transpose, built once here
        register_with_transpose(self, "item_adj", item_adj, "item_adj_transposed")
        self.item_graph_edges = int(item_edge_index.size(1))

        self.user_emb, self.item_emb = self._id_tables(d)
        self.features = feature_parameters(modality_features, cfg.train_features)
        self.projections = nn.ModuleList(nn.Linear(x.size(1), d) for x in modality_features)
        self.reset_parameters()

        self._train_adj: Tensor | None = None
        self._train_epoch: int | None = None
        self._warned_no_hook = False
        self._last_batch: tuple[Tensor, Tensor] | None = None

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.user_emb.weight)
        nn.init.xavier_uniform_(self.item_emb.weight)
        reset_linear_layers(self.projections)

    @classmethod
    def from_data(cls, data: HeteroData, config: FREEDOMConfig | None = None) -> FREEDOM:
        """Build from the HeteroData contract.

        Needs the training pairs, ``data["item"].<modality>`` for every
        modality, and ``data[config.item_graph]`` when that is set.
        """
        cfg = config or FREEDOMConfig()
        num_users, num_items, train, feats, graph = read_inputs(data, cfg, read_item_edges)
        normalized = graph is None
        ei, ew = knn_item_graph(feats, cfg.knn_k, cfg.modality_weights) if normalized else graph
        model = cls(num_users, num_items, train, feats, ei, ew, normalized, cfg)
        log.info(
            "FREEDOM: %d users, %d items, %d training pairs, item graph %s with %d edges",
            num_users,
            num_items,
            model.train_pairs.size(1),
            graph_label(cfg),
            model.item_graph_edges,
        )
        return model.set_seen(train)

    # -- edge pruning ---------------------------------------------------------------------
    def pruned_edges(self, epoch: int) -> Tensor:
        """The user-item pairs kept at ``epoch`` (deterministic given ``config.seed``)."""
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + int(epoch))
        return degree_sensitive_prune(
            self.train_pairs.cpu(), self.num_users, self.num_items, self.config.dropout, gen
        )

    def on_train_epoch_start(self, epoch: int) -> None:
        """Draw this epoch's pruned user-item graph (called by the trainer)."""
        if self.config.dropout <= 0:
            self._train_adj = self.full_adj
        else:
            kept = self.pruned_edges(epoch).to(self.full_adj.device)
            self._train_adj = bipartite_adjacency(kept, self.num_users, self.num_items)
        self._train_epoch = int(epoch)

    def _training_adj(self) -> Tensor:
        if self._train_adj is None:
            if not self._warned_no_hook and self.config.dropout > 0:
                log.warning(
                    "FREEDOM: the trainer did not call on_train_epoch_start(); using the "
                    "epoch-1 pruned graph until it does"
                )
                self._warned_no_hook = True
            self.on_train_epoch_start(1)
        return self._train_adj

    def _current_adj(self) -> Tensor:
        return self._training_adj() if self.training else self.full_adj

    # -- representations ------------------------------------------------------------------
    def propagate(self, adj: Tensor) -> tuple[Tensor, Tensor]:
        """User and item representations over the user-item adjacency ``adj``."""
        cfg = self.config
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight])
        # the normalised user-item graph is symmetric
        out = layer_mean(adj, ego, cfg.num_ui_layers)
        g = power_matmul(
            self.item_adj, self.item_emb.weight, cfg.num_item_layers, self.item_adj_transposed
        )
        users, items = out[: self.num_users], out[self.num_users :]
        return users, items + g

    def pair_scores(
        self, users: Tensor, pos_items: Tensor, neg_items: Tensor
    ) -> tuple[Tensor, Tensor]:
        u, p, n = gather_triples(*self.propagate(self._current_adj()), users, pos_items, neg_items)
        self._last_batch = (users, u)
        return (u * p).sum(-1), (u * n).sum(-1)

    def modality_loss(self, u: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor:
        """:math:`\\sum_m` BPR of the user representations against projected modality features."""
        total = u.new_zeros(())
        items = torch.cat([pos_items, neg_items])
        for x, proj in zip(self.features, self.projections):
            total = total + bpr_loss(u, *project_rows(proj, x, items).split(pos_items.numel()))
        return total

    def reg_loss(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor | None:
        cfg = self.config
        terms = []
        if cfg.reg_weight > 0:
            last = self._last_batch
            if last is not None and last[0] is users:
                u = last[1]
            else:
                u = self.propagate(self._current_adj())[0][users]
            terms.append(cfg.reg_weight * self.modality_loss(u, pos_items, neg_items))
        if cfg.l2_weight > 0:
            u, p, n = self.user_emb(users), self.item_emb(pos_items), self.item_emb(neg_items)
            terms.append(l2_penalty(u, p, n, cfg.l2_weight))
        self._last_batch = None
        return sum(terms) if terms else None

    def representations(self) -> tuple[Tensor, Tensor]:
        """Final user and item representations on the full training graph."""
        return self.propagate(self.full_adj)

    def extra_repr(self) -> str:
        c = self.config
        tail = f"dropout={c.dropout}, reg_weight={c.reg_weight}"
        return f"{super().extra_repr()}, {self._graph_repr()}, {tail}"


__all__ = [
    "FREEDOM",
    "FREEDOMConfig",
    "degree_sensitive_prune",
    "expected_kept",
    "knn_item_graph",
    "pruning_weights",
]
