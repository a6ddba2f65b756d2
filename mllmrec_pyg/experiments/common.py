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

import copy
import csv
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import re
import shlex
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch_geometric.data import HeteroData
from torch_geometric.transforms import Compose

from mllmrec_pyg.data.schema import INTERACTS, ITEM, USER, SchemaError
from mllmrec_pyg.metrics import DEFAULT_KS

log = logging.getLogger(__name__)

RESULTS_FORMAT = "mllmrec-pyg/experiment/1"
RUN_FORMAT = "mllmrec-pyg/experiment-run/1"
#: Metrics shown in tables and plots.
HEADLINE = ("recall@20", "ndcg@20")
TABLE_METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
#: table columns holding counts (epochs, seconds): no fixed decimals
COUNT_COLUMNS = frozenset({"best epoch", "epochs", "seconds", "users", "seeds"})


def default_cache_root() -> Path:
    """``$MLLMREC_CACHE/experiments`` or ``./.cache/mllmrec/experiments``."""
    base = os.environ.get("MLLMREC_CACHE")
    return (Path(base) if base else Path.cwd() / ".cache" / "mllmrec") / "experiments"


# -- settings -------------------------------------------------------------------------------


@dataclass
class ExperimentSettings:
    """Everything an experiment runner needs besides its own grid.

    Args:
        dataset: ``"synthetic"``, ``"movielens"`` or the path of an MMRec-format
            folder.
        num_users: synthetic catalog size (users drawn before 5-core); ``None``
            keeps the default.
        num_items: synthetic catalog size (items drawn before 5-core).
        data_seed: seed of the synthetic catalog and of the per-user split.
        movielens_root: MovieLens folder (default
            :func:`mllmrec_pyg.paths.movielens_root`).
        out: results root; a runner writes ``<out>/<dataset tag>/<experiment>/``.
        cache: cache root (features, generated text, training states);
            default :func:`default_cache_root`.
        seeds: training seeds; every configuration is trained once per seed
            and tables report the mean (and the standard deviation when there
            are several).
        epochs: epoch cap of each training run.
        patience: early-stopping patience (valid Recall@20).
        batch_size: positive pairs per step.
        lr: Adam learning rate.
        alpha: similarity threshold of the semantic graph.
        k_s: semantic top-K.
        k_c: co-occurrence top-K.
        backend: reasoning backend for user preferences (``"none"`` is the
            offline one; ``"transformers"``/``"openai"`` need a model).
        backend_model: model path or name passed to the backend.
        backend_url: server URL for the ``openai`` backend.
        encoder: sentence-transformers folder (default: the bundled MiniLM).
        token_budget: Prompt 2 token budget (most recent items kept).
        device: where models train.
        show_progress: tqdm bars.
    """

    dataset: str = "synthetic"
    num_users: int | None = None
    num_items: int | None = None
    data_seed: int = 0
    movielens_root: str | None = None
    out: str = "results"
    cache: str | None = None
    seeds: tuple[int, ...] = (0,)
    epochs: int = 1000
    patience: int = 20
    batch_size: int = 2048
    lr: float = 1e-3
    alpha: float = 0.7
    k_s: int = 10
    k_c: int = 10
    backend: str = "none"
    backend_model: str | None = None
    backend_url: str | None = None
    encoder: str | None = None
    token_budget: int = 4096
    device: str = "cpu"
    show_progress: bool = True

    def __post_init__(self) -> None:
        self.seeds = tuple(int(s) for s in self.seeds)
        if not self.seeds:
            raise ValueError("at least one seed is needed")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")

    # -- names ---------------------------------------------------------------------------
    @property
    def is_synthetic(self) -> bool:
        return self.dataset == "synthetic"

    def dataset_tag(self) -> str:
        """Folder name of the dataset's results: ``synthetic``, ``synthetic-150x80``, ``movielens``..."""
        if self.dataset == "synthetic":
            tag = "synthetic"
            if self.num_users is not None or self.num_items is not None:
                tag += f"-{self.num_users or 'd'}x{self.num_items or 'd'}"
        elif self.dataset == "movielens":
            tag = "movielens"
        else:
            tag = "mmrec-" + Path(self.dataset).resolve().name
        if self.data_seed != 0:
            tag += f"-seed{self.data_seed}"
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", tag)

    def cache_dir(self) -> Path:
        root = Path(self.cache) if self.cache is not None else default_cache_root()
        return root / self.dataset_tag()

    def experiment_dir(self, experiment: str) -> Path:
        return Path(self.out) / self.dataset_tag() / experiment

    def train_key(self) -> dict[str, Any]:
        """The settings that change a training run's result."""
        return {
            "epochs": self.epochs,
            "patience": self.patience,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "device": self.device,
        }

    def command(self, experiment: str, extra: Sequence[str] = ()) -> str:
        """The ``mllmrec experiment`` command line that reproduces these settings."""
        defaults = ExperimentSettings()
        args = ["mllmrec", "experiment", experiment, "--dataset", self.dataset]
        flags = {
            "num_users": "--num-users",
            "num_items": "--num-items",
            "data_seed": "--data-seed",
            "movielens_root": "--movielens-root",
            "out": "--out",
            "epochs": "--epochs",
            "patience": "--patience",
            "batch_size": "--batch-size",
            "lr": "--lr",
            "alpha": "--alpha",
            "k_s": "--k-s",
            "k_c": "--k-c",
            "backend": "--backend",
            "backend_model": "--backend-model",
            "backend_url": "--backend-url",
            "encoder": "--encoder",
            "token_budget": "--token-budget",
            "device": "--device",
        }
        for name, flag in flags.items():
            value = getattr(self, name)
            if value != getattr(defaults, name) and value is not None:
                args += [flag, str(value)]
        if self.seeds != defaults.seeds:
            args += ["--seeds", *map(str, self.seeds)]
        args += list(extra)
        return shlex.join(args)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- data -----------------------------------------------------------------------------------


