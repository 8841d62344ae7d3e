"""Numba CPU kernels of the numpy backend: the passes NumPy cannot fuse, compiled to machine code.

Imported by ``NumpyBackend`` on first use of a kernel (never by ``import gpunn``); importing this module
imports Numba. Each kernel is ``@njit(..., cache=True)``: compiled once per signature, cached on disk
next to this file (or in Numba's user cache directory). Every kernel is serial and ``nogil`` (none is
``parallel=True``: a Numba parallel launch cost 40-250 us per call here, more than a whole small
optimizer step); NumpyBackend runs them on shares of the work -- ranges of a flat buffer or of rows,
planes, groups of images -- from its own ``GPUNN_NUM_THREADS`` threads, or (a large float32 optimizer
step) on numba_gemm's spinning workers (see each section).

Every kernel performs the reference's operations (``gpunn.backend.reference``) in the reference's
order, element by element, so its results equal the reference's bit for bit -- except
``softmax_cross_entropy_rows``, whose row sums are float32 partial sums in another order (the reference sums
pairwise), whose ``exp`` is its own polynomial (NumPy's is its own SIMD one) and which scales by a
reciprocal: there the bound is stated and tested (tests/backend/test_numpy_backend.py); and the first-layer
convolution kernels (``conv_forward_by_image``: each output the plain dot in tap order where the reference
runs a BLAS GEMM; ``conv_grad_weight_by_image``: reassociated float32 partial sums added in float64), whose
orders and bounds are stated there and tested in tests/backend/test_numba_cpu.py.
The scalars are passed already cast to the arrays' dtype, so float32 math stays float32.

Layouts: pools take NCHW arrays viewed as planes ``(N*C, H, W)``; each thread owns whole output planes,
so no two threads write one element and the result does not depend on the thread count.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.extending import intrinsic

try:
    import fcntl
except ImportError:  # (not a POSIX system)
    fcntl = None

# launch() compiles a kernel on its first call; one launch at a time keeps two threads from compiling it at once.
_launch_lock = threading.Lock()


def _new_lock_in_child() -> None:  # a forked child: another thread of the parent may have held the lock
    global _launch_lock
    _launch_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_in_child)


def _import_numba_arraymath() -> None:
    """Import numba.np.arraymath (Numba imports it on its first compile or cache load) without the import
    of scipy.linalg it makes to learn whether jitted np.correlate/np.convolve may call BLAS: that import
    was ~0.28 s of the ~0.45 s a fresh process spent loading gpunn's cached kernels. Its one effect: in
    this process, jitted np.correlate/np.convolve (none in gpunn) use Numba's loop instead of BLAS. Not done
    when scipy.linalg is loaded already (the check then costs nothing)."""
    key = "scipy.linalg.cython_blas"
    if "scipy.linalg" in sys.modules or key in sys.modules:
        return
    sys.modules[key] = None  # `import scipy.linalg.cython_blas` raises ImportError before importing scipy.linalg
    try:
        import numba.np.arraymath  # noqa: F401
    finally:
        if key in sys.modules and sys.modules[key] is None:
            del sys.modules[key]


_import_numba_arraymath()


def launch(kernel, *args):
    """kernel(*args), one launch at a time in this process (the first call of a kernel compiles it)."""
    with _launch_lock:
        return kernel(*args)


# ----------------------------------------------------------------------------------------------
# the on-disk cache, shared by processes
# ----------------------------------------------------------------------------------------------
def _shared_cache_class():
    """Numba's on-disk cache of a function, each load and save holding an exclusive lock on the cache
    directory's ``gpunn-numba.lock`` (a POSIX record lock, lockf: unlike flock, a forked child does not
    inherit it; within a process Numba's compiler lock already makes loads and saves take turns). Numba
    rewrites a function's cache index whole at each save, and writes it before the data, so two processes
    saving different signatures of one function at once -- numba_ahead's helper and this process, MPI ranks
    starting together -- could lose or mislabel an entry, or one load an entry whose data another is still
    writing. None where there is no fcntl or Numba's cache is laid out otherwise (the helper is then off)."""
    try:
        from numba.core.caching import FunctionCache

        FunctionCache.load_overload, FunctionCache.save_overload, FunctionCache._impl_class  # noqa: B018
    except (ImportError, AttributeError):
        return None
    if fcntl is None:
        return None

    class SharedCache(FunctionCache):
        def load_overload(self, sig, target_context):
            with self._locked():
                return super().load_overload(sig, target_context)

        def save_overload(self, sig, data):
            with self._locked():
                super().save_overload(sig, data)

        @contextlib.contextmanager
        def _locked(self):
            try:
                self._impl.locator.ensure_cache_path()
                fd = os.open(os.path.join(self._cache_path, "gpunn-numba.lock"), os.O_RDWR | os.O_CREAT, 0o666)
            except OSError:  # (an unwritable cache: Numba's own calls meet it too)
                yield
                return
            try:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX)
                except OSError:  # (a file system without locks, NFS without lockd: unlocked, and no helper)
                    global SHARED_CACHE
                    SHARED_CACHE = False
                yield
            finally:
                os.close(fd)  # (releases the lock)

    return SharedCache


SharedCache = _shared_cache_class()
SHARED_CACHE = SharedCache is not None


def share_cache(namespace: dict) -> None:
    """Give every cached dispatcher of ``namespace`` (a kernel module's globals) a SharedCache."""
    if SharedCache is None:
        return
    from numba.core.caching import FunctionCache
    from numba.core.registry import CPUDispatcher

    for obj in list(namespace.values()):
        if isinstance(obj, CPUDispatcher) and type(getattr(obj, "_cache", None)) is FunctionCache:
            obj._cache = SharedCache(obj.py_func)


def cached_cfunc(sig, fn, **options):
    """numba.cfunc(sig, cache=True, **options)(fn), its cache a SharedCache: compiled, or loaded from the cache."""
    from numba.core import sigutils
    from numba.core.ccallback import CFunc

    options = {k: v for k, v in options.items() if k != "cache"}
    res = CFunc(fn, sigutils.normalize_signature(sig), locals={}, options=options)
    res.enable_caching()
    if SharedCache is not None:
        res._cache = SharedCache(fn)
    res.compile()
    return res


# ----------------------------------------------------------------------------------------------
# optimizer steps over flat buffers, in place: one pass over [lo, hi), on the calling thread
# ----------------------------------------------------------------------------------------------
# These are serial (``nogil``): the numpy backend splits a large buffer over its own threads
# (numpy_backend.parallel_chunks), so a small step pays no parallel launch (an empty prange kernel cost ~40 us
# of CPU and 80-95 us of wall time per call on the busy 2-core VM, more than Adam's whole 200k-parameter
# update, ~35 us) and a large one no lock. Each is ONE fused loop per element -- loads, the whole update,
# stores -- which LLVM vectorizes (AVX2/AVX-512 sqrt and div) when: error_model="numpy" (the default
# "python" model tests every division for zero and raises, which blocks vectorization); the arrays are
# sliced to [lo, hi) and indexed from 0; the option flags are loop-invariant (LLVM unswitches the loop,
# one vector loop per case). Measured on 200k float32 Adam parameters, one thread: 34 us fused against
# 57 us as two loops. Every unused array argument may be any array of the dtype (it is not read).
_FLAT = {"nogil": True, "cache": True, "error_model": "numpy"}


