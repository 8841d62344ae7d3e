"""Tensor creation: ``tensor``, ``from_numpy``, ``zeros``, ``ones``, ``randn``, ``rand``, ``full``,
``arange``, ``eye``, the ``*_like`` variants, and ``cat``/``stack``/``where``."""

from __future__ import annotations

import numpy as np

from gpunn.backend import Backend, backend_for, get_backend
from gpunn.dtypes import _infer_dtype, as_dtype, default_float
from gpunn.ops.shape import cat, concat, no_out, stack, where  # noqa: F401  (joining ops live with the shape ops)
from gpunn.tensor import Tensor, _owned_copy

__all__ = [
    "tensor",
    "from_numpy",
    "from_dlpack",
    "as_tensor",
    "zeros",
    "ones",
    "full",
    "empty",
    "randn",
    "rand",
    "randint",
    "randperm",
    "arange",
    "linspace",
    "logspace",
    "normal",
    "eye",
    "zeros_like",
    "ones_like",
    "full_like",
    "empty_like",
    "randn_like",
    "rand_like",
    "randint_like",
    "cat",
    "concat",
    "stack",
    "where",
]


def _backend_arg(backend=None, device=None) -> Backend:
    """The backend of ``device=`` ('cpu', 'cuda', gpunn.device) or ``backend=`` (a backend name), else the
    current default."""
    if device is not None:
        if backend is not None:
            raise TypeError("give device= or backend=, not both")
        from gpunn.device import backend_of

        return backend_of(device)
    return get_backend() if backend is None else backend_for(backend)


def _shape(size) -> tuple:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    for n in size:
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"size must be non-negative ints, got {size}")
    return tuple(int(n) for n in size)


def _finish(data, be, requires_grad):
    if requires_grad and data.dtype.kind != "f":
        raise RuntimeError(f"Only Tensors of floating point dtype can require gradients, got {data.dtype}")
    t = Tensor._wrap(data, be)
    if requires_grad:
        t.requires_grad_(True)
    return t


def tensor(data, dtype=None, requires_grad: bool = False, *, device=None, pin_memory=False, backend=None) -> Tensor:
    """A new tensor holding a copy of ``data`` (lists, scalars, NumPy arrays, tensors).

    Python floats become float32 and ints int64, as in PyTorch; arrays keep their dtype. ``pin_memory`` is
    accepted and has no effect (page-locking only speeds host-to-GPU copies; the values are the same)."""
    be = _backend_arg(backend, device)
    dtype = None if dtype is None else as_dtype(dtype)
    if isinstance(data, Tensor):
        src = data._backend.to_numpy(data._data) if data._backend is not be else data._data
        arr = be.asarray(src, dtype=dtype).copy()
    else:
        if isinstance(data, (list, tuple)) and any(isinstance(d, Tensor) for d in data):
            data = [d.tolist() if isinstance(d, Tensor) else d for d in data]  # [t1, t2] of 0-d tensors
        if dtype is None:
            dtype = _infer_dtype(data)
            if dtype is None and isinstance(data, (list, tuple)):
                try:
                    probe = np.asarray(data)
                except ValueError as exc:
                    raise ValueError(
                        f"tensor(): nested lists must be rectangular (every row the same "
                        f"length), this one is ragged ({exc})"
                    ) from None
                if probe.dtype == np.float64:
                    dtype = default_float
                elif probe.dtype.kind not in "biufc":
                    raise TypeError(
                        "tensor(): could not make a numeric array from the data (ragged "
                        f"nested lists, or non-numeric items; got dtype {probe.dtype})"
                    )
        src = data if be.is_array(data) else np.asarray(data) if be.name == "numpy" else data
        if type(data).__module__.startswith("cupy") and be.name == "numpy":
            raise RuntimeError(
                "tensor(): got a CuPy array for the 'numpy' backend; call .get() on it first or use backend='cupy'"
            )
        arr = be.asarray(src, dtype=dtype)
        if arr.dtype.kind not in "biufc":
            raise TypeError(f"tensor(): data must be numeric or bool, got dtype {arr.dtype}")
        arr = _owned_copy(arr, src, be)
    return _finish(arr, be, requires_grad)


