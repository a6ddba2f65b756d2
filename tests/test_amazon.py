"""Raw Amazon 2014 ingestion on small fixtures written here, malformed lines included."""

from __future__ import annotations

import csv
import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from mllmrec_pyg.data.amazon import (
    INTER_COLUMNS,
    MalformedLineError,
    build_amazon,
    find_category_files,
    find_images,
    load_amazon,
    read_item_meta,
    read_meta,
    read_ratings_csv,
    read_reviews_json,
)
from mllmrec_pyg.data.schema import INTERACTS, validate

PWNED = "/tmp/mllmrec_literal_eval_must_not_run"

# 12 users x 10 items, user u buys items (u + j) % 10 for j < 7: everything is 5-core
DENSE = [
    (f"U{u:02d}", f"B{(u + j) % 10:03d}", 1 + (u + j) % 5, 1000 + 10 * u + j)
    for u in range(12)
    for j in range(7)
]
# a user with 2 interactions and an item with one buyer: both removed by the 5-core
SPARSE = [("UX1", "B000", 5, 5000), ("UX1", "B001", 4, 5001), ("U00", "B999", 3, 5002)]


def write_ratings(path: Path, bad: bool = True) -> dict[int, str]:
    """Ratings CSV; returns {line number: why it is malformed}."""
    lines: list[bytes] = []
    bad_lines: dict[int, str] = {}
    rows = DENSE + SPARSE
    for k, (u, i, r, t) in enumerate(rows):
        lines.append(f"{u},{i},{r}.0,{t}".encode())
        if bad and k == 3:
            lines.append(b"U01,B002,4.0")  # 3 fields
            bad_lines[len(lines)] = "expected 4 fields"
            lines.append(b"U01,B002,five,1234")
            bad_lines[len(lines)] = "not a number"
            lines.append(b",B002,4.0,1234")
            bad_lines[len(lines)] = "empty user or item"
            lines.append(b"U01,B00\xff,4.0,1234")
            bad_lines[len(lines)] = "not UTF-8"
            lines.append(b"")  # blank: ignored, not malformed
    # a duplicate (user, item) with a later time and another rating: the later one is kept
    lines.append(b"U00,B000,2.0,9999")
    path.write_bytes(b"\n".join(lines) + b"\n")
    return bad_lines


def write_reviews(path: Path) -> None:
    rows = []
    for u, i, r, t in DENSE + SPARSE:
        rows.append(
            json.dumps(
                {
                    "reviewerID": u,
                    "asin": i,
                    "reviewerName": "n",
                    "helpful": [0, 0],
                    "reviewText": "fine, really",
                    "overall": float(r),
                    "summary": "ok",
                    "unixReviewTime": t,
                    "reviewTime": "01 1, 2014",
                }
            )
        )
    rows.insert(5, '{"reviewerID": "U03", "asin": ')  # truncated JSON
    rows.insert(7, json.dumps({"reviewerID": "U03", "overall": 5.0, "unixReviewTime": 1}))
    rows.insert(9, json.dumps(["not", "an", "object"]))
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(rows) + "\n")


def write_meta(path: Path) -> None:
    recs = []
    for k in range(10):
        asin = f"B{k:03d}"
        if k == 7:
            continue  # an item without metadata
        rec = {
            "asin": asin,
            "title": f"Product {k}\nDeluxe",
            "price": 9.99,
            "imUrl": f"http://example.invalid/{asin}.jpg",
            "related": {"also_bought": ["B001"]},
            "salesRank": {"Baby": 1000 + k},
            "categories": [["Baby", "Nursery", f"Kind{k}"], ["Other", "Path"]],
            "description": f"Soft  cotton.\r\nItem {k}.",
        }
        if k != 3:
            rec["brand"] = f"Brand{k % 3}"
        recs.append(repr(rec))  # Python-literal lines, single quotes, as in the 2014 dumps
    recs.insert(2, "{'asin': 'B005', 'title': }")  # broken literal
    recs.insert(4, f"__import__('os').system('touch {PWNED}')")  # code, not a literal
    recs.insert(6, "{'title': 'no asin here'}")
    recs.append(repr({"asin": "B000", "title": "a second record for B000"}))  # repeated ASIN
    recs.append(repr({"asin": "B777", "title": "not in the interactions"}))
    path.write_text("\n".join(recs) + "\n", encoding="utf-8")


