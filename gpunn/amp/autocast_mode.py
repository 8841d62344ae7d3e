"""``torch.autocast``: gpunn has no mixed precision, so autocast is honoured only where it changes nothing.

- ``enabled=False``, and every autocast that PyTorch itself disables (device 'cuda' while CUDA is unavailable:
  a UserWarning; a dtype other than float16/bfloat16 on another device: a UserWarning), is a no-op, as there.
- An enabled autocast on a device gpunn computes on ('cpu' always, 'cuda' when ``gpunn.cuda.is_available()``)
  would run matmuls and convolutions in float16/bfloat16 under PyTorch: entering it raises NotImplementedError
  rather than silently computing in float32.
- An enabled autocast for a device type gpunn has no tensors on ('mps', 'xpu', ...) is recorded
  (``is_autocast_enabled('mps')`` is True inside) and affects nothing, as in PyTorch's CPU build.

The state is per thread and per device type, as PyTorch's.

>>> with gpunn.autocast("cuda"):   # on a machine without CUDA: UserWarning, float32 as in PyTorch
...     loss = model(x).sum()
"""

from __future__ import annotations

import functools
import threading
import warnings

import numpy as np

__all__ = [
    "autocast",
    "is_autocast_available",
    "is_autocast_enabled",
    "get_autocast_dtype",
    "custom_fwd",
    "custom_bwd",
]


class _MissingDtype:
    """A dtype PyTorch has and gpunn does not (bfloat16): autocast's default on some devices."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self):
        return self.name


_BFLOAT16 = _MissingDtype("bfloat16")
_FLOAT16 = np.dtype(np.float16)

# the device types PyTorch's autocast accepts, with its default dtype for each
_DEFAULT_DTYPE = {
    "cpu": _BFLOAT16,
    "cuda": _FLOAT16,
    "mps": _FLOAT16,
    "xpu": _FLOAT16,
    "ipu": _FLOAT16,
    "mtia": _FLOAT16,
    "hpu": _BFLOAT16,
    "xla": _BFLOAT16,
    "maia": _BFLOAT16,
}


class _State(threading.local):
    def __init__(self):
        self.enabled: dict[str, bool] = {}
        self.dtype: dict = {}


_state = _State()


def _device_type(device_type) -> str:
    if not isinstance(device_type, str):
        raise ValueError(f"Expected `device_type` of type `str`, got: `{type(device_type)}`")
    kind = device_type.split(":", 1)[0]
    if kind not in _DEFAULT_DTYPE:
        raise RuntimeError(
            f"autocast: unsupported device_type {device_type!r}; PyTorch's autocast accepts {sorted(_DEFAULT_DTYPE)}"
        )
    return kind


def _computes_here(kind: str) -> bool:
    """Whether gpunn has tensors of this device type on this machine (so autocast there would change math)."""
    if kind == "cpu":
        return True
    if kind == "cuda":
        from gpunn import cuda

        return cuda.is_available()
    return False


def _is_fast(dtype) -> bool:
    """float16 or bfloat16: the dtypes autocast runs in (PyTorch disables it for any other)."""
    return dtype is _BFLOAT16 or (isinstance(dtype, np.dtype) and dtype == _FLOAT16)


def _dtype_name(dtype) -> str:
    return f"gpunn.{dtype.name}" if isinstance(dtype, np.dtype) else repr(dtype)


def is_autocast_available(device_type: str) -> bool:
    """True for the device types PyTorch's autocast accepts ('cpu', 'cuda', 'mps', ...)."""
    return isinstance(device_type, str) and device_type.split(":", 1)[0] in _DEFAULT_DTYPE


def is_autocast_enabled(device_type: str | None = None) -> bool:
    """Whether an enabled autocast region for ``device_type`` ('cuda' when omitted, as PyTorch) is active."""
    kind = _device_type("cuda" if device_type is None else device_type)
    return _state.enabled.get(kind, False)


def get_autocast_dtype(device_type: str):
    """The dtype autocast uses on ``device_type``; bfloat16 (the CPU default) does not exist in gpunn and raises."""
    kind = _device_type(device_type)
    dtype = _state.dtype.get(kind, _DEFAULT_DTYPE[kind])
    if dtype is _BFLOAT16:
        raise NotImplementedError(f"autocast's dtype on {kind!r} is bfloat16, which gpunn does not have")
    return dtype


def _as_dtype(dtype):
    """gpunn/NumPy dtypes as NumPy dtypes, PyTorch's float16/bfloat16 as gpunn's; anything else (a string too,
    which PyTorch does not take for a dtype) is kept as given and disables autocast with a warning."""
    if isinstance(dtype, str):
        return dtype
    name = str(dtype)
    if name in ("torch.float16", "torch.bfloat16"):
        return _FLOAT16 if name == "torch.float16" else _BFLOAT16
    try:
        return np.dtype(dtype)
    except TypeError:
        return dtype


