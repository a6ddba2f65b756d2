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
