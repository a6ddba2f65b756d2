import importlib.util

import pytest
import torch
from torch_geometric.data import HeteroData
from torch_geometric.transforms import Compose

from mllmrec_pyg.data import COOCCURS, INTERACTS, RELATED, SEMANTIC, SchemaError
from mllmrec_pyg.transforms import JaccardCoOccurrence, MergeGraphs, ThresholdKNN

from graph_reference import assert_topk_rows, dense_cosine, dense_jaccard, neighbour_lists


def _features(n=60, d=16, seed=0, clusters=6):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, d, generator=g)
    x = centres[torch.randint(clusters, (n,), generator=g)] + 0.6 * torch.randn(n, d, generator=g)
    x[7] = x[3]  # an exact duplicate: a tie at cosine 1
    x[11] = 2.5 * x[5]  # same direction, other norm
    return x


def _data_with_x(x):
    data = HeteroData()
    data["item"].num_nodes = x.size(0)
    data["item"].x = x
    return data


def _check_knn(x, k, alpha, loop, block_size=None, backend="torch"):
    data = ThresholdKNN(k=k, threshold=alpha, loop=loop, block_size=block_size, backend=backend)(
        _data_with_x(x)
    )
    store = data[SEMANTIC]
    n = x.size(0)
    got = neighbour_lists(store.edge_index, store.edge_weight, n)
    sim, zero = dense_cosine(x)
    cand = ~torch.eye(n, dtype=torch.bool) & ~zero.unsqueeze(0) & ~zero.unsqueeze(1)
    if alpha is not None:
        cand &= sim >= alpha
    if loop:
        for a in range(n):
            if zero[a]:
                continue
            assert got[a].pop(a, None) == 1.0, f"item {a} lacks its self-loop"
    k_others = k - 1 if loop else k
    assert_topk_rows(got, sim, cand, k_others, None)
    return store


HAS_FAISS = importlib.util.find_spec("faiss") is not None
BACKENDS = [
    "torch",
    pytest.param("faiss", marks=pytest.mark.skipif(not HAS_FAISS, reason="faiss not installed")),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loop", [True, False])
@pytest.mark.parametrize("alpha", [None, 0.0, 0.5, 0.7])
@pytest.mark.parametrize("k", [1, 3, 10])
def test_threshold_knn_matches_dense_reference(k, alpha, loop, backend):
    _check_knn(_features(), k, alpha, loop, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_threshold_knn_zero_rows_and_clamp_all_backends(backend):
    x = _features(n=20)
    x[4] = 0.0
    for k in (3, 50):
        store = _check_knn(x, k, 0.2, True, backend=backend)
        assert not (store.edge_index == 4).any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_threshold_knn_cuda_matches_cpu():
    x = _features(n=500, d=64)
    cpu = ThresholdKNN(k=10, threshold=0.5, block_size=64)(_data_with_x(x))[SEMANTIC]
    gpu = ThresholdKNN(k=10, threshold=0.5, block_size=64)(_data_with_x(x.cuda()))[SEMANTIC]
    assert gpu.edge_index.is_cuda
    # x holds exact ties (a duplicate row, a rescaled row): a cosine of 1 on one device can
    # be 1 - 1 ulp on the other, which reorders tied neighbours. Each node's selected
    # similarities must agree, so any swapped neighbour is a tie up to float error.
    xn = torch.nn.functional.normalize(x.double(), dim=1)
    sim = xn @ xn.T

    def picked(store):
        ei = store.edge_index.cpu()
        return [sim[ei[0][ei[1] == i], i].sort().values for i in range(x.size(0))]

    a, b = picked(cpu), picked(gpu)
    assert all(u.shape == v.shape and torch.allclose(u, v, atol=1e-5) for u, v in zip(a, b))
    same = (cpu.edge_index == gpu.edge_index.cpu()).all(0).float().mean()
    assert same > 0.99, f"only {same:.1%} of the edges agree"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_jaccard_cuda_matches_cpu():
    ei = _interactions()
    cpu = JaccardCoOccurrence(k=4)(_ui_data(ei, 40, 30))[COOCCURS]
    gpu = JaccardCoOccurrence(k=4)(_ui_data(ei.cuda(), 40, 30))[COOCCURS]
    assert torch.equal(cpu.edge_index, gpu.edge_index.cpu())
    assert torch.allclose(cpu.edge_weight, gpu.edge_weight.cpu())


def test_threshold_knn_blocks_do_not_change_result():
    x = _features(n=50)
    a = _check_knn(x, 5, 0.3, True, block_size=7)
    b = _check_knn(x, 5, 0.3, True, block_size=1000)
    assert torch.equal(a.edge_index, b.edge_index)


def test_threshold_knn_high_alpha_keeps_only_self_loops():
    x = torch.randn(40, 8)
    store = ThresholdKNN(k=10, threshold=0.9999, loop=True)(_data_with_x(x))[SEMANTIC]
    assert torch.equal(store.edge_index, torch.arange(40).repeat(2, 1))
    store = ThresholdKNN(k=10, threshold=0.9999, loop=False)(_data_with_x(x))[SEMANTIC]
    assert store.edge_index.size(1) == 0


def test_threshold_knn_edge_orientation():
    # item 0 and 1 point the same way, item 2 opposite: 1 is in 0's list.
    x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [-1.0, 0.0]])
    store = ThresholdKNN(k=2, threshold=0.5, loop=False)(_data_with_x(x))[SEMANTIC]
    assert store.edge_index.t().tolist() == [[1, 0], [0, 1]]


