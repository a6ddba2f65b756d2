"""What every experiment runner shares: settings, data preparation, the run store, output files.

A runner (ablation, sensitivity, t-SNE, leakage audit, plug-and-play, compare)
is a list of runs (:class:`~mllmrec_pyg.runs.RunSpec`) trained through the
dataset's :class:`~mllmrec_pyg.runs.RunStore`, ``<out>/<dataset>/runs/``, which
reuses every finished run whose settings and data are unchanged and resumes
interrupted ones. Its results go to ``<out>/<dataset>/<experiment>/``
(``+<text tag>`` when the text source is not the default, ``+<tag>`` when the
command names one).

Data preparation is cached too: encoded features
(:func:`~mllmrec_pyg.encode.encode_to_file`) and generated preference texts
(:class:`~mllmrec_pyg.reasoning.GenerationStore`) live under
``<cache>/<dataset>/`` and are reused when their inputs are unchanged.
"""

from __future__ import annotations

import logging
import platform
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch_geometric
from torch_geometric.data import HeteroData

import mllmrec_pyg
from mllmrec_pyg.config import DataConfig, GraphConfig, TextConfig
from mllmrec_pyg.data.schema import INTERACTS, ITEM, USER, SchemaError
from mllmrec_pyg.io import jsonable, write_csv, write_json
from mllmrec_pyg.pipeline import build_graph, cache_dir, load_data, prepare
from mllmrec_pyg.runs import (
    COMMAND_FLAGS,
    RunSpec,
    RunStore,
    headline,
    setting_flags,
    summary,
    table_metrics,
)
from mllmrec_pyg.train import TrainConfig, fit_cutoffs

log = logging.getLogger(__name__)

#: the format of ``results.json``; a result of an older one has its findings computed again
#: from its rows and runs when it is read (:func:`refresh`)
RESULTS_FORMAT = "mllmrec-pyg/experiment/2"
OLDER_FORMATS = ("mllmrec-pyg/experiment/1",)
#: the models the experiments pick when not told otherwise (the one place above
#: :mod:`mllmrec_pyg.nn` that names a model): the one the comparison tests for a win, and
#: the plug-and-play host whose results go to ``plug_and_play/`` (another host's go to
#: ``plug_and_play_<host>/``, and a result that names no host is this one's)
PROPOSED = "langgcn"
DEFAULT_HOST = "freedom"


