"""Flags shared by the sub-commands, read from the config dataclasses.

Every flag that sets a config field is declared with :func:`option`: its
argparse default is ``None`` ("not given") and its help shows the field's
default, read from the dataclass. A config is built from the flags that were
given (:func:`build`), so each default lives in its dataclass only.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

from mllmrec_pyg.config import (
    NAMED_DATASETS,
    USER_TEXT_SOURCES,
    DataConfig,
    GraphConfig,
    TextConfig,
    default_of,
)
from mllmrec_pyg.fields import FieldError, key_value
from mllmrec_pyg.metrics import DEFAULT_KS
from mllmrec_pyg.train import TrainConfig, check_device, fit_cutoffs


class CommandError(Exception):
    """A mistake in the command line: reported as one line, exit status 2."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after a flag's help unless the help states it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == []
        if "default" in text or unset or action.default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


def add_key_values(g: Any, flag: str, metavar: str, help: str) -> None:
    """A repeatable ``KEY=VALUE`` flag of group ``g`` (:func:`key_value`), collected in a list."""
    g.add_argument(flag, type=key_value, action="append", default=[], metavar=metavar, help=help)


def option(group: Any, cls: type, name: str, help: str, flag: str | None = None, **kw: Any) -> None:
    """Add the flag of field ``name`` of ``cls`` (``--name-with-dashes`` unless ``flag``);
    its argparse default is ``None`` and its help ends with the field's default."""
    default = default_of(cls, name)
    shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
    shown = "unset" if shown is None else shown
    flag = flag or "--" + name.replace("_", "-")
    kw.setdefault("dest", name)
    group.add_argument(flag, default=None, help=f"{help} (default: {shown})", **kw)


def build(cls: type, args: argparse.Namespace, **fixed: Any) -> Any:
    """``cls`` from the fields whose flags were given (``fixed`` wins); errors as :class:`CommandError`."""
    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)
        if f.name not in fixed and getattr(args, f.name, None) is not None
    }
    try:
        return cls(**values, **fixed)
    except FieldError as err:  # name the flag of the field (``--name-with-dashes``)
        raise CommandError(f"{err} (--{err.field.replace('_', '-')})") from None
    except (TypeError, ValueError) as err:
        raise CommandError(str(err)) from None


def add_data_arguments(parser: argparse.ArgumentParser, training_seed: bool = False) -> None:
    """The dataset, the MovieLens folder, the split seed and the synthetic sizes.

    With ``training_seed`` (``mllmrec train``) ``--dataset`` names a dataset or
    ``--data-dir`` a folder, and ``--seed`` seeds the split AND training;
    otherwise (``mllmrec experiment``) ``--dataset`` takes either, ``--data-seed``
    seeds the split and ``--seeds`` the training runs.
    """
    g = parser.add_argument_group("data")
    if training_seed:
        src = g.add_mutually_exclusive_group(required=True)
        src.add_argument("--dataset", choices=NAMED_DATASETS, help="a named dataset")
        src.add_argument("--data-dir", help="an MMRec-format folder (<name>.inter + .npy)")
        g.add_argument("--seed", type=int, default=0, help="seeds the split, init and sampling")
    else:
        option(g, DataConfig, "dataset", "'synthetic', 'movielens' or an MMRec folder")
        option(g, DataConfig, "seed", "catalog and split seed", "--data-seed", dest="data_seed")
    g.add_argument(
        "--root",
        "--movielens-root",
        help="MovieLens folder, ml-latest-small layout (default: $MLLMREC_MOVIELENS or the "
        "shared copy)",
    )
    option(g, DataConfig, "num_users", "synthetic catalog: users before 5-core", type=int)
    option(g, DataConfig, "num_items", "synthetic catalog: items before 5-core", type=int)


def data_config(args: argparse.Namespace) -> DataConfig:
    fixed: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        fixed["dataset"] = args.data_dir
    if getattr(args, "data_seed", None) is not None:
        fixed["seed"] = args.data_seed
    return build(DataConfig, args, **fixed)


