"""``torch.cpu.amp``: PyTorch's deprecated spellings of ``gpunn.amp.autocast("cpu")`` and
``gpunn.amp.GradScaler("cpu")``; each warns FutureWarning (as PyTorch) and then behaves exactly as those.
"""

from __future__ import annotations

import warnings

from gpunn.amp import autocast_mode, grad_scaler

__all__ = ["autocast", "GradScaler"]


class autocast(autocast_mode.autocast):  # noqa: N801  (PyTorch's name)
    def __init__(self, enabled: bool = True, dtype=None, cache_enabled: bool = True):
        warnings.warn(
            "`gpunn.cpu.amp.autocast(args...)` is deprecated (as in PyTorch). "
            "Please use `gpunn.amp.autocast('cpu', args...)` instead.",
            FutureWarning,
            stacklevel=2,
        )
        self._warn_stacklevel = 3  # the warnings below name the script's line, not this file's
        super().__init__("cpu", dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)


class GradScaler(grad_scaler.GradScaler):
    def __init__(
        self,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        enabled: bool = True,
    ) -> None:
        warnings.warn(
            "`gpunn.cpu.amp.GradScaler(args...)` is deprecated (as in PyTorch). "
            "Please use `gpunn.amp.GradScaler('cpu', args...)` instead.",
            FutureWarning,
            stacklevel=2,
        )
        self._warn_stacklevel = 3  # the warnings below name the script's line, not this file's
        super().__init__("cpu", init_scale, growth_factor, backoff_factor, growth_interval, enabled)
