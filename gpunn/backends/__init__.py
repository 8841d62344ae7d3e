"""``torch.backends`` as far as scripts touch it: the cuDNN flags training scripts set, the TF32 switch for
float32 matmuls and the MPS query in device selection. gpunn uses neither cuDNN nor Metal nor TF32: the flags
are kept (PyTorch's defaults, bools only, as PyTorch checks) and change nothing; ``cudnn.is_available()`` and
``mps.is_available()`` are False and ``cudnn.version()`` is None, as PyTorch's CPU build answers.

>>> import gpunn.backends.cudnn
>>> gpunn.backends.cudnn.benchmark = True   # accepted: gpunn has no cuDNN algorithms to choose between
"""

from __future__ import annotations

from gpunn.backends import cuda, cudnn, mps

__all__ = ["cudnn", "mps", "cuda"]