def as_tensor(data, dtype=None, *, device=None, backend=None) -> Tensor:
    """Like ``tensor`` but shares memory with a NumPy array (or tensor) when it can."""
    be = _backend_arg(backend, device)
    dtype = None if dtype is None else as_dtype(dtype)
    if isinstance(data, Tensor):
        return data.to(be, dtype=dtype)
    if isinstance(data, (list, tuple, int, float, bool)):
        return tensor(data, dtype=dtype, backend=be)
    return Tensor._wrap(be.asarray(data, dtype=dtype), be)


def from_numpy(ndarray: np.ndarray, *, backend=None) -> Tensor:
    """A tensor from a NumPy array: shares its memory on the numpy backend, copies to the GPU otherwise."""
    if not isinstance(ndarray, np.ndarray):
        raise TypeError(f"from_numpy(): expected a numpy.ndarray, got {type(ndarray).__name__}")
    be = _backend_arg(backend)
    return Tensor._wrap(be.asarray(ndarray), be)


_DLPACK_CPU, _DLPACK_CUDA = 1, 2


def from_dlpack(ext_tensor, *, device=None, copy=None, backend=None) -> Tensor:
    """A tensor sharing memory with any DLPack producer (a torch tensor, CuPy or NumPy array...).

    The backend follows the producer's device (CPU -> numpy, CUDA -> cupy) unless ``device`` (or gpunn's
    ``backend``) is given; asking for another device raises instead of copying silently. ``copy=True``
    returns a copy; ``copy=False`` and None share the memory."""
    obj = ext_tensor
    if not hasattr(obj, "__dlpack__"):
        raise TypeError(f"from_dlpack(): {type(obj).__name__} does not support the DLPack protocol")
    device_type = obj.__dlpack_device__()[0] if hasattr(obj, "__dlpack_device__") else _DLPACK_CPU
    natural = "numpy" if device_type == _DLPACK_CPU else "cupy" if device_type == _DLPACK_CUDA else None
    if natural is None:
        raise RuntimeError(f"from_dlpack(): unsupported DLPack device type {device_type}")
    be = backend_for(natural) if backend is None and device is None else _backend_arg(backend, device)
    if be.name != natural:
        raise RuntimeError(
            f"from_dlpack(): the data lives on {'the CPU' if natural == 'numpy' else 'a GPU'} "
            f"but {'device ' + str(device) if device is not None else 'backend ' + repr(be.name)} was asked for; "
            "move it with .to() after import"
        )
    out = Tensor._wrap(be.xp.from_dlpack(obj), be)
    return out.clone() if copy else out


def _float_dtype(dtype):
    return default_float if dtype is None else as_dtype(dtype)


def zeros(*size, out=None, dtype=None, layout=None, device=None, requires_grad=False, pin_memory=False, backend=None,
          generator=None) -> Tensor:  # fmt: skip
    _unsupported("zeros", out, generator, layout)
    be = _backend_arg(backend, device)
    return _finish(be.xp.zeros(_shape(size), dtype=_float_dtype(dtype)), be, requires_grad)


def ones(*size, out=None, dtype=None, layout=None, device=None, requires_grad=False, pin_memory=False, backend=None,
         generator=None) -> Tensor:  # fmt: skip
    _unsupported("ones", out, generator, layout)
    be = _backend_arg(backend, device)
    return _finish(be.xp.ones(_shape(size), dtype=_float_dtype(dtype)), be, requires_grad)


def empty(*size, out=None, dtype=None, layout=None, device=None, requires_grad=False, pin_memory=False,
          memory_format=None, backend=None) -> Tensor:  # fmt: skip
    """Zeros (gpunn never hands out uninitialised memory)."""
    _unsupported("empty", out, None, layout)
    return zeros(*size, dtype=dtype, requires_grad=requires_grad, backend=backend, device=device)


def full(size, fill_value, dtype=None, requires_grad=False, *, out=None, layout=None, device=None, pin_memory=False,
         backend=None) -> Tensor:  # fmt: skip
    _unsupported("full", out, None, layout)
    be = _backend_arg(backend, device)
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()
    if dtype is None:
        dtype = _infer_dtype(fill_value) or default_float
    dtype = as_dtype(dtype)
    return _finish(be.xp.full(_shape((size,)), fill_value, dtype=dtype), be, requires_grad)


