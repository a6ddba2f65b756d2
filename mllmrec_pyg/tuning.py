"""Hyper-parameter search on validation data only, with the same budget for every model.

Each model declares its search spaces where it is registered
(:func:`~mllmrec_pyg.nn.registry.register_model`): the settings searched and
their values, as ``"section.field"`` keys (``train.lr``, ``model.reg_weight``,
``graph.alpha``). :data:`CANDIDATES` holds every model's own candidate and its
variants (``<model>-refined`` reads the refined graph). :func:`tune` draws at
most ``trials`` points of the grid (all of them when the grid is smaller; a
seeded shuffle otherwise), trains each with the package's trainer and early
stopping on the monitored valid metric (Recall@20), and keeps the point with
the best one. Test metrics are
not computed during the search (``TrainConfig(evaluate_test=False)``): they
are read once, later, at the chosen settings.

Each trial is a run of the run store (:mod:`mllmrec_pyg.runs`), keyed on all
its settings, so an interrupted search resumes and several processes running
the same search share its trials. ``<out>/<dataset tag>/<key>.json`` lists
every finished trial and the chosen settings that ``mllmrec train --tuned
FILE`` and the comparison experiment read (:func:`read_tuned`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch_geometric.data import HeteroData

from mllmrec_pyg.config import DataConfig, GraphConfig, TextConfig
from mllmrec_pyg.io import jsonable, read_json, write_json
from mllmrec_pyg.nn.registry import CANDIDATES, Candidate, split_point
from mllmrec_pyg.pipeline import cache_dir, load_data, prepare
from mllmrec_pyg.runs import RunSpec, RunStore, locked, setting_flags
from mllmrec_pyg.train import TrainConfig

log = logging.getLogger(__name__)

TUNED_FORMAT = "mllmrec-pyg/tuned/1"


def register_candidate(candidate: Candidate) -> Candidate:
    """Add (or replace) a candidate of the comparison, e.g. a new model with its search space."""
    CANDIDATES[candidate.key] = candidate
    return candidate


def candidate(key: str) -> Candidate:
    """The candidate ``key`` of :data:`CANDIDATES`; an unknown key is refused, naming the others."""
    try:
        return CANDIDATES[key]
    except KeyError:
        raise ValueError(
            f"unknown model {key!r} to tune; choose from {sorted(CANDIDATES)}"
        ) from None


def draw(cand: Candidate, trials: int, seed: int = 0) -> list[dict[str, Any]]:
    """At most ``trials`` grid points: all of them when the grid is smaller, else a seeded sample."""
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    grid = cand.grid()
    if len(grid) <= trials:
        return grid
    return random.Random(f"{cand.key}-{seed}").sample(grid, trials)


@dataclass
class TuneResult:
    """The search of one candidate: every trial and the chosen point."""

    key: str
    trials: list[dict[str, Any]]
    best: dict[str, Any]

    def settings(self) -> dict[str, dict[str, Any]]:
        return self.best["settings"]


def tune(
    key: str,
    data_cfg: DataConfig,
    text: TextConfig | None = None,
    graph: GraphConfig | None = None,
    train: TrainConfig | None = None,
    trials: int = 8,
    seed: int = 0,
    out: str | os.PathLike = "tuned",
    cache: str | os.PathLike | None = None,
    data: HeteroData | None = None,
    command: str | None = None,
) -> TuneResult:
    """Search the settings of candidate ``key`` on validation data; resumable.

    Every trial is a run of the store ``<out>/<dataset tag>/runs``
    (:class:`~mllmrec_pyg.runs.RunStore`, with ``evaluate_test=False``): a trial
    whose settings and data are unchanged is reused, an interrupted one resumes,
    and several processes running the same search share its trials. The search,
    every finished trial and the best one, is written to
    ``<out>/<dataset tag>/<key>.json`` after each trial (:func:`read_tuned`).

    Args:
        key: a :data:`CANDIDATES` key.
        data_cfg: the dataset.
        text: item/user text settings (features are prepared once).
        graph: the base item graph; ``graph.*`` points override it.
        train: the base training settings (epoch cap, patience, cut-offs...);
            ``train.*`` points override them. The seed of every trial is ``seed``.
        trials: the budget: at most this many trained points.
        seed: seeds the draw of points and every trial's training.
        out: results root.
        cache: the feature cache root (:func:`mllmrec_pyg.pipeline.cache_dir`).
        data: the prepared dataset, when the caller already has it.
        command: the command line stored with each trial (default: the
            ``mllmrec tune`` command of these arguments).

    Returns:
        Every trial and the best one (highest valid monitored metric; the
        earlier trial wins a tie).
    """
    cand = candidate(key)
    text, graph, train = text or TextConfig(), graph or GraphConfig(), train or TrainConfig()
    path = Path(out) / data_cfg.tag() / f"{key}.json"
    points = draw(cand, trials, seed)
    needs = cand.needs(points)
    if data is None:
        if needs:
            data, _ = prepare(data_cfg, text, cache, users="users" in needs, show_progress=False)
        else:
            data = load_data(data_cfg)
    if command is None:
        command = tune_command(key, data_cfg, text, graph, train, trials, seed, out)
    store = RunStore(
        path.parent / "runs",
        cache_dir(data_cfg, cache) / "runs",
        dataclasses.replace(train, evaluate_test=False, show_progress=False),
        text,
        graph,
        command,
        desc=f"tune {key}",
    )
    jobs = []
    for point in points:
        parts = split_point(point)
        config = {**cand.fixed, **parts["model"]}
        g = dataclasses.replace(graph, **parts["graph"])
        spec = RunSpec(key, cand.model, config, seed, parts["train"], g, extra={"point": point})
        jobs.append((spec, data))

    def save() -> TuneResult:
        with locked(store.folder / ".locks" / path.name):  # one writer of the search file
            done = [(spec, store.load(spec, d)) for spec, d in jobs]
            found = [_trial(s, r) for s, r in done if r]
            return _write(path, cand, data_cfg, trials, seed, train, found)

    store.run_all(jobs, show_progress=train.show_progress, on_done=save)
    return save()


def _trial(spec: RunSpec, record: dict[str, Any]) -> dict[str, Any]:
    """A search file's entry for a finished trial (its run record ``record``)."""
    s = record["settings"]
    return {
        "point": jsonable(spec.extra["point"]),
        "valid": record["valid"],
        "best_epoch": record["best_epoch"],
        "epochs": record["epochs"],
        "seconds": record["seconds"],
        "settings": {
            "model": s["config"],
            "train": {k: s["train"][k] for k in ("lr", "batch_size", "epochs", "patience")},
            "graph": s["graph"],
        },
        "monitor": s["train"]["monitor"],
        "run": record["key"],
    }


