"""Faults a user meets: corrupted checkpoints, bad numbers, bad options, small catalogs.

Each case is driven the way a user hits it (the ``mllmrec`` command or the
public API) and must end in one clear line naming what is wrong.
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli_error

from mllmrec_pyg.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_meta
from mllmrec_pyg.cli import main
from mllmrec_pyg.data import load_mmrec
from mllmrec_pyg.data.split import per_user_split, to_heterodata
from mllmrec_pyg.nn import BPRMF, ItemLightGCN
from mllmrec_pyg.train import TrainConfig, Trainer, save_checkpoint, seed_everything


def write_folder(folder: Path, num_users: int = 30, num_items: int = 40, per_user: int = 8):
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(num_users), per_user)
    items = np.concatenate(
        [rng.choice(num_items, per_user, replace=False) for _ in users[::per_user]]
    )
    labels = per_user_split(users, seed=0)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["userID\titemID\trating\ttimestamp\tx_label\n"]
    lines += [
        f"{u}\t{i}\t5\t{n}\t{lab}\n" for n, (u, i, lab) in enumerate(zip(users, items, labels))
    ]
    (folder / "shop.inter").write_text("".join(lines))
    return folder


def small_data():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(30), 8)
    items = np.concatenate([rng.choice(40, 8, replace=False) for _ in range(30)])
    return to_heterodata(users, items, per_user_split(users, seed=0), 30, 40)


def flip_bytes(path: Path, count: int = 400) -> None:
    """Flip ``count`` bytes in the middle of the file's largest tensor (stored uncompressed)."""
    with zipfile.ZipFile(path) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    # the local header is 30 bytes + name + extra field; the tensor bytes follow it
    name_len = int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len + info.file_size // 4
    for i in range(start, start + min(count, info.file_size // 2)):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))


# -- checkpoints ------------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    data = small_data()
    seed_everything(0)
    model = BPRMF.from_data(data)
    return save_checkpoint(model, tmp_path / "bpr.pt", data), data


def test_an_intact_checkpoint_loads(saved):
    path, data = saved
    assert read_checkpoint_meta(path)["model"] == "bpr"
    assert isinstance(load_checkpoint(path, data), BPRMF)


def test_a_bit_flipped_checkpoint_is_refused_with_its_path(saved):
    path, data = saved
    flip_bytes(path)
    with pytest.raises(CheckpointError, match=rf"{path.name}.*(corrupted|not a readable)"):
        load_checkpoint(path, data)


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "truncated"),
        (lambda p: p.write_text("hello, not a checkpoint\n"), "not a readable"),
        (lambda p: torch.save({"weights": torch.ones(3)}, p), "not a mllmrec-pyg model"),
    ],
    ids=["empty", "truncated", "text", "foreign"],
)
def test_damaged_or_foreign_files_get_one_line_naming_the_file(saved, damage, expected):
    path, data = saved
    damage(path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, data)
    message = str(err.value)
    assert str(path) in message and expected in message and "\n" not in message


def test_a_corrupted_resumable_state_stops_the_cli_with_a_hint(tmp_path, capsys):
    folder = write_folder(tmp_path / "shop")
    state = tmp_path / "state"
    argv = ["train", "--model", "bpr", "--data-dir", str(folder), "--epochs", "2"]
    argv += ["--checkpoint-dir", str(state), "--no-progress"]
    assert main(argv) == 0
    flip_bytes(state / "last.pt")
    err = cli_error(capsys, argv)
    assert "last.pt" in err and "--restart" in err
    # --restart trains from the start instead of resuming the damaged state
    assert main([*argv, "--restart"]) == 0


# -- numbers ----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), -0.5, float("inf")])
def test_item_lightgcn_refuses_non_finite_or_negative_weights(bad):
    x = torch.randn(4, 3)
    edge_index = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]])
    weight = torch.tensor([1.0, bad, 0.5, 1.0])
    with pytest.raises(ValueError, match=r"edge_weight must be finite and >= 0.*edge 1"):
        ItemLightGCN(num_layers=1)(x, edge_index, weight)
    adj = torch.sparse_coo_tensor(edge_index.flip(0), weight, (4, 4))
    with pytest.raises(ValueError, match="adjacency values must be finite"):
        ItemLightGCN(num_layers=1)(x, adj)


# -- options ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--lr", "0"], "lr must be positive"),
        (["--epochs", "0"], "epochs must be >= 1"),
        (["--alpha", "2"], "alpha must be a number in [-1, 1]"),
        (["--hidden-dim", "8"], "--hidden-dim does not apply to --model bpr"),
        (["--set", "no_such_field=1"], "unknown config field"),
    ],
)
def test_bad_options_are_refused_before_any_work(tmp_path, capsys, flags, expected):
    argv = ["train", "--model", "bpr", "--data-dir", str(tmp_path / "never-read"), *flags]
    start = time.perf_counter()
    err = cli_error(capsys, argv, code=2)
    assert expected in err
    assert time.perf_counter() - start < 5  # nothing was loaded, encoded or built


def test_usage_errors_print_no_traceback_and_debug_shows_one(tmp_path, capsys):
    folder = tmp_path / "missing"
    err = cli_error(capsys, ["train", "--model", "bpr", "--data-dir", str(folder)])
    assert "neither" in err and str(folder) in err
    with pytest.raises(FileNotFoundError):
        main(["--debug", "train", "--model", "bpr", "--data-dir", str(folder)])


def test_a_file_given_for_a_folder_and_an_empty_inter_file(tmp_path, capsys):
    folder = write_folder(tmp_path / "shop")
    err = cli_error(capsys, ["train", "--model", "pop", "--data-dir", str(folder / "shop.inter")])
    assert "is a file" in err and str(folder) in err
    (folder / "shop.inter").write_text("")
    err = cli_error(capsys, ["train", "--model", "pop", "--data-dir", str(folder)])
    assert "shop.inter: the file is empty" in err


def test_a_40_item_catalog_trains_and_reports_cutoffs_that_fit(tmp_path, capsys):
    folder = write_folder(tmp_path / "shop", num_items=40)
    argv = ["train", "--model", "bpr", "--data-dir", str(folder), "--epochs", "2", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "test recall@20" in out
    assert main([*argv, "--ks", "5", "10"]) == 0
    assert "test recall@10" in capsys.readouterr().out
    err = cli_error(capsys, [*argv, "--ks", "60"], code=2)
    assert "no metric cut-off" in err


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for expected in (
        "--lr LR Adam learning rate (default: 0.001)",
        "(default: 2048)",
        "the model (default: mllmrec",
        "(default: 20)",
    ):
        assert expected in text, expected


# -- users without training interactions ---------------------------------------------------------
def test_users_with_only_held_out_items_are_left_out_of_the_metrics(caplog):
    data = small_data()
    store = data["user", "interacts", "item"]
    # user 0 loses every training pair: all its interactions are now held out
    keep = store.edge_index[0] != 0
    store.edge_index = store.edge_index[:, keep]
    seed_everything(0)
    trainer = Trainer(BPRMF.from_data(data), data, TrainConfig(epochs=1, show_progress=False))
    assert trainer.cold_start_users == 1
    assert "no training interaction" in caplog.text
    assert 0 not in trainer.evaluator.users("test").tolist()
    result = trainer.fit()
    assert 0.0 <= result.test["recall@20"] <= 1.0


def test_load_mmrec_names_a_file_passed_for_its_folder(tmp_path):
    folder = write_folder(tmp_path / "shop")
    with pytest.raises(NotADirectoryError, match="is a file"):
        load_mmrec(folder / "shop.inter")
