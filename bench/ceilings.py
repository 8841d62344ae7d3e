"""The hardware ceilings every benchmark is compared with, measured in the same run.

CPU: the memory copy bandwidth (all cores, NumPy ``copyto`` on disjoint halves, from threads: NumPy
drops the GIL while it copies) and NumPy's float32 matmul throughput (the BLAS NumPy links, all its
threads). GPU: the device-to-device copy bandwidth (``cudaMemcpyAsync``) and ``cupy.matmul`` float32
throughput, timed with CUDA events.

Napkin math, as the benchmarks count it:
    copy of n bytes   moves 2 n bytes   (read the source, write the destination; write-allocate
                                          traffic is not counted, as STREAM does not count it)
    (n x n) @ (n x n) does  2 n^3 FLOPs  (one multiply and one add per term)
Each ceiling is the best of a few repeats: a ceiling is what the machine can do, not what it did on
average while something else ran.

>>> python -m bench.ceilings            # prints the ceilings of this machine as JSON
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def _best(fn, repeats: int) -> float:
    """The fastest of ``repeats`` calls of ``fn`` (seconds), after one untimed warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def cpu_copy_bandwidth(nbytes: int = 256 << 20, threads: int | None = None, repeats: int = 5) -> dict:
    """GB/s of a float32 array copy, ``nbytes`` per array (well past the last-level cache)."""
    threads = threads or os.cpu_count() or 1
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.zeros_like(src)  # zeros touches every page now, so the timing sees no page faults
    bounds = np.linspace(0, src.size, threads + 1).astype(np.int64)
    parts = [(dst[lo:hi], src[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])]
    results = {}
    with ThreadPoolExecutor(threads) as pool:

        def parallel():
            list(pool.map(lambda p: np.copyto(*p), parts))

        t_all = _best(parallel, repeats)
    t_one = _best(lambda: np.copyto(dst, src), repeats)
    # bytes = 2 * nbytes: read src + write dst
    results["copy_gbps_all_cores"] = 2 * src.nbytes / t_all / 1e9
    results["copy_gbps_one_core"] = 2 * src.nbytes / t_one / 1e9
    results["copy_gbps"] = max(results["copy_gbps_all_cores"], results["copy_gbps_one_core"])
    results["copy_bytes"] = int(src.nbytes)
    results["copy_threads"] = threads
    return results


def cpu_matmul_gflops(n: int = 2048, repeats: int = 5) -> dict:
    """GFLOP/s of NumPy's float32 (n x n) @ (n x n): 2 n^3 FLOPs."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    t = _best(lambda: np.matmul(a, b, out=out), repeats)
    return {"matmul_gflops": 2 * n**3 / t / 1e9, "matmul_n": n}


def gpu_copy_bandwidth(nbytes: int = 1 << 30, repeats: int = 20) -> dict:
    """GB/s of a device-to-device copy of ``nbytes`` (cudaMemcpyAsync), timed with CUDA events."""
    import cupy as cp

    src = cp.ones(nbytes // 4, dtype=cp.float32)
    dst = cp.zeros_like(src)
    start, end = cp.cuda.Event(), cp.cuda.Event()
    best = float("inf")
    for _ in range(3 + repeats):  # the first three are warm-up
        start.record()
        dst.data.copy_from_device_async(src.data, src.nbytes)
        end.record()
        end.synchronize()
        best = min(best, cp.cuda.get_elapsed_time(start, end) / 1e3)
    # bytes = 2 * nbytes: read src + write dst
    return {"copy_gbps": 2 * src.nbytes / best / 1e9, "copy_bytes": int(src.nbytes)}


def gpu_matmul_gflops(n: int = 8192, repeats: int = 10) -> dict:
    """GFLOP/s of ``cupy.matmul`` on float32 (n x n) matrices (2 n^3 FLOPs), timed with CUDA events."""
    import cupy as cp

    rng = cp.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=cp.float32)
    b = rng.standard_normal((n, n), dtype=cp.float32)
    out = cp.empty((n, n), dtype=cp.float32)
    start, end = cp.cuda.Event(), cp.cuda.Event()
    best = float("inf")
    for _ in range(3 + repeats):
        start.record()
        cp.matmul(a, b, out=out)
        end.record()
        end.synchronize()
        best = min(best, cp.cuda.get_elapsed_time(start, end) / 1e3)
    return {"matmul_gflops": 2 * n**3 / best / 1e9, "matmul_n": n, "tf32": os.environ.get("CUPY_TF32", "0")}


def measure(backend: str = "numpy") -> dict:
    """The ceilings of the device a backend runs on: ``{'device', 'copy_gbps', 'matmul_gflops', ...}``."""
    if backend == "cupy":
        import cupy as cp

        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        out = {
            "device": props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"]),
            "l2_cache_bytes": int(props.get("l2CacheSize", 0)),
        }
        out.update(gpu_copy_bandwidth())
        out.update(gpu_matmul_gflops())
        return out
    out = {"device": "cpu", "l3_cache_bytes": _llc_bytes()}
    out.update(cpu_copy_bandwidth())
    out.update(cpu_matmul_gflops())
    return out


def _llc_bytes() -> int:
    """Size of the largest CPU cache in bytes (from sysfs; 32 MiB if it can't be read)."""
    best = 0
    root = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in os.listdir(root):
            try:
                with open(os.path.join(root, entry, "size")) as f:
                    text = f.read().strip()
            except OSError:
                continue
            scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            digits = text[:-1] if text[-1:] in "KMG" else text
            if digits.isdigit():
                best = max(best, int(digits) * scale)
    except OSError:
        pass
    return best or (32 << 20)


if __name__ == "__main__":
    json.dump(measure(sys.argv[1] if len(sys.argv) > 1 else "numpy"), sys.stdout, indent=2)
    print()
