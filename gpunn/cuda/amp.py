"""``torch.cuda.amp``: PyTorch's deprecated spellings of ``gpunn.amp.autocast("cuda")`` and
``gpunn.amp.GradScaler("cuda")``; each warns FutureWarning (as PyTorch) and then behaves exactly as those.

>>> scaler = gpunn.cuda.amp.GradScaler()   # FutureWarning; without CUDA also a UserWarning, then disabled
"""

from __future__ import annotations

import warnings

import numpy as np

from gpunn.amp import autocast_mode, grad_scaler

__all__ = ["autocast", "GradScaler", "custom_fwd", "custom_bwd"]


class autocast(autocast_mode.autocast):  # noqa: N801  (PyTorch's name)
    def __init__(self, enabled: bool = True, dtype=np.float16, cache_enabled: bool = True):
        warnings.warn(
            "`gpunn.cuda.amp.autocast(args...)` is deprecated (as in PyTorch). "
            "Please use `gpunn.amp.autocast('cuda', args...)` instead.",
            FutureWarning,
            stacklevel=2,
        )
        self._warn_stacklevel = 3  # the warnings below name the script's line, not this file's
        super().__init__("cuda", dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)


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
            "`gpunn.cuda.amp.GradScaler(args...)` is deprecated (as in PyTorch). "
            "Please use `gpunn.amp.GradScaler('cuda', args...)` instead.",
            FutureWarning,
            stacklevel=2,
        )
        self._warn_stacklevel = 3  # the warnings below name the script's line, not this file's
        super().__init__("cuda", init_scale, growth_factor, backoff_factor, growth_interval, enabled)


def custom_fwd(fwd=None, *, cast_inputs=None):
    """Deprecated spelling of ``gpunn.amp.custom_fwd(device_type="cuda")`` (FutureWarning, as PyTorch)."""
    warnings.warn(
        "`gpunn.cuda.amp.custom_fwd(args...)` is deprecated (as in PyTorch). "
        "Please use `gpunn.amp.custom_fwd(args..., device_type='cuda')` instead.",
        FutureWarning,
        stacklevel=2,
    )
    return autocast_mode.custom_fwd(fwd, device_type="cuda", cast_inputs=cast_inputs)


def custom_bwd(bwd):
    """Deprecated spelling of ``gpunn.amp.custom_bwd(device_type="cuda")`` (FutureWarning, as PyTorch)."""
    warnings.warn(
        "`gpunn.cuda.amp.custom_bwd(args...)` is deprecated (as in PyTorch). "
        "Please use `gpunn.amp.custom_bwd(args..., device_type='cuda')` instead.",
        FutureWarning,
        stacklevel=2,
    )
    return autocast_mode.custom_bwd(bwd, device_type="cuda")
