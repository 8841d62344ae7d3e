"""Finding, compiling and launching gpunn's handwritten CUDA kernels (``kernels/*.cu``).

Each ``kernels/<op>.cu`` is compiled once per device by CuPy's NVRTC (``cupy.RawModule(code=...)``) the
first time one of its functions is asked for, and memoized per ``(file, device id)``. The sources are
found inside the installed package (``gpunn._kernels``, the top-level ``kernels/`` directory shipped
as package data) or, in a source checkout, in the repository's ``kernels/``.

The launch helpers validate in Python before anything reaches the GPU: dtypes, shapes, contiguity
(``as_contiguous`` copies when needed) and sizes. Importing this module does not import CuPy: that
happens on the first compile.

    >>> from gpunn.backend import kernels
    >>> kernels.KERNEL_FILES
    ('linear_act', 'softmax_cross_entropy', 'optim', 'conv2d', 'dropout')
"""

from __future__ import annotations

import importlib.resources
import os
import re
from pathlib import Path

import numpy as np

KERNEL_FILES = ("linear_act", "softmax_cross_entropy", "optim", "conv2d", "dropout")
# Options given to NVRTC at run time and to nvcc by the compile check, so both build the same thing.
BASE_OPTIONS = ("-std=c++17",)
EXTRA_OPTIONS = {"optim": ("--fmad=false",)}  # bit-for-bit the NumPy reference's rounding
# GPUNN_KERNEL_LINEINFO=1 adds -lineinfo (source lines in the cubin, so compute-sanitizer and ncu name the
# .cu line); tools/gpu_check.py sets it for its sanitizer steps. Read at each compile.
LINEINFO_ENV = "GPUNN_KERNEL_LINEINFO"
# Activation codes shared with linear_act.cu (GPUNN_ACT_*).
ACT_CODES = {"none": 0, "relu": 1, "leaky_relu": 2, "sigmoid": 3, "tanh": 4}
# Entry-point suffix per dtype; other dtypes fall back to the reference implementation.
DTYPE_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
INT32_MAX = 2**31 - 1
GRID_Y_MAX = 65535

_REPO_KERNELS = Path(__file__).resolve().parents[2] / "kernels"
_modules: dict[tuple[str, int], object] = {}
_sm_counts: dict[int, int] = {}


# ----------------------------------------------------------------------------------------------
# sources
# ----------------------------------------------------------------------------------------------
def _check_name(name: str) -> None:
    if name not in KERNEL_FILES:
        raise ValueError(f"unknown kernel file {name!r}; expected one of {KERNEL_FILES}")


def kernel_path(name: str):
    """Where ``<name>.cu`` lives: a ``Traversable`` in the installed package, else a repository path."""
    _check_name(name)
    try:
        candidate = importlib.resources.files("gpunn._kernels") / f"{name}.cu"
        if candidate.is_file():
            return candidate
    except (ModuleNotFoundError, TypeError):  # a source checkout without the package mapping
        pass
    path = _REPO_KERNELS / f"{name}.cu"
    if path.is_file():
        return path
    raise FileNotFoundError(
        f"CUDA source {name}.cu not found in the package gpunn._kernels nor in {_REPO_KERNELS}; "
        "reinstall gpunn (the wheel ships kernels/*.cu as gpunn/_kernels/*.cu)"
    )


def kernel_source(name: str) -> str:
    """The CUDA C source of ``kernels/<name>.cu``."""
    return kernel_path(name).read_text(encoding="utf-8")


def compile_options(name: str) -> tuple[str, ...]:
    """Compiler options for ``<name>.cu`` (valid for both NVRTC and nvcc)."""
    _check_name(name)
    lineinfo = ("-lineinfo",) if os.environ.get(LINEINFO_ENV, "0") not in ("", "0") else ()
    return BASE_OPTIONS + EXTRA_OPTIONS.get(name, ()) + lineinfo


# ----------------------------------------------------------------------------------------------
# offline build check: nvcc's resource report (tools/compile_kernels.py, tests/kernels/test_compile.py)
# ----------------------------------------------------------------------------------------------
ARCHS = ("sm_80", "sm_90")  # A100, H100/H200


def nvcc_command(name: str, arch: str, source, nvcc: str = "nvcc", output: str = "/dev/null") -> list[str]:
    """The nvcc command line that builds ``source`` (the path of ``<name>.cu``) to a cubin for ``arch``
    and prints ptxas's per-kernel report (registers, shared memory, stack, spills)."""
    return [nvcc, *compile_options(name), f"-arch={arch}", "-cubin", "--resource-usage", "-o", output, str(source)]


_RE_ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(\w+)'")
_RE_PROPS = re.compile(r"Function properties for (\w+)")
_RE_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_RE_USED = re.compile(r"Used (\d+) registers")
_RE_SMEM = re.compile(r"(\d+) bytes smem")


