"""GUME: graphs, representations, every loss term and their gradients against a dense
reference of its equations; the plug-and-play graph; training, registry and tuning."""

import math

import pytest
import torch
from conftest import dense_knn, dense_norm, given_item_graph, reference_nce, two_modality_data

import mllmrec_pyg.nn.gume as gume_module
from mllmrec_pyg.data import INTERACTS, RELATED
from mllmrec_pyg.data.synthetic import make_scale_data
from mllmrec_pyg.experiments.plug_and_play import HOSTS
from mllmrec_pyg.nn import GUME, GUMEConfig
from mllmrec_pyg.nn.registry import MODELS, build_model, make_config
from mllmrec_pyg.train import TrainConfig, Trainer
from mllmrec_pyg.tuning import CANDIDATES, split_point

NU, NI, K = 6, 8, 4
MODS = ("text", "image")
pytestmark = pytest.mark.usefixtures("one_thread")


def topk_mask(x, k):
    xn = x / x.norm(dim=1, keepdim=True)
    idx = (xn @ xn.t()).topk(k, dim=1).indices
    return torch.zeros(x.size(0), x.size(0), dtype=torch.bool).scatter_(1, idx, True)


def lin(layer, x):
    return x @ layer.weight.t() + (layer.bias if layer.bias is not None else 0)


def dense_reference(model, data, graph=None):
    """GUME's forward pass with dense matrices; ``graph`` a dense given ``S``."""
    cfg = model.config
    nu, ni, n_mod = model.num_users, model.num_items, len(cfg.modalities)
    raw = [data["item"][m] for m in cfg.modalities]
    if graph is None:
        mats = [dense_norm(dense_knn(x, cfg.knn_k)) for x in raw]
        nb = torch.stack([topk_mask(x, cfg.knn_k) for x in raw]).all(0)
    else:
        mats = [dense_norm(graph)] * n_mod
        nb = graph > 0
    nb = nb & ~torch.eye(ni, dtype=torch.bool)
    tr = data[INTERACTS].edge_index
    a = torch.zeros(nu + ni, nu + ni)
    a[tr[0], tr[1] + nu] = 1.0
    a[tr[1] + nu, tr[0]] = 1.0
    a[nu:, nu:] = nb.float()
    a_hat = dense_norm(a)
    r_hat = a_hat[:nu, nu:]

    def lightgcn(z):
        layers = [z]
        for _ in range(cfg.num_ui_layers):
            layers.append(a_hat @ layers[-1])
        return torch.stack(layers).mean(0)

    e_i = model.item_emb.weight
    behaviour = lightgcn(torch.cat([model.user_emb.weight, e_i]))
    explicit, extended = [], []
    for m, x in enumerate(model.features):
        enc = model.encoders[m]
        h = e_i * torch.sigmoid(lin(enc[1], lin(enc[0], x)))
        for _ in range(cfg.num_item_layers):
            h = mats[m] @ h
        explicit.append(torch.cat([r_hat @ h, h]))
        extended.append(lightgcn(torch.cat([model.modal_user_emb[m].weight, h])))
    scores = torch.cat(
        [lin(model.attention[2], torch.tanh(lin(model.attention[0], h))) for h in explicit], 1
    )
    alpha = torch.softmax(scores, 1)
    coarse = sum(alpha[:, m : m + 1] * explicit[m] for m in range(n_mod))
    fine = [
        torch.sigmoid(lin(model.behaviour_gates[m][0], behaviour)) * (explicit[m] - coarse)
        for m in range(n_mod)
    ]
    integration = (coarse + sum(fine)) / (n_mod + 1)
    out = behaviour + integration
    return {
        "users": out[:nu],
        "items": out[nu:],
        "behaviour": behaviour,
        "integration": integration,
        "explicit": explicit,
        "extended": sum(extended) / n_mod,
        "a_hat": a_hat,
        "mats": mats,
        "neighbours": nb,
    }


def user_noise(users, d):
    """Four ``U[0,1)`` draws, one row per distinct user (ascending id), gathered for the
    batch: a repeated user gets the same perturbation, as in the authors' code, which
    perturbs the whole user table and then indexes it."""
    inv = torch.unique(users, return_inverse=True)[1]
    n = int(inv.max()) + 1
    return [torch.rand(n, d)[inv] for _ in range(4)]


