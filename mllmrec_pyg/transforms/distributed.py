"""The graph refinement over a Dask cluster: the same blocks as the in-process
transforms, run as tasks, giving the same edges and weights.

Features are read by the workers themselves from a ``.npy`` file that every
worker can open (``np.load(path, mmap_mode="r")``; a memory-mapped array is
passed by its file name), one row block at a time; an array held in memory
is scattered to the workers instead. Interactions are scattered once and
indexed on one worker; the co-occurrence blocks then run where that index
lives or is copied to.

Tasks and what they hold:

* exact (``backend="torch"``): a task is a run of the in-process owner
  blocks; it reads the whole feature matrix (``4Nd`` bytes) and computes its
  blocks exactly as the in-process loop does.
* IVF self-join (``backend="ivfjoin"``): norms and cell probes per row block,
  spherical k-means on the seeded sample (one task), then one task per group
  of cells (the per-cell products, reading only the rows of those cells and
  of their queries), then one merge task per owner range. Candidates are
  merged by (similarity, id), so grouping does not change the result.
* co-occurrence: one task per ``max_pairs`` block of owners, as planned by the
  in-process loop.

Only :mod:`distributed` (``pip install "mllmrec-pyg[dist]"``) is needed, and
only when an executor is given.
"""

from __future__ import annotations

import math
import operator
import os
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mllmrec_pyg.transforms._ann import (
    ZERO_NORM_EPS,
    FeatureRows,
    IndexParams,
    cell_lists,
    cell_topk,
    fold_topk,
    join_cells,
    probe_cells,
    unit_rows,
)
from mllmrec_pyg.transforms.jaccard import (
    DEFAULT_MAX_PAIRS,
    _Interactions,
    assemble,
    block_topk,
    plan_blocks,
)

__all__ = [
    "check_executor",
    "distributed_threshold_knn",
    "distributed_jaccard",
    "feature_source",
]

#: Tasks per worker for the evenly divisible stages (load balance on a shared machine).
TASKS_PER_WORKER = 4


def check_executor(executor: Any, what: str) -> Any:
    """``executor`` if it is a Dask ``distributed.Client`` (or quacks like one)."""
    if executor is None:
        return None
    for attr in ("submit", "gather", "scatter", "scheduler_info"):
        if not callable(getattr(executor, attr, None)):
            raise TypeError(
                f"{what}: executor must be a dask distributed.Client "
                f'(pip install "mllmrec-pyg[dist]"), got {type(executor).__name__}'
            )
    return executor


def _num_workers(client: Any) -> int:
    return max(1, len(client.scheduler_info().get("workers", {})))


# --------------------------------------------------------------------------- sources
def feature_source(x: Tensor | np.ndarray | str | os.PathLike, client: Any) -> Any:
    """What the tasks read features from: a ``.npy`` path (workers memory-map it) or,
    for an array held in memory, a future of it scattered to every worker."""
    if isinstance(x, (str, os.PathLike)):
        path = os.fspath(x)
        arr = np.load(path, mmap_mode="r")
        FeatureRows(arr, path)  # validates shape and dtype here, naming the file
        return path
    if isinstance(x, np.memmap) and x.filename:
        whole = np.load(x.filename, mmap_mode="r")
        if whole.shape == x.shape and whole.dtype == x.dtype and whole.offset == x.offset:
            return os.fspath(x.filename)
    FeatureRows(x, "x")  # validates shape and dtype
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return client.scatter(np.asarray(x), broadcast=True)


def _open(source: Any) -> FeatureRows:
    if isinstance(source, str):
        return FeatureRows(np.load(source, mmap_mode="r"), source)
    return FeatureRows(source, "x")


# --------------------------------------------------------------------------- exact
def _exact_task(source, k_eff, loop, threshold, block, start, stop):
    from mllmrec_pyg.transforms.threshold_knn import exact_block, unit_matrix

    rows = _open(source)
    xn, zero = unit_matrix(rows.x)
    any_zero = bool(zero.any())
    srcs, dsts = [], []
    for s in range(start, stop, block):
        src, dst = exact_block(
            xn, zero, any_zero, s, min(s + block, rows.n), k_eff, loop, threshold
        )
        srcs.append(src)
        dsts.append(dst)
    return torch.cat(srcs).numpy(), torch.cat(dsts).numpy()


