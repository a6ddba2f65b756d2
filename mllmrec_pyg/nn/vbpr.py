"""VBPR (He & McAuley, AAAI 2016): matrix factorisation with a content factor per item.

Every item has an ID factor :math:`\\gamma_i \\in \\mathbb R^d` and a content
factor :math:`E f_i + c`, a linear projection of its (frozen) modality
features :math:`f_i = [x^{(1)}_i \\,\\|\\, x^{(2)}_i \\,\\|\\, \\dots]` (every
configured modality, concatenated). Every user has two factors,
:math:`\\gamma_u` for the IDs and :math:`\\theta_u` for the content, so that

.. math::
    \\hat y_{ui} = \\gamma_u^\\top \\gamma_i + \\theta_u^\\top (E f_i + c)
    \\;[+\\; \\beta_i + \\beta'^\\top f_i]
    = [\\gamma_u \\| \\theta_u]^\\top [\\gamma_i \\| E f_i + c]\\;[+\\dots].

The bracketed item bias and visual bias of the paper (``bias=True``) are
off by default, as in the MMRec framework's version of the model (global and
user biases cancel in the pairwise loss and are never modelled). The loss is
BPR with the framework's embedding penalty on the batch's final vectors,

.. math::
    \\mathcal L = -\\frac1B \\sum \\log \\sigma(\\hat y_{ui} - \\hat y_{uj})
    + \\lambda \\frac{\\lVert P_u \\rVert_F + \\lVert Q_i \\rVert_F + \\lVert Q_j \\rVert_F}{B},

where :math:`P_u, Q_i, Q_j` stack the batch's user, positive and negative
vectors and :math:`\\lVert\\cdot\\rVert_F` is the (unsquared) Frobenius norm.
VBPR uses no graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mllmrec_pyg.nn.base import ScoreFn
from mllmrec_pyg.nn.losses import content_bpr
from mllmrec_pyg.nn.mm_common import (
    MultimodalModel,
    check_modalities,
    project_rows,
    require_non_negative,
    require_positive,
)
from mllmrec_pyg.nn.registry import BABY_R20, EMBEDDING, LR, register_model


@dataclass
class VBPRConfig:
    """Hyper-parameters of :class:`VBPR` (defaults of the MMRec framework's VBPR).

    Args:
        embedding_dim: :math:`d`, width of the ID factor and of the content
            factor (the user vector has :math:`2d` entries).
        modalities: attributes of ``data["item"]`` concatenated into
            :math:`f_i` (text ``x``, and e.g. ``image`` where a folder has one).
        reg_weight: :math:`\\lambda` of the embedding penalty (the framework
            searches 2, 1, 0.1, 0.01, 1e-3, 1e-4, 1e-5; 1e-3 here).
        bias: add the paper's item bias :math:`\\beta_i` and visual bias
            :math:`\\beta'^\\top f_i` (off in the framework's version).
    """

    embedding_dim: int = 64
    modalities: tuple[str, ...] = ("x",)
    reg_weight: float = 1e-3
    bias: bool = False

    def __post_init__(self) -> None:
        self.modalities, _ = check_modalities(self.modalities, None)
        require_positive(self, "embedding_dim")
        require_non_negative(self, "reg_weight")


@register_model(
    "vbpr",
    label="VBPR",
    space={"train.lr": LR, "model.reg_weight": (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)},
    flags={"embedding_dim": EMBEDDING},
    paper={BABY_R20: 0.0663},
)
class VBPR(MultimodalModel):
    """VBPR on the package's trainer; see the module docstring for the equations.
    Constructor arguments as in :class:`~mllmrec_pyg.nn.mm_common.MultimodalModel`
    (no ``train_edge_index`` or ``item_graph``; the frozen features are concatenated
    into :math:`f_i`)."""

    config_class = VBPRConfig
    constructor_inputs = ("features",)

    def __init__(
        self,
        num_users: int,
        num_items: int,
        modality_features: Sequence[Tensor],
        config: VBPRConfig | None = None,
    ) -> None:
        super().__init__(num_users, num_items)
        cfg = self.config = config or VBPRConfig()
        d = cfg.embedding_dim
        feats = torch.cat([x.detach().float() for x in modality_features], dim=1)
        self.register_buffer("features", feats, persistent=False)
        self.user_emb = nn.Parameter(torch.empty(num_users, 2 * d))
        self.item_emb = nn.Parameter(torch.empty(num_items, d))
        self.projection = nn.Linear(feats.size(1), d)
        if cfg.bias:
            self.item_bias = nn.Parameter(torch.zeros(num_items))
            self.feature_bias = nn.Linear(feats.size(1), 1, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """ID factors Xavier-uniform, projection Xavier-normal with zero bias (as the framework)."""
        nn.init.xavier_uniform_(self.user_emb)
        nn.init.xavier_uniform_(self.item_emb)
        nn.init.xavier_normal_(self.projection.weight)
        nn.init.zeros_(self.projection.bias)
        if self.config.bias:
            nn.init.zeros_(self.item_bias)
            nn.init.zeros_(self.feature_bias.weight)

    def _summary(self) -> str:
        return f"{self.features.size(1)} feature dims"

    # -- representations ------------------------------------------------------------------
    def item_vectors(self, items: Tensor | None = None) -> Tensor:
        """:math:`[\\gamma_i \\| E f_i + c]` of ``items`` (all items when ``None``)."""
        if items is None:
            return torch.cat([self.item_emb, self.projection(self.features)], dim=-1)
        ids = self.item_emb.index_select(0, items)
        return torch.cat([ids, project_rows(self.projection, self.features, items)], dim=-1)

    def item_offsets(self, items: Tensor | None = None) -> Tensor | None:
        """:math:`\\beta_i + \\beta'^\\top f_i` (``None`` without ``bias``)."""
        if not self.config.bias:
            return None
        f = self.features if items is None else self.features[items]
        b = self.item_bias if items is None else self.item_bias[items]
        return b + self.feature_bias(f).squeeze(-1)

    def _pair_scores(
        self, users: Tensor, pos_items: Tensor, neg_items: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Both scores, and the user and item vectors behind them; the positive and
        negative items' vectors are built in one pass (:meth:`item_vectors`)."""
        u = self.user_emb.index_select(0, users)
        items = torch.cat([pos_items, neg_items])
        qp, qn = self.item_vectors(items).split(users.numel())
        pos, neg = (u * qp).sum(-1), (u * qn).sum(-1)
        off = self.item_offsets(items)
        if off is not None:
            off_p, off_n = off.split(users.numel())
            pos, neg = pos + off_p, neg + off_n
        return pos, neg, u, qp, qn

    def pair_scores(
        self, users: Tensor, pos_items: Tensor, neg_items: Tensor
    ) -> tuple[Tensor, Tensor]:
        return self._pair_scores(users, pos_items, neg_items)[:2]

    def batch_loss(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor:
        """BPR plus :math:`\\lambda (\\lVert P_u\\rVert_F + \\lVert Q_i\\rVert_F + \\lVert Q_j\\rVert_F)/B`."""
        if not self.config.bias:  # the whole objective in one fused function
            return content_bpr(
                self.user_emb,
                self.item_emb,
                self.projection.weight,
                self.projection.bias,
                self.features,
                users,
                torch.cat([pos_items, neg_items]),
                self.config.reg_weight,
            )
        pos, neg, u, qp, qn = self._pair_scores(users, pos_items, neg_items)
        loss = -F.logsigmoid(pos - neg).mean()
        if self.config.reg_weight > 0:
            norms = u.norm() + qp.norm() + qn.norm()
            loss = loss + self.config.reg_weight * norms / users.numel()
        return loss

    def scorer(self) -> ScoreFn:
        items = self.item_vectors()
        off = self.item_offsets()

        def score(users: Tensor) -> Tensor:
            s = self.user_emb[users] @ items.t()
            return s if off is None else s + off

        return score

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"{super().extra_repr()}, features={self.features.size(1)}, "
            f"modalities={c.modalities}, reg_weight={c.reg_weight}, bias={c.bias}"
        )


__all__ = ["VBPR", "VBPRConfig"]
