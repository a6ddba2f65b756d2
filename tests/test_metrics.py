"""Full-ranking metrics against hand-worked cases and a loop-by-loop reference."""

from __future__ import annotations

import math

import pytest
import torch

from mllmrec_pyg.metrics import CSRIndex, FullRankEvaluator, ranking_metrics, topk_items


def reference_metrics(ranked: dict[int, list[int]], held: dict[int, set[int]], k: int):
    """The metric definitions, written out per user with plain Python."""
    rec = ndcg = prec = ap = 0.0
    users = [u for u, items in held.items() if items]
    for u in users:
        truth = held[u]
        top = ranked[u][:k]
        rel = [1 if i in truth else 0 for i in top]
        hits = sum(rel)
        rec += hits / len(truth)
        prec += hits / k
        dcg = sum(r / math.log2(pos + 2) for pos, r in enumerate(rel))
        idcg = sum(1 / math.log2(pos + 2) for pos in range(min(len(truth), k)))
        ndcg += dcg / idcg
        s = 0.0
        for pos in range(len(rel)):
            if rel[pos]:
                s += sum(rel[: pos + 1]) / (pos + 1)
        ap += s / min(len(truth), k)
    n = len(users)
    return {
        f"recall@{k}": rec / n,
        f"ndcg@{k}": ndcg / n,
        f"precision@{k}": prec / n,
        f"map@{k}": ap / n,
    }


def test_hand_worked_case():
    # user 0: held-out {2, 9}; ranked 1, 2, 3 -> one hit at rank 2.
    # user 1: no held-out item -> not averaged, whatever its row says.
    # user 2: held-out {4}, fewer than k; ranked 4 first -> perfect.
    top = torch.tensor([[1, 2, 3], [0, 1, 2], [4, 3, 2]])
    held = torch.tensor([[0, 0, 2], [2, 9, 4]])
    m = ranking_metrics(top, held, ks=(1, 3))
    ln3 = math.log2(3)
    assert m["recall@1"] == pytest.approx((0 + 1) / 2)
    assert m["precision@1"] == pytest.approx((0 + 1) / 2)
    assert m["recall@3"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["precision@3"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    # NDCG: user 0 DCG = 1/log2(3), IDCG over min(2, 3) = 2 ranks.
    assert m["ndcg@3"] == pytest.approx(((1 / ln3) / (1 + 1 / ln3) + 1) / 2, rel=1e-6)
    # MAP: user 0 = (1/min(2,3)) * P@2 = 0.5 * 0.5; user 2 = 1.
    assert m["map@3"] == pytest.approx((0.25 + 1) / 2)
    assert set(m) == {f"{n}@{k}" for n in ("recall", "ndcg", "precision", "map") for k in (1, 3)}


def test_more_held_out_than_k_caps_idcg_and_map():
    # 5 held-out items, k = 2, both top items are hits -> NDCG 1, MAP 1, recall 2/5.
    top = torch.tensor([[7, 8, 0, 1]])
    held = torch.tensor([[0] * 5, [7, 8, 9, 10, 11]])
    m = ranking_metrics(top, held, ks=(2,))
    assert m["ndcg@2"] == pytest.approx(1.0)
    assert m["map@2"] == pytest.approx(1.0)
    assert m["recall@2"] == pytest.approx(2 / 5)
    assert m["precision@2"] == pytest.approx(1.0)


def test_duplicate_pairs_count_once():
    top = torch.tensor([[3, 1]])
    once = ranking_metrics(top, torch.tensor([[0, 0], [3, 5]]), ks=(2,))
    twice = ranking_metrics(top, torch.tensor([[0, 0, 0], [3, 5, 3]]), ks=(2,))
    assert once == twice
    assert once["recall@2"] == pytest.approx(0.5)


def test_matches_loop_reference_on_random_data():
    g = torch.Generator().manual_seed(0)
    num_users, num_items, k_max = 40, 30, 20
    top = torch.stack([torch.randperm(num_items, generator=g)[:k_max] for _ in range(num_users)])
    held = {}
    pairs = []
    for u in range(num_users):
        if u % 7 == 3:
            continue  # users without held-out items
        n = int(torch.randint(1, 12, (1,), generator=g))
        items = torch.randperm(num_items, generator=g)[:n].tolist()
        held[u] = set(items)
        pairs += [(u, i) for i in items]
    pairs = torch.tensor(pairs).t()
    ranked = {u: top[u].tolist() for u in range(num_users)}
    got = ranking_metrics(top, pairs, ks=(5, 10, 20))
    for k in (5, 10, 20):
        for name, value in reference_metrics(ranked, held, k).items():
            assert got[name] == pytest.approx(value, abs=1e-6), name


def test_bad_inputs_raise():
    top = torch.tensor([[0, 1]])
    with pytest.raises(ValueError, match="empty"):
        ranking_metrics(top, torch.empty(2, 0, dtype=torch.long), ks=(1,))
    with pytest.raises(ValueError, match="columns"):
        ranking_metrics(top, torch.tensor([[0], [1]]), ks=(5,))
    with pytest.raises(ValueError, match="outside"):
        ranking_metrics(top, torch.tensor([[3], [1]]), ks=(1,))


def test_topk_ties_go_to_lower_item_id():
    s = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.0], [float("-inf"), 0.0, 0.0, 5.0, 5.0]])
    assert topk_items(s, 2).tolist() == [[1, 2], [3, 4]]
    assert topk_items(s, 4).tolist() == [[1, 2, 3, 0], [3, 4, 1, 2]]
    # identical to a stable descending sort of the whole row
    g = torch.Generator().manual_seed(1)
    r = torch.randint(0, 4, (50, 40), generator=g).float()
    expect = torch.sort(r, dim=1, descending=True, stable=True).indices[:, :10]
    assert torch.equal(topk_items(r, 10), expect)


