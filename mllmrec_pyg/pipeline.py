"""The one path from a dataset to a trained model, shared by the CLI, the experiments and the examples.

::

    data = load_data(DataConfig("movielens"))                     # 1. HeteroData
    data, info = add_features(data, TextConfig(), cache_dir(cfg))  # 2. item/user text -> x
    data = build_graph(data, GraphConfig())                        # 3. S* as ("item","related","item")
    model, result = train_model("mllmrec", data, TrainConfig())    # 4. train, early stop, test

:func:`prepare` runs steps 1-2 with the package's cache layout: everything
derived from a dataset lives in ``<cache root>/<dataset tag>/``
(:func:`cache_dir`): ``item_feat.npy``, ``user_feat_<source>.npy`` (each
with a sidecar recording the hash of the encoded texts, so a file is reused
only when its inputs are unchanged) and ``generations.sqlite`` (generated
texts; an MMRec folder keeps its own store, so texts written by ``mllmrec
infer-preferences`` are reused).
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch_geometric.data import HeteroData

from mllmrec_pyg.config import DataConfig, GraphConfig, TextConfig
from mllmrec_pyg.data import load_mmrec, load_movielens, make_synthetic
from mllmrec_pyg.data.amazon import check_complete
from mllmrec_pyg.data.folder import STORE_FILE, has_item_texts, load_folder
from mllmrec_pyg.data.schema import INTERACTS, ITEM, USER, SchemaError
from mllmrec_pyg.encode import encode_texts, encode_to_file
from mllmrec_pyg.nn.base import RankingModel
from mllmrec_pyg.nn.registry import build_model
from mllmrec_pyg.reasoning import GenerationStore, generate_preferences, get_backend
from mllmrec_pyg.sampling import seed_everything
from mllmrec_pyg.train import TrainConfig, Trainer, TrainResult

log = logging.getLogger(__name__)

ITEM_FEATURES_FILE = "item_feat.npy"
ITEM_HEAD_FILE = "item_head_feat.npy"
#: words of an item's text that its head view keeps: the text starts with its identity
#: (an Amazon item's title, brand and category path; a film's title and genres), which
#: the whole text's vector dilutes with the long description that follows
HEAD_WORDS = 32


def head_texts(texts: list[str], words: int = HEAD_WORDS) -> list[str]:
    """The first ``words`` words of each text (the item text's head view)."""
    return [" ".join(t.split()[:words]) for t in texts]


# -- 1. data --------------------------------------------------------------------------------
def load_data(cfg: DataConfig) -> HeteroData:
    """The dataset named by ``cfg``, in the HeteroData contract (interactions, texts, features).

    Raises:
        FileNotFoundError: ``cfg.dataset`` is neither a known name nor a folder.
    """
    if cfg.dataset == "synthetic":
        sizes = {k: v for k, v in (("num_users", cfg.num_users), ("num_items", cfg.num_items)) if v}
        return make_synthetic(seed=cfg.seed, **sizes)
    if cfg.dataset == "movielens":
        return load_movielens(cfg.root, seed=cfg.seed)
    folder = Path(cfg.dataset)
    if not folder.exists():
        raise FileNotFoundError(
            f"dataset {cfg.dataset!r} is neither 'synthetic', 'movielens' nor an existing folder"
        )
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: is a file; give the MMRec folder that holds it")
    check_complete(folder)  # a folder prepare-amazon did not finish writing is refused
    # a folder written by `mllmrec prepare-amazon` has item texts, so preferences can be written
    return load_folder(folder) if has_item_texts(folder) else load_mmrec(folder)


def default_cache_root() -> Path:
    """``$MLLMREC_CACHE`` or ``./.cache/mllmrec``."""
    return Path(os.environ.get("MLLMREC_CACHE") or Path.cwd() / ".cache" / "mllmrec")


def cache_dir(cfg: DataConfig, root: str | os.PathLike | None = None) -> Path:
    """``<root>/<dataset tag>``: the cache folder of everything derived from one dataset."""
    return Path(root if root is not None else default_cache_root()) / cfg.tag()


def store_path(cfg: DataConfig, cache: Path) -> Path:
    """The generation store: an MMRec folder's own, else the dataset's cache folder's."""
    return Path(cfg.dataset) / STORE_FILE if cfg.is_folder else cache / STORE_FILE


# -- 2. text features -----------------------------------------------------------------------
def history_summary_texts(data: HeteroData, max_items: int = 10, max_chars: int = 160) -> list[str]:
    """A plain summary of each user's TRAINING items, used as preference text.

    No model is involved: the text lists the user's most recent training
    items (by ``time`` when present, else by edge order), each item's text
    cut to ``max_chars`` characters. Users without training items get ``""``.

    Args:
        data: HeteroData with ``data["item"].text`` and training ``edge_index``.
        max_items: most items listed per user.
        max_chars: characters kept of each item text.
    """
    texts = data[ITEM].get("text")
    if texts is None:
        raise SchemaError('history_summary_texts needs data["item"].text')
    store = data[INTERACTS]
    users, items = store.edge_index
    time = store.get("time")
    order = torch.arange(users.numel()) if time is None else time
    # newest first within each user
    perm = torch.argsort(order, descending=True, stable=True)
    perm = perm[torch.argsort(users[perm], stable=True)]
    num_users = data[USER].num_nodes
    lists: list[list[int]] = [[] for _ in range(num_users)]
    for u, i in zip(users[perm].tolist(), items[perm].tolist()):
        if len(lists[u]) < max_items:
            lists[u].append(i)
    out = []
    for listed in lists:
        parts = [" ".join(texts[i].split())[:max_chars] for i in listed]
        out.append(("Recently bought or watched: " + " | ".join(parts)) if parts else "")
    return out


def user_texts(
    data: HeteroData,
    text: TextConfig,
    store: str | os.PathLike | None = None,
    dataset_name: str = "",
    full_history: bool = False,
    show_progress: bool = True,
) -> tuple[list[str], str]:
    """One preference text per user; returns ``(texts, description of the source)``.

    Args:
        data: HeteroData with item text and training pairs.
        text: the user text source and the reasoning backend.
        store: SQLite generation store, so that generation resumes (``None``: in memory).
        dataset_name: recorded in the generation metadata.
        full_history: AUDIT ONLY: behaviour lists include valid and test items
            (the reference implementation's leak).
        show_progress: progress bars.
    """
    if text.user_text == "history":
        if full_history:
            raise ValueError("full_history applies to reasoning-stage preferences only")
        return history_summary_texts(data), "history_summary_texts (no language model)"
    backend = get_backend(text.backend, **text.backend_kwargs())
    gen_store = GenerationStore(store) if store is not None else None
    try:
        texts = generate_preferences(
            data,
            backend,
            dataset_name=dataset_name,
            store=gen_store,
            token_budget=text.token_budget,
            full_history=full_history,
            show_progress=show_progress,
        )
    finally:
        if gen_store is not None:
            gen_store.close()
    kind = "offline backend" if text.backend == "none" else "backend"
    return list(texts), f"reasoning stage, {kind} {text.backend!r} (generate_preferences)"


def add_features(
    data: HeteroData,
    text: TextConfig,
    cache: str | os.PathLike | None,
    *,
    users: bool = True,
    full_history: bool = False,
    store: str | os.PathLike | None = None,
    dataset_name: str = "",
    show_progress: bool = True,
) -> tuple[HeteroData, dict[str, Any]]:
    """A shallow copy of ``data`` with ``data["item"].x`` and (``users``) ``data["user"].x``.

    With item texts it also adds ``data["item"].x_head``, the vectors of each text's
    first :data:`HEAD_WORDS` words (read only by models that ask for it).

    Features already present (an MMRec folder's ``.npy`` files) are kept;
    missing ones are encoded from text with the sentence encoder and cached
    in ``cache``. User text is written from TRAINING interactions by
    :func:`user_texts`; with ``full_history`` (the leakage audit) user
    features are always regenerated from the leaky lists.

    Args:
        data: the dataset (not modified).
        text: text sources, backend and encoder.
        cache: the dataset's cache folder (:func:`cache_dir`); ``None`` caches nothing.
        users: also give users features.
        full_history: AUDIT ONLY, see :func:`user_texts`.
        store: the generation store (default ``<cache>/generations.sqlite``).
        dataset_name: recorded in the generation metadata.
        show_progress: progress bars.

    Returns:
        ``(data, info)``; ``info["user_text"]`` describes the user features' source.
    """
    data = copy.copy(data)
    cache = Path(cache) if cache is not None else None

    def encode(texts: list[str], name: str) -> torch.Tensor:
        if cache is None:
            return encode_texts(texts, text.encoder, show_progress=show_progress)
        return encode_to_file(texts, cache / name, text.encoder, show_progress=show_progress)

    item_text = data[ITEM].get("text")
    if data[ITEM].get("x") is None:
        if item_text is None:
            raise SchemaError('no item features and no data["item"].text to encode')
        data[ITEM].x = encode(list(item_text), ITEM_FEATURES_FILE)
    if item_text is not None and data[ITEM].get("x_head") is None:
        # the head view: read only by models that declare the need "item_head"
        data[ITEM].x_head = encode(head_texts(list(item_text)), ITEM_HEAD_FILE)
    info: dict[str, Any] = {}
    if not users:
        return data, info
    if data[USER].get("x") is not None and not full_history:
        info["user_text"] = "given user features"
        return data, info
    if item_text is None:
        raise SchemaError(
            "no user features and no item text to derive preference text from; provide "
            "user_preferences_feat.npy or use the ID-embedding variant (w/o RS, --no-user-features)"
        )
    if store is None and cache is not None:
        store = cache / STORE_FILE
    texts, info["user_text"] = user_texts(
        data, text, store, dataset_name, full_history, show_progress
    )
    data[USER].text = texts
    data[USER].x = encode(texts, f"user_feat_{text.user_source(full_history)}.npy")
    return data, info


def prepare(
    data_cfg: DataConfig,
    text: TextConfig,
    cache_root: str | os.PathLike | None = None,
    *,
    users: bool = True,
    full_history: bool = False,
    raw: HeteroData | None = None,
    show_progress: bool = True,
) -> tuple[HeteroData, dict[str, Any]]:
    """Steps 1-2: load ``data_cfg`` (or take ``raw``) and add features, with the cache layout.

    Returns:
        ``(data, info)`` as :func:`add_features`.
    """
    data = raw if raw is not None else load_data(data_cfg)
    cache = cache_dir(data_cfg, cache_root)
    return add_features(
        data,
        text,
        cache,
        users=users,
        full_history=full_history,
        store=store_path(data_cfg, cache),
        dataset_name=data_cfg.tag(),
        show_progress=show_progress,
    )


# -- 3. item graph --------------------------------------------------------------------------
def build_graph(data: HeteroData, graph: GraphConfig) -> HeteroData:
    """A shallow copy of ``data`` with the refined item-item graph ``S*`` of ``graph``."""
    return graph.transform()(copy.copy(data))


def cached_graph(
    graphs: dict[GraphConfig, HeteroData], data: HeteroData, graph: GraphConfig
) -> HeteroData:
    """:func:`build_graph` of ``graph``, built once per recipe and kept in ``graphs``."""
    if graph not in graphs:
        graphs[graph] = build_graph(data, graph)
    return graphs[graph]


# -- 4. training ----------------------------------------------------------------------------
def train_model(
    name: str,
    data: HeteroData,
    train: TrainConfig,
    values: dict[str, Any] | None = None,
) -> tuple[RankingModel, TrainResult]:
    """Seed, build model ``name`` on ``data`` with config ``values``, train and evaluate it."""
    seed_everything(train.seed)
    model = build_model(name, data, **dict(values or {}))
    return model, Trainer(model, data, train).fit()


__all__ = [
    "add_features",
    "build_graph",
    "cache_dir",
    "cached_graph",
    "default_cache_root",
    "head_texts",
    "history_summary_texts",
    "load_data",
    "prepare",
    "store_path",
    "train_model",
    "user_texts",
]
