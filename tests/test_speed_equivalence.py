"""The fast paths compute what the straightforward ones compute.

Each test keeps the straightforward implementation (the way the package
computed it before the fast path existed) as a reference here and compares:
top-k with id tie-breaking, the evaluator's block loop, the sparse products
with a prepared transpose (forward and gradients), and whole training runs
of every registered model (losses and validation metrics per epoch).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import mllmrec_pyg.metrics as metrics
import mllmrec_pyg.nn.bipartite as bipartite_module
import mllmrec_pyg.nn.mm_common as mm_common
import mllmrec_pyg.nn.slmrec as slmrec_module
import mllmrec_pyg.nn.soil as soil_module
import mllmrec_pyg.train as train_module
from mllmrec_pyg._sparse import quiet_sparse, to_csr
from mllmrec_pyg.data.synthetic import make_scale_data
from mllmrec_pyg.metrics import FullRankEvaluator, topk_items
from mllmrec_pyg.nn import FREEDOM, MLLMRec, MLLMRecConfig
from mllmrec_pyg.nn.base import gather_triples
from mllmrec_pyg.nn.baselines import LightGCNRecommender
from mllmrec_pyg.nn.mm_common import bpr_loss, project_rows
from mllmrec_pyg.nn.registry import MODELS, build_model
from mllmrec_pyg.nn.spmm import csr_transpose, fixed_matmul, spmm
from mllmrec_pyg.train import TrainConfig, Trainer, seed_everything
from mllmrec_pyg.transforms import RefineItemGraph


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Bitwise comparisons need a fixed thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    return RefineItemGraph()(make_scale_data((120, 90, 1500), dim=24, seed=3))


# -- reference implementations ---------------------------------------------------------------
def reference_topk_items(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k with ties broken by item id: the full tie pass over every row."""
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    kth = scores.topk(k, dim=1).values[:, -1:]
    above = scores > kth
    tied = scores == kth
    need = k - above.sum(dim=1, keepdim=True)
    chosen = above | (tied & (tied.cumsum(dim=1) <= need))
    idx = chosen.nonzero()[:, 1].view(-1, k)
    order = scores.gather(1, idx).argsort(dim=1, descending=True, stable=True)
    return idx.gather(1, order)


def reference_rank(evaluator: FullRankEvaluator, score_fn, users, k, split="valid"):
    out = []
    for start in range(0, users.numel(), evaluator.block_size):
        block = users[start : start + evaluator.block_size]
        scores = score_fn(block).float().clone()
        metrics.mask_scores_(scores, block, evaluator.masks_for(split))
        out.append(reference_topk_items(scores, k))
    return torch.cat(out)


def reference_lightgcn_embeddings(model: LightGCNRecommender):
    out = model.lightgcn.get_embedding(model.adj_t)  # PyG's propagation
    return out[: model.num_users], out[model.num_users :]


def reference_id_bpr_loss(model, users, pos, neg):
    """BPR-MF's and LightGCN's loss as written before the single-gather path: BPR on the
    pair scores plus the L2 term from separate embedding lookups."""
    s_pos, s_neg = model.pair_scores(users, pos, neg)
    if hasattr(model, "lightgcn"):
        emb, off = model.lightgcn.embedding, model.num_users
        rows = emb(users), emb(pos + off), emb(neg + off)
    else:
        rows = model.user_emb(users), model.item_emb(pos), model.item_emb(neg)
    reg = model.config.reg_weight * sum(r.pow(2).sum() for r in rows) / (2 * users.numel())
    return -F.logsigmoid(s_pos - s_neg).mean() + reg


def reference_freedom_pair_scores(model: FREEDOM, users, pos, neg):
    """FREEDOM's scores as written before the single gather: plain indexing of each."""
    user_out, item_out = model.propagate(model._current_adj())
    u = user_out[users]
    model._last_batch = (users, u)
    return (u * item_out[pos]).sum(-1), (u * item_out[neg]).sum(-1)


def reference_freedom_modality_loss(model: FREEDOM, u, pos, neg):
    """The modality BPR term as written before :func:`project_rows`: each side's rows
    gathered, then projected."""
    total = u.new_zeros(())
    for x, proj in zip(model.features, model.projections):
        total = total + bpr_loss(u, proj(x[pos]), proj(x[neg]))
    return total


def reference_vbpr_loss(model, users, pos, neg):
    """VBPR's loss as written before the single pass over both sides' items."""
    u = model.user_emb[users]

    def side(items):
        q = torch.cat([model.item_emb[items], model.projection(model.features[items])], dim=-1)
        return (u * q).sum(-1), q

    (s_pos, qp), (s_neg, qn) = side(pos), side(neg)
    loss = -F.logsigmoid(s_pos - s_neg).mean()
    norms = u.norm() + qp.norm() + qn.norm()
    return loss + model.config.reg_weight * norms / users.numel()


