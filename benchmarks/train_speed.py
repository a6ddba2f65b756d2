"""Seconds per epoch (training and evaluation) of every model, by thread setting and load.

For each dataset (MovieLens ``ml-latest-small`` and the Baby-size synthetic
catalog) a fresh worker process builds the data, then trains every
registered model with the package trainer and times, per epoch,
``Trainer.train_epoch`` and the full-ranking validation
``Trainer.evaluate("valid")``.

Thread settings:

* ``1``, ``2``: a fixed count through :func:`mllmrec_pyg.threads.apply_thread_policy`
  (passive OpenMP waiting);
* ``auto``: the package default, ``apply_thread_policy(None)`` (free-core
  start, then the batch-timed choice of :class:`~mllmrec_pyg.threads.ThreadTuner`);
* ``torch``: no policy at all, torch's own default (one thread per core,
  spinning OpenMP threads), i.e. what the package did before it had a policy.
  It needs a process of its own (OpenMP reads its settings when torch loads).

``1``, ``2`` and ``auto`` run in one process, **interleaved**: each model
trains ``--epochs`` rounds, and in each round one epoch per setting, so that
slow drifts of a shared machine's load hit every setting alike. The table
reports the mean over the rounds after the first (warm-up; under ``auto`` it
also holds the thread probe).

Loads: ``quiet`` runs the worker alone; ``busy`` starts one competing
single-threaded busy process (a Python spin loop) for the worker's lifetime.
On a machine shared with other jobs "quiet" only means "nothing added by the
benchmark": compare settings within one table.

With ``--reference``, the quiet Baby-size worker also times MLLMRec trained
and evaluated the reference implementation's way (item convolution and both
towers over all users and items at every batch; evaluation from the full
representations with plain ``torch.topk``, the same metric code), epoch for epoch interleaved with
the package's way, at ``--reference-threads`` threads, after checking that
both ways give the same scores; it prints the ratios for training and for
training + evaluation.

    MLLMREC_CACHE=/path/to/cache python benchmarks/train_speed.py --reference
    python benchmarks/train_speed.py --datasets baby --models mllmrec --threads 1 --reference
    python benchmarks/train_speed.py --threads 1,auto --loads busy --epochs 2 --json speed.json

``--clock cpu`` times each epoch in CPU seconds of the training thread
(``time.thread_time``) instead of wall seconds: on a machine shared with other
jobs at higher priority the wall clock mostly measures waiting, while one
thread's CPU time stays close to what the epoch costs on a quiet machine.
It counts the calling thread only, so it is meaningful at one thread.

``--to-best N`` also trains every model from scratch at one thread (valid
Recall@20 every epoch, patience 20, at most ``N`` epochs, as ``mllmrec train``)
and reports the best-valid epoch and the seconds (same clock) spent until it,
training and evaluation together.

MovieLens features are encoded once and cached (``MLLMREC_CACHE``), as by
``mllmrec train``.

    python benchmarks/train_speed.py --datasets movielens --models all --threads 1,2,auto \
        --loads quiet --clock cpu --to-best 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from mllmrec_pyg.threads import apply_thread_policy, configure_openmp

MODELS = ("pop", "bpr", "lightgcn", "mllmrec", "freedom")
#: every registered model (``--models all``): the defaults plus LangGCN and the
#: multimodal baselines
ALL_MODELS = (
    *MODELS,
    *("langgcn", "vbpr", "lattice", "lgmrec", "smore", "slmrec", "gume", "soil"),
)
SETTINGS = ("1", "2", "auto", "torch")


# -- the worker ------------------------------------------------------------------------------
def build_data(dataset: str, seed: int):
    """The dataset with item/user features and the refined item graph."""
    from mllmrec_pyg import pipeline
    from mllmrec_pyg.config import DataConfig, GraphConfig, TextConfig

    if dataset == "baby":
        from mllmrec_pyg.data.synthetic import make_scale_data

        data = make_scale_data("baby", dim=384, seed=seed)
    else:
        data, _ = pipeline.prepare(
            DataConfig(dataset, seed=seed), TextConfig(), show_progress=False
        )
    return pipeline.build_graph(data, GraphConfig())


def reference_scores(model, conv, item_x, adj_t, users, pos, neg):
    """The reference's step: convolution + both towers over everything, then index."""
    e_star = conv(item_x, adj_t)
    h_u = model.user_tower(model.user_x)
    h_i = model.item_tower(e_star)
    u = h_u[users]
    return (u * h_i[pos]).sum(-1), (u * h_i[neg]).sum(-1)


