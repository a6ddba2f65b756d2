"""Distributed refinement on a local Dask cluster and incremental refinement, each
against the in-process transforms, edge for edge and weight for weight."""

import numpy as np
import pytest
import torch
from torch_geometric.data import HeteroData

from mllmrec_pyg.transforms import JaccardCoOccurrence, RefineItemGraph, ThresholdKNN
from mllmrec_pyg.transforms._ann import IndexParams
from mllmrec_pyg.transforms.incremental import update_jaccard, update_threshold_knn
from mllmrec_pyg.transforms.jaccard import jaccard_topk_graph
from mllmrec_pyg.transforms.threshold_knn import threshold_knn_graph

distributed = pytest.importorskip("distributed")
pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def _features(n=500, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    x[5] = 0.0  # zero-norm row
    x[7] = x[3]  # exact ties
    x[11] = x[3]
    x[9] = 2 * x[3]
    return x


def _pairs(num_users=200, num_items=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    deg = torch.randint(1, 8, (num_users,), generator=g)
    deg[:2] = num_items // 2  # heavy users
    users = torch.repeat_interleave(torch.arange(num_users), deg)
    return torch.stack([users, torch.randint(0, num_items, (users.numel(),), generator=g)])


@pytest.mark.parametrize(
    "backend, params",
    [
        ("torch", None),
        ("ivfjoin", IndexParams(nlist=6, nprobe=3)),
        ("ivfjoin", IndexParams(nlist=6, nprobe=6)),
    ],
)
@pytest.mark.parametrize("threshold, loop", [(None, True), (0.4, True), (0.4, False)])
def test_distributed_knn_equals_in_process(client, tmp_path, backend, params, threshold, loop):
    x = _features()
    np.save(tmp_path / "x.npy", x.numpy().astype(np.float16))
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")  # workers read the file
    ref = threshold_knn_graph(xm, 10, threshold, loop, 64, backend, params)
    from mllmrec_pyg.transforms.distributed import distributed_threshold_knn

    got = distributed_threshold_knn(client, xm, 10, threshold, loop, 64, backend, params)
    assert ref[0].size(1) > 0
    assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])


@pytest.mark.parametrize("max_pairs", [None, 40, 2000])
def test_distributed_jaccard_equals_in_process(client, max_pairs):
    ei = _pairs()
    ref = jaccard_topk_graph(ei, 200, 300, 5, 32, max_pairs)
    from mllmrec_pyg.transforms.distributed import distributed_jaccard

    got = distributed_jaccard(client, ei, 200, 300, 5, 32, max_pairs)
    assert ref[0].size(1) > 0
    assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])


def test_refine_item_graph_executor_equals_in_process(client):
    data = HeteroData()
    data["item"].num_nodes = 300
    data["user"].num_nodes = 200
    data["item"].x = _features(300)
    data["user", "interacts", "item"].edge_index = _pairs()
    ref = RefineItemGraph(k_s=6, alpha=0.3, k_c=4)(data.clone())
    got = RefineItemGraph(k_s=6, alpha=0.3, k_c=4, executor=client)(data.clone())
    for rel in ("semantic", "cooccurs", "related"):
        a, b = ref["item", rel, "item"], got["item", rel, "item"]
        assert torch.equal(a.edge_index, b.edge_index), rel
        assert torch.equal(a.edge_weight, b.edge_weight), rel


def test_executor_bad_input():
    with pytest.raises(TypeError, match="executor must be a dask"):
        ThresholdKNN(executor="tcp://127.0.0.1:8786")
    with pytest.raises(TypeError, match="executor must be a dask"):
        JaccardCoOccurrence(executor=object())


def test_executor_refuses_index_backends(client):
    with pytest.raises(ValueError, match="backend 'torch', 'ivfjoin' or 'auto'"):
        ThresholdKNN(backend="hnsw", executor=client)


@pytest.mark.parametrize("seed", range(12))
def test_incremental_knn_equals_rebuild(seed):
    g = torch.Generator().manual_seed(seed)
    n_old = int(torch.randint(30, 300, (1,), generator=g))
    n = n_old + int(torch.randint(1, 90, (1,), generator=g))
    x = torch.randn(n, 8, generator=g)
    dup = torch.randint(0, n, (n // 4,), generator=g)  # many exact ties
    x[dup] = x[torch.randint(0, n, (dup.numel(),), generator=g)]
    x[torch.randint(0, n, (3,), generator=g)] = 0.0
    k = int(torch.randint(1, 12, (1,), generator=g))
    threshold, loop, block = [None, 0.2, 0.6][seed % 3], seed % 2 == 0, [5, 16, 64][seed % 3]
    old = threshold_knn_graph(x[:n_old], k, threshold, loop, block)
    ref = threshold_knn_graph(x, k, threshold, loop, block)
    got = update_threshold_knn(x, old[0], n_old, k, threshold, loop, block)
    assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])


