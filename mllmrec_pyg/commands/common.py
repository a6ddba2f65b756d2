"""Flags shared by the sub-commands, read from the config dataclasses.

Every flag that sets a config field is declared with :func:`option`: its
argparse default is ``None`` ("not given") and its help shows the field's
default, read from the dataclass. A config is built from the flags that were
given (:func:`build`), so each default lives in its dataclass only.
"""

from __future__ import annotations

import argparse
import ast
from typing import Any

from mllmrec_pyg.config import (
    NAMED_DATASETS,
    USER_TEXT_SOURCES,
    DataConfig,
    GraphConfig,
    TextConfig,
    default_of,
)
from mllmrec_pyg.metrics import DEFAULT_KS
from mllmrec_pyg.train import TrainConfig, fit_cutoffs


class CommandError(Exception):
    """A mistake in the command line: reported as one line, exit status 2."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after a flag's help unless the help states it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def key_value(text: str) -> tuple[str, Any]:
    """``key=value`` with a Python-literal value (``ast.literal_eval``), else the raw string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key, value


def option(group: Any, flag: str, cls: type, name: str, help: str, **kwargs: Any) -> None:
    """Add ``flag`` for field ``name`` of ``cls``; its help ends with the field's default."""
    default = default_of(cls, name)
    shown = "none" if default is None else default
    if isinstance(default, tuple):
        shown = " ".join(map(str, default))
    dest = kwargs.pop("dest", name)
    group.add_argument(flag, dest=dest, default=None, help=f"{help} (default: {shown})", **kwargs)


def build(cls: type, args: argparse.Namespace, fields: dict[str, str], **fixed: Any) -> Any:
    """``cls`` from the given flags: ``fields`` maps config field -> ``args`` attribute."""
    values = {f: getattr(args, a) for f, a in fields.items() if getattr(args, a, None) is not None}
    values.update(fixed)
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise CommandError(str(err)) from None


# -- data -----------------------------------------------------------------------------------
def add_data_arguments(parser: argparse.ArgumentParser, training_seed: bool = False) -> None:
    """``--dataset``/``--data-dir``, ``--root``, the split seed and the synthetic sizes.

    Args:
        parser: the sub-command's parser.
        training_seed: ``--seed`` seeds the split AND training (``mllmrec
            train``); otherwise ``--data-seed`` seeds the split and ``--seeds``
            the training runs (``mllmrec experiment``).
    """
    g = parser.add_argument_group("data")
    if training_seed:
        src = g.add_mutually_exclusive_group(required=True)
        src.add_argument("--dataset", choices=NAMED_DATASETS, help="a named dataset")
        src.add_argument("--data-dir", help="an MMRec-format folder (<name>.inter + .npy)")
        g.add_argument(
            "--seed", type=int, default=0, help="seeds the split, init and sampling (default: 0)"
        )
    else:
        g.add_argument(
            "--dataset",
            default="synthetic",
            help="'synthetic', 'movielens' or the path of an MMRec-format folder "
            "(default: synthetic)",
        )
        option(
            g,
            "--data-seed",
            DataConfig,
            "seed",
            "catalog and split seed",
            type=int,
            dest="data_seed",
        )
    g.add_argument(
        "--root",
        "--movielens-root",
        dest="root",
        help="MovieLens folder, ml-latest-small layout (default: $MLLMREC_MOVIELENS or the "
        "shared copy)",
    )
    option(
        g,
        "--num-users",
        DataConfig,
        "num_users",
        "synthetic catalog: users before 5-core",
        type=int,
    )
    option(
        g,
        "--num-items",
        DataConfig,
        "num_items",
        "synthetic catalog: items before 5-core",
        type=int,
    )


def data_config(args: argparse.Namespace) -> DataConfig:
    dataset = getattr(args, "data_dir", None) or args.dataset
    seed = args.seed if hasattr(args, "data_dir") else args.data_seed
    return build(
        DataConfig,
        args,
        {"root": "root", "num_users": "num_users", "num_items": "num_items"},
        dataset=dataset,
        **({"seed": seed} if seed is not None else {}),
    )


# -- text -----------------------------------------------------------------------------------
def add_text_arguments(parser: argparse.ArgumentParser) -> None:
    """User text source, reasoning backend, encoder, cache."""
    g = parser.add_argument_group("item and user text")
    option(
        g,
        "--user-text",
        TextConfig,
        "user_text",
        "preference text source",
        choices=USER_TEXT_SOURCES,
    )
    option(g, "--backend", TextConfig, "backend", "reasoning backend for preferences")
    option(g, "--backend-model", TextConfig, "backend_model", "model path or name for the backend")
    option(g, "--backend-url", TextConfig, "backend_url", "server URL (openai backend)")
    g.add_argument(
        "--backend-option",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="further backend setting (repeatable), e.g. repetition_penalty=1.2",
    )
    option(g, "--token-budget", TextConfig, "token_budget", "Prompt 2 token budget", type=int)
    option(
        g, "--encoder", TextConfig, "encoder", "sentence-transformers folder (none: bundled MiniLM)"
    )
    g.add_argument(
        "--cache-dir",
        "--cache",
        dest="cache_dir",
        help="cache root; a dataset's features and texts go to <root>/<dataset tag>/ "
        "(default: $MLLMREC_CACHE or ./.cache/mllmrec)",
    )