def reference_way(data, model, trainer, seed: int) -> dict:
    """One epoch of MLLMRec trained and evaluated the reference's way, on ``model`` (a copy)."""
    import torch
    import torch.nn.functional as F

    from mllmrec_pyg._sparse import quiet_sparse
    from mllmrec_pyg.data.schema import INTERACTS
    from mllmrec_pyg.metrics import mask_scores_, ranking_metrics
    from mllmrec_pyg.nn.item_lightgcn import ItemLightGCN, item_graph_norm, to_adj_t

    num_items = data["item"].num_nodes
    related = data["item", "related", "item"]
    with quiet_sparse():
        adj_t, _ = item_graph_norm(to_adj_t(related.edge_index, related.edge_weight, num_items))
    conv = ItemLightGCN(1, normalize=False)
    item_x = data["item"].x
    pairs = data[INTERACTS].edge_index
    sampler = trainer.sampler
    cfg = trainer.config

    users, pos = pairs[:, : cfg.batch_size]
    neg = sampler(users, torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = torch.cat(model.pair_scores(users, pos, neg))
        b = torch.cat(reference_scores(model, conv, item_x, adj_t, users, pos, neg))
    max_diff = float((a - b).abs().max())

    if not hasattr(model, "_reference_opt"):
        params = [p for p in model.parameters() if p.requires_grad]
        model._reference_opt = torch.optim.Adam(params, lr=cfg.lr)
        model._reference_gen = torch.Generator().manual_seed(seed)
    opt, gen = model._reference_opt, model._reference_gen
    evaluator = trainer.evaluator
    eval_users = evaluator.users("valid")
    t0 = time.perf_counter()
    for idx in torch.randperm(pairs.size(1), generator=gen).split(cfg.batch_size):
        u, p = pairs[:, idx]
        n = sampler(u, gen)
        ps, ns = reference_scores(model, conv, item_x, adj_t, u, p, n)
        loss = -F.logsigmoid(ps - ns).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    t1 = time.perf_counter()
    top = []
    with torch.no_grad():  # full_sort_predict: all representations, blocks, mask, topk, metrics
        h_u = model.user_tower(model.user_x)
        h_i = model.item_tower(conv(item_x, adj_t))
        for start in range(0, eval_users.numel(), cfg.eval_block_size):
            block = eval_users[start : start + cfg.eval_block_size]
            scores = h_u[block] @ h_i.t()
            mask_scores_(scores, block, evaluator.masks_for("valid"))
            top.append(scores.topk(max(cfg.ks), dim=1).indices)
        full = torch.zeros(trainer.num_users, max(cfg.ks), dtype=torch.long)
        full[eval_users] = torch.cat(top)
        ranking_metrics(full, evaluator.held_out["valid"], cfg.ks)
    return {"train_s": t1 - t0, "eval_s": time.perf_counter() - t1, "max_score_diff": max_diff}


def clock(kind: str):
    """The timer of ``--clock``: wall seconds or this thread's CPU seconds."""
    return time.thread_time if kind == "cpu" else time.perf_counter


def time_to_best(trainer, max_epochs: int, patience: int, now) -> dict:
    """Train from the trainer's fresh state until valid Recall@20 stops improving for
    ``patience`` epochs (or ``max_epochs``); the best epoch and the time spent until it."""
    best, best_epoch, spent, at_best = -1.0, 0, 0.0, 0.0
    for epoch in range(1, max_epochs + 1):
        t0 = now()
        if trainer.trainable:
            trainer.train_epoch(epoch)
        r20 = trainer.evaluate("valid")[trainer.config.monitor]
        spent += now() - t0
        if r20 > best:
            best, best_epoch, at_best = r20, epoch, spent
        elif epoch - best_epoch >= patience:
            break
    return {"best_epoch": best_epoch, "epochs": epoch, "to_best_s": at_best, "valid": best}


def worker(args: argparse.Namespace) -> None:
    settings = args.setting.split(",")
    if "torch" in settings and len(settings) > 1:
        raise SystemExit("the 'torch' setting runs in a process of its own")
    if "torch" not in settings:
        configure_openmp()  # passive waiting, before torch loads OpenMP
    import copy

    import torch

    from mllmrec_pyg.nn.registry import build_model
    from mllmrec_pyg.threads import active_tuner, use_tuner
    from mllmrec_pyg.train import TrainConfig, Trainer, seed_everything

    now = clock(args.clock)
    t0 = time.perf_counter()
    data = build_data(args.dataset, args.seed)
    prep = time.perf_counter() - t0
    for name in args.models.split(","):
        seed_everything(args.seed)
        model = build_model(name, data)
        trainer = Trainer(model, data, TrainConfig(seed=args.seed, show_progress=False))
        rows = {
            s: {
                "dataset": args.dataset,
                "model": name,
                "setting": s,
                "load": args.load,
                "prep_s": prep,
                "clock": args.clock,
                "train_pairs": int(trainer.train_pairs.size(1)),
                "num_users": trainer.num_users,
                "num_items": trainer.num_items,
                "train_s": [],
                "eval_s": [],
                "threads": [],
            }
            for s in settings
        }
        reference_copy = copy.deepcopy(model) if args.reference and name == "mllmrec" else None
        tuner = None
        epoch = 0
        for _ in range(args.epochs):  # rounds: each setting trains one epoch in turn
            for s in settings:
                if s == "auto":
                    if tuner is None:  # the run's start: the free-core count, then the tuner
                        apply_thread_policy(None)
                        tuner = active_tuner()
                    else:
                        use_tuner(tuner)
                        torch.set_num_threads(tuner.chosen)
                elif s != "torch":
                    apply_thread_policy(int(s))
                epoch += 1
                t1 = now()
                if trainer.trainable:
                    trainer.train_epoch(epoch)
                t2 = now()
                trainer.evaluate("valid")
                t3 = now()
                rows[s]["train_s"].append(t2 - t1)
                rows[s]["eval_s"].append(t3 - t2)
                rows[s]["threads"].append(torch.get_num_threads())
        if reference_copy is not None:
            apply_thread_policy(args.reference_threads)
            ref = {"threads": args.reference_threads, "package": [], "reference": []}
            for _ in range(args.epochs):  # interleaved: package epoch, reference epoch
                epoch += 1
                t1 = time.perf_counter()
                trainer.train_epoch(epoch)
                t2 = time.perf_counter()
                trainer.evaluate("valid")
                ref["package"].append({"train_s": t2 - t1, "eval_s": time.perf_counter() - t2})
                ref["reference"].append(reference_way(data, reference_copy, trainer, args.seed))
            rows[settings[0]]["reference"] = ref
        if args.to_best:
            apply_thread_policy(1)
            seed_everything(args.seed)
            fresh = Trainer(
                build_model(name, data), data, TrainConfig(seed=args.seed, show_progress=False)
            )
            rows[settings[0]]["to_best"] = time_to_best(fresh, args.to_best, 20, now)
        for row in rows.values():
            print("RESULT " + json.dumps(row), flush=True)


# -- the driver ------------------------------------------------------------------------------
def steady(times: list[float]) -> float:
    """Mean over the epochs after the first (all of them if there is only one)."""
    rest = times[1:] or times
    return sum(rest) / len(rest)


def run_worker(args: argparse.Namespace, dataset: str, setting: str, load: str) -> list[dict]:
    """One worker process: ``setting`` is a comma list of thread settings run interleaved."""
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--dataset",
        dataset,
        "--setting",
        setting,
        "--load",
        load,
        "--models",
        args.models,
        "--epochs",
        str(args.epochs),
        "--seed",
        str(args.seed),
        "--clock",
        args.clock,
        "--to-best",
        str(args.to_best),
    ]
    if args.reference and dataset == "baby" and load == "quiet" and setting != "torch":
        cmd += ["--reference", "--reference-threads", str(args.reference_threads)]
    env = dict(os.environ)
    for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "MLLMREC_THREADS"):
        env.pop(key, None)
    busy = None
    if load == "busy":
        # a session of its own, like a job started from another terminal (with the
        # scheduler's autogroups, a child in the worker's session would share its slice)
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
        time.sleep(0.5)
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"worker {dataset}/{setting}/{load} failed")
    return [json.loads(line[7:]) for line in out.stdout.splitlines() if line.startswith("RESULT ")]


