"""``torch.cpu``: the host device is always there; ``gpunn.cpu.amp`` holds PyTorch's deprecated autocast and
GradScaler spellings for it.

>>> gpunn.cpu.is_available()
True
"""

from __future__ import annotations

__all__ = ["is_available", "device_count", "synchronize", "amp"]


def is_available() -> bool:
    return True


def device_count() -> int:
    return 1


def synchronize(device=None) -> None:
    """Nothing to wait for: host work is synchronous."""


def __getattr__(name):
    if name == "amp":
        import importlib

        return importlib.import_module("gpunn.cpu.amp")
    raise AttributeError(f"module 'gpunn.cpu' has no attribute {name!r}")
