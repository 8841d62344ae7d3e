"""``torch.amp``: ``autocast`` (honoured where it changes nothing, NotImplementedError where PyTorch would
compute in float16/bfloat16) and ``GradScaler`` (PyTorch's dynamic loss scaling).

>>> scaler = gpunn.amp.GradScaler("cuda")   # without CUDA: a UserWarning, then disabled, as PyTorch
"""

from __future__ import annotations

import warnings

from gpunn.amp.autocast_mode import autocast, custom_bwd, custom_fwd, is_autocast_available
from gpunn.amp.grad_scaler import GradScaler

__all__ = ["autocast", "GradScaler", "is_autocast_available", "custom_fwd", "custom_bwd"]


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"`{old}(args...)` is deprecated (as in PyTorch). Please use `{new}` instead.", FutureWarning, 3)


def deprecated_spellings(device: str, autocast_dtype):
    """(autocast, GradScaler) of ``gpunn.<device>.amp``: PyTorch's deprecated spellings of
    ``autocast(device)`` and ``GradScaler(device)``, each warning FutureWarning and then the same."""

    class _Autocast(autocast):
        def __init__(self, enabled: bool = True, dtype=autocast_dtype, cache_enabled: bool = True):
            _deprecated(f"gpunn.{device}.amp.autocast", f"gpunn.amp.autocast('{device}', args...)")
            self._warn_stacklevel = 3  # the warnings below name the script's line, not this file's
            super().__init__(device, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)

    class _GradScaler(GradScaler):
        def __init__(
            self,
            init_scale: float = 2.0**16,
            growth_factor: float = 2.0,
            backoff_factor: float = 0.5,
            growth_interval: int = 2000,
            enabled: bool = True,
        ) -> None:
            _deprecated(f"gpunn.{device}.amp.GradScaler", f"gpunn.amp.GradScaler('{device}', args...)")
            self._warn_stacklevel = 3
            super().__init__(device, init_scale, growth_factor, backoff_factor, growth_interval, enabled)

    for cls, name in ((_Autocast, "autocast"), (_GradScaler, "GradScaler")):
        cls.__name__, cls.__qualname__, cls.__module__ = name, name, f"gpunn.{device}.amp"
    return _Autocast, _GradScaler