def print_tables(rows: list[dict], settings: list[str], loads: list[str]) -> None:
    by = {(r["dataset"], r["model"], r["setting"], r["load"]): r for r in rows}
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        some = next(r for r in rows if r["dataset"] == dataset)
        print(
            f"\n{dataset}: {some['num_users']} users x {some['num_items']} items, "
            f"{some['train_pairs']} training pairs; s/epoch as train + eval = total"
        )
        cols = [(load, s) for load in loads for s in settings]
        has_best = any("to_best" in r for r in rows if r["dataset"] == dataset)
        extra = [f"best valid: seconds to it ({some.get('clock', 'wall')}, 1 thread)"] * has_best
        header = "| model | " + " | ".join([f"{load}, {s}" for load, s in cols] + extra) + " |"
        print(header)
        print("|" + "---|" * (len(cols) + 1 + len(extra)))
        for model in dict.fromkeys(r["model"] for r in rows if r["dataset"] == dataset):
            cells = []
            for load, s in cols:
                r = by.get((dataset, model, s, load))
                if r is None:
                    cells.append("-")
                    continue
                tr, ev = steady(r["train_s"]), steady(r["eval_s"])
                cells.append(f"{tr:.2f} + {ev:.2f} = {tr + ev:.2f}")
            best = next(
                (
                    r["to_best"]
                    for r in rows
                    if r["dataset"] == dataset and r["model"] == model and "to_best" in r
                ),
                None,
            )
            if best is not None:
                cells.append(f"epoch {best['best_epoch']}: {best['to_best_s']:.1f}")
            print(f"| {model} | " + " | ".join(cells) + " |")
        for load in loads:
            fixed = [s for s in settings if s.isdigit()]
            if "auto" not in settings or not fixed:
                continue
            worst = []
            for model in dict.fromkeys(r["model"] for r in rows if r["dataset"] == dataset):
                times = {
                    s: steady(by[k]["train_s"]) + steady(by[k]["eval_s"])
                    for s in fixed + ["auto"]
                    if (k := (dataset, model, s, load)) in by
                }
                if "auto" in times and len(times) > 1:
                    best = min(v for s, v in times.items() if s != "auto")
                    worst.append(f"{model} {times['auto'] / best:.2f}x")
            print(f"{load}: auto / best fixed count: " + ", ".join(worst))
    for r in rows:
        ref = r.get("reference")
        if ref is None:
            continue
        pkg_train = steady([e["train_s"] for e in ref["package"]])
        pkg_eval = steady([e["eval_s"] for e in ref["package"]])
        ref_train = steady([e["train_s"] for e in ref["reference"]])
        ref_eval = steady([e["eval_s"] for e in ref["reference"]])
        diff = max(e["max_score_diff"] for e in ref["reference"])
        print(
            f"\nMLLMRec at {r['dataset']} size ({r['load']}, {ref['threads']} thread(s), "
            f"interleaved epochs): package {pkg_train:.2f} + {pkg_eval:.2f} s, reference way "
            f"{ref_train:.2f} + {ref_eval:.2f} s; train {ref_train / pkg_train:.1f}x, "
            f"train + eval {(ref_train + ref_eval) / (pkg_train + pkg_eval):.1f}x "
            f"(max |score difference| {diff:.1e})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="movielens,baby")
    ap.add_argument(
        "--models",
        default=",".join(MODELS),
        help=f"comma-separated, or 'all' ({','.join(ALL_MODELS)})",
    )
    ap.add_argument("--threads", default="1,2,auto,torch", help=f"subset of {SETTINGS}")
    ap.add_argument("--loads", default="quiet,busy", help="quiet and/or busy")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per model (first = warm-up)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference", action="store_true", help="MLLMRec vs the reference's way")
    ap.add_argument("--reference-threads", type=int, default=1, help="threads for that comparison")
    ap.add_argument("--json", help="also write every timing here")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="what a second is")
    ap.add_argument(
        "--to-best", type=int, default=0, help="also train each model to its best-valid epoch"
    )
    # worker mode (internal)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--dataset", help=argparse.SUPPRESS)
    ap.add_argument("--setting", help=argparse.SUPPRESS)
    ap.add_argument("--load", default="quiet", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.models == "all":
        args.models = ",".join(ALL_MODELS)
    if args.worker:
        worker(args)
        return
    configure_openmp()
    settings = [s for s in args.threads.split(",") if s]
    loads = [s for s in args.loads.split(",") if s]
    for s in settings:
        if s not in SETTINGS:
            raise SystemExit(f"unknown thread setting {s!r}; choose from {SETTINGS}")
    rows: list[dict] = []
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"usable {len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.1f}"
    )
    groups = [",".join(s for s in settings if s != "torch")] + (
        ["torch"] if "torch" in settings else []
    )
    for dataset in args.datasets.split(","):
        for load in loads:
            for setting in (g for g in groups if g):
                t0 = time.perf_counter()
                new = run_worker(args, dataset, setting, load)
                rows += new
                print(
                    f"  {dataset} {load} threads={setting}: {len(new)} models in "
                    f"{time.perf_counter() - t0:.0f}s (load average {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
                if args.json:
                    Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    print_tables(rows, settings, loads)


if __name__ == "__main__":
    main()