def reference_info_nce_rows(anchor, positive, temperature, candidates):
    """InfoNCE rows as written before 1/τ moved onto the queries: the product divided."""
    z = F.normalize(anchor, dim=1)
    p = F.normalize(positive, dim=1)
    c = p if candidates is None else F.normalize(candidates, dim=1)
    return torch.logsumexp(z @ c.t() / temperature, dim=1) - (z * p).sum(-1) / temperature


def reference_in_batch_softmax(queries, keys, rows, cols, temperature, normalize=False):
    """In-batch softmax as written before 1/τ moved onto the queries."""
    uniq_r, inv_r, cnt_r = torch.unique(rows, return_inverse=True, return_counts=True)
    uniq_c, inv_c, cnt_c = torch.unique(cols, return_inverse=True, return_counts=True)
    q, k = queries[uniq_r], keys[uniq_c]
    if normalize:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    lse = torch.logsumexp(q @ k.t() / temperature + cnt_c.to(q.dtype).log(), dim=1)
    pos = (q[inv_r] * k[inv_c]).sum() / temperature
    return ((lse * cnt_r).sum() - pos) / rows.numel()


def reference_freedom_propagate(model: FREEDOM, adj):
    ego = torch.cat([model.user_emb.weight, model.item_emb.weight])
    acc = h = ego
    with quiet_sparse():
        for _ in range(model.config.num_ui_layers):
            h = adj @ h
            acc = acc + h
        out = acc / (model.config.num_ui_layers + 1)
        g = model.item_emb.weight
        for _ in range(model.config.num_item_layers):
            g = model.item_adj @ g
    return out[: model.num_users], out[model.num_users :] + g


# -- top-k and the evaluator -----------------------------------------------------------------
def _score_matrices(gen: torch.Generator):
    for trial in range(120):
        rows, items = 17, int(torch.randint(20, 200, (1,), generator=gen))
        k = int(torch.randint(1, min(items, 60) + 1, (1,), generator=gen))
        kind = trial % 5
        if kind == 0:  # distinct floats
            x = torch.randn(rows, items, generator=gen)
        elif kind == 1:  # many ties (popularity counts)
            x = torch.randint(0, 4, (rows, items), generator=gen).float()
        elif kind == 2:  # most items masked: the k-th score is often -inf
            x = torch.randn(rows, items, generator=gen)
            x[torch.rand(rows, items, generator=gen) < 0.9] = float("-inf")
        elif kind == 3:  # signed zeros and infinities
            x = torch.randint(-1, 2, (rows, items), generator=gen).float()
            x[:, ::3] = -0.0
            x[:, 1::5] = float("-inf")
            x[:, 2::7] = float("inf")
        else:  # every item
            x = torch.randn(rows, items, generator=gen).round(decimals=1)
            k = items
        yield x, k


def test_unique_pairs_is_unique_over_columns():
    gen = torch.Generator().manual_seed(4)
    for users, items, n in ((5, 7, 60), (300, 4000, 5000), (1, 1, 3)):
        pairs = torch.stack(
            [
                torch.randint(0, users, (n,), generator=gen),
                torch.randint(0, items, (n,), generator=gen),
            ]
        )
        assert torch.equal(metrics.unique_pairs(pairs), torch.unique(pairs, dim=1))
    neg = torch.tensor([[0, 0, 1], [-1, -1, 2]])
    assert torch.equal(metrics.unique_pairs(neg), torch.unique(neg, dim=1))


def test_topk_items_matches_the_full_tie_pass():
    gen = torch.Generator().manual_seed(0)
    for x, k in _score_matrices(gen):
        assert torch.equal(topk_items(x, k), reference_topk_items(x, k)), (x, k)