@pytest.fixture()
def raw(tmp_path) -> Path:
    root = tmp_path / "raw"
    root.mkdir()
    write_ratings(root / "ratings_Baby.csv")
    write_meta(root / "meta_Baby.json")
    img = root / "images"
    img.mkdir()
    from PIL import Image

    for k, ext in ((0, ".jpg"), (1, ".png"), (4, ".webp")):
        Image.new("RGB", (6, 6), (k * 30, 10, 10)).save(img / f"B{k:03d}{ext}")
    (img / "B002.txt").write_text("not an image")
    (img / "B001.gif").write_bytes(b"GIF89a")  # .png preferred over .gif
    return root


def reference_kcore(rows, k=5):
    """Independent k-core: repeat until stable, with plain counters."""
    rows = list(rows)
    while True:
        cu = Counter(r[0] for r in rows)
        ci = Counter(r[1] for r in rows)
        kept = [r for r in rows if cu[r[0]] >= k and ci[r[1]] >= k]
        if len(kept) == len(rows):
            return kept
        rows = kept


def test_ratings_reader_reports_every_malformed_line(raw, caplog):
    bad = write_ratings(raw / "ratings_Baby.csv")
    res = read_ratings_csv(raw / "ratings_Baby.csv", on_error="skip")
    assert res.issues.count == len(bad) == 4
    for lineno, why in bad.items():
        assert any(f"ratings_Baby.csv:{lineno}: " in m and why in m for m in res.issues.examples)
    assert res.users.size == len(DENSE) + len(SPARSE) + 1
    assert any("skipped 4 malformed" in r.getMessage() for r in caplog.records)
    first_bad = min(bad)
    with pytest.raises(
        MalformedLineError, match=rf"ratings_Baby.csv:{first_bad}: expected 4 fields"
    ):
        read_ratings_csv(raw / "ratings_Baby.csv", on_error="error")
    with pytest.raises(ValueError, match="on_error"):
        read_ratings_csv(raw / "ratings_Baby.csv", on_error="ignore")  # type: ignore[arg-type]


def test_reviews_reader_gz(tmp_path):
    path = tmp_path / "reviews_Baby_5.json.gz"
    write_reviews(path)
    res = read_reviews_json(path)
    assert res.issues.count == 3
    msgs = "\n".join(res.issues.examples)
    assert "reviews_Baby_5.json.gz:6: neither JSON nor a Python literal" in msgs
    assert "reviews_Baby_5.json.gz:8: missing field(s) asin" in msgs
    assert "reviews_Baby_5.json.gz:10: expected an object, got list" in msgs
    assert res.users.size == len(DENSE) + len(SPARSE)
    assert res.ratings[0] == DENSE[0][2] and res.timestamps[0] == DENSE[0][3]
    with pytest.raises(MalformedLineError, match=r"reviews_Baby_5.json.gz:6:"):
        read_reviews_json(path, on_error="error")


def test_meta_reader_uses_literal_eval_only(raw):
    meta, issues = read_meta(raw / "meta_Baby.json")
    assert not Path(PWNED).exists()
    assert issues.count == 3
    msgs = "\n".join(issues.examples)
    assert "meta_Baby.json:3: neither JSON nor a Python literal" in msgs
    assert "meta_Baby.json:5: neither JSON nor a Python literal" in msgs
    assert "meta_Baby.json:7: record has no 'asin'" in msgs
    assert meta["B000"]["title"] == "Product 0\nDeluxe"  # the first record of B000 wins
    assert "B007" not in meta and "B777" in meta
    only, _ = read_meta(raw / "meta_Baby.json", asins={"B001", "B002"})
    assert sorted(only) == ["B001", "B002"]
    with pytest.raises(MalformedLineError, match="meta_Baby.json:3:"):
        read_meta(raw / "meta_Baby.json", on_error="error")


