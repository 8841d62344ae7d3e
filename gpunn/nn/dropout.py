"""``Dropout`` and ``Dropout2d``: zero elements (whole channels) with probability p during training."""

from __future__ import annotations

import gpunn.nn.functional as F
from gpunn.nn.module import Module

__all__ = ["Dropout", "Dropout2d"]


class Dropout(Module):
    """In training mode, zero each element with probability ``p`` (the DROP probability, as in PyTorch)
    and scale the survivors by 1 / (1 - p); in eval mode, the identity.
    >>> nn.Dropout(0.2).eval()(x) is x
    True
    """

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if isinstance(p, bool) or not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = float(p)
        self.inplace = inplace

    def forward(self, input):  # noqa: A002
        return F.dropout(input, self.p, self.training, self.inplace)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class Dropout2d(Dropout):
    """In training mode, zero each whole channel (a (H, W) plane of an (N, C, H, W) input) with probability
    ``p`` and scale the rest by 1 / (1 - p); in eval mode, the identity.
    >>> nn.Dropout2d(0.25)(gpunn.randn(2, 8, 5, 5)).shape
    (2, 8, 5, 5)
    """

    def forward(self, input):  # noqa: A002
        return F.dropout2d(input, self.p, self.training, self.inplace)
