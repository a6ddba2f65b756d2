"""What the resumable generation store costs: per-row commits versus no store.

Runs the user-preference stage (Prompt 2, offline ``none`` backend, so the
model costs almost nothing and the store's overhead is fully visible) on the
synthetic catalog, each configuration on a fresh store in one process:

* ``memory``   -- no store (nothing survives a crash);
* ``NORMAL``   -- SQLite WAL, one commit per generation (the default; survives
  a killed process);
* ``FULL``     -- the same with an fsync per commit (also survives power loss);
* ``resume``   -- a second run over a complete ``NORMAL`` store (all skipped).

Prints a table of users per second and the ratio to ``memory``.

    .venv/bin/python benchmarks/generation_store.py --users 2000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mllmrec_pyg.data import make_synthetic
from mllmrec_pyg.reasoning import GenerationStore, OfflineBackend, generate_preferences


def timed(data, store, batch_size: int) -> float:
    backend = OfflineBackend()
    t0 = time.perf_counter()
    generate_preferences(
        data, backend, "Synthetic", store=store, batch_size=batch_size, show_progress=False
    )
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2000, help="synthetic users")
    parser.add_argument("--items", type=int, default=1000, help="synthetic items")
    parser.add_argument("--batch-size", type=int, default=8, help="requests per backend call")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()

    data = make_synthetic(seed=0, num_users=args.users, num_items=args.items)
    n = int(data["user"].num_nodes)
    timed(data, None, args.batch_size)  # warm caches (phrase cache, imports)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("memory", "NORMAL", "FULL", "resume"):
            best = float("inf")
            for r in range(args.repeats):
                if name == "memory":
                    best = min(best, timed(data, None, args.batch_size))
                    continue
                path = Path(tmp) / f"{name}-{r}.sqlite"
                mode = "FULL" if name == "FULL" else "NORMAL"
                with GenerationStore(path, synchronous=mode) as store:
                    if name == "resume":
                        timed(data, store, args.batch_size)  # fill it first
                    best = min(best, timed(data, store, args.batch_size))
            results[name] = best
    base = results["memory"]
    print(f"{n} users, offline backend, batch {args.batch_size}, best of {args.repeats}")
    print(f"{'store':<8} {'seconds':>9} {'users/s':>10} {'time vs memory':>15}")
    for name, sec in results.items():
        print(f"{name:<8} {sec:>9.3f} {n / sec:>10.0f} {sec / base:>14.2f}x")


if __name__ == "__main__":
    main()
