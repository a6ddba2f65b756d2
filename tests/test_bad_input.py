"""Bad input the way a user meets it: unwritable outputs, damaged caches and files,
malformed settings, API misuse, a busy checkpoint folder.

Each case ends in correct behaviour or in one line naming the file, line, id or
option at fault, before any long work, and loses nothing already finished.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli_error
from test_faults import flip_bytes, small_data, write_folder

from mllmrec_pyg.checkpoint import CheckpointError, read_checkpoint_meta
from mllmrec_pyg.cli import main
from mllmrec_pyg.data import load_mmrec, load_movielens
from mllmrec_pyg.data.mmrec import read_inter
from mllmrec_pyg.encode import encode_texts, encode_to_file
from mllmrec_pyg.fields import FieldError, check_fields
from mllmrec_pyg.nn import BPRMF
from mllmrec_pyg.nn.registry import MODELS, make_config
from mllmrec_pyg.train import TrainConfig, seed_everything
from mllmrec_pyg.tuning import TUNED_FORMAT

BPR = ["train", "--model", "bpr", "--no-progress"]


def shop_with_features(folder: Path) -> Path:
    """:func:`write_folder` (30 users, 40 item ids) with MMRec feature files."""
    write_folder(folder)
    rng = np.random.default_rng(1)
    np.save(folder / "image_text_feat.npy", rng.normal(size=(40, 8)).astype(np.float32))
    np.save(folder / "user_preferences_feat.npy", rng.normal(size=(30, 8)).astype(np.float32))
    return folder


def edit_line(path: Path, lineno: int, old: bytes, new: bytes) -> None:
    """Replace ``old`` by ``new`` on line ``lineno`` (1-based) of ``path``."""
    lines = path.read_bytes().split(b"\n")
    assert old in lines[lineno - 1]
    lines[lineno - 1] = lines[lineno - 1].replace(old, new, 1)
    path.write_bytes(b"\n".join(lines))


# -- output paths: checked before any work ------------------------------------------------------
@pytest.mark.parametrize("flag", ["--checkpoint", "--json", "--checkpoint-dir"])
def test_an_output_under_a_regular_file_is_refused_before_training(tmp_path, capsys, flag):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    # the data folder does not exist: the output path is checked before any data is read
    argv = [*BPR, "--data-dir", str(tmp_path / "never-read"), flag, str(blocker / "out")]
    start = time.perf_counter()
    err = cli_error(capsys, argv, code=2)
    assert flag in err and str(blocker) in err and "is a file" in err
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize(
    "argv", [["tune", "bpr", "--trials", "1"], ["experiment", "compare", "--models", "bpr"]]
)
def test_a_results_root_under_a_regular_file_is_refused_before_any_work(tmp_path, capsys, argv):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    data = ["--dataset", str(tmp_path / "never-read")]
    err = cli_error(capsys, [*argv, *data, "--out", str(blocker / "results")], code=2)
    assert f"--out {blocker / 'results'}: {blocker} is a file" in err


def test_json_given_a_folder_is_refused_and_a_good_path_is_written(tmp_path, capsys):
    folder = write_folder(tmp_path / "shop")
    argv = [*BPR, "--data-dir", str(folder), "--epochs", "1"]
    err = cli_error(capsys, [*argv, "--json", str(tmp_path)], code=2)
    assert f"--json {tmp_path}: is a folder" in err
    out, ck = tmp_path / "new" / "r.json", tmp_path / "new" / "deeper" / "m.pt"
    assert main([*argv, "--json", str(out), "--checkpoint", str(ck)]) == 0
    assert json.loads(out.read_text())["model"] == "bpr"
    assert read_checkpoint_meta(ck)["model"] == "bpr"


# -- cached feature arrays: verified before reuse ------------------------------------------------
TEXTS = ["a red cup", "a blue bowl", "a green plate", "a steel fork", "a paper napkin"]


def _damage_other_numbers(p: Path) -> None:
    np.save(p, np.random.default_rng(0).normal(size=(5, 384)).astype(np.float32))


def _damage_narrow(p: Path) -> None:
    np.save(p, np.ones((5, 7), dtype=np.float32))


def _damage_nan_row(p: Path) -> None:
    a = np.load(p)
    a[2] = np.nan
    np.save(p, a)


def _damage_float64(p: Path) -> None:
    np.save(p, np.load(p).astype(np.float64))


def _damage_empty(p: Path) -> None:
    p.write_bytes(b"")


def _damage_truncated(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:200])


def _damage_complex(p: Path) -> None:
    np.save(p, np.load(p).astype(np.complex64))


@pytest.mark.parametrize(
    "damage, reason",
    [
        (_damage_other_numbers, "content changed since it was written"),
        (_damage_narrow, "(5, 7)"),
        (_damage_nan_row, "content changed"),
        (_damage_float64, "float64"),
        (_damage_empty, "empty (0 bytes)"),
        (_damage_truncated, "not a readable .npy"),
        (_damage_complex, "real numbers"),
    ],
    ids=["other-numbers", "narrow", "nan-row", "float64", "empty", "truncated", "complex"],
)
def test_a_changed_cached_feature_file_is_noticed_and_encoded_again(
    tmp_path, caplog, damage, reason
):
    path = tmp_path / "item_feat.npy"
    expected = encode_texts(TEXTS, show_progress=False)  # the reference, never cached
    first = encode_to_file(TEXTS, path, show_progress=False)
    assert torch.equal(first, expected)
    damage(path)
    with caplog.at_level(logging.WARNING, logger="mllmrec_pyg.encode"):
        again = encode_to_file(TEXTS, path, show_progress=False)
    assert torch.equal(again, expected)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and str(path) in warned[0] and reason in warned[0], warned
    assert "encoding the texts again" in warned[0]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mllmrec_pyg.encode"):
        assert torch.equal(encode_to_file(TEXTS, path, show_progress=False), expected)
    assert "reusing" in caplog.text  # the rewritten file is reused as it is


def test_a_cache_written_before_arrays_were_recorded_is_checked_then_kept(tmp_path, caplog):
    path = tmp_path / "item_feat.npy"
    expected = encode_to_file(TEXTS, path, show_progress=False)
    side = path.with_name(path.name + ".json")
    old = json.loads(side.read_text())
    for key in ("content_sha256", "shape", "dtype"):  # a sidecar of the earlier format
        old.pop(key)
    side.write_text(json.dumps(old))
    with caplog.at_level(logging.INFO, logger="mllmrec_pyg.encode"):
        assert torch.equal(encode_to_file(TEXTS, path, show_progress=False), expected)
    assert "reusing" in caplog.text and "encoding the texts again" not in caplog.text
    assert json.loads(side.read_text())["content_sha256"]  # recorded now
    # the same earlier sidecar beside a file of another width is not trusted
    side.write_text(json.dumps(old))
    _damage_narrow(path)
    assert torch.equal(encode_to_file(TEXTS, path, show_progress=False), expected)


def test_train_encodes_again_a_cached_feature_file_replaced_by_another_width(tmp_path, caplog):
    root = write_movielens(tmp_path / "ml")
    argv = ["train", "--model", "vbpr", "--dataset", "movielens", "--root", str(root)]
    argv += ["--epochs", "2", "--no-progress", "--cache-dir", str(tmp_path / "cache")]
    first, again = tmp_path / "first.json", tmp_path / "again.json"
    assert main([*argv, "--json", str(first)]) == 0
    (cached,) = (tmp_path / "cache").rglob("item_feat.npy")
    np.save(cached, np.ones((20, 7), dtype=np.float32))  # other numbers of another width
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mllmrec_pyg.encode"):
        assert main([*argv, "--json", str(again)]) == 0
    warned = [r.getMessage() for r in caplog.records if r.name == "mllmrec_pyg.encode"]
    assert len(warned) == 1 and str(cached) in warned[0] and "(20, 7)" in warned[0]
    assert "encoding the texts again" in warned[0]
    assert np.load(cached).shape == (20, 384)
    # trained on the features it first wrote, not on the replaced ones
    assert json.loads(again.read_text())["valid"] == json.loads(first.read_text())["valid"]


# -- resumable state: a damaged best.pt is rewritten ---------------------------------------------
@pytest.mark.parametrize("damage", ["flip", "delete"])
def test_a_damaged_best_checkpoint_is_rewritten_on_resume(tmp_path, capsys, caplog, damage):
    folder = write_folder(tmp_path / "shop")
    state = tmp_path / "state"
    argv = [*BPR, "--data-dir", str(folder), "--epochs", "3", "--checkpoint-dir", str(state)]
    assert main(argv) == 0
    best = state / "best.pt"
    meta = read_checkpoint_meta(best)
    if damage == "flip":
        flip_bytes(best)
        with pytest.raises(CheckpointError, match="corrupted"):
            read_checkpoint_meta(best)
    else:
        best.unlink()
    with caplog.at_level(logging.WARNING, logger="mllmrec_pyg.train"):
        assert main(argv) == 0  # resumes: nothing left to train
    assert any(
        str(best) in r.getMessage() and "rewriting" in r.getMessage() for r in caplog.records
    )
    again = read_checkpoint_meta(best)
    assert again["epoch"] == meta["epoch"] and again["valid"] == meta["valid"]
    saved = torch.load(state / "last.pt", weights_only=True)["best_model"]
    rewritten = torch.load(best, weights_only=True)["state_dict"]
    assert rewritten.keys() == saved.keys()
    assert all(torch.equal(rewritten[k], saved[k]) for k in saved)


# -- one training per checkpoint folder ----------------------------------------------------------
def test_a_second_training_on_a_held_checkpoint_dir_is_refused(tmp_path, capsys):
    folder = write_folder(tmp_path / "shop")
    state = tmp_path / "state"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from mllmrec_pyg.checkpoint import checkpoint_dir_lock\n"
            f"with checkpoint_dir_lock({str(state)!r}):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        argv = [*BPR, "--data-dir", str(folder), "--epochs", "1", "--checkpoint-dir", str(state)]
        err = cli_error(capsys, argv)
        assert f"another training (pid {holder.pid})" in err and str(state) in err
    finally:
        holder.kill()  # the system releases the lock of a killed holder
        holder.wait()
    assert main(argv) == 0
    # one process may take its own lock again (the command holds it around the trainer's)
    assert main(argv) == 0


# -- feature files of an MMRec folder ------------------------------------------------------------
@pytest.mark.parametrize(
    "write, expected",
    [
        (lambda p: p.write_bytes(b""), "the file is empty (0 bytes)"),
        (lambda p: np.save(p, np.ones((40, 8), dtype=np.complex64)), "got dtype complex64"),
        (lambda p: p.write_bytes(p.read_bytes()[:150]), "not a plain numeric .npy array"),
        (lambda p: np.save(p, np.ones((40, 8), dtype=bool)), "got dtype bool"),
    ],
    ids=["empty", "complex", "truncated", "bool"],
)
def test_a_bad_feature_file_is_named_in_one_line(tmp_path, capsys, write, expected):
    folder = shop_with_features(tmp_path / "shop")
    path = folder / "image_text_feat.npy"
    write(path)
    argv = ["train", "--model", "mllmrec", "--data-dir", str(folder), "--epochs", "1"]
    err = cli_error(capsys, [*argv, "--no-progress"])
    assert str(path) in err and expected in err


# -- recommend(): integer ids and k only ---------------------------------------------------------
@pytest.fixture(scope="module")
def bpr_model():
    seed_everything(0)
    return BPRMF.from_data(small_data())


@pytest.mark.parametrize(
    "ids, error, match",
    [
        ([0.7], TypeError, "user ids must be integers"),
        (torch.tensor([True, False]), TypeError, "torch.bool tensor"),
        (torch.tensor([0.0, 1.0]), TypeError, "torch.float32 tensor"),
        (np.array([0.0]), TypeError, "user ids must be integers"),
        ([True], TypeError, "user ids must be integers"),
        (["0"], TypeError, "user ids must be integers"),
        ([2**70], ValueError, r"user id\(s\) \[1180591620717411303424\] outside \[0, 30\)"),
        ([2**63], ValueError, "outside"),
        (torch.tensor([30]), ValueError, "outside"),
        ([-1], ValueError, "outside"),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, (str, type)) else v,
)
def test_recommend_refuses_ids_that_are_not_valid_integers(bpr_model, ids, error, match):
    with pytest.raises(error, match=match):
        bpr_model.recommend(ids, k=3)


@pytest.mark.parametrize(
    "k, error", [(3.5, TypeError), (True, TypeError), ("3", TypeError), (0, ValueError)]
)
def test_recommend_refuses_a_k_that_is_not_a_count_of_items(bpr_model, k, error):
    with pytest.raises(error, match="k"):
        bpr_model.recommend([0], k=k)


def test_recommend_takes_integer_ids_in_any_container(bpr_model):
    reference = bpr_model.recommend(torch.tensor([3, 0]), k=4)
    for ids in ([3, 0], np.array([3, 0]), torch.tensor([3, 0], dtype=torch.int32)):
        assert torch.equal(bpr_model.recommend(ids, k=4), reference)
    assert torch.equal(bpr_model.recommend(3, k=4), reference[:1])
    assert torch.equal(bpr_model.recommend([np.int64(0)], k=4), reference[1:])


# -- model settings: --set, --tuned, and the generic field check ---------------------------------
def write_tuned(path: Path, name: str, dataset: str, **settings) -> Path:
    """A ``mllmrec tune`` result of model ``name`` holding ``settings`` (model, train, graph)."""
    best = {"settings": {"model": {}, "train": {}, "graph": None, **settings}}
    obj = {"format": TUNED_FORMAT, "key": name, "model": name, "dataset": dataset, "best": best}
    path.write_text(json.dumps(obj))
    return path


@pytest.mark.parametrize(
    "raw, value, reason",
    [
        ("abc", "abc", "must be an integer"),
        ("-4", -4, "must be an integer in [0, 2**63)"),
        ("2.5", 2.5, "must be an integer"),
    ],
)
def test_a_bad_model_setting_is_refused_before_any_work(tmp_path, capsys, raw, value, reason):
    data = ["--data-dir", str(tmp_path / "never-read")]
    start = time.perf_counter()
    err = cli_error(capsys, [*BPR, *data, "--set", f"embedding_dim={raw}"], code=2)
    assert f"embedding_dim {reason}" in err and "--set embedding_dim=" in err
    tuned = write_tuned(
        tmp_path / "bpr.json", "bpr", "mmrec-never-read", model={"embedding_dim": value}
    )
    err = cli_error(capsys, [*BPR, *data, "--tuned", str(tuned)], code=2)
    assert str(tuned) in err and f"embedding_dim {reason}" in err
    assert time.perf_counter() - start < 5  # nothing was loaded


def test_a_bad_tuned_setting_overridden_on_the_command_line_is_not_used(tmp_path, capsys):
    folder = write_folder(tmp_path / "shop")
    tuned = write_tuned(
        tmp_path / "bpr.json",
        "bpr",
        "mmrec-shop",
        model={"embedding_dim": "abc"},
        train={"lr": -1.0, "epochs": 1},
    )
    argv = [*BPR, "--data-dir", str(folder), "--tuned", str(tuned)]
    err = cli_error(capsys, [*argv, "--set", "embedding_dim=8"], code=2)
    assert str(tuned) in err and "lr must be a finite number >= 0, got -1.0" in err
    out = tmp_path / "r.json"
    assert main([*argv, "--set", "embedding_dim=8", "--lr", "0.01", "--json", str(out)]) == 0
    config = json.loads(out.read_text())["config"]
    assert config["model"]["embedding_dim"] == 8 and config["train"]["lr"] == 0.01


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--k-s", "-3"], "k_s must be positive, got -3 (--k-s)"),
        (["--k-c", "0"], "k_c must be positive, got 0 (--k-c)"),
        (["--token-budget", "0"], "token_budget must be positive, got 0 (--token-budget)"),
    ],
)
def test_bad_graph_and_text_options_are_refused_naming_the_option(
    tmp_path, capsys, flags, expected
):
    argv = [*BPR, "--data-dir", str(tmp_path / "never-read"), *flags]
    assert expected in cli_error(capsys, argv, code=2)


def test_a_bad_synthetic_size_names_its_option(capsys):
    argv = [*BPR, "--dataset", "synthetic", "--num-users", "0"]
    assert "num_users must be positive, got 0 (--num-users)" in cli_error(capsys, argv, code=2)


@pytest.mark.parametrize(
    "graph, reason",
    [
        ({"k_s": -3}, "k_s must be positive, got -3"),
        ({"k_c": "abc"}, "k_c must be an integer, got 'abc'"),
        ({"alpha": 7}, "alpha must be a number in [-1, 1]"),
    ],
)
def test_a_bad_tuned_graph_setting_names_the_file(tmp_path, capsys, graph, reason):
    tuned = write_tuned(tmp_path / "bpr.json", "bpr", "mmrec-never-read", graph=graph)
    argv = [*BPR, "--data-dir", str(tmp_path / "never-read"), "--tuned", str(tuned)]
    err = cli_error(capsys, argv, code=2)
    assert str(tuned) in err and reason in err


def test_a_tuned_file_of_another_dataset_is_said_in_one_line(tmp_path, caplog):
    folder = write_folder(tmp_path / "shop")
    argv = [*BPR, "--data-dir", str(folder), "--epochs", "1"]
    other = write_tuned(tmp_path / "ml.json", "bpr", "movielens", model={"embedding_dim": 8})
    same = write_tuned(tmp_path / "shop.json", "bpr", "mmrec-shop", model={"embedding_dim": 8})
    with caplog.at_level(logging.WARNING, logger="mllmrec_pyg.commands.train"):
        assert main([*argv, "--tuned", str(other)]) == 0
    warned = [r.getMessage() for r in caplog.records if r.name == "mllmrec_pyg.commands.train"]
    assert len(warned) == 1 and "\n" not in warned[0]
    assert str(other) in warned[0] and "'movielens'" in warned[0] and "'mmrec-shop'" in warned[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mllmrec_pyg.commands.train"):
        assert main([*argv, "--tuned", str(same)]) == 0
    assert not [r for r in caplog.records if r.name == "mllmrec_pyg.commands.train"]


def _bad_values(hint_text: str) -> list:
    """Values of the wrong type or range for a field annotated ``hint_text``."""
    if "bool" == hint_text:
        return [1, "yes"]
    if hint_text.startswith("int"):
        return [2.5, "abc", True, -1, 2**63]
    if hint_text.startswith("float"):
        return ["abc", float("inf"), float("nan"), -0.5, True]
    if hint_text.startswith("str"):
        return [3]
    if hint_text.startswith("tuple"):
        return ["text", [3.5j]]
    return []


def test_every_model_config_field_is_checked_from_its_annotation():
    """Derived from the dataclasses: every field of every registered model refuses values
    of the wrong type or range with its name, and every default is accepted."""
    import dataclasses
    import typing

    checked = 0
    for name, cls in MODELS.items():
        config_cls = cls.config_class
        make_config(name, {})  # the defaults pass
        hints = typing.get_type_hints(config_cls)
        for f in dataclasses.fields(config_cls):
            text = str(hints[f.name]).replace("<class '", "").replace("'>", "")
            for bad in _bad_values(text):
                with pytest.raises(FieldError) as err:
                    make_config(name, {f.name: bad})
                assert err.value.field == f.name and str(err.value).startswith(f"{name}: ")
                checked += 1
    assert checked > 200


def test_the_generic_check_accepts_what_json_and_the_command_line_give():
    from mllmrec_pyg.nn.freedom import FREEDOMConfig

    check_fields(
        FREEDOMConfig,
        {"item_graph": ["item", "related", "item"], "modality_weights": [1, 0.5], "dropout": 0},
    )
    with pytest.raises(FieldError, match="item_graph must be a tuple of 3 items or None"):
        check_fields(FREEDOMConfig, {"item_graph": ["item", "related"]})


# -- training options ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--eval-block-size", "0"], "eval_block_size must be positive, got 0 (--eval-block-size)"),
        (["--device", "foo"], "got 'foo' (--device)"),
        (["--device", "meta"], "device 'meta'"),
        (["--lr", "inf"], "lr must be a finite number >= 0, got inf (--lr)"),
        (["--lr", "nan"], "(--lr)"),
        (["--seed", "-1"], "seed must be an integer in [0, 2**63), got -1 (--seed)"),
        (["--seed", str(10**23)], f"got {10**23} (--seed)"),
        (["--ks", "0"], "(--ks)"),
        (["--ks", "0", "20"], "[0] are not"),
        (["--embedding-dim", "0"], "embedding_dim must be positive, got 0 (--embedding-dim)"),
    ],
)
def test_bad_training_options_are_refused_naming_the_option(tmp_path, capsys, flags, expected):
    argv = [*BPR, "--data-dir", str(tmp_path / "never-read"), *flags]
    start = time.perf_counter()
    err = cli_error(capsys, argv, code=2)
    assert expected in err
    assert time.perf_counter() - start < 5


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_device_this_machine_lacks_is_refused_before_any_work(tmp_path, capsys):
    argv = [*BPR, "--data-dir", str(tmp_path / "never-read"), "--device", "cuda"]
    assert "this machine has no cuda device (--device)" in cli_error(capsys, argv, code=2)


def test_the_api_refuses_the_same_training_settings():
    for values, field in (
        ({"eval_block_size": 0}, "eval_block_size"),
        ({"seed": -1}, "seed"),
        ({"lr": float("inf")}, "lr"),
        ({"ks": (0, 20)}, "ks"),
        ({"device": "foo"}, "device"),
    ):
        with pytest.raises(FieldError) as err:
            TrainConfig(**values)
        assert err.value.field == field


def test_a_diverging_training_ends_in_one_line(tmp_path, capsys):
    folder = write_folder(tmp_path / "shop")
    argv = [*BPR, "--data-dir", str(folder), "--epochs", "3", "--lr", "1e30"]
    err = cli_error(capsys, argv)
    assert "training diverged" in err and "lr=1e+30" in err


# -- .inter files ----------------------------------------------------------------------------------
def test_an_inter_file_with_a_byte_order_mark_reads_as_without(tmp_path):
    plain = write_folder(tmp_path / "plain") / "shop.inter"
    marked = write_folder(tmp_path / "marked") / "shop.inter"
    marked.write_bytes(b"\xef\xbb\xbf" + marked.read_bytes())
    a, b = read_inter(plain), read_inter(marked)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_a_byte_that_is_not_utf8_is_named_with_its_file_and_line(tmp_path, capsys):
    folder = write_folder(tmp_path / "shop")
    inter = folder / "shop.inter"
    edit_line(inter, 6, b"\t5\t", b"\t5\xff\t")
    err = cli_error(capsys, [*BPR, "--data-dir", str(folder)])
    assert f"{inter}:6: not UTF-8 text (byte 0xff" in err


def test_a_huge_sparse_id_is_refused_before_anything_is_allocated(tmp_path, capsys):
    folder = write_folder(tmp_path / "shop")
    inter = folder / "shop.inter"
    line = inter.read_text().splitlines()[3].split("\t")
    edit_line(inter, 4, f"{line[0]}\t{line[1]}\t".encode(), f"{line[0]}\t30000000\t".encode())
    start = time.perf_counter()
    err = cli_error(capsys, ["train", "--model", "pop", "--data-dir", str(folder)])
    assert f"{inter}:4: itemID 30000000 is far beyond the" in err and "remap" in err
    edit_line(inter, 4, b"\t30000000\t", b"\t" + b"9" * 30 + b"\t")  # beyond int64 too
    err = cli_error(capsys, ["train", "--model", "pop", "--data-dir", str(folder)])
    assert f"{inter}:4: itemID 999" in err
    assert time.perf_counter() - start < 10


def test_a_few_unused_ids_still_load(tmp_path):
    folder = write_folder(tmp_path / "shop")
    inter = folder / "shop.inter"
    line = inter.read_text().splitlines()[3].split("\t")
    edit_line(inter, 4, f"{line[0]}\t{line[1]}\t".encode(), f"{line[0]}\t900\t".encode())
    assert load_mmrec(folder)["item"].num_nodes == 901  # 861 unused ids: under the slack


def test_a_timestamp_beyond_64_bits_is_named(tmp_path):
    folder = write_folder(tmp_path / "shop")
    inter = folder / "shop.inter"
    edit_line(inter, 3, b"\t5\t1\t", b"\t5\t1e300\t")
    with pytest.raises(ValueError, match=rf"{inter}:3: column 'timestamp' must be a finite"):
        read_inter(inter)


def test_a_linked_inter_file_is_named_with_its_target_and_not_quoted(tmp_path, capsys):
    secret = tmp_path / "elsewhere" / "notes.txt"
    secret.parent.mkdir()
    secret.write_text("private first line\tof another file\nmore\n")
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "shop.inter").symlink_to(secret)
    err = cli_error(capsys, [*BPR, "--data-dir", str(folder)])
    assert "missing column(s)" in err and f"a link to {secret}" in err
    assert "private" not in err and "another file" not in err
    # a link inside its own folder is an ordinary file
    real = write_folder(tmp_path / "linked") / "shop.inter"
    real.rename(real.with_name("v2.data"))
    real.symlink_to("v2.data")
    assert load_mmrec(real.parent)["user"].num_nodes == 30


# -- MovieLens CSV files ---------------------------------------------------------------------------
def write_movielens(root: Path) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    rows = [
        f"{u},{m},4.0,{1000 * u + k}\n"
        for u in range(1, 31)
        for k, m in enumerate(rng.choice(np.arange(1, 21), 8, replace=False))
    ]
    (root / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "".join(rows))
    movies = [f'{m},"Film {m}, The ({1990 + m})",Drama|Comedy\n' for m in range(1, 21)]
    (root / "movies.csv").write_text("movieId,title,genres\n" + "".join(movies))
    (root / "tags.csv").write_text("userId,movieId,tag,timestamp\n1,3,fun,5\n")
    return root


def test_movielens_csv_files_with_a_byte_order_mark_read_as_without(tmp_path):
    plain = load_movielens(write_movielens(tmp_path / "plain"))
    root = write_movielens(tmp_path / "marked")
    for name in ("ratings.csv", "movies.csv", "tags.csv"):
        (root / name).write_bytes(b"\xef\xbb\xbf" + (root / name).read_bytes())
    marked = load_movielens(root)
    assert marked["item"].text == plain["item"].text
    for key in ("edge_index", "val_edge_index", "test_edge_index"):
        assert torch.equal(
            marked["user", "interacts", "item"][key], plain["user", "interacts", "item"][key]
        )


def test_a_movielens_byte_that_is_not_utf8_is_named_with_its_line(tmp_path, capsys):
    root = write_movielens(tmp_path / "ml")
    edit_line(root / "movies.csv", 5, b"Film", b"Fil\xe9")
    argv = ["train", "--model", "pop", "--dataset", "movielens", "--root", str(root)]
    err = cli_error(capsys, [*argv, "--no-progress"])
    assert f"{root / 'movies.csv'}:5: not UTF-8 text (byte 0xe9" in err


@pytest.mark.parametrize("backend", ["transformers", "llamacpp"])
@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("prompt_format", "free", "prompt_format='free': choose one of"),
        ("max_new_tokens", 0, "max_new_tokens=0: must be >= 1"),
        ("repetition_penalty", 0.0, "repetition_penalty=0.0: must be > 0"),
        ("no_repeat_ngram_size", -2, "no_repeat_ngram_size=-2: must be >= 0"),
    ],
)
def test_local_backends_refuse_the_same_bad_generation_settings(backend, setting, value, message):
    """Both local backends check their shared generation settings alike, naming the one at
    fault, when the config is made (before any model is loaded)."""
    if backend == "transformers":
        from mllmrec_pyg.reasoning.backends.hf import TransformersBackendConfig as Config
    else:
        from mllmrec_pyg.reasoning.backends.llamacpp import LlamaCppBackendConfig as Config
    with pytest.raises(ValueError, match=re.escape(message)):
        Config(**{setting: value})
    Config()  # the defaults pass
