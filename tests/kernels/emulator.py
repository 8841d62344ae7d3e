"""A CPU stand-in for the slice of CuPy that gpunn's kernels use, running kernels/*.cu as host C++.

Not a CUDA implementation: enough to run the real kernel sources and the real CuPy-backend launch code
on a machine without a GPU, so that index arithmetic, reductions, barriers, edge tiles and the Python
side's argument passing are exercised before a GPU ever sees them.

- Each ``.cu`` file is compiled by ``g++ -std=c++20`` with ``SHIM`` (below) force-included: ``__global__``
  and friends become nothing, ``__shared__`` becomes ``static`` (blocks run one at a time, so a
  function-local static is exactly one block's shared memory). CUDA threads are fibers (``ucontext``)
  on one OS thread: ``__syncthreads`` and the two halves of a warp shuffle are barriers the scheduler
  releases once every live thread of the block (warp) reached them.
- For every ``extern "C"`` kernel a trampoline ``gpunn_launch_<name>(grid, block, void** args)`` is
  generated from its preprocessed signature; it runs the grid block by block. ``args`` is the CUDA
  launch ABI (``kernelParams``: one pointer per argument).
- The Python side packs arguments with CuPy's rules (array -> its data pointer, ``None`` -> NULL, NumPy
  scalar -> its bytes, Python int -> int64, float -> float64) and checks every argument's kind and size
  against the C signature, so a wrong argument order or width fails loudly here.
- ``install(path)`` writes an importable ``cupy`` package to ``path`` whose arrays are NumPy arrays and
  whose ``RawModule`` is this emulator; run the ``gpu`` tests in a subprocess with it on PYTHONPATH.
- CUDA graphs as CuPy offers them (``s = cupy.cuda.Stream(non_blocking=True)``; ``with s:
  s.begin_capture(); ...; g = s.end_capture()``; ``g.launch(stream)``): while a stream captures, kernel
  launches and the array operations that write an existing array (ufuncs with ``out=``, ``copyto``,
  ``fill``, item assignment) are RECORDED, not run, with their by-value arguments as they were then;
  ``launch`` runs the record. What CUDA refuses during a capture raises ``CaptureViolation`` and
  invalidates it: a fresh array (an allocation), a device-to-host read, a synchronize, work issued to a
  stream other than the capturing one (the legacy stream's implicit synchronization), capture on the
  default stream. Not modelled: other in-place array methods (``sort``, ``put``, ...) run at once during a
  capture instead of being recorded; CuPy's relaxed capture mode, in which its memory pool may allocate.

GPU behaviour it does NOT show: timing, memory-model races across blocks (blocks never overlap here),
warp-divergence hazards, float atomics' ordering, NVRTC-specific compile errors (test_compile covers
those with nvcc/NVRTC), fast-math differences, register pressure.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

SHIM = r"""
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <math.h>
#include <ucontext.h>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __shared__ static

struct dim3 { unsigned int x = 1, y = 1, z = 1; };
inline dim3 threadIdx, blockIdx, blockDim, gridDim;

