"""Training loop: BPR with uniform negatives, per-epoch validation, early stopping.

The loop is model-agnostic (see :class:`~mllmrec_pyg.nn.base.Recommender`):

1. each epoch shuffles the training pairs and cuts them into batches;
2. each positive ``(u, i)`` gets one negative ``j`` drawn uniformly from the
   items ``u`` has **not** interacted with in training
   (:class:`UniformNegativeSampler`, exact and vectorised, never a training
   positive);
3. loss = mean BPR :math:`-\\log\\sigma(\\hat y_{ui} - \\hat y_{uj})` plus the
   model's optional ``reg_loss``; Adam;
   a model may define ``on_train_epoch_start(epoch)``, called before each
   epoch's first batch, and ``batch_loss(users, pos_items, neg_items)`` with
   ``num_negatives`` (``neg_items`` is then ``[B, num_negatives]``) to replace
   BPR by its own loss (e.g. InfoNCE over sampled negatives);
4. full-ranking validation every epoch; training stops once the monitored
   metric (valid Recall@20) has not improved for ``patience`` epochs, the best
   epoch's weights are restored and the test split is evaluated with them.

With ``checkpoint_dir`` set, the full training state (model, optimiser,
random generator, history) is written atomically after every epoch, so an
interrupted run resumes where it stopped, and the best model is saved as a
reloadable checkpoint (state dict + JSON config).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData
from tqdm.auto import tqdm

from mllmrec_pyg.data.schema import INTERACTS, ITEM, RELATED, USER, require_node_type, validate
from mllmrec_pyg.metrics import DEFAULT_KS, FullRankEvaluator
from mllmrec_pyg.nn.base import RankingModel, Recommender
from mllmrec_pyg.threads import tuned

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "mllmrec-pyg/checkpoint/1"
STATE_FORMAT = "mllmrec-pyg/train-state/1"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (call before building a model)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class UniformNegativeSampler:
    """Draws, for each user, an item uniformly from those it has not interacted with.

    Exact and without rejection: with :math:`S_u` the sorted training items of
    :math:`u` and :math:`r` uniform in :math:`[0, I - |S_u|)`, the :math:`r`-th
    item not in :math:`S_u` is :math:`r + |\\{t : S_u[t] - t \\le r\\}|`, found
    for the whole batch with one :func:`torch.searchsorted`.

    Args:
        edge_index: training ``(user, item)`` pairs.
        num_users: number of users.
        num_items: number of items.

    Raises:
        ValueError: if a user has interacted with every item (no negative exists).
    """

    def __init__(self, edge_index: Tensor, num_users: int, num_items: int) -> None:
        self.num_users = int(num_users)
        self.num_items = int(num_items)
        pairs = torch.unique(edge_index.cpu(), dim=1)  # sorted by user, then item
        users, items = pairs[0], pairs[1]
        self.degree = torch.bincount(users, minlength=self.num_users)
        full = (self.degree >= self.num_items).nonzero().flatten()
        if full.numel():
            raise ValueError(
                f"user(s) {full[:10].tolist()} interacted with all {self.num_items} items in "
                "training: no negative item can be drawn for them"
            )
        self.rowptr = torch.zeros(self.num_users + 1, dtype=torch.long)
        self.rowptr[1:] = self.degree.cumsum(0)
        rank = torch.arange(users.numel()) - self.rowptr[users]
        # S_u[t] - t lies in [0, I]; offsetting by u * (I + 1) keeps users apart.
        self._keys = users * (self.num_items + 1) + (items - rank)

    def __call__(self, users: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One negative item per entry of ``users`` (``LongTensor`` of the same shape)."""
        flat = users.reshape(-1).cpu()
        free = (self.num_items - self.degree[flat]).double()
        r = (torch.rand(flat.numel(), generator=generator, dtype=torch.float64) * free).long()
        r = torch.minimum(r, free.long() - 1)
        query = flat * (self.num_items + 1) + r
        below = torch.searchsorted(self._keys, query, right=True) - self.rowptr[flat]
        return (r + below).view(users.shape).to(users.device)


