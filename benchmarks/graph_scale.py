"""Graph refinement at 10^4 to 10^6 items: time, peak memory and recall.

Builds a synthetic power-law catalogue at each size (2 users per item, about
10 interactions per user with log-normal, heavy-tailed user degrees, Zipf item
popularity, 384-d float16 features in topic / sub-topic clusters stored as a
memory-mapped ``.npy``), runs ThresholdKNN + JaccardCoOccurrence + MergeGraphs
on it in a fresh process, and prints per transform the time and the peak
resident memory, the recall of the semantic and co-occurrence top-K on 2,000
sampled owners against exact values computed for just those owners, and the
fitted growth exponent of time in the number of items. A log-log plot goes to
``--plot``.

    python benchmarks/graph_scale.py                        # 10k, 100k, 1M
    python benchmarks/graph_scale.py --sizes 10k 100k --nprobe 8
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SIZES = {"10k": 10_000, "30k": 30_000, "100k": 100_000, "300k": 300_000, "1m": 1_000_000}
DIM = 384
STAGES = ("semantic", "cooccurs", "merge")


# --------------------------------------------------------------------------- data
def generate(num_items: int, folder: Path, seed: int = 0) -> dict:
    """Write ``x.npy`` (float16 [I, 384]) and ``pairs.npy`` (int64 [2, E]) to ``folder``."""
    rng = np.random.default_rng(seed)
    num_users = 2 * num_items
    sigma = 1.2  # log-normal user degrees: mean 10, a heavy right tail
    mu = np.log(10.0) - sigma**2 / 2
    deg = np.clip(np.rint(rng.lognormal(mu, sigma, num_users)), 1, num_items).astype(np.int64)
    pop = (1.0 + rng.permutation(num_items)) ** -0.8
    pop /= pop.sum()
    users = np.repeat(np.arange(num_users, dtype=np.int64), deg)
    items = np.searchsorted(np.cumsum(pop), rng.random(users.size)).clip(max=num_items - 1)
    key = np.unique(users * num_items + items)
    pairs = np.stack([key // num_items, key % num_items])
    np.save(folder / "pairs.npy", pairs)
    # features: topic centre + sub-topic offset + item noise, ~1,000 items per
    # topic and ~10 per sub-topic
    topics = rng.standard_normal((max(16, num_items // 1000), DIM), dtype=np.float32)
    num_sub = max(64, num_items // 10)
    sub_topic = rng.integers(0, topics.shape[0], num_sub)
    sub = 0.6 * rng.standard_normal((num_sub, DIM), dtype=np.float32)
    assign = rng.integers(0, num_sub, num_items)
    x = np.lib.format.open_memmap(folder / "x.npy", "w+", np.float16, (num_items, DIM))
    for s in range(0, num_items, 65536):
        a = assign[s : s + 65536]
        noise = rng.standard_normal((a.size, DIM), dtype=np.float32)
        x[s : s + a.size] = topics[sub_topic[a]] + sub[a] + 0.7 * noise
    x.flush()
    del x
    return {
        "items": num_items,
        "users": num_users,
        "pairs": int(pairs.shape[1]),
        "max_user_degree": int(np.bincount(pairs[0]).max()),
        "sum_deg_sq": int((np.bincount(pairs[0]).astype(np.int64) ** 2).sum()),
    }


# --------------------------------------------------------------------------- memory
def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples this process's resident memory every few ms while active."""

    def __init__(self, period: float = 0.005) -> None:
        self.period = period
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.period)

    def __enter__(self) -> PeakRSS:
        self.peak = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


