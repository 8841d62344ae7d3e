"""Shared machinery of the benchmark suite: backend choice, ceilings, validation, timing, metadata.

Backend: ``GPUNN_BENCH_BACKEND=numpy`` (default; PyTorch's CPU build is the peer) or ``cupy`` (PyTorch
on CUDA is the peer). Every benchmark

1. checks its result against a float64 reference (``check``) -- a wrong answer fails before any timing;
2. times with ``measure``: warm-up calls first, then ``rounds`` timed calls, each between two device
   synchronizations (``sync`` is a no-op on the CPU), cycling through copies of the inputs when they
   are small enough that a cache would otherwise serve every call;
3. stores in ``extra_info`` the bytes and FLOPs the op moves (each counted by a formula written next to
   it in the test), the achieved GB/s or GFLOP/s, the fraction of this run's ceiling and, once the
   session ends, its time ratio to the peer (``ratio_to_peer``; < 1 means faster than the peer).

Timings are never asserted: targets are judged in the report (``python -m bench.report``).

The PyTorch peers compute in plain float32: TF32 is turned off for matmul and cuDNN (PyTorch's CUDA
default for cuDNN is TF32, about 3e-4 relative error: it would fail the 1e-4 checks and be an unfair
comparison). ``GPUNN_BENCH_QUICK=1`` selects the quick subset (``QUICK_SUBSET``: the fused primitives at
the MNIST models' size and one large size, and the MLP and CNN training steps), what
``tools/gpu_check.py --quick`` times. On the GPU suite, an op with several kernel versions in
``gpunn.backend.kernel_table`` is timed once per version (ids ``gpunn`` for the default, ``gpunn-v<N>``
for the others; ``extra_info.kernel_version``). ``GPUNN_KERNEL_EMULATOR=1`` (the CPU stand-in for CuPy,
tests/kernels/emulator.py) replaces the GPU ceilings by a stub: the harness's dry run, nothing to read.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
import time

# gpunn (NumPy's OpenBLAS) and the PyTorch peer (MKL/OpenMP) each keep a pool of worker threads. After a
# BLAS call OpenBLAS's workers spin for a while before they sleep, and on a 2-core machine that spinning
# halves the speed of whatever PyTorch runs next (measured: an MLP epoch 1.5 ms/step -> 2.8 ms/step for
# ~0.5 s). Workers that sleep almost at once remove that interference and cost gpunn nothing measurable.
# It must be set before NumPy loads OpenBLAS; `make bench` sets it too.
_BLAS_TIMEOUT_APPLIED = "numpy" not in sys.modules or "OPENBLAS_THREAD_TIMEOUT" in os.environ
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import gpunn  # noqa: E402
from bench import ceilings as _ceilings  # noqa: E402

BACKEND = (os.environ.get("GPUNN_BENCH_BACKEND", "numpy") or "numpy").strip().lower()
if BACKEND not in ("numpy", "cupy"):
    raise pytest.UsageError(f"GPUNN_BENCH_BACKEND must be 'numpy' or 'cupy', got {BACKEND!r}")
ON_GPU = BACKEND == "cupy"
GPUNN_IMPL = f"gpunn-{BACKEND}"
PEER_IMPL = "torch-cuda" if ON_GPU else "torch-cpu"

EMULATED = os.environ.get("GPUNN_KERNEL_EMULATOR") == "1"
QUICK = os.environ.get("GPUNN_BENCH_QUICK", "0") not in ("", "0")

try:
    import torch  # noqa: E402
except ImportError:  # the peers skip; gpunn still runs and validates against NumPy float64
    torch = None


def _plain_float32_peer() -> dict:
    """Turn TF32 off in PyTorch (matmul and cuDNN), so the peer computes what gpunn computes: float32."""
    if torch is None:
        return {}
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    return {
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


TORCH_FLOAT32 = _plain_float32_peer()

try:
    from gpunn.backend import kernel_table  # noqa: E402
except ImportError:  # no versioned kernels: only the default is timed
    kernel_table = None

# Benchmark op (extra_info.op) -> the kernel_table op behind it.
BENCH_OP_KERNEL = {
    "linear_relu_fwd": "linear_act",
    "linear_relu_fwdbwd": "linear_act",
    "cross_entropy": "softmax_cross_entropy",
    "sgd_step": "sgd_step",
    "adam_step": "adam_step",
}
# The quick subset (GPUNN_BENCH_QUICK=1): test function -> the size ids it runs (None: every size).
QUICK_SUBSET = {
    "test_linear_relu_fwdbwd": ("mlp-l1 200x784->200", "2048x2048->2048"),
    "test_cross_entropy": ("mlp 200x10", "8192x1000"),
    "test_sgd_momentum_step": ("mlp 199k", "16.8M (4096x4096)"),
    "test_adam_step": ("mlp 199k", "16.8M (4096x4096)"),
    "test_step": None,
    "test_captured_step": None,  # bench/test_capture.py: the captured MLP step, SGD and Adam, batch 200
}

_SESSION: dict = {"loadavg_start": None, "started": None, "waited": 0.0}


# ------------------------------------------------------------------------------------------------
# pytest hooks: markers, skips, metadata
# ------------------------------------------------------------------------------------------------
def pytest_configure(config):
    config.addinivalue_line("markers", "peer: a PyTorch peer benchmark (skipped when torch is missing)")
    config.addinivalue_line("markers", "kernel_version(op, v): time gpunn with version v of kernel op")
    _SESSION["started"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    _SESSION["loadavg_start"] = _loadavg()


def in_quick_subset(item) -> bool:
    name = getattr(item, "originalname", None) or item.name.split("[")[0]
    if name not in QUICK_SUBSET:
        return False
    sizes = QUICK_SUBSET[name]
    size = getattr(item, "callspec", None) and item.callspec.params.get("size")
    return sizes is None or size is None or size[0] in sizes


def pytest_collection_modifyitems(config, items):
    if QUICK:
        deselected = [item for item in items if not in_quick_subset(item)]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [item for item in items if in_quick_subset(item)]
    # the captured-step bench last: its torch.compile peer compiles for tens of seconds on a fresh machine,
    # and a bench step killed at its budget keeps what finished before
    items.sort(key=lambda item: getattr(item, "originalname", "") == "test_captured_step")
    gpu_ok, why = gpunn.cupy_available() if ON_GPU else (True, "")
    torch_ok = torch is not None and (not ON_GPU or torch.cuda.is_available())
    for item in items:
        if not gpu_ok:
            item.add_marker(pytest.mark.skip(reason=f"GPUNN_BENCH_BACKEND=cupy but {why}"))
        elif "peer" in item.keywords and not torch_ok:
            item.add_marker(pytest.mark.skip(reason="PyTorch (with CUDA on the GPU suite) is not installed"))


def _loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _cpu_busy_seconds() -> tuple[float, float] | None:
    """(seconds all CPUs were busy since boot, this process's CPU seconds), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    t = os.times()
    return busy / _HZ, t.user + t.system


_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_NCPU = os.cpu_count() or 1


class OtherLoad:
    """Measures how much of the machine OTHER processes used over an interval, as a fraction of all
    its CPUs (0: we had it to ourselves; 0.5 on 2 cores: another process kept one core busy). Shared
    machines run other jobs; PyTorch's 2-thread ops slow down several-fold when one core is taken,
    NumPy's 1-thread ops hardly at all, so every timing records this next to it."""

    def __enter__(self):
        self.start, self.t0 = _cpu_busy_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        end, wall = _cpu_busy_seconds(), time.perf_counter() - self.t0
        if self.start is None or end is None or wall <= 0:
            self.fraction = None
        else:
            others = (end[0] - self.start[0]) - (end[1] - self.start[1])
            self.fraction = max(0.0, min(1.0, others / (wall * _NCPU)))
        return False


QUIET_FRACTION = 0.1  # other processes may use at most this share of the machine before a timing
QUIET_WAIT_BUDGET_S = float(os.environ.get("GPUNN_BENCH_QUIET_WAIT", "90"))  # per session


def wait_for_quiet(max_wait: float = 10.0) -> float | None:
    """Wait (up to ``max_wait`` s, and the session's budget) until other processes leave the CPUs
    nearly idle; returns the last measured other-load fraction."""
    frac = None
    deadline = time.perf_counter() + min(max_wait, max(0.0, QUIET_WAIT_BUDGET_S - _SESSION["waited"]))
    while True:
        t0 = time.perf_counter()
        with OtherLoad() as probe:
            time.sleep(0.2)
        frac = probe.fraction
        _SESSION["waited"] += time.perf_counter() - t0
        if frac is None or frac <= QUIET_FRACTION or time.perf_counter() >= deadline:
            return frac


def _git(*args) -> str:
    try:
        return subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            check=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        ).stdout.strip()
    except Exception:
        return ""


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _blas() -> str:
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception:
        return "unknown"


