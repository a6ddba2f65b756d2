"""LangGCN: the forward pass against a dense reference of its equations, the loss by
hand, gradients, checkpoints, leakage and a quality floor on the synthetic catalog."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import HeteroData

from mllmrec_pyg.data import INTERACTS, RELATED
from mllmrec_pyg.nn import LangGCN, LangGCNConfig
from mllmrec_pyg.nn.langgcn import cooccurrence_prior, log_popularity, mean_item_vectors
from mllmrec_pyg.nn.registry import build_model
from mllmrec_pyg.train import TrainConfig, Trainer, load_checkpoint, save_checkpoint
from mllmrec_pyg.transforms import JaccardCoOccurrence, MergeGraphs, ThresholdKNN


def _data(num_users=12, num_items=9, dim=6, seed=0, held_out_seed=None):
    """A tiny dataset whose training pairs are fixed by ``seed`` and whose held-out
    pairs are drawn with ``held_out_seed`` from the rest."""
    g = torch.Generator().manual_seed(seed)
    train = set()
    for u in range(num_users):
        for i in torch.randperm(num_items, generator=g)[:3].tolist():
            train.add((u, i))
    h = torch.Generator().manual_seed(seed if held_out_seed is None else held_out_seed)
    val, test = [], []
    for u in range(num_users):
        rest = [i for i in torch.randperm(num_items, generator=h).tolist() if (u, i) not in train]
        val.append((u, rest[0]))
        test.append((u, rest[1]))
    data = HeteroData()
    data["user"].num_nodes = num_users
    data["item"].num_nodes = num_items
    data[INTERACTS].edge_index = torch.tensor(sorted(train)).t().contiguous()
    data[INTERACTS].val_edge_index = torch.tensor(val).t().contiguous()
    data[INTERACTS].test_edge_index = torch.tensor(test).t().contiguous()
    data["item"].x = torch.randn(num_items, dim, generator=g)
    data["user"].x = torch.randn(num_users, dim, generator=g)
    data = ThresholdKNN(k=3, threshold=0.0)(data)
    data = JaccardCoOccurrence(k=3)(data)
    return MergeGraphs(relations=("semantic", "cooccurs"))(data)


def _dense_sym(a):
    d = a.sum(1)
    inv = torch.where(d > 0, d.pow(-0.5), torch.zeros_like(d))
    return inv[:, None] * a * inv[None, :]


def _reference(
    model: LangGCN, data: HeteroData, kept: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The module docstring's equations with dense matrices; ``kept`` the pruned training
    pairs the ID side (or, without ``input_propagation``, everything) propagates over."""
    cfg = model.config
    nu, ni = data["user"].num_nodes, data["item"].num_nodes
    ui = data[INTERACTS].edge_index

    def a_hat_of(pairs):
        r = torch.zeros(nu, ni)
        r[pairs[0], pairs[1]] = 1.0
        a = torch.zeros(nu + ni, nu + ni)
        a[:nu, nu:] = r
        a[nu:, :nu] = r.t()
        return r, _dense_sym(a)

    r, a_full = a_hat_of(ui)
    a_step = a_full if kept is None else a_hat_of(kept)[1]
    x = data["item"].x.float()
    if cfg.interest_items > 0:  # each user's k_a text-nearest unseen items, at half weight
        unit = F.normalize(x, dim=1)
        w = torch.zeros(nu, ni)
        for u in range(nu):
            sims = (r[u] @ unit / r[u].sum()) @ unit.t()
            sims[r[u] > 0] = -math.inf
            top = sims.topk(cfg.interest_items)
            keep = top.values > 0
            w[u, top.indices[keep]] = top.values[keep]
        b = torch.zeros(nu + ni, nu + ni)
        b[:nu, nu:] = w
        b[nu:, :nu] = w.t()
        a_full, a_step = a_full + 0.5 * _dense_sym(b), a_step + 0.5 * _dense_sym(b)
    s_hat = None
    if cfg.item_graph is not None:
        ei, ew = data[cfg.item_graph].edge_index, data[cfg.item_graph].get("edge_weight")
        s = torch.zeros(ni, ni)
        s.index_put_((ei[1], ei[0]), torch.ones(ei.size(1)) if ew is None else ew, accumulate=True)
        s_hat = _dense_sym(s)
    if s_hat is not None and cfg.item_graph_mode in ("features", "both"):
        acc, h = x, x
        for _ in range(cfg.num_item_layers):
            h = s_hat @ h
            acc = acc + h
        x = acc
    mean = (r @ x) / r.sum(1, keepdim=True)
    z_u = {
        "mean": mean,
        "preference": data["user"].x,
        "mean+preference": 0.5 * (mean + data["user"].x),
        "id": None,
    }[cfg.user_init]
    z_i = x if cfg.use_item_text else None

    def prop(a_hat, e0):
        if s_hat is not None and cfg.item_graph_mode == "layer0":
            g = e0[nu:]
            for _ in range(cfg.num_item_layers):
                g = s_hat @ g
            e0 = torch.cat([e0[:nu], e0[nu:] + g])
        acc, h = e0, e0
        for _ in range(cfg.num_layers):
            h = a_hat @ h
            acc = acc + h
        out = acc / (cfg.num_layers + 1)
        if s_hat is not None and cfg.item_graph_mode in ("embeddings", "both"):
            g = e0[nu:]
            for _ in range(cfg.num_item_layers):
                g = s_hat @ g
            out = torch.cat([out[:nu], out[nu:] + g])
        return out

    def mlp(v):
        if cfg.hidden_dim == 0:
            return model.mlp(v)
        return model.mlp.lin2(F.leaky_relu(model.mlp.lin1(v), cfg.negative_slope))

    ids = None
    if cfg.id_embeddings:
        user_ids = model.user_id.weight if cfg.user_ids else torch.zeros(nu, cfg.embedding_dim)
        ids = torch.cat([user_ids, model.item_id.weight])
    if cfg.input_propagation and (z_u is not None or z_i is not None):
        z = torch.cat(
            [
                z_u if z_u is not None else torch.zeros(nu, x.size(1)),
                z_i if z_i is not None else torch.zeros(ni, x.size(1)),
            ]
        )
        out = mlp(prop(a_full, z))
        if ids is not None:
            out = out + prop(a_step, ids)
    else:
        e_u = mlp(z_u) if z_u is not None else 0.0
        e_i = mlp(z_i) if z_i is not None else 0.0
        if ids is not None:
            e_u = e_u + ids[:nu]
            e_i = e_i + ids[nu:]
        out = prop(a_step, torch.cat([e_u + torch.zeros(nu, 1), e_i + torch.zeros(ni, 1)]))
    users, items = out[:nu], out[nu:]
    if cfg.cosine:
        users, items = F.normalize(users, dim=-1), F.normalize(items, dim=-1)
    return users, items


