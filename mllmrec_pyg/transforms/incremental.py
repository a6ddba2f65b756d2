r"""Incremental refinement: update a refined graph when items and interactions arrive,
touching only the top-:math:`K` lists that change; the result equals a full
rebuild on the union (same edges, same weights, the same tie rule).

New items take the ids after the old ones (``num_old`` … ``N - 1``).

* Semantic graph (exact search): the new items' rows are computed in full
  (in the rebuild's own row blocks); an old item's list can only change by a
  new item entering it, so its new list is the top-:math:`K` of its old list
  and the new items, by (similarity, lower id), thresholded. Only the old
  items with a new item above the threshold are touched; the products cost
  :math:`O(N_\text{new} N d)` instead of :math:`O(N^2 d)`. The IVF backends
  have no incremental form that equals their rebuild (the rebuild re-trains
  the k-means cells), so only the exact graph is updated.
* Co-occurrence graph: an item with new interactions (a *touched* item; every
  item with pairs past ``num_old``) gets its row recounted in full, from an
  index of just the touched items' pairs; an untouched item's Jaccard values
  change only towards touched items, so its list is merged from its old list
  (exact values recovered from the stored float32 weights and the unchanged
  degrees) and its new values towards touched items. The rest of a full row
  lies below the next float32 above the list's lowest weight; when fewer than
  :math:`K` candidates are known to be above it, the row is recounted in full.
  A recounted row keeps only its values at or above a lower bound on its new
  :math:`K`-th value (from its old list, whose counts can only have grown, or
  from :math:`K` values already known) for the top-:math:`K` selection.
  Rows nothing reached keep their edges, spliced into the result by per-row
  counts (no sort of the whole graph).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mllmrec_pyg.transforms._ann import topk_by_value_then_id
from mllmrec_pyg.transforms.jaccard import (
    DEFAULT_MAX_PAIRS,
    _block_topk,
    _Interactions,
    _run_lengths,
    _sort_int64,
)
from mllmrec_pyg.transforms.threshold_knn import (
    _check_k,
    _default_block,
    exact_block,
    similarity_rows,
    threshold_knn_graph,
    unit_matrix,
)

__all__ = ["update_threshold_knn", "update_jaccard"]


def _check_graph(edge_index: Tensor, num_old: int, what: str) -> Tensor:
    if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"{what} must be a [2, E] LongTensor")
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_old):
        raise ValueError(f"{what} has item ids outside the {num_old} old items")
    return edge_index.cpu()


def _lists(owner: Tensor, nbr: Tensor, rows: Tensor, width: int) -> Tensor:
    """Dense ``[len(rows), width]`` neighbour lists (``-1`` padded) of owners ``rows``
    from edges sorted by owner."""
    lo = torch.searchsorted(owner, rows)
    hi = torch.searchsorted(owner, rows, right=True)
    cols = torch.arange(width)
    pos = lo.unsqueeze(1) + cols
    ok = pos < hi.unsqueeze(1)
    return torch.where(ok, nbr[pos.clamp(max=max(nbr.numel() - 1, 0))], -1)


@torch.no_grad()
def update_threshold_knn(
    x: Tensor | np.ndarray,
    edge_index: Tensor,
    num_old: int,
    k: int = 10,
    threshold: float | None = 0.7,
    loop: bool = True,
    block_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """The exact semantic graph of all rows of ``x`` from ``edge_index``, the graph
    :func:`~mllmrec_pyg.transforms.threshold_knn.threshold_knn_graph` built on its
    first ``num_old`` rows (same ``k``, ``threshold``, ``loop``, ``block_size``).
    Equals ``threshold_knn_graph(x, ...)``."""
    _check_k(k)
    n = int(x.shape[0])
    if not 0 <= num_old <= n:
        raise ValueError(f"num_old must be in [0, {n}] (rows of x), got {num_old}")
    old = _check_graph(edge_index, num_old, "edge_index (the old semantic graph)")
    k_eff = min(k, n if loop else n - 1)
    k_old = min(k, num_old if loop else num_old - 1)
    if num_old == 0 or k_eff != k_old or k_eff <= 0:  # lists of another length: rebuild
        return threshold_knn_graph(x, k, threshold, loop, block_size)
    xn, zero = unit_matrix(x)
    any_zero = bool(zero.any())
    block = block_size or _default_block(n)
    first = (num_old // block) * block
    srcs, dsts = [], []
    # rows in the rebuild's blocks that hold new items: computed as the rebuild does
    for s in range(first, n, block):
        src, dst = exact_block(xn, zero, any_zero, s, min(s + block, n), k_eff, loop, threshold)
        srcs.append(src)
        dsts.append(dst)
    nbr_old, owner_old = old[0], old[1]
    order = torch.argsort(owner_old * num_old + nbr_old)
    nbr_old, owner_old = nbr_old[order], owner_old[order]
    keep_old = owner_old < first
    untouched = torch.ones(first, dtype=torch.bool)
    n_new = n - num_old
    zero_new = zero[num_old:]
    step = max(8, min(first, 2**24 // max(1, n_new))) if first else 1
    for s in range(0, first, step):
        e = min(s + step, first)
        a = torch.arange(s, e)
        # similarities with the new items, as the rebuild's rows hold them
        sim = similarity_rows(xn, s, e, slice(num_old, n))
        if any_zero:
            sim[:, zero_new] = float("-inf")
        cv, cj = topk_by_value_then_id(sim, min(k_eff, n_new))
        ok = torch.isfinite(cv)
        if threshold is not None:
            ok &= cv >= threshold
        hit = ok.any(1) & ~zero[s:e]
        rows = hit.nonzero().flatten()
        if rows.numel() == 0:
            continue
        for c in range(0, rows.numel(), 256):
            r = rows[c : c + 256]
            owners = a[r]
            lists = _lists(owner_old, nbr_old, owners, k_eff)
            valid = lists >= 0
            cols = torch.unique(lists[valid])
            pad = max(0, 8 - owners.numel())
            rows_x = torch.cat([xn[owners], xn[owners[:1]].expand(pad, -1)]) if pad else xn[owners]
            sl = (rows_x @ xn[cols].t())[: owners.numel()] if cols.numel() else None
            lv = torch.full(lists.shape, float("-inf"))
            if sl is not None:
                pos = torch.searchsorted(cols, lists.clamp_min(0))
                lv = torch.where(valid, sl.gather(1, pos.clamp(max=cols.numel() - 1)), lv)
            if loop:
                lv = torch.where(lists == owners.unsqueeze(1), float("inf"), lv)
            nv = torch.where(ok[r], cv[r], float("-inf"))
            ni = cj[r] + num_old
            vals = torch.cat([lv, nv], 1)
            ids = torch.cat([torch.where(valid, lists, n), ni], 1)
            v, p = topk_by_value_then_id(vals, k_eff, ids)
            i = ids.gather(1, p)
            if loop:
                v = torch.where(torch.isposinf(v), torch.ones_like(v), v)
            keep = torch.isfinite(v) & (i < n)
            if threshold is not None:
                keep &= v >= threshold
            srcs.append(i[keep])
            dsts.append(owners.unsqueeze(1).expand_as(i)[keep])
            untouched[owners] = False
    keep_old &= untouched[owner_old.clamp(max=max(first - 1, 0))] if first else keep_old
    srcs.append(nbr_old[keep_old])
    dsts.append(owner_old[keep_old])
    src, dst = torch.cat(srcs), torch.cat(dsts)
    order = torch.argsort(dst * n + src)
    edge_index = torch.stack([src[order], dst[order]])
    return edge_index, torch.ones(edge_index.size(1))


def _rows(data: _Interactions, owners: Tensor, max_pairs: int):
    """All ``(owner, neighbour, count)`` co-occurrences of the sorted ``owners``."""
    cum = data.owner_cum
    cost = cum[owners + 1] - cum[owners]
    acc = None
    i = 0
    while i < owners.numel():
        if int(cost[i]) > max_pairs:  # one heavy owner, counted in pieces
            if acc is None:
                acc = torch.zeros(data.num_items, dtype=torch.int32)
            nbr, count = data.heavy_owner(int(owners[i]), max_pairs, acc)
            yield torch.full_like(nbr, int(owners[i])), nbr, count
            i += 1
            continue
        run = torch.cumsum(cost[i:], 0)
        j = i + max(1, int(torch.searchsorted(run, max_pairs, right=True)))
        j = min(j, owners.numel())
        while j > i + 1 and int(cost[j - 1]) > max_pairs:
            j -= 1
        o = owners[i:j]
        starts, lens = data.owner_ptr[o], data.owner_ptr[o + 1] - data.owner_ptr[o]
        tot = int(lens.sum())
        if tot:
            offs = torch.repeat_interleave(starts - (lens.cumsum(0) - lens), lens, output_size=tot)
            pidx = offs + torch.arange(tot)
            users, costs = data.user[pidx], data.cost[pidx]
            total = int(costs.sum())
            key = torch.repeat_interleave(
                data.owner[pidx] * data.num_items, costs, output_size=total
            )
            shift = data.user_ptr[users] - (costs.cumsum(0) - costs)
            pos = torch.repeat_interleave(shift, costs, output_size=total) + torch.arange(total)
            key += data.items_by_user[pos]
            key, count = _run_lengths(_sort_int64(key))
            yield key // data.num_items, key % data.num_items, count
        i = j


def _top_values(data: _Interactions, owners: Tensor, max_pairs: int, k: int, floor: Tensor):
    """The rows of the sorted ``owners`` counted in full, in pieces of at most
    ``max_pairs`` triples: per piece, the top-``k`` ``(owner, neighbour, value)`` of
    its owners and every value ``(owner, neighbour, value)`` (float64, self-pairs
    included, sorted by owner then neighbour). ``floor[owner]`` is a lower bound on the
    owner's ``k``-th value: the values below it are left out of the selection."""
    deg, n = data.deg_item, data.num_items
    for o, nb, c in _rows(data, owners, max_pairs):
        c = c.to(torch.float64)
        v = c / (deg[o] + deg[nb] - c)
        sel = v >= floor[o]
        sel &= o != nb
        yield _topk_rows(o[sel], nb[sel], v[sel], k, n, presorted=True), (o, nb, v)


