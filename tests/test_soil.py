"""SOIL: its interest-aware item graphs and second-order user-item graph against a
brute-force construction written the way the authors' code loops, its representations,
every loss term and their gradients against a dense float64 reference of its equations;
the plug-and-play graph; config checks; training, registry and tuning."""

import math

import pytest
import torch
from conftest import dense_knn, dense_norm, given_item_graph, reference_nce, two_modality_data

import mllmrec_pyg.nn.soil as soil_module
from mllmrec_pyg.commands.train import MODEL_FLAGS, MODEL_SWITCHES
from mllmrec_pyg.data import INTERACTS, RELATED
from mllmrec_pyg.data.synthetic import make_scale_data
from mllmrec_pyg.experiments.compare import PAPER_BABY_R20
from mllmrec_pyg.experiments.plug_and_play import HOSTS
from mllmrec_pyg.nn import SOIL, SOILConfig
from mllmrec_pyg.nn.registry import MODELS, build_model, make_config
from mllmrec_pyg.tuning import CANDIDATES, split_point

NU, NI = 6, 8  # fewer users than items: the reference code's R normalisation would fail
MODS = ("text", "image")
pytestmark = pytest.mark.usefixtures("one_thread")
FLOOR = 1e-7


# -- the reference ---------------------------------------------------------------------------
def cosine(x):
    xn = x / x.norm(dim=1, keepdim=True)
    sim = xn @ xn.t()
    return (sim + sim.t()) / 2  # exactly symmetric, as the model's


def top_by_index(scores, k):
    """Positions of the ``k`` largest ``scores`` (a list), ties to the lower position."""
    return sorted(range(len(scores)), key=lambda j: (-scores[j], j))[:k]


def floored_norm(w):
    """:math:`D^{-1/2} W D^{-1/2}` (row sums), every stored entry at least 1e-7."""
    return torch.where(w != 0, dense_norm(w).clamp_min(FLOOR), torch.zeros_like(w))


def reference_graphs(data, cfg, given=None):
    """The graphs built with plain loops over users, as the authors' code builds them."""
    tr = data[INTERACTS].edge_index
    r = torch.zeros(NU, NI, dtype=torch.float64)
    r[tr[0], tr[1]] = 1.0
    feats = [data["item"][m].double() for m in cfg.modalities]
    sims = [cosine(x) for x in feats]
    interest = torch.zeros(NU, NI, dtype=torch.bool)
    per_modality = torch.zeros(len(sims), NU, NI, dtype=torch.bool)
    t = [torch.zeros(NI, NI, dtype=torch.float64) for _ in sims]
    counts = torch.zeros(NI, NI)
    for u in range(NU):
        hist = r[u].nonzero().flatten().tolist()
        if not hist:
            continue
        cols = set()
        for m, s in enumerate(sims):
            top = top_by_index(s[hist].sum(0).tolist(), min(cfg.knn_i, NI))
            per_modality[m, u, top] = True
            cols |= set(top)
        for c in cols:
            interest[u, c] = True
            for h in hist:
                counts[h, c] += 1
                for m, s in enumerate(sims):
                    t[m][h, c] += s[h, c]
    graphs = []
    for m, x in enumerate(feats):
        base = dense_knn(x, cfg.knn_k) if given is None else given
        graphs.append(floored_norm(t[m]) + floored_norm(base))
    # second order: the k_u largest P[h, c] over the user's items h (in id order) and all c
    p = sims[0]
    for s in sims[1:]:
        p = p * s
    a = torch.zeros(NU, NI, dtype=torch.float64)
    for u in range(NU):
        hist = r[u].nonzero().flatten().tolist()
        if not hist:
            continue
        pairs = [(h, c) for h in hist for c in range(NI)]
        for j in top_by_index([float(p[h, c]) for h, c in pairs], min(cfg.knn_a + len(hist), NI)):
            h, c = pairs[j]
            a[u, c] += p[h, c]
    n = NU + NI
    ui = torch.zeros(n, n, dtype=torch.float64)
    ui[:NU, NU:], ui[NU:, :NU] = r, r.t()
    so = torch.zeros(n, n, dtype=torch.float64)
    so[:NU, NU:], so[NU:, :NU] = a, a.t()
    lightgcn = dense_norm(ui)
    a_hat = lightgcn + 0.5 * floored_norm(so)
    return {
        "r": r,
        "interest": interest,
        "per_modality": per_modality,
        "counts": counts,
        "t": t,
        "graphs": graphs,
        "a": a,
        "lightgcn": lightgcn,
        "a_hat": a_hat,
        "r_hat": a_hat[:NU, NU:],
    }