def load_raw(settings: ExperimentSettings) -> HeteroData:
    """The dataset named by ``settings`` (interactions, texts or given features)."""
    from mllmrec_pyg.data import load_mmrec, load_movielens, make_synthetic

    if settings.dataset == "synthetic":
        sizes = {
            k: v
            for k, v in (("num_users", settings.num_users), ("num_items", settings.num_items))
            if v is not None
        }
        return make_synthetic(seed=settings.data_seed, **sizes)
    if settings.dataset == "movielens":
        return load_movielens(settings.movielens_root, seed=settings.data_seed)
    folder = Path(settings.dataset)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"dataset {settings.dataset!r} is neither 'synthetic', 'movielens' nor a folder"
        )
    if (folder / "item_meta.csv").is_file():
        # a folder written by `mllmrec prepare-amazon`: item texts (fused with the image
        # descriptions once `mllmrec describe-items` ran), so preferences can be reasoned here
        from mllmrec_pyg.commands.reasoning import load_folder

        return load_folder(folder)
    return load_mmrec(folder)


def store_path(settings: ExperimentSettings) -> Path:
    """The generation store: an MMRec folder's own ``generations.sqlite`` (so texts
    generated by ``mllmrec infer-preferences`` are reused), else one in the cache."""
    folder = Path(settings.dataset)
    if settings.dataset not in ("synthetic", "movielens") and folder.is_dir():
        return folder / "generations.sqlite"
    return settings.cache_dir() / "generations.sqlite"


def _backend(settings: ExperimentSettings):
    from mllmrec_pyg.reasoning import get_backend

    kwargs: dict[str, Any] = {}
    if settings.backend_model is not None:
        kwargs["model"] = settings.backend_model
    if settings.backend_url is not None:
        kwargs["base_url"] = settings.backend_url
    return get_backend(settings.backend, **kwargs)


def _encode_cached(texts: list[str], path: Path, settings: ExperimentSettings) -> torch.Tensor:
    from mllmrec_pyg.encode import encode_to_file

    return encode_to_file(texts, path, settings.encoder, show_progress=settings.show_progress)


