"""Shared fixtures. Nothing here reaches the network: the hub is switched off."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# one fixed thread: results are bitwise reproducible only with a fixed count (mllmrec_pyg.threads)
os.environ.setdefault("MLLMREC_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_gemma_dir(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random Gemma 3 (text + vision, Gemma's special tokens), built once
    per session; see :func:`mllmrec_pyg.testing.build_tiny_gemma`."""
    from mllmrec_pyg.testing import build_tiny_gemma

    return build_tiny_gemma(tmp_path_factory.mktemp("tiny_gemma") / "model")


def cli_error(capsys: pytest.CaptureFixture, argv: list[str], code: int = 1) -> str:
    """Run ``mllmrec argv``, expect a one-line error with exit status ``code``; return it."""
    from mllmrec_pyg.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == code, exc.value.code
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err), err
    return err[-1]


@pytest.fixture
def one_thread():
    """One torch thread for the test (bitwise comparisons need a fixed count)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def two_modality_data(num_users=6, num_items=8, seed=1, empty_user=None):
    """4 training items per user (+1 valid, +1 test; no training items for
    ``empty_user``), two modalities ``text`` and ``image`` of widths 5 and 7."""
    import torch
    from torch_geometric.data import HeteroData

    from mllmrec_pyg.data import INTERACTS

    g = torch.Generator().manual_seed(seed)
    train, val, test = [], [], []
    for u in range(num_users):
        items = torch.randperm(num_items, generator=g)[:6].tolist()
        if u != empty_user:
            train += [(u, i) for i in items[:4]]
        val.append((u, items[4]))
        test.append((u, items[5]))
    data = HeteroData()
    data["user"].num_nodes = num_users
    data["item"].num_nodes = num_items
    data[INTERACTS].edge_index = torch.tensor(train).t()
    data[INTERACTS].val_edge_index = torch.tensor(val).t()
    data[INTERACTS].test_edge_index = torch.tensor(test).t()
    data["item"].text = torch.randn(num_items, 5, generator=g)
    data["item"].image = torch.randn(num_items, 7, generator=g)
    return data


def given_item_graph(data, drop_last=0, dtype=None):
    """A directed weighted graph over 8 items with a self-loop and a duplicate edge, set as
    ``data[RELATED]`` (without its last ``drop_last`` edges); returns the dense
    ``S[owner, neighbour]`` in ``dtype`` (default float32), duplicates summed."""
    import torch

    from mllmrec_pyg.data import RELATED

    nb = torch.tensor([1, 2, 0, 3, 4, 4, 0, 5, 6, 7, 7, 2, 3])
    owner = torch.tensor([0, 0, 1, 1, 2, 3, 3, 4, 5, 6, 6, 7, 3])
    w = torch.tensor([1.0, 0.5, 1.0, 0.3, 2.0, 1.0, 0.7, 1.0, 0.2, 0.4, 0.6, 0.9, 1.0])
    keep = slice(0, nb.numel() - drop_last)
    data[RELATED].edge_index = torch.stack([nb[keep], owner[keep]])
    data[RELATED].edge_weight = w[keep]
    s = torch.zeros(8, 8, dtype=dtype)
    return s.index_put((owner[keep], nb[keep]), w[keep].to(s.dtype), accumulate=True)


def reference_nce(a, b, t):
    """In-batch InfoNCE on the gathered rows, from the equation: row i of ``a`` against every
    row of ``b`` (cosine similarities at temperature ``t``)."""
    import torch

    a, b = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    num = torch.exp((a * b).sum(1) / t)
    return -torch.log(num / torch.exp(a @ b.t() / t).sum(1)).mean()


def dense_knn(x, k):
    """Weighted cosine top-k graph (the item among its own k, weight = cosine), dense
    ``[owner, neighbour]``, written from the equations (LATTICE, SMORE)."""
    import torch

    xn = x / x.norm(dim=1, keepdim=True)
    sim = xn @ xn.t()
    vals, idx = sim.topk(k, dim=1)
    return torch.zeros_like(sim).scatter_(1, idx, vals)


def dense_norm(s):
    """:math:`D^{-1/2} S D^{-1/2}` of a dense ``s`` (row sums; 0 where a row sums to 0)."""
    import torch

    d = s.sum(1)
    inv = torch.where(d > 0, d.pow(-0.5), torch.zeros_like(d))
    return inv[:, None] * s * inv[None, :]


def clustered_data(num_users=48, num_items=32, clusters=4, per_user=6, dim=8, seed=0):
    """Users and items in clusters; users interact inside their cluster; features = cluster
    centre + noise, so content carries the signal and popularity does not."""
    import torch

    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=g) * 3
    item_c = torch.arange(num_items) % clusters
    user_c = torch.arange(num_users) % clusters
    pairs = []
    for u in range(num_users):
        pool = (item_c == user_c[u]).nonzero().flatten()
        pick = pool[torch.randperm(pool.numel(), generator=g)[:per_user]]
        pairs += [(u, int(i)) for i in pick]
    ei = torch.tensor(pairs).t()
    held = torch.zeros(ei.size(1), dtype=torch.bool)
    held[torch.arange(0, ei.size(1), per_user)] = True  # one valid item per user
    test = torch.zeros_like(held)
    test[torch.arange(1, ei.size(1), per_user)] = True  # one test item per user
    from torch_geometric.data import HeteroData

    from mllmrec_pyg.data import INTERACTS

    data = HeteroData()
    data["user"].num_nodes = num_users
    data["item"].num_nodes = num_items
    data[INTERACTS].edge_index = ei[:, ~(held | test)]
    data[INTERACTS].val_edge_index = ei[:, held]
    data[INTERACTS].test_edge_index = ei[:, test]
    data["item"].x = centres[item_c] + 0.3 * torch.randn(num_items, dim, generator=g)
    data["item"].image = torch.randn(num_items, dim + 3, generator=g) + centres[item_c, :1]
    return data


def inputs_with_other_held_out(data, text, graph, cache, seed=1):
    """The model inputs (features, then the refined graph) of ``data`` and of a copy whose
    valid/test pairs are replaced by random pairs drawn with ``seed``."""
    import torch

    from mllmrec_pyg import pipeline

    other = data.clone()
    store = other["user", "interacts", "item"]
    g = torch.Generator().manual_seed(seed)
    for key in ("val_edge_index", "test_edge_index"):
        n = store[key].size(1)
        store[key] = torch.stack(
            [
                torch.randint(0, data["user"].num_nodes, (n,), generator=g),
                torch.randint(0, data["item"].num_nodes, (n,), generator=g),
            ]
        )
    assert not torch.equal(store.test_edge_index, data["user", "interacts", "item"].test_edge_index)
    built = []
    for d in (data, other):
        d, _ = pipeline.add_features(d, text, cache, show_progress=False)
        built.append(pipeline.build_graph(d, graph))
    return built


def assert_same_inputs(a, b):
    """Item and user text, their vectors and every item-item graph of ``a`` and ``b`` are equal."""
    import torch

    assert a["user"].text == b["user"].text
    assert a["item"].text == b["item"].text
    for key in ("item", "user"):
        assert torch.equal(a[key].x, b[key].x)
    for et in a.edge_types:
        if et[0] == et[2] == "item":
            assert torch.equal(a[et].edge_index, b[et].edge_index)
            assert torch.equal(a[et].edge_weight, b[et].edge_weight)


def synthetic_with_features(num_users=150, num_items=80, dim=16):
    """A small synthetic catalog with random item and user features (no encoder)."""
    import torch

    from mllmrec_pyg.config import DataConfig
    from mllmrec_pyg.pipeline import load_data

    data = load_data(DataConfig("synthetic", num_users=num_users, num_items=num_items))
    g = torch.Generator().manual_seed(0)
    data["item"].x = torch.randn(data["item"].num_nodes, dim, generator=g)
    data["user"].x = torch.randn(data["user"].num_nodes, dim, generator=g)
    return data
