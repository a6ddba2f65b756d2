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

ITEM_TEXT_PROMPT_TEMPLATE = (
    "Please convert the given product information into an accurate and concise textual "
    "description relevant to the {dataset_name}, focusing on extracting key attributes that "
    "can influence the buying behavior of users, such as color, material, style, "
    "functionality, etc. The product information is: {item_text}. To generate the textual "
    "description using a one-paragraph natural language overview in no more than 100 words."
)
"""Prompt 1 without an image: the item's own text ``D^t_i`` takes the image's place.

For catalogues without images and for text-only models; the wording is Prompt
1's with "the given image" replaced by "the given product information" and
the text appended."""

_ITEM_TEXT_HEAD, _ITEM_TEXT_TAIL = ITEM_TEXT_PROMPT_TEMPLATE.split("{dataset_name}")
_ITEM_TEXT_MID, _ITEM_TEXT_END = _ITEM_TEXT_TAIL.split("{item_text}")


def item_prompt(dataset_name: str) -> str:
    """Prompt 1 with the dataset name filled in (e.g. ``"Baby"``).

    Args:
        dataset_name: the catalog the images come from.
    """
    if not dataset_name or not dataset_name.strip():
        raise ValueError("Prompt 1 needs a dataset name (e.g. 'Baby')")
    return ITEM_PROMPT_TEMPLATE.format(dataset_name=dataset_name.strip())


def item_text_prompt(dataset_name: str, item_text: str) -> str:
    """Prompt 1's text-only variant (:data:`ITEM_TEXT_PROMPT_TEMPLATE`) for one item.

    Args:
        dataset_name: the catalogue (e.g. ``"Industrial and Scientific"``).
        item_text: the item's text ``D^t_i`` (title, brand, categories, description).
    """
    if not dataset_name or not dataset_name.strip():
        raise ValueError("Prompt 1 needs a dataset name (e.g. 'Baby')")
    return ITEM_TEXT_PROMPT_TEMPLATE.format(
        dataset_name=dataset_name.strip(), item_text=clean_text(item_text)
    )


def parse_item_text_prompt(prompt: str) -> tuple[str, str] | None:
    """``(dataset_name, item_text)`` of a text-only Prompt 1; ``None`` for any other prompt."""
    if not (prompt.startswith(_ITEM_TEXT_HEAD) and prompt.endswith(_ITEM_TEXT_END)):
        return None
    body = prompt[len(_ITEM_TEXT_HEAD) : len(prompt) - len(_ITEM_TEXT_END)]
    name, sep, text = body.partition(_ITEM_TEXT_MID)
    return (name, text) if sep else None


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


# -- completion templates for base models (no chat template) --------------------------------
#: The version of the few-shot templates below; it goes into the store key of
#: every text generated through them, so editing them never reuses old text.
COMPLETION_TEMPLATE_VERSION = "few-shot-v1"

_PREFERENCE_HEAD = (
    "Each record lists the items a user interacted with, oldest first, then one paragraph "
    "(at most 100 words) on what the user prefers.\n\n"
)
_PREFERENCE_SHOTS = (
    (
        [
            "Stainless steel measuring spoons, set of 6",
            "Digital kitchen scale, 5 kg, tare function",
            "Silicone baking mats, non-stick, pack of 2",
        ],
        "This user bakes at home and values precise, durable tools. They choose stainless "
        "steel and silicone over plastic, buy practical sets, and care more about accurate "
        "measurement and easy cleaning than about looks.",
    ),
    (
        [
            "Nitrile gloves, powder-free, 100 count",
            "Safety glasses with side shields, anti-fog",
            "Digital caliper, 150 mm, stainless steel",
        ],
        "This user works in a workshop or lab and buys protective and measuring gear. They "
        "prefer disposable supplies in bulk, certified eye protection and accurate stainless "
        "instruments, and pick reliable basics over premium brands.",
    ),
)
_ITEM_HEAD = (
    "Each record gives a product from the {dataset_name} catalogue, then an accurate, "
    "concise one-paragraph description (at most 100 words) of the attributes that "
    "influence buying: colour, material, style, functionality.\n\n"
)
_ITEM_SHOTS = (
    (
        "Lab Beaker Set Borosilicate Glass 50 100 250 500 1000 ml printed graduations",
        "A set of five borosilicate glass beakers from 50 to 1000 ml with printed "
        "graduations. The glass resists heat and chemicals, so the beakers suit heating, "
        "mixing and measuring in labs, classrooms and kitchens; the clear walls and spouts "
        "make pouring and reading volumes easy.",
    ),
    (
        "Heavy Duty Zip Ties 12 inch black UV resistant nylon 100 pack 120 lb",
        "One hundred black 12-inch nylon cable ties rated at 120 lb. UV-resistant "
        "material keeps them strong outdoors, which suits bundling cables, fencing and "
        "garden work; a bulk pack of a dependable everyday fastener.",
    ),
)
#: where a base model's answer ends: the blank line before the next record
COMPLETION_STOP = ("\n\n",)


