"""MLLMRec and the baselines against dense, hand-written references."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mllmrec_pyg.data.schema import INTERACTS, RELATED, SchemaError
from mllmrec_pyg.data.split import per_user_split, to_heterodata
from mllmrec_pyg.nn import (
    BPRMF,
    LightGCNRecommender,
    MLLMRec,
    MLLMRecConfig,
    MostPop,
    build_model,
)
from mllmrec_pyg.train import TrainConfig, Trainer, seed_everything


def small_data(num_users=12, num_items=9, per_user=5, seed=0, d_item=8, d_user=6):
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(num_users), per_user)
    items = np.concatenate(
        [rng.choice(num_items, per_user, replace=False) for _ in range(num_users)]
    )
    data = to_heterodata(users, items, per_user_split(users, seed), num_users, num_items)
    g = torch.Generator().manual_seed(seed)
    data["item"].x = torch.randn(num_items, d_item, generator=g)
    data["user"].x = torch.randn(num_users, d_user, generator=g)
    # a directed, weighted item graph with a duplicate edge and an isolated item
    src = torch.tensor([1, 2, 0, 3, 4, 4, 0, 5, 6, 1, 1])
    dst = torch.tensor([0, 0, 1, 1, 2, 3, 3, 4, 5, 6, 6])
    w = torch.tensor([1.0, 0.5, 1.0, 0.3, 2.0, 1.0, 0.7, 1.0, 0.2, 0.4, 0.6])
    data[RELATED].edge_index = torch.stack([src, dst])
    data[RELATED].edge_weight = w
    return data


def dense_item_propagation(x, edge_index, weight, num_layers):
    """E* = sum_l (D^-1/2 S D^-1/2)^l X with S[owner, neighbour], D = row sums of S."""
    n = x.size(0)
    s = torch.zeros(n, n)
    for (nb, owner), w in zip(edge_index.t().tolist(), weight.tolist()):
        s[owner, nb] += w
    d = s.sum(1)
    dis = torch.where(d > 0, d.pow(-0.5), torch.zeros_like(d))
    a = dis[:, None] * s * dis[None, :]
    out, h = x.clone(), x.clone()
    for _ in range(num_layers):
        h = a @ h
        out = out + h
    return out


def dense_bipartite(edge_index, num_users, num_items):
    n = num_users + num_items
    b = torch.zeros(n, n)
    for u, i in edge_index.t().tolist():
        b[u, num_users + i] = b[num_users + i, u] = 1.0
    d = b.sum(1)
    dis = torch.where(d > 0, d.pow(-0.5), torch.zeros_like(d))
    return dis[:, None] * b * dis[None, :]


def tower(t, x):
    return t.lin2(F.leaky_relu(t.lin1(x), t.negative_slope))


@pytest.mark.parametrize("layers", [1, 2])
def test_mllmrec_scores_match_dense_reference(layers):
    data = small_data()
    seed_everything(0)
    model = MLLMRec.from_data(
        data, MLLMRecConfig(hidden_dim=16, embedding_dim=4, num_item_layers=layers)
    )
    rel = data[RELATED]
    e_star = dense_item_propagation(data["item"].x, rel.edge_index, rel.edge_weight, layers)
    assert torch.allclose(model.item_repr, e_star, atol=1e-5)
    h_u = tower(model.user_tower, data["user"].x)
    h_i = tower(model.item_tower, e_star)
    users = torch.tensor([0, 3, 3, 7, 11])
    pos = torch.tensor([1, 2, 2, 8, 0])
    neg = torch.tensor([4, 4, 5, 0, 1])
    p, n = model.pair_scores(users, pos, neg)
    assert torch.allclose(p, (h_u[users] * h_i[pos]).sum(1), atol=1e-5)
    assert torch.allclose(n, (h_u[users] * h_i[neg]).sum(1), atol=1e-5)
    with torch.no_grad():
        full = model.scorer()(torch.arange(12))
    assert torch.allclose(full, h_u @ h_i.t(), atol=1e-5)


def test_tower_shapes_follow_the_paper():
    data = small_data(d_item=384, d_user=384)
    model = MLLMRec.from_data(data)
    assert model.user_tower.lin1.weight.shape == (256, 384)
    assert model.user_tower.lin2.weight.shape == (64, 256)
    assert model.item_tower.lin1.weight.shape == (256, 384)
    # frozen inputs: only the towers are trainable, E* is not part of the checkpoint
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {
        f"{t}_tower.lin{k}.{w}"
        for t in ("user", "item")
        for k in (1, 2)
        for w in ("weight", "bias")
    }
    assert "item_repr" not in model.state_dict()


def test_trainable_items_path():
    data = small_data()
    cfg = MLLMRecConfig(hidden_dim=16, embedding_dim=4, trainable_items=True)
    seed_everything(0)
    frozen = MLLMRec.from_data(data, dataclasses.replace(cfg, trainable_items=False))
    seed_everything(0)
    model = MLLMRec.from_data(data, cfg)
    assert torch.allclose(model.item_inputs(), frozen.item_inputs(), atol=1e-5)
    users, pos, neg = torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])
    p, n = model.pair_scores(users, pos, neg)
    (-F.logsigmoid(p - n).mean()).backward()
    grad = model.item_input.grad
    assert grad is not None
    # gradient reaches the batch's items and, through S*, their graph neighbours (items 0, 1, 3)
    touched = set(grad.abs().sum(1).nonzero().flatten().tolist())
    assert {2, 3, 4, 5} <= touched and 0 in touched
    assert 7 not in touched and 8 not in touched


def test_without_user_features_uses_id_embeddings():
    data = small_data()
    del data["user"].x
    with pytest.raises(SchemaError, match="user"):
        MLLMRec.from_data(data)
    model = MLLMRec.from_data(data, MLLMRecConfig(use_user_features=False))
    assert model.user_emb.weight.shape == (12, 8)  # item feature width by default
    assert model.user_emb.weight.requires_grad


def test_without_item_conv_uses_raw_features():
    data = small_data()
    del data[RELATED]
    with pytest.raises(SchemaError, match="related"):
        MLLMRec.from_data(data)
    model = MLLMRec.from_data(data, MLLMRecConfig(item_conv=False))
    assert torch.equal(model.item_inputs(), data["item"].x)


def test_ui_gcn_variant_matches_dense_reference():
    data = small_data()
    seed_everything(0)
    model = MLLMRec.from_data(data, MLLMRecConfig(hidden_dim=16, embedding_dim=4, ui_layers=2))
    rel = data[RELATED]
    e_star = dense_item_propagation(data["item"].x, rel.edge_index, rel.edge_weight, 1)
    h = torch.cat([tower(model.user_tower, data["user"].x), tower(model.item_tower, e_star)])
    b = dense_bipartite(data[INTERACTS].edge_index, 12, 9)
    g = F.normalize(h, dim=1)
    out = h + g + b @ g + b @ b @ g
    h_u, h_i = model.representations()
    assert torch.allclose(h_u, out[:12], atol=1e-5)
    assert torch.allclose(h_i, out[12:], atol=1e-5)
    p, _ = model.pair_scores(torch.tensor([1]), torch.tensor([2]), torch.tensor([3]))
    assert torch.allclose(p, (out[1] * out[12 + 2]).sum().view(1), atol=1e-5)


def test_lightgcn_matches_dense_reference():
    data = small_data()
    seed_everything(0)
    model = LightGCNRecommender.from_data(data)
    e0 = model.lightgcn.embedding.weight.detach()
    b = dense_bipartite(data[INTERACTS].edge_index, 12, 9)
    out = (e0 + b @ e0 + b @ b @ e0) / 3  # PyG's default: mean over layers 0..2
    u, i = model.embeddings()
    assert torch.allclose(u, out[:12], atol=1e-5)
    assert torch.allclose(i, out[12:], atol=1e-5)


def test_bpr_scores_are_dot_products():
    data = small_data()
    model = BPRMF.from_data(data)
    p, n = model.pair_scores(torch.tensor([2]), torch.tensor([3]), torch.tensor([4]))
    u, it = model.user_emb.weight, model.item_emb.weight
    assert torch.allclose(p, (u[2] * it[3]).sum().view(1))
    assert torch.allclose(n, (u[2] * it[4]).sum().view(1))
    loss = model.batch_loss(torch.tensor([2]), torch.tensor([3]), torch.tensor([4]))
    reg = 1e-4 * (u[2].pow(2).sum() + it[3].pow(2).sum() + it[4].pow(2).sum()) / 2
    assert torch.allclose(loss, -F.logsigmoid(p - n).mean() + reg)


def test_mostpop_ranks_by_training_popularity_and_skips_seen():
    # item 2 in 3 training pairs, item 0 in 2, items 1, 3 in 1, item 4 in none
    train = torch.tensor([[0, 1, 2, 0, 1, 2, 3], [2, 2, 2, 0, 0, 1, 3]])
    data = to_heterodata(train[0].numpy(), train[1].numpy(), np.zeros(7, dtype=np.int64), 4, 5)
    model = MostPop.from_data(data)
    assert model.popularity.tolist() == [2, 1, 3, 1, 0]
    assert not list(model.parameters())
    assert model.recommend([3], k=4).tolist() == [[2, 0, 1, 4]]  # 3 seen; tie 1 < 3 by id
    assert model.recommend([0], k=3).tolist() == [[1, 3, 4]]


def test_mostpop_is_evaluated_without_training():
    data = small_data()
    result = Trainer(
        build_model("pop", data),
        data,
        TrainConfig(ks=(5,), monitor="recall@5", show_progress=False),
    ).fit()
    assert result.epochs == 0 and result.best_epoch == 0
    assert 0.0 <= result.test["recall@5"] <= 1.0


def test_registry_rejects_unknown_names_and_fields():
    data = small_data()
    with pytest.raises(ValueError, match="unknown model"):
        build_model("no-such-model", data)
    with pytest.raises(ValueError, match="unknown config field"):
        build_model("bpr", data, hidden=3)
