"""Re-run every experiment behind ``docs/results.md`` and regenerate it.

The plan below is the exact list of commands whose outputs are in
``docs/experiments/``: the five experiments on MovieLens (ml-latest-small) and
on the default synthetic catalog, with the epoch caps stated there, the
comparisons on Amazon Industrial_and_Scientific (``data/scientific``, written by
``mllmrec prepare-amazon --root ../shared/datasets/amazon-scientific --category
Industrial_and_Scientific --out data/scientific``) and the comparisons where every
model gets the same re-ranking (``--rerank``), then the report. Finished runs are reused and interrupted ones resume, so the script
can be stopped and started again at any time.

    python examples/run_experiments.py              # everything (hours on 2 CPU cores)
    python examples/run_experiments.py --dry-run    # print the commands only
    python examples/run_experiments.py --only synthetic
"""

from __future__ import annotations

import argparse
import shlex

from mllmrec_pyg.cli import main as mllmrec

OUT = "docs/experiments"
#: (dataset, experiment, extra arguments)
SEEDS = ["--seeds", "0", "1", "2"]
TUNED = ["--trials", "6", "--tuned-dir", f"{OUT}/tuned"]
#: the stored searches taken as they stand (made on features encoded on another machine)
CHOSEN = ["--trials", "6", "--chosen-dir", f"{OUT}/tuned"]
SCIENTIFIC = "data/scientific"
RERANK = ["--tag", "rerank", "--rerank"]


def compare_args(search: list[str], models: str, more: str = "") -> list[str]:
    """A 200-epoch, 3-seed, one-thread comparison of ``models`` (space-separated) with the
    search options ``search`` and ``more`` options (space-separated)."""
    return [
        "--epochs", "200", *SEEDS, *search, "--threads", "1", "--models", *models.split(),
        *more.split(),
    ]  # fmt: skip


PLAN: list[tuple[str, str, list[str]]] = [
    ("movielens", "compare", ["--epochs", "200", *SEEDS, *TUNED]),
    ("movielens", "ablation", ["--epochs", "200", *SEEDS]),
    ("movielens", "plug-and-play", ["--epochs", "200", *SEEDS]),
    ("movielens", "leakage", ["--epochs", "200", *SEEDS]),
    ("movielens", "tsne", ["--epochs", "200"]),
    ("movielens", "sensitivity", ["--epochs", "100"]),
    ("synthetic", "ablation", ["--epochs", "300", *SEEDS]),
    ("synthetic", "plug-and-play", ["--epochs", "300", *SEEDS]),
    ("synthetic", "sensitivity", ["--epochs", "300"]),
    ("synthetic", "tsne", ["--epochs", "300"]),
    ("synthetic", "leakage", ["--epochs", "300", *SEEDS]),
    (
        SCIENTIFIC,
        "compare",
        compare_args(
            CHOSEN,
            "langgcn soil-refined soil smore-refined freedom freedom-refined lgmrec smore "
            "lattice lattice-refined slmrec lightgcn vbpr bpr mllmrec pop",
            "--ablation-seeds 0 1 2 --ablations no-popularity",
        ),
    ),
    (
        SCIENTIFIC,
        "compare",
        compare_args(
            [*TUNED, *RERANK],
            "langgcn soil soil-refined smore-refined freedom slmrec lightgcn bpr pop",
        ),
    ),
    (
        "movielens",
        "compare",
        compare_args(
            [*CHOSEN, *RERANK], "langgcn smore-refined soil-refined soil gume gume-refined"
        ),
    ),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--only", choices=("movielens", "synthetic", SCIENTIFIC), help="one dataset only"
    )
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    args = p.parse_args()
    commands = [
        ["experiment", name, "--dataset", dataset, *extra, "--out", OUT]
        + ([] if args.progress else ["--no-progress"])
        for dataset, name, extra in PLAN
        if args.only in (None, dataset)
    ]
    commands.append(["experiment", "report", "--out", OUT, "--report-out", "docs/results.md"])
    for argv in commands:
        print("$ mllmrec", shlex.join(argv), flush=True)
        if not args.dry_run:
            mllmrec(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
