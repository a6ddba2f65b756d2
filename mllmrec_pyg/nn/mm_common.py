"""Pieces shared by the multimodal baselines (VBPR, FREEDOM, LATTICE, LGMRec, SLMRec, SMORE).

* :class:`MultimodalModel`, their base class: what the pipeline prepares for
  them and scores as inner products of the final representations;
* reading the modality feature matrices and an optional item-item edge type
  from the :class:`~torch_geometric.data.HeteroData` contract;
* the *weighted* cosine top-:math:`k` item graph (edge weight = cosine
  similarity, the item counted among its own neighbours) that LATTICE and
  SMORE build per modality, with its symmetric normalisation;
* sparse propagation over an item graph given as ``(edge_index, edge_weight)``
  that is differentiable in both the weights and the features (LATTICE learns
  its graph's weights);
* the user-item adjacency of LightGCN, its layer mean, BPR with an embedding
  penalty and a two-view InfoNCE.

Item-item edges follow the package orientation: ``edge_index[1]`` is the item
whose neighbour list produced the edge, ``edge_index[0]`` the neighbour, so
propagation computes :math:`h'_a = \\sum_b S_{ab} h_b` over edges ``b -> a``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from mllmrec_pyg._sparse import quiet_sparse, to_csr
from mllmrec_pyg.data.schema import (
    INTERACTS,
    ITEM,
    USER,
    SchemaError,
    check_edge_index,
    check_features,
    require_edge_type,
    require_node_type,
    validate,
)
from mllmrec_pyg.fields import FieldError
from mllmrec_pyg.nn.base import (
    RankingModel,
    ScoreFn,
    dot_pair_scores,
    dot_scorer,
    reads_refined_graph,
)
from mllmrec_pyg.nn.item_lightgcn import check_edge_weight, to_adj_t
from mllmrec_pyg.nn.spmm import fixed_matmul, register_with_transpose
from mllmrec_pyg.transforms.threshold_knn import threshold_knn_graph

EdgeType = tuple[str, str, str]


class MultimodalModel(RankingModel):
    """Base class of the multimodal baselines.

    They read ``data["item"].<modality>`` and, when ``config.item_graph``
    names it, the refined item graph (:meth:`requires`). :meth:`from_data`
    passes the constructor ``num_users, num_items``, the inputs named in
    :attr:`constructor_inputs` and the config. Unless a subclass overrides
    them, :meth:`pair_scores` and :meth:`scorer` are inner products of the
    subclass's ``representations() -> (users [U, d], items [I, d])`` (not
    declared here: :func:`~mllmrec_pyg.experiments.tsne.user_representations`
    looks for it).

    Constructor arguments of the subclasses (those without a training graph
    or an item graph skip those):

    Args:
        num_users: number of users.
        num_items: number of items.
        train_edge_index: training ``(user, item)`` pairs.
        modality_features: raw features per modality, ``[I, d_m]`` each.
        item_graph: ``(edge_index, edge_weight)`` of the plug-and-play graph
            (normalised by the model), or ``None`` for the model's own kNN graphs.
        config: the model's config dataclass.
    """

    #: what the constructor takes between ``num_users, num_items`` and ``config``: the
    #: training pairs, the modality features, the item graph (see :func:`read_inputs`)
    constructor_inputs: ClassVar[tuple[str, ...]] = ("train", "features", "graph")

    @classmethod
    def requires(cls, config: Any) -> frozenset[str]:
        """``{"items"}``, plus ``"graph"`` when ``config.item_graph`` names the refined graph."""
        if reads_refined_graph(getattr(config, "item_graph", None)):
            return frozenset({"items", "graph"})
        return frozenset({"items"})

    @classmethod
    def from_data(cls, data: HeteroData, config: Any = None) -> MultimodalModel:
        """Build from the training pairs, ``data["item"].<modality>`` and, when
        ``config.item_graph`` is set, that item-item edge type."""
        cfg = config or cls.config_class()
        num_users, num_items, train, feats, graph = read_inputs(data, cfg)
        given = {"train": train, "features": feats, "graph": graph}
        model = cls(num_users, num_items, *(given[k] for k in cls.constructor_inputs), cfg)
        logging.getLogger(cls.__module__).info(
            "%s: %d users, %d items, %s", cls.__name__, num_users, num_items, model._summary()
        )
        return model.set_seen(train)

    def _summary(self) -> str:
        """What :meth:`from_data` logs after the numbers of users and items."""
        return f"modalities {self.config.modalities}"

    def _register_ui_adj(self, name: str, pairs: Tensor) -> tuple[Tensor, Tensor]:
        """Register LightGCN's adjacency of the training ``pairs`` (:func:`user_item_edges`)
        as the non-persistent CSR buffer ``name``; return its edges and weights."""
        n = self.num_users + self.num_items
        ei, ew = user_item_edges(pairs, self.num_users, self.num_items)
        self.register_buffer(name, to_adj_t(ei, ew, n), persistent=False)
        return ei, ew

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dim={self.config.embedding_dim}"

    def _graph_repr(self, graph_key: str = "item_graph") -> str:
        """``ui_layers``, ``item_layers`` and the :func:`graph_label` (as ``graph_key``) of the
        config, for :meth:`extra_repr`."""
        c = self.config
        return (
            f"ui_layers={c.num_ui_layers}, item_layers={c.num_item_layers}, "
            f"{graph_key}={graph_label(c)}"
        )

    def pair_scores(
        self, users: Tensor, pos_items: Tensor, neg_items: Tensor
    ) -> tuple[Tensor, Tensor]:
        return dot_pair_scores(*self.representations(), users, pos_items, neg_items)

    def scorer(self) -> ScoreFn:
        return dot_scorer(*self.representations())


def check_feature_count(features: Sequence[Tensor], modalities: Sequence[str]) -> None:
    """A model's constructor gets one feature matrix per configured modality."""
    if len(features) != len(modalities):
        raise ValueError(f"{len(features)} feature matrices for modalities {modalities}")


