"""``mllmrec experiment <name>``: the paper's experiments on any dataset, one command each.

Names: ``ablation`` (RQ2), ``plug-and-play`` (RQ3), ``sensitivity`` (RQ4),
``tsne`` (RQ5), ``leakage`` (the audit), ``all`` (these five in turn),
``compare`` (every model tuned by one validation-only search, 3 seeds),
``report`` (writes ``docs/results.md`` from the results folders) and
``refresh`` (computes the findings of the stored ``results.json`` files again
from their rows and runs, without training). Each run writes
``<out>/<dataset>/<experiment>/``; finished runs are reused and interrupted
ones resume, so re-running a command continues where it stopped. An option
of another experiment is refused before any work starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mllmrec_pyg.commands.common import (
    CommandError,
    HelpFormatter,
    add_data_arguments,
    add_stage_arguments,
    check_writable,
    data_config,
    graph_config,
    text_config,
    train_config,
)
from mllmrec_pyg.experiments import EXPERIMENTS
from mllmrec_pyg.metrics import DEFAULT_KS
from mllmrec_pyg.tables import format_table

if TYPE_CHECKING:  # pragma: no cover
    from mllmrec_pyg.experiments import ExperimentSettings

log = logging.getLogger(__name__)

PAPER_EXPERIMENTS = ("ablation", "plug-and-play", "sensitivity", "tsne", "leakage")
EXPERIMENT_NAMES = tuple(EXPERIMENTS)
DEFAULT_REPORT = "docs/results.md"


def _arg(flag: str) -> str:
    """The argparse attribute of an experiment option (``--no-gd`` -> ``no_gd``)."""
    return flag.lstrip("-").replace("-", "_")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``experiment`` sub-command; each experiment's options come from its declaration
    (:data:`mllmrec_pyg.experiments.EXPERIMENTS`)."""
    p = subparsers.add_parser(
        "experiment",
        help="run one of the paper's experiments (ablation, sensitivity, t-SNE, ...)",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    p.add_argument("name", choices=(*EXPERIMENT_NAMES, "all", "report", "refresh"))

    add_data_arguments(p)
    g = p.add_argument_group("seeds")
    g.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default: 0)")
    add_stage_arguments(p)

    for name, exp in EXPERIMENTS.items():
        if exp.options:
            g = p.add_argument_group(name)
            for o in exp.options:
                g.add_argument(o.flag, dest=_arg(o.flag), default=None, help=o.help, **o.kwargs)

    g = p.add_argument_group("output")
    g.add_argument("--out", default="results", help="results root (default: results)")
    g.add_argument(
        "--tag",
        help="a name appended to the results folders (<experiment>+<tag>), to keep results "
        "of other arguments (e.g. a subset of models) apart",
    )
    g.add_argument(
        "--report-out", help=f"report: the Markdown file written (default: {DEFAULT_REPORT})"
    )
    p.set_defaults(func=main)


def options_for(names: tuple[str, ...], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Each experiment's keyword arguments from the options given.

    Raises:
        CommandError: an option that none of ``names`` takes was given (one line, naming
            the option and what the experiment takes).
    """
    takes = {o.flag for n in names if n in EXPERIMENTS for o in EXPERIMENTS[n].options}
    if "report" not in names and args.report_out is not None:
        raise CommandError(f"--report-out is an option of `experiment report`, not {names[0]}")
    for exp in EXPERIMENTS.values():
        for o in exp.options:
            if getattr(args, _arg(o.flag)) is not None and o.flag not in takes:
                what = ", ".join(sorted(takes)) or "no experiment options"
                raise CommandError(
                    f"{'/'.join(names)} does not take {o.flag} (an option of {exp.name}); "
                    f"it takes {what}"
                )
    for n in names:
        if n in EXPERIMENTS and EXPERIMENTS[n].one_seed and len(args.seeds) > 1 and len(names) == 1:
            raise CommandError(
                f"{n} trains with one seed: give one --seeds value, not {args.seeds}"
            )
    return {
        n: {
            o.dest: getattr(args, _arg(o.flag))
            for o in EXPERIMENTS[n].options
            if getattr(args, _arg(o.flag)) is not None
        }
        for n in names
        if n in EXPERIMENTS
    }


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
    """Run experiment ``name`` with the options of ``args`` it takes (others are refused)."""
    return EXPERIMENTS[name].run(settings, data, **options_for((name,), args)[name])


def refresh_results(root: Path) -> list[Path]:
    """Compute the findings of every ``results.json`` under ``root`` again from its rows and
    runs (no training) and rewrite it atomically; return the files rewritten."""
    from mllmrec_pyg.experiments.common import OLDER_FORMATS, RESULTS_FORMAT, refresh
    from mllmrec_pyg.io import read_json, write_json

    done = []
    for path in sorted(root.glob("*/*/results.json")):
        obj = read_json(path)
        if obj.get("format") in (RESULTS_FORMAT, *OLDER_FORMATS):
            write_json(path, refresh(obj, EXPERIMENTS))
            done.append(path)
    return done


def main(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    names = PAPER_EXPERIMENTS if args.name == "all" else (args.name,)
    per = options_for(names, args)
    if args.name == "report":
        from mllmrec_pyg.experiments.report import write_report

        path = write_report(Path(args.out), Path(args.report_out or DEFAULT_REPORT))
        print(f"wrote {path}")
        return 0
    if args.name == "refresh":
        for path in refresh_results(Path(args.out)):
            print(f"refreshed {path}")
        return 0
    from mllmrec_pyg.experiments import prepare_data

    settings = settings_from_args(args)
    check_writable(args.out, "--out", folder=True)
    need = any(EXPERIMENTS[n].needs_data for n in names)
    data = prepare_data(settings) if need else None
    for name in names:
        exp = EXPERIMENTS[name]  # within `all`, one that trains once takes the first seed
        one = dataclasses.replace(settings, seeds=settings.seeds[:1]) if exp.one_seed else settings
        result = exp.run(one, data, **per[name])
        folder = settings.experiment_dir(result["experiment"])
        print(f"{name}: {folder}")
        rows = result["rows"]
        if rows:
            label = "variant" if "variant" in rows[0] else "model"
            cols = [c for c in rows[0] if c != label and not c.endswith(" std")][:8]
            print(format_table(rows, cols, label=label, style="plain"))
    return 0


__all__ = [
    "EXPERIMENT_NAMES",
    "options_for",
    "refresh_results",
    "register",
    "run_experiment",
    "settings_from_args",
]
