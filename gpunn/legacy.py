"""PyTorch's typed-tensor constructors and small helpers: ``FloatTensor([...])``, ``LongTensor(n)``,
``is_tensor``, ``numel``, ``get/set_default_dtype``."""

from __future__ import annotations

import math

from gpunn import dtypes
from gpunn.tensor import Tensor

__all__ = [
    "Size",
    "FloatTensor",
    "DoubleTensor",
    "LongTensor",
    "IntTensor",
    "BoolTensor",
    "ByteTensor",
    "is_tensor",
    "is_floating_point",
    "numel",
    "get_default_dtype",
    "set_default_dtype",
]


class _TypedTensorMeta(type):
    def __instancecheck__(cls, obj) -> bool:  # isinstance(t, gpunn.FloatTensor): a float32 tensor
        return isinstance(obj, Tensor) and obj.dtype == cls._gpunn_dtype

    def __repr__(cls) -> str:
        return f"<class 'gpunn.{cls.__name__}'>"


def _typed(name: str, dtype):
    def new(cls, *data, device=None):
        if len(data) == 1 and isinstance(data[0], Tensor):
            return data[0].astype(dtype).clone().detach()
        return Tensor(*data, device=device, dtype=dtype)

    return _TypedTensorMeta(
        name,
        (),
        {"__new__": new, "_gpunn_dtype": dtype, "__doc__": f"``{name}(data)`` or ``{name}(*size)``: a {dtype} tensor."},
    )


FloatTensor = _typed("FloatTensor", dtypes.float32)
DoubleTensor = _typed("DoubleTensor", dtypes.float64)
LongTensor = _typed("LongTensor", dtypes.int64)
IntTensor = _typed("IntTensor", dtypes.int32)
BoolTensor = _typed("BoolTensor", dtypes.bool_)
ByteTensor = _typed("ByteTensor", dtypes.uint8)


class Size(tuple):
    """``gpunn.Size([2, 3])``: a tuple of dimensions (``t.shape`` is a plain tuple and compares equal)."""

    def numel(self) -> int:
        return math.prod(self)

    def __repr__(self) -> str:
        return f"gpunn.Size({list(self)})"


def is_tensor(obj) -> bool:
    return isinstance(obj, Tensor)


def is_floating_point(input: Tensor) -> bool:  # noqa: A002
    return input.dtype.kind == "f"


def numel(input: Tensor) -> int:  # noqa: A002
    return input.numel()


def get_default_dtype():
    return dtypes.default_float


def set_default_dtype(d, /) -> None:
    if dtypes.as_dtype(d) != dtypes.float32:
        raise NotImplementedError(
            "set_default_dtype: gpunn's default float dtype is float32 and can't be changed; "
            "pass dtype= to the factories instead"
        )