def reference_terms(model, ref, users, pos, neg, noise):
    """Every weighted loss term; ``noise`` four ``U[0,1)`` draws ``[B, d]`` in the order
    (integration view 1, view 2, extended view 1, view 2)."""
    cfg = model.config
    nu, b = model.num_users, users.numel()
    u, p, n = ref["users"][users], ref["items"][pos], ref["items"][neg]
    bpr = -torch.log(torch.sigmoid((u * p).sum(1) - (u * n).sum(1))).mean()
    bpr = bpr + cfg.reg_weight * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / (2 * b)

    def var(x):
        return ((x - x.mean()) ** 2).sum() / (x.numel() - 1)

    x1, x2 = ref["explicit"]
    vt = (var(x1) - var(x2)).abs() + (x1.mean() - x2.mean()).abs()
    s, beh, ext = ref["integration"], ref["behaviour"], ref["extended"]
    tb, tu = cfg.bm_temperature, cfg.um_temperature
    bm = reference_nce(s[users], beh[users], tb) + reference_nce(s[nu:][pos], beh[nu:][pos], tb)

    def jitter(z, nu_):
        return z + cfg.noise_eps * torch.sign(z) * nu_ / nu_.norm(dim=1, keepdim=True)

    su, xu = s[users], ext[users]
    um = reference_nce(xu, su, tu)
    um = um + reference_nce(jitter(su, noise[0]), jitter(su, noise[1]), tu)
    um = um + reference_nce(jitter(xu, noise[2]), jitter(xu, noise[3]), tu)
    xi = ext[nu:][pos]
    return {
        "bpr": bpr,
        "vt": cfg.vt_weight * vt,
        "bm": cfg.bm_weight * bm,
        "um": cfg.um_weight * um,
        "extended_reg": cfg.extended_reg_weight * xi.pow(2).sum() / (2 * b),
    }


CFG = dict(
    embedding_dim=6,
    knn_k=K,
    num_ui_layers=2,
    num_item_layers=2,
    reg_weight=0.2,
    extended_reg_weight=0.3,
    vt_weight=0.5,
    bm_weight=0.7,
    bm_temperature=0.3,
    um_weight=0.9,
    um_temperature=0.25,
    noise_eps=0.2,
    modalities=MODS,
)
BATCH = (  # a repeated user and a repeated item
    torch.tensor([0, 3, 5, 3, 1]),
    torch.tensor([2, 4, 7, 0, 4]),
    torch.tensor([1, 5, 6, 3, 2]),
)


def build(data, seed=0, **kw):
    torch.manual_seed(seed)
    return GUME.from_data(data, GUMEConfig(**{**CFG, **kw}))


def test_graphs_and_representations_match_dense_reference():
    data = two_modality_data()
    model = build(data).eval()
    with torch.no_grad():
        ref = dense_reference(model, data)
        out = model.encode(extended=True)
        scores = model.scorer()(torch.tensor([1, 4]))
    nb = ref["neighbours"]
    assert nb.any() and not (nb | torch.eye(NI, dtype=torch.bool)).all()  # a real test
    got_nb = torch.zeros(NI, NI, dtype=torch.bool)
    got_nb[model.neighbour_index[1], model.neighbour_index[0]] = True
    assert torch.equal(got_nb, nb)
    assert torch.allclose(model.ui_adj.to_dense(), ref["a_hat"], atol=1e-6)
    assert not torch.allclose(ref["a_hat"], ref["a_hat"].t())  # the enhanced graph is directed
    for m in range(2):
        assert torch.allclose(model.item_adj(m)[0].to_dense(), ref["mats"][m], atol=1e-6)
    assert not torch.allclose(ref["mats"][0], ref["mats"][1])
    for key in ("behaviour", "integration", "extended"):
        assert torch.allclose(getattr(out, key), ref[key], atol=1e-5), key
    for got, want in zip(out.explicit, ref["explicit"]):
        assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(out.users, ref["users"], atol=1e-5)
    assert torch.allclose(out.items, ref["items"], atol=1e-5)
    assert torch.allclose(scores, ref["users"][[1, 4]] @ ref["items"].t(), atol=1e-5)


def test_every_loss_term_matches_dense_reference():
    data = two_modality_data()
    model = build(data)
    users, pos, neg = BATCH
    torch.manual_seed(7)
    with torch.no_grad():
        terms = model.loss_terms(users, pos, neg)
        ref = dense_reference(model, data)
    torch.manual_seed(7)
    noise = user_noise(users, CFG["embedding_dim"])
    want = reference_terms(model, ref, users, pos, neg, noise)
    assert set(terms) == set(want)
    for key in want:
        assert torch.isclose(terms[key], want[key], atol=1e-5, rtol=1e-5), key
        assert want[key] > 0, key
    torch.manual_seed(7)
    with torch.no_grad():
        total = model.batch_loss(users, pos, neg)
    assert torch.isclose(total, sum(want.values()), atol=1e-5)


def test_one_modality_has_no_alignment_term():
    data = two_modality_data()
    model = build(data, modalities=("text",))
    with torch.no_grad():
        terms = model.loss_terms(*BATCH)
        out = model.encode()
    assert terms["vt"] == 0
    # one modality: softmax weight 1, no fine-grained part, E^s = explicit / 2
    assert torch.allclose(out.integration, out.explicit[0] / 2, atol=1e-6)


