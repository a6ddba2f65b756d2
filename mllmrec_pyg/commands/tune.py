"""``mllmrec tune``: validation-only hyper-parameter search, the same budget for every model."""

from __future__ import annotations

import argparse
import logging

from mllmrec_pyg.commands.common import (
    HelpFormatter,
    add_data_arguments,
    add_stage_arguments,
    check_writable,
    data_config,
    graph_config,
    text_config,
    train_config,
)
from mllmrec_pyg.metrics import DEFAULT_KS
from mllmrec_pyg.nn.registry import point_text

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``tune`` sub-command."""
    p = subparsers.add_parser(
        "tune",
        help="search a model's settings on validation data (resumable)",
        description="Train at most --trials points of a model's search space (mllmrec_pyg.tuning) "
        "with early stopping on valid Recall@20, never reading test metrics, and write every "
        "trial and the best settings to <out>/<dataset tag>/<model>.json, which "
        "`mllmrec train --tuned FILE` and `mllmrec experiment compare` read.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("models", nargs="+", help="candidate names (see mllmrec_pyg.tuning.CANDIDATES)")
    p.add_argument("--trials", type=int, default=8, help="the budget: trained points per model")
    p.add_argument("--search-seed", type=int, default=0, help="seeds the draw and the trials")
    p.add_argument("--out", default="tuned", help="results root")
    add_data_arguments(p)
    add_stage_arguments(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from mllmrec_pyg.tables import format_table
    from mllmrec_pyg.tuning import candidate, tune

    cands = [candidate(m) for m in args.models]  # unknown names fail before any work
    check_writable(args.out, "--out", folder=True)
    data_cfg, text, graph = data_config(args), text_config(args), graph_config(args)
    train = train_config(args, num_items=max(args.ks or DEFAULT_KS))
    rows = []
    for cand in cands:
        result = tune(
            cand.key,
            data_cfg,
            text,
            graph,
            train,
            trials=args.trials,
            seed=args.search_seed,
            out=args.out,
            cache=args.cache_dir,
        )
        best = result.best
        metric = best["monitor"]  # recall@k: NDCG at the same k beside it
        rows.append(
            {
                "model": cand.key,
                "trials": str(len(result.trials)),
                f"valid {metric}": best["valid"][metric],
                f"valid {metric.replace('recall', 'ndcg')}": best["valid"][
                    metric.replace("recall", "ndcg")
                ],
                "chosen": point_text(best["point"]) or "-",
            }
        )
    print(format_table(rows, style="plain"))
    print(f"settings written under {args.out}/{data_cfg.tag()}/")
    return 0


__all__ = ["register"]
