"""LGMRec: local, global (hypergraph) embeddings and the loss against a dense reference of
its equations (training and checkpoints: test_mm_baselines.py)."""

import pytest
import torch
from conftest import clustered_data

from mllmrec_pyg.data import INTERACTS
from mllmrec_pyg.nn import LGMRec, LGMRecConfig


def rownorm(x):
    return x / x.norm(dim=1, keepdim=True)


def dense_reference(model, data):
    """Users, items and per-modality hypergraph embeddings (eval mode) from dense matrices."""
    cfg = model.config
    nu, ni = model.num_users, model.num_items
    tr = data[INTERACTS].edge_index
    r = torch.zeros(nu, ni)
    r[tr[0], tr[1]] = 1.0
    a = torch.zeros(nu + ni, nu + ni)
    a[:nu, nu:] = r
    a[nu:, :nu] = r.t()
    d = a.sum(1)
    dinv = torch.where(d > 0, d.pow(-0.5), torch.zeros_like(d))
    a_hat = dinv[:, None] * a * dinv[None, :]
    e0 = torch.cat([model.user_emb.weight, model.item_emb.weight]).detach()
    layers = [e0]
    for _ in range(cfg.num_ui_layers):
        layers.append(a_hat @ layers[-1])
    cge = torch.stack(layers).mean(0)
    local = cge.clone()
    ghe = torch.zeros_like(cge)
    hyper = []
    for m, key in enumerate(cfg.modalities):
        x = data["item"][key]
        f_i = x @ model.projections[m].detach()
        f_u = (r @ f_i) / r.sum(1, keepdim=True)
        h = torch.cat([f_u, f_i])
        for _ in range(cfg.num_mm_layers):
            h = a_hat @ h
        local = local + rownorm(h)
        logits = x @ model.hyperedges[m].detach()
        lam_i = torch.softmax(logits / cfg.tau, 1)
        lam_u = torch.softmax((r @ logits) / cfg.tau, 1)
        g = cge[nu:]
        for _ in range(cfg.num_hyper_layers):
            g_prev = g
            g = lam_i @ (lam_i.t() @ g_prev)
        g_u = lam_u @ (lam_i.t() @ g_prev)
        hyper.append((g_u, g))
        ghe = ghe + torch.cat([g_u, g])
    out = local + cfg.alpha * rownorm(ghe)
    return out[:nu], out[nu:], hyper


@pytest.mark.parametrize(
    "modalities,hyper_layers", [(("x",), 1), (("x", "image"), 1), (("x", "image"), 2)]
)
def test_forward_matches_dense_reference(modalities, hyper_layers):
    data = clustered_data()
    cfg = LGMRecConfig(
        embedding_dim=8, hyper_num=3, num_hyper_layers=hyper_layers, modalities=modalities
    )
    model = LGMRec.from_data(data, cfg).eval()
    want_u, want_i, want_h = dense_reference(model, data)
    with torch.no_grad():
        users, items, hyper = model.forward_all()
        scores = model.scorer()(torch.tensor([1, 6]))
    assert torch.allclose(users, want_u, atol=1e-5)
    assert torch.allclose(items, want_i, atol=1e-5)
    for (gu, gi), (wu, wi) in zip(hyper, want_h):
        assert torch.allclose(gu, wu, atol=1e-5) and torch.allclose(gi, wi, atol=1e-5)
    assert torch.allclose(scores, want_u[[1, 6]] @ want_i.t(), atol=1e-5)


def test_loss_is_bpr_plus_hypergraph_contrast_plus_norm_penalty():
    data = clustered_data()
    cfg = LGMRecConfig(embedding_dim=8, modalities=("x", "image"), cl_weight=0.1, reg_weight=0.01)
    model = LGMRec.from_data(data, cfg).eval()  # eval: deterministic memberships
    # a repeated user and a repeated item
    users, pos, neg = (
        torch.tensor([0, 2, 4, 2]),
        torch.tensor([0, 2, 4, 0]),
        torch.tensor([1, 3, 5, 1]),
    )
    u_all, i_all, hyper = dense_reference(model, data)
    u, p, n = u_all[users], i_all[pos], i_all[neg]
    bpr = -torch.log(torch.sigmoid((u * p).sum(1) - (u * n).sum(1))).mean()

    def nce(z, pos_rows, cands):
        z, pos_rows, cands = rownorm(z), rownorm(pos_rows), rownorm(cands)
        num = torch.exp((z * pos_rows).sum(1) / 0.2)
        den = torch.exp(z @ cands.t() / 0.2).sum(1)
        return -torch.log(num / den).sum()

    (uv, iv), (ut, it) = hyper
    cl = nce(uv[users], ut[users], ut) + nce(iv[pos], it[pos], it)
    reg = (u.pow(2).sum().sqrt() + p.pow(2).sum().sqrt() + n.pow(2).sum().sqrt()) / 4
    with torch.no_grad():
        got = model.batch_loss(users, pos, neg)
    assert torch.allclose(got, bpr + 0.1 * cl + 0.01 * reg, atol=1e-5)


def test_training_mode_samples_memberships_and_eval_is_deterministic():
    data = clustered_data()
    model = LGMRec.from_data(data, LGMRecConfig(embedding_dim=8)).train()
    torch.manual_seed(0)
    a = model.memberships(0)[1]
    b = model.memberships(0)[1]
    assert not torch.equal(a, b)
    assert (a == 0).float().mean() > 0.2, "dropout keeps about half of the entries"
    model.eval()
    assert torch.equal(model.memberships(0)[1], model.memberships(0)[1])
    assert torch.allclose(model.memberships(0)[1].sum(1), torch.ones(32))
