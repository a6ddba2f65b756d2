"""Sparse-dense products whose backward pass reuses a prepared transpose.

``torch.sparse.mm(adj, x)`` with a CSR ``adj`` is fast on CPU, but its
backward pass rebuilds :math:`A^\\top` (a sort of all edges and a COO/CSR
round trip) every time it runs. Graph recommenders multiply by the same
fixed adjacency at every training step, so :func:`fixed_matmul` takes
:math:`A` and an :math:`A^\\top` built once (:func:`csr_transpose`), both
CSR, and the backward pass is one more product,
:math:`\\partial L / \\partial X = A^\\top G`. For a symmetric
adjacency (the normalised user-item graph) :math:`A^\\top` is :math:`A` itself.

Only the dense operand receives a gradient; the adjacency is a constant.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mllmrec_pyg._sparse import quiet_sparse


def _as_csr(adj: Tensor) -> Tensor:
    with quiet_sparse():
        if adj.layout == torch.sparse_csr:
            return adj
        return adj.coalesce().to_sparse_csr()


class _FixedSparseMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, adj: Tensor, adj_transposed: Tensor) -> Tensor:
        ctx.adj_transposed = adj_transposed
        with quiet_sparse():
            return adj @ x

    @staticmethod
    def backward(ctx, grad: Tensor):
        with quiet_sparse():
            return ctx.adj_transposed @ grad.contiguous(), None, None


def csr_transpose(adj: Tensor) -> Tensor:
    """:math:`A^\\top` of a sparse matrix, as CSR (built once, reused by :func:`fixed_matmul`)."""
    with quiet_sparse():
        return _as_csr(adj.to_sparse_coo().t())


def fixed_matmul(adj: Tensor, x: Tensor, adj_transposed: Tensor | None = None) -> Tensor:
    """``adj @ x`` with a backward pass through ``adj_transposed`` (``adj`` if ``None``,
    i.e. ``adj`` symmetric); both CSR."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        with quiet_sparse():
            return adj @ x
    return _FixedSparseMM.apply(x, adj, adj if adj_transposed is None else adj_transposed)


__all__ = ["csr_transpose", "fixed_matmul"]