def lin(layer, x):
    out = x @ layer.weight.double().t()
    return out + layer.bias.double() if layer.bias is not None else out


def dense_forward(model, ref):
    """SOIL's forward pass in float64 with dense matrices (differentiable in the model's
    parameters)."""
    cfg = model.config
    n_mod = len(cfg.modalities)
    e_i = model.item_emb.weight.double()
    layers = [torch.cat([model.user_emb.weight.double(), e_i])]
    for _ in range(cfg.num_ui_layers):
        layers.append(ref["a_hat"] @ layers[-1])
    content = torch.stack(layers).mean(0)
    modal = []
    for m, x in enumerate(model.features):
        gate = model.gates[m][0]
        h = e_i * torch.sigmoid(lin(gate, lin(model.projections[m], x.double())))
        for _ in range(cfg.num_item_layers):
            h = ref["graphs"][m] @ h
        modal.append(torch.cat([ref["r_hat"] @ h, h]))
    att = model.attention
    scores = torch.cat([lin(att[2], torch.tanh(lin(att[0], h))) for h in modal], 1)
    alpha = torch.softmax(scores, 1)
    common = sum(alpha[:, m : m + 1] * modal[m] for m in range(n_mod))
    side = (common + sum(h - common for h in modal)) / (n_mod + 1)
    out = content + side
    return {
        "users": out[:NU],
        "items": out[NU:],
        "content": content,
        "side": side,
        "modal": modal,
    }


def reference_terms(model, out, users, pos, neg):
    cfg = model.config
    b, t = users.numel(), cfg.temperature
    u, p, n = out["users"][users], out["items"][pos], out["items"][neg]
    bpr = -torch.log(torch.sigmoid((u * p).sum(1) - (u * n).sum(1))).mean()
    bpr = bpr + cfg.reg_weight * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / (2 * b)
    s, c = out["side"], out["content"]
    cl = reference_nce(s[NU:][pos], c[NU:][pos], t) + reference_nce(s[:NU][users], c[:NU][users], t)
    ui = reference_nce(u, c[NU:][pos], t) + reference_nce(u, s[NU:][pos], t)
    return {"bpr": bpr, "cl": cfg.cl_weight * cl, "ui_cl": cfg.ui_cl_weight * ui}


CFG = dict(
    embedding_dim=6,
    num_ui_layers=2,
    num_item_layers=2,
    knn_k=4,
    knn_i=2,
    knn_a=2,
    cl_weight=0.7,
    ui_cl_weight=0.9,
    temperature=0.3,
    reg_weight=0.2,
    modalities=MODS,
)
BATCH = (  # a repeated user and a repeated item
    torch.tensor([0, 3, 5, 3, 1]),
    torch.tensor([2, 4, 7, 0, 4]),
    torch.tensor([1, 5, 6, 3, 2]),
)


def build(data, seed=0, **kw):
    torch.manual_seed(seed)
    return SOIL.from_data(data, SOILConfig(**{**CFG, **kw}))


def dense(adj):
    return adj.to_dense().double()


# -- tests -----------------------------------------------------------------------------------
def test_graphs_match_the_brute_force_construction():
    data = two_modality_data()
    model = build(data)
    ref = reference_graphs(data, model.config)
    # a real test: the union, the multiplicities and the second-order items all matter
    assert (ref["interest"].sum(1) > CFG["knn_i"]).any()  # the modalities pick differently
    assert (ref["counts"] > 1).any()  # an item-interest pair shared by several users
    assert ((ref["a"] > 0) & (ref["r"] == 0)).any()  # items the user never chose
    assert ((ref["a"] > 1) & (ref["r"] == 1)).any()  # an own item picked twice
    for m in range(2):
        got = dense(model.item_adj(m)[0])
        assert torch.allclose(got, ref["graphs"][m], atol=1e-6), m
        assert torch.allclose(dense(model.item_adj(m)[1]), ref["graphs"][m].t(), atol=1e-6)
        assert (ref["t"][m] != 0).sum() > (dense_knn(data["item"][MODS[m]], 4) != 0).sum() / 2
    assert not torch.allclose(ref["graphs"][0], ref["graphs"][1])
    assert torch.allclose(dense(model.ui_adj), ref["a_hat"], atol=1e-6)
    assert torch.allclose(dense(model.r_hat), ref["r_hat"], atol=1e-6)
    assert torch.allclose(dense(model.r_hat_t), ref["r_hat"].t(), atol=1e-6)
    # R' is the block of the augmented graph, not LightGCN's
    assert not torch.allclose(ref["r_hat"], ref["lightgcn"][:NU, NU:], atol=1e-3)


