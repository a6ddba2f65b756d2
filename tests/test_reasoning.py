"""Behaviour lists, leakage, token budgets, the offline backend, item descriptions."""

from __future__ import annotations

import logging
import math
import re

import pytest
import torch
from torch_geometric.data import HeteroData

from mllmrec_pyg.data import make_synthetic
from mllmrec_pyg.data.schema import INTERACTS, SchemaError
from mllmrec_pyg.reasoning import (
    Backend,
    GenerationStore,
    OfflineBackend,
    behaviour_lists,
    build_preference_prompts,
    describe_items,
    generate_preferences,
    get_backend,
)
from mllmrec_pyg.reasoning.backends.offline import CatalogAware, CatalogStats, phrases
from mllmrec_pyg.reasoning.prompts import item_prompt, parse_preference_prompt
from mllmrec_pyg.reasoning.users import approx_token_count, fit_history


def tiny_data(with_time: bool = True) -> HeteroData:
    """3 users, 6 items; user 2 has no training item."""
    data = HeteroData()
    data["user"].num_nodes = 3
    data["item"].num_nodes = 6
    data["item"].text = [f"item{i} code{i}" for i in range(6)]
    # training pairs, deliberately not grouped by user nor by time
    data[INTERACTS].edge_index = torch.tensor([[1, 0, 0, 1, 0], [4, 2, 0, 5, 1]])
    if with_time:
        data[INTERACTS].time = torch.tensor([50, 30, 10, 40, 20])
    data[INTERACTS].val_edge_index = torch.tensor([[0, 2], [3, 1]])
    data[INTERACTS].test_edge_index = torch.tensor([[0, 1], [5, 0]])
    return data


def test_behaviour_lists_follow_time_then_edge_order():
    assert behaviour_lists(tiny_data()) == {0: [0, 1, 2], 1: [5, 4], 2: []}
    assert behaviour_lists(tiny_data(with_time=False)) == {0: [2, 0, 1], 1: [4, 5], 2: []}


def test_behaviour_lists_equal_independent_reference_on_synthetic():
    data = make_synthetic(seed=1)
    ei, t = data[INTERACTS].edge_index, data[INTERACTS].time
    ref: dict[int, list[tuple[int, int, int]]] = {u: [] for u in range(data["user"].num_nodes)}
    for pos, (u, i, ts) in enumerate(zip(ei[0].tolist(), ei[1].tolist(), t.tolist())):
        ref[u].append((ts, pos, i))
    expected = {u: [i for _, _, i in sorted(v)] for u, v in ref.items()}
    assert behaviour_lists(data) == expected


def test_full_history_is_an_audit_switch_that_adds_held_out(caplog):
    with caplog.at_level(logging.WARNING):
        full = behaviour_lists(tiny_data(), full_history=True)
    assert full == {0: [0, 1, 2, 3, 5], 1: [5, 4, 0], 2: [1]}
    assert any("AUDIT" in r.message and "leak" in r.message for r in caplog.records)


def test_no_held_out_item_reaches_a_default_prompt():
    data = make_synthetic(seed=0)
    n_items = data["item"].num_nodes
    # unique, greppable item texts so that a leaked item would be visible in the prompt
    data["item"].text = [f"zq{i}x " + t for i, t in enumerate(data["item"].text)]
    store = data[INTERACTS]
    held: dict[int, set[int]] = {}
    for key in ("val_edge_index", "test_edge_index"):
        for u, i in store[key].t().tolist():
            held.setdefault(u, set()).add(i)
    train: dict[int, set[int]] = {}
    for u, i in store.edge_index.t().tolist():
        train.setdefault(u, set()).add(i)
    lists = behaviour_lists(data)
    prompts = build_preference_prompts(data, token_budget=100_000)
    assert sum(len(v) for v in held.values()) > 0
    for p in prompts:
        u = p.user
        in_prompt = {int(m) for m in re.findall(r"zq(\d+)x", p.prompt)}
        assert set(lists[u]) == train.get(u, set())
        assert in_prompt == set(lists[u])
        only_held = held.get(u, set()) - train.get(u, set())
        assert not (in_prompt & only_held), f"user {u} prompt leaks {in_prompt & only_held}"
        assert all(0 <= i < n_items for i in in_prompt)

    audit = build_preference_prompts(data, token_budget=100_000, full_history=True)
    leaked = 0
    for p in audit:
        in_prompt = {int(m) for m in re.findall(r"zq(\d+)x", p.prompt)}
        assert held.get(p.user, set()) <= in_prompt
        leaked += len(held.get(p.user, set()) - train.get(p.user, set()))
        assert p.full_history
    assert leaked > 0