def parse_resource_usage(report: str) -> dict[str, dict[str, int]]:
    """Per-entry-point numbers from ptxas's ``--resource-usage`` report:
    {kernel: {"registers", "smem", "stack", "spill_stores", "spill_loads"}} (entry points only; device
    functions ptxas reports separately, such as ``__internal_accurate_pow``, are folded into nothing)."""
    entries: set[str] = set()
    stats: dict[str, dict[str, int]] = {}
    current = None
    for line in report.splitlines():
        if m := _RE_ENTRY.search(line):
            entries.add(m.group(1))
        elif m := _RE_PROPS.search(line):
            current = m.group(1)
            stats.setdefault(current, {"registers": 0, "smem": 0, "stack": 0, "spill_stores": 0, "spill_loads": 0})
        elif current is not None and (m := _RE_FRAME.search(line)):
            d = stats[current]
            d["stack"], d["spill_stores"], d["spill_loads"] = (int(v) for v in m.groups())
        elif current is not None and (m := _RE_USED.search(line)):
            stats[current]["registers"] = int(m.group(1))
            if s := _RE_SMEM.search(line):
                stats[current]["smem"] = int(s.group(1))
    return {k: v for k, v in stats.items() if k in entries}


def declared_entry_points(source: str) -> set[str]:
    """Names of the ``extern "C"`` kernels a source declares, including those stamped out by
    ``DEFINE_*(SUFFIX, T)`` macros (``name_##SUFFIX`` expanded for every invocation)."""
    names: set[str] = set()
    macros: dict[str, list[str]] = {}
    for m in re.finditer(r"#define (DEFINE_\w+)\(SUFFIX, T\)((?:.*\\\n)+.*)", source):
        macros[m.group(1)] = re.findall(r"(\w+)_##SUFFIX", m.group(2))
    for macro, bases in macros.items():
        for suffix in re.findall(rf"^{macro}\((\w+), \w+\)", source, flags=re.M):
            names.update(f"{b}_{suffix}" for b in bases)
    plain = re.sub(r"__launch_bounds__\([^)]*\)", "", source)
    names.update(re.findall(r'extern "C" __global__ void\s+(\w+)\s*\(', plain))
    return names


# ----------------------------------------------------------------------------------------------
# modules and functions (CuPy imported lazily)
# ----------------------------------------------------------------------------------------------
def get_module(name: str):
    """The compiled ``cupy.RawModule`` of ``kernels/<name>.cu`` for the current device (memoized)."""
    import cupy

    dev = cupy.cuda.Device().id
    key = (name, dev)
    mod = _modules.get(key)
    if mod is None:
        mod = cupy.RawModule(code=kernel_source(name), options=compile_options(name))
        mod.compile()  # compile now, so a syntax error surfaces here rather than at first launch
        _modules[key] = mod
    return mod


def get_function(name: str, function: str):
    """The kernel ``function`` (an ``extern "C"`` entry point) of ``kernels/<name>.cu``."""
    return get_module(name).get_function(function)


def entry(name: str, base: str, dtype) -> object:
    """The entry point ``<base>_<f32|f64>`` of ``kernels/<name>.cu`` for ``dtype``."""
    return get_function(name, f"{base}_{DTYPE_SUFFIX[np.dtype(dtype)]}")


def sm_count() -> int:
    """Multiprocessor count of the current device (cached)."""
    import cupy

    dev = cupy.cuda.Device()
    if dev.id not in _sm_counts:
        _sm_counts[dev.id] = int(dev.attributes["MultiProcessorCount"])
    return _sm_counts[dev.id]


def elementwise_grid(n: int, threads: int = 256, blocks_per_sm: int = 32) -> tuple[int]:
    """1-D grid for a grid-stride loop over ``n`` elements: enough blocks to fill the GPU, no more."""
    return (max(1, min(ceil_div(n, threads), blocks_per_sm * sm_count())),)


# ----------------------------------------------------------------------------------------------
# validation before launch
# ----------------------------------------------------------------------------------------------
def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def supported(*arrays) -> bool:
    """True when every array is float32 (or every one float64): the dtypes the kernels are built for."""
    dts = {np.dtype(a.dtype) for a in arrays if a is not None}
    return len(dts) == 1 and next(iter(dts)) in DTYPE_SUFFIX


def as_contiguous(a, dtype=None):
    """``a`` as a C-contiguous CuPy array of ``dtype`` (copies only when needed)."""
    import cupy

    if a is None:
        return None
    return cupy.ascontiguousarray(a, dtype=dtype)


def require_contiguous(name: str, a) -> None:
    """Reject an array a kernel must update in place but cannot, because it is not C-contiguous."""
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous to be updated in place (got strides {a.strides})")


def check_int32(what: str, value: int) -> None:
    """Reject a count a kernel keeps in 32 bits, with a clear message."""
    if value > INT32_MAX:
        raise ValueError(f"{what} = {value} exceeds 2**31 - 1, the largest the CUDA kernel supports")


def check_grid_y(what: str, blocks: int) -> None:
    if blocks > GRID_Y_MAX:
        raise ValueError(f"{what} needs {blocks} blocks on grid.y, more than CUDA's {GRID_Y_MAX}")


def scalar(dtype, value):
    """``value`` as a NumPy scalar of ``dtype``: CuPy passes it by value with exactly that width."""
    return np.dtype(dtype).type(value)


def label_error_message(label: int, n_classes: int, ignore_index: int) -> str:
    """The message for an out-of-range label flagged by a cross-entropy kernel."""
    return (
        f"target label {label} is out of range for {n_classes} classes "
        f"(valid: 0..{n_classes - 1}, or ignore_index={ignore_index})"
    )