@dataclass
class TrainConfig:
    """Optimisation and evaluation settings (the paper's defaults).

    Args:
        lr: Adam learning rate.
        batch_size: positive pairs per step.
        epochs: maximum number of epochs.
        patience: stop after this many epochs without a better monitored metric.
        monitor: the valid metric used for model selection.
        ks: cut-offs evaluated.
        seed: seeds shuffling and negative sampling.
        eval_block_size: users ranked at once.
        mask_valid_at_test: also mask validation items when ranking for test.
        checkpoint_dir: where to keep ``last.pt`` (resumable state) and
            ``best.pt`` (the best model); ``None`` keeps nothing on disk.
        resume: continue from ``checkpoint_dir/last.pt`` when it exists.
        device: where the model runs.
        show_progress: tqdm bars.
    """

    lr: float = 1e-3
    batch_size: int = 2048
    epochs: int = 1000
    patience: int = 20
    monitor: str = "recall@20"
    ks: tuple[int, ...] = DEFAULT_KS
    seed: int = 0
    eval_block_size: int = 1024
    mask_valid_at_test: bool = False
    checkpoint_dir: str | None = None
    resume: bool = True
    device: str = "cpu"
    show_progress: bool = True

    def __post_init__(self) -> None:
        self.ks = tuple(int(k) for k in self.ks)
        name, _, k = self.monitor.partition("@")
        if not k.isdigit() or int(k) not in self.ks:
            raise ValueError(
                f"monitor {self.monitor!r} must be '<metric>@k' with k in ks={self.ks}"
            )
        for key in ("lr", "batch_size", "patience"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")

    def resume_key(self) -> dict[str, Any]:
        """Settings that must match for a saved state to be resumed."""
        return {k: getattr(self, k) for k in ("lr", "batch_size", "seed", "monitor")}


@dataclass
class TrainResult:
    """Outcome of :meth:`Trainer.fit`.

    Args:
        valid: valid metrics at the best epoch.
        test: test metrics with the best epoch's weights.
        best_epoch: the selected epoch (0 for models without training).
        epochs: epochs run.
        seconds: wall time of training and evaluation (data preparation excluded).
        history: per-epoch ``{"epoch", "loss", "valid", "seconds"}``.
    """

    valid: dict[str, float]
    test: dict[str, float]
    best_epoch: int
    epochs: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self, **extra: Any) -> dict[str, Any]:
        """The result as a JSON-able dict, with ``extra`` keys first."""
        return {
            **extra,
            "valid": self.valid,
            "test": self.test,
            "best_epoch": self.best_epoch,
            "epochs": self.epochs,
            "seconds": round(self.seconds, 3),
        }


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def data_fingerprint(data: HeteroData) -> dict[str, Any]:
    """Sizes and a sha256 of everything a model is built from (pairs, features, item graph)."""
    h = hashlib.sha256()
    store = data[INTERACTS]
    parts: list[Tensor | None] = [
        store.edge_index,
        store.get("val_edge_index"),
        store.get("test_edge_index"),
        data[ITEM].get("x"),
        data[USER].get("x"),
    ]
    if RELATED in data.edge_types:
        parts += [data[RELATED].edge_index, data[RELATED].get("edge_weight")]
    for t in parts:
        if t is None:
            h.update(b"-")
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return {
        "num_users": require_node_type(data, USER),
        "num_items": require_node_type(data, ITEM),
        "num_train": int(store.edge_index.size(1)),
        "sha256": h.hexdigest(),
    }


