"""Graph refinement on a 2-worker local Dask cluster against the in-process run,
and incremental refinement against a full rebuild.

Uses the synthetic catalogue of ``graph_scale.py`` (features as a memory-mapped
float16 ``.npy`` the workers read themselves). Prints wall time, peak memory
(the driver's, and each worker's peak RSS), whether the graphs are identical,
and for the incremental update the time of adding 1% and 10% new items (with
their interactions, and new interactions of old items) against rebuilding.

    python benchmarks/graph_distributed.py --size 100k
    python benchmarks/graph_distributed.py --size 100k --skip-cluster --inc-knn-size 20000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from graph_scale import SIZES, PeakRSS, generate  # noqa: E402


class WorkerPeaks:
    """Samples the resident memory of the worker processes from here, every 20 ms."""

    def __init__(self, pids: list[int]) -> None:
        import psutil

        self.procs = [psutil.Process(p) for p in pids]
        self.peak = [0] * len(pids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for j, p in enumerate(self.procs):
                self.peak[j] = max(self.peak[j], p.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> WorkerPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _warm_up() -> None:
    import faiss  # noqa: F401

    import mllmrec_pyg.transforms.distributed  # noqa: F401
    import mllmrec_pyg.transforms.threshold_knn  # noqa: F401


def cluster_vs_local(folder: Path, args) -> dict:
    from distributed import Client, LocalCluster

    from mllmrec_pyg.transforms.distributed import distributed_jaccard, distributed_threshold_knn
    from mllmrec_pyg.transforms.jaccard import jaccard_topk_graph
    from mllmrec_pyg.transforms.threshold_knn import threshold_knn_graph

    x = np.load(folder / "x.npy", mmap_mode="r")
    pairs = torch.from_numpy(np.load(folder / "pairs.npy"))
    n = x.shape[0]
    out = {"items": n}
    with PeakRSS() as peak:
        t0, c0 = time.perf_counter(), time.process_time()
        knn = threshold_knn_graph(x, args.k_s, args.alpha, True, None, "auto")
        t1, c1 = time.perf_counter(), time.process_time()
        jac = jaccard_topk_graph(pairs, 2 * n, n, args.k_c)
        t2, c2 = time.perf_counter(), time.process_time()
    out["local"] = {
        "knn_s": t1 - t0,
        "jaccard_s": t2 - t1,
        "knn_cpu_s": c1 - c0,
        "jaccard_cpu_s": c2 - c1,
        "peak_gb": peak.peak / 2**30,
    }
    t0 = time.perf_counter()
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
        memory_limit=0,
    )  # fmt: skip
    client = Client(cluster)
    # workers import torch, faiss and the package once: part of starting, not of the build
    client.run(_warm_up)
    out["cluster_start_s"] = time.perf_counter() - t0
    pids = list(client.run(os.getpid).values())

    def cpu() -> float:  # CPU seconds of the workers and of this driver
        return sum(client.run(time.process_time).values()) + time.process_time()

    from distributed import get_task_stream
    from distributed.utils import key_split

    with WorkerPeaks(pids) as peaks, get_task_stream(client) as stream:
        t0, c0 = time.perf_counter(), cpu()
        dknn = distributed_threshold_knn(client, x, args.k_s, args.alpha, True, None, "auto")
        t1, c1 = time.perf_counter(), cpu()
        djac = distributed_jaccard(client, folder / "pairs.npy", 2 * n, n, args.k_c)
        t2, c2 = time.perf_counter(), cpu()
    # cost per task kind: count, total and largest compute seconds
    tasks: dict[str, list[float]] = {}
    for rec in stream.data:
        kind = key_split(rec["key"])
        for part in rec["startstops"]:
            if part["action"] == "compute":
                tasks.setdefault(kind, []).append(part["stop"] - part["start"])
    out["tasks"] = {
        k: {"count": len(v), "total_s": sum(v), "max_s": max(v)} for k, v in sorted(tasks.items())
    }
    client.close()
    cluster.close()
    out["cluster"] = {
        "knn_s": t1 - t0,
        "jaccard_s": t2 - t1,
        "knn_cpu_s": c1 - c0,
        "jaccard_cpu_s": c2 - c1,
        "worker_peak_gb": [p / 2**30 for p in peaks.peak],
    }
    out["identical"] = {
        "semantic": bool(torch.equal(knn[0], dknn[0]) and torch.equal(knn[1], dknn[1])),
        "cooccurs": bool(torch.equal(jac[0], djac[0]) and torch.equal(jac[1], djac[1])),
    }
    out["edges"] = {"semantic": int(knn[0].size(1)), "cooccurs": int(jac[0].size(1))}
    return out


def incremental(folder: Path, args) -> dict:
    from mllmrec_pyg.transforms.incremental import update_jaccard, update_threshold_knn
    from mllmrec_pyg.transforms.jaccard import jaccard_topk_graph
    from mllmrec_pyg.transforms.threshold_knn import threshold_knn_graph

    x = np.load(folder / "x.npy", mmap_mode="r")
    pairs = torch.from_numpy(np.load(folder / "pairs.npy"))
    n = x.shape[0]
    rng = np.random.default_rng(2)
    rows = []
    rebuild = None
    settings = [(f, s) for f in args.fractions for s in args.old_pairs_share]
    for frac, share in settings:
        n_old = n - int(round(frac * n))
        # new items' pairs are those of items >= n_old; plus new pairs of old items:
        # share * frac of the old pairs count as new (old users' fresh interactions)
        is_new = pairs[1] >= n_old
        old_idx = (~is_new).nonzero().flatten().numpy()
        moved = rng.choice(old_idx, int(share * frac * old_idx.size), replace=False)
        is_new[torch.from_numpy(moved)] = True
        old_p, new_p = pairs[:, ~is_new], pairs[:, is_new]
        row = {
            "fraction": frac,
            "old_pairs_share": share,
            "items": n,
            "new_items": n - n_old,
            "new_pairs": int(new_p.size(1)),
        }
        old_j = jaccard_topk_graph(old_p, 2 * n, n_old, args.k_c)
        if rebuild is None:  # the union is the same for every setting: rebuild it once
            t0, c0 = time.perf_counter(), time.process_time()
            graph = jaccard_topk_graph(pairs, 2 * n, n, args.k_c)
            rebuild = graph, time.perf_counter() - t0, time.process_time() - c0
        ref = rebuild[0]
        t1, c1 = time.perf_counter(), time.process_time()
        got = update_jaccard(pairs, new_p, 2 * n, n, old_j[0], old_j[1], n_old, args.k_c)
        t2, c2 = time.perf_counter(), time.process_time()
        row["jaccard"] = {
            "rebuild_s": rebuild[1],
            "update_s": t2 - t1,
            "rebuild_cpu_s": rebuild[2],
            "update_cpu_s": c2 - c1,
            "identical": bool(torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])),
        }
        if share != args.old_pairs_share[0]:  # the semantic graph ignores interactions
            print(json.dumps(row), flush=True)
            rows.append(row)
            continue
        m = min(n, args.inc_knn_size)  # exact search: O(m^2 d) rebuild
        m_old = m - int(round(frac * m))
        xs = np.asarray(x[:m], dtype=np.float32)
        old_s = threshold_knn_graph(xs[:m_old], args.k_s, args.alpha)
        t0, c0 = time.perf_counter(), time.process_time()
        ref = threshold_knn_graph(xs, args.k_s, args.alpha)
        t1, c1 = time.perf_counter(), time.process_time()
        got = update_threshold_knn(xs, old_s[0], m_old, args.k_s, args.alpha)
        t2, c2 = time.perf_counter(), time.process_time()
        row["semantic_exact"] = {
            "items": m,
            "rebuild_s": t1 - t0,
            "update_s": t2 - t1,
            "rebuild_cpu_s": c1 - c0,
            "update_cpu_s": c2 - c1,
            "identical": bool(torch.equal(ref[0], got[0])),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return {"incremental": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="100k", choices=SIZES)
    parser.add_argument("--alpha", type=float, default=0.6)
    parser.add_argument("--k-s", type=int, default=10)
    parser.add_argument("--k-c", type=int, default=10)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument(
        "--old-pairs-share",
        type=float,
        nargs="+",
        default=[0.0, 0.1],
        help="new pairs of old items, as a share of fraction * old pairs",
    )
    parser.add_argument("--inc-knn-size", type=int, default=20_000, help="items, exact search")
    parser.add_argument("--skip-cluster", action="store_true")
    parser.add_argument("--skip-incremental", action="store_true")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        import faiss

        faiss.omp_set_num_threads(1)
    except ImportError:
        pass
    result = {}
    with tempfile.TemporaryDirectory(dir=args.data_dir) as tmp:
        folder = Path(tmp)
        result["data"] = generate(SIZES[args.size], folder)
        print(json.dumps(result["data"]), flush=True)
        if not args.skip_cluster:
            result.update(cluster_vs_local(folder, args))
            print(json.dumps({k: v for k, v in result.items() if k != "data"}), flush=True)
        if not args.skip_incremental:
            result.update(incremental(folder, args))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
