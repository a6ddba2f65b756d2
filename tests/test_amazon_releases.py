"""The 2014, 2018 and 2023 Amazon releases, as downloaded, read into the same dataset.

One small catalogue (12 users x 10 items, every user buys 7 items, so all of it is
5-core) is written here in each release's own file names, layouts and field names,
gzipped and not, and must give the same interactions, split and item texts.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from conftest import assert_same_inputs, cli_error, inputs_with_other_held_out

from mllmrec_pyg.data.amazon import (
    INCOMPLETE_FILE,
    MalformedLineError,
    build_amazon,
    find_category_files,
    item_text,
    read_reviews_json,
)
from mllmrec_pyg.data.schema import INTERACTS

ROWS = [
    (f"U{u:02d}", f"B{(u + j) % 10:03d}", 1 + (u + j) % 5, 1_400_000_000 + 86_400 * (10 * u + j))
    for u in range(12)
    for j in range(7)
]
CATEGORY = ["Toys & Games", "Puzzles", "Jigsaw"]


def _item(k: int) -> dict:
    return {
        "title": f"Puzzle {k} <b>Deluxe</b>",
        "brand": f"Brand{k % 3}",
        "features": [f"{500 + k} pieces", "Made of &quot;recycled&quot; card"],
        "description": [f"A puzzle of {k} cats.", "Glue\nincluded."],
    }


def _write(path: Path, lines: list[str], gz: bool) -> None:
    data = ("\n".join(lines) + "\n").encode()
    if gz:
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def write_release(root: Path, release: str, reviews: bool = True, gz: bool = False) -> None:
    """The catalogue in ``release``'s files under ``root`` (category ``Toys``)."""
    root.mkdir(parents=True, exist_ok=True)
    meta: list[str] = []
    for k in range(10):
        it, asin = _item(k), f"B{k:03d}"
        if release == "2014":  # Python literals, a list of category paths, a string description
            rec = {
                "asin": asin,
                "title": it["title"],
                "brand": it["brand"],
                "categories": [CATEGORY, ["Other"]],
                "description": " ".join(it["description"]),
                "imUrl": "http://example.invalid/x.jpg",
            }
            meta.append(repr(rec))
        elif release == "2018":  # JSON, one category path, lists of features and paragraphs
            rec = {
                "asin": asin,
                "title": it["title"],
                "brand": it["brand"],
                "category": CATEGORY,
                "feature": it["features"],
                "description": it["description"],
                "image": [],
                "main_cat": "Toys &amp; Games",
            }
            meta.append(json.dumps(rec))
        else:  # 2023: parent_asin, store, categories, features, details, images as dicts
            rec = {
                "parent_asin": asin,
                "main_category": "Toys & Games",
                "title": it["title"],
                "store": it["brand"],
                "categories": CATEGORY,
                "features": it["features"],
                "details": {"Material": "Card", "Brand": it["brand"]},
                "description": it["description"],
                "images": [{"large": "http://example.invalid/x.jpg", "variant": "MAIN"}],
            }
            meta.append(json.dumps(rec))
    suffix = ".gz" if gz else ""
    meta_name = "meta_Toys.jsonl" if release == "2023" else "meta_Toys.json"
    _write(root / (meta_name + suffix), meta, gz)
    if reviews:
        lines = []
        for u, i, r, t in ROWS:
            if release == "2023":
                rec = {
                    "rating": float(r),
                    "title": "ok",
                    "text": "fine",
                    "images": [],
                    "asin": i + "-V",  # a variant: items are parent products
                    "parent_asin": i,
                    "user_id": u,
                    "timestamp": t * 1000 + 123,  # milliseconds
                    "helpful_vote": 0,
                    "verified_purchase": True,
                }
            else:
                rec = {
                    "reviewerID": u,
                    "asin": i,
                    "overall": float(r),
                    "unixReviewTime": t,
                    "reviewTime": "01 1, 2014",
                    "verified": True,
                }
            lines.append(json.dumps(rec))
        name = {"2014": "reviews_Toys_5.json", "2018": "Toys_5.json", "2023": "Toys.jsonl"}
        _write(root / (name[release] + suffix), lines, gz)
    else:  # ratings-only CSV files
        if release == "2014":
            lines = [f"{u},{i},{r}.0,{t}" for u, i, r, t in ROWS]
            _write(root / ("ratings_Toys.csv" + suffix), lines, gz)
        elif release == "2018":
            lines = [f"{i},{u},{r}.0,{t}" for u, i, r, t in ROWS]
            _write(root / ("Toys.csv" + suffix), lines, gz)
        else:
            lines = ["user_id,parent_asin,rating,timestamp"]
            lines += [f"{u},{i},{r}.0,{t * 1000}" for u, i, r, t in ROWS]
            _write(root / ("Toys.csv" + suffix), lines, gz)


