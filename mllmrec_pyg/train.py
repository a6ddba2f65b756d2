"""Training loop: BPR with uniform negatives, per-epoch validation, early stopping.

The loop is model-agnostic (see :class:`~mllmrec_pyg.nn.base.Recommender`):

1. each epoch shuffles the training pairs and cuts them into batches;
2. each positive ``(u, i)`` gets one negative ``j`` drawn uniformly from the
   items ``u`` has **not** interacted with in training
   (:class:`UniformNegativeSampler`, exact and vectorised, never a training
   positive);
3. loss = mean BPR :math:`-\\log\\sigma(\\hat y_{ui} - \\hat y_{uj})` plus the
   model's optional ``reg_loss``; Adam;
   the model's optional hooks (see :mod:`mllmrec_pyg.nn.base`) add
   per-epoch work (``on_train_epoch_start``) or replace BPR by their own
   loss over ``num_negatives`` sampled negatives (``batch_loss``, e.g.
   InfoNCE);
4. full-ranking validation every epoch; training stops once the monitored
   metric (valid Recall@20) has not improved for ``patience`` epochs, the best
   epoch's weights are restored and the test split is evaluated with them.

With ``checkpoint_dir`` set, the full training state (model, optimiser,
random generator, history) is written atomically after every epoch, so an
interrupted run resumes where it stopped, and the best model is saved as a
reloadable checkpoint (state dict + JSON config).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import numbers
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData
from tqdm.auto import tqdm

from mllmrec_pyg.checkpoint import (
    STATE_FORMAT,
    CheckpointError,
    checkpoint_dir_lock,
    data_fingerprint,
    load_checkpoint,
    load_verified,
    read_checkpoint_meta,
    save_checkpoint,
    save_verified,
)
from mllmrec_pyg.data.schema import INTERACTS, ITEM, USER, require_node_type, validate
from mllmrec_pyg.fields import FieldError, check_fields
from mllmrec_pyg.metrics import DEFAULT_KS, FullRankEvaluator
from mllmrec_pyg.nn.base import RankingModel, Recommender
from mllmrec_pyg.sampling import UniformNegativeSampler, seed_everything
from mllmrec_pyg.threads import tuned

log = logging.getLogger(__name__)


def check_cutoffs(ks: Sequence[int]) -> None:
    """Refuse metric cut-offs that are not integers >= 1 (naming them)."""
    bad = [k for k in ks if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1]
    if bad:
        raise FieldError("ks", tuple(ks), f"must be integer cut-offs >= 1 ({bad} are not)")


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device`, refused in one line if this machine lacks it.

    Raises:
        ValueError: not a device name, a backend this machine does not have
            (``cuda`` without a GPU), an index beyond its devices, or ``meta``.
    """
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(
            f"device {str(device)!r} is not a torch device (cpu, cuda, cuda:1, mps, ...)"
        ) from None
    if dev.type == "meta":
        raise ValueError("device 'meta' holds no data: models cannot train on it")
    backend = getattr(torch, dev.type, None) if dev.type != "cpu" else None
    available = getattr(backend, "is_available", None)
    if available is not None and not available():
        raise ValueError(f"device {str(device)!r}: this machine has no {dev.type} device")
    count = getattr(backend, "device_count", None)
    if dev.index is not None and count is not None and dev.index >= count():
        raise ValueError(
            f"device {str(device)!r}: this machine has {count()} {dev.type} device(s), "
            f"numbered from 0"
        )
    return dev