def test_find_files_and_images(raw, tmp_path):
    inter, meta = find_category_files(raw, "Baby")
    assert inter.name == "ratings_Baby.csv" and meta.name == "meta_Baby.json"
    write_reviews(raw / "reviews_Baby_5.json.gz")
    assert find_category_files(raw, "Baby")[0].name == "reviews_Baby_5.json.gz"
    with pytest.raises(FileNotFoundError, match="ratings_Sports.csv"):
        find_category_files(raw, "Sports")
    imgs = find_images(raw / "images")
    assert {a: p.name for a, p in imgs.items()} == {
        "B000": "B000.jpg",
        "B001": "B001.png",
        "B004": "B004.webp",
    }


def test_build_matches_independent_reference(raw):
    ds = build_amazon(raw, "Baby", images=raw / "images")
    # reference: dedupe keeping the latest, then k-core, then sorted-id remap
    latest: dict[tuple[str, str], tuple[float, int]] = {}
    for u, i, r, t in DENSE + SPARSE + [("U00", "B000", 2, 9999)]:
        if (u, i) not in latest or t >= latest[(u, i)][1]:
            latest[(u, i)] = (float(r), t)
    rows = reference_kcore([(u, i, r, t) for (u, i), (r, t) in latest.items()])
    users = sorted({r[0] for r in rows})
    items = sorted({r[1] for r in rows})
    assert ds.user_ids == users and ds.item_ids == items
    assert "UX1" not in users and "B999" not in items
    got = {
        (ds.user_ids[u], ds.item_ids[i], float(r), int(t))
        for u, i, r, t in zip(ds.users, ds.items, ds.ratings, ds.timestamps)
    }
    assert got == set(rows)
    assert (ds.user_ids.index("U00"), ds.item_ids.index("B000")) in set(zip(ds.users, ds.items))
    assert ("U00", "B000", 2.0, 9999) in got  # the later duplicate won
    # the MMRec split: 7 interactions (< 10) -> 5 train, 1 valid, 1 test per user
    for u in range(ds.num_users):
        lab = Counter(ds.labels[ds.users == u].tolist())
        assert lab == {0: 5, 1: 1, 2: 1}
    rep = ds.report
    assert rep["duplicates_dropped"] == 1 and rep["items_without_meta"] == 1
    assert rep["k_core_dropped"] == 3 and rep["images_found"] == 3
    assert sum(rep["malformed"].values()) == 4 + 3
    texts = ds.item_texts()
    b3 = ds.item_ids.index("B003")
    assert texts[b3] == "Product 3 Deluxe Baby Nursery Kind3 Soft cotton. Item 3."  # no brand
    b1 = ds.item_ids.index("B001")
    assert texts[b1] == "Product 1 Deluxe Brand1 Baby Nursery Kind1 Soft cotton. Item 1."
    assert texts[ds.item_ids.index("B007")] == ""


def test_load_amazon_heterodata_contract(raw):
    data = load_amazon(raw, "Baby", images=raw / "images")
    validate(data, require=("held_out",))
    store = data[INTERACTS]
    assert store.edge_index.size(1) == 12 * 5
    assert store.val_edge_index.size(1) == 12 and store.test_edge_index.size(1) == 12
    assert store.time.numel() == store.edge_index.size(1)
    assert data["item"].asin[0] == "B000" and len(data["item"].text) == 10
    paths = data["item"].image_path
    assert paths[0].endswith("B000.jpg") and paths[2] is None
    # per-user split is seeded: same seed same split, other seed another one
    again = load_amazon(raw, "Baby", images=raw / "images")
    assert torch.equal(again[INTERACTS].test_edge_index, store.test_edge_index)
    other = load_amazon(raw, "Baby", seed=1)
    assert not torch.equal(other[INTERACTS].test_edge_index, store.test_edge_index)