# -- what an experiment declares ----------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """A command-line option of one experiment: ``flag`` sets the runner's keyword ``dest``.

    Args:
        flag: the option (``--variants``).
        dest: the runner's keyword argument it sets.
        help: its ``--help`` text.
        kwargs: further :meth:`argparse.ArgumentParser.add_argument` arguments; its
            default (``None`` unless given) means "not given".
    """

    flag: str
    dest: str
    help: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    """An experiment as ``mllmrec experiment`` runs it.

    Args:
        name: its name on the command line.
        run: the runner, ``run(settings, data, **options) -> results.json object``.
        findings: ``findings(results) -> dict``, computed from a ``results.json`` object's
            rows, runs and payload alone (so stored results can be refreshed without training).
        options: the options it takes (:class:`Option`); every other per-experiment
            option is refused.
        needs_data: whether :func:`prepare_data` is called for it (the leakage audit
            prepares its own two datasets).
        one_seed: it trains with one seed only (``--seeds`` takes one value).
    """

    name: str
    run: Callable[..., dict[str, Any]]
    findings: Callable[[Mapping[str, Any]], dict[str, Any]]
    options: tuple[Option, ...] = ()
    needs_data: bool = True
    one_seed: bool = False


# -- settings -------------------------------------------------------------------------------


@dataclass
class ExperimentSettings:
    """Everything an experiment runner needs besides its own grid, composed of the stage configs.

    Args:
        data: the dataset (:class:`~mllmrec_pyg.config.DataConfig`).
        text: item/user text and the reasoning backend (:class:`~mllmrec_pyg.config.TextConfig`).
        graph: the full model's refined item graph (:class:`~mllmrec_pyg.config.GraphConfig`).
        train: optimisation, cut-offs and early stopping of every run
            (:class:`~mllmrec_pyg.train.TrainConfig`; its seed and checkpoint folder
            are set per run, its cut-offs fitted to the catalog).
        seeds: training seeds; every configuration is trained once per seed
            and tables report the mean (and the standard deviation when there
            are several).
        out: results root; a runner writes ``<out>/<dataset tag>/<experiment>/``.
        cache: cache root (features, generated text, training states);
            default :func:`mllmrec_pyg.pipeline.default_cache_root`.
        tag: a name appended to the results folders (``<experiment>+<tag>``), to keep
            results of other arguments (e.g. a subset of models) apart.
    """

    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seeds: tuple[int, ...] = (0,)
    out: str = "results"
    cache: str | None = None
    tag: str | None = None

    def __post_init__(self) -> None:
        self.seeds = tuple(int(s) for s in self.seeds)
        if not self.seeds:
            raise ValueError("at least one seed is needed")
        if self.train.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.train.epochs}")
        if self.tag is not None and (not self.tag or shlex.quote(self.tag) != self.tag):
            raise ValueError(f"tag must be a plain word (letters, digits, -_.), got {self.tag!r}")

    @property
    def show_progress(self) -> bool:
        return self.train.show_progress

    def dataset_tag(self) -> str:
        """The dataset's folder name in results and caches (:meth:`DataConfig.tag`)."""
        return self.data.tag()

    def cache_dir(self) -> Path:
        return cache_dir(self.data, self.cache)

    def experiment_dir(self, experiment: str) -> Path:
        """``<out>/<dataset tag>/<experiment>[+<text tag>][+<tag>]``."""
        name = "+".join(p for p in (experiment, self.text.tag(), self.tag) if p)
        return Path(self.out) / self.dataset_tag() / name

    def store(self, desc: str, command: str) -> RunStore:
        """The dataset's run store, ``<out>/<dataset tag>/runs``."""
        return RunStore(
            Path(self.out) / self.dataset_tag() / "runs",
            self.cache_dir() / "runs",
            self.train,
            self.text,
            self.graph,
            command,
            desc,
        )

    def headline(self, data: HeteroData) -> tuple[str, str]:
        """Recall and NDCG at the cut-off the runs on ``data`` monitor (@20 by default)."""
        return headline(fit_cutoffs(int(data[ITEM].num_nodes), self.train.ks)[0])

    def as_dict(self) -> dict[str, Any]:
        """The settings as one flat dict (the ``settings`` of ``results.json``)."""
        d, x, t = self.data, self.text, self.train
        return {
            "dataset": d.dataset,
            "num_users": d.num_users,
            "num_items": d.num_items,
            "data_seed": d.seed,
            "movielens_root": d.root,
            "out": self.out,
            "cache": self.cache,
            "seeds": list(self.seeds),
            **{f: getattr(t, f) for f in ("epochs", "patience", "batch_size", "lr", "device")},
            "ks": list(t.ks),
            "mask_valid_at_test": t.mask_valid_at_test,
            "show_progress": t.show_progress,
            **self.graph.as_dict(),
            **{f: getattr(x, f) for f, _ in COMMAND_FLAGS["text"]},
            "backend_options": dict(x.backend_options),
            "tag": self.tag,
        }

    def command(self, experiment: str, extra: Sequence[str] = ()) -> str:
        """The ``mllmrec experiment`` command line that reproduces these settings."""
        args = ["mllmrec", "experiment", experiment, "--dataset", self.data.dataset]
        args += setting_flags(self.data, self.text, self.graph, self.train, self.out, "results")
        if self.seeds != (0,):
            args += ["--seeds", *map(str, self.seeds)]
        args += list(extra)
        if self.tag:
            args += ["--tag", self.tag]
        return shlex.join(args)


# -- data -----------------------------------------------------------------------------------


def load_raw(settings: ExperimentSettings) -> HeteroData:
    """The dataset named by ``settings`` (interactions, texts or given features)."""
    return load_data(settings.data)


def prepare_data(
    settings: ExperimentSettings,
    full_history: bool = False,
    raw: HeteroData | None = None,
) -> HeteroData:
    """The dataset with item and user features (:func:`mllmrec_pyg.pipeline.prepare`).

    Args:
        settings: the dataset, text sources, backend, encoder and cache.
        full_history: AUDIT ONLY: the reference implementation's leaky
            behaviour lists (user features regenerated from them).
        raw: an already loaded dataset (not modified), else :func:`load_raw`.
    """
    if full_history and (raw if raw is not None else load_raw(settings))[ITEM].get("text") is None:
        raise SchemaError(
            f"{settings.data.dataset}: the leakage audit regenerates preferences from item "
            "texts, and this dataset has none (only precomputed features)"
        )
    data, _ = prepare(
        settings.data,
        settings.text,
        settings.cache,
        full_history=full_history,
        raw=raw,
        show_progress=settings.show_progress,
    )
    return data