def randn(*size, generator=None, out=None, dtype=None, layout=None, device=None, requires_grad=False, pin_memory=False,
          backend=None) -> Tensor:  # fmt: skip
    """Standard normal samples from the backend's seeded generator."""
    _unsupported("randn", out, generator, layout)
    be = _backend_arg(backend, device)
    return _finish(be.randn(_shape(size), _float_dtype(dtype)), be, requires_grad)


def rand(*size, generator=None, out=None, dtype=None, layout=None, device=None, requires_grad=False, pin_memory=False,
         backend=None) -> Tensor:  # fmt: skip
    """Uniform samples on [0, 1) from the backend's seeded generator."""
    _unsupported("rand", out, generator, layout)
    be = _backend_arg(backend, device)
    return _finish(be.rand(_shape(size), _float_dtype(dtype)), be, requires_grad)


def randint(low, high=None, size=(), *, generator=None, out=None, dtype=None, layout=None, device=None,
            requires_grad=False, pin_memory=False, backend=None) -> Tensor:  # fmt: skip
    """Integers uniform on [low, high) (int64 unless ``dtype``): ``randint(10, (3,))``, ``randint(2, 5, (3,))``."""
    _unsupported("randint", out, generator, layout)
    if high is None:
        low, high = 0, low
    elif isinstance(high, (tuple, list)) and size == ():  # randint(high, size)
        low, high, size = 0, low, high
    if high <= low:
        raise RuntimeError(f"random_ expects 'from' to be less than 'to', but got from={low} >= to={high}")
    be = _backend_arg(backend, device)
    data = be.randint(low, high, _shape((size,)) if size != () else ())
    if dtype is not None:
        data = data.astype(as_dtype(dtype))
    return _finish(data, be, requires_grad)


def randperm(n, *, generator=None, out=None, dtype=None, layout=None, device=None, requires_grad=False,
             pin_memory=False, backend=None) -> Tensor:  # fmt: skip
    """A random permutation of 0..n-1 (int64 unless ``dtype``) from the backend's seeded generator."""
    _unsupported("randperm", out, generator, layout)
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise RuntimeError(f"randperm: n must be a non-negative int, got {n!r}")
    be = _backend_arg(backend, device)
    data = be.permutation(int(n)).astype(np.int64 if dtype is None else as_dtype(dtype))
    return _finish(data, be, requires_grad)


def arange(start, end=None, step=1, dtype=None, requires_grad=False, *, out=None, layout=None, device=None,
           pin_memory=False, backend=None) -> Tensor:  # fmt: skip
    """start, start + step, ... below end (``arange(end)`` from 0); int64 unless a bound is a float."""
    _unsupported("arange", out, None, layout)
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError("arange: step must be non-zero")
    if dtype is None:
        dtype = default_float if any(isinstance(v, float) for v in (start, end, step)) else np.int64
    dtype = as_dtype(dtype)
    be = _backend_arg(backend, device)
    return _finish(be.xp.arange(start, end, step, dtype=dtype), be, requires_grad)


def eye(n, m=None, dtype=None, *, out=None, layout=None, device=None, requires_grad=False, pin_memory=False,
        backend=None) -> Tensor:  # fmt: skip
    """The n x m (n x n) identity."""
    _unsupported("eye", out, None, layout)
    be = _backend_arg(backend, device)
    return _finish(be.xp.eye(n, m, dtype=_float_dtype(dtype)), be, requires_grad)


def linspace(start, end, steps: int, dtype=None, requires_grad=False, *, out=None, layout=None, device=None,
             pin_memory=False, backend=None) -> Tensor:  # fmt: skip
    """``steps`` evenly spaced values from start to end inclusive (float32 by default)."""
    _unsupported("linspace", out, None, layout)
    if steps < 0:
        raise RuntimeError("linspace(): number of steps must be non-negative")
    be = _backend_arg(backend, device)
    data = np.linspace(float(start), float(end), int(steps), dtype=np.float64).astype(_float_dtype(dtype))
    return _finish(be.asarray(data), be, requires_grad)


def logspace(start, end, steps: int, base: float = 10.0, dtype=None, requires_grad=False, *, out=None, layout=None,
             device=None, pin_memory=False, backend=None) -> Tensor:  # fmt: skip
    """``base ** linspace(start, end, steps)``."""
    _unsupported("logspace", out, None, layout)
    be = _backend_arg(backend, device)
    data = np.logspace(float(start), float(end), int(steps), base=base, dtype=np.float64).astype(_float_dtype(dtype))
    return _finish(be.asarray(data), be, requires_grad)


