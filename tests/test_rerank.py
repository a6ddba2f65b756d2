"""The post-hoc re-ranking every compared model can get: the grid point chosen on
validation against a dense reference, the model alone kept where nothing helps, no
held-out pair in the terms, and the run store / comparison carrying it through."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from conftest import synthetic_with_features

from mllmrec_pyg.config import DataConfig
from mllmrec_pyg.metrics import FullRankEvaluator
from mllmrec_pyg.rerank import GRID, RankingTerms, Reranking, choose_reranking, score_spread
from mllmrec_pyg.runs import PER_USER, RunSpec, RunStore
from mllmrec_pyg.train import TrainConfig

QUICK = TrainConfig(epochs=2, patience=2, show_progress=False)


def _dense_terms(train: torch.Tensor, num_users: int, num_items: int):
    """The prior and popularity written out densely, independently of the package."""
    r = torch.zeros(num_users, num_items, dtype=torch.float64)
    r[train[0], train[1]] = 1.0
    c = r.t() @ r
    c -= torch.diag(torch.diag(c))
    m = r @ c
    top = m.max(1, keepdim=True).values
    prior = torch.where(top > 0, m / top.clamp_min(1e-300), torch.zeros_like(m))
    deg = r.sum(0)
    pop = torch.log1p(deg) / torch.log1p(deg.max())
    return prior, pop


def _dense_recall(scores: torch.Tensor, train, held, k: int) -> float:
    """Mean Recall@k over users with held-out items, training items masked."""
    s = scores.clone()
    s[train[0], train[1]] = float("-inf")
    users = torch.unique(held[0])
    total = 0.0
    for u in users.tolist():
        items = set(held[1][held[0] == u].tolist())
        top = set(torch.topk(s[u], k).indices.tolist())
        total += len(items & top) / min(len(items), k)
    return total / users.numel()


@pytest.fixture(scope="module")
def toy():
    g = torch.Generator().manual_seed(3)
    num_users, num_items = 60, 40
    train = torch.unique(
        torch.stack(
            [
                torch.randint(0, num_users, (500,), generator=g),
                (torch.rand(500, generator=g) ** 2 * num_items).long(),
            ]
        ),
        dim=1,
    )
    seen = set(map(tuple, train.t().tolist()))
    held = [(u, i) for u in range(num_users) for i in range(num_items) if (u, i) not in seen]
    perm = torch.randperm(len(held), generator=g)[:200]
    held = torch.tensor([held[j] for j in perm.tolist()]).t()
    valid, test = held[:, :100], held[:, 100:]
    scores = torch.randn(num_users, num_items, generator=g)
    return num_users, num_items, train, valid, test, scores


def test_the_chosen_point_is_the_dense_references_best_on_validation(toy):
    num_users, num_items, train, valid, test, scores = toy
    ev = FullRankEvaluator(train, num_users, num_items, {"valid": valid, "test": test}, ks=(10,))
    terms = RankingTerms.of(train, num_users, num_items)
    choice, metrics = choose_reranking(lambda u: scores[u].clone(), ev, terms, "recall@10")

    prior, pop = _dense_terms(train, num_users, num_items)
    spread = float(scores[: min(num_users, 4096)].std(1).mean())
    assert choice.spread == pytest.approx(spread, rel=1e-6)
    ref = {}
    for b, c in itertools.product(GRID, GRID):
        s = scores.double() + spread * (b * prior + c * pop)
        ref[b, c] = _dense_recall(s, train, valid, 10)
    best = max(ref.values())
    assert metrics["recall@10"] == pytest.approx(best, abs=1e-6)
    assert ref[choice.prior, choice.popularity] == pytest.approx(best, abs=1e-9)
    # the first best point in the order the grid is walked (weights ascending)
    first = next(p for p in itertools.product(GRID, GRID) if ref[p] >= best - 1e-12)
    assert (choice.prior, choice.popularity) == first
    assert best > ref[0.0, 0.0]  # random scores: the popular, co-bought items help


def test_a_model_that_ranks_validation_perfectly_is_left_alone(toy):
    num_users, num_items, train, valid, test, _ = toy
    ev = FullRankEvaluator(train, num_users, num_items, {"valid": valid, "test": test}, ks=(10,))
    perfect = torch.zeros(num_users, num_items)
    perfect[valid[0], valid[1]] = 1.0
    choice, metrics = choose_reranking(
        lambda u: perfect[u].clone(), ev, RankingTerms.of(train, num_users, num_items), "recall@10"
    )
    assert (choice.prior, choice.popularity) == (0.0, 0.0)
    assert metrics["recall@10"] == pytest.approx(1.0)
    base = lambda u: perfect[u].clone()  # noqa: E731
    assert choice.apply(base, RankingTerms.of(train, num_users, num_items)) is base


def test_held_out_pairs_reach_neither_term_nor_the_choice(toy):
    num_users, num_items, train, valid, test, scores = toy
    terms = RankingTerms.of(train, num_users, num_items)
    # the terms are functions of the training pairs alone (their signature takes no more);
    # with other test pairs the choice and its validation metrics are the same
    outs = []
    for t in (test, test.flip(1)[:, :50]):
        ev = FullRankEvaluator(train, num_users, num_items, {"valid": valid, "test": t}, ks=(10,))
        outs.append(choose_reranking(lambda u: scores[u].clone(), ev, terms, "recall@10"))
    assert outs[0][0] == outs[1][0] and outs[0][1] == outs[1][1]
    prior, pop = _dense_terms(train, num_users, num_items)
    dense_prior = terms.prior.add_to(torch.zeros(num_users, num_items), torch.arange(num_users), 1)
    assert torch.allclose(dense_prior.double(), prior, atol=1e-6)
    assert torch.allclose(terms.popularity.double(), pop, atol=1e-6)


def test_score_spread_and_a_grid_without_zero_is_refused(toy):
    num_users, num_items, train, valid, test, scores = toy
    assert score_spread(lambda u: scores[u], num_users) == pytest.approx(
        float(scores.std(1).mean()), rel=1e-6
    )
    ev = FullRankEvaluator(train, num_users, num_items, {"valid": valid, "test": test}, ks=(10,))
    with pytest.raises(ValueError, match="must hold 0"):
        choose_reranking(lambda u: scores[u], ev, RankingTerms.of(train, 60, 40), grid=(1.0,))


@pytest.fixture(scope="module")
def data():
    """A small synthetic catalog with random item and user features (no encoder)."""
    return synthetic_with_features()


def test_a_reranked_run_keeps_the_model_alone_beside_it_and_its_own_key(tmp_path, data):
    store = RunStore(tmp_path / "runs", tmp_path / "work", QUICK, command="mllmrec test")
    plain = RunSpec("BPR", "bpr", {}, 0)
    reranked = RunSpec("BPR", "bpr", {}, 0, rerank=True)
    assert store.key(plain, data) != store.key(reranked, data)
    a, _ = store.run(plain, data)
    b, _ = store.run(reranked, data, per_user=True)
    # the same model (same seed, same training) underneath
    assert b["alone"]["valid"] == a["valid"] and b["alone"]["test"] == a["test"]
    assert b["valid"]["recall@20"] >= a["valid"]["recall@20"]  # (0, 0) is in the grid
    rr = Reranking(**b["rerank"])
    assert rr.prior in GRID and rr.popularity in GRID and rr.spread > 0
    # the record's test is the re-ranked model's, and the per-user metrics average to it
    pu = b[PER_USER]
    for m in ("recall@20", "ndcg@20"):
        assert sum(pu[m]) / len(pu[m]) == pytest.approx(b["test"][m], abs=1e-6)
    if (rr.prior, rr.popularity) != (0.0, 0.0):
        assert b["test"] != a["test"]
    # a per-user pass computed later (from the kept checkpoint) reads the same re-ranking
    path = store.path(reranked, data)
    kept, _ = store.run(reranked, data, keep_model=True)
    path.write_text(json.dumps({k: v for k, v in kept.items() if k != PER_USER}))
    again = store.with_per_user(reranked, data)
    assert again[PER_USER] == pu


def test_compare_with_rerank_reads_the_reranked_runs(tmp_path):
    from mllmrec_pyg.experiments import ExperimentSettings, run_compare

    cfg = DataConfig("synthetic", num_users=150, num_items=80)
    settings = ExperimentSettings(
        data=cfg, train=QUICK, seeds=(0,), out=str(tmp_path / "r"), cache=str(tmp_path / "c")
    )
    result = run_compare(settings, models=["pop", "bpr"], proposed="bpr", trials=1, rerank=True)
    assert result["rerank"] is True and "--rerank" in result["command"]
    store = Path(settings.out) / cfg.tag() / "runs"
    for run in result["runs"]:
        record = json.loads((store / f"{run['key'][:16]}.json").read_text())
        assert "alone" in record and record["test"] == run["test"]
        assert record["settings"]["rerank"]["grid"] == list(GRID)
    rows = {r["variant"]: r for r in result["rows"]}
    assert rows["bpr"]["test recall@20"] == pytest.approx(
        next(r for r in result["runs"] if r["variant"] == "bpr")["test"]["recall@20"]
    )
    from mllmrec_pyg.experiments.report import build_report

    text = build_report(Path(settings.out), tmp_path / "report.md")
    assert "**Re-ranked:** every run" in text
