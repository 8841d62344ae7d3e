"""Numba CUDA kernels: dropout on a counter-based RNG, and a row-wise argmax accuracy count.

Where Numba is simpler than CUDA C: short elementwise or per-row kernels written in Python. They take
any array with ``__cuda_array_interface__`` (CuPy arrays: launched on CuPy's current stream) and, under
``NUMBA_ENABLE_CUDASIM=1``, NumPy arrays. Importing this module imports neither Numba nor CuPy; the
kernels are compiled on first use.

Dropout RNG: Philox-4x32-10 (Salmon et al., SC'11; Random123's known-answer vectors are in the tests).
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
_philox = None  # the jitted device function, bound by _build
_M0, _M1 = np.uint64(PHILOX_M0), np.uint64(PHILOX_M1)
_W0, _W1 = np.uint64(PHILOX_W0), np.uint64(PHILOX_W1)
_MASK, _SH32, _SH8 = np.uint64(MASK32), np.uint64(32), np.uint64(8)
_ZERO, _ONE, _FOUR = np.uint64(0), np.uint64(1), np.uint64(4)


def _philox_device(c0, c1, c2, c3, k0, k1):
    """Philox-4x32-10 on uint64 lanes holding 32-bit words."""
    for _ in range(10):
        p0 = _M0 * c0
        p1 = _M1 * c2
        n0 = (p1 >> _SH32) ^ c1 ^ k0
        n2 = (p0 >> _SH32) ^ c3 ^ k1
        c0, c1, c2, c3 = n0, p1 & _MASK, n2, p0 & _MASK
        k0 = (k0 + _W0) & _MASK
        k1 = (k1 + _W1) & _MASK
    return c0, c1, c2, c3


def _dropout_kernel(x, out, mask, n, offset, seed, threshold, scale, write_mask):
    # One thread per group of 4 consecutive global indices g = 4 q .. 4 q + 3 (one Philox call),
    # grid-stride over the groups that touch [offset, offset + n). x, out, mask are flat.
    q_first = offset // _FOUR
    q_count = (offset + n - _ONE) // _FOUR - q_first + _ONE
    k0 = seed & _MASK
    k1 = seed >> _SH32
    t = np.uint64(cuda.grid(1))
    stride = np.uint64(cuda.gridsize(1))
    while t < q_count:
        q = q_first + t
        r0, r1, r2, r3 = _philox(q & _MASK, q >> _SH32, _ZERO, _ZERO, k0, k1)
        for j in range(4):
            g = q * _FOUR + np.uint64(j)
            if g >= offset and g < offset + n:
                i = g - offset
                word = r0 if j == 0 else (r1 if j == 1 else (r2 if j == 2 else r3))
                keep = (word >> _SH8) >= threshold
                out[i] = x[i] * scale if keep else x[i] * 0  # x * 0 keeps NaN, as x * mask * scale does
                if write_mask:
                    mask[i] = 1 if keep else 0
        t += stride


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


KERNEL_FUNCTIONS = {"dropout": _dropout_kernel, "accuracy_count": _accuracy_count_kernel}


def _build() -> dict:
    """Import numba.cuda, bind the globals the kernels use, and jit them: {"name": dispatcher}."""
    global cuda, _philox
    from numba import cuda as numba_cuda

    cuda = numba_cuda
    _philox = cuda.jit(device=True, inline=True)(_philox_device)
    return {name: cuda.jit(fn) for name, fn in KERNEL_FUNCTIONS.items()}


def kernels() -> dict:
    """{"dropout": dispatcher, "accuracy_count": dispatcher} (memoized; compiled per signature)."""
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
    kernel = kernels()[name]
    kernel[blocks, threads, _stream_for(*arrays)](*_device_args(args))


def _array_module(a):
    """cupy for CuPy arrays, else numpy (the simulator's host arrays)."""
    cupy = sys.modules.get("cupy")
    return cupy if cupy is not None and isinstance(a, cupy.ndarray) else np


# ----------------------------------------------------------------------------------------------
# launchers
# ----------------------------------------------------------------------------------------------
def dropout(
    x, p: float, seed: int, offset: int = 0, *, return_mask: bool = False, threads: int = 256, max_blocks: int = 4096
):
    """y = x * keep / (1 - p), keep drawn from (seed, offset + i) with Philox (see the module docstring).
    x: any C-contiguous float array; y has its shape. The backward pass is the same call on dy with the
    same (p, seed, offset). Returns y, or (y, mask uint8) with ``return_mask``.

    ``threads`` and ``max_blocks`` set the launch shape only: the result does not depend on them."""
    if not x.flags.c_contiguous:
        raise ValueError("dropout needs a C-contiguous input")
    if x.dtype.kind != "f":
        raise TypeError(f"dropout takes a float array, got {x.dtype}")
    threshold = keep_threshold(p)
    if not 0 <= offset < 2**62 or x.size >= 2**62:
        raise ValueError(f"dropout offset must be in [0, 2**62), got {offset}")
    scale = x.dtype.type(0.0 if p >= 1.0 else 1.0 / (1.0 - p))
    xp = _array_module(x)
    out = xp.empty(x.shape, dtype=x.dtype)
    mask = xp.empty(x.shape if return_mask else (1,), dtype=np.uint8)  # (1,): a placeholder, not written
    n = x.size
    if n:
        groups = (offset + n - 1) // 4 - offset // 4 + 1
        blocks = max(1, min(-(-groups // threads), max_blocks))
        flat_x, flat_out, flat_mask = x.reshape(-1), out.reshape(-1), mask.reshape(-1)
        args = (
            flat_x,
            flat_out,
            flat_mask,
            np.uint64(n),
            np.uint64(offset),
            np.uint64(int(seed) & (2**64 - 1)),
            np.uint64(threshold),
            scale,
            bool(return_mask),
        )
        _launch("dropout", blocks, threads, args, (x,))
    return (out, mask) if return_mask else out


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
