"""``torch.backends.cuda.matmul`` and ``gpunn.set_float32_matmul_precision``: permissions to compute float32
matmuls in reduced precision (TF32). gpunn's float32 matmuls are always full float32 (its kernels and cuBLAS
through CuPy, which uses TF32 only when the environment sets ``CUPY_TF32=1``), which every setting permits: the
flags are kept, linked as in PyTorch (``allow_tf32`` is True exactly when the precision is not 'highest').

>>> gpunn.backends.cuda.matmul.allow_tf32 = True
>>> gpunn.get_float32_matmul_precision()
'high'
"""

from __future__ import annotations

import warnings

__all__ = ["matmul", "get_float32_matmul_precision", "set_float32_matmul_precision"]

_PRECISIONS = ("highest", "high", "medium")
_precision = "highest"


def get_float32_matmul_precision() -> str:
    return _precision


def set_float32_matmul_precision(precision: str) -> None:
    """'highest' (the default), 'high' or 'medium'; another string warns and changes nothing, as in PyTorch."""
    global _precision
    if not isinstance(precision, str):
        raise RuntimeError(f"set_float32_matmul_precision expects a str, but got {type(precision).__name__}")
    if precision not in _PRECISIONS:
        warnings.warn(
            f"{precision!r} is not one of 'highest', 'high', or 'medium'; set_float32_matmul_precision has no effect",
            UserWarning,
            stacklevel=2,
        )
        return
    _precision = precision


class _Matmul:
    """``torch.backends.cuda.matmul``: unknown attributes raise AttributeError, flags accept only bools."""

    __slots__ = ("_fp16_reduction", "_bf16_reduction")

    def __init__(self):
        self._fp16_reduction = True
        self._bf16_reduction = True

    @staticmethod
    def _check(name, value):
        if not isinstance(value, bool):
            raise RuntimeError(f"gpunn.backends.cuda.matmul.{name} expects a bool, but got {type(value).__name__}")

    @property
    def allow_tf32(self) -> bool:
        return _precision != "highest"

    @allow_tf32.setter
    def allow_tf32(self, value):
        self._check("allow_tf32", value)
        set_float32_matmul_precision("high" if value else "highest")

    @property
    def allow_fp16_reduced_precision_reduction(self) -> bool:
        return self._fp16_reduction

    @allow_fp16_reduced_precision_reduction.setter
    def allow_fp16_reduced_precision_reduction(self, value):
        self._check("allow_fp16_reduced_precision_reduction", value)
        self._fp16_reduction = value

    @property
    def allow_bf16_reduced_precision_reduction(self) -> bool:
        return self._bf16_reduction

    @allow_bf16_reduced_precision_reduction.setter
    def allow_bf16_reduced_precision_reduction(self, value):
        self._check("allow_bf16_reduced_precision_reduction", value)
        self._bf16_reduction = value


matmul = _Matmul()
