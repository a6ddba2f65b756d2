"""Sparse-dense products whose backward pass reuses a prepared transpose.

``torch.sparse.mm(adj, x)`` with a CSR ``adj`` is fast on CPU, but its
backward pass rebuilds :math:`A^\\top` (a sort of all edges and a COO/CSR
round trip) every time it runs. Graph recommenders multiply by the same
fixed adjacency at every training step, so :func:`fixed_matmul` takes
:math:`A` and an :math:`A^\\top` built once (:func:`csr_transpose`), both
CSR, and the backward pass is one more product,
:math:`\\partial L / \\partial X = A^\\top G`. For a symmetric
adjacency (the normalised user-item graph) :math:`A^\\top` is :math:`A` itself.
:func:`register_with_transpose` keeps the pair as a module's buffers.

Only the dense operand receives a gradient; the adjacency is a constant.

On CPU both products run as :func:`spmm`: a CSR row is a weighted bag of the
dense rows it points at, which is what ``embedding_bag`` (``mode="sum"``
with per-sample weights) computes, two to three times faster than the MKL
sparse product on recommendation graphs (``benchmarks/spmm.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mllmrec_pyg._sparse import quiet_sparse, to_csr


def spmm(adj: Tensor, x: Tensor) -> Tensor:
    """``adj @ x`` for a sparse ``adj`` and a dense 2-D ``x``.

    A constant CSR ``adj`` on CPU goes through ``embedding_bag``: row ``r`` of
    the result is :math:`\\sum_j A_{rj} x_j` over its stored entries, summed
    in column order (the same sums as the sparse product, up to rounding).
    Anything else (other devices and layouts, values that need a gradient)
    takes ``adj @ x``.
    """
    if (
        adj.layout == torch.sparse_csr
        and adj.device.type == "cpu"
        and x.device.type == "cpu"
        and x.dim() == 2
        and x.dtype == adj.dtype
        and x.dtype in (torch.float32, torch.float64)
        and not adj.requires_grad
    ):
        return F.embedding_bag(
            adj.col_indices(),
            x.contiguous(),
            adj.crow_indices(),
            mode="sum",
            per_sample_weights=adj.values(),
            include_last_offset=True,
        )
    with quiet_sparse():
        return adj @ x


class _FixedSparseMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, adj: Tensor, adj_transposed: Tensor) -> Tensor:
        ctx.adj_transposed = adj_transposed
        return spmm(adj, x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return spmm(ctx.adj_transposed, grad), None, None


def csr_transpose(adj: Tensor) -> Tensor:
    """:math:`A^\\top` of a sparse matrix, as CSR (built once, reused by :func:`fixed_matmul`)."""
    with quiet_sparse():
        return to_csr(adj.to_sparse_coo().t())


def register_with_transpose(module: nn.Module, name: str, adj: Tensor | None, t_name: str) -> None:
    """Non-persistent buffers ``name`` (the CSR ``adj``, or ``None``) and ``t_name`` (its
    :func:`csr_transpose`, for the backward pass of :func:`fixed_matmul` when ``adj`` is not
    symmetric)."""
    module.register_buffer(name, adj, persistent=False)
    module.register_buffer(t_name, None if adj is None else csr_transpose(adj), persistent=False)


def fixed_matmul(adj: Tensor, x: Tensor, adj_transposed: Tensor | None = None) -> Tensor:
    """``adj @ x`` with a backward pass through ``adj_transposed`` (``adj`` if ``None``,
    i.e. ``adj`` symmetric); both CSR."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return spmm(adj, x)
    return _FixedSparseMM.apply(x, adj, adj if adj_transposed is None else adj_transposed)


__all__ = ["csr_transpose", "fixed_matmul", "register_with_transpose", "spmm"]
