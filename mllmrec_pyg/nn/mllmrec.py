"""MLLMRec: two MLP towers over preference features and graph-smoothed item features."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from mllmrec_pyg._sparse import quiet_sparse
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
from mllmrec_pyg.nn.base import RankingModel, ScoreFn, dot_pair_scores, dot_scorer
from mllmrec_pyg.nn.bipartite import bipartite_adjacency
from mllmrec_pyg.nn.item_lightgcn import ItemLightGCN, item_graph_norm, to_adj_t
from mllmrec_pyg.nn.mm_common import layer_sum, require_positive
from mllmrec_pyg.nn.registry import EMBEDDING, LR, REFINED, Flag, Switch, register_model
from mllmrec_pyg.nn.spmm import register_with_transpose
from mllmrec_pyg.nn.tower import Tower


@dataclass
class MLLMRecConfig:
    """Hyper-parameters and the paper's ablation switches.

    Args:
        hidden_dim: :math:`d_1`, the towers' hidden width (256 in the paper).
        embedding_dim: :math:`d`, the output width (64).
        num_item_layers: :math:`L`, item-item propagation depth (1).
        negative_slope: slope of the towers' LeakyReLU.
        use_user_features: ``False`` is the *w/o RS* variant: users get
            trainable randomly initialised ID embeddings instead of preference
            features.
        user_id_dim: width of those ID embeddings; ``None`` means the item
            feature width, so the user tower keeps its shape.
        item_conv: ``False`` is the *w/o GCN_II* variant: towers on the raw
            item features.
        trainable_items: make the item inputs trainable embeddings initialised
            from the features (the item graph convolution then runs every
            batch); by default they are frozen and :math:`E^*` is computed once.
        ui_layers: ``> 0`` is the *w/ GCN_UI* variant: a LightGCN with this many
            layers over the user-item training graph, on L2-normalised tower
            outputs, summed over layers ``0..ui_layers`` and added to the tower
            outputs (the paper uses 2).
    """

    hidden_dim: int = 256
    embedding_dim: int = 64
    num_item_layers: int = 1
    negative_slope: float = 0.01
    use_user_features: bool = True
    user_id_dim: int | None = None
    item_conv: bool = True
    trainable_items: bool = False
    ui_layers: int = 0

    def __post_init__(self) -> None:
        require_positive(self, "hidden_dim", "embedding_dim")
        if self.user_id_dim is not None:
            require_positive(self, "user_id_dim")


@register_model(
    "mllmrec",
    label="MLLMRec",
    space={"train.lr": LR, **REFINED, "model.embedding_dim": (32, 64, 128)},
    flags={
        "hidden_dim": Flag("hidden_dim", "hidden width d_1"),
        "embedding_dim": EMBEDDING,
        "item_layers": Flag("num_item_layers", "item-item GCN depth L"),
        "ui_layers": Flag("ui_layers", "w/ GCN_UI depth"),
    },
    switches={
        "no_item_conv": Switch("item_conv", False, "w/o GCN_II"),
        "no_user_features": Switch("use_user_features", False, "w/o RS: user ID embeddings"),
    },
)
class MLLMRec(RankingModel):
    """MLLMRec (Eq. 11-15): :math:`\\hat y_{ui} = \\langle f_u(e_u), f_i(e^*_i) \\rangle`.

    :math:`e_u` is the user's preference feature (``data["user"].x``),
    :math:`e^*_i = \\sum_{l=0}^{L} (D^{-1/2} S^* D^{-1/2})^l e_i` the item LightGCN
    output over the refined graph ``data["item", "related", "item"]``, and
    :math:`f_u, f_i` the two towers of Eq. 14.

    Since the item features are frozen, :math:`E^*` is a constant of the data and
    is computed once at construction; a training step runs only the batch's
    rows through the towers. With ``trainable_items=True`` the item inputs are
    parameters and the convolution runs inside the step (the way other models
    reuse :class:`~mllmrec_pyg.nn.ItemLightGCN`).

    Args:
        num_users: number of users.
        item_x: item features ``[I, d_t]``.
        item_edge_index: edges of :math:`S^*` (``[1]`` = owner); ignored without
            ``item_conv``.
        item_edge_weight: their weights (``None`` = 1).
        user_x: user preference features ``[U, d_u]``; required unless
            ``use_user_features=False``.
        train_edge_index: training pairs; required for ``ui_layers > 0``.
        config: :class:`MLLMRecConfig`.
    """

    config_class = MLLMRecConfig

    @classmethod
    def requires(cls, config: MLLMRecConfig) -> frozenset[str]:
        return frozenset(
            {"items"}
            | ({"users"} if config.use_user_features else set())
            | ({"graph"} if config.item_conv else set())
        )

    def __init__(
        self,
        num_users: int,
        item_x: Tensor,
        item_edge_index: Tensor | None = None,
        item_edge_weight: Tensor | None = None,
        user_x: Tensor | None = None,
        train_edge_index: Tensor | None = None,
        config: MLLMRecConfig | None = None,
    ) -> None:
        super().__init__(num_users, item_x.size(0))
        cfg = self.config = config or MLLMRecConfig()
        item_x = check_features(item_x, "item features").float()
        d_item = item_x.size(1)

        # Item side: E* (frozen, computed once) or trainable inputs + the layer.
        self.item_conv = ItemLightGCN(cfg.num_item_layers, normalize=False)
        adj_t = None
        if cfg.item_conv:
            if item_edge_index is None:
                raise SchemaError("item_conv=True needs the item graph (item_edge_index)")
            with quiet_sparse():
                adj = to_adj_t(item_edge_index, item_edge_weight, self.num_items)
                adj_t, _ = item_graph_norm(adj)
        e_star = None
        if cfg.trainable_items:
            self.item_input = nn.Parameter(item_x.clone())
        else:
            self.item_input = None
            with torch.no_grad():
                e_star = self.item_conv(item_x, adj_t) if adj_t is not None else item_x
            e_star, adj_t = e_star.contiguous(), None
        register_with_transpose(self, "item_adj_t", adj_t, "item_adj_transposed")
        self.register_buffer("item_repr", e_star, persistent=False)

        # User side: preference features or ID embeddings (w/o RS).
        if cfg.use_user_features:
            if user_x is None:
                raise SchemaError(
                    "MLLMRec needs user preference features (data['user'].x); "
                    "set use_user_features=False for the ID-embedding variant"
                )
            user_x = check_features(user_x, "user features").float()
            if user_x.size(0) != num_users:
                raise SchemaError(f"user features have {user_x.size(0)} rows for {num_users} users")
            self.register_buffer("user_x", user_x, persistent=False)
            self.user_emb = None
            d_user = user_x.size(1)
        else:
            d_user = cfg.user_id_dim or d_item
            self.register_buffer("user_x", None, persistent=False)
            self.user_emb = nn.Embedding(num_users, d_user)
            nn.init.xavier_uniform_(self.user_emb.weight)

        self.user_tower = Tower(d_user, cfg.hidden_dim, cfg.embedding_dim, cfg.negative_slope)
        self.item_tower = Tower(d_item, cfg.hidden_dim, cfg.embedding_dim, cfg.negative_slope)

        ui = None
        if cfg.ui_layers > 0:
            if train_edge_index is None:
                raise SchemaError("ui_layers > 0 needs the training pairs (train_edge_index)")
            ui = bipartite_adjacency(train_edge_index, num_users, self.num_items)
        self.register_buffer("ui_adj_t", ui, persistent=False)

    @classmethod
    def from_data(cls, data: HeteroData, config: MLLMRecConfig | None = None) -> MLLMRec:
        """Build from the HeteroData contract.

        Needs ``data["item"].x``, ``data["user"].x`` (unless
        ``use_user_features=False``) and ``data["item", "related", "item"]``
        (unless ``item_conv=False``).
        """
        cfg = config or MLLMRecConfig()
        require = ["item.x"]
        if cfg.use_user_features:
            require.append("user.x")
        if cfg.item_conv:
            require.append("related")
        validate(data, require=require)
        num_users = require_node_type(data, USER)
        require_node_type(data, ITEM)
        train = data[INTERACTS].edge_index
        ei = ew = None
        if cfg.item_conv:
            ei, ew = data[RELATED].edge_index, data[RELATED].get("edge_weight")
        user_x = data[USER].get("x") if cfg.use_user_features else None
        return cls(num_users, data[ITEM].x, ei, ew, user_x, train, cfg).set_seen(train)

    # -- representations -------------------------------------------------------------
    def item_inputs(self) -> Tensor:
        """:math:`E^*` for all items (recomputed only when the inputs are trainable)."""
        if self.item_input is None:
            return self.item_repr
        if self.item_adj_t is None:
            return self.item_input
        # self.item_conv(self.item_input, self.item_adj_t), with a backward pass
        # through the transpose built once
        layers = self.item_conv.num_layers
        return layer_sum(self.item_adj_t, self.item_input, layers, self.item_adj_transposed)

    def user_inputs(self, users: Tensor | None = None) -> Tensor:
        """:math:`e_u` for ``users`` (all users if ``None``)."""
        if self.user_emb is not None:
            return self.user_emb.weight if users is None else self.user_emb(users)
        return self.user_x if users is None else self.user_x.index_select(0, users)

    def representations(self) -> tuple[Tensor, Tensor]:
        """Final :math:`h_u` and :math:`h_i` for all users and items."""
        h_u = self.user_tower(self.user_inputs())
        h_i = self.item_tower(self.item_inputs())
        if self.ui_adj_t is not None:
            h = torch.cat([h_u, h_i])
            h = h + layer_sum(self.ui_adj_t, F.normalize(h, dim=-1), self.config.ui_layers)
            h_u, h_i = h[: self.num_users], h[self.num_users :]
        return h_u, h_i

    # -- the trainer's interface -----------------------------------------------------
    def pair_scores(
        self, users: Tensor, pos_items: Tensor, neg_items: Tensor
    ) -> tuple[Tensor, Tensor]:
        """BPR scores of a batch, running only the batch's rows through the towers."""
        if self.ui_adj_t is not None:  # the user-item GCN needs every row
            return dot_pair_scores(*self.representations(), users, pos_items, neg_items)
        # Each distinct row goes through its tower once.
        # (index_select, not indexing: its backward is one index_add)
        uniq_u, inv_u = torch.unique(users, return_inverse=True)
        u = self.user_tower(self.user_inputs(uniq_u)).index_select(0, inv_u)
        uniq_i, inv_i = torch.unique(torch.cat([pos_items, neg_items]), return_inverse=True)
        items = self.item_tower(self.item_inputs().index_select(0, uniq_i)).index_select(0, inv_i)
        pos, neg = items.split(pos_items.numel())
        return (u * pos).sum(-1), (u * neg).sum(-1)

    def scorer(self) -> ScoreFn:
        if self.ui_adj_t is not None:
            return dot_scorer(*self.representations())
        h_i = self.item_tower(self.item_inputs())

        def score(users: Tensor) -> Tensor:
            return self.user_tower(self.user_inputs(users)) @ h_i.t()

        return score

    def extra_repr(self) -> str:
        c = self.config
        variants = []
        if not c.use_user_features:
            variants.append("w/o RS")
        if not c.item_conv:
            variants.append("w/o GCN_II")
        if c.ui_layers:
            variants.append(f"w/ GCN_UI({c.ui_layers})")
        if c.trainable_items:
            variants.append("trainable items")
        extra = f", variants=[{', '.join(variants)}]" if variants else ""
        return f"{super().extra_repr()}, item_layers={c.num_item_layers}{extra}"
