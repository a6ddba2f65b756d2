"""Sparse-dense products: the package's ``spmm`` against torch's CSR product.

Times ``mllmrec_pyg.nn.spmm.spmm`` (``embedding_bag`` over the CSR rows)
and ``adj @ x`` (torch's MKL CSR product) on the normalised user-item graph
of the Baby-size synthetic catalog (or MovieLens with ``--dataset
movielens``), for dense operands of several widths, alternating the two ways
call by call, and checks that they agree.

    python benchmarks/spmm.py --threads 1 --widths 64,384
"""

from __future__ import annotations

import argparse
import statistics
import time

from mllmrec_pyg.threads import apply_thread_policy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=("baby", "movielens"), default="baby")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--widths", default="64,384")
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    apply_thread_policy(args.threads)

    import torch

    from mllmrec_pyg._sparse import quiet_sparse
    from mllmrec_pyg.data.schema import INTERACTS
    from mllmrec_pyg.nn.bipartite import bipartite_adjacency
    from mllmrec_pyg.nn.spmm import spmm

    if args.dataset == "baby":
        from mllmrec_pyg.data.synthetic import make_scale_data

        data = make_scale_data("baby", dim=8, seed=0)
    else:
        from mllmrec_pyg import pipeline
        from mllmrec_pyg.config import DataConfig, TextConfig

        data, _ = pipeline.prepare(DataConfig("movielens"), TextConfig(), show_progress=False)
    num_users, num_items = data["user"].num_nodes, data["item"].num_nodes
    adj = bipartite_adjacency(data[INTERACTS].edge_index, num_users, num_items)
    print(
        f"{args.dataset}: {num_users + num_items} nodes, {adj._nnz()} entries, "
        f"{args.threads} thread(s), median of {args.repeats} calls"
    )
    print("| width | spmm (embedding_bag) ms | adj @ x (MKL CSR) ms | ratio |")
    print("|---|---|---|---|")
    for width in (int(w) for w in args.widths.split(",")):
        xs = [torch.randn(adj.size(1), width) for _ in range(4)]
        with quiet_sparse():
            diff = float((spmm(adj, xs[0]) - adj @ xs[0]).abs().max())
            if diff > 1e-4:
                raise SystemExit(f"the two products disagree by {diff}")
            ours, theirs = [], []
            for i in range(args.repeats):
                x = xs[i % len(xs)]
                t0 = time.perf_counter()
                spmm(adj, x)
                t1 = time.perf_counter()
                adj @ x
                t2 = time.perf_counter()
                ours.append(t1 - t0)
                theirs.append(t2 - t1)
        a, b = statistics.median(ours) * 1e3, statistics.median(theirs) * 1e3
        print(f"| {width} | {a:.2f} | {b:.2f} | {b / a:.2f}x |")


if __name__ == "__main__":
    main()
