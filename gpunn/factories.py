"""Tensor creation: ``tensor``, ``from_numpy``, ``zeros``, ``ones``, ``randn``, ``rand``, ``full``,
``arange``, ``eye``, the ``*_like`` variants, and ``cat``/``stack``/``where``."""

from __future__ import annotations

import numpy as np

from gpunn.backend import Backend, backend_for, get_backend
from gpunn.tensor import (
    Tensor,
    _check_same_backend,
    _coerce,
    _infer_dtype,
    _unbroadcast,
    default_float,
)

__all__ = ["tensor", "from_numpy", "from_dlpack", "as_tensor", "zeros", "ones", "full", "empty", "randn", "rand",
           "randint", "arange", "eye", "zeros_like", "ones_like", "full_like", "randn_like", "rand_like",
           "cat", "stack", "where"]


def _backend_arg(backend) -> Backend:
    return get_backend() if backend is None else backend_for(backend)


def _shape(size) -> tuple:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    for n in size:
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"size must be non-negative ints, got {size}")
    return tuple(int(n) for n in size)


def _finish(data, be, requires_grad):
    t = Tensor._wrap(data, be)
    if requires_grad:
        t.requires_grad_(True)
    return t


def tensor(data, dtype=None, requires_grad: bool = False, backend=None) -> Tensor:
    """A new tensor holding a copy of ``data`` (lists, scalars, NumPy arrays, tensors).

    Python floats become float32 and ints int64, as in PyTorch; arrays keep their dtype."""
    be = _backend_arg(backend)
    if isinstance(data, Tensor):
        src = data._backend.to_numpy(data.data) if data._backend is not be else data.data
        arr = be.asarray(src, dtype=dtype).copy()
    else:
        if dtype is None:
            dtype = _infer_dtype(data)
            if dtype is None and isinstance(data, (list, tuple)):
                try:
                    probe = np.asarray(data)
                except ValueError as exc:
                    raise ValueError(f"tensor(): nested lists must be rectangular (every row the same "
                                     f"length), this one is ragged ({exc})") from None
                if probe.dtype == np.float64:
                    dtype = default_float
                elif probe.dtype.kind not in "biufc":
                    raise TypeError("tensor(): could not make a numeric array from the data (ragged "
                                    f"nested lists, or non-numeric items; got dtype {probe.dtype})")
        src = data if be.is_array(data) else np.asarray(data) if be.name == "numpy" else data
        if type(data).__module__.startswith("cupy") and be.name == "numpy":
            raise RuntimeError("tensor(): got a CuPy array for the 'numpy' backend; call .get() on it first "
                               "or use backend='cupy'")
        arr = be.asarray(src, dtype=dtype)
        if arr.dtype.kind not in "biufc":
            raise TypeError(f"tensor(): data must be numeric or bool, got dtype {arr.dtype}")
        if arr is src or (isinstance(src, np.ndarray) and np.shares_memory(arr, src)):
            arr = arr.copy()
    return _finish(arr, be, requires_grad)


def as_tensor(data, dtype=None, backend=None) -> Tensor:
    """Like ``tensor`` but shares memory with a NumPy array when it can."""
    be = _backend_arg(backend)
    if isinstance(data, Tensor):
        return data.to(be, dtype=dtype)
    return Tensor._wrap(be.asarray(data, dtype=dtype), be)


def from_numpy(array: np.ndarray, backend=None) -> Tensor:
    """A tensor from a NumPy array: shares its memory on the numpy backend, copies to the GPU otherwise."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy(): expected a numpy.ndarray, got {type(array).__name__}")
    be = _backend_arg(backend)
    return Tensor._wrap(be.asarray(array), be)


_DLPACK_CPU, _DLPACK_CUDA = 1, 2


def from_dlpack(obj, backend=None) -> Tensor:
    """A tensor sharing memory with any DLPack producer (a torch tensor, CuPy or NumPy array...).

    The backend follows the producer's device (CPU -> numpy, CUDA -> cupy) unless ``backend`` is given;
    asking for a backend on another device raises instead of copying silently."""
    if not hasattr(obj, "__dlpack__"):
        raise TypeError(f"from_dlpack(): {type(obj).__name__} does not support the DLPack protocol")
    device_type = obj.__dlpack_device__()[0] if hasattr(obj, "__dlpack_device__") else _DLPACK_CPU
    natural = "numpy" if device_type == _DLPACK_CPU else "cupy" if device_type == _DLPACK_CUDA else None
    if natural is None:
        raise RuntimeError(f"from_dlpack(): unsupported DLPack device type {device_type}")
    be = backend_for(natural) if backend is None else backend_for(backend)
    if be.name != natural:
        raise RuntimeError(f"from_dlpack(): the data lives on {'the CPU' if natural == 'numpy' else 'a GPU'} "
                           f"but backend {be.name!r} was asked for; move it with .to('{be.name}') after import")
    return Tensor._wrap(be.xp.from_dlpack(obj), be)


def _float_dtype(dtype):
    return default_float if dtype is None else np.dtype(dtype)


def zeros(*size, dtype=None, requires_grad=False, backend=None) -> Tensor:
    be = _backend_arg(backend)
    return _finish(be.xp.zeros(_shape(size), dtype=_float_dtype(dtype)), be, requires_grad)


def ones(*size, dtype=None, requires_grad=False, backend=None) -> Tensor:
    be = _backend_arg(backend)
    return _finish(be.xp.ones(_shape(size), dtype=_float_dtype(dtype)), be, requires_grad)


def empty(*size, dtype=None, requires_grad=False, backend=None) -> Tensor:
    return zeros(*size, dtype=dtype, requires_grad=requires_grad, backend=backend)


def full(size, fill_value, dtype=None, requires_grad=False, backend=None) -> Tensor:
    be = _backend_arg(backend)
    if dtype is None:
        dtype = _infer_dtype(fill_value) or default_float
    return _finish(be.xp.full(_shape((size,)), fill_value, dtype=dtype), be, requires_grad)


def randn(*size, dtype=None, requires_grad=False, backend=None) -> Tensor:
    """Standard normal samples from the backend's seeded generator."""
    be = _backend_arg(backend)
    return _finish(be.randn(_shape(size), _float_dtype(dtype)), be, requires_grad)