def reset_linear_layers(*modules: nn.Module) -> None:
    """PyTorch's default initialisation of every linear layer in ``modules``, in order."""
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()


def feature_parameters(features: Sequence[Tensor], trainable: bool) -> nn.ParameterList:
    """Copies of the raw modality features as parameters (fine-tuned when ``trainable``)."""
    return nn.ParameterList(
        nn.Parameter(x.detach().float().clone(), requires_grad=trainable) for x in features
    )


def check_item_graph(item_graph: Sequence[str] | None) -> EdgeType | None:
    """Normalise an ``item_graph`` config field (JSON turns tuples into lists)."""
    if item_graph is None:
        return None
    graph = tuple(item_graph)
    if len(graph) != 3:
        raise ValueError(f"item_graph must be an edge type triple, got {graph}")
    return graph


def check_modalities(modalities: Sequence[str], item_graph: Sequence[str] | None) -> tuple:
    """Normalise the ``modalities`` / ``item_graph`` config fields (JSON turns tuples into lists)."""
    mods = tuple(modalities)
    if not mods:
        raise ValueError("at least one modality is needed")
    if len(set(mods)) != len(mods):
        raise ValueError(f"modalities are repeated: {mods}")
    return mods, check_item_graph(item_graph)


def require_positive(config: Any, *keys: str) -> None:
    """Raise a ``ValueError`` (:class:`~mllmrec_pyg.fields.FieldError`) for the first of the
    ``config`` fields ``keys`` that is not > 0."""
    for key in keys:
        if getattr(config, key) <= 0:
            raise FieldError(key, getattr(config, key), "must be positive")


def require_non_negative(config: Any, *keys: str) -> None:
    """Raise a ``ValueError`` (:class:`~mllmrec_pyg.fields.FieldError`) for the first of the
    ``config`` fields ``keys`` that is < 0."""
    for key in keys:
        if getattr(config, key) < 0:
            raise FieldError(key, getattr(config, key), "must be >= 0")


def modality_features(data: HeteroData, modalities: Sequence[str], num_items: int) -> list[Tensor]:
    """``data["item"].<m>`` for every modality ``m``, checked (finite, ``[num_items, d_m]``)."""
    feats = []
    for key in modalities:
        x = check_features(data[ITEM].get(key), f"data['item'].{key}")
        if x.size(0) != num_items:
            raise SchemaError(f"data['item'].{key} has {x.size(0)} rows for {num_items} items")
        feats.append(x.float())
    return feats


def read_item_edges(
    data: HeteroData, edge_type: EdgeType, num_items: int
) -> tuple[Tensor, Tensor | None]:
    """``edge_index`` (checked) and ``edge_weight`` (as stored, maybe ``None``) of ``edge_type``."""
    require_edge_type(data, edge_type)
    store = data[edge_type]
    if "edge_index" not in store:
        raise SchemaError(f"data[{edge_type}].edge_index is missing")
    ei = check_edge_index(store.edge_index, num_items, num_items, f"data[{edge_type}].edge_index")
    return ei, store.get("edge_weight")


