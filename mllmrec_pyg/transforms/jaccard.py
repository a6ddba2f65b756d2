"""Audience co-occurrence item-item graph: top-K Jaccard over training users."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.transforms import BaseTransform

from mllmrec_pyg.data.schema import (
    check_edge_index,
    item_edge_type,
    require_edge_type,
    require_node_type,
)
from mllmrec_pyg.transforms._checks import check_edge_type, check_name, check_positive_int
from mllmrec_pyg.transforms.threshold_knn import _check_k

#: Default bound on the co-occurring (owner, neighbour, user) triples expanded
#: at once; each costs up to about 100 bytes at the peak of a block (~400 MB).
DEFAULT_MAX_PAIRS = 2**22


def rowwise_topk(rows: Tensor, cols: Tensor, vals: Tensor, k: int) -> Tensor:
    """Mask of the ``k`` largest ``vals`` within each row; ties go to the lower column."""
    order = torch.argsort(cols, stable=True)
    order = order[torch.argsort(-vals[order], stable=True)]
    order = order[torch.argsort(rows[order], stable=True)]
    sorted_rows = rows[order]
    start = torch.searchsorted(sorted_rows, sorted_rows, right=False)
    rank = torch.arange(rows.numel(), device=rows.device) - start
    mask = torch.zeros(rows.numel(), dtype=torch.bool, device=rows.device)
    mask[order[rank < k]] = True
    return mask


def _topk_sorted(rows: Tensor, vals: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` largest ``vals`` per row, for entries already sorted
    by (row, column): ties go to the lower column, as in :func:`rowwise_topk`."""
    order = torch.argsort(-vals, stable=True)
    order = order[torch.argsort(rows[order], stable=True)]
    sorted_rows = rows[order]
    start = torch.searchsorted(sorted_rows, sorted_rows, right=False)
    rank = torch.arange(rows.numel(), device=rows.device) - start
    return order[rank < k]


#: float32 bit patterns of values in (0, 1] are below this (the bits of 1.0)
_ONE_BITS = 0x3F800000
_JAC_BITS = 30


def _sort_int64(t: Tensor) -> Tensor:
    """Ascending sort of an int64 tensor; in place with NumPy's vectorised sort on the CPU."""
    if t.device.type == "cpu":
        t.numpy().sort()
        return t
    return torch.sort(t).values


def _run_lengths(sorted_keys: Tensor) -> tuple[Tensor, Tensor]:
    """Distinct values of a sorted tensor and how often each occurs."""
    n = sorted_keys.numel()
    first = torch.ones(n, dtype=torch.bool, device=sorted_keys.device)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    starts = first.nonzero().flatten()
    ends = torch.empty_like(starts)
    ends[:-1] = starts[1:]
    ends[-1:] = n
    return sorted_keys[starts], ends - starts