def test_threshold_knn_zero_norm_rows_get_no_edges():
    x = _features(n=30)
    x[4] = 0.0
    store = _check_knn(x, 5, None, True)
    assert not (store.edge_index == 4).any()


def test_threshold_knn_clamps_k_to_catalog():
    x = torch.randn(5, 4)
    store = ThresholdKNN(k=50, threshold=None, loop=False)(_data_with_x(x))[SEMANTIC]
    assert store.edge_index.size(1) == 5 * 4
    store = ThresholdKNN(k=50, threshold=None, loop=True)(_data_with_x(x))[SEMANTIC]
    assert store.edge_index.size(1) == 5 * 5


@pytest.mark.parametrize("k", [0, -3, 2.5])
def test_threshold_knn_rejects_bad_k(k):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        ThresholdKNN(k=k)


def test_threshold_knn_names_nonfinite_rows():
    x = torch.randn(10, 4)
    x[3, 1] = float("nan")
    x[8, 0] = float("inf")
    with pytest.raises(SchemaError, match=r"NaN or inf in 2 row\(s\): \[3, 8\]"):
        ThresholdKNN()(_data_with_x(x))


def test_threshold_knn_missing_features_and_types():
    data = HeteroData()
    data["item"].num_nodes = 4
    with pytest.raises(SchemaError, match=r"data\['item'\].x is missing"):
        ThresholdKNN()(data)
    with pytest.raises(SchemaError, match="no node type 'product'"):
        ThresholdKNN(node_type="product")(data)
    data["item"].x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="3 rows for 4 nodes"):
        ThresholdKNN()(data)


def _interactions(num_users=40, num_items=30, seed=1, per_user=6):
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for u in range(num_users):
        # items 25..29 are never interacted with
        items = torch.randperm(25, generator=g)[: 1 + u % per_user]
        pairs += [(u, int(i)) for i in items]
    # two items with identical audiences (Jaccard exactly 1)
    pairs += [(0, 20), (1, 20), (0, 21), (1, 21)]
    pairs = sorted(set(pairs))
    pairs = [p for p in pairs if p[1] not in (20, 21) or p[0] in (0, 1)]
    return torch.tensor(pairs).t().contiguous()


def _ui_data(edge_index, num_users, num_items):
    data = HeteroData()
    data["user"].num_nodes = num_users
    data["item"].num_nodes = num_items
    data[INTERACTS].edge_index = edge_index
    return data


@pytest.mark.parametrize("k", [1, 3, 10, 100])
def test_jaccard_matches_dense_reference(k):
    ei = _interactions()
    store = JaccardCoOccurrence(k=k, block_size=7)(_ui_data(ei, 40, 30))[COOCCURS]
    jac = dense_jaccard(ei, 40, 30)
    cand = (jac > 0) & ~torch.eye(30, dtype=torch.bool)
    assert_topk_rows(neighbour_lists(store.edge_index, store.edge_weight, 30), jac, cand, k, jac)
    # items without users are isolated; identical audiences stay connected
    assert not ((store.edge_index >= 25) & (store.edge_index < 30)).any()
    if k >= 3:
        pairs = set(map(tuple, store.edge_index.t().tolist()))
        assert (20, 21) in pairs and (21, 20) in pairs


