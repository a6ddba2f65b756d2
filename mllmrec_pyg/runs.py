"""One store of finished runs: tuning trials, experiment runs and their per-user metrics.

A *run* trains one model configuration with one seed on one prepared dataset
(:func:`~mllmrec_pyg.pipeline.train_model`). Its key is every resolved setting
that can change its numbers:

=========  ==================================================================
``data``   the fingerprint of what the model reads: training and held-out
           pairs, the item / user features it uses, the refined graph if it
           reads it (:func:`fingerprint`, bit for bit)
``text``   the text source (:class:`~mllmrec_pyg.config.TextConfig`, and
           whether user text saw the full history) when it reads features
``graph``  the refined graph's recipe (:class:`~mllmrec_pyg.config.GraphConfig`)
           when it reads the graph
``model``  the registry name and the fully resolved model config (a field
           that a config class names in ``KEYED_WHEN_SET`` only when it is not
           at its default: a switch added after runs were stored leaves their
           keys as they were)
``train``  cut-offs, monitored metric, masking of valid items at test (keyed
           only where test is evaluated), whether test is evaluated, patience,
           epoch cap, learning rate, batch size, seed
=========  ==================================================================

plus :data:`RUN_FORMAT`. A tuning trial is a run with ``evaluate_test=False``.
The device is recorded, not keyed: a run trained on a GPU counts for the same
settings on the CPU (the float sums run in another order, as with another
thread count), and the record says where it ran.

Each finished run is one JSON record, ``<folder>/<key[:16]>.json``, written
atomically, holding its settings, metrics, per-epoch history and the command
that made it. One process trains a run at a time: an ``flock`` per key
(``<folder>/.locks/``), released by the system if its holder dies, so other
processes wait and then reuse the record. An interrupted run resumes from the
trainer's state in ``<work>/<key[:16]>/``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import HeteroData
from tqdm.auto import tqdm

from mllmrec_pyg.checkpoint import load_checkpoint
from mllmrec_pyg.config import DataConfig, GraphConfig, TextConfig
from mllmrec_pyg.data.schema import INTERACTS, ITEM, RELATED, USER
from mllmrec_pyg.io import jsonable, read_json, write_json
from mllmrec_pyg.metrics import FullRankEvaluator
from mllmrec_pyg.nn.base import ScoreFn
from mllmrec_pyg.nn.registry import make_config, model_class, takes_seed
from mllmrec_pyg.pipeline import build_graph, train_model
from mllmrec_pyg.rerank import GRID as RERANK_GRID
from mllmrec_pyg.rerank import SPREAD_USERS, RankingTerms, Reranking, choose_reranking
from mllmrec_pyg.train import TrainConfig, drop_cold_start, fit_cutoffs

log = logging.getLogger(__name__)

RUN_FORMAT = "mllmrec-pyg/run/2"
#: the training settings in a run's key (the device is recorded beside them)
TRAIN_KEY = (
    "ks",
    "monitor",
    "mask_valid_at_test",
    "evaluate_test",
    "patience",
    "epochs",
    "lr",
    "batch_size",
    "seed",
)
#: a record's field with its per-user test metrics at the monitored cut-off
PER_USER = "per_user_test"

#: the settings written back as ``mllmrec experiment`` flags when they differ from the default:
#: section -> ((field, flag), ...); a flag without a value is a switch for a ``False``/``None``
COMMAND_FLAGS: dict[str, tuple[tuple[str, str], ...]] = {
    "data": (
        ("num_users", "--num-users"),
        ("num_items", "--num-items"),
        ("seed", "--data-seed"),
        ("root", "--root"),
    ),
    "train": (
        ("epochs", "--epochs"),
        ("patience", "--patience"),
        ("batch_size", "--batch-size"),
        ("lr", "--lr"),
        ("device", "--device"),
        ("ks", "--ks"),
        ("mask_valid_at_test", "--mask-valid-at-test"),
    ),
    "graph": (
        ("alpha", "--alpha"),
        ("k_s", "--k-s"),
        ("k_c", "--k-c"),
        ("cooccurrence", "--no-cooccurrence"),
        ("loop", "--no-self-loop"),
        ("knn_backend", "--knn-backend"),
    ),
    "text": (
        ("user_text", "--user-text"),
        ("backend", "--backend"),
        ("backend_model", "--backend-model"),
        ("backend_url", "--backend-url"),
        ("encoder", "--encoder"),
        ("token_budget", "--token-budget"),
    ),
}
#: switches written without a value
SWITCHES = frozenset({"--mask-valid-at-test", "--no-cooccurrence", "--no-self-loop"})


def setting_flags(
    data: DataConfig,
    text: TextConfig,
    graph: GraphConfig,
    train: TrainConfig,
    out: str | os.PathLike,
    default_out: str,
) -> list[str]:
    """The command-line flags (after ``--dataset``) of every setting that differs from its
    default, as ``mllmrec experiment`` and ``mllmrec tune`` take them."""
    args: list[str] = []
    for section, flags in COMMAND_FLAGS.items():
        if section == "train" and str(out) != default_out:
            args += ["--out", str(out)]
        cfg = {"data": data, "train": train, "graph": graph, "text": text}[section]
        default = type(cfg)()
        for name, flag in flags:
            value = getattr(cfg, name)
            if value == getattr(default, name):
                continue
            if flag in SWITCHES:
                args.append(flag)
            elif name == "alpha" and value is None:
                args.append("--no-threshold")
            elif isinstance(value, tuple):
                args += [flag, *map(str, value)]
            elif value is not None:
                args += [flag, str(value)]
    for key, value in text.backend_options:
        args += ["--backend-option", f"{key}={value!r}"]
    return args


def headline(ks: Sequence[int]) -> tuple[str, str]:
    """Recall and NDCG at the monitored cut-off: 20, or the largest of ``ks`` without it."""
    k = 20 if 20 in ks else max(ks)
    return f"recall@{k}", f"ndcg@{k}"


def table_metrics(ks: Sequence[int]) -> tuple[str, ...]:
    """Recall and NDCG at 10 and 20, or at the two largest of ``ks`` when those are missing."""
    two = (10, 20) if {10, 20} <= set(ks) else tuple(sorted(ks)[-2:])
    return tuple(f"{m}@{k}" for m in ("recall", "ndcg") for k in two)


@contextlib.contextmanager
def locked(path: str | os.PathLike, waiting: str = ""):
    """An exclusive ``flock`` on ``path`` (created), released by the system if its holder
    dies; logs ``waiting`` when another holder makes this one wait."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                log.info("%s; waiting", waiting)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def digest(obj: Any) -> str:
    """sha256 of ``obj`` as sorted JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def fingerprint(data: HeteroData, needs: Iterable[str]) -> dict[str, Any]:
    """Sizes and a sha256 of what a model with ``needs``
    (:meth:`~mllmrec_pyg.nn.base.RankingModel.requires`) reads of ``data``: the training
    and held-out pairs, every item tensor (``x`` and other modalities) if it reads item
    features (the head view ``x_head`` only if it reads that, ``"item_head"``),
    ``data["user"].x`` if it reads user features, the refined graph if it reads it."""
    needs = set(needs)
    store = data[INTERACTS]
    parts: dict[str, Tensor | None] = {
        "pairs.train": store.edge_index,
        "pairs.valid": store.get("val_edge_index"),
        "pairs.test": store.get("test_edge_index"),
    }
    if "items" in needs:
        parts.update(
            {
                f"item.{k}": v
                for k, v in data[ITEM].items()
                if isinstance(v, Tensor) and (k != "x_head" or "item_head" in needs)
            }
        )
    if "users" in needs:
        parts["user.x"] = data[USER].get("x")
    if "graph" in needs:
        parts["graph.edge_index"] = data[RELATED].edge_index
        parts["graph.edge_weight"] = data[RELATED].get("edge_weight")
    h = hashlib.sha256()
    for name in sorted(parts):
        t = parts[name]
        h.update(name.encode())
        if t is None:
            h.update(b"-")
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return {
        "num_users": int(data[USER].num_nodes),
        "num_items": int(data[ITEM].num_nodes),
        "num_train": int(store.edge_index.size(1)),
        "sha256": h.hexdigest(),
    }


@dataclass
class RunSpec:
    """One run as an experiment asks for it.

    Args:
        variant: the row label (e.g. ``"w/o RS"``).
        model: registry name.
        config: model config values (the rest are the model's defaults; a model with a
            ``seed`` field gets ``seed``).
        seed: training seed.
        train: training settings that differ from the store's (e.g. a tuned ``lr``).
        graph: the refined graph the model reads, if it reads one (default: the store's).
        full_history: AUDIT ONLY: the data's user text was written from the full history.
        rerank: after training, add the post-hoc re-ranking chosen on validation
            (:mod:`mllmrec_pyg.rerank`); the record's ``valid`` and ``test`` are then the
            re-ranked model's, ``alone`` holds the model's own and ``rerank`` the choice.
        extra: JSON-able facts stored with the record (e.g. the grid point); not keyed.
    """

    variant: str
    model: str
    config: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    train: dict[str, Any] = field(default_factory=dict)
    graph: GraphConfig | None = None
    full_history: bool = False
    rerank: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Job:
    """A spec resolved against its data: everything the store needs to find or train it."""

    spec: RunSpec
    data: HeteroData
    values: dict[str, Any]
    train: TrainConfig
    settings: dict[str, Any]
    key: str

    @property
    def name(self) -> str:
        return self.key[:16]


def summary(record: dict[str, Any], spec: RunSpec | None = None) -> dict[str, Any]:
    """A record as experiment results list it: without history, per-user metrics and
    settings, under the variant and seed ``spec`` asked for it with."""
    s = record["settings"]
    out = {
        "key": record["key"],
        "variant": spec.variant if spec is not None else record["variant"],
        "model": s["model"],
        "config": s["config"],
        "seed": spec.seed if spec is not None else s["train"]["seed"],
        "train": spec.train if spec is not None else record.get("train", {}),
        "device": record["device"],
        "extra": spec.extra if spec is not None else record.get("extra", {}),
    }
    for name in ("valid", "test", "best_epoch", "epochs", "seconds", "stopped_early", "replaces"):
        if name in record:
            out[name] = record[name]
    return out


def keyed_config(cfg: Any) -> dict[str, Any]:
    """The model config as keyed: every field, less those of ``KEYED_WHEN_SET`` left at
    their default."""
    values = dataclasses.asdict(cfg)
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
    for name in getattr(type(cfg), "KEYED_WHEN_SET", ()):
        if values[name] == defaults[name]:
            del values[name]
    return values


class RunStore:
    """Finished runs in one folder, and training of the missing ones.

    Args:
        folder: where records live (``<results root>/<dataset tag>/runs``).
        work: where resumable training states and kept checkpoints live.
        train: the training settings of every run (its seed, cut-offs and checkpoint
            folder are set per run; :attr:`RunSpec.train` overrides fields).
        text: the text source the data's features come from.
        graph: the refined graph of runs whose spec names none.
        command: the command line that reproduces the runs, stored in each record.
        desc: the progress bar's label.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        work: str | os.PathLike,
        train: TrainConfig,
        text: TextConfig | None = None,
        graph: GraphConfig | None = None,
        command: str = "",
        desc: str = "runs",
    ) -> None:
        self.folder = Path(folder)
        self.work = Path(work)
        self.train = train
        self.text = text or TextConfig()
        self.graph = graph or GraphConfig()
        self.command = command
        self.desc = desc
        self._graphs: dict[tuple[int, GraphConfig], tuple[HeteroData, HeteroData]] = {}
        self._terms: dict[int, tuple[HeteroData, RankingTerms]] = {}

    # -- keys -------------------------------------------------------------------------
    def _job(self, spec: RunSpec, data: HeteroData) -> _Job:
        values = dict(spec.config)
        if takes_seed(spec.model):
            values["seed"] = spec.seed
        cfg = make_config(spec.model, values)
        needs = model_class(spec.model).requires(cfg)
        graph = spec.graph or self.graph
        if "graph" in needs:
            data = self.with_graph(data, graph)
        ks, monitor = fit_cutoffs(int(data[ITEM].num_nodes), self.train.ks)
        train = dataclasses.replace(self.train, ks=ks, monitor=monitor, seed=spec.seed)
        train = dataclasses.replace(train, **spec.train)
        text = None
        if needs & {"items", "users"}:
            text = {**dataclasses.asdict(self.text), "full_history": spec.full_history}
        settings = jsonable(
            {
                "format": RUN_FORMAT,
                "data": fingerprint(data, needs),
                "text": text,
                "graph": graph.as_dict() if "graph" in needs else None,
                "model": spec.model,
                "config": keyed_config(cfg),
                "train": {k: getattr(train, k) for k in TRAIN_KEY},
            }
        )
        if not train.evaluate_test:  # masking at test changes no number of a run without test
            settings["train"]["mask_valid_at_test"] = False
        if spec.rerank:  # keyed only when asked for: every other run keeps its key
            settings["rerank"] = {"grid": list(RERANK_GRID), "spread_users": SPREAD_USERS}
        return _Job(spec, data, values, train, settings, digest(settings))

    def with_graph(self, data: HeteroData, graph: GraphConfig) -> HeteroData:
        """``data`` with the refined graph of ``graph``, built once per data object and recipe."""
        slot = (id(data), graph)
        if slot not in self._graphs:  # the data object is kept, so its id stays unique
            self._graphs[slot] = (data, build_graph(data, graph))
        return self._graphs[slot][1]

    def key(self, spec: RunSpec, data: HeteroData) -> str:
        """The run's key: the sha256 of its resolved settings."""
        return self._job(spec, data).key

    def settings(self, spec: RunSpec, data: HeteroData) -> dict[str, Any]:
        """The resolved settings the key is the hash of."""
        return self._job(spec, data).settings

    def path(self, spec: RunSpec, data: HeteroData) -> Path:
        return self._path(self._job(spec, data))

    def _path(self, job: _Job) -> Path:
        return self.folder / f"{job.name}.json"

    def load(self, spec: RunSpec, data: HeteroData) -> dict[str, Any] | None:
        """The stored record of ``spec`` on ``data``, if there is one."""
        return self._read(self._job(spec, data))

    def _read(self, job: _Job) -> dict[str, Any] | None:
        path = self._path(job)
        if not path.is_file():
            return None
        record = read_json(path)
        if record.get("format") != RUN_FORMAT or record.get("key") != job.key:
            log.warning("%s holds another run (key prefix collision); training again", path)
            return None
        return record

    # -- locks ------------------------------------------------------------------------
    def _lock_path(self, job: _Job) -> Path:
        return self.folder / ".locks" / job.name

    def _lock(self, job: _Job):
        """An exclusive lock on ``job`` among the processes sharing this store."""
        return locked(self._lock_path(job), f"{self._name(job)}: another process trains it")

    def busy(self, spec: RunSpec, data: HeteroData) -> bool:
        """Whether another process is training ``spec`` right now."""
        return self._busy(self._job(spec, data))

    def _busy(self, job: _Job) -> bool:
        path = self._lock_path(job)
        if not path.is_file():
            return False
        with open(path, "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
        return False

    @staticmethod
    def _name(job: _Job) -> str:
        return f"{job.spec.variant} (seed {job.spec.seed})"

    # -- runs -------------------------------------------------------------------------
    def run(
        self,
        spec: RunSpec,
        data: HeteroData,
        keep_model: bool = False,
        per_user: bool = False,
    ) -> tuple[dict[str, Any], Any]:
        """Train ``spec`` on ``data`` unless it is stored.

        Args:
            spec: the run.
            data: the prepared dataset (features; the store adds the refined graph).
            keep_model: also return the trained model, rebuilt from its kept checkpoint
                when the run was stored; where the checkpoint is gone the run is trained
                again and the new record, with a ``replaces`` field naming the old one's
                device and test metrics, takes its place.
            per_user: a newly trained run stores its per-user test metrics (:data:`PER_USER`).

        Returns:
            ``(record, model or None)``.
        """
        return self._run(self._job(spec, data), keep_model, per_user, False)

    def with_per_user(self, spec: RunSpec, data: HeteroData) -> dict[str, Any]:
        """The record of ``spec`` with its per-user test metrics: computed from its kept
        checkpoint when it has none, or by training it again (as :meth:`run` with
        ``keep_model``) where the checkpoint is gone; stored, so this happens once."""
        return self._run(self._job(spec, data), False, True, True)[0]

    def _run(
        self, job: _Job, keep_model: bool, per_user: bool, need_per_user: bool
    ) -> tuple[dict[str, Any], Any]:
        with self._lock(job):
            stored = self._read(job)
            work = self.work / job.name
            missing = need_per_user and stored is not None and PER_USER not in stored
            if stored is not None and not (keep_model or missing):
                log.info("%s: reusing %s", self._name(job), self._path(job))
                return stored, None
            replaced = None
            if stored is not None:
                best = work / "best.pt"
                if best.is_file():
                    model = load_checkpoint(best, job.data)
                    if missing:
                        stored[PER_USER] = self._per_user(model, job, stored.get("rerank"))
                        write_json(self._path(job), jsonable(stored), indent=None)
                    log.info("%s: reusing %s and its model", self._name(job), self._path(job))
                    return stored, model if keep_model else None
                log.info("%s: no saved model in %s; training again", self._name(job), work)
                replaced = {k: stored.get(k) for k in ("device", "test", "best_epoch")}
            return self._train(job, work, replaced, keep_model, per_user)

    def _train(
        self,
        job: _Job,
        work: Path,
        replaced: dict[str, Any] | None,
        keep_model: bool,
        per_user: bool,
    ) -> tuple[dict[str, Any], Any]:
        spec, cfg = job.spec, dataclasses.replace(job.train, checkpoint_dir=str(work))
        log.info("%s / %s: training %s (seed %d)", self.desc, spec.variant, spec.model, spec.seed)
        model, result = train_model(spec.model, job.data, cfg, job.values)
        metrics = headline(cfg.ks)
        valid, test, reranked = result.valid, result.test, {}
        if spec.rerank:
            choice, valid, test = self._rerank(model, job, cfg)
            reranked = {
                "alone": {"valid": result.valid, "test": result.test},
                "rerank": dataclasses.asdict(choice),
            }
        record = {
            "format": RUN_FORMAT,
            "key": job.key,
            "variant": spec.variant,
            "train": spec.train,
            "device": str(cfg.device),
            "extra": spec.extra,
            "valid": valid,
            "test": test,
            **reranked,
            "best_epoch": result.best_epoch,
            "epochs": result.epochs,
            "seconds": round(result.seconds, 3),
            "stopped_early": result.epochs < cfg.epochs,
            "history": [
                {
                    "epoch": h["epoch"],
                    "loss": h["loss"],
                    "valid": {m: h["valid"][m] for m in metrics if m in h["valid"]},
                }
                for h in result.history
            ],
            # the stored run this one retrained (its checkpoint was gone): its device and
            # test metrics, so a table never silently mixes the two
            **({"replaces": replaced} if replaced is not None else {}),
            **(
                {PER_USER: self._per_user(model, job, reranked.get("rerank"))}
                if per_user and cfg.evaluate_test
                else {}
            ),
            "settings": job.settings,
            "command": self.command,
        }
        record = jsonable(record)  # the same types as a record read back from disk
        write_json(self._path(job), record, indent=None)
        last = work / "last.pt"
        if last.is_file():
            last.unlink()  # the resumable state is not needed once the record is stored
        if not keep_model:
            shutil.rmtree(work, ignore_errors=True)
        return record, model if keep_model else None

    @staticmethod
    def _evaluator(job: _Job) -> FullRankEvaluator:
        """The trainer's ranking of ``job``'s data: training items and, with
        ``mask_valid_at_test``, valid items masked at test; cold-start users left out."""
        data, cfg = job.data, job.train
        store = data[INTERACTS]
        num_users, num_items = int(data[USER].num_nodes), int(data[ITEM].num_nodes)
        held, _ = drop_cold_start(
            store.edge_index, num_users, store.val_edge_index, store.test_edge_index
        )
        return FullRankEvaluator(
            store.edge_index,
            num_users,
            num_items,
            held,
            ks=cfg.ks,
            block_size=cfg.eval_block_size,
            mask_valid_at_test=cfg.mask_valid_at_test,
        )

    def _ranking_terms(self, data: HeteroData) -> RankingTerms:
        """The co-purchase prior and log popularity of ``data``'s training pairs, once."""
        slot = id(data)
        if slot not in self._terms:  # the data object is kept, so its id stays unique
            n_u, n_i = int(data[USER].num_nodes), int(data[ITEM].num_nodes)
            self._terms[slot] = (data, RankingTerms.of(data[INTERACTS].edge_index, n_u, n_i))
        return self._terms[slot][1]

    def _scorer(self, model: Any, job: _Job, rerank: dict[str, float] | None) -> ScoreFn:
        """``model``'s scores on CPU, with the stored re-ranking ``rerank`` where given."""
        model.eval()
        device = model._device()
        score = model.scorer()

        def scores(users: Tensor) -> Tensor:
            return score(users.to(device)).float().cpu()

        if not rerank:
            return scores
        return Reranking(**rerank).apply(scores, self._ranking_terms(job.data))

    def _rerank(
        self, model: Any, job: _Job, cfg: TrainConfig
    ) -> tuple[Reranking, dict[str, float], dict[str, float]]:
        """The re-ranking of the trained ``model`` chosen on validation, its valid metrics
        and (where the run reads test) its test metrics, read once."""
        evaluator = self._evaluator(job)
        terms = self._ranking_terms(job.data)
        with torch.no_grad():
            base = self._scorer(model, job, None)
            choice, valid = choose_reranking(base, evaluator, terms, cfg.monitor)
            test = (
                evaluator.evaluate(choice.apply(base, terms), "test") if cfg.evaluate_test else {}
            )
        log.info(
            "%s: re-ranking chosen on valid: prior %g, popularity %g (x spread %.4g)",
            self._name(job),
            choice.prior,
            choice.popularity,
            choice.spread,
        )
        return choice, valid, test

    def _per_user(
        self, model: Any, job: _Job, rerank: dict[str, float] | None = None
    ) -> dict[str, list]:
        """Per-user test Recall and NDCG at the monitored cut-off (rounded to 1e-7), ranked
        as the trainer ranks for test (:meth:`_evaluator`), with the run's re-ranking
        ``rerank`` where it has one."""
        evaluator = self._evaluator(job)
        scores = self._scorer(model, job, rerank)
        metrics = headline(job.train.ks)
        with torch.no_grad():
            m = evaluator.per_user(scores, "test", int(metrics[0].partition("@")[2]))
        return {
            "users": m["users"].tolist(),
            **{k: [round(float(v), 7) for v in m[k]] for k in metrics},
        }

    def run_all(
        self,
        jobs: Iterable[tuple[RunSpec, HeteroData]],
        per_user: bool = False,
        show_progress: bool | None = None,
        on_done: Callable[[], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Train (or reuse) every ``(spec, data)`` pair, with a progress bar.

        The next run is always one no other process is training, where there is one
        (the others are waited for, then reused), so that several processes started
        with the same command share the work. ``on_done()`` is called after each run.
        """
        resolved = [self._job(spec, data) for spec, data in jobs]
        pending = list(range(len(resolved)))
        records: dict[int, dict[str, Any]] = {}
        show = self.train.show_progress if show_progress is None else show_progress
        bar = tqdm(total=len(resolved), desc=self.desc, unit="run", disable=not show)
        while pending:
            i = next((j for j in pending if not self._busy(resolved[j])), pending[0])
            pending.remove(i)
            bar.set_postfix_str(self._name(resolved[i]))
            records[i] = self._run(resolved[i], False, per_user, False)[0]
            bar.update()
            if on_done is not None:
                on_done()
        bar.close()
        return [records[i] for i in range(len(resolved))]


def per_user_tensors(record: dict[str, Any]) -> dict[str, Tensor]:
    """The per-user test metrics of a record (:data:`PER_USER`), as tensors."""
    pu = record[PER_USER]
    return {k: torch.tensor(v) for k, v in pu.items()}


__all__ = [
    "PER_USER",
    "RUN_FORMAT",
    "RunSpec",
    "RunStore",
    "digest",
    "fingerprint",
    "headline",
    "per_user_tensors",
    "summary",
    "table_metrics",
]
