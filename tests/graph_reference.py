"""Dense references written straight from the equations, for the tests."""

from __future__ import annotations

import torch
from torch import Tensor


def dense_cosine(x: Tensor) -> tuple[Tensor, Tensor]:
    """Cosine matrix (float64) and the mask of zero-norm rows."""
    x = x.double()
    norms = x.norm(dim=1)
    zero = norms < 1e-12
    xn = x / norms.clamp_min(1e-12).unsqueeze(1)
    return xn @ xn.t(), zero


def dense_jaccard(edge_index: Tensor, num_users: int, num_items: int) -> Tensor:
    r = torch.zeros(num_users, num_items, dtype=torch.float64)
    r[edge_index[0], edge_index[1]] = 1.0
    inter = r.t() @ r
    deg = r.sum(0)
    union = deg.unsqueeze(0) + deg.unsqueeze(1) - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter))


def neighbour_lists(edge_index: Tensor, edge_weight: Tensor, n: int) -> list[dict[int, float]]:
    """Per owner (``edge_index[1]``), the neighbours with their weights."""
    out: list[dict[int, float]] = [{} for _ in range(n)]
    for (src, dst), w in zip(edge_index.t().tolist(), edge_weight.tolist()):
        assert src not in out[dst], f"duplicate edge {src}->{dst}"
        out[dst][src] = w
    return out


def assert_topk_rows(
    got: list[dict[int, float]],
    score: Tensor,
    candidates: Tensor,
    k: int,
    expected_weight: Tensor | None,
    tol: float = 1e-6,
) -> None:
    """Each owner's neighbour set must be a valid top-``k`` of its eligible
    candidates; ties at the k-th value may be resolved either way."""
    n = score.size(0)
    for a in range(n):
        cand = candidates[a].nonzero().flatten()
        vals = score[a, cand]
        m = min(k, cand.numel())
        nbrs = got[a]
        assert len(nbrs) == m, f"owner {a}: {len(nbrs)} neighbours, expected {m}"
        if m == 0:
            continue
        kth = vals.sort(descending=True).values[m - 1]
        must = set(cand[vals > kth + tol].tolist())
        may = set(cand[vals >= kth - tol].tolist())
        assert must <= set(nbrs), f"owner {a}: missing {sorted(must - set(nbrs))}"
        assert set(nbrs) <= may, f"owner {a}: unexpected {sorted(set(nbrs) - may)}"
        for b, w in nbrs.items():
            want = 1.0 if expected_weight is None else float(expected_weight[a, b])
            assert abs(w - want) < 1e-5, f"edge {b}->{a}: weight {w}, expected {want}"


def dense_item_lightgcn(
    x: Tensor, edge_index: Tensor, edge_weight: Tensor | None, num_layers: int
) -> Tensor:
    n = x.size(0)
    s = torch.zeros(n, n, dtype=x.dtype)
    w = torch.ones(edge_index.size(1), dtype=x.dtype) if edge_weight is None else edge_weight
    s = s.index_put((edge_index[1], edge_index[0]), w, accumulate=True)  # S[owner, nbr]
    d = s.sum(1)
    dis = torch.where(d > 0, d.clamp_min(1e-30).pow(-0.5), torch.zeros_like(d))
    a_hat = dis.unsqueeze(1) * s * dis.unsqueeze(0)
    out, h = x, x
    for _ in range(num_layers):
        h = a_hat @ h
        out = out + h
    return out