def _malloc_tuned():
    """Whether the numpy backend tuned glibc malloc in this process (None: it never ran)."""
    from gpunn.backend import numpy_backend

    return numpy_backend._malloc_tuned


def run_metadata() -> dict:
    """What a results file needs to be reproduced: command, machine, versions, commit, date, load."""
    meta = {
        "command": os.environ.get("GPUNN_BENCH_COMMAND") or "python -m pytest " + shlex.join(sys.argv[1:]),
        "backend": BACKEND,
        "gpunn_impl": GPUNN_IMPL,
        "peer_impl": PEER_IMPL,
        "started": _SESSION["started"],
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": _git("rev-parse", "HEAD"),
        "commit_short": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "machine": {
            "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "blas": _blas(),
            "torch": getattr(torch, "__version__", None),
            "torch_threads": torch.get_num_threads() if torch is not None else None,
        },
        "environment": {
            "OPENBLAS_THREAD_TIMEOUT": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
            "openblas_timeout_applied": _BLAS_TIMEOUT_APPLIED,
            "gpunn_malloc_tuned": _malloc_tuned(),
        },
        "loadavg_start": _SESSION["loadavg_start"],
        "loadavg_end": _loadavg(),
        "ceilings": _SESSION.get("ceilings"),
        "quiet_waited_s": round(_SESSION["waited"], 1),
        "quiet_fraction": QUIET_FRACTION,
        "ratio_definition": "time / peer time, from each benchmark's minimum (< 1: faster than the peer)",
        "torch_float32": TORCH_FLOAT32,
        "quick_subset": QUICK,
        "kernel_versions": (
            {
                "versions": {k: list(v) for k, v in kernel_table.VERSIONS.items()},
                "defaults": dict(kernel_table.DEFAULTS),
            }
            if kernel_table is not None
            else None
        ),
        "emulated": EMULATED,
    }
    if ON_GPU:
        try:
            import cupy

            meta["machine"]["cupy"] = cupy.__version__
            meta["machine"]["gpu"] = (_SESSION.get("ceilings") or {}).get("device")
            meta["machine"]["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
        except Exception:
            pass
    return meta


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["gpunn_bench"] = run_metadata()


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Re-measure the ceilings (a ceiling is the best the machine did in this run, at the start or the
    end), then fill in every benchmark's ceiling fraction and ratio to its counterpart(s), and add the
    run's metadata."""
    first = _SESSION.get("ceilings")
    if first:
        again = measure_ceilings()
        best = dict(first)
        for key in ("copy_gbps", "matmul_gflops"):
            best[key] = max(first.get(key) or 0.0, again.get(key) or 0.0)
        best["measured_at_start"], best["measured_at_end"] = first, again
        _SESSION["ceilings"] = best
        fill_fractions(output_json["benchmarks"], best)
    output_json["gpunn_bench"] = run_metadata()
    fill_ratios(output_json["benchmarks"])


def fill_fractions(entries: list, ceil: dict) -> None:
    for e in entries:
        info = e.get("extra_info") or {}
        if "bound" not in info:
            continue
        key, rate = ("copy_gbps", "gbps") if info["bound"] == "memory" else ("matmul_gflops", "gflops")
        info["ceiling"] = ceil.get(key)
        info["ceiling_fraction"] = info[rate] / ceil[key] if ceil.get(key) else None


def fill_ratios(entries: list) -> None:
    """For each (op, size), ratio of each gpunn entry's min time to each peer's, and the reverse."""
    by_key: dict = {}
    for e in entries:
        info = e.get("extra_info") or {}
        if "op" in info:
            by_key.setdefault((info["op"], info["size"]), []).append(e)
    for group in by_key.values():
        for e in group:
            info, role = e["extra_info"], e["extra_info"].get("role")
            others = [o for o in group if o["extra_info"].get("role") != role]
            ratios = {o["extra_info"]["impl"]: e["stats"]["min"] / o["stats"]["min"] for o in others}
            info["ratio_to_peer"] = ratios
            if ratios:  # the report's headline number: against the fastest counterpart
                info["ratio"] = max(ratios.values()) if role == "gpunn" else min(ratios.values())


def measure_ceilings() -> dict:
    """The ceilings of this run's device; under the kernel emulator a stub (nothing to measure there; a
    1 MiB 'L2' keeps the input rotation at one or two copies)."""
    if ON_GPU and EMULATED:
        return {
            "device": "gpunn kernel emulator",
            "emulated": True,
            "l2_cache_bytes": 1 << 20,
            "copy_gbps": None,
            "matmul_gflops": None,
        }
    return _ceilings.measure(BACKEND)


# ------------------------------------------------------------------------------------------------
# kernel versions (gpunn.backend.kernel_table)
# ------------------------------------------------------------------------------------------------
def impls(op: str | None = None) -> list:
    """The ``impl`` parameters of a benchmark of kernel ``op`` (a kernel_table op name): ``gpunn`` (the
    default version), on the GPU suite one ``gpunn-v<N>`` per other version in the table, and ``torch``."""
    out = [pytest.param("gpunn", id="gpunn")]
    versions = kernel_table.VERSIONS.get(op, ()) if (ON_GPU and kernel_table is not None and op) else ()
    default = kernel_table.DEFAULTS.get(op) if versions else None
    out += [
        pytest.param(f"gpunn-v{v}", id=f"gpunn-v{v}", marks=pytest.mark.kernel_version(op, v))
        for v in versions
        if v != default
    ]
    out.append(pytest.param("torch", id="torch", marks=pytest.mark.peer))
    return out


def _version_of(request) -> tuple[str, int] | None:
    mark = request.node.get_closest_marker("kernel_version")
    return tuple(mark.args) if mark else None


@pytest.fixture(autouse=True)
def _selected_kernel_version(request):
    """Runs a ``gpunn-v<N>`` benchmark (validation and timing) with that kernel version selected."""
    chosen = _version_of(request)
    if chosen is None:
        yield
        return
    with kernel_table.use_version(*chosen):
        yield


# ------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def backend():
    """The gpunn Backend under test (also made the default for the session)."""
    be = gpunn.set_backend(BACKEND)
    gpunn.manual_seed(0)
    return be


@pytest.fixture(scope="session", autouse=True)
def ceilings():
    """The copy-bandwidth and matmul ceilings of the device under test, measured once, first."""
    if ON_GPU and not gpunn.cupy_available()[0]:
        return {}
    c = measure_ceilings()
    _SESSION["ceilings"] = c
    return c


@pytest.fixture(scope="session")
def torch_device():
    return "cuda" if ON_GPU else "cpu"


def sync_gpunn(backend) -> None:
    backend.synchronize()


def sync_torch() -> None:
    if ON_GPU:
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------
def to_host(a) -> np.ndarray:
    """A float64 NumPy copy of a gpunn Tensor, a backend array, or a torch tensor."""
    if isinstance(a, gpunn.Tensor):
        a = a._backend.to_numpy(a._data)
    elif torch is not None and isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    elif type(a).__module__.startswith("cupy"):
        a = a.get()
    return np.asarray(a, dtype=np.float64)


def rel_err(got, ref) -> float:
    """max |got - ref| / max |ref|: the error relative to the scale of the result."""
    got, ref = to_host(got), to_host(ref)
    if got.shape != ref.shape:
        raise AssertionError(f"shape {got.shape} != reference shape {ref.shape}")
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    err = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    return err / scale if scale > 0 else err


def check(results: dict, refs: dict, tol: float) -> float:
    """Assert every ``results[name]`` is within ``tol`` (relative, see rel_err) of ``refs[name]``;
    returns the largest error. Called before any timing."""
    worst = 0.0
    for name, ref in refs.items():
        err = rel_err(results[name], ref)
        assert np.isfinite(err) and err <= tol, f"{name}: relative error {err:.3g} > {tol:g} (not timed)"
        worst = max(worst, err)
    return worst


# ------------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------------
def rotation_count(set_bytes: int, ceilings: dict, limit: int = 32) -> int:
    """How many copies of an input set to cycle through so that together they exceed twice the
    last-level cache (so no call finds its inputs already cached), at most ``limit``."""
    cache = ceilings.get("l2_cache_bytes") if ON_GPU else ceilings.get("l3_cache_bytes")
    cache = cache or (32 << 20)
    return int(min(limit, max(1, -(-2 * cache // max(set_bytes, 1)))))


class Measure:
    """Times one benchmark and fills its ``extra_info``; made by the ``measure`` fixture."""

    def __init__(self, benchmark, request, ceilings) -> None:
        self.benchmark, self.request, self.ceilings = benchmark, request, ceilings
        cfg = request.config
        self.max_time = float(cfg.getoption("benchmark_max_time", 1.0) or 1.0)
        self.min_rounds = int(cfg.getoption("benchmark_min_rounds", 5) or 5)

    def _version_label(self, op: str, impl: str) -> tuple[str, int | None, bool]:
        """(impl name, kernel version, whether it is the default) of a gpunn benchmark: a non-default
        version's name gets ``-v<N>``."""
        chosen = _version_of(self.request)
        if chosen is not None:
            return f"{impl}-v{chosen[1]}", chosen[1], False
        table_op = BENCH_OP_KERNEL.get(op)
        if ON_GPU and kernel_table is not None and table_op in kernel_table.DEFAULTS:
            current = getattr(kernel_table, "version", None)  # DEFAULTS unless GPUNN_KERNEL_VERSIONS says
            v = current(table_op) if current else kernel_table.DEFAULTS[table_op]
            return impl, v, v == kernel_table.DEFAULTS[table_op]
        return impl, None, True

    def __call__(
        self,
        fn,
        inputs: list,
        *,
        op: str,
        size: str,
        impl: str,
        bytes_moved: int,
        flops: int,
        sync,
        bound: str,
        max_rel_err: float,
        rounds: int | None = None,
        max_rounds: int = 200,
        warmup: int = 2,
        bytes_formula: str = "",
        flops_formula: str = "",
        extra: dict | None = None,
    ):
        """Time ``fn(*inputs[k])`` over rotating input sets ``inputs``; ``bound`` is 'memory' or 'compute'
        (which ceiling the achieved rate is compared with)."""
        state = {"k": 0}

        def setup():
            args = inputs[state["k"] % len(inputs)]
            state["k"] += 1
            sync()  # nothing queued before the timed region
            return tuple(args), {}

        def timed(*args):
            fn(*args)
            sync()  # the timed region ends when the device is done

        # warm-up (untimed), every input set at least once: caches, allocator pools, lazily created
        # state (an optimizer's first step), kernel compilation, BLAS thread start-up
        t_one = float("inf")
        n_warm = warmup if rounds is not None else max(warmup, len(inputs), 1)
        for _ in range(n_warm):
            args, _ = setup()
            t0 = time.perf_counter()
            timed(*args)
            t_one = min(t_one, time.perf_counter() - t0)
        if rounds is None:
            rounds = int(min(max_rounds, max(self.min_rounds, self.max_time / max(t_one, 1e-7))))
        quiet_before = wait_for_quiet()
        load_before = _loadavg()
        with OtherLoad() as probe:
            self.benchmark.pedantic(timed, setup=setup, rounds=rounds, warmup_rounds=0, iterations=1)
        t_min = self.benchmark.stats.stats.min
        info = self.benchmark.extra_info
        if not impl.startswith("torch"):
            impl, info["kernel_version"], info["kernel_default"] = self._version_label(op, impl)
        info.update(
            {
                "op": op,
                "size": size,
                "impl": impl,
                "role": "peer" if impl.startswith("torch") else "gpunn",
                "bytes": int(bytes_moved),
                "flops": int(flops),
                "bytes_formula": bytes_formula,
                "flops_formula": flops_formula,
                "bound": bound,
                "rotating_inputs": len(inputs),
                "gbps": bytes_moved / t_min / 1e9,
                "gflops": flops / t_min / 1e9,
                "max_rel_err": max_rel_err,
                "loadavg_before": load_before,
                "loadavg_after": _loadavg(),
                "other_load_before": quiet_before,
                "other_load": probe.fraction,
            }
        )
        if bound == "memory":
            ceiling = self.ceilings.get("copy_gbps")
            info["ceiling"] = ceiling
            info["ceiling_fraction"] = info["gbps"] / ceiling if ceiling else None
        else:
            ceiling = self.ceilings.get("matmul_gflops")
            info["ceiling"] = ceiling
            info["ceiling_fraction"] = info["gflops"] / ceiling if ceiling else None
        info.update(extra or {})
        return t_min


@pytest.fixture
def measure(benchmark, request, ceilings):
    return Measure(benchmark, request, ceilings)