@pytest.mark.parametrize("seed", range(12))
def test_incremental_jaccard_equals_rebuild(seed):
    g = torch.Generator().manual_seed(seed)
    n_old = int(torch.randint(20, 300, (1,), generator=g))
    n = n_old + int(torch.randint(0, 60, (1,), generator=g))
    nu = 150
    deg = torch.randint(1, 6, (nu,), generator=g)
    deg[:3] = max(1, n_old // 2)  # heavy users
    users = torch.repeat_interleave(torch.arange(nu), deg)
    old_p = torch.stack([users, torch.randint(0, n_old, (users.numel(),), generator=g)])
    m = int(torch.randint(1, 300, (1,), generator=g))
    new_p = torch.stack(
        [torch.randint(0, nu + 20, (m,), generator=g), torch.randint(0, n, (m,), generator=g)]
    )
    new_p[0, :5] = 0  # a heavy user gains items
    new_p = torch.cat([new_p, old_p[:, :3]], 1)  # pairs already present
    k, max_pairs = int(torch.randint(1, 8, (1,), generator=g)), [None, 50, 5000][seed % 3]
    old = jaccard_topk_graph(old_p, nu + 20, n_old, k, max_pairs=max_pairs)
    union = torch.cat([old_p, new_p], 1)
    ref = jaccard_topk_graph(union, nu + 20, n, k, max_pairs=max_pairs)
    got = update_jaccard(union, new_p, nu + 20, n, old[0], old[1], n_old, k, max_pairs)
    assert ref[0].size(1) > 0
    assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])
    # the same pairs sorted by (user, item) without duplicates: read as they are
    key = torch.unique(union[0] * n + union[1])
    got = update_jaccard(
        torch.stack([key // n, key % n]), new_p, nu + 20, n, old[0], old[1], n_old, k, max_pairs
    )
    assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])


@pytest.mark.parametrize("seed", range(8))
def test_incremental_jaccard_popular_old_items_gain_pairs(seed):
    # new pairs on the most popular old items: touched items on many old lists, whose
    # values drop below the rest of those rows (rows recounted) or stay above
    g = torch.Generator().manual_seed(100 + seed)
    n_old, nu = 120, 90
    deg = torch.randint(1, 7, (nu,), generator=g)
    users = torch.repeat_interleave(torch.arange(nu), deg)
    items = (torch.rand(users.numel(), generator=g) ** 3 * n_old).long()  # skewed popularity
    old_p = torch.stack([users, items])
    m = 40
    new_items = (torch.rand(m, generator=g) ** 4 * (n_old + 5)).long()  # a few new items too
    new_p = torch.stack([torch.randint(0, nu, (m,), generator=g), new_items])
    k = [1, 3, 5, 10][seed % 4]
    old = jaccard_topk_graph(old_p, nu, n_old, k)
    union = torch.cat([new_p, old_p], 1)  # unsorted, with duplicates
    ref = jaccard_topk_graph(union, nu, n_old + 5, k)
    got = update_jaccard(
        union, new_p, nu, n_old + 5, old[0], old[1], n_old, k, [None, 30][seed % 2]
    )
    assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])


def test_incremental_jaccard_new_item_pairs_always_count():
    # a new item's pairs are new even when new_edge_index leaves them out
    old_p = torch.tensor([[0, 0, 1, 1, 2], [0, 1, 1, 2, 2]])
    new_p = torch.tensor([[2], [0]])  # only a new pair of an old item
    union = torch.cat([old_p, new_p, torch.tensor([[1, 2], [3, 3]])], 1)
    old = jaccard_topk_graph(old_p, 3, 3, 2)
    ref = jaccard_topk_graph(union, 3, 4, 2)
    got = update_jaccard(union, new_p, 3, 4, old[0], old[1], 3, 2)
    assert int((ref[0][1] == 3).sum()) == 2  # item 3 has a row (its users hold 0, 1, 2)
    assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])


def test_incremental_jaccard_ties():
    # items with identical audiences: equal values, ties go to the lower id
    old_p = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 1, 2, 0, 1, 2]])
    new_p = torch.tensor([[0, 1], [3, 3]])  # a new item with the same audience
    union = torch.cat([old_p, new_p], 1)
    old = jaccard_topk_graph(old_p, 2, 3, 2)
    ref = jaccard_topk_graph(union, 2, 4, 2)
    got = update_jaccard(union, new_p, 2, 4, old[0], old[1], 3, 2)
    assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])