CONFIGS = [
    {},
    {"user_init": "preference", "item_graph_mode": "embeddings", "num_item_layers": 2},
    {"user_init": "mean+preference", "cosine": False, "num_layers": 3},
    {"user_init": "id", "item_graph": None, "id_embeddings": True},
    {"use_item_text": False, "user_init": "id", "item_graph": None},
    {"id_embeddings": False, "item_graph": ("item", "semantic", "item")},
    {"item_graph_mode": "both", "num_item_layers": 2, "hidden_dim": 0},
    {"input_propagation": True, "item_graph_mode": "embeddings"},
    {"input_propagation": True, "item_graph_mode": "both", "hidden_dim": 0, "num_layers": 3},
    {"input_propagation": True, "user_init": "id", "cosine": False},
    {"input_propagation": True, "id_embeddings": False, "user_init": "mean+preference"},
    {"input_propagation": True, "use_item_text": False, "user_init": "id", "item_graph": None},
    {"item_graph_mode": "layer0", "num_item_layers": 2},
    {"input_propagation": True, "item_graph_mode": "layer0", "hidden_dim": 0, "user_ids": False},
    {"user_ids": False, "user_init": "preference"},
    {"user_ids": False, "user_init": "id", "use_item_text": False, "item_graph": None},
    {"interest_items": 2},
    {"interest_items": 3, "input_propagation": True, "item_graph_mode": "both", "hidden_dim": 0},
]


