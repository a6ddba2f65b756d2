"""SMORE (Ong & Khong, WSDM 2025): spectral modality fusion with item-item graphs.

Notation: :math:`E_I, E_U` ID embeddings, :math:`X^m` the features of
modality :math:`m` (fine-tuned, as in the reference), :math:`\\hat A` the
normalised user-item graph, :math:`\\hat R = D_U^{-1/2} R D_I^{-1/2}` its
user-item block, :math:`\\mathcal F` the orthonormal real FFT along the
embedding dimension.

**Spectral modality fusion.** With :math:`P^m = X^m W_m + b_m` and learned
complex filters :math:`K_m, K_f \\in \\mathbb C^{d/2+1}`:

.. math::
    C^m = \\mathcal F^{-1}\\big(\\mathcal F(P^m) \\odot K_m\\big), \\qquad
    C^f = \\mathcal F^{-1}\\Big(\\prod_m \\mathcal F(P^m) \\odot K_f\\Big),

(uni-modal denoising and cross-modal fusion), which gate the item IDs:
:math:`H^v_I = E_I \\odot \\sigma(G_v C^v + g_v)` for every
:math:`v \\in \\{m\\} \\cup \\{f\\}`.

**Item-item views.** Each modality has a weighted cosine top-:math:`k` graph
of its raw features (the item among its own :math:`k`, weight = cosine),
:math:`\\hat S^m = D_m^{-1/2} S^m D_m^{-1/2}`, and the fusion view the
element-wise maximum :math:`\\hat S^f = \\max_m \\hat S^m` (over the union of
edges). Each view propagates its gated items and reads users off the
user-item graph: :math:`H^v_I \\leftarrow (\\hat S^v)^{L} H^v_I`,
:math:`H^v = [\\hat R H^v_I; H^v_I]` (:math:`L = 1`).

**Behaviour view.** LightGCN on the training graph,
:math:`E^c = \\frac{1}{L_c+1} \\sum_{l=0}^{L_c} \\hat A^l [E_U; E_I]`.

**Modality-aware preferences.**
:math:`\\tilde H^m = \\mathrm{softmax}(Q_m(H^f)) \\odot H^m` with
:math:`Q_m(z) = W''_m \\tanh(W'_m z + q_m)` (softmax over the embedding
dimension), behaviour gates :math:`\\pi_v = \\mathrm{dropout}(\\sigma(G'_v E^c + g'_v))`, and

.. math::
    E^s = \\mathrm{mean}\\big(\\{\\pi_m \\odot \\tilde H^m\\}_m \\cup \\{\\pi_f \\odot H^f\\}\\big),
    \\qquad E = E^c + E^s, \\qquad \\hat y_{ui} = e_u^\\top e_i.

**Loss.** BPR + :math:`\\beta \\frac{1}{2B}(\\lVert P_u\\rVert^2 + \\lVert
Q_i\\rVert^2 + \\lVert Q_j\\rVert^2)` on the final vectors +
:math:`\\lambda_c [\\mathrm{InfoNCE}(E^s_{I,B}, E^c_{I,B}) +
\\mathrm{InfoNCE}(E^s_{U,B}, E^c_{U,B})]` over the batch's positive items and
users (in-batch negatives, temperature 0.2).

**Plug-and-play.** ``item_graph=("item", "related", "item")`` replaces every
item-item graph of the model (each modality view and the fusion view) by the
symmetrically normalised graph of that edge type; the spectral fusion and
everything else stay.
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
    feature_parameters,
    graph_label,
    info_nce,
    knn_graphs,
    layer_mean,
    power_matmul,
    register_item_graphs,
    require_non_negative,
    require_positive,
    reset_linear_layers,
    sparse_csr,
    sym_norm_graph,
)
from mllmrec_pyg.nn.registry import BABY_R20, EMBEDDING, LR, REFINED, RQ3_HOST, register_model
from mllmrec_pyg.nn.spmm import fixed_matmul, register_with_transpose


@dataclass
class SMOREConfig:
    """Hyper-parameters of :class:`SMORE` (defaults from the authors' configuration).

    Args:
        embedding_dim: :math:`d`.
        num_ui_layers: :math:`L_c`, LightGCN layers of the behaviour view
            (the authors search 3 and 4).
        num_item_layers: :math:`L`, propagation steps on the item-item graphs (1).
        knn_k: neighbours per item in each modality graph (the authors search
            10, 15, 20, 40 per modality; one value for all modalities here).
        reg_weight: :math:`\\beta` of the embedding penalty (searched in 1e-5, 1e-4).
        cl_weight: :math:`\\lambda_c` of the contrastive term (the authors fix 0.01; the
            tuning here also tries 0.001, see :data:`SMORE_SPACE`).
        temperature: InfoNCE temperature (0.2).
        dropout: dropout on the behaviour gates (searched in 0, 0.1).
        modalities: attributes of ``data["item"]`` holding the modality features.
        item_graph: read every item-item graph from this edge type (plug-and-play);
            ``None`` builds SMORE's own graphs.
        train_features: fine-tune the raw features (as the reference); the
            item-item graphs stay frozen either way.
    """

    embedding_dim: int = 64
    num_ui_layers: int = 3
    num_item_layers: int = 1
    knn_k: int = 10
    reg_weight: float = 1e-4
    cl_weight: float = 0.01
    temperature: float = 0.2
    dropout: float = 0.0
    modalities: tuple[str, ...] = ("x",)
    item_graph: tuple[str, str, str] | None = None
    train_features: bool = True

    def __post_init__(self) -> None:
        self.modalities, self.item_graph = check_modalities(self.modalities, self.item_graph)
        require_positive(self, "embedding_dim", "knn_k", "temperature")
        require_non_negative(self, "num_ui_layers", "num_item_layers", "reg_weight", "cl_weight")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def max_fusion(graphs: Sequence[tuple[Tensor, Tensor]], num_nodes: int) -> tuple[Tensor, Tensor]:
    """Element-wise maximum of weighted graphs over the union of their edges."""
    ei = torch.cat([g[0] for g in graphs], 1)
    ew = torch.cat([g[1] for g in graphs])
    key = ei[1] * num_nodes + ei[0]
    uniq, inv = torch.unique(key, return_inverse=True)
    out = torch.full((uniq.numel(),), float("-inf"), dtype=ew.dtype, device=ew.device)
    out = out.scatter_reduce(0, inv, ew, reduce="amax")
    return torch.stack([uniq % num_nodes, uniq // num_nodes]), out


def _gate(d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, d), nn.Sigmoid())


#: SMORE: its authors' grid, plus the contrastive weight (they fix 0.01). On MovieLens,
#: whose users have ~120 training items, the users' side vectors are ~60x shorter than
#: their behaviour vectors, the cosine InfoNCE's gradient swamps BPR's at 0.01 and
#: valid R@20 falls from the first epoch on; a tenth of it trains
SMORE_SPACE = {
    "train.lr": LR,
    "model.reg_weight": (1e-5, 1e-4),
    "model.dropout": (0.0, 0.1),
    "model.num_ui_layers": (3, 4),
    "model.cl_weight": (0.01, 0.001),
}


@register_model(
    "smore",
    label="SMORE",
    space={**SMORE_SPACE, "model.knn_k": (10, 15, 20, 40)},
    candidates={"smore-refined": ({"item_graph": RELATED}, {**SMORE_SPACE, **REFINED})},
    flags={"embedding_dim": EMBEDDING},
    host=True,
    paper={BABY_R20: 0.1035, RQ3_HOST: 4},
)
class SMORE(MultimodalModel):
    """SMORE on the package's trainer; see the module docstring for the equations.
    Constructor arguments as in :class:`~mllmrec_pyg.nn.mm_common.MultimodalModel`."""

    config_class = SMOREConfig

    def __init__(
        self,
        num_users: int,
        num_items: int,
        train_edge_index: Tensor,
        modality_features: Sequence[Tensor],
        item_graph: tuple[Tensor, Tensor] | None = None,
        config: SMOREConfig | None = None,
    ) -> None:
        super().__init__(num_users, num_items)
        cfg = self.config = config or SMOREConfig()
        check_feature_count(modality_features, cfg.modalities)
        d = cfg.embedding_dim
        n_mod = self.num_modalities = len(modality_features)
        ei, ew = self._register_ui_adj("ui_adj", train_edge_index.cpu())
        block = ei[0] < num_users  # user -> item edges give R_hat[u, i]
        r_idx = torch.stack([ei[0, block], ei[1, block] - num_users])
        r_hat = sparse_csr(r_idx, ew[block], (num_users, num_items))
        register_with_transpose(self, "r_hat", r_hat, "r_hat_t")

        # item-item graphs: one per modality + the fusion graph (or the given graph for all)
        if item_graph is None:
            views = knn_graphs(modality_features, cfg.knn_k, num_items)
            views.append(max_fusion(views, num_items))
        else:
            views = [sym_norm_graph(*item_graph, num_items)] * (n_mod + 1)
        self.own_graph = item_graph is None
        register_item_graphs(self, views, num_items)

        self.user_emb, self.item_emb = self._id_tables(d)
        self.features = feature_parameters(modality_features, cfg.train_features)
        self.projections = nn.ModuleList(nn.Linear(x.size(1), d) for x in modality_features)
        self.filters = nn.Parameter(torch.empty(n_mod, d // 2 + 1, 2))
        self.fusion_filter = nn.Parameter(torch.empty(d // 2 + 1, 2))
        self.item_gates = nn.ModuleList(_gate(d) for _ in range(n_mod + 1))
        self.queries = nn.ModuleList(
            nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, d, bias=False))
            for _ in range(n_mod)
        )
        self.prefer_gates = nn.ModuleList(_gate(d) for _ in range(n_mod + 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """ID embeddings Xavier-uniform, spectral filters standard normal, linear layers
        PyTorch's default (as the reference)."""
        nn.init.xavier_uniform_(self.user_emb.weight)
        nn.init.xavier_uniform_(self.item_emb.weight)
        nn.init.normal_(self.filters)
        nn.init.normal_(self.fusion_filter)
        reset_linear_layers(self.projections, self.item_gates, self.queries, self.prefer_gates)

    def _summary(self) -> str:
        fusion = " + max fusion" if self.config.item_graph is None else ""
        return f"item graphs {graph_label(self.config)}{fusion}"

    def item_adj(self, view: int) -> Tensor:
        """The normalised item graph of ``view`` (modalities ``0..M-1``, fusion ``M``)."""
        return getattr(self, f"item_adj_{view}")

    # -- the model ------------------------------------------------------------------------
    def spectral(self) -> tuple[list[Tensor], Tensor]:
        """Uni-modal denoised :math:`C^m` and the fused :math:`C^f` (``[I, d]`` each)."""
        d = self.config.embedding_dim
        spectra = [
            torch.fft.rfft(proj(x), dim=1, norm="ortho")
            for x, proj in zip(self.features, self.projections)
        ]
        convs = [
            torch.fft.irfft(s * torch.view_as_complex(self.filters[m]), n=d, dim=1, norm="ortho")
            for m, s in enumerate(spectra)
        ]
        prod = spectra[0]
        for s in spectra[1:]:
            prod = prod * s
        fused = torch.fft.irfft(
            prod * torch.view_as_complex(self.fusion_filter), n=d, dim=1, norm="ortho"
        )
        return convs, fused

    def forward_all(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Users ``[U, d]``, items ``[I, d]``, and the side :math:`E^s` and behaviour
        :math:`E^c` views ``[U + I, d]``."""
        cfg = self.config
        nu = self.num_users
        convs, fused = self.spectral()
        e_i = self.item_emb.weight
        content = layer_mean(self.ui_adj, torch.cat([self.user_emb.weight, e_i]), cfg.num_ui_layers)
        views = []
        for v, c in enumerate([*convs, fused]):
            adj_t = getattr(self, f"item_adj_{v}_t")
            h = power_matmul(
                self.item_adj(v), e_i * self.item_gates[v](c), cfg.num_item_layers, adj_t
            )
            views.append(torch.cat([fixed_matmul(self.r_hat, h, self.r_hat_t), h]))
        fusion = views[-1]
        parts = []
        for m in range(self.num_modalities):
            att = torch.softmax(self.queries[m](fusion), dim=-1)
            pref = F.dropout(self.prefer_gates[m](content), cfg.dropout, self.training)
            parts.append(pref * att * views[m])
        pref = F.dropout(self.prefer_gates[-1](content), cfg.dropout, self.training)
        parts.append(pref * fusion)
        side = torch.stack(parts).mean(0)
        out = content + side
        return out[:nu], out[nu:], side, content

    def representations(self) -> tuple[Tensor, Tensor]:
        """Final user and item representations."""
        users, items, _, _ = self.forward_all()
        return users, items

    # -- the trainer's interface ----------------------------------------------------------
    def batch_loss(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor:
        cfg = self.config
        nu = self.num_users
        u_all, i_all, side, content = self.forward_all()
        # index_select: its backward adds rows (index_add), cheaper than indexing's
        loss = bpr_loss(
            u_all.index_select(0, users),
            i_all.index_select(0, pos_items),
            i_all.index_select(0, neg_items),
            cfg.reg_weight,
        )
        if cfg.cl_weight > 0:
            t = cfg.temperature
            cl = info_nce(side[nu:], content[nu:], t, index=pos_items) + info_nce(
                side[:nu], content[:nu], t, index=users
            )
            loss = loss + cfg.cl_weight * cl
        return loss

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._graph_repr()}, modalities={self.config.modalities}"


__all__ = ["SMORE", "SMOREConfig", "max_fusion"]
