"""``mllmrec refine``: the refined item graph from files, in-process or on a Dask cluster,
built in full or updated from an earlier graph."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from mllmrec_pyg.commands.common import CommandError, HelpFormatter

log = logging.getLogger(__name__)

RELATIONS = ("semantic", "cooccurs", "related")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``refine`` sub-command."""
    p = subparsers.add_parser(
        "refine",
        help="build the refined item graph from .npy files (optionally on a Dask cluster)",
        description="Read item features (a [I, d] float .npy, memory-mapped) and training pairs "
        "(a [2, E] int .npy of (user, item)), build ThresholdKNN + JaccardCoOccurrence + "
        "MergeGraphs and write <out>/<relation>_edge_index.npy and _edge_weight.npy for "
        "semantic, cooccurs and related, plus graph.json. With --scheduler the work runs as "
        "tasks on that Dask cluster (its workers must reach the files at the same paths). "
        "With --update-from, an earlier output folder built from the first --num-old-items "
        "items is updated for the new items and --new-pairs (exact semantic search only).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--features", required=True, type=Path, help="item features, .npy [I, d]")
    p.add_argument("--pairs", required=True, type=Path, help="ALL training pairs, .npy [2, E]")
    p.add_argument("--num-users", type=int, help="default: largest user id + 1")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--scheduler", help="Dask scheduler address (tcp://host:8786)")
    p.add_argument("--k-s", type=int, default=10)
    p.add_argument("--alpha", type=float, default=0.7, help="similarity threshold")
    p.add_argument("--k-c", type=int, default=10)
    p.add_argument("--knn-backend", default="auto", choices=("auto", "torch", "ivfjoin"))
    p.add_argument("--nprobe", type=int, default=8)
    p.add_argument("--max-pairs", type=int, default=2**22)
    p.add_argument("--update-from", type=Path, help="earlier output folder to update")
    p.add_argument("--num-old-items", type=int, help="items the earlier graph was built on")
    p.add_argument("--new-pairs", type=Path, help="pairs added since, .npy [2, E']")
    p.set_defaults(func=main)


def _save(folder: Path, name: str, array) -> None:
    from mllmrec_pyg.io import atomic_path

    with atomic_path(folder / f"{name}.npy") as tmp, open(tmp, "wb") as fh:
        import numpy as np

        np.save(fh, array)


def _load_graph(folder: Path, rel: str):
    import numpy as np
    import torch

    try:
        ei = np.load(folder / f"{rel}_edge_index.npy")
        w = np.load(folder / f"{rel}_edge_weight.npy")
    except FileNotFoundError as err:
        raise CommandError(f"--update-from {folder}: {err.filename} is missing") from None
    return torch.from_numpy(ei), torch.from_numpy(w)


def main(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from torch_geometric.utils import coalesce

    from mllmrec_pyg.transforms._ann import IndexParams

    for flag, path in (("--features", args.features), ("--pairs", args.pairs)):
        if not path.is_file():
            raise CommandError(f"{flag} {path}: no such file")
    x = np.load(args.features, mmap_mode="r")
    if x.ndim != 2 or x.dtype.kind != "f":
        raise CommandError(
            f"--features {args.features}: need a float [I, d] array, got {x.dtype} {x.shape}"
        )
    pairs = np.load(args.pairs, mmap_mode="r")
    if pairs.ndim != 2 or pairs.shape[0] != 2 or pairs.dtype.kind not in "iu":
        raise CommandError(
            f"--pairs {args.pairs}: need an int [2, E] array, got {pairs.dtype} {pairs.shape}"
        )
    num_items = int(x.shape[0])
    if pairs.shape[1] and (int(pairs[1].max()) >= num_items or int(pairs.min()) < 0):
        raise CommandError(
            f"--pairs {args.pairs}: item ids outside [0, {num_items}) (rows of --features)"
        )
    num_users = args.num_users or (int(pairs[0].max()) + 1 if pairs.shape[1] else 0)
    params = IndexParams(nprobe=args.nprobe)
    if args.update_from is not None:
        if args.scheduler:
            raise CommandError("--update-from runs in-process: drop --scheduler")
        if args.num_old_items is None or args.new_pairs is None:
            raise CommandError("--update-from needs --num-old-items and --new-pairs")
        from mllmrec_pyg.transforms.incremental import update_jaccard, update_threshold_knn

        old_s, old_c = (
            _load_graph(args.update_from, "semantic"),
            _load_graph(args.update_from, "cooccurs"),
        )
        xs = torch.from_numpy(np.array(x, dtype=np.float32))
        semantic = update_threshold_knn(xs, old_s[0], args.num_old_items, args.k_s, args.alpha)
        new_p = torch.from_numpy(np.array(np.load(args.new_pairs), dtype=np.int64))
        cooccurs = update_jaccard(
            torch.from_numpy(np.array(pairs, dtype=np.int64)), new_p, num_users, num_items,
            old_c[0], old_c[1], args.num_old_items, args.k_c, args.max_pairs,
        )  # fmt: skip
    elif args.scheduler:
        try:
            from distributed import Client
        except ImportError as err:
            raise ImportError('--scheduler needs dask: pip install "mllmrec-pyg[dist]"') from err
        from mllmrec_pyg.transforms.distributed import (
            distributed_jaccard,
            distributed_threshold_knn,
        )

        with Client(args.scheduler) as client:
            semantic = distributed_threshold_knn(
                client, args.features.resolve(), args.k_s, args.alpha, True, None,
                args.knn_backend, params,
            )  # fmt: skip
            cooccurs = distributed_jaccard(
                client, args.pairs.resolve(), num_users, num_items, args.k_c, 4096, args.max_pairs
            )
    else:
        from mllmrec_pyg.transforms.jaccard import jaccard_topk_graph
        from mllmrec_pyg.transforms.threshold_knn import threshold_knn_graph

        semantic = threshold_knn_graph(
            x, args.k_s, args.alpha, True, None, args.knn_backend, params
        )
        cooccurs = jaccard_topk_graph(
            torch.from_numpy(np.array(pairs, dtype=np.int64)), num_users, num_items, args.k_c,
            4096, args.max_pairs,
        )  # fmt: skip
    related = coalesce(
        torch.cat([semantic[0], cooccurs[0]], 1),
        torch.cat([semantic[1].float(), cooccurs[1].float()]),
        num_nodes=num_items,
        reduce="sum",
        sort_by_row=False,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    for rel, (ei, w) in zip(RELATIONS, (semantic, cooccurs, related)):
        _save(args.out, f"{rel}_edge_index", ei.numpy())
        _save(args.out, f"{rel}_edge_weight", w.numpy())
    info = {
        "items": num_items,
        "users": num_users,
        "k_s": args.k_s,
        "alpha": args.alpha,
        "k_c": args.k_c,
        "knn_backend": args.knn_backend,
        "edges": {
            rel: int(g[0].shape[1]) for rel, g in zip(RELATIONS, (semantic, cooccurs, related))
        },
    }
    from mllmrec_pyg.io import write_text

    write_text(args.out / "graph.json", json.dumps(info, indent=2) + "\n")
    print(json.dumps(info["edges"]))
    return 0