def test_token_budget_keeps_most_recent_and_records_the_cut():
    data = tiny_data()
    data["item"].text = [("word " * 30 + f"tag{i}").strip() for i in range(6)]
    base = approx_token_count(build_preference_prompts(data, 10_000)[2].prompt)
    one = approx_token_count(build_preference_prompts(data, 10_000)[0].prompt)
    per_item = math.ceil((one - base) / 3)
    budget = base + 2 * per_item + 2  # room for two items, not three
    prompts = build_preference_prompts(data, token_budget=budget)
    p0 = prompts[0]
    assert p0.items == [1, 2]  # the two most recent of [0, 1, 2]
    assert p0.dropped == 1 and p0.history_length == 3 and not p0.truncated_item
    assert p0.prompt_tokens <= budget
    assert parse_preference_prompt(p0.prompt) == [data["item"].text[1], data["item"].text[2]]
    assert p0.meta()["dropped"] == 1 and "prompt" not in p0.meta()
    assert prompts[1].dropped == 0 and prompts[1].items == [5, 4]


def test_single_item_longer_than_budget_is_shortened():
    descs = ["old item", " ".join(f"w{i}" for i in range(500))]
    budget = 120
    kept, short, prompt = fit_history(descs, budget)
    assert kept == 1 and short is not None
    assert approx_token_count(prompt) <= budget
    assert descs[1].startswith(short) and len(short) < len(descs[1])
    with pytest.raises(ValueError, match="below Prompt 2"):
        fit_history(descs, 5)


def test_phrases_and_catalog_stats_by_hand():
    assert phrases("Organic cotton and bamboo. Sky-blue, 100 soft x") == frozenset(
        {"organic", "cotton", "organic cotton", "bamboo", "sky-blue", "soft"}
    )
    stats = CatalogStats.from_texts(["red hat", "red shoe", "blue hat"])
    assert stats.num_docs == 3 and stats.df["red"] == 2 and stats.df["red hat"] == 1
    assert stats.idf("red") == pytest.approx(math.log(4 / 3) + 1)
    assert stats.idf("unseen") == pytest.approx(math.log(4) + 1)


def test_offline_backend_hand_worked_summary():
    catalog = [
        "wooden rattle toy",
        "wooden rattle toy with bells",
        "plastic cup",
        "plastic plate",
        "plastic bowl",
        "green blanket",
    ]
    b = OfflineBackend(catalog=catalog, max_phrases=3, min_phrases=3)
    assert isinstance(b, Backend) and isinstance(b, CatalogAware)
    history = ["wooden rattle toy", "wooden rattle toy with bells", "plastic cup", "plastic plate"]
    # item counts: wooden, rattle, toy, wooden rattle, rattle toy, plastic: 2;
    # bells, cup, plate, plastic cup, plastic plate: 1 ("with" breaks "toy bells").
    # Words never seen outside one of their bigrams are dropped: wooden, rattle, toy, cup, plate.
    # Scores (1 + ln c) (ln((1 + N) / (1 + df)) + 1), N = 6: rattle toy = wooden rattle
    # = 1.69 * 1.85 = 3.13, plastic = 1.69 * 1.56 = 2.64; bells = plastic cup = plastic plate
    # = 1 * 2.25.
    recurring, also = b.salient_phrases(history)
    assert recurring == ["rattle toy", "wooden rattle", "plastic"]
    assert also == []
    b5 = OfflineBackend(catalog=catalog, max_phrases=5, min_phrases=5)
    recurring, also = b5.salient_phrases(history)
    assert recurring == ["rattle toy", "wooden rattle", "plastic"]
    # the single-item fill ties at 2.25: longer phrases first, then alphabetical
    assert also == ["plastic cup", "plastic plate"]
    b7 = OfflineBackend(catalog=catalog, max_phrases=7, min_phrases=7)
    assert b7.salient_phrases(history)[1] == ["plastic cup", "plastic plate", "bells"]
    text = b.summarise(history)
    assert text == "Recurring: rattle toy, wooden rattle, plastic."


