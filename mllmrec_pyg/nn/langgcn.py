r"""LangGCN: frozen language vectors, an MLP into the ranking space, LightGCN, InfoNCE.

LangGCN keeps MLLMRec's inputs -- language vectors of the items' text and,
optionally, of the users' training-history preference text, plus the refined
item-item graph :math:`S^*` built by the package's transforms -- and trains
them the way language-based collaborative filtering does best (AlphaRec,
Sheng et al., ICLR 2025): one MLP maps the frozen language space into the
ranking space, a LightGCN propagates over the user-item training graph, and
an InfoNCE loss over many sampled negatives replaces BPR.

**Inputs** (constants of the training data, computed once):

.. math::
    \tilde x_i = \sum_{l=0}^{L_{ii}} \big(D^{-1/2} S^* D^{-1/2}\big)^l x_i
    \qquad (\text{``item_graph_mode="features"``}; \ \tilde x_i = x_i \text{ otherwise}),

    \bar x_u = \frac{1}{|N_u|} \sum_{i \in N_u} \tilde x_i ,

with :math:`x_i` the item's language vector (``data["item"].x``) and
:math:`N_u` the user's TRAINING items. The user's language input
:math:`z_u` is :math:`\bar x_u` (``user_init="mean"``), the preference-text
vector :math:`p_u` (``data["user"].x``, ``"preference"``), their average
(``"mean+preference"``), or nothing (``"id"``).

**Layer 0.** One MLP :math:`f(z) = W_2\,\sigma(W_1 z + b_1) + b_2`
(:math:`\sigma` = LeakyReLU), shared by users and items, plus optional
trainable ID embeddings :math:`q`:

.. math::
    e^{(0)}_u = f(z_u) + q_u, \qquad e^{(0)}_i = f(\tilde x_i) + q_i .

**Propagation.** LightGCN over the training graph
:math:`\hat A = D^{-1/2} A D^{-1/2}` (:math:`A` the symmetric user-item
adjacency), mean over layers:

.. math::
    e_v = \frac{1}{L+1} \sum_{l=0}^{L} \big(\hat A^{l} E^{(0)}\big)_v ,

and with ``item_graph_mode="embeddings"`` the item side also gets FREEDOM's
item-item term, :math:`e_i \leftarrow e_i + \big((D^{-1/2} S^* D^{-1/2})^{L_{ii}}
E^{(0)}_{items}\big)_i`.

**Score and loss.** :math:`s(u, i) = \cos(e_u, e_i)` (or the dot product with
``cosine=False``); at ranking, ``cooccurrence_weight`` :math:`\beta > 0` adds a
co-purchase prior from the training pairs (:func:`cooccurrence_prior`),

.. math::
    s(u, i) \mathrel{+}= \beta\, \frac{m_{ui}}{\max_{i'} m_{ui'}}, \qquad
    m_{ui} = \sum_{j \in N_u} c_{ij}, \quad c_{ij} = |\{v : i, j \in N_v\}|\ (i \ne j),

the number of training co-occurrences of :math:`i` with the user's items, and
``popularity_weight`` :math:`\gamma > 0` adds the item's training popularity on a
log scale, :math:`\gamma \log(1 + d_i) / \log(1 + \max_{i'} d_{i'})` with
:math:`d_i` its number of training users (a cosine score is blind to an item's
degree; both terms lie in :math:`[0, 1]`, inside the cosine's range, so their
weights mean the same on any dataset). The loss sees neither; they enter the
scores the trainer validates, so early stopping and the search do. For a positive :math:`(u, i)` and negatives
:math:`j_1..j_K` -- ``num_negatives`` sampled items, or with
``num_negatives=0`` every item :math:`u` has not interacted with in training
(a full softmax, which costs one ``[B, I]`` product the sampled loss needs too):

.. math::
    \mathcal L_{u,i} = -\log \frac{\exp(s(u,i)/\tau)}
    {\exp(s(u,i)/\tau) + \sum_{k=1}^{K} \exp(s(u,j_k)/\tau)}

averaged over the batch (``loss="infonce"``), or BPR averaged over the
:math:`K` negatives (``loss="bpr"``), plus
:math:`\lambda \lVert E^{(0)}_{batch} \rVert^2 / (2B)` on the batch's ID
embeddings (``reg_weight``).

The switches make the ablations one config change each: ``user_init="id"``
(ID users), ``use_item_text=False`` with ``id_embeddings=True`` (plain
LightGCN trained with InfoNCE), ``item_graph=None`` or another edge type
(no item graph, or e.g. the plain kNN graph ``("item", "semantic", "item")``),
``loss="bpr"``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import HeteroData
from torch_geometric.utils import scatter

from mllmrec_pyg._sparse import quiet_sparse, to_csr
from mllmrec_pyg.data.schema import (
    INTERACTS,
    ITEM,
    RELATED,
    USER,
    SchemaError,
    check_features,
    require_node_type,
    validate,
)
from mllmrec_pyg.metrics import CSRIndex, mask_scores_
from mllmrec_pyg.nn.base import RankingModel, ScoreFn, dot_scorer, reads_refined_graph
from mllmrec_pyg.nn.bipartite import bipartite_adjacency, symmetric_adjacency
from mllmrec_pyg.nn.freedom import degree_sensitive_prune
from mllmrec_pyg.nn.item_lightgcn import ItemLightGCN, item_graph_norm, to_adj_t
from mllmrec_pyg.nn.losses import masked_infonce
from mllmrec_pyg.nn.mm_common import (
    check_item_graph,
    l2_penalty,
    layer_mean,
    power_matmul,
    read_item_edges,
    require_non_negative,
    require_positive,
)
from mllmrec_pyg.nn.ranking_terms import (
    SparseRows,
    cooccurrence_prior,
    history_similarity,
    item_cosines,
    log_popularity,
    with_ranking_terms,
)
from mllmrec_pyg.nn.registry import EMBEDDING, Flag, register_model
from mllmrec_pyg.nn.spmm import register_with_transpose
from mllmrec_pyg.nn.tower import Tower

log = logging.getLogger(__name__)

USER_INITS = ("mean", "preference", "mean+preference", "id")
ITEM_GRAPH_MODES = ("features", "embeddings", "both", "layer0")
LOSSES = ("infonce", "bpr")


@dataclass
class LangGCNConfig:
    """Hyper-parameters and ablation switches of :class:`LangGCN`.

    Args:
        embedding_dim: :math:`d`, the ranking space width.
        hidden_dim: the MLP's hidden width.
        num_layers: :math:`L`, LightGCN layers over the user-item training graph.
        user_init: the user's language input :math:`z_u`: ``"mean"`` of the
            training items' vectors, the ``"preference"``-text vector
            (``data["user"].x``), their average ``"mean+preference"``, or
            ``"id"`` (no language input; needs ``id_embeddings``).
        use_item_text: feed the items' language vectors through the MLP;
            ``False`` leaves the ID embeddings alone (needs ``id_embeddings``).
        id_embeddings: add trainable ID embeddings :math:`q` to layer 0.
        id_init_std: standard deviation of their normal initialisation
            (0 starts them at zero, i.e. from the pure language model).
        item_graph: item-item edge type to read (default the refined graph
            :math:`S^*`); ``None`` uses no item graph.
        item_graph_mode: ``"features"`` smooths the frozen item vectors over the
            graph once (MLLMRec's :math:`E^*`); ``"embeddings"`` adds the
            propagated layer-0 item embeddings to the item side (as FREEDOM);
            ``"both"`` does the two; ``"layer0"`` adds the propagated item embeddings
            to layer 0 itself, :math:`E^{(0)}_i \\leftarrow E^{(0)}_i + ((D^{-1/2} S^*
            D^{-1/2})^{L_{ii}} E^{(0)})_i`, before the user-item propagation, so that
            users aggregate it too.
        num_item_layers: :math:`L_{ii}`, item-item propagation depth.
        loss: ``"infonce"`` or ``"bpr"`` (averaged over the negatives).
        temperature: :math:`\\tau` of InfoNCE.
        num_negatives: :math:`K`, sampled negatives per positive; ``0`` takes
            every item the user has not interacted with in training.
        cosine: score by cosine similarity (else the dot product).
        reg_weight: :math:`\\lambda`, L2 on the batch's ID embeddings.
        negative_slope: the MLP's LeakyReLU slope.
        input_propagation: propagate the frozen language inputs over the graphs once,
            before the MLP (:math:`e_v = f((P z)_v) + (P q)_v`, :math:`P` the layer mean
            of the propagation), instead of propagating the MLP's outputs at every
            step; a step then runs the MLP on the batch's rows only.
        edge_dropout: :math:`\\rho`, the fraction of user-item training edges pruned
            at each epoch with FREEDOM's degree-sensitive sampling (0: none); the
            full graph ranks at evaluation.
        item_bias: add a trainable per-item bias :math:`b_i` to every score,
            :math:`s(u, i) = \\cos(e_u, e_i) + b_i` (a popularity prior the cosine
            cannot express; started at zero).
        user_ids: with ``id_embeddings``, give users ID embeddings too; ``False`` keeps
            item IDs only, so that a user's ID part is what propagation brings from
            its items (nothing to fit per user: sparse users cannot overfit it).
        item_head: also read the head view of the item texts, ``data["item"].x_head``
            (the vectors of each text's first words: an Amazon item's title, brand and
            category path), concatenated to ``data["item"].x`` as one language input
            (a user's preference vector, if read, is repeated to match). Data without
            item texts has no head view: the model then reads ``x`` alone and says so.
        cooccurrence_weight: :math:`\\beta`, the weight of the co-purchase prior added to
            the ranking scores (0: none); see the module docstring.
        popularity_weight: :math:`\\gamma`, the weight of the items' log training
            popularity added to the ranking scores (0: none); see the module docstring.
        interest_items: :math:`k_a`, each user's *interest items* joined to the
            user-item graph (0: none): the :math:`k_a` items outside the user's training
            items whose language vectors are closest on average to those of its training
            items (SOIL's second-order interest, from the text alone). The graph
            propagated is :math:`\\hat A + \\tfrac12 \\mathcal N(A^{int})`, with
            :math:`A^{int}_{uc}` the mean cosine of :math:`c` to the user's items (kept
            when positive) and :math:`\\mathcal N` the symmetric normalisation; it gives
            sparse users neighbours their few interactions do not.
        history_weight: :math:`\\eta`, the weight of the item-to-item readout added to the
            ranking scores (0: none), :math:`\\eta \\max_{j \\in N_u} \\cos(e_j, e_i)`: the
            candidate's closeness to the nearest of the user's training items in the
            learned item space (:func:`~mllmrec_pyg.nn.ranking_terms.history_similarity`);
            like the other two terms the loss does not see it.
        seed: seeds the per-epoch pruning (epoch ``e`` always draws the same graph).

    The comparison fixes :data:`LANGGCN_FIXED` (the refined graph on inputs and
    item side, the item text's vector beside its head view's, inputs propagated once
    before a linear map, a full softmax) and
    searches :data:`LANGGCN_SPACE` on validation (8,192-pair batches, lr 1e-3,
    temperature 0.15): ``history_weight`` (0, 0.4) and, together, ``cooccurrence_weight``
    and ``popularity_weight`` (both 0, or 0.2 and 0.3).
    """

    embedding_dim: int = 64
    hidden_dim: int = 256
    num_layers: int = 2
    user_init: str = "mean"
    use_item_text: bool = True
    id_embeddings: bool = True
    id_init_std: float = 0.1
    item_graph: tuple[str, str, str] | None = RELATED
    item_graph_mode: str = "features"
    num_item_layers: int = 1
    loss: str = "infonce"
    temperature: float = 0.15
    num_negatives: int = 256
    cosine: bool = True
    reg_weight: float = 0.0
    negative_slope: float = 0.01
    input_propagation: bool = False
    edge_dropout: float = 0.0
    item_bias: bool = False
    user_ids: bool = True
    item_head: bool = False
    cooccurrence_weight: float = 0.0
    popularity_weight: float = 0.0
    interest_items: int = 0
    history_weight: float = 0.0
    seed: int = 0

    #: switches the run store keys only when set (runs stored before they existed keep
    #: their keys; :func:`mllmrec_pyg.runs.keyed_config`)
    KEYED_WHEN_SET: ClassVar[tuple[str, ...]] = ("interest_items", "history_weight")

    def __post_init__(self) -> None:
        self.item_graph = check_item_graph(self.item_graph)
        for key, allowed in (
            ("user_init", USER_INITS),
            ("item_graph_mode", ITEM_GRAPH_MODES),
            ("loss", LOSSES),
        ):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}")
        require_positive(self, "embedding_dim", "temperature")
        require_non_negative(
            self, "hidden_dim", "num_layers", "num_item_layers", "num_negatives", "interest_items"
        )
        if not 0.0 <= self.edge_dropout < 1.0:
            raise ValueError(f"edge_dropout must be in [0, 1), got {self.edge_dropout}")
        if self.edge_dropout > 0 and self.input_propagation and not self.id_embeddings:
            raise ValueError(
                "edge_dropout prunes what is propagated at each step: with input_propagation "
                "that is the ID embeddings only, so it needs id_embeddings=True"
            )
        require_non_negative(
            self,
            "reg_weight",
            "id_init_std",
            "cooccurrence_weight",
            "popularity_weight",
            "history_weight",
        )
        if self.num_negatives == 0 and self.loss != "infonce":
            raise ValueError("num_negatives=0 (every unseen item) needs loss='infonce'")
        if not self.id_embeddings and (self.user_init == "id" or not self.use_item_text):
            raise ValueError("user_init='id' and use_item_text=False need id_embeddings=True")

    @property
    def reads_user_text(self) -> bool:
        """Whether ``user_init`` takes the preference-text vectors ``data["user"].x``."""
        return self.user_init in ("preference", "mean+preference")


def mean_item_vectors(edge_index: Tensor, item_x: Tensor, num_users: int) -> Tensor:
    """:math:`\\bar x_u`, the mean of each user's items' vectors (zero for users without items).

    Args:
        edge_index: ``(user, item)`` pairs (pass the TRAINING pairs); duplicates count once.
        item_x: ``[I, d]`` item vectors.
        num_users: number of users.
    """
    pairs = torch.unique(edge_index, dim=1)
    return scatter(item_x[pairs[1]], pairs[0], 0, dim_size=num_users, reduce="mean")


def interest_adjacency(
    edge_index: Tensor, item_x: Tensor, num_users: int, k: int, chunk: int = 2048
) -> Tensor:
    """:math:`\\tfrac12 \\mathcal N(A^{int})`: each user joined to its ``k`` interest items.

    A user's interest items are the ``k`` items outside its training items with the
    largest mean cosine between their vector and its training items' vectors (weights:
    that mean cosine, kept when positive); the bipartite matrix of those edges is
    normalised symmetrically by its own degrees and halved. Users without training items
    get none.

    Args:
        edge_index: TRAINING ``(user, item)`` pairs.
        item_x: ``[I, d]`` item vectors.
        num_users: number of users.
        k: interest items per user.
        chunk: users scored at once (bounds memory at ``chunk x I``).

    Returns:
        a sparse CSR ``[U + I, U + I]`` matrix (users first), like
        :func:`~mllmrec_pyg.nn.bipartite.bipartite_adjacency`.
    """
    num_items = item_x.size(0)
    pairs = torch.unique(edge_index, dim=1)
    unit = F.normalize(item_x.float(), dim=1)
    mean = mean_item_vectors(pairs, unit, num_users)  # zero for a user without items
    seen = CSRIndex(pairs, num_users)
    k = min(k, num_items)
    rows, cols, vals = [], [], []
    for start in range(0, num_users, chunk):
        users = torch.arange(start, min(start + chunk, num_users))
        sims = mean[users] @ unit.T
        mask_scores_(sims, users, [seen])
        top = sims.topk(k, dim=1)
        keep = top.values > 0  # a user without items has only zeros: no edge
        rows.append(users[:, None].expand(-1, k)[keep])
        cols.append(top.indices[keep])
        vals.append(top.values[keep])
    row, col, val = torch.cat(rows), torch.cat(cols) + num_users, torch.cat(vals)
    graph = symmetric_adjacency(torch.stack([row, col]), val, num_users + num_items)
    return graph * 0.5


def add_sparse(a: Tensor, b: Tensor | None) -> Tensor:
    """``a + b`` of two sparse CSR matrices (``a`` when ``b`` is ``None``), as CSR."""
    if b is None:
        return a
    with quiet_sparse():
        return to_csr((a.to_sparse_coo() + b.to_sparse_coo()).coalesce())


#: LangGCN's learning rates, temperatures and depths
LANG_SPACE = {
    "train.lr": (1e-3, 3e-3),
    "model.temperature": (0.1, 0.15, 0.2),
    "model.num_layers": (1, 2, 3),
}
ITEM_GRAPH = {"model.item_graph": (RELATED, None)}
#: LangGCN as compared: the refined graph both smooths the language inputs and joins the
#: item side, the inputs (the whole item text's vector beside its head view's) are
#: propagated once before a linear map, FREEDOM's degree-sensitive edge pruning at each
#: epoch, a full softmax
LANGGCN_FIXED = {
    "item_graph": RELATED,
    "item_graph_mode": "both",
    "input_propagation": True,
    "hidden_dim": 0,
    "num_negatives": 0,
    "item_head": True,
}
LANGGCN_SPACE = {
    # 8,192 pairs per step: the full softmax costs one [distinct users, I] product per
    # step, and a 2,048-pair MovieLens batch already holds ~500 of its 610 users, so
    # four times the pairs cost about the same per step (a quarter of the steps);
    # lr 1e-3 won every earlier search of LangGCN on both datasets
    "train.batch_size": (8192,),
    "train.lr": (1e-3,),
    # 0.15 beat 0.2 at otherwise equal settings in every earlier search on both datasets
    "model.temperature": (0.15,),
    # the nearest training item in the learned space: it helps product baskets of unlike
    # items and hurts MovieLens, whose long histories cover a user's tastes (validation
    # decides); it took the place of edge_dropout (0, 0.8), which no search chose
    "model.history_weight": (0.0, 0.4),
    # the co-purchase prior and the items' log popularity at ranking, searched together
    # (both off or both on): they help sparse product data and hurt MovieLens, where
    # popular co-watched titles crowd out what the embeddings rank (validation decides);
    # as one dimension the 4-point grid fits the 6-trial budget whole, where a sampled
    # 8-point grid left out the best Scientific point
    "model.cooccurrence_weight+model.popularity_weight": ((0.0, 0.0), (0.2, 0.3)),
}
#: LangGCN's ablation at its chosen settings: name -> (graph changes, model changes);
#: a switch that the chosen settings already have is skipped
ABLATIONS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "id-users": ({}, {"user_init": "id", "id_embeddings": True}),
    "preference-text": ({}, {"user_init": "mean+preference"}),
    "no-ids": ({}, {"id_embeddings": False}),
    "id-only": (
        {},
        {"use_item_text": False, "user_init": "id", "item_graph": None, "id_embeddings": True},
    ),
    "no-item-graph": ({}, {"item_graph": None}),
    "plain-knn": ({"alpha": None, "cooccurrence": False}, {"item_graph": RELATED}),
    "refined-graph": ({}, {"item_graph": RELATED}),
    "sampled-256": ({}, {"num_negatives": 256}),
    "full-softmax": ({}, {"num_negatives": 0}),
    "bpr": ({}, {"loss": "bpr", "num_negatives": 1, "cosine": False}),
    "no-edge-dropout": ({}, {"edge_dropout": 0.0}),
    "graph-on-inputs": ({}, {"item_graph_mode": "features"}),
    "graph-on-embeddings": ({}, {"item_graph_mode": "embeddings"}),
    "step-propagation": ({}, {"input_propagation": False}),
    "mlp-256": ({}, {"hidden_dim": 256}),
    "no-item-head": ({}, {"item_head": False}),
    "item-head": ({}, {"item_head": True}),
    "item-bias": ({}, {"item_bias": True}),
    "no-user-ids": ({}, {"user_ids": False}),
    "graph-on-layer0": ({}, {"item_graph_mode": "layer0"}),
    "no-cooccurrence": ({}, {"cooccurrence_weight": 0.0}),
    "no-popularity": ({}, {"popularity_weight": 0.0}),
    "interest-items": ({}, {"interest_items": 3}),
    "no-history": ({}, {"history_weight": 0.0}),
}


@register_model(
    "langgcn",
    label="LangGCN",
    fixed=LANGGCN_FIXED,
    space=LANGGCN_SPACE,
    candidates={
        # where LangGCN's gain comes from: each drops one input, searched the same way
        "langgcn-id-only": (
            {"use_item_text": False, "user_init": "id", "item_graph": None},
            LANG_SPACE,
        ),
        "langgcn-id-users": ({"user_init": "id"}, {**LANG_SPACE, **ITEM_GRAPH}),
        "langgcn-plain-knn": (
            {"item_graph": RELATED},
            # plain top-K_s: no threshold, no co-occurrence
            {**LANG_SPACE, "graph.alpha": (None,), "graph.cooccurrence": (False,)},
        ),
        "langgcn-bpr": (
            {"loss": "bpr", "num_negatives": 1, "cosine": False},
            {
                "train.lr": (1e-3, 3e-3),
                "model.num_layers": (1, 2, 3),
                "model.id_embeddings": (True, False),
                **ITEM_GRAPH,
            },
        ),
    },
    flags={"embedding_dim": EMBEDDING, "num_layers": Flag("num_layers", "user-item GCN depth")},
    ablations=ABLATIONS,
)
class LangGCN(RankingModel):
    """LangGCN; see the module docstring for the equations.

    Args:
        num_users: number of users.
        item_x: frozen item language vectors ``[I, d_t]``.
        train_edge_index: TRAINING ``(user, item)`` pairs (the graph, the
            users' mean vectors).
        user_x: preference-text vectors ``[U, d_u]`` (needed for the
            ``"preference"`` user inputs).
        item_edge_index: item-item edges (``[1]`` = owner), or ``None``.
        item_edge_weight: their weights (``None`` = 1).
        config: :class:`LangGCNConfig`.
    """

    config_class = LangGCNConfig

    def __init__(
        self,
        num_users: int,
        item_x: Tensor,
        train_edge_index: Tensor,
        user_x: Tensor | None = None,
        item_edge_index: Tensor | None = None,
        item_edge_weight: Tensor | None = None,
        config: LangGCNConfig | None = None,
    ) -> None:
        super().__init__(num_users, item_x.size(0))
        cfg = self.config = config or LangGCNConfig()
        item_x = check_features(item_x, "item features").float()
        pairs = torch.unique(train_edge_index.cpu(), dim=1)
        self._interest_adj = (
            interest_adjacency(pairs, item_x, num_users, cfg.interest_items)
            if cfg.interest_items > 0
            else None
        )
        self.register_buffer(
            "ui_adj_t",
            add_sparse(bipartite_adjacency(pairs, num_users, self.num_items), self._interest_adj),
            persistent=False,
        )

        # The item-item graph, normalised once: D^{-1/2} S D^{-1/2}.
        item_adj = None
        if cfg.item_graph is not None:
            if item_edge_index is None:
                raise SchemaError(f"item_graph={cfg.item_graph} needs item_edge_index")
            item_adj, _ = item_graph_norm(
                to_adj_t(item_edge_index, item_edge_weight, self.num_items)
            )
        self.item_conv = ItemLightGCN(cfg.num_item_layers, normalize=False)
        smooth = item_adj is not None and cfg.item_graph_mode in ("features", "both")
        with torch.no_grad():
            item_in = self.item_conv(item_x, item_adj) if smooth else item_x
        emb_adj = item_adj if cfg.item_graph_mode in ("embeddings", "both", "layer0") else None
        register_with_transpose(self, "item_emb_adj", emb_adj, "item_emb_adj_t")
        self._train_index = CSRIndex(pairs, num_users)  # the full softmax's masks
        self.register_buffer("train_pairs", pairs, persistent=False)
        self._train_adj: Tensor | None = None

        # Language inputs z (frozen buffers, derived from training data only).
        d_t = item_x.size(1)
        user_in = None
        if cfg.user_init in ("mean", "mean+preference"):
            user_in = mean_item_vectors(pairs, item_in, num_users)
        if cfg.reads_user_text:
            if user_x is None:
                raise SchemaError(f"user_init={cfg.user_init!r} needs data['user'].x")
            user_x = check_features(user_x, "user features").float()
            if user_x.shape != (num_users, d_t):
                raise SchemaError(
                    f"user features have shape {tuple(user_x.shape)}; expected "
                    f"({num_users}, {d_t}) to share the item MLP"
                )
            user_in = user_x if user_in is None else 0.5 * (user_in + user_x)
        item_lang = item_in.contiguous() if cfg.use_item_text else None
        if cfg.input_propagation and (item_lang is not None or user_in is not None):
            # P z once: the propagation the ID embeddings get at every step
            z = torch.cat(
                [
                    user_in if user_in is not None else item_x.new_zeros(num_users, d_t),
                    item_lang if item_lang is not None else item_x.new_zeros(self.num_items, d_t),
                ]
            )
            with torch.no_grad():
                pz = self._propagate(self.ui_adj_t, z)
            user_in, item_lang = pz[:num_users].contiguous(), pz[num_users:].contiguous()
        self.register_buffer("item_lang", item_lang, persistent=False)
        self.register_buffer("user_lang", user_in, persistent=False)

        self.mlp: nn.Module | None = None
        if item_lang is not None or user_in is not None:
            self.mlp = (
                Tower(d_t, cfg.hidden_dim, cfg.embedding_dim, cfg.negative_slope)
                if cfg.hidden_dim > 0
                else nn.Linear(d_t, cfg.embedding_dim)
            )
        self.user_id = self.item_id = None
        if cfg.id_embeddings:
            self.user_id, self.item_id = self._id_tables(cfg.embedding_dim)
            if not cfg.user_ids:
                self.user_id = None
        self.item_b = nn.Parameter(torch.zeros(self.num_items)) if cfg.item_bias else None
        self._prior = (
            cooccurrence_prior(pairs, num_users, self.num_items)
            if cfg.cooccurrence_weight > 0
            else None
        )
        self._popularity = (
            log_popularity(pairs, self.num_items) if cfg.popularity_weight > 0 else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in self.mlp.modules() if self.mlp is not None else ():
            if isinstance(lin, nn.Linear):
                lin.reset_parameters()
        for emb in (self.user_id, self.item_id):
            if emb is not None:
                nn.init.normal_(emb.weight, std=self.config.id_init_std)
        if self.item_b is not None:
            nn.init.zeros_(self.item_b)

    @property
    def num_negatives(self) -> int:
        """Negatives the trainer samples per positive (0: none, the loss takes every item)."""
        return self.config.num_negatives

    @classmethod
    def requires(cls, config: LangGCNConfig) -> frozenset[str]:
        needs = {"items"}
        if config.reads_user_text:
            needs.add("users")
        if reads_refined_graph(config.item_graph):
            needs.add("graph")
        if config.item_head:
            needs.add("item_head")
        return frozenset(needs)

    @classmethod
    def from_data(cls, data: HeteroData, config: LangGCNConfig | None = None) -> LangGCN:
        """Build from the HeteroData contract: training pairs, ``data["item"].x``,
        ``data["user"].x`` for preference inputs, ``data[config.item_graph]`` if set."""
        cfg = config or LangGCNConfig()
        validate(data, require=["item.x", "user.x"] if cfg.reads_user_text else ["item.x"])
        num_users = require_node_type(data, USER)
        num_items = require_node_type(data, ITEM)
        train = data[INTERACTS].edge_index
        ei = ew = None
        if cfg.item_graph is not None:
            ei, ew = read_item_edges(data, cfg.item_graph, num_items)
        user_x = data[USER].get("x") if cfg.reads_user_text else None
        item_x = data[ITEM].x
        head = data[ITEM].get("x_head") if cfg.item_head else None
        if cfg.item_head and head is None:
            log.warning(
                'LangGCN: item_head=True, but the data has no head view (data["item"].x_head, '
                "written from item texts); reading data['item'].x alone"
            )
        if head is not None:
            head = check_features(head, "item head-view features").float()
            if head.size(0) != item_x.size(0):
                raise SchemaError(
                    f'data["item"].x_head has {head.size(0)} rows for {item_x.size(0)} items'
                )
            if user_x is not None:
                if head.size(1) != item_x.size(1):
                    raise SchemaError(
                        f"item_head with preference inputs repeats the user vector for the "
                        f"head view, which needs x_head as wide as x ({item_x.size(1)}), "
                        f"got {head.size(1)}"
                    )
                user_x = torch.cat([user_x, user_x], dim=1)
            item_x = torch.cat([item_x.float(), head], dim=1)
        model = cls(num_users, item_x, train, user_x, ei, ew, cfg)
        log.info("LangGCN: %d users, %d items; %s", num_users, num_items, model.extra_repr())
        return model.set_seen(train)

    # -- edge pruning ---------------------------------------------------------------------
    def on_train_epoch_start(self, epoch: int) -> None:
        """Draw this epoch's pruned user-item graph (``edge_dropout > 0``; called by the trainer)."""
        if self.config.edge_dropout <= 0:
            return
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + int(epoch))
        kept = degree_sensitive_prune(
            self.train_pairs.cpu(), self.num_users, self.num_items, self.config.edge_dropout, gen
        )
        self._train_adj = add_sparse(
            bipartite_adjacency(kept, self.num_users, self.num_items), self._interest_adj
        ).to(self.ui_adj_t.device)

    def _adj(self) -> Tensor:
        """The user-item adjacency of this step: pruned while training, else the full one."""
        if self.training and self.config.edge_dropout > 0:
            if self._train_adj is None:
                self.on_train_epoch_start(1)
            return self._train_adj
        return self.ui_adj_t

    # -- representations -------------------------------------------------------------
    def _propagate(self, adj: Tensor, e0: Tensor) -> Tensor:
        """:math:`P e_0`: the layer mean over the user-item graph ``adj``, plus on the item
        side the item-item term (``item_graph_mode`` ``"embeddings"`` or ``"both"``), or
        with that term added to layer 0 first (``"layer0"``)."""
        cfg = self.config
        if self.item_emb_adj is None:
            return layer_mean(adj, e0, cfg.num_layers)  # symmetric
        users, items = e0[: self.num_users], e0[self.num_users :]
        term = power_matmul(self.item_emb_adj, items, cfg.num_item_layers, self.item_emb_adj_t)
        if cfg.item_graph_mode == "layer0":
            # S* joins layer 0, before the user-item propagation: users see it too
            return layer_mean(adj, torch.cat([users, items + term]), cfg.num_layers)
        out = layer_mean(adj, e0, cfg.num_layers)
        return torch.cat([out[: self.num_users], out[self.num_users :] + term])

    def layer0(self) -> Tensor:
        """:math:`E^{(0)}`, users then items, ``[U + I, d]`` (with ``input_propagation``
        the MLP reads the propagated inputs :math:`P z`)."""
        parts = []
        for lang, ids in ((self.user_lang, self.user_id), (self.item_lang, self.item_id)):
            e = self.mlp(lang) if lang is not None else None
            if ids is not None:
                e = ids.weight if e is None else e + ids.weight
            parts.append(e)
        if parts[0] is None:  # item IDs only, no user language input
            parts[0] = parts[1].new_zeros(self.num_users, parts[1].size(1))
        return torch.cat(parts)

    def representations(self, users: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Final :math:`e_u` (of ``users``, default all) and :math:`e_i` for all items."""
        cfg = self.config
        if not cfg.input_propagation:
            out = self._propagate(self._adj(), self.layer0())
            user_out, item_out = out[: self.num_users], out[self.num_users :]
            if users is not None:
                user_out = user_out[users]
        else:
            user_out, item_out = self._propagated_representations(users)
        if cfg.cosine:
            user_out, item_out = F.normalize(user_out, dim=-1), F.normalize(item_out, dim=-1)
        if self.item_b is not None:  # <[e_u, 1], [e_i, b_i]> = s(u, i) + b_i
            user_out = torch.cat([user_out, user_out.new_ones(user_out.size(0), 1)], dim=1)
            item_out = torch.cat([item_out, self.item_b.unsqueeze(1)], dim=1)
        return user_out, item_out

    def _propagated_representations(self, users: Tensor | None) -> tuple[Tensor, Tensor]:
        """:math:`f((P z)_v) + (P q)_v`: the MLP on the precomputed inputs of the rows
        needed, the ID embeddings propagated at this step."""
        ids = None
        if self.item_id is not None:
            item_ids = self.item_id.weight
            # without user IDs (user_ids=False) a user's ID part starts at zero
            user_ids = (
                self.user_id.weight
                if self.user_id is not None
                else item_ids.new_zeros(self.num_users, item_ids.size(1))
            )
            ids = self._propagate(self._adj(), torch.cat([user_ids, item_ids]))
        user_out = item_out = None
        if self.user_lang is not None:
            user_out = self.mlp(self.user_lang if users is None else self.user_lang[users])
        if self.item_lang is not None:
            item_out = self.mlp(self.item_lang)
        if ids is not None:
            u_ids = ids[: self.num_users] if users is None else ids[users]
            user_out = u_ids if user_out is None else user_out + u_ids
            i_ids = ids[self.num_users :]
            item_out = i_ids if item_out is None else item_out + i_ids
        return user_out, item_out

    # -- the trainer's interface -----------------------------------------------------
    def pair_scores(
        self, users: Tensor, pos_items: Tensor, neg_items: Tensor
    ) -> tuple[Tensor, Tensor]:
        """:math:`s(u, i)` and :math:`s(u, j)` (``neg_items`` may be ``[B]`` or ``[B, K]``)."""
        u, item_out = self.representations(users)
        pos = (u * item_out[pos_items]).sum(-1)
        if neg_items.dim() == 1:
            return pos, (u * item_out[neg_items]).sum(-1)
        if item_out.size(0) <= neg_items.size(1) * item_out.size(1):
            neg = (u @ item_out.t()).gather(1, neg_items)  # cheaper than gathering rows
        else:
            neg = torch.einsum("bd,bkd->bk", u, item_out[neg_items])
        return pos, neg

    def full_softmax_loss(self, users: Tensor, pos_items: Tensor) -> Tensor:
        """InfoNCE of a batch against every item each user has not interacted with in training."""
        # once per distinct user: the negatives (every item without a training pair) are
        # the user's, whichever of its pairs is the positive
        distinct, inverse = torch.unique(users, return_inverse=True)
        u, item_out = self.representations(distinct)
        row, col = self._train_index.gather(distinct.cpu())
        return masked_infonce(
            u / self.config.temperature,
            item_out,
            inverse,
            pos_items,
            row.to(u.device),
            col.to(u.device),
        )

    def batch_loss(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor:
        """InfoNCE (or BPR) of a batch with ``neg_items`` ``[B, K]`` (or ``[B]``); with
        ``num_negatives=0`` the negatives are every unseen item and ``neg_items`` is ignored."""
        if self.config.num_negatives == 0:
            return self.full_softmax_loss(users, pos_items)
        pos, neg = self.pair_scores(users, pos_items, neg_items)
        if neg.dim() == 1:
            neg = neg.unsqueeze(1)
        if self.config.loss == "bpr":
            return -F.logsigmoid(pos.unsqueeze(1) - neg).mean()
        logits = torch.cat([pos.unsqueeze(1), neg], dim=1) / self.config.temperature
        return -torch.log_softmax(logits, dim=1)[:, 0].mean()

    def reg_loss(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor | None:
        if self.config.reg_weight <= 0 or self.item_id is None:
            return None
        p, n = self.item_id(pos_items), self.item_id(neg_items)
        u = self.user_id(users) if self.user_id is not None else p.new_zeros(p.shape)
        return l2_penalty(u, p, n, self.config.reg_weight)

    def scorer(self) -> ScoreFn:
        cfg = self.config
        users, items = self.representations()
        score = dot_scorer(users, items)
        if cfg.history_weight > 0:  # the nearest training item, in the learned item space
            score = self._with_history(score, items[:, : cfg.embedding_dim])  # no bias column
        return with_ranking_terms(
            score, self._prior, cfg.cooccurrence_weight, self._popularity, cfg.popularity_weight
        )

    def _with_history(self, base: ScoreFn, item_emb: Tensor) -> ScoreFn:
        """``base`` plus ``history_weight`` times :func:`history_similarity` over ``item_emb``."""
        weight = self.config.history_weight
        gram = item_cosines(item_emb)  # once for every block of users

        def score(users: Tensor) -> Tensor:
            near = history_similarity(item_emb, self._train_index, users, gram=gram)
            return base(users).add_(near.to(item_emb.device), alpha=weight)

        return score

    def extra_repr(self) -> str:
        c = self.config
        graph = "none" if c.item_graph is None else f"{c.item_graph[1]}({c.item_graph_mode})"
        return (
            f"{super().extra_repr()}, dim={c.embedding_dim}, layers={c.num_layers}, "
            f"users={c.user_init}, item_text={c.use_item_text}"
            f"{'+head' if c.item_head else ''}, ids={c.id_embeddings}, "
            f"item_graph={graph}, loss={c.loss}(tau={c.temperature}, K={c.num_negatives})"
            + (f", cooccurrence={c.cooccurrence_weight}" if c.cooccurrence_weight else "")
            + (f", popularity={c.popularity_weight}" if c.popularity_weight else "")
            + (f", interest_items={c.interest_items}" if c.interest_items else "")
            + (f", history={c.history_weight}" if c.history_weight else "")
        )


__all__ = [
    "LangGCN",
    "LangGCNConfig",
    "SparseRows",
    "interest_adjacency",
    "cooccurrence_prior",
    "log_popularity",
    "mean_item_vectors",
    "with_ranking_terms",
]