def prepare_data(
    settings: ExperimentSettings,
    full_history: bool = False,
    raw: HeteroData | None = None,
) -> HeteroData:
    """Load the dataset and give it item and user features.

    Items: ``data["item"].text`` encoded with the sentence encoder (cached),
    unless features are given (an MMRec folder). Users: preference texts
    generated from TRAINING histories by the reasoning backend
    (``full_history=True``: the leakage audit's switch, valid and test items
    included), then encoded (cached per mode).

    Args:
        settings: the dataset, backend, encoder and cache.
        full_history: AUDIT ONLY: the reference implementation's leaky
            behaviour lists.
        raw: an already loaded dataset (a copy is modified), else
            :func:`load_raw`.

    Returns:
        A new HeteroData with ``data["item"].x`` and ``data["user"].x`` (and
        ``data["user"].text`` when generated).
    """
    from mllmrec_pyg.reasoning import GenerationStore, generate_preferences

    data = copy.copy(raw if raw is not None else load_raw(settings))
    cache = settings.cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    item_text = data[ITEM].get("text")
    if item_text is not None:
        data[ITEM].x = _encode_cached(list(item_text), cache / "item_feat.npy", settings)
    elif data[ITEM].get("x") is None:
        raise SchemaError(f"{settings.dataset}: no item text and no item features")

    if item_text is None:
        if full_history:
            raise SchemaError(
                f"{settings.dataset}: the leakage audit regenerates preferences from item "
                "texts, and this dataset has none (only precomputed features)"
            )
        if data[USER].get("x") is None:
            raise SchemaError(
                f"{settings.dataset}: no item text to reason about and no user features"
            )
        return data

    suffix = "full_history" if full_history else "train_history"
    store = GenerationStore(store_path(settings))
    try:
        texts = generate_preferences(
            data,
            _backend(settings),
            dataset_name=settings.dataset_tag(),
            store=store,
            token_budget=settings.token_budget,
            full_history=full_history,
            show_progress=settings.show_progress,
        )
    finally:
        store.close()
    data[USER].text = list(texts)
    data[USER].x = _encode_cached(
        list(texts), cache / f"user_feat_{settings.backend}_{suffix}.npy", settings
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


# -- the refined item-item graph ------------------------------------------------------------


@dataclass(frozen=True)
class GraphSpec:
    """How the item-item graph of MLLMRec is built from the public transforms.

    Args:
        alpha: similarity threshold (``None`` = plain top-K, *w/o GD*).
        k_s: semantic top-K.
        k_c: co-occurrence top-K.
        cooccurrence: merge the co-occurrence graph (``False`` = *w/o TE*).
        loop: the item counts as one of its own top-K (a self-loop).
    """

    alpha: float | None = 0.7
    k_s: int = 10
    k_c: int = 10
    cooccurrence: bool = True
    loop: bool = True

    def transform(self) -> Compose:
        """``ThresholdKNN`` (+ ``JaccardCoOccurrence``) + ``MergeGraphs`` into ``related``."""
        from mllmrec_pyg.transforms import JaccardCoOccurrence, MergeGraphs, ThresholdKNN

        steps: list[Any] = [ThresholdKNN(k=self.k_s, threshold=self.alpha, loop=self.loop)]
        relations: tuple[str, ...] = ("semantic",)
        if self.cooccurrence:
            steps.append(JaccardCoOccurrence(k=self.k_c))
            relations = ("semantic", "cooccurs")
        steps.append(MergeGraphs(relations=relations, out="related"))
        return Compose(steps)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def refine(data: HeteroData, spec: GraphSpec) -> HeteroData:
    """A shallow copy of ``data`` with the item-item graphs of ``spec``."""
    return spec.transform()(copy.copy(data))


def graph_stats(data: HeteroData, edge_type: tuple[str, str, str]) -> dict[str, float]:
    """Edges, self-loops and mean out-degree of an item-item graph on ``data``."""
    store = data[edge_type]
    ei = store.edge_index
    n = int(data[ITEM].num_nodes)
    w = store.get("edge_weight")
    return {
        "edges": int(ei.size(1)),
        "self_loops": int((ei[0] == ei[1]).sum()),
        "mean_neighbours": float(ei.size(1) / max(n, 1)),
        "mean_weight": float(w.float().mean()) if w is not None and w.numel() else 1.0,
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
    """

    variant: str
    model: str
    config: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def slug(self) -> str:
        base = re.sub(r"[^A-Za-z0-9]+", "_", self.variant).strip("_").lower() or "run"
        return f"{base}-seed{self.seed}"


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> Path:
    """Write JSON atomically (tmp file + ``os.replace``); ``indent=None`` writes one line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_jsonable(obj), indent=indent) + "\n")
    os.replace(tmp, path)
    return path


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, naming it in the error when it is malformed."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``rows`` (dicts) as CSV atomically; columns in first-seen order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, path)
    return path


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


