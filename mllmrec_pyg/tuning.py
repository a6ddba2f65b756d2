"""Hyper-parameter search on validation data only, with the same budget for every model.

A *search space* names, per model, the settings searched and their values,
as ``"section.field"`` keys (``train.lr``, ``model.reg_weight``,
``graph.alpha``). :func:`tune` draws at most ``trials`` points of the grid
(all of them when the grid is smaller; a seeded shuffle otherwise), trains
each with the package's trainer and early stopping on valid Recall@20, and
keeps the point with the best valid Recall@20. Test metrics are not computed
during the search (``TrainConfig(evaluate_test=False)``): they are read once,
later, at the chosen settings.

Every finished trial is written at once to ``<out>/<dataset tag>/<key>.json``,
so an interrupted search resumes, and several processes running the same
search share its points (each claims a point before training it, and a
claim whose process died is taken over). The same file, once complete, holds the
chosen settings that ``mllmrec train --tuned FILE`` and the comparison
experiment read (:func:`read_tuned`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import itertools
import json
import logging
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch_geometric.data import HeteroData
from tqdm.auto import tqdm

from mllmrec_pyg.config import DataConfig, GraphConfig, TextConfig
from mllmrec_pyg.data.schema import RELATED
from mllmrec_pyg.io import read_json, write_json
from mllmrec_pyg.nn.registry import make_config, model_class
from mllmrec_pyg.pipeline import cached_graph, load_data, prepare, train_model
from mllmrec_pyg.train import TrainConfig, fit_cutoffs

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
        Candidate(
            "langgcn",
            "langgcn",
            space={
                **LANG_SPACE,
                "model.id_embeddings": (True, False),
                **ITEM_GRAPH,
                "model.user_init": ("mean", "mean+preference"),
                "model.num_negatives": (0, 256),
            },
        ),
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
) -> TuneResult:
    """Search the settings of candidate ``key`` on validation data; resumable.

    Args:
        key: a :data:`CANDIDATES` key.
        data_cfg: the dataset.
        text: item/user text settings (features are prepared once).
        graph: the base item graph; ``graph.*`` points override it.
        train: the base training settings (epoch cap, patience, ...); ``train.*``
            points override them. The seed of every trial is ``seed``.
        trials: the budget: at most this many trained points.
        seed: seeds the draw of points and every trial's training.
        out: results root; the search is written to ``<out>/<dataset tag>/<key>.json``.
        cache: the feature cache root (:func:`mllmrec_pyg.pipeline.cache_dir`).
        data: the prepared dataset, when the caller already has it.

    Returns:
        Every trial and the best one (highest valid monitored metric; the
        earlier trial wins a tie).
    """
    cand = candidate(key)
    text, graph, train = text or TextConfig(), graph or GraphConfig(), train or TrainConfig()
    path = Path(out) / data_cfg.tag() / f"{key}.json"
    points = draw(cand, trials, seed)
    same = {"epoch_cap": train.epochs, "patience": train.patience, "seed": seed}
    done = _stored_trials(path, same, note=True)
    needs = cand.needs(points)
    if data is None:
        if needs:
            data, _ = prepare(data_cfg, text, cache, users="users" in needs, show_progress=False)
        else:
            data = load_data(data_cfg)
    ks, monitor = fit_cutoffs(int(data["item"].num_nodes), train.ks)
    base = dataclasses.replace(
        train, seed=seed, show_progress=False, ks=ks, monitor=monitor, evaluate_test=False
    )
    graphs: dict[GraphConfig, HeteroData] = {}
    claims = _Claims(path)
    bar = tqdm(
        total=len(points),
        initial=sum(json_key(p) in done for p in points),
        desc=f"tune {key}",
        unit="trial",
        disable=not train.show_progress,
    )

    def save(trial: dict[str, Any] | None = None) -> TuneResult:
        with claims.locked():  # another worker may have written trials meanwhile
            done.update(_stored_trials(path, same))
            if trial is not None:
                done[json_key(trial["point"])] = trial
            results = [done[json_key(p)] for p in points if json_key(p) in done]
            return _write(path, cand, data_cfg, trials, seed, train, results)

    for point in _pending(points, path, same, done, claims):
        parts = split_point(point)
        g = dataclasses.replace(graph, **parts["graph"])
        trial_data = cached_graph(graphs, data, g) if "graph" in needs else data
        cfg = dataclasses.replace(base, **parts["train"])
        start = time.perf_counter()
        model, result = train_model(cand.model, trial_data, cfg, {**cand.fixed, **parts["model"]})
        trial = {
            "point": point,
            "valid": result.valid,
            "best_epoch": result.best_epoch,
            "epochs": result.epochs,
            "seconds": round(time.perf_counter() - start, 2),
            "settings": {
                "model": model.config_dict(),
                "train": {k: getattr(cfg, k) for k in ("lr", "batch_size", "epochs", "patience")},
                "graph": g.as_dict() if "graph" in needs else None,
            },
        }
        save(trial)
        claims.release(point)
        bar.update(1)
        bar.set_postfix_str(f"valid {cfg.monitor} {result.valid[cfg.monitor]:.4f}")
    bar.close()
    return save()


def _stored_trials(path: Path, same: Mapping[str, Any], note: bool = False) -> dict[str, Any]:
    """The finished trials in ``path`` by point (none if it was searched with other settings)."""
    stored = read_json(path) if path.is_file() else {}
    if stored and any(stored.get(k) != v for k, v in same.items()):
        if note:
            log.info("%s was searched with other settings; searching again", path)
        return {}
    return {json_key(t["point"]): t for t in stored.get("trials", [])}


class _Claims:
    """Which worker trains which point, so that several ``mllmrec tune`` processes on one
    search file share its points (``<file>.claims/``: one file per point, holding the
    owner's pid; a claim whose process is gone is taken over)."""

    def __init__(self, path: Path) -> None:
        self.folder = path.with_name(path.name + ".claims")
        self.lock_path = path.with_name(path.name + ".lock")

    def _file(self, point: Mapping[str, Any]) -> Path:
        digest = hashlib.sha256(json_key(point).encode()).hexdigest()[:16]
        return self.folder / digest

    def take(self, point: Mapping[str, Any]) -> bool:
        """Claim ``point``; ``False`` if a live process holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        f = self._file(point)
        for _ in range(2):
            try:
                fd = os.open(f, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if _alive(f):
                    return False
                f.unlink(missing_ok=True)  # its owner died: take it over
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            return True
        return False

    def release(self, point: Mapping[str, Any]) -> None:
        self._file(point).unlink(missing_ok=True)

    @contextlib.contextmanager
    def locked(self):
        """An exclusive lock around read-merge-write of the search file."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _alive(claim: Path) -> bool:
    """Whether the process whose pid ``claim`` holds still runs."""
    try:
        os.kill(int(claim.read_text() or 0), 0)
    except (OSError, ValueError):
        return False
    return True


def _pending(points, path: Path, same, done: dict[str, Any], claims: _Claims, poll: float = 5.0):
    """The points this worker should train, in order: unfinished and unclaimed ones; then it
    waits for the points other workers hold (taking over any whose worker died)."""
    left = [p for p in points if json_key(p) not in done]
    while left:
        waiting = []
        for point in left:
            if not claims.take(point):
                waiting.append(point)
                continue
            with claims.locked():  # a claim is released only after its trial is written
                done.update(_stored_trials(path, same))
            if json_key(point) in done:
                claims.release(point)
                continue
            yield point
        if waiting:
            time.sleep(poll)
            with claims.locked():
                done.update(_stored_trials(path, same))
        left = [p for p in waiting if json_key(p) not in done]


def json_key(point: Mapping[str, Any]) -> str:
    """A point's identity as stored in JSON (tuples and lists alike)."""
    return json.dumps(point, sort_keys=True)


def _write(
    path: Path,
    cand: Candidate,
    data_cfg: DataConfig,
    trials: int,
    seed: int,
    train: TrainConfig,
    results: list[dict[str, Any]],
) -> TuneResult:
    monitor = "recall@20"
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
