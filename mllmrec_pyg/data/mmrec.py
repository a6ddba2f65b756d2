"""Folders in the MMRec format -> the HeteroData contract.

An MMRec folder holds ``<name>.inter``, a tab-separated file with a header
naming at least the columns ``userID``, ``itemID`` and ``x_label`` (0 train,
1 valid, 2 test; ``rating`` and ``timestamp`` are optional), and ``.npy``
feature matrices whose row ``i`` belongs to id ``i``:

=============================  ===============================================
``image_text_feat.npy``        item multimodal-description features (MLLMRec)
``user_preferences_feat.npy``  user preference features (MLLMRec)
``text_feat.npy``              item text features (MMRec)
``image_feat.npy``             item image features (MMRec)
=============================  ===============================================

Ids are used as they are (MMRec folders are already mapped to ``0..n-1``), so
a folder downloaded from the MLLMRec or MMRec authors loads without edits; ids
far beyond the number of distinct ids are refused (:func:`check_id_range`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import HeteroData

from mllmrec_pyg.data.amazon import check_complete
from mllmrec_pyg.data.schema import INTERACTS, ITEM, USER, SchemaError, check_features
from mllmrec_pyg.data.split import to_heterodata
from mllmrec_pyg.io import link_target_elsewhere, text_lines

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("userID", "itemID", "x_label")
ITEM_FEATURE_FILES = {
    "image_text": ("image_text_feat.npy",),
    "text": ("text_feat.npy",),
    "image": ("image_feat.npy",),
    "text+image": ("text_feat.npy", "image_feat.npy"),
}
USER_FEATURE_FILE = "user_preferences_feat.npy"
#: Order tried by ``item_features="auto"``.
AUTO_ITEM_FEATURES = ("image_text", "text")


class MMRecFormatError(SchemaError):
    """A file of an MMRec folder is malformed; the message names file and line."""


def find_inter_file(folder: Path, name: str | None = None) -> Path:
    """``<folder>/<name>.inter``, or the only ``.inter`` file in ``folder``."""
    if folder.is_file():
        raise NotADirectoryError(
            f"{folder} is a file; give the MMRec folder that holds it ({folder.parent})"
        )
    if not folder.is_dir():
        raise FileNotFoundError(f"MMRec folder {folder} does not exist")
    if name is not None:
        path = folder / f"{name}.inter"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        return path
    candidates = sorted(folder.glob("*.inter"))
    if not candidates:
        raise FileNotFoundError(f"no .inter file in {folder}")
    if len(candidates) > 1:
        by_folder = folder / f"{folder.name}.inter"
        if by_folder in candidates:
            return by_folder
        raise MMRecFormatError(
            f"{folder} has several .inter files ({', '.join(p.name for p in candidates)}); "
            "pass name= to choose one"
        )
    return candidates[0]


def read_inter(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Parse an MMRec ``.inter`` file (UTF-8; a byte-order mark is accepted).

    Returns:
        ``{"user", "item", "label"}`` int64 arrays and ``"timestamp"`` when the
        column exists.

    Raises:
        MMRecFormatError: missing columns, a wrong number of fields, a
            non-integer id or label, a negative id, a label outside
            ``{0, 1, 2}``, bytes that are not UTF-8, or an id far beyond the
            number of distinct ids (:func:`check_id_range`), each naming the
            file and line. A file that is a link out of its folder is named
            with its target, and its content is not quoted.
    """
    path = Path(path)
    target = link_target_elsewhere(path)
    where = f"{path} (a link to {target})" if target is not None else str(path)

    def shown(value: str) -> str:
        return repr(value) if target is None else "a value not shown here"

    lines = text_lines(path)
    try:
        first = next(lines, "")
        if not first.strip():
            raise MMRecFormatError(
                f"{where}: the file is empty; an .inter file starts with a tab-separated header "
                f"({chr(9).join(REQUIRED_COLUMNS)}) followed by one interaction per line"
            )
        header = first.rstrip("\r\n").split("\t")
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            found = f"the header has {header}" if target is None else "its first line is not one"
            raise MMRecFormatError(
                f"{where}:1: missing column(s) {missing}; {found} "
                f"(tab-separated, needs {list(REQUIRED_COLUMNS)})"
            )
        cols = {c: header.index(c) for c in (*REQUIRED_COLUMNS, "timestamp") if c in header}
        out: dict[str, list[int]] = {c: [] for c in cols}
        top = {"userID": (-1, 0), "itemID": (-1, 0)}  # each id column's largest id and its line
        for lineno, line in enumerate(lines, start=2):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != len(header):
                raise MMRecFormatError(
                    f"{where}:{lineno}: {len(fields)} tab-separated field(s), the header has "
                    f"{len(header)}"
                )
            for c, j in cols.items():
                raw = fields[j].strip()
                try:
                    value = int(float(raw)) if c == "timestamp" else int(raw)
                    if c == "timestamp" and not -INT64 <= value < INT64:
                        raise OverflowError
                except (ValueError, OverflowError):
                    kind = "a finite 64-bit number" if c == "timestamp" else "an integer"
                    raise MMRecFormatError(
                        f"{where}:{lineno}: column {c!r} must be {kind}, got {shown(raw)}"
                    ) from None
                if c == "x_label" and value not in (0, 1, 2):
                    raise MMRecFormatError(
                        f"{where}:{lineno}: x_label must be 0 (train), 1 (valid) or 2 (test), "
                        f"got {value}"
                    )
                if c in ("userID", "itemID"):
                    if value < 0:
                        raise MMRecFormatError(f"{where}:{lineno}: negative {c} {value}")
                    if value > top[c][0]:
                        top[c] = (value, lineno)
                out[c].append(value)
    except MMRecFormatError:
        raise
    except ValueError as err:  # text_lines: a byte that is not UTF-8
        raise MMRecFormatError(str(err)) from None
    finally:
        lines.close()
    if not out["userID"]:
        raise MMRecFormatError(f"{where}: no interactions")
    for c, (largest, lineno) in top.items():
        check_id_range(c, largest, len(set(out[c])), f"{where}:{lineno}")
    res = {
        "user": np.asarray(out["userID"], dtype=np.int64),
        "item": np.asarray(out["itemID"], dtype=np.int64),
        "label": np.asarray(out["x_label"], dtype=np.int64),
    }
    if "timestamp" in out:
        res["timestamp"] = np.asarray(out["timestamp"], dtype=np.int64)
    return res


