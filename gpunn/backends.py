"""``torch.backends`` as far as scripts touch it: the flags that PyTorch scripts set for cuDNN and the
MPS query in device selection. gpunn uses neither cuDNN nor Metal: the flags are kept and change nothing,
``cudnn.is_available()`` and ``mps.is_available()`` are False.

>>> gpunn.backends.cudnn.deterministic = True   # accepted (gpunn's kernels are deterministic)
"""

from __future__ import annotations

import types

__all__ = ["cudnn", "mps", "cuda"]

cudnn = types.SimpleNamespace(
    enabled=True,
    benchmark=False,
    deterministic=False,
    allow_tf32=True,
    is_available=lambda: False,
    version=lambda: None,
)
mps = types.SimpleNamespace(is_available=lambda: False, is_built=lambda: False)
cuda = types.SimpleNamespace(
    matmul=types.SimpleNamespace(allow_tf32=False, allow_fp16_reduced_precision_reduction=True)
)
