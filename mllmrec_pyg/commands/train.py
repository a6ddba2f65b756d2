"""``mllmrec train``: train and evaluate MLLMRec or a baseline on one dataset.

The helpers here are the whole pipeline in order, reused by
``examples/train_baby.py``:

1. :func:`load_dataset` -- an MMRec folder, MovieLens or the synthetic catalog;
2. :func:`add_text_features` -- item text and user preference text encoded
   with the sentence encoder (cached on disk, reused when unchanged);
3. :func:`build_item_graph` -- ThresholdKNN + JaccardCoOccurrence + MergeGraphs;
4. :func:`run` -- build the model, train with early stopping, evaluate.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from torch_geometric.data import HeteroData

    from mllmrec_pyg.nn.base import RankingModel
    from mllmrec_pyg.train import TrainConfig, TrainResult

log = logging.getLogger(__name__)

MODEL_CHOICES = ("mllmrec", "bpr", "lightgcn", "pop", "freedom")
TABLE_METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")


def default_cache_dir() -> Path:
    """``$MLLMREC_CACHE`` or ``./.cache/mllmrec`` (encoded features, generated text)."""
    return Path(os.environ.get("MLLMREC_CACHE", Path.cwd() / ".cache" / "mllmrec"))


# -- 1. data -----------------------------------------------------------------------------
def load_dataset(
    dataset: str | None = None,
    root: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    synthetic: Mapping[str, Any] | None = None,
) -> HeteroData:
    """Load one dataset into the HeteroData contract.

    Args:
        dataset: ``"synthetic"`` or ``"movielens"`` (ignored when ``data_dir``
            is given).
        root: MovieLens folder (default :func:`mllmrec_pyg.paths.movielens_root`).
        data_dir: an MMRec-format folder.
        seed: seed of the synthetic catalog and of the MovieLens split.
        synthetic: overrides of :class:`~mllmrec_pyg.data.synthetic.SyntheticConfig`.
    """
    from mllmrec_pyg.data import load_mmrec, load_movielens, make_synthetic

    if data_dir is not None:
        return load_mmrec(data_dir)
    if dataset == "synthetic":
        return make_synthetic(seed=seed, **dict(synthetic or {}))
    if dataset == "movielens":
        return load_movielens(root, seed=seed)
    raise ValueError(f"unknown dataset {dataset!r}: use 'synthetic', 'movielens' or a data_dir")


def dataset_label(data: HeteroData, data_dir: str | os.PathLike | None = None) -> str:
    """A short name for results: the MMRec folder's name or ``data.name``."""
    if data_dir is not None:
        return Path(data_dir).name
    return str(getattr(data, "name", None) or "data")


# -- 2. text features ------------------------------------------------------------------------
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
    import torch

    from mllmrec_pyg.data.schema import INTERACTS, ITEM, USER, SchemaError

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
    for u in range(num_users):
        if not lists[u]:
            out.append("")
            continue
        parts = [" ".join(texts[i].split())[:max_chars] for i in lists[u]]
        out.append("Recently bought or watched: " + " | ".join(parts))
    return out


def user_preference_texts(
    data: HeteroData,
    source: str = "preferences",
    dataset_name: str = "",
    store_path: str | os.PathLike | None = None,
    show_progress: bool = True,
) -> tuple[list[str], str]:
    """One preference text per user from training interactions; returns ``(texts, source used)``.

    Args:
        data: HeteroData with item text and training pairs.
        source: ``"preferences"`` -- the reasoning stage's Prompt 2 answered by
            its offline ``none`` backend (falls back to ``"history"`` if the
            reasoning stage is not importable); ``"history"`` --
            :func:`history_summary_texts`.
        dataset_name: passed to the reasoning stage.
        store_path: SQLite generation store, so that generation resumes.
        show_progress: progress bars.
    """
    if source == "preferences":
        try:
            from mllmrec_pyg.reasoning import GenerationStore, generate_preferences, get_backend
        except ImportError as err:
            log.warning("reasoning stage unavailable (%s); using history_summary_texts", err)
            source = "history"
        else:
            store = GenerationStore(store_path) if store_path is not None else None
            try:
                texts = generate_preferences(
                    data,
                    get_backend("none"),
                    dataset_name=dataset_name,
                    store=store,
                    show_progress=show_progress,
                )
            finally:
                if store is not None:
                    store.close()
            return list(texts), "reasoning stage, offline backend 'none' (generate_preferences)"
    if source == "history":
        return history_summary_texts(data), "history_summary_texts (no language model)"
    raise ValueError(f"unknown user text source {source!r}: use 'preferences' or 'history'")