def save_checkpoint(
    model: RankingModel, path: str | os.PathLike, data: HeteroData | None = None, **extra: Any
) -> Path:
    """Write ``model`` to ``path`` atomically: state dict + JSON config (+ data fingerprint).

    Args:
        model: a :class:`RankingModel` from the registry.
        path: target ``.pt`` file.
        data: the dataset the model was trained on (its fingerprint is stored
            so that loading on different data fails loudly).
        **extra: JSON-able metadata stored beside the config (e.g. metrics).
    """
    meta = {
        "model": model.name,
        "config": model.config_dict(),
        "data": data_fingerprint(data) if data is not None else None,
        **extra,
    }
    obj = {
        "format": CHECKPOINT_FORMAT,
        "meta": json.dumps(meta, sort_keys=True),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    path = Path(path)
    _atomic_torch_save(obj, path)
    return path


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of a checkpoint (model name, config, data fingerprint, extras)."""
    obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an mllmrec-pyg model checkpoint")
    return json.loads(obj["meta"])


def load_checkpoint(
    path: str | os.PathLike, data: HeteroData, check_data: bool = True
) -> RankingModel:
    """Rebuild a saved model on ``data`` and load its weights (``weights_only=True``).

    Args:
        path: a file written by :func:`save_checkpoint`.
        data: the dataset it was trained on (features, graphs and training
            pairs are rebuilt from it).
        check_data: refuse data whose fingerprint differs from the saved one.
    """
    from mllmrec_pyg.nn.registry import build_model, make_config

    path = Path(path)
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an mllmrec-pyg model checkpoint")
    meta = json.loads(obj["meta"])
    saved = meta.get("data")
    if check_data and saved is not None:
        now = data_fingerprint(data)
        if now != saved:
            diff = {k: (saved.get(k), now.get(k)) for k in now if saved.get(k) != now.get(k)}
            raise ValueError(f"{path}: saved for different data (saved, given): {diff}")
    model = build_model(meta["model"], data, make_config(meta["model"], meta["config"]))
    model.load_state_dict(obj["state_dict"])
    model.eval()
    return model


class Trainer:
    """Trains any :class:`~mllmrec_pyg.nn.base.Recommender` with BPR and early stopping.

    Args:
        model: the model (a :class:`RankingModel` for checkpoints).
        data: HeteroData with training ``edge_index`` and held-out
            ``val_edge_index`` / ``test_edge_index``.
        config: :class:`TrainConfig`.
    """

    def __init__(
        self, model: Recommender, data: HeteroData, config: TrainConfig | None = None
    ) -> None:
        if not isinstance(model, Recommender):
            raise TypeError(f"{type(model).__name__} does not implement pair_scores() and scorer()")
        validate(data, require=["held_out"])
        self.config = cfg = config or TrainConfig()
        self.data = data
        self.device = torch.device(cfg.device)
        self.model = model.to(self.device) if isinstance(model, torch.nn.Module) else model
        self.num_users = require_node_type(data, USER)
        self.num_items = require_node_type(data, ITEM)
        if (model.num_users, model.num_items) != (self.num_users, self.num_items):
            raise ValueError(
                f"model is for {model.num_users} users x {model.num_items} items, data has "
                f"{self.num_users} x {self.num_items}"
            )
        store = data[INTERACTS]
        self.train_pairs = store.edge_index
        if self.train_pairs.size(1) == 0:
            raise ValueError("there are no training interactions")
        self.evaluator = FullRankEvaluator(
            self.train_pairs,
            self.num_users,
            self.num_items,
            {"valid": store.val_edge_index, "test": store.test_edge_index},
            ks=cfg.ks,
            block_size=cfg.eval_block_size,
            mask_valid_at_test=cfg.mask_valid_at_test,
        )
        for split in ("valid", "test"):
            self.evaluator.users(split)  # raises now, not after training, if a split is empty
        params = self.parameters()
        self.trainable = bool(params)
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr) if params else None
        self.sampler = UniformNegativeSampler(self.train_pairs, self.num_users, self.num_items)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self._key: str | None = None

    def parameters(self) -> list[torch.nn.Parameter]:
        if not isinstance(self.model, torch.nn.Module):
            return []
        return [p for p in self.model.parameters() if p.requires_grad]

    # -- one epoch ------------------------------------------------------------------
    def train_epoch(self, epoch: int = 0) -> float:
        """One pass over the shuffled training pairs; returns the mean batch loss."""
        assert self.optimizer is not None
        model = self.model
        model.train()
        epoch_start = getattr(model, "on_train_epoch_start", None)
        if epoch_start is not None:  # optional per-epoch work, e.g. FREEDOM's edge pruning
            epoch_start(epoch)
        # optional hooks: a model's own loss over [B, num_negatives] sampled negatives
        batch_loss = getattr(model, "batch_loss", None)
        num_neg = int(getattr(model, "num_negatives", 1))
        num = self.train_pairs.size(1)
        perm = torch.randperm(num, generator=self.generator)
        batches = perm.split(self.config.batch_size)
        total, count = 0.0, 0
        bar = tqdm(
            batches,
            desc=f"epoch {epoch}",
            leave=False,
            disable=not self.config.show_progress or len(batches) < 50,
        )
        for idx in tuned(bar):  # the thread policy times the steps (mllmrec_pyg.threads)
            users, pos = self.train_pairs[:, idx]
            if num_neg == 1:
                neg = self.sampler(users, self.generator)
            else:
                neg = self.sampler(users.unsqueeze(1).expand(-1, num_neg), self.generator)
            users, pos, neg = (t.to(self.device) for t in (users, pos, neg))
            if batch_loss is not None:
                loss = batch_loss(users, pos, neg)
            else:
                pos_score, neg_score = model.pair_scores(users, pos, neg)
                loss = -F.logsigmoid(pos_score - neg_score).mean()
            reg = getattr(model, "reg_loss", None)
            extra = reg(users, pos, neg) if reg is not None else None
            if extra is not None:
                loss = loss + extra
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.item() * idx.numel()
            count += idx.numel()
        if not np.isfinite(total):
            raise FloatingPointError(f"epoch {epoch}: the training loss became {total}")
        return total / max(count, 1)

    @torch.no_grad()
    def evaluate(self, split: str = "valid") -> dict[str, float]:
        """Full-ranking metrics of the current weights on ``split``."""
        model = self.model
        if isinstance(model, torch.nn.Module):
            model.eval()
        score_fn = model.scorer()

        def scores(users: Tensor) -> Tensor:
            return score_fn(users.to(self.device)).float().cpu()

        return self.evaluator.evaluate(scores, split)

    # -- state ----------------------------------------------------------------------
    def _state_path(self) -> Path | None:
        d = self.config.checkpoint_dir
        return Path(d) / "last.pt" if d else None

    def _best_path(self) -> Path | None:
        d = self.config.checkpoint_dir
        return Path(d) / "best.pt" if d else None

    def _model_key(self) -> str:
        if self._key is None:
            m = self.model
            key = {
                "model": getattr(m, "name", type(m).__name__),
                "config": m.config_dict() if isinstance(m, RankingModel) else {},
                "train": self.config.resume_key(),
                "data": data_fingerprint(self.data),
            }
            self._key = json.dumps(key, sort_keys=True)
        return self._key

    def _save_state(self, state: dict[str, Any]) -> None:
        path = self._state_path()
        if path is None:
            return
        obj = {
            "format": STATE_FORMAT,
            "key": self._model_key(),
            "progress": json.dumps(
                {k: state[k] for k in ("epoch", "best_epoch", "best", "bad_epochs", "seconds")}
            ),
            "history": json.dumps(state["history"]),
            "model": self.model.state_dict(),
            "best_model": state["best_state"],
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
        }
        _atomic_torch_save(obj, path)

    def _load_state(self) -> dict[str, Any] | None:
        path = self._state_path()
        if path is None or not self.config.resume or not path.is_file():
            return None
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if obj.get("format") != STATE_FORMAT:
            raise ValueError(f"{path}: not an mllmrec-pyg training state")
        if obj["key"] != self._model_key():
            raise ValueError(
                f"{path} was written for a different model, data or training settings; "
                "delete it or choose another checkpoint_dir"
            )
        self.model.load_state_dict(obj["model"])
        self.optimizer.load_state_dict(obj["optimizer"])
        self.generator.set_state(obj["generator"])
        state = json.loads(obj["progress"])
        state["history"] = json.loads(obj["history"])
        state["best_state"] = obj["best_model"]
        log.info("resuming from %s after epoch %d", path, state["epoch"])
        return state

    # -- the loop -------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train until early stopping or the epoch cap; return valid/test at the best epoch."""
        cfg = self.config
        start = time.perf_counter()
        if not self.trainable:
            valid = self.evaluate("valid")
            test = self.evaluate("test")
            seconds = time.perf_counter() - start
            log.info("%s has no trainable parameters: evaluated once", type(self.model).__name__)
            self._save_best(valid, 0)
            return TrainResult(valid, test, 0, 0, seconds)

        state = self._load_state() or {
            "epoch": 0,
            "best_epoch": 0,
            "best": float("-inf"),
            "bad_epochs": 0,
            "seconds": 0.0,
            "history": [],
            "best_state": None,
        }
        prior = state["seconds"]
        bar = tqdm(
            total=cfg.epochs,
            initial=state["epoch"],
            desc=f"train {getattr(self.model, 'name', type(self.model).__name__)}",
            disable=not cfg.show_progress,
        )
        epoch = state["epoch"]
        while state["bad_epochs"] < cfg.patience and epoch < cfg.epochs:
            epoch += 1
            t0 = time.perf_counter()
            loss = self.train_epoch(epoch)
            valid = self.evaluate("valid")
            value = valid[cfg.monitor]
            improved = value > state["best"]
            if improved:
                state.update(best=value, best_epoch=epoch, bad_epochs=0)
                state["best_state"] = {
                    k: v.detach().clone() for k, v in self.model.state_dict().items()
                }
                self._save_best(valid, epoch)
            else:
                state["bad_epochs"] += 1
            state["history"].append(
                {
                    "epoch": epoch,
                    "loss": loss,
                    "valid": valid,
                    "seconds": round(time.perf_counter() - t0, 4),
                }
            )
            log.debug("epoch %d loss %.5f valid %s %.5f", epoch, loss, cfg.monitor, value)
            state["epoch"] = epoch
            state["seconds"] = prior + time.perf_counter() - start
            self._save_state(state)
            bar.update(1)
            bar.set_postfix(
                loss=f"{loss:.4f}",
                **{
                    cfg.monitor: f"{value:.4f}",
                    "best": f"{state['best']:.4f}@{state['best_epoch']}",
                },
            )
        bar.close()
        if state["bad_epochs"] >= cfg.patience:
            log.info(
                "early stop after epoch %d: no better valid %s for %d epochs",
                epoch,
                cfg.monitor,
                cfg.patience,
            )
        if state["best_state"] is not None:
            self.model.load_state_dict(state["best_state"])
        best_epoch = state["best_epoch"]
        valid = next(
            (h["valid"] for h in state["history"] if h["epoch"] == best_epoch), None
        ) or self.evaluate("valid")
        test = self.evaluate("test")
        seconds = prior + time.perf_counter() - start
        log.info(
            "best epoch %d of %d: valid %s %.4f, test %s %.4f (%.1fs)",
            best_epoch,
            epoch,
            cfg.monitor,
            valid[cfg.monitor],
            cfg.monitor,
            test[cfg.monitor],
            seconds,
        )
        return TrainResult(valid, test, best_epoch, epoch, seconds, state["history"])

    def _save_best(self, valid: dict[str, float], epoch: int) -> None:
        path = self._best_path()
        if path is not None and isinstance(self.model, RankingModel):
            save_checkpoint(self.model, path, self.data, epoch=epoch, valid=valid)


def train(
    model: Recommender, data: HeteroData, config: TrainConfig | None = None, **overrides: Any
) -> TrainResult:
    """Shortcut for ``Trainer(model, data, config).fit()``; keywords override config fields."""
    config = config or TrainConfig()
    if overrides:
        config = dataclasses.replace(config, **overrides)
    return Trainer(model, data, config).fit()
