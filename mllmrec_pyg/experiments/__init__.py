"""The paper's experiments as runners: ablation (RQ2), plug-and-play (RQ3),
sensitivity (RQ4), t-SNE (RQ5), the leakage audit, and the tuned comparison of
every model (``compare``).

Each runner takes :class:`ExperimentSettings`, trains its configurations through
the dataset's run store (:mod:`mllmrec_pyg.runs`: finished runs are reused,
interrupted ones resume), and writes ``<out>/<dataset>/<experiment>/`` with
``results.json``, ``results.csv`` and PNG figures.
:mod:`mllmrec_pyg.experiments.report` turns those folders into
``docs/results.md``. On the command line: ``mllmrec experiment <name>``.
"""

from mllmrec_pyg.experiments.ablation import run_ablation
from mllmrec_pyg.experiments.common import (
    ExperimentSettings,
    RunSpec,
    RunStore,
    build_graph,
    load_raw,
    prepare_data,
)
from mllmrec_pyg.experiments.compare import run_compare
from mllmrec_pyg.experiments.leakage import run_leakage
from mllmrec_pyg.experiments.plug_and_play import run_plug_and_play
from mllmrec_pyg.experiments.sensitivity import run_sensitivity
from mllmrec_pyg.experiments.tsne import run_tsne

#: experiment name (as on the command line) -> runner
RUNNERS = {
    "ablation": run_ablation,
    "sensitivity": run_sensitivity,
    "tsne": run_tsne,
    "leakage": run_leakage,
    "plug-and-play": run_plug_and_play,
    "compare": run_compare,
}

__all__ = [
    "ExperimentSettings",
    "RUNNERS",
    "RunSpec",
    "RunStore",
    "load_raw",
    "prepare_data",
    "build_graph",
    "run_ablation",
    "run_compare",
    "run_leakage",
    "run_plug_and_play",
    "run_sensitivity",
    "run_tsne",
]