def text_config(args: argparse.Namespace) -> TextConfig:
    return build(
        TextConfig,
        args,
        {
            "user_text": "user_text",
            "backend": "backend",
            "backend_model": "backend_model",
            "backend_url": "backend_url",
            "token_budget": "token_budget",
            "encoder": "encoder",
        },
        backend_options=tuple(sorted(dict(args.backend_option).items())),
    )


# -- item graph -----------------------------------------------------------------------------
def add_graph_arguments(parser: argparse.ArgumentParser) -> None:
    """The refined item-item graph S*."""
    g = parser.add_argument_group("refined item-item graph")
    option(g, "--k-s", GraphConfig, "k_s", "semantic top-K", type=int)
    option(g, "--alpha", GraphConfig, "alpha", "similarity threshold", type=float)
    option(g, "--k-c", GraphConfig, "k_c", "co-occurrence top-K", type=int)
    g.add_argument("--no-threshold", action="store_true", help="w/o GD: plain top-K")
    g.add_argument("--no-cooccurrence", action="store_true", help="w/o TE: no co-occurrence graph")
    g.add_argument(
        "--no-self-loop", action="store_true", help="exclude the item from its own semantic top-K"
    )


def graph_config(args: argparse.Namespace) -> GraphConfig:
    fixed: dict[str, Any] = {}
    if getattr(args, "no_threshold", False):
        if args.alpha is not None:
            raise CommandError("--alpha and --no-threshold exclude each other")
        fixed["alpha"] = None
    if getattr(args, "no_cooccurrence", False):
        fixed["cooccurrence"] = False
    if getattr(args, "no_self_loop", False):
        fixed["loop"] = False
    return build(GraphConfig, args, {"k_s": "k_s", "alpha": "alpha", "k_c": "k_c"}, **fixed)


# -- training -------------------------------------------------------------------------------
def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Optimisation, early stopping, evaluation."""
    g = parser.add_argument_group("training (the paper's protocol)")
    option(g, "--lr", TrainConfig, "lr", "Adam learning rate", type=float)
    option(g, "--batch-size", TrainConfig, "batch_size", "positive pairs per step", type=int)
    option(g, "--epochs", TrainConfig, "epochs", "epoch cap", type=int)
    option(g, "--patience", TrainConfig, "patience", "early-stopping patience (epochs)", type=int)
    option(
        g,
        "--ks",
        TrainConfig,
        "ks",
        "metric cut-offs; those above the number of items are dropped",
        type=int,
        nargs="+",
    )
    option(g, "--eval-block-size", TrainConfig, "eval_block_size", "users ranked at once", type=int)
    g.add_argument(
        "--mask-valid-at-test",
        action="store_true",
        help="also mask validation items when ranking for test",
    )
    option(g, "--device", TrainConfig, "device", "where models train")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def train_config(args: argparse.Namespace, num_items: int, **fixed: Any) -> TrainConfig:
    """:class:`TrainConfig` from the flags, with cut-offs fitted to the catalog."""
    try:
        ks, monitor = fit_cutoffs(num_items, getattr(args, "ks", None))
    except ValueError as err:
        raise CommandError(str(err)) from None
    fields = {
        "lr": "lr",
        "batch_size": "batch_size",
        "epochs": "epochs",
        "patience": "patience",
        "eval_block_size": "eval_block_size",
        "device": "device",
    }
    extra: dict[str, Any] = {"ks": ks, "monitor": monitor, **fixed}
    if getattr(args, "mask_valid_at_test", False):
        extra["mask_valid_at_test"] = True
    if getattr(args, "no_progress", False):
        extra["show_progress"] = False
    if hasattr(args, "data_dir"):  # mllmrec train: one seed for split and training
        extra.setdefault("seed", args.seed)
        if getattr(args, "checkpoint_dir", None):
            extra["checkpoint_dir"] = str(args.checkpoint_dir)
            extra["resume"] = not getattr(args, "restart", False)
    return build(TrainConfig, args, fields, **extra)


def check_train_arguments(args: argparse.Namespace) -> None:
    """Check the training flags before any work (the catalog size is not known yet)."""
    train_config(args, num_items=max(DEFAULT_KS) if not getattr(args, "ks", None) else max(args.ks))


__all__ = [
    "CommandError",
    "HelpFormatter",
    "add_data_arguments",
    "add_graph_arguments",
    "add_text_arguments",
    "add_train_arguments",
    "build",
    "check_train_arguments",
    "data_config",
    "graph_config",
    "key_value",
    "option",
    "text_config",
    "train_config",
]