def test_require_meta_drops_items_without_metadata(raw):
    ds = build_amazon(raw, "Baby", require_meta=True)
    assert "B007" not in ds.item_ids
    assert ds.report["interactions_without_meta_dropped"] > 0


def test_error_policy_stops_the_build(raw):
    with pytest.raises(MalformedLineError, match="ratings_Baby.csv:5:"):
        build_amazon(raw, "Baby", on_error="error")


def test_nothing_survives(tmp_path):
    p = tmp_path / "ratings_X.csv"
    p.write_text("a,b,1,1\nc,d,1,1\n")
    with pytest.raises(ValueError, match="5-core"):
        build_amazon(interactions=p)


def test_export_layout(raw, tmp_path):
    ds = build_amazon(raw, "Baby", images=raw / "images")
    out = ds.export_mmrec(tmp_path / "baby", "baby")
    lines = out["inter"].read_text().splitlines()
    assert lines[0].split("\t") == list(INTER_COLUMNS)
    assert len(lines) == 1 + 12 * 7
    first = lines[1].split("\t")
    assert len(first) == 5 and first[0] == "0"
    imap = [line.split("\t") for line in out["item_map"].read_text().splitlines()]
    assert imap[0] == ["asin", "itemID"] and imap[1] == ["B000", "0"]
    umap = [line.split("\t") for line in out["user_map"].read_text().splitlines()]
    assert umap[0] == ["user_id", "userID"] and umap[1] == ["U00", "0"]
    with open(out["item_meta"], newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["text"] for r in rows] == ds.item_texts()
    assert rows[1]["categories"] == "Baby > Nursery > Kind1"
    texts, images = read_item_meta(tmp_path / "baby")
    assert texts == ds.item_texts() and images[1].endswith("B001.png") and images[2] is None
    report = json.loads(out["report"].read_text())
    assert report["users"] == 12 and report["items"] == 10
    assert not list((tmp_path / "baby").glob(".*.tmp"))


def test_read_item_meta_reports_bad_rows(tmp_path):
    (tmp_path / "item_meta.csv").write_text("itemID,asin,text\n0,A,x\n2,B,y\n")
    with pytest.raises(MalformedLineError, match=r"item_meta.csv:3: itemID 2 out of order"):
        read_item_meta(tmp_path)


def test_round_trip_into_load_mmrec(raw, tmp_path):
    from mllmrec_pyg.data.mmrec import load_mmrec
    from mllmrec_pyg.encode import ITEM_FEATURES_FILE, USER_FEATURES_FILE, save_features

    ds = build_amazon(raw, "Baby")
    direct = ds.to_heterodata()
    folder = tmp_path / "baby"
    ds.export_mmrec(folder, "baby")
    rng = np.random.default_rng(0)
    xi = rng.standard_normal((ds.num_items, 8)).astype(np.float32)
    xu = rng.standard_normal((ds.num_users, 8)).astype(np.float32)
    save_features(xi, folder / ITEM_FEATURES_FILE)
    save_features(xu, folder / USER_FEATURES_FILE)
    loaded = load_mmrec(folder)
    assert loaded["user"].num_nodes == ds.num_users and loaded["item"].num_nodes == ds.num_items

    def triples(data, key, with_time=False):
        ei = data[INTERACTS][key]
        if with_time:
            return set(zip(ei[0].tolist(), ei[1].tolist(), data[INTERACTS].time.tolist()))
        return set(zip(ei[0].tolist(), ei[1].tolist()))

    assert triples(loaded, "edge_index", True) == triples(direct, "edge_index", True)
    for key in ("val_edge_index", "test_edge_index"):
        assert triples(loaded, key) == triples(direct, key)
    assert torch.allclose(loaded["item"].x, torch.from_numpy(xi))
    assert torch.allclose(loaded["user"].x, torch.from_numpy(xu))
