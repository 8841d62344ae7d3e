"""``torch.backends.cudnn``: gpunn has no cuDNN, so these flags are kept and change nothing (convolutions run
gpunn's own kernels whatever ``benchmark``/``deterministic``/``enabled`` say). Defaults, ``is_available()``
(False) and ``version()`` (None) are what PyTorch's CPU build answers.

>>> gpunn.backends.cudnn.benchmark = True
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

from gpunn.backends._flags import BoolFlagModule

enabled = True
benchmark = False
deterministic = False
allow_tf32 = True


def is_available() -> bool:
    """False: gpunn never calls cuDNN."""
    return False


def version() -> None:
    """None, as PyTorch answers when cuDNN is absent."""
    return None


@contextmanager
def flags(enabled=False, benchmark=False, deterministic=False, allow_tf32=True):
    """Set the four flags inside a ``with`` block and restore them after it (PyTorch's defaults for the block)."""
    module = sys.modules[__name__]
    names = ("enabled", "benchmark", "deterministic", "allow_tf32")
    old = {name: getattr(module, name) for name in names}
    new = dict(zip(names, (enabled, benchmark, deterministic, allow_tf32)))
    for name, value in new.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in old.items():
            setattr(module, name, value)


class _CudnnModule(BoolFlagModule):
    _BOOL_FLAGS = frozenset({"enabled", "benchmark", "deterministic", "allow_tf32"})


sys.modules[__name__].__class__ = _CudnnModule
