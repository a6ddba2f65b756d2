"""FREEDOM: edge pruning, the frozen kNN graph, plug-and-play graphs, forward pass and loss,
each against an independent dense or hand-worked reference."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import HeteroData

from mllmrec_pyg.data import INTERACTS, RELATED, SchemaError
from mllmrec_pyg.nn import FREEDOM, FREEDOMConfig
from mllmrec_pyg.nn.freedom import (
    degree_sensitive_prune,
    expected_kept,
    knn_item_graph,
    pruning_weights,
)
from mllmrec_pyg.nn.registry import build_model
from mllmrec_pyg.train import TrainConfig, Trainer, load_checkpoint, save_checkpoint
from mllmrec_pyg.transforms import RefineItemGraph


def _bipartite(num_users=30, num_items=20, per_user=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    pairs = set()
    for u in range(num_users):
        k = 2 + int(torch.randint(per_user, (1,), generator=g))
        for i in torch.randperm(num_items, generator=g)[:k].tolist():
            pairs.add((u, i))
    return torch.tensor(sorted(pairs)).t().contiguous()


def _data(num_users=30, num_items=20, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    ei = _bipartite(num_users, num_items, seed=seed)
    perm = torch.randperm(ei.size(1), generator=g)
    n_val = ei.size(1) // 10
    data = HeteroData()
    data["user"].num_nodes = num_users
    data["item"].num_nodes = num_items
    data[INTERACTS].edge_index = ei[:, perm[2 * n_val :]]
    data[INTERACTS].val_edge_index = ei[:, perm[:n_val]]
    data[INTERACTS].test_edge_index = ei[:, perm[n_val : 2 * n_val]]
    data["item"].x = torch.randn(num_items, dim, generator=g)
    data["item"].image = torch.randn(num_items, dim + 3, generator=g)
    return data


def _dense_sym_norm(a):
    """D^{-1/2} A D^{-1/2} with D the row sums (zero rows stay zero)."""
    d = a.sum(1)
    inv = torch.where(d > 0, d.pow(-0.5), torch.zeros_like(d))
    return inv[:, None] * a * inv[None, :]


# -- degree-sensitive edge pruning ------------------------------------------------------------


@pytest.mark.parametrize("dropout", [0.0, 0.5, 0.8, 0.9])
def test_pruning_keeps_the_expected_fraction_of_distinct_training_edges(dropout):
    ei = _bipartite(60, 40)
    kept = degree_sensitive_prune(ei, 60, 40, dropout, torch.Generator().manual_seed(1))
    want = int((ei.size(1) * (1 - dropout)) + 1e-9)
    assert kept.size(1) == want == expected_kept(ei.size(1), dropout)
    as_set = set(map(tuple, kept.t().tolist()))
    assert len(as_set) == kept.size(1), "an edge was kept twice"
    assert as_set <= set(map(tuple, ei.t().tolist())), "a kept edge is not a training edge"


def test_expected_kept_is_exact_on_round_fractions():
    assert expected_kept(100, 0.8) == 20
    assert expected_kept(100, 0.9) == 10
    assert expected_kept(7, 0.5) == 3
    assert expected_kept(5, 0.0) == 5


def test_pruning_weights_are_inverse_sqrt_degree_products():
    ei = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 0, 0]])
    # user degrees 3, 1, 1; item degrees 3, 1, 1
    want = torch.tensor([1 / 3, 3**-0.5, 3**-0.5, 3**-0.5, 3**-0.5], dtype=torch.float64)
    assert torch.allclose(pruning_weights(ei, 3, 3), want)


def _inclusion_exact(p, k):
    """P(edge in sample) for sequential sampling of k without replacement, by enumeration."""
    n = len(p)
    out = [0.0] * n
    for seq in itertools.permutations(range(n), k):
        prob, left = 1.0, 1.0
        for e in seq:
            prob *= p[e] / left
            left -= p[e]
        for e in seq:
            out[e] += prob
    return out


@pytest.mark.parametrize("keep", [1, 2])
def test_pruning_samples_in_proportion_to_inverse_sqrt_degrees(keep):
    # a star (user 0 with three items, two of them popular) plus pendant edges
    ei = torch.tensor([[0, 0, 0, 1, 2, 3], [0, 1, 2, 0, 1, 3]])
    w = pruning_weights(ei, 4, 4)
    p = (w / w.sum()).tolist()
    want = torch.tensor(_inclusion_exact(p, keep))
    dropout = 1 - keep / ei.size(1)
    gen = torch.Generator().manual_seed(0)
    draws = 4000
    counts = torch.zeros(ei.size(1))
    index = {e: j for j, e in enumerate(map(tuple, ei.t().tolist()))}
    for _ in range(draws):
        kept = degree_sensitive_prune(ei, 4, 4, dropout, gen)
        assert kept.size(1) == keep
        for e in map(tuple, kept.t().tolist()):
            counts[index[e]] += 1
    got = counts / draws
    assert torch.allclose(got, want.float(), atol=0.03), (got, want)
    # the pendant edge (3, 3) has the largest weight and is kept the most often
    assert int(got.argmax()) == 5


def test_pruning_rejects_bad_ratio():
    with pytest.raises(ValueError, match="dropout"):
        degree_sensitive_prune(_bipartite(), 30, 20, 1.0)
    with pytest.raises(ValueError, match="dropout"):
        FREEDOMConfig(dropout=-0.1)


def test_epoch_graph_is_deterministic_and_renormalised_on_the_kept_edges():
    data = _data()
    model = FREEDOM.from_data(data, FREEDOMConfig(dropout=0.7, seed=3))
    a = model.pruned_edges(5)
    assert torch.equal(a, model.pruned_edges(5))
    assert not torch.equal(a, model.pruned_edges(6))
    model.on_train_epoch_start(5)
    nu, ni = model.num_users, model.num_items
    dense = torch.zeros(nu + ni, nu + ni)
    dense[a[0], a[1] + nu] = 1.0
    dense[a[1] + nu, a[0]] = 1.0
    assert torch.allclose(model._train_adj.to_dense(), _dense_sym_norm(dense), atol=1e-6)
    full = torch.zeros(nu + ni, nu + ni)
    train = data[INTERACTS].edge_index
    full[train[0], train[1] + nu] = 1.0
    full[train[1] + nu, train[0]] = 1.0
    assert torch.allclose(model.full_adj.to_dense(), _dense_sym_norm(full), atol=1e-6)


# -- the item-item graphs ---------------------------------------------------------------------


def _dense_knn(x, k):
    xn = F.normalize(x.double(), dim=1)
    sim = xn @ xn.t()
    sim.fill_diagonal_(float("inf"))  # the item is one of its own top-k
    idx = sim.topk(k, dim=1).indices
    s = torch.zeros(x.size(0), x.size(0), dtype=torch.float64)
    s.scatter_(1, idx, 1.0)
    return s  # s[owner, neighbour]


def test_knn_item_graph_matches_dense_weighted_sum_of_normalised_graphs():
    data = _data()
    x, img = data["item"].x, data["item"].image
    ei, ew = knn_item_graph([x, img], k=4, weights=[0.9, 0.1])
    got = torch.zeros(20, 20, dtype=torch.float64)
    got[ei[1], ei[0]] = ew.double()  # [owner, neighbour]
    want = 0.9 * _dense_sym_norm(_dense_knn(x, 4)) + 0.1 * _dense_sym_norm(_dense_knn(img, 4))
    assert torch.allclose(got, want, atol=1e-6)


def test_model_uses_its_knn_graph_with_the_configured_modalities():
    data = _data()
    cfg = FREEDOMConfig(modalities=("x", "image"), modality_weights=(0.8, 0.2), knn_k=5)
    model = FREEDOM.from_data(data, cfg)
    want = 0.8 * _dense_sym_norm(_dense_knn(data["item"].x, 5))
    want += 0.2 * _dense_sym_norm(_dense_knn(data["item"].image, 5))
    assert torch.allclose(model.item_adj.to_dense().double(), want, atol=1e-6)
    assert [p.shape[1] for p in model.features] == [8, 11]


def test_refined_variant_uses_exactly_the_edges_the_transforms_produce():
    data = _data()
    data = RefineItemGraph(k_s=5, alpha=0.2, k_c=4)(data)
    g = data[RELATED]
    model = FREEDOM.from_data(data, FREEDOMConfig(item_graph=RELATED))
    s = torch.zeros(20, 20)
    s[g.edge_index[1], g.edge_index[0]] = g.edge_weight  # S*[owner, neighbour]
    got = model.item_adj.to_dense()
    assert torch.equal(got != 0, s != 0), "the model's item graph has other edges"
    assert torch.allclose(got, _dense_sym_norm(s), atol=1e-6)
    assert model.item_graph_edges == g.edge_index.size(1)
    # and it differs from FREEDOM's own kNN graph
    own = FREEDOM.from_data(data, FREEDOMConfig()).item_adj.to_dense()
    assert not torch.equal(own != 0, got != 0)


def test_missing_graph_or_modality_is_named():
    data = _data()
    with pytest.raises(SchemaError, match="related"):
        FREEDOM.from_data(data, FREEDOMConfig(item_graph=RELATED))
    with pytest.raises(SchemaError, match="audio"):
        FREEDOM.from_data(data, FREEDOMConfig(modalities=("audio",)))
    with pytest.raises(ValueError, match="modality weights"):
        FREEDOMConfig(modalities=("x", "image"), modality_weights=(1.0,))


# -- forward pass and loss ------------------------------------------------------------------


def test_propagation_matches_dense_lightgcn_plus_item_graph():
    data = _data()
    model = FREEDOM.from_data(data, FREEDOMConfig(num_ui_layers=2, num_item_layers=1))
    adj = model.full_adj.to_dense()
    ego = torch.cat([model.user_emb.weight, model.item_emb.weight]).detach()
    layers = [ego, adj @ ego, adj @ (adj @ ego)]
    mean = torch.stack(layers).mean(0)
    h = model.item_adj.to_dense() @ model.item_emb.weight.detach()
    users, items = model.representations()
    assert torch.allclose(users, mean[:30], atol=1e-5)
    assert torch.allclose(items, mean[30:] + h, atol=1e-5)
    scores = model.scorer()(torch.tensor([0, 4]))
    assert torch.allclose(scores, users[[0, 4]] @ items.t(), atol=1e-5)


def test_reg_loss_is_lambda_times_modality_bpr_plus_l2():
    data = _data()
    cfg = FREEDOMConfig(modalities=("x", "image"), reg_weight=0.3, l2_weight=0.01)
    model = FREEDOM.from_data(data, cfg)
    model.on_train_epoch_start(1)
    users, pos, neg = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([6, 7, 8])
    model.pair_scores(users, pos, neg)
    got = model.reg_loss(users, pos, neg)
    u = model.propagate(model._train_adj)[0][users]
    want = 0.0
    for x, lin in zip(model.features, model.projections):
        d = (u * lin(x[pos])).sum(-1) - (u * lin(x[neg])).sum(-1)
        want = want - torch.log(torch.sigmoid(d)).mean()
    l2 = (
        model.user_emb.weight[users].pow(2).sum()
        + model.item_emb.weight[pos].pow(2).sum()
        + model.item_emb.weight[neg].pow(2).sum()
    ) / (2 * 3)
    assert torch.allclose(got, 0.3 * want + 0.01 * l2, atol=1e-6)
    off = FREEDOM.from_data(data, FREEDOMConfig(reg_weight=0.0))
    assert off.reg_loss(users, pos, neg) is None


def test_trainer_draws_a_new_graph_every_epoch_and_checkpoints_round_trip(tmp_path):
    data = _data(num_users=40, num_items=25)
    model = build_model("freedom", data, dropout=0.8, reg_weight=1e-3)
    seen = []
    hook = model.on_train_epoch_start

    def spy(epoch):
        seen.append(epoch)
        hook(epoch)

    model.on_train_epoch_start = spy
    result = Trainer(
        model, data, TrainConfig(epochs=3, patience=5, ks=(5, 10, 20), show_progress=False)
    ).fit()
    assert seen == [1, 2, 3]
    for split in (result.valid, result.test):
        assert all(0.0 <= v <= 1.0 for v in split.values())
    path = save_checkpoint(model, tmp_path / "freedom.pt", data)
    again = load_checkpoint(path, data)
    users = torch.arange(10)
    assert torch.allclose(again.scorer()(users), model.scorer()(users), atol=1e-6)
