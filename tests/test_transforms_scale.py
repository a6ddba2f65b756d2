"""Approximate and bounded-memory graph refinement against the exact transforms."""

import importlib.util
import sys

import numpy as np
import pytest
import torch
from torch_geometric.data import HeteroData

from mllmrec_pyg.data import COOCCURS, INTERACTS, SEMANTIC, SchemaError
from mllmrec_pyg.transforms import JaccardCoOccurrence, MergeGraphs, ThresholdKNN
from mllmrec_pyg.transforms import threshold_knn as tknn
from mllmrec_pyg.transforms.jaccard import jaccard_topk_graph

from graph_reference import assert_topk_rows, dense_jaccard, neighbour_lists

HAS_FAISS = importlib.util.find_spec("faiss") is not None
needs_faiss = pytest.mark.skipif(not HAS_FAISS, reason="faiss not installed")


def _clustered(n=300, d=24, seed=0, clusters=8, zero=(5,)):
    """Tie-free clustered features (continuous random noise) with zero-norm rows."""
    g = torch.Generator().manual_seed(seed)
    centres = 2 * torch.randn(clusters, d, generator=g)
    x = centres[torch.randint(clusters, (n,), generator=g)] + torch.randn(n, d, generator=g)
    for z in zero:
        x[z] = 0.0
    return x


def _data_with_x(x):
    data = HeteroData()
    data["item"].num_nodes = x.shape[0]
    data["item"].x = x
    return data


def _knn(x, **kw):
    return ThresholdKNN(**kw)(_data_with_x(x))[SEMANTIC]


# exhaustive settings: every approximate index sees every candidate
EXHAUSTIVE = [
    pytest.param(dict(backend="faiss"), id="flat"),
    pytest.param(dict(backend="ivf", nlist=4, nprobe=4, train_size=300), id="ivf-nprobe=nlist"),
    pytest.param(dict(backend="ivfjoin", nlist=4, nprobe=4), id="ivfjoin-nprobe=nlist"),
    pytest.param(dict(backend="ivfjoin", nlist=7, nprobe=7, block_size=16), id="ivfjoin-blocks"),
    pytest.param(
        dict(backend="ivfpq", nlist=4, nprobe=4, pq_m=4, pq_bits=4, candidates=400),
        id="ivfpq-rescored-all",
    ),
]


@needs_faiss
@pytest.mark.parametrize("params", EXHAUSTIVE)
@pytest.mark.parametrize("loop", [True, False])
@pytest.mark.parametrize("alpha", [None, 0.2, 0.6])
@pytest.mark.parametrize("k", [1, 4, 12])
def test_exhaustive_index_equals_exact(params, loop, alpha, k):
    x = _clustered()
    exact = _knn(x, k=k, threshold=alpha, loop=loop)
    approx = _knn(x, k=k, threshold=alpha, loop=loop, **params)
    assert exact.edge_index.size(1) > 0
    assert torch.equal(exact.edge_index, approx.edge_index)
    assert torch.equal(exact.edge_weight, approx.edge_weight)
    assert not (approx.edge_index == 5).any()  # zero-norm row isolated


@needs_faiss
@pytest.mark.parametrize("backend", ["ivf", "ivfjoin", "hnsw"])
def test_approximate_index_keeps_semantics_and_high_recall(backend):
    x = _clustered(n=2000, d=32, clusters=40, zero=(3, 17))
    exact = _knn(x, k=10, threshold=0.5)
    approx = _knn(x, k=10, threshold=0.5, backend=backend, nlist=40, nprobe=4)
    xn = torch.nn.functional.normalize(x, dim=1)
    src, dst = approx.edge_index
    # every returned edge is genuine: exact similarity >= alpha, self-loops on
    # every non-zero row, nothing touches zero-norm rows
    assert ((xn[src] * xn[dst]).sum(1) >= 0.5 - 1e-6).all()
    assert (src == dst).sum() == 2000 - 2
    assert not torch.isin(approx.edge_index, torch.tensor([3, 17])).any()
    counts = torch.bincount(dst, minlength=2000)
    assert counts.max() <= 10
    got = set(map(tuple, approx.edge_index.t().tolist()))
    want = set(map(tuple, exact.edge_index.t().tolist()))
    assert len(got & want) / len(want) >= 0.95


