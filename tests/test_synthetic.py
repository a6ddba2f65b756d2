import numpy as np
import pytest
import torch

from mllmrec_pyg.data import INTERACTS, k_core, make_synthetic, per_user_split, validate


@pytest.fixture(scope="module")
def small():
    return make_synthetic(seed=3, num_users=600, num_items=300)


def _all_pairs(data):
    s = data[INTERACTS]
    return torch.cat([s.edge_index, s.val_edge_index, s.test_edge_index], dim=1)


def test_sizes_and_contract(small):
    validate(small, require=["held_out"])
    assert 540 <= small["user"].num_nodes <= 600
    assert 270 <= small["item"].num_nodes <= 300
    assert len(small["item"].text) == small["item"].num_nodes
    assert small[INTERACTS].time.numel() == small[INTERACTS].edge_index.size(1)
    kinds = torch.bincount(small["item"].text_kind, minlength=3)
    assert kinds[1] > 0 and kinds[2] > 0  # generic and noisy items exist


def test_five_core(small):
    pairs = _all_pairs(small)
    assert torch.bincount(pairs[0]).min() >= 5
    assert torch.bincount(pairs[1]).min() >= 5
    assert torch.unique(pairs[0] * 10**6 + pairs[1]).numel() == pairs.size(1)


def test_split_proportions(small):
    s = small[INTERACTS]
    n = torch.bincount(_all_pairs(small)[0], minlength=small["user"].num_nodes)
    tr = torch.bincount(s.edge_index[0], minlength=n.numel())
    va = torch.bincount(s.val_edge_index[0], minlength=n.numel())
    te = torch.bincount(s.test_edge_index[0], minlength=n.numel())
    short = n < 10
    assert torch.equal(va[short], torch.ones_like(va[short]))
    assert torch.equal(te[short], torch.ones_like(te[short]))
    held = (0.2 * n[~short]).floor().long()
    assert torch.equal(va[~short], held // 2)
    assert torch.equal(te[~short], held - held // 2)
    assert torch.equal(tr, n - va - te)


def test_deterministic():
    a = make_synthetic(seed=5, num_users=200, num_items=120)
    b = make_synthetic(seed=5, num_users=200, num_items=120)
    c = make_synthetic(seed=6, num_users=200, num_items=120)
    assert a["item"].text == b["item"].text
    for key in ("edge_index", "val_edge_index", "test_edge_index", "time"):
        assert torch.equal(a[INTERACTS][key], b[INTERACTS][key])
    assert not torch.equal(a[INTERACTS].edge_index, c[INTERACTS].edge_index)


def test_k_core_and_split_helpers():
    users = np.array([0] * 5 + [1] * 4 + [2] * 5)
    items = np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 1, 2, 3, 4])
    keep = k_core(users, items, 3)
    # user 1 has 4 >= 3; item 4 has 2 users < 3 and goes; then users 0 and 2 keep 4
    assert keep.tolist() == [True] * 4 + [False] + [True] * 4 + [True] * 4 + [False]
    lab = per_user_split(np.repeat(np.arange(3), [2, 7, 20]), seed=0)
    assert lab[:2].tolist() == [0, 0]
    assert sorted(lab[2:9].tolist()) == [0] * 5 + [1, 2]
    assert sorted(lab[9:].tolist()) == [0] * 16 + [1, 1, 2, 2]


def _itemknn_recall(x, data, k=20):
    """Recall@k of a training-free item-kNN ranker on ``x``: a user's score for
    item i is the summed cosine of i to the user's training items."""
    x = torch.nn.functional.normalize(x.float(), dim=1)
    s = data[INTERACTS]
    num_users, num_items = data["user"].num_nodes, data["item"].num_nodes
    r = torch.zeros(num_users, num_items)
    r[s.edge_index[0], s.edge_index[1]] = 1.0
    scores = r @ (x @ x.t())
    scores[r > 0] = float("-inf")
    top = scores.topk(k, dim=1).indices
    hit = torch.zeros(num_users, num_items, dtype=torch.bool)
    hit[s.test_edge_index[0], s.test_edge_index[1]] = True
    hits = hit.gather(1, top).sum(1).float()
    n = hit.sum(1)
    return (hits[n > 0] / n[n > 0]).mean().item()


def test_text_carries_signal(small):
    """Encoder features of the item text rank held-out items far better than
    random features of the same shape."""
    from mllmrec_pyg.encode import encode_texts

    x = encode_texts(small["item"].text, show_progress=False)
    rand = torch.randn_like(x)
    text_recall = _itemknn_recall(x, small)
    rand_recall = _itemknn_recall(rand, small)
    assert text_recall > 1.5 * rand_recall, (text_recall, rand_recall)