def test_graph_helpers_match_the_reference_loops():
    data = two_modality_data()
    ref = reference_graphs(data, SOILConfig(**CFG))
    pairs = data[INTERACTS].edge_index
    hist = soil_module.user_histories(torch.cat([pairs, pairs[:, :3]], 1), NU)
    assert torch.equal(hist.rowptr.diff(), torch.full((NU,), 4))  # duplicates count once
    sims = [soil_module.cosine_matrix(data["item"][m]) for m in MODS]
    interest = soil_module.interest_items(hist, sims, CFG["knn_i"], block=2 * NI)
    got = torch.zeros(NU, NI, dtype=torch.bool)
    got[interest[0], interest[1]] = True
    assert torch.equal(got, ref["interest"])
    for m in range(2):  # one modality's picks alone
        one = soil_module.interest_items(hist, sims[m : m + 1], CFG["knn_i"])
        alone = torch.zeros(NU, NI, dtype=torch.bool)
        alone[one[0], one[1]] = True
        assert torch.equal(alone, ref["per_modality"][m])
    ei, n = soil_module.interest_counts(hist, interest, NI)
    counts = torch.zeros(NI, NI).index_put((ei[1], ei[0]), n)
    assert torch.equal(counts, ref["counts"])
    (u, c), w = soil_module.second_order_pairs(hist, sims[0] * sims[1], CFG["knn_a"])
    a = torch.zeros(NU, NI, dtype=torch.float64).index_put((u, c), w.double())
    assert torch.allclose(a, ref["a"], atol=1e-6)
    key = u * NI + c
    assert torch.equal(key, torch.unique(key))  # distinct pairs, sorted


def test_ties_go_to_the_lower_index():
    # one user with items 0 and 1; P[0, 1] = P[1, 0] ties for the last of its 3 picks
    hist = soil_module.user_histories(torch.tensor([[0, 0], [0, 1]]), 1)
    p = torch.tensor(
        [[1.0, 0.5, 0.2, 0.1], [0.5, 1.0, 0.3, 0.4], [0.2, 0.3, 1.0, 0.0], [0.1, 0.4, 0.0, 1.0]]
    )
    (u, c), w = soil_module.second_order_pairs(hist, p, knn_a=1)
    assert c.tolist() == [0, 1] and w.tolist() == [1.0, 1.5]  # (0, 1) beats (1, 0)
    # equal summed similarities: the lower item id is the interest item
    sim = torch.tensor([[1.0, 0.2, 0.7, 0.7], [0.2, 1.0, 0.3, 0.3], [0.7, 0.3, 1.0, 0.0]])
    sim = torch.cat([sim, torch.tensor([[0.7, 0.3, 0.0, 1.0]])])
    top = soil_module.interest_items(hist, [sim], 2)
    assert top[1].tolist() == [0, 1]  # sums 1.2, 1.2, 1.0, 1.0
    top = soil_module.interest_items(hist, [sim], 3)
    assert top[1].tolist() == [0, 1, 2]


def test_representations_match_the_dense_reference():
    data = two_modality_data()
    model = build(data).eval()
    ref = reference_graphs(data, model.config)
    with torch.no_grad():
        want = dense_forward(model, ref)
        out = model.encode()
        scores = model.scorer()(torch.tensor([1, 4]))
    for key in ("users", "items", "content", "side"):
        assert torch.allclose(getattr(out, key).double(), want[key], atol=1e-5), key
    for got, w in zip(out.modal, want["modal"]):
        assert torch.allclose(got.double(), w, atol=1e-5)
    assert not torch.allclose(want["modal"][0], want["modal"][1], atol=1e-3)
    assert want["side"].abs().max() > 1e-3
    w_scores = want["users"][[1, 4]] @ want["items"].t()
    assert torch.allclose(scores.double(), w_scores, atol=1e-5)


