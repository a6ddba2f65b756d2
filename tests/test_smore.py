"""SMORE: spectral fusion, item-item views, preferences and loss against a dense reference of
its equations (the FFT written as an explicit DFT) and the plug-and-play graph (training and
checkpoints: test_mm_baselines.py)."""

import math

import pytest
import torch
from conftest import clustered_data, dense_knn, dense_norm

from mllmrec_pyg.data import INTERACTS, RELATED, SchemaError
from mllmrec_pyg.nn import SMORE, SMOREConfig
from mllmrec_pyg.transforms import RefineItemGraph


def rfft_ortho(x):
    """Orthonormal real DFT along dim 1, bins 0..d/2 (explicit sums)."""
    d = x.size(1)
    n = torch.arange(d, dtype=torch.float64)
    k = torch.arange(d // 2 + 1, dtype=torch.float64)
    ang = -2 * math.pi * k[:, None] * n[None, :] / d
    basis = torch.complex(torch.cos(ang), torch.sin(ang))  # [K, d]
    return (x.double().to(torch.complex128) @ basis.t()) / math.sqrt(d)


def irfft_ortho(y, d):
    """Inverse of rfft_ortho for even d: Hermitian extension, imaginary parts of bins 0 and
    d/2 dropped."""
    n = torch.arange(d, dtype=torch.float64)
    out = y[:, :1].real.expand(-1, d).clone()
    for k in range(1, d // 2):
        ang = 2 * math.pi * k * n / d
        out += 2 * (y[:, k : k + 1] * torch.complex(torch.cos(ang), torch.sin(ang))).real
    out += (y[:, d // 2 : d // 2 + 1] * torch.cos(math.pi * n)).real
    return (out / math.sqrt(d)).float()


def dense_reference(model, data, graph=None):
    cfg = model.config
    d = cfg.embedding_dim
    nu, ni = model.num_users, model.num_items
    with torch.no_grad():
        feats = [data["item"][m] for m in cfg.modalities]
        spectra = [rfft_ortho(lin(x)) for x, lin in zip(feats, model.projections)]
        filt = torch.view_as_complex(model.filters.double())
        convs = [irfft_ortho(s * filt[m], d) for m, s in enumerate(spectra)]
        prod = spectra[0]
        for s in spectra[1:]:
            prod = prod * s
        fused = irfft_ortho(prod * torch.view_as_complex(model.fusion_filter.double()), d)
        if graph is None:
            mats = [dense_norm(dense_knn(x, cfg.knn_k)) for x in feats]
            stacked = torch.stack([torch.where(m != 0, m, torch.tensor(-math.inf)) for m in mats])
            fmax = stacked.max(0).values
            mats.append(torch.where(torch.isinf(fmax), torch.zeros_like(fmax), fmax))
        else:
            mats = [dense_norm(graph)] * (len(feats) + 1)
        tr = data[INTERACTS].edge_index
        a = torch.zeros(nu + ni, nu + ni)
        a[tr[0], tr[1] + nu] = 1.0
        a[tr[1] + nu, tr[0]] = 1.0
        a_hat = dense_norm(a)
        r_hat = a_hat[:nu, nu:]
        e = torch.cat([model.user_emb.weight, model.item_emb.weight])
        layers = [e]
        for _ in range(cfg.num_ui_layers):
            layers.append(a_hat @ layers[-1])
        content = torch.stack(layers).mean(0)
        views = []
        for v, c in enumerate([*convs, fused]):
            gate = model.item_gates[v][0]
            h = model.item_emb.weight * torch.sigmoid(c @ gate.weight.t() + gate.bias)
            for _ in range(cfg.num_item_layers):
                h = mats[v] @ h
            views.append(torch.cat([r_hat @ h, h]))
        parts = []
        for m in range(len(feats)):
            q1, q2 = model.queries[m][0], model.queries[m][2]
            att = torch.softmax(torch.tanh(views[-1] @ q1.weight.t() + q1.bias) @ q2.weight.t(), 1)
            g = model.prefer_gates[m][0]
            parts.append(torch.sigmoid(content @ g.weight.t() + g.bias) * att * views[m])
        g = model.prefer_gates[-1][0]
        parts.append(torch.sigmoid(content @ g.weight.t() + g.bias) * views[-1])
        side = sum(parts) / len(parts)
        out = content + side
    return out[:nu], out[nu:], side, content, mats


def test_spectral_reference_inverts():
    x = torch.randn(5, 8)
    assert torch.allclose(irfft_ortho(rfft_ortho(x), 8), x, atol=1e-5)


@pytest.mark.parametrize("modalities", [("x",), ("x", "image")])
def test_forward_matches_dense_reference(modalities):
    data = clustered_data()
    cfg = SMOREConfig(embedding_dim=8, knn_k=4, num_ui_layers=3, modalities=modalities)
    model = SMORE.from_data(data, cfg).eval()
    want_u, want_i, want_side, want_content, mats = dense_reference(model, data)
    for v, m in enumerate(mats):
        assert torch.allclose(model.item_adj(v).to_dense(), m, atol=1e-6)
    with torch.no_grad():
        users, items, side, content = model.forward_all()
        scores = model.scorer()(torch.tensor([2, 9]))
    assert torch.allclose(content, want_content, atol=1e-5)
    assert torch.allclose(side, want_side, atol=1e-5)
    assert torch.allclose(users, want_u, atol=1e-5)
    assert torch.allclose(items, want_i, atol=1e-5)
    assert torch.allclose(scores, want_u[[2, 9]] @ want_i.t(), atol=1e-5)


def test_refined_graph_replaces_every_item_graph():
    data = RefineItemGraph(k_s=5, alpha=0.0, k_c=4)(clustered_data())
    g = data[RELATED]
    s = torch.zeros(32, 32).index_put((g.edge_index[1], g.edge_index[0]), g.edge_weight, True)
    cfg = SMOREConfig(embedding_dim=8, modalities=("x", "image"), item_graph=RELATED)
    model = SMORE.from_data(data, cfg).eval()
    for v in range(3):
        assert torch.allclose(model.item_adj(v).to_dense(), dense_norm(s), atol=1e-6)
    want_u, want_i, *_ = dense_reference(model, data, graph=s)
    with torch.no_grad():
        users, items = model.representations()
    assert torch.allclose(items, want_i, atol=1e-5) and torch.allclose(users, want_u, atol=1e-5)
    own = SMORE.from_data(data, SMOREConfig(embedding_dim=8, knn_k=4)).eval()
    assert not torch.equal(own.item_adj(0).to_dense() != 0, s != 0)
    with pytest.raises(SchemaError, match="related"):
        SMORE.from_data(clustered_data(), SMOREConfig(item_graph=RELATED))


def test_loss_is_bpr_plus_half_squared_norms_plus_in_batch_infonce():
    data = clustered_data()
    cfg = SMOREConfig(embedding_dim=8, knn_k=4, reg_weight=0.2, cl_weight=0.5)
    model = SMORE.from_data(data, cfg).eval()  # eval: no gate dropout
    users, pos, neg = (
        torch.tensor([0, 3, 6, 3, 0]),  # repeated users and a repeated item
        torch.tensor([0, 3, 6, 7, 6]),
        torch.tensor([1, 2, 5, 9, 2]),
    )
    u_all, i_all, side, content, _ = dense_reference(model, data)
    u, p, n = u_all[users], i_all[pos], i_all[neg]
    bpr = -torch.log(torch.sigmoid((u * p).sum(1) - (u * n).sum(1))).mean()
    reg = (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / (2 * 5)

    def nce(a, b):
        a, b = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
        num = torch.exp((a * b).sum(1) / 0.2)
        return -torch.log(num / torch.exp(a @ b.t() / 0.2).sum(1)).mean()

    cl = nce(side[48:][pos], content[48:][pos]) + nce(side[users], content[users])
    with torch.no_grad():
        got = model.batch_loss(users, pos, neg)
    assert torch.allclose(got, bpr + 0.2 * reg + 0.5 * cl, atol=1e-5)