@pytest.mark.parametrize("values", CONFIGS)
def test_scores_match_dense_reference(values):
    torch.manual_seed(0)
    data = _data()
    model = build_model("langgcn", data, **{"embedding_dim": 5, "hidden_dim": 7, **values})
    users, items = _reference(model, data)
    want = users @ items.t()
    u = torch.arange(data["user"].num_nodes)
    torch.testing.assert_close(model.scorer()(u), want, atol=1e-5, rtol=1e-5)
    pos = torch.tensor([0, 1, 2])
    neg = torch.tensor([[3, 4], [5, 6], [7, 8]])
    got_pos, got_neg = model.pair_scores(u[:3], pos, neg)
    torch.testing.assert_close(got_pos, want[u[:3], pos], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_neg, want[u[:3, None], neg], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "values",
    [
        {"item_graph_mode": "both"},
        {"input_propagation": True, "item_graph_mode": "embeddings", "hidden_dim": 0},
        {"input_propagation": True, "user_init": "id", "cosine": False},
        {"input_propagation": True, "item_graph_mode": "both", "interest_items": 2},
    ],
)
def test_edge_dropout_prunes_the_training_graph_by_degree_and_ranks_on_the_full_one(values):
    """While training, the step propagates over FREEDOM's degree-sensitive sample of the
    training pairs (the same sample for the same seed and epoch); evaluation uses them all."""
    from mllmrec_pyg.nn.freedom import degree_sensitive_prune, expected_kept

    torch.manual_seed(0)
    data = _data(num_users=20, num_items=12)
    model = build_model(
        "langgcn",
        data,
        **{"embedding_dim": 5, "hidden_dim": 7, "edge_dropout": 0.5, "seed": 3, **values},
    )
    ui = torch.unique(data[INTERACTS].edge_index, dim=1)
    model.train()
    model.on_train_epoch_start(4)
    gen = torch.Generator().manual_seed(3 * 1_000_003 + 4)
    kept = degree_sensitive_prune(ui, 20, 12, 0.5, gen)
    assert kept.size(1) == expected_kept(ui.size(1), 0.5) < ui.size(1)
    users, items = _reference(model, data, kept)
    u = torch.arange(20)
    pos = torch.arange(12).repeat(2)[:20]
    got_pos, _ = model.pair_scores(u, pos, pos)
    torch.testing.assert_close(got_pos, (users * items[pos]).sum(-1), atol=1e-5, rtol=1e-5)
    model.on_train_epoch_start(5)  # another epoch, another sample
    assert not torch.allclose(model.pair_scores(u, pos, pos)[0], got_pos)
    model.eval()  # evaluation: the full training graph
    users, items = _reference(model, data)
    torch.testing.assert_close(model.scorer()(u), users @ items.t(), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="edge_dropout"):
        LangGCNConfig(edge_dropout=1.0)
    with pytest.raises(ValueError, match="id_embeddings=True"):  # nothing would be pruned
        LangGCNConfig(edge_dropout=0.5, input_propagation=True, id_embeddings=False)


def test_input_propagation_runs_the_mlp_on_the_batch_rows_only():
    """With input_propagation a step maps only the batch's users through the MLP (and
    every item, which the negatives need); gradients reach the MLP and the IDs."""
    data = _data(num_users=30, num_items=9)
    model = build_model("langgcn", data, input_propagation=True, hidden_dim=0)
    rows = []
    hook = model.mlp.register_forward_hook(lambda m, i, o: rows.append(i[0].size(0)))
    users = torch.tensor([0, 1, 2, 1])
    loss = model.batch_loss(users, torch.tensor([0, 1, 2, 3]), torch.tensor([[4], [5], [6], [7]]))
    hook.remove()
    assert sorted(rows) == [4, 9]  # the batch's 4 user rows, then all 9 items
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_mean_item_vectors_uses_each_pair_once():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]])
    ei = torch.tensor([[0, 0, 0, 1], [0, 1, 1, 2]])  # (0, 1) twice
    got = mean_item_vectors(ei, x, 3)
    torch.testing.assert_close(got, torch.tensor([[0.5, 1.0], [4.0, 4.0], [0.0, 0.0]]))


class _FixedScores(LangGCN):
    def pair_scores(self, users, pos_items, neg_items):
        return torch.tensor([0.5, -0.2]), torch.tensor([[0.2, -0.1], [0.3, 0.0]])


