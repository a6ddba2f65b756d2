"""LATTICE: its graphs and forward pass against a dense reference of its equations, the
per-epoch graph rebuild and the plug-and-play graph (training and checkpoints:
test_mm_baselines.py)."""

import pytest
import torch
from conftest import clustered_data, dense_knn, dense_norm

from mllmrec_pyg.data import INTERACTS, RELATED, SchemaError
from mllmrec_pyg.nn import LATTICE, LATTICEConfig
from mllmrec_pyg.transforms import RefineItemGraph


def dense_reference(model, data, graph=None):
    """Users and items of LATTICE from dense matrices (graph: dense S* for plug-and-play)."""
    cfg = model.config
    lam, k = cfg.lambda_coeff, cfg.knn_k
    alpha = torch.softmax(model.modal_weight.detach(), 0)
    feats = [data["item"][m] for m in cfg.modalities]
    learned = sum(
        a * dense_knn(lin(x).detach(), k) for a, x, lin in zip(alpha, feats, model.projections)
    )
    if graph is None:
        init = sum(a * dense_norm(dense_knn(x, k)) for a, x in zip(alpha, feats))
    else:
        init = dense_norm(graph)
    a = (1 - lam) * dense_norm(learned) + lam * init
    h = model.item_emb.weight.detach()
    for _ in range(cfg.num_item_layers):
        h = a @ h
    nu, ni = model.num_users, model.num_items
    adj = torch.eye(nu + ni)
    tr = data[INTERACTS].edge_index
    adj[tr[0], tr[1] + nu] = 1.0
    adj[tr[1] + nu, tr[0]] = 1.0
    p = adj / adj.sum(1, keepdim=True)
    e = torch.cat([model.user_emb.weight, model.item_emb.weight]).detach()
    layers = [e]
    for _ in range(cfg.num_ui_layers):
        layers.append(p @ layers[-1])
    mean = torch.stack(layers).mean(0)
    return mean[:nu], mean[nu:] + h / h.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("modalities", [("x",), ("x", "image")])
def test_forward_matches_dense_reference(modalities):
    data = clustered_data()
    cfg = LATTICEConfig(embedding_dim=8, feat_embed_dim=5, knn_k=4, modalities=modalities)
    model = LATTICE.from_data(data, cfg).eval()
    with torch.no_grad():
        model.modal_weight.copy_(torch.linspace(-0.5, 0.5, len(modalities)))
        users, items = model.representations()
    want_u, want_i = dense_reference(model, data)
    assert torch.allclose(users, want_u, atol=1e-5)
    assert torch.allclose(items, want_i, atol=1e-5)
    with torch.no_grad():
        scores = model.scorer()(torch.tensor([0, 7]))
    assert torch.allclose(scores, want_u[[0, 7]] @ want_i.t(), atol=1e-5)


def test_refined_graph_replaces_the_initial_graph():
    data = RefineItemGraph(k_s=5, alpha=0.0, k_c=4)(clustered_data())
    g = data[RELATED]
    s = torch.zeros(32, 32).index_put((g.edge_index[1], g.edge_index[0]), g.edge_weight, True)
    model = LATTICE.from_data(data, LATTICEConfig(knn_k=4, item_graph=RELATED)).eval()
    ei, ew = model.initial_graph()
    got = torch.zeros(32, 32).index_put((ei[1], ei[0]), ew, True)
    assert torch.allclose(got, dense_norm(s), atol=1e-6)
    with torch.no_grad():
        users, items = model.representations()
    want_u, want_i = dense_reference(model, data, graph=s)
    assert torch.allclose(items, want_i, atol=1e-5)
    own = LATTICE.from_data(data, LATTICEConfig(knn_k=4)).eval()
    oe, ow = own.initial_graph()
    assert not torch.equal(torch.zeros(32, 32).index_put((oe[1], oe[0]), ow, True) != 0, s != 0)
    with pytest.raises(SchemaError, match="related"):
        LATTICE.from_data(clustered_data(), LATTICEConfig(item_graph=RELATED))


def test_learned_graph_gets_gradient_on_the_first_batch_of_each_epoch_only():
    data = clustered_data()
    model = LATTICE.from_data(data, LATTICEConfig(modalities=("x", "image"))).train()
    batch = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]), torch.tensor([9, 10, 11])
    model.on_train_epoch_start(1)
    model.batch_loss(*batch).backward()
    assert model.projections[0].weight.grad.abs().sum() > 0
    assert model.modal_weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    model.batch_loss(*batch).backward()
    assert model.projections[0].weight.grad is None  # reused, detached
    assert model.item_emb.weight.grad is not None


def test_batch_loss_is_bpr_plus_half_squared_norms():
    data = clustered_data()
    model = LATTICE.from_data(data, LATTICEConfig(reg_weight=0.3)).eval()
    users, pos, neg = torch.tensor([0, 3, 5]), torch.tensor([0, 3, 5]), torch.tensor([1, 2, 9])
    u_all, i_all = dense_reference(model, data)
    u, p, n = u_all[users], i_all[pos], i_all[neg]
    bpr = -torch.log(torch.sigmoid((u * p).sum(1) - (u * n).sum(1))).mean()
    reg = (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / (2 * 3)
    with torch.no_grad():
        got = model.batch_loss(users, pos, neg)
    assert torch.allclose(got, bpr + 0.3 * reg, atol=1e-5)
