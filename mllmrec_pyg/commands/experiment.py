"""``mllmrec experiment <name>``: the paper's experiments on any dataset, one command each.

Names: ``ablation`` (RQ2), ``plug-and-play`` (RQ3), ``sensitivity`` (RQ4),
``tsne`` (RQ5), ``leakage`` (the audit), ``all`` (these five in turn),
``compare`` (every model tuned by one validation-only search, 3 seeds) and
``report`` (writes ``docs/results.md`` from the results folders). Each run
writes ``<out>/<dataset>/<experiment>/``; finished runs are reused and
interrupted ones resume, so re-running a command continues where it stopped.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mllmrec_pyg.commands.common import (
    CommandError,
    HelpFormatter,
    add_data_arguments,
    add_key_values,
    add_stage_arguments,
    check_writable,
    data_config,
    graph_config,
    text_config,
    train_config,
)
from mllmrec_pyg.experiments.common import DEFAULT_HOST, PROPOSED
from mllmrec_pyg.experiments.tsne import BASELINES
from mllmrec_pyg.metrics import DEFAULT_KS
from mllmrec_pyg.nn.registry import hosts
from mllmrec_pyg.tables import format_table

if TYPE_CHECKING:  # pragma: no cover
    from mllmrec_pyg.experiments import ExperimentSettings

log = logging.getLogger(__name__)

PAPER_EXPERIMENTS = ("ablation", "plug-and-play", "sensitivity", "tsne", "leakage")
EXPERIMENT_NAMES = (*PAPER_EXPERIMENTS, "compare")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``experiment`` sub-command."""
    p = subparsers.add_parser(
        "experiment",
        help="run one of the paper's experiments (ablation, sensitivity, t-SNE, ...)",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    p.add_argument("name", choices=(*EXPERIMENT_NAMES, "all", "report"))

    add_data_arguments(p)
    g = p.add_argument_group("seeds")
    g.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default: 0)")
    add_stage_arguments(p)

    g = p.add_argument_group("per experiment")
    g.add_argument("--variants", nargs="+", help="ablation: subset of variants")
    g.add_argument("--no-anchors", action="store_true", help="ablation: skip Pop/BPR/LightGCN")
    g.add_argument("--alphas", type=float, nargs="+", help="sensitivity: alpha values")
    g.add_argument("--k-cs", type=int, nargs="+", help="sensitivity: K_c values")
    g.add_argument("--dims", type=int, nargs="+", help="sensitivity: d values")
    g.add_argument("--baseline", default="LightGCN", help=f"tsne: {', '.join(BASELINES)}")
    g.add_argument("--sample-users", type=int, default=500, help="tsne: users drawn")
    add_key_values(
        g,
        "--host-set",
        "KEY=VALUE",
        "plug-and-play: a config value of the host, shared by all variants (repeatable), "
        "e.g. dropout=0.9",
    )
    g.add_argument("--no-gd", action="store_true", help="plug-and-play: skip the GD-only graph")
    g.add_argument(
        "--model",
        default=DEFAULT_HOST,
        choices=tuple(hosts()),
        help="plug-and-play: the host model whose item-item graph is replaced",
    )
    g.add_argument("--models", nargs="+", help="compare: candidate names (default: all)")
    g.add_argument("--proposed", default=PROPOSED, help="compare: the model tested for a win")
    g.add_argument("--trials", type=int, default=6, help="compare: search budget per model")
    g.add_argument(
        "--tuned-dir", help="compare: root of the stored searches (default: <out>/tuned)"
    )
    g.add_argument(
        "--ablation-seeds",
        type=int,
        nargs="+",
        help="compare: also train the proposed model's ablation (one switch changed at its "
        "chosen settings) with these seeds",
    )
    g.add_argument("--ablations", nargs="+", help="compare: which ablation switches (default: all)")

    g = p.add_argument_group("output")
    g.add_argument("--out", default="results", help="results root (default: results)")
    g.add_argument(
        "--tag",
        help="a name appended to the results folders (<experiment>+<tag>), to keep results "
        "of other arguments (e.g. a subset of models) apart",
    )
    g.add_argument(
        "--report-out",
        default="docs/results.md",
        help="report: the Markdown file written (default: docs/results.md)",
    )
    p.set_defaults(func=main)


def settings_from_args(args: argparse.Namespace) -> ExperimentSettings:
    """The :class:`~mllmrec_pyg.experiments.ExperimentSettings` named by the arguments."""
    from mllmrec_pyg.experiments import ExperimentSettings

    train = train_config(args, num_items=max(DEFAULT_KS))  # cut-offs are fitted per run
    try:
        return ExperimentSettings(
            data=data_config(args),
            text=text_config(args),
            graph=graph_config(args),
            train=train,
            seeds=tuple(args.seeds),
            out=args.out,
            cache=args.cache_dir,
            tag=args.tag,
        )
    except ValueError as err:
        raise CommandError(str(err)) from None


def run_experiment(name: str, args: argparse.Namespace, settings: Any, data: Any = None) -> dict:
    """Run experiment ``name`` with the per-experiment arguments of ``args``."""
    from mllmrec_pyg import experiments as ex
    from mllmrec_pyg.experiments import sensitivity

    if name == "ablation":
        return ex.run_ablation(settings, data, variants=args.variants, anchors=not args.no_anchors)
    if name == "sensitivity":
        return ex.run_sensitivity(
            settings,
            data,
            alphas=args.alphas or sensitivity.ALPHAS,
            k_cs=args.k_cs or sensitivity.K_CS,
            dims=args.dims or sensitivity.DIMS,
        )
    if name == "tsne":
        return ex.run_tsne(settings, data, baseline=args.baseline, num_users=args.sample_users)
    if name == "leakage":
        return ex.run_leakage(settings)
    if name == "compare":
        return ex.run_compare(
            settings,
            data,
            models=args.models,
            proposed=args.proposed,
            trials=args.trials,
            tuned_dir=args.tuned_dir,
            ablation_seeds=args.ablation_seeds,
            ablations=args.ablations,
        )
    if name == "plug-and-play":
        return ex.run_plug_and_play(
            settings,
            data,
            host_config=dict(args.host_set),
            with_gd=not args.no_gd,
            model=args.model,
        )
    raise ValueError(f"unknown experiment {name!r}")


def main(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.name == "report":
        from mllmrec_pyg.experiments.report import write_report

        path = write_report(Path(args.out), Path(args.report_out))
        print(f"wrote {path}")
        return 0
    from mllmrec_pyg.experiments import prepare_data

    settings = settings_from_args(args)
    check_writable(args.out, "--out", folder=True)
    names = PAPER_EXPERIMENTS if args.name == "all" else (args.name,)
    data = prepare_data(settings) if any(n != "leakage" for n in names) else None
    for name in names:
        result = run_experiment(name, args, settings, data)
        folder = settings.experiment_dir(result["experiment"])
        print(f"{name}: {folder}")
        rows = result["rows"]
        if rows:
            label = "variant" if "variant" in rows[0] else "model"
            cols = [c for c in rows[0] if c != label and not c.endswith(" std")][:8]
            print(format_table(rows, cols, label=label, style="plain"))
    return 0


__all__ = ["EXPERIMENT_NAMES", "register", "run_experiment", "settings_from_args"]
