"""``mllmrec train``: train and evaluate one model on one dataset.

The command builds the stage configs from its flags (every default comes
from the config dataclasses), checks them all before any work starts, then
runs :mod:`mllmrec_pyg.pipeline`: load, features, item graph, train.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mllmrec_pyg.commands.common import (
    CommandError,
    HelpFormatter,
    add_data_arguments,
    add_key_values,
    add_stage_arguments,
    check_train_arguments,
    check_writable,
    data_config,
    graph_config,
    text_config,
    train_config,
)
from mllmrec_pyg.config import GraphConfig, default_of
from mllmrec_pyg.fields import FieldError
from mllmrec_pyg.io import read_json
from mllmrec_pyg.nn.registry import (
    MODELS,
    Derived,
    label,
    make_config,
    model_class,
    model_flags,
    model_spec,
    model_switches,
    takes_seed,
)
from mllmrec_pyg.train import TrainConfig

log = logging.getLogger(__name__)

DEFAULT_MODEL = "mllmrec"

#: model-setting flag -> {model: config field}; a flag that names no field of the model is
#: refused. Each model declares its flags where it is registered
#: (:func:`~mllmrec_pyg.nn.registry.register_model`)
MODEL_FLAGS: Mapping[str, dict[str, str]] = Derived(
    lambda: {
        flag: {m: option.field for m, option in models.items()}
        for flag, models in model_flags().items()
    }
)
#: the item-graph settings of a ``--tuned`` file that fill flags not given
TUNED_GRAPH = ("k_s", "alpha", "k_c")
#: model-setting switch -> {model: (field, value when given)}
MODEL_SWITCHES: Mapping[str, dict[str, tuple[str, Any]]] = Derived(
    lambda: {
        flag: {m: (option.field, option.value) for m, option in models.items()}
        for flag, models in model_switches().items()
    }
)
#: what each switch does, where no model says it
SWITCH_HELP = {
    "refined_graph": "reads the refined graph S* (built with the graph flags) instead of its "
    "own kNN graph"
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command."""
    p = subparsers.add_parser(
        "train",
        help="train and evaluate MLLMRec or a baseline",
        description="Train with early stopping on valid Recall@20; report valid and test "
        "metrics at the best epoch (full ranking, training items masked).",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--model",
        choices=sorted(MODELS),
        help=f"the model (default: {DEFAULT_MODEL}, or the model of --tuned)",
    )
    p.add_argument(
        "--tuned",
        help="a `mllmrec tune` result (<out>/<dataset>/<model>.json): its chosen settings "
        "are used for every flag not given",
    )
    add_data_arguments(p, training_seed=True)
    add_stage_arguments(p)

    g = p.add_argument_group("model settings (each model's own default unless given)")
    add_model_options(g)
    add_key_values(
        g,
        "--set",
        "FIELD=VALUE",
        "any field of the model's config (repeatable), e.g. --set dropout=0.9",
    )

    g = p.add_argument_group("output")
    g.add_argument("--json", type=Path, help="write the results here")
    g.add_argument("--checkpoint", type=Path, help="save the best model here (.pt)")
    g.add_argument(
        "--checkpoint-dir",
        type=Path,
        help="keep a resumable training state here (resumes if present)",
    )
    g.add_argument(
        "--restart",
        action="store_true",
        help="ignore a resumable state in --checkpoint-dir and train from the start",
    )
    p.set_defaults(func=main)


def add_model_options(group: Any) -> None:
    """Add every registered model's flags and switches to ``group``; each help names the
    models it applies to, with their defaults."""
    for flag, models in model_flags().items():
        helps: dict[str, list[tuple[str, Any]]] = {}
        for name, option in models.items():
            default = default_of(model_class(name).config_class, option.field)
            helps.setdefault(option.help or option.field, []).append((label(name), default))
        texts = []
        for text, found in helps.items():
            if len({repr(d) for _, d in found}) == 1:
                names = ", ".join(n for n, _ in found)
                texts.append(f"{names}: {text} (default: {found[0][1]})")
            else:
                texts.append(f"{text} ({', '.join(f'{n} {d}' for n, d in found)})")
        kind = type(found[0][1])
        group.add_argument(
            "--" + flag.replace("_", "-"),
            type=kind if kind in (int, float) else str,
            help="; ".join(texts),
        )
    for flag, models in model_switches().items():
        names_of: dict[str, list[str]] = {}
        for name, option in models.items():
            text = option.help or SWITCH_HELP.get(flag, "")
            names_of.setdefault(text, []).append(label(name))
        text = "; ".join(f"{', '.join(names)}: {text}" for text, names in names_of.items())
        group.add_argument("--" + flag.replace("_", "-"), action="store_true", help=text)


def model_values(args: argparse.Namespace) -> dict[str, Any]:
    """The model config fields set on the command line (``--set`` last).

    Raises:
        CommandError: a flag that does not apply to ``--model``.
    """
    values: dict[str, Any] = {}
    for flag, fields in MODEL_FLAGS.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        if args.model not in fields:
            raise CommandError(f"--{flag.replace('_', '-')} does not apply to --model {args.model}")
        values[fields[args.model]] = value
    for flag, models in MODEL_SWITCHES.items():
        if getattr(args, flag, False):
            if args.model not in models:
                names = ", ".join(models)
                raise CommandError(f"--{flag.replace('_', '-')} applies to --model {names} only")
            values[models[args.model][0]] = models[args.model][1]
    if takes_seed(args.model):
        values.setdefault("seed", args.seed)
    for name, option in model_spec(args.model).from_options.items():
        if getattr(args, option, None) is not None:
            values.setdefault(name, getattr(args, option))
    values.update(dict(args.set))
    try:
        make_config(args.model, values)  # unknown fields and bad values fail now, before any work
    except FieldError as err:
        raise CommandError(f"{err} ({field_option(args, err.field)})") from None
    except (TypeError, ValueError) as err:
        raise CommandError(str(err)) from None
    return values