#: ids are used as row numbers: at most this many more ids than distinct ones are tolerated
ID_SLACK = 1000
INT64 = 2**63


def check_id_range(column: str, largest: int, distinct: int, where: str) -> None:
    """Refuse an id space far larger than the ids that occur.

    Ids of an MMRec folder are row numbers (``0..n-1``): every model allocates
    a row per id up to the largest one, and row ``i`` of a feature file belongs
    to id ``i``. A few unused ids are tolerated (with a warning by the loader);
    ids are refused when the unused ones outnumber both the used ones and
    :data:`ID_SLACK`, i.e. when ``largest + 1 > 2 * distinct`` and
    ``largest + 1 > distinct + ID_SLACK``.

    Raises:
        MMRecFormatError: naming ``where`` (``file:line`` of the largest id).
    """
    unused = largest + 1 - distinct
    if unused > distinct and unused > ID_SLACK:
        raise MMRecFormatError(
            f"{where}: {column} {largest} is far beyond the {distinct} distinct {column}s "
            f"({unused} of the ids 0..{largest} never occur); ids of an MMRec folder are row "
            "numbers 0..n-1 (row i of a feature file belongs to id i): remap them to 0..n-1"
        )


def read_features(path: Path, num_rows: int, what: str) -> torch.Tensor:
    """Load a ``[num_rows, d]`` ``.npy`` matrix (no pickles), checking shape and finiteness.

    Raises:
        MMRecFormatError: naming the file: empty, truncated, a pickle or another
            kind of file, not 2-D, not real numbers (complex, bool, text), a row
            count that is not ``num_rows``, or NaN/inf rows.
    """
    if path.stat().st_size == 0:
        raise MMRecFormatError(f"{path}: the file is empty (0 bytes); expected a .npy matrix")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:
        raise MMRecFormatError(
            f"{path}: not a plain numeric .npy array (truncated, a pickle or another kind of "
            f"file: {err})"
        ) from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        arr.close()
        raise MMRecFormatError(f"{path}: a .npz archive, expected a single .npy matrix")
    if arr.ndim != 2:
        raise MMRecFormatError(
            f"{path}: expected a 2-D [{what}, dim] matrix, got shape {arr.shape}"
        )
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise MMRecFormatError(f"{path}: expected real numbers, got dtype {arr.dtype}")
    if arr.shape[0] != num_rows:
        raise MMRecFormatError(
            f"{path}: {arr.shape[0]} rows, but the .inter ids give {num_rows} {what} "
            f"(ids 0..{num_rows - 1}); row i must belong to id i"
        )
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    try:
        return check_features(x, str(path))
    except SchemaError as err:
        raise MMRecFormatError(str(err)) from None


