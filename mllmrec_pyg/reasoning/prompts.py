"""The two prompts of the paper and the fused item text ``D^m``.

Prompt 1 turns one item image into a semantic description ``D^s_i``; Prompt 2
turns a user's behaviour list (the fused descriptions ``D^m_i`` of the items
the user interacted with, Eq. 3) into a preference text ``D^p_u``. Both are
reproduced word for word from the paper; only the placeholders are filled.

The item text ``D^t_i`` joins title, brand, the category names of the first
category path and the description with single spaces (newlines become
spaces); Eq. 2 appends the image description to it:
``D^m_i = D^t_i (+) D^s_i``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from mllmrec_pyg.data.amazon import (
    clean_text,
    first_category_path,
    item_text,
    item_text_from_meta,
)

ITEM_PROMPT_TEMPLATE = (
    "Please convert the given image into an accurate and concise textual description "
    "relevant to the {dataset_name}, focusing on extracting key attributes that can "
    "influence the buying behavior of users, such as color, material, style, "
    "functionality, etc. To generate the textual description using a one-paragraph "
    "natural language overview in no more than 100 words."
)
"""Prompt 1 (semantic description generation); ``{dataset_name}`` is filled in."""

PREFERENCE_PROMPT_TEMPLATE = (
    "Please reason about the user preferences based on the following list of item "
    "descriptions that he or she has interacted with. The list is: "
    "{behavioral_description}. To generate the user preferences using a one-paragraph "
    "natural language in no more than 100 words."
)
"""Prompt 2 (user preference generation); ``{behavioral_description}`` is the list."""

_LIST_PREFIX, _LIST_SUFFIX = PREFERENCE_PROMPT_TEMPLATE.split("{behavioral_description}")


def item_prompt(dataset_name: str) -> str:
    """Prompt 1 with the dataset name filled in (e.g. ``"Baby"``).

    Args:
        dataset_name: the catalog the images come from.
    """
    if not dataset_name or not dataset_name.strip():
        raise ValueError("Prompt 1 needs a dataset name (e.g. 'Baby')")
    return ITEM_PROMPT_TEMPLATE.format(dataset_name=dataset_name.strip())


def render_behaviour_list(descriptions: Sequence[str]) -> str:
    """The behaviour list as a bracketed list of quoted strings (Eq. 3's ``[D^m_i]``).

    JSON quoting keeps the rendering unambiguous and invertible
    (:func:`parse_preference_prompt`).
    """
    return json.dumps([str(d) for d in descriptions], ensure_ascii=False)


def preference_prompt(descriptions: Sequence[str]) -> str:
    """Prompt 2 over a user's behaviour list, oldest item first.

    Args:
        descriptions: fused item texts ``D^m_i`` of the user's items.
    """
    return PREFERENCE_PROMPT_TEMPLATE.format(
        behavioral_description=render_behaviour_list(descriptions)
    )


def parse_preference_prompt(prompt: str) -> list[str] | None:
    """Recover the behaviour list from a Prompt 2 text; ``None`` for any other prompt."""
    if not (prompt.startswith(_LIST_PREFIX) and prompt.endswith(_LIST_SUFFIX)):
        return None
    body = prompt[len(_LIST_PREFIX) : len(prompt) - len(_LIST_SUFFIX)]
    try:
        items = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
        return None
    return items


def fuse(text: str, image_description: str | None) -> str:
    """Eq. 2: ``D^m_i = D^t_i (+) D^s_i`` (plain concatenation with one space)."""
    a, b = clean_text(text), clean_text(image_description)
    return f"{a} {b}" if a and b else (a or b)


__all__ = [
    "ITEM_PROMPT_TEMPLATE",
    "PREFERENCE_PROMPT_TEMPLATE",
    "clean_text",
    "first_category_path",
    "fuse",
    "item_prompt",
    "item_text",
    "item_text_from_meta",
    "parse_preference_prompt",
    "preference_prompt",
    "render_behaviour_list",
]
