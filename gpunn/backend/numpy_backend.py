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

Numba kernels (``gpunn.backend.numba_cpu``) run the optimizer steps (SGD, Adam/AdamW, Adagrad, Adadelta,
RMSprop: one fused loop each, split from ``_FLAT_PARALLEL_MIN`` elements on over the GEMM's spinning
workers where the CPU has AVX-512 and the step is float32, else by ``parallel_chunks``), pooling and the
im2col/col2im and layout passes of conv2d in one compiled pass each. Numba is imported on the first call
that can use a kernel, never by ``import gpunn``; ``GPUNN_NUMBA=0`` turns the kernels off, and where
Numba is missing or fails to compile, a warning says so once and the NumPy code below runs instead.

Allocation: glibc's malloc hands large blocks (>= 128 KiB, adjusted upwards as they are freed) back to
the OS when they are freed, so a training step that allocates its activations and temporaries fresh
page-faults them in again every step -- on a virtual machine about 1.5 us per 4 KiB page, more than
the arithmetic on them (a 784-200-200-10 MLP step at batch 200 spent ~40% of its time in page faults).
The first NumpyBackend therefore asks glibc (``mallopt``) to serve blocks up to 32 MiB from the heap
and to keep up to 256 MiB of freed heap mapped for reuse. This is process-wide; set
``GPUNN_MALLOC_TUNING=0`` to leave malloc alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import sys
import threading
import warnings
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
_numba_module = None  # gpunn.backend.numba_cpu once imported; False after it failed
_ahead = None  # gpunn.backend.numba_ahead, imported with numba_cpu: a helper process compiling kernels ahead


