"""Numba CUDA kernels (a row-wise argmax accuracy count), and the NumPy reference of dropout's random stream.

Where Numba is simpler than CUDA C: short elementwise or per-row kernels written in Python. They take
any array with ``__cuda_array_interface__`` (CuPy arrays: launched on CuPy's current stream) and, under
``NUMBA_ENABLE_CUDASIM=1``, NumPy arrays. Importing this module imports neither Numba nor CuPy; the
kernels are compiled on first use.

Dropout RNG (the kernel is kernels/dropout.cu, CUDA C so a CUDA graph can capture it with its seed and
offset read from device memory): Philox-4x32-10 (Salmon et al., SC'11; Random123's known-answer vectors
are in the tests).
Element ``g = offset + i`` of the flattened tensor takes 32-bit word ``g % 4`` of
``philox(counter=(lo(g // 4), hi(g // 4), 0, 0), key=(lo(seed), hi(seed)))`` and is kept when
``word >> 8 >= ceil(p * 2**24)`` (keep probability ``1 - ceil(p * 2**24) / 2**24``, ``1 - p`` to
within 6e-8). So the mask depends only on ``(seed, offset, i)``: not on the launch shape, the dtype or
the device, and the backward pass regenerates it instead of storing it. ``dropout_mask_reference`` is
the NumPy implementation of the same stream.

    >>> import numpy as np
    >>> dropout_mask_reference(8, 0.5, seed=0).astype(int).tolist()
    [0, 1, 1, 1, 1, 0, 1, 0]
"""

from __future__ import annotations

import math
import sys

import numpy as np

PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57  # round multipliers
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85  # Weyl key increments
MASK32 = 0xFFFFFFFF
_kernels: dict | None = None
_launched: set = set()  # kernels that have run here at least once


class NumbaCudaUnavailable(RuntimeError):
    """Numba's CUDA target cannot import, compile or launch a kernel here (the first launch of each kernel
    failed, so it wrote nothing): the caller computes the same result another way."""


# ----------------------------------------------------------------------------------------------
# NumPy reference of the random stream
# ----------------------------------------------------------------------------------------------
def philox4x32_10(counter, key):
    """Philox-4x32-10 over arrays: counter (4, ...) and key (2, ...) of 32-bit values -> (4, ...) uint64
    holding 32-bit words."""
    m0, m1, w0, w1, mask = (np.uint64(v) for v in (PHILOX_M0, PHILOX_M1, PHILOX_W0, PHILOX_W1, MASK32))
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) & mask for c in counter)
    k0, k1 = (np.asarray(k, dtype=np.uint64) & mask for k in key)
    for _ in range(10):
        p0, p1 = m0 * c0, m1 * c2  # 32 x 32 -> 64 bits: never overflows uint64
        hi0, hi1 = p0 >> np.uint64(32), p1 >> np.uint64(32)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, p1 & mask, hi0 ^ c3 ^ k1, p0 & mask
        k0, k1 = (k0 + w0) & mask, (k1 + w1) & mask
    return np.stack(np.broadcast_arrays(c0, c1, c2, c3))


