"""SLMRec: views, fusion and the three loss terms against a dense reference of its equations
(training and checkpoints: test_mm_baselines.py)."""

import pytest
import torch
from conftest import clustered_data

from mllmrec_pyg.data import INTERACTS
from mllmrec_pyg.nn import SLMRec, SLMRecConfig


def rownorm(x):
    return x / x.norm(dim=1, keepdim=True)


def lin(layer, x):
    return x @ layer.weight.t() + layer.bias


def dense_reference(model, data):
    cfg = model.config
    nu, ni = model.num_users, model.num_items
    tr = data[INTERACTS].edge_index
    a = torch.zeros(nu + ni, nu + ni)
    a[tr[0], tr[1] + nu] = 1.0
    a[tr[1] + nu, tr[0]] = 1.0
    d = a.sum(1)
    dinv = torch.where(d > 0, d.pow(-0.5), torch.zeros_like(d))
    a_hat = dinv[:, None] * a * dinv[None, :]

    def lgn(items):
        z = torch.cat([model.user_emb.weight, items])
        layers = [z]
        for _ in range(cfg.num_layers):
            layers.append(a_hat @ layers[-1])
        out = torch.stack(layers).mean(0)
        return out[:nu], out[nu:]

    views = [lgn(model.item_emb.weight)]
    for m, key in enumerate(cfg.modalities):
        views.append(lgn(lin(model.projections[m], rownorm(data["item"][key]))))
    users = lin(model.user_fusion, torch.cat([v[0] for v in views], 1))
    items = lin(model.item_fusion, torch.cat([v[1] for v in views], 1))
    return users, items, views


def ce_diag(logits):
    return (torch.logsumexp(logits, 1) - logits.diagonal()).mean()


@pytest.mark.parametrize("modalities", [("x",), ("x", "image")])
def test_forward_matches_dense_reference(modalities):
    data = clustered_data()
    model = SLMRec.from_data(data, SLMRecConfig(embedding_dim=8, modalities=modalities)).eval()
    want_u, want_i, _ = dense_reference(model, data)
    with torch.no_grad():
        users, items = model.representations()
        scores = model.scorer()(torch.tensor([3, 4]))
    assert torch.allclose(users, want_u, atol=1e-5)
    assert torch.allclose(items, want_i, atol=1e-5)
    assert torch.allclose(scores, want_u[[3, 4]] @ want_i.t(), atol=1e-5)


@pytest.mark.parametrize("modalities", [("x",), ("x", "image")])
def test_loss_is_infonce_plus_fac_plus_weight_decay(modalities):
    data = clustered_data()
    cfg = SLMRecConfig(
        embedding_dim=8,
        modalities=modalities,
        ssl_weight=0.3,
        weight_decay=0.01,
        temperature=0.5,
        ssl_temperature=0.7,
    )
    model = SLMRec.from_data(data, cfg)
    # repeated users, a repeated item and a repeated pair
    users, pos = torch.tensor([0, 1, 1, 3, 0, 3]), torch.tensor([0, 2, 3, 3, 5, 3])
    neg = torch.tensor([9] * 6)
    u_all, i_all, views = dense_reference(model, data)
    main = ce_diag(rownorm(u_all[users]) @ rownorm(i_all[pos]).t() / 0.5)
    z = lin(model.ssl_id, views[0][1][pos])
    y = lin(model.ssl_modality[0], views[1][1][pos])
    fac = ce_diag(z @ y.t() / 0.7)
    if len(modalities) == 2:
        z2 = lin(model.ssl_chain[0], z)
        y2 = lin(model.ssl_modality[1], views[2][1][pos])
        assert z2.shape[1] == y2.shape[1] == 4  # the last space is half width
        fac = fac + ce_diag(z2 @ y2.t() / 0.7)
    wd = sum(p.pow(2).sum() for p in model.parameters())
    got = model.batch_loss(users, pos, neg)
    assert torch.allclose(got, main + 0.3 * fac + 0.005 * wd, atol=1e-5)


def test_weight_decay_term_gives_adam_weight_decay_updates():
    data = clustered_data()
    cfg = SLMRecConfig(embedding_dim=8, weight_decay=0.05, ssl_weight=0.2)
    a = SLMRec.from_data(data, cfg)
    b = SLMRec.from_data(data, SLMRecConfig(embedding_dim=8, weight_decay=0.0, ssl_weight=0.2))
    b.load_state_dict(a.state_dict())
    opt_a = torch.optim.Adam(a.parameters(), lr=0.01)
    opt_b = torch.optim.Adam(b.parameters(), lr=0.01, weight_decay=0.05)
    batch = torch.tensor([0, 5, 7]), torch.tensor([0, 5, 7]), torch.tensor([1, 1, 1])
    for model, opt in ((a, opt_a), (b, opt_b)):
        for _ in range(3):
            opt.zero_grad()
            model.batch_loss(*batch).backward()
            opt.step()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-5), name
