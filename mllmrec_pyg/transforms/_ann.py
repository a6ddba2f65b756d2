"""Feature access in row blocks and faiss nearest-neighbour search for :class:`ThresholdKNN`.

Features may be a :class:`torch.Tensor` (any float dtype, CPU or CUDA) or a
NumPy array, a memory-mapped ``.npy`` included (``np.load(path, mmap_mode="r")``).
They are read ``block`` rows at a time and converted to float32 only for the
block being computed, so float16 storage or a memory map is never copied whole.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mllmrec_pyg.data.schema import SchemaError
from mllmrec_pyg.transforms._checks import check_positive_int

log = logging.getLogger(__name__)

#: Rows whose L2 norm is below this are "zero-norm": they get no semantic edges.
ZERO_NORM_EPS = 1e-12

#: Backends served by faiss: ``"faiss"`` is exact (flat), the others approximate.
FAISS_BACKENDS = ("faiss", "ivf", "ivfpq", "hnsw", "ivfjoin")
BACKENDS = ("auto", "torch", *FAISS_BACKENDS)

#: ``backend="auto"`` runs the exact blocked product up to this many rows on the
#: CPU (Clothing, 23k items, takes about 5 s on 2 cores; 50k about 20 s) ...
AUTO_EXACT_MAX_CPU = 50_000
#: ... and up to this many on a CUDA device.
AUTO_EXACT_MAX_CUDA = 1_000_000

_FAISS_HINT = 'pip install "mllmrec-pyg[faiss]"'


def import_faiss(what: str) -> Any:
    """Import faiss lazily; a missing faiss raises naming the ``faiss`` extra."""
    try:
        import faiss
    except ImportError as err:
        raise ImportError(
            f"{what} needs faiss, an optional dependency: {_FAISS_HINT} "
            "(or faiss-gpu from conda for CUDA)"
        ) from err
    return faiss


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


class FeatureRows:
    """Read-only row-block view of a feature matrix held as a tensor or a NumPy array."""

    def __init__(self, x: Tensor | np.ndarray, what: str) -> None:
        if isinstance(x, Tensor):
            if x.dim() != 2:
                raise SchemaError(f"{what} must be 2-D [num_nodes, dim], got {tuple(x.shape)}")
            if not x.is_floating_point():
                raise SchemaError(f"{what} must be floating point, got {x.dtype}")
            self.device = x.device
        elif isinstance(x, np.ndarray):
            if x.ndim != 2:
                raise SchemaError(f"{what} must be 2-D [num_nodes, dim], got {x.shape}")
            if x.dtype.kind != "f":
                raise SchemaError(f"{what} must be floating point, got {x.dtype}")
            self.device = torch.device("cpu")
        elif x is None:
            raise SchemaError(f"{what} is missing: encode text first (see mllmrec_pyg.encode)")
        else:
            raise SchemaError(
                f"{what} must be a torch.Tensor or a NumPy array, got {type(x).__name__}"
            )
        self.x = x
        self.what = what
        self.n, self.dim = int(x.shape[0]), int(x.shape[1])

    def block(self, start: int, stop: int) -> Tensor:
        """Rows ``start:stop`` as a float32 tensor on :attr:`device`."""
        rows = self.x[start:stop]
        if isinstance(rows, np.ndarray):
            return torch.from_numpy(np.array(rows, dtype=np.float32))
        return rows.float()

    def take(self, ids: Tensor) -> Tensor:
        """Rows ``ids`` as a float32 tensor on :attr:`device`."""
        if isinstance(self.x, Tensor):
            return self.x[ids.to(self.x.device)].float()
        return torch.from_numpy(np.array(self.x[ids.cpu().numpy()], dtype=np.float32))

    def check_finite(self, block: int) -> None:
        """Raise :class:`SchemaError` naming the rows that hold NaN or inf."""
        bad = []
        for start in range(0, self.n, block):
            rows = self.block(start, min(start + block, self.n))
            found = (~torch.isfinite(rows)).any(dim=1).nonzero().flatten()
            bad.append(found.cpu() + start)
        bad_ids = torch.cat(bad) if bad else torch.empty(0, dtype=torch.long)
        if bad_ids.numel():
            shown = ", ".join(str(i) for i in bad_ids[:10].tolist())
            more = f" (+{bad_ids.numel() - 10} more)" if bad_ids.numel() > 10 else ""
            raise SchemaError(
                f"{self.what} has NaN or inf in {bad_ids.numel()} row(s): [{shown}]{more}; "
                f"first bad row {int(bad_ids[0])}"
            )

    def norms(self, block: int) -> Tensor:
        """L2 norm of every row (float32, on :attr:`device`)."""
        return (
            torch.cat(
                [self.block(s, min(s + block, self.n)).norm(dim=1) for s in range(0, self.n, block)]
            )
            if self.n
            else torch.empty(0, device=self.device)
        )


def normalise(rows: Tensor, norms: Tensor) -> Tensor:
    """Unit rows; zero-norm rows become zero (same arithmetic as the exact path)."""
    out = rows / norms.clamp_min(ZERO_NORM_EPS).unsqueeze(1)
    out[norms < ZERO_NORM_EPS] = 0.0
    return out


def unit_rows(rows: FeatureRows, norms: Tensor, ids: Tensor) -> Tensor:
    """Unit-normalised float32 rows ``ids``."""
    return normalise(rows.take(ids), norms[ids.to(norms.device)])


def topk_by_value_then_id(vals: Tensor, k: int, ids: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per row, the positions of the ``k`` largest ``vals`` under a total order:
    value descending, then ``ids`` ascending (column position when ``ids`` is
    ``None``). Returns ``(values, positions)``, values descending.

    ``torch.topk`` alone picks among values tied at the ``k``-th place as its
    implementation happens to; here the lower id always wins, so the selection
    depends only on the set of (value, id) pairs, not on how rows were split or
    merged. Rows whose ``k``-th value is ``-inf`` (empty slots) are left as
    ``torch.topk`` returns them: such entries are dropped downstream.
    """
    v, pos = vals.topk(k, dim=1)
    if k >= vals.size(1) or vals.numel() == 0:
        return v, pos
    kth = v[:, -1:]
    tied = (((vals >= kth).sum(1) > k) & torch.isfinite(kth[:, 0])).nonzero().flatten()
    if tied.numel():
        sub = vals[tied]
        if ids is None:
            order = torch.argsort(-sub, dim=1, stable=True)[:, :k]
        else:
            by_id = torch.argsort(ids[tied], dim=1, stable=True)
            order = by_id.gather(1, torch.argsort(-sub.gather(1, by_id), dim=1, stable=True))
            order = order[:, :k]
        pos[tied] = order
        v[tied] = sub.gather(1, order)
    return v, pos


