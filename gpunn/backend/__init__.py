"""The array layer: ``Backend`` objects, selection, and seeding.

``gpunn.set_backend("auto" | "numpy" | "cupy")``, the environment variable ``GPUNN_BACKEND``, and the
context manager ``with gpunn.backend("numpy"): ...`` choose where new tensors live. Ops run on the
backend of their inputs; mixing backends in one op raises. ``auto`` picks CuPy only when a GPU is
actually usable (CuPy imports and the CUDA runtime reports at least one device); otherwise NumPy.

Importing this module never imports CuPy or Numba.
"""

from __future__ import annotations

import contextvars
import os
import sys
import types
from contextlib import contextmanager

from gpunn.backend.base import Backend
from gpunn.backend.numpy_backend import NumpyBackend

__all__ = [
    "Backend",
    "NumpyBackend",
    "set_backend",
    "get_backend",
    "use_backend",
    "backend_for",
    "cupy_available",
    "manual_seed",
    "initial_seed",
    "seed",
    "get_rng_state",
    "set_rng_state",
    "BACKEND_NAMES",
]

BACKEND_NAMES = ("auto", "numpy", "cupy")

_instances: dict[str, Backend] = {}
_default: Backend | None = None
_override: contextvars.ContextVar[Backend | None] = contextvars.ContextVar("gpunn_backend", default=None)
_seed: int | None = None
_cupy_probe: tuple[bool, str] | None = None


def cupy_available() -> tuple[bool, str]:
    """(usable, reason): whether CuPy imports and sees a CUDA device. Cached after the first call."""
    global _cupy_probe
    if _cupy_probe is None:
        try:
            import cupy  # noqa: F401
        except Exception as exc:  # ImportError, or a broken CUDA install raising at import
            _cupy_probe = (
                False,
                f"CuPy is not importable ({type(exc).__name__}: {exc}); "
                "install the GPU extra: pip install 'gpunn[gpu]'",
            )
        else:
            try:
                count = cupy.cuda.runtime.getDeviceCount()
            except Exception as exc:
                _cupy_probe = (False, f"the CUDA runtime found no usable GPU ({type(exc).__name__}: {exc})")
            else:
                _cupy_probe = (True, "") if count > 0 else (False, "the CUDA runtime reports 0 devices")
    return _cupy_probe


def _instance(name: str) -> Backend:
    if name not in _instances:
        if name == "numpy":
            b: Backend = NumpyBackend()
        elif name == "cupy":
            ok, why = cupy_available()
            if not ok:
                raise RuntimeError(f"backend 'cupy' is not usable here: {why}")
            from gpunn.backend.cupy_backend import CupyBackend

            b = CupyBackend()
        else:
            raise ValueError(f"backend must be one of {BACKEND_NAMES}, got {name!r}")
        if _seed is not None:
            b.seed(_seed)
        _instances[name] = b
    return _instances[name]


def _resolve(name) -> Backend:
    if isinstance(name, Backend):
        return name
    if not isinstance(name, str):
        raise TypeError(f"backend must be a name {BACKEND_NAMES} or a Backend, got {type(name).__name__}")
    name = name.strip().lower()
    if name == "auto":
        return _instance("cupy" if cupy_available()[0] else "numpy")
    return _instance(name)


def set_backend(name="auto") -> Backend:
    """Make ``name`` the default backend for new tensors; returns the Backend object."""
    global _default
    _default = _resolve(name)
    return _default


def get_backend() -> Backend:
    """The backend new tensors are created on: the innermost ``use_backend`` block, else the default."""
    b = _override.get()
    if b is not None:
        return b
    global _default
    if _default is None:
        _default = _resolve(os.environ.get("GPUNN_BACKEND", "auto") or "auto")
    return _default


@contextmanager
def use_backend(name):
    """``with gpunn.backend("numpy"):`` -- new tensors inside the block live on that backend."""
    token = _override.set(_resolve(name))
    try:
        yield _override.get()
    finally:
        _override.reset(token)


def backend_for(name) -> Backend:
    """The Backend object for a name, without changing the default."""
    return _resolve(name)


def manual_seed(seed: int) -> None:
    """Seed every backend's random generator (those created later too), for reproducible runs."""
    global _seed
    if not isinstance(seed, (int,)) or isinstance(seed, bool):
        raise TypeError(f"manual_seed: seed must be an int, got {type(seed).__name__}")
    _seed = int(seed)
    for b in _instances.values():
        b.seed(_seed)


def initial_seed() -> int:
    """The seed last given to ``manual_seed`` (or drawn by ``seed()``); a fresh process draws one."""
    global _seed
    if _seed is None:
        seed()
    return _seed


def seed() -> int:
    """Seed every backend with a non-deterministic seed and return it (``torch.seed``)."""
    import secrets

    s = secrets.randbits(63)
    manual_seed(s)
    return s


def get_rng_state():
    """The CPU (numpy backend) generator's state as a uint8 tensor, for ``set_rng_state`` (as PyTorch)."""
    import json

    import numpy as np

    from gpunn.tensor import Tensor

    b = _instance("numpy")
    raw = np.frombuffer(json.dumps(b.get_rng_state()).encode(), dtype=np.uint8).copy()
    return Tensor._wrap(raw, b)


def set_rng_state(new_state) -> None:
    """Restore the CPU generator from a ``get_rng_state()`` tensor."""
    import json

    import numpy as np

    from gpunn.tensor import Tensor

    data = new_state._backend.to_numpy(new_state._data) if isinstance(new_state, Tensor) else np.asarray(new_state)
    if data.dtype != np.uint8 or data.ndim != 1:
        raise TypeError(f"set_rng_state: expected the uint8 tensor get_rng_state() returned, got {data.dtype}")
    try:
        state = json.loads(data.tobytes().decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise RuntimeError("set_rng_state: not a state that gpunn.get_rng_state() returned") from exc
    _instance("numpy").set_rng_state(state)


class _CallableModule(types.ModuleType):
    """Lets ``gpunn.backend`` be both this package and the context manager ``gpunn.backend("numpy")``."""

    def __call__(self, name):
        return use_backend(name)


sys.modules[__name__].__class__ = _CallableModule
