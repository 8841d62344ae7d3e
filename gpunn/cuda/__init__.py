"""``gpunn.cuda``: is a GPU usable (CuPy importable, a device present, a working driver)?

>>> device = "cuda" if gpunn.cuda.is_available() else "cpu"
"""

from __future__ import annotations

from gpunn.backend import cupy_available

__all__ = [
    "is_available",
    "device_count",
    "current_device",
    "synchronize",
    "manual_seed",
    "manual_seed_all",
    "why_unavailable",
    "is_bf16_supported",
]


def is_available() -> bool:
    return cupy_available()[0]


def why_unavailable() -> str:
    """Why ``is_available()`` is False ('' when it is True)."""
    return cupy_available()[1]


def is_bf16_supported(including_emulation: bool = True) -> bool:
    """False: gpunn has no bfloat16 dtype on any device (PyTorch's CPU build answers False too), so scripts that
    pick their AMP dtype with this query take float16."""
    return False


def device_count() -> int:
    if not is_available():
        return 0
    import cupy

    return int(cupy.cuda.runtime.getDeviceCount())


def current_device() -> int:
    from gpunn.device import _current_cuda_index, backend_of

    return _current_cuda_index(backend_of("cuda"))


def synchronize(device=None) -> None:
    if is_available():
        from gpunn.device import backend_of

        backend_of("cuda").synchronize()


def manual_seed(seed: int) -> None:
    """Seeds every backend (as ``gpunn.manual_seed``)."""
    from gpunn.backend import manual_seed as seed_all

    seed_all(seed)


manual_seed_all = manual_seed


def __getattr__(name):
    # gpunn.cuda.amp (PyTorch's deprecated AMP spellings) loads on first use
    if name == "amp":
        import importlib

        return importlib.import_module("gpunn.cuda.amp")
    raise AttributeError(f"module 'gpunn.cuda' has no attribute {name!r}")
