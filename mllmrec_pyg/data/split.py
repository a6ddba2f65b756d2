"""Interaction-level utilities shared by every loader: k-core, the per-user split,
and assembly into the HeteroData contract."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch_geometric.data import HeteroData

from mllmrec_pyg.data.schema import INTERACTS, ITEM, USER

log = logging.getLogger(__name__)

TRAIN, VALID, TEST = 0, 1, 2


def k_core(users: np.ndarray, items: np.ndarray, k: int = 5) -> np.ndarray:
    """Boolean mask of the rows that survive iterative ``k``-core filtering.

    Repeats until every remaining user and item has at least ``k`` rows.
    """
    users = np.asarray(users)
    items = np.asarray(items)
    keep = np.ones(users.shape[0], dtype=bool)
    if k <= 1:
        return keep
    _, u_inv = np.unique(users, return_inverse=True)
    _, i_inv = np.unique(items, return_inverse=True)
    while True:
        u_cnt = np.bincount(u_inv[keep], minlength=u_inv.max(initial=-1) + 1)
        i_cnt = np.bincount(i_inv[keep], minlength=i_inv.max(initial=-1) + 1)
        new = keep & (u_cnt[u_inv] >= k) & (i_cnt[i_inv] >= k)
        if new.sum() == keep.sum():
            return new
        keep = new


def per_user_split(users: np.ndarray, seed: int = 0) -> np.ndarray:
    """MMRec per-user random split; returns ``x_label`` (0 train, 1 valid, 2 test).

    A user with ``n < 10`` interactions gets ``n - 2`` train, 1 valid, 1 test;
    otherwise ``floor(0.2 n)`` are held out, half of them (rounded down) valid
    and the rest test. Users with ``n <= 2`` keep everything in train (they
    cannot give a training item and a held-out item each).
    """
    users = np.asarray(users)
    m = users.shape[0]
    labels = np.zeros(m, dtype=np.int64)
    if m == 0:
        return labels
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(m), users))
    su = users[order]
    starts = np.r_[0, np.flatnonzero(su[1:] != su[:-1]) + 1]
    counts = np.diff(np.r_[starts, m])
    pos = np.arange(m) - np.repeat(starts, counts)
    n = np.repeat(counts, counts)
    held = np.where(n < 10, 2, (0.2 * n).astype(np.int64))
    held = np.where(n <= 2, 0, held)
    n_val = np.where(n < 10, 1, held // 2)
    n_train = n - held
    lab = np.where(pos < n_train, TRAIN, np.where(pos < n_train + n_val, VALID, TEST))
    labels[order] = lab
    return labels


def remap(ids: Sequence | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map arbitrary ids to ``0..n-1``; returns ``(new_ids, original_ids_sorted)``."""
    uniq, inv = np.unique(np.asarray(ids), return_inverse=True)
    return inv.astype(np.int64), uniq


def to_heterodata(
    users: np.ndarray,
    items: np.ndarray,
    labels: np.ndarray,
    num_users: int,
    num_items: int,
    *,
    timestamps: np.ndarray | None = None,
    item_text: list[str] | None = None,
    user_text: list[str] | None = None,
) -> HeteroData:
    """Assemble the HeteroData contract from ``(user, item, x_label)`` rows.

    Training rows go to ``edge_index`` (with ``time`` when timestamps are
    given); valid and test rows to ``val_edge_index`` and ``test_edge_index``.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    data = HeteroData()
    data[USER].num_nodes = int(num_users)
    data[ITEM].num_nodes = int(num_items)
    store = data[INTERACTS]
    for lab, key in ((TRAIN, "edge_index"), (VALID, "val_edge_index"), (TEST, "test_edge_index")):
        sel = labels == lab
        store[key] = torch.from_numpy(np.stack([users[sel], items[sel]]).astype(np.int64))
    if timestamps is not None:
        store.time = torch.from_numpy(np.asarray(timestamps)[labels == TRAIN].astype(np.int64))
    if item_text is not None:
        data[ITEM].text = list(item_text)
    if user_text is not None:
        data[USER].text = list(user_text)
    no_train = num_users - np.unique(users[labels == TRAIN]).size
    if no_train:
        log.warning("%d of %d users have no training interaction", no_train, num_users)
    return data