def test_incremental_bad_input():
    x = torch.randn(10, 4)
    old = threshold_knn_graph(x[:6], 3, None)
    with pytest.raises(ValueError, match="num_old"):
        update_threshold_knn(x, old[0], 11, 3, None)
    with pytest.raises(ValueError, match="outside the 4 old items"):
        update_threshold_knn(x, old[0], 4, 3, None)
    with pytest.raises(ValueError, match="graph_weight has"):
        update_jaccard(
            torch.zeros(2, 1, dtype=torch.long),
            torch.zeros(2, 1, dtype=torch.long),
            1,
            2,
            torch.zeros(2, 1, dtype=torch.long),
            torch.ones(3),
            2,
            2,
        )


def _write_inputs(folder, n=200, nu=120):
    x = _features(n)
    np.save(folder / "x.npy", x.numpy().astype(np.float16))
    pairs = _pairs(nu, n)
    np.save(folder / "pairs.npy", pairs.numpy())
    return np.load(folder / "x.npy", mmap_mode="r"), pairs


def _read(folder, rel):
    return (
        torch.from_numpy(np.load(folder / f"{rel}_edge_index.npy")),
        torch.from_numpy(np.load(folder / f"{rel}_edge_weight.npy")),
    )


def test_cli_refine_on_scheduler_equals_in_process(client, tmp_path):
    from mllmrec_pyg.cli import main

    x, pairs = _write_inputs(tmp_path)
    common = [
        "refine",
        "--features",
        str(tmp_path / "x.npy"),
        "--pairs",
        str(tmp_path / "pairs.npy"),
    ]
    common += ["--num-users", "120", "--alpha", "0.3", "--knn-backend", "torch", "--threads", "1"]
    assert main([*common, "--out", str(tmp_path / "local")]) == 0
    address = client.scheduler.address
    assert main([*common, "--out", str(tmp_path / "cluster"), "--scheduler", address]) == 0
    ref_s = threshold_knn_graph(x, 10, 0.3)
    ref_c = jaccard_topk_graph(pairs, 120, 200, 10)
    for out in ("local", "cluster"):
        s, c = _read(tmp_path / out, "semantic"), _read(tmp_path / out, "cooccurs")
        assert torch.equal(s[0], ref_s[0]) and torch.equal(c[0], ref_c[0])
        assert torch.equal(c[1], ref_c[1])
    for rel in ("semantic", "cooccurs", "related"):
        a, b = _read(tmp_path / "local", rel), _read(tmp_path / "cluster", rel)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_cli_refine_update_equals_rebuild(tmp_path):
    from mllmrec_pyg.cli import main

    x, pairs = _write_inputs(tmp_path)
    n_old = 170
    old = pairs[:, pairs[1] < n_old]
    np.save(tmp_path / "old_pairs.npy", old.numpy())
    np.save(tmp_path / "x_old.npy", np.asarray(x[:n_old]))
    np.save(tmp_path / "new_pairs.npy", pairs[:, pairs[1] >= n_old].numpy())
    args = ["refine", "--num-users", "120", "--alpha", "0.3", "--knn-backend", "torch"]
    assert main([*args, "--features", str(tmp_path / "x_old.npy"), "--pairs",
                 str(tmp_path / "old_pairs.npy"), "--out", str(tmp_path / "old")]) == 0  # fmt: skip
    full = [*args, "--features", str(tmp_path / "x.npy"), "--pairs", str(tmp_path / "pairs.npy")]
    assert main([*full, "--out", str(tmp_path / "full")]) == 0
    assert main([*full, "--out", str(tmp_path / "upd"), "--update-from", str(tmp_path / "old"),
                 "--num-old-items", str(n_old), "--new-pairs", str(tmp_path / "new_pairs.npy")]) == 0  # fmt: skip
    for rel in ("semantic", "cooccurs", "related"):
        a, b = _read(tmp_path / "full", rel), _read(tmp_path / "upd", rel)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), rel


def test_cli_refine_bad_input(tmp_path, capsys):
    from mllmrec_pyg.cli import main

    np.save(tmp_path / "x.npy", np.zeros((4, 3), dtype=np.float32))
    np.save(tmp_path / "pairs.npy", np.array([[0, 1], [2, 9]]))
    with pytest.raises(SystemExit) as err:
        main(["refine", "--features", str(tmp_path / "x.npy"), "--pairs",
              str(tmp_path / "pairs.npy"), "--out", str(tmp_path / "o")])  # fmt: skip
    assert err.value.code == 2
    assert "item ids outside [0, 4)" in capsys.readouterr().err