def _ranges(n: int, step: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` ranges of ``0:n`` whose starts are multiples of ``step``."""
    nblocks = math.ceil(n / step)
    per = max(1, math.ceil(nblocks / parts))
    return [(b * step, min(n, (b + per) * step)) for b in range(0, nblocks, per)]


# --------------------------------------------------------------------------- IVF self-join
def _norms_task(source, block, start, stop):
    rows = _open(source)
    out = [rows.block(s, min(s + block, stop)).norm(dim=1) for s in range(start, stop, block)]
    return torch.cat(out).numpy()


def _kmeans_task(source, norms, params):
    rows = _open(source)
    nonzero, nprobe, centroids = join_cells(rows, torch.from_numpy(norms), params)
    return nonzero.numpy(), nprobe, centroids.numpy()


def _probe_task(source, norms, nonzero, centroids, nprobe, block, start, stop):
    rows, norms, nonzero = _open(source), torch.from_numpy(norms), torch.from_numpy(nonzero)
    cent = torch.from_numpy(centroids)
    out = [
        probe_cells(unit_rows(rows, norms, nonzero[s : min(s + block, stop)]), cent, nprobe)
        for s in range(start, stop, block)
    ]
    return torch.cat(out).numpy()


def _cell_task(source, norms, nonzero, cells, k, block, bounds):
    """Per-cell products of a group of cells, folded into one candidate list per owner
    (top-``k`` by similarity, then lower id), split by owner range ``bounds``."""
    rows, norms, nonzero = _open(source), torch.from_numpy(norms), torch.from_numpy(nonzero)
    cells = [(torch.from_numpy(mem), torch.from_numpy(qs)) for mem, qs in cells]
    need = torch.unique(torch.cat([t for cell in cells for t in cell]))
    unit = unit_rows(rows, norms, nonzero[need])  # every row this task reads, read once
    owners = torch.unique(torch.cat([qs for _, qs in cells]))
    best_v = torch.full((owners.numel(), k), float("-inf"))
    best_i = torch.full((owners.numel(), k), -1, dtype=torch.long)
    for mem, qs in cells:
        unit_mem = unit[torch.searchsorted(need, mem)]
        for s in range(0, qs.numel(), block):
            q = qs[s : s + block]
            v, i = cell_topk(unit[torch.searchsorted(need, q)], unit_mem, mem, k)
            lq = torch.searchsorted(owners, q)
            best_v[lq], best_i[lq] = fold_topk(best_v[lq], best_i[lq], v, i, k)
    cut = np.searchsorted(owners.numpy(), bounds)
    return [
        (owners[a:b].numpy(), best_v[a:b].numpy(), best_i[a:b].numpy())
        for a, b in zip(cut[:-1], cut[1:])
    ]


def _merge_task(lo, hi, parts, nonzero, k, n, k_others, threshold):
    """Candidate lists of owners ``lo:hi`` from every cell group, then their edges."""
    from mllmrec_pyg.transforms.threshold_knn import finish_candidates

    nonzero = torch.from_numpy(nonzero)
    best_v = torch.full((hi - lo, k), float("-inf"))
    best_i = torch.full((hi - lo, k), -1, dtype=torch.long)
    for owners, v, i in parts:
        if owners.size:
            r = torch.from_numpy(owners) - lo
            best_v[r], best_i[r] = fold_topk(
                best_v[r], best_i[r], torch.from_numpy(v), torch.from_numpy(i), k
            )
    nbrs = torch.where(best_i >= 0, nonzero[best_i.clamp_min(0)], torch.full_like(best_i, -1))
    src, dst = finish_candidates(nonzero[lo:hi], nbrs, best_v, n, k_others, threshold)
    return src.numpy(), dst.numpy()


def _join_graph(client, source, n, k_eff, threshold, loop, params, block):
    from mllmrec_pyg.transforms.threshold_knn import assemble_index_graph

    workers = _num_workers(client)
    parts = TASKS_PER_WORKER * workers
    norms = np.concatenate(
        client.gather(
            [
                client.submit(_norms_task, source, block, a, b, pure=False)
                for a, b in _ranges(n, block, parts)
            ]
        )
    )
    zero = torch.from_numpy(norms) < ZERO_NORM_EPS
    k_others = min(k_eff - 1 if loop else k_eff, n - 1)
    srcs, dsts = [], []
    if k_others > 0 and int((~zero).sum()) > 1:
        num_candidates = max(params.candidates or k_others + 4, k_others + 1)
        norms_f = client.scatter(norms, broadcast=True)
        nonzero, nprobe, centroids = client.submit(
            _kmeans_task, source, norms_f, params, pure=False
        ).result()
        m, nlist = nonzero.size, centroids.shape[0]
        nonzero_f = client.scatter(nonzero, broadcast=True)
        probes = np.concatenate(
            client.gather(
                [
                    client.submit(
                        _probe_task,
                        source,
                        norms_f,
                        nonzero_f,
                        centroids,
                        nprobe,
                        block,
                        a,
                        b,
                        pure=False,
                    )
                    for a, b in _ranges(m, block, parts)
                ]
            )
        )
        member, member_ptr, query, query_ptr = (
            t.numpy() for t in cell_lists(torch.from_numpy(probes), nlist)
        )
        del probes
        k = min(num_candidates, m)
        # groups of consecutive cells of about equal work (queries x members)
        work = np.diff(query_ptr) * np.diff(member_ptr)
        edges = np.searchsorted(np.cumsum(work), np.linspace(0, work.sum(), parts + 1)[1:-1])
        groups = [g for g in np.split(np.arange(nlist), edges + 1) if g.size]
        owner_bounds = np.array([a for a, _ in _ranges(m, 1, parts)] + [m])
        cell_futures = []
        for g in groups:
            cells = [
                (member[member_ptr[c] : member_ptr[c + 1]], query[query_ptr[c] : query_ptr[c + 1]])
                for c in g
                if member_ptr[c + 1] > member_ptr[c]
            ]
            if cells:
                cell_futures.append(
                    client.submit(
                        _cell_task,
                        source,
                        norms_f,
                        nonzero_f,
                        cells,
                        k,
                        block,
                        owner_bounds,
                        pure=False,
                    )
                )
        merges = []
        for r in range(len(owner_bounds) - 1):
            pieces = [client.submit(operator.getitem, f, r, pure=False) for f in cell_futures]
            merges.append(
                client.submit(
                    _merge_task,
                    int(owner_bounds[r]),
                    int(owner_bounds[r + 1]),
                    pieces,
                    nonzero_f,
                    k,
                    n,
                    k_others,
                    threshold,
                    pure=False,
                )
            )
        for src, dst in client.gather(merges):
            srcs.append(torch.from_numpy(src))
            dsts.append(torch.from_numpy(dst))
    return assemble_index_graph(srcs, dsts, zero, n, loop, threshold, torch.device("cpu"))


def distributed_threshold_knn(
    client: Any,
    x: Tensor | np.ndarray | str | os.PathLike,
    k: int = 10,
    threshold: float | None = 0.7,
    loop: bool = True,
    block_size: int | None = None,
    backend: str = "torch",
    index_params: IndexParams | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`~mllmrec_pyg.transforms.threshold_knn.threshold_knn_graph` over a Dask
    cluster: the same edges for ``backend="torch"`` (exact) and ``"ivfjoin"``.
    ``x`` may be the path of a ``.npy`` file every worker can open."""
    from mllmrec_pyg.transforms.threshold_knn import (
        INDEX_BLOCK,
        _check_k,
        _default_block,
        _empty,
        resolve_backend,
    )

    _check_k(k)
    check_executor(client, "distributed_threshold_knn")
    source = feature_source(x, client)
    n = int(np.load(source, mmap_mode="r").shape[0] if isinstance(source, str) else x.shape[0])
    k_eff = min(k, n if loop else n - 1)
    if n == 0 or k_eff <= 0:
        return _empty(torch.device("cpu"))
    backend = resolve_backend(backend, n, torch.device("cpu"))
    if backend == "torch":
        block = block_size or _default_block(n)
        futures = [
            client.submit(_exact_task, source, k_eff, loop, threshold, block, a, b, pure=False)
            for a, b in _ranges(n, block, TASKS_PER_WORKER * _num_workers(client))
        ]
        results = client.gather(futures)
        from torch_geometric.utils import coalesce

        edge_index = torch.stack(
            [
                torch.from_numpy(np.concatenate([r[0] for r in results])),
                torch.from_numpy(np.concatenate([r[1] for r in results])),
            ]
        )
        edge_index = coalesce(edge_index, num_nodes=n, sort_by_row=False)
        return edge_index, torch.ones(edge_index.size(1))
    if backend != "ivfjoin":
        raise ValueError(
            f"backend={backend!r} has no distributed version: use 'torch' (exact) or "
            "'ivfjoin', or drop the executor to run it in-process"
        )
    return _join_graph(
        client, source, n, k_eff, threshold, loop, index_params or IndexParams(),
        block_size or INDEX_BLOCK,
    )  # fmt: skip


# --------------------------------------------------------------------------- co-occurrence
def _interactions_task(edge_index, num_users, num_items):
    if isinstance(edge_index, str):
        edge_index = np.load(edge_index, mmap_mode="r")
    return _Interactions(
        torch.from_numpy(np.array(edge_index, dtype=np.int64)), num_users, num_items
    )


def _owner_cum(data):
    return data.owner_cum.numpy()


def _jaccard_task(data, blocks, limit, k):
    acc: list[Tensor] = []
    out = [block_topk(data, a, b, limit, k, acc) for a, b in blocks]
    out = [o for o in out if o is not None]
    if not out:
        return None
    return tuple(torch.cat(parts).numpy() for parts in zip(*out))


def distributed_jaccard(
    client: Any,
    edge_index: Tensor | np.ndarray | str | os.PathLike,
    num_users: int,
    num_items: int,
    k: int = 10,
    block_size: int = 4096,
    max_pairs: int | None = DEFAULT_MAX_PAIRS,
) -> tuple[Tensor, Tensor]:
    """:func:`~mllmrec_pyg.transforms.jaccard.jaccard_topk_graph` over a Dask cluster,
    one task per ``max_pairs`` block: the same edges and weights. ``edge_index``
    may be the path of a ``.npy`` file ``[2, E]`` every worker can open."""
    from mllmrec_pyg.transforms._checks import check_positive_int
    from mllmrec_pyg.transforms.threshold_knn import _check_k

    _check_k(k)
    check_positive_int(block_size, "block_size")
    check_positive_int(max_pairs, "max_pairs", allow_none=True)
    check_executor(client, "distributed_jaccard")
    if isinstance(edge_index, (str, os.PathLike)):
        pairs: Any = os.fspath(edge_index)
        shape = np.load(pairs, mmap_mode="r").shape
        if len(shape) != 2 or shape[0] != 2:
            raise ValueError(f"{pairs} must hold a [2, E] array of (user, item) pairs, got {shape}")
        empty = shape[1] == 0
    else:
        arr = edge_index.cpu().numpy() if isinstance(edge_index, Tensor) else np.asarray(edge_index)
        empty = arr.size == 0
        pairs = client.scatter(arr)
    if empty or num_items == 0:
        return torch.empty(2, 0, dtype=torch.long), torch.empty(0)
    data = client.submit(_interactions_task, pairs, num_users, num_items, pure=False)
    owner_cum = torch.from_numpy(client.submit(_owner_cum, data, pure=False).result())
    limit = max_pairs if max_pairs is not None else int(owner_cum[-1]) + 1
    blocks = plan_blocks(owner_cum, limit, block_size, num_items)
    # a few blocks per task, about 4 tasks per worker at least
    per = max(1, len(blocks) // (4 * TASKS_PER_WORKER * _num_workers(client)))
    futures = [
        client.submit(_jaccard_task, data, blocks[i : i + per], limit, k, pure=False)
        for i in range(0, len(blocks), per)
    ]
    srcs, dsts, weights = [], [], []
    for out in client.gather(futures):
        if out is not None:
            srcs.append(torch.from_numpy(out[0]))
            dsts.append(torch.from_numpy(out[1]))
            weights.append(torch.from_numpy(out[2]))
    return assemble(srcs, dsts, weights, num_items, torch.device("cpu"))
