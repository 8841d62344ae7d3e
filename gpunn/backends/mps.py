"""``torch.backends.mps``: gpunn has no Metal backend; both queries are False (as on any non-Mac PyTorch)."""

from __future__ import annotations


def is_available() -> bool:
    return False


def is_built() -> bool:
    return False
