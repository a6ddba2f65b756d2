"""Seconds per whole run of each model at its tuned settings: the price of a model.

A run is what the comparison does once per seed: build the model from the
settings a validation search chose (``<tuned-dir>/<model>.json``), train with
early stopping (the tuned file's epoch cap and patience), evaluate valid every
epoch and test once. The models run one after another, in rounds (round r runs
every model once, each with seed r), in one process with a fixed thread count,
so that drifts of a shared machine's load hit every model alike. The table
gives each model's mean seconds per run, per epoch and its epochs, and the
ratio to the first model.

    python benchmarks/tuned_run_time.py --dataset movielens --tuned-dir docs/experiments/tuned/movielens
    python benchmarks/tuned_run_time.py --dataset data/scientific \\
        --tuned-dir docs/experiments/tuned/mmrec-scientific --models lightgcn langgcn --rounds 2

Features and graphs are built once (features cached as by ``mllmrec train``);
their time is not part of a run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from mllmrec_pyg.threads import apply_thread_policy, configure_openmp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True, help="synthetic, movielens or an MMRec folder")
    ap.add_argument("--tuned-dir", required=True, help="folder of <model>.json tuning results")
    ap.add_argument("--models", nargs="+", default=["lightgcn", "langgcn"])
    ap.add_argument("--rounds", type=int, default=1, help="runs per model (seeds 0..rounds-1)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write the runs here")
    args = ap.parse_args()

    configure_openmp()
    apply_thread_policy(args.threads)
    from mllmrec_pyg import pipeline
    from mllmrec_pyg.config import DataConfig, GraphConfig, TextConfig
    from mllmrec_pyg.nn.registry import build_model
    from mllmrec_pyg.sampling import seed_everything
    from mllmrec_pyg.train import TrainConfig, Trainer
    from mllmrec_pyg.tuning import read_tuned

    tuned = {}
    for m in args.models:
        path = Path(args.tuned_dir) / f"{m}.json"
        tuned[m] = read_tuned(path)["best"]["settings"]
    data, _ = pipeline.prepare(DataConfig(args.dataset), TextConfig(), show_progress=False)
    graphs: dict = {}
    runs = []
    for r in range(args.rounds):
        for m in args.models:
            s = tuned[m]
            g = pipeline.cached_graph(graphs, data, GraphConfig(**(s["graph"] or {})))
            model_values = dict(s["model"])
            if "seed" in model_values:
                model_values["seed"] = r
            seed_everything(r)
            model = build_model(m, g, **model_values)
            t = s["train"]
            cfg = TrainConfig(
                lr=t["lr"],
                batch_size=t["batch_size"],
                epochs=t["epochs"],
                patience=t["patience"],
                seed=r,
                show_progress=False,
            )
            start = time.perf_counter()
            res = Trainer(model, g, cfg).fit()
            sec = time.perf_counter() - start
            runs.append(
                {
                    "model": m,
                    "seed": r,
                    "seconds": sec,
                    "epochs": res.epochs,
                    "best_epoch": res.best_epoch,
                    "test_recall@20": res.test.get("recall@20"),
                }
            )
            print(
                f"{m} seed {r}: {sec:.1f} s, {res.epochs} epochs (best {res.best_epoch}), "
                f"test R@20 {res.test.get('recall@20', float('nan')):.4f}",
                flush=True,
            )
    base = statistics.mean(x["seconds"] for x in runs if x["model"] == args.models[0])
    print(f"\n{args.dataset}, {args.threads} thread(s), {args.rounds} round(s)\n")
    print("| model | s / run | epochs | s / epoch | test R@20 | x first |")
    print("|---|---|---|---|---|---|")
    for m in args.models:
        mine = [x for x in runs if x["model"] == m]
        sec = statistics.mean(x["seconds"] for x in mine)
        ep = statistics.mean(x["epochs"] for x in mine)
        r20 = statistics.mean(x["test_recall@20"] for x in mine)
        print(f"| {m} | {sec:.1f} | {ep:.0f} | {sec / ep:.2f} | {r20:.4f} | {sec / base:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