def add_text_features(
    data: HeteroData,
    cache_dir: str | os.PathLike | None = None,
    user_text: str = "preferences",
    dataset_name: str = "",
    encoder: str | None = None,
    show_progress: bool = True,
    users: bool = True,
) -> tuple[HeteroData, str]:
    """Fill ``data["item"].x`` and ``data["user"].x`` where missing, from text.

    Item features encode ``data["item"].text``; user features encode the
    preference texts of :func:`user_preference_texts`. Encoded matrices and
    generated texts are cached under ``cache_dir`` and reused when the
    inputs are unchanged. Features already present (e.g. from an MMRec
    folder) are kept.

    Args:
        data: the dataset (modified in place).
        cache_dir: cache folder; ``None`` caches nothing.
        user_text: ``"preferences"`` or ``"history"`` (see :func:`user_preference_texts`).
        dataset_name: passed to the reasoning stage.
        encoder: sentence-transformers folder; default the bundled MiniLM.
        show_progress: progress bars.
        users: also fill ``data["user"].x``.

    Returns:
        ``(data, description of the user text source)``.
    """
    from mllmrec_pyg.data.schema import ITEM, USER, SchemaError
    from mllmrec_pyg.encode import encode_texts, encode_to_file

    cache = Path(cache_dir) if cache_dir is not None else None

    def encode(texts: list[str], name: str):
        if cache is None:
            return encode_texts(texts, encoder, show_progress=show_progress)
        return encode_to_file(texts, cache / name, encoder, show_progress=show_progress)

    if data[ITEM].get("x") is None:
        texts = data[ITEM].get("text")
        if texts is None:
            raise SchemaError('no item features and no data["item"].text to encode')
        data[ITEM].x = encode(list(texts), "item_text_feat.npy")
    source = "given user features" if data[USER].get("x") is not None else "none"
    if users and data[USER].get("x") is None:
        if data[ITEM].get("text") is None:
            raise SchemaError(
                "no user features and no item text to derive preference text from; provide "
                "user_preferences_feat.npy or use the ID-embedding variant (w/o RS)"
            )
        store = cache / "generations.sqlite" if cache is not None else None
        texts, source = user_preference_texts(
            data, user_text, dataset_name, store, show_progress=show_progress
        )
        data[USER].text = texts
        data[USER].x = encode(texts, f"user_{user_text}_feat.npy")
    return data, source


# -- 3. item graph ----------------------------------------------------------------------------
def build_item_graph(
    data: HeteroData,
    k_s: int = 10,
    alpha: float | None = 0.7,
    k_c: int = 10,
    cooccurrence: bool = True,
    loop: bool = True,
) -> HeteroData:
    """The refined item-item graph ``S*`` as ``data["item", "related", "item"]``.

    Args:
        data: HeteroData with ``data["item"].x`` and training pairs.
        k_s: semantic top-K (the item itself is one of them with ``loop``).
        alpha: similarity threshold; ``None`` keeps plain top-K (*w/o GD*).
        k_c: co-occurrence top-K.
        cooccurrence: ``False`` drops the co-occurrence graph (*w/o TE*).
        loop: keep the self-loop of the semantic graph.
    """
    from mllmrec_pyg.transforms import JaccardCoOccurrence, MergeGraphs, ThresholdKNN

    data = ThresholdKNN(k=k_s, threshold=alpha, loop=loop)(data)
    relations: tuple[str, ...] = ("semantic",)
    if cooccurrence:
        data = JaccardCoOccurrence(k=k_c)(data)
        relations = ("semantic", "cooccurs")
    return MergeGraphs(relations=relations)(data)


# -- 4. training -----------------------------------------------------------------------------
def run(
    model_name: str,
    data: HeteroData,
    train_config: TrainConfig,
    model_values: Mapping[str, Any] | None = None,
) -> tuple[RankingModel, TrainResult]:
    """Seed, build ``model_name`` on ``data``, train and evaluate it."""
    from mllmrec_pyg.nn.registry import build_model
    from mllmrec_pyg.train import Trainer, seed_everything

    seed_everything(train_config.seed)
    model = build_model(model_name, data, **dict(model_values or {}))
    result = Trainer(model, data, train_config).fit()
    return model, result


