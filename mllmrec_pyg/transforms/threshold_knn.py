"""Semantic item-item graph: exact cosine top-K with a similarity threshold."""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.transforms import BaseTransform
from torch_geometric.utils import coalesce

from mllmrec_pyg.data.schema import check_features, item_edge_type, require_node_type

#: Rows whose L2 norm is below this are "zero-norm": they get no semantic edges.
ZERO_NORM_EPS = 1e-12


def _check_k(k: int, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise ValueError(f"{name} must be a positive integer, got {k!r}")
    return k


def _default_block(n: int, budget_bytes: int = 64 * 2**20) -> int:
    return max(1, min(n, budget_bytes // (4 * max(n, 1))))


def _faiss_neighbours(xn: Tensor, zero: Tensor, k_others: int) -> tuple[Tensor, Tensor, Tensor]:
    """Exact inner-product top-``k_others`` non-self neighbours via faiss.

    Returns ``(owners, neighbours [m, k_others], similarities [m, k_others])``
    for the non-zero rows; missing slots have similarity ``-inf``.
    """
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "ThresholdKNN(backend='faiss') needs faiss: pip install 'mllmrec-pyg[faiss]'"
        ) from err
    owners = (~zero).nonzero().flatten()
    m = owners.numel()
    sub = xn[owners].detach().cpu().float().contiguous().numpy()
    index = faiss.IndexFlatIP(sub.shape[1])
    index.add(sub)
    sims, idx = index.search(sub, min(k_others + 1, m))
    sims = torch.from_numpy(sims).to(xn.device)
    cols = owners[torch.from_numpy(idx).to(xn.device).clamp_min(0)]
    sims = torch.where(torch.from_numpy(idx).to(xn.device) < 0, float("-inf"), sims)
    not_self = cols != owners.unsqueeze(1)
    order = torch.argsort((~not_self).to(torch.int8), dim=1, stable=True)[:, :k_others]
    cols, sims = cols.gather(1, order), sims.gather(1, order)
    sims = torch.where(not_self.gather(1, order), sims, float("-inf"))
    return owners, cols, sims


@torch.no_grad()
def threshold_knn_graph(
    x: Tensor,
    k: int = 10,
    threshold: float | None = 0.7,
    loop: bool = True,
    block_size: int | None = None,
    backend: str = "torch",
) -> tuple[Tensor, Tensor]:
    r"""Edges of the thresholded cosine top-:math:`K` graph of the rows of ``x``.

    For each owner :math:`a`, its :math:`K` most cosine-similar rows are kept
    when their similarity is at least ``threshold`` (Eq. 6-7 of MLLMRec):

    .. math::
        \tilde{S}_{ab} = \mathbb{1}\left[b \in \mathrm{top}K(s_{a\cdot})
        \wedge s_{ab} \geq \alpha\right]

    With ``loop=True`` the owner is one of its own top-:math:`K` (cosine 1),
    so it keeps a self-loop and at most :math:`K-1` other neighbours, as in the
    reference implementation; with ``loop=False`` the owner is excluded and up
    to :math:`K` others are kept. Rows with zero norm have no direction: they
    get no edges, neither as owner nor as neighbour.

    The similarity matrix is built ``block_size`` owner rows at a time, so
    memory is :math:`O(\text{block} \cdot N)`, never :math:`O(N^2)`. With
    ``backend="faiss"`` an exact ``IndexFlatIP`` search on the CPU replaces
    the blocked product (same result up to ties at the :math:`K`-th value).

    Returns:
        ``edge_index`` ``[2, E]`` with ``edge_index[1]`` the owner and
        ``edge_index[0]`` the neighbour, sorted by owner then neighbour, and
        ``edge_weight`` (all ones) ``[E]``.
    """
    _check_k(k)
    n = x.size(0)
    device = x.device
    x = x.float()
    norms = x.norm(dim=1)
    zero = norms < ZERO_NORM_EPS
    xn = x / norms.clamp_min(ZERO_NORM_EPS).unsqueeze(1)
    xn[zero] = 0.0
    k_eff = min(k, n if loop else n - 1)
    if n == 0 or k_eff <= 0:
        empty = torch.empty(2, 0, dtype=torch.long, device=device)
        return empty, torch.empty(0, device=device)
    if backend == "faiss":
        return _faiss_graph(xn, zero, k_eff, threshold, loop)
    if backend != "torch":
        raise ValueError(f"backend must be 'torch' or 'faiss', got {backend!r}")
    block = block_size or _default_block(n)
    any_zero = bool(zero.any())
    srcs, dsts = [], []
    for start in range(0, n, block):
        stop = min(start + block, n)
        rows = torch.arange(start, stop, device=device)
        sim = xn[start:stop] @ xn.t()
        if any_zero:
            sim[:, zero] = float("-inf")
        sim[rows - start, rows] = float("inf") if loop else float("-inf")
        vals, cols = sim.topk(k_eff, dim=1)
        if loop:
            vals = torch.where(torch.isposinf(vals), torch.ones_like(vals), vals)
        keep = torch.isfinite(vals)
        if threshold is not None:
            keep &= vals >= threshold
        if any_zero:
            keep &= ~zero[start:stop].unsqueeze(1)
        srcs.append(cols[keep])
        dsts.append(rows.unsqueeze(1).expand_as(cols)[keep])
    edge_index = torch.stack([torch.cat(srcs), torch.cat(dsts)])
    edge_index = coalesce(edge_index, num_nodes=n, sort_by_row=False)
    return edge_index, torch.ones(edge_index.size(1), device=device)


def _faiss_graph(
    xn: Tensor, zero: Tensor, k_eff: int, threshold: float | None, loop: bool
) -> tuple[Tensor, Tensor]:
    n, device = xn.size(0), xn.device
    k_others = min(k_eff - 1 if loop else k_eff, n - 1)
    srcs, dsts = [], []
    if k_others > 0 and int((~zero).sum()) > 1:
        owners, cols, sims = _faiss_neighbours(xn, zero, k_others)
        keep = torch.isfinite(sims)
        if threshold is not None:
            keep &= sims >= threshold
        srcs.append(cols[keep])
        dsts.append(owners.unsqueeze(1).expand_as(cols)[keep])
    if loop and (threshold is None or threshold <= 1.0):
        selfs = (~zero).nonzero().flatten()
        srcs.append(selfs)
        dsts.append(selfs)
    if not srcs:
        empty = torch.empty(2, 0, dtype=torch.long, device=device)
        return empty, torch.empty(0, device=device)
    edge_index = coalesce(
        torch.stack([torch.cat(srcs), torch.cat(dsts)]), num_nodes=n, sort_by_row=False
    )
    return edge_index, torch.ones(edge_index.size(1), device=device)


class ThresholdKNN(BaseTransform):
    r"""Builds ``data[node_type, relation, node_type]`` from ``data[node_type].x``:
    exact cosine top-:math:`K_s` neighbours whose similarity is at least
    :math:`\alpha` (Eq. 6-7 of MLLMRec), edges of weight 1.

    .. math::
        \tilde{S}_{ab} = \mathbb{1}\left[b \in \mathrm{top}K_s(\cos(x_a, x_{\cdot}))
        \wedge \cos(x_a, x_b) \geq \alpha\right]

    Edges point from neighbour to owner (``edge_index[1]`` is the item whose
    top-:math:`K_s` list produced the edge). Works on the device of ``x``.

    Args:
        k (int): :math:`K_s`, neighbours per item; clamped to the number of
            items (minus one without self-loops).
        threshold (float, optional): :math:`\alpha`; ``None`` keeps the plain
            top-:math:`K_s` graph (the paper's "w/o GD" variant).
        loop (bool): count the item itself as one of its top-:math:`K_s`
            (cosine 1), as the reference implementation does, giving every item
            a self-loop and at most :math:`K_s-1` other neighbours.
        node_type (str): node type holding the features.
        relation (str): relation name of the output edge type.
        block_size (int, optional): owner rows per similarity block.
        x_key (str): attribute holding the features.
        backend (str): ``"torch"`` (blocked exact product, CPU or CUDA) or
            ``"faiss"`` (exact ``IndexFlatIP`` search on the CPU; needs the
            ``[faiss]`` extra).
    """

    def __init__(
        self,
        k: int = 10,
        threshold: float | None = 0.7,
        loop: bool = True,
        node_type: str = "item",
        relation: str = "semantic",
        block_size: int | None = None,
        x_key: str = "x",
        backend: str = "torch",
    ) -> None:
        self.k = _check_k(k)
        if backend not in ("torch", "faiss"):
            raise ValueError(f"backend must be 'torch' or 'faiss', got {backend!r}")
        self.backend = backend
        if threshold is not None and not (-1.0 <= float(threshold) <= 1.0):
            raise ValueError(f"threshold must be a cosine in [-1, 1] or None, got {threshold!r}")
        self.threshold = threshold
        self.loop = loop
        self.node_type = node_type
        self.relation = relation
        self.block_size = block_size
        self.x_key = x_key

    def forward(self, data: HeteroData) -> HeteroData:
        n = require_node_type(data, self.node_type)
        x = check_features(
            data[self.node_type].get(self.x_key), f"data[{self.node_type!r}].{self.x_key}"
        )
        if x.size(0) != n:
            raise ValueError(
                f"data[{self.node_type!r}].{self.x_key} has {x.size(0)} rows for {n} nodes"
            )
        edge_index, edge_weight = threshold_knn_graph(
            x, self.k, self.threshold, self.loop, self.block_size, self.backend
        )
        store = data[item_edge_type(self.node_type, self.relation)]
        store.edge_index = edge_index
        store.edge_weight = edge_weight
        return data

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(k={self.k}, threshold={self.threshold}, "
            f"loop={self.loop}, relation={self.relation!r})"
        )
