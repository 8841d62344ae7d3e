"""``torch.cpu.amp``: PyTorch's deprecated spellings of ``gpunn.amp.autocast("cpu")`` and
``gpunn.amp.GradScaler("cpu")``; each warns FutureWarning (as PyTorch) and then behaves exactly as those.
"""

from __future__ import annotations

from gpunn.amp import deprecated_spellings

__all__ = ["autocast", "GradScaler"]

autocast, GradScaler = deprecated_spellings("cpu", None)
