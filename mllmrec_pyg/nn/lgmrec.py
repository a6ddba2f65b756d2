"""LGMRec (Guo et al., AAAI 2024): local graph embeddings plus global hypergraph embeddings.

Notation: :math:`R \\in \\{0,1\\}^{U \\times I}` the training interactions,
:math:`\\hat A = D^{-1/2} A D^{-1/2}` the normalised user-item graph on
:math:`U + I` nodes (no self-loops), :math:`X^m` the frozen features of
modality :math:`m`.

**Local embeddings.** The collaborative graph embedding is LightGCN on ID
embeddings, :math:`E^{c} = \\frac{1}{L_c+1}\\sum_{l=0}^{L_c} \\hat A^l E^{(0)}`
(:math:`L_c = 2`). Each modality gets a modality graph embedding from its
projected features :math:`F^m_I = X^m W_m` (no bias) and the users' means
:math:`F^m_U = \\mathrm{diag}(R\\mathbf 1)^{-1} R F^m_I`, propagated and
taking the last layer, :math:`E^m = \\hat A^{L_m} [F^m_U; F^m_I]`
(:math:`L_m = 2`). The local embedding is
:math:`E^{l} = E^{c} + \\sum_m \\mathrm{norm}(E^m)` (row-wise L2 normalisation).

**Global embeddings.** Each modality has :math:`H` hyperedges: item
memberships :math:`\\Lambda^m_I = \\mathrm{GumbelSoftmax}_\\tau(X^m V_m)` and
user memberships :math:`\\Lambda^m_U = \\mathrm{GumbelSoftmax}_\\tau(R X^m V_m)`
(:math:`\\tau = 0.2`, softmax over the hyperedges), both passed through
dropout with keep rate :math:`\\rho`. With :math:`E^c_I` the items' rows of
:math:`E^c` and :math:`L_h` hypergraph layers
(:math:`G^{(0)}_I = E^c_I`, :math:`G^{(l)}_I = \\Lambda^m_I \\Lambda^{m\\top}_I
G^{(l-1)}_I`):

.. math::
    G^m_I = G^{(L_h)}_I, \\qquad
    G^m_U = \\Lambda^m_U \\Lambda^{m\\top}_I G^{(L_h-1)}_I, \\qquad
    E^{g} = \\sum_m [G^m_U; G^m_I].

**Score and loss.** :math:`E = E^{l} + \\alpha\\, \\mathrm{norm}(E^{g})`,
:math:`\\hat y_{ui} = e_u^\\top e_i`, and

.. math::
    \\mathcal L = \\mathcal L_{BPR}
    + \\lambda_c \\sum_{m < n} \\Big[\\sum_{u \\in B} \\ell(G^m_u, G^n_u; G^n_U)
    + \\sum_{i \\in B} \\ell(G^m_i, G^n_i; G^n_I)\\Big]
    + \\lambda_r \\frac{\\lVert P_u\\rVert_F + \\lVert Q_i\\rVert_F + \\lVert Q_j\\rVert_F}{B},

:math:`\\ell(z, p; C) = -\\log \\frac{\\exp(\\cos(z, p)/\\tau)}
{\\sum_{c \\in C} \\exp(\\cos(z, c)/\\tau)}` (the hypergraph contrastive loss
between modalities; all users or items are the negatives), :math:`B` the
batch's users and positive items.

At evaluation the memberships are the plain softmax :math:`\\mathrm{softmax}(X^m V_m / \\tau)`
(no Gumbel noise, no dropout), so scores are deterministic. LGMRec reads no
item-item graph, so it has no plug-and-play variant.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mllmrec_pyg.nn.losses import bpr_norm_penalty
from mllmrec_pyg.nn.mm_common import (
    MultimodalModel,
    check_modalities,
    info_nce,
    layer_mean,
    power_matmul,
    require_non_negative,
    require_positive,
    sparse_csr,
)
from mllmrec_pyg.nn.registry import BABY_R20, EMBEDDING, LR, register_model
from mllmrec_pyg.nn.spmm import fixed_matmul, register_with_transpose


@dataclass
class LGMRecConfig:
    """Hyper-parameters of :class:`LGMRec` (defaults of the authors' Baby configuration).

    Args:
        embedding_dim: :math:`d` of ID embeddings and modality projections.
        num_ui_layers: :math:`L_c`, LightGCN layers of the collaborative embedding (2).
        num_mm_layers: :math:`L_m`, propagation steps of the modality embeddings (2).
        num_hyper_layers: :math:`L_h`, hypergraph layers (1).
        hyper_num: :math:`H`, hyperedges per modality (4).
        keep_rate: :math:`\\rho`, dropout keep rate of the memberships (0.5).
        alpha: :math:`\\alpha`, weight of the global embedding (0.3).
        cl_weight: :math:`\\lambda_c`, weight of the hypergraph contrastive loss (1e-4).
        reg_weight: :math:`\\lambda_r`, weight of the (unsquared) norm penalty (1e-6).
        tau: :math:`\\tau`, Gumbel-softmax and contrastive temperature (0.2).
        modalities: attributes of ``data["item"]`` holding the (frozen) modality features.
    """

    embedding_dim: int = 64
    num_ui_layers: int = 2
    num_mm_layers: int = 2
    num_hyper_layers: int = 1
    hyper_num: int = 4
    keep_rate: float = 0.5
    alpha: float = 0.3
    cl_weight: float = 1e-4
    reg_weight: float = 1e-6
    tau: float = 0.2
    modalities: tuple[str, ...] = ("x",)

    def __post_init__(self) -> None:
        self.modalities, _ = check_modalities(self.modalities, None)
        require_positive(self, "embedding_dim", "hyper_num", "num_hyper_layers", "tau")
        require_non_negative(self, "num_ui_layers", "num_mm_layers", "cl_weight", "reg_weight")
        require_non_negative(self, "alpha")
        if not 0.0 < self.keep_rate <= 1.0:
            raise ValueError(f"keep_rate must be in (0, 1], got {self.keep_rate}")


@register_model(
    "lgmrec",
    label="LGMRec",
    space={
        "train.lr": LR,
        "model.hyper_num": (4, 64),
        "model.keep_rate": (0.2, 0.4, 0.5),
        "model.alpha": (0.2, 0.3, 0.6),
    },
    flags={"embedding_dim": EMBEDDING},
    paper={BABY_R20: 0.1002},
)
class LGMRec(MultimodalModel):
    """LGMRec on the package's trainer; see the module docstring for the equations.
    Constructor arguments as in :class:`~mllmrec_pyg.nn.mm_common.MultimodalModel`
    (no ``item_graph``; the features stay frozen)."""

    config_class = LGMRecConfig
    constructor_inputs = ("train", "features")

    def __init__(
        self,
        num_users: int,
        num_items: int,
        train_edge_index: Tensor,
        modality_features: Sequence[Tensor],
        config: LGMRecConfig | None = None,
    ) -> None:
        super().__init__(num_users, num_items)
        cfg = self.config = config or LGMRecConfig()
        d = cfg.embedding_dim
        pairs = torch.unique(train_edge_index.cpu(), dim=1)
        self._register_ui_adj("norm_adj", pairs)
        deg_u = torch.bincount(pairs[0], minlength=num_users).float()
        inv_deg = torch.where(deg_u > 0, 1.0 / deg_u.clamp_min(1), torch.zeros_like(deg_u))
        r = sparse_csr(pairs, torch.ones(pairs.size(1)), (num_users, num_items))
        register_with_transpose(self, "inter", r, "inter_transposed")
        self.register_buffer("inv_user_degree", inv_deg, persistent=False)
        for m, x in enumerate(modality_features):
            self.register_buffer(f"feat_{m}", x.detach().float(), persistent=False)
        self.num_modalities = len(modality_features)

        self.user_emb, self.item_emb = self._id_tables(d)
        self.projections = nn.ParameterList(
            nn.Parameter(torch.empty(x.size(1), d)) for x in modality_features
        )
        self.hyperedges = nn.ParameterList(
            nn.Parameter(torch.empty(x.size(1), cfg.hyper_num)) for x in modality_features
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in (self.user_emb.weight, self.item_emb.weight, *self.projections, *self.hyperedges):
            nn.init.xavier_uniform_(p)

    def features(self, m: int) -> Tensor:
        return getattr(self, f"feat_{m}")

    # -- the three embeddings -------------------------------------------------------------
    def collaborative(self) -> Tensor:
        """:math:`E^c`, LightGCN mean over layers ``0..L_c`` (``[U + I, d]``)."""
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight])
        return layer_mean(self.norm_adj, ego, self.config.num_ui_layers)

    def _feature_products(self, m: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Modality ``m``'s item projections :math:`F^m_I = X^m W^m` and hyperedge logits
        :math:`X^m V^m`, and their sums over each user's items: one dense product with
        ``[W | V]`` and one sparse product for both (a product with the ``hyper_num``
        columns alone runs the matrix kernels at a fraction of their speed)."""
        d = self.projections[m].size(1)
        both = self.features(m) @ torch.cat([self.projections[m], self.hyperedges[m]], 1)
        summed = fixed_matmul(self.inter, both, self.inter_transposed)
        return both[:, :d], summed[:, :d], both[:, d:], summed[:, d:]

    def modality_embedding(self, m: int, products: tuple[Tensor, ...] | None = None) -> Tensor:
        """:math:`E^m = \\hat A^{L_m} [F^m_U; F^m_I]` (``[U + I, d]``), from
        :meth:`_feature_products` (computed here if not given)."""
        items, users, _, _ = products or self._feature_products(m)
        h = torch.cat([users * self.inv_user_degree.unsqueeze(1), items])
        return power_matmul(self.norm_adj, h, self.config.num_mm_layers)  # symmetric

    def memberships(
        self, m: int, products: tuple[Tensor, ...] | None = None
    ) -> tuple[Tensor, Tensor]:
        """:math:`(\\Lambda^m_U, \\Lambda^m_I)`: Gumbel-softmax + dropout when training,
        softmax at :math:`\\tau` otherwise."""
        cfg = self.config
        _, _, logits_i, logits_u = products or self._feature_products(m)
        if self.training:
            lam_i = F.gumbel_softmax(logits_i, tau=cfg.tau, hard=False, dim=1)
            lam_u = F.gumbel_softmax(logits_u, tau=cfg.tau, hard=False, dim=1)
            p = 1.0 - cfg.keep_rate
            return F.dropout(lam_u, p, True), F.dropout(lam_i, p, True)
        return torch.softmax(logits_u / cfg.tau, 1), torch.softmax(logits_i / cfg.tau, 1)

    def hypergraph(
        self, items: Tensor, m: int, products: tuple[Tensor, ...] | None = None
    ) -> tuple[Tensor, Tensor]:
        """:math:`(G^m_U, G^m_I)` from the collaborative item embeddings ``items``."""
        lam_u, lam_i = self.memberships(m, products)
        g = items
        for _ in range(self.config.num_hyper_layers):
            lat = lam_i.t() @ g
            g = lam_i @ lat
            g_u = lam_u @ lat
        return g_u, g

    def forward_all(self) -> tuple[Tensor, Tensor, list[tuple[Tensor, Tensor]]]:
        """Users ``[U, d]``, items ``[I, d]`` and each modality's hypergraph ``(G_U, G_I)``."""
        nu = self.num_users
        cge = self.collaborative()
        products = [self._feature_products(m) for m in range(self.num_modalities)]
        local = cge + sum(
            F.normalize(self.modality_embedding(m, p), dim=1) for m, p in enumerate(products)
        )
        hyper = [self.hypergraph(cge[nu:], m, p) for m, p in enumerate(products)]
        ghe = sum(torch.cat([g_u, g_i]) for g_u, g_i in hyper)
        out = local + self.config.alpha * F.normalize(ghe, dim=1)
        return out[:nu], out[nu:], hyper

    def representations(self) -> tuple[Tensor, Tensor]:
        """Final user and item representations."""
        users, items, _ = self.forward_all()
        return users, items

    # -- the trainer's interface ----------------------------------------------------------
    def contrastive_loss(
        self, hyper: list[tuple[Tensor, Tensor]], users: Tensor, pos_items: Tensor
    ) -> Tensor:
        """The hypergraph contrastive loss between every pair of modalities (0 with one)."""
        tau = self.config.tau
        total = hyper[0][0].new_zeros(())
        for (ua, ia), (ub, ib) in itertools.combinations(hyper, 2):
            total = total + info_nce(ua, ub, tau, candidates=ub, reduce="sum", index=users)
            total = total + info_nce(ia, ib, tau, candidates=ib, reduce="sum", index=pos_items)
        return total

    def batch_loss(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor:
        cfg = self.config
        u_all, i_all, hyper = self.forward_all()
        u = u_all.index_select(0, users)
        p, n = i_all.index_select(0, pos_items), i_all.index_select(0, neg_items)
        # BPR and the norm penalty in one fused function (nn/losses.py)
        loss = bpr_norm_penalty(u, p, n, cfg.reg_weight)
        if cfg.cl_weight > 0 and len(hyper) > 1:
            loss = loss + cfg.cl_weight * self.contrastive_loss(hyper, users, pos_items)
        return loss

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"{super().extra_repr()}, ui_layers={c.num_ui_layers}, mm_layers={c.num_mm_layers}, "
            f"hyper_num={c.hyper_num}, alpha={c.alpha}, modalities={c.modalities}"
        )


__all__ = ["LGMRec", "LGMRecConfig"]
