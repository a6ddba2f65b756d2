"""The HeteroData contract every stage of the package reads and writes.

======================================================  ==========================================
key                                                     meaning
======================================================  ==========================================
``data["user"].num_nodes``, ``data["item"].num_nodes``  sizes
``data["item"].x``                                      item features, float ``[I, d]``
``data["user"].x``                                      user preference features, float ``[U, d]``
``data["item"].text``, ``data["user"].text``            optional lists of ``str``
``data[INTERACTS].edge_index``                          TRAINING ``(user, item)`` pairs only
``data[INTERACTS].time``                                optional timestamps of those pairs
``data[INTERACTS].val_edge_index`` / ``.test_edge_index``  held-out pairs
``data[SEMANTIC]``                                      ThresholdKNN output
``data[COOCCURS]``                                      JaccardCoOccurrence output
``data[RELATED]``                                       MergeGraphs output, the graph S*
======================================================  ==========================================

Item-item edges point from neighbour to owner: ``edge_index[1]`` is the item
whose top-K list produced the edge (PyG ``source_to_target`` flow).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

USER = "user"
ITEM = "item"
INTERACTS = (USER, "interacts", ITEM)
SEMANTIC = (ITEM, "semantic", ITEM)
COOCCURS = (ITEM, "cooccurs", ITEM)
RELATED = (ITEM, "related", ITEM)
HELD_OUT_KEYS = ("val_edge_index", "test_edge_index")


class SchemaError(ValueError):
    """A :class:`HeteroData` object does not follow the package contract."""


def nonfinite_rows(x: Tensor) -> Tensor:
    """Indices of rows of ``x`` holding NaN or inf."""
    return (~torch.isfinite(x)).reshape(x.size(0), -1).any(dim=1).nonzero().flatten()


def _fmt_ids(ids: Tensor, limit: int = 10) -> str:
    ids = ids.flatten().tolist()
    shown = ", ".join(str(i) for i in ids[:limit])
    more = f" (+{len(ids) - limit} more)" if len(ids) > limit else ""
    return f"[{shown}]{more}"


def check_features(x: object, what: str) -> Tensor:
    """Return ``x`` if it is a finite float matrix, else raise naming the bad rows."""
    if x is None:
        raise SchemaError(f"{what} is missing: encode text first (see mllmrec_pyg.encode)")
    if not isinstance(x, Tensor):
        raise SchemaError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise SchemaError(f"{what} must be 2-D [num_nodes, dim], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise SchemaError(f"{what} must be floating point, got {x.dtype}")
    bad = nonfinite_rows(x)
    if bad.numel():
        raise SchemaError(f"{what} has NaN or inf in {bad.numel()} row(s): {_fmt_ids(bad)}")
    return x


def check_edge_index(edge_index: object, num_src: int, num_dst: int, what: str) -> Tensor:
    """Return ``edge_index`` if it is a valid ``[2, E]`` id tensor, else raise."""
    if not isinstance(edge_index, Tensor):
        raise SchemaError(f"{what} must be a torch.Tensor, got {type(edge_index).__name__}")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise SchemaError(f"{what} must have shape [2, E], got {tuple(edge_index.shape)}")
    if edge_index.dtype != torch.long:
        raise SchemaError(f"{what} must be torch.long, got {edge_index.dtype}")
    for row, n, name in ((0, num_src, "source"), (1, num_dst, "target")):
        ids = edge_index[row]
        bad = ((ids < 0) | (ids >= n)).nonzero().flatten()
        if bad.numel():
            raise SchemaError(
                f"{what}: {name} ids out of range [0, {n}) at edge position(s) "
                f"{_fmt_ids(bad)}; offending id(s) {_fmt_ids(ids[bad])}"
            )
    return edge_index


def require_node_type(data: HeteroData, node_type: str) -> int:
    """Number of nodes of ``node_type``; raise if the type is absent."""
    if node_type not in data.node_types:
        raise SchemaError(
            f"HeteroData has no node type {node_type!r} (has {sorted(data.node_types)})"
        )
    n = data[node_type].num_nodes
    if n is None:
        raise SchemaError(f"data[{node_type!r}].num_nodes is not set")
    return int(n)


def require_edge_type(data: HeteroData, edge_type: tuple[str, str, str]) -> None:
    if tuple(edge_type) not in data.edge_types:
        raise SchemaError(
            f"HeteroData has no edge type {tuple(edge_type)} (has {sorted(data.edge_types)})"
        )


def item_edge_type(node_type: str, relation: str) -> tuple[str, str, str]:
    return (node_type, relation, node_type)


def validate(data: HeteroData, *, require: Iterable[str] = ()) -> HeteroData:
    """Check ``data`` against the contract and raise :class:`SchemaError` naming what is wrong.

    Args:
        data: the object to check.
        require: extra keys that must be present, any of ``"item.x"``,
            ``"user.x"``, ``"held_out"``, ``"semantic"``, ``"cooccurs"``,
            ``"related"``.
    """
    require = set(require)
    num_users = require_node_type(data, USER)
    num_items = require_node_type(data, ITEM)
    require_edge_type(data, INTERACTS)
    store = data[INTERACTS]
    if "edge_index" not in store:
        raise SchemaError(f"data[{INTERACTS}].edge_index (training pairs) is missing")
    check_edge_index(store.edge_index, num_users, num_items, f"data[{INTERACTS}].edge_index")
    if "time" in store and store.time is not None:
        if store.time.numel() != store.edge_index.size(1):
            raise SchemaError(
                f"data[{INTERACTS}].time has {store.time.numel()} entries for "
                f"{store.edge_index.size(1)} training edges"
            )
    for key in HELD_OUT_KEYS:
        if key in store:
            check_edge_index(store[key], num_users, num_items, f"data[{INTERACTS}].{key}")
        elif "held_out" in require:
            raise SchemaError(f"data[{INTERACTS}].{key} is missing")
    for node_type, n in ((USER, num_users), (ITEM, num_items)):
        key = f"{node_type}.x"
        x = data[node_type].get("x")
        if x is None:
            if key in require:
                raise SchemaError(f"data[{node_type!r}].x is missing")
            continue
        check_features(x, f"data[{node_type!r}].x")
        if x.size(0) != n:
            raise SchemaError(f"data[{node_type!r}].x has {x.size(0)} rows for {n} nodes")
        text = data[node_type].get("text")
        if text is not None and len(text) != n:
            raise SchemaError(f"data[{node_type!r}].text has {len(text)} entries for {n} nodes")
    for rel in ("semantic", "cooccurs", "related"):
        et = (ITEM, rel, ITEM)
        if et in data.edge_types:
            check_edge_index(data[et].edge_index, num_items, num_items, f"data[{et}].edge_index")
            w = data[et].get("edge_weight")
            if w is not None and w.numel() != data[et].edge_index.size(1):
                raise SchemaError(f"data[{et}].edge_weight does not match its edge_index")
        elif rel in require:
            raise SchemaError(f"data[{et}] is missing: apply the transform that builds it")
    return data
