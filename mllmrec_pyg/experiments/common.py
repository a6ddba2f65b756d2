"""What every experiment runner shares: settings, data preparation, resumable runs, output files.

A runner (ablation, sensitivity, t-SNE, leakage audit, plug-and-play) is a
list of *runs*. A run trains one model configuration with one seed on one
prepared dataset through :class:`~mllmrec_pyg.train.Trainer`; its result is
written to ``<out>/<dataset>/<experiment>/runs/<run>.json`` as soon as it
finishes, keyed by a hash of everything that determines it, so a re-started
runner skips finished runs, and an interrupted run resumes from its last
epoch (the trainer's ``checkpoint_dir`` lives in the cache folder).

Data preparation is cached too: encoded features
(:func:`~mllmrec_pyg.encode.encode_to_file`) and generated preference texts
(:class:`~mllmrec_pyg.reasoning.GenerationStore`) live under
``<cache>/<dataset>/`` and are reused when their inputs are unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import platform
import re
import shlex
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch_geometric
from torch_geometric.data import HeteroData
from tqdm.auto import tqdm

import mllmrec_pyg
from mllmrec_pyg.checkpoint import data_fingerprint, load_checkpoint
from mllmrec_pyg.config import DataConfig, GraphConfig, TextConfig
from mllmrec_pyg.data.schema import INTERACTS, ITEM, USER, SchemaError
from mllmrec_pyg.io import jsonable, read_json, write_csv, write_json
from mllmrec_pyg.pipeline import build_graph, cache_dir, load_data, prepare, train_model
from mllmrec_pyg.tables import TABLE_METRICS
from mllmrec_pyg.train import TrainConfig, fit_cutoffs

log = logging.getLogger(__name__)

#: the training settings that change a run's result (and appear in its key)
TRAIN_FIELDS = ("epochs", "patience", "batch_size", "lr", "device")
#: config fields written back as ``mllmrec experiment`` flags when they differ from the default
COMMAND_FIELDS = {
    "data": ("num_users", "num_items", "seed", "root"),
    "train": TRAIN_FIELDS,
    "graph": ("alpha", "k_s", "k_c"),
    "text": ("user_text", "backend", "backend_model", "backend_url", "encoder", "token_budget"),
}
RESULTS_FORMAT = "mllmrec-pyg/experiment/1"
RUN_FORMAT = "mllmrec-pyg/experiment-run/1"
#: Metrics shown in figures.
HEADLINE = ("recall@20", "ndcg@20")


# -- settings -------------------------------------------------------------------------------


@dataclass
class ExperimentSettings:
    """Everything an experiment runner needs besides its own grid, composed of the stage configs.

    Args:
        data: the dataset (:class:`~mllmrec_pyg.config.DataConfig`).
        text: item/user text and the reasoning backend (:class:`~mllmrec_pyg.config.TextConfig`).
        graph: the full model's refined item graph (:class:`~mllmrec_pyg.config.GraphConfig`).
        train: optimisation and early stopping of every run
            (:class:`~mllmrec_pyg.train.TrainConfig`; its seed, cut-offs and
            checkpoint folder are set per run).
        seeds: training seeds; every configuration is trained once per seed
            and tables report the mean (and the standard deviation when there
            are several).
        out: results root; a runner writes ``<out>/<dataset tag>/<experiment>/``.
        cache: cache root (features, generated text, training states);
            default :func:`mllmrec_pyg.pipeline.default_cache_root`.
    """

    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seeds: tuple[int, ...] = (0,)
    out: str = "results"
    cache: str | None = None

    def __post_init__(self) -> None:
        self.seeds = tuple(int(s) for s in self.seeds)
        if not self.seeds:
            raise ValueError("at least one seed is needed")
        if self.train.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.train.epochs}")

    @property
    def show_progress(self) -> bool:
        return self.train.show_progress

    def dataset_tag(self) -> str:
        """The dataset's folder name in results and caches (:meth:`DataConfig.tag`)."""
        return self.data.tag()

    def cache_dir(self) -> Path:
        return cache_dir(self.data, self.cache)

    def experiment_dir(self, experiment: str) -> Path:
        return Path(self.out) / self.dataset_tag() / experiment

    def train_key(self) -> dict[str, Any]:
        """The settings that change a training run's result."""
        return {k: getattr(self.train, k) for k in TRAIN_FIELDS}

    def as_dict(self) -> dict[str, Any]:
        """The settings as one flat dict (the ``settings`` of ``results.json``)."""
        d, x = self.data, self.text
        return {
            "dataset": d.dataset,
            "num_users": d.num_users,
            "num_items": d.num_items,
            "data_seed": d.seed,
            "movielens_root": d.root,
            "out": self.out,
            "cache": self.cache,
            "seeds": list(self.seeds),
            **self.train_key(),
            "show_progress": self.train.show_progress,
            **self.graph.as_dict(),
            **{f: getattr(x, f) for f in COMMAND_FIELDS["text"]},
            "backend_options": dict(x.backend_options),
        }

    def command(self, experiment: str, extra: Sequence[str] = ()) -> str:
        """The ``mllmrec experiment`` command line that reproduces these settings."""
        args = ["mllmrec", "experiment", experiment, "--dataset", self.data.dataset]
        for section, names in COMMAND_FIELDS.items():
            if section == "train" and self.out != "results":
                args += ["--out", self.out]
            cfg = getattr(self, section)
            default = type(cfg)()
            for name in names:
                value = getattr(cfg, name)
                if value is not None and value != getattr(default, name):
                    flag = "--data-seed" if name == "seed" else "--" + name.replace("_", "-")
                    args += [flag, str(value)]
        for key, value in self.text.backend_options:
            args += ["--backend-option", f"{key}={value!r}"]
        if self.seeds != (0,):
            args += ["--seeds", *map(str, self.seeds)]
        return shlex.join(args + list(extra))


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


