"""Negative sampler, early stopping, determinism, checkpoints and resuming."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mllmrec_pyg.data.schema import INTERACTS
from mllmrec_pyg.data.split import per_user_split, to_heterodata
from mllmrec_pyg.nn import BPRMF, MLLMRec
from mllmrec_pyg.train import (
    TrainConfig,
    Trainer,
    UniformNegativeSampler,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
    seed_everything,
)
from mllmrec_pyg.transforms import RefineItemGraph

QUIET = dict(show_progress=False)


def random_data(num_users=40, num_items=60, per_user=10, seed=0, dim=16):
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(num_users), per_user)
    items = np.concatenate(
        [rng.choice(num_items, per_user, replace=False) for _ in range(num_users)]
    )
    data = to_heterodata(users, items, per_user_split(users, seed), num_users, num_items)
    g = torch.Generator().manual_seed(seed)
    data["item"].x = torch.nn.functional.normalize(torch.randn(num_items, dim, generator=g), dim=1)
    data["user"].x = torch.nn.functional.normalize(torch.randn(num_users, dim, generator=g), dim=1)
    return RefineItemGraph(k_s=4, alpha=None, k_c=4)(data)


# -- sampler --------------------------------------------------------------------------------
def test_sampler_never_returns_a_training_positive():
    rng = np.random.default_rng(0)
    num_users, num_items = 60, 25
    pairs = []
    for u in range(num_users):
        n = num_items - 1 if u == 0 else int(rng.integers(1, num_items))
        pairs += [(u, int(i)) for i in rng.choice(num_items, n, replace=False)]
    pairs.append(pairs[0])  # a duplicate pair does not confuse it
    edge_index = torch.tensor(pairs).t()
    sampler = UniformNegativeSampler(edge_index, num_users, num_items)
    users = torch.arange(num_users).repeat(500)
    neg = sampler(users, torch.Generator().manual_seed(0))
    seen = set(map(tuple, edge_index.t().tolist()))
    assert neg.shape == users.shape
    assert ((neg >= 0) & (neg < num_items)).all()
    assert not any((u, i) in seen for u, i in zip(users.tolist(), neg.tolist()))
    missing = (set(range(num_items)) - {i for u, i in seen if u == 0}).pop()
    assert set(neg[users == 0].tolist()) == {missing}


def test_sampler_is_uniform_over_the_complement():
    edge_index = torch.tensor([[0, 0, 0], [1, 3, 5]])
    sampler = UniformNegativeSampler(edge_index, 1, 8)
    neg = sampler(torch.zeros(100_000, dtype=torch.long), torch.Generator().manual_seed(0))
    freq = torch.bincount(neg, minlength=8).float() / neg.numel()
    assert freq[[1, 3, 5]].sum() == 0
    assert torch.allclose(freq[[0, 2, 4, 6, 7]], torch.full((5,), 0.2), atol=0.006)


def test_sampler_rejects_user_with_every_item():
    with pytest.raises(ValueError, match=r"user\(s\) \[1\] interacted with all 3 items"):
        UniformNegativeSampler(torch.tensor([[0, 1, 1, 1], [0, 0, 1, 2]]), 2, 3)


# -- early stopping -----------------------------------------------------------------------------
class Scripted(nn.Module):
    """Ranks the held-out items first only while its weight says "epoch 3".

    One batch per epoch and a constant-sign gradient make Adam move ``w`` by
    exactly ``lr`` per step, so ``round(w / lr)`` is the number of epochs run.
    """

    def __init__(self, data, lr):
        super().__init__()
        self.num_users = data["user"].num_nodes
        self.num_items = data["item"].num_nodes
        self.w = nn.Parameter(torch.zeros(()))
        self.lr = lr
        store = data[INTERACTS]
        held = torch.cat([store.val_edge_index, store.test_edge_index], dim=1)
        self.good = torch.zeros(self.num_users, self.num_items)
        self.good[held[0], held[1]] = 1.0

    def pair_scores(self, users, pos, neg):
        return self.w.expand(users.numel()), -self.w.expand(users.numel())

    def scorer(self):
        epoch = round(self.w.item() / self.lr)
        scores = self.good if epoch == 3 else -self.good
        return lambda users: scores[users]


def test_early_stopping_stops_and_restores_the_best_epoch():
    data = random_data()
    cfg = TrainConfig(lr=1e-3, batch_size=10_000, patience=4, epochs=50, **QUIET)
    model = Scripted(data, cfg.lr)
    result = Trainer(model, data, cfg).fit()
    assert result.best_epoch == 3
    assert result.epochs == 3 + cfg.patience
    assert [h["epoch"] for h in result.history] == list(range(1, 8))
    assert round(model.w.item() / cfg.lr) == 3  # weights of the best epoch restored
    assert result.valid["recall@20"] == pytest.approx(1.0)
    assert result.test["recall@20"] == pytest.approx(1.0)  # evaluated with those weights


def test_epoch_cap_without_patience_running_out():
    data = random_data()
    cfg = TrainConfig(lr=1e-3, batch_size=10_000, patience=100, epochs=5, **QUIET)
    result = Trainer(Scripted(data, cfg.lr), data, cfg).fit()
    assert result.epochs == 5 and result.best_epoch == 3


# -- determinism, checkpoints, resuming ---------------------------------------------------------
def _fit_bpr(data, seed, epochs=3, **kw):
    seed_everything(seed)
    model = BPRMF.from_data(data)
    cfg = TrainConfig(epochs=epochs, batch_size=64, seed=seed, **QUIET, **kw)
    return model, Trainer(model, data, cfg).fit()


def test_same_seed_same_metrics():
    data = random_data()
    _, a = _fit_bpr(data, 0)
    _, b = _fit_bpr(data, 0)
    _, c = _fit_bpr(data, 1)
    assert a.history == [dict(h, seconds=a.history[i]["seconds"]) for i, h in enumerate(b.history)]
    assert a.valid == b.valid and a.test == b.test
    assert [h["loss"] for h in a.history] != [h["loss"] for h in c.history]


def test_resume_continues_exactly(tmp_path):
    data = random_data()
    _, straight = _fit_bpr(data, 0, epochs=4, patience=100)
    ck = tmp_path / "run"
    _, first = _fit_bpr(data, 0, epochs=2, patience=100, checkpoint_dir=str(ck))
    assert first.epochs == 2 and (ck / "last.pt").is_file() and (ck / "best.pt").is_file()
    _, resumed = _fit_bpr(data, 0, epochs=4, patience=100, checkpoint_dir=str(ck))
    assert resumed.epochs == 4
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    assert resumed.test == straight.test
    # a different seed must not silently continue someone else's run
    with pytest.raises(ValueError, match="different model, data or training settings"):
        _fit_bpr(data, 1, epochs=4, checkpoint_dir=str(ck))


def test_checkpoint_round_trip(tmp_path):
    data = random_data()
    seed_everything(0)
    model = MLLMRec.from_data(data)
    Trainer(model, data, TrainConfig(epochs=2, batch_size=64, **QUIET)).fit()
    path = save_checkpoint(model, tmp_path / "m.pt", data, note="x")
    raw = torch.load(path, weights_only=True)  # plain tensors and strings only
    assert set(raw) == {"format", "meta", "state_dict", "sha256"}
    meta = read_checkpoint_meta(path)
    assert meta["model"] == "mllmrec" and meta["config"]["hidden_dim"] == 256
    again = load_checkpoint(path, data)
    users = torch.arange(10)
    assert torch.equal(model.recommend(users, k=5), again.recommend(users, k=5))
    a = Trainer(model, data, TrainConfig(**QUIET)).evaluate("test")
    b = Trainer(again, data, TrainConfig(**QUIET)).evaluate("test")
    assert a == b
    other = random_data(seed=1)
    with pytest.raises(ValueError, match="saved for different data"):
        load_checkpoint(path, other)


def test_recommend_skips_training_items():
    data = random_data()
    seed_everything(0)
    model = BPRMF.from_data(data)
    rec = model.recommend(torch.arange(40), k=15)
    train = data[INTERACTS].edge_index
    seen = set(map(tuple, train.t().tolist()))
    assert not any((u, i) in seen for u in range(40) for i in rec[u].tolist())
    assert all(len(set(r)) == 15 for r in rec.tolist())
    with pytest.raises(ValueError, match="outside"):
        model.recommend([40])


def test_trainer_rejects_empty_test_split():
    data = random_data()
    data[INTERACTS].test_edge_index = torch.empty(2, 0, dtype=torch.long)
    with pytest.raises(ValueError, match="'test' split is empty"):
        Trainer(BPRMF.from_data(data), data, TrainConfig(**QUIET))


def test_trainer_rejects_model_for_other_sizes():
    data, other = random_data(), random_data(num_users=41)
    with pytest.raises(ValueError, match="model is for 41 users"):
        Trainer(BPRMF.from_data(other), data, TrainConfig(**QUIET))


def test_monitor_must_be_evaluated():
    with pytest.raises(ValueError, match="monitor"):
        TrainConfig(monitor="recall@30")