// CUDA threads are fibers (ucontext) on one OS thread, resumed in thread order by a scheduler that
// releases a barrier once every live thread of the block (or warp) waits at it. An exited thread
// no longer counts, as in CUDA. Deterministic, and cheap enough for thousands of blocks.
namespace gpunn_emu {
enum State { RUN, BLOCK_WAIT, WARP_WAIT, DONE };
struct Fiber { ucontext_t ctx; std::vector<char> stack; State state; };
inline std::vector<Fiber> fibers;
inline std::vector<uint64_t> exchange;  // one 8-byte slot per thread, for shuffles
inline ucontext_t scheduler;
inline unsigned current = 0;
inline const std::function<void()>* body_ptr = nullptr;

inline void entry() {
    (*body_ptr)();
    fibers[current].state = DONE;  // returning resumes the scheduler (uc_link)
}

inline void wait(State s) {
    fibers[current].state = s;
    swapcontext(&fibers[current].ctx, &scheduler);
}

inline void set_thread(unsigned t) {
    current = t;
    threadIdx = {t % blockDim.x, (t / blockDim.x) % blockDim.y, t / (blockDim.x * blockDim.y)};
}

inline void run_block(unsigned n) {
    for (unsigned t = 0; t < n; ++t) {
        Fiber& f = fibers[t];
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack.data();
        f.ctx.uc_stack.ss_size = f.stack.size();
        f.ctx.uc_link = &scheduler;
        makecontext(&f.ctx, entry, 0);
        f.state = RUN;
    }
    for (;;) {
        for (unsigned t = 0; t < n; ++t)
            if (fibers[t].state == RUN) {
                set_thread(t);
                swapcontext(&scheduler, &fibers[t].ctx);
            }
        bool all_done = true, released = false;
        for (unsigned w = 0; w * 32 < n; ++w) {  // warps whose live lanes all wait at a shuffle
            bool any = false, all = true;
            for (unsigned t = w * 32; t < n && t < w * 32 + 32; ++t) {
                if (fibers[t].state == DONE) continue;
                all_done = false;
                any = true;
                all &= fibers[t].state == WARP_WAIT;
            }
            if (any && all) {
                released = true;
                for (unsigned t = w * 32; t < n && t < w * 32 + 32; ++t)
                    if (fibers[t].state == WARP_WAIT) fibers[t].state = RUN;
            }
        }
        if (all_done) return;
        if (released) continue;
        bool all_block = true;
        for (unsigned t = 0; t < n; ++t)
            all_block &= fibers[t].state == DONE || fibers[t].state == BLOCK_WAIT;
        if (!all_block) {
            std::fprintf(stderr, "gpunn kernel emulator: deadlock (threads of a block or warp wait at different "
                                 "barriers) in block (%u, %u, %u)\n", blockIdx.x, blockIdx.y, blockIdx.z);
            std::abort();
        }
        for (unsigned t = 0; t < n; ++t)
            if (fibers[t].state == BLOCK_WAIT) fibers[t].state = RUN;
    }
}

inline void run_grid(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                     const std::function<void()>& body) {
    gridDim = {gx, gy, gz};
    blockDim = {bx, by, bz};
    const unsigned n = bx * by * bz;
    fibers.resize(n);
    for (auto& f : fibers) f.stack.resize(64 * 1024);
    exchange.assign(n, 0);
    body_ptr = &body;
    for (unsigned k = 0; k < gz; ++k)
        for (unsigned j = 0; j < gy; ++j)
            for (unsigned i = 0; i < gx; ++i) {
                blockIdx = {i, j, k};
                run_block(n);
            }
}
}  // namespace gpunn_emu

inline void __syncthreads() { gpunn_emu::wait(gpunn_emu::BLOCK_WAIT); }

template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int lane_mask) {
    static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
    const unsigned t = gpunn_emu::current, lane = t % 32;
    uint64_t slot = 0;
    std::memcpy(&slot, &v, sizeof(T));
    gpunn_emu::exchange[t] = slot;
    gpunn_emu::wait(gpunn_emu::WARP_WAIT);  // every lane has written
    T out;
    std::memcpy(&out, &gpunn_emu::exchange[t - lane + (lane ^ (unsigned)lane_mask)], sizeof(T));
    gpunn_emu::wait(gpunn_emu::WARP_WAIT);  // every lane has read
    return out;
}