def tune_command(
    key: str,
    data_cfg: DataConfig,
    text: TextConfig,
    graph: GraphConfig,
    train: TrainConfig,
    trials: int,
    seed: int,
    out: str | os.PathLike,
) -> str:
    """The ``mllmrec tune`` command line of these arguments."""
    args = ["mllmrec", "tune", key, "--dataset", data_cfg.dataset]
    args += setting_flags(data_cfg, text, graph, train, out, "tuned")
    args += ["--trials", str(trials)] + (["--search-seed", str(seed)] if seed else [])
    return shlex.join(args)


def _write(
    path: Path,
    cand: Candidate,
    data_cfg: DataConfig,
    trials: int,
    seed: int,
    train: TrainConfig,
    results: list[dict[str, Any]],
) -> TuneResult:
    monitor = results[0]["monitor"] if results else train.monitor
    best = max(results, key=lambda t: t["valid"].get(monitor, 0.0)) if results else {}
    write_json(
        path,
        {
            "format": TUNED_FORMAT,
            "key": cand.key,
            "model": cand.model,
            "dataset": data_cfg.tag(),
            "budget": trials,
            "seed": seed,
            "search_space": {k: list(v) for k, v in cand.space.items()},
            "epoch_cap": train.epochs,
            "patience": train.patience,
            "monitor": f"valid {monitor}",
            "trials": results,
            "best": best,
        },
    )
    return TuneResult(cand.key, results, best)


def read_tuned(path: str | os.PathLike) -> dict[str, Any]:
    """A file written by :func:`tune`: ``{"key", "model", "settings": {model, train, graph}, ...}``.

    Raises:
        ValueError: the file is not a finished search (naming the file).
    """
    path = Path(path)
    obj = read_json(path)
    if not isinstance(obj, dict) or obj.get("format") != TUNED_FORMAT:
        raise ValueError(f"{path}: not a tuning result of this package (format {TUNED_FORMAT!r})")
    if not obj.get("best"):
        raise ValueError(f"{path}: the search has no finished trial yet; run `mllmrec tune` again")
    return {**obj, "settings": obj["best"]["settings"]}


__all__ = [
    "CANDIDATES",
    "Candidate",
    "TuneResult",
    "candidate",
    "draw",
    "read_tuned",
    "register_candidate",
    "split_point",
    "tune",
]