def field_option(args: argparse.Namespace, field: str) -> str:
    """The option that set model config ``field``: ``--set field=VALUE`` or its flag."""
    given = dict(args.set)
    if field in given:
        return f"--set {field}={given[field]!r}"
    flags = [f for f, fields in MODEL_FLAGS.items() if fields.get(args.model) == field]
    return "--" + flags[0].replace("_", "-") if flags else f"--set {field}"


def apply_tuned(args: argparse.Namespace) -> dict[str, Any]:
    """Fill the flags not given from a ``mllmrec tune`` result; return its model settings."""
    from mllmrec_pyg.tuning import read_tuned

    tuned = read_tuned(args.tuned)
    if args.model is None:
        args.model = tuned["model"]
    elif args.model != tuned["model"]:
        raise CommandError(
            f"{args.tuned} holds settings of --model {tuned['model']}, not {args.model}"
        )
    settings = tuned["settings"]
    for name, value in settings["train"].items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    for name, value in (settings.get("graph") or {}).items():
        if name in TUNED_GRAPH and getattr(args, name) is None:
            setattr(args, name, value)
        elif name == "cooccurrence" and not value:
            args.no_cooccurrence = True
        elif name == "loop" and not value:
            args.no_self_loop = True
    return {k: v for k, v in settings["model"].items() if k != "seed"}  # --seed seeds training


def check_outputs(args: argparse.Namespace, stack: contextlib.ExitStack) -> None:
    """Refuse output paths that cannot be written and hold ``--checkpoint-dir``, before any
    work, so that a finished training is never lost to a bad path or a second run."""
    from mllmrec_pyg.checkpoint import checkpoint_dir_lock

    for flag, path in (("--json", args.json), ("--checkpoint", args.checkpoint)):
        if path is not None:
            check_writable(path, flag)
    if args.checkpoint_dir is not None:
        check_writable(args.checkpoint_dir, "--checkpoint-dir", folder=True)
        stack.enter_context(checkpoint_dir_lock(args.checkpoint_dir))


def check_tuned(args: argparse.Namespace, values: dict[str, Any]) -> None:
    """Refuse, naming the file, ``--tuned`` model or training settings of the wrong type or
    range that this run uses (``values``: its model settings not set on the command line)."""
    from mllmrec_pyg.tuning import read_tuned

    try:
        make_config(args.model, values)
        train = read_tuned(args.tuned)["settings"].get("train") or {}
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        # the file's value is the one used where the flag was not given (apply_tuned set it)
        TrainConfig(**{k: v for k, v in train.items() if k in known and getattr(args, k) == v})
        graph = read_tuned(args.tuned)["settings"].get("graph") or {}
        GraphConfig(
            **{k: v for k, v in graph.items() if k in TUNED_GRAPH and getattr(args, k) == v}
        )
    except (TypeError, ValueError) as err:
        raise CommandError(f"{args.tuned}: a chosen setting is refused: {err}") from None


def warn_tuned_dataset(args: argparse.Namespace, data_cfg: Any) -> None:
    """Say so in one line when ``--tuned`` was tuned on another dataset (search spaces and
    good settings differ between datasets)."""
    tuned_on = read_json(args.tuned).get("dataset")
    if tuned_on is not None and tuned_on != data_cfg.tag():
        log.warning(
            "%s was tuned on dataset %r, not on %r (this run): its settings were chosen for "
            "another dataset",
            args.tuned,
            tuned_on,
            data_cfg.tag(),
        )


def main(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        return _main(args, stack)


def _main(args: argparse.Namespace, stack: contextlib.ExitStack) -> int:
    from mllmrec_pyg import pipeline
    from mllmrec_pyg.checkpoint import save_checkpoint
    from mllmrec_pyg.io import write_json
    from mllmrec_pyg.tables import format_table, result_row

    # every option is checked before any work starts
    tuned = apply_tuned(args) if args.tuned else {}
    args.model = args.model or DEFAULT_MODEL
    given = model_values(args)
    if args.tuned:
        check_tuned(args, {k: v for k, v in tuned.items() if k not in given})
    values = {**tuned, **given}
    check_train_arguments(args)
    data_cfg, text, graph = data_config(args), text_config(args), graph_config(args)
    if args.tuned:
        warn_tuned_dataset(args, data_cfg)
    check_outputs(args, stack)
    needs = model_class(args.model).requires(make_config(args.model, values))
    items, users, refined = ("items" in needs), ("users" in needs), ("graph" in needs)
    data = pipeline.load_data(data_cfg)
    train = train_config(args, num_items=int(data["item"].num_nodes))
    info: dict[str, Any] = {}
    if items:
        data, info = pipeline.prepare(
            data_cfg, text, args.cache_dir, users=users, raw=data, show_progress=train.show_progress
        )
    if refined:
        data = pipeline.build_graph(data, graph)
        info["item_graph"] = graph.as_dict()
    model, result = pipeline.train_model(args.model, data, train, values)
    print(format_table([result_row(args.model, result, train.ks)], style="plain"))
    if "user_text" in info:
        print(f"user text: {info['user_text']}")
    if args.json:
        out = result.to_json(model=args.model, dataset=data_cfg.name)
        out["config"] = {
            "model": model.config_dict(),
            "train": {k: v for k, v in dataclasses.asdict(train).items() if k != "show_progress"},
            **info,
        }
        write_json(args.json, out, indent=2)
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


__all__ = ["MODEL_FLAGS", "MODEL_SWITCHES", "add_model_options", "model_values", "register"]