@njit(**_FLAT)
def sgd_step(lo, hi, param, grad, buf, lr, momentum, weight_decay, use_momentum, use_wd, maximize, first_step):
    """reference.sgd_step with dampening 0 and no nesterov: g = (-)grad + wd p; buf = g (first step) or
    mu buf + g; p -= lr * (buf or g)."""
    p, g = param[lo:hi], grad[lo:hi]
    b = buf[lo:hi] if use_momentum else buf[:0]
    for i in range(hi - lo):
        gi = g[i]
        if maximize:
            gi = -gi
        if use_wd:
            gi = gi + weight_decay * p[i]
        if use_momentum:
            if not first_step:
                gi = b[i] * momentum + gi
            b[i] = gi
        p[i] = p[i] - lr * gi


@njit(**_FLAT)
def adam_step(
    lo,
    hi,
    param,
    grad,
    m,
    v,
    vmax,
    step_size,
    beta1,
    one_beta1,
    beta2,
    one_beta2,
    bc2_sqrt,
    eps,
    weight_decay,
    decay_factor,
    use_wd,
    decoupled,
    amsgrad,
    maximize,
):
    """reference.adam_step: g = (-)grad (+ wd p, or p *= 1 - lr wd for AdamW); m = b1 m + (1 - b1) g;
    v = b2 v + (1 - b2) g^2; (amsgrad: vmax = max(vmax, v), used as v); p -= lr / (1 - b1^t) * m / (sqrt(v) /
    sqrt(1 - b2^t) + eps)."""
    p, g, mm, vv = param[lo:hi], grad[lo:hi], m[lo:hi], v[lo:hi]
    vm = vmax[lo:hi] if amsgrad else vmax[:0]
    for i in range(hi - lo):
        pi = p[i]
        gi = g[i]
        if maximize:
            gi = -gi
        if use_wd:
            if decoupled:
                pi = pi * decay_factor
            else:
                gi = gi + weight_decay * pi
        mi = mm[i] * beta1 + one_beta1 * gi
        vi = vv[i] * beta2 + one_beta2 * (gi * gi)
        mm[i] = mi
        vv[i] = vi
        if amsgrad:
            vmi = vm[i]
            if vi > vmi or vi != vi:  # np.maximum: the larger, NaN if either is NaN
                vmi = vi
            vm[i] = vmi
            vi = vmi
        p[i] = pi - step_size * (mi / (np.sqrt(vi) / bc2_sqrt + eps))


@njit(**_FLAT)
def adagrad_step(lo, hi, param, grad, state_sum, clr, eps, weight_decay, use_wd, maximize):
    """reference.adagrad_step: g = (-)grad + wd p; sum += g^2; p -= clr * g / (sqrt(sum) + eps)."""
    p, g, s = param[lo:hi], grad[lo:hi], state_sum[lo:hi]
    for i in range(hi - lo):
        gi = g[i]
        if maximize:
            gi = -gi
        if use_wd:
            gi = gi + weight_decay * p[i]
        si = s[i] + gi * gi
        s[i] = si
        p[i] = p[i] - clr * gi / (np.sqrt(si) + eps)


@njit(**_FLAT)
def adadelta_step(lo, hi, param, grad, square_avg, acc_delta, lr, rho, one_rho, eps, weight_decay, use_wd, maximize):
    """reference.adadelta_step: g = (-)grad + wd p; v = rho v + (1 - rho) g^2; d = sqrt(u + eps) /
    sqrt(v + eps) * g; u = rho u + (1 - rho) d^2; p -= lr d."""
    p, g, sq, ad = param[lo:hi], grad[lo:hi], square_avg[lo:hi], acc_delta[lo:hi]
    for i in range(hi - lo):
        gi = g[i]
        if maximize:
            gi = -gi
        if use_wd:
            gi = gi + weight_decay * p[i]
        vi = sq[i] * rho + one_rho * (gi * gi)
        sq[i] = vi
        ui = ad[i]
        d = np.sqrt(ui + eps) / np.sqrt(vi + eps) * gi
        ad[i] = ui * rho + one_rho * (d * d)
        p[i] = p[i] - lr * d


@njit(**_FLAT)
def rmsprop_step(
    lo,
    hi,
    param,
    grad,
    square_avg,
    momentum_buf,
    grad_avg,
    lr,
    alpha,
    one_alpha,
    eps,
    weight_decay,
    momentum,
    use_wd,
    use_momentum,
    centered,
    maximize,
):
    """reference.rmsprop_step: g = (-)grad + wd p; v = alpha v + (1 - alpha) g^2; avg = sqrt(v - ga^2) + eps
    with ga += (1 - alpha)(g - ga) (centered), else sqrt(v) + eps; b = mu b + g / avg, p -= lr b (momentum)
    or p -= lr g / avg."""
    p, g, sq = param[lo:hi], grad[lo:hi], square_avg[lo:hi]
    b = momentum_buf[lo:hi] if use_momentum else momentum_buf[:0]
    ga = grad_avg[lo:hi] if centered else grad_avg[:0]
    for i in range(hi - lo):
        gi = g[i]
        if maximize:
            gi = -gi
        if use_wd:
            gi = gi + weight_decay * p[i]
        vi = sq[i] * alpha + one_alpha * (gi * gi)
        sq[i] = vi
        if centered:
            gai = ga[i]
            gai = gai + one_alpha * (gi - gai)
            ga[i] = gai
            avg = np.sqrt(vi - gai * gai) + eps
        else:
            avg = np.sqrt(vi) + eps
        if use_momentum:
            bi = b[i] * momentum + gi / avg
            b[i] = bi
            p[i] = p[i] - lr * bi
        else:
            p[i] = p[i] - lr * gi / avg


