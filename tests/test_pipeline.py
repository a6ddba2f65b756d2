"""The CLI and the experiment runners share one pipeline: same data, features, graph, metrics."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import assert_same_inputs, inputs_with_other_held_out

from mllmrec_pyg import pipeline
from mllmrec_pyg.cli import main
from mllmrec_pyg.config import DataConfig, GraphConfig, TextConfig
from mllmrec_pyg.data import RELATED, make_synthetic
from mllmrec_pyg.experiments import ExperimentSettings, RunSpec, prepare_data
from mllmrec_pyg.train import TrainConfig
from mllmrec_pyg.transforms import JaccardCoOccurrence, MergeGraphs, RefineItemGraph, ThresholdKNN

SIZES = {"num_users": 150, "num_items": 80}


def test_train_command_and_experiment_runner_agree(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "train.json"
    argv = ["train", "--model", "mllmrec", "--dataset", "synthetic", "--num-users", "150"]
    argv += ["--num-items", "80", "--epochs", "3", "--patience", "3", "--k-c", "4"]
    argv += ["--alpha", "0.6", "--cache-dir", str(cache), "--json", str(out), "--no-progress"]
    assert main(argv) == 0
    by_cli = json.loads(out.read_text())

    settings = ExperimentSettings(
        data=DataConfig("synthetic", **SIZES),
        graph=GraphConfig(alpha=0.6, k_c=4),
        train=TrainConfig(epochs=3, patience=3, show_progress=False),
        out=str(tmp_path / "results"),
        cache=str(cache),
    )
    data = prepare_data(settings)
    # the same cache folder and file names: the runner reused what the command encoded
    folder = cache / settings.dataset_tag()
    assert sorted(p.name for p in folder.glob("*.npy")) == [
        "item_feat.npy",
        "item_head_feat.npy",
        "user_feat_none_train_history.npy",
    ]
    again, _ = pipeline.prepare(DataConfig("synthetic", **SIZES), TextConfig(), cache)
    assert torch.equal(again["item"].x, data["item"].x)
    assert torch.equal(again["user"].x, data["user"].x)

    run, _ = settings.store("check", "").run(RunSpec("MLLMRec", "mllmrec", {}, 0), data)
    assert run["valid"] == pytest.approx(by_cli["valid"], abs=0)
    assert run["test"] == pytest.approx(by_cli["test"], abs=0)
    assert run["best_epoch"] == by_cli["best_epoch"]


def test_refine_item_graph_equals_the_three_transforms_in_turn():
    data, _ = pipeline.add_features(
        pipeline.load_data(DataConfig("synthetic", **SIZES)),
        TextConfig(),
        None,
        users=False,
        show_progress=False,
    )
    one = RefineItemGraph(k_s=6, alpha=0.5, k_c=3, loop=False)(data.clone())
    three = data.clone()
    for t in (
        ThresholdKNN(k=6, threshold=0.5, loop=False),
        JaccardCoOccurrence(k=3),
        MergeGraphs(relations=("semantic", "cooccurs"), out="related"),
    ):
        three = t(three)
    for et in one.edge_types:
        if et[0] == et[2] == "item":
            assert torch.equal(one[et].edge_index, three[et].edge_index)
            assert torch.equal(one[et].edge_weight, three[et].edge_weight)
    only_semantic = RefineItemGraph(k_s=6, alpha=None, cooccurrence=False)(data.clone())
    assert ("item", "cooccurs", "item") not in only_semantic.edge_types
    assert only_semantic[RELATED].edge_index.size(1) == 6 * data["item"].num_nodes
    assert "ThresholdKNN" in repr(only_semantic and RefineItemGraph())


def test_bad_graph_and_data_settings_fail_at_construction(tmp_path):
    with pytest.raises(ValueError, match="alpha"):
        GraphConfig(alpha=1.5)
    with pytest.raises(ValueError, match="k_s"):
        GraphConfig(k_s=0)
    with pytest.raises(ValueError, match="user_text"):
        TextConfig(user_text="llm")
    with pytest.raises(FileNotFoundError, match="neither"):
        pipeline.load_data(DataConfig(str(tmp_path / "missing")))
    (tmp_path / "file.inter").write_text("")
    with pytest.raises(NotADirectoryError, match="is a file"):
        pipeline.load_data(DataConfig(str(tmp_path / "file.inter")))


@pytest.mark.parametrize("user_text", ["preferences", "history"])
def test_no_held_out_pair_reaches_any_input(tmp_path, user_text):
    """Every input a model is built from -- item and user text, their vectors, the refined
    graph -- is identical when the valid/test pairs are replaced by other pairs."""
    data = pipeline.load_data(DataConfig("synthetic", **SIZES))
    text, graph = TextConfig(user_text=user_text), GraphConfig(alpha=0.5, k_c=5)
    assert_same_inputs(*inputs_with_other_held_out(data, text, graph, tmp_path / "cache"))


def test_add_features_writes_the_head_view_of_the_item_texts(tmp_path):
    """x_head holds the vectors of each item text's first HEAD_WORDS words, cached."""
    from mllmrec_pyg.encode import encode_texts
    from mllmrec_pyg.pipeline import HEAD_WORDS, ITEM_HEAD_FILE, add_features, head_texts

    data = make_synthetic(seed=0)
    data["item"].text = [f"title {i} " + "word " * 40 for i in range(data["item"].num_nodes)]
    out, _ = add_features(data, TextConfig(), tmp_path, users=False, show_progress=False)
    heads = head_texts(list(data["item"].text))
    assert all(len(h.split()) == HEAD_WORDS for h in heads)
    assert heads[3].startswith("title 3 word")
    want = encode_texts(heads[:5], show_progress=False)
    torch.testing.assert_close(out["item"].x_head[:5], want, atol=1e-5, rtol=1e-4)
    assert (tmp_path / ITEM_HEAD_FILE).exists()
    assert not torch.allclose(out["item"].x_head, out["item"].x)