def test_infonce_and_bpr_by_hand():
    data = _data()
    model = build_model("langgcn", data, temperature=0.5)
    model.__class__ = _FixedScores
    idx = torch.zeros(2, dtype=torch.long)
    neg = torch.zeros(2, 2, dtype=torch.long)
    rows = [(0.5, [0.2, -0.1]), (-0.2, [0.3, 0.0])]
    want = 0.0
    for p, ns in rows:
        den = math.exp(p / 0.5) + sum(math.exp(n / 0.5) for n in ns)
        want += -math.log(math.exp(p / 0.5) / den) / 2
    assert model.batch_loss(idx, idx, neg).item() == pytest.approx(want, rel=1e-6)
    model.config.loss = "bpr"
    bpr = 0.0
    for p, ns in rows:
        for n in ns:
            bpr += -math.log(1.0 / (1.0 + math.exp(-(p - n)))) / 4
    assert model.batch_loss(idx, idx, neg).item() == pytest.approx(bpr, rel=1e-6)


def test_full_softmax_against_every_unseen_item_by_hand():
    """num_negatives=0: the negatives of (u, i) are all items u has no training pair with."""
    data = _data()
    model = build_model(
        "langgcn", data, num_negatives=0, temperature=0.3, user_init="mean+preference"
    )
    ui = data[INTERACTS].edge_index
    users, pos = ui[:, ::2]
    user_out, item_out = model.representations()
    want = 0.0
    for u, i in zip(users.tolist(), pos.tolist()):
        seen = set(ui[1, ui[0] == u].tolist())
        negs = [j for j in range(model.num_items) if j not in seen]
        s = [float(user_out[u] @ item_out[j]) / 0.3 for j in [i, *negs]]
        want += -(s[0] - math.log(sum(math.exp(v) for v in s))) / users.numel()
    got = model.batch_loss(users, pos, users.new_empty((users.numel(), 0)))
    assert got.item() == pytest.approx(want, rel=1e-5)
    got.backward()
    assert model.mlp.lin1.weight.grad.abs().sum() > 0
    # the trainer draws no negatives for it, and it learns
    cfg = TrainConfig(epochs=2, patience=5, show_progress=False, batch_size=8)
    assert model.num_negatives == 0
    Trainer(model, data, cfg).fit()
    with pytest.raises(ValueError, match="infonce"):
        LangGCNConfig(num_negatives=0, loss="bpr")


def test_gradients_reach_mlp_and_ids_not_language_vectors():
    data = _data()
    model = build_model("langgcn", data, user_init="mean+preference", reg_weight=1e-3)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {"mlp.lin1.weight", "mlp.lin1.bias", "mlp.lin2.weight", "mlp.lin2.bias",
                     "user_id.weight", "item_id.weight"}  # fmt: skip
    before = (model.item_lang.clone(), model.user_lang.clone(), data["item"].x.clone())
    users = torch.tensor([0, 1, 2])
    pos = torch.tensor([0, 1, 2])
    neg = torch.tensor([[3, 4], [5, 6], [7, 8]])
    loss = model.batch_loss(users, pos, neg) + model.reg_loss(users, pos, neg)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert not model.item_lang.requires_grad and not model.user_lang.requires_grad
    torch.optim.Adam(model.parameters(), lr=0.1).step()
    for a, b in zip(before, (model.item_lang, model.user_lang, data["item"].x)):
        assert torch.equal(a, b)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError):
        LangGCNConfig(user_init="ids")
    with pytest.raises(ValueError):
        LangGCNConfig(user_init="id", id_embeddings=False)
    with pytest.raises(ValueError):
        LangGCNConfig(temperature=0.0)
    assert LangGCNConfig(item_graph=["item", "related", "item"]).item_graph == RELATED


def test_checkpoint_round_trip(tmp_path):
    data = _data()
    torch.manual_seed(1)
    model = build_model("langgcn", data, user_init="mean+preference", num_negatives=4)
    cfg = TrainConfig(epochs=2, batch_size=8, ks=(5,), monitor="recall@5", show_progress=False)
    Trainer(model, data, cfg).fit()
    path = save_checkpoint(model, tmp_path / "m.pt", data)
    again = load_checkpoint(path, data)
    assert again.config == model.config
    u = torch.arange(data["user"].num_nodes)
    model.eval()
    torch.testing.assert_close(again.scorer()(u), model.scorer()(u), atol=0, rtol=0)
    assert torch.equal(again.recommend(u, k=3), model.recommend(u, k=3))