# --------------------------------------------------------------------------- exact references
def exact_semantic(x, owners: np.ndarray, k_others: int, block: int = 32768):
    """Exact non-self top-``k_others`` cosine neighbours of ``owners`` (sims, ids)."""
    import torch

    def unit(rows):
        rows = torch.from_numpy(np.ascontiguousarray(rows)).float()
        norms = rows.norm(dim=1, keepdim=True)
        return torch.where(norms > 1e-12, rows / norms.clamp_min(1e-12), 0.0)

    q = unit(x[owners])
    own = torch.from_numpy(owners)
    best_v = torch.full((owners.size, k_others), float("-inf"))
    best_i = torch.full((owners.size, k_others), -1, dtype=torch.long)
    for s in range(0, x.shape[0], block):
        keys = unit(x[s : s + block])
        sim = q @ keys.t()
        cols = torch.arange(s, s + keys.size(0))
        sim[own.unsqueeze(1) == cols.unsqueeze(0)] = float("-inf")
        v, i = torch.cat([best_v, sim], 1), torch.cat([best_i, cols.expand_as(sim)], 1)
        best_v, pos = v.topk(k_others, dim=1)
        best_i = i.gather(1, pos)
    return best_v, best_i, q


def exact_jaccard(pairs: np.ndarray, num_items: int, owners: np.ndarray, k: int):
    """Exact Jaccard of each sampled owner with every item, from sets, per owner."""
    users, items = pairs
    by_user = np.argsort(users, kind="stable")
    u_sorted, i_by_user = users[by_user], items[by_user]
    by_item = np.argsort(items, kind="stable")
    i_sorted, u_by_item = items[by_item], users[by_item]
    deg = np.bincount(items, minlength=num_items)
    out = []
    for a in owners:
        aud = u_by_item[np.searchsorted(i_sorted, a) : np.searchsorted(i_sorted, a, "right")]
        lo, hi = np.searchsorted(u_sorted, aud), np.searchsorted(u_sorted, aud, "right")
        nbrs = np.concatenate([i_by_user[s:e] for s, e in zip(lo, hi)]) if aud.size else []
        nb, cnt = np.unique(np.asarray(nbrs, dtype=np.int64), return_counts=True)
        jac = cnt / (deg[a] + deg[nb] - cnt)
        jac[nb == a] = 0.0
        order = np.lexsort((nb, -jac))
        out.append({int(nb[j]): float(jac[j]) for j in order if jac[j] > 0})
    return out


def neighbours_of(edge_index, owners: np.ndarray) -> list[np.ndarray]:
    """Neighbour ids per owner from an owner-sorted ``edge_index``."""
    dst = edge_index[1].numpy()
    src = edge_index[0].numpy()
    lo, hi = np.searchsorted(dst, owners), np.searchsorted(dst, owners, "right")
    return [src[s:e] for s, e in zip(lo, hi)]


def semantic_recall(data, x, owners, k_s: int, alpha: float) -> dict:
    import torch

    k_others = k_s - 1
    vals, ids, q = exact_semantic(x, owners, k_others)
    store = data["item", "semantic", "item"]
    got = neighbours_of(store.edge_index, owners)
    hits = total = 0
    for r, a in enumerate(owners):
        kth = float(vals[r, -1])
        true = int((vals[r] >= alpha).sum())
        g = got[r][got[r] != a]
        total += true
        if true == 0 or g.size == 0:
            continue
        keys = torch.from_numpy(np.ascontiguousarray(x[g])).float()
        sims = (q[r] @ (keys / keys.norm(dim=1, keepdim=True)).t()).numpy()
        # tie-aware: a returned neighbour is right if its exact similarity reaches
        # both the threshold and the exact K-th value
        hits += min(true, int((sims >= max(alpha, kth) - 1e-6).sum()))
    return {"recall": hits / max(total, 1), "true_edges_per_owner": total / owners.size}


def cooccurs_recall(data, pairs, num_items, owners, k_c: int) -> dict:
    exact = exact_jaccard(pairs, num_items, owners, k_c)
    store = data["item", "cooccurs", "item"]
    got = neighbours_of(store.edge_index, owners)
    weights = store.edge_weight.numpy()
    dst = store.edge_index[1].numpy()
    lo = np.searchsorted(dst, owners)
    hits = total = 0
    max_err = 0.0
    for r, _ in enumerate(owners):
        ex = exact[r]
        vals = list(ex.values())
        true = min(k_c, len(vals))
        total += true
        if true == 0:
            continue
        kth = vals[true - 1]
        for j, b in enumerate(got[r]):
            v = ex.get(int(b), 0.0)
            max_err = max(max_err, abs(v - float(weights[lo[r] + j])))
            hits += v >= kth - 1e-9 and v > 0
    return {"recall": hits / max(total, 1), "max_weight_error": max_err}