def _forget_pool() -> None:
    """In a forked child (a DataLoader worker): the parent's pool threads do not exist there, and work
    submitted to its pool would wait forever; the child makes its own on first use."""
    global _pool, _pool_workers, _pool_lock, _gemm_lock, _blas_lock
    _pool, _pool_workers, _pool_lock = None, 0, threading.Lock()
    _gemm_lock, _blas_lock = threading.Lock(), threading.Lock()  # (another thread may have held one at the fork)
    _gemm_workers.clear()
    if _gemm_counters is not None:  # another thread's job may have been in flight: its unclaimed chunks,
        gemm = sys.modules["gpunn.backend.numba_gemm"]  # (imported: it made the counters; maybe not published)
        _gemm_counters[: gemm.PRODUCT_CHUNK] = 0  # numbered >= 1, must not be claimed by the child's new
        # workers (NEXT's number 0); the chunk function's address stays


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


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
    pool = _get_pool(threads - 1)
    bounds = [n * k // threads for k in range(threads + 1)]
    futures = [pool.submit(fn, bounds[k], bounds[k + 1]) for k in range(1, threads)]
    try:
        fn(bounds[0], bounds[1])
    finally:
        for f in futures:
            f.result()


def _get_pool(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_workers
    with _pool_lock:
        if _pool is None or _pool_workers < workers:
            _pool, _pool_workers = ThreadPoolExecutor(workers, thread_name_prefix="gpunn-numpy"), workers
        return _pool


def parallel_chunks(fn, n: int, pieces: int | None = None) -> None:
    """``fn(lo, hi)`` over ``[0, n)`` in about ``pieces`` chunks (default: two per thread; each costs a
    claim and a call, ~2.5 us), claimed in order by the calling thread and by GPUNN_NUM_THREADS - 1 pool
    threads as they wake up. A helper that wakes late -- a sleeping thread on an idle vCPU of this VM
    took ~70 us to run, one on a core another process holds much longer -- takes fewer chunks or none, and
    the caller never waits for a helper that claimed nothing: a split is never much slower than one
    thread (parallel_for's fixed halves wait for the slowest thread). ``fn`` must only write its chunk."""
    threads = num_threads()
    chunk = max(1, -(-n // (pieces or 2 * threads)))
    helpers = min(threads, -(-n // chunk)) - 1
    if helpers <= 0:
        fn(0, n)
        return
    lock = threading.Lock()
    idle = threading.Condition(lock)
    state = {"next": 0, "in_flight": 0, "error": None}  # guarded by lock

    def claim():
        with lock:
            lo = state["next"]
            if lo >= n:
                return None
            state["next"] = hi = min(n, lo + chunk)
            state["in_flight"] += 1
            return lo, hi

    def finished(exc=None):
        with lock:
            state["in_flight"] -= 1
            if exc is not None:
                state["error"] = state["error"] or exc
                state["next"] = n  # no more claims
            if state["in_flight"] == 0:
                idle.notify_all()

    def run():
        while (part := claim()) is not None:
            try:
                fn(*part)
            except BaseException as exc:
                finished(exc)
                return
            finished()

    pool = _get_pool(helpers)
    for _ in range(helpers):
        pool.submit(run)
    run()
    with lock:  # only chunks a helper has claimed are waited for
        while state["in_flight"]:
            idle.wait()
        if state["error"] is not None:
            raise state["error"]


def _numba():
    """gpunn.backend.numba_cpu, imported on first call; None when GPUNN_NUMBA=0 or Numba failed."""
    global _numba_module, _ahead
    if os.environ.get("GPUNN_NUMBA", "1").strip() == "0" or _numba_module is False:
        return None
    if _numba_module is None:
        try:
            from gpunn.backend import numba_cpu
        except Exception as exc:  # not installed, or a broken install raising at import
            _numba_failed(exc)
            return None
        from gpunn.backend import numba_ahead

        _ahead = numba_ahead
        _numba_module = numba_cpu
    return _numba_module


def numba_kernels():
    """The module of Numba CPU kernels, imported on first call; None when GPUNN_NUMBA=0 or Numba failed.
    Its kernels are serial: the callers share work out over GPUNN_NUM_THREADS threads themselves."""
    return _numba()


def _numba_failed(exc: BaseException) -> None:
    global _numba_module
    _numba_module = False
    warnings.warn(
        f"gpunn: the Numba CPU kernels are unavailable ({type(exc).__name__}: {exc}); the NumPy path runs instead",
        UserWarning,
        stacklevel=3,
    )


_FAILED = object()


def _run_kernel(name: str, *args):
    """numba_cpu.<name>(*args) -> its result (None for most), or _FAILED when the kernels are off or this one
    fails to compile (the caller then runs its NumPy code). Compilation precedes execution, so a failed
    kernel has written nothing."""
    nk = numba_kernels()
    if nk is None:
        return _FAILED
    try:
        return nk.launch(getattr(nk, name), *args)
    except Exception as exc:
        from numba.core.errors import NumbaError

        if not isinstance(exc, NumbaError):
            raise
        _numba_failed(exc)
        return _FAILED


_FLAT_PARALLEL_MIN = 1 << 19  # elements; a flat optimizer kernel below this runs on the calling thread


def _run_flat(name: str, n: int, *args, work: int | None = None, returns: list | None = None) -> bool:
    """numba_cpu.<name>(lo, hi, *args) over [0, n), split when ``work`` (elements, default n) is large: over
    the GEMM's workers where _flat_on_workers takes it (never with ``returns``), else by parallel_chunks, each
    part's result appended to ``returns``; False when the kernels are off or this
    one fails to compile (the caller then runs its NumPy code: compilation precedes execution, so nothing
    was written)."""
    nk = _numba() if args[0].dtype in (np.float32, np.float64) else None  # the dtypes they compile for
    if nk is None:
        return False
    kernel = getattr(nk, name)
    out = [] if returns is None else returns
    work = n if work is None else work
    try:
        if work < _FLAT_PARALLEL_MIN:
            out.append(kernel(0, n, *args))
        elif returns is not None or not _flat_on_workers(nk, name, n, args):
            parallel_chunks(lambda lo, hi: out.append(kernel(lo, hi, *args)), n)
    except Exception as exc:
        from numba.core.errors import NumbaError

        if not isinstance(exc, NumbaError):
            raise
        if any(isinstance(a, np.ndarray) and not a.flags.writeable for a in args):
            return False  # (a kernel writing a read-only array fails to type: the NumPy code raises; kernels stay on)
        _numba_failed(exc)
        return False
    return True


# elements of a chunk of a flat step on the GEMM's workers (~35 us of Adam; a late worker takes fewer)
_FLAT_CHUNK = 1 << 16


def _flat_on_workers(nk, name: str, n: int, args: tuple) -> bool:
    """numba_cpu.<name> over [0, n) split over the GEMM's spinning workers (numba_cpu's chunk functions);
    False, having written nothing, where they cannot run it: no AVX-512 GEMM, one thread, a kernel with no
    chunk function or arguments it does not take (not float32), or the workers busy with another thread's
    job."""
    threads = min(num_threads(), _GEMM_MAX_WORKERS + 1)
    if threads < 2 or _load_gemm() is None:
        return False
    packed = nk.pack(name, n, _FLAT_CHUNK, args)
    if packed is None:
        return False
    fn = nk.chunk_function(name)
    if not _gemm_lock.acquire(blocking=False):
        return False
    try:
        chunks = -(-n // _FLAT_CHUNK)
        call = (fn, packed[0].ctypes.data, chunks, threads, _gemm_ctrls, _gemm_counters, _gemm_seq)
        _on_workers(threads, _gemm_module.run_chunks, *call)
    finally:
        _gemm_lock.release()
    return True


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
    def sgd_step(
        self,
        param,
        grad,
        momentum_buf,
        *,
        lr,
        momentum=0.0,
        dampening=0.0,
        weight_decay=0.0,
        nesterov=False,
        maximize=False,
        first_step=False,
    ):
        bufs = () if momentum_buf is None else (momentum_buf,)  # (None: SGD without momentum)
        if dampening != 0 or nesterov or (momentum != 0 and not bufs) or not _flat_contiguous(param, grad, *bufs):
            return reference.sgd_step(
                np,
                param,
                grad,
                momentum_buf,
                lr=lr,
                momentum=momentum,
                dampening=dampening,
                weight_decay=weight_decay,
                nesterov=nesterov,
                maximize=maximize,
                first_step=first_step,
            )
        dt = param.dtype.type
        wd, mu, step = dt(weight_decay), dt(momentum), dt(lr)
        buf = param if momentum_buf is None else momentum_buf  # (unused without momentum)
        if _run_flat(
            "sgd_step",
            param.size,
            param,
            grad,
            buf,
            step,
            mu,
            wd,
            momentum != 0,
            weight_decay != 0,
            bool(maximize),
            bool(first_step),
        ):
            return

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

    def adam_step(
        self,
        param,
        grad,
        exp_avg,
        exp_avg_sq,
        max_exp_avg_sq=None,
        *,
        step,
        lr,
        beta1=0.9,
        beta2=0.999,
        eps=1e-8,
        weight_decay=0.0,
        decoupled_weight_decay=False,
        amsgrad=False,
        maximize=False,
    ):
        arrays = (param, grad, exp_avg, exp_avg_sq) + ((max_exp_avg_sq,) if amsgrad else ())
        if not _flat_contiguous(*arrays):
            return reference.adam_step(
                np,
                param,
                grad,
                exp_avg,
                exp_avg_sq,
                max_exp_avg_sq,
                step=step,
                lr=lr,
                beta1=beta1,
                beta2=beta2,
                eps=eps,
                weight_decay=weight_decay,
                decoupled_weight_decay=decoupled_weight_decay,
                amsgrad=amsgrad,
                maximize=maximize,
            )
        dt = param.dtype.type
        bias_correction1 = 1 - beta1**step
        bias_correction2_sqrt = math.sqrt(1 - beta2**step)
        b1, one_b1, b2, one_b2 = dt(beta1), dt(1 - beta1), dt(beta2), dt(1 - beta2)
        bc2, eps_, step_size = dt(bias_correction2_sqrt), dt(eps), dt(lr / bias_correction1)
        vmax = max_exp_avg_sq if amsgrad else exp_avg_sq  # (unused without amsgrad)
        if _run_flat(
            "adam_step",
            param.size,
            param,
            grad,
            exp_avg,
            exp_avg_sq,
            vmax,
            step_size,
            b1,
            one_b1,
            b2,
            one_b2,
            bc2,
            eps_,
            dt(weight_decay),
            dt(1 - lr * weight_decay),
            weight_decay != 0,
            bool(decoupled_weight_decay),
            bool(amsgrad),
            bool(maximize),
        ):
            return

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

    # Adagrad, Adadelta, RMSprop: one Numba pass each (the reference's NumPy code where Numba is off)
    def adagrad_step(
        self, param, grad, state_sum, *, step, lr=1e-2, lr_decay=0.0, weight_decay=0.0, eps=1e-10, maximize=False
    ):
        dt = param.dtype.type
        if not (
            _flat_contiguous(param, grad, state_sum)
            and _run_flat(
                "adagrad_step",
                param.size,
                param,
                grad,
                state_sum,
                dt(lr / (1 + (step - 1) * lr_decay)),
                dt(eps),
                dt(weight_decay),
                weight_decay != 0,
                bool(maximize),
            )
        ):
            super().adagrad_step(
                param,
                grad,
                state_sum,
                step=step,
                lr=lr,
                lr_decay=lr_decay,
                weight_decay=weight_decay,
                eps=eps,
                maximize=maximize,
            )

    def adadelta_step(
        self, param, grad, square_avg, acc_delta, *, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False
    ):
        dt = param.dtype.type
        if not (
            _flat_contiguous(param, grad, square_avg, acc_delta)
            and _run_flat(
                "adadelta_step",
                param.size,
                param,
                grad,
                square_avg,
                acc_delta,
                dt(lr),
                dt(rho),
                dt(1 - rho),
                dt(eps),
                dt(weight_decay),
                weight_decay != 0,
                bool(maximize),
            )
        ):
            super().adadelta_step(
                param,
                grad,
                square_avg,
                acc_delta,
                lr=lr,
                rho=rho,
                eps=eps,
                weight_decay=weight_decay,
                maximize=maximize,
            )

    def rmsprop_step(
        self,
        param,
        grad,
        square_avg,
        momentum_buf=None,
        grad_avg=None,
        *,
        lr=1e-2,
        alpha=0.99,
        eps=1e-8,
        weight_decay=0.0,
        momentum=0.0,
        centered=False,
        maximize=False,
    ):
        dt = param.dtype.type
        use_momentum = momentum > 0
        arrays = (
            (param, grad, square_avg) + ((momentum_buf,) if use_momentum else ()) + ((grad_avg,) if centered else ())
        )
        if not (
            _flat_contiguous(*arrays)
            and _run_flat(
                "rmsprop_step",
                param.size,
                param,
                grad,
                square_avg,
                momentum_buf if use_momentum else param,  # (unused)
                grad_avg if centered else param,  # (unused)
                dt(lr),
                dt(alpha),
                dt(1 - alpha),
                dt(eps),
                dt(weight_decay),
                dt(momentum),
                weight_decay != 0,
                use_momentum,
                bool(centered),
                bool(maximize),
            )
        ):
            super().rmsprop_step(
                param,
                grad,
                square_avg,
                momentum_buf,
                grad_avg,
                lr=lr,
                alpha=alpha,
                eps=eps,
                weight_decay=weight_decay,
                momentum=momentum,
                centered=centered,
                maximize=maximize,
            )

    # -- fused softmax cross-entropy: the common case, block by block -------------------------------------
    def softmax_cross_entropy(
        self, logits, target, weight=None, reduction="mean", ignore_index=-100, label_smoothing=0.0
    ):
        n = logits.shape[0] if logits.ndim == 2 else 0
        if weight is not None or label_smoothing != 0 or n == 0 or logits.dtype.kind != "f":
            return reference.softmax_cross_entropy(np, logits, target, weight, reduction, ignore_index, label_smoothing)
        dt = logits.dtype
        c = logits.shape[1]
        reference.check_labels(np, target, c, ignore_index)
        if dt == np.float32 and c > 0 and reduction in ("mean", "sum", "none"):
            out = _softmax_cross_entropy_rows(logits, target, reduction, ignore_index)
            if out is not None:
                return out
        if reduction not in ("mean", "sum") or bool((target == ignore_index).any()):
            return reference.softmax_cross_entropy(np, logits, target, weight, reduction, ignore_index, label_smoothing)
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

    # -- ReLU: one Numba pass, the array shared out over the threads ----------------------------------------------
    def relu(self, x):
        if not (_kernel_dtype(x) and x.flags.c_contiguous and x.size >= _PARALLEL_MIN):
            return super().relu(x)
        y = np.empty_like(x)
        xf, yf = x.reshape(-1), y.reshape(-1)
        if _run_kernel("relu", xf[:1], yf[:1]) is _FAILED:  # (compiles, or on failure the NumPy path runs)
            return super().relu(x)
        nk = _numba_module
        parallel_for(lambda lo, hi: nk.relu(xf[lo:hi], yf[lo:hi]), xf.size, xf.size)
        return y

    def relu_backward(self, g, y):
        if not (
            isinstance(g, np.ndarray)
            and g.dtype == y.dtype
            and g.shape == y.shape
            and _kernel_dtype(g)
            and g.flags.c_contiguous
            and y.flags.c_contiguous
            and g.size >= _PARALLEL_MIN
        ):
            return super().relu_backward(g, y)
        dx = np.empty_like(g)
        gf, yf, df = g.reshape(-1), y.reshape(-1), dx.reshape(-1)
        if _run_kernel("relu_backward", gf[:1], yf[:1], df[:1]) is _FAILED:
            return super().relu_backward(g, y)
        nk = _numba_module
        parallel_for(lambda lo, hi: nk.relu_backward(gf[lo:hi], yf[lo:hi], df[lo:hi]), gf.size, gf.size)
        return dx

    # -- matrix products: 2-D float32 on gpunn's AVX-512 GEMM (numba_gemm) over all cores, else NumPy's BLAS ---
    def matmul(self, a, b, out=None):
        """a @ b with NumPy's semantics, into ``out`` when given. A 2-D float32 product of at least
        _GEMM_MIN multiply-adds runs on numba_gemm where the CPU has AVX-512 (see _gemm_kernel), split over
        GPUNN_NUM_THREADS threads by columns (or rows, when narrow) in multiples of the micro-kernel's tile,
        so every element is computed the same way whatever the thread count; else np.matmul."""
        gemm = _gemm_kernel(a, b, out)
        if gemm is None:
            return _blas_matmul(a, b, out)
        c = np.empty((a.shape[0], b.shape[1]), np.float32) if out is None else out
        if not _gemm_run(gemm, a, b, c, self._scratch, parallel=True):
            return _blas_matmul(a, b, out)
        return c

    def _gemm(self, a, b, out) -> None:
        """out = a @ b on this thread (a conv group's product): numba_gemm, or np.matmul (BLAS threads as set)."""
        gemm = _gemm_kernel(a, b, out)
        if gemm is None or not _gemm_run(gemm, a, b, out, self._scratch, parallel=False):
            np.matmul(a, b, out=out)

    # -- a captured step's linear layers: one call each way (numba_gemm.linear_forward / linear_backward) ------
    def captured_linear_forward(self, x, W, b, z, relu: bool) -> bool:
        """z = act(x @ W.T + b) into the plan buffer ``z`` (act: ReLU or none), as linear_act computes it, bit
        for bit, in one call; False (nothing written) where gpunn's GEMM does not run this product."""
        m, k = x.shape
        n = W.shape[0]
        gemm = _gemm_kernel(x, W.T, None)
        if gemm is None or z.dtype != np.float32 or (b is not None and (b.dtype != np.float32 or b.shape != (n,))):
            return False
        has_bias = b is not None
        return self._captured(
            _gemm_module.linear_forward, product_bound(m, k, n), x, W, b if has_bias else z[0], z, has_bias, relu
        )

    def captured_linear_backward(self, dy, y, dz, x, W, dx, dW, db, relu: bool) -> bool:
        """linear_act_backward's dz (ReLU or none: then pass dz=dy), dx = dz @ W, dW = dz.T @ x and db = dz.sum(0)
        into the given buffers (None: not wanted), bit for bit, in one call; False where gpunn's GEMM does not
        run one of the products (dz may have been written)."""
        m, n = dy.shape
        k = W.shape[1]
        gemm = _gemm_kernel(dz, W, None) if dx is not None else _gemm_kernel(dz.T, x, None)
        if gemm is None or (dx is not None and dW is not None and _gemm_kernel(dz.T, x, None) is None):
            return False  # (the buffers' dtypes and layouts: numba_gemm.plan checks them, and the signature)
        if not (dy.flags.c_contiguous and dy.flags.writeable):  # (a loss's broadcast gradient: out.sum())
            return False
        if db is not None and n == 1:  # db = dz.sum(0) of one column: NumPy adds it pairwise, the kernel in order
            return False
        if db is not None and db.shape != (n,):  # (a gradient view of a parameter whose .data changed shape)
            return False
        bound = max(product_bound(m, n, k), product_bound(n, m, k))
        return self._captured(
            _gemm_module.linear_backward, bound, dy, y, dz, x, W,
            dx if dx is not None else dz[:1, :1], dW if dW is not None else dz[:1, :1],
            db if db is not None else dz[0], relu, dx is not None, dW is not None, db is not None,
        )  # fmt: skip

    def captured_chain_forward(self, table, bound: int) -> bool:
        """numba_gemm.chain_forward: every layer of a captured linear chain forward in one call (``table``:
        its rows of buffer addresses, built and checked by gpunn.train.capture; ``bound``: the largest
        product_bound of its products). False (nothing run) when the GEMM is off now (GPUNN_GEMM, GPUNN_NUMBA)."""
        if not (_gemm_module and _gemm_wanted() and numba_kernels() is not None):
            return False
        return self._captured(_gemm_module.chain_forward, bound, table)

    def captured_chain_backward(self, table, dlogits, bound: int) -> bool:
        """numba_gemm.chain_backward: every layer's backward, from the loss gradient ``dlogits``."""
        return self._captured(_gemm_module.chain_backward, bound, table, dlogits)

    def _captured(self, kernel, bound: int, *args) -> bool:
        with _gemm_lock:
            return _gemm_call(kernel, bound, self._scratch, *args)

    # -- conv2d: groups of images on all cores: Numba im2col, one BLAS GEMM, the layout pass with bias + ReLU ---
    # The columns of a whole batch are C*KH*KW times the input (42 MB for the MNIST CNN's second conv at
    # batch 64): written by im2col, read by the GEMM, and again in the backward -- main-memory traffic that
    # cost as much as the GEMMs' arithmetic. Done a group of images at a time, the columns and the
    # backward's dcols stay in cache between the passes that write and read them; the backward recomputes
    # each group's columns from x (cheaper than reading them back from memory). A first layer (fewer than
    # _GEMM_MIN_SIDE taps C*KH*KW) runs image by image instead, forward and (without dx) backward, in one
    # Numba kernel each: its GEMM's short inner dimension (or, for dW, thin result) does not pay for the
    # (OC, N*L) layout and its pass back to NCHW.
    # The groups are shared out over GPUNN_NUM_THREADS threads, each running its groups start to end on a
    # single-threaded BLAS (see _over_groups): OpenBLAS's own threads split every GEMM and meet at a
    # spin barrier after each, which on a busy 2-core machine burned 3-15x the GEMM's CPU time waiting for
    # a descheduled partner; whole groups per thread need no barrier until the end of the layer.
    def conv2d_forward(
        self, x, weight, bias, stride=(1, 1), padding=(0, 0), act="none", negative_slope=0.01, need_grad=True
    ):
        if not _kernel_dtype(x, weight, bias) or numba_kernels() is None:
            return super().conv2d_forward(x, weight, bias, stride, padding, act, negative_slope, need_grad)
        x = np.ascontiguousarray(x)
        weight = np.ascontiguousarray(weight, dtype=x.dtype)
        n, c, h, w = x.shape
        oc, _, kh, kw = weight.shape
        (sh, sw), (ph, pw) = stride, padding
        oh, ow = reference.conv_out_size(h, kh, sh, ph), reference.conv_out_size(w, kw, sw, pw)
        ckk, L = c * kh * kw, oh * ow
        if need_grad:  # (on a cold cache, the backward kernels compile in a helper process meanwhile)
            _ahead.ask("conv_backward:" + x.dtype.name)
        # the first image's columns through _run_kernel: compiles the kernel, or on failure the NumPy path runs
        if _run_kernel("im2col", x[:1], np.empty((c, kh, kw, 1, oh, ow), x.dtype), sh, sw, ph, pw) is _FAILED:
            return super().conv2d_forward(x, weight, bias, stride, padding, act, negative_slope, need_grad)
        nk = _numba_module
        W2 = weight.reshape(oc, ckk)
        y = np.empty((n, oc, oh, ow), dtype=x.dtype)
        y3 = y.reshape(n, oc, L)
        has_bias = bias is not None
        b = np.ascontiguousarray(bias, dtype=x.dtype) if has_bias else np.zeros(1, x.dtype)
        relu = act == "relu"
        threads = _group_threads(x.size * kh * kw)
        geometry = (kh, kw, sh, sw, ph, pw, has_bias, relu)
        if ckk < _GEMM_MIN_SIDE and _run_kernel("conv_forward_by_image", x[:0], W2, b, y[:0], *geometry) is not _FAILED:
            # few taps (a first layer): image by image, written in place (see numba_cpu.conv_forward_by_image)
            parallel_for(lambda lo, hi: nk.conv_forward_by_image(x[lo:hi], W2, b, y[lo:hi], *geometry), n, y.size)
            return self._conv_epilogue(x, W2, (kh, kw), y, stride, padding, act, negative_slope, need_grad)
        groups = _image_groups(n, ckk * L * x.itemsize, threads)

        def run(g0, g1):
            for lo, hi in groups[g0:g1]:
                m = hi - lo
                cols = self._scratch(ckk * m * L, x.dtype, 10).reshape(c, kh, kw, m, oh, ow)
                nk.im2col(x[lo:hi], cols, sh, sw, ph, pw)
                out = self._scratch(oc * m * L, x.dtype, 11).reshape(oc, m * L)
                self._gemm(W2, cols.reshape(ckk, m * L), out)
                nk.swap01(out.reshape(oc, m, L), y3[lo:hi], b, has_bias, relu)

        _over_groups(run, len(groups), threads)
        return self._conv_epilogue(x, W2, (kh, kw), y, stride, padding, act, negative_slope, need_grad)

    @staticmethod
    def _conv_epilogue(x, W2, kernel, y, stride, padding, act, negative_slope, need_grad):
        """(y with an activation other than ReLU applied, the saved state of conv2d_backward)."""
        if act not in ("relu", "none"):
            y = reference.activation_forward(np, y, act, negative_slope)
        return y, (("numba", x, W2, kernel, y, stride, padding, act, negative_slope) if need_grad else None)

    def conv2d_backward(self, dy, saved, need_dx=True, need_dW=True, need_db=True):
        if saved[0] != "numba":
            return super().conv2d_backward(dy, saved, need_dx, need_dW, need_db)
        _, x, W2, (kh, kw), y, (sh, sw), (ph, pw), act, negative_slope = saved
        n, c, h, w = x.shape
        nk = _numba_module  # the forward ran the kernels: they are loaded
        _ahead.wait("conv_backward")
        _, oc, oh, ow = y.shape
        ckk, L = W2.shape[1], oh * ow
        dy = np.ascontiguousarray(dy, dtype=y.dtype)
        y3 = y.reshape(n, oc, L)
        if act == "relu":  # the activation's derivative applied in the layout pass
            src = dy.reshape(n, oc, L)
        else:
            src = np.ascontiguousarray(reference.activation_backward(np, dy, y, act, negative_slope), dtype=y.dtype)
            src = src.reshape(n, oc, L)
        threads = _group_threads(x.size * kh * kw)
        if not need_dx and need_dW and ckk < _GEMM_MIN_SIDE:
            grads = _conv_grad_weight_by_image(nk, x, src, y, (kh, kw), (sh, sw), (ph, pw), act, need_db, threads)
            if grads is not None:
                return (None,) + grads
        groups = _image_groups(n, ckk * L * y.itemsize, threads)
        # each group's dW and db, added up in group order at the end (the same bits for a given thread count:
        # the number of groups, and so the summation order, follows GPUNN_NUM_THREADS)
        dWg = np.empty((len(groups), oc, ckk), dtype=y.dtype) if need_dW else None
        dbg = np.empty((len(groups), oc), dtype=y.dtype) if need_db else None
        dx = np.empty((n, c, h, w), dtype=y.dtype) if need_dx else None
        no_bias = np.zeros(1, y.dtype)

        def run(g0, g1):
            for k in range(g0, g1):
                lo, hi = groups[k]
                m = hi - lo
                g = self._scratch(oc * m * L, y.dtype, 11).reshape(oc, m, L)
                if act == "relu":
                    nk.swap01_relu_mask(src[lo:hi], y3[lo:hi], g)
                else:
                    nk.swap01(src[lo:hi], g, no_bias, False, False)
                g2 = g.reshape(oc, m * L)
                if need_dW:
                    cols = self._scratch(ckk * m * L, y.dtype, 10).reshape(c, kh, kw, m, oh, ow)
                    nk.im2col(x[lo:hi], cols, sh, sw, ph, pw)
                    self._gemm(g2, cols.reshape(ckk, m * L).T, dWg[k])
                if need_db:
                    g2.sum(axis=1, out=dbg[k])
                if need_dx:
                    dcols = self._scratch(ckk * m * L, y.dtype, 12).reshape(ckk, m * L)
                    self._gemm(W2.T, g2, dcols)
                    nk.col2im(dcols.reshape(c, kh, kw, m, oh, ow), dx[lo:hi], sh, sw, ph, pw)

        _over_groups(run, len(groups), threads)
        dW = None if dWg is None else _sum_in_order(dWg).reshape(oc, c, kh, kw)
        return dx, dW, None if dbg is None else _sum_in_order(dbg)

    # -- pooling: one Numba pass over each plane, each way; the planes shared out over the threads ---------------
    def pool2d_forward(self, x, mode, kernel_size, stride, padding=(0, 0), count_include_pad=True, need_grad=True):
        if mode not in reference.POOL_MODES or not _kernel_dtype(x) or numba_kernels() is None:
            return super().pool2d_forward(x, mode, kernel_size, stride, padding, count_include_pad, need_grad)
        (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
        n, c, h, w = x.shape
        oh, ow = reference.conv_out_size(h, kh, sh, ph), reference.conv_out_size(w, kw, sw, pw)
        planes = np.ascontiguousarray(x).reshape(n * c, h, w)
        if need_grad:  # (on a cold cache, the backward kernel compiles in a helper process meanwhile)
            _ahead.ask(f"{mode}_pool_backward:{x.dtype.name}")
        y = np.empty((n * c, oh, ow), dtype=x.dtype)
        geometry = (kh, kw, sh, sw, ph, pw)
        if mode == "max":
            arg = np.empty((n * c, oh, ow) if need_grad else (1, 1, 1), dtype=np.int32)
            extra = arg

            def run(lo, hi):
                nk.max_pool_forward(planes[lo:hi], y[lo:hi], arg[lo:hi] if need_grad else arg, *geometry, need_grad)

            first = ("max_pool_forward", planes[:1], y[:1], arg[:1], *geometry, bool(need_grad))
        else:
            extra = _avg_divisor(x.dtype, h, w, oh, ow, geometry, count_include_pad)
            zero = x.dtype.type(0)

            def run(lo, hi):
                nk.avg_pool_forward(planes[lo:hi], y[lo:hi], extra, zero, *geometry)

            first = ("avg_pool_forward", planes[:1], y[:1], extra, zero, *geometry)
        if _run_kernel(*first) is _FAILED:  # (the first plane: compiles, or on failure the NumPy path runs)
            return super().pool2d_forward(x, mode, kernel_size, stride, padding, count_include_pad, need_grad)
        nk = _numba_module
        need_grad = bool(need_grad)
        parallel_for(run, n * c, planes.size)
        saved = ("numba-" + mode, x.shape, extra, geometry) if need_grad else None
        return y.reshape(n, c, oh, ow), saved

    def pool2d_backward(self, dy, saved):
        if not saved[0].startswith("numba-"):
            return super().pool2d_backward(dy, saved)
        tag, (n, c, h, w), extra, geometry = saved
        nk = numba_kernels() or _numba_module  # the forward ran the kernels: they are loaded
        _ahead.wait(tag[6:] + "_pool_backward")
        dy = np.ascontiguousarray(dy, dtype=extra.dtype if tag == "numba-avg" else dy.dtype)
        dy3 = dy.reshape(n * c, dy.shape[2], dy.shape[3])
        dx = np.empty((n * c, h, w), dtype=dy.dtype)

        def run(lo, hi):
            if tag == "numba-max":
                nk.max_pool_backward(dy3[lo:hi], extra[lo:hi], dx[lo:hi], *geometry)
            else:
                nk.avg_pool_backward(dy3[lo:hi], dx[lo:hi], extra, *geometry)

        parallel_for(run, n * c, dx.size)
        return dx.reshape(n, c, h, w)


_GEMM_MIN = 1 << 18  # multiply-adds; a smaller product runs on NumPy's BLAS (less fixed cost per call)
_GEMM_MIN_SIDE, _GEMM_THIN_MAX_K = 16, 1024  # a result thinner than 16 rows or columns wastes most of the
# 6 x 64 tile: it stays on BLAS when its inner dimension is long (a conv's dW of 8 x 9 over 40000 terms: 179 us
# on OpenBLAS, 553 us on the kernel); a short one costs about the same either way (an MLP's 200 x 10 output)
_GEMM_PARALLEL_MIN = 1 << 21  # multiply-adds; a smaller product runs on the calling thread
_GEMM_SPINS = 10000  # idle rounds a GEMM worker spins before it sleeps (pause ~25 ns, sched_yield every 64th): ~0.3 ms
_gemm_module = None  # gpunn.backend.numba_gemm once loaded; False when unavailable (no AVX-512, no Numba)
_gemm_lock = threading.Lock()  # held while a product is split over the workers (one at a time)
_GEMM_MAX_WORKERS = 63
_gemm_workers: list = []  # the Events of the GEMM workers made so far (made on first use)
_gemm_ctrls = None  # their control arrays, one row each
_gemm_counters = None  # the jobs' shared chunk counters (numba_gemm.NEXT, FINISHED)
_gemm_seq = np.zeros(1, np.int64)  # [the number of the last job posted]
_GEMM_CHUNKS_PER_THREAD = 3  # chunks a split product is cut into, per thread (a late worker takes fewer)


def _gemm_kernel(a, b, out):
    """numba_gemm when it may compute ``a @ b`` (into ``out``): 2-D float32 operands, at least _GEMM_MIN
    multiply-adds and a result not too thin (see _gemm_sized), ``out`` None or a float32 (M, N)
    array, on a CPU with AVX-512 and with the Numba kernels on (GPUNN_NUMBA; GPUNN_GEMM=blas turns off only
    this); else None (np.matmul runs). numba_gemm.plan then checks the strides and overlaps."""
    global _gemm_module
    if (  # the common case, loaded: (out is checked by numba_gemm.plan)
        _gemm_module
        and out is None
        and type(a) is np.ndarray
        and type(b) is np.ndarray
        and a.dtype == np.float32
        and b.dtype == np.float32
        and _gemm_sized(a, b)
        and _gemm_wanted()
    ):
        return _gemm_module
    if not (
        isinstance(a, np.ndarray)
        and isinstance(b, np.ndarray)
        and a.dtype == np.float32
        and b.dtype == np.float32
        and _gemm_sized(a, b)
        and (
            out is None
            or (isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (a.shape[0], b.shape[1]))
        )
    ):
        return None
    if not _gemm_wanted():
        return None
    return _load_gemm()


def _load_gemm():
    """gpunn.backend.numba_gemm, imported on first call (with its workers' control arrays); None where the
    CPU has no AVX-512 or the kernels are off or failed."""
    global _gemm_module
    if _gemm_module is None:
        nk = numba_kernels()
        if nk is None:
            return None
        try:
            with nk._launch_lock:  # loads (or the first time compiles) the kernels, once
                from gpunn.backend import numba_gemm

                if numba_gemm.AVAILABLE:  # (on a cold cache, the chunk function compiles in the helper meanwhile)
                    _ahead.ask("product_chunk")
                    numba_gemm.load()
                    _ahead.wait("product_chunk")
                    numba_gemm.product_chunk_address()
        except Exception as exc:  # llvmlite or Numba unable to build the kernel: NumPy's BLAS runs
            _gemm_module = False
            warnings.warn(
                f"gpunn: the AVX-512 GEMM is unavailable ({type(exc).__name__}: {exc}); NumPy's BLAS runs",
                UserWarning,
                stacklevel=3,
            )
            return None
        if numba_gemm.AVAILABLE:  # the workers' control arrays (the chunk function's address in them) first:
            with _gemm_lock:  # another thread takes the module as soon as it is published
                _gemm_worker_pool(0, numba_gemm)
        _gemm_module = numba_gemm if numba_gemm.AVAILABLE else False
    return _gemm_module or None


def _gemm_sized(a, b) -> bool:
    """Whether a @ b is 2-D and large enough for gpunn's GEMM (_GEMM_MIN, _GEMM_MIN_SIDE, _GEMM_THIN_MAX_K)."""
    return (
        a.ndim == 2
        and b.ndim == 2
        and a.shape[1] == b.shape[0]
        and a.shape[0] * a.shape[1] * b.shape[1] >= _GEMM_MIN
        and (min(a.shape[0], b.shape[1]) >= _GEMM_MIN_SIDE or a.shape[1] <= _GEMM_THIN_MAX_K)
    )


def _macs(a, b) -> int:
    """Multiply-adds of np.matmul(a, b) (any dims, broadcast batch; 0 for a malformed product)."""
    if a.ndim == 0 or b.ndim == 0:
        return 0
    k = a.shape[-1]
    m = a.shape[-2] if a.ndim > 1 else 1
    n = b.shape[-1] if b.ndim > 1 else 1
    try:
        batch = math.prod(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    except ValueError:
        return 0
    return batch * m * n * k


def _gemm_wanted() -> bool:
    return os.environ.get("GPUNN_GEMM", "").strip().lower() != "blas"


def _gemm_run(gemm, a, b, c, scratch, parallel: bool) -> bool:
    """c = a @ b on numba_gemm.product, False when it does not take the operands: split over the GEMM workers
    when ``parallel``, the product is large and no other thread is splitting one; else on the calling
    thread. ``scratch(n, dtype, slot)``: the caller's per-thread scratch (the workers' parts of it too)."""
    m, k = a.shape
    n = b.shape[1]
    bound = product_bound(m, k, n)
    if parallel and m * n * k >= _GEMM_PARALLEL_MIN and num_threads() > 1 and _gemm_lock.acquire(blocking=False):
        try:
            return _gemm_call(gemm.product, bound, scratch, a, b, c)
        finally:
            _gemm_lock.release()
    work = scratch(bound, np.float32, 20)
    return gemm.product(a, b, c, 1, _GEMM_PARALLEL_MIN, 1, _gemm_ctrls, _gemm_counters, _gemm_seq, work)


def _gemm_call(kernel, bound: int, scratch, *args):
    """kernel(*args, threads, parallel_min, chunks, ctrls, counters, seq, work) with the GEMM lock held by the
    caller: the workers it may use woken first (a call into Numba cannot wake a sleeping one), ``work``
    room for ``bound`` floats a thread."""
    threads = min(num_threads(), _GEMM_MAX_WORKERS + 1)
    work = scratch(threads * bound, np.float32, 20)
    call = (*args, threads, _GEMM_PARALLEL_MIN, _GEMM_CHUNKS_PER_THREAD, _gemm_ctrls, _gemm_counters, _gemm_seq, work)
    return _on_workers(threads, kernel, *call)


def _on_workers(threads: int, kernel, *call):
    """kernel(*call), which splits a job over the caller and ``threads`` - 1 GEMM workers, with the GEMM
    lock held by the caller: the sleeping workers among them woken first (a call into Numba cannot)."""
    global _waker_cpu
    ctrls, wakes = _gemm_worker_pool(threads - 1)
    try:
        if wakes:
            asleep = _gemm_module.sleeping_workers(ctrls)
            if asleep:
                _waker_cpu = _current_cpu()
            for w in range(len(wakes)):
                if asleep >> w & 1:
                    wakes[w].set()
    except BaseException:  # (a KeyboardInterrupt while waking: the job still runs to its end first)
        kernel(*call)
        raise
    return kernel(*call)


def product_bound(m: int, k: int, n: int) -> int:
    """An upper bound of the scratch numba_gemm.plan asks for an (m, k) @ (k, n) product, any way and chunk."""
    return m * n + k * (max(m, n) + 16) + 6 * k + 6 * 64


_waker_cpu = -1  # the CPU of the thread that last woke a sleeping GEMM worker
_sched_getcpu = None  # glibc's sched_getcpu; False where unavailable


def _current_cpu() -> int:
    """The CPU the calling thread runs on (glibc's sched_getcpu), -1 where unknown."""
    global _sched_getcpu
    if _sched_getcpu is None:
        try:
            _sched_getcpu = ctypes.CDLL(None).sched_getcpu
            _sched_getcpu.argtypes, _sched_getcpu.restype = [], ctypes.c_int
        except (OSError, AttributeError, TypeError):  # (no such function; Windows: CDLL(None) is a TypeError)
            _sched_getcpu = False
    return _sched_getcpu() if _sched_getcpu else -1


def _leave_cpu(cpu: int) -> None:
    """Move the calling thread (a GEMM worker just woken) off ``cpu``, the waking thread's, if it runs there.
    Linux often wakes a thread on its waker's CPU, and then left a spinning worker there, sharing the CPU
    with the caller while the other stayed idle: measured on this 2-core VM, Adam steps over 2M parameters
    interleaved with PyTorch's, 20 ms apart, ran on one CPU in 2 of 7 rounds (0.95 ms a step instead of
    0.6), and 20-40% of the wakes found the worker on the waker's CPU. Moved once, a spinning worker keeps
    its CPU."""
    if cpu < 0 or _current_cpu() != cpu:
        return
    try:
        allowed = os.sched_getaffinity(0)
        if cpu in allowed and len(allowed) > 1:
            os.sched_setaffinity(0, allowed - {cpu})  # moves this thread now...
            os.sched_setaffinity(0, allowed)  # ...and lets it run anywhere again
    except (OSError, AttributeError):  # (no sched_setaffinity on this platform)
        pass


def _gemm_worker_pool(count: int, module=None) -> tuple:
    """(control arrays (count, CONTROL_SIZE), their Events) of ``count`` GEMM workers (called under
    _gemm_lock): daemon threads, each spinning in numba_gemm's worker_spin for a while after a job, then
    asleep on its Event until the next."""
    global _gemm_counters, _gemm_ctrls
    gemm = module or _gemm_module
    if _gemm_ctrls is None:  # allocated once: a running worker keeps its row
        _gemm_counters = np.zeros(gemm.COUNTERS_SIZE, np.int64)
        _gemm_counters[gemm.PRODUCT_CHUNK] = gemm.product_chunk_address()
        _gemm_ctrls = np.zeros((_GEMM_MAX_WORKERS, gemm.CONTROL_SIZE), np.int64)
    while len(_gemm_workers) < count:
        wake = threading.Event()
        row = _gemm_ctrls[len(_gemm_workers)]

        def serve(ctrl=row, wake=wake, counters=_gemm_counters):
            while True:
                gemm.worker_spin(ctrl, counters, _GEMM_SPINS)
                wake.wait()
                wake.clear()
                _leave_cpu(_waker_cpu)

        threading.Thread(target=serve, name="gpunn-gemm", daemon=True).start()
        _gemm_workers.append(wake)
    return _gemm_ctrls[:count], _gemm_workers[:count]


_GROUP_BYTES = 1 << 21  # conv2d's columns per group of images (0.5-16 MB tried: 2 MB fastest since im2col/col2im
# became contiguous copies, 4 MB before; see the commit that set it)


def _image_groups(n: int, bytes_per_image: int, threads: int = 1) -> list:
    """[(lo, hi), ...]: the batch in consecutive groups of images whose im2col columns take about
    _GROUP_BYTES, at least one image a group, and a multiple of ``threads`` groups where the batch allows
    (equal shares for the threads of _over_groups)."""
    count = max(1, -(-n * bytes_per_image // _GROUP_BYTES))
    if threads > 1:
        count = -(-count // threads) * threads
    count = min(n, count)
    return [(n * k // count, n * (k + 1) // count) for k in range(count)]  # sizes differ by at most one


def _conv_grad_weight_by_image(nk, x, src, y, kernel, stride, padding, act, need_db, threads):
    """(dW, db or None) of a convolution with few taps (C KH KW < _GEMM_MIN_SIDE: a first layer, its dx not
    wanted) by numba_cpu.conv_grad_weight_by_image: each image's gradient and columns made and used in cache,
    float64 accumulators, one per thread (the images split in ``threads`` parts, added up in order); None
    when the kernel failed to compile."""
    n, c = x.shape[:2]
    oc = y.shape[1]
    ckk = c * kernel[0] * kernel[1]
    parts = max(1, min(threads, n))
    acc = np.zeros((parts, oc, ckk), np.float64)
    dacc = np.zeros((parts, oc), np.float64)
    src4 = src.reshape(y.shape)
    relu = act == "relu"
    geometry = (*kernel, *stride, *padding, relu, bool(need_db))
    if _run_kernel("conv_grad_weight_by_image", x[:0], src4[:0], y[:0], acc[0], dacc[0], *geometry) is _FAILED:
        return None  # (compiled on the first call; on failure the grouped path runs)

    def run(p0, p1):
        for k in range(p0, p1):
            lo, hi = n * k // parts, n * (k + 1) // parts
            nk.conv_grad_weight_by_image(x[lo:hi], src4[lo:hi], y[lo:hi], acc[k], dacc[k], *geometry)

    if parts > 1:
        parallel_for(run, parts, _PARALLEL_MIN)  # (work >= _PARALLEL_MIN: every thread takes part)
    else:
        run(0, 1)
    dW = _sum_in_order(acc).astype(y.dtype).reshape(oc, c, *kernel)
    return dW, _sum_in_order(dacc).astype(y.dtype) if need_db else None


def _sum_in_order(parts: np.ndarray) -> np.ndarray:
    """parts[0] + parts[1] + ... left to right (np.sum's pairwise order would differ with the count); zeros
    when there are no parts (an empty batch: PyTorch's zero dW and db)."""
    if len(parts) == 0:
        return np.zeros(parts.shape[1:], parts.dtype)
    total = parts[0].copy()
    for p in parts[1:]:
        total += p
    return total


_blas_control = None  # threadpoolctl's controllers of the loaded OpenBLAS libraries; False when unavailable
_blas_lock = threading.Lock()


def _blas_controllers():
    global _blas_control
    if _blas_control is None:
        try:
            from threadpoolctl import ThreadpoolController

            _blas_control = [c for c in ThreadpoolController().lib_controllers if c.internal_api == "openblas"]
        except Exception:  # not installed, or an unexpected library layout: BLAS keeps its threads
            _blas_control = []
    return _blas_control


def _group_threads(work: int) -> int:
    """Threads _over_groups will use for ``work`` elements: GPUNN_NUM_THREADS, or 1 for little work or when
    OpenBLAS's thread count cannot be set (threadpoolctl missing: BLAS then threads each GEMM itself)."""
    threads = num_threads()
    return threads if threads > 1 and work >= _PARALLEL_MIN and _blas_controllers() else 1


@contextlib.contextmanager
def _blas_one_thread():
    """OpenBLAS on one thread inside the block (restored after; one block at a time). Not entered from the
    threads of a block: they would wait for the lock their caller holds."""
    controllers = _blas_controllers()
    with _blas_lock:
        before = [ctl.get_num_threads() for ctl in controllers]
        for ctl in controllers:
            ctl.set_num_threads(1)
        try:
            yield
        finally:
            for ctl, k in zip(controllers, before):
                ctl.set_num_threads(k)


def _over_groups(run, n_groups: int, threads: int) -> None:
    """run(g0, g1) over the groups [0, n_groups): split over ``threads`` threads or on the calling thread,
    OpenBLAS on one thread meanwhile (restored after): the products BLAS runs here are one group's (see
    _blas_matmul: its threads would spin against gpunn's own)."""
    with _blas_one_thread():  # one conv at a time changes and restores the BLAS setting
        if n_groups < 2 or threads < 2:
            run(0, n_groups)
        else:
            parallel_for(run, n_groups, _PARALLEL_MIN)  # (work >= _PARALLEL_MIN: every thread takes part)


def _blas_matmul(a, b, out):
    """np.matmul for a product gpunn's GEMM does not take. A small float32 product (under _GEMM_MIN
    multiply-adds, batch dimensions included) runs with OpenBLAS on one thread, on every machine (so its bits
    never depend on whether the GEMM is loaded): threading it gains little, and OpenBLAS's workers, once
    woken, spin for up to ~0.1 s after each call, taking the cores gpunn's own threads need (measured: the
    small CNN's step at 24 ms instead of 15). A large one (batched, thin over a long inner dimension) keeps
    BLAS's threads."""
    if a.dtype == np.float32 and b.dtype == np.float32 and _macs(a, b) < _GEMM_MIN:
        with _blas_one_thread():
            return np.matmul(a, b) if out is None else np.matmul(a, b, out=out)
    return np.matmul(a, b) if out is None else np.matmul(a, b, out=out)


def _softmax_cross_entropy_rows(logits, target, reduction, ignore_index):
    """(loss, dlogits) of float32 logits (N, C) from the Numba rows kernel (its own vectorized exp, float32
    sums: within a few float32 ulps of the reference, not bit for bit, see numba_cpu), or None where the
    reference must run: the kernels are off, a row holds a NaN or an infinity, or 'mean' has no valid row."""
    n, c = logits.shape
    n_valid = n - int(np.count_nonzero(target == ignore_index))
    if reduction == "mean" and n_valid == 0:
        return None
    grad = np.empty((n, c), dtype=np.float32)
    nll = np.empty(n, dtype=np.float32)
    row_scale = np.float32(1.0 / n_valid if reduction == "mean" else 1.0)
    bad = []
    if not _run_flat(
        "softmax_cross_entropy_rows",
        n,
        np.ascontiguousarray(logits),
        np.ascontiguousarray(target),
        grad,
        nll,
        row_scale,
        int(ignore_index),
        work=n * c,
        returns=bad,
    ) or sum(bad):
        return None
    if reduction == "none":
        return nll, grad
    total = nll.sum(dtype=np.float64)
    return np.asarray(total / n_valid if reduction == "mean" else total, dtype=np.float32), grad


def _kernel_dtype(*arrays) -> bool:
    """True when every given array (None skipped) is float32 or float64 (the dtypes the kernels compile for)."""
    return all(a is None or a.dtype in (np.float32, np.float64) for a in arrays)


def _avg_divisor(dtype, h, w, oh, ow, geometry, count_include_pad):
    """(OH, OW) divisor of each window: KH*KW, or its in-bounds cell count (reference.pool2d_forward's)."""
    kh, kw, sh, sw, ph, pw = geometry
    if count_include_pad or (ph == 0 and pw == 0):
        return np.full((oh, ow), kh * kw, dtype=dtype)
    rows = np.minimum(np.arange(oh) * sh - ph + kh, h) - np.maximum(np.arange(oh) * sh - ph, 0)
    cols = np.minimum(np.arange(ow) * sw - pw + kw, w) - np.maximum(np.arange(ow) * sw - pw, 0)
    return (rows[:, None] * cols[None, :]).astype(dtype)


def _flat_contiguous(*arrays) -> bool:
    return all(a is not None and a.ndim == 1 and a.flags.c_contiguous for a in arrays)
