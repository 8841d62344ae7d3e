"""``gpunn.accelerator`` (``torch.accelerator``): the current accelerator, if any.

>>> device = gpunn.accelerator.current_accelerator() if gpunn.accelerator.is_available() else "cpu"
"""

from __future__ import annotations

from gpunn import cuda
from gpunn.device import device

__all__ = ["is_available", "current_accelerator", "device_count", "synchronize"]


def is_available() -> bool:
    return cuda.is_available()


def current_accelerator(check_available: bool = False):
    """``device('cuda')`` when a GPU is usable, else None."""
    return device("cuda") if cuda.is_available() else None


def device_count() -> int:
    return cuda.device_count()


def synchronize(device=None) -> None:
    cuda.synchronize(device)