# ----------------------------------------------------------------------------------------------
# the flat steps as chunk functions for the GEMM's spinning workers (numba_gemm.run_chunks)
# ----------------------------------------------------------------------------------------------
# A large float32 step is split over numba_gemm's workers where they exist (an AVX-512 CPU): they spin for
# a while after each job, so a job starts on them within a microsecond, and a spinning thread keeps its
# core. The Python pool of parallel_chunks sleeps between calls, and Linux often wakes a sleeping helper on
# the caller's own core (measured on this 2-core VM, Adam over 2M parameters after a 20 ms pause: in about
# half the rounds both threads ran on one core, 1.2 ms a step instead of 0.6).
# A chunk function is a C function ``void f(int64 *args, int64 i, float *work, int64 work_len)`` (the GEMM's
# takes scratch; these do not) that runs its kernel over chunk i; ``args`` is the int64 array made by
# ``pack``: [n, chunk, address of the float32 scalars, the arrays'
# addresses, the flags], in the order of the kernel's arguments after (lo, hi) -- every flat kernel takes
# its arrays, then its scalars, then its flags. Each is compiled (or loaded from the cache) on first use.
_CHUNK_SIG = types.void(types.CPointer(types.int64), types.int64, types.CPointer(types.float32), types.int64)
_ARGS = 3  # args[_ARGS:]: the array addresses, then the flags


@intrinsic
def _f32_pointer(typingctx, address):
    """The int64 ``address`` as a float32 pointer (for numba.carray)."""

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], ir.FloatType().as_pointer())

    return types.CPointer(types.float32)(types.int64), codegen


@njit(inline="always")
def _chunk_args(args, i, count):
    """(lo, hi, float32 scalars, args as an array of ``count`` int64) of chunk i."""
    t = carray(args, count)
    lo = i * t[1]
    return lo, min(t[0], lo + t[1]), carray(_f32_pointer(t[2]), 16), t


@njit(inline="always")
def _f32(t, k):
    """Array k of a chunk's args (n float32 elements)."""
    return carray(_f32_pointer(t[_ARGS + k]), t[0])


def _sgd_chunk(args, i, work, work_len):  # (no scratch)
    lo, hi, s, t = _chunk_args(args, i, _ARGS + 7)
    f = _ARGS + 3
    sgd_step(lo, hi, _f32(t, 0), _f32(t, 1), _f32(t, 2), s[0], s[1], s[2], t[f] != 0, t[f + 1] != 0,
             t[f + 2] != 0, t[f + 3] != 0)  # fmt: skip


def _adam_chunk(args, i, work, work_len):  # (no scratch)
    lo, hi, s, t = _chunk_args(args, i, _ARGS + 9)
    f = _ARGS + 5
    adam_step(lo, hi, _f32(t, 0), _f32(t, 1), _f32(t, 2), _f32(t, 3), _f32(t, 4), s[0], s[1], s[2], s[3], s[4],
              s[5], s[6], s[7], s[8], t[f] != 0, t[f + 1] != 0, t[f + 2] != 0, t[f + 3] != 0)  # fmt: skip


def _adagrad_chunk(args, i, work, work_len):  # (no scratch)
    lo, hi, s, t = _chunk_args(args, i, _ARGS + 5)
    f = _ARGS + 3
    adagrad_step(lo, hi, _f32(t, 0), _f32(t, 1), _f32(t, 2), s[0], s[1], s[2], t[f] != 0, t[f + 1] != 0)


def _adadelta_chunk(args, i, work, work_len):  # (no scratch)
    lo, hi, s, t = _chunk_args(args, i, _ARGS + 6)
    f = _ARGS + 4
    adadelta_step(lo, hi, _f32(t, 0), _f32(t, 1), _f32(t, 2), _f32(t, 3), s[0], s[1], s[2], s[3], s[4],
                  t[f] != 0, t[f + 1] != 0)  # fmt: skip


def _rmsprop_chunk(args, i, work, work_len):  # (no scratch)
    lo, hi, s, t = _chunk_args(args, i, _ARGS + 9)
    f = _ARGS + 5
    rmsprop_step(lo, hi, _f32(t, 0), _f32(t, 1), _f32(t, 2), _f32(t, 3), _f32(t, 4), s[0], s[1], s[2], s[3], s[4],
                 s[5], t[f] != 0, t[f + 1] != 0, t[f + 2] != 0, t[f + 3] != 0)  # fmt: skip


_CHUNK_BODIES = {
    "sgd_step": (_sgd_chunk, 3, 3, 4),  # (body, arrays, scalars, flags)
    "adam_step": (_adam_chunk, 5, 9, 4),
    "adagrad_step": (_adagrad_chunk, 3, 3, 2),
    "adadelta_step": (_adadelta_chunk, 4, 5, 2),
    "rmsprop_step": (_rmsprop_chunk, 5, 6, 4),
}
_chunk_functions: dict = {}  # name -> the compiled chunk function (numba.cfunc)


def chunk_function(name: str) -> int:
    """The address of the chunk function of flat kernel ``name`` (one ``pack`` took; compiled or loaded on
    first use, one at a time, under the launch lock)."""
    fn = _chunk_functions.get(name)
    if fn is None:
        with _launch_lock:
            fn = _chunk_functions.get(name) or cached_cfunc(_CHUNK_SIG, _CHUNK_BODIES[name][0])
            _chunk_functions[name] = fn
    return fn.address


def pack(name: str, n: int, chunk: int, kernel_args: tuple):
    """(args, scalars): the int64 args array of ``name``'s chunk function over n elements in chunks of
    ``chunk``, and the float32 scalars it points at (keep both alive while the job runs); None when ``name``
    has no chunk function, the arguments are not float32 contiguous arrays, float32 scalars and bools in the
    kernel's order, or an array the kernel writes (every one but the second, the gradient) is read-only: a
    chunk function sees addresses only and would write it (into an immutable bytes object, or a crash on a
    read-only mapping), where the kernel's own dispatch refuses it."""
    if name not in _CHUNK_BODIES:  # (a flat kernel without a chunk function)
        return None
    _, arrays, scalars, flags = _CHUNK_BODIES[name]
    if len(kernel_args) != arrays + scalars + flags:
        return None
    a, s, f = kernel_args[:arrays], kernel_args[arrays : arrays + scalars], kernel_args[arrays + scalars :]
    if not all(
        type(x) is np.ndarray
        and x.dtype == np.float32
        and x.flags.c_contiguous
        and x.flags.aligned
        and x.size >= n
        and (x.flags.writeable or k == 1)
        for k, x in enumerate(a)
    ):
        return None
    if not all(type(x) is np.float32 for x in s) or not all(isinstance(x, (bool, np.bool_)) for x in f):
        return None
    values = np.zeros(16, np.float32)
    values[:scalars] = s
    packed = np.array([n, chunk, values.ctypes.data, *(x.ctypes.data for x in a), *map(int, f)], np.int64)
    return packed, values