// One OS thread runs everything: atomics are plain read-modify-writes.
inline float atomicAdd(float* p, float v) { float o = *p; *p = o + v; return o; }
inline double atomicAdd(double* p, double v) { double o = *p; *p = o + v; return o; }
inline int atomicAdd(int* p, int v) { int o = *p; *p = o + v; return o; }
inline unsigned long long atomicExch(unsigned long long* p, unsigned long long v) { auto o = *p; *p = v; return o; }
inline float __int_as_float(int v) { float f; std::memcpy(&f, &v, 4); return f; }
inline double __longlong_as_double(long long v) { double d; std::memcpy(&d, &v, 8); return d; }
"""


class CaptureViolation(RuntimeError):
    """What a CUDA stream capture refuses (cudaErrorStreamCaptureUnsupported / ...Implicit / ...Invalidated)."""


# the capture in progress: ops (the recorded thunks) and the capturing stream; None when none
CAPTURE: dict = {"ops": None, "stream": None, "violation": None}


def capture_violation(what: str) -> None:
    """Raise (and invalidate the capture) when a stream captures; nothing otherwise."""
    if CAPTURE["ops"] is not None:
        CAPTURE["violation"] = what
        raise CaptureViolation(f"operation not permitted when stream is capturing: {what}")


def capturing_here(current_stream) -> bool:
    """True when a capture is in progress and ``current_stream`` is the capturing one (record, do not run);
    work issued to another stream during a capture is a violation."""
    if CAPTURE["ops"] is None:
        return False
    if current_stream is not CAPTURE["stream"]:
        capture_violation("work issued to a stream other than the capturing one")
    return True


_SIG = re.compile(r'extern "C"\s+void\s+(\w+)\s*\(([^)]*)\)\s*\{', re.S)
_lib_cache: dict[str, tuple[ctypes.CDLL, dict]] = {}
_NP_KINDS = {
    "float": ("f", 4),
    "double": ("f", 8),
    "int": ("i", 4),
    "long long": ("i", 8),
    "unsigned int": ("u", 4),
    "unsigned long long": ("u", 8),
    "bool": ("b", 1),
}


def _param_type(param: str) -> str:
    """The C type of one parameter declaration, without its name and qualifiers."""
    t = re.sub(r"\b(const|__restrict)\b", " ", param).strip()
    t = re.sub(r"\s*\*\s*", "*", t)
    t = re.sub(r"\s+", " ", t).strip()
    return re.sub(r"\s*\b\w+$", "", t) if not t.endswith("*") else t


def _compile(source: str) -> tuple[ctypes.CDLL, dict[str, list[str]]]:
    key = hashlib.sha256(source.encode()).hexdigest()[:16]
    if key in _lib_cache:
        return _lib_cache[key]
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    if cxx is None:
        raise RuntimeError("the kernel emulator needs a C++20 compiler (g++)")
    work = Path(tempfile.mkdtemp(prefix="gpunn_emu_"))
    (work / "shim.h").write_text(SHIM)
    (work / "kernel.cpp").write_text(source)
    pre = subprocess.run(
        [cxx, "-std=c++20", "-E", "-P", "-include", str(work / "shim.h"), str(work / "kernel.cpp")],
        capture_output=True,
        text=True,
    )
    if pre.returncode:
        raise RuntimeError(pre.stderr)
    sigs = {}
    for name, params in _SIG.findall(pre.stdout.split("namespace gpunn_emu")[-1]):
        plist = [p.strip() for p in params.split(",") if p.strip()]
        sigs[name] = [_param_type(p) for p in plist]
    lines = []
    for name, types in sigs.items():
        call = ", ".join(f"*reinterpret_cast<{t}*>(args[{i}])" for i, t in enumerate(types))
        lines.append(
            f'extern "C" void gpunn_launch_{name}(unsigned gx, unsigned gy, unsigned gz, unsigned bx,'
            f" unsigned by, unsigned bz, void** args) {{\n"
            f"    gpunn_emu::run_grid(gx, gy, gz, bx, by, bz, [&] {{ {name}({call}); }});\n}}"
        )
    (work / "kernel.cpp").write_text(source + "\n\n" + "\n".join(lines) + "\n")
    so = work / "kernel.so"
    proc = subprocess.run(
        [
            cxx,
            "-std=c++20",
            "-O1",
            "-ffp-contract=off",
            "-fPIC",
            "-shared",
            "-Wno-unknown-pragmas",
            "-include",
            str(work / "shim.h"),
            "-o",
            str(so),
            str(work / "kernel.cpp"),
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        raise RuntimeError(f"host compile of the kernel source failed:\n{proc.stderr}")
    lib = ctypes.CDLL(str(so))
    _lib_cache[key] = (lib, sigs)
    return lib, sigs


class EmulatedFunction:
    """A kernel: ``fn(grid, block, args)``, CuPy's RawKernel calling convention."""

    def __init__(self, lib, name: str, types: list[str]):
        self.name, self.types = name, types
        self._launch = getattr(lib, f"gpunn_launch_{name}")
        self._launch.argtypes = [ctypes.c_uint] * 6 + [ctypes.POINTER(ctypes.c_void_p)]
        self._launch.restype = None

    def _pack(self, i: int, ctype: str, arg):
        where = f"{self.name} argument {i} ({ctype})"
        if ctype.endswith("*"):
            if arg is None:
                return ctypes.c_void_p(0)
            if not isinstance(arg, np.ndarray):
                raise TypeError(f"{where}: expected an array or None, got {type(arg).__name__}")
            if not (arg.flags.c_contiguous or arg.size <= 1):
                raise ValueError(f"{where}: a kernel got a non-contiguous array")
            base = ctype.rstrip("*").strip()
            want = {
                "float": np.float32,
                "double": np.float64,
                "long long": np.int64,
                "int": np.int32,
                "unsigned char": np.uint8,
            }.get(base)
            if want is not None and arg.dtype != want:
                raise TypeError(f"{where}: got a {arg.dtype} array")
            return ctypes.c_void_p(arg.ctypes.data)
        if isinstance(arg, np.ndarray) or arg is None:
            raise TypeError(f"{where}: expected a scalar, got {type(arg).__name__}")
        if isinstance(arg, bool):
            arg = np.bool_(arg)
        elif isinstance(arg, int):
            arg = np.int64(arg)  # what CuPy does with a Python int
        elif isinstance(arg, float):
            arg = np.float64(arg)
        kind, size = _NP_KINDS[ctype]
        got = np.asarray(arg)
        if got.dtype.itemsize != size or (got.dtype.kind in "fb") != (kind in "fb"):
            raise TypeError(f"{where}: CuPy would pass {got.dtype} ({got.dtype.itemsize} bytes)")
        return ctypes.create_string_buffer(got.tobytes(), size)

    def __call__(self, grid, block, args, **kwargs):
        if len(args) != len(self.types):
            raise TypeError(f"{self.name} takes {len(self.types)} arguments, got {len(args)}")
        grid = tuple(grid) + (1,) * (3 - len(grid))
        block = tuple(block) + (1,) * (3 - len(block))
        if min(grid) < 1 or min(block) < 1 or np.prod(block) > 1024 or grid[1] > 65535 or grid[2] > 65535:
            raise ValueError(f"{self.name}: invalid launch configuration grid={grid} block={block}")
        holders = [self._pack(i, t, a) for i, (t, a) in enumerate(zip(self.types, args))]
        ptrs = (ctypes.c_void_p * len(holders))(*[ctypes.addressof(h) for h in holders])
        import cupy  # the stand-in (this runs only where it is installed)

        if capturing_here(cupy.cuda.get_current_stream()):  # recorded with its arguments' values now
            keep = (holders, ptrs, tuple(args))  # the arrays stay alive as long as the graph
            CAPTURE["ops"].append(lambda: (self._run(grid, block, keep[1]), keep))
            return
        self._run(grid, block, ptrs)

    def _run(self, grid, block, ptrs) -> None:
        import cupy

        cupy.counters["launch"] += 1
        self._launch(*grid, *block, ptrs)


