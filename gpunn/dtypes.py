"""Dtypes (NumPy dtype objects under PyTorch's names) and PyTorch's promotion rules.

``gpunn.float32 == numpy.float32``; ``gpunn.float``/``double``/``long``/``int``/``half``/``bool`` are the
PyTorch aliases. Python floats become float32 and ints int64, as in PyTorch."""

from __future__ import annotations

import numpy as np

__all__ = [
    "float16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "bool_",
    "half",
    "double",
    "long",
    "short",
    "default_float",
    "as_dtype",
    "dtype_name",
    "finfo",
    "iinfo",
]

float16 = np.dtype(np.float16)
float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
int8 = np.dtype(np.int8)
int16 = np.dtype(np.int16)
int32 = np.dtype(np.int32)
int64 = np.dtype(np.int64)
uint8 = np.dtype(np.uint8)
bool_ = np.dtype(np.bool_)
half, double, long, short = float16, float64, int64, int16
default_float = float32

_TORCH_NAMES = {
    float16: "float16",
    float32: "float32",
    float64: "float64",
    int8: "int8",
    int16: "int16",
    int32: "int32",
    int64: "int64",
    uint8: "uint8",
    bool_: "bool",
}
_LEGACY_NAMES = {
    float16: "HalfTensor",
    float32: "FloatTensor",
    float64: "DoubleTensor",
    int8: "CharTensor",
    int16: "ShortTensor",
    int32: "IntTensor",
    int64: "LongTensor",
    uint8: "ByteTensor",
    bool_: "BoolTensor",
}


def as_dtype(dtype) -> np.dtype:
    """A dtype from a gpunn/NumPy dtype, a Python type (float -> float32, int -> int64, bool) or a name."""
    if dtype is float:
        return float32
    if dtype is int:
        return int64
    if dtype is bool:
        return bool_
    if isinstance(dtype, str) and dtype.startswith(("torch.", "gpunn.")):
        dtype = dtype.split(".", 1)[1]
    legacy = getattr(dtype, "_gpunn_dtype", None)  # gpunn.FloatTensor & co.
    if legacy is not None:
        return legacy
    try:
        return np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"not a dtype: {dtype!r} (use gpunn.float32, gpunn.int64, ...)") from exc


def dtype_name(dtype) -> str:
    """``'gpunn.float32'``: how repr and error messages name a dtype."""
    return "gpunn." + _TORCH_NAMES.get(np.dtype(dtype), str(dtype))


def legacy_type_name(dtype) -> str:
    """``'gpunn.FloatTensor'`` (what ``Tensor.type()`` returns; torch.FloatTensor in PyTorch)."""
    return "gpunn." + _LEGACY_NAMES.get(np.dtype(dtype), f"Tensor[{dtype}]")


def _is_float(dtype) -> bool:
    return np.dtype(dtype).kind == "f"


def _category(dtype) -> int:
    """PyTorch's promotion category: bool 0, integer 1, floating 2."""
    kind = np.dtype(dtype).kind
    return 0 if kind == "b" else 2 if kind == "f" else 1


def _coerce(a, b):
    """PyTorch's promotion for two arrays: integer/bool with float takes the float's dtype, and a 0-dim
    operand beside a dimensioned one of the same or a higher category takes the dimensioned one's dtype
    (float32 tensor + float64 0-dim tensor -> float32; int32 tensor + int64 0-dim -> int32). Shapes that do
    not broadcast raise PyTorch's RuntimeError."""
    if a.shape != b.shape:
        check_broadcast(a.shape, b.shape)
    if (a.ndim == 0) != (b.ndim == 0) and a.dtype != b.dtype:
        z, d = (a, b) if a.ndim == 0 else (b, a)
        if _category(z.dtype) <= _category(d.dtype):
            z = z.astype(d.dtype)
        else:
            d = d.astype(z.dtype)
        return (z, d) if a.ndim == 0 else (d, z)
    fa, fb = _is_float(a.dtype), _is_float(b.dtype)
    if fa and not fb:
        b = b.astype(a.dtype)
    elif fb and not fa:
        a = a.astype(b.dtype)
    return a, b


def check_broadcast(sa: tuple, sb: tuple) -> None:
    """Raise PyTorch's RuntimeError when shapes ``sa`` and ``sb`` do not broadcast (the last such dimension
    named, counted in the broadcast shape, as PyTorch does)."""
    nd = max(len(sa), len(sb))
    for i in range(nd - 1, -1, -1):
        off = nd - 1 - i
        x = sa[len(sa) - 1 - off] if off < len(sa) else 1
        y = sb[len(sb) - 1 - off] if off < len(sb) else 1
        if x != y and x != 1 and y != 1:
            raise RuntimeError(
                f"The size of tensor a ({x}) must match the size of tensor b ({y}) at non-singleton dimension {i}"
            )


def _infer_dtype(data):
    """PyTorch's inference: Python floats -> float32, Python ints -> int64, bools -> bool."""
    if isinstance(data, np.generic):  # NumPy scalars keep their dtype (np.float64 is a float subclass)
        return None
    if isinstance(data, bool):
        return bool_
    if isinstance(data, int):
        return int64
    if isinstance(data, float):
        return default_float
    return None


class finfo:  # noqa: N801  (PyTorch's name)
    """Machine limits of a floating dtype (``torch.finfo``): ``bits``, ``eps``, ``max``, ``min``, ``tiny`` (=
    ``smallest_normal``) and ``resolution`` as Python floats; the default dtype when none is given."""

    def __init__(self, type=None) -> None:  # noqa: A002
        dt = default_float if type is None else as_dtype(type)
        if not _is_float(dt):
            raise TypeError(f"finfo: expected a floating-point dtype, got {dt}")
        f = np.finfo(dt)
        self.dtype = _TORCH_NAMES[dt]
        self.bits = int(f.bits)
        self.eps, self.max, self.min = float(f.eps), float(f.max), float(f.min)
        self.tiny = self.smallest_normal = float(f.smallest_normal)
        self.resolution = 10.0 ** -int(f.precision)

    def __repr__(self) -> str:
        return (f"finfo(resolution={self.resolution:g}, min={self.min:g}, max={self.max:g}, eps={self.eps:g}, "
                f"smallest_normal={self.smallest_normal:g}, tiny={self.tiny:g}, dtype={self.dtype})")  # fmt: skip


class iinfo:  # noqa: N801
    """Limits of an integer dtype (``torch.iinfo``): ``bits``, ``max``, ``min`` as Python ints."""

    def __init__(self, type) -> None:  # noqa: A002
        dt = as_dtype(type)
        if dt.kind not in "iub":
            raise TypeError(f"iinfo: expected an integer dtype, got {dt}")
        i = np.iinfo(np.uint8 if dt.kind == "b" else dt)
        self.dtype, self.bits, self.max, self.min = _TORCH_NAMES[dt], int(i.bits), int(i.max), int(i.min)

    def __repr__(self) -> str:
        return f"iinfo(min={self.min}, max={self.max}, dtype={self.dtype})"