# ----------------------------------------------------------------------------------------------
# pooling over planes (P, H, W) -> (P, OH, OW)
# ----------------------------------------------------------------------------------------------
# Serial and nogil, like the conv kernels: NumpyBackend runs each on a share of the planes from its own
# threads (parallel_for; the calling thread computes a share itself). Inside a training step that kept
# both cores busy where a prange launch often did not: its workers sleep between launches and one woke
# too late for a sub-millisecond kernel (measured: the small CNN's step 5% faster). Each kernel calls a
# plain function per plane (written inside a prange body the same loops compiled 3-5x slower).
@njit(inline="always")
def _max_pool_plane(x, y, arg, kh, kw, sh, sw, ph, pw, need_arg):
    h, w = x.shape
    oh, ow = y.shape
    for r in range(oh):
        i0 = max(0, ph - r * sh)
        i1 = min(kh, h + ph - r * sh)
        for c in range(ow):
            j0 = max(0, pw - c * sw)
            j1 = min(kw, w + pw - c * sw)
            best = x[r * sh + i0 - ph, c * sw + j0 - pw]
            k_best = i0 * kw + j0
            for i in range(i0, i1):
                for j in range(j0, j1):
                    v = x[r * sh + i - ph, c * sw + j - pw]
                    if v > best or v != v:
                        best = v
                        k_best = i * kw + j
            y[r, c] = best
            if need_arg:
                arg[r, c] = k_best


@njit(inline="always")
def _max_pool_2x2(x, y, arg, need_arg):
    """_max_pool_plane of 2x2 windows, stride 2, no padding, over all the planes (C-contiguous) as one loop over
    their output rows: the geometry known to the compiler (the general loop with run-time window bounds is
    5-6x slower) and no call per plane (a 14x14 plane's 7 rows: 15% of the time, measured)."""
    n_planes, oh, ow = y.shape
    h, w = x.shape[1], x.shape[2]
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    af = arg.reshape(-1)
    for row in range(n_planes * oh):
        p = row // oh
        at = p * h * w + 2 * (row - p * oh) * w
        x0 = xf[at : at + 2 * ow]
        x1 = xf[at + w : at + w + 2 * ow]
        yr = yf[row * ow : row * ow + ow]
        ar = af[row * ow : row * ow + ow] if need_arg else af[:0]
        for c in range(ow):
            best = x0[2 * c]
            k_best = 0
            v = x0[2 * c + 1]
            if v > best or v != v:
                best = v
                k_best = 1
            v = x1[2 * c]
            if v > best or v != v:
                best = v
                k_best = 2
            v = x1[2 * c + 1]
            if v > best or v != v:
                best = v
                k_best = 3
            yr[c] = best
            if need_arg:
                ar[c] = k_best


@njit(nogil=True, cache=True)
def max_pool_forward(x, y, arg, kh, kw, sh, sw, ph, pw, need_arg):
    """y = max over each window; arg = the winning tap (i * kw + j) under PyTorch's CPU rule: start at the
    window's first in-bounds element, replace when greater or NaN."""
    if kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0:
        _max_pool_2x2(x, y, arg, need_arg)
        return
    for p in range(x.shape[0]):
        _max_pool_plane(x[p], y[p], arg[p] if need_arg else arg[0], kh, kw, sh, sw, ph, pw, need_arg)


@njit(inline="always")
def _max_pool_plane_backward(dy, arg, dx, kw, sh, sw, ph, pw, disjoint):
    oh, ow = dy.shape
    h, w = dx.shape
    dx[:, :] = 0
    if disjoint:  # each cell in at most one window: its gradient stored as is (the reference's -0.0 kept)
        for r in range(oh):
            for c in range(ow):
                k = arg[r, c]
                i = k // kw
                dx[r * sh + i - ph, c * sw + k - i * kw - pw] = dy[r, c]
    else:  # reverse raster order: each cell sums its gradients in the reference's (tap) order
        for r in range(oh - 1, -1, -1):
            for c in range(ow - 1, -1, -1):
                k = arg[r, c]
                i = k // kw
                dx[r * sh + i - ph, c * sw + k - i * kw - pw] += dy[r, c]


@njit(inline="always")
def _max_pool_backward_2x2(dy, arg, dx):
    """max_pool_backward of 2x2 windows, stride 2, no padding, over all the planes: dx (C-contiguous) zeroed in
    one flat pass, then each window's gradient stored at its winner (measured 4x faster than storing each
    window's four cells with a select, and 1.25-1.5x faster than zeroing plane by plane)."""
    f = dx.reshape(-1)
    for k in range(f.size):
        f[k] = 0
    n_planes, oh, ow = dy.shape
    h, w = dx.shape[1], dx.shape[2]
    for p in range(n_planes):
        gp = dy[p]
        ap = arg[p]
        for r in range(oh):
            g = gp[r]
            a = ap[r]
            base = p * h * w + 2 * r * w
            for c in range(ow):
                k = a[c]
                f[base + (k >> 1) * w + 2 * c + (k & 1)] = g[c]


@njit(nogil=True, cache=True)
def max_pool_backward(dy, arg, dx, kh, kw, sh, sw, ph, pw):
    """dx = dy routed to each window's winning tap (dx, C-contiguous, is overwritten)."""
    disjoint = sh >= kh and sw >= kw
    if kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0:
        _max_pool_backward_2x2(dy, arg, dx)
        return
    for p in range(dy.shape[0]):
        _max_pool_plane_backward(dy[p], arg[p], dx[p], kw, sh, sw, ph, pw, disjoint)


@njit(inline="always")
def _avg_pool_plane(x, y, divisor, zero, kh, kw, sh, sw, ph, pw):
    h, w = x.shape
    oh, ow = y.shape
    for r in range(oh):
        i0 = max(0, ph - r * sh)
        i1 = min(kh, h + ph - r * sh)
        for c in range(ow):
            j0 = max(0, pw - c * sw)
            j1 = min(kw, w + pw - c * sw)
            acc = zero  # of x's dtype
            for i in range(i0, i1):
                for j in range(j0, j1):
                    acc += x[r * sh + i - ph, c * sw + j - pw]
            y[r, c] = acc / divisor[r, c]


@njit(nogil=True, cache=True)
def avg_pool_forward(x, y, divisor, zero, kh, kw, sh, sw, ph, pw):
    """y = (sum over the window's in-bounds cells, taps in order) / divisor[r, c]."""
    for p in range(x.shape[0]):
        _avg_pool_plane(x[p], y[p], divisor, zero, kh, kw, sh, sw, ph, pw)


@njit(inline="always")
def _avg_pool_plane_backward(dy, dx, divisor, kh, kw, sh, sw, ph, pw):
    oh, ow = dy.shape
    h, w = dx.shape
    dx[:, :] = 0
    for r in range(oh - 1, -1, -1):
        i0 = max(0, ph - r * sh)
        i1 = min(kh, h + ph - r * sh)
        for c in range(ow - 1, -1, -1):
            j0 = max(0, pw - c * sw)
            j1 = min(kw, w + pw - c * sw)
            g = dy[r, c] / divisor[r, c]
            for i in range(i0, i1):
                for j in range(j0, j1):
                    dx[r * sh + i - ph, c * sw + j - pw] += g