def test_offline_backend_generate_contract():
    b = OfflineBackend(catalog=["a red hat", "a blue hat"])
    from mllmrec_pyg.reasoning.backends.base import GenerationRequest
    from mllmrec_pyg.reasoning.prompts import preference_prompt

    out = b.generate(
        [
            GenerationRequest("1", item_prompt("Baby"), images=["x.png"]),
            GenerationRequest("2", preference_prompt(["a red hat", "red hat again"])),
        ]
    )
    assert out[0] == ""  # no image descriptions, honestly
    assert out[1].startswith("Recurring: red hat")
    fp = b.fingerprint()
    assert (
        fp["backend"] == "none"
        and fp["catalog"] == CatalogStats.from_texts(["a red hat", "a blue hat"]).digest
    )
    with pytest.raises(RuntimeError, match="fit_catalog"):
        OfflineBackend().generate([GenerationRequest("1", preference_prompt(["x"]))])
    assert get_backend("none").name == "none"


def test_generate_preferences_offline_end_to_end(tmp_path):
    data = make_synthetic(seed=0)
    with GenerationStore(tmp_path / "g.sqlite") as store:
        texts, meta = generate_preferences(
            data,
            get_backend("none"),
            dataset_name="Synthetic",
            store=store,
            show_progress=False,
            return_metadata=True,
        )
        assert store.count("user_preference") == data["user"].num_nodes
    assert len(texts) == data["user"].num_nodes == len(meta)
    assert data["user"].text == texts
    assert meta[0]["dataset"] == "Synthetic" and meta[0]["full_history"] is False
    # the same again, from a fresh backend: deterministic
    again = generate_preferences(data, OfflineBackend(), "Synthetic", show_progress=False)
    assert again == texts
    # every phrase of a user's text comes from that user's TRAINING items
    lists = behaviour_lists(data)
    for u in range(0, data["user"].num_nodes, 97):
        vocab = set().union(*(phrases(data["item"].text[i]) for i in lists[u]))
        said = re.sub(r"^Recurring: |Also: ", "", texts[u]).replace(". Also: ", ", ")
        for ph in said.rstrip(".").split(", "):
            assert ph in vocab, (u, ph)


def test_user_without_history_gets_empty_text_and_no_call():
    class Recorder(OfflineBackend):
        def generate(self, requests):
            self.keys = [r.key for r in requests]
            return super().generate(requests)

    b = Recorder()
    texts = generate_preferences(tiny_data(), b, "Tiny", show_progress=False)
    assert b.keys == ["0", "1"] and texts[2] == ""
    assert texts[0] and texts[1]


def test_generate_preferences_requires_item_text():
    data = tiny_data()
    del data["item"].text
    with pytest.raises(SchemaError, match="item.*text"):
        generate_preferences(data, OfflineBackend(), show_progress=False)


class EchoImageBackend:
    """Describes an image by the file's name, so the result is checkable."""

    name = "echo"

    def fingerprint(self):
        return {"model": "echo"}

    def generate(self, requests):
        out = []
        for r in requests:
            assert r.prompt == item_prompt("Baby") and len(r.images) == 1
            out.append(f"Image shows {r.images[0].stem}.")
        return out


def test_describe_items_fuses_only_items_with_images(tmp_path, caplog):
    from PIL import Image

    data = tiny_data()
    paths = {}
    for i in (1, 4):
        p = tmp_path / f"photo{i}.png"
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(p)
        paths[i] = p
    with caplog.at_level(logging.INFO), GenerationStore(tmp_path / "g.sqlite") as store:
        fused = describe_items(data, EchoImageBackend(), "Baby", images=paths, store=store)
        assert store.count("item_description") == 2
    assert fused[1] == "item1 code1 Image shows photo1."
    assert fused[4] == "item4 code4 Image shows photo4."
    assert fused[0] == "item0 code0" and fused[5] == "item5 code5"
    assert data["item"].text == fused
    assert data["item"].base_text[1] == "item1 code1"
    assert any("2 with an image" in r.getMessage() for r in caplog.records)
    # a second call starts from base_text: never fuses twice
    again = describe_items(data, EchoImageBackend(), "Baby", images=paths, show_progress=False)
    assert again == fused
    # the offline backend gives no descriptions: texts stay as they were
    offline = describe_items(data, OfflineBackend(), "Baby", images=paths, show_progress=False)
    assert offline == data["item"].base_text


def test_describe_items_reports_missing_image(tmp_path):
    data = tiny_data()
    with pytest.raises(FileNotFoundError, match="item 3: image file .*nope.png"):
        describe_items(data, OfflineBackend(), "Baby", images={3: tmp_path / "nope.png"})
    with pytest.raises(SchemaError, match="2 image entries for 6 items"):
        describe_items(data, OfflineBackend(), "Baby", images=[None, None])