def normal(mean=0.0, std=1.0, size=None, *, generator=None, out=None, dtype=None, layout=None, device=None,
           requires_grad=False, pin_memory=False, backend=None) -> Tensor:  # fmt: skip
    """Samples of N(mean, std^2): numbers with ``size``, or tensors of means/stds (broadcast)."""
    _unsupported("normal", out, generator, layout)
    if isinstance(mean, Tensor) or isinstance(std, Tensor):
        ref = mean if isinstance(mean, Tensor) else std
        shape = np.broadcast_shapes(getattr(mean, "shape", ()), getattr(std, "shape", ()))
        z = randn(*shape, dtype=ref.dtype if ref.dtype.kind == "f" else dtype, backend=ref._backend)
        return (z * std + mean).detach()
    if size is None:
        raise TypeError("normal(): with number mean and std, give size=")
    be = _backend_arg(backend, device)
    data = be.normal(_shape((size,)) if not isinstance(size, int) else (size,), mean, std, _float_dtype(dtype))
    return _finish(data, be, requires_grad)


def _unsupported(fname: str, out=None, generator=None, layout=None) -> None:
    """PyTorch factory keywords gpunn takes but cannot honour: each raises naming itself (never ignored)."""
    no_out(fname, out)
    if generator is not None:
        raise NotImplementedError(f"{fname}(): generator= is not supported by gpunn; seed with gpunn.manual_seed")
    if layout is not None:
        raise NotImplementedError(f"{fname}(): layout={layout!r} is not supported by gpunn (dense tensors only)")


# ``*_like(input, ...)``: input's shape, and its dtype and device unless given. ``memory_format`` is accepted
# and has no effect: gpunn's new tensors are always contiguous, which changes no value.
def _like(input: Tensor, fn, dtype, requires_grad, device=None, fname="", generator=None, layout=None):  # noqa: A002
    _unsupported(fname, None, generator, layout)
    if not isinstance(input, Tensor):
        raise TypeError(f"{fname}(): argument 'input' must be a gpunn Tensor, got {type(input).__name__}")
    dtype = input.dtype if dtype is None else as_dtype(dtype)
    be = input._backend if device is None else _backend_arg(None, device)
    return _finish(fn(be, input.shape, dtype), be, requires_grad)


def zeros_like(input, dtype=None, requires_grad=False, device=None, memory_format=None, *, layout=None,  # noqa: A002
               pin_memory=False) -> Tensor:  # fmt: skip
    return _like(input, lambda be, s, d: be.xp.zeros(s, dtype=d), dtype, requires_grad, device, "zeros_like",
                 layout=layout)  # fmt: skip


def ones_like(input, dtype=None, requires_grad=False, device=None, memory_format=None, *, layout=None,  # noqa: A002
              pin_memory=False) -> Tensor:  # fmt: skip
    return _like(input, lambda be, s, d: be.xp.ones(s, dtype=d), dtype, requires_grad, device, "ones_like",
                 layout=layout)  # fmt: skip


def full_like(input, fill_value, dtype=None, requires_grad=False, device=None, memory_format=None, *,  # noqa: A002
              layout=None, pin_memory=False) -> Tensor:  # fmt: skip
    return _like(input, lambda be, s, d: be.xp.full(s, fill_value, dtype=d), dtype, requires_grad, device,
                 "full_like", layout=layout)  # fmt: skip


def randn_like(input, dtype=None, requires_grad=False, device=None, memory_format=None, *, generator=None,  # noqa: A002
               layout=None, pin_memory=False) -> Tensor:  # fmt: skip
    return _like(input, lambda be, s, d: be.randn(s, d), dtype, requires_grad, device, "randn_like", generator,
                 layout)  # fmt: skip


def rand_like(input, dtype=None, requires_grad=False, device=None, memory_format=None, *, generator=None,  # noqa: A002
              layout=None, pin_memory=False) -> Tensor:  # fmt: skip
    return _like(input, lambda be, s, d: be.rand(s, d), dtype, requires_grad, device, "rand_like", generator,
                 layout)  # fmt: skip