def read_item_graph(data: HeteroData, edge_type: EdgeType, num_items: int) -> tuple[Tensor, Tensor]:
    """``edge_index`` and ``edge_weight`` (ones when absent) of the item-item ``edge_type``."""
    ei, ew = read_item_edges(data, edge_type, num_items)
    if ew is None:
        ew = torch.ones(ei.size(1))
    return ei, check_edge_weight(ew.float(), f"data[{edge_type}].edge_weight")


def read_inputs(
    data: HeteroData, config: Any, read_graph: Callable = read_item_graph
) -> tuple[int, int, Tensor, list[Tensor], tuple[Tensor, Tensor | None] | None]:
    """Validate ``data`` and read what a multimodal baseline is built from: the numbers of
    users and items, the training pairs, the features of ``config.modalities`` and, when
    the config has an ``item_graph`` edge type set, that graph read with ``read_graph``
    (:func:`read_item_graph` or :func:`read_item_edges`; else ``None``)."""
    validate(data)
    num_users = require_node_type(data, USER)
    num_items = require_node_type(data, ITEM)
    feats = modality_features(data, config.modalities, num_items)
    edge_type = getattr(config, "item_graph", None)
    graph = None if edge_type is None else read_graph(data, edge_type, num_items)
    return num_users, num_items, data[INTERACTS].edge_index, feats, graph


def graph_label(config: Any) -> str:
    """``kNN(k=...)``, or the ``item_graph`` edge type a config reads instead (for reprs/logs)."""
    return f"kNN(k={config.knn_k})" if config.item_graph is None else str(config.item_graph)


