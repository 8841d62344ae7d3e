"""The CuPy backend: arrays on the GPU.

Until the handwritten kernels land, every primitive runs the ``xp``-generic reference with
``xp = cupy``. Imported only when the ``cupy`` backend is requested and a GPU is usable.
"""

from __future__ import annotations

import numpy as np

from gpunn.backend.base import Backend


class CupyBackend(Backend):
    name = "cupy"

    def __init__(self) -> None:
        import cupy

        self.xp = cupy
        super().__init__()

    @property
    def device(self) -> str:
        dev = self.xp.cuda.Device()
        props = self.xp.cuda.runtime.getDeviceProperties(dev.id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return f"cuda:{dev.id} ({name})"

    def asarray(self, data, dtype=None):
        return self.xp.asarray(data, dtype=dtype)

    def to_numpy(self, a) -> np.ndarray:
        return self.xp.asnumpy(a)

    def synchronize(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()

    def _make_rng(self, seed):
        return self.xp.random.default_rng(seed)

    def get_rng_state(self) -> dict:
        raise NotImplementedError("saving the cupy backend's RNG state is not supported yet")

    def set_rng_state(self, state: dict) -> None:
        raise NotImplementedError("restoring the cupy backend's RNG state is not supported yet")

    def randn(self, shape, dtype=np.float32):
        return self.rng.standard_normal(shape, dtype=dtype)

    def rand(self, shape, dtype=np.float32):
        return self.rng.random(shape, dtype=dtype)

    def permutation(self, n: int):
        return self.rng.permutation(n)

    def randint(self, low, high, shape):
        return self.rng.integers(low, high, size=shape).astype(self.xp.int64)

    def index_add(self, target, index, values) -> None:
        import cupyx

        cupyx.scatter_add(target, index, values)
