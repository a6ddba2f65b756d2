"""``mllmrec experiment <name>``: the paper's experiments on any dataset, one command each.

Names: ``ablation`` (RQ2), ``plug-and-play`` (RQ3), ``sensitivity`` (RQ4),
``tsne`` (RQ5), ``leakage`` (the audit), ``all`` (the five in turn) and
``report`` (writes ``docs/results.md`` from the results folders). Each run
writes ``<out>/<dataset>/<experiment>/``; finished runs are reused and
interrupted ones resume, so re-running a command continues where it stopped.
"""

from __future__ import annotations

import argparse
import ast
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EXPERIMENT_NAMES = ("ablation", "plug-and-play", "sensitivity", "tsne", "leakage")


def _key_value(text: str) -> tuple[str, Any]:
    """``key=value`` with a Python-literal value (``ast.literal_eval``), else the raw string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key, value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``experiment`` sub-command."""
    p = subparsers.add_parser(
        "experiment",
        help="run one of the paper's experiments (ablation, sensitivity, t-SNE, ...)",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("name", choices=(*EXPERIMENT_NAMES, "all", "report"))

    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        default="synthetic",
        help="'synthetic', 'movielens' or the path of an MMRec-format folder",
    )
    g.add_argument("--num-users", type=int, help="synthetic catalog: users before 5-core")
    g.add_argument("--num-items", type=int, help="synthetic catalog: items before 5-core")
    g.add_argument("--data-seed", type=int, default=0, help="catalog and split seed")
    g.add_argument("--movielens-root", help="ml-latest-small folder (default: shared datasets)")

    g = p.add_argument_group("training")
    g.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    g.add_argument("--epochs", type=int, default=1000, help="epoch cap of every run")
    g.add_argument("--patience", type=int, default=20, help="early-stopping patience")
    g.add_argument("--batch-size", type=int, default=2048)
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--device", default="cpu")

    g = p.add_argument_group("MLLMRec graph and text")
    g.add_argument("--alpha", type=float, default=0.7, help="similarity threshold")
    g.add_argument("--k-s", type=int, default=10, help="semantic top-K")
    g.add_argument("--k-c", type=int, default=10, help="co-occurrence top-K")
    g.add_argument("--backend", default="none", help="reasoning backend for preferences")
    g.add_argument("--backend-model", help="model path/name for the backend")
    g.add_argument("--backend-url", help="server URL (openai backend)")
    g.add_argument("--encoder", help="sentence-transformers folder (default: bundled MiniLM)")
    g.add_argument("--token-budget", type=int, default=4096, help="Prompt 2 token budget")

    g = p.add_argument_group("per experiment")
    g.add_argument("--variants", nargs="+", help="ablation: subset of variants")
    g.add_argument("--no-anchors", action="store_true", help="ablation: skip Pop/BPR/LightGCN")
    g.add_argument("--alphas", type=float, nargs="+", help="sensitivity: alpha values")
    g.add_argument("--k-cs", type=int, nargs="+", help="sensitivity: K_c values")
    g.add_argument("--dims", type=int, nargs="+", help="sensitivity: d values")
    g.add_argument("--baseline", default="LightGCN", help="tsne: LightGCN, BPR-MF or FREEDOM")
    g.add_argument("--sample-users", type=int, default=500, help="tsne: users drawn")
    g.add_argument(
        "--freedom",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="plug-and-play: FREEDOM config value (repeatable), e.g. dropout=0.9",
    )
    g.add_argument("--no-gd", action="store_true", help="plug-and-play: skip the GD-only graph")

    g = p.add_argument_group("output")
    g.add_argument("--out", default="results", help="results root")
    g.add_argument("--cache", help="cache root (default $MLLMREC_CACHE/experiments)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument(
        "--report-out", default="docs/results.md", help="report: the Markdown file written"
    )
    p.set_defaults(func=main)


def settings_from_args(args: argparse.Namespace):
    """The :class:`~mllmrec_pyg.experiments.ExperimentSettings` named by the arguments."""
    from mllmrec_pyg.experiments import ExperimentSettings

    return ExperimentSettings(
        dataset=args.dataset,
        num_users=args.num_users,
        num_items=args.num_items,
        data_seed=args.data_seed,
        movielens_root=args.movielens_root,
        out=args.out,
        cache=args.cache,
        seeds=tuple(args.seeds),
        epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        lr=args.lr,
        alpha=args.alpha,
        k_s=args.k_s,
        k_c=args.k_c,
        backend=args.backend,
        backend_model=args.backend_model,
        backend_url=args.backend_url,
        encoder=args.encoder,
        token_budget=args.token_budget,
        device=args.device,
        show_progress=not args.no_progress,
    )


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
    if name == "plug-and-play":
        return ex.run_plug_and_play(
            settings, data, freedom=dict(args.freedom), with_gd=not args.no_gd
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
    names = EXPERIMENT_NAMES if args.name == "all" else (args.name,)
    data = None
    if any(n != "leakage" for n in names):
        data = prepare_data(settings)
    for name in names:
        result = run_experiment(name, args, settings, data)
        folder = settings.experiment_dir(result["experiment"])
        print(f"{name}: {folder}")
        _print_rows(result["rows"])
    return 0


def _print_rows(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    label = "variant" if "variant" in rows[0] else "model"
    cols = [c for c in rows[0] if c != label and not c.endswith(" std")][:8]
    widths = [max(len(label), *(len(str(r[label])) for r in rows))] + [
        max(10, len(c)) for c in cols
    ]
    print("  ".join([label.ljust(widths[0]), *(c.rjust(w) for c, w in zip(cols, widths[1:]))]))
    for r in rows:
        cells = [str(r[label]).ljust(widths[0])]
        for c, w in zip(cols, widths[1:]):
            v = r.get(c)
            cells.append((f"{v:.4f}" if isinstance(v, float) else str(v)).rjust(w))
        print("  ".join(cells))


__all__ = ["EXPERIMENT_NAMES", "register", "run_experiment", "settings_from_args"]
