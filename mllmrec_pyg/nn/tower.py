"""The two-layer MLP that maps frozen language features to embeddings (MLLMRec, LangGCN)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class Tower(nn.Module):
    """The mapping of Eq. 14: :math:`h = W_2\\,\\sigma(W_1 e + b_1) + b_2`, :math:`\\sigma` = LeakyReLU.

    Args:
        in_dim: input width :math:`d_t`.
        hidden_dim: :math:`d_1`.
        out_dim: :math:`d`.
        negative_slope: LeakyReLU slope.
    """

    def __init__(
        self, in_dim: int, hidden_dim: int, out_dim: int, negative_slope: float = 0.01
    ) -> None:
        super().__init__()
        self.lin1 = nn.Linear(in_dim, hidden_dim)
        self.lin2 = nn.Linear(hidden_dim, out_dim)
        self.negative_slope = negative_slope

    def forward(self, x: Tensor) -> Tensor:
        return self.lin2(F.leaky_relu(self.lin1(x), self.negative_slope))

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.lin1.in_features}, {self.lin1.out_features}, "
            f"{self.lin2.out_features})"
        )


__all__ = ["Tower"]
