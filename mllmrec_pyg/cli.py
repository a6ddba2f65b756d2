"""The ``mllmrec`` command.

Each sub-command lives in a module of :mod:`mllmrec_pyg.commands` that
exposes ``register(subparsers)``. A user's mistake (a bad option, bad data,
a missing file, a refused checkpoint) is reported as one line on stderr with
exit status 2 (usage) or 1 (everything else); ``--debug`` or
``MLLMREC_DEBUG=1`` shows the traceback. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from mllmrec_pyg.threads import apply_thread_policy, configure_openmp

configure_openmp()  # before anything imports torch: idle OpenMP threads sleep, not spin

from mllmrec_pyg.commands.common import CommandError  # noqa: E402

COMMAND_MODULES = (
    "mllmrec_pyg.commands.train",
    "mllmrec_pyg.commands.reasoning",
    "mllmrec_pyg.commands.experiment",
    "mllmrec_pyg.commands.tune",
    "mllmrec_pyg.commands.refine",
)
#: exceptions that describe the user's input, not a bug: reported in one line
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # bad values and malformed files (SchemaError, MMRecFormatError, CheckpointError)
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    ImportError,  # an optional extra that is not installed (the message names it)
    FloatingPointError,  # training diverged (the message names the epoch and the learning rate)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mllmrec", description="MLLMRec: multimodal-LLM reasoning + refined item graphs"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks of errors (or MLLMREC_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:  # a stage not installed in this build
            if err.name == name:
                continue
            raise
        module.register(sub)
    for command in sub.choices.values():  # one thread flag for every sub-command
        command.add_argument(
            "--threads",
            metavar="N|auto",
            help="CPU threads for training, evaluation, encoding and graph builds: a number, or "
            "'auto' (the default, or $MLLMREC_THREADS): the cores other processes leave free, "
            "then the faster of 1 and all usable cores, re-measured during training",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    debug = args.debug or os.environ.get("MLLMREC_DEBUG", "") not in ("", "0")
    try:
        apply_thread_policy(args.threads)
        return int(args.func(args) or 0)
    except CommandError as err:
        if debug:
            raise
        parser.exit(2, f"mllmrec {args.command}: error: {err}\n")
    except SystemExit:
        raise
    except KeyboardInterrupt:
        if debug:
            raise
        parser.exit(130, "interrupted; run the same command again to continue where it stopped\n")
    except Exception as err:
        from mllmrec_pyg.reasoning.backends._common import BackendError

        if debug or not isinstance(err, (*USER_ERRORS, BackendError)):
            raise
        message = str(err).strip().replace("\n", " ") or type(err).__name__
        parser.exit(1, f"mllmrec {args.command}: error: {message}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
