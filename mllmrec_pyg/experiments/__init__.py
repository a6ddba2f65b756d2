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

from mllmrec_pyg.experiments import ablation, compare, leakage, plug_and_play, sensitivity, tsne
from mllmrec_pyg.experiments.ablation import run_ablation
from mllmrec_pyg.experiments.common import (
    Experiment,
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

#: experiment name (as on the command line) -> its declaration: runner, options, findings
EXPERIMENTS: dict[str, Experiment] = {
    m.EXPERIMENT.name: m.EXPERIMENT
    for m in (ablation, plug_and_play, sensitivity, tsne, leakage, compare)
}
#: experiment name -> runner
RUNNERS = {name: e.run for name, e in EXPERIMENTS.items()}

__all__ = [
    "EXPERIMENTS",
    "Experiment",
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
