"""The run store: every setting that can change a number is in the key, records are reused
only under the same settings (a run made on another device counts), one process trains a
run at a time, an interrupted run resumes, and per-user metrics average to the test ones."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import threading
import time

import pytest
import torch
from conftest import synthetic_with_features

from mllmrec_pyg import runs as runs_module
from mllmrec_pyg.config import DataConfig, GraphConfig, TextConfig
from mllmrec_pyg.pipeline import load_data
from mllmrec_pyg.runs import PER_USER, RunSpec, RunStore, headline, table_metrics
from mllmrec_pyg.train import TrainConfig, Trainer

QUICK = TrainConfig(epochs=2, patience=2, show_progress=False)


@pytest.fixture(scope="module")
def data():
    """A small synthetic catalog with random item and user features (no encoder)."""
    return synthetic_with_features()


@pytest.fixture
def trained(monkeypatch):
    """The (model, seed) of every run the store trains in the test."""
    calls = []
    real = runs_module.train_model

    def counting(name, data, cfg, values):
        calls.append((name, cfg.seed))
        return real(name, data, cfg, values)

    monkeypatch.setattr(runs_module, "train_model", counting)
    return calls


def store(tmp_path, train=QUICK, **kw) -> RunStore:
    return RunStore(tmp_path / "runs", tmp_path / "work", train, command="mllmrec test", **kw)


def test_every_field_group_changes_the_key_and_retrains(tmp_path, data, trained):
    s = store(tmp_path)
    mll = RunSpec("MLLMRec", "mllmrec", {}, 0)  # reads item and user features and the graph
    bpr = RunSpec("BPR", "bpr", {}, 0)  # reads the training pairs only
    s.run(mll, data)
    s.run(bpr, data)
    assert len(trained) == 2
    s.run(mll, data)
    s.run(bpr, data)
    assert len(trained) == 2, "an unchanged run was trained again"

    def retrains(store_, spec, data_=data, changes_bpr=True) -> None:
        before = len(trained)
        assert store_.key(spec, data_) != s.key(mll if spec.model == "mllmrec" else bpr, data)
        store_.run(spec, data_)
        assert len(trained) == before + 1
        if not changes_bpr:  # a setting the model does not read leaves its key alone
            assert store_.key(bpr, data_) == s.key(bpr, data)

    # data: other features (a model that reads them), another split (every model)
    other = data.clone()
    other["user"].x = other["user"].x + 1e-3
    retrains(s, mll, other, changes_bpr=False)
    resplit = load_data(DataConfig("synthetic", num_users=150, num_items=80, seed=1))
    resplit["item"].x, resplit["user"].x = data["item"].x, data["user"].x
    retrains(s, bpr, resplit)
    # text: the text source of the features (also whether user text saw the full history)
    retrains(store(tmp_path, text=TextConfig(user_text="history")), mll, changes_bpr=False)
    retrains(s, dataclasses.replace(mll, full_history=True), changes_bpr=False)
    # graph: the refined graph's recipe, for a model that reads it
    retrains(s, dataclasses.replace(mll, graph=GraphConfig(alpha=0.5)), changes_bpr=False)
    assert s.key(dataclasses.replace(bpr, graph=GraphConfig(alpha=0.5)), data) == s.key(bpr, data)
    # model: a config value, another model
    retrains(s, dataclasses.replace(bpr, config={"reg_weight": 0.5}))
    # train: every field of the key, one at a time
    for change in (
        {"ks": (5, 10), "monitor": "recall@10"},
        {"mask_valid_at_test": True},
        {"evaluate_test": False},
        {"patience": 1},
        {"epochs": 1},
        {"lr": 0.01},
        {"batch_size": 512},
    ):
        retrains(store(tmp_path, dataclasses.replace(QUICK, **change)), bpr)
    retrains(s, dataclasses.replace(bpr, seed=1))
    retrains(s, dataclasses.replace(bpr, train={"lr": 0.02}))
    fewer = dataclasses.replace(QUICK, ks=(5, 10, 50), monitor="recall@5")
    monitor = store(tmp_path, fewer).settings(bpr, data)
    # the monitor follows the cut-offs fitted to the catalog (80 items: 50 fits, 20 is absent)
    assert monitor["train"]["monitor"] == "recall@50" and monitor["train"]["ks"] == [5, 10, 50]
    # settings that change no number are not keyed: threads of progress, block size, and
    # masking at test for a run that evaluates no test (a tuning trial)
    same = dataclasses.replace(QUICK, eval_block_size=7, show_progress=True)
    assert store(tmp_path, same).key(bpr, data) == s.key(bpr, data)
    trial = dataclasses.replace(QUICK, evaluate_test=False)
    masked = dataclasses.replace(trial, mask_valid_at_test=True)
    assert store(tmp_path, masked).key(bpr, data) == store(tmp_path, trial).key(bpr, data)


def test_a_record_names_its_settings_command_and_device_and_another_device_counts(
    tmp_path, data, trained
):
    s = store(tmp_path)
    spec = RunSpec("FREEDOM", "freedom", {"embedding_dim": 8}, 3)
    record, _ = s.run(spec, data)
    on_disk = json.loads(s.path(spec, data).read_text())
    assert on_disk == record
    assert record["command"] == "mllmrec test" and record["device"] == "cpu"
    settings = record["settings"]
    assert settings["model"] == "freedom" and settings["config"]["embedding_dim"] == 8
    assert settings["config"]["seed"] == 3, "a model with a seed field is seeded by the run"
    assert settings["graph"] is None and settings["text"]["backend"] == "none"
    assert settings["train"]["ks"] == [5, 10, 20, 50] and settings["train"]["seed"] == 3
    assert len(record["history"]) == record["epochs"]
    # the device is recorded, not keyed: a run trained on a GPU is reused on the CPU ...
    cuda = store(tmp_path, dataclasses.replace(QUICK, device="cuda"))
    assert cuda.key(spec, data) == s.key(spec, data)
    s.path(spec, data).write_text(json.dumps({**record, "device": "cuda:0"}))
    assert s.run(spec, data)[0]["device"] == "cuda:0" and len(trained) == 1
    # ... a file under the key's name that holds another key is not
    s.path(spec, data).write_text(json.dumps({**record, "key": "0" * 64}))
    assert s.load(spec, data) is None
    s.path(spec, data).write_text("{not json")
    with pytest.raises(ValueError, match=s.path(spec, data).name):
        s.load(spec, data)


def test_a_run_another_process_trains_is_waited_for_and_reused(tmp_path, data, trained):
    s = store(tmp_path)
    specs = [RunSpec("BPR", "bpr", {}, seed) for seed in (0, 1)]
    first, _ = s.run(specs[0], data)
    path0 = s.path(specs[0], data)
    stored = path0.read_text()
    path0.unlink()  # as if another process were still training seed 0
    trained.clear()
    lock = s._lock_path(s._job(specs[0], data))
    out = {}
    worker = threading.Thread(target=lambda: out.update(r=s.run_all([(p, data) for p in specs])))
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # the other process's lock (a separate open file)
        assert s.busy(specs[0], data) and not s.busy(specs[1], data)
        worker.start()
        deadline = time.monotonic() + 120
        while not s.path(specs[1], data).is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        # seed 1 was trained first; seed 0 is waited for, not trained a second time
        assert worker.is_alive() and trained == [("bpr", 1)]
        path0.write_text(stored)  # the other process stores its result
        fcntl.flock(fh, fcntl.LOCK_UN)
    worker.join(120)
    assert not worker.is_alive() and trained == [("bpr", 1)]
    assert out["r"][0]["test"] == first["test"]


def test_an_interrupted_run_resumes_and_ends_as_an_uninterrupted_one(
    tmp_path, data, monkeypatch, one_thread
):
    train = dataclasses.replace(QUICK, epochs=4, patience=4)
    spec = RunSpec("LightGCN", "lightgcn", {"embedding_dim": 8}, 0)
    whole, _ = store(tmp_path / "a", train).run(spec, data)
    real = Trainer.train_epoch

    def stop_at_3(self, epoch=0):
        if epoch == 3:
            raise KeyboardInterrupt
        return real(self, epoch)

    s = store(tmp_path / "b", train)
    monkeypatch.setattr(Trainer, "train_epoch", stop_at_3)
    with pytest.raises(KeyboardInterrupt):
        s.run(spec, data)
    assert s.load(spec, data) is None
    assert list((tmp_path / "b" / "work").glob("*/last.pt"))
    monkeypatch.setattr(Trainer, "train_epoch", real)
    resumed, _ = s.run(spec, data)
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in whole["history"]]
    assert resumed["test"] == whole["test"]
    assert not list((tmp_path / "b" / "work").glob("*"))  # the state goes once stored


def test_per_user_metrics_average_to_the_test_metrics_and_are_added_once(tmp_path, data, trained):
    s = store(tmp_path, dataclasses.replace(QUICK, mask_valid_at_test=True))
    spec = RunSpec("BPR", "bpr", {}, 0)
    record, _ = s.run(spec, data, per_user=True)
    pu = record[PER_USER]
    for m in ("recall@20", "ndcg@20"):
        assert sum(pu[m]) / len(pu[m]) == pytest.approx(record["test"][m], abs=1e-6)
    # a stored run without them gets them from a kept checkpoint, else by training again
    path = s.path(spec, data)
    path.write_text(json.dumps({k: v for k, v in record.items() if k != PER_USER}))
    trained.clear()
    again = s.with_per_user(spec, data)
    assert trained == [("bpr", 0)] and again["replaces"]["test"] == record["test"]
    assert again[PER_USER] == pu and json.loads(path.read_text())[PER_USER] == pu
    assert s.with_per_user(spec, data)[PER_USER] == pu and len(trained) == 1


def test_headline_and_table_metrics_follow_the_cutoffs():
    assert headline((5, 10, 20, 50)) == ("recall@20", "ndcg@20")
    assert headline((5, 10)) == ("recall@10", "ndcg@10")
    assert table_metrics((5, 10, 20, 50)) == ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
    assert table_metrics((5, 10)) == ("recall@5", "recall@10", "ndcg@5", "ndcg@10")


def test_the_head_view_changes_only_the_keys_of_models_that_read_it():
    """data["item"].x_head is in the fingerprint of a model that declares "item_head" only:
    adding it leaves every other model's stored runs valid."""
    base = load_data(DataConfig("synthetic"))
    base["item"].x = torch.randn(
        base["item"].num_nodes, 8, generator=torch.Generator().manual_seed(0)
    )
    with_head = base.clone()
    with_head["item"].x_head = torch.randn(base["item"].num_nodes, 8)
    other = with_head.clone()
    other["item"].x_head = other["item"].x_head + 1
    fp = runs_module.fingerprint
    assert fp(base, {"items"}) == fp(with_head, {"items"}) == fp(other, {"items"})
    assert fp(with_head, {"items", "item_head"}) != fp(other, {"items", "item_head"})


def test_a_switch_keyed_when_set_leaves_the_keys_of_runs_without_it_alone(tmp_path, data):
    """LangGCN's ``interest_items`` (KEYED_WHEN_SET) is absent from the key at its default,
    so runs stored before the switch existed keep their keys; set, it changes the key."""
    s = store(tmp_path)
    plain = RunSpec("LangGCN", "langgcn", {"item_graph": None}, 0)
    settings = s.settings(plain, data)
    assert "interest_items" not in settings["config"]
    # the key is the one the config without the field hashes to
    assert s.key(plain, data) == runs_module.digest(settings)
    assert s.key(
        dataclasses.replace(plain, config={"item_graph": None, "interest_items": 0}), data
    ) == s.key(plain, data)
    set_ = dataclasses.replace(plain, config={"item_graph": None, "interest_items": 3})
    assert s.settings(set_, data)["config"]["interest_items"] == 3
    assert s.key(set_, data) != s.key(plain, data)
