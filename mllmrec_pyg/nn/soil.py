"""SOIL (Su et al., ACM MM 2024): contrastive second-order interest learning.

SOIL is built on MGCN. It adds to a user's interactions the *second-order
interest* the interaction records miss (unrecorded items close to what the
user chose), and to each modality's item-item graph the items a user's
history points to. What follows is the authors' released model (``models/soil.py``
of their MMRec-based code, read in the public copy MrShouxingMa/SOIL), the
code that produced the paper's numbers. That copy notes that the code departs
from the paper's formulas without saying where; the paper's text was not
available here, so the code is followed throughout and the departures listed
below are from the code.

Notation: :math:`E_U, E_I` ID embeddings, :math:`X^m` the raw features of
modality :math:`m = 1..M` (frozen, as in the reference), :math:`\\mathcal H_u`
the training items of user :math:`u` (:math:`n_u = |\\mathcal H_u|`),
:math:`S^m_{ab} = \\cos(x^m_a, x^m_b)` the dense cosine similarities of the raw
features, :math:`d` the embedding width. Every graph below is normalised as
:math:`\\mathcal N(W) = D^{-1/2} W D^{-1/2}` with :math:`D` its row sums and every
resulting weight raised to at least :math:`10^{-7}` (the reference's sparse
normalisation does both).

**Interest-aware item-item graphs.** Each user's *interest items* are, in every
modality, the :math:`k_i` items closest to its whole history,
:math:`\\mathcal C_u = \\bigcup_m \\mathrm{top}_{k_i}\\big(\\sum_{h \\in \\mathcal H_u}
S^m_{h\\cdot}\\big)`. An item links to the interest items of every user who chose it,
once per such user:

.. math::
    T^m_{hc} = n_{hc}\\, S^m_{hc}, \\qquad
    n_{hc} = |\\{u : h \\in \\mathcal H_u,\\ c \\in \\mathcal C_u\\}|,

(entries with :math:`T^m_{hc} = 0` dropped), and the modality graph is the sum of
its normalisation and that of the weighted cosine top-:math:`k` graph
:math:`K^m` (the item among its own :math:`k`, weight = cosine):
:math:`G^m = \\mathcal N(T^m) + \\mathcal N(K^m)`.

**Second-order user-item graph.** With the cross-modal similarity
:math:`P = \\prod_m S^m` (element-wise), user :math:`u` picks the
:math:`k_u = \\min(k_a + n_u, I)` largest entries :math:`P_{hc}` over
:math:`h \\in \\mathcal H_u` and every item :math:`c` (its own items come first,
:math:`P_{hh} = 1`, then :math:`k_a` second-order pairs), and
:math:`A_{uc}` sums the picked :math:`P_{hc}` of column :math:`c`. The augmented
adjacency adds half of its normalisation to LightGCN's:

.. math::
    \\hat A' = D^{-1/2} \\begin{pmatrix} 0 & R \\\\ R^\\top & 0 \\end{pmatrix} D^{-1/2}
    + \\tfrac12\\, \\mathcal N\\begin{pmatrix} 0 & A \\\\ A^\\top & 0 \\end{pmatrix},
    \\qquad \\hat R' = \\hat A'_{UI} \\ \\text{(its user-item block)}.

**Representations.** LightGCN on the augmented graph,
:math:`E^c = \\frac{1}{L_{ui}+1} \\sum_{l=0}^{L_{ui}} \\hat A'^l [E_U; E_I]`.
Item IDs gated by each modality,
:math:`H^m_I = E_I \\odot \\sigma\\big(W^m_g (W^m X^m + b^m) + b^m_g\\big)`, propagated
on the modality graph, :math:`\\bar H^m_I = (G^m)^{L} H^m_I`, and read off by
users: :math:`\\bar H^m = [\\hat R' \\bar H^m_I; \\bar H^m_I]`. Attention over the
modalities (per node), :math:`\\alpha^m = \\mathrm{softmax}_m\\big(q^\\top
\\tanh(W_a \\bar H^m + b_a)\\big)`, the common part
:math:`C = \\sum_m \\alpha^m \\bar H^m`, and

.. math::
    E^s = \\frac{1}{M+1}\\Big(C + \\sum_m (\\bar H^m - C)\\Big), \\qquad
    E = E^c + E^s, \\qquad \\hat y_{ui} = e_u^\\top e_i.

**Loss** over a batch of :math:`B` triples :math:`(u, i, j)`, with
:math:`\\mathrm{NCE}_\\tau(Z, Z')` the in-batch InfoNCE on cosine similarities of
row :math:`b` of :math:`Z` against the rows of :math:`Z'`
(:func:`~mllmrec_pyg.nn.mm_common.info_nce`,
:func:`~mllmrec_pyg.nn.mm_common.in_batch_softmax`):

* BPR on :math:`E` (no embedding penalty: the reference reads ``reg_weight``
  but never uses it; ``reg_weight`` here adds
  :math:`\\beta \\frac{1}{2B}(\\lVert e_u\\rVert^2 + \\lVert e_i\\rVert^2 +
  \\lVert e_j\\rVert^2)` and defaults to 0);
* :math:`\\lambda_1 [\\mathrm{NCE}_\\tau(E^s_i, E^c_i) + \\mathrm{NCE}_\\tau(E^s_u, E^c_u)]`
  over the batch's positive items and users (the reference's ``cl_loss``, which
  it labels item-item);
* :math:`\\lambda_2 [\\mathrm{NCE}_\\tau(E_u, E^c_i) + \\mathrm{NCE}_\\tau(E_u, E^s_i)]`:
  each user's final vector against its positive item's behaviour and side
  vectors, the batch's other positives as negatives (the reference's
  ``cl_loss2``, user-item);

with :math:`\\tau = 0.2` (the reference's unused ``tau = 0.5`` is not read).

**Where this departs from the reference code** (on the reference's own datasets,
two modalities and more users than items, only the first point and exact ties
change anything):

* :math:`\\hat R'` is the user-item block of :math:`\\hat A'`. The reference
  normalises its second-order user-item block separately and, there, scales
  entry :math:`(u, c)` by the degree of *user* number :math:`c` instead of
  item :math:`c` (a degree vector over users indexed by item ids; it only runs
  because its datasets have more users than items). Here the item's own
  degree is used, which is the block it adds to :math:`\\hat A'`.
* Any number of modalities: the interest items are the union over all of
  them, :math:`P` the product over all of them, and
  :math:`E^s = (C + \\sum_m (\\bar H^m - C))/(M+1)`, which is the reference's
  :math:`(\\bar H^v + \\bar H^t - C)/3` for two. With one modality it is
  :math:`\\bar H^1/2` (reading the reference as :math:`(\\sum_m \\bar H^m - C)/(M+1)`
  would make it vanish).
* Ties are broken by index (the reference leaves them to ``torch.topk``): among
  equal summed similarities the lower item id, among equal :math:`P_{hc}` the
  lower training item :math:`h`, then the lower :math:`c`. :math:`S^m` is made
  exactly symmetric first, so that the pairs :math:`(h, h')` and :math:`(h', h)`
  of two training items tie rather than differ by rounding.
* :math:`k_i` and :math:`k_u` are capped at :math:`I` (the reference raises);
  a node whose row sum is not positive gets weight 0 before the
  :math:`10^{-7}` floor (the reference gets NaN); features of zero norm have
  zero similarity (NaN there); duplicate training pairs count once.
* The similarity matrices are built on the CPU at construction, in float32,
  with :math:`O(M I^2)` memory as in the reference (0.2 GB per modality for the
  7,050 items of Amazon Baby).

Defaults: :math:`d = 64`, :math:`L_{ui} = 2`, :math:`L = 1`, :math:`k = 10`
(the values fixed in the authors' configuration as published with a
re-implementation, RecAnon/Multimodal-PopBias ``configs/SOIL.yaml``);
:math:`k_i, k_a, \\lambda_1, \\lambda_2` are searched there over
:math:`\\{5, 10, 15, 20\\}`, :math:`\\{3, 5, 10\\}`, :math:`\\{0.001, 0.01, 0.1\\}^2`
and default here to the middle values.

**Plug-and-play.** ``item_graph=("item", "related", "item")`` replaces the
feature kNN graph :math:`K^m` of every modality by the (normalised) graph of
that edge type: :math:`G^m = \\mathcal N(T^m) + \\mathcal N(S^*)`; no kNN graph is
built. The refinement (threshold denoising, co-occurrence edges) targets the
kNN sparsification of feature similarities, which is exactly :math:`K^m`; the
interest part :math:`T^m` is SOIL's own use of the interaction records, not a
kNN graph, and stays, as does the second-order user-item graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mllmrec_pyg.data.schema import RELATED
from mllmrec_pyg.metrics import CSRIndex, topk_items
from mllmrec_pyg.nn.mm_common import (
    MultimodalModel,
    bpr_loss,
    check_feature_count,
    check_modalities,
    feature_parameters,
    graph_label,
    in_batch_softmax,
    info_nce,
    knn_graphs,
    layer_mean,
    power_matmul,
    register_item_graphs,
    require_non_negative,
    require_positive,
    reset_linear_layers,
    sparse_csr,
    sym_norm_weights,
    user_item_edges,
)
from mllmrec_pyg.nn.registry import BABY_R20, EMBEDDING, LR, REFINED, RQ3_HOST, register_model
from mllmrec_pyg.nn.spmm import fixed_matmul, register_with_transpose, spmm

#: the smallest edge weight a normalised graph keeps (as the reference's normalisation)
WEIGHT_FLOOR = 1e-7


@dataclass
class SOILConfig:
    """Hyper-parameters of :class:`SOIL` (see the module docstring for the defaults).

    Args:
        embedding_dim: :math:`d`.
        num_ui_layers: :math:`L_{ui}`, LightGCN layers on the augmented graph (2).
        num_item_layers: :math:`L`, propagation steps on the modality graphs (1).
        knn_k: neighbours per item in each feature kNN graph (10, the item included).
        knn_i: :math:`k_i`, interest items per user and modality (searched 5-20).
        knn_a: :math:`k_a`, second-order pairs per user beyond its own items
            (searched 3-10).
        cl_weight: :math:`\\lambda_1`, side vs behaviour views of users and items.
        ui_cl_weight: :math:`\\lambda_2`, users vs their positive items' views.
        temperature: :math:`\\tau` of both contrastive terms (0.2).
        reg_weight: :math:`\\beta`, penalty on the batch's final vectors (0, as the
            reference, which never applies its ``reg_weight``).
        modalities: attributes of ``data["item"]`` holding the modality features.
        item_graph: read the graph replacing every feature kNN graph from this edge
            type (plug-and-play); ``None`` builds SOIL's own kNN graphs.
        train_features: fine-tune the raw features (the reference freezes them); the
            graphs stay fixed either way.
    """

    embedding_dim: int = 64
    num_ui_layers: int = 2
    num_item_layers: int = 1
    knn_k: int = 10
    knn_i: int = 10
    knn_a: int = 5
    cl_weight: float = 0.01
    ui_cl_weight: float = 0.01
    temperature: float = 0.2
    reg_weight: float = 0.0
    modalities: tuple[str, ...] = ("x",)
    item_graph: tuple[str, str, str] | None = None
    train_features: bool = False

    def __post_init__(self) -> None:
        self.modalities, self.item_graph = check_modalities(self.modalities, self.item_graph)
        require_positive(self, "embedding_dim", "knn_k", "temperature")
        require_non_negative(self, "num_ui_layers", "num_item_layers", "knn_i", "knn_a")
        require_non_negative(self, "cl_weight", "ui_cl_weight", "reg_weight")


# -- graph construction ---------------------------------------------------------------------
def cosine_matrix(x: Tensor) -> Tensor:
    """The dense ``[N, N]`` cosine similarities of the rows of ``x`` (0 for a zero row),
    exactly symmetric (a product's rounding can differ between ``(a, b)`` and ``(b, a)``)."""
    xn = F.normalize(x.detach().float(), dim=1)
    sim = xn @ xn.t()
    return (sim + sim.t()) / 2


def floor_norm(edge_index: Tensor, edge_weight: Tensor, num_nodes: int) -> Tensor:
    """:func:`~mllmrec_pyg.nn.mm_common.sym_norm_weights` (row sums of the owners
    ``edge_index[1]``), every weight raised to at least :data:`WEIGHT_FLOOR`."""
    return sym_norm_weights(edge_index, edge_weight.float(), num_nodes).clamp_min(WEIGHT_FLOOR)


def user_histories(pairs: Tensor, num_users: int) -> CSRIndex:
    """Each user's distinct training items: user ``u``'s are
    ``col[rowptr[u]:rowptr[u + 1]]``, in increasing order."""
    return CSRIndex(torch.unique(pairs, dim=1), num_users)  # sorted by user, then item


def interest_items(hist: CSRIndex, sims: Sequence[Tensor], k: int, block: int = 1 << 22) -> Tensor:
    """Every user's interest items, ``[2, S]`` pairs ``(user, item)`` (distinct, sorted):
    the union over the similarity matrices ``sims`` (``[I, I]`` each) of the top-``k``
    items by the summed similarity to the user's training items ``hist``
    (:func:`user_histories`; ties by item id; ``k`` capped at ``I``; users without
    training items have none)."""
    ptr, items = hist.rowptr, hist.col
    num_users, num_items = ptr.numel() - 1, sims[0].size(0)
    k = min(k, num_items)
    counts = ptr[1:] - ptr[:-1]
    rows = torch.repeat_interleave(torch.arange(num_users), counts)
    step = max(1, block // max(num_items, 1))  # users per block: ~``block`` sums at a time
    found = []
    for start in range(0, num_users if k > 0 else 0, step):
        stop = min(start + step, num_users)
        lo, hi = int(ptr[start]), int(ptr[stop])
        if lo == hi:
            continue
        hist = sparse_csr(
            torch.stack([rows[lo:hi] - start, items[lo:hi]]),
            torch.ones(hi - lo),
            (stop - start, num_items),
        )
        for sim in sims:
            top = topk_items(spmm(hist, sim), k)  # [block users, k], ties by item id
            users = torch.arange(start, stop).unsqueeze(1).expand_as(top)
            keep = counts[start:stop] > 0
            found.append(users[keep].flatten() * num_items + top[keep].flatten())
    if not found:
        return torch.zeros(2, 0, dtype=torch.long)
    key = torch.unique(torch.cat(found))
    return torch.stack([key // num_items, key % num_items])


def interest_counts(hist: CSRIndex, interest: Tensor, num_items: int) -> tuple[Tensor, Tensor]:
    """:math:`n_{hc}`, the number of users with training item :math:`h` (``hist``) and
    interest item :math:`c`, over its non-zero entries: ``edge_index`` ``[2, E]``
    (``[1]`` = :math:`h`, the owner; ``[0]`` = :math:`c`) and the counts ``[E]`` (float)."""
    users, cands = interest
    row, h = hist.gather(users)  # every interest pair meets each of its user's items
    c = cands[row]
    key, n = torch.unique(h * num_items + c, return_counts=True)
    return torch.stack([key % num_items, key // num_items]), n.float()


def interest_graph(
    counts_index: Tensor, counts: Tensor, sim: Tensor, num_items: int
) -> tuple[Tensor, Tensor]:
    """:math:`\\mathcal N(T)` for :math:`T_{hc} = n_{hc} S_{hc}` (from
    :func:`interest_counts`; zero entries dropped): ``edge_index`` (``[1]`` = owner
    :math:`h`) and the normalised weights."""
    c, h = counts_index
    w = counts * sim[h, c]
    keep = w != 0
    ei = counts_index[:, keep]
    return ei, floor_norm(ei, w[keep], num_items)


def second_order_pairs(hist: CSRIndex, product: Tensor, knn_a: int) -> tuple[Tensor, Tensor]:
    """The second-order user-item matrix :math:`A`: user :math:`u` picks the
    :math:`\\min(k_a + n_u, I)` largest :math:`P_{hc}` over its training items
    :math:`h` and all items :math:`c` (``product`` is :math:`P`, ``[I, I]``; ties go to
    the lower training item, then the lower item id), and :math:`A_{uc}` sums the
    picked values of column :math:`c` (training items from :func:`user_histories`).
    Returns the distinct ``(user, item)`` pairs ``[2, E]`` (sorted) and :math:`A` on
    them ``[E]``."""
    ptr, items = hist.rowptr, hist.col
    num_users, num_items = ptr.numel() - 1, product.size(0)
    users, cols, vals = [], [], []
    for u in range(num_users):
        lo, hi = int(ptr[u]), int(ptr[u + 1])
        if lo == hi:
            continue
        k = min(knn_a + hi - lo, num_items)
        flat = product[items[lo:hi]].reshape(1, -1)
        top = topk_items(flat, k)[0]  # ties by position: training item, then item id
        users.append(torch.full((k,), u))
        cols.append(top % num_items)
        vals.append(flat[0, top])
    if not users:
        return torch.zeros(2, 0, dtype=torch.long), torch.zeros(0)
    key = torch.cat(users) * num_items + torch.cat(cols)
    uniq, inv = torch.unique(key, return_inverse=True)
    w = torch.zeros(uniq.numel()).index_add_(0, inv, torch.cat(vals).float())
    return torch.stack([uniq // num_items, uniq % num_items]), w


def augmented_ui_adjacency(
    pairs: Tensor, second_order: tuple[Tensor, Tensor], num_users: int, num_items: int
) -> tuple[Tensor, Tensor]:
    """:math:`\\hat A'` (CSR ``[U + I, U + I]``, items offset by ``U``; symmetric) and its
    user-item block :math:`\\hat R'` (CSR ``[U, I]``) from the training ``pairs`` and the
    :func:`second_order_pairs`."""
    n = num_users + num_items
    ei, ew = user_item_edges(pairs, num_users, num_items)
    (u, c), a = second_order
    c = c + num_users
    so = torch.stack([torch.cat([c, u]), torch.cat([u, c])])  # [0] neighbour, [1] owner
    sw = 0.5 * floor_norm(so, torch.cat([a, a]), n)
    rows = torch.cat([ei[1], so[1]])
    cols = torch.cat([ei[0], so[0]])
    w = torch.cat([ew, sw])
    block = rows < num_users
    r_hat = sparse_csr(
        torch.stack([rows[block], cols[block] - num_users]), w[block], (num_users, num_items)
    )
    return sparse_csr(torch.stack([rows, cols]), w, (n, n)), r_hat


class SOILOutputs(NamedTuple):
    """Everything :meth:`SOIL.encode` computes (user rows first in the ``[U + I, d]`` ones)."""

    users: Tensor  #: final users :math:`E_U`, ``[U, d]``
    items: Tensor  #: final items :math:`E_I`, ``[I, d]``
    content: Tensor  #: behaviour view :math:`E^c`, ``[U + I, d]``
    side: Tensor  #: modality view :math:`E^s`, ``[U + I, d]``
    modal: list[Tensor]  #: :math:`\\bar H^m` per modality, ``[U + I, d]``


#: SOIL: its authors' grid (as published with a re-implementation of SOIL,
#: RecAnon/Multimodal-PopBias configs/SOIL.yaml, which fixes lr 1e-3), plus the learning
#: rate every other candidate here searches
SOIL_SPACE = {
    "train.lr": LR,
    "model.knn_i": (5, 10, 15, 20),
    "model.knn_a": (3, 5, 10),
    "model.cl_weight": (0.001, 0.01, 0.1),
    "model.ui_cl_weight": (0.001, 0.01, 0.1),
}


@register_model(
    "soil",
    label="SOIL",
    space=SOIL_SPACE,
    candidates={"soil-refined": ({"item_graph": RELATED}, {**SOIL_SPACE, **REFINED})},
    flags={"embedding_dim": EMBEDDING},
    host=True,
    paper={BABY_R20: 0.1028, RQ3_HOST: 2},
)
class SOIL(MultimodalModel):
    """SOIL on the package's trainer; see the module docstring for the equations.
    Constructor arguments as in :class:`~mllmrec_pyg.nn.mm_common.MultimodalModel`."""

    config_class = SOILConfig

    def __init__(
        self,
        num_users: int,
        num_items: int,
        train_edge_index: Tensor,
        modality_features: Sequence[Tensor],
        item_graph: tuple[Tensor, Tensor] | None = None,
        config: SOILConfig | None = None,
    ) -> None:
        super().__init__(num_users, num_items)
        cfg = self.config = config or SOILConfig()
        check_feature_count(modality_features, cfg.modalities)
        d = cfg.embedding_dim
        self.num_modalities = len(modality_features)
        pairs = train_edge_index.cpu()
        feats = [x.cpu() for x in modality_features]

        # interest-aware modality graphs: N(T^m) + N(K^m), K^m the kNN or the given graph
        hist = user_histories(pairs, num_users)
        sims = [cosine_matrix(x) for x in feats]
        interest = interest_items(hist, sims, cfg.knn_i)
        counts_index, counts = interest_counts(hist, interest, num_items)
        if item_graph is None:
            knn = knn_graphs(feats, cfg.knn_k, num_items)
            base = [(ei, ew.clamp_min(WEIGHT_FLOOR)) for ei, ew in knn]
        else:
            gi, gw = item_graph
            base = [(gi, floor_norm(gi, gw, num_items))] * self.num_modalities
        graphs = []
        for sim, (bi, bw) in zip(sims, base):
            ti, tw = interest_graph(counts_index, counts, sim, num_items)
            graphs.append((torch.cat([ti, bi], 1), torch.cat([tw, bw])))
        register_item_graphs(self, graphs, num_items)
        self.num_interest_pairs = interest.size(1)

        # second-order user-item graph on the cross-modal similarity P
        product = sims[0]
        for sim in sims[1:]:
            product = product * sim
        second = second_order_pairs(hist, product, cfg.knn_a)
        del sims, product
        self.num_second_order = second[0].size(1)
        ui_adj, r_hat = augmented_ui_adjacency(pairs, second, num_users, num_items)
        self.register_buffer("ui_adj", ui_adj, persistent=False)  # symmetric
        register_with_transpose(self, "r_hat", r_hat, "r_hat_t")

        self.user_emb, self.item_emb = self._id_tables(d)
        self.features = feature_parameters(modality_features, cfg.train_features)
        self.projections = nn.ModuleList(nn.Linear(x.size(1), d) for x in modality_features)
        self.gates = nn.ModuleList(
            nn.Sequential(nn.Linear(d, d), nn.Sigmoid()) for _ in modality_features
        )
        self.attention = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """ID embeddings Xavier-uniform, linear layers PyTorch's default (as the reference)."""
        nn.init.xavier_uniform_(self.user_emb.weight)
        nn.init.xavier_uniform_(self.item_emb.weight)
        reset_linear_layers(self.projections, self.gates, self.attention)

    def _summary(self) -> str:
        return (
            f"modality graphs interest(k_i={self.config.knn_i}, {self.num_interest_pairs} "
            f"user-interest pairs) + {graph_label(self.config)}, "
            f"{self.num_second_order} second-order user-item pairs"
        )

    def item_adj(self, modality: int) -> tuple[Tensor, Tensor]:
        """The modality graph :math:`G^m` of ``modality`` and its transpose (CSR)."""
        return getattr(self, f"item_adj_{modality}"), getattr(self, f"item_adj_{modality}_t")

    # -- the model ------------------------------------------------------------------------
    def encode(self) -> SOILOutputs:
        """The final representations and the views the loss reads."""
        cfg = self.config
        nu = self.num_users
        e_i = self.item_emb.weight
        content = layer_mean(self.ui_adj, torch.cat([self.user_emb.weight, e_i]), cfg.num_ui_layers)
        modal = []
        for m, (x, proj, gate) in enumerate(zip(self.features, self.projections, self.gates)):
            adj, adj_t = self.item_adj(m)
            h = power_matmul(adj, e_i * gate(proj(x)), cfg.num_item_layers, adj_t)
            modal.append(torch.cat([fixed_matmul(self.r_hat, h, self.r_hat_t), h]))
        alpha = torch.softmax(torch.cat([self.attention(h) for h in modal], dim=1), dim=1)
        common = sum(alpha[:, m : m + 1] * h for m, h in enumerate(modal))
        side = (common + sum(h - common for h in modal)) / (self.num_modalities + 1)
        out = content + side
        return SOILOutputs(out[:nu], out[nu:], content, side, modal)

    def representations(self) -> tuple[Tensor, Tensor]:
        """Final user and item representations."""
        out = self.encode()
        return out.users, out.items

    # -- the trainer's interface ----------------------------------------------------------
    def loss_terms(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> dict[str, Tensor]:
        """The weighted terms of the loss: ``bpr`` (with the :math:`\\beta` penalty),
        ``cl`` (:math:`\\lambda_1`) and ``ui_cl`` (:math:`\\lambda_2`); :meth:`batch_loss`
        is their sum. A term whose weight is 0 is not computed."""
        cfg = self.config
        nu = self.num_users
        out = self.encode()
        u = out.users[users]
        terms = {
            "bpr": bpr_loss(
                u,
                out.items.index_select(0, pos_items),
                out.items.index_select(0, neg_items),
                cfg.reg_weight,
            )
        }
        zero = u.new_zeros(())
        t = cfg.temperature
        side, content = out.side, out.content
        terms["cl"] = zero
        if cfg.cl_weight > 0:
            terms["cl"] = cfg.cl_weight * (
                info_nce(side[nu:], content[nu:], t, index=pos_items)
                + info_nce(side[:nu], content[:nu], t, index=users)
            )
        terms["ui_cl"] = zero
        if cfg.ui_cl_weight > 0:
            terms["ui_cl"] = cfg.ui_cl_weight * sum(
                in_batch_softmax(out.users, view[nu:], users, pos_items, t, normalize=True)
                for view in (content, side)
            )
        return terms

    def batch_loss(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor:
        return sum(self.loss_terms(users, pos_items, neg_items).values())

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"{super().extra_repr()}, {self._graph_repr()}, knn_i={c.knn_i}, knn_a={c.knn_a}, "
            f"modalities={c.modalities}"
        )


__all__ = [
    "SOIL",
    "SOILConfig",
    "SOILOutputs",
    "augmented_ui_adjacency",
    "cosine_matrix",
    "interest_counts",
    "interest_graph",
    "interest_items",
    "second_order_pairs",
    "user_histories",
]