@dataclass(frozen=True)
class IndexParams:
    r"""Build and search parameters of the faiss indexes.

    Args:
        nlist (int, optional): IVF cells; default :math:`4\sqrt{N}` (at least 1,
            at most :math:`N/39` so that k-means has enough points per cell).
        nprobe (int): IVF cells scanned per query. ``nprobe >= nlist`` makes
            IVF exhaustive (exact up to floating point).
        pq_m (int): IVF-PQ sub-quantisers; must divide the feature dimension.
        pq_bits (int): bits per IVF-PQ code.
        hnsw_m (int): HNSW graph degree.
        ef_construction (int): HNSW build beam width.
        ef_search (int): HNSW search beam width.
        train_size (int, optional): points sampled to train IVF k-means;
            default ``64 * nlist``.
        candidates (int, optional): neighbours fetched from the index per
            owner before the exact re-scoring and the threshold; default
            :math:`K + 4` (IVF-Flat, HNSW, flat) or :math:`4K` (IVF-PQ).
        seed (int): seeds the k-means training sample.
    """

    nlist: int | None = None
    nprobe: int = 8
    pq_m: int = 48
    pq_bits: int = 8
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 64
    train_size: int | None = None
    candidates: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("nprobe", "pq_m", "pq_bits", "hnsw_m", "ef_construction", "ef_search"):
            check_positive_int(getattr(self, name), name)
        for name in ("nlist", "train_size", "candidates"):
            check_positive_int(getattr(self, name), name, allow_none=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an integer, got {self.seed!r}")
        if self.pq_bits > 16:
            raise ValueError(f"pq_bits must be at most 16, got {self.pq_bits}")

    def nlist_for_join(self, m: int) -> int:
        r"""Cells for the self-join: balances assignment (``m * nlist``) against
        the join (``m * nprobe * m / nlist``) at :math:`\sqrt{\text{nprobe}\, m}`."""
        if self.nlist is not None:
            return min(self.nlist, m)
        return int(max(1, min(round((self.nprobe * m) ** 0.5), m // 8)))

    def nlist_for(self, m: int) -> int:
        if self.nlist is not None:
            return min(self.nlist, m)
        return int(max(1, min(round(4 * m**0.5), m // 39)))


def _gpu_resources(faiss: Any, device: torch.device) -> Any | None:
    if device.type != "cuda":
        return None
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        log.info("faiss has no GPU support here: searching on the CPU")
        return None
    return faiss.StandardGpuResources()


def build_index(
    faiss: Any, backend: str, dim: int, m: int, params: IndexParams, device: torch.device
) -> tuple[Any, bool]:
    """An empty (untrained) inner-product index; ``True`` when it lives on a GPU."""
    metric = faiss.METRIC_INNER_PRODUCT
    if backend == "faiss":
        index = faiss.IndexFlatIP(dim)
    elif backend == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params.hnsw_m, metric)
        index.hnsw.efConstruction = params.ef_construction
        index.hnsw.efSearch = params.ef_search
    else:
        nlist = params.nlist_for(m)
        quantizer = faiss.IndexFlatIP(dim)
        if backend == "ivf":
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, metric)
        else:
            if dim % params.pq_m:
                raise ValueError(
                    f"pq_m={params.pq_m} must divide the feature dimension {dim} for IVF-PQ"
                )
            index = faiss.IndexIVFPQ(quantizer, dim, nlist, params.pq_m, params.pq_bits, metric)
        index.nprobe = min(params.nprobe, nlist)
        index.cp.seed = params.seed
    res = None if backend == "hnsw" else _gpu_resources(faiss, device)
    if res is not None:
        index = faiss.index_cpu_to_gpu(res, device.index or 0, index)
        index.referenced_resources = res  # keep the resources alive with the index
        return index, True
    return index, False


def faiss_candidates(
    rows: FeatureRows,
    norms: Tensor,
    backend: str,
    num_candidates: int,
    params: IndexParams,
    block: int,
):
    """Index the non-zero rows, then yield ``(owners, neighbours, sims)`` per query block.

    ``neighbours`` are global row ids (``-1`` where the index returned fewer),
    ``sims`` their inner products with the owner as the index scores them.
    """
    faiss = import_faiss(f"ThresholdKNN(backend={backend!r})")
    nonzero = (norms >= ZERO_NORM_EPS).nonzero().flatten().cpu()
    m = nonzero.numel()
    index, _ = build_index(faiss, backend, rows.dim, m, params, rows.device)

    def unit(ids: Tensor) -> np.ndarray:
        return unit_rows(rows, norms, ids).cpu().numpy()

    if backend in ("ivf", "ivfpq"):
        nlist = params.nlist_for(m)
        size = min(m, params.train_size or 64 * nlist)
        gen = torch.Generator().manual_seed(params.seed)
        sample = nonzero[torch.randperm(m, generator=gen)[:size].sort().values]
        index.train(unit(sample))
    for start in range(0, m, block):
        index.add(unit(nonzero[start : start + block]))
    k = min(num_candidates, m)
    for start in range(0, m, block):
        owners = nonzero[start : start + block]
        sims, idx = index.search(unit(owners), k)
        idx_t = torch.from_numpy(idx)
        nbrs = torch.where(idx_t >= 0, nonzero[idx_t.clamp_min(0)], torch.full_like(idx_t, -1))
        yield owners, nbrs, torch.from_numpy(sims)


def kmeans_centroids(
    rows: FeatureRows, norms: Tensor, nonzero: Tensor, nlist: int, params: IndexParams
) -> Tensor:
    """Unit centroids of spherical k-means (faiss) on a seeded sample of the non-zero rows."""
    faiss = import_faiss("ThresholdKNN(backend='ivfjoin')")
    m = nonzero.numel()
    size = min(m, params.train_size or 16 * nlist)
    gen = torch.Generator().manual_seed(params.seed)
    sample = nonzero[torch.randperm(m, generator=gen)[:size].sort().values]
    km = faiss.Kmeans(rows.dim, nlist, niter=8, seed=params.seed, spherical=True, verbose=False)
    km.cp.min_points_per_centroid = 1  # a small sample per cell is enough for coarse cells
    km.train(unit_rows(rows, norms, sample).cpu().numpy())
    return torch.from_numpy(km.centroids).to(rows.device)


def join_cells(rows: FeatureRows, norms: Tensor, params: IndexParams) -> tuple[Tensor, int, Tensor]:
    """The self-join's cells: ``(nonzero rows, nprobe, unit centroids)``."""
    nonzero = (norms >= ZERO_NORM_EPS).nonzero().flatten()
    m = nonzero.numel()
    nlist = params.nlist_for_join(m)
    centroids = kmeans_centroids(rows, norms, nonzero.cpu(), nlist, params)
    return nonzero, min(params.nprobe, nlist), centroids


def probe_cells(unit: Tensor, centroids: Tensor, nprobe: int) -> Tensor:
    """The ``nprobe`` cells nearest each unit row; the first is the row's own cell."""
    return (unit @ centroids.t()).topk(nprobe, dim=1).indices


def cell_lists(probes: Tensor, nlist: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(member, member_ptr, query, query_ptr)``: the rows whose own cell is ``c`` are
    ``member[member_ptr[c]:member_ptr[c + 1]]``, those probing ``c`` likewise in
    ``query``; both ascending within a cell."""
    device = probes.device
    nprobe = probes.size(1)
    member = torch.argsort(probes[:, 0], stable=True)
    member_ptr = torch.searchsorted(probes[:, 0][member], torch.arange(nlist + 1, device=device))
    flat = probes.flatten()
    query = torch.argsort(flat, stable=True)
    query_ptr = torch.searchsorted(flat[query], torch.arange(nlist + 1, device=device))
    return member, member_ptr, query // nprobe, query_ptr


def cell_topk(unit_q: Tensor, unit_mem: Tensor, mem: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-``k`` members of one cell for a block of queries: (similarities, member ids)."""
    sims = unit_q @ unit_mem.t()
    v, j = topk_by_value_then_id(sims, min(k, mem.numel()))
    return v, mem[j]


def fold_topk(
    best_v: Tensor, best_i: Tensor, v: Tensor, i: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    """Merge candidate lists row by row, keeping the top-``k`` by (value, lower id)."""
    v, i = torch.cat([best_v, v], dim=1), torch.cat([best_i, i], dim=1)
    v, pos = topk_by_value_then_id(v, k, torch.where(i >= 0, i, torch.iinfo(i.dtype).max))
    return v, i.gather(1, pos)


def join_candidates(
    rows: FeatureRows, norms: Tensor, num_candidates: int, params: IndexParams, block: int
):
    r"""IVF self-join: the owners' own cells, searched by one matrix product per cell.

    Every non-zero row is assigned to its nearest centroid (its cell) and
    probes its ``nprobe`` nearest cells, as an IVF query would. Because the
    queries are the indexed rows themselves, all owners probing a cell are
    scored against the cell's members by a single dense product, instead of
    one scan per owner; candidates are merged into a running top list per
    owner, ordered by (similarity descending, id ascending), so the result
    does not depend on the order in which cells are visited. Works on the
    device of the features (CPU or CUDA). Yields ``(owners, neighbours, sims)``
    like :func:`faiss_candidates`.
    """
    device = rows.device
    nonzero, nprobe, centroids = join_cells(rows, norms, params)
    m, nlist = nonzero.numel(), centroids.size(0)
    unit = torch.empty(m, rows.dim, dtype=torch.float32, device=device)
    probes = torch.empty(m, nprobe, dtype=torch.long, device=device)
    for s in range(0, m, block):
        u = unit_rows(rows, norms, nonzero[s : s + block])
        unit[s : s + u.size(0)] = u
        probes[s : s + u.size(0)] = probe_cells(u, centroids, nprobe)
    member, member_ptr, query, query_ptr = cell_lists(probes, nlist)
    del probes
    k = min(num_candidates, m)
    best_v = torch.full((m, k), float("-inf"), device=device)
    best_i = torch.full((m, k), -1, dtype=torch.long, device=device)
    member_ptr_l, query_ptr_l = member_ptr.tolist(), query_ptr.tolist()
    for c in range(nlist):
        mem = member[member_ptr_l[c] : member_ptr_l[c + 1]]
        if mem.numel() == 0:
            continue
        qs = query[query_ptr_l[c] : query_ptr_l[c + 1]]
        for s in range(0, qs.numel(), block):
            q = qs[s : s + block]
            v, i = cell_topk(unit[q], unit[mem], mem, k)
            best_v[q], best_i[q] = fold_topk(best_v[q], best_i[q], v, i, k)
    del unit
    for s in range(0, m, block):
        ids = best_i[s : s + block]
        nbrs = torch.where(ids >= 0, nonzero[ids.clamp_min(0)], torch.full_like(ids, -1))
        yield nonzero[s : s + block].cpu(), nbrs.cpu(), best_v[s : s + block].cpu()
