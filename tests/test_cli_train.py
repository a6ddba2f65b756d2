"""The ``mllmrec train`` command: datasets, variants, JSON results and checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import cli_error

from mllmrec_pyg.cli import main
from mllmrec_pyg.config import GraphConfig
from mllmrec_pyg.data import load_mmrec
from mllmrec_pyg.data.split import per_user_split
from mllmrec_pyg.nn.item_lightgcn import item_graph_norm, to_adj_t
from mllmrec_pyg.pipeline import build_graph, history_summary_texts
from mllmrec_pyg.train import load_checkpoint, read_checkpoint_meta

METRIC_KEYS = {f"{m}@{k}" for m in ("recall", "ndcg", "precision", "map") for k in (5, 10, 20, 50)}


@pytest.fixture
def mmrec_folder(tmp_path):
    """An MMRec-format folder as the authors publish it (40 users, 80 items)."""
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(40), 12)
    items = np.concatenate([rng.choice(80, 12, replace=False) for _ in range(40)])
    labels = per_user_split(users, seed=0)
    folder = tmp_path / "baby"
    folder.mkdir()
    lines = ["userID\titemID\trating\ttimestamp\tx_label\n"]
    lines += [
        f"{u}\t{i}\t5.0\t{n}\t{lab}\n" for n, (u, i, lab) in enumerate(zip(users, items, labels))
    ]
    (folder / "baby.inter").write_text("".join(lines))
    np.save(folder / "image_text_feat.npy", rng.normal(size=(80, 32)).astype(np.float32))
    np.save(folder / "user_preferences_feat.npy", rng.normal(size=(40, 32)).astype(np.float32))
    return folder


def test_bpr_on_synthetic_writes_json(tmp_path):
    out = tmp_path / "r.json"
    rc = main(
        [
            "train",
            "--model",
            "bpr",
            "--dataset",
            "synthetic",
            "--epochs",
            "2",
            "--json",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    assert {"model", "dataset", "valid", "test", "best_epoch", "epochs", "seconds"} <= set(res)
    assert res["model"] == "bpr" and res["dataset"] == "synthetic"
    assert set(res["valid"]) == METRIC_KEYS and set(res["test"]) == METRIC_KEYS
    assert res["epochs"] == 2 and 1 <= res["best_epoch"] <= 2
    assert res["seconds"] > 0
    assert res["config"]["train"]["lr"] == 1e-3 and res["config"]["train"]["batch_size"] == 2048


def test_mllmrec_on_an_mmrec_folder_and_checkpoint(tmp_path, mmrec_folder, capsys):
    out, ck = tmp_path / "r.json", tmp_path / "m.pt"
    rc = main(
        [
            "train",
            "--model",
            "mllmrec",
            "--data-dir",
            str(mmrec_folder),
            "--epochs",
            "3",
            "--alpha",
            "0.1",
            "--k-c",
            "5",
            "--json",
            str(out),
            "--checkpoint",
            str(ck),
            "--no-progress",
        ]
    )
    assert rc == 0
    assert "test recall@20" in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["dataset"] == "baby" and res["epochs"] == 3
    graph = {"k_s": 10, "alpha": 0.1, "k_c": 5, "cooccurrence": True, "loop": True}
    graph["knn_backend"] = "auto"
    assert res["config"]["item_graph"] == graph
    meta = read_checkpoint_meta(ck)
    assert meta["model"] == "mllmrec" and meta["test"] == res["test"]
    # reload on the same folder + graph settings and recommend unseen items
    data = build_graph(load_mmrec(mmrec_folder), GraphConfig(k_s=10, alpha=0.1, k_c=5))
    model = load_checkpoint(ck, data)
    rec = model.recommend(torch.arange(40), k=10)
    train = data["user", "interacts", "item"].edge_index
    seen = set(map(tuple, train.t().tolist()))
    assert not any((u, i) in seen for u in range(40) for i in rec[u].tolist())


def test_freedom_on_its_own_and_on_the_refined_graph(tmp_path, mmrec_folder):
    """``--model freedom`` needs no user features; ``--refined-graph`` swaps in
    exactly the transforms' graph, and the checkpoint reloads on it."""
    (mmrec_folder / "user_preferences_feat.npy").unlink()
    runs = {}
    for name, extra in (("own", []), ("refined", ["--refined-graph"])):
        out, ck = tmp_path / f"{name}.json", tmp_path / f"{name}.pt"
        argv = ["train", "--model", "freedom", "--data-dir", str(mmrec_folder)]
        argv += ["--epochs", "2", "--alpha", "0.1", "--k-c", "5", "--edge-dropout", "0.5"]
        argv += ["--json", str(out), "--checkpoint", str(ck), "--no-progress", *extra]
        assert main(argv) == 0
        runs[name] = json.loads(out.read_text())
    own, refined = runs["own"]["config"], runs["refined"]["config"]
    assert own["model"]["item_graph"] is None and "item_graph" not in own
    assert refined["model"]["item_graph"] == ["item", "related", "item"]
    assert refined["model"]["dropout"] == 0.5 and refined["model"]["knn_k"] == 10
    graph = {"k_s": 10, "alpha": 0.1, "k_c": 5, "cooccurrence": True, "loop": True}
    graph["knn_backend"] = "auto"
    assert refined["item_graph"] == graph
    data = build_graph(load_mmrec(mmrec_folder), GraphConfig(k_s=10, alpha=0.1, k_c=5))
    model = load_checkpoint(tmp_path / "refined.pt", data)
    store = data["item", "related", "item"]
    expected, _ = item_graph_norm(to_adj_t(store.edge_index, store.edge_weight, 80))
    assert model.item_graph_edges == store.edge_index.size(1)
    assert torch.allclose(model.item_adj.to_dense(), expected.to_dense())
    rec = model.recommend(torch.arange(40), k=10)
    assert rec.shape == (40, 10)


