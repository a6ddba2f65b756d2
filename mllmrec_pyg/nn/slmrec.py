"""SLMRec (Tao et al., IEEE TMM 2023): self-supervised learning for multimedia recommendation.

Notation: :math:`\\hat A = D^{-1/2} A D^{-1/2}` the normalised user-item
training graph, :math:`\\mathrm{LGN}(Z) = \\frac{1}{L+1}\\sum_{l=0}^{L}
\\hat A^l Z` LightGCN with :math:`L = 3` layers.

**Representations.** The ID view :math:`[U^{id}; I^{id}] = \\mathrm{LGN}([E_U; E_I])`
and, for every modality :math:`m`, a view in which the items' rows are
their projected, row-normalised features,
:math:`[U^m; I^m] = \\mathrm{LGN}([E_U; \\bar X^m W_m + b_m])`,
:math:`\\bar x^m_i = x^m_i / \\lVert x^m_i \\rVert`. The views are fused by
concatenation and a linear layer per side:

.. math::
    u = W_U [u^{id} \\| u^{1} \\| \\dots \\| u^{M}] + c_U, \\qquad
    i = W_I [i^{id} \\| i^{1} \\| \\dots \\| i^{M}] + c_I, \\qquad
    \\hat y_{ui} = u^\\top i.

**Main loss.** In-batch InfoNCE between each training pair's user and item
(cosine similarities, temperature :math:`\\tau = 0.2`; the other positives
of the batch are the negatives, no sampled negative is used):
:math:`\\mathcal L_{main} = \\frac1B \\sum_b -\\log \\frac{\\exp(\\cos(u_b, i_b)/\\tau)}
{\\sum_{b'} \\exp(\\cos(u_b, i_{b'})/\\tau)}`.

**Self-supervised task (FAC, fine and coarse).** On the batch's items, the
ID view is aligned with the modalities one after another in a hierarchy of
spaces: :math:`z_1 = g^{id}(i^{id})` against :math:`g^{1}(i^{1})`, then
:math:`z_k = h_k(z_{k-1})` against :math:`g^{k}(i^{k})` for
:math:`k = 2..M` (linear maps, the last space of half width when
:math:`M > 1`), each level with an in-batch cross-entropy on the plain dot
products divided by :math:`\\tau_{ssl}`:

.. math::
    \\mathcal L_{ssl} = \\sum_{k=1}^{M} \\mathrm{CE}\\big(z_k Y_k^\\top / \\tau_{ssl},\\ \\mathrm{diag}\\big),
    \\qquad Y_k = g^k(I^k_B).

**Total.** :math:`\\mathcal L = \\mathcal L_{main} + \\alpha \\mathcal L_{ssl}
+ \\frac{w}{2}\\lVert\\Theta\\rVert^2`; the last term is the reference's Adam
weight decay :math:`w = 10^{-4}` over all parameters (for Adam, an L2 term of
weight :math:`w/2` gives exactly the same updates to every parameter the loss
reaches, which with :math:`\alpha > 0` is every parameter). SLMRec reads no
item-item graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mllmrec_pyg.nn.mm_common import (
    MultimodalModel,
    check_modalities,
    in_batch_softmax,
    layer_mean,
    require_non_negative,
    require_positive,
)
from mllmrec_pyg.nn.registry import BABY_R20, EMBEDDING, LR, register_model


@dataclass
class SLMRecConfig:
    """Hyper-parameters of :class:`SLMRec` (defaults from the authors' configuration).

    Args:
        embedding_dim: :math:`d`.
        num_layers: :math:`L`, LightGCN layers of every view (3).
        temperature: :math:`\\tau` of the main InfoNCE loss (0.2).
        ssl_weight: :math:`\\alpha`, weight of the FAC loss (searched in 0.01,
            0.05, 0.1, 0.5, 1; 0.1 here).
        ssl_temperature: :math:`\\tau_{ssl}` (searched in 0.1, 0.2, 0.5, 1; 0.2 here).
        weight_decay: :math:`w`, L2 on all parameters, as the reference's Adam
            weight decay (1e-4).
        modalities: attributes of ``data["item"]`` holding the (frozen) modality features.
    """

    embedding_dim: int = 64
    num_layers: int = 3
    temperature: float = 0.2
    ssl_weight: float = 0.1
    ssl_temperature: float = 0.2
    weight_decay: float = 1e-4
    modalities: tuple[str, ...] = ("x",)

    def __post_init__(self) -> None:
        self.modalities, _ = check_modalities(self.modalities, None)
        require_positive(self, "embedding_dim", "temperature", "ssl_temperature")
        require_non_negative(self, "num_layers", "ssl_weight", "weight_decay")
        if len(self.modalities) > 1 and self.embedding_dim < 2:
            raise ValueError("embedding_dim must be >= 2 with several modalities")


def _xavier_linear(n_in: int, n_out: int) -> nn.Linear:
    lin = nn.Linear(n_in, n_out)
    nn.init.xavier_uniform_(lin.weight)
    return lin


@register_model(
    "slmrec",
    label="SLMRec",
    space={
        "train.lr": LR,
        "model.ssl_weight": (0.01, 0.05, 0.1, 0.5, 1.0),
        "model.ssl_temperature": (0.1, 0.2, 0.5, 1.0),
    },
    flags={"embedding_dim": EMBEDDING},
    paper={BABY_R20: 0.0810},
)
class SLMRec(MultimodalModel):
    """SLMRec (FAC task) on the package's trainer; see the module docstring for the equations.
    Constructor arguments as in :class:`~mllmrec_pyg.nn.mm_common.MultimodalModel`
    (no ``item_graph``; the features stay frozen and are row-normalised here)."""

    config_class = SLMRecConfig
    constructor_inputs = ("train", "features")

    def __init__(
        self,
        num_users: int,
        num_items: int,
        train_edge_index: Tensor,
        modality_features: Sequence[Tensor],
        config: SLMRecConfig | None = None,
    ) -> None:
        super().__init__(num_users, num_items)
        cfg = self.config = config or SLMRecConfig()
        d = cfg.embedding_dim
        n_mod = self.num_modalities = len(modality_features)
        self._register_ui_adj("ui_adj", train_edge_index.cpu())
        for m, x in enumerate(modality_features):
            self.register_buffer(f"feat_{m}", F.normalize(x.detach().float(), dim=1), False)

        self.user_emb, self.item_emb = self._id_tables(d)
        nn.init.xavier_uniform_(self.user_emb.weight)
        nn.init.xavier_uniform_(self.item_emb.weight)
        self.projections = nn.ModuleList(_xavier_linear(x.size(1), d) for x in modality_features)
        self.user_fusion = _xavier_linear((n_mod + 1) * d, d)
        self.item_fusion = _xavier_linear((n_mod + 1) * d, d)
        # FAC: level k compares the chain (ID side) with modality k in a space of width widths[k]
        widths = [d] * n_mod
        if n_mod > 1:
            widths[-1] = d // 2
        self.ssl_id = _xavier_linear(d, widths[0])
        self.ssl_chain = nn.ModuleList(
            _xavier_linear(widths[k - 1], widths[k]) for k in range(1, n_mod)
        )
        self.ssl_modality = nn.ModuleList(_xavier_linear(d, w) for w in widths)

    # -- representations ------------------------------------------------------------------
    def lightgcn(self, items: Tensor) -> tuple[Tensor, Tensor]:
        """:math:`\\mathrm{LGN}([E_U; items])` split into users and items."""
        ego = torch.cat([self.user_emb.weight, items])
        out = layer_mean(self.ui_adj, ego, self.config.num_layers)
        return out[: self.num_users], out[self.num_users :]

    def views(self) -> list[tuple[Tensor, Tensor]]:
        """The ID view and every modality view, each ``(users [U, d], items [I, d])``."""
        out = [self.lightgcn(self.item_emb.weight)]
        for m, proj in enumerate(self.projections):
            out.append(self.lightgcn(proj(getattr(self, f"feat_{m}"))))
        return out

    def forward_all(self) -> tuple[Tensor, Tensor, list[tuple[Tensor, Tensor]]]:
        """Fused users ``[U, d]``, items ``[I, d]`` and the views they were fused from."""
        views = self.views()
        users = self.user_fusion(torch.cat([v[0] for v in views], dim=1))
        items = self.item_fusion(torch.cat([v[1] for v in views], dim=1))
        return users, items, views

    def representations(self) -> tuple[Tensor, Tensor]:
        users, items, _ = self.forward_all()
        return users, items

    # -- the trainer's interface ----------------------------------------------------------
    def fac_loss(self, views: list[tuple[Tensor, Tensor]], items: Tensor) -> Tensor:
        """:math:`\\mathcal L_{ssl}`: the hierarchy of in-batch alignments on ``items``."""
        t = self.config.ssl_temperature
        uniq, inv = torch.unique(items, return_inverse=True)  # each distinct item projected once
        z = self.ssl_id(views[0][1][uniq])
        total = z.new_zeros(())
        for k in range(self.num_modalities):
            if k > 0:
                z = self.ssl_chain[k - 1](z)
            y = self.ssl_modality[k](views[k + 1][1][uniq])
            total = total + in_batch_softmax(z, y, inv, inv, t)
        return total

    def batch_loss(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor:
        """Main InfoNCE + :math:`\\alpha` FAC + weight decay (``neg_items`` is not used)."""
        cfg = self.config
        u_all, i_all, views = self.forward_all()
        loss = in_batch_softmax(u_all, i_all, users, pos_items, cfg.temperature, normalize=True)
        if cfg.ssl_weight > 0:
            loss = loss + cfg.ssl_weight * self.fac_loss(views, pos_items)
        if cfg.weight_decay > 0:
            sq = sum(p.pow(2).sum() for p in self.parameters() if p.requires_grad)
            loss = loss + 0.5 * cfg.weight_decay * sq
        return loss

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"{super().extra_repr()}, layers={c.num_layers}, ssl_weight={c.ssl_weight}, "
            f"modalities={c.modalities}"
        )


__all__ = ["SLMRec", "SLMRecConfig"]