def test_jaccard_counts_duplicate_pairs_once_and_ignores_held_out():
    ei = _interactions()
    base = JaccardCoOccurrence(k=5)(_ui_data(ei, 40, 30))[COOCCURS]
    data = _ui_data(torch.cat([ei, ei[:, :17]], dim=1), 40, 30)
    data[INTERACTS].val_edge_index = torch.tensor([[0, 1, 2], [25, 26, 27]])
    data[INTERACTS].test_edge_index = torch.tensor([[3, 4], [28, 29]])
    dup = JaccardCoOccurrence(k=5)(data)[COOCCURS]
    assert torch.equal(base.edge_index, dup.edge_index)
    assert torch.allclose(base.edge_weight, dup.edge_weight)


def test_jaccard_block_size_invariance():
    ei = _interactions(seed=3)
    a = JaccardCoOccurrence(k=4, block_size=1)(_ui_data(ei, 40, 30))[COOCCURS]
    b = JaccardCoOccurrence(k=4, block_size=4096)(_ui_data(ei, 40, 30))[COOCCURS]
    assert torch.equal(a.edge_index, b.edge_index)
    assert torch.equal(a.edge_weight, b.edge_weight)


def test_jaccard_bad_input():
    with pytest.raises(ValueError, match="positive integer"):
        JaccardCoOccurrence(k=0)
    data = _ui_data(torch.tensor([[0, 1], [2, 30]]), 2, 30)
    with pytest.raises(SchemaError, match=r"target ids out of range \[0, 30\).*\[1\].*\[30\]"):
        JaccardCoOccurrence()(data)
    data = HeteroData()
    data["user"].num_nodes = 2
    data["item"].num_nodes = 2
    with pytest.raises(SchemaError, match="no edge type"):
        JaccardCoOccurrence()(data)


def test_merge_sums_shared_edges():
    data = HeteroData()
    data["item"].num_nodes = 4
    data[SEMANTIC].edge_index = torch.tensor([[0, 1, 2], [1, 2, 3]])
    data[SEMANTIC].edge_weight = torch.ones(3)
    data[COOCCURS].edge_index = torch.tensor([[1, 3], [2, 0]])
    data[COOCCURS].edge_weight = torch.tensor([0.25, 0.5])
    out = MergeGraphs()(data)[RELATED]
    dense = torch.zeros(4, 4)
    dense[out.edge_index[1], out.edge_index[0]] = out.edge_weight
    want = torch.zeros(4, 4)
    want[1, 0] = 1.0
    want[2, 1] = 1.25
    want[3, 2] = 1.0
    want[0, 3] = 0.5
    assert torch.equal(dense, want)
    assert out.edge_index.size(1) == 4
    with pytest.raises(SchemaError, match="no edge type"):
        MergeGraphs(relations=("semantic", "visual"))(data)
    data[COOCCURS].edge_index = torch.tensor([[1, 4], [2, 0]])
    with pytest.raises(SchemaError, match=r"source ids out of range \[0, 4\)"):
        MergeGraphs()(data)
    data[COOCCURS].edge_index = torch.tensor([[1], [2]])
    with pytest.raises(ValueError, match="edge_weight has 2 entries for 1 edges"):
        MergeGraphs()(data)


def test_compose_full_refinement_equals_dense_sum():
    num_users, num_items = 40, 30
    ei = _interactions()
    x = _features(n=num_items)
    data = _ui_data(ei, num_users, num_items)
    data["item"].x = x
    data = Compose([ThresholdKNN(k=4, threshold=0.4), JaccardCoOccurrence(k=3), MergeGraphs()])(
        data
    )

    def dense(store):
        m = torch.zeros(num_items, num_items)
        m[store.edge_index[1], store.edge_index[0]] = store.edge_weight
        return m

    assert torch.allclose(dense(data[RELATED]), dense(data[SEMANTIC]) + dense(data[COOCCURS]))
    assert (data[RELATED].edge_weight > 0).all()
