"""``torch.cuda.amp``: PyTorch's deprecated spellings of ``gpunn.amp.autocast("cuda")`` and
``gpunn.amp.GradScaler("cuda")``; each warns FutureWarning (as PyTorch) and then behaves exactly as those.

>>> scaler = gpunn.cuda.amp.GradScaler()   # FutureWarning; without CUDA also a UserWarning, then disabled
"""

from __future__ import annotations

import numpy as np

from gpunn.amp import _deprecated, autocast_mode, deprecated_spellings

__all__ = ["autocast", "GradScaler", "custom_fwd", "custom_bwd"]


autocast, GradScaler = deprecated_spellings("cuda", np.float16)


def custom_fwd(fwd=None, *, cast_inputs=None):
    """Deprecated spelling of ``gpunn.amp.custom_fwd(device_type="cuda")`` (FutureWarning, as PyTorch)."""
    _deprecated("gpunn.cuda.amp.custom_fwd", "gpunn.amp.custom_fwd(args..., device_type='cuda')")
    return autocast_mode.custom_fwd(fwd, device_type="cuda", cast_inputs=cast_inputs)


def custom_bwd(bwd):
    """Deprecated spelling of ``gpunn.amp.custom_bwd(device_type="cuda")`` (FutureWarning, as PyTorch)."""
    _deprecated("gpunn.cuda.amp.custom_bwd", "gpunn.amp.custom_bwd(args..., device_type='cuda')")
    return autocast_mode.custom_bwd(bwd, device_type="cuda")