def _block_topk(
    owner: Tensor, nbr: Tensor, jac: Tensor, k: int, num_items: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Per owner, the ``k`` largest ``jac`` (ties to the lower ``nbr``) of entries
    sorted by (owner, nbr); the same selection as :func:`_topk_sorted`.

    One integer sort on (owner, float32 rank of the value, neighbour) finds, per
    owner, the entries whose float32-rounded value reaches the ``k``-th one;
    rounding is monotone, so they contain the exact top-``k``, which an exact
    float64 selection then picks from that short list.
    """
    nbits = max(1, (num_items - 1).bit_length())
    lo = int(owner[0])
    obits = max(1, (int(owner[-1]) - lo).bit_length())
    if obits + _JAC_BITS + nbits > 63:
        keep = _topk_sorted(owner, jac, k)
        return owner[keep], nbr[keep], jac[keep]
    rank = _ONE_BITS - jac.to(torch.float32).view(torch.int32).long()  # small = large
    key = (owner - lo) << (_JAC_BITS + nbits)
    key |= rank << nbits
    key |= nbr
    del rank
    key = _sort_int64(key)
    grp = key >> (_JAC_BITS + nbits)
    n = key.numel()
    idx = torch.arange(n, device=key.device)
    first = torch.ones(n, dtype=torch.bool, device=key.device)
    first[1:] = grp[1:] != grp[:-1]
    kpos = torch.cummax(torch.where(first, idx, 0), 0).values + (k - 1)
    del first, idx
    kpos_c = kpos.clamp(max=n - 1)
    rank = (key >> nbits) & ((1 << _JAC_BITS) - 1)
    kth = torch.where((kpos < n) & (grp[kpos_c] == grp), rank[kpos_c], 1 << _JAC_BITS)
    cand = rank <= kth
    del kpos, kpos_c, rank, kth
    c_owner = grp[cand] + lo
    c_nbr = key[cand] & ((1 << nbits) - 1)
    del key, grp
    # exact float64 values of the candidates, looked up among the sorted inputs
    at = torch.searchsorted(owner * num_items + nbr, c_owner * num_items + c_nbr)
    c_jac = jac[at]
    keep = rowwise_topk(c_owner, c_nbr, c_jac, k)
    return c_owner[keep], c_nbr[keep], c_jac[keep]


class _Interactions:
    """Deduplicated training pairs indexed both by user and by item."""

    def __init__(
        self,
        edge_index: Tensor,
        num_users: int,
        num_items: int,
        owners: Tensor | None = None,
        keep_pairs: bool = False,
    ) -> None:
        """Index ``edge_index`` (pairs sorted by (user, item) without duplicates, as
        :func:`torch.unique` leaves them, are read in one pass instead of a sort) by user,
        and by owner item for the items flagged in the mask ``owners`` (default: all).
        ``keep_pairs`` keeps each pair's user, so that :meth:`with_owners` can index
        other owners later."""
        device = edge_index.device
        users, items = edge_index[0], edge_index[1]
        key = users * num_items + items
        if key.numel() > 1 and not bool((key[1:] > key[:-1]).all()):
            key = torch.unique(key)
            users, items = key // num_items, key % num_items
        del key
        self.num_items = num_items
        self.deg_item = torch.bincount(items, minlength=num_items).to(torch.float64)
        self.deg_user = torch.bincount(users, minlength=num_users)
        #: items of user u: ``items_by_user[user_ptr[u]:user_ptr[u + 1]]``
        self.user_ptr = torch.zeros(num_users + 1, dtype=torch.long, device=device)
        self.user_ptr[1:] = self.deg_user.cumsum(0)
        self.items_by_user = items
        self.user_of_pair = users if keep_pairs else None
        self._index_owners(users, items, owners)

    def _index_owners(self, users: Tensor, items: Tensor, owners: Tensor | None) -> None:
        if owners is not None:
            pos = owners[items].nonzero().flatten()
            users, items = users[pos], items[pos]
            del pos
        by_item = torch.argsort(items, stable=True)
        #: (owner item, user) pairs sorted by owner; the cost of a pair is the
        #: user's degree, the number of (owner, neighbour) triples it expands to
        self.owner = items[by_item]
        self.user = users[by_item]
        del by_item, users
        self.cost = self.deg_user[self.user]
        device = items.device
        self.owner_ptr = torch.searchsorted(
            self.owner, torch.arange(self.num_items + 1, device=device)
        )
        cum = torch.zeros(self.cost.numel() + 1, dtype=torch.long, device=device)
        cum[1:] = self.cost.cumsum(0)
        #: triples expanded by owners ``< a``
        self.owner_cum = cum[self.owner_ptr]

    def with_owners(self, owners: Tensor) -> _Interactions:
        """A copy sharing the user side, indexed by owner for the items flagged in the mask
        ``owners`` only (enough to count those owners' rows); needs ``keep_pairs``."""
        if self.user_of_pair is None:
            raise RuntimeError("with_owners needs an index built with keep_pairs=True")
        sub = copy.copy(self)
        sub._index_owners(self.user_of_pair, self.items_by_user, owners)
        return sub

    def expand(self, users: Tensor, costs: Tensor, lo: int, hi: int) -> Tensor:
        """Neighbours at positions ``lo:hi`` of the concatenated item lists of ``users``."""
        ends = costs.cumsum(0)
        pos = torch.arange(lo, hi, device=users.device)
        j = torch.searchsorted(ends, pos, right=True)
        offset = pos - (ends[j] - costs[j])
        return self.items_by_user[self.user_ptr[users[j]] + offset]

    def block(self, a: int, b: int) -> tuple[Tensor, Tensor, Tensor]:
        """All (owner, neighbour, count) co-occurrences of owners ``a:b``, sorted."""
        p0, p1 = int(self.owner_ptr[a]), int(self.owner_ptr[b])
        costs = self.cost[p0:p1]
        total = int(self.owner_cum[b] - self.owner_cum[a])
        key = torch.repeat_interleave(
            (self.owner[p0:p1] - a) * self.num_items, costs, output_size=total
        )
        # position of each triple's neighbour in items_by_user
        shift = self.user_ptr[self.user[p0:p1]] - (costs.cumsum(0) - costs)
        pos = torch.repeat_interleave(shift, costs, output_size=total)
        pos += torch.arange(total, device=pos.device)
        key += self.items_by_user[pos]
        del pos, shift
        key, count = _run_lengths(_sort_int64(key))
        return key // self.num_items + a, key % self.num_items, count

    def heavy_owner(self, a: int, max_pairs: int, acc: Tensor) -> tuple[Tensor, Tensor]:
        """(neighbour, count) of one owner whose users expand past ``max_pairs``,
        accumulated ``max_pairs`` triples at a time into the dense ``acc``."""
        p0, p1 = int(self.owner_ptr[a]), int(self.owner_ptr[a + 1])
        costs = self.cost[p0:p1]
        users = self.user[p0:p1]
        total = int(costs.sum())
        for lo in range(0, total, max_pairs):
            nbr = self.expand(users, costs, lo, min(total, lo + max_pairs))
            acc.index_add_(0, nbr, torch.ones_like(nbr, dtype=acc.dtype))
        nbr = acc.nonzero().flatten()
        count = acc[nbr].long()
        acc[nbr] = 0
        return nbr, count


@torch.no_grad()
def jaccard_topk_graph(
    edge_index: Tensor,
    num_users: int,
    num_items: int,
    k: int = 10,
    block_size: int = 4096,
    max_pairs: int | None = DEFAULT_MAX_PAIRS,
) -> tuple[Tensor, Tensor]:
    r"""Top-:math:`K` Jaccard co-occurrence graph of items from ``(user, item)`` pairs.

    .. math::
        C_{ab} = \frac{|\mathcal{U}_a \cap \mathcal{U}_b|}{|\mathcal{U}_a \cup \mathcal{U}_b|},
        \qquad \tilde{C}_{ab} = C_{ab}\,\mathbb{1}[b \in \mathrm{top}K(C_{a\cdot})],\ b \neq a

    Duplicate pairs count once. Only strictly positive values become edges;
    self-pairs are excluded (pairs of distinct items with identical audiences,
    Jaccard 1, are kept). Ties at the :math:`K`-th value go to the lower item
    id. The result is exact.

    Intersections are counted by expanding each (owner, user) pair into the
    user's items and counting equal (owner, neighbour) keys. That expansion
    has :math:`\sum_u d_u^2` entries in all (:math:`d_u` the user's degree:
    heavy users, not popular items, dominate it), so owners are processed in
    blocks of at most ``block_size`` items whose expansion holds at most
    ``max_pairs`` entries. An owner whose users alone expand past
    ``max_pairs`` is counted ``max_pairs`` entries at a time into a dense
    counter of length :math:`I`. Peak working memory is therefore about
    :math:`100 \cdot \text{max\_pairs} + 4I` bytes on top of the
    :math:`O(|\mathcal{E}|)` interaction arrays, whatever the degrees.

    Args:
        edge_index: ``[2, E]`` training ``(user, item)`` pairs.
        num_users, num_items: sizes.
        k: :math:`K_c`.
        block_size: most owner items per block.
        max_pairs: most expanded triples per block; ``None`` for no bound
            (blocks limited by ``block_size`` only).

    Returns:
        ``edge_index`` (``[1]`` owner, ``[0]`` neighbour), sorted by owner then
        neighbour, and ``edge_weight`` (the Jaccard values).
    """
    _check_k(k)
    check_positive_int(block_size, "block_size")
    check_positive_int(max_pairs, "max_pairs", allow_none=True)
    device = edge_index.device
    if edge_index.numel() == 0 or num_items == 0:
        return torch.empty(2, 0, dtype=torch.long, device=device), torch.empty(0, device=device)
    data = _Interactions(edge_index, num_users, num_items)
    limit = max_pairs if max_pairs is not None else int(data.owner_cum[-1]) + 1
    acc: list[Tensor] = []  # the dense counter of heavy owners, allocated once
    srcs, dsts, weights = [], [], []
    for a, b in plan_blocks(data.owner_cum.cpu(), limit, block_size, num_items):
        out = block_topk(data, a, b, limit, k, acc)
        if out is not None:
            srcs.append(out[0])
            dsts.append(out[1])
            weights.append(out[2])
    return assemble(srcs, dsts, weights, num_items, device)


def plan_blocks(owner_cum: Tensor, limit: int, block_size: int, num_items: int) -> list:
    """Owner ranges ``(a, b)`` whose expansion stays under ``limit`` triples; ``b == a + 1``
    may exceed it (one heavy owner, counted in pieces). Owners without users are skipped."""
    blocks = []
    a = 0
    while a < num_items:
        b = int(torch.searchsorted(owner_cum, owner_cum[a] + limit, right=True)) - 1
        b = min(b, a + block_size, num_items)
        if b <= a:  # one owner past the bound
            b = a + 1
        elif owner_cum[b] == owner_cum[a]:  # owners without users
            a = b
            continue
        blocks.append((a, b))
        a = b
    return blocks


def block_topk(
    data: _Interactions, a: int, b: int, limit: int, k: int, acc: list[Tensor] | None = None
) -> tuple[Tensor, Tensor, Tensor] | None:
    """``(neighbours, owners, jaccard)`` of the top-``k`` lists of owners ``a:b``."""
    num_items = data.num_items
    device = data.owner.device
    if int(data.owner_cum[b] - data.owner_cum[a]) > limit:  # one heavy owner
        acc = [] if acc is None else acc
        if not acc:
            acc.append(torch.zeros(num_items, dtype=torch.int32, device=device))
        nbr, count = data.heavy_owner(a, limit, acc[0])
        owner = torch.full_like(nbr, a)
    else:
        owner, nbr, count = data.block(a, b)
    ok = owner != nbr
    owner, nbr, count = owner[ok], nbr[ok], count[ok].to(torch.float64)
    if owner.numel() == 0:
        return None
    jac = count / (data.deg_item[owner] + data.deg_item[nbr] - count)
    owner, nbr, jac = _block_topk(owner, nbr, jac, k, num_items)
    return nbr, owner, jac


def assemble(srcs, dsts, weights, num_items: int, device) -> tuple[Tensor, Tensor]:
    """One graph from per-block edges, sorted by owner then neighbour, float32 weights."""
    if not srcs:
        return torch.empty(2, 0, dtype=torch.long, device=device), torch.empty(0, device=device)
    src, dst, w = torch.cat(srcs), torch.cat(dsts), torch.cat(weights)
    order = torch.argsort(dst * num_items + src)
    return torch.stack([src[order], dst[order]]), w[order].to(torch.float32)


class JaccardCoOccurrence(BaseTransform):
    r"""Builds ``data[item, relation, item]`` from the TRAINING ``(user, item)``
    pairs in ``data[edge_type].edge_index``: for every item its top-:math:`K_c`
    items by Jaccard similarity of their audiences (Eq. 8-9 of MLLMRec),
    weighted by that similarity.

    .. math::
        C_{ab} = \frac{|\mathcal{U}_a \cap \mathcal{U}_b|}{|\mathcal{U}_a \cup \mathcal{U}_b|}

    Held-out pairs (``val_edge_index``, ``test_edge_index``) are never read.
    Self-pairs are excluded; unlike the reference implementation, which drops
    every value equal to exactly 1, distinct items with identical audiences
    stay connected. Only strictly positive values make edges.

    Memory is bounded by ``max_pairs`` whatever the degrees (see
    :func:`jaccard_topk_graph`); the result does not depend on it or on
    ``block_size``. Time grows with :math:`\sum_u d_u^2` over users.

    Args:
        k (int): :math:`K_c`, neighbours per item.
        edge_type (tuple): the user-item edge type to read.
        relation (str): relation name of the output item-item edge type.
        block_size (int): most owner items per block.
        max_pairs (int, optional): most co-occurrence triples expanded at once
            (up to about 100 bytes each); ``None`` for no bound.
        executor (distributed.Client, optional): count the blocks as tasks on
            this Dask cluster; same edges and weights as in-process.
    """

    def __init__(
        self,
        k: int = 10,
        edge_type: tuple[str, str, str] = ("user", "interacts", "item"),
        relation: str = "cooccurs",
        block_size: int = 4096,
        max_pairs: int | None = DEFAULT_MAX_PAIRS,
        executor: Any = None,
    ) -> None:
        from mllmrec_pyg.transforms.distributed import check_executor

        self.executor = check_executor(executor, "JaccardCoOccurrence")
        self.k = _check_k(k)
        self.edge_type = check_edge_type(edge_type, "edge_type")
        self.relation = check_name(relation, "relation")
        self.block_size = check_positive_int(block_size, "block_size")
        self.max_pairs = check_positive_int(max_pairs, "max_pairs", allow_none=True)

    def forward(self, data: HeteroData) -> HeteroData:
        src_type, _, item_type = self.edge_type
        require_edge_type(data, self.edge_type)
        num_users = require_node_type(data, src_type)
        num_items = require_node_type(data, item_type)
        edge_index = data[self.edge_type].get("edge_index")
        if edge_index is None:
            raise ValueError(f"data[{self.edge_type}].edge_index (training pairs) is missing")
        check_edge_index(edge_index, num_users, num_items, f"data[{self.edge_type}].edge_index")
        if self.executor is not None:
            from mllmrec_pyg.transforms.distributed import distributed_jaccard

            out_index, out_weight = distributed_jaccard(
                self.executor, edge_index, num_users, num_items, self.k, self.block_size,
                self.max_pairs,
            )  # fmt: skip
            out_index, out_weight = (
                out_index.to(edge_index.device),
                out_weight.to(edge_index.device),
            )
        else:
            out_index, out_weight = jaccard_topk_graph(
                edge_index, num_users, num_items, self.k, self.block_size, self.max_pairs
            )
        store = data[item_edge_type(item_type, self.relation)]
        store.edge_index, store.edge_weight = out_index, out_weight
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(k={self.k}, relation={self.relation!r})"