def dataset_stats(data: HeteroData) -> dict[str, int]:
    """Users, items and train/valid/test pairs of ``data``."""
    store = data[INTERACTS]
    return {
        "users": int(data[USER].num_nodes),
        "items": int(data[ITEM].num_nodes),
        "train": int(store.edge_index.size(1)),
        "valid": int(store.val_edge_index.size(1)),
        "test": int(store.test_edge_index.size(1)),
    }


def graph_stats(data: HeteroData, edge_type: tuple[str, str, str]) -> dict[str, float]:
    """Edges, self-loops and mean out-degree of an item-item graph on ``data``."""
    store = data[edge_type]
    w = store.get("edge_weight")
    return {
        **edge_stats(store.edge_index, int(data[ITEM].num_nodes)),
        "mean_weight": float(w.float().mean()) if w is not None and w.numel() else 1.0,
    }


def edge_stats(edge_index: torch.Tensor, num_items: int) -> dict[str, float]:
    """Edges, self-loops and mean out-degree of an item-item ``edge_index``."""
    return {
        "edges": int(edge_index.size(1)),
        "self_loops": int((edge_index[0] == edge_index[1]).sum()),
        "mean_neighbours": float(edge_index.size(1) / max(num_items, 1)),
    }


# -- runs and tables -----------------------------------------------------------------------


def run_jobs(
    store: RunStore, jobs: Sequence[tuple[RunSpec, HeteroData]], per_user: bool = False
) -> list[dict[str, Any]]:
    """Train or reuse every job; each run as results list it (:func:`~mllmrec_pyg.runs.summary`)."""
    records = store.run_all(jobs, per_user=per_user)
    return [summary(record, spec) for record, (spec, _) in zip(records, jobs)]


