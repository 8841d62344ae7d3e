"""``repr(tensor)`` in PyTorch's layout: ``tensor([1.5000, 2.0000], dtype=gpunn.float64, requires_grad=True)``."""

from __future__ import annotations

import numpy as np

from gpunn.dtypes import bool_, dtype_name, float32, int64


def _float_format(values: np.ndarray):
    """PyTorch's choice: integers as ``3.``, moderate values with 4 decimals, a wide range in scientific."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return lambda v: f"{v}"
    if np.all(finite == np.round(finite)) and np.max(np.abs(finite)) < 1e8:
        return lambda v: f"{v:.0f}." if np.isfinite(v) else f"{v}"
    big, small = np.max(np.abs(finite)), np.min(np.abs(finite[finite != 0])) if np.any(finite != 0) else 1.0
    if big >= 1e8 or big / small > 1000 or small < 1e-4:
        return lambda v: f"{v:.4e}" if np.isfinite(v) else f"{v}"
    return lambda v: f"{v:.4f}" if np.isfinite(v) else f"{v}"


def array_body(a: np.ndarray, prefix: str = "tensor(") -> str:
    if a.dtype.kind == "f":
        fmt = _float_format(a.astype(np.float64, copy=False))
        strs = np.vectorize(fmt, otypes=[object])(a) if a.size else np.empty(a.shape, dtype=object)
    elif a.dtype.kind == "b":
        strs = np.where(a, "True", "False").astype(object)
    else:
        strs = a.astype(object).astype(str).astype(object)
    if a.dtype.kind == "f" and np.isfinite(a).any():  # the column width comes from the finite values
        width = max(len(s) for s, ok in zip(strs.ravel(), np.isfinite(a).ravel()) if ok)
    else:
        width = max((len(s) for s in strs.ravel()), default=0)
    return np.array2string(
        strs,
        separator=", ",
        prefix=prefix,
        threshold=1000,
        edgeitems=3,
        formatter={"all": lambda s: str(s).rjust(width)},
        max_line_width=80,
    )


def tensor_repr(t) -> str:
    a = t._backend.to_numpy(t._data)
    body = array_body(a)
    extra = ""
    if t._backend.name != "numpy":
        extra += f", device='{t.device}'"
    if t.dtype not in (float32, int64, bool_) or a.size == 0:
        extra += f", size={tuple(a.shape)}" if a.size == 0 and a.ndim > 1 else ""
        if t.dtype not in (float32, int64, bool_):
            extra += f", dtype={dtype_name(t.dtype)}"
    if t.requires_grad:
        extra += f", grad_fn=<{t._op}>" if t._op else ", requires_grad=True"
    return f"tensor({body}{extra})"
