"""``torch.amp``: ``autocast`` (honoured where it changes nothing, NotImplementedError where PyTorch would
compute in float16/bfloat16) and ``GradScaler`` (PyTorch's dynamic loss scaling).

>>> scaler = gpunn.amp.GradScaler("cuda")   # without CUDA: a UserWarning, then disabled, as PyTorch
"""

from __future__ import annotations

from gpunn.amp.autocast_mode import autocast, custom_bwd, custom_fwd, is_autocast_available
from gpunn.amp.grad_scaler import GradScaler

__all__ = ["autocast", "GradScaler", "is_autocast_available", "custom_fwd", "custom_bwd"]