def test_gradients_reach_every_parameter_and_match_dense_reference():
    data = two_modality_data()
    model = build(data).train()
    users, pos, neg = BATCH
    params = dict(model.named_parameters())
    assert any(k.startswith("modal_user_emb") for k in params)
    assert any(k.startswith("features") for k in params)
    torch.manual_seed(3)
    model.batch_loss(users, pos, neg).backward()
    got = {k: p.grad.clone() for k, p in params.items()}
    for k, g in got.items():
        assert g is not None and g.abs().sum() > 0, k
    model.zero_grad()
    torch.manual_seed(3)
    noise = user_noise(users, CFG["embedding_dim"])
    ref = dense_reference(model, data)
    sum(reference_terms(model, ref, users, pos, neg, noise).values()).backward()
    for k, p in params.items():
        assert torch.allclose(got[k], p.grad, atol=1e-5, rtol=1e-4), k


def test_given_graph_replaces_the_modality_graphs(monkeypatch):
    data = two_modality_data()
    s = given_item_graph(data)

    def no_knn(*args, **kwargs):
        raise AssertionError("the kNN graph must not be built")

    monkeypatch.setattr(gume_module, "knn_graphs", no_knn)
    model = build(data, item_graph=RELATED).eval()
    assert GUME.requires(model.config) == frozenset({"items", "graph"})
    ref = dense_reference(model, data, graph=s)
    for m in range(2):
        assert torch.allclose(model.item_adj(m)[0].to_dense(), dense_norm(s), atol=1e-6)
    assert torch.allclose(model.ui_adj.to_dense(), ref["a_hat"], atol=1e-6)
    with torch.no_grad():
        users, items = model.representations()
    assert torch.allclose(users, ref["users"], atol=1e-5)
    assert torch.allclose(items, ref["items"], atol=1e-5)
    # another given graph, same parameters: other representations
    other = two_modality_data()
    given_item_graph(other, drop_last=4)
    changed = build(other, item_graph=RELATED).eval()
    assert torch.equal(changed.user_emb.weight, model.user_emb.weight)
    with torch.no_grad():
        users2, items2 = changed.representations()
    assert not torch.allclose(items2, items, atol=1e-4)
    assert not torch.allclose(users2, users, atol=1e-4)
    monkeypatch.undo()
    own = build(data).eval()
    assert not torch.equal(own.ui_adj.to_dense(), model.ui_adj.to_dense())


def test_two_epochs_on_the_trainer_and_recommend_skips_training_items():
    data = make_scale_data((30, 20, 200), dim=8, seed=0)
    data["item"].image = torch.randn(20, 5, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    model = build_model(
        "gume", data, embedding_dim=8, knn_k=4, num_ui_layers=2, modalities=["x", "image"]
    )
    cfg = TrainConfig(
        epochs=2,
        patience=5,
        lr=0.01,
        batch_size=64,
        ks=(5, 10),
        monitor="recall@10",
        show_progress=False,
    )
    before = model.user_emb.weight.detach().clone()
    result = Trainer(model, data, cfg).fit()
    assert result.epochs == 2 and len(result.history) == 2
    assert all(math.isfinite(h["loss"]) for h in result.history)
    assert result.valid and result.test
    assert all(math.isfinite(v) for v in [*result.valid.values(), *result.test.values()])
    assert not torch.equal(model.user_emb.weight, before)
    users = torch.arange(30)
    rec = model.recommend(users, k=5)
    train = data[INTERACTS].edge_index
    seen = {(int(u), int(i)) for u, i in train.t()}
    assert rec.shape == (30, 5)
    assert not any((int(u), int(i)) in seen for u in users for i in rec[u])


def test_registry_tuning_and_plug_and_play_host():
    data = make_scale_data((30, 20, 200), dim=8, seed=0)
    assert MODELS["gume"] is GUME
    model = build_model("gume", data, embedding_dim=8)
    assert isinstance(model, GUME) and model.config.modalities == ("x",)
    assert GUME.requires(GUMEConfig()) == frozenset({"items"})
    assert HOSTS["gume"] == "GUME"
    own, refined = CANDIDATES["gume"], CANDIDATES["gume-refined"]
    assert own.model == refined.model == "gume"
    assert refined.fixed == {"item_graph": RELATED}
    assert {"graph.alpha", "graph.k_c"} <= set(refined.space)
    for cand in (own, refined):
        assert "train.lr" in cand.space
        for point in cand.grid()[:: max(1, len(cand.grid()) // 8)]:
            make_config("gume", {**cand.fixed, **split_point(point)["model"]})
    assert own.needs() == frozenset({"items"})
    assert refined.needs() == frozenset({"items", "graph"})
