"""gpunn's float32 GEMM (gpunn.backend.numba_gemm, behind NumpyBackend.matmul) against NumPy's BLAS and PyTorch.

    python -m bench.gemm [--rounds N] [--out DIR]

The products of the bench's MLP (784-200-200-10, batch 200) and of the CNNs' convolutions (their group
GEMMs), each in the layout the library meets it in (``x @ W.T`` is "nt"). Every implementation is checked
against a float64 product first (relative error), then timed interleaved in one process: round r runs
each implementation once (best of ``reps`` calls, its thread setting entered around them, after a 20 ms
pause), medians over the rounds. Columns: gpunn on one thread
(``GPUNN_NUM_THREADS=1``) and on all, NumPy's matmul on one OpenBLAS thread and as configured, PyTorch's
``torch.matmul`` on one thread and on all. GFLOP/s = 2 m n k / time.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

from bench import provenance

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # as bench.targets: set before NumPy loads OpenBLAS

import numpy as np  # noqa: E402

SETTLE_S = 0.02  # pause before each implementation's turn (see bench/README.md, the issue-12 targets)

SHAPES = {  # name: (m, k, n, layout): layout "nn" a @ b, "nt" a @ b.T (b stored (n, k)), "tn" a.T @ b
    "mlp fc1 forward x @ W.T": (200, 784, 200, "nt"),
    "mlp fc1 dW = dz.T @ x": (200, 200, 784, "tn"),
    "mlp fc2 forward": (200, 200, 200, "nt"),
    "mlp fc2 dx = dz @ W": (200, 200, 200, "nn"),
    "mlp fc3 forward": (200, 200, 10, "nt"),
    "mnist conv2 forward W @ cols": (64, 288, 5408, "nn"),
    "mnist conv2 dW g @ cols.T": (64, 5408, 288, "nt"),
    "mnist conv2 dcols W.T @ g": (288, 64, 5408, "tn"),
    "mnist fc1 forward": (64, 9216, 128, "nt"),
    "small conv2 forward": (32, 144, 7252, "nn"),
}


def operands(rng, m, k, n, layout):
    a = rng.standard_normal((k, m) if layout == "tn" else (m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if layout == "nt" else (k, n), dtype=np.float32)
    return (a.T if layout == "tn" else a), (b.T if layout == "nt" else b)


def best_of(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import torch

    from gpunn.backend import numpy_backend as nb

    be = nb.NumpyBackend()
    threads = nb.num_threads()
    rng = np.random.default_rng(0)
    rows = []
    for name, (m, k, n, layout) in SHAPES.items():
        a, b = operands(rng, m, k, n, layout)
        ta, tb = torch.from_numpy(np.ascontiguousarray(a)), torch.from_numpy(np.ascontiguousarray(b))
        if layout == "nt":  # PyTorch's own layout for x @ W.T: a transposed view of a (n, k) weight
            tb = torch.from_numpy(np.ascontiguousarray(b.T)).T
        if layout == "tn":
            ta = torch.from_numpy(np.ascontiguousarray(a.T)).T
        out = np.empty((m, n), np.float32)
        tout = torch.empty((m, n))
        impls = _impls(be, torch, a, b, ta, tb, out, tout, threads)
        ref = a.astype(np.float64) @ b.astype(np.float64)
        errors = {}
        for label, (setting, fn) in impls.items():
            out[...] = np.nan
            tout.fill_(float("nan"))
            with setting():
                fn()
            got = tout.numpy() if label.startswith("torch") else out
            errors[label] = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
            if not errors[label] < 1e-5:
                raise SystemExit(f"{name}: {label} is wrong (relative error {errors[label]:.2e})")
        times = {label: [] for label in impls}
        for r in range(args.rounds):
            labels = list(impls)
            labels = labels[r % len(labels) :] + labels[: r % len(labels)]
            for label in labels:
                setting, fn = impls[label]
                time.sleep(SETTLE_S)  # the previous library's spinning workers go to sleep (bench.targets)
                with setting():
                    times[label].append(best_of(fn, args.reps))
        flops = 2.0 * m * n * k
        for label in impls:
            med = float(np.median(times[label]))
            rows.append((name, f"{m}x{k}x{n} {layout}", label, med * 1e6, flops / med / 1e9, errors[label]))

    head = _header(threads)
    lines = head + [
        "| product | m x k x n | implementation | median us | GFLOP/s | rel. error |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.1f} | {r[4]:.0f} | {r[5]:.1e} |" for r in rows]
    text = "\n".join(lines) + "\n"
    provenance.report(text, args.out, "gemm")


def _impls(be, torch, a, b, ta, tb, out, tout, threads: int) -> dict:
    """label -> (context manager factory for the thread setting, the call); the setting is entered once
    around a round's calls of that implementation, not per call (threadpoolctl's limit costs ~1 ms)."""
    import contextlib

    from threadpoolctl import threadpool_limits

    @contextlib.contextmanager
    def gpunn_threads(k):
        os.environ["GPUNN_NUM_THREADS"] = str(k)
        try:
            yield
        finally:
            os.environ["GPUNN_NUM_THREADS"] = str(threads)

    @contextlib.contextmanager
    def torch_threads(k):
        torch.set_num_threads(k)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    def gpunn_call():
        be.matmul(a, b, out=out)

    def blas_call():
        np.matmul(a, b, out=out)

    def torch_call():
        torch.matmul(ta, tb, out=tout)

    return {
        "gpunn 1 thread": (lambda: gpunn_threads(1), gpunn_call),
        f"gpunn {threads} threads": (lambda: gpunn_threads(threads), gpunn_call),
        "numpy/OpenBLAS 1 thread": (lambda: threadpool_limits(1, user_api="blas"), blas_call),
        "numpy/OpenBLAS as set": (contextlib.nullcontext, blas_call),
        "torch 1 thread": (lambda: torch_threads(1), torch_call),
        f"torch {threads} threads": (lambda: torch_threads(threads), torch_call),
    }


def _header(threads: int) -> list:
    import numpy
    import torch
    from threadpoolctl import threadpool_info

    blas = [(i.get("internal_api"), i.get("architecture"), i.get("version")) for i in threadpool_info()]
    return [
        f"# float32 GEMM, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"`python -m bench.gemm` at commit {provenance.commit()}; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {threads} threads; "
        f"numpy {numpy.__version__} (BLAS {blas}), torch {torch.__version__}; "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}; load average {os.getloadavg()}.",
        "Interleaved in one process, medians of the rounds (each the best of its calls).",
        "",
    ]


if __name__ == "__main__":
    main()