def test_topk_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        topk_items(torch.tensor([[0.0, float("nan")]]), 1)


def test_csr_gather():
    idx = CSRIndex(torch.tensor([[2, 0, 2, 1], [5, 1, 3, 4]]), num_users=4)
    row, col = idx.gather(torch.tensor([2, 3, 0]))
    assert sorted(zip(row.tolist(), col.tolist())) == [(0, 3), (0, 5), (2, 1)]


def _evaluator(mask_valid: bool = False):
    train = torch.tensor([[0, 0, 1], [0, 1, 2]])
    valid = torch.tensor([[0, 1], [2, 3]])
    test = torch.tensor([[0, 1], [3, 0]])
    return FullRankEvaluator(
        train,
        3,
        5,
        {"valid": valid, "test": test},
        ks=(1, 2),
        block_size=2,
        mask_valid_at_test=mask_valid,
    )


def test_evaluator_masks_training_items_and_optionally_valid():
    ev = _evaluator()
    # everyone's scores favour item 0, then 1, 2, 3, 4
    score = lambda users: torch.tensor([5.0, 4, 3, 2, 1]).expand(users.numel(), -1)  # noqa: E731
    top = ev.rank(score, torch.tensor([0, 1, 2]), 3, split="valid")
    assert top[0].tolist() == [2, 3, 4]  # 0, 1 are user 0's training items
    assert top[1].tolist() == [0, 1, 3]  # 2 is user 1's training item
    assert top[2].tolist() == [0, 1, 2]  # user 2 has no training items
    # valid items are not masked at test by default, masked with the option
    assert ev.rank(score, torch.tensor([0]), 2, split="test")[0].tolist() == [2, 3]
    ev2 = _evaluator(mask_valid=True)
    assert ev2.rank(score, torch.tensor([0]), 2, split="test")[0].tolist() == [3, 4]
    # valid: user 0 holds 2 (rank 1), user 1 holds 3 (rank 3 -> miss at 2)
    m = ev.evaluate(score, "valid")
    assert m["recall@1"] == pytest.approx(0.5)
    assert m["recall@2"] == pytest.approx(0.5)
    # test with valid masked: user 0 holds 3 -> now rank 1; user 1 holds 0 -> rank 1
    assert ev2.evaluate(score, "test")["recall@1"] == pytest.approx(1.0)


def test_evaluator_matches_dense_reference():
    g = torch.Generator().manual_seed(3)
    nu, ni = 25, 18
    train = torch.stack(
        [torch.randint(0, nu, (80,), generator=g), torch.randint(0, ni, (80,), generator=g)]
    )
    test = torch.stack(
        [torch.randint(0, nu, (30,), generator=g), torch.randint(0, ni, (30,), generator=g)]
    )
    keep = ~((train.unsqueeze(2) == test.unsqueeze(1)).all(0).any(0))  # held-out not in train
    test = test[:, keep]
    scores = torch.randn(nu, ni, generator=g)
    ev = FullRankEvaluator(train, nu, ni, {"valid": test, "test": test}, ks=(5, 10), block_size=4)
    got = ev.evaluate(lambda users: scores[users], "test")
    dense = scores.clone()
    dense[train[0], train[1]] = float("-inf")
    order = torch.argsort(dense, dim=1, descending=True, stable=True)
    ranked = {u: order[u].tolist() for u in range(nu)}
    held: dict[int, set[int]] = {}
    for u, i in test.t().tolist():
        held.setdefault(u, set()).add(i)
    for k in (5, 10):
        for name, value in reference_metrics(ranked, held, k).items():
            assert got[name] == pytest.approx(value, abs=1e-6), name


def test_evaluator_empty_split_raises():
    train = torch.tensor([[0], [0]])
    ev = FullRankEvaluator(train, 2, 3, {"valid": torch.empty(2, 0, dtype=torch.long)}, ks=(1,))
    with pytest.raises(ValueError, match="'valid' split is empty"):
        ev.evaluate(lambda u: torch.zeros(u.numel(), 3), "valid")
    with pytest.raises(ValueError, match="no held-out pairs for split 'test'"):
        ev.evaluate(lambda u: torch.zeros(u.numel(), 3), "test")