@needs_faiss
@pytest.mark.parametrize(
    "params",
    [
        dict(backend="faiss"),
        dict(backend="ivf", nlist=2, nprobe=2, train_size=6),
        dict(backend="ivfjoin", nlist=2, nprobe=2),
    ],
)
def test_index_ties_go_to_lower_id(params):
    # owner 0's three best neighbours are exact duplicates: k=2 keeps ids 2 and 4
    x = torch.tensor(
        [[1.0, 0.0], [0.0, 1.0], [1.0, 0.2], [-1.0, 0.3], [1.0, 0.2], [1.0, 0.2], [0.2, 1.0]]
    )
    store = _knn(x, k=2, threshold=None, loop=False, **params)
    lists = neighbour_lists(store.edge_index, store.edge_weight, 7)
    assert set(lists[0]) == {2, 4}


@needs_faiss
def test_hnsw_matches_exact_on_small_input():
    x = _clustered(n=200)
    exact = _knn(x, k=5, threshold=0.3)
    approx = _knn(x, k=5, threshold=0.3, backend="hnsw", ef_search=200, ef_construction=200)
    assert torch.equal(exact.edge_index, approx.edge_index)


@pytest.mark.parametrize("backend", ["torch", pytest.param("ivf", marks=needs_faiss)])
def test_float16_and_memmap_features(tmp_path, backend):
    x16 = _clustered(n=150).half()
    kw = dict(k=6, threshold=0.3, backend=backend, nlist=2, nprobe=2, train_size=150)
    ref = _knn(x16.float(), **kw)
    half = _knn(x16, **kw)
    np.save(tmp_path / "x.npy", x16.numpy())
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    mm = _knn(mapped, **kw)
    assert torch.equal(ref.edge_index, half.edge_index)
    assert torch.equal(ref.edge_index, mm.edge_index)


def test_nonfinite_numpy_features_name_first_bad_row():
    x = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float16)
    x[41, 2] = np.inf
    x[17, 0] = np.nan
    with pytest.raises(SchemaError, match=r"2 row\(s\): \[17, 41\]; first bad row 17"):
        ThresholdKNN(block_size=8)(_data_with_x(x))


def test_auto_backend_by_size(monkeypatch):
    cpu = torch.device("cpu")
    assert tknn.resolve_backend("auto", 1000, cpu) == "torch"
    assert tknn.resolve_backend("hnsw", 10, cpu) == "hnsw"
    monkeypatch.setattr(tknn, "AUTO_EXACT_MAX_CPU", 100)
    if HAS_FAISS:
        assert tknn.resolve_backend("auto", 1000, cpu) == "ivfjoin"
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.warns(UserWarning, match="faiss is not installed"):
        assert tknn.resolve_backend("auto", 1000, cpu) == "torch"


@pytest.mark.parametrize("backend", ["faiss", "ivf", "ivfpq", "hnsw", "ivfjoin"])
def test_missing_faiss_names_the_extra(monkeypatch, backend):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match=r'pip install "mllmrec-pyg\[faiss\]"'):
        _knn(_clustered(n=20), backend=backend)


@needs_faiss
def test_pq_m_must_divide_dimension():
    with pytest.raises(ValueError, match="pq_m=5 must divide the feature dimension 24"):
        _knn(_clustered(n=60), backend="ivfpq", pq_m=5, nlist=2)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(threshold="0.7"), TypeError, "threshold must be a number"),
        (dict(threshold=float("nan")), ValueError, "threshold must be a cosine"),
        (dict(threshold=1.5), ValueError, "threshold must be a cosine"),
        (dict(threshold=True), TypeError, "threshold"),
        (dict(k=0), ValueError, "k must be a positive integer"),
        (dict(k=-2), ValueError, "k must be a positive integer"),
        (dict(k="10"), ValueError, "k must be a positive integer"),
        (dict(loop="yes"), TypeError, "loop must be True or False"),
        (dict(block_size=-4), ValueError, "block_size must be a positive integer"),
        (dict(block_size=0), ValueError, "block_size"),
        (dict(backend="annoy"), ValueError, "backend must be one of"),
        (dict(nprobe=0), ValueError, "nprobe must be a positive integer"),
        (dict(nlist=-1), ValueError, "nlist must be a positive integer"),
        (dict(ef_search=1.5), TypeError, "ef_search must be a positive integer"),
        (dict(candidates=0), ValueError, "candidates"),
        (dict(pq_bits=20), ValueError, "pq_bits must be at most 16"),
        (dict(relation=""), ValueError, "relation must be a non-empty string"),
        (dict(node_type=3), TypeError, "node_type must be a string"),
    ],
)
def test_threshold_knn_rejects_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ThresholdKNN(**kwargs)


