"""Small helpers around ``torch.sparse`` shared by transforms and layers."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor


@contextlib.contextmanager
def quiet_sparse() -> Iterator[None]:
    """Silence torch's 'beta' notices for sparse CSR tensors."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        warnings.filterwarnings("ignore", message=".*Sparse invariant checks.*")
        yield


def csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    """A ``torch.sparse_csr_tensor`` built without torch's beta warnings."""
    with quiet_sparse():
        return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


def to_csr(adj: Tensor) -> Tensor:
    """``adj`` (COO or CSR) as CSR with 32-bit indices where they fit.

    The CPU sparse-dense product (MKL) works on 32-bit indices; with 64-bit
    ones torch converts both index arrays at every product, about a tenth of
    its time on a MovieLens-size graph. Values and products are unchanged.
    """
    with quiet_sparse():
        if adj.layout != torch.sparse_csr:
            adj = adj.coalesce().to_sparse_csr()
        crow = adj.crow_indices()
        if crow.dtype == torch.int32 or max(adj.size(0), adj.size(1), adj._nnz()) >= 2**31 - 1:
            return adj
        return torch.sparse_csr_tensor(
            crow.int(), adj.col_indices().int(), adj.values(), adj.size(), check_invariants=False
        )
