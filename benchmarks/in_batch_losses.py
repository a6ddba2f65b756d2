"""In-batch contrastive losses per distinct id against the same losses on the gathered batch.

SMORE, SLMRec, GUME, LGMRec and SOIL contrast a batch's users or items with each
other. A batch of 2048 training pairs repeats ids (MovieLens has 610 users),
and the package computes those losses once per distinct id
(``mllmrec_pyg.nn.mm_common.in_batch_softmax``, ``info_nce(index=...)``).
This script trains each model with the package's losses ("distinct") and
with the losses computed on the gathered ``[B, d]`` rows, one row per pair
("gathered", the way the authors' code computes them), alternating the two
epoch by epoch from the same initial weights and batches, and prints seconds
per training epoch, the ratio, and the largest difference of the first
epoch's losses (the two ways are the same function).

    python benchmarks/in_batch_losses.py --datasets movielens,baby --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

from mllmrec_pyg.threads import apply_thread_policy

MODELS = ("smore", "slmrec", "gume", "lgmrec", "soil")


def gathered_info_nce(plain):
    """``info_nce`` that gathers ``index`` first (one row per pair)."""

    def info_nce(anchor, positive, temperature, candidates=None, reduce="mean", index=None):
        if index is not None:
            anchor, positive = anchor[index], positive[index]
        return plain(anchor, positive, temperature, candidates, reduce)

    return info_nce


def gathered_softmax(queries, keys, rows, cols, temperature, normalize=False):
    """``in_batch_softmax`` on the gathered rows: one ``[B, B]`` product."""
    import torch
    import torch.nn.functional as F

    q, k = queries[rows], keys[cols]
    if normalize:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    return F.cross_entropy(q @ k.t() / temperature, torch.arange(rows.numel()))


@contextlib.contextmanager
def gathered_losses():
    """Every model module's in-batch losses replaced by the gathered way."""
    from mllmrec_pyg.nn import gume, lgmrec, mm_common, slmrec, smore, soil

    plain = mm_common.info_nce
    saved = [(m, "info_nce", m.info_nce) for m in (smore, gume, lgmrec, soil)]
    saved += [(m, "in_batch_softmax", m.in_batch_softmax) for m in (slmrec, soil)]
    try:
        for m, name, _ in saved:
            setattr(m, name, gathered_info_nce(plain) if name == "info_nce" else gathered_softmax)
        yield
    finally:
        for m, name, fn in saved:
            setattr(m, name, fn)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="movielens,baby")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per way")
    args = ap.parse_args()
    apply_thread_policy(args.threads)

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train_speed import build_data

    from mllmrec_pyg.nn.registry import build_model
    from mllmrec_pyg.train import TrainConfig, Trainer, seed_everything

    print(f"threads {args.threads}; seconds per training epoch, mean of {args.epochs}")
    print("| dataset | model | distinct ids | gathered batch | speed-up | first-epoch loss diff |")
    print("|---|---|---|---|---|---|")
    for dataset in args.datasets.split(","):
        data = build_data(dataset, 0)
        for name in args.models.split(","):
            cfg = TrainConfig(seed=0, show_progress=False)
            trainers = {}
            for way in ("distinct", "gathered"):  # the same initial weights both ways
                seed_everything(0)
                trainers[way] = Trainer(build_model(name, data), data, cfg)
            times = {k: [] for k in trainers}
            losses = {}
            for epoch in range(args.epochs):
                for way, trainer in trainers.items():
                    torch.manual_seed(epoch)  # the same dropout / noise draws both ways
                    with gathered_losses() if way == "gathered" else contextlib.nullcontext():
                        t0 = time.perf_counter()
                        loss = trainer.train_epoch(epoch)
                        times[way].append(time.perf_counter() - t0)
                    losses.setdefault(way, loss)
            a, b = (statistics.mean(times[k]) for k in ("distinct", "gathered"))
            diff = abs(losses["distinct"] - losses["gathered"])
            print(f"| {dataset} | {name} | {a:.2f} | {b:.2f} | {b / a:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