class autocast:  # noqa: N801  (PyTorch's name)
    """``with autocast(device_type, dtype=None, enabled=True, cache_enabled=None):`` or ``@autocast(...)``."""

    _warn_stacklevel = 2

    def __init__(self, device_type: str, dtype=None, enabled: bool = True, cache_enabled: bool | None = None):
        self.device = device_type
        kind = _device_type(device_type)
        self._kind = kind
        self.fast_dtype = _DEFAULT_DTYPE[kind] if dtype is None else _as_dtype(dtype)
        self._cache_enabled = True if cache_enabled is None else bool(cache_enabled)
        if enabled:
            from gpunn import cuda

            if kind == "cuda" and not cuda.is_available():
                warnings.warn(
                    "CUDA is not available. Disabling autocast.", UserWarning, stacklevel=self._warn_stacklevel
                )
                enabled = False
            elif kind != "cuda" and not _is_fast(self.fast_dtype):
                warnings.warn(
                    f"In {kind.upper()} autocast, but the target dtype {self.fast_dtype} is not supported. "
                    "Disabling autocast (it supports bfloat16 and float16).",
                    UserWarning,
                    stacklevel=self._warn_stacklevel,
                )
                enabled = False
        self._enabled = bool(enabled)
        self._previous: list = []  # a stack: a decorated function may recurse

    def __enter__(self):
        if self._enabled and _computes_here(self._kind):
            raise NotImplementedError(
                f"autocast(device_type={self.device!r}, dtype={_dtype_name(self.fast_dtype)}) is not supported by "
                "gpunn: it has no mixed precision, and PyTorch would run this region's matmuls and convolutions in "
                f"{_dtype_name(self.fast_dtype)}; remove the autocast (float32 training) or pass enabled=False"
            )
        self._previous.append((_state.enabled.get(self._kind, False), _state.dtype.get(self._kind)))
        _state.enabled[self._kind] = self._enabled
        _state.dtype[self._kind] = self.fast_dtype
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        enabled, dtype = self._previous.pop()
        _state.enabled[self._kind] = enabled
        if dtype is None:
            _state.dtype.pop(self._kind, None)
        else:
            _state.dtype[self._kind] = dtype
        return False

    def __call__(self, func):
        if not callable(func):
            raise TypeError(
                f"autocast()(func) requires a callable, but got {type(func).__name__}; "
                "as a context manager write `with autocast(device_type=...):`"
            )

        @functools.wraps(func)
        def run_under_autocast(*args, **kwargs):
            with self:
                return func(*args, **kwargs)

        return run_under_autocast


def custom_fwd(fwd=None, *, device_type: str, cast_inputs=None):
    """``@custom_fwd(device_type=...)`` on an autograd Function's ``forward``: records the autocast state for
    ``custom_bwd``. Inside an enabled region with ``cast_inputs``, forward runs with autocast disabled and its
    floating tensors of that device type cast, as PyTorch; gpunn's enabled regions are only for device types it
    has no tensors on, so there is nothing to cast."""
    if not isinstance(device_type, str):
        raise ValueError(f"Expected `device_type` of type `str`, got: `{type(device_type)}`")
    if fwd is None:
        return functools.partial(custom_fwd, device_type=device_type, cast_inputs=cast_inputs)
    kind = _device_type(device_type)

    @functools.wraps(fwd)
    def decorate_fwd(*args, **kwargs):
        ctx = args[0]
        ctx._dtype = _state.dtype.get(kind, _DEFAULT_DTYPE[kind])
        enabled = _state.enabled.get(kind, False)
        ctx._fwd_used_autocast = enabled and cast_inputs is None
        if enabled and cast_inputs is not None:
            with autocast(device_type, enabled=False):
                return fwd(*args, **kwargs)
        return fwd(*args, **kwargs)

    return decorate_fwd


def custom_bwd(bwd=None, *, device_type: str):
    """``@custom_bwd(device_type=...)`` on ``backward``: runs it under the autocast state its forward saw."""
    if not isinstance(device_type, str):
        raise ValueError(f"Expected `device_type` of type `str`, got: `{type(device_type)}`")
    if bwd is None:
        return functools.partial(custom_bwd, device_type=device_type)

    @functools.wraps(bwd)
    def decorate_bwd(*args, **kwargs):
        ctx = args[0]
        with autocast(device_type, enabled=ctx._fwd_used_autocast, dtype=ctx._dtype):
            return bwd(*args, **kwargs)

    return decorate_bwd