def test_topk_items_still_rejects_nan():
    x = torch.randn(4, 30)
    x[2, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        topk_items(x, 5)
    y = torch.randn(3, 30)
    y[1, 0], y[1, 1] = float("inf"), float("-inf")  # row sum is NaN, no NaN score
    assert torch.equal(topk_items(y, 5), reference_topk_items(y, 5))


def test_evaluator_ranks_like_the_reference_and_leaves_kept_scores_alone(data):
    store = data["user", "interacts", "item"]
    num_users, num_items = data["user"].num_nodes, data["item"].num_nodes
    ev = FullRankEvaluator(
        store.edge_index,
        num_users,
        num_items,
        {"valid": store.val_edge_index, "test": store.test_edge_index},
        ks=(5, 10),
        block_size=32,
    )
    gen = torch.Generator().manual_seed(1)
    full = torch.randint(0, 5, (num_users, num_items), generator=gen).float()  # ties
    kept = full.clone()
    users = ev.users("valid")

    def fresh(block):
        return full[block] * 1.0

    def view(block):  # a view of a tensor the caller keeps
        return kept[block.min() : block.max() + 1][block - block.min()]

    def whole(block):  # the kept tensor itself when the block is every user
        return kept if block.numel() == num_users else kept[block]

    for fn in (fresh, view):
        assert torch.equal(ev.rank(fn, users, 10), reference_rank(ev, fn, users, 10))
    all_users = torch.arange(num_users)
    ev_all = FullRankEvaluator(
        store.edge_index, num_users, num_items, {"valid": store.val_edge_index}, ks=(5,)
    )
    ev_all.block_size = num_users
    assert torch.equal(
        ev_all.rank(whole, all_users, 5), reference_rank(ev_all, whole, all_users, 5)
    )
    assert torch.equal(kept, full)  # masking never wrote into the caller's tensor


# -- sparse products -------------------------------------------------------------------------
def test_fixed_matmul_forward_and_gradient():
    gen = torch.Generator().manual_seed(2)
    dense = torch.rand(30, 20, generator=gen) * (torch.rand(30, 20, generator=gen) < 0.2)
    adj = dense.to_sparse_csr()
    x = torch.randn(20, 5, generator=gen, requires_grad=True)
    out = fixed_matmul(adj, x, csr_transpose(adj))
    grad = torch.randn(30, 5, generator=gen)
    out.backward(grad)
    assert torch.allclose(out, dense @ x.detach(), atol=1e-6)
    assert torch.allclose(x.grad, dense.t() @ grad, atol=1e-6)
    sym = (dense[:20] + dense[:20].t()).to_sparse_csr()
    y = torch.randn(20, 5, generator=gen, requires_grad=True)
    fixed_matmul(sym, y).backward(grad[:20])
    assert torch.allclose(y.grad, sym.to_dense() @ grad[:20], atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("compact", [False, True])
def test_spmm_equals_the_dense_product(dtype, compact):
    gen = torch.Generator().manual_seed(5)
    dense = (torch.rand(40, 25, generator=gen) * (torch.rand(40, 25, generator=gen) < 0.15)).to(
        dtype
    )
    dense[3] = 0  # empty rows give zero rows
    dense[-1] = 0
    adj = to_csr(dense.to_sparse()) if compact else dense.to_sparse_csr()
    assert (adj.crow_indices().dtype == torch.int32) == compact
    x = torch.randn(25, 7, generator=gen, dtype=dtype)
    out = spmm(adj, x)
    assert out.dtype == dtype and out.shape == (40, 7)
    assert torch.allclose(out, dense @ x, atol=1e-6)
    assert torch.equal(out[3], torch.zeros(7, dtype=dtype))
    with quiet_sparse():  # the general path (COO) agrees
        assert torch.allclose(spmm(adj.to_sparse_coo(), x), out, atol=1e-6)
    assert torch.allclose(spmm(adj, x.t().contiguous().t()), out, atol=1e-6)  # strided x


def test_gather_triples_and_project_rows_match_plain_indexing():
    gen = torch.Generator().manual_seed(6)
    users = torch.randint(0, 7, (40,), generator=gen)
    pos, neg = torch.randint(0, 30, (2, 40), generator=gen)
    user_out = torch.randn(7, 5, generator=gen, requires_grad=True)
    item_out = torch.randn(30, 5, generator=gen, requires_grad=True)
    weights = torch.randn(3, 40, 5, generator=gen)

    def loss(u, p, n):
        return (u * weights[0]).sum() + (p * weights[1]).sum() + (n * weights[2]).sum()

    fast = gather_triples(user_out, item_out, users, pos, neg)
    for a, b in zip(fast, (user_out[users], item_out[pos], item_out[neg])):
        assert torch.equal(a, b)
    grads_fast = torch.autograd.grad(loss(*fast), (user_out, item_out))
    plain = (user_out[users], item_out[pos], item_out[neg])
    grads_plain = torch.autograd.grad(loss(*plain), (user_out, item_out))
    for a, b in zip(grads_fast, grads_plain):
        assert torch.allclose(a, b, atol=1e-6)
    # both ways of project_rows: few rows (project the selected ones), many (project all)
    proj = torch.nn.Linear(5, 4)
    x = torch.randn(30, 5, generator=gen, requires_grad=True)
    for items in (pos[:6], torch.cat([pos, neg])):
        out = project_rows(proj, x, items)
        ref = proj(x[items])
        assert torch.allclose(out, ref, atol=1e-6)
        w = torch.randn(out.shape, generator=gen)
        g_fast = torch.autograd.grad((out * w).sum(), (x, proj.weight, proj.bias))
        g_ref = torch.autograd.grad((ref * w).sum(), (x, proj.weight, proj.bias))
        for a, b in zip(g_fast, g_ref):
            assert torch.allclose(a, b, atol=1e-5)


def _grads(module, fn):
    module.zero_grad(set_to_none=True)
    outs = fn()
    loss = sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs)
    loss.backward()
    return [o.detach() for o in outs], {
        n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None
    }


def _assert_same(a, b, atol=1e-6):
    (outs_a, grads_a), (outs_b, grads_b) = a, b
    for x, y in zip(outs_a, outs_b):
        assert torch.allclose(x, y, atol=atol)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=atol), name


