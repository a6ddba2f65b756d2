"""Type and range checks of config values, derived from a dataclass's field annotations.

Values reach the model and training configs from the command line
(``--set FIELD=VALUE``), from JSON files (a ``mllmrec tune`` result, a
checkpoint's config) and from Python. :func:`check_fields` checks each value
against its field's annotation before the config is built, so a wrong value
is refused with the field's name instead of failing deep inside a model
(``torch.empty`` with a negative or fractional size)::

    check_fields(BPRConfig, {"embedding_dim": "abc"})
    # FieldError: embedding_dim must be an integer, got 'abc' (str)

The rules, by annotation (``X | None`` also accepts ``None``):

* ``bool``: ``True`` or ``False``;
* ``int``: an integer (not a bool) in ``[0, 2**63)``;
* ``float``: an integer or a float (not a bool), finite and ``>= 0``;
* ``str``: a string;
* ``tuple[X, ...]`` / ``tuple[X, Y, Z]``: a tuple or list whose items pass ``X``
  (and of that length);
* anything else is not checked.

Every number of the package's model and training configs is a count, a
size, a seed, a rate, a weight or a temperature, so negative and non-finite
numbers are refused for all of them; bounds tighter than these (a dimension
of at least 1, a dropout below 1) are each config's own ``__post_init__``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import math
import numbers
import types
import typing
from collections.abc import Mapping
from typing import Any

#: the largest integer + 1 a config field takes (torch and NumPy index with int64)
INT_LIMIT = 2**63


class FieldError(ValueError):
    """A config value of the wrong type or range.

    Args:
        field: the field's name.
        value: the value given.
        reason: what the value must be (``"must be an integer"``).
        owner: the config's owner for the message (e.g. the model name).
    """

    def __init__(self, field: str, value: Any, reason: str, owner: str | None = None) -> None:
        self.field, self.value, self.reason, self.owner = field, value, reason, owner
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        prefix = f"{owner}: " if owner else ""
        super().__init__(f"{prefix}{field} {reason}, got {shown}")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _problem(value: Any, hint: Any) -> str | None:
    """What ``value`` must be to fit annotation ``hint`` (a noun phrase), or ``None`` if it fits."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        problems = [_problem(value, o) for o in args if o is not type(None)]
        if any(p is None for p in problems):
            return None
        return " or ".join([str(p) for p in problems] + (["None"] if type(None) in args else []))
    if hint is bool:
        return None if isinstance(value, bool) else "True or False"
    if hint is int:
        if not _is_int(value):
            return "an integer"
        return None if 0 <= value < INT_LIMIT else "an integer in [0, 2**63)"
    if hint is float:
        if _is_number(value) and math.isfinite(value) and value >= 0:
            return None
        return "a finite number >= 0"
    if hint is str:
        return None if isinstance(value, str) else "a string"
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (tuple, list)):
            return "a tuple"
        if len(args) == 2 and args[1] is Ellipsis:
            pairs = [(v, args[0]) for v in value]
        elif args:
            if len(value) != len(args):
                return f"a tuple of {len(args)} items"
            pairs = list(zip(value, args))
        else:
            pairs = []
        for v, h in pairs:
            why = _problem(v, h)
            if why is not None:
                return f"a tuple whose items are each {why}"
        return None
    return None  # an annotation these rules do not cover: not checked


def check_fields(cls: type, values: Mapping[str, Any], owner: str | None = None) -> None:
    """Check ``values`` against the annotations of dataclass ``cls``'s fields.

    Args:
        cls: a dataclass.
        values: ``{field: value}``; names that are not fields are left to the caller.
        owner: named first in the message (e.g. the model, ``"bpr"``).

    Raises:
        FieldError: the first value that breaks its field's rule (module docstring).
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in values and f.name in hints:
            why = _problem(values[f.name], hints[f.name])
            if why is not None:
                raise FieldError(f.name, values[f.name], f"must be {why}", owner)


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


__all__ = ["key_value", "INT_LIMIT", "FieldError", "check_fields"]
