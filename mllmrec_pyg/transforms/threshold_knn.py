"""Semantic item-item graph: cosine top-K with a similarity threshold, exact or approximate."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.transforms import BaseTransform
from torch_geometric.utils import coalesce

from mllmrec_pyg.data.schema import item_edge_type, require_node_type
from mllmrec_pyg.transforms._ann import (
    AUTO_EXACT_MAX_CPU,
    AUTO_EXACT_MAX_CUDA,
    BACKENDS,
    ZERO_NORM_EPS,
    FeatureRows,
    IndexParams,
    faiss_available,
    faiss_candidates,
    join_candidates,
    topk_by_value_then_id,
    unit_rows,
)
from mllmrec_pyg.transforms._checks import (
    check_bool,
    check_choice,
    check_cosine,
    check_name,
    check_positive_int,
)

__all__ = ["ThresholdKNN", "threshold_knn_graph", "IndexParams", "ZERO_NORM_EPS"]

log = logging.getLogger(__name__)

#: Query rows per faiss search call (bounds the per-block candidate arrays).
INDEX_BLOCK = 16384


def _check_k(k: int, name: str = "k") -> int:
    try:
        return check_positive_int(k, name)  # type: ignore[return-value]
    except TypeError as err:  # keep one exception type for the common mistake
        raise ValueError(str(err)) from None


def _default_block(n: int, budget_bytes: int = 64 * 2**20) -> int:
    return max(1, min(n, budget_bytes // (4 * max(n, 1))))


def resolve_backend(backend: str, n: int, device: torch.device) -> str:
    """The backend ``"auto"`` stands for at ``n`` rows on ``device``."""
    if backend != "auto":
        return backend
    limit = AUTO_EXACT_MAX_CUDA if device.type == "cuda" else AUTO_EXACT_MAX_CPU
    if n <= limit:
        return "torch"
    if not faiss_available():
        warnings.warn(
            f"ThresholdKNN(backend='auto'): {n} rows, but faiss is not installed "
            '(pip install "mllmrec-pyg[faiss]"); running the exact search, which is '
            "quadratic in the number of rows",
            stacklevel=3,
        )
        return "torch"
    return "ivfjoin"


def _empty(device: torch.device) -> tuple[Tensor, Tensor]:
    return torch.empty(2, 0, dtype=torch.long, device=device), torch.empty(0, device=device)


@torch.no_grad()
def threshold_knn_graph(
    x: Tensor | np.ndarray,
    k: int = 10,
    threshold: float | None = 0.7,
    loop: bool = True,
    block_size: int | None = None,
    backend: str = "torch",
    index_params: IndexParams | None = None,
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

    ``backend="torch"`` builds the similarity matrix ``block_size`` owner rows
    at a time, so memory is :math:`O(\text{block} \cdot N)`, never
    :math:`O(N^2)`, but time is :math:`O(N^2 d)`. The index backends
    (``"faiss"`` exact flat; ``"ivfjoin"``, ``"ivf"``, ``"ivfpq"``, ``"hnsw"``
    approximate) fetch candidates from an index, order them by (similarity descending, id
    ascending) and apply the same ``loop``, threshold and zero-norm rules;
    IVF-PQ candidates are re-scored exactly from ``x`` first. An approximate
    index can only miss neighbours: every edge it returns has the exact
    similarity it was kept for. ``backend="auto"`` is ``"torch"`` up to
    50,000 rows on the CPU (1,000,000 on CUDA) and ``"ivfjoin"`` beyond.

    Args:
        x: features ``[N, d]``: a tensor of any float dtype, or a NumPy array
            (memory-mapped ``.npy`` included), read in float32 blocks.
        k, threshold, loop: as in :class:`ThresholdKNN`.
        block_size: owner rows per block (default: 64 MB of similarities for
            ``"torch"``, 16,384 queries for the faiss backends).
        backend: see above.
        index_params: faiss build and search parameters.

    Returns:
        ``edge_index`` ``[2, E]`` with ``edge_index[1]`` the owner and
        ``edge_index[0]`` the neighbour, sorted by owner then neighbour, and
        ``edge_weight`` (all ones) ``[E]``.
    """
    _check_k(k)
    threshold = check_cosine(threshold, "threshold")
    check_choice(backend, "backend", BACKENDS)
    check_positive_int(block_size, "block_size", allow_none=True)
    rows = FeatureRows(x, "x")
    n, device = rows.n, rows.device
    k_eff = min(k, n if loop else n - 1)
    if n == 0 or k_eff <= 0:
        return _empty(device)
    backend = resolve_backend(backend, n, device)
    if backend != "torch":
        return _index_graph(
            rows, k_eff, threshold, loop, backend, index_params or IndexParams(), block_size
        )
    xn, zero = unit_matrix(x)
    block = block_size or _default_block(n)
    any_zero = bool(zero.any())
    srcs, dsts = [], []
    for start in range(0, n, block):
        src, dst = exact_block(
            xn, zero, any_zero, start, min(start + block, n), k_eff, loop, threshold
        )
        srcs.append(src)
        dsts.append(dst)
    edge_index = torch.stack([torch.cat(srcs), torch.cat(dsts)])
    edge_index = coalesce(edge_index, num_nodes=n, sort_by_row=False)
    return edge_index, torch.ones(edge_index.size(1), device=device)