def eval_ks(num_items: int) -> tuple[int, ...]:
    """The package's default cut-offs that fit the catalog (all of them need ``k <= I``)."""
    ks = tuple(k for k in DEFAULT_KS if k <= num_items)
    if 20 not in ks:
        raise ValueError(f"the catalog has {num_items} items; Recall@20 needs at least 20")
    return ks


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

    def key(self, spec: RunSpec, data: HeteroData) -> str:
        from mllmrec_pyg.train import data_fingerprint

        return _hash(
            {
                "model": spec.model,
                "config": spec.config,
                "seed": spec.seed,
                "train": self.settings.train_key(),
                "data": data_fingerprint(data)["sha256"],
            }
        )

    def path(self, spec: RunSpec) -> Path:
        return self.dir / f"{spec.slug()}.json"

    def load(self, spec: RunSpec, data: HeteroData) -> dict[str, Any] | None:
        """The stored result of ``spec`` if it was trained with the same everything."""
        path = self.path(spec)
        if not path.is_file():
            return None
        stored = read_json(path)
        if stored.get("format") != RUN_FORMAT or stored.get("key") != self.key(spec, data):
            log.info("%s is stale (settings or data changed); training again", path)
            return None
        return stored

    def run(
        self, spec: RunSpec, data: HeteroData, keep_model: bool = False
    ) -> tuple[dict[str, Any], Any]:
        """Train ``spec`` on ``data`` unless it is already stored.

        Args:
            spec: the configuration.
            data: the prepared dataset (with the item graph the model reads).
            keep_model: also return the trained model (rebuilt from its saved
                best checkpoint when the run was already stored).

        Returns:
            ``(result, model or None)``; ``result`` holds ``valid``, ``test``,
            ``best_epoch``, ``epochs``, ``seconds``, ``history``.
        """
        from mllmrec_pyg.nn.registry import build_model
        from mllmrec_pyg.train import TrainConfig, Trainer, load_checkpoint, seed_everything

        key = self.key(spec, data)
        work = self.work / f"{spec.slug()}-{key[:12]}"
        stored = self.load(spec, data)
        if stored is not None:
            model = None
            if keep_model:
                best = work / "best.pt"
                if best.is_file():
                    model = load_checkpoint(best, data)
                else:
                    log.info("%s: no saved model in %s; training again", spec.variant, work)
                    stored = None
            if stored is not None:
                log.info("%s (seed %d): reusing %s", spec.variant, spec.seed, self.path(spec))
                return stored, model

        s = self.settings
        num_items = int(data[ITEM].num_nodes)
        cfg = TrainConfig(
            lr=s.lr,
            batch_size=s.batch_size,
            epochs=s.epochs,
            patience=s.patience,
            seed=spec.seed,
            ks=eval_ks(num_items),
            checkpoint_dir=str(work),
            device=s.device,
            show_progress=s.show_progress,
        )
        log.info(
            "%s / %s: training %s (seed %d)", self.experiment, spec.variant, spec.model, spec.seed
        )
        seed_everything(spec.seed)
        model = build_model(spec.model, data, **spec.config)
        result = Trainer(model, data, cfg).fit()
        out = {
            "format": RUN_FORMAT,
            "key": key,
            "variant": spec.variant,
            "model": spec.model,
            "config": model.config_dict(),
            "seed": spec.seed,
            "extra": spec.extra,
            "valid": result.valid,
            "test": result.test,
            "best_epoch": result.best_epoch,
            "epochs": result.epochs,
            "seconds": round(result.seconds, 3),
            "stopped_early": result.epochs < s.epochs,
            "history": trim_history(result.history),
        }
        out = _jsonable(out)  # the same types as a result read back from disk
        write_json(self.path(spec), out, indent=None)
        last = work / "last.pt"
        if last.is_file():
            last.unlink()  # the resumable state is not needed once the result is stored
        if not keep_model:
            shutil.rmtree(work, ignore_errors=True)
        return out, model if keep_model else None

    def run_all(self, specs: Iterable[tuple[RunSpec, HeteroData]]) -> list[dict[str, Any]]:
        """Train (or reuse) every ``(spec, data)`` pair, with an overall progress bar."""
        from tqdm.auto import tqdm

        specs = list(specs)
        results = []
        bar = tqdm(specs, desc=self.experiment, unit="run", disable=not self.settings.show_progress)
        for spec, data in bar:
            bar.set_postfix_str(f"{spec.variant} seed {spec.seed}")
            results.append(self.run(spec, data)[0])
        return results


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
    for name in names:
        if name not in groups:
            continue
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