def results_table(
    rows: Sequence[tuple[str, TrainResult]], metrics: Sequence[str] = TABLE_METRICS
) -> str:
    """A fixed-width table of valid/test metrics, epochs and seconds, one row per model."""
    head = ["model"] + [f"valid {m}" for m in metrics] + [f"test {m}" for m in metrics]
    head += ["best ep", "epochs", "seconds"]
    lines = []
    for name, r in rows:
        vals = [f"{r.valid[m]:.4f}" for m in metrics] + [f"{r.test[m]:.4f}" for m in metrics]
        lines.append([name, *vals, str(r.best_epoch), str(r.epochs), f"{r.seconds:.1f}"])
    widths = [max(len(h), *(len(row[j]) for row in lines)) for j, h in enumerate(head)]
    fmt = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(cells, widths))
    )
    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *(fmt(r) for r in lines)])


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as JSON atomically (tmp file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


# -- command line ----------------------------------------------------------------------------
def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command."""
    p = subparsers.add_parser(
        "train",
        help="train and evaluate MLLMRec or a baseline",
        description="Train with BPR and early stopping on valid Recall@20; report valid and "
        "test metrics at the best epoch (full ranking, training items masked).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", choices=MODEL_CHOICES, default="mllmrec")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data-dir", type=Path, help="an MMRec-format folder (<name>.inter + .npy)")
    src.add_argument("--dataset", choices=("synthetic", "movielens"))
    p.add_argument("--root", type=Path, help="MovieLens folder (ml-latest-small layout)")
    p.add_argument("--seed", type=int, default=0, help="seeds data split, init, sampling")

    g = p.add_argument_group("optimisation (the paper's settings)")
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--batch-size", type=int, default=2048)
    g.add_argument("--epochs", type=int, default=1000, help="epoch cap")
    g.add_argument("--patience", type=int, default=20, help="early-stopping patience")
    g.add_argument("--eval-block-size", type=int, default=1024, help="users ranked at once")
    g.add_argument(
        "--mask-valid-at-test",
        action="store_true",
        help="also mask validation items when ranking for test",
    )
    g.add_argument("--device", default="cpu")

    g = p.add_argument_group("MLLMRec and its variants")
    g.add_argument("--hidden-dim", type=int, default=256, help="d_1")
    g.add_argument("--embedding-dim", type=int, default=64, help="d (also for BPR/LightGCN)")
    g.add_argument("--item-layers", type=int, default=1, help="L, item-item GCN depth")
    g.add_argument("--k-s", type=int, default=10, help="semantic top-K")
    g.add_argument("--alpha", type=float, default=0.7, help="similarity threshold")
    g.add_argument("--k-c", type=int, default=10, help="co-occurrence top-K")
    g.add_argument("--no-threshold", action="store_true", help="w/o GD: plain top-K")
    g.add_argument("--no-cooccurrence", action="store_true", help="w/o TE")
    g.add_argument("--no-item-conv", action="store_true", help="w/o GCN_II")
    g.add_argument(
        "--no-user-features", action="store_true", help="w/o RS: trainable user ID embeddings"
    )
    g.add_argument("--ui-layers", type=int, default=0, help="w/ GCN_UI depth (paper: 2)")
    g.add_argument(
        "--no-self-loop",
        action="store_true",
        help="exclude the item itself from its semantic top-K",
    )
    g.add_argument(
        "--user-text",
        choices=("preferences", "history"),
        default="preferences",
        help="user text: reasoning-stage preferences (offline backend) or a plain history summary",
    )
    g.add_argument("--encoder", help="sentence-transformers folder (default: bundled MiniLM)")
    g.add_argument("--cache-dir", type=Path, help="feature/text cache (default ./.cache/mllmrec)")

    g = p.add_argument_group("baselines")
    g.add_argument("--reg-weight", type=float, default=1e-4, help="BPR / LightGCN L2 weight")
    g.add_argument("--num-layers", type=int, default=2, help="LightGCN / FREEDOM user-item depth")

    g = p.add_argument_group("FREEDOM (its kNN graph uses --k-s neighbours)")
    g.add_argument(
        "--refined-graph",
        action="store_true",
        help="FREEDOM reads the refined graph (ThresholdKNN + JaccardCoOccurrence + "
        "MergeGraphs, set by the MLLMRec graph flags) instead of its own kNN graph",
    )
    g.add_argument("--edge-dropout", type=float, default=0.8, help="user-item edges pruned")
    g.add_argument("--freedom-reg", type=float, default=1e-4, help="modality BPR weight")

    g = p.add_argument_group("output")
    g.add_argument("--json", type=Path, help="write the results here")
    g.add_argument("--checkpoint", type=Path, help="save the best model here (.pt)")
    g.add_argument(
        "--checkpoint-dir",
        type=Path,
        help="keep a resumable training state here (resumes if present)",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=main)


def model_values(args: argparse.Namespace) -> dict[str, Any]:
    """The model config fields chosen on the command line."""
    if args.model == "mllmrec":
        return {
            "hidden_dim": args.hidden_dim,
            "embedding_dim": args.embedding_dim,
            "num_item_layers": args.item_layers,
            "item_conv": not args.no_item_conv,
            "use_user_features": not args.no_user_features,
            "ui_layers": args.ui_layers,
        }
    if args.model == "bpr":
        return {"embedding_dim": args.embedding_dim, "reg_weight": args.reg_weight}
    if args.model == "lightgcn":
        return {
            "embedding_dim": args.embedding_dim,
            "num_layers": args.num_layers,
            "reg_weight": args.reg_weight,
        }
    if args.model == "freedom":
        from mllmrec_pyg.data.schema import RELATED

        return {
            "embedding_dim": args.embedding_dim,
            "num_ui_layers": args.num_layers,
            "knn_k": args.k_s,
            "dropout": args.edge_dropout,
            "reg_weight": args.freedom_reg,
            "seed": args.seed,
            "item_graph": RELATED if args.refined_graph else None,
        }
    return {}


def main(args: argparse.Namespace) -> int:
    from mllmrec_pyg.train import TrainConfig, save_checkpoint

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    show = not args.no_progress
    data = load_dataset(args.dataset, args.root, args.data_dir, seed=args.seed)
    name = dataset_label(data, args.data_dir)
    info: dict[str, Any] = {}
    if args.refined_graph and args.model != "freedom":
        raise SystemExit("--refined-graph applies to --model freedom only")
    if args.model in ("mllmrec", "freedom"):
        from mllmrec_pyg.data.schema import ITEM, USER, SchemaError

        needs_users = args.model == "mllmrec" and not args.no_user_features
        if args.data_dir is not None and data[ITEM].get("text") is None:
            if data[ITEM].get("x") is None:
                raise SchemaError(f"{args.data_dir}: no item feature file for {args.model}")
            if needs_users and data[USER].get("x") is None:
                raise SchemaError(
                    f"{args.data_dir}: no user_preferences_feat.npy; generate preferences "
                    "first or pass --no-user-features (the w/o RS variant)"
                )
        cache = args.cache_dir or default_cache_dir() / name
        data, source = add_text_features(
            data,
            cache,
            args.user_text,
            dataset_name=name,
            encoder=args.encoder,
            show_progress=show,
            users=needs_users,
        )
        if needs_users:
            info["user_text"] = source
        wants_graph = not args.no_item_conv if args.model == "mllmrec" else args.refined_graph
        if wants_graph:
            data = build_item_graph(
                data,
                args.k_s,
                None if args.no_threshold else args.alpha,
                args.k_c,
                cooccurrence=not args.no_cooccurrence,
                loop=not args.no_self_loop,
            )
            info["item_graph"] = {
                "k_s": args.k_s,
                "alpha": None if args.no_threshold else args.alpha,
                "k_c": None if args.no_cooccurrence else args.k_c,
                "loop": not args.no_self_loop,
            }
    cfg = TrainConfig(
        lr=args.lr,
        batch_size=args.batch_size,
        epochs=args.epochs,
        patience=args.patience,
        seed=args.seed,
        eval_block_size=args.eval_block_size,
        mask_valid_at_test=args.mask_valid_at_test,
        device=args.device,
        checkpoint_dir=str(args.checkpoint_dir) if args.checkpoint_dir else None,
        show_progress=show,
    )
    values = model_values(args)
    model, result = run(args.model, data, cfg, values)
    print(results_table([(args.model, result)]))
    if "user_text" in info:
        print(f"user text: {info['user_text']}")
    if args.json:
        out = result.to_json(model=args.model, dataset=name)
        out["config"] = {
            "model": model.config_dict(),
            "train": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "show_progress"},
            **info,
        }
        write_json(out, args.json)
        log.info("wrote %s", args.json)
    if args.checkpoint:
        save_checkpoint(
            model,
            args.checkpoint,
            data,
            valid=result.valid,
            test=result.test,
            best_epoch=result.best_epoch,
        )
        log.info("saved the best model to %s", args.checkpoint)
    return 0