class RawModule:
    def __init__(self, code: str, options=(), **kwargs):
        self.code, self.options = code, tuple(options)
        self._lib = None

    def compile(self):
        if self._lib is None:
            self._lib, self._sigs = _compile(self.code)
        return self

    def get_function(self, name: str) -> EmulatedFunction:
        self.compile()
        if name not in self._sigs:
            raise AttributeError(f"no kernel named {name!r} (have {sorted(self._sigs)})")
        return EmulatedFunction(self._lib, name, self._sigs[name])


FAKE_CUPY = '''"""A NumPy-backed stand-in for CuPy (tests/kernels/emulator.py): arrays are NumPy arrays, kernels
run on the CPU. Installed only on PYTHONPATH of the emulated test subprocess.

Arrays are ``cupy.ndarray``, a NumPy subclass that behaves like CuPy where the host is concerned: full
reductions and integer indexing give 0-d arrays (not host scalars), and every way a real CuPy program
waits for the GPU is COUNTED in ``counters``: ``d2h`` (device-to-host reads: ``asnumpy``, ``get``,
``float()``, ``int()``, ``bool()``, ``item()``, ``tolist()``), ``sync`` (stream / device
``synchronize``) and ``alloc`` (arrays that own fresh memory, views excluded). ``reset_counters()``
zeroes them. tests/kernels/test_host_syncs.py pins them per training step.
"""
import threading as _threading
import types as _types

import numpy as _np

from tests.kernels import emulator as _emu
from tests.kernels.emulator import RawModule  # noqa: F401

__version__ = "0.0-emulated"
counters = {"d2h": 0, "sync": 0, "alloc": 0, "launch": 0, "graph": 0}


def reset_counters():
    for k in counters:
        counters[k] = 0


class ndarray(_np.ndarray):
    """A device array: NumPy memory, CuPy's host-visible behaviour, host reads counted."""

    def __array_finalize__(self, obj):
        b = self.base
        # fresh memory: nothing underneath, or a plain NumPy buffer just wrapped (not a view of a device array)
        if b is None or (type(b) is _np.ndarray and b.flags.owndata):
            counters["alloc"] += 1
            _emu.capture_violation("a device allocation")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if not _NESTED.depth:
            _reject_host(inputs)
        out = kwargs.get("out")
        if _emu.capturing_here(_current()):
            if not out or any(o is None for o in out):
                _emu.capture_violation(f"numpy.{ufunc.__name__}.{method} without out= (a device allocation)")
            _emu.CAPTURE["ops"].append(lambda: _ufunc(ufunc, method, inputs, kwargs))
            return out[0] if len(out) == 1 else out
        return _ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        # CuPy hands numpy.f(device array, ...) to cupy.f, which refuses host arrays among its arguments;
        # NumPy's own calls inside f (its Python-level functions pass 0-d host arrays around) are not CuPy's
        if _NESTED.depth:
            return super().__array_function__(func, types, args, kwargs)
        _reject_host(args)
        _reject_host(kwargs.values())
        _NESTED.depth += 1
        try:
            return super().__array_function__(func, types, args, kwargs)
        finally:
            _NESTED.depth -= 1

    def fill(self, value):
        _reject_nonscalar_host(value)
        if _emu.capturing_here(_current()):
            _emu.CAPTURE["ops"].append(lambda: _np.ndarray.fill(self, value))
            return None
        return super().fill(value)

    def __setitem__(self, key, value):
        _reject_nonscalar_host(value)  # CuPy's setitem fills from anything but a device array
        if _emu.capturing_here(_current()):
            _emu.CAPTURE["ops"].append(lambda: _np.ndarray.__setitem__(self, key, value))
            return None
        return super().__setitem__(key, value)

    def __array_wrap__(self, arr, context=None, return_scalar=False):
        return _np.ndarray.__array_wrap__(self, arr, context, False)  # 0-d arrays, as CuPy

    def __getitem__(self, key):
        if isinstance(key, (int, _np.integer)) or (
                isinstance(key, tuple) and key and all(isinstance(k, (int, _np.integer)) for k in key)):
            key = (key if isinstance(key, tuple) else (key,)) + (Ellipsis,)  # a 0-d view, not a host scalar
        return super().__getitem__(key)

    def _read(self):
        _emu.capture_violation("a device-to-host copy")
        counters["d2h"] += 1
        return _np.asarray(self)

    def get(self, *args, **kwargs):
        return self._read().copy()

    def item(self, *args):
        return self._read().item(*args)

    def tolist(self):
        return self._read().tolist()

    def __float__(self):
        return float(self._read())

    def __int__(self):
        return int(self._read())

    def __index__(self):
        return self._read().__index__()

    def __bool__(self):
        return bool(self._read())

    def __reduce__(self):  # pickles as a host array
        return _np.asarray(self).__reduce__()


def _host_view(a):
    return a.view(_np.ndarray) if isinstance(a, ndarray) else a


class _Depth(_threading.local):
    depth = 0  # numpy functions running on device arrays in this thread


_NESTED = _Depth()


def _reject_host(args):
    """CuPy's TypeError for a NumPy array (0-d ones too) where it wants device arrays or scalars."""
    for a in args:
        if type(a) is _np.ndarray:
            raise TypeError(f"Unsupported type {type(a)}")
        if isinstance(a, (list, tuple)):
            _reject_host(a)


def _reject_nonscalar_host(value):
    """CuPy's ValueError for ``a[...] = host_array`` and ``a.fill(host_array)`` (0-d host arrays are read)."""
    if not _NESTED.depth and type(value) is _np.ndarray and value.shape != ():
        raise ValueError("non-scalar numpy.ndarray cannot be used for fill")


def _ufunc(ufunc, method, inputs, kwargs):
    """A ufunc on the NumPy memory underneath; results are device arrays, 0-d ones too (as CuPy)."""
    out = kwargs.get("out")
    if out:
        kwargs = dict(kwargs, out=tuple(_host_view(o) for o in out))
    r = getattr(ufunc, method)(*[_host_view(a) for a in inputs], **kwargs)
    if out:
        return out[0] if len(out) == 1 else out
    return _device(r)


def _device(r):
    if type(r) is _np.ndarray:
        return r.view(ndarray)
    if isinstance(r, _np.generic):
        return _np.asarray(r).view(ndarray)
    if isinstance(r, tuple):
        return tuple(_device(e) for e in r)
    if isinstance(r, list):
        return [_device(e) for e in r]
    return r


def _on_device(fn):
    def wrapper(*args, **kwargs):
        return _device(fn(*args, **kwargs))

    wrapper.__name__ = getattr(fn, "__name__", "function")
    wrapper.__doc__ = getattr(fn, "__doc__", None)
    return wrapper


def asnumpy(a, *args, **kwargs):
    if isinstance(a, ndarray):
        _emu.capture_violation("a device-to-host copy")
        counters["d2h"] += 1
    return _np.array(a) if isinstance(a, ndarray) else _np.asarray(a)


def asarray(a, dtype=None, order=None, **kwargs):
    """A device array itself when nothing changes (as CuPy: ``asarray(a) is a``), else converted; anything
    else (a host array too) is copied over."""
    if isinstance(a, ndarray):
        r = _np.asarray(a, dtype=dtype, order=order, **kwargs)
        same = _np.shares_memory(r, _host_view(a)) and r.dtype == a.dtype and r.shape == a.shape
        return a if same else _device(r)
    return _device(_np.array(a, dtype=dtype, order=order if order is not None else "K", copy=True, **kwargs))


def copyto(dst, src, casting="same_kind", where=True):
    if _emu.capturing_here(_current()):
        _emu.CAPTURE["ops"].append(lambda: _np.copyto(dst, src, casting=casting, where=where))
        return None
    return _np.copyto(dst, src, casting=casting, where=where)


class _Device:
    id = 0
    attributes = {"MultiProcessorCount": 4}

    def __init__(self, *args):
        pass

    def synchronize(self):
        _emu.capture_violation("cudaDeviceSynchronize")
        counters["sync"] += 1


class Graph:
    """A captured sequence (cupy.cuda.graph.Graph): ``launch(stream=None)`` runs it on the current stream."""

    def __init__(self, ops):
        self._ops = ops

    def launch(self, stream=None):
        _emu.capture_violation("a graph launch into a capturing stream")
        counters["graph"] += 1
        for op in self._ops:
            op()

    def upload(self, stream=None):
        pass


class Stream:
    """cupy.cuda.Stream: ``with stream:`` makes it current; begin_capture / end_capture / is_capturing."""

    null = None
    _stack: list = []

    def __init__(self, null=False, non_blocking=False, ptds=False):
        self.ptr = 0 if null else id(self)
        self.non_blocking = non_blocking

    def __enter__(self):
        Stream._stack.append(self)
        return self

    def __exit__(self, *exc):
        Stream._stack.pop()
        return False

    def synchronize(self):
        _emu.capture_violation("cudaStreamSynchronize")
        counters["sync"] += 1

    def begin_capture(self, mode=None):
        if self.ptr == 0:
            raise RuntimeError("cannot capture on the default (legacy) stream")
        if _emu.CAPTURE["ops"] is not None:
            raise RuntimeError("cudaErrorIllegalState: a capture is already in progress")
        _emu.CAPTURE.update(ops=[], stream=self, violation=None)

    def is_capturing(self):
        return _emu.CAPTURE["stream"] is self

    def end_capture(self):
        if _emu.CAPTURE["stream"] is not self:
            raise RuntimeError("cudaErrorIllegalState: this stream is not capturing")
        ops, violation = _emu.CAPTURE["ops"], _emu.CAPTURE["violation"]
        _emu.CAPTURE.update(ops=None, stream=None, violation=None)
        if violation is not None:
            raise RuntimeError(f"cudaErrorStreamCaptureInvalidated: the capture was invalidated by {violation}")
        return Graph(ops)


Stream.null = Stream(null=True)


def _current():
    return Stream._stack[-1] if Stream._stack else Stream.null


class _Runtime:
    @staticmethod
    def getDeviceCount():
        return 1

    @staticmethod
    def getDeviceProperties(i):
        return {"name": b"gpunn kernel emulator"}


cuda = _types.SimpleNamespace(
    Device=_Device,
    runtime=_Runtime(),
    get_current_stream=_current,
    Stream=Stream,
    graph=_types.SimpleNamespace(Graph=Graph),
)


class _RandomState:
    """CuPy's RandomState signatures (dtype= on the float draws), on NumPy's generator."""

    def __init__(self, seed=None):
        self._rs = _np.random.RandomState(seed)

    def random_sample(self, size=None, dtype=float):
        return _device(self._rs.random_sample(size).astype(dtype))

    def standard_normal(self, size=None, dtype=float):
        return _device(self._rs.standard_normal(size).astype(dtype))

    def randint(self, low, high=None, size=None, dtype="l"):
        return _device(self._rs.randint(low, high, size=size).astype(dtype))

    def __getattr__(self, name):
        attr = getattr(self._rs, name)
        return _on_device(attr) if callable(attr) else attr


random = _types.SimpleNamespace(RandomState=_RandomState, default_rng=_np.random.default_rng)


def __getattr__(name):
    obj = getattr(_np, name)
    if isinstance(obj, (type, _np.ufunc)) or not callable(obj):
        return obj  # dtypes, ufuncs (keep .at / .reduce; they return ndarray for ndarray inputs), constants
    return _on_device(obj)
'''