def test_user_side_inputs_ignore_held_out_pairs():
    """Changing valid/test pairs (training fixed) changes no input the model is built from."""
    a = _data(held_out_seed=1)
    b = _data(held_out_seed=2)
    assert not torch.equal(a[INTERACTS].val_edge_index, b[INTERACTS].val_edge_index)
    compared = {  # the design the comparison tunes (propagated inputs, pruned edges)
        "item_graph_mode": "both",
        "input_propagation": True,
        "hidden_dim": 0,
        "edge_dropout": 0.8,
        "num_negatives": 0,
        "cooccurrence_weight": 0.2,  # the co-purchase prior: training pairs only
        "popularity_weight": 0.3,  # the items' training popularity
        "interest_items": 3,  # text-nearest items to the TRAINING history
        "history_weight": 0.4,  # the nearest TRAINING item in the learned space
    }
    for values in ({}, {"user_init": "mean+preference", "item_graph_mode": "embeddings"}, compared):
        torch.manual_seed(0)
        ma = build_model("langgcn", a, **values)
        torch.manual_seed(0)
        mb = build_model("langgcn", b, **values)
        for epoch in (1, 2):  # the pruned training graph of each epoch
            ma.on_train_epoch_start(epoch)
            mb.on_train_epoch_start(epoch)
            ma.train(), mb.train()
            assert torch.equal(ma._adj().to_dense(), mb._adj().to_dense())
            ma.eval(), mb.eval()
        for name in ("user_lang", "item_lang"):
            torch.testing.assert_close(getattr(ma, name), getattr(mb, name), atol=0, rtol=0)
        for name in ("ui_adj_t", "item_emb_adj"):
            x, y = getattr(ma, name), getattr(mb, name)
            assert (x is None) == (y is None)
            if x is not None:
                assert torch.equal(x.to_dense(), y.to_dense())
        u = torch.arange(a["user"].num_nodes)
        assert torch.equal(ma.scorer()(u), mb.scorer()(u))
    # and the mean vectors are exactly the training items' mean
    tr = a[INTERACTS].edge_index
    m = build_model("langgcn", a, item_graph=None)
    for u in range(3):
        items = tr[1, tr[0] == u]
        torch.testing.assert_close(m.user_lang[u], a["item"].x[items].mean(0))


@pytest.mark.slow
def test_beats_mostpop_on_synthetic():
    from mllmrec_pyg.data import make_synthetic
    from mllmrec_pyg.encode import encode_texts
    from mllmrec_pyg.transforms import RefineItemGraph

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = make_synthetic(seed=0, num_users=600, num_items=300)
        data["item"].x = encode_texts(list(data["item"].text), show_progress=False)
        data = RefineItemGraph()(data)
        cfg = TrainConfig(epochs=30, patience=5, show_progress=False)
        torch.manual_seed(0)
        pop = Trainer(build_model("pop", data), data, cfg).fit().test
        torch.manual_seed(0)
        ours = Trainer(build_model("langgcn", data), data, cfg).fit().test
    finally:
        torch.set_num_threads(threads)
    assert ours["recall@20"] > 1.5 * pop["recall@20"], (ours, pop)
    assert ours["ndcg@20"] > 1.5 * pop["ndcg@20"], (ours, pop)


def test_item_bias_adds_one_learned_number_per_item_to_every_score():
    """item_bias: score(u, i) = cos(e_u, e_i) + b_i in ranking and in the full-softmax loss."""
    data = _data()
    plain = build_model("langgcn", data, num_negatives=0)
    torch.manual_seed(0)
    biased = build_model("langgcn", data, num_negatives=0, item_bias=True)
    biased.load_state_dict({**plain.state_dict(), "item_b": biased.item_b.detach()})
    with torch.no_grad():
        biased.item_b.copy_(torch.linspace(-1, 1, biased.num_items))
    u, i = plain.representations()
    want = (u @ i.t()).detach() + biased.item_b.detach()
    users = torch.arange(plain.num_users)
    torch.testing.assert_close(biased.scorer()(users), want)
    ui = data[INTERACTS].edge_index
    tau = biased.config.temperature
    users, pos = ui[:, ::2]
    want_loss = 0.0
    for uu, ii in zip(users.tolist(), pos.tolist()):
        seen = set(ui[1, ui[0] == uu].tolist())
        s = [float(want[uu, j]) / tau for j in [ii, *(j for j in range(9) if j not in seen)]]
        want_loss += -(s[0] - math.log(sum(math.exp(v) for v in s))) / users.numel()
    got = biased.batch_loss(users, pos, users.new_empty((users.numel(), 0)))
    assert got.item() == pytest.approx(want_loss, rel=1e-5)
    got.backward()
    assert biased.item_b.grad is not None and biased.item_b.grad.abs().sum() > 0


