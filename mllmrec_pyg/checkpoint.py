"""Model checkpoints and resumable training states: their format, fingerprints and integrity.

A file written here is a ``torch.save`` dict of tensors, strings and numbers
(loaded back with ``weights_only=True``, never a pickle of arbitrary
objects) with three fixed keys:

* ``format`` -- what the file is (:data:`CHECKPOINT_FORMAT`, :data:`STATE_FORMAT`);
* ``sha256`` -- a digest of every other key's content, tensor bytes included,
  checked on every load, so a flipped bit, a truncated copy or a foreign
  file is refused with one line that names the file;
* the payload: ``meta`` (JSON: model name, config, data fingerprint, extras)
  and ``state_dict`` for a model; the trainer's progress for a state.

Writes are atomic (temporary file + ``os.replace``). A training-state folder
is held by one process at a time (:func:`checkpoint_dir_lock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from mllmrec_pyg.data.schema import INTERACTS, ITEM, RELATED, USER, require_node_type
from mllmrec_pyg.io import atomic_path
from mllmrec_pyg.nn.base import RankingModel
from mllmrec_pyg.nn.registry import build_model, make_config

CHECKPOINT_FORMAT = "mllmrec-pyg/checkpoint/1"
STATE_FORMAT = "mllmrec-pyg/train-state/1"


class CheckpointError(ValueError):
    """A checkpoint or training state that cannot be used; the message names the file."""


# -- integrity ------------------------------------------------------------------------------
def _update(h: Any, obj: Any) -> None:
    """Feed ``obj`` (nested dicts/lists of tensors and JSON values) into ``h``, in a fixed order."""
    if isinstance(obj, Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, Mapping):
        h.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=str):
            h.update(f"K{key!s}".encode())
            _update(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _update(h, v)
    else:
        h.update(f"V{json.dumps(obj, sort_keys=True)}".encode())


def content_digest(obj: Mapping[str, Any]) -> str:
    """sha256 of every key of ``obj`` except ``sha256`` (tensor bytes, dtypes, shapes, values)."""
    h = hashlib.sha256()
    _update(h, {k: v for k, v in obj.items() if k != "sha256"})
    return h.hexdigest()


def save_verified(obj: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``obj`` with its :func:`content_digest` to ``path`` atomically."""
    path = Path(path)
    payload = {**obj, "sha256": content_digest(obj)}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_verified(path: str | os.PathLike, fmt: str, what: str, hint: str) -> dict[str, Any]:
    """Load a file written by :func:`save_verified` and check its format and digest.

    Args:
        path: the file.
        fmt: the expected ``format`` value.
        what: a name for the file's kind in messages (e.g. ``"model checkpoint"``).
        hint: what the user can do when the file is refused.

    Raises:
        CheckpointError: one line naming ``path``: missing, empty, truncated,
            not a torch file, another kind of file, or content that does not
            match its digest.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such {what}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the {what} is empty (0 bytes); {hint}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types here: zip, pickle, unpickler, EOF
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(
            f"{path}: not a readable {what} (truncated, corrupted or another kind of file: "
            f"{type(err).__name__} {first[:120]}); {hint}"
        ) from None
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: not a {what} (format {found!r}, expected {fmt!r}); {hint}")
    stored = obj.get("sha256")
    if stored is None:
        raise CheckpointError(f"{path}: the {what} carries no content digest; {hint}")
    if content_digest(obj) != stored:
        raise CheckpointError(
            f"{path}: the {what} is corrupted (its content does not match its sha256); {hint}"
        )
    return obj


# -- one process per training-state folder ---------------------------------------------------
LOCK_FILE = ".lock"
_HELD: dict[str, list] = {}  # resolved folder -> [open lock file, depth], this process's locks
_HELD_GUARD = threading.Lock()


@contextlib.contextmanager
def checkpoint_dir_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder`` (a trainer's ``checkpoint_dir``) for this process.

    An exclusive ``flock`` on ``<folder>/.lock``, which the system releases
    when the holder exits or dies, so a killed run never blocks the next.
    Re-entrant within one process (the command line takes the lock before
    loading data, the trainer again around its loop).

    Raises:
        CheckpointError: another process holds the folder (its pid is named).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is None:
            fh = open(folder / LOCK_FILE, "a+")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                pid = fh.read().strip() or "?"
                fh.close()
                raise CheckpointError(
                    f"{folder}: another training (pid {pid}) is using this checkpoint folder; "
                    "wait for it to finish or choose another --checkpoint-dir"
                ) from None
            fh.truncate(0)
            fh.write(f"{os.getpid()}\n")
            fh.flush()
            held = _HELD[key] = [fh, 0]
        held[1] += 1
    try:
        yield folder
    finally:
        with _HELD_GUARD:
            held[1] -= 1
            if held[1] == 0:
                del _HELD[key]
                fcntl.flock(held[0], fcntl.LOCK_UN)
                held[0].close()


# -- data fingerprint -----------------------------------------------------------------------
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


# -- model checkpoints ----------------------------------------------------------------------
_CHECKPOINT_HINT = "train the model again to rewrite it"


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
    return save_verified(obj, path)


def _load_checkpoint_file(path: str | os.PathLike) -> dict[str, Any]:
    return load_verified(path, CHECKPOINT_FORMAT, "mllmrec-pyg model checkpoint", _CHECKPOINT_HINT)


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of a checkpoint (model name, config, data fingerprint, extras)."""
    return json.loads(_load_checkpoint_file(path)["meta"])


def load_checkpoint(
    path: str | os.PathLike, data: HeteroData, check_data: bool = True
) -> RankingModel:
    """Rebuild a saved model on ``data`` and load its weights (``weights_only=True``).

    Args:
        path: a file written by :func:`save_checkpoint`.
        data: the dataset it was trained on (features, graphs and training
            pairs are rebuilt from it).
        check_data: refuse data whose fingerprint differs from the saved one.

    Raises:
        CheckpointError: the file is missing, corrupted or not a checkpoint.
        ValueError: the checkpoint was saved for other data.
    """
    obj = _load_checkpoint_file(path)
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


__all__ = [
    "CHECKPOINT_FORMAT",
    "STATE_FORMAT",
    "CheckpointError",
    "checkpoint_dir_lock",
    "content_digest",
    "data_fingerprint",
    "load_checkpoint",
    "load_verified",
    "read_checkpoint_meta",
    "save_checkpoint",
    "save_verified",
]