def install(directory) -> Path:
    """Write the fake ``cupy`` package into ``directory`` (put it first on PYTHONPATH)."""
    pkg = Path(directory) / "cupy"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(FAKE_CUPY)
    return Path(directory)


# one home for the tests that rerun suites on the emulated backend (tests/kernels/test_emulated.py,
# tests/vision/test_emulated_backend.py): a subprocess, so the stand-in never leaks into the calling process
available = pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which(os.environ.get("CXX", "g++")) is None,
    reason="the emulator needs Linux (ucontext) and a C++20 compiler (g++)",
)


def run_pytest(tmp_path, test_backend: str, args: list, timeout: float = 1200) -> None:
    """``pytest *args`` in a subprocess with the fake ``cupy`` first on PYTHONPATH and GPUNN_TEST_BACKEND set;
    fails the calling test (with the output's tail) unless every selected test passed. CuPy never warns on
    0 / 0 ('mean' over all-ignored rows); NumPy does, and the project turns RuntimeWarnings into errors."""
    root = Path(__file__).resolve().parents[2]
    fake = install(Path(tmp_path) / "fake")
    env = {
        **os.environ,
        "GPUNN_KERNEL_EMULATOR": "1",
        "GPUNN_TEST_BACKEND": test_backend,
        "PYTHONPATH": os.pathsep.join([str(fake), str(root), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    cmd = [sys.executable, "-m", "pytest", *args, "-q", "-p", "no:cacheprovider",
           "-W", "ignore:invalid value encountered:RuntimeWarning"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env, timeout=timeout)
    tail = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout and " failed" not in proc.stdout, tail