def triples(data):
    store = data[INTERACTS]
    out = {}
    for key in ("edge_index", "val_edge_index", "test_edge_index"):
        ei = store[key]
        out[key] = sorted(zip(ei[0].tolist(), ei[1].tolist()))
    out["time"] = sorted(zip(store.edge_index[0].tolist(), store.time.tolist()))
    return out


def expected_text(release: str, k: int) -> str:
    """An independent spelling-out of D^t for item k of each release."""
    title = f"Puzzle {k} Deluxe"
    desc = f"A puzzle of {k} cats. Glue included."
    cats = "Toys & Games Puzzles Jigsaw"
    feats = f'{500 + k} pieces Made of "recycled" card'
    if release == "2014":
        return f"{title} Brand{k % 3} {cats} {desc}"
    if release == "2018":
        return f"{title} Brand{k % 3} {cats} {feats} {desc}"
    return f"{title} Brand{k % 3} {cats} {feats} Material: Card {desc}"


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("reviews", [True, False])
@pytest.mark.parametrize("release", ["2014", "2018", "2023"])
def test_every_release_reads_to_the_same_dataset(tmp_path, release, reviews, gz):
    root = tmp_path / release
    write_release(root, release, reviews=reviews, gz=gz)
    inter, meta = find_category_files(root, "Toys")
    assert meta is not None and meta.name.startswith("meta_Toys")
    ds = build_amazon(root, "Toys")
    assert ds.report["release"] == release
    assert ds.item_ids == [f"B{k:03d}" for k in range(10)]
    assert ds.user_ids == [f"U{u:02d}" for u in range(12)]
    assert ds.item_texts() == [expected_text(release, k) for k in range(10)]
    # the same interactions, times (seconds) and split as the 2014 reviews
    ref_root = tmp_path / "ref"
    write_release(ref_root, "2014")
    ref = build_amazon(ref_root, "Toys").to_heterodata()
    assert triples(ds.to_heterodata()) == triples(ref)


def test_gzip_is_detected_from_the_bytes_not_the_name(tmp_path):
    write_release(tmp_path, "2018", gz=True)
    plain = tmp_path / "Toys_5.json"
    (tmp_path / "Toys_5.json.gz").rename(plain)  # gzip data under a plain name
    assert read_reviews_json(plain).users.size == len(ROWS)


def test_item_text_cut_to_max_words():
    long = " ".join(f"w{i}" for i in range(500))
    assert len(item_text("T", description=long).split()) == 160
    assert len(item_text("T", description=long, max_words=None).split()) == 501
    assert item_text("T", description=long, max_words=3) == "T w0 w1"


def _reviews_file(tmp_path: Path, extra: str) -> Path:
    lines = [
        json.dumps({"reviewerID": u, "asin": i, "overall": r, "unixReviewTime": t})
        for u, i, r, t in ROWS[:3]
    ]
    lines.insert(1, extra)
    path = tmp_path / "Toys_5.json"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "line, reason",
    [
        ('{"reviewerID": "U1", "asin": "B1", "overall": NaN, "unixReviewTime": 1}', "not finite"),
        ('{"reviewerID": "U1", "asin": "B1", "overall": Infinity, "unixReviewTime": 1}', "finite"),
        (
            '{"reviewerID": "U1", "asin": {"id": "B1"}, "overall": 5, "unixReviewTime": 1}',
            "asin is a dict",
        ),
        (
            '{"reviewerID": 123, "asin": "B1", "overall": 5, "unixReviewTime": 1}',
            "reviewerID is a int",
        ),
        (
            '{"reviewerID": "U1", "asin": "B1", "overall": true, "unixReviewTime": 1}',
            "not a number",
        ),
        ('{"reviewerID": "U1", "asin": "B1", "overall": 5, "unixReviewTime": 1.5}', "integer"),
    ],
)
def test_bad_review_values_are_refused_with_file_and_line(tmp_path, line, reason):
    path = _reviews_file(tmp_path, line)
    raw = read_reviews_json(path)  # skipped and counted
    assert raw.users.size == 3 and raw.issues.count == 1
    assert f"{path}:2:" in raw.issues.examples[0] and reason in raw.issues.examples[0]
    with pytest.raises(MalformedLineError, match=f"{path}:2: .*{reason}"):
        read_reviews_json(path, on_error="error")