def format_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    label: str = "variant",
    digits: int = 4,
) -> str:
    """A Markdown table of ``rows``; ``<col> std`` values are shown as ``± std`` when non-zero."""
    head = [label, *columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in rows:
        cells = [str(row[label])]
        for c in columns:
            v = row.get(c)
            if isinstance(v, float) and c in COUNT_COLUMNS:
                text = f"{v:.0f}" if v.is_integer() else f"{v:.1f}"
            elif isinstance(v, float):
                text = f"{v:.{digits}f}" if abs(v) < 1000 else f"{v:.0f}"
                std = row.get(f"{c} std")
                if isinstance(std, float) and std > 0:
                    text += f" ± {std:.{digits}f}"
            else:
                text = "" if v is None else str(v)
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- results --------------------------------------------------------------------------------


def software_versions() -> dict[str, str]:
    """Versions of the libraries that produced a result."""
    import platform

    import torch_geometric

    import mllmrec_pyg

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
) -> dict[str, Any]:
    """Write ``results.json`` and ``results.csv`` of an experiment; return the JSON object.

    Args:
        settings: the settings used.
        experiment: the experiment's name.
        payload: experiment-specific results (tables, figures, findings).
        rows: the main table (also written as CSV).
        command_extra: runner-specific command-line arguments.
    """
    folder = settings.experiment_dir(experiment)
    obj = {
        "format": RESULTS_FORMAT,
        "experiment": experiment,
        "dataset": settings.dataset_tag(),
        "command": settings.command(experiment.replace("_", "-"), command_extra),
        "settings": settings.as_dict(),
        "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "versions": software_versions(),
        **payload,
        "rows": list(rows),
    }
    obj = _jsonable(obj)
    write_json(folder / "results.json", obj)
    write_csv(folder / "results.csv", rows)
    log.info("wrote %s", folder / "results.json")
    return obj


__all__ = [
    "ExperimentSettings",
    "GraphSpec",
    "HEADLINE",
    "RunCache",
    "RunSpec",
    "TABLE_METRICS",
    "dataset_stats",
    "default_cache_root",
    "eval_ks",
    "format_table",
    "graph_stats",
    "load_raw",
    "prepare_data",
    "read_json",
    "refine",
    "summarise",
    "write_csv",
    "write_json",
    "write_results",
]