def test_item_head_reads_the_head_view_beside_the_text_vectors(caplog):
    """item_head: the language input is [x, x_head] (the dense reference on that input);
    without a head view the model reads x alone and says so."""
    torch.manual_seed(0)
    data = _data()
    width = data["item"].x.size(1)
    data["item"].x_head = torch.randn(data["item"].num_nodes, width)
    values = {"embedding_dim": 5, "input_propagation": True, "item_graph_mode": "both"}
    model = build_model("langgcn", data, item_head=True, hidden_dim=0, **values)
    assert model.mlp.in_features == 2 * width
    assert "item_head" in LangGCN.requires(model.config)
    as_one = data.clone()
    as_one["item"].x = torch.cat([data["item"].x, data["item"].x_head], dim=1)
    as_one["user"].x = torch.cat([data["user"].x, data["user"].x], dim=1)
    users, items = _reference(model, as_one)
    u = torch.arange(data["user"].num_nodes)
    torch.testing.assert_close(model.scorer()(u), users @ items.t(), atol=1e-5, rtol=1e-5)
    del data["item"].x_head
    with caplog.at_level("WARNING"):
        plain = build_model("langgcn", data, item_head=True, hidden_dim=0, **values)
    assert plain.mlp.in_features == data["item"].x.size(1)
    assert "no head view" in caplog.text


def _dense_prior(pairs, nu, ni):
    r = torch.zeros(nu, ni, dtype=torch.float64)
    r[pairs[0], pairs[1]] = 1.0
    c = r.t() @ r
    c.fill_diagonal_(0.0)
    m = r @ c
    top = m.max(1, keepdim=True).values
    return torch.where(top > 0, m / top.clamp_min(1e-300), torch.zeros_like(m))


def test_cooccurrence_prior_equals_the_dense_counts():
    """m = R (R^T R - diag), each user's row over its largest entry, from the training
    pairs with repeats counted once; rows gathered for any block of users, in any order."""
    data = _data(num_users=15, num_items=11, seed=4)
    pairs = data[INTERACTS].edge_index
    nu, ni = 15, 11
    want = _dense_prior(pairs, nu, ni)
    prior = cooccurrence_prior(torch.cat([pairs, pairs[:, :5]], dim=1), nu, ni)  # repeats
    users = torch.tensor([3, 0, 14, 3, 7])
    got = prior.add_to(torch.zeros(5, ni, dtype=torch.float64), users, 1.0)
    torch.testing.assert_close(got, want[users], rtol=1e-6, atol=1e-7)
    prior.dense = None  # the sparse path (catalogues past the dense limit)
    got = prior.add_to(torch.ones(5, ni, dtype=torch.float64), users, 0.5)
    torch.testing.assert_close(got, 1 + 0.5 * want[users], rtol=1e-6, atol=1e-7)
    assert want.max() == 1.0 and bool((want.max(1).values == 1).all())


def _with_ranking_term(data, base, **term):
    """The model ``base`` and the same one with ``term`` (same seed), both in eval mode,
    after checking that the term leaves the training loss as it is (the loss sees none)."""
    nu = data["user"].num_nodes
    torch.manual_seed(0)
    plain = build_model("langgcn", data, num_negatives=0, **base)
    torch.manual_seed(0)
    termed = build_model("langgcn", data, num_negatives=0, **base, **term)
    users = torch.arange(nu)
    pos = data[INTERACTS].edge_index[1, :nu]
    none = users.new_empty(nu, 0)
    plain.train(), termed.train()
    assert torch.equal(plain.batch_loss(users, pos, none), termed.batch_loss(users, pos, none))
    return plain.eval(), termed.eval()


def test_cooccurrence_weight_adds_the_prior_to_scores_and_leaves_training_alone():
    data = _data(seed=2)
    nu, ni = data["user"].num_nodes, data["item"].num_nodes
    beta = 0.3
    plain, prior = _with_ranking_term(data, {}, cooccurrence_weight=beta)
    users = torch.arange(nu)
    want = plain.scorer()(users).double() + beta * _dense_prior(data[INTERACTS].edge_index, nu, ni)
    torch.testing.assert_close(prior.scorer()(users).double(), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="cooccurrence_weight"):
        LangGCNConfig(cooccurrence_weight=-0.1)


