"""Argument checks shared by the graph transforms: fail at construction, naming the argument."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def check_positive_int(value: Any, name: str, *, allow_none: bool = False) -> int | None:
    """``value`` if it is an ``int`` > 0 (``None`` too when ``allow_none``), else raise."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_name(value: Any, name: str) -> str:
    """A non-empty string (node types, relation names, attribute keys)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {value!r}")
    if not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_cosine(value: Any, name: str) -> float | None:
    """``None`` or a real number in ``[-1, 1]`` (a cosine similarity)."""
    if value is None:
        return None
    # numpy / torch scalars expose __float__; strings and bools are refused
    if isinstance(value, (bool, str, bytes)) or not hasattr(value, "__float__"):
        raise TypeError(f"{name} must be a number in [-1, 1] or None, got {value!r}")
    value = float(value)
    if math.isnan(value) or not -1.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a cosine in [-1, 1] or None, got {value!r}")
    return value


def check_edge_type(value: Any, name: str) -> tuple[str, str, str]:
    if isinstance(value, str) or not isinstance(value, (tuple, list)) or len(value) != 3:
        raise TypeError(f"{name} must be a (source, relation, target) tuple, got {value!r}")
    for part in value:
        check_name(part, name)
    return tuple(value)  # type: ignore[return-value]
