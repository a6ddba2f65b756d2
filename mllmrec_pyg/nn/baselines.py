"""Baselines that anchor every result: MostPop, BPR-MF and LightGCN.

All three train (or not) on the same :class:`~mllmrec_pyg.train.Trainer` and
evaluator as :class:`~mllmrec_pyg.nn.MLLMRec`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData
from torch_geometric.nn.models import LightGCN

from mllmrec_pyg.data.schema import INTERACTS, ITEM, USER, require_node_type, validate
from mllmrec_pyg.nn.base import RankingModel, ScoreFn, dot_pair_scores, dot_scorer
from mllmrec_pyg.nn.bipartite import bipartite_adjacency
from mllmrec_pyg.nn.mm_common import bpr_loss, require_positive
from mllmrec_pyg.nn.registry import BABY_R20, EMBEDDING, LR, REG, Flag, register_model
from mllmrec_pyg.nn.spmm import fixed_matmul


def _sizes(data: HeteroData) -> tuple[int, int, Tensor]:
    validate(data)
    return (
        require_node_type(data, USER),
        require_node_type(data, ITEM),
        data[INTERACTS].edge_index,
    )


@dataclass
class MostPopConfig:
    """MostPop has nothing to set; the dataclass keeps checkpoints uniform."""


@register_model("pop", label="MostPop")
class MostPop(RankingModel):
    """Ranks items by their number of training interactions, the same list for everyone.

    Args:
        popularity: ``[num_items]`` training-interaction counts.
        num_users: number of users.
    """

    config_class = MostPopConfig

    def __init__(self, popularity: Tensor, num_users: int) -> None:
        super().__init__(num_users, popularity.numel())
        self.register_buffer("popularity", popularity.float())
        self.config = MostPopConfig()

    @classmethod
    def from_data(cls, data: HeteroData, config: MostPopConfig | None = None) -> MostPop:
        num_users, num_items, edge_index = _sizes(data)
        pop = torch.bincount(edge_index[1], minlength=num_items)
        return cls(pop, num_users).set_seen(edge_index)

    def pair_scores(self, users: Tensor, pos_items: Tensor, neg_items: Tensor):
        return self.popularity[pos_items], self.popularity[neg_items]

    def scorer(self) -> ScoreFn:
        pop = self.popularity

        def score(users: Tensor) -> Tensor:
            return pop.unsqueeze(0).expand(users.numel(), -1)

        return score


@dataclass
class BPRConfig:
    """Matrix factorisation trained with BPR.

    Args:
        embedding_dim: size of user and item vectors.
        reg_weight: L2 weight on the batch's embeddings,
            ``reg_weight * (|e_u|^2 + |e_i|^2 + |e_j|^2) / (2 B)``.
    """

    embedding_dim: int = 64
    reg_weight: float = 1e-4

    def __post_init__(self) -> None:
        require_positive(self, "embedding_dim")


#: the ``--reg-weight`` flag of BPR-MF and LightGCN
L2 = Flag("reg_weight", "L2 weight")


@register_model(
    "bpr",
    label="BPR-MF",
    space={"train.lr": LR, "model.reg_weight": REG},
    flags={"embedding_dim": EMBEDDING, "reg_weight": L2},
    paper={BABY_R20: 0.0575},
)
class BPRMF(RankingModel):
    """BPR-MF (Rendle et al., 2009): :math:`\\hat y_{ui} = \\langle p_u, q_i \\rangle`.

    Args:
        num_users: number of users.
        num_items: number of items.
        config: :class:`BPRConfig`.
    """

    config_class = BPRConfig

    def __init__(self, num_users: int, num_items: int, config: BPRConfig | None = None) -> None:
        super().__init__(num_users, num_items)
        self.config = config or BPRConfig()
        self.user_emb, self.item_emb = self._id_tables(self.config.embedding_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.user_emb.weight)
        nn.init.xavier_uniform_(self.item_emb.weight)

    @classmethod
    def from_data(cls, data: HeteroData, config: BPRConfig | None = None) -> BPRMF:
        num_users, num_items, edge_index = _sizes(data)
        return cls(num_users, num_items, config).set_seen(edge_index)

    def pair_scores(self, users: Tensor, pos_items: Tensor, neg_items: Tensor):
        u = self.user_emb(users)
        return (u * self.item_emb(pos_items)).sum(-1), (u * self.item_emb(neg_items)).sum(-1)

    def batch_loss(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor:
        """BPR plus the L2 term of :class:`BPRConfig`, from one gather per table."""
        u = self.user_emb.weight.index_select(0, users)
        items = self.item_emb.weight.index_select(0, torch.cat([pos_items, neg_items]))
        return bpr_loss(u, *items.split(users.numel()), self.config.reg_weight)

    def scorer(self) -> ScoreFn:
        return dot_scorer(self.user_emb.weight, self.item_emb.weight)


@dataclass
class LightGCNConfig:
    """LightGCN on the user-item training graph.

    Args:
        embedding_dim: size of the ID embeddings.
        num_layers: propagation depth.
        reg_weight: L2 weight on the batch's layer-0 embeddings (as in BPR-MF).
    """

    embedding_dim: int = 64
    num_layers: int = 2
    reg_weight: float = 1e-4

    def __post_init__(self) -> None:
        require_positive(self, "embedding_dim")


@register_model(
    "lightgcn",
    label="LightGCN",
    space={"train.lr": LR, "model.reg_weight": REG, "model.num_layers": (1, 2, 3)},
    flags={
        "embedding_dim": EMBEDDING,
        "reg_weight": L2,
        "num_layers": Flag("num_layers", "user-item GCN depth"),
    },
    paper={BABY_R20: 0.0754},
)
class LightGCNRecommender(RankingModel):
    """LightGCN (He et al., 2020) through :class:`torch_geometric.nn.models.LightGCN`.

    The normalised adjacency is built once; PyG's model holds the ID
    embeddings and the layer weights :math:`\\alpha_l`, and the propagation
    :math:`\\sum_l \\alpha_l \\hat A^l E` is its ``get_embedding`` written with
    :func:`~mllmrec_pyg.nn.spmm.fixed_matmul`: :math:`\\hat A` is symmetric, so
    the backward pass multiplies by :math:`\\hat A` again instead of rebuilding
    its transpose at every step.

    Args:
        num_users: number of users.
        num_items: number of items.
        edge_index: training ``(user, item)`` pairs.
        config: :class:`LightGCNConfig`.
    """

    config_class = LightGCNConfig

    def __init__(
        self,
        num_users: int,
        num_items: int,
        edge_index: Tensor,
        config: LightGCNConfig | None = None,
    ) -> None:
        super().__init__(num_users, num_items)
        cfg = self.config = config or LightGCNConfig()
        self.lightgcn = LightGCN(
            num_users + num_items, cfg.embedding_dim, cfg.num_layers, normalize=False
        )
        self.register_buffer(
            "adj_t", bipartite_adjacency(edge_index, num_users, num_items), persistent=False
        )

    @classmethod
    def from_data(
        cls, data: HeteroData, config: LightGCNConfig | None = None
    ) -> LightGCNRecommender:
        num_users, num_items, edge_index = _sizes(data)
        return cls(num_users, num_items, edge_index, config).set_seen(edge_index)

    def propagate(self, x: Tensor) -> Tensor:
        """:math:`\\sum_l \\alpha_l \\hat A^l x` over all users and items."""
        alpha = self.lightgcn.alpha
        uniform = bool((alpha == alpha[0]).all())  # PyG's default 1 / (L + 1): scale once
        out = x if uniform else x * alpha[0]
        for i in range(self.lightgcn.num_layers):
            x = fixed_matmul(self.adj_t, x)  # adj_t is symmetric
            out = out + x if uniform else out + x * alpha[i + 1]
        return out * alpha[0] if uniform else out

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """Final user and item representations."""
        out = self.propagate(self.lightgcn.embedding.weight)
        return out[: self.num_users], out[self.num_users :]

    def pair_scores(self, users: Tensor, pos_items: Tensor, neg_items: Tensor):
        return dot_pair_scores(*self.embeddings(), users, pos_items, neg_items)

    def batch_loss(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor:
        """BPR on the propagated embeddings plus the L2 term of :class:`LightGCNConfig` on
        the layer-0 ones, each gathered once for the batch's users and items."""
        idx = torch.cat([users, pos_items + self.num_users, neg_items + self.num_users])
        ego = self.lightgcn.embedding.weight
        loss = bpr_loss(*self.propagate(ego).index_select(0, idx).split(users.numel()))
        if self.config.reg_weight > 0:
            sq = ego.index_select(0, idx).pow(2).sum()  # on the layer-0 embeddings
            loss = loss + self.config.reg_weight * sq / (2 * users.numel())
        return loss

    def scorer(self) -> ScoreFn:
        return dot_scorer(*self.embeddings())