def test_lightgcn_propagation_matches_pyg(data):
    torch.manual_seed(0)
    model = build_model("lightgcn", data)
    torch.nn.init.normal_(model.lightgcn.embedding.weight)
    _assert_same(
        _grads(model, model.embeddings), _grads(model, lambda: reference_lightgcn_embeddings(model))
    )


def test_freedom_propagation_matches_plain_sparse_products(data):
    torch.manual_seed(0)
    model = build_model("freedom", data, item_graph=("item", "related", "item"))
    model.on_train_epoch_start(1)
    for adj in (model.full_adj, model._train_adj):
        _assert_same(
            _grads(model, lambda adj=adj: model.propagate(adj)),
            _grads(model, lambda adj=adj: reference_freedom_propagate(model, adj)),
        )


def test_mllmrec_variants_match_the_item_layer(data):
    torch.manual_seed(0)
    model = MLLMRec.from_data(data, MLLMRecConfig(trainable_items=True, ui_layers=2))
    ref_items = model.item_conv(model.item_input, model.item_adj_t)  # PyG message passing

    def reference():
        h_u = model.user_tower(model.user_inputs())
        h_i = model.item_tower(model.item_conv(model.item_input, model.item_adj_t))
        h = torch.cat([h_u, h_i])
        g = acc = F.normalize(h, dim=-1)
        with quiet_sparse():
            for _ in range(model.config.ui_layers):
                g = model.ui_adj_t @ g
                acc = acc + g
        h = h + acc
        return h[: model.num_users], h[model.num_users :]

    assert torch.allclose(model.item_inputs(), ref_items, atol=1e-6)
    _assert_same(_grads(model, model.representations), _grads(model, reference), atol=1e-5)


# -- whole runs ------------------------------------------------------------------------------
def _history(name, data, monkeypatch=None):
    seed_everything(0)
    model = build_model(name, data)
    if monkeypatch is not None:
        if name == "lightgcn":
            monkeypatch.setattr(model, "embeddings", lambda: reference_lightgcn_embeddings(model))
        if name in ("bpr", "lightgcn"):
            monkeypatch.setattr(
                model, "batch_loss", lambda *batch: reference_id_bpr_loss(model, *batch)
            )
        if name == "freedom":
            monkeypatch.setattr(
                model, "propagate", lambda adj: reference_freedom_propagate(model, adj)
            )
            monkeypatch.setattr(
                model, "pair_scores", lambda *b: reference_freedom_pair_scores(model, *b)
            )
            monkeypatch.setattr(
                model, "modality_loss", lambda *b: reference_freedom_modality_loss(model, *b)
            )
        if name == "vbpr":
            monkeypatch.setattr(model, "batch_loss", lambda *b: reference_vbpr_loss(model, *b))
        monkeypatch.setattr(mm_common, "_info_nce_rows", reference_info_nce_rows)
        monkeypatch.setattr(mm_common, "in_batch_softmax", reference_in_batch_softmax)
        for module in (slmrec_module, soil_module):  # imported by name there
            monkeypatch.setattr(module, "in_batch_softmax", reference_in_batch_softmax)
        monkeypatch.setattr(  # the sorted unique the user-item adjacency used before
            bipartite_module, "unique_pairs", lambda pairs: torch.unique(pairs, dim=1)
        )
        monkeypatch.setattr(metrics, "topk_items", reference_topk_items)
        monkeypatch.setattr(  # the multi-tensor Adam the trainer used before the fused one
            train_module, "adam", lambda params, lr: torch.optim.Adam(params, lr=lr, foreach=True)
        )
    cfg = TrainConfig(epochs=3, patience=10, batch_size=256, show_progress=False, ks=(10, 20))
    result = Trainer(model, data, cfg).fit()
    return result


@pytest.mark.parametrize("name", sorted(MODELS))
def test_same_seed_same_losses_and_metrics(name, data, monkeypatch):
    fast = _history(name, data)
    with monkeypatch.context() as m:
        slow = _history(name, data, m)
    assert fast.best_epoch == slow.best_epoch
    assert len(fast.history) == len(slow.history)
    for a, b in zip(fast.history, slow.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7)
        assert a["valid"] == pytest.approx(b["valid"], abs=1e-6)
    assert fast.test == pytest.approx(slow.test, abs=1e-6)
