"""``gpunn.device``: PyTorch's device names over gpunn's backends.

``cpu`` is the numpy backend and ``cuda`` (``cuda:0``) the cupy backend; the backend names ``"numpy"`` and
``"cupy"`` are accepted wherever a device is. Asking for CUDA where no GPU is usable raises one error that
says why (no CuPy, no device, driver too old).

    >>> gpunn.device("cuda:0")
    device(type='cuda', index=0)
"""

from __future__ import annotations

from gpunn.backend import Backend, backend_for, cupy_available

__all__ = ["device", "backend_of", "device_of"]

_BACKEND_OF_TYPE = {"cpu": "numpy", "cuda": "cupy"}
_TYPE_OF_BACKEND = {"numpy": "cpu", "cupy": "cuda"}


class device:
    """A device: ``device("cpu")``, ``device("cuda")``, ``device("cuda:0")``, ``device("cuda", 0)``."""

    __slots__ = ("type", "index")

    def __init__(self, type, index=None):  # noqa: A002
        if isinstance(type, device):
            type, index = type.type, type.index if index is None else index
        elif isinstance(type, int) and not isinstance(type, bool):  # torch.device(0) is cuda:0
            type, index = "cuda", type
        elif not isinstance(type, str):
            raise TypeError(f"device(): expected a string like 'cpu' or 'cuda:0', got {type!r}")
        name = type.strip()
        if ":" in name:
            name, _, idx = name.partition(":")
            if index is not None:
                raise ValueError(f"device(): index given twice ({type!r} and index={index})")
            if not idx.isdigit():
                raise ValueError(f"device(): invalid device string {type!r} (expected 'cuda:N')")
            index = int(idx)
        name = _TYPE_OF_BACKEND.get(name, name)
        if name not in _BACKEND_OF_TYPE:
            raise RuntimeError(
                f"device(): unsupported device type {name!r}; gpunn has 'cpu' (numpy backend) and 'cuda' (cupy backend)"
            )
        if index is not None:
            index = int(index)
            if index < 0 or (name == "cpu" and index != 0):
                raise ValueError(f"device(): invalid index {index} for device type {name!r}")
        self.type = name
        self.index = index

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self) -> str:
        return (
            f"device(type='{self.type}')" if self.index is None else f"device(type='{self.type}', index={self.index})"
        )

    def __eq__(self, other) -> bool:
        if isinstance(other, device):
            return (self.type, self.index) == (other.type, other.index)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.type, self.index))


def _cuda_error() -> RuntimeError:
    why = cupy_available()[1]
    return RuntimeError(
        f"CUDA is not available: {why}. Use device 'cpu' (the numpy backend), or check gpunn.cuda.is_available() first"
    )


def backend_of(target) -> Backend:
    """The Backend for a device, a device string, a backend name or a Backend."""
    if isinstance(target, Backend):
        return target
    if isinstance(target, str) and target.strip().lower() == "auto":
        return backend_for("auto")
    dev = target if isinstance(target, device) else device(target)
    if dev.type == "cuda":
        ok, _ = cupy_available()
        if not ok:
            raise _cuda_error()
        be = backend_for("cupy")
        if dev.index not in (None, _current_cuda_index(be)):
            raise RuntimeError(
                f"device {dev}: gpunn uses one GPU per process (the current CUDA device, "
                f"cuda:{_current_cuda_index(be)}); select another with CUDA_VISIBLE_DEVICES"
            )
        return be
    return backend_for("numpy")


def _current_cuda_index(be) -> int:
    try:
        return int(be.xp.cuda.Device().id)
    except Exception:  # an emulated or partial CuPy
        return 0


def device_of(be: Backend) -> device:
    """The PyTorch device a backend's arrays live on."""
    if be.name == "numpy":
        return device("cpu")
    return device("cuda", _current_cuda_index(be))