def test_threshold_knn_accepts_numpy_scalar_threshold():
    assert ThresholdKNN(threshold=np.float32(0.5)).threshold == 0.5


# ---------------------------------------------------------------- Jaccard


def _heavy_interactions(num_users=60, num_items=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    pairs = set()
    for u in range(num_users):
        deg = 1 + int(torch.randint(6, (1,), generator=g))
        pairs |= {(u, int(i)) for i in torch.randint(34, (deg,), generator=g)}
    pairs |= {(0, i) for i in range(34)}  # heavy users: every active item
    pairs |= {(1, i) for i in range(0, 34, 2)}
    pairs |= {(2, 35), (3, 35), (2, 36), (3, 36)}  # identical audiences, Jaccard 1
    return torch.tensor(sorted(pairs)).t().contiguous()


@pytest.mark.parametrize("max_pairs", [1, 2, 5, 33, 100])
@pytest.mark.parametrize("block_size", [1, 3, 4096])
@pytest.mark.parametrize("k", [1, 4])
def test_bounded_jaccard_equals_unbounded(max_pairs, block_size, k):
    ei = _heavy_interactions()
    ref_index, ref_weight = jaccard_topk_graph(ei, 60, 40, k, block_size=4096, max_pairs=None)
    index, weight = jaccard_topk_graph(ei, 60, 40, k, block_size=block_size, max_pairs=max_pairs)
    assert torch.equal(index, ref_index)
    assert torch.equal(weight, ref_weight)


def test_bounded_jaccard_matches_dense_reference():
    ei = _heavy_interactions(seed=2)
    data = HeteroData()
    data["user"].num_nodes = 60
    data["item"].num_nodes = 40
    data[INTERACTS].edge_index = torch.cat([ei, ei[:, :9]], dim=1)  # duplicates count once
    store = JaccardCoOccurrence(k=5, max_pairs=3, block_size=2)(data)[COOCCURS]
    jac = dense_jaccard(ei, 60, 40)
    cand = (jac > 0) & ~torch.eye(40, dtype=torch.bool)
    assert_topk_rows(neighbour_lists(store.edge_index, store.edge_weight, 40), jac, cand, 5, jac)
    pairs = set(map(tuple, store.edge_index.t().tolist()))
    assert (35, 36) in pairs and (36, 35) in pairs


def test_bounded_jaccard_tie_rule_lower_id():
    # owner 0 shares one user with items 1..4 equally (Jaccard 1/2 each): k=2 keeps 1, 2
    ei = torch.tensor([[0, 0, 0, 0, 0], [0, 1, 2, 3, 4]])
    for max_pairs in (1, 2, None):
        index, weight = jaccard_topk_graph(ei, 1, 5, k=2, max_pairs=max_pairs)
        owner0 = index[0, index[1] == 0].tolist()
        assert owner0 == [1, 2]


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(k=0), ValueError, "k must be a positive integer"),
        (dict(max_pairs=0), ValueError, "max_pairs must be a positive integer"),
        (dict(max_pairs=-5), ValueError, "max_pairs"),
        (dict(max_pairs=2.0), TypeError, "max_pairs"),
        (dict(block_size=-1), ValueError, "block_size must be a positive integer"),
        (dict(edge_type="user"), TypeError, "edge_type must be a"),
        (dict(edge_type=("user", "item")), TypeError, "edge_type"),
        (dict(relation=None), TypeError, "relation must be a string"),
    ],
)
def test_jaccard_rejects_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        JaccardCoOccurrence(**kwargs)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(relations="semantic"), TypeError, "relations must be a sequence"),
        (dict(relations=()), ValueError, "at least one relation"),
        (dict(relations=("semantic", "semantic")), ValueError, "distinct"),
        (dict(relations=("semantic", 2)), TypeError, "relations must be a string"),
        (dict(out=""), ValueError, "out must be a non-empty string"),
        (dict(node_type=None), TypeError, "node_type"),
    ],
)
def test_merge_rejects_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        MergeGraphs(**kwargs)
