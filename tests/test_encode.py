"""The real MiniLM encoder, feature files, and filling the HeteroData."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch_geometric.data import HeteroData

from mllmrec_pyg import encode
from mllmrec_pyg.encode import (
    ITEM_FEATURES_FILE,
    USER_FEATURES_FILE,
    default_model_path,
    encode_data,
    encode_texts,
    encode_to_file,
    load_features,
)


def test_default_model_path_is_the_bundled_minilm():
    path = default_model_path()
    assert (path / "modules.json").is_file()
    assert (path / "model.safetensors").is_file()


def test_minilm_vectors_are_384d_unit_norm_and_semantic():
    texts = [
        "a soft cotton baby blanket in pastel blue",
        "pastel blue cotton blanket for infants",
        "quarterly earnings report of a steel company",
        "",
    ]
    x = encode_texts(texts, show_progress=False)
    assert x.dtype == torch.float32 and x.shape == (4, 384)
    assert torch.isfinite(x).all()
    norms = x.norm(dim=1)
    assert torch.allclose(norms[:3], torch.ones(3), atol=1e-4)
    sim = x @ x.T
    # paraphrases are much closer than unrelated texts
    assert sim[0, 1] > sim[0, 2] + 0.3
    assert sim[1, 0] > sim[1, 2] + 0.3


def test_batching_does_not_change_vectors():
    texts = [f"item number {i} with a {c} strap" for i, c in enumerate("red blue green".split())]
    a = encode_texts(texts, batch_size=1, show_progress=False)
    b = encode_texts(texts, batch_size=64, show_progress=False)
    assert torch.allclose(a, b, atol=1e-5)


def test_encoder_is_cached_per_process():
    a = encode.load_encoder(None, "cpu")
    b = encode.load_encoder(str(default_model_path()), "cpu")
    assert a is b


def test_empty_input_and_bad_input():
    assert encode_texts([], show_progress=False).shape == (0, 384)
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        encode_texts(["ok", 3], show_progress=False)  # type: ignore[list-item]
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        encode_texts(["x"], model="/nonexistent/does-not-exist", show_progress=False)


def test_encode_to_file_is_atomic_and_reused(tmp_path, monkeypatch):
    path = tmp_path / "feat" / ITEM_FEATURES_FILE
    texts = ["red wool hat", "blue rubber duck"]
    x = encode_to_file(texts, path, show_progress=False)
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    arr = np.load(path, allow_pickle=False)
    assert arr.dtype == np.float32 and np.allclose(arr, x.numpy())
    meta = json.loads((path.parent / (path.name + ".json")).read_text())
    assert meta["rows"] == 2 and meta["dim"] == 384

    calls = []
    real = encode.encode_texts
    monkeypatch.setattr(encode, "encode_texts", lambda *a, **k: calls.append(a) or real(*a, **k))
    y = encode_to_file(texts, path, show_progress=False)
    assert calls == [] and torch.equal(x, y)  # unchanged input: loaded, not re-encoded
    z = encode_to_file(texts + ["a third text"], path, show_progress=False)
    assert len(calls) == 1 and z.shape == (3, 384)
    assert torch.allclose(z[:2], x, atol=1e-5)


def test_encode_data_fills_x_and_writes_author_file_names(tmp_path):
    data = HeteroData()
    data["item"].num_nodes = 3
    data["user"].num_nodes = 2
    data["item"].text = ["stroller", "car seat", "teething ring"]
    data["user"].text = ["likes strollers", "likes teething toys"]
    encode_data(data, out_dir=tmp_path, show_progress=False)
    assert data["item"].x.shape == (3, 384) and data["user"].x.shape == (2, 384)
    assert torch.allclose(load_features(tmp_path / ITEM_FEATURES_FILE), data["item"].x)
    assert torch.allclose(load_features(tmp_path / USER_FEATURES_FILE), data["user"].x)
    # the same encoder for items and users: identical text, identical vector
    ref = encode_texts(["stroller"], show_progress=False)
    assert torch.allclose(data["item"].x[0], ref[0], atol=1e-5)


def test_encode_data_rejects_mismatched_text():
    data = HeteroData()
    data["item"].num_nodes = 3
    data["item"].text = ["a", "b"]
    with pytest.raises(ValueError, match=r'data\["item"\].text has 2 entries for 3 nodes'):
        encode_data(data, show_progress=False)
    empty = HeteroData()
    empty["item"].num_nodes = 1
    with pytest.raises(ValueError, match="nothing to encode"):
        encode_data(empty, show_progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_encoding_matches_cpu():
    texts = ["a red wool hat", "a stainless steel bottle", "organic cotton swaddle"]
    cpu = encode_texts(texts, device="cpu", show_progress=False)
    gpu = encode_texts(texts, device="cuda", show_progress=False)
    assert gpu.device.type == "cpu" and gpu.dtype == torch.float32  # always returned on CPU
    assert torch.allclose(cpu, gpu, atol=1e-3)