def fit_cutoffs(num_items: int, ks: Sequence[int] | None = None) -> tuple[tuple[int, ...], str]:
    """The cut-offs that fit a catalog of ``num_items`` and the monitored metric.

    Cut-offs above ``num_items`` are dropped (a catalog of 40 items reports
    @5, @10, @20); valid Recall@20 is monitored, or Recall at the largest
    cut-off when 20 does not fit.
    """
    wanted = tuple(ks) if ks else DEFAULT_KS
    check_cutoffs(wanted)
    fitted = tuple(sorted({k for k in wanted if k <= num_items}))
    if not fitted:
        raise ValueError(
            f"no metric cut-off in {wanted} fits a catalog of {num_items} items; pass --ks"
        )
    return fitted, f"recall@{20 if 20 in fitted else fitted[-1]}"


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
        evaluate_test: evaluate the test split at the best epoch (``False`` for
            hyper-parameter search, which must not read test metrics).
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
    evaluate_test: bool = True
    device: str = "cpu"
    show_progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.checkpoint_dir, os.PathLike):
            self.checkpoint_dir = os.fspath(self.checkpoint_dir)
        if isinstance(self.device, torch.device):
            self.device = str(self.device)
        check_fields(TrainConfig, {f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        self.ks = tuple(int(k) for k in self.ks)
        check_cutoffs(self.ks)
        for key in ("lr", "batch_size", "patience", "eval_block_size"):
            if getattr(self, key) <= 0:
                raise FieldError(key, getattr(self, key), "must be positive")
        if self.epochs < 1:
            raise FieldError("epochs", self.epochs, "must be >= 1")
        name, _, k = self.monitor.partition("@")
        if not k.isdigit() or int(k) not in self.ks:
            raise ValueError(
                f"monitor {self.monitor!r} must be '<metric>@k' with k in ks={self.ks}"
            )
        try:
            torch.device(self.device)
        except RuntimeError:
            raise FieldError(
                "device", self.device, "must be a torch device such as cpu, cuda, cuda:1 or mps"
            ) from None

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


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def drop_cold_start(
    train_pairs: Tensor, num_users: int, valid: Tensor, test: Tensor
) -> tuple[dict[str, Tensor], int]:
    """Held-out pairs of users with at least one training interaction, and how many users
    were left out.

    A user whose interactions are all held out gives no model here anything
    to rank from (ID embeddings stay at their random start; preference text
    is written from training history, which is empty), so such users are
    excluded from the valid and test metrics, and counted.
    """
    has_train = torch.zeros(num_users, dtype=torch.bool)
    has_train[train_pairs[0]] = True
    held = {"valid": valid, "test": test}
    cold = torch.cat([p[0][~has_train[p[0]]] for p in held.values()]).unique()
    if cold.numel():
        log.warning(
            "%d user(s) have held-out items but no training interaction (e.g. %s); no model "
            "can rank them from training data, so they are left out of the valid/test metrics",
            cold.numel(),
            cold[:5].tolist(),
        )
    return {k: p[:, has_train[p[0]]] for k, p in held.items()}, int(cold.numel())


def adam(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam with torch's fused kernel where it applies (floating-point parameters on CPU or
    CUDA): one pass over each tensor instead of a dozen element-wise ops, about 3x faster
    per step on CPU (the same update up to rounding); the multi-tensor loop otherwise."""
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, lr=lr, **({"fused": True} if fused else {"foreach": True}))


def batch_objective(model: Any, users: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
    """The training loss of one batch: the model's ``batch_loss`` (its own loss over
    ``[B, num_negatives]`` negatives) if it has one and it returns a value, else BPR on
    its ``pair_scores``; plus its ``reg_loss`` term if it has one."""
    batch_loss = getattr(model, "batch_loss", None)
    loss = batch_loss(users, pos, neg) if batch_loss is not None else None
    if loss is None:
        pos_score, neg_score = model.pair_scores(users, pos, neg)
        loss = -F.logsigmoid(pos_score - neg_score).mean()
    reg = getattr(model, "reg_loss", None)
    extra = reg(users, pos, neg) if reg is not None else None
    return loss + extra if extra is not None else loss


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
        cfg = config or TrainConfig()
        self.num_users = require_node_type(data, USER)
        self.num_items = require_node_type(data, ITEM)
        if cfg.ks == DEFAULT_KS and max(cfg.ks) > self.num_items:  # the defaults adapt
            ks, monitor = fit_cutoffs(self.num_items)
            log.info("%d items: metrics at k in %s, monitoring %s", self.num_items, ks, monitor)
            cfg = dataclasses.replace(cfg, ks=ks, monitor=monitor)
        self.config = cfg
        self.data = data
        self.device = check_device(cfg.device)
        self.model = model.to(self.device) if isinstance(model, torch.nn.Module) else model
        if (model.num_users, model.num_items) != (self.num_users, self.num_items):
            raise ValueError(
                f"model is for {model.num_users} users x {model.num_items} items, data has "
                f"{self.num_users} x {self.num_items}"
            )
        store = data[INTERACTS]
        self.train_pairs = store.edge_index
        if self.train_pairs.size(1) == 0:
            raise ValueError("there are no training interactions")
        held_out, self.cold_start_users = drop_cold_start(
            self.train_pairs, self.num_users, store.val_edge_index, store.test_edge_index
        )
        self.evaluator = FullRankEvaluator(
            self.train_pairs,
            self.num_users,
            self.num_items,
            held_out,
            ks=cfg.ks,
            block_size=cfg.eval_block_size,
            mask_valid_at_test=cfg.mask_valid_at_test,
        )
        for split in ("valid", "test"):
            self.evaluator.users(split)  # raises now, not after training, if a split is empty
        params = self.parameters()
        self.trainable = bool(params)
        self.optimizer = adam(params, cfg.lr) if params else None
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
        if epoch_start is not None:  # optional per-epoch work, e.g. a model's edge pruning
            epoch_start(epoch)
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
            elif num_neg == 0:  # the model's loss takes every item (e.g. a full softmax)
                neg = users.new_empty((users.numel(), 0))
            else:
                neg = self.sampler(users.unsqueeze(1).expand(-1, num_neg), self.generator)
            users, pos, neg = (t.to(self.device) for t in (users, pos, neg))
            loss = batch_objective(model, users, pos, neg)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.item() * idx.numel()
            count += idx.numel()
        if not np.isfinite(total):
            what = f"the training loss became {total}"
        elif not all(bool(torch.isfinite(p).all()) for p in self.parameters()):
            what = "the model's weights became NaN or infinite"
        else:
            return total / max(count, 1)
        raise FloatingPointError(
            f"epoch {epoch}: {what}; training diverged: lower the learning rate "
            f"(lr={self.config.lr:g}) or the loss weights"
        )

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
    def _path(self, name: str) -> Path | None:
        """``name`` (``last.pt``: the resumable state, ``best.pt``) in ``checkpoint_dir``, if set."""
        d = self.config.checkpoint_dir
        return Path(d) / name if d else None

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
        path = self._path("last.pt")
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
        save_verified(obj, path)

    def _load_state(self) -> dict[str, Any] | None:
        path = self._path("last.pt")
        if path is None or not self.config.resume or not path.is_file():
            return None
        hint = "delete it (or pass --restart) to train from the start"
        obj = load_verified(path, STATE_FORMAT, "resumable training state", hint)
        if obj["key"] != self._model_key():
            raise CheckpointError(
                f"{path}: written for a different model, data or training settings; {hint}"
            )
        self.model.load_state_dict(obj["model"])
        self.optimizer.load_state_dict(obj["optimizer"])
        self.generator.set_state(obj["generator"])
        state = json.loads(obj["progress"])
        state["history"] = json.loads(obj["history"])
        state["best_state"] = obj["best_model"]
        log.info("resuming from %s after epoch %d", path, state["epoch"])
        self._repair_best(state)
        return state

    def _repair_best(self, state: dict[str, Any]) -> None:
        """Rewrite ``best.pt`` from a resumed state when it is missing, unreadable or not
        the state's best epoch (it is otherwise written only when valid improves)."""
        path = self._path("best.pt")
        if path is None or state["best_state"] is None or not isinstance(self.model, RankingModel):
            return
        try:
            meta = read_checkpoint_meta(path)
            problem = None if meta.get("epoch") == state["best_epoch"] else "from another epoch"
        except CheckpointError as err:
            problem = str(err).removeprefix(f"{path}: ")
        if problem is None:
            return
        log.warning(
            "%s: %s; rewriting it from %s (epoch %d)",
            path,
            problem.split(";")[0],
            self._path("last.pt"),
            state["best_epoch"],
        )
        valid = next(
            (h["valid"] for h in state["history"] if h["epoch"] == state["best_epoch"]), {}
        )
        current = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(state["best_state"])
        try:
            self._save_best(valid, state["best_epoch"])
        finally:
            self.model.load_state_dict(current)

    # -- the loop -------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train until early stopping or the epoch cap; return valid/test at the best epoch.

        With ``checkpoint_dir`` the folder is held for the whole run
        (:func:`~mllmrec_pyg.checkpoint.checkpoint_dir_lock`): a second
        training on it is refused instead of overwriting this one's files.
        """
        folder = self.config.checkpoint_dir
        with checkpoint_dir_lock(folder) if folder else contextlib.nullcontext():
            return self._fit()

    def _fit(self) -> TrainResult:
        cfg = self.config
        start = time.perf_counter()
        if not self.trainable:
            valid = self.evaluate("valid")
            test = self.evaluate("test") if cfg.evaluate_test else {}
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
        state["start_epoch"] = state["epoch"]
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
            # early stopping ends the run by this epoch unless the monitored metric improves
            horizon = min(epoch + cfg.patience - state["bad_epochs"], cfg.epochs)
            per_epoch = (time.perf_counter() - start) / max(epoch - state.get("start_epoch", 0), 1)
            bar.set_postfix(
                loss=f"{loss:.4f}",
                **{
                    cfg.monitor: f"{value:.4f}",
                    "best": f"{state['best']:.4f}@{state['best_epoch']}",
                    "stops by": f"epoch {horizon} (~{_duration((horizon - epoch) * per_epoch)})",
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
        test = self.evaluate("test") if cfg.evaluate_test else {}
        seconds = prior + time.perf_counter() - start
        log.info(
            "best epoch %d of %d: valid %s %.4f, test %s (%.1fs)",
            best_epoch,
            epoch,
            cfg.monitor,
            valid[cfg.monitor],
            f"{test[cfg.monitor]:.4f}" if test else "not evaluated",
            seconds,
        )
        return TrainResult(valid, test, best_epoch, epoch, seconds, state["history"])

    def _save_best(self, valid: dict[str, float], epoch: int) -> None:
        path = self._path("best.pt")
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


__all__ = [
    "CheckpointError",
    "batch_objective",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "UniformNegativeSampler",
    "data_fingerprint",
    "fit_cutoffs",
    "load_checkpoint",
    "read_checkpoint_meta",
    "save_checkpoint",
    "seed_everything",
    "train",
]
