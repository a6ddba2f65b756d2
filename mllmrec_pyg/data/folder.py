"""The reasoning stage's files in an MMRec folder: item texts, preferences, the id map.

A folder written by ``mllmrec prepare-amazon`` holds, beside the MMRec files,
``item_meta.csv`` (item text, image paths) and, once the reasoning commands
ran, ``item_texts.jsonl`` (fused item texts), ``user_preferences.jsonl`` and
``generations.sqlite`` (the generation store). :func:`load_folder` reads such
a folder into the HeteroData contract with its item texts.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from torch_geometric.data import HeteroData

from mllmrec_pyg.data.amazon import ITEM_META_FILE, check_complete, read_item_meta
from mllmrec_pyg.data.mmrec import load_mmrec
from mllmrec_pyg.data.schema import ITEM
from mllmrec_pyg.io import read_jsonl_texts

log = logging.getLogger(__name__)

STORE_FILE = "generations.sqlite"
ITEM_TEXTS_FILE = "item_texts.jsonl"
PREFERENCES_FILE = "user_preferences.jsonl"
AUDIT_PREFERENCES_FILE = "user_preferences_full_history_AUDIT.jsonl"


def has_item_texts(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` was written by ``prepare-amazon`` (it has ``item_meta.csv``)."""
    return (Path(folder) / ITEM_META_FILE).is_file()


def load_folder(folder: str | os.PathLike, fused: bool = True) -> HeteroData:
    """An MMRec folder with item texts (the fused ones when ``describe-items`` ran).

    Args:
        folder: a folder written by ``mllmrec prepare-amazon``.
        fused: read ``item_texts.jsonl`` (text + image description) when present;
            the plain ``item_meta.csv`` texts stay in ``data["item"].base_text``.
    """
    folder = Path(folder)
    check_complete(folder)
    data = load_mmrec(folder, item_features="none", user_features="none")
    texts, images = read_item_meta(folder)
    n = int(data[ITEM].num_nodes)
    if len(texts) < n:
        raise ValueError(f"{folder / ITEM_META_FILE} has {len(texts)} items, the .inter has {n}")
    data[ITEM].num_nodes = len(texts)
    data[ITEM].text = texts
    if any(images):
        data[ITEM].image_path = images
    fused_path = folder / ITEM_TEXTS_FILE
    if fused and fused_path.is_file():
        data[ITEM].base_text = list(texts)
        data[ITEM].text = read_jsonl_texts(fused_path, "itemID", len(texts))
        log.info("item texts: fused texts from %s", fused_path)
    else:
        log.info("item texts: %s (no %s yet)", ITEM_META_FILE, ITEM_TEXTS_FILE)
    return data


def read_item_map(path: str | os.PathLike, n: int) -> list[str]:
    """The ASIN of each of ``n`` item ids from ``i_id_mapping.csv`` (``asin<TAB>itemID``)."""
    path = Path(path)
    asins = [""] * n
    with open(path, encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        if header != ["asin", "itemID"]:
            raise ValueError(f"{path}:1: expected header 'asin<TAB>itemID', got {header}")
        for lineno, line in enumerate(fh, start=2):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) >= n:
                raise ValueError(f"{path}:{lineno}: bad row {line.strip()!r}")
            asins[int(parts[1])] = parts[0]
    return asins


__all__ = [
    "AUDIT_PREFERENCES_FILE",
    "ITEM_TEXTS_FILE",
    "PREFERENCES_FILE",
    "STORE_FILE",
    "has_item_texts",
    "load_folder",
    "read_item_map",
]
