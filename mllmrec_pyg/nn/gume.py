"""GUME (Lin et al., CIKM 2024): graphs and user modalities enhancement for long-tail items.

Notation: :math:`E_U, E_I` ID embeddings, :math:`X^m` the raw features of
modality :math:`m = 1..M` (fine-tuned, as in the reference), :math:`d` the
embedding width.

**Graphs.** Every modality has the weighted cosine top-:math:`k` graph of its
raw features (the item among its own :math:`k`, weight = cosine, :math:`k =
10`), :math:`\\hat S^m = D_m^{-1/2} S^m D_m^{-1/2}` (row sums). The
*semantic neighbours* of item :math:`a` are the items among its top-:math:`k`
in every modality, :math:`\\mathcal N_a = \\bigcap_m \\mathrm{top}_k^m(a)
\\setminus \\{a\\}`. The user-item graph is *enhanced* with the unweighted,
directed item-item edges :math:`a \\to b` for :math:`b \\in \\mathcal N_a`:

.. math::
    A = \\begin{pmatrix} 0 & R \\\\ R^\\top & B \\end{pmatrix},\\quad
    B_{ab} = \\mathbb 1[b \\in \\mathcal N_a], \\qquad
    \\hat A = D^{-1/2} A D^{-1/2},\\ D_{aa} = \\textstyle\\sum_b A_{ab},

and :math:`\\hat R = \\hat A_{UI}` is its user-item block (an item's degree
counts its semantic neighbours).

**Explicit interaction features.** Item IDs gated by each modality,
:math:`H^m_I = E_I \\odot \\sigma\\big(W^m_2 (W^m_1 X^m + b^m_1) + b^m_2\\big)`,
propagated on the modality graph and read off by users:
:math:`\\bar H^m_I = (\\hat S^m)^{L} H^m_I`,
:math:`\\bar H^m = [\\hat R \\bar H^m_I;\\ \\bar H^m_I]` (:math:`L = 2`).

**Behaviour and extended interest features.** LightGCN layer means on the
enhanced graph, :math:`\\mathrm{LG}(Z) = \\frac{1}{L_{ui}+1}
\\sum_{l=0}^{L_{ui}} \\hat A^l Z` (:math:`L_{ui} = 3`):
:math:`E^b = \\mathrm{LG}([E_U; E_I])` and, with a user embedding
:math:`F^m_U` of its own per modality,
:math:`E^x = \\frac1M \\sum_m \\mathrm{LG}([F^m_U; \\bar H^m_I])`.

**Attribute separation.** Modality weights
:math:`\\alpha^m = \\mathrm{softmax}_m\\big(q^\\top \\tanh(W \\bar H^m + b)\\big)`
(per node), the coarse-grained common part
:math:`C = \\sum_m \\alpha^m \\bar H^m`, the fine-grained parts
:math:`G^m = \\sigma(W^m_g E^b + b^m_g) \\odot (\\bar H^m - C)`, and

.. math::
    E^s = \\frac{1}{M+1}\\Big(C + \\sum_m G^m\\Big), \\qquad
    E = E^b + E^s, \\qquad \\hat y_{ui} = e_u^\\top e_i.

**Loss** over a batch of :math:`B` triples :math:`(u, i, j)`, with
:math:`\\mathrm{NCE}_\\tau` the in-batch InfoNCE on cosine similarities
(:func:`~mllmrec_pyg.nn.mm_common.info_nce`):

* BPR on :math:`E` plus :math:`\\beta_1 \\frac{1}{2B}(\\lVert e_u\\rVert^2 +
  \\lVert e_i\\rVert^2 + \\lVert e_j\\rVert^2)`;
* internal alignment of the modalities, :math:`\\lambda_{vt}` times the mean
  over modality pairs of :math:`|\\mathrm{var}(\\bar H^a) - \\mathrm{var}(\\bar H^b)|
  + |\\mathrm{mean}(\\bar H^a) - \\mathrm{mean}(\\bar H^b)|` (over all entries
  of the user and item rows; unbiased variance);
* external alignment with behaviour, :math:`\\lambda_{bm}
  [\\mathrm{NCE}_{\\tau_{bm}}(E^s_u, E^b_u) + \\mathrm{NCE}_{\\tau_{bm}}(E^s_i, E^b_i)]`
  over the batch's users and positive items;
* user modality enhancement, :math:`\\lambda_{um}[\\mathrm{NCE}_{\\tau_{um}}(E^x_u, E^s_u)
  + \\mathrm{NCE}_{\\tau_{um}}(\\delta(E^s_u), \\delta'(E^s_u))
  + \\mathrm{NCE}_{\\tau_{um}}(\\delta(E^x_u), \\delta'(E^x_u))]` with two random
  perturbations :math:`\\delta(z) = z + \\epsilon\\, \\mathrm{sign}(z) \\odot
  \\nu / \\lVert \\nu \\rVert`, :math:`\\nu \\sim U[0, 1)^d` drawn per user
  (:math:`\\epsilon = 0.1`);
* :math:`\\beta_2 \\frac{1}{2B} \\lVert E^x_i \\rVert^2` on the batch's
  positive items.

Defaults are the authors' configuration (its Amazon-Baby values where it
varies by dataset). The perturbation noise is drawn once per distinct user
of the batch, so a user's repeats share it, as in the reference (which
draws it for every user and then gathers the batch's rows): the same
distribution, and the perturbed InfoNCE terms, like the others, are
computed over distinct users. The embedding penalties divide by the actual
batch size.

**Plug-and-play.** ``item_graph=("item", "related", "item")`` replaces every
modality graph :math:`\\hat S^m` by the symmetrically normalised graph of
that edge type, and its edges (self-loops dropped, weights ignored) are the
semantic neighbours that enhance the user-item graph; no kNN graph is
built. Everything else stays.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

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
class GUMEConfig:
    """Hyper-parameters of :class:`GUME` (defaults from the authors' configuration).

    Args:
        embedding_dim: :math:`d`.
        num_ui_layers: :math:`L_{ui}`, LightGCN layers on the enhanced graph (3).
        num_item_layers: :math:`L`, propagation steps on the modality graphs
            (2 on Baby, 1 on the authors' other datasets).
        knn_k: neighbours per item in each modality graph (10, the item included).
        reg_weight: :math:`\\beta_1`, penalty on the batch's final vectors (1e-5).
        extended_reg_weight: :math:`\\beta_2`, penalty on the positive items'
            extended interest features (0.1).
        vt_weight: :math:`\\lambda_{vt}`, internal modality alignment (0.1; 0.01
            and 0.001 on other datasets).
        bm_weight: :math:`\\lambda_{bm}`, behaviour-modality alignment (0.01; the tuning
            here also tries 0.001, see :data:`GUME_CL`).
        bm_temperature: :math:`\\tau_{bm}` (0.4; 0.2 on other datasets).
        um_weight: :math:`\\lambda_{um}`, user modality enhancement (0.01; 0.1
            on other datasets).
        um_temperature: :math:`\\tau_{um}` (0.1; 0.2 on other datasets).
        noise_eps: :math:`\\epsilon`, size of the perturbations (0.1).
        modalities: attributes of ``data["item"]`` holding the modality features.
        item_graph: read the modality graphs and semantic neighbours from this
            edge type (plug-and-play); ``None`` builds GUME's own kNN graphs.
        train_features: fine-tune the raw features (as the reference); the
            graphs stay frozen either way.
    """

    embedding_dim: int = 64
    num_ui_layers: int = 3
    num_item_layers: int = 2
    knn_k: int = 10
    reg_weight: float = 1e-5
    extended_reg_weight: float = 0.1
    vt_weight: float = 0.1
    bm_weight: float = 0.01
    bm_temperature: float = 0.4
    um_weight: float = 0.01
    um_temperature: float = 0.1
    noise_eps: float = 0.1
    modalities: tuple[str, ...] = ("x",)
    item_graph: tuple[str, str, str] | None = None
    train_features: bool = True

    def __post_init__(self) -> None:
        self.modalities, self.item_graph = check_modalities(self.modalities, self.item_graph)
        require_positive(self, "embedding_dim", "knn_k", "bm_temperature", "um_temperature")
        require_non_negative(self, "num_ui_layers", "num_item_layers", "reg_weight")
        require_non_negative(self, "extended_reg_weight", "vt_weight", "bm_weight", "um_weight")
        require_non_negative(self, "noise_eps")


def semantic_neighbours(graphs: Sequence[Tensor], num_items: int) -> Tensor:
    """Edges ``b -> a`` (``[1]`` = owner :math:`a`) present in every graph of ``graphs``
    (edge indices, duplicates allowed), self-loops dropped: :math:`\\bigcap_m \\mathcal N^m_a
    \\setminus \\{a\\}`, sorted by owner then neighbour."""
    common: Tensor | None = None
    for ei in graphs:
        key = torch.unique(ei[1] * num_items + ei[0])
        common = key if common is None else common[torch.isin(common, key)]
    assert common is not None
    owner, nb = common // num_items, common % num_items
    keep = owner != nb
    return torch.stack([nb[keep], owner[keep]])


def enhanced_ui_adjacency(
    pairs: Tensor, item_edges: Tensor, num_users: int, num_items: int
) -> tuple[Tensor, Tensor]:
    """:math:`\\hat A = D^{-1/2} A D^{-1/2}` of the user-item graph plus the unweighted
    item-item edges ``item_edges`` (``[1]`` = owner, row of :math:`A`), with
    :math:`D` the row sums, as a CSR ``[U + I, U + I]`` matrix (items offset by ``U``;
    not symmetric when ``item_edges`` is not), and its user-item block :math:`\\hat R`
    (CSR ``[U, I]``)."""
    pairs = torch.unique(pairs, dim=1)
    n = num_users + num_items
    rows = torch.cat([pairs[0], pairs[1] + num_users, item_edges[1] + num_users])
    cols = torch.cat([pairs[1] + num_users, pairs[0], item_edges[0] + num_users])
    deg = torch.bincount(rows, minlength=n).float()
    inv = torch.where(deg > 0, deg.clamp_min(1).rsqrt(), torch.zeros_like(deg))
    w = inv[rows] * inv[cols]
    r_hat = sparse_csr(pairs, w[: pairs.size(1)], (num_users, num_items))
    return sparse_csr(torch.stack([rows, cols]), w, (n, n)), r_hat


def perturb(x: Tensor, eps: float) -> Tensor:
    """:math:`x + \\epsilon\\,\\mathrm{sign}(x) \\odot \\nu/\\lVert\\nu\\rVert`,
    :math:`\\nu \\sim U[0, 1)^d` per row (torch's global generator)."""
    return x + eps * torch.sign(x) * F.normalize(torch.rand_like(x), dim=-1)


def moment_gap(a: Tensor, b: Tensor) -> Tensor:
    """:math:`|\\mathrm{var}(a) - \\mathrm{var}(b)| + |\\mathrm{mean}(a) - \\mathrm{mean}(b)|`
    over all entries (unbiased variance)."""
    return (torch.var(a) - torch.var(b)).abs() + (a.mean() - b.mean()).abs()


class GUMEOutputs(NamedTuple):
    """Everything :meth:`GUME.encode` computes (user rows first in the ``[U + I, d]`` ones)."""

    users: Tensor  #: final users :math:`E_U`, ``[U, d]``
    items: Tensor  #: final items :math:`E_I`, ``[I, d]``
    behaviour: Tensor  #: :math:`E^b`, ``[U + I, d]``
    integration: Tensor  #: :math:`E^s`, ``[U + I, d]``
    explicit: list[Tensor]  #: :math:`\\bar H^m` per modality, ``[U + I, d]``
    extended: Tensor | None  #: :math:`E^x`, ``[U + I, d]`` (when asked for)


def _gate(d_in: int, d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d), nn.Sigmoid())


#: GUME's contrastive weights: its authors' values and a tenth of them. As with SMORE, at
#: 0.01 they stop BPR from learning on MovieLens (valid R@20 0.072, 0.073, 0.055 over the
#: first three epochs; 0.120, 0.165, 0.163 with both at 0.001)
GUME_CL = {"model.bm_weight": (0.01, 0.001), "model.um_weight": (0.001, 0.01, 0.1)}


# its authors tune these per dataset (their configuration's values), plus a tenth of
# their contrastive weights (GUME_CL)
@register_model(
    "gume",
    label="GUME",
    space={
        "train.lr": LR,
        "model.num_item_layers": (1, 2),
        "model.bm_temperature": (0.2, 0.4),
        "model.vt_weight": (0.001, 0.01, 0.1),
        **GUME_CL,
    },
    candidates={
        "gume-refined": (
            {"item_graph": RELATED},
            {
                "train.lr": LR,
                "model.num_item_layers": (1, 2),
                "model.vt_weight": (0.001, 0.01, 0.1),
                **GUME_CL,
                **REFINED,
            },
        )
    },
    flags={"embedding_dim": EMBEDDING},
    host=True,
    paper={BABY_R20: 0.1042, RQ3_HOST: 3},
)
class GUME(MultimodalModel):
    """GUME on the package's trainer; see the module docstring for the equations.
    Constructor arguments as in :class:`~mllmrec_pyg.nn.mm_common.MultimodalModel`."""

    config_class = GUMEConfig

    def __init__(
        self,
        num_users: int,
        num_items: int,
        train_edge_index: Tensor,
        modality_features: Sequence[Tensor],
        item_graph: tuple[Tensor, Tensor] | None = None,
        config: GUMEConfig | None = None,
    ) -> None:
        super().__init__(num_users, num_items)
        cfg = self.config = config or GUMEConfig()
        check_feature_count(modality_features, cfg.modalities)
        d = cfg.embedding_dim
        n_mod = self.num_modalities = len(modality_features)

        # modality graphs (one per modality, or the given one for all) + semantic neighbours
        self.own_graph = item_graph is None
        if self.own_graph:
            graphs = knn_graphs(modality_features, cfg.knn_k, num_items)
            neighbours = semantic_neighbours([g[0] for g in graphs], num_items)
        else:
            gi, gw = item_graph
            graphs = [sym_norm_graph(gi, gw, num_items)]
            neighbours = semantic_neighbours([gi[:, gw.float() > 0]], num_items)
        register_item_graphs(self, graphs, num_items)
        self.register_buffer("neighbour_index", neighbours, persistent=False)

        ui_adj, r_hat = enhanced_ui_adjacency(
            train_edge_index.cpu(), neighbours, num_users, num_items
        )
        register_with_transpose(self, "ui_adj", ui_adj, "ui_adj_t")
        register_with_transpose(self, "r_hat", r_hat, "r_hat_t")

        self.user_emb, self.item_emb = self._id_tables(d)
        self.modal_user_emb = nn.ModuleList(nn.Embedding(num_users, d) for _ in range(n_mod))
        self.features = feature_parameters(modality_features, cfg.train_features)
        self.encoders = nn.ModuleList(
            nn.Sequential(nn.Linear(x.size(1), d), nn.Linear(d, d), nn.Sigmoid())
            for x in modality_features
        )
        self.attention = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))
        self.behaviour_gates = nn.ModuleList(_gate(d, d) for _ in range(n_mod))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Embeddings Xavier-uniform, linear layers PyTorch's default (as the reference)."""
        for emb in (self.user_emb, self.item_emb, *self.modal_user_emb):
            nn.init.xavier_uniform_(emb.weight)
        reset_linear_layers(self.encoders, self.attention, self.behaviour_gates)

    def _summary(self) -> str:
        edges = self.neighbour_index.size(1)
        return f"modality graphs {graph_label(self.config)}, {edges} semantic-neighbour edges"

    def item_adj(self, modality: int) -> tuple[Tensor, Tensor]:
        """The normalised graph :math:`\\hat S^m` of ``modality`` and its transpose (CSR)."""
        v = modality if self.own_graph else 0
        return getattr(self, f"item_adj_{v}"), getattr(self, f"item_adj_{v}_t")

    # -- the model ------------------------------------------------------------------------
    def encode(self, extended: bool = False) -> GUMEOutputs:
        """The final representations and the views the loss reads; the extended interest
        features :math:`E^x` only when ``extended`` (the scores do not need them)."""
        cfg = self.config
        nu = self.num_users
        e_i = self.item_emb.weight
        behaviour = layer_mean(
            self.ui_adj, torch.cat([self.user_emb.weight, e_i]), cfg.num_ui_layers, self.ui_adj_t
        )
        explicit, ext = [], []
        for m, (x, enc) in enumerate(zip(self.features, self.encoders)):
            adj, adj_t = self.item_adj(m)
            h = power_matmul(adj, e_i * enc(x), cfg.num_item_layers, adj_t)
            explicit.append(torch.cat([fixed_matmul(self.r_hat, h, self.r_hat_t), h]))
            if extended:
                ego = torch.cat([self.modal_user_emb[m].weight, h])
                ext.append(layer_mean(self.ui_adj, ego, cfg.num_ui_layers, self.ui_adj_t))
        alpha = torch.softmax(torch.cat([self.attention(h) for h in explicit], dim=1), dim=1)
        coarse = sum(alpha[:, m : m + 1] * h for m, h in enumerate(explicit))
        fine = [gate(behaviour) * (h - coarse) for gate, h in zip(self.behaviour_gates, explicit)]
        integration = (coarse + sum(fine)) / (self.num_modalities + 1)
        out = behaviour + integration
        ext_mean = torch.stack(ext).mean(0) if extended else None
        return GUMEOutputs(out[:nu], out[nu:], behaviour, integration, explicit, ext_mean)

    def representations(self) -> tuple[Tensor, Tensor]:
        """Final user and item representations."""
        out = self.encode()
        return out.users, out.items

    # -- the trainer's interface ----------------------------------------------------------
    def loss_terms(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> dict[str, Tensor]:
        """The weighted terms of the loss: ``bpr`` (with the :math:`\\beta_1` penalty),
        ``vt``, ``bm``, ``um`` and ``extended_reg``; :meth:`batch_loss` is their sum."""
        cfg = self.config
        nu = self.num_users
        out = self.encode(extended=True)
        ext = out.extended
        assert ext is not None
        u = out.users.index_select(0, users)
        p, n = out.items.index_select(0, pos_items), out.items.index_select(0, neg_items)
        terms = {"bpr": bpr_loss(u, p, n, cfg.reg_weight)}
        pairs = list(itertools.combinations(out.explicit, 2))
        vt = sum((moment_gap(a, b) for a, b in pairs), out.users.new_zeros(()))
        terms["vt"] = cfg.vt_weight * vt / max(len(pairs), 1)
        s, b = out.integration, out.behaviour
        tb = cfg.bm_temperature
        terms["bm"] = cfg.bm_weight * (
            info_nce(s[:nu], b[:nu], tb, index=users)
            + info_nce(s[nu:], b[nu:], tb, index=pos_items)
        )
        tu, eps = cfg.um_temperature, cfg.noise_eps
        um = info_nce(ext[:nu], s[:nu], tu, index=users)
        # one perturbation per distinct user, shared by its repeats (the reference perturbs
        # the whole user table and then gathers the batch), so the products run over
        # distinct users
        uniq, inv = torch.unique(users, return_inverse=True)
        s_u, x_u = s.index_select(0, uniq), ext.index_select(0, uniq)
        um = um + info_nce(perturb(s_u, eps), perturb(s_u, eps), tu, index=inv)
        um = um + info_nce(perturb(x_u, eps), perturb(x_u, eps), tu, index=inv)
        terms["um"] = cfg.um_weight * um
        x_i = ext[nu:][pos_items]
        terms["extended_reg"] = cfg.extended_reg_weight * x_i.pow(2).sum() / (2 * users.numel())
        return terms

    def batch_loss(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor:
        return sum(self.loss_terms(users, pos_items, neg_items).values())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._graph_repr()}, modalities={self.config.modalities}"


__all__ = [
    "GUME",
    "GUMEConfig",
    "GUMEOutputs",
    "enhanced_ui_adjacency",
    "moment_gap",
    "perturb",
    "semantic_neighbours",
]