def summarise(
    runs: Sequence[Mapping[str, Any]],
    order: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """One row per variant: mean (and std over seeds) of valid and test metrics.

    Args:
        runs: run results (several seeds per variant allowed).
        order: variant order (default: first-seen).
        metrics: metrics to aggregate (default :func:`~mllmrec_pyg.runs.table_metrics`
            of the runs' cut-offs).
    """
    if metrics is None and runs:
        metrics = table_metrics(sorted({int(m.split("@")[1]) for m in runs[0]["valid"]}))
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        groups.setdefault(r["variant"], []).append(r)
    names = list(order) if order is not None else list(groups)
    rows = []
    for name in (n for n in names if n in groups):
        rs = groups[name]
        row: dict[str, Any] = {"variant": name, "seeds": len(rs)}
        for split in ("valid", "test"):
            for m in metrics or ():
                vals = torch.tensor([float(r[split][m]) for r in rs], dtype=torch.float64)
                row[f"{split} {m}"] = float(vals.mean())
                row[f"{split} {m} std"] = float(vals.std(unbiased=True)) if len(rs) > 1 else 0.0
        row["best epoch"] = float(sum(r["best_epoch"] for r in rs) / len(rs))
        row["epochs"] = float(sum(r["epochs"] for r in rs) / len(rs))
        row["seconds"] = float(sum(r["seconds"] for r in rs) / len(rs))
        rows.append(row)
    return rows


# -- results --------------------------------------------------------------------------------


def software_versions() -> dict[str, str]:
    """Versions of the libraries that produced a result."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_geometric": torch_geometric.__version__,
        "mllmrec_pyg": mllmrec_pyg.__version__,
    }


def write_results(
    settings: ExperimentSettings,
    experiment: str,
    payload: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    command: str,
    data: HeteroData | None = None,
    findings: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write ``results.json`` and ``results.csv`` of an experiment; return the JSON object.

    Args:
        settings: the settings used.
        experiment: the experiment's folder name (e.g. ``plug_and_play``).
        payload: experiment-specific results (tables, figures, runs).
        rows: the main table (also written as CSV).
        command: the command line that reproduces it (:meth:`ExperimentSettings.command`).
        data: the dataset, whose :func:`dataset_stats` open the payload as ``data``.
        findings: the experiment's findings, computed from the object written
            (``results["findings"]``: claims, gains, significance as the report shows them).
    """
    folder = settings.experiment_dir(experiment)
    obj = {
        "format": RESULTS_FORMAT,
        "experiment": experiment,
        "dataset": settings.dataset_tag(),
        "text_tag": settings.text.tag(),
        "tag": settings.tag,
        "command": command,
        "settings": settings.as_dict(),
        "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "versions": software_versions(),
        **({"data": dataset_stats(data)} if data is not None else {}),
        **payload,
        "rows": list(rows),
    }
    obj = jsonable(obj)
    if findings is not None:
        obj["findings"] = jsonable(findings(obj))
    write_json(folder / "results.json", obj)
    write_csv(folder / "results.csv", rows)
    log.info("wrote %s", folder / "results.json")
    return obj


# -- findings -------------------------------------------------------------------------------


def result_metrics(obj: Mapping[str, Any]) -> tuple[str, str]:
    """Recall and NDCG at the cut-off a ``results.json``'s runs monitored (@20 by default),
    read from its rows' columns."""
    cols = [
        c
        for r in obj.get("rows") or ()
        for c in r
        if c.startswith("valid recall@") and " " not in c[6:]
    ]
    return headline(sorted({int(c.rsplit("@", 1)[1]) for c in cols}) or [20])


def short(metric: str) -> str:
    """``recall@20`` -> ``R@20``, ``ndcg@10`` -> ``N@10``."""
    name, _, k = metric.partition("@")
    return f"{name[0].upper()}@{k}"


def relative(a: float, b: float) -> float | None:
    """``(a - b) / b`` (``None`` when ``b`` is 0)."""
    return (a - b) / b if b else None


def pct(v: float | None) -> str:
    """``0.0123`` -> ``+1.23%`` (``n/a`` for ``None``)."""
    return "n/a" if v is None else f"{100 * v:+.2f}%"


def within_noise(a: Mapping[str, Any], b: Mapping[str, Any], col: str) -> bool:
    """Whether rows ``a`` and ``b`` (means over several seeds) differ in ``col`` by less than
    the larger of their seed standard deviations."""
    if a.get("seeds", 1) < 2:
        return False
    spread = max(a.get(f"{col} std") or 0.0, b.get(f"{col} std") or 0.0)
    return abs(a[col] - b[col]) < spread


def claim(text: str, holds: bool | None, evidence: str, rank: int) -> list[dict[str, Any]]:
    """A paper claim a result checks (none when it cannot tell): ``rank`` orders the claims
    of a dataset in the report."""
    if holds is None:
        return []
    return [{"claim": text, "holds": bool(holds), "evidence": evidence, "rank": rank}]


def text_source(settings: Mapping[str, Any]) -> str:
    """How the user preference text of a result's settings was made, as the report names it."""
    from mllmrec_pyg.reasoning.models import PRESETS

    backend, model = settings.get("backend"), settings.get("backend_model")
    if backend == "none" or not backend:
        return "`none` backend"
    preset = PRESETS.get(model or "")
    if preset is not None and preset.label:
        return preset.label
    return f"`{backend}` backend" + (f" ({model})" if model else "")


def refresh(obj: dict[str, Any], experiments: Mapping[str, Experiment]) -> dict[str, Any]:
    """``obj`` (a ``results.json`` object) with its findings computed again from its rows,
    runs and payload (no training) by its experiment's :attr:`Experiment.findings`, in the
    current :data:`RESULTS_FORMAT`."""
    name = "plug-and-play" if obj["experiment"].startswith("plug_and_play") else obj["experiment"]
    obj["findings"] = jsonable(experiments[name].findings(obj))
    obj["format"] = RESULTS_FORMAT
    return obj


__all__ = [
    "DEFAULT_HOST",
    "Experiment",
    "Option",
    "claim",
    "pct",
    "refresh",
    "relative",
    "result_metrics",
    "short",
    "text_source",
    "within_noise",
    "PROPOSED",
    "ExperimentSettings",
    "RunSpec",
    "RunStore",
    "build_graph",
    "dataset_stats",
    "graph_stats",
    "load_raw",
    "prepare_data",
    "run_jobs",
    "summarise",
    "write_results",
]
