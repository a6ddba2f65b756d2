"""Seconds per training epoch of MLLMRec: E* once + batch rows only vs. everything every batch.

Both ways train the same model on the same batches and negatives:

* ``package``: :class:`~mllmrec_pyg.nn.MLLMRec` as shipped. The item features
  are frozen, so E* (the item LightGCN output) is computed once; each step
  runs only the batch's distinct users and items through the towers.
* ``reference way``: what the reference implementation does at every batch:
  the item graph convolution over all items, then both towers over ALL users
  and ALL items, and only then the batch's rows are picked.

Data: :func:`~mllmrec_pyg.data.synthetic.make_scale_data` at Baby size
(19,445 users x 7,050 items, 384-d features), item graph built with the
package transforms (K_s 10, alpha 0.7, K_c 10). Both timings come from one
run on the same machine; the ratio is reference / package.

    python benchmarks/train_speed.py
    python benchmarks/train_speed.py --epochs 2 --json speed.json
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
import torch.nn.functional as F

from mllmrec_pyg._sparse import quiet_sparse
from mllmrec_pyg.data.schema import INTERACTS
from mllmrec_pyg.data.synthetic import make_scale_data
from mllmrec_pyg.io import write_json
from mllmrec_pyg.nn import MLLMRec
from mllmrec_pyg.nn.item_lightgcn import ItemLightGCN, item_graph_norm, to_adj_t
from mllmrec_pyg.train import UniformNegativeSampler
from mllmrec_pyg.transforms import JaccardCoOccurrence, MergeGraphs, ThresholdKNN


def reference_scores(model: MLLMRec, conv: ItemLightGCN, item_x, adj_t, users, pos, neg):
    """The reference's step: convolution + both towers over everything, then index."""
    e_star = conv(item_x, adj_t)
    h_u = model.user_tower(model.user_x)
    h_i = model.item_tower(e_star)
    u = h_u[users]
    return (u * h_i[pos]).sum(-1), (u * h_i[neg]).sum(-1)


def run_epochs(step, model, pairs, sampler, epochs: int, batch_size: int, seed: int) -> list[float]:
    """Train ``epochs`` epochs with ``step``; returns seconds per epoch."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(pairs.size(1), generator=gen)
        for idx in perm.split(batch_size):
            users, pos = pairs[:, idx]
            neg = sampler(users, gen)
            p, n = step(users, pos, neg)
            loss = -F.logsigmoid(p - n).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="baby", help="a scale preset (baby, sports, clothing)")
    ap.add_argument("--epochs", type=int, default=1, help="epochs timed per method")
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args()

    t0 = time.perf_counter()
    data = make_scale_data(args.size, dim=384, seed=args.seed)
    for transform in (ThresholdKNN(k=10, threshold=0.7), JaccardCoOccurrence(k=10), MergeGraphs()):
        data = transform(data)
    prep = time.perf_counter() - t0
    pairs = data[INTERACTS].edge_index
    num_users, num_items = data["user"].num_nodes, data["item"].num_nodes
    sampler = UniformNegativeSampler(pairs, num_users, num_items)
    related = data["item", "related", "item"]
    with quiet_sparse():
        adj_t, _ = item_graph_norm(to_adj_t(related.edge_index, related.edge_weight, num_items))
    conv = ItemLightGCN(1, normalize=False)
    item_x = data["item"].x

    # Same initial weights for both ways.
    torch.manual_seed(args.seed)
    fast = MLLMRec.from_data(data)
    slow = MLLMRec.from_data(data)
    slow.load_state_dict(fast.state_dict())

    # The two ways compute the same scores.
    users, pos = pairs[:, : args.batch_size]
    neg = sampler(users, torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = torch.cat(fast.pair_scores(users, pos, neg))
        b = torch.cat(reference_scores(slow, conv, item_x, adj_t, users, pos, neg))
    max_diff = float((a - b).abs().max())

    fast_times = run_epochs(
        fast.pair_scores, fast, pairs, sampler, args.epochs, args.batch_size, args.seed
    )
    slow_times = run_epochs(
        lambda u, p, n: reference_scores(slow, conv, item_x, adj_t, u, p, n),
        slow,
        pairs,
        sampler,
        args.epochs,
        args.batch_size,
        args.seed,
    )
    fast_s = sum(fast_times) / len(fast_times)
    slow_s = sum(slow_times) / len(slow_times)
    batches = -(-pairs.size(1) // args.batch_size)

    print(
        f"MLLMRec training speed, {args.size}: {num_users} users x {num_items} items, "
        f"{pairs.size(1)} training pairs, 384-d features, {batches} batches of "
        f"{args.batch_size} per epoch"
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, torch threads "
        f"{torch.get_num_threads()}, cpus {os.cpu_count()}; data + graph build {prep:.1f}s"
    )
    print(f"max |score difference| between the two ways on one batch: {max_diff:.2e}")
    print()
    print(f"{'method':<48} {'s/epoch':>9} {'ms/batch':>9}")
    print(
        f"{'package (E* once, batch rows only)':<48} {fast_s:>9.2f} {1000 * fast_s / batches:>9.1f}"
    )
    print(
        f"{'reference way (conv + towers on all, per batch)':<48} {slow_s:>9.2f} "
        f"{1000 * slow_s / batches:>9.1f}"
    )
    print(f"{'ratio reference / package':<48} {slow_s / fast_s:>9.1f}x")
    if args.json:
        write_json(
            args.json,
            {
                "size": args.size,
                "num_users": num_users,
                "num_items": num_items,
                "train_pairs": int(pairs.size(1)),
                "batches": batches,
                "package_s_per_epoch": fast_s,
                "reference_s_per_epoch": slow_s,
                "ratio": slow_s / fast_s,
                "max_score_diff": max_diff,
                "epochs_timed": args.epochs,
            },
        )


if __name__ == "__main__":
    main()