def _list_floor(
    owner: Tensor,
    nbr: Tensor,
    weight: Tensor,
    rows: Tensor,
    full: Tensor,
    deg: Tensor,
    gained: Tensor,
) -> Tensor:
    """Per item, a lower bound on the ``k``-th value of its new row, for the items
    flagged in ``rows`` whose old list was full (0 for the others): an old entry's
    co-occurrence count, recovered from below its float32 weight with the old
    degrees at their lowest (``deg - gained``, ``gained`` counting the new pairs),
    can only have grown, and its new value rises with the count."""
    e = rows[owner] & full[owner]
    o, j, w = owner[e], nbr[e], weight[e]
    v = torch.nextafter(w, torch.tensor(0.0)).to(torch.float64)  # below the exact old value
    count = torch.ceil(v * (deg[o] - gained[o] + deg[j] - gained[j]) / (1 + v) * (1 - 1e-9))
    count = count.clamp_min(0)
    low = count / (deg[o] + deg[j] - count)
    floor = torch.zeros(deg.numel(), dtype=torch.float64)
    floor.scatter_reduce_(0, o, low, "amin", include_self=False)
    return floor * (1 - 1e-9)


def _cat3(parts):
    if not parts:
        e = torch.empty(0, dtype=torch.long)
        return e, e, torch.empty(0, dtype=torch.float64)
    return tuple(torch.cat(t) for t in zip(*parts))