def test_every_loss_term_matches_the_dense_reference():
    data = two_modality_data()
    model = build(data)
    users, pos, neg = BATCH
    with torch.no_grad():
        terms = model.loss_terms(users, pos, neg)
        total = model.batch_loss(users, pos, neg)
        want = reference_terms(
            model, dense_forward(model, reference_graphs(data, model.config)), *BATCH
        )
    assert set(terms) == set(want)
    for key in want:
        assert want[key] > 0, key
        assert math.isclose(float(terms[key]), float(want[key]), rel_tol=1e-5, abs_tol=1e-6), key
    assert math.isclose(float(total), float(sum(want.values())), rel_tol=1e-5)


def test_gradients_match_the_dense_reference():
    data = two_modality_data()
    model = build(data, train_features=True).train()
    users, pos, neg = BATCH
    params = dict(model.named_parameters())
    assert all(p.requires_grad for p in params.values())
    model.batch_loss(users, pos, neg).backward()
    got = {k: p.grad.clone() for k, p in params.items()}
    for k, g in got.items():
        assert g.abs().sum() > 0, k
    model.zero_grad()
    out = dense_forward(model, reference_graphs(data, model.config))
    sum(reference_terms(model, out, users, pos, neg).values()).backward()
    for k, p in params.items():
        assert torch.allclose(got[k], p.grad, atol=1e-6, rtol=1e-4), k


def test_features_are_frozen_by_default():
    model = build(two_modality_data())
    assert not any(p.requires_grad for p in model.features)
    model.batch_loss(*BATCH).backward()
    assert all(p.grad is None for p in model.features)
    assert model.projections[0].weight.grad.abs().sum() > 0


def test_one_modality_gives_half_its_view():
    data = two_modality_data()
    model = build(data, modalities=("text",))
    with torch.no_grad():
        out = model.encode()
        ref = reference_graphs(data, model.config)
        want = dense_forward(model, ref)
    assert out.side.abs().max() > 1e-3  # (sum of views - common) / 2 would be zero
    assert torch.allclose(out.side, out.modal[0] / 2, atol=1e-7)
    assert torch.allclose(out.users.double(), want["users"], atol=1e-5)
    # one modality: the second-order score is the cosine itself
    assert torch.allclose(dense(model.ui_adj), ref["a_hat"], atol=1e-6)