def add_stage_arguments(parser: argparse.ArgumentParser) -> None:
    """The training, item-graph and text flags, in this order (after the data flags)."""
    g = parser.add_argument_group("training (the paper's protocol)")
    option(g, TrainConfig, "lr", "Adam learning rate", type=float)
    option(g, TrainConfig, "batch_size", "positive pairs per step", type=int)
    option(g, TrainConfig, "epochs", "epoch cap", type=int)
    option(g, TrainConfig, "patience", "early-stopping patience (epochs)", type=int)
    ks_help = "metric cut-offs (those above the item count are dropped)"
    option(g, TrainConfig, "ks", ks_help, type=int, nargs="+")
    option(g, TrainConfig, "eval_block_size", "users ranked at once", type=int)
    g.add_argument(
        "--mask-valid-at-test", action="store_true", help="also mask valid items when testing"
    )
    option(g, TrainConfig, "device", "where models train")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")

    g = parser.add_argument_group("refined item-item graph")
    option(g, GraphConfig, "k_s", "semantic top-K", type=int)
    option(g, GraphConfig, "alpha", "similarity threshold", type=float)
    option(g, GraphConfig, "k_c", "co-occurrence top-K", type=int)
    option(g, GraphConfig, "knn_backend", "semantic top-K search: auto, torch, ivfjoin, ivf, hnsw")
    g.add_argument("--no-threshold", action="store_true", help="w/o GD: plain top-K")
    g.add_argument("--no-cooccurrence", action="store_true", help="w/o TE: no co-occurrence graph")
    g.add_argument(
        "--no-self-loop", action="store_true", help="exclude the item from its own semantic top-K"
    )

    g = parser.add_argument_group("item and user text")
    option(g, TextConfig, "user_text", "preference text source", choices=USER_TEXT_SOURCES)
    option(g, TextConfig, "backend", "reasoning backend for preferences")
    option(g, TextConfig, "backend_model", "model path or name for the backend")
    option(g, TextConfig, "backend_url", "server URL (openai backend)")
    add_key_values(
        g,
        "--backend-option",
        "KEY=VALUE",
        "further backend setting (repeatable), e.g. repetition_penalty=1.2",
    )
    option(g, TextConfig, "token_budget", "Prompt 2 token budget", type=int)
    option(g, TextConfig, "encoder", "sentence-transformers folder (none: bundled MiniLM)")
    g.add_argument(
        "--cache-dir",
        "--cache",
        help="cache root; a dataset's features and texts go to <root>/<dataset tag>/ "
        "(default: $MLLMREC_CACHE or ./.cache/mllmrec)",
    )


def text_config(args: argparse.Namespace) -> TextConfig:
    return build(TextConfig, args, backend_options=tuple(sorted(dict(args.backend_option).items())))


def graph_config(args: argparse.Namespace) -> GraphConfig:
    fixed: dict[str, Any] = {}
    if args.no_threshold:
        if args.alpha is not None:
            raise CommandError("--alpha and --no-threshold exclude each other")
        fixed["alpha"] = None
    if args.no_cooccurrence:
        fixed["cooccurrence"] = False
    if args.no_self_loop:
        fixed["loop"] = False
    return build(GraphConfig, args, **fixed)


def train_config(args: argparse.Namespace, num_items: int) -> TrainConfig:
    """:class:`TrainConfig` from the flags, with the cut-offs fitted to ``num_items`` items."""
    try:
        ks, monitor = fit_cutoffs(num_items, args.ks)
    except FieldError as err:
        raise CommandError(f"{err} (--ks)") from None
    except ValueError as err:
        raise CommandError(str(err)) from None
    fixed: dict[str, Any] = {"ks": ks, "monitor": monitor}
    if args.mask_valid_at_test:
        fixed["mask_valid_at_test"] = True
    if args.no_progress:
        fixed["show_progress"] = False
    if getattr(args, "checkpoint_dir", None):
        fixed["checkpoint_dir"] = str(args.checkpoint_dir)
        fixed["resume"] = not args.restart
    return build(TrainConfig, args, **fixed)


def check_train_arguments(args: argparse.Namespace) -> None:
    """Check the training flags before any work (the catalog size is not known yet)."""
    cfg = train_config(args, num_items=max(args.ks or DEFAULT_KS))
    try:
        check_device(cfg.device)
    except ValueError as err:
        raise CommandError(f"{err} (--device)") from None


def check_writable(path: str | os.PathLike, flag: str, folder: bool = False) -> Path:
    """Refuse, before any work, an output path that cannot be written.

    The path must not be a folder (a file when ``folder``), and its nearest
    existing ancestor must be a folder this process may write in; nothing is
    created.

    Raises:
        CommandError: naming ``flag``, the path and the part at fault.
    """
    path = Path(path)
    kind = "folder" if folder else "file"
    if path.exists() and path.is_dir() != folder:
        found = "a folder" if path.is_dir() else "a file"
        raise CommandError(f"{flag} {path}: is {found}, expected a {kind} path")
    parent = path if folder and path.exists() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise CommandError(f"{flag} {path}: {parent} is a file, so no {kind} can be made under it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CommandError(f"{flag} {path}: {parent} is not writable")
    return path


__all__ = [
    "CommandError",
    "HelpFormatter",
    "add_key_values",
    "add_data_arguments",
    "add_stage_arguments",
    "build",
    "check_train_arguments",
    "check_writable",
    "data_config",
    "graph_config",
    "key_value",
    "option",
    "text_config",
    "train_config",
]
