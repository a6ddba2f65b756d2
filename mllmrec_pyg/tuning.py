"""Hyper-parameter search on validation data only, with the same budget for every model.

A *search space* names, per model, the settings searched and their values,
as ``"section.field"`` keys (``train.lr``, ``model.reg_weight``,
``graph.alpha``). :func:`tune` draws at most ``trials`` points of the grid
(all of them when the grid is smaller; a seeded shuffle otherwise), trains
each with the package's trainer and early stopping on the monitored valid
metric (Recall@20), and keeps the point with the best one. Test metrics are
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
import itertools
import logging
import os
import random
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch_geometric.data import HeteroData

from mllmrec_pyg.config import DataConfig, GraphConfig, TextConfig
from mllmrec_pyg.data.schema import RELATED
from mllmrec_pyg.io import jsonable, read_json, write_json
from mllmrec_pyg.nn.registry import make_config, model_class
from mllmrec_pyg.pipeline import cache_dir, load_data, prepare
from mllmrec_pyg.runs import RunSpec, RunStore, locked, setting_flags
from mllmrec_pyg.train import TrainConfig

log = logging.getLogger(__name__)

TUNED_FORMAT = "mllmrec-pyg/tuned/1"
SECTIONS = ("train", "model", "graph")


@dataclass(frozen=True)
class Candidate:
    """A model as it is compared: a registered model with fixed settings and a search space.

    Args:
        key: the name in results (``freedom-refined``).
        model: the registry name (``freedom``).
        fixed: model config values that define the candidate (not searched).
        space: ``"section.field" -> values``; sections ``train``, ``model``, ``graph``.
    """

    key: str
    model: str
    fixed: Mapping[str, Any] = field(default_factory=dict)
    space: Mapping[str, Sequence[Any]] = field(default_factory=dict)

    def needs(self, points: Sequence[Mapping[str, Any]] = ({},)) -> frozenset[str]:
        """What the model reads besides training pairs at any of ``points``
        (:meth:`~mllmrec_pyg.nn.base.RankingModel.requires`)."""
        cls = model_class(self.model)
        out: set[str] = set()
        for point in points:
            values = {**self.fixed, **split_point(point)["model"]}
            out |= cls.requires(make_config(self.model, values))
        return frozenset(out)

    def grid(self) -> list[dict[str, Any]]:
        """Every point of the search space (the empty point when there is none)."""
        keys = sorted(self.space)
        return [
            dict(zip(keys, values)) for values in itertools.product(*(self.space[k] for k in keys))
        ]


LR = (5e-4, 1e-3, 2e-3, 5e-3)
REG = (0.0, 1e-5, 1e-4, 1e-3)
#: the refined graph's threshold and co-occurrence top-K, searched by every model that reads it
REFINED = {"graph.alpha": (0.4, 0.5, 0.6, 0.7), "graph.k_c": (5, 10, 15, 20)}
FREEDOM_SPACE = {
    "train.lr": LR,
    "model.reg_weight": (1e-5, 1e-4, 1e-3),
    "model.dropout": (0.5, 0.8, 0.9),
}
#: LangGCN's learning rates, temperatures and depths
LANG_SPACE = {
    "train.lr": (1e-3, 3e-3),
    "model.temperature": (0.1, 0.15, 0.2),
    "model.num_layers": (1, 2, 3),
}
#: SMORE: its authors' grid, plus the contrastive weight (they fix 0.01). On MovieLens,
#: whose users have ~120 training items, the users' side vectors are ~60x shorter than
#: their behaviour vectors, the cosine InfoNCE's gradient swamps BPR's at 0.01 and
#: valid R@20 falls from the first epoch on; a tenth of it trains
SMORE_SPACE = {
    "train.lr": LR,
    "model.reg_weight": (1e-5, 1e-4),
    "model.dropout": (0.0, 0.1),
    "model.num_ui_layers": (3, 4),
    "model.cl_weight": (0.01, 0.001),
}
#: GUME's contrastive weights: its authors' values and a tenth of them. As with SMORE, at
#: 0.01 they stop BPR from learning on MovieLens (valid R@20 0.072, 0.073, 0.055 over the
#: first three epochs; 0.120, 0.165, 0.163 with both at 0.001)
GUME_CL = {"model.bm_weight": (0.01, 0.001), "model.um_weight": (0.001, 0.01, 0.1)}
#: SOIL: its authors' grid (as published with a re-implementation of SOIL,
#: RecAnon/Multimodal-PopBias configs/SOIL.yaml, which fixes lr 1e-3), plus the learning
#: rate every other candidate here searches
SOIL_SPACE = {
    "train.lr": LR,
    "model.knn_i": (5, 10, 15, 20),
    "model.knn_a": (3, 5, 10),
    "model.cl_weight": (0.001, 0.01, 0.1),
    "model.ui_cl_weight": (0.001, 0.01, 0.1),
}
ITEM_GRAPH = {"model.item_graph": (RELATED, None)}
#: LangGCN as compared: the refined graph both smooths the language inputs and joins the
#: item side, the inputs are propagated once before a linear map, FREEDOM's degree-sensitive
#: edge pruning at each epoch, a full softmax
LANGGCN_FIXED = {
    "item_graph": RELATED,
    "item_graph_mode": "both",
    "input_propagation": True,
    "hidden_dim": 0,
    "num_negatives": 0,
}
LANGGCN_SPACE = {
    "train.lr": (1e-3, 3e-3),
    "model.temperature": (0.15, 0.2),
    "model.edge_dropout": (0.0, 0.8),
}
#: the models of the comparison and their search spaces (each gets the same trial budget);
#: every multimodal baseline that reads an item-item graph also has a ``<model>-refined``
#: candidate that reads the refined graph S* instead of its own
CANDIDATES: dict[str, Candidate] = {
    c.key: c
    for c in (
        Candidate("pop", "pop"),
        Candidate("bpr", "bpr", space={"train.lr": LR, "model.reg_weight": REG}),
        Candidate(
            "lightgcn",
            "lightgcn",
            space={"train.lr": LR, "model.reg_weight": REG, "model.num_layers": (1, 2, 3)},
        ),
        Candidate("freedom", "freedom", space=FREEDOM_SPACE),
        Candidate(
            "freedom-refined", "freedom", {"item_graph": RELATED}, {**FREEDOM_SPACE, **REFINED}
        ),
        Candidate("langgcn", "langgcn", LANGGCN_FIXED, LANGGCN_SPACE),
        # where LangGCN's gain comes from: each drops one input, searched the same way
        Candidate(
            "langgcn-id-only",
            "langgcn",
            {"use_item_text": False, "user_init": "id", "item_graph": None},
            LANG_SPACE,
        ),
        Candidate("langgcn-id-users", "langgcn", {"user_init": "id"}, {**LANG_SPACE, **ITEM_GRAPH}),
        Candidate(
            "langgcn-plain-knn",
            "langgcn",
            {"item_graph": RELATED},
            # plain top-K_s: no threshold, no co-occurrence
            {**LANG_SPACE, "graph.alpha": (None,), "graph.cooccurrence": (False,)},
        ),
        Candidate(
            "langgcn-bpr",
            "langgcn",
            {"loss": "bpr", "num_negatives": 1, "cosine": False},
            {
                "train.lr": (1e-3, 3e-3),
                "model.num_layers": (1, 2, 3),
                "model.id_embeddings": (True, False),
                **ITEM_GRAPH,
            },
        ),
        Candidate(
            "mllmrec",
            "mllmrec",
            space={"train.lr": LR, **REFINED, "model.embedding_dim": (32, 64, 128)},
        ),
        Candidate(
            "vbpr",
            "vbpr",
            space={"train.lr": LR, "model.reg_weight": (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)},
        ),
        Candidate("lattice", "lattice", space={"train.lr": LR, "model.reg_weight": REG}),
        Candidate(
            "lattice-refined",
            "lattice",
            {"item_graph": RELATED},
            {"train.lr": LR, "model.reg_weight": REG, **REFINED},
        ),
        Candidate(
            "lgmrec",
            "lgmrec",
            space={
                "train.lr": LR,
                "model.hyper_num": (4, 64),
                "model.keep_rate": (0.2, 0.4, 0.5),
                "model.alpha": (0.2, 0.3, 0.6),
            },
        ),
        Candidate("smore", "smore", space={**SMORE_SPACE, "model.knn_k": (10, 15, 20, 40)}),
        Candidate("smore-refined", "smore", {"item_graph": RELATED}, {**SMORE_SPACE, **REFINED}),
        # GUME's authors tune these per dataset (their configuration's values), plus a
        # tenth of their contrastive weights (GUME_CL)
        Candidate(
            "gume",
            "gume",
            space={
                "train.lr": LR,
                "model.num_item_layers": (1, 2),
                "model.bm_temperature": (0.2, 0.4),
                "model.vt_weight": (0.001, 0.01, 0.1),
                **GUME_CL,
            },
        ),
        Candidate(
            "gume-refined",
            "gume",
            {"item_graph": RELATED},
            {
                "train.lr": LR,
                "model.num_item_layers": (1, 2),
                "model.vt_weight": (0.001, 0.01, 0.1),
                **GUME_CL,
                **REFINED,
            },
        ),
        Candidate("soil", "soil", space=SOIL_SPACE),
        Candidate("soil-refined", "soil", {"item_graph": RELATED}, {**SOIL_SPACE, **REFINED}),
        Candidate(
            "slmrec",
            "slmrec",
            space={
                "train.lr": LR,
                "model.ssl_weight": (0.01, 0.05, 0.1, 0.5, 1.0),
                "model.ssl_temperature": (0.1, 0.2, 0.5, 1.0),
            },
        ),
    )
}


def register_candidate(candidate: Candidate) -> Candidate:
    """Add (or replace) a candidate of the comparison, e.g. a new model with its search space."""
    CANDIDATES[candidate.key] = candidate
    return candidate


def candidate(key: str) -> Candidate:
    try:
        return CANDIDATES[key]
    except KeyError:
        raise ValueError(
            f"unknown model {key!r} to tune; choose from {sorted(CANDIDATES)}"
        ) from None


def split_point(point: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"train.lr": x, "model.d": y}`` -> ``{"train": {"lr": x}, "model": {"d": y}, "graph": {}}``."""
    out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for key, value in point.items():
        section, _, name = key.partition(".")
        if section not in out or not name:
            raise ValueError(f"search key {key!r} must be '<train|model|graph>.<field>'")
        out[section][name] = value
    return out


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