def empty_like(input, dtype=None, requires_grad=False, device=None, memory_format=None, *, layout=None,  # noqa: A002
               pin_memory=False) -> Tensor:  # fmt: skip
    return zeros_like(input, dtype, requires_grad, device, layout=layout)


def randint_like(input, low=0, high=None, *, generator=None, dtype=None, layout=None, device=None,  # noqa: A002
                 requires_grad=False, memory_format=None, pin_memory=False) -> Tensor:  # fmt: skip
    """Integers uniform on [low, high) in input's shape (and dtype unless ``dtype``): ``randint_like(t, 10)``."""
    if high is None:
        low, high = 0, low
    return _like(input, lambda be, s, d: be.randint(low, high, s).astype(d), dtype, requires_grad, device,
                 "randint_like", generator, layout)  # fmt: skip


def multinomial(input, num_samples: int, replacement: bool = False, *, generator=None, out=None) -> Tensor:  # noqa: A002
    """``num_samples`` category indices (int64) per row of ``input`` (1-D (C,) or 2-D (N, C) non-negative
    weights, not necessarily normalised), drawn from the backend's seeded generator: with ``replacement``
    by inverting each row's CDF, without it by the exponential race (the categories ordered by E / w,
    E ~ Exp(1): the same distribution as drawing one at a time and removing it)."""
    _unsupported("multinomial", out, generator)
    if not isinstance(input, Tensor):
        raise TypeError(f"multinomial(): argument 'input' must be a gpunn Tensor, got {type(input).__name__}")
    if input.ndim not in (1, 2) or input.dtype.kind != "f":
        raise RuntimeError(f"multinomial: prob_dist must be a 1 or 2 dim float tensor, got {input.dtype} {input.shape}")
    be, xp = input._backend, input._backend.xp
    w = input._data.reshape(-1, input.shape[-1]).astype(np.float64)
    n_cat = w.shape[1]
    if not bool(xp.isfinite(w).all()) or bool((w < 0).any()):
        raise RuntimeError("multinomial: probability tensor contains either `inf`, `nan` or element < 0")
    if n_cat == 0 or bool((w.sum(axis=1) <= 0).any()):
        raise RuntimeError("multinomial: invalid multinomial distribution (sum of probabilities <= 0)")
    if num_samples <= 0:
        raise RuntimeError(f"multinomial: cannot sample n_sample <= 0 samples (got {num_samples})")
    if not replacement:
        if num_samples > n_cat:
            raise RuntimeError("multinomial: cannot sample n_sample > prob_dist.size(-1) samples without replacement")
        u = be.rand(w.shape, np.float64)
        with np.errstate(divide="ignore"):
            keys = -xp.log1p(-u) / w  # Exp(1) / w: inf where w == 0, so those come last (as in PyTorch)
        idx = xp.argsort(keys, axis=1, kind="stable")[:, :num_samples]
    else:
        cdf = xp.cumsum(w, axis=1)
        cdf /= cdf[:, -1:]
        u = be.rand((w.shape[0], num_samples), np.float64)
        idx = xp.minimum((u[:, :, None] >= cdf[:, None, :]).sum(axis=2), n_cat - 1)  # cdf entries <= u
    idx = idx.astype(np.int64)
    return Tensor._wrap(idx.reshape(num_samples) if input.ndim == 1 else idx, be)


def bernoulli(input, p=None, *, generator=None, out=None) -> Tensor:  # noqa: A002
    """0/1 samples, 1 with probability ``input`` (or ``p``) per element, in input's dtype, from the backend's
    seeded generator. Not differentiable."""
    _unsupported("bernoulli", out, generator)
    if not isinstance(input, Tensor) or input.dtype.kind != "f":
        raise RuntimeError("bernoulli: expected a floating-point tensor of probabilities")
    be = input._backend
    probs = input._data if p is None else be.xp.full(input.shape, float(p), dtype=input.dtype)
    if bool(((probs < 0) | (probs > 1)).any()) or bool(be.xp.isnan(probs).any()):
        raise RuntimeError("bernoulli: all elements of the probabilities must be in [0, 1]")
    u = be.rand(input.shape, np.float64)
    return Tensor._wrap((u < probs).astype(input.dtype), be)