def _topk_rows(o: Tensor, nb: Tensor, v: Tensor, k: int, num_items: int, presorted=False):
    """Per owner the top-``k`` by (value desc, neighbour asc) of distinct (o, nb) entries
    (``presorted``: already sorted by (o, nb))."""
    if o.numel() == 0:
        return o, nb, v
    if not presorted:
        order = torch.from_numpy(np.argsort((o * num_items + nb).numpy()))
        o, nb, v = o[order], nb[order], v[order]
    # owner ranges narrow enough for the one-sort selection of _block_topk
    span = 1 << max(1, 63 - 30 - max(1, (num_items - 1).bit_length()) - 1)
    cuts = torch.searchsorted(o, torch.arange(0, num_items + span, span)).tolist()
    parts = [
        _block_topk(o[a:b], nb[a:b], v[a:b], k, num_items)
        for a, b in zip(cuts[:-1], cuts[1:])
        if b > a
    ]
    return _cat3(parts)


def _splice(
    owner: Tensor, nbr: Tensor, weight: Tensor, redo: Tensor, rows, num_items: int
) -> tuple[Tensor, Tensor]:
    """The old edges (sorted by owner then neighbour) of the owners not flagged in
    ``redo`` and the new ``rows`` ``(owner, neighbour, value)`` of the flagged ones, in
    one graph sorted by owner then neighbour: each owner's edges come from one side, so
    they are placed by per-owner counts instead of a sort of the whole graph."""
    o, nb, v = _cat3(rows)
    order = torch.from_numpy(np.argsort((o * num_items + nb).numpy()))
    o, nb, w = o[order], nb[order], v[order].to(torch.float32)
    keep = ~redo[owner]
    ko, kn, kw = owner[keep], nbr[keep], weight[keep]
    c_old = torch.bincount(ko, minlength=num_items)
    c_new = torch.bincount(o, minlength=num_items)
    ptr = torch.zeros(num_items + 1, dtype=torch.long)
    ptr[1:] = (c_old + c_new).cumsum(0)
    total = int(ptr[-1])
    src = torch.empty(total, dtype=torch.long)
    dst = torch.empty(total, dtype=torch.long)
    out_w = torch.empty(total, dtype=torch.float32)
    for r, n, x, count in ((ko, kn, kw, c_old), (o, nb, w, c_new)):
        start = torch.zeros(num_items + 1, dtype=torch.long)
        start[1:] = count.cumsum(0)
        pos = ptr[r] + torch.arange(r.numel()) - start[r]
        src[pos], dst[pos], out_w[pos] = n, r, x
    return torch.stack([src, dst]), out_w