def test_refined_graph_flag_is_for_freedom_only(mmrec_folder, capsys):
    argv = ["train", "--model", "bpr", "--data-dir", str(mmrec_folder), "--refined-graph"]
    assert "--model freedom, lattice, smore" in cli_error(capsys, argv, code=2)


def test_variant_flags_reach_the_model(tmp_path, mmrec_folder):
    out = tmp_path / "r.json"
    main(
        [
            "train",
            "--model",
            "mllmrec",
            "--data-dir",
            str(mmrec_folder),
            "--epochs",
            "1",
            "--no-item-conv",
            "--no-user-features",
            "--ui-layers",
            "2",
            "--hidden-dim",
            "32",
            "--embedding-dim",
            "8",
            "--json",
            str(out),
            "--no-progress",
        ]
    )
    cfg = json.loads(out.read_text())["config"]["model"]
    assert cfg["item_conv"] is False and cfg["use_user_features"] is False
    assert cfg["ui_layers"] == 2 and cfg["hidden_dim"] == 32 and cfg["embedding_dim"] == 8


def test_folder_without_user_features(tmp_path, mmrec_folder, capsys):
    (mmrec_folder / "user_preferences_feat.npy").unlink()
    argv = ["train", "--model", "mllmrec", "--data-dir", str(mmrec_folder), "--epochs", "1"]
    assert "--no-user-features" in cli_error(capsys, [*argv, "--no-progress"])
    rc = main(
        [
            "train",
            "--model",
            "mllmrec",
            "--data-dir",
            str(mmrec_folder),
            "--epochs",
            "1",
            "--alpha",
            "0.1",
            "--no-user-features",
            "--no-progress",
        ]
    )
    assert rc == 0


def test_dataset_source_is_required():
    with pytest.raises(SystemExit):
        main(["train", "--model", "bpr"])


def test_history_summary_uses_training_items_only():
    from torch_geometric.data import HeteroData

    data = HeteroData()
    data["user"].num_nodes = 2
    data["item"].num_nodes = 3
    data["item"].text = ["red cup", "blue bowl", "green plate"]
    store = data["user", "interacts", "item"]
    store.edge_index = torch.tensor([[0, 0], [0, 1]])
    store.time = torch.tensor([5, 9])
    store.val_edge_index = torch.tensor([[0], [2]])
    store.test_edge_index = torch.tensor([[1], [2]])
    texts = history_summary_texts(data)
    assert texts[0] == "Recently bought or watched: blue bowl | red cup"  # newest first
    assert texts[1] == ""  # no training items; held-out "green plate" never shows
