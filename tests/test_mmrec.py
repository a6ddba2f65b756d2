"""MMRec-format folders: the authors' layout loads as is; bad files fail by name and line."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from mllmrec_pyg.data import load_mmrec
from mllmrec_pyg.data.mmrec import MMRecFormatError
from mllmrec_pyg.data.schema import INTERACTS, validate

HEADER = "userID\titemID\trating\ttimestamp\tx_label\n"
ROWS = [  # user, item, label
    (0, 0, 0),
    (0, 1, 0),
    (0, 2, 1),
    (0, 3, 2),
    (1, 1, 0),
    (1, 2, 0),
    (1, 4, 1),
    (1, 0, 2),
    (2, 3, 0),
    (2, 4, 0),
    (2, 0, 1),
    (2, 2, 2),
]


def write_folder(path, rows=ROWS, header=HEADER, name="baby", feats=("image_text", "user")):
    path.mkdir(parents=True, exist_ok=True)
    lines = [header] + [f"{u}\t{i}\t5.0\t{1000 + n}\t{lab}\n" for n, (u, i, lab) in enumerate(rows)]
    (path / f"{name}.inter").write_text("".join(lines))
    rng = np.random.default_rng(0)
    if "image_text" in feats:
        np.save(path / "image_text_feat.npy", rng.normal(size=(5, 384)).astype(np.float32))
    if "user" in feats:
        np.save(path / "user_preferences_feat.npy", rng.normal(size=(3, 384)).astype(np.float32))
    if "mmrec" in feats:
        np.save(path / "text_feat.npy", rng.normal(size=(5, 384)).astype(np.float32))
        np.save(path / "image_feat.npy", rng.normal(size=(5, 4096)).astype(np.float32))
    return path


def test_authors_layout_loads_as_is(tmp_path):
    folder = write_folder(tmp_path / "baby", feats=("image_text", "user", "mmrec"))
    data = load_mmrec(folder)
    validate(data, require=["item.x", "user.x", "held_out"])
    store = data[INTERACTS]
    assert data["user"].num_nodes == 3 and data["item"].num_nodes == 5
    assert sorted(map(tuple, store.edge_index.t().tolist())) == [
        (0, 0),
        (0, 1),
        (1, 1),
        (1, 2),
        (2, 3),
        (2, 4),
    ]
    assert sorted(map(tuple, store.val_edge_index.t().tolist())) == [(0, 2), (1, 4), (2, 0)]
    assert sorted(map(tuple, store.test_edge_index.t().tolist())) == [(0, 3), (1, 0), (2, 2)]
    assert store.time.tolist() == [1000, 1001, 1004, 1005, 1008, 1009]
    # the MLLM description features win over MMRec's text features
    expect = np.load(folder / "image_text_feat.npy")
    assert torch.equal(data["item"].x, torch.from_numpy(expect))
    assert data.feature_files == {
        "item": ["image_text_feat.npy"],
        "user": ["user_preferences_feat.npy"],
    }
    assert data.name == "baby"


def test_mmrec_feature_choices(tmp_path):
    folder = write_folder(tmp_path / "sports", feats=("mmrec",))
    assert load_mmrec(folder).feature_files == {"item": ["text_feat.npy"]}
    both = load_mmrec(folder, item_features="text+image")
    assert both["item"].x.shape == (5, 384 + 4096)
    assert "x" not in load_mmrec(folder, item_features="none")["item"]
    with pytest.raises(FileNotFoundError, match="image_text_feat.npy"):
        load_mmrec(folder, item_features="image_text")
    with pytest.raises(FileNotFoundError, match="user_preferences_feat.npy"):
        load_mmrec(folder, user_features="preferences")


def test_missing_columns(tmp_path):
    folder = write_folder(
        tmp_path / "a", header="userID\titemID\trating\ttimestamp\n", rows=[(0, 0, 0)]
    )
    (folder / "baby.inter").write_text("userID\titemID\trating\ttimestamp\n0\t0\t1\t1\n")
    with pytest.raises(MMRecFormatError, match=r"baby.inter:1: missing column\(s\) \['x_label'\]"):
        load_mmrec(folder)


@pytest.mark.parametrize(
    "line, message",
    [
        ("u7\t1\t5.0\t9\t0", r"baby.inter:14: column 'userID' must be an integer, got 'u7'"),
        ("1\t1.5\t5.0\t9\t0", r"baby.inter:14: column 'itemID' must be an integer, got '1.5'"),
        ("1\t1\t5.0\t9\t3", r"baby.inter:14: x_label must be 0 \(train\), 1 \(valid\) or 2"),
        ("1\t1\t5.0\t9\tvalid", r"baby.inter:14: column 'x_label' must be an integer"),
        ("1\t-1\t5.0\t9\t0", r"baby.inter:14: negative itemID -1"),
        ("1\t1\t5.0\t0", r"baby.inter:14: 4 tab-separated field\(s\), the header has 5"),
    ],
)
def test_bad_inter_rows_name_the_line(tmp_path, line, message):
    folder = write_folder(tmp_path / "b")
    with open(folder / "baby.inter", "a") as fh:
        fh.write(line + "\n")
    with pytest.raises(MMRecFormatError, match=message):
        load_mmrec(folder)


def test_feature_rows_must_match_ids(tmp_path):
    folder = write_folder(tmp_path / "c")
    np.save(folder / "image_text_feat.npy", np.zeros((4, 384), np.float32))
    with pytest.raises(
        MMRecFormatError, match=r"image_text_feat.npy: 4 rows, but the .inter ids give 5 items"
    ):
        load_mmrec(folder)
    folder = write_folder(tmp_path / "d")
    np.save(folder / "user_preferences_feat.npy", np.zeros((7, 384), np.float32))
    with pytest.raises(MMRecFormatError, match=r"7 rows, but the .inter ids give 3 users"):
        load_mmrec(folder)


def test_nan_features_name_the_rows(tmp_path):
    folder = write_folder(tmp_path / "e")
    x = np.ones((5, 384), np.float32)
    x[3, 7] = np.nan
    np.save(folder / "image_text_feat.npy", x)
    with pytest.raises(MMRecFormatError, match=r"NaN or inf in 1 row\(s\): \[3\]"):
        load_mmrec(folder)


def test_pickled_arrays_are_refused(tmp_path):
    folder = write_folder(tmp_path / "f")
    np.save(
        folder / "image_text_feat.npy", np.array([{"a": 1}] * 5, dtype=object), allow_pickle=True
    )
    with pytest.raises(MMRecFormatError, match="not a plain numeric"):
        load_mmrec(folder)


def test_several_inter_files_need_a_name(tmp_path):
    folder = write_folder(tmp_path / "g")
    (folder / "other.inter").write_text(HEADER + "0\t0\t1\t1\t0\n")
    with pytest.raises(MMRecFormatError, match="several .inter files"):
        load_mmrec(folder)
    assert load_mmrec(folder, name="baby")["item"].num_nodes == 5


def test_users_without_training_and_empty_splits_are_logged(tmp_path, caplog):
    rows = [(0, 0, 0), (0, 1, 0), (1, 1, 2), (0, 2, 2), (1, 2, 2)]
    folder = write_folder(tmp_path / "h", rows=rows, feats=())
    with caplog.at_level(logging.WARNING):
        data = load_mmrec(folder)
    assert "1 of 2 users have no training interaction" in caplog.text
    assert "the valid split (x_label 1) is empty" in caplog.text
    assert data[INTERACTS].val_edge_index.shape == (2, 0)


def test_duplicate_rows_keep_the_first(tmp_path, caplog):
    rows = ROWS + [(0, 0, 2)]
    folder = write_folder(tmp_path / "i", rows=rows)
    with caplog.at_level(logging.WARNING):
        data = load_mmrec(folder)
    assert "1 duplicate (userID, itemID) row(s)" in caplog.text
    assert (0, 0) not in set(map(tuple, data[INTERACTS].test_edge_index.t().tolist()))
