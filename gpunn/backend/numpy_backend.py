"""The NumPy backend: the CPU path, always available, and the reference for every GPU kernel.

The math of every primitive is ``gpunn.backend.reference``; this class overrides a primitive only to
run the same math faster, and falls back to the reference for the options it does not special-case:

- no temporaries: each step writes into ``out=`` arrays or reused scratch buffers;
- cache-sized blocks: a large buffer is processed a block at a time (256 KiB), so the several passes of
  a fused primitive read main memory once instead of once per pass;
- all cores: NumPy runs one thread, so a large primitive is split into one contiguous part per core,
  run from a small thread pool (NumPy releases the GIL inside its loops). ``GPUNN_NUM_THREADS`` sets
  the number of threads (1 turns this off); work under ``_PARALLEL_MIN`` elements stays on one thread.

Every override performs the reference's operations in the reference's order, element by element, so
its results equal the reference's bit for bit (float32 and float64, any number of threads).

Allocation: glibc's malloc hands large blocks (>= 128 KiB, adjusted upwards as they are freed) back to
the OS when they are freed, so a training step that allocates its activations and temporaries fresh
page-faults them in again every step -- on a virtual machine about 1.5 us per 4 KiB page, more than
the arithmetic on them (a 784-200-200-10 MLP step at batch 200 spent ~40% of its time in page faults).
The first NumpyBackend therefore asks glibc (``mallopt``) to serve blocks up to 32 MiB from the heap
and to keep up to 256 MiB of freed heap mapped for reuse. This is process-wide; set
``GPUNN_MALLOC_TUNING=0`` to leave malloc alone.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from gpunn.backend import reference
from gpunn.backend.base import Backend

_CHUNK = 1 << 16  # elements per block: 256 KiB of float32, resident in L2 through a primitive's passes
_PARALLEL_MIN = 1 << 18  # elements; below this, handing half the work to another thread costs more
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
_malloc_tuned: bool | None = None
_pool: ThreadPoolExecutor | None = None  # the worker threads of parallel_for, made on first use
_pool_workers = 0
_pool_lock = threading.Lock()


def tune_malloc() -> bool:
    """Keep freed memory for reuse instead of unmapping it (see the module docstring); True if applied.
    Runs once per process; a no-op off glibc Linux or with GPUNN_MALLOC_TUNING=0."""
    global _malloc_tuned
    if _malloc_tuned is None:
        _malloc_tuned = False
        if sys.platform.startswith("linux") and os.environ.get("GPUNN_MALLOC_TUNING", "1") != "0":
            try:
                libc = ctypes.CDLL("libc.so.6")
                mallopt = libc.mallopt
            except (OSError, AttributeError):  # not glibc (musl, ...): leave it
                return False
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            _malloc_tuned = bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20) and mallopt(_M_TRIM_THRESHOLD, 256 << 20))
    return _malloc_tuned


_CPUS = max(1, os.cpu_count() or 1)


def num_threads() -> int:
    """Threads a large primitive is split over: GPUNN_NUM_THREADS, else the number of CPUs."""
    env = os.environ.get("GPUNN_NUM_THREADS", "")
    return max(1, int(env)) if env.strip().isdigit() else _CPUS


def parallel_for(fn, n: int, work: int) -> None:
    """``fn(lo, hi)`` over ``[0, n)`` split into one contiguous part per thread (the caller runs the
    first); on one thread when ``work`` (elements touched) is small. ``fn`` must only write its part."""
    threads = 1 if work < _PARALLEL_MIN else min(num_threads(), n)
    if threads <= 1:
        fn(0, n)
        return
    global _pool, _pool_workers
    with _pool_lock:
        if _pool is None or _pool_workers < threads - 1:
            _pool, _pool_workers = ThreadPoolExecutor(threads - 1, thread_name_prefix="gpunn-numpy"), threads - 1
        pool = _pool
    bounds = [n * k // threads for k in range(threads + 1)]
    futures = [pool.submit(fn, bounds[k], bounds[k + 1]) for k in range(1, threads)]
    try:
        fn(bounds[0], bounds[1])
    finally:
        for f in futures:
            f.result()


class NumpyBackend(Backend):
    name = "numpy"
    xp = np

    def __init__(self) -> None:
        super().__init__()
        self._scratch_buffers = threading.local()
        tune_malloc()

    def _scratch(self, n: int, dtype, slot: int) -> np.ndarray:
        """A reusable 1-D work array of ``n`` elements (contents undefined), one per (thread, slot, dtype)."""
        bufs = self._scratch_buffers.__dict__
        key = (slot, np.dtype(dtype))
        buf = bufs.get(key)
        if buf is None or buf.size < n:
            buf = bufs[key] = np.empty(max(n, _CHUNK), dtype=dtype)
        return buf[:n]

    # -- optimizer steps: the reference's formulas, in place, block by block ------------------------
    def sgd_step(self, param, grad, momentum_buf, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, maximize=False, first_step=False):
        if dampening != 0 or nesterov or not _flat_contiguous(param, grad, momentum_buf):
            return reference.sgd_step(np, param, grad, momentum_buf, lr=lr, momentum=momentum,
                                      dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize, first_step=first_step)
        dt = param.dtype.type
        wd, mu, step = dt(weight_decay), dt(momentum), dt(lr)

        def run(start, stop):
            for lo in range(start, stop, _CHUNK):
                hi = min(lo + _CHUNK, stop)
                p, g = param[lo:hi], grad[lo:hi]
                s = self._scratch(hi - lo, param.dtype, 0)
                if weight_decay != 0:  # g = (-grad or grad) + wd * param
                    np.multiply(wd, p, out=s)
                    if maximize:  # -grad + wd p, as wd p - grad (the same float result)
                        np.subtract(s, g, out=s)
                    else:
                        np.add(s, g, out=s)
                    g = s
                elif maximize:
                    g = np.negative(g, out=s)
                if momentum != 0:
                    buf = momentum_buf[lo:hi]
                    if first_step:
                        np.copyto(buf, g)
                    else:  # buf = mu * buf + (1 - 0) * g
                        buf *= mu
                        buf += g
                    g = buf
                np.multiply(step, g, out=s)  # param -= lr * g
                p -= s

        parallel_for(run, param.size, param.size)

    def adam_step(self, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, step, lr, beta1=0.9,
                  beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False, amsgrad=False,
                  maximize=False):
        arrays = (param, grad, exp_avg, exp_avg_sq) + ((max_exp_avg_sq,) if amsgrad else ())
        if not _flat_contiguous(*arrays):
            return reference.adam_step(np, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step=step, lr=lr,
                                       beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                                       decoupled_weight_decay=decoupled_weight_decay, amsgrad=amsgrad,
                                       maximize=maximize)
        dt = param.dtype.type
        bias_correction1 = 1 - beta1**step
        bias_correction2_sqrt = math.sqrt(1 - beta2**step)
        b1, one_b1, b2, one_b2 = dt(beta1), dt(1 - beta1), dt(beta2), dt(1 - beta2)
        bc2, eps_, step_size = dt(bias_correction2_sqrt), dt(eps), dt(lr / bias_correction1)

        def run(start, stop):
            for lo in range(start, stop, _CHUNK):
                hi = min(lo + _CHUNK, stop)
                p, g, m, v = param[lo:hi], grad[lo:hi], exp_avg[lo:hi], exp_avg_sq[lo:hi]
                s = self._scratch(hi - lo, param.dtype, 0)
                t = self._scratch(hi - lo, param.dtype, 1)
                if maximize:
                    g = np.negative(g, out=t)
                if weight_decay != 0:
                    if decoupled_weight_decay:  # AdamW: param *= 1 - lr * wd
                        p *= dt(1 - lr * weight_decay)
                    else:  # Adam: g = g + wd * param
                        np.multiply(dt(weight_decay), p, out=s)
                        g = np.add(g, s, out=t)
                m *= b1  # m = b1 m + (1 - b1) g
                np.multiply(one_b1, g, out=s)
                m += s
                v *= b2  # v = b2 v + (1 - b2) g^2
                np.multiply(g, g, out=s)
                s *= one_b2
                v += s
                if amsgrad:
                    vmax = max_exp_avg_sq[lo:hi]
                    np.maximum(vmax, v, out=vmax)
                    v = vmax
                np.sqrt(v, out=s)  # denom = sqrt(v) / sqrt(1 - b2^t) + eps
                s /= bc2
                s += eps_
                np.divide(m, s, out=s)  # param -= lr / (1 - b1^t) * (m / denom)
                s *= step_size
                p -= s

        parallel_for(run, param.size, param.size)

    # -- fused softmax cross-entropy: the common case, block by block -------------------------------------
    def softmax_cross_entropy(self, logits, target, weight=None, reduction="mean", ignore_index=-100,
                              label_smoothing=0.0):
        n = logits.shape[0] if logits.ndim == 2 else 0
        if (weight is not None or label_smoothing != 0 or reduction not in ("mean", "sum") or n == 0
                or logits.dtype.kind != "f" or bool((target == ignore_index).any())):
            return reference.softmax_cross_entropy(np, logits, target, weight, reduction, ignore_index,
                                                   label_smoothing)
        dt = logits.dtype
        c = logits.shape[1]
        reference.check_labels(np, target, c, ignore_index)
        grad = np.empty(logits.shape, dtype=dt)
        nll = np.empty(n, dtype=dt)
        block = max(1, _CHUNK // max(c, 1))  # rows per block
        inv_n = dt.type(1.0 / n)

        def run(start, stop):
            for lo in range(start, stop, block):
                hi = min(lo + block, stop)
                rows, t = np.arange(hi - lo), target[lo:hi]
                work = grad[lo:hi]  # the reference's steps, each written into this block of grad:
                np.subtract(logits[lo:hi], logits[lo:hi].max(axis=1, keepdims=True), out=work)  # shifted
                picked = work[rows, t]  # shifted[i, y_i]
                np.exp(work, out=work)
                sumexp = work.sum(axis=1, keepdims=True)  # (rows, 1)
                np.subtract(np.log(sumexp[:, 0]), picked, out=nll[lo:hi])  # -logp[i, y_i]
                np.divide(work, sumexp, out=work)  # p
                work[rows, t] -= dt.type(1)  # p - onehot(y)
                if reduction == "mean":
                    work *= inv_n

        parallel_for(run, n, n * c)
        total = nll.sum(dtype=np.float64)
        return np.asarray(total / n if reduction == "mean" else total, dtype=dt), grad


def _flat_contiguous(*arrays) -> bool:
    return all(a is not None and a.ndim == 1 and a.flags.c_contiguous for a in arrays)
