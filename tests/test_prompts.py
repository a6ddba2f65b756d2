"""Prompts 1 and 2 word for word, and the fused item text D^m."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mllmrec_pyg.reasoning.prompts import (
    first_category_path,
    fuse,
    item_prompt,
    item_text,
    item_text_from_meta,
    parse_preference_prompt,
    preference_prompt,
)

PAPER = Path(__file__).resolve().parents[2] / "shared" / "paper" / "MLLMRec-paper.txt"

# the prompts as printed in the paper, typed here independently of the package
PROMPT_1_BABY = (
    "Please convert the given image into an accurate and concise textual description relevant "
    "to the Baby, focusing on extracting key attributes that can influence the buying behavior "
    "of users, such as color, material, style, functionality, etc. To generate the textual "
    "description using a one-paragraph natural language overview in no more than 100 words."
)
PROMPT_2_HEAD = (
    "Please reason about the user preferences based on the following list of item descriptions "
    "that he or she has interacted with. The list is: "
)
PROMPT_2_TAIL = (
    ". To generate the user preferences using a one-paragraph natural language in no more "
    "than 100 words."
)


def test_prompt_1_verbatim():
    assert item_prompt("Baby") == PROMPT_1_BABY
    assert "relevant to the Sports and Outdoors," in item_prompt("Sports and Outdoors")
    with pytest.raises(ValueError, match="dataset name"):
        item_prompt("  ")


def test_prompt_2_verbatim_and_invertible():
    descs = ['Red "quoted" hat', "Blue\u00e9 scarf, wool", ""]
    p = preference_prompt(descs)
    assert p.startswith(PROMPT_2_HEAD) and p.endswith(PROMPT_2_TAIL)
    assert parse_preference_prompt(p) == descs
    assert parse_preference_prompt(preference_prompt([])) == []
    assert parse_preference_prompt(PROMPT_1_BABY) is None
    assert parse_preference_prompt(PROMPT_2_HEAD + "not a list" + PROMPT_2_TAIL) is None


@pytest.mark.skipif(not PAPER.is_file(), reason="paper text not available")
def test_prompts_match_the_paper_text():
    paper = re.sub(r"\s+", " ", PAPER.read_text(encoding="utf-8"))
    p1 = item_prompt("{dataset name}")
    assert p1 in paper
    p2 = PROMPT_2_HEAD + "{behavioral description}" + PROMPT_2_TAIL
    assert p2 in paper
    assert preference_prompt(["X"]).replace('["X"]', "{behavioral description}") == p2


def test_item_text_order_and_cleaning():
    meta = {
        "asin": "B001",
        "title": "Soft\nBlanket ",
        "brand": "Cuddle  Co",
        "categories": [["Baby", "Nursery", "Bedding"], ["Home", "Textiles"]],
        "description": "Warm.\r\n\tMachine washable.",
        "price": 9.99,
    }
    expected = "Soft Blanket Cuddle Co Baby Nursery Bedding Warm. Machine washable."
    assert item_text_from_meta(meta) == expected
    assert item_text(title="T", description="D") == "T D"
    assert item_text() == ""


def test_first_category_path_shapes():
    assert first_category_path([["A", "B"], ["C"]]) == ["A", "B"]
    assert first_category_path(["A", "B"]) == ["A", "B"]
    assert first_category_path([]) == []
    assert first_category_path(None) == []


def test_fuse_is_plain_concatenation():
    assert fuse("Blanket Baby", "A pink fleece blanket.") == "Blanket Baby A pink fleece blanket."
    assert fuse("Blanket", "") == "Blanket"
    assert fuse("Blanket", None) == "Blanket"
    assert fuse("", "only image\ntext") == "only image text"