# --------------------------------------------------------------------------- worker
def worker(folder: Path, args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        pass
    from torch_geometric.data import HeteroData

    from mllmrec_pyg.transforms import JaccardCoOccurrence, MergeGraphs, ThresholdKNN
    from mllmrec_pyg.transforms.threshold_knn import resolve_backend

    x = np.load(folder / "x.npy", mmap_mode="r")
    pairs = np.load(folder / "pairs.npy")
    num_items = x.shape[0]
    data = HeteroData()
    data["item"].num_nodes = num_items
    data["user"].num_nodes = 2 * num_items
    data["item"].x = x
    data["user", "interacts", "item"].edge_index = torch.from_numpy(pairs)
    transforms = {
        "semantic": ThresholdKNN(
            k=args.k_s, threshold=args.alpha, backend=args.backend, nprobe=args.nprobe
        ),
        "cooccurs": JaccardCoOccurrence(k=args.k_c, max_pairs=args.max_pairs),
        "merge": MergeGraphs(),
    }
    out = {"backend": resolve_backend(args.backend, num_items, torch.device("cpu"))}
    base = rss_bytes()
    for name, transform in transforms.items():
        with PeakRSS() as peak:
            t0, c0 = time.perf_counter(), time.process_time()
            data = transform(data)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        out[name] = {"seconds": seconds, "cpu_seconds": cpu, "peak_gb": peak.peak / 2**30}
    out["edges"] = {
        rel: int(data["item", rel, "item"].edge_index.size(1))
        for rel in ("semantic", "cooccurs", "related")
    }
    out["process_peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out["base_gb"] = base / 2**30
    owners = np.sort(
        np.random.default_rng(1).choice(num_items, min(args.sample, num_items), replace=False)
    )
    t0 = time.perf_counter()
    out["semantic_recall"] = semantic_recall(data, x, owners, args.k_s, args.alpha)
    out["cooccurs_recall"] = cooccurs_recall(data, pairs, num_items, owners, args.k_c)
    out["recall_seconds"] = time.perf_counter() - t0
    return out


SWEEP = [("ivfjoin", {"nprobe": p}) for p in (2, 4, 8, 16)]
SWEEP += [("ivf", {"nprobe": p}) for p in (4, 8, 16)]
SWEEP += [("hnsw", {"ef_search": e}) for e in (32, 64)] + [("ivfpq", {"nprobe": 8})]


def sweep(folder: Path, args) -> list[dict]:
    """Recall of the plain top-K_s (no threshold) and time of each backend setting."""
    import torch

    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    from mllmrec_pyg.transforms._ann import IndexParams
    from mllmrec_pyg.transforms.threshold_knn import threshold_knn_graph

    x = np.load(folder / "x.npy", mmap_mode="r")
    owners = np.sort(
        np.random.default_rng(1).choice(x.shape[0], min(args.sample, x.shape[0]), replace=False)
    )
    vals, _, q = exact_semantic(x, owners, args.k_s - 1)
    kth = vals[:, -1]
    rows = []
    for backend, params in SWEEP:
        t0, c0 = time.perf_counter(), time.process_time()
        ei, _ = threshold_knn_graph(x, args.k_s, None, True, None, backend, IndexParams(**params))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        hits = 0
        for r, (a, g) in enumerate(zip(owners, neighbours_of(ei, owners))):
            g = g[g != a]
            keys = torch.from_numpy(np.array(x[g], dtype=np.float32))
            sims = q[r] @ (keys / keys.norm(dim=1, keepdim=True)).t()
            hits += int((sims >= kth[r] - 1e-6).sum())
        rows.append(
            {
                "backend": backend,
                **params,
                "recall": hits / (owners.size * (args.k_s - 1)),
                "seconds": wall,
                "cpu_seconds": cpu,
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def json_subprocess(*argv: str) -> dict:
    """The last line ``python *argv`` prints, read as JSON (also used by graph_build.py)."""
    res = subprocess.run([sys.executable, *argv], check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _subprocess(mode: str, folder: Path, argv: list[str]) -> dict:
    return json_subprocess(__file__, f"--{mode}", str(folder), *argv)


# --------------------------------------------------------------------------- report
def fit_exponent(items: list[int], seconds: list[float]) -> float:
    """Slope of log(time) against log(items), least squares."""
    if len(items) < 2:
        return float("nan")
    return float(np.polyfit(np.log(items), np.log(seconds), 1)[0])


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = [r["items"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for stage, label in (
        ("semantic", "ThresholdKNN"),
        ("cooccurs", "JaccardCoOccurrence"),
        ("merge", "MergeGraphs"),
        ("total", "total"),
    ):
        secs = [r["total"] if stage == "total" else r[stage]["seconds"] for r in rows]
        ax.loglog(items, secs, "o-", label=f"{label} (slope {fit_exponent(items, secs):.2f})")
    ref = [rows[0]["total"] * n / items[0] for n in items]
    ax.loglog(items, ref, "k:", label="linear")
    ax.set_xlabel("items")
    ax.set_ylabel("seconds")
    ax.set_title("Graph refinement time")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["10k", "100k", "1m"], choices=SIZES)
    parser.add_argument("--threads", type=int, default=2, help="torch and faiss threads")
    parser.add_argument("--backend", default="auto", help="ThresholdKNN backend")
    parser.add_argument("--nprobe", type=int, default=8)
    parser.add_argument("--max-pairs", type=int, default=2**22)
    parser.add_argument("--alpha", type=float, default=0.6)
    parser.add_argument("--k-s", type=int, default=10)
    parser.add_argument("--k-c", type=int, default=10)
    parser.add_argument("--sample", type=int, default=2000, help="owners for recall")
    parser.add_argument("--plot", type=Path, default=Path("benchmarks/results/graph_scale.png"))
    parser.add_argument("--json", type=Path, help="write the rows here as JSON")
    parser.add_argument("--data-dir", type=Path, help="keep generated data here (default: temp)")
    parser.add_argument(
        "--sweep",
        choices=SIZES,
        help="instead: recall and time of each ThresholdKNN index setting at this size",
    )
    parser.add_argument("--sweep-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--generate", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--items", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        print(json.dumps(generate(args.items, args.generate)))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return
    if args.sweep_worker:
        print(json.dumps(sweep(args.sweep_worker, args)))
        return
    if args.sweep:
        with tempfile.TemporaryDirectory(dir=args.data_dir) as tmp:
            folder = Path(tmp)
            _subprocess("generate", folder, [f"--items={SIZES[args.sweep]}"])
            rows = _subprocess(
                "sweep-worker", folder, [f"--threads={args.threads}", f"--sample={args.sample}"]
            )
        print(f"{args.sweep} items, K_s={args.k_s}, {args.threads} thread(s), no threshold")
        print("| backend | setting | recall@K_s | wall s | CPU s |")
        print("|---|---|---|---|---|")
        for r in rows:
            setting = ", ".join(f"{k}={v}" for k, v in r.items() if k in ("nprobe", "ef_search"))
            print(
                f"| {r['backend']} | {setting} | {r['recall']:.4f} | {r['seconds']:.1f} | "
                f"{r['cpu_seconds']:.1f} |"
            )
        return

    import torch

    passthrough = [  # --threads=..., --max-pairs=..., ... for the worker
        f"--{name.replace('_', '-')}={getattr(args, name)}"
        for name in ("threads", "backend", "nprobe", "max_pairs", "alpha", "k_s", "k_c", "sample")
    ]
    try:
        import faiss

        faiss_version = faiss.__version__
    except ImportError:
        faiss_version = "not installed"
    print(
        f"torch {torch.__version__}, faiss {faiss_version}; {args.threads} torch and faiss "
        f"threads on {os.cpu_count()} cores; alpha={args.alpha}, K_s={args.k_s}, "
        f"K_c={args.k_c}, backend={args.backend}, nprobe={args.nprobe}, "
        f"max_pairs={args.max_pairs}, recall on {args.sample} owners",
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory(dir=args.data_dir) as tmp:
        for size in args.sizes:
            folder = Path(tmp) / size
            folder.mkdir()
            t0 = time.perf_counter()
            row = {"size": size, **_subprocess("generate", folder, [f"--items={SIZES[size]}"])}
            row["generate_seconds"] = time.perf_counter() - t0
            row.update(_subprocess("worker", folder, passthrough))
            row["total"] = sum(row[s]["seconds"] for s in STAGES)
            row["total_cpu"] = sum(row[s]["cpu_seconds"] for s in STAGES)
            rows.append(row)
            print(
                f"  {size}: {row['total']:.1f} s ({row['total_cpu']:.1f} s CPU), peak {row['process_peak_gb']:.2f} GB, "
                f"semantic recall {row['semantic_recall']['recall']:.4f}, co-occurrence "
                f"recall {row['cooccurs_recall']['recall']:.4f}",
                flush=True,
            )

    head = (
        f"{'size':5} {'items':>9} {'users':>9} {'pairs':>10} {'sum d^2':>11} {'backend':>7} "
        f"{'knn s':>7} {'knn GB':>6} {'jacc s':>7} {'jacc GB':>7} {'merge s':>7} "
        f"{'total s':>7} {'peak GB':>7} {'R@Ks':>6} {'R@Kc':>6} {'S* edges':>10}"
    )
    print()
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['size']:5} {r['items']:9d} {r['users']:9d} {r['pairs']:10d} "
            f"{r['sum_deg_sq']:11d} {r['backend']:>7} "
            f"{r['semantic']['seconds']:7.1f} {r['semantic']['peak_gb']:6.2f} "
            f"{r['cooccurs']['seconds']:7.1f} {r['cooccurs']['peak_gb']:7.2f} "
            f"{r['merge']['seconds']:7.1f} {r['total']:7.1f} {r['process_peak_gb']:7.2f} "
            f"{r['semantic_recall']['recall']:6.4f} {r['cooccurs_recall']['recall']:6.4f} "
            f"{r['edges']['related']:10d}"
        )
    items = [r["items"] for r in rows]
    print()
    print("growth exponent of time in items (log-log least squares):")
    for stage in (*STAGES, "total"):
        secs = [r["total"] if stage == "total" else r[stage]["seconds"] for r in rows]
        steps = ", ".join(
            f"{a['size']}->{b['size']} {fit_exponent([a['items'], b['items']], [sa, sb]):.2f}"
            for a, b, sa, sb in zip(rows, rows[1:], secs, secs[1:])
        )
        print(f"  {stage:9} {fit_exponent(items, secs):.2f}  (between sizes: {steps})")
    print()
    print("CPU seconds (process time; on a shared machine wall time includes waiting):")
    for r in rows:
        print(
            f"  {r['size']:5} knn {r['semantic']['cpu_seconds']:.1f}, jaccard "
            f"{r['cooccurs']['cpu_seconds']:.1f}, merge {r['merge']['cpu_seconds']:.1f}, "
            f"total {r['total_cpu']:.1f}"
        )
    print()
    print("semantic edges per sampled owner with exact similarity >= alpha (excl. self):")
    for r in rows:
        sr, cr = r["semantic_recall"], r["cooccurs_recall"]
        print(
            f"  {r['size']:5} {sr['true_edges_per_owner']:.2f}; co-occurrence max weight "
            f"error {cr['max_weight_error']:.1e}; max user degree {r['max_user_degree']}"
        )
    plot(rows, args.plot)
    print(f"\nplot: {args.plot}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