@torch.no_grad()
def update_jaccard(
    edge_index: Tensor,
    new_edge_index: Tensor,
    num_users: int,
    num_items: int,
    graph_index: Tensor,
    graph_weight: Tensor,
    num_old_items: int,
    k: int = 10,
    max_pairs: int | None = DEFAULT_MAX_PAIRS,
) -> tuple[Tensor, Tensor]:
    """The co-occurrence graph of ``edge_index`` (ALL training pairs, old and new) from
    ``graph_index``/``graph_weight``, the graph :func:`jaccard_topk_graph` built (same
    ``k``) on the old pairs over the first ``num_old_items`` items. ``new_edge_index``
    holds the pairs added since (new items' pairs and new pairs of old items; pairs
    already present are harmless). Equals ``jaccard_topk_graph(edge_index, ...)``.

    Only the users' side of the interactions is indexed (one pass when ``edge_index`` is
    sorted by user then item without duplicates, as :func:`numpy.unique` leaves it; a
    sort otherwise); the items of the rows to count are indexed alone. An untouched
    row's old list bounds the rest of its row: every value outside a full list is below
    the next float32 above the list's lowest weight, so its touched candidates are
    filtered against that bound as their rows are counted. A recounted row selects its
    top-``k`` only among its values at or above a lower bound on its new ``k``-th
    value."""
    _check_k(k)
    if not 0 <= num_old_items <= num_items:
        raise ValueError(f"num_old_items must be in [0, {num_items}], got {num_old_items}")
    old = _check_graph(graph_index, num_old_items, "graph_index (the old co-occurrence graph)")
    if graph_weight.numel() != old.size(1):
        raise ValueError(f"graph_weight has {graph_weight.numel()} entries for {old.size(1)} edges")
    n = num_items
    # the user side only; the owners to count are indexed as they come
    data = _Interactions(
        edge_index.cpu(), num_users, n, owners=torch.zeros(n, dtype=torch.bool), keep_pairs=True
    )
    if max_pairs is not None:
        limit = max_pairs
    else:  # no bound: every owner's triples at once
        limit = int((data.deg_user * data.deg_user).sum()) + 1
    deg = data.deg_item
    touched = torch.zeros(n, dtype=torch.bool)
    touched[new_edge_index[1].cpu()] = True
    touched[num_old_items:] |= deg[num_old_items:] > 0  # a new item's pairs are all new
    nbr_old, owner_old = old[0], old[1]
    w_old = graph_weight.cpu().to(torch.float32)
    key = owner_old * n + nbr_old
    if key.numel() > 1 and not bool((key[1:] > key[:-1]).all()):
        order = torch.argsort(key)
        nbr_old, owner_old, w_old = nbr_old[order], owner_old[order], w_old[order]
    del key
    # a full old list (K entries) holds its row's top-K; every other old value of the
    # row rounds to at most the list's lowest float32 weight, so it lies below `hi`;
    # towards untouched items it stays so, towards touched items it is a candidate
    full = torch.bincount(owner_old, minlength=n) >= k
    w_min = torch.full((n,), float("inf"))
    w_min.scatter_reduce_(0, owner_old, w_old, "amin")
    hi = torch.nextafter(w_min, torch.tensor(float("inf"))).to(torch.float64)
    # a candidate below `lo` is below every value of the list that stays: with K values
    # above the rest it cannot enter; without them the row is recounted anyway
    lo = torch.nextafter(w_min, torch.tensor(0.0)).to(torch.float64)
    lo = torch.where(full, lo, float("-inf"))
    # a touched old row's new K-th value is at least `floor`: lower values are left out
    new = new_edge_index.cpu()
    new_key = torch.unique(new[0] * n + new[1])
    gained = torch.bincount(new_key % n, minlength=n).to(torch.float64)
    del new, new_key
    floor = _list_floor(owner_old, nbr_old, w_old, touched, full, deg, gained)
    # touched rows, counted in full; their values towards untouched items are the
    # untouched rows' new candidates (the same float64 value from both sides)
    tops, cands = [], []
    t_data = data.with_owners(touched)
    for top, (o, nb, v) in _top_values(t_data, touched.nonzero().flatten(), limit, k, floor):
        tops.append(top)
        m = ~touched[nb]
        m &= v >= lo[nb]
        cands.append((nb[m], o[m], v[m]))
    del t_data
    k_o, k_n, k_v = _cat3(cands)
    # affected untouched rows: a candidate, or a touched item on the old list
    on_list = touched[nbr_old]
    aff = torch.zeros(n, dtype=torch.bool)
    aff[k_o] = True
    aff[owner_old[on_list]] = True
    aff &= ~touched
    # their old entries towards untouched items: exact values recovered from the
    # float32 weight and the unchanged degrees
    e_aff = aff[owner_old] & ~on_list
    a_o, a_n, a_w = owner_old[e_aff], nbr_old[e_aff], w_old[e_aff].to(torch.float64)
    da, db = deg[a_o], deg[a_n]
    cnt = torch.round(a_w * (da + db) / (1 + a_w))
    a_v = cnt / (da + db - cnt)
    exact = a_v.to(torch.float32).to(torch.float64) == a_w
    fallback = torch.zeros(n, dtype=torch.bool)
    fallback[a_o[~exact]] = True
    # a full row's new list is known when K candidates are above the rest of its row:
    # its entries towards untouched items, and touched candidates at or above `hi`
    n_above = torch.bincount(a_o, minlength=n)
    n_above += torch.bincount(k_o[k_v >= hi[k_o]], minlength=n)
    fallback |= aff & full & (n_above < k)
    c_o, c_n, c_v = torch.cat([a_o, k_o]), torch.cat([a_n, k_n]), torch.cat([a_v, k_v])
    sel = ~fallback[c_o]
    tops.append(_topk_rows(c_o[sel], c_n[sel], c_v[sel], k, n))
    # K known values of a fallback row bound its new K-th value from below
    sel = ~sel & torch.cat([exact, torch.ones(k_o.numel(), dtype=torch.bool)])
    f_o, _, f_v = _topk_rows(c_o[sel], c_n[sel], c_v[sel], k, n)
    known = torch.full((n,), float("inf"), dtype=torch.float64)
    known.scatter_reduce_(0, f_o, f_v, "amin")
    known_k = fallback & (torch.bincount(f_o, minlength=n) >= k)
    floor = torch.where(known_k, known * (1 - 1e-9), floor)
    del c_o, c_n, c_v, sel, k_o, k_n, k_v, a_o, a_n, a_v, a_w, f_o, f_v, known
    # the rest of a fallback row is unknown: counted in full
    f_ids = fallback.nonzero().flatten()
    if f_ids.numel():
        f_data = data.with_owners(fallback)
        for top, _ in _top_values(f_data, f_ids, limit, k, floor):
            tops.append(top)
    return _splice(owner_old, nbr_old, w_old, touched | aff, tops, n)