def test_a_bom_is_accepted_and_the_first_review_kept(tmp_path):
    path = _reviews_file(
        tmp_path, json.dumps({"reviewerID": "U9", "asin": "B9", "overall": 1, "unixReviewTime": 5})
    )
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    raw = read_reviews_json(path)
    assert raw.users.size == 4 and raw.issues.count == 0 and raw.users[0] == ROWS[0][0]


def test_a_non_utf8_byte_names_file_and_line(tmp_path):
    path = _reviews_file(tmp_path, "")
    path.write_bytes(path.read_bytes().replace(b'"U00"', b'"U\xff0"', 1))
    with pytest.raises(MalformedLineError, match=f"{path}:1: not UTF-8"):
        read_reviews_json(path, on_error="error")


def test_truncated_gzip_is_one_line_naming_the_file(tmp_path, capsys):
    write_release(tmp_path, "2018", gz=True)
    path = tmp_path / "Toys_5.json.gz"
    path.write_bytes(path.read_bytes()[:-40])  # a download cut short
    with pytest.raises(MalformedLineError, match=r"Toys_5.json.gz:\d+: the gzip data ends early"):
        read_reviews_json(path)
    err = cli_error(
        capsys,
        [
            "prepare-amazon",
            "--root",
            str(tmp_path),
            "--category",
            "Toys",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert "Toys_5.json.gz" in err and "download it again" in err


def test_an_interrupted_prepare_amazon_folder_is_refused(tmp_path, capsys):
    from mllmrec_pyg.cli import main

    write_release(tmp_path / "raw", "2023")
    out = tmp_path / "toys"
    assert (
        main(
            [
                "prepare-amazon",
                "--root",
                str(tmp_path / "raw"),
                "--category",
                "Toys",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert not (out / INCOMPLETE_FILE).exists()
    report = json.loads((out / "ingest_report.json").read_text())
    assert set(report["files"]) == {
        "toys.inter",
        "i_id_mapping.csv",
        "u_id_mapping.csv",
        "item_meta.csv",
    }
    # killed after the .inter and the item map: the marker stays, the rest is missing
    (out / INCOMPLETE_FILE).write_text("pid 1")
    (out / "item_meta.csv").unlink()
    stale = out / ".u_id_mapping.csv.999999999.tmp"
    stale.write_text("half")
    argv = ["train", "--model", "pop", "--data-dir", str(out), "--epochs", "1"]
    err = cli_error(capsys, argv)
    assert str(out) in err and "did not finish" in err and "prepare-amazon again" in err
    # without the marker, the report's list of files still tells the folder is incomplete
    (out / INCOMPLETE_FILE).unlink()
    err = cli_error(capsys, argv)
    assert "item_meta.csv missing" in err
    # running prepare-amazon again completes the folder and clears the dead writer's file
    assert (
        main(
            [
                "prepare-amazon",
                "--root",
                str(tmp_path / "raw"),
                "--category",
                "Toys",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert not stale.exists() and (out / "item_meta.csv").is_file()
    assert main(argv + ["--no-progress"]) == 0


@pytest.mark.parametrize("user_text", ["preferences", "history"])
def test_no_held_out_pair_reaches_an_input_on_a_prepared_amazon_folder(tmp_path, user_text):
    """The Amazon path end to end: a folder written by ``prepare-amazon``, its item and user
    text, their vectors, the refined graph and the compared LangGCN's propagated inputs are
    all identical when the valid/test pairs are replaced by other pairs."""
    import torch

    from mllmrec_pyg import pipeline
    from mllmrec_pyg.cli import main
    from mllmrec_pyg.config import DataConfig, GraphConfig, TextConfig
    from mllmrec_pyg.nn import build_model

    write_release(tmp_path / "raw", "2018")
    out = tmp_path / "toys"
    argv = ["prepare-amazon", "--root", str(tmp_path / "raw"), "--category", "Toys"]
    assert main([*argv, "--out", str(out)]) == 0
    data = pipeline.load_data(DataConfig(str(out)))
    text, graph = TextConfig(user_text=user_text), GraphConfig(alpha=0.5, k_c=3, k_s=3)
    built = inputs_with_other_held_out(data, text, graph, tmp_path / "cache", seed=3)
    assert_same_inputs(*built)
    compared = dict(item_graph_mode="both", input_propagation=True, hidden_dim=0)
    # and the ranking terms read from training pairs only: the history readout, the prior,
    # the popularity term, the text-nearest interest items
    terms = dict(history_weight=0.4, cooccurrence_weight=0.2, popularity_weight=0.3)
    models = []
    for d in built:
        torch.manual_seed(0)
        models.append(
            build_model(
                "langgcn",
                d,
                num_negatives=0,
                edge_dropout=0.8,
                interest_items=2,
                **compared,
                **terms,
            ).eval()
        )
    for name in ("user_lang", "item_lang"):
        assert torch.equal(getattr(models[0], name), getattr(models[1], name))
    assert torch.equal(models[0].ui_adj_t.to_dense(), models[1].ui_adj_t.to_dense())
    users = torch.arange(data["user"].num_nodes)
    with torch.no_grad():
        assert torch.equal(models[0].scorer()(users), models[1].scorer()(users))


def _prepare(root: Path, out: Path, *flags: str) -> list[str]:
    return ["prepare-amazon", "--root", str(root), "--category", "Toys", "--out", str(out), *flags]


@pytest.mark.parametrize(
    "line, reason",
    [
        (
            '{"reviewerID": "U01", "asin": "B001", "overall": NaN, "unixReviewTime": 1}',
            "not finite",
        ),
        (
            '{"reviewerID": "U01", "asin": {"id": "B001"}, "overall": 4, "unixReviewTime": 1}',
            "asin is a dict",
        ),
        ('{"reviewerID": 12, "asin": "B001", "overall": 4, "unixReviewTime": 1}', "reviewerID is"),
    ],
    ids=["nan-rating", "dict-asin", "int-reviewer"],
)
def test_prepare_amazon_counts_a_bad_review_value_or_stops_at_its_line(
    tmp_path, capsys, line, reason
):
    from mllmrec_pyg.cli import main

    root = tmp_path / "raw"
    write_release(root, "2018")
    reviews = root / "Toys_5.json"
    lines = reviews.read_text().splitlines()
    lines.insert(2, line)  # line 3 of the file
    reviews.write_text("\n".join(lines) + "\n")
    assert main(_prepare(root, tmp_path / "toys")) == 0
    assert "malformed lines skipped: 1" in capsys.readouterr().out
    report = json.loads((tmp_path / "toys" / "ingest_report.json").read_text())
    assert report["interactions"] == len(ROWS)  # every good review kept, the bad one not
    err = cli_error(capsys, _prepare(root, tmp_path / "strict", "--on-error", "error"))
    assert f"{reviews}:3: " in err and reason in err


def test_loading_an_interrupted_folder_from_python_is_refused(tmp_path):
    from mllmrec_pyg.cli import main
    from mllmrec_pyg.data import load_mmrec

    write_release(tmp_path / "raw", "2014")
    out = tmp_path / "toys"
    assert main(_prepare(tmp_path / "raw", out)) == 0
    assert load_mmrec(out)["user"].num_nodes == 12
    (out / INCOMPLETE_FILE).write_text("pid 1")  # killed while writing the folder again
    with pytest.raises(ValueError, match=f"{out}: prepare-amazon did not finish"):
        load_mmrec(out)