def rand(*size, dtype=None, requires_grad=False, backend=None) -> Tensor:
    """Uniform samples on [0, 1) from the backend's seeded generator."""
    be = _backend_arg(backend)
    return _finish(be.rand(_shape(size), _float_dtype(dtype)), be, requires_grad)


def randint(low, high=None, size=(), backend=None) -> Tensor:
    if high is None:
        low, high = 0, low
    be = _backend_arg(backend)
    return Tensor._wrap(be.randint(low, high, _shape((size,)) if size != () else ()), be)


def arange(start, end=None, step=1, dtype=None, requires_grad=False, backend=None) -> Tensor:
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError("arange: step must be non-zero")
    if dtype is None:
        dtype = default_float if any(isinstance(v, float) for v in (start, end, step)) else np.int64
    be = _backend_arg(backend)
    return _finish(be.xp.arange(start, end, step, dtype=dtype), be, requires_grad)


def eye(n, m=None, dtype=None, backend=None) -> Tensor:
    be = _backend_arg(backend)
    return Tensor._wrap(be.xp.eye(n, m, dtype=_float_dtype(dtype)), be)


def _like(t: Tensor, fn, dtype, requires_grad):
    dtype = t.dtype if dtype is None else np.dtype(dtype)
    return _finish(fn(t._backend, t.shape, dtype), t._backend, requires_grad)


def zeros_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return _like(t, lambda be, s, d: be.xp.zeros(s, dtype=d), dtype, requires_grad)


def ones_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return _like(t, lambda be, s, d: be.xp.ones(s, dtype=d), dtype, requires_grad)


def full_like(t: Tensor, fill_value, dtype=None, requires_grad=False) -> Tensor:
    return _like(t, lambda be, s, d: be.xp.full(s, fill_value, dtype=d), dtype, requires_grad)


def randn_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return _like(t, lambda be, s, d: be.randn(s, d), dtype, requires_grad)


def rand_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return _like(t, lambda be, s, d: be.rand(s, d), dtype, requires_grad)


def _tensors(seq, op):
    ts = list(seq)
    if not ts:
        raise ValueError(f"{op}: expected a non-empty sequence of tensors")
    for t in ts:
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: expected tensors, got {type(t).__name__}")
        _check_same_backend(ts[0], t, op)
    return ts


def cat(tensors, dim: int = 0) -> Tensor:
    """Concatenate along ``dim``; the gradient is split back into the pieces."""
    ts = _tensors(tensors, "cat")
    xp = ts[0]._backend.xp
    dim = ts[0]._dim(dim, "cat")
    # PyTorch's promotion: floats win over integers without widening (float32 + int64 -> float32)
    floats = [t.dtype for t in ts if t.dtype.kind == "f"]
    dtype = np.result_type(*floats) if floats else np.result_type(*[t.dtype for t in ts])
    out = xp.concatenate([t.data.astype(dtype, copy=False) for t in ts], axis=dim)
    bounds = np.cumsum([t.shape[dim] for t in ts])[:-1]
    return ts[0]._result(out, tuple(ts), lambda g: tuple(xp.split(g, bounds, axis=dim)), "CatBackward")


def stack(tensors, dim: int = 0) -> Tensor:
    ts = _tensors(tensors, "stack")
    return cat([t.unsqueeze(dim) for t in ts], dim)


def where(condition, input, other) -> Tensor:  # noqa: A002
    """Elementwise ``input if condition else other``; gradients flow to the chosen side."""
    base = input if isinstance(input, Tensor) else other
    if not isinstance(base, Tensor):
        raise TypeError("where: input or other must be a tensor")
    cond = condition.data if isinstance(condition, Tensor) else base._backend.asarray(condition)
    a = base._operand(input, "where")
    b = base._operand(other, "where")
    xp = base._backend.xp
    out = xp.where(cond, *_coerce(a.data, b.data))  # where(c, int_tensor, 0.5) -> float32, as in PyTorch

    def backward(g):
        ga = _unbroadcast(xp.where(cond, g, 0), a.shape) if a.requires_grad else None
        gb = _unbroadcast(xp.where(cond, 0, g), b.shape) if b.requires_grad else None
        return ga, gb

    return base._result(out, (a, b), backward, "WhereBackward")