def test_zero_weights_skip_their_terms(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("a term with weight 0 was computed")

    monkeypatch.setattr(soil_module, "info_nce", boom)
    monkeypatch.setattr(soil_module, "in_batch_softmax", boom)
    model = build(two_modality_data(), cl_weight=0.0, ui_cl_weight=0.0, reg_weight=0.0)
    terms = model.loss_terms(*BATCH)
    assert terms["cl"] == 0 and terms["ui_cl"] == 0
    u, p, n = model.encode().users[BATCH[0]], *[model.encode().items[i] for i in BATCH[1:]]
    want = -torch.nn.functional.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()
    assert torch.isclose(terms["bpr"], want)


def test_sizes_are_capped_and_a_user_without_history_is_left_out():
    data = two_modality_data(empty_user=2)
    model = build(data, knn_i=50, knn_a=100)  # k_i and k_u capped at the 8 items
    ref = reference_graphs(data, model.config)
    assert ref["interest"][2].sum() == 0 and ref["interest"].sum() == (NU - 1) * NI
    assert (ref["a"][2] == 0).all() and (ref["a"][[0, 1, 3, 4, 5]].sum(1) > 0).all()
    assert torch.allclose(dense(model.ui_adj), ref["a_hat"], atol=1e-6)
    for m in range(2):
        assert torch.allclose(dense(model.item_adj(m)[0]), ref["graphs"][m], atol=1e-6)
    assert (dense(model.ui_adj)[2] == 0).all()
    with torch.no_grad():
        users, items = model.representations()
    assert torch.isfinite(users).all() and torch.isfinite(items).all()


def test_given_graph_replaces_only_the_knn_part(monkeypatch):
    data = two_modality_data()
    s = given_item_graph(data, dtype=torch.float64)
    own = build(data)

    def no_knn(*args, **kwargs):
        raise AssertionError("the kNN graph must not be built")

    monkeypatch.setattr(soil_module, "knn_graphs", no_knn)
    model = build(data, item_graph=RELATED).eval()
    assert SOIL.requires(model.config) == frozenset({"items", "graph"})
    ref = reference_graphs(data, model.config, given=s)
    own_ref = reference_graphs(data, own.config)
    for m in range(2):
        got = dense(model.item_adj(m)[0])
        assert torch.allclose(got, ref["graphs"][m], atol=1e-6)
        # the interest part stays: G^m - N(S*) is the vanilla G^m - N(K^m)
        interest = got - floored_norm(s)
        assert torch.allclose(
            interest,
            own_ref["graphs"][m] - floored_norm(dense_knn(data["item"][MODS[m]].double(), 4)),
            atol=1e-6,
        )
        assert interest.abs().sum() > 0
    assert torch.equal(dense(model.ui_adj), dense(own.ui_adj))  # second-order graph kept
    with torch.no_grad():
        want = dense_forward(model, ref)
        users, items = model.representations()
    assert torch.allclose(users.double(), want["users"], atol=1e-5)
    assert torch.allclose(items.double(), want["items"], atol=1e-5)
    with torch.no_grad():
        own_users, _ = own.eval().representations()
    assert torch.equal(own.user_emb.weight, model.user_emb.weight)
    assert not torch.allclose(users, own_users, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"modalities": ()}, "at least one modality"),
        ({"modalities": ("x", "x")}, "repeated"),
        ({"item_graph": ("item", "related")}, "edge type triple"),
        ({"embedding_dim": 0}, "embedding_dim must be positive"),
        ({"knn_k": 0}, "knn_k must be positive"),
        ({"temperature": 0.0}, "temperature must be positive"),
        ({"knn_i": -1}, "knn_i must be >= 0"),
        ({"knn_a": -1}, "knn_a must be >= 0"),
        ({"num_ui_layers": -1}, "num_ui_layers must be >= 0"),
        ({"num_item_layers": -1}, "num_item_layers must be >= 0"),
        ({"cl_weight": -0.1}, "cl_weight must be >= 0"),
        ({"ui_cl_weight": -0.1}, "ui_cl_weight must be >= 0"),
        ({"reg_weight": -0.1}, "reg_weight must be >= 0"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SOILConfig(**kwargs)


def test_config_normalises_json_lists_and_counts_features():
    cfg = SOILConfig(modalities=["text", "image"], item_graph=list(RELATED))
    assert cfg.modalities == MODS and cfg.item_graph == RELATED
    data = two_modality_data()
    with pytest.raises(ValueError, match="feature matrices"):
        SOIL(NU, NI, data[INTERACTS].edge_index, [data["item"].text], None, SOILConfig(**CFG))


def test_registry_tuning_cli_and_plug_and_play_host():
    data = make_scale_data((30, 20, 200), dim=8, seed=0)
    assert MODELS["soil"] is SOIL
    model = build_model("soil", data, embedding_dim=8)
    assert isinstance(model, SOIL) and model.config.modalities == ("x",)
    assert SOIL.requires(SOILConfig()) == frozenset({"items"})
    assert HOSTS["soil"] == "SOIL"
    assert PAPER_BABY_R20["soil"] == 0.1028  # Table 1, Baby, R@20
    assert MODEL_FLAGS["embedding_dim"]["soil"] == "embedding_dim"
    assert MODEL_SWITCHES["refined_graph"]["soil"] == ("item_graph", RELATED)
    own, refined = CANDIDATES["soil"], CANDIDATES["soil-refined"]
    assert own.model == refined.model == "soil"
    assert refined.fixed == {"item_graph": RELATED}
    assert own.space["model.knn_i"] == (5, 10, 15, 20)
    assert own.space["model.knn_a"] == (3, 5, 10)
    assert own.space["model.cl_weight"] == own.space["model.ui_cl_weight"] == (0.001, 0.01, 0.1)
    assert {"graph.alpha", "graph.k_c"} <= set(refined.space)
    for cand in (own, refined):
        for point in cand.grid()[:: max(1, len(cand.grid()) // 8)]:
            make_config("soil", {**cand.fixed, **split_point(point)["model"]})
    assert own.needs() == frozenset({"items"})
    assert refined.needs() == frozenset({"items", "graph"})