def _drop_duplicates(cols: dict[str, np.ndarray], path: Path) -> dict[str, np.ndarray]:
    key = cols["user"] * (int(cols["item"].max()) + 1) + cols["item"]
    _, first = np.unique(key, return_index=True)
    if first.size == key.size:
        return cols
    keep = np.sort(first)
    log.warning(
        "%s: %d duplicate (userID, itemID) row(s); keeping the first occurrence of each",
        path,
        key.size - first.size,
    )
    return {k: v[keep] for k, v in cols.items()}


def load_mmrec(
    folder: str | os.PathLike,
    name: str | None = None,
    item_features: str = "auto",
    user_features: str = "auto",
) -> HeteroData:
    """Load an MMRec-format folder into the HeteroData contract.

    Args:
        folder: the dataset folder (e.g. the authors' ``data/baby``).
        name: stem of the ``.inter`` file; default: the only ``.inter`` in the
            folder (or ``<folder name>.inter``).
        item_features: ``"auto"`` (``image_text_feat.npy`` if present, else
            ``text_feat.npy``, else none), ``"image_text"``, ``"text"``,
            ``"image"``, ``"text+image"`` (concatenated) or ``"none"``.
        user_features: ``"auto"`` (``user_preferences_feat.npy`` if present),
            ``"preferences"`` (required) or ``"none"``.

    Returns:
        HeteroData with training ``edge_index`` (+ ``time``), ``val_edge_index``,
        ``test_edge_index``, ``data["item"].x`` / ``data["user"].x`` as chosen,
        and ``data.feature_files`` naming the files used.

    Raises:
        MMRecFormatError: malformed ``.inter`` or feature files (naming file
            and line or row), feature row counts that disagree with the ids.
        FileNotFoundError: a requested file is missing.
        ValueError: a folder ``mllmrec prepare-amazon`` did not finish writing
            (:func:`~mllmrec_pyg.data.amazon.check_complete`).
    """
    folder = Path(folder)
    check_complete(folder)
    inter = find_inter_file(folder, name)
    cols = _drop_duplicates(read_inter(inter), inter)
    num_users = int(cols["user"].max()) + 1
    num_items = int(cols["item"].max()) + 1
    for what, ids, n in (("userID", cols["user"], num_users), ("itemID", cols["item"], num_items)):
        absent = n - np.unique(ids).size
        if absent:
            log.warning("%s: %d of the ids 0..%d of %s never occur", inter, absent, n - 1, what)
    data = to_heterodata(
        cols["user"],
        cols["item"],
        cols["label"],
        num_users,
        num_items,
        timestamps=cols.get("timestamp"),
    )
    store = data[INTERACTS]
    for key, split in (("val_edge_index", "valid"), ("test_edge_index", "test")):
        if store[key].size(1) == 0:
            log.warning(
                "%s: the %s split (x_label %d) is empty", inter, split, 1 if split == "valid" else 2
            )
    used: dict[str, list[str]] = {}

    choice = item_features
    if choice == "auto":
        choice = next(
            (
                c
                for c in AUTO_ITEM_FEATURES
                if all((folder / f).is_file() for f in ITEM_FEATURE_FILES[c])
            ),
            "none",
        )
    if choice != "none":
        if choice not in ITEM_FEATURE_FILES:
            raise ValueError(
                f"item_features={item_features!r}: choose auto, none or {sorted(ITEM_FEATURE_FILES)}"
            )
        mats = []
        for fname in ITEM_FEATURE_FILES[choice]:
            path = folder / fname
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist (item_features={choice!r})")
            mats.append(read_features(path, num_items, "items"))
        data[ITEM].x = torch.cat(mats, dim=1) if len(mats) > 1 else mats[0]
        used["item"] = list(ITEM_FEATURE_FILES[choice])
    else:
        log.info("%s: no item feature file used", folder)

    path = folder / USER_FEATURE_FILE
    if user_features not in ("auto", "preferences", "none"):
        raise ValueError(f"user_features={user_features!r}: choose auto, preferences or none")
    if user_features == "preferences" and not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (user_features='preferences')")
    if user_features != "none" and path.is_file():
        data[USER].x = read_features(path, num_users, "users")
        used["user"] = [USER_FEATURE_FILE]

    data.name = inter.stem
    data.feature_files = used
    log.info(
        "loaded %s: %d users, %d items, %d/%d/%d train/valid/test pairs, features %s",
        inter,
        num_users,
        num_items,
        store.edge_index.size(1),
        store.val_edge_index.size(1),
        store.test_edge_index.size(1),
        used or "none",
    )
    return data