def test_popularity_weight_adds_the_log_training_degree_to_scores():
    """gamma * log(1 + d_i) / log(1 + max d) with d_i the item's distinct TRAINING users,
    beside the co-purchase prior; the loss does not see it."""
    data = _data(seed=3)
    nu, ni = data["user"].num_nodes, data["item"].num_nodes
    pairs = data[INTERACTS].edge_index
    data[INTERACTS].edge_index = torch.cat([pairs, pairs[:, :7]], dim=1)  # repeats count once
    beta, gamma = 0.2, 0.4
    plain, both = _with_ranking_term(data, {}, cooccurrence_weight=beta, popularity_weight=gamma)
    users = torch.arange(nu)
    r = torch.zeros(nu, ni, dtype=torch.float64)
    r[pairs[0], pairs[1]] = 1.0
    deg = r.sum(0)
    assert deg.min() < deg.max()  # a real test: the items differ in popularity
    want_pop = torch.log(1 + deg) / math.log(1 + float(deg.max()))
    torch.testing.assert_close(log_popularity(pairs, ni).double(), want_pop, rtol=1e-6, atol=1e-7)
    want = plain.scorer()(users).double() + beta * _dense_prior(pairs, nu, ni) + gamma * want_pop
    torch.testing.assert_close(both.scorer()(users).double(), want, rtol=1e-5, atol=1e-6)
    assert torch.equal(log_popularity(pairs[:, :0], ni), torch.zeros(ni))
    with pytest.raises(ValueError, match="popularity_weight"):
        LangGCNConfig(popularity_weight=-0.1)


def _dense_history(pairs, item_emb, nu):
    """max over the user's training items j of cos(e_j, e_i), 0 for a user without items."""
    unit = F.normalize(item_emb.double(), dim=-1)
    out = torch.zeros(nu, item_emb.size(0), dtype=torch.float64)
    for u in range(nu):
        items = pairs[1, pairs[0] == u].unique()
        if items.numel():
            out[u] = (unit[items] @ unit.t()).max(0).values
    return out


def test_history_similarity_is_the_largest_cosine_to_a_training_item():
    """h_ui = max_{j in N_u} cos(e_j, e_i), in any block of users, in any chunk size."""
    from mllmrec_pyg.metrics import CSRIndex
    from mllmrec_pyg.nn.ranking_terms import history_similarity, item_cosines

    g = torch.Generator().manual_seed(5)
    nu, ni = 9, 13
    pairs = torch.stack(
        [torch.randint(0, nu - 1, (30,), generator=g), torch.randint(0, ni, (30,), generator=g)]
    )
    emb = torch.randn(ni, 4, generator=g)
    want = _dense_history(pairs, emb, nu)
    assert bool((want[nu - 1] == 0).all())  # the last user has no items
    index = CSRIndex(torch.unique(pairs, dim=1), nu)
    users = torch.tensor([8, 2, 0, 2, 5])
    gram = item_cosines(emb)  # the gathered rows of the [I, I] cosines, or products per block
    assert item_cosines(emb, limit=ni * ni - 1) is None
    for chunk in (1, 7, 1 << 20):
        for g in (None, gram):
            got = history_similarity(emb, index, users, chunk_elems=chunk * ni, gram=g)
            torch.testing.assert_close(got.double(), want[users], rtol=1e-6, atol=1e-6)


def test_history_weight_adds_the_nearest_training_item_to_scores_and_leaves_training_alone():
    data = _data(seed=6)
    nu = data["user"].num_nodes
    pairs = data[INTERACTS].edge_index
    eta = 0.7
    plain, near = _with_ranking_term(data, {"popularity_weight": 0.2}, history_weight=eta)
    users = torch.arange(nu)
    _, items = plain.representations()
    want = plain.scorer()(users).double() + eta * _dense_history(pairs, items, nu)
    torch.testing.assert_close(
        near.scorer()(users[[4, 1]]).double(), want[[4, 1]], rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(near.scorer()(users).double(), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="history_weight"):
        LangGCNConfig(history_weight=-0.1)