@njit(nogil=True, cache=True)
def avg_pool_backward(dy, dx, divisor, kh, kw, sh, sw, ph, pw):
    """dx = the sum of dy / divisor over the windows holding each cell, outputs in reverse raster order (tap
    order per cell); dx is overwritten."""
    for p in range(dy.shape[0]):
        _avg_pool_plane_backward(dy[p], dx[p], divisor, kh, kw, sh, sw, ph, pw)


# ----------------------------------------------------------------------------------------------
# ReLU over flat arrays (serial, nogil: NumpyBackend runs them on shares of the array)
# ----------------------------------------------------------------------------------------------
@njit(nogil=True, cache=True)
def relu(x, y):
    """y = relu(x) as PyTorch computes it (reference.activation_forward): 0 where x < 0, else x (NaN, -0.0 kept)."""
    for i in range(x.size):
        v = x[i]
        y[i] = 0.0 if v < 0 else v


@njit(nogil=True, cache=True)
def relu_backward(g, y, dx):
    """dx = 0 where y <= 0, else g: PyTorch's rule (reference.activation_backward; a NaN y passes g)."""
    for i in range(g.size):
        dx[i] = 0.0 if y[i] <= 0 else g[i]


# ----------------------------------------------------------------------------------------------
# convolution: im2col, the layout pass (+ bias), col2im -- serial, without the GIL
# ----------------------------------------------------------------------------------------------
# These run on one group of images each, several groups at once from NumpyBackend's threads (each
# thread's GEMMs on a single-threaded BLAS: see conv2d_forward there), so they are plain compiled loops
# that release the GIL (nogil), not prange kernels: no launch lock, no threading layer.
# Numba checks every index for a negative value (wraparound) unless it is a range() variable; a checked
# index keeps LLVM from vectorizing the loop. So the copies below index 1-D slices with the bare loop
# variable (measured: im2col 1.5x, col2im 1.4-2x faster than indexing the 6-D arrays directly).
@njit(inline="always")
def _fill(d, lo, hi, v):
    """d[lo:hi] = v."""
    s = d[lo:hi]
    for k in range(hi - lo):
        s[k] = v


@njit(inline="always")
def _copy_rows(src, s0, s_row, dst, d0, d_row, rows, count, step):
    """dst[d0 + r d_row + q] = src[s0 + r s_row + q step] for r < rows, q < count."""
    for r in range(rows):
        s = src[s0 + r * s_row : s0 + r * s_row + (count - 1) * step + 1]
        d = dst[d0 + r * d_row : d0 + r * d_row + count]
        if step == 1:
            for q in range(count):
                d[q] = s[q]
        else:
            for q in range(count):
                d[q] = s[q * step]


@njit(nogil=True, cache=True)
def im2col(x, cols, sh, sw, ph, pw):
    """cols[c, i, j, n, r, q] = x[n, c, r sh + i - ph, q sw + j - pw], 0 where that lies in the zero padding
    (reference.conv2d_forward's columns): x (N, C, H, W), cols (C, KH, KW, N, OH, OW), tap by tap; the padding
    is never materialised. Stride 1 with OW == W (a "same" convolution along the rows) copies each tap's image
    plane as one contiguous shifted run (a row of OW values, 14 for a 14 x 14 plane, is too short a loop to
    vectorize) and then zeroes the cells that read the padding; otherwise row by row. Each case is its own
    function: one loop nest with all three ran the unpadded row copies 1.5x slower (measured)."""
    if ph == 0 and pw == 0:
        _im2col_inside(x, cols, sh, sw)
    elif sh == 1 and sw == 1 and cols.shape[5] == x.shape[3]:
        _im2col_flat(x, cols, ph, pw)
    else:
        _im2col_rows(x, cols, sh, sw, ph, pw)


