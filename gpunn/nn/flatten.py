"""``Flatten``: merge dimensions start_dim..end_dim (the batch dimension is kept by default)."""

from __future__ import annotations

import gpunn.nn.functional as F
from gpunn.nn.module import Module

__all__ = ["Flatten"]


class Flatten(Module):
    """(N, C, H, W) -> (N, C*H*W) with the defaults start_dim=1, end_dim=-1.
    >>> nn.Flatten()(gpunn.zeros(2, 3, 4, 5)).shape
    (2, 60)
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, input):  # noqa: A002
        return F.flatten(input, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