def _items_lines(items: Sequence[str]) -> str:
    return "".join(f"\n- {clean_text(t)}" for t in items)


def completion_prompt(prompt: str) -> str:
    """The few-shot completion text that stands in for a chat prompt on a base model.

    A base model (no chat template, e.g. Gemma 3 270M) continues text rather
    than answering instructions, so each of the paper's prompts is recast as
    the next record of a short list of worked examples:

    * Prompt 2 (:func:`preference_prompt`): a header, two example records
      (``Items:``, one ``- item`` line per item, ``Preferences: ...``), then
      the user's items and ``Preferences:`` for the model to complete;
    * Prompt 1's text variant (:func:`item_text_prompt`): a header naming the
      catalogue, two example records ``Product: ...`` / ``Description: ...``,
      then the item's text and ``Description:``;
    * any other prompt: ``"{prompt}\n\nAnswer:"``.

    The answer is what follows, up to the first blank line
    (:data:`COMPLETION_STOP`). The templates are versioned
    (:data:`COMPLETION_TEMPLATE_VERSION`) in the store key.
    """
    items = parse_preference_prompt(prompt)
    if items is not None:
        shots = "".join(
            f"Items:{_items_lines(shown)}\nPreferences: {answer}\n\n"
            for shown, answer in _PREFERENCE_SHOTS
        )
        return f"{_PREFERENCE_HEAD}{shots}Items:{_items_lines(items)}\nPreferences:"
    item = parse_item_text_prompt(prompt)
    if item is not None:
        name, text = item
        shots = "".join(f"Product: {t}\nDescription: {d}\n\n" for t, d in _ITEM_SHOTS)
        head = _ITEM_HEAD.format(dataset_name=name)
        return f"{head}{shots}Product: {clean_text(text)}\nDescription:"
    return f"{prompt}\n\nAnswer:"


def cut_completion(text: str) -> str:
    """A base model's continuation cut at the end of its record (:data:`COMPLETION_STOP`)."""
    for stop in COMPLETION_STOP:
        pos = text.find(stop)
        if pos >= 0:
            text = text[:pos]
    return text.strip()


def fuse(text: str, image_description: str | None) -> str:
    """Eq. 2: ``D^m_i = D^t_i (+) D^s_i`` (plain concatenation with one space)."""
    a, b = clean_text(text), clean_text(image_description)
    return f"{a} {b}" if a and b else (a or b)


__all__ = [
    "COMPLETION_STOP",
    "COMPLETION_TEMPLATE_VERSION",
    "ITEM_PROMPT_TEMPLATE",
    "ITEM_TEXT_PROMPT_TEMPLATE",
    "PREFERENCE_PROMPT_TEMPLATE",
    "clean_text",
    "completion_prompt",
    "cut_completion",
    "first_category_path",
    "fuse",
    "item_prompt",
    "item_text",
    "item_text_prompt",
    "item_text_from_meta",
    "parse_item_text_prompt",
    "parse_preference_prompt",
    "preference_prompt",
    "render_behaviour_list",
]