@njit(inline="always")
def _im2col_inside(x, cols, sh, sw):
    """im2col without padding: every row copy lies inside x."""
    n_img, ch, h, w = x.shape
    kh, kw, oh, ow = cols.shape[1], cols.shape[2], cols.shape[4], cols.shape[5]
    xf = x.reshape(-1)
    cf = cols.reshape(-1)
    span = (ow - 1) * sw + 1
    for t in range(ch * kh * kw):
        c = t // (kh * kw)
        i = (t // kw) % kh
        j = t % kw
        for n in range(n_img):
            src = ((n * ch + c) * h + i) * w + j
            dst = (t * n_img + n) * oh * ow
            for r in range(oh):
                d = cf[dst + r * ow : dst + r * ow + ow]
                s = xf[src + r * sh * w : src + r * sh * w + span]
                if sw == 1:
                    for q in range(ow):
                        d[q] = s[q]
                else:
                    for q in range(ow):
                        d[q] = s[q * sw]


@njit(inline="always")
def _tap_bounds(i, j, sh, sw, ph, pw, h, w, oh, ow):
    """(r0, r1, q0, q1): the outputs of tap (i, j) whose input lies inside the H x W plane: rows [r0, r1),
    columns [q0, q1) (empty ranges where the tap sees only padding)."""
    r0 = min(oh, max(0, -((i - ph) // sh)))
    r1 = max(r0, min(oh, (h - 1 + ph - i) // sh + 1))
    q0 = min(ow, max(0, -((j - pw) // sw)))
    q1 = max(q0, min(ow, (w - 1 + pw - j) // sw + 1))
    return r0, r1, q0, q1


@njit(inline="always")
def _im2col_flat(x, cols, ph, pw):
    """im2col of stride 1, OW == W: one shifted run per tap and image, then the padding's cells zeroed."""
    n_img, ch, h, w = x.shape
    kh, kw, oh, ow = cols.shape[1], cols.shape[2], cols.shape[4], cols.shape[5]
    xf = x.reshape(-1)
    cf = cols.reshape(-1)
    plane = oh * ow
    zero = cols.dtype.type(0)
    for t in range(ch * kh * kw):
        c = t // (kh * kw)
        i = (t // kw) % kh
        j = t % kw
        r0, r1, q0, q1 = _tap_bounds(i, j, 1, 1, ph, pw, h, w, oh, ow)
        for n in range(n_img):
            d = cf[(t * n_img + n) * plane : (t * n_img + n + 1) * plane]
            if q0 == q1 or r0 == r1:
                _fill(d, 0, plane, zero)
                continue
            lo = r0 * ow + q0
            hi = (r1 - 1) * ow + q1
            base = (n * ch + c) * h * w + (i - ph) * w + (j - pw)  # x's flat index of output 0
            _fill(d, 0, lo, zero)
            s = xf[base + lo : base + hi]
            dd = d[lo:hi]
            for k in range(hi - lo):
                dd[k] = s[k]
            _fill(d, hi, plane, zero)
            for r in range(r0, r1):  # the cells the shifted run filled from the row before or after
                _fill(d, r * ow, r * ow + q0, zero)
                _fill(d, r * ow + q1, r * ow + ow, zero)


@njit(inline="always")
def _im2col_rows(x, cols, sh, sw, ph, pw):
    """im2col of any geometry, row by row, the padding's cells zeroed."""
    n_img, ch, h, w = x.shape
    kh, kw, oh, ow = cols.shape[1], cols.shape[2], cols.shape[4], cols.shape[5]
    xf = x.reshape(-1)
    cf = cols.reshape(-1)
    plane = oh * ow
    zero = cols.dtype.type(0)
    for t in range(ch * kh * kw):
        c = t // (kh * kw)
        i = (t // kw) % kh
        j = t % kw
        r0, r1, q0, q1 = _tap_bounds(i, j, sh, sw, ph, pw, h, w, oh, ow)
        for n in range(n_img):
            d = cf[(t * n_img + n) * plane : (t * n_img + n + 1) * plane]
            if q0 == q1 or r0 == r1:
                _fill(d, 0, plane, zero)
                continue
            _fill(d, 0, r0 * ow, zero)
            _fill(d, r1 * ow, plane, zero)
            src = (n * ch + c) * h * w + (r0 * sh + i - ph) * w + q0 * sw + j - pw
            _copy_rows(xf, src, sh * w, d, r0 * ow + q0, ow, r1 - r0, q1 - q0, sw)
            if q0 > 0 or q1 < ow:
                for r in range(r0, r1):
                    _fill(d, r * ow, r * ow + q0, zero)
                    _fill(d, r * ow + q1, r * ow + ow, zero)


@njit(nogil=True, cache=True)
def swap01(src, dst, bias, has_bias, relu):
    """dst[b, a, l] = src[a, b, l] (+ bias[a]) (then ReLU: 0 where < 0, NaN and -0.0 kept): the GEMM output
    (OC, N, L) laid out as (N, OC, L) with the bias and ReLU in the same pass, or a gradient (N, OC, L) as
    (OC, N, L)."""
    na, nb, nl = src.shape
    for t in range(na * nb):
        a = t // nb
        b = t - a * nb
        ba = bias[a] if has_bias else bias[0]
        for q in range(nl):
            v = src[a, b, q] + ba if has_bias else src[a, b, q]
            if relu and v < 0:
                v = 0.0
            dst[b, a, q] = v


@njit(nogil=True, cache=True)
def swap01_relu_mask(dy, y, dst):
    """dst[b, a, l] = 0 where y[a, b, l] <= 0, else dy[a, b, l]: ReLU's derivative applied in the transpose of the
    output gradient (N, OC, L) to (OC, N, L), as reference.activation_backward computes it."""
    na, nb, nl = dy.shape
    for t in range(na * nb):
        a = t // nb
        b = t - a * nb
        for q in range(nl):
            dst[b, a, q] = 0.0 if y[a, b, q] <= 0 else dy[a, b, q]


@njit(nogil=True, cache=True)
def col2im(dcols, dx, sh, sw, ph, pw):
    """dx[n, c, r sh + i - ph, q sw + j - pw] = the sum of dcols[c, i, j, n, r, q] over the taps (i, j) in
    order: the adjoint of im2col. Plane by plane (image, channel): the taps are added, in the reference's
    order, into a zeroed padded plane, whose inside is then copied to dx (overwritten).

    Stride 1 with OW == W: each tap is one contiguous shifted add of its (OH, OW) block into the zeroed dx
    plane (rows of OW values are too short to vectorize), after zeroing -- in dcols, a scratch the caller
    gives up -- the cells whose input lies in the padding: the shifted run adds them, as +0.0, to a
    neighbouring row's edge cell, which leaves every sum's bits as they were (a sum that starts at +0.0
    is never -0.0, and x + 0.0 == x for every other x, NaN and inf included)."""
    ch, kh, kw, n_img, oh, ow = dcols.shape
    h, w = dx.shape[2], dx.shape[3]
    if sh == 1 and sw == 1 and ow == w:
        _col2im_flat(dcols, dx, ph, pw)
        return
    hp = max((oh - 1) * sh + kh, h + ph)  # the padded plane: every tap's cell and every cell of dx
    wp = max((ow - 1) * sw + kw, w + pw)
    df = dcols.reshape(-1)
    xf = dx.reshape(-1)
    plane = oh * ow
    for t in range(n_img * ch):
        n = t // ch
        c = t - n * ch
        buf = np.zeros(hp * wp, dcols.dtype)
        for i in range(kh):
            for j in range(kw):
                src = (((c * kh + i) * kw + j) * n_img + n) * plane
                for r in range(oh):
                    s = df[src + r * ow : src + r * ow + ow]
                    at = (r * sh + i) * wp + j
                    d = buf[at : at + (ow - 1) * sw + 1]
                    if sw == 1:
                        for q in range(ow):
                            d[q] += s[q]
                    else:
                        for q in range(ow):
                            d[q * sw] += s[q]
        for y in range(h):
            d = xf[(t * h + y) * w : (t * h + y) * w + w]
            s = buf[(y + ph) * wp + pw : (y + ph) * wp + pw + w]
            for q in range(w):
                d[q] = s[q]


@njit(inline="always")
def _col2im_flat(dcols, dx, ph, pw):
    """col2im of stride 1, OW == W (see there)."""
    ch, kh, kw, n_img, oh, ow = dcols.shape
    h, w = dx.shape[2], dx.shape[3]
    df = dcols.reshape(-1)
    xf = dx.reshape(-1)
    plane = oh * ow
    zero = dcols.dtype.type(0)
    for t in range(n_img * ch):
        n = t // ch
        c = t - n * ch
        d = xf[t * h * w : (t + 1) * h * w]
        _fill(d, 0, h * w, zero)
        for i in range(kh):
            for j in range(kw):
                r0, r1, q0, q1 = _tap_bounds(i, j, 1, 1, ph, pw, h, w, oh, ow)
                if r0 == r1 or q0 == q1:
                    continue
                s = df[(((c * kh + i) * kw + j) * n_img + n) * plane :][:plane]
                for r in range(r0, r1):
                    _fill(s, r * ow, r * ow + q0, zero)
                    _fill(s, r * ow + q1, r * ow + ow, zero)
                lo = r0 * ow + q0
                hi = (r1 - 1) * ow + q1
                off = (i - ph) * w + j - pw  # dx's index of output k: k + off
                dd = d[lo + off : hi + off]
                ss = s[lo:hi]
                for k in range(hi - lo):
                    dd[k] += ss[k]


# conv2d's weight (and bias) gradient for few input taps (C KH KW small: a first layer), image by image:
# dW = sum_n G_n @ cols_n.T, db = sum_n G_n's row sums, with G_n = the output gradient of image n (OC, OH OW)
# (ReLU's mask applied) and cols_n its im2col columns (C KH KW, OH OW) -- both built in L1/L2 and used at
# once, where the grouped path writes the whole batch's G and columns out in the (OC, N L) layout and runs a
# product 16 x 9 x 78400 that is too thin for the GEMM kernel's tile (OpenBLAS: ~0.45 ms for it, memory
# bound). The dot products run over chunks of at most _DW_CHUNK terms as float32 vector partial sums
# (fastmath reassoc: not the reference's order), each chunk's sum added to float64 accumulators: the error
# of an entry is within ~(_DW_CHUNK / 16 + 2) float32 eps of sum |g| |x| (tested in test_numba_cpu.py).
_DW_CHUNK = 512


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"}, error_model="numpy")
def _dw_chunk(g, cols, p0, p1, acc, dacc, need_db):
    """acc[i, j] += sum over p in [p0, p1) of g[i, p] cols[j, p] (partial sums in g's dtype, acc float64);
    dacc[i] += sum of g[i, p0:p1]. Blocks of 4 rows of g by 3 of cols: 12 vector accumulators, 7 loads per 12
    FMAs (measured ~90 GFMA/s on one AVX-512 core, L1-resident; one dot at a time: ~45-65); the rest one dot
    at a time."""
    m = g.shape[0]
    n = cols.shape[0]
    k = p1 - p0
    z = g.dtype.type(0)
    m4 = m - m % 4
    n3 = n - n % 3
    for i in range(0, m4, 4):
        g0, g1, g2, g3 = g[i, p0:p1], g[i + 1, p0:p1], g[i + 2, p0:p1], g[i + 3, p0:p1]
        for j in range(0, n3, 3):
            b0, b1, b2 = cols[j, p0:p1], cols[j + 1, p0:p1], cols[j + 2, p0:p1]
            s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = s30 = s31 = s32 = z
            for p in range(k):
                x0 = b0[p]
                x1 = b1[p]
                x2 = b2[p]
                v = g0[p]
                s00 += v * x0
                s01 += v * x1
                s02 += v * x2
                v = g1[p]
                s10 += v * x0
                s11 += v * x1
                s12 += v * x2
                v = g2[p]
                s20 += v * x0
                s21 += v * x1
                s22 += v * x2
                v = g3[p]
                s30 += v * x0
                s31 += v * x1
                s32 += v * x2
            acc[i, j] += s00
            acc[i, j + 1] += s01
            acc[i, j + 2] += s02
            acc[i + 1, j] += s10
            acc[i + 1, j + 1] += s11
            acc[i + 1, j + 2] += s12
            acc[i + 2, j] += s20
            acc[i + 2, j + 1] += s21
            acc[i + 2, j + 2] += s22
            acc[i + 3, j] += s30
            acc[i + 3, j + 1] += s31
            acc[i + 3, j + 2] += s32
    for i in range(m):
        gi = g[i, p0:p1]
        for j in range(n3 if i < m4 else 0, n):
            b0 = cols[j, p0:p1]
            s0 = z
            for p in range(k):
                s0 += gi[p] * b0[p]
            acc[i, j] += s0
        if need_db:
            s0 = z
            for p in range(k):
                s0 += gi[p]
            dacc[i] += s0


@njit(nogil=True, cache=True)
def conv_grad_weight_by_image(x, dy, y, acc, dacc, kh, kw, sh, sw, ph, pw, relu, need_db):
    """acc (OC, C KH KW) float64 += dW of the images of x (N, C, H, W) from dy (N, OC, OH, OW); dacc (OC,) float64
    += db; relu: dy masked by ReLU's derivative (0 where y <= 0, as reference.activation_backward), else y unused."""
    n_img, ch = x.shape[0], x.shape[1]
    oc, oh, ow = dy.shape[1], dy.shape[2], dy.shape[3]
    plane = oh * ow
    ckk = ch * kh * kw
    cols = np.empty((ch, kh, kw, 1, oh, ow), x.dtype)
    c2 = cols.reshape(ckk, plane)
    g = np.empty((oc, plane), dy.dtype)
    for n in range(n_img):
        im2col(x[n : n + 1], cols, sh, sw, ph, pw)
        dyn = dy[n].reshape(oc, plane)
        if relu:
            yn = y[n].reshape(oc, plane)
            gf = g.reshape(-1)
            df = dyn.reshape(-1)
            yf = yn.reshape(-1)
            for q in range(oc * plane):
                gf[q] = 0.0 if yf[q] <= 0 else df[q]
            src = g
        else:
            src = dyn
        for p0 in range(0, plane, _DW_CHUNK):
            _dw_chunk(src, c2, p0, min(plane, p0 + _DW_CHUNK), acc, dacc, need_db)


@njit(inline="always")
def _taps_into(w2, c2, out, o0, o1, t0, t1, first):
    """out[o, :] (= 0 when first) + w2[o, t] * c2[t, :] for t in [t0, t1) in order, rows o in [o0, o1): one
    pass over up to 4 rows and 3 taps (each product rounded, then added: the plain dot's order)."""
    k = out.shape[1]
    for o in range(o0, o1):
        d = out[o]
        for t in range(t0, t1):
            wt = w2[o, t]
            ct = c2[t]
            if first and t == t0:
                for p in range(k):
                    d[p] = wt * ct[p]
            else:
                for p in range(k):
                    d[p] = d[p] + wt * ct[p]


@njit(inline="always")
def _taps_4x3(w2, c2, out, o, t, first):
    """_taps_into of rows o..o+3 and taps t..t+2 in one pass: 3 column loads and 4 loads/stores of out per 12
    products, all in the vectorized loop over the image's outputs."""
    k = out.shape[1]
    d0, d1, d2, d3 = out[o], out[o + 1], out[o + 2], out[o + 3]
    x0, x1, x2 = c2[t], c2[t + 1], c2[t + 2]
    a0, a1, a2 = w2[o, t], w2[o, t + 1], w2[o, t + 2]
    b0, b1, b2 = w2[o + 1, t], w2[o + 1, t + 1], w2[o + 1, t + 2]
    e0, e1, e2 = w2[o + 2, t], w2[o + 2, t + 1], w2[o + 2, t + 2]
    f0, f1, f2 = w2[o + 3, t], w2[o + 3, t + 1], w2[o + 3, t + 2]
    if first:
        for p in range(k):
            u0, u1, u2 = x0[p], x1[p], x2[p]
            d0[p] = a0 * u0 + a1 * u1 + a2 * u2
            d1[p] = b0 * u0 + b1 * u1 + b2 * u2
            d2[p] = e0 * u0 + e1 * u1 + e2 * u2
            d3[p] = f0 * u0 + f1 * u1 + f2 * u2
    else:
        for p in range(k):
            u0, u1, u2 = x0[p], x1[p], x2[p]
            d0[p] = d0[p] + a0 * u0 + a1 * u1 + a2 * u2
            d1[p] = d1[p] + b0 * u0 + b1 * u1 + b2 * u2
            d2[p] = d2[p] + e0 * u0 + e1 * u1 + e2 * u2
            d3[p] = d3[p] + f0 * u0 + f1 * u1 + f2 * u2


@njit(nogil=True, cache=True)
def conv_forward_by_image(x, w2, bias, y, kh, kw, sh, sw, ph, pw, has_bias, relu):
    """y[n] (OC, OH OW) = act(w2 (OC, C KH KW) @ cols_n + bias) image by image, the columns of each image made
    in cache and the result written in y's NCHW layout at once (no (OC, N L) GEMM output to lay out): for
    few taps (a first layer), where the GEMM's inner dimension is too short to pay. Each output is the plain
    dot in tap order (products rounded, added left to right), then + bias, then ReLU (0 where < 0, NaN and
    -0.0 kept)."""
    n_img, ch = x.shape[0], x.shape[1]
    oc, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    plane = oh * ow
    ckk = ch * kh * kw
    cols = np.empty((ch, kh, kw, 1, oh, ow), x.dtype)
    c2 = cols.reshape(ckk, plane)
    o4 = oc - oc % 4
    t3 = ckk - ckk % 3
    for n in range(n_img):
        im2col(x[n : n + 1], cols, sh, sw, ph, pw)
        out = y[n].reshape(oc, plane)
        for o in range(0, o4, 4):
            for t in range(0, t3, 3):
                _taps_4x3(w2, c2, out, o, t, t == 0)
            if t3 < ckk:
                _taps_into(w2, c2, out, o, o + 4, t3, ckk, t3 == 0)
        if o4 < oc:
            _taps_into(w2, c2, out, o4, oc, 0, ckk, True)
        if has_bias or relu:
            for o in range(oc):
                d = out[o]
                b = bias[o] if has_bias else bias[0]
                for p in range(plane):
                    v = d[p] + b if has_bias else d[p]
                    if relu and v < 0:
                        v = 0.0
                    d[p] = v


# ----------------------------------------------------------------------------------------------
# softmax cross-entropy, float32: loss and dlogits in a few L1-resident passes over each row
# ----------------------------------------------------------------------------------------------
# Serial and ``nogil`` over rows [lo, hi), like the optimizer steps (the numpy backend splits the rows over
# its threads). Per row: max and finiteness, exp, sum, scale -- each pass a loop LLVM vectorizes:
# - max: LLVM does not vectorize a float max reduction from Numba (the select carries no fast-math
#   flags: 10x slower, measured), so it runs on the float32 bits as integers, mapped so that integer order
#   is float order (negative floats have their magnitude bits flipped); the largest exponent field tells
#   whether the row holds a NaN or an infinity (all ones).
# - exp(x) for x <= 0 as 2^k * e^r, k = round(x / ln 2), r = x - k ln 2 in [-ln2/2, ln2/2] (ln 2 split in a
#   high part exact in float32 and a low part), e^r by its Taylor polynomial of degree 7 (truncation error
#   r^8/8! < 6e-9 relative, under float32's half ulp), evaluated with FMAs. Written as plain arithmetic plus
#   an int32 store of 2^k's float32 bits (Numba has no scalar bitcast), multiplied in the next pass; NumPy's
#   exp is SIMD, a libm call per element is 5x slower.
_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_EXP_MIN = np.float32(-87.0)  # below this e^x is under float32's normal range: computed as 0
_CE = {"nogil": True, "cache": True, "error_model": "numpy"}


@njit(inline="always")
def _row_max_bits(bits):
    """(the float32 bits of the row's maximum, finite): ``bits`` is the row viewed as int32."""
    key_max = -2147483648
    exp_max = 0
    for j in range(bits.size):
        b = bits[j]
        key = b ^ ((b >> 31) & 0x7FFFFFFF)  # integer order = float order
        key_max = key if key > key_max else key_max
        e = b & 0x7F800000
        exp_max = e if e > exp_max else exp_max
    return key_max ^ ((key_max >> 31) & 0x7FFFFFFF), exp_max != 0x7F800000


@njit(fastmath={"contract"}, **_CE)
def _exp_shifted(row, m, out, scale_bits):
    """out * 2^(scale_bits exponent) = exp(row - m): the polynomial part into out, 2^k as float32 bits."""
    for j in range(row.size):
        x = row[j] - m
        x = x if x > _EXP_MIN else _EXP_MIN
        k = np.floor(x * _LOG2E + np.float32(0.5))
        r = x - k * _LN2_HI
        r = r - k * _LN2_LO
        p = np.float32(1.0 / 5040)
        p = p * r + np.float32(1.0 / 720)
        p = p * r + np.float32(1.0 / 120)
        p = p * r + np.float32(1.0 / 24)
        p = p * r + np.float32(1.0 / 6)
        p = p * r + np.float32(0.5)
        p = p * r + np.float32(1.0)
        p = p * r + np.float32(1.0)
        out[j] = p if row[j] - m > _EXP_MIN else np.float32(0)
        scale_bits[j] = (np.int32(k) + 127) << 23


@njit(fastmath={"reassoc"}, **_CE)
def _scale_and_sum(out, scale):
    """out *= scale, returning the sum (reassociated: vectorized partial sums)."""
    s = np.float32(0)
    for j in range(out.size):
        v = out[j] * scale[j]
        out[j] = v
        s += v
    return s


@njit(**_CE)
def softmax_cross_entropy_rows(lo, hi, logits, target, grad, nll, row_scale, ignore_index):
    """For each row i in [lo, hi) of logits (N, C) float32: nll[i] = log(sum exp(z - max)) - (z[t] - max)
    and grad[i] = (softmax(z) - onehot(t)) * row_scale, both 0 where t == ignore_index. Returns the number
    of rows holding a NaN or an infinity, ignored or not (their outputs are not computed: the caller takes
    the reference path)."""
    c = logits.shape[1]
    scratch = np.empty(c, np.float32)
    scratch_bits = scratch.view(np.int32)
    bad = 0
    for i in range(lo, hi):
        row = logits[i]
        g = grad[i]
        scratch_bits[0], finite = _row_max_bits(row.view(np.int32))
        if not finite:
            bad += 1
            continue
        t = target[i]
        if t == ignore_index:
            nll[i] = np.float32(0)
            for j in range(c):
                g[j] = np.float32(0)
            continue
        m = scratch[0]
        _exp_shifted(row, m, g, scratch_bits)
        s = _scale_and_sum(g, scratch)
        nll[i] = np.log(s) - (row[t] - m)
        e_t = g[t]
        f = row_scale / s
        for j in range(c):
            g[j] = g[j] * f
        g[t] = (e_t / s - np.float32(1)) * row_scale
    return bad


share_cache(globals())