# -- runs -----------------------------------------------------------------------------------


@dataclass
class RunSpec:
    """One trained configuration.

    Args:
        variant: the row label (e.g. ``"w/o RS"``).
        model: registry name (``mllmrec``, ``freedom``, ``lightgcn``...).
        config: model config values.
        seed: training seed.
        extra: JSON-able facts stored with the result (e.g. the grid point).
        train: training settings of this run that differ from the experiment's
            (e.g. a tuned learning rate).
    """

    variant: str
    model: str
    config: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    def slug(self) -> str:
        base = re.sub(r"[^A-Za-z0-9]+", "_", self.variant).strip("_").lower() or "run"
        return f"{base}-seed{self.seed}"


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def trim_history(history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per-epoch ``{"epoch", "loss", "valid"}`` keeping only the headline valid metrics."""
    return [
        {
            "epoch": h["epoch"],
            "loss": h["loss"],
            "valid": {m: h["valid"][m] for m in HEADLINE if m in h["valid"]},
        }
        for h in history
    ]


class RunCache:
    """Finished runs of one experiment, on disk, and training of the missing ones.

    Args:
        settings: the experiment settings.
        experiment: the experiment's folder name.
    """

    def __init__(self, settings: ExperimentSettings, experiment: str) -> None:
        self.settings = settings
        self.experiment = experiment
        self.dir = settings.experiment_dir(experiment) / "runs"
        self.work = settings.cache_dir() / "checkpoints" / experiment

    def key(self, spec: RunSpec, data: HeteroData, device: str | None = None) -> str:
        """The hash of everything that makes the run; ``device`` in place of the settings'."""
        return self._key(spec, data_fingerprint(data)["sha256"], device)

    def _key(self, spec: RunSpec, data_sha: str, device: str | None = None) -> str:
        train = {**self.settings.train_key(), **spec.train}
        if device is not None:
            train["device"] = device
        return _hash(
            {
                "model": spec.model,
                "config": spec.config,
                "seed": spec.seed,
                "train": train,
                "data": data_sha,
            }
        )

    def path(self, spec: RunSpec) -> Path:
        return self.dir / f"{spec.slug()}.json"

    def load(self, spec: RunSpec, data: HeteroData) -> dict[str, Any] | None:
        """The stored result of ``spec`` if it was trained with the same everything."""
        return self._load(spec, data_fingerprint(data)["sha256"])

    def _load(self, spec: RunSpec, sha: str) -> dict[str, Any] | None:
        """:meth:`load` with the data's sha256 already computed."""
        path = self.path(spec)
        if not path.is_file():
            return None
        stored = read_json(path)
        # a run trained on another device is the same experiment (the device changes the
        # order of float sums, as the thread count does): it counts if all else matches
        device = stored.get("device")
        if stored.get("format") != RUN_FORMAT or stored.get("key") not in (
            self._key(spec, sha),
            self._key(spec, sha, device) if device is not None else None,
        ):
            log.info("%s is stale (settings or data changed); training again", path)
            return None
        return stored

    def run(
        self,
        spec: RunSpec,
        data: HeteroData,
        keep_model: bool = False,
        extra: Callable[[Any, HeteroData], dict[str, Any]] | None = None,
    ) -> tuple[dict[str, Any], Any]:
        """Train ``spec`` on ``data`` unless it is already stored.

        Args:
            spec: the configuration.
            data: the prepared dataset (with the item graph the model reads).
            keep_model: also return the trained model (rebuilt from its saved
                best checkpoint when the run was already stored; where that checkpoint
                is gone, the run is trained again with its seed and the new run, with
                a ``replaces`` field naming the old one's device and test metrics,
                takes its place on disk).
            extra: ``extra(model, data)`` adds fields to a newly trained run's JSON
                (computed from the best weights, before the checkpoint is dropped).

        Returns:
            ``(result, model or None)``; ``result`` holds ``valid``, ``test``,
            ``best_epoch``, ``epochs``, ``seconds``, ``history``.
        """
        return self._run(spec, data, data_fingerprint(data)["sha256"], keep_model, extra)

    def _run(
        self,
        spec: RunSpec,
        data: HeteroData,
        sha: str,
        keep_model: bool,
        extra: Callable[[Any, HeteroData], dict[str, Any]] | None,
    ) -> tuple[dict[str, Any], Any]:
        """:meth:`run` with the data's sha256 already computed."""
        key = self._key(spec, sha)
        # one process trains a run at a time: another one running the same command waits
        # here, then reuses what the first stored, instead of writing the same checkpoint
        with self._lock(spec, key):
            stored = self._load(spec, sha)
            work = self.work / f"{spec.slug()}-{(stored or {}).get('key', key)[:12]}"
            best = work / "best.pt"
            replaced: dict[str, Any] | None = None
            if stored is not None and keep_model and not best.is_file():
                log.info("%s: no saved model in %s; training again", spec.variant, work)
                replaced = {
                    "device": stored.get("device"),
                    "test": stored.get("test"),
                    "best_epoch": stored.get("best_epoch"),
                }
            elif stored is not None:
                log.info("%s (seed %d): reusing %s", spec.variant, spec.seed, self.path(spec))
                return stored, load_checkpoint(best, data) if keep_model else None
            return self._train(spec, data, key, work, replaced, keep_model, extra)

    def _lock_path(self, spec: RunSpec, key: str) -> Path:
        return self.work / ".locks" / f"{spec.slug()}-{key[:12]}"

    @contextlib.contextmanager
    def _lock(self, spec: RunSpec, key: str):
        """An exclusive lock on run ``spec`` among processes sharing the cache (released
        by the system when its holder dies, so a killed run never blocks the next)."""
        path = self._lock_path(spec, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info(
                    "%s (seed %d): another process trains it; waiting", spec.variant, spec.seed
                )
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def busy(self, spec: RunSpec, data: HeteroData) -> bool:
        """Whether another process is training ``spec`` right now."""
        return self._busy(spec, self.key(spec, data))

    def _busy(self, spec: RunSpec, key: str) -> bool:
        path = self._lock_path(spec, key)
        if not path.is_file():
            return False
        with open(path, "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
        return False

    def _train(
        self,
        spec: RunSpec,
        data: HeteroData,
        key: str,
        work: Path,
        replaced: dict[str, Any] | None,
        keep_model: bool,
        extra: Callable[[Any, HeteroData], dict[str, Any]] | None,
    ) -> tuple[dict[str, Any], Any]:
        num_items = int(data[ITEM].num_nodes)
        ks, monitor = fit_cutoffs(num_items, self.settings.train.ks)
        cfg = dataclasses.replace(
            self.settings.train,
            seed=spec.seed,
            ks=ks,
            monitor=monitor,
            checkpoint_dir=str(work),
            **spec.train,
        )
        log.info(
            "%s / %s: training %s (seed %d)", self.experiment, spec.variant, spec.model, spec.seed
        )
        model, result = train_model(spec.model, data, cfg, spec.config)
        out = {
            "format": RUN_FORMAT,
            "key": key,
            "variant": spec.variant,
            "model": spec.model,
            "config": model.config_dict(),
            "train": spec.train,
            "seed": spec.seed,
            "device": str(cfg.device),
            "extra": spec.extra,
            "valid": result.valid,
            "test": result.test,
            "best_epoch": result.best_epoch,
            "epochs": result.epochs,
            "seconds": round(result.seconds, 3),
            "stopped_early": result.epochs < cfg.epochs,
            "history": trim_history(result.history),
            # the stored run this one retrained (its checkpoint was gone): its device and
            # test metrics, so a table row never silently mixes the two
            **({"replaces": replaced} if replaced is not None else {}),
            **(extra(model, data) if extra is not None else {}),
        }
        out = jsonable(out)  # the same types as a result read back from disk
        write_json(self.path(spec), out, indent=None)
        last = work / "last.pt"
        if last.is_file():
            last.unlink()  # the resumable state is not needed once the result is stored
        if not keep_model:
            shutil.rmtree(work, ignore_errors=True)
        return out, model if keep_model else None

    def run_all(
        self,
        specs: Iterable[tuple[RunSpec, HeteroData]],
        extra: Callable[[Any, HeteroData], dict[str, Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """Train (or reuse) every ``(spec, data)`` pair, with an overall progress bar
        (``extra`` as in :meth:`run`).

        The next run is always one no other process is training, where there is one
        (others are waited for, then reused), so that several processes started with
        the same command share the work."""
        specs = list(specs)
        shas: dict[int, str] = {}  # seeds of one variant share one data object: hash it once
        for _, data in specs:
            if id(data) not in shas:
                shas[id(data)] = data_fingerprint(data)["sha256"]
        keys = [self._key(spec, shas[id(data)]) for spec, data in specs]
        pending = list(range(len(specs)))
        results: dict[int, dict[str, Any]] = {}
        bar = tqdm(
            total=len(specs),
            desc=self.experiment,
            unit="run",
            disable=not self.settings.show_progress,
        )
        while pending:
            i = next((j for j in pending if not self._busy(specs[j][0], keys[j])), pending[0])
            pending.remove(i)
            spec, data = specs[i]
            bar.set_postfix_str(f"{spec.variant} seed {spec.seed}")
            results[i] = self._run(spec, data, shas[id(data)], False, extra)[0]
            bar.update()
        bar.close()
        return [results[i] for i in range(len(specs))]


# -- tables ---------------------------------------------------------------------------------


def summarise(
    runs: Sequence[Mapping[str, Any]],
    metrics: Sequence[str] = TABLE_METRICS,
    order: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """One row per variant: mean (and std over seeds) of valid and test metrics.

    Args:
        runs: run results (several seeds per variant allowed).
        metrics: metrics to aggregate.
        order: variant order (default: first-seen).
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        groups.setdefault(r["variant"], []).append(r)
    names = list(order) if order is not None else list(groups)
    rows = []
    for name in (n for n in names if n in groups):
        rs = groups[name]
        row: dict[str, Any] = {"variant": name, "seeds": len(rs)}
        for split in ("valid", "test"):
            for m in metrics:
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
    command_extra: Sequence[str] = (),
    command_name: str | None = None,
    data: HeteroData | None = None,
) -> dict[str, Any]:
    """Write ``results.json`` and ``results.csv`` of an experiment; return the JSON object.

    Args:
        settings: the settings used.
        experiment: the experiment's name.
        payload: experiment-specific results (tables, figures, findings); its
            ``runs`` are written without their per-epoch history.
        rows: the main table (also written as CSV).
        command_extra: runner-specific command-line arguments.
        command_name: the experiment's CLI name (default ``experiment`` with dashes).
        data: the dataset, whose :func:`dataset_stats` open the payload as ``data``.
    """
    folder = settings.experiment_dir(experiment)
    payload = {**({"data": dataset_stats(data)} if data is not None else {}), **payload}
    if "runs" in payload:
        payload["runs"] = [{k: v for k, v in r.items() if k != "history"} for r in payload["runs"]]
    obj = {
        "format": RESULTS_FORMAT,
        "experiment": experiment,
        "dataset": settings.dataset_tag(),
        "command": settings.command(command_name or experiment.replace("_", "-"), command_extra),
        "settings": settings.as_dict(),
        "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "versions": software_versions(),
        **payload,
        "rows": list(rows),
    }
    obj = jsonable(obj)
    write_json(folder / "results.json", obj)
    write_csv(folder / "results.csv", rows)
    log.info("wrote %s", folder / "results.json")
    return obj


__all__ = [
    "ExperimentSettings",
    "HEADLINE",
    "RunCache",
    "RunSpec",
    "build_graph",
    "dataset_stats",
    "graph_stats",
    "load_raw",
    "prepare_data",
    "summarise",
    "write_results",
]
