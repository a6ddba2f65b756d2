"""Time and peak memory of building the refined item-item graph S*.

Compares the package's transforms (blocked exact top-K cosine, sparse
Jaccard, sparse merge) with a dense baseline that materialises the full
I x I similarity and co-occurrence matrices, as the reference implementation
does. Each measurement runs in a fresh subprocess so that its peak resident
memory can be read; the table reports both methods and their ratios, all
measured in one run.

    python benchmarks/graph_build.py                 # Baby, Sports, Clothing; dense at Baby
    python benchmarks/graph_build.py --dense all     # dense at every size (slow, ~15 GB)
    python benchmarks/graph_build.py --sizes baby --json out.json
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch
from graph_scale import json_subprocess, rss_bytes

ALPHA, K_S, K_C = 0.7, 10, 10


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_sparse(data, backend: str = "torch"):
    from torch_geometric.transforms import Compose

    from mllmrec_pyg.transforms import JaccardCoOccurrence, MergeGraphs, ThresholdKNN

    knn = ThresholdKNN(k=K_S, threshold=ALPHA, backend=backend)
    out = Compose([knn, JaccardCoOccurrence(k=K_C), MergeGraphs()])(data)
    return out["item", "related", "item"].edge_index.size(1)


def build_faiss(data):
    return build_sparse(data, backend="faiss")


def build_dense(data):
    """The reference's way: full I x I matrices throughout."""
    x = data["item"].x
    n = x.size(0)
    xn = x / x.norm(dim=1, keepdim=True)
    sim = xn @ xn.t()
    vals, idx = sim.topk(K_S, dim=1)
    s = torch.zeros(n, n)
    s.scatter_(1, idx, (vals >= ALPHA).float())
    del sim
    ei = data["user", "interacts", "item"].edge_index
    r = torch.zeros(data["user"].num_nodes, n)
    r[ei[0], ei[1]] = 1.0
    inter = r.t() @ r
    deg = r.sum(0)
    jac = inter / (deg.unsqueeze(0) + deg.unsqueeze(1) - inter).clamp_min(1e-12)
    del inter, r
    jac[jac == 1] = 0.0
    vals, idx = jac.topk(K_C, dim=1)
    c = torch.zeros(n, n)
    c.scatter_(1, idx, vals)
    merged = s + c
    return int((merged > 0).sum())


def worker(method: str, path: str, repeats: int) -> None:
    from torch_geometric.data import HeteroData

    saved = torch.load(path, weights_only=True)
    data = HeteroData()
    data["user"].num_nodes = int(saved["num_users"])
    data["item"].num_nodes = saved["x"].size(0)
    data["item"].x = saved["x"]
    data["user", "interacts", "item"].edge_index = saved["edge_index"]
    fn = {"sparse": build_sparse, "faiss": build_faiss, "dense": build_dense}[method]
    base = rss_bytes() / 2**20
    times, edges = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        edges = fn(data.clone() if method != "dense" else data)
        times.append(time.perf_counter() - t0)
    median = sorted(times)[len(times) // 2]
    print(json.dumps({"seconds": median, "edges": edges, "extra_peak_mb": _peak_mb() - base}))


def run(method: str, path: str, repeats: int) -> dict:
    return json_subprocess(__file__, "--worker", method, path, "--repeats", str(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["baby", "sports", "clothing"])
    parser.add_argument(
        "--dense",
        default="baby",
        help="sizes that also run the dense baseline: a size, 'all' or 'none'",
    )
    parser.add_argument("--repeats", type=int, default=3, help="sparse runs per size (median)")
    parser.add_argument(
        "--faiss",
        action="store_true",
        help="also time ThresholdKNN's faiss backend (needs the [faiss] extra)",
    )
    parser.add_argument("--json", type=Path, help="write the rows here as JSON")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], args.repeats)
        return

    from mllmrec_pyg.data.synthetic import make_scale_data

    dense_sizes = set(args.sizes) if args.dense == "all" else set(args.dense.split(","))
    rows = []
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"alpha={ALPHA}, K_s={K_S}, K_c={K_C}, 384-d features"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            data = make_scale_data(size, dim=384, seed=0)
            path = str(Path(tmp) / f"{size}.pt")
            ei, users = data["user", "interacts", "item"].edge_index, data["user"].num_nodes
            torch.save({"x": data["item"].x, "num_users": users, "edge_index": ei}, path)
            row = {
                "size": size,
                "users": users,
                "items": data["item"].num_nodes,
                "train_pairs": ei.size(1),
            }
            row["sparse"] = run("sparse", path, args.repeats)
            if args.faiss:
                row["faiss"] = run("faiss", path, args.repeats)
            if size in dense_sizes:
                row["dense"] = run("dense", path, 1)
                if row["dense"]["edges"] != row["sparse"]["edges"]:
                    print(
                        f"note: {size}: dense {row['dense']['edges']} edges vs sparse "
                        f"{row['sparse']['edges']} (ties at the K-th value / Jaccard==1 rule)"
                    )
            rows.append(row)

    head = (
        f"{'size':9} {'users':>7} {'items':>7} {'edges':>8} {'sparse s':>9} {'sparse MB':>10}"
        f" {'dense s':>9} {'dense MB':>10} {'speed-up':>9} {'mem ratio':>10}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        s, d = r["sparse"], r.get("dense")
        line = (
            f"{r['size']:9} {r['users']:7d} {r['items']:7d} {s['edges']:8d} "
            f"{s['seconds']:9.3f} {s['extra_peak_mb']:10.1f}"
        )
        if d:
            line += (
                f" {d['seconds']:9.2f} {d['extra_peak_mb']:10.1f} "
                f"{d['seconds'] / s['seconds']:8.1f}x {d['extra_peak_mb'] / max(s['extra_peak_mb'], 1):9.1f}x"
            )
        else:
            line += f" {'-':>9} {'-':>10} {'-':>9} {'-':>10}"
        print(line)
    if args.faiss:
        print()
        print(f"{'size':9} {'faiss s':>9} {'faiss MB':>9} {'edges':>8} {'vs torch':>9}")
        for r in rows:
            f, s = r["faiss"], r["sparse"]
            print(
                f"{r['size']:9} {f['seconds']:9.3f} {f['extra_peak_mb']:9.1f} {f['edges']:8d} "
                f"{s['seconds'] / f['seconds']:8.2f}x"
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