#: Similarity rows come from products of at least this many rows: BLAS computes a
#: one- or two-row product by another kernel, whose rounding differs, and every
#: path (in-process, distributed, incremental) must see the same similarities.
MIN_PRODUCT_ROWS = 8


def unit_matrix(x: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    """Unit float32 rows of ``x`` (zero-norm rows zero) and the zero-norm mask."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.array(x, dtype=np.float32))
    x = x.float()
    norms = x.norm(dim=1)
    zero = norms < ZERO_NORM_EPS
    xn = x / norms.clamp_min(ZERO_NORM_EPS).unsqueeze(1)
    xn[zero] = 0.0
    return xn, zero


def similarity_rows(
    xn: Tensor, start: int, stop: int, cols: Tensor | slice = slice(None)
) -> Tensor:
    """Cosines of rows ``start:stop`` with rows ``cols`` of ``xn`` (unit rows), from a
    product of at least :data:`MIN_PRODUCT_ROWS` rows."""
    lo = max(0, min(start, stop - MIN_PRODUCT_ROWS))
    return (xn[lo:stop] @ xn[cols].t())[start - lo :]


def exact_block(
    xn: Tensor,
    zero: Tensor,
    any_zero: bool,
    start: int,
    stop: int,
    k_eff: int,
    loop: bool,
    threshold: float | None,
) -> tuple[Tensor, Tensor]:
    """Edges ``(neighbours, owners)`` of owners ``start:stop``, exact: each owner's
    ``k_eff`` most similar rows, ties at the ``k_eff``-th value to the lower id."""
    device = xn.device
    rows_ = torch.arange(start, stop, device=device)
    sim = similarity_rows(xn, start, stop)
    if any_zero:
        sim[:, zero] = float("-inf")
    sim[rows_ - start, rows_] = float("inf") if loop else float("-inf")
    vals, cols = topk_by_value_then_id(sim, k_eff)
    if loop:
        vals = torch.where(torch.isposinf(vals), torch.ones_like(vals), vals)
    keep = torch.isfinite(vals)
    if threshold is not None:
        keep &= vals >= threshold
    if any_zero:
        keep &= ~zero[start:stop].unsqueeze(1)
    return cols[keep], rows_.unsqueeze(1).expand_as(cols)[keep]


def _rescore(rows: FeatureRows, norms: Tensor, owners: Tensor, nbrs: Tensor) -> Tensor:
    """Exact float32 cosine of each owner with its candidates (``-inf`` where missing)."""
    out = torch.empty(nbrs.shape, dtype=torch.float32)
    step = max(1, 2**22 // max(1, nbrs.size(1) * rows.dim))  # ~16 MB of gathered rows
    for s in range(0, owners.numel(), step):
        q = unit_rows(rows, norms, owners[s : s + step]).cpu()
        c = nbrs[s : s + step]
        cand = unit_rows(rows, norms, c.clamp_min(0).flatten()).cpu().view(*c.shape, -1)
        out[s : s + step] = torch.einsum("bd,bcd->bc", q, cand)
    return torch.where(nbrs >= 0, out, float("-inf"))


def _index_graph(
    rows: FeatureRows,
    k_eff: int,
    threshold: float | None,
    loop: bool,
    backend: str,
    params: IndexParams,
    block_size: int | None,
) -> tuple[Tensor, Tensor]:
    n, device = rows.n, rows.device
    block = block_size or INDEX_BLOCK
    norms = rows.norms(block)
    zero = (norms < ZERO_NORM_EPS).cpu()
    k_others = min(k_eff - 1 if loop else k_eff, n - 1)
    srcs, dsts = [], []
    if k_others > 0 and int((~zero).sum()) > 1:
        default = 4 * (k_others + 1) if backend == "ivfpq" else k_others + 4
        num_candidates = max(params.candidates or default, k_others + 1)
        if backend == "ivfjoin":
            blocks = join_candidates(rows, norms, num_candidates, params, block)
        else:
            blocks = faiss_candidates(rows, norms, backend, num_candidates, params, block)
        for owners, nbrs, sims in blocks:
            if backend == "ivfpq":
                sims = _rescore(rows, norms, owners, nbrs)
            src, dst = finish_candidates(owners, nbrs, sims, n, k_others, threshold)
            srcs.append(src)
            dsts.append(dst)
    return assemble_index_graph(srcs, dsts, zero, n, loop, threshold, device)


def finish_candidates(
    owners: Tensor, nbrs: Tensor, sims: Tensor, n: int, k_others: int, threshold: float | None
) -> tuple[Tensor, Tensor]:
    """Edges ``(neighbours, owners)`` from index candidates (``-1`` where missing): the
    ``k_others`` best other rows by (similarity descending, id ascending), thresholded."""
    valid = (nbrs >= 0) & (nbrs != owners.unsqueeze(1))
    sims = torch.where(valid, sims, float("-inf"))
    # order by similarity descending, ties to the lower id
    order = torch.argsort(torch.where(valid, nbrs, n), dim=1, stable=True)
    nbrs, sims = nbrs.gather(1, order), sims.gather(1, order)
    order = torch.argsort(-sims, dim=1, stable=True)[:, :k_others]
    nbrs, sims = nbrs.gather(1, order), sims.gather(1, order)
    keep = torch.isfinite(sims)
    if threshold is not None:
        keep &= sims >= threshold
    return nbrs[keep], owners.unsqueeze(1).expand_as(nbrs)[keep]


def assemble_index_graph(
    srcs: list[Tensor],
    dsts: list[Tensor],
    zero: Tensor,
    n: int,
    loop: bool,
    threshold: float | None,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """The index backends' graph: candidate edges plus self-loops, coalesced."""
    srcs, dsts = list(srcs), list(dsts)
    if loop and (threshold is None or threshold <= 1.0):
        selfs = (~zero).nonzero().flatten()
        srcs.append(selfs)
        dsts.append(selfs)
    if not srcs:
        return _empty(device)
    edge_index = coalesce(
        torch.stack([torch.cat(srcs), torch.cat(dsts)]), num_nodes=n, sort_by_row=False
    ).to(device)
    return edge_index, torch.ones(edge_index.size(1), device=device)


class ThresholdKNN(BaseTransform):
    r"""Builds ``data[node_type, relation, node_type]`` from ``data[node_type].x``:
    cosine top-:math:`K_s` neighbours whose similarity is at least
    :math:`\alpha` (Eq. 6-7 of MLLMRec), edges of weight 1.

    .. math::
        \tilde{S}_{ab} = \mathbb{1}\left[b \in \mathrm{top}K_s(\cos(x_a, x_{\cdot}))
        \wedge \cos(x_a, x_b) \geq \alpha\right]

    Edges point from neighbour to owner (``edge_index[1]`` is the item whose
    top-:math:`K_s` list produced the edge). Works on the device of ``x``.

    The exact search costs :math:`O(N^2 d)`: about 5 s for 23k items on two
    CPU cores, days for :math:`10^6`. The approximate backends search a faiss
    index instead (``pip install "mllmrec-pyg[faiss]"``):

    * ``"ivfjoin"`` (IVF self-join, the large-catalogue default): spherical
      k-means (faiss) into ``nlist`` cells, every item probes its ``nprobe``
      nearest cells as an IVF query would, but because the queries are the
      items themselves all owners probing a cell are scored against its
      members by one dense product (torch, on the device of ``x``). Same
      recall as ``"ivf"`` at equal ``nlist``/``nprobe``, several times
      faster on the CPU; exact at ``nprobe >= nlist``. Holds one float32 copy
      of the unit features. Cost :math:`\approx 2N\sqrt{\text{nprobe}\,N}\,d`.
    * ``"ivf"`` (IVF-Flat): k-means into ``nlist`` cells, each query scans the
      ``nprobe`` nearest cells. Cost per query :math:`\approx
      (\text{nlist} + \text{nprobe} \cdot N/\text{nlist})\, d`; recall rises
      with ``nprobe`` and is exact at ``nprobe >= nlist``. The index holds a
      float32 copy of the unit features (:math:`4Nd` bytes).
    * ``"ivfpq"`` (IVF-PQ): the same cells, vectors compressed to ``pq_m``
      bytes; candidates (``4K`` by default) are re-scored exactly from ``x``.
      The least memory, the most recall lost to compression.
    * ``"hnsw"``: a proximity graph of degree ``hnsw_m``; high recall at
      small ``ef_search`` but a slow, single-pass build (CPU only).
    * ``"faiss"``: exact flat search, the reference for the others.

    Whatever the backend, the rules stay those of the exact search: the
    threshold is applied to exact similarities, ``loop`` adds the self-loop,
    zero-norm rows get no edges, and ties at the :math:`K`-th value go to the
    lower item id among the candidates (the ``"torch"`` backend among all
    items, so that a distributed or incremental build gives the same graph).
    With a CUDA ``x`` and a faiss built with GPU
    support the IVF and flat indexes run on the GPU (the GPU caps ``nprobe``
    and :math:`K` at 2048); otherwise on the CPU.

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
        block_size (int, optional): owner rows per similarity block (exact)
            or per index query block (faiss).
        x_key (str): attribute holding the features: a float tensor (float16
            is read in float32 blocks) or a NumPy array such as
            ``np.load("x.npy", mmap_mode="r")`` (faiss backends read it in
            blocks; ``"torch"`` converts it to one float32 tensor).
        backend (str): ``"torch"`` (default, blocked exact product on the
            device of ``x``), ``"auto"`` (``"torch"`` up to 50,000 items on the
            CPU or 1,000,000 on CUDA, ``"ivfjoin"`` beyond), ``"faiss"``,
            ``"ivfjoin"``, ``"ivf"``, ``"ivfpq"`` or ``"hnsw"``.
        nlist (int, optional): IVF cells (default :math:`\sqrt{\text{nprobe}\,N}`
            for ``"ivfjoin"``, :math:`4\sqrt{N}` for ``"ivf"``/``"ivfpq"``).
        nprobe (int): IVF cells scanned per query (default 8).
        pq_m (int): IVF-PQ bytes per vector; must divide the dimension.
        pq_bits (int): bits per IVF-PQ sub-code.
        hnsw_m (int): HNSW degree.
        ef_construction (int): HNSW build beam.
        ef_search (int): HNSW search beam.
        train_size (int, optional): k-means sample (default ``64 * nlist``,
            ``16 * nlist`` for ``"ivfjoin"``).
        candidates (int, optional): neighbours fetched per owner before the
            threshold (default :math:`K_s + 4`, IVF-PQ :math:`4K_s`).
        seed (int): seeds the k-means sample.
        executor (distributed.Client, optional): run the search as tasks on
            this Dask cluster (``"torch"`` and ``"ivfjoin"``; same edges as
            in-process). Features held as a memory-mapped ``.npy`` are read by
            the workers from the file; others are scattered to them.
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
        *,
        nlist: int | None = None,
        nprobe: int = 8,
        pq_m: int = 48,
        pq_bits: int = 8,
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 64,
        train_size: int | None = None,
        candidates: int | None = None,
        seed: int = 0,
        executor: Any = None,
    ) -> None:
        from mllmrec_pyg.transforms.distributed import check_executor

        self.executor = check_executor(executor, "ThresholdKNN")
        if executor is not None and backend not in ("torch", "ivfjoin", "auto"):
            raise ValueError(
                f"ThresholdKNN(executor=...) runs backend 'torch', 'ivfjoin' or 'auto', "
                f"got backend={backend!r}"
            )
        self.k = _check_k(k)
        self.threshold = check_cosine(threshold, "threshold")
        self.loop = check_bool(loop, "loop")
        self.node_type = check_name(node_type, "node_type")
        self.relation = check_name(relation, "relation")
        self.block_size = check_positive_int(block_size, "block_size", allow_none=True)
        self.x_key = check_name(x_key, "x_key")
        self.backend = check_choice(backend, "backend", BACKENDS)
        self.index_params = IndexParams(
            nlist=nlist, nprobe=nprobe, pq_m=pq_m, pq_bits=pq_bits, hnsw_m=hnsw_m,
            ef_construction=ef_construction, ef_search=ef_search, train_size=train_size,
            candidates=candidates, seed=seed,
        )  # fmt: skip

    def forward(self, data: HeteroData) -> HeteroData:
        n = require_node_type(data, self.node_type)
        what = f"data[{self.node_type!r}].{self.x_key}"
        rows = FeatureRows(data[self.node_type].get(self.x_key), what)
        rows.check_finite(self.block_size or INDEX_BLOCK)
        if rows.n != n:
            raise ValueError(f"{what} has {rows.n} rows for {n} nodes")
        if self.executor is not None:
            from mllmrec_pyg.transforms.distributed import distributed_threshold_knn

            edge_index, edge_weight = distributed_threshold_knn(
                self.executor, rows.x, self.k, self.threshold, self.loop, self.block_size,
                self.backend, self.index_params,
            )  # fmt: skip
            store = data[item_edge_type(self.node_type, self.relation)]
            store.edge_index, store.edge_weight = (
                edge_index.to(rows.device),
                edge_weight.to(rows.device),
            )
            return data
        edge_index, edge_weight = threshold_knn_graph(
            rows.x,
            self.k,
            self.threshold,
            self.loop,
            self.block_size,
            self.backend,
            self.index_params,
        )
        store = data[item_edge_type(self.node_type, self.relation)]
        store.edge_index, store.edge_weight = edge_index, edge_weight
        return data

    def __repr__(self) -> str:
        extra = "" if self.backend == "torch" else f", backend={self.backend!r}"
        return (
            f"{self.__class__.__name__}(k={self.k}, threshold={self.threshold}, "
            f"loop={self.loop}, relation={self.relation!r}{extra})"
        )
