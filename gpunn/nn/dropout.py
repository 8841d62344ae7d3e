"""``Dropout``: zero elements with probability p during training."""

from __future__ import annotations

import gpunn.nn.functional as F
from gpunn.nn.module import Module

__all__ = ["Dropout"]


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
        return F.dropout(input, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"