# -- item graphs ----------------------------------------------------------------------------
def cosine_knn_graph(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-``k`` cosine neighbours of every row of ``x``, weighted by their cosine similarity.

    The item is one of its own ``k`` (weight 1). ``x`` may require grad: the
    neighbours are chosen without gradient, the weights
    :math:`\\cos(x_a, x_b)` are differentiable in ``x`` (the top-:math:`k`
    values of a dense similarity matrix have the same gradient).

    Returns:
        ``edge_index`` (``[1]`` = owner) and ``edge_weight`` ``[E]``.
    """
    ei, _ = threshold_knn_graph(x.detach(), k=k, threshold=None, loop=True)
    xn = F.normalize(x, dim=1)
    w = (xn[ei[0]] * xn[ei[1]]).sum(-1)
    return ei, w


def sparse_csr(indices: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    """The CSR matrix (:func:`~mllmrec_pyg._sparse.to_csr`) of COO ``indices`` and ``values``
    (duplicate entries add up)."""
    with quiet_sparse():
        return to_csr(torch.sparse_coo_tensor(indices, values, size))


def sym_norm_graph(
    edge_index: Tensor, edge_weight: Tensor, num_nodes: int
) -> tuple[Tensor, Tensor]:
    """``edge_index`` and the :func:`sym_norm_weights` of ``edge_weight`` (as float)."""
    return edge_index, sym_norm_weights(edge_index, edge_weight.float(), num_nodes)


def knn_graphs(features: Sequence[Tensor], k: int, num_items: int) -> list[tuple[Tensor, Tensor]]:
    """The normalised :func:`cosine_knn_graph` of every modality's (detached) features."""
    return [sym_norm_graph(*cosine_knn_graph(x.detach().float(), k), num_items) for x in features]


def register_item_graphs(
    module: nn.Module, graphs: Sequence[tuple[Tensor, Tensor]], num_items: int
) -> None:
    """Non-persistent CSR buffers ``item_adj_{v}`` of ``graphs[v]`` and their transposes
    ``item_adj_{v}_t`` (kNN graphs are not symmetric: the backward pass needs them)."""
    for v, (ei, ew) in enumerate(graphs):
        adj = to_adj_t(ei, ew, num_items)
        register_with_transpose(module, f"item_adj_{v}", adj, f"item_adj_{v}_t")


def sym_norm_weights(edge_index: Tensor, edge_weight: Tensor, num_nodes: int) -> Tensor:
    """Weights of :math:`D^{-1/2} S D^{-1/2}`, :math:`D_{aa} = \\sum_b S_{ab}` (owner row sums).

    Differentiable in ``edge_weight``; nodes with a non-positive row sum get 0.
    """
    deg = torch.zeros(num_nodes, dtype=edge_weight.dtype, device=edge_weight.device)
    deg = deg.index_add(0, edge_index[1], edge_weight)
    inv = torch.where(deg > 0, deg.clamp_min(1e-30).rsqrt(), torch.zeros_like(deg))
    return inv[edge_index[0]] * edge_weight * inv[edge_index[1]]


def propagate(edge_index: Tensor, edge_weight: Tensor, h: Tensor) -> Tensor:
    """:math:`h'_a = \\sum_{b \\to a} w_{ba} h_b`, differentiable in ``edge_weight`` and ``h``."""
    out = torch.zeros_like(h)
    return out.index_add(0, edge_index[1], edge_weight.unsqueeze(-1) * h[edge_index[0]])


# -- user-item graph ------------------------------------------------------------------------
def user_item_edges(pairs: Tensor, num_users: int, num_items: int) -> tuple[Tensor, Tensor]:
    """The symmetric user-item graph on ``U + I`` nodes (items offset by ``U``) and the
    weights :math:`1/\\sqrt{d_a d_b}` of :math:`D^{-1/2} A D^{-1/2}` (LightGCN's adjacency)."""
    pairs = torch.unique(pairs, dim=1)
    src = torch.cat([pairs[0], pairs[1] + num_users])
    dst = torch.cat([pairs[1] + num_users, pairs[0]])
    n = num_users + num_items
    deg = torch.bincount(dst, minlength=n).float()
    inv = torch.where(deg > 0, deg.clamp_min(1).rsqrt(), torch.zeros_like(deg))
    return torch.stack([src, dst]), inv[src] * inv[dst]


def power_matmul(
    adj: Tensor, x: Tensor, num_layers: int, adj_transposed: Tensor | None = None
) -> Tensor:
    """:math:`\\mathrm{adj}^L x` (``adj`` sparse CSR; ``adj_transposed`` its transpose for the
    backward pass, ``None`` if ``adj`` is symmetric, as in
    :func:`~mllmrec_pyg.nn.spmm.fixed_matmul`)."""
    for _ in range(num_layers):
        x = fixed_matmul(adj, x, adj_transposed)
    return x


def layer_sum(
    adj: Tensor, x: Tensor, num_layers: int, adj_transposed: Tensor | None = None
) -> Tensor:
    """The sum over layers ``0..L`` of :math:`\\mathrm{adj}^l x` (arguments as
    :func:`power_matmul`)."""
    acc = x
    for _ in range(num_layers):
        x = fixed_matmul(adj, x, adj_transposed)
        acc = acc + x
    return acc


def layer_mean(
    adj: Tensor, x: Tensor, num_layers: int, adj_transposed: Tensor | None = None
) -> Tensor:
    """LightGCN's mean over layers ``0..L`` of :math:`\\mathrm{adj}^l x` (arguments as
    :func:`power_matmul`)."""
    return layer_sum(adj, x, num_layers, adj_transposed) / (num_layers + 1)


def project_rows(proj: nn.Linear, x: Tensor, items: Tensor) -> Tensor:
    """``proj(x[items])``, computed the cheaper of two ways.

    When the rows asked for are about as many as ``x`` has (a MovieLens-size
    catalogue and a batch's positives and negatives together), projecting every
    row and then selecting is faster: a single dense product forward and
    backward (also for a trainable ``x``, whose gradient is then one matrix
    product instead of a scatter into a zeroed ``[I, d]`` tensor), and no copy
    of the selected feature rows. Otherwise only the selected rows are
    projected. Both give the same values up to float rounding.
    """
    if 4 * x.size(0) <= 5 * items.numel():
        return proj(x).index_select(0, items)
    return proj(x.index_select(0, items))


def l2_penalty(u: Tensor, p: Tensor, n: Tensor, weight: float) -> Tensor:
    """:math:`\\beta \\frac{1}{2B}(\\lVert P_u\\rVert^2 + \\lVert Q_i\\rVert^2 + \\lVert Q_j\\rVert^2)`
    on a batch's user, positive and negative vectors (``weight`` :math:`\\beta`)."""
    return weight * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / (2 * u.size(0))


def bpr_loss(u: Tensor, p: Tensor, n: Tensor, l2_weight: float = 0.0) -> Tensor:
    """BPR on the inner products of the batch's final vectors, plus :func:`l2_penalty`
    when ``l2_weight`` :math:`\\beta > 0`."""
    loss = -F.logsigmoid((u * p).sum(-1) - (u * n).sum(-1)).mean()
    if l2_weight > 0:
        loss = loss + l2_penalty(u, p, n, l2_weight)
    return loss


def in_batch_softmax(
    queries: Tensor,
    keys: Tensor,
    rows: Tensor,
    cols: Tensor,
    temperature: float,
    normalize: bool = False,
) -> Tensor:
    """The in-batch softmax loss of pairs ``(rows[b], cols[b])`` from two tables,
    computed once per distinct id:

    .. math::
        \\frac1B \\sum_b -\\log \\frac{\\exp(q_{r_b}^\\top k_{c_b}/\\tau)}
        {\\sum_{b'} \\exp(q_{r_b}^\\top k_{c_{b'}}/\\tau)},

    i.e. ``F.cross_entropy(q[rows] @ k[cols].T / τ, arange(B))`` (rows of ``q``, ``k``
    L2-normalised first when ``normalize``). A batch repeats ids (a user with several
    pairs, a popular item); a row's logits depend only on its id and a key repeated
    :math:`n` times is one logit plus :math:`\\log n`, so the product is taken over
    distinct ids only: the same value and gradients in a fraction of the work."""
    uniq_r, inv_r, cnt_r = torch.unique(rows, return_inverse=True, return_counts=True)
    uniq_c, inv_c, cnt_c = torch.unique(cols, return_inverse=True, return_counts=True)
    # index_select rather than indexing: its backward adds rows (index_add) instead of
    # an accumulating index_put
    q, k = queries.index_select(0, uniq_r), keys.index_select(0, uniq_c)
    if normalize:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    # 1/τ scales the [R, d] queries rather than the [R, C] product (one pass less, forward
    # and backward; equal up to rounding)
    lse = torch.logsumexp((q / temperature) @ k.t() + cnt_c.to(q.dtype).log(), dim=1)
    pos = (q.index_select(0, inv_r) * k.index_select(0, inv_c)).sum() / temperature
    return ((lse * cnt_r).sum() - pos) / rows.numel()


def info_nce(
    anchor: Tensor,
    positive: Tensor,
    temperature: float,
    candidates: Tensor | None = None,
    reduce: str = "mean",
    index: Tensor | None = None,
) -> Tensor:
    """InfoNCE on cosine similarities: row ``a`` of ``anchor`` against its ``positive`` row,
    contrasted with every row of ``candidates`` (default: the rows of ``positive``, i.e.
    in-batch negatives):

    .. math::
        \\ell_a = -\\log \\frac{\\exp(\\cos(z_a, p_a)/\\tau)}
        {\\sum_c \\exp(\\cos(z_a, c)/\\tau)};

    ``reduce`` is ``"mean"`` or ``"sum"`` over rows. With ``index``, ``anchor`` and
    ``positive`` are whole tables and the batch is their rows ``index`` (the same loss
    as on ``anchor[index]``, ``positive[index]``, computed once per distinct id, see
    :func:`in_batch_softmax`)."""
    if index is not None:
        if candidates is None:
            loss = in_batch_softmax(anchor, positive, index, index, temperature, normalize=True)
            return loss if reduce == "mean" else loss * index.numel()
        # every candidate is a key once: only the anchor rows repeat
        uniq, cnt = torch.unique(index, return_counts=True)
        total = (
            _info_nce_rows(
                anchor.index_select(0, uniq),
                positive.index_select(0, uniq),
                temperature,
                candidates,
            )
            * cnt
        ).sum()
        return total / index.numel() if reduce == "mean" else total
    loss = _info_nce_rows(anchor, positive, temperature, candidates)
    return loss.mean() if reduce == "mean" else loss.sum()


def _info_nce_rows(
    anchor: Tensor, positive: Tensor, temperature: float, candidates: Tensor | None
) -> Tensor:
    """:func:`info_nce`'s loss of every row, unreduced."""
    z = F.normalize(anchor, dim=1)
    p = F.normalize(positive, dim=1)
    c = p if candidates is None else F.normalize(candidates, dim=1)
    zt = z / temperature  # scaled before the [R, C] product, as in in_batch_softmax
    return torch.logsumexp(zt @ c.t(), dim=1) - (zt * p).sum(-1)


__all__ = [
    "MultimodalModel",
    "bpr_loss",
    "check_feature_count",
    "check_item_graph",
    "check_modalities",
    "cosine_knn_graph",
    "feature_parameters",
    "in_batch_softmax",
    "info_nce",
    "layer_mean",
    "modality_features",
    "project_rows",
    "propagate",
    "read_inputs",
    "read_item_edges",
    "read_item_graph",
    "require_non_negative",
    "require_positive",
    "sym_norm_weights",
    "user_item_edges",
]
