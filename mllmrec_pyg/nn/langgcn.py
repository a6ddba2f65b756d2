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
``cosine=False``); for a positive :math:`(u, i)` and negatives
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

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import HeteroData
from torch_geometric.utils import scatter

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
from mllmrec_pyg.nn.bipartite import bipartite_adjacency
from mllmrec_pyg.nn.item_lightgcn import ItemLightGCN, item_graph_norm, to_adj_t
from mllmrec_pyg.nn.mllmrec import Tower
from mllmrec_pyg.nn.mm_common import (
    check_item_graph,
    l2_penalty,
    layer_mean,
    power_matmul,
    read_item_edges,
    require_non_negative,
    require_positive,
)
from mllmrec_pyg.nn.spmm import register_with_transpose

log = logging.getLogger(__name__)

USER_INITS = ("mean", "preference", "mean+preference", "id")
ITEM_GRAPH_MODES = ("features", "embeddings")
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
            propagated layer-0 item embeddings to the item side (as FREEDOM).
        num_item_layers: :math:`L_{ii}`, item-item propagation depth.
        loss: ``"infonce"`` or ``"bpr"`` (averaged over the negatives).
        temperature: :math:`\\tau` of InfoNCE.
        num_negatives: :math:`K`, sampled negatives per positive; ``0`` takes
            every item the user has not interacted with in training.
        cosine: score by cosine similarity (else the dot product).
        reg_weight: :math:`\\lambda`, L2 on the batch's ID embeddings.
        negative_slope: the MLP's LeakyReLU slope.

    A small validation search covers the learning rate (1e-3, 3e-3),
    ``temperature`` (0.1, 0.15, 0.2), ``num_layers`` (1, 2, 3),
    ``id_embeddings`` (on, off), ``user_init`` (``"mean"``,
    ``"mean+preference"``) and ``item_graph`` (the refined graph, ``None``);
    the other fields rarely need changing.
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

    def __post_init__(self) -> None:
        self.item_graph = check_item_graph(self.item_graph)
        for key, allowed in (
            ("user_init", USER_INITS),
            ("item_graph_mode", ITEM_GRAPH_MODES),
            ("loss", LOSSES),
        ):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}")
        require_positive(self, "embedding_dim", "hidden_dim", "temperature")
        require_non_negative(self, "num_layers", "num_item_layers", "num_negatives")
        require_non_negative(self, "reg_weight", "id_init_std")
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

    name = "langgcn"
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
        self.register_buffer(
            "ui_adj_t", bipartite_adjacency(pairs, num_users, self.num_items), persistent=False
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
        smooth = item_adj is not None and cfg.item_graph_mode == "features"
        with torch.no_grad():
            item_in = self.item_conv(item_x, item_adj) if smooth else item_x
        register_with_transpose(
            self, "item_emb_adj", None if smooth else item_adj, "item_emb_adj_t"
        )
        self._train_index = CSRIndex(pairs, num_users)  # the full softmax's masks

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
        self.register_buffer(
            "item_lang", item_in.contiguous() if cfg.use_item_text else None, persistent=False
        )
        self.register_buffer("user_lang", user_in, persistent=False)

        self.mlp = None
        if cfg.use_item_text or user_in is not None:
            self.mlp = Tower(d_t, cfg.hidden_dim, cfg.embedding_dim, cfg.negative_slope)
        self.user_id = self.item_id = None
        if cfg.id_embeddings:
            self.user_id, self.item_id = self._id_tables(cfg.embedding_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.mlp is not None:
            self.mlp.lin1.reset_parameters()
            self.mlp.lin2.reset_parameters()
        for emb in (self.user_id, self.item_id):
            if emb is not None:
                nn.init.normal_(emb.weight, std=self.config.id_init_std)

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
        model = cls(num_users, data[ITEM].x, train, user_x, ei, ew, cfg)
        log.info("LangGCN: %d users, %d items; %s", num_users, num_items, model.extra_repr())
        return model.set_seen(train)

    # -- representations -------------------------------------------------------------
    def layer0(self) -> Tensor:
        """:math:`E^{(0)}`, users then items, ``[U + I, d]``."""
        parts = []
        for lang, ids in ((self.user_lang, self.user_id), (self.item_lang, self.item_id)):
            e = self.mlp(lang) if lang is not None else None
            if ids is not None:
                e = ids.weight if e is None else e + ids.weight
            parts.append(e)
        return torch.cat(parts)

    def representations(self) -> tuple[Tensor, Tensor]:
        """Final :math:`e_u` and :math:`e_i` for all users and items."""
        cfg = self.config
        e0 = self.layer0()
        out = layer_mean(self.ui_adj_t, e0, cfg.num_layers)  # symmetric
        users, items = out[: self.num_users], out[self.num_users :]
        if self.item_emb_adj is not None:
            g = e0[self.num_users :]
            items = items + power_matmul(
                self.item_emb_adj, g, cfg.num_item_layers, self.item_emb_adj_t
            )
        if cfg.cosine:
            users, items = F.normalize(users, dim=-1), F.normalize(items, dim=-1)
        return users, items

    # -- the trainer's interface -----------------------------------------------------
    def pair_scores(
        self, users: Tensor, pos_items: Tensor, neg_items: Tensor
    ) -> tuple[Tensor, Tensor]:
        """:math:`s(u, i)` and :math:`s(u, j)` (``neg_items`` may be ``[B]`` or ``[B, K]``)."""
        user_out, item_out = self.representations()
        u = user_out[users]
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
        user_out, item_out = self.representations()
        u = user_out[users] / self.config.temperature
        logits = u @ item_out.t()
        pos = (u * item_out[pos_items]).sum(-1)
        # every training item of the user, the positive among them, leaves the negatives
        neg = mask_scores_(logits, users.cpu(), [self._train_index])
        return (torch.logaddexp(torch.logsumexp(neg, dim=1), pos) - pos).mean()

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
        if self.config.reg_weight <= 0 or self.user_id is None:
            return None
        u, p, n = self.user_id(users), self.item_id(pos_items), self.item_id(neg_items)
        return l2_penalty(u, p, n, self.config.reg_weight)

    def scorer(self) -> ScoreFn:
        return dot_scorer(*self.representations())

    def extra_repr(self) -> str:
        c = self.config
        graph = "none" if c.item_graph is None else f"{c.item_graph[1]}({c.item_graph_mode})"
        return (
            f"{super().extra_repr()}, dim={c.embedding_dim}, layers={c.num_layers}, "
            f"users={c.user_init}, item_text={c.use_item_text}, ids={c.id_embeddings}, "
            f"item_graph={graph}, loss={c.loss}(tau={c.temperature}, K={c.num_negatives})"
        )


__all__ = ["LangGCN", "LangGCNConfig", "mean_item_vectors"]