def keep_threshold(p: float) -> int:
    """Elements whose 24-bit draw is >= this are kept: ceil(p * 2**24), in [0, 2**24]."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    return min(1 << 24, math.ceil(p * (1 << 24)))


def dropout_mask_reference(n: int, p: float, seed: int, offset: int = 0) -> np.ndarray:
    """The keep mask (n,) bool of ``dropout`` for elements ``offset .. offset + n - 1``, on the host."""
    g = np.arange(offset, offset + n, dtype=np.uint64)
    q = g // np.uint64(4)
    seed = int(seed) & (2**64 - 1)
    words = philox4x32_10((q & np.uint64(MASK32), q >> np.uint64(32), 0, 0), (seed & MASK32, seed >> 32))
    word = np.take_along_axis(words, (g % np.uint64(4)).astype(np.int64)[None], axis=0)[0]
    return (word >> np.uint64(8)) >= np.uint64(keep_threshold(p))


# ----------------------------------------------------------------------------------------------
# kernels (compiled lazily)
# ----------------------------------------------------------------------------------------------
# The kernel bodies are plain module-level functions that name ``cuda`` as a module global: ``_build``
# binds it on first use (so importing this module never imports Numba), and the CUDA simulator can swap
# that global for its fake module, which it cannot do for a closure variable.
cuda = None


def _accuracy_count_kernel(logits, target, count):
    # One thread per row: first index of the row maximum (NumPy's argmax: NaN counts as the maximum),
    # compared with the label; matches are added to count[0].
    i = cuda.grid(1)
    if i < logits.shape[0]:
        best = 0
        best_v = logits[i, 0]
        for c in range(1, logits.shape[1]):
            v = logits[i, c]
            if v > best_v or (v != v and best_v == best_v):
                best_v = v
                best = c
        if best == target[i]:
            cuda.atomic.add(count, 0, 1)


KERNEL_FUNCTIONS = {"accuracy_count": _accuracy_count_kernel}


def _build() -> dict:
    """Import numba.cuda, bind the globals the kernels use, and jit them: {"name": dispatcher}."""
    global cuda
    from numba import cuda as numba_cuda

    cuda = numba_cuda
    return {name: cuda.jit(fn) for name, fn in KERNEL_FUNCTIONS.items()}


def kernels() -> dict:
    """{"accuracy_count": dispatcher} (memoized; compiled per signature)."""
    global _kernels
    if _kernels is None:
        _kernels = _build()
    return _kernels


def _stream_for(*arrays):
    """CuPy's current stream as a Numba stream when the arrays are CuPy's, else Numba's default (0)."""
    cupy = sys.modules.get("cupy")
    if cupy is not None and any(isinstance(a, cupy.ndarray) for a in arrays):
        from numba import cuda

        ptr = cupy.cuda.get_current_stream().ptr
        return cuda.external_stream(ptr) if ptr else cuda.default_stream()  # 0: the legacy null stream
    return 0


def _device_args(args) -> tuple:
    """CuPy (any ``__cuda_array_interface__``) arrays as Numba device arrays WITHOUT the stream sync that
    Numba otherwise does for each such argument at every launch (it waits for the stream the interface
    names). The kernel runs on CuPy's current stream (``_stream_for``), so stream order alone keeps it
    after the work that produced its inputs: no host stall. Host (simulator) arrays pass through."""
    if not any(hasattr(a, "__cuda_array_interface__") for a in args):
        return tuple(args)
    from numba import cuda

    return tuple(cuda.as_cuda_array(a, sync=False) if hasattr(a, "__cuda_array_interface__") else a for a in args)


def _launch(name: str, blocks: int, threads: int, args, arrays):
    """Runs kernel ``name``; NumbaCudaUnavailable when its first launch here fails (e.g. a numba-cuda that does
    not import with the installed NumPy). A failure after a kernel once ran is a real error and is raised."""
    try:
        kernel = kernels()[name]
        kernel[blocks, threads, _stream_for(*arrays)](*_device_args(args))
    except Exception as exc:
        if name in _launched:
            raise
        raise NumbaCudaUnavailable(
            f"the Numba CUDA kernel {name!r} could not be compiled or launched here ({type(exc).__name__}: {exc})"
        ) from exc
    _launched.add(name)


def _array_module(a):
    """cupy for CuPy arrays, else numpy (the simulator's host arrays)."""
    cupy = sys.modules.get("cupy")
    return cupy if cupy is not None and isinstance(a, cupy.ndarray) else np


# ----------------------------------------------------------------------------------------------
# launchers
# ----------------------------------------------------------------------------------------------
def accuracy_count(logits, target, *, threads: int = 256):
    """Number of rows i where argmax(logits[i]) == target[i] (NumPy's argmax tie and NaN rules), as a
    one-element int64 array on the logits' device. logits (N, C) float, target (N,) int."""
    if logits.ndim != 2 or target.shape != (logits.shape[0],):
        raise ValueError(f"accuracy_count expects logits (N, C) and target (N,), got {logits.shape} and {target.shape}")
    if logits.shape[1] == 0:
        raise ValueError("accuracy_count needs at least one class")
    count = _array_module(logits).zeros((1,), dtype=np.int64)
    n = logits.shape[0]
    if n:
        _launch("accuracy_count", -(-n // threads), threads, (logits, target, count), (logits,))
    return count
