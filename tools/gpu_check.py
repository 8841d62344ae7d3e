"""The GPU suite in one command, sized for a short GPU window: ``python3 tools/gpu_check.py --quick``.

Run from the repository root on a machine with a GPU and no network (``make gpu-check`` does this). It
installs nothing: CuPy, pytest and (for their steps) compute-sanitizer, PyTorch and pytest-benchmark are
used where they are; a missing one is recorded and its step marked ``missing``, never fatal.
pytest-timeout and pytest-xdist are used when present, never required.

Profiles (``--list`` prints the steps with their budgets):

``--quick`` (the default; at most ``--budget`` = 480 s in all), in this order:
  1. ``kernel-tests``  the ``gpu``-marked tests of tests/kernels (every CUDA kernel against its NumPy reference)
  2. ``cupy-suites``   the tensor, autograd, nn and optim suites with every test's tensors on the cupy backend
  3. ``memcheck``      compute-sanitizer memcheck over the float32 kernel tests, CuPy's memory pool disabled
                       (``cupy.cuda.set_allocator(None)``: an out-of-bounds access inside a pooled block is
                       invisible) and the kernels built with ``-lineinfo`` (GPUNN_KERNEL_LINEINFO=1)
  4. ``racecheck``     compute-sanitizer racecheck over the float32 tests of the shared-memory kernels
                       (linear_act, softmax_cross_entropy)
  5. ``bench``         the quick benchmark subset (GPUNN_BENCH_QUICK=1, bench/conftest.py): the fused
                       primitives, every kernel version in gpunn.backend.kernel_table, the MLP and the CNN
                       training step, against PyTorch on the same GPU (TF32 off)
``--full``: the whole test suite on the numpy backend and again on the cupy backend, both sanitizers over
every ``gpu`` kernel test, and the whole benchmark suite (no overall budget unless ``--budget``).

Always a result: a probe first records the device, driver, versions, commit (GPUNN_COMMIT when set, else
git's HEAD), the sha256 of every file in kernels/ and which tools are there, and writes
``bench/results/gpu-<date>-<device>.json`` at once; each step then appends its outcome the moment it
finishes (the file is rewritten whole, atomically). A step runs in its own process group and is killed
(the whole group) when its budget or the run's overall budget runs out; it is recorded as
``timed_out`` with every test that finished before the kill (a small pytest plugin in this file logs
each test as it ends), and the suite moves on. SIGTERM/SIGINT end the current step the same way and
write the file before exiting. The summary fits one screen; the file holds counts, failures with their
messages, sanitizer findings, per-test durations and the raw benchmark timings.

Without a usable GPU it writes the file saying so and exits 2 within seconds. ``--emulator`` runs the
same steps, each narrowed to a small subset, on the CPU stand-in for CuPy (tests/kernels/emulator.py),
without compute-sanitizer and with 4x the budgets: the harness's own dry run (tests/tools/test_gpu_check.py).

Exit status: 0 every step passed (or is ``missing`` an optional tool), 1 a step failed, timed out or
broke, 2 no usable GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLS = Path(__file__).resolve().parent
QUICK_BUDGET_S = 480.0  # the whole --quick run: 8 minutes, well inside a 10-minute command limit
WRITE_RESERVE_S = 10.0  # kept back from the overall budget: a kill takes up to 8 s (SIGTERM, grace, SIGKILL)
EMULATOR_BUDGET_FACTOR = 4  # --emulator: every budget (step and overall) times this
PROBE_TIMEOUT_S = 45.0
KILL_GRACE_S = 3.0  # SIGTERM, then SIGKILL this long after
LOG_ENV = "GPUNN_GPU_CHECK_LOG"  # the plugin's per-test log (JSON lines)
NO_POOL_ENV = "GPUNN_GPU_CHECK_NO_POOL"  # the plugin disables CuPy's memory pools
EMULATOR_WARNINGS = ["-W", "ignore:invalid value encountered:RuntimeWarning"]  # see test_emulated.py


# ----------------------------------------------------------------------------------------------
# the steps
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Step:
    """One step: a pytest run (``kind`` pytest, sanitizer or bench) or a plain ``command``.

    ``args`` are pytest's arguments; ``emulator_args`` replace them under ``--emulator`` (a small subset);
    ``estimate`` is the expected time on an H200 from a fresh machine, ``budget`` the hard limit (s)."""

    name: str
    what: str
    kind: str
    budget: float
    estimate: str = ""
    args: list = dataclasses.field(default_factory=list)
    env: dict = dataclasses.field(default_factory=dict)
    emulator_args: list | None = None
    tool: str | None = None  # compute-sanitizer --tool
    command: list | None = None  # kind "command": run this argv as it is
    per_test_timeout: int = 60  # pytest-timeout's --timeout, where it is installed
    workers: bool = False  # may spread over pytest-xdist workers, where it is installed


KERNEL_TESTS = ["tests/kernels", "-m", "gpu"]
SUITES = ["tests/test_tensor.py", "tests/test_autograd.py", "tests/nn", "tests/optim"]
SHARED_MEMORY_KERNELS = "linear_act or softmax_cross_entropy"  # the kernels with __shared__ arrays
# racecheck tracks every shared-memory access (the slowest tool): the float32 tests of those kernels, without
# the two largest shapes (1823x781x67 GEMM; 3x32000 and 1823x781 logits) and with one of the three loss
# reductions and one label smoothing (they change the arithmetic, not the shared-memory pattern)
RACECHECK_SELECTION = f"float32 and ({SHARED_MEMORY_KERNELS}) and not shape5 and not shape6 and not sum and not 0.1"


def quick_steps() -> list[Step]:
    return [
        Step(
            "kernel-tests",
            "gpu-marked kernel tests (tests/kernels -m gpu)",
            "pytest",
            90,
            "40-60 s",
            args=KERNEL_TESTS,
            workers=True,
            emulator_args=[
                "tests/kernels/test_cupy_kernels.py",
                "-m",
                "gpu",
                "-k",
                "float32 and (test_sgd_step or test_max_pool2d or shape2 or shape3)",
            ],
        ),
        Step(
            "cupy-suites",
            "tensor, autograd, nn, optim suites on the cupy backend",
            "pytest",
            150,
            "70-110 s",
            args=SUITES,
            env={"GPUNN_TEST_BACKEND": "cupy"},
            workers=True,
            emulator_args=["tests/test_tensor.py", "tests/optim/test_sgd.py", "-k", "not dropout and not slow"],
        ),
        Step(
            "memcheck",
            "compute-sanitizer memcheck, float32 kernel tests, no memory pool, -lineinfo",
            "sanitizer",
            75,
            "35-55 s",
            tool="memcheck",
            per_test_timeout=120,
            args=["tests/kernels/test_cupy_kernels.py", "-m", "gpu", "-k", "float32 and not numba"],
            env={"GPUNN_KERNEL_LINEINFO": "1", NO_POOL_ENV: "1"},
            emulator_args=[
                "tests/kernels/test_cupy_kernels.py",
                "-m",
                "gpu",
                "-k",
                "float32 and test_adam_step and not device_step",
            ],
        ),
        Step(
            "racecheck",
            "compute-sanitizer racecheck, float32 tests of the shared-memory kernels",
            "sanitizer",
            45,
            "15-30 s",
            tool="racecheck",
            per_test_timeout=120,
            args=["tests/kernels/test_cupy_kernels.py", "-m", "gpu", "-k", RACECHECK_SELECTION],
            env={"GPUNN_KERNEL_LINEINFO": "1", NO_POOL_ENV: "1"},
            emulator_args=[
                "tests/kernels/test_cupy_kernels.py",
                "-m",
                "gpu",
                "-k",
                "float32 and test_softmax_cross_entropy and shape1 and not weighted",
            ],
        ),
        Step(
            "bench",
            "quick bench: fused primitives (every kernel version), MLP and CNN step vs PyTorch",
            "bench",
            100,
            "50-80 s",
            per_test_timeout=90,
            args=["bench", "--benchmark-max-time=0.25", "--benchmark-min-rounds=5"],
            env={"GPUNN_BENCH_BACKEND": "cupy", "GPUNN_BENCH_QUICK": "1", "GPUNN_BENCH_QUIET_WAIT": "5"},
            emulator_args=["bench", "-k", "mlp and not 16.8M", "--benchmark-max-time=0.01", "--benchmark-min-rounds=1"],
        ),
    ]


def full_steps() -> list[Step]:
    return [
        Step(
            "tests-numpy",
            "the whole test suite (gpu tests included)",
            "pytest",
            1500,
            "10-15 min",
            args=["tests"],
            workers=True,
        ),
        Step(
            "tests-cupy",
            "the whole test suite on the cupy backend",
            "pytest",
            1500,
            "10-15 min",
            args=["tests"],
            env={"GPUNN_TEST_BACKEND": "cupy"},
            workers=True,
        ),
        Step(
            "memcheck",
            "compute-sanitizer memcheck, every gpu kernel test, no memory pool",
            "sanitizer",
            1500,
            "3-6 min",
            tool="memcheck",
            per_test_timeout=300,
            args=KERNEL_TESTS,
            env={"GPUNN_KERNEL_LINEINFO": "1", NO_POOL_ENV: "1"},
        ),
        Step(
            "racecheck",
            "compute-sanitizer racecheck, every gpu kernel test",
            "sanitizer",
            1500,
            "3-8 min",
            tool="racecheck",
            per_test_timeout=300,
            args=KERNEL_TESTS,
            env={"GPUNN_KERNEL_LINEINFO": "1", NO_POOL_ENV: "1"},
        ),
        Step(
            "bench",
            "the whole benchmark suite on the cupy backend",
            "bench",
            1500,
            "5-10 min",
            per_test_timeout=600,
            args=["bench"],
            env={"GPUNN_BENCH_BACKEND": "cupy"},
        ),
    ]


# ----------------------------------------------------------------------------------------------
# the result file: rewritten whole and atomically after every change
# ----------------------------------------------------------------------------------------------
def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "unknown"


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------------------
# what the machine is
# ----------------------------------------------------------------------------------------------
PROBE_CODE = r"""
import json, sys
out = {}
try:
    import cupy
    out["cupy"] = getattr(cupy, "__version__", None)
    n = cupy.cuda.runtime.getDeviceCount()
    out["device_count"] = n
    if n < 1:
        raise RuntimeError("the CUDA runtime reports 0 devices")
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props.get("name", b"?")
    out["device"] = name.decode() if isinstance(name, bytes) else str(name)
    for key, field in (("multiprocessors", "multiProcessorCount"), ("l2_cache_bytes", "l2CacheSize"),
                       ("memory_bytes", "totalGlobalMem")):
        if field in props:
            out[key] = int(props[field])
    if "major" in props:
        out["compute_capability"] = f"{props['major']}.{props['minor']}"
    rt = cupy.cuda.runtime
    for key, fn in (("cuda_runtime", "runtimeGetVersion"), ("cuda_driver", "driverGetVersion")):
        if hasattr(rt, fn):
            out[key] = getattr(rt, fn)()
    x = cupy.arange(10, dtype=cupy.float32)
    got = float((x * x).sum())  # a kernel runs and its result comes back
    if got != 285.0:
        raise RuntimeError(f"a test computation on the GPU gave {got}, not 285")
    out["usable"] = True
except Exception as exc:
    out["usable"] = False
    out["error"] = f"{type(exc).__name__}: {exc}"
print("GPU_CHECK_PROBE " + json.dumps(out))
"""

PACKAGES = (
    "numpy",
    "cupy",
    "numba",
    "numba-cuda",
    "torch",
    "pytest",
    "pytest-benchmark",
    "pytest-timeout",
    "pytest-xdist",
    "setuptools",
)
TOOLS_ON_PATH = ("nvidia-smi", "nvcc", "compute-sanitizer", "ncu", "g++")


def package_versions() -> dict:
    out = {}
    for name in PACKAGES:
        if name == "cupy":  # cupy-cuda12x, cupy-cuda13x, ...
            found = [
                d for d in importlib.metadata.distributions() if (d.metadata["Name"] or "").lower().startswith("cupy")
            ]
            out[name] = f"{found[0].metadata['Name']} {found[0].version}" if found else None
            continue
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def find_tool(name: str) -> str | None:
    path = shutil.which(name)
    if path is None:
        for cand in (f"/usr/local/cuda/bin/{name}", f"/usr/local/cuda/compute-sanitizer/{name}"):
            if os.access(cand, os.X_OK):
                return cand
    return path


def tool_info() -> dict:
    out = {}
    for name in TOOLS_ON_PATH:
        path = find_tool(name)
        out[name] = {"path": path}
        if path and name in ("nvcc", "compute-sanitizer", "ncu"):
            code, text = quick_run([path, "--version"], 15)
            lines = [ln for ln in text.splitlines() if ln.strip()]
            out[name]["version"] = lines[-1].strip() if code == 0 and lines else None
    smi = out["nvidia-smi"]["path"]
    if smi:
        code, text = quick_run(
            [smi, "--query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu", "--format=csv,noheader"], 15
        )
        if code == 0 and text.strip():
            out["nvidia-smi"]["query"] = text.strip()
            out["driver"] = text.strip().splitlines()[0].split(",")[1].strip()
    return out


def quick_run(cmd: list, timeout: float, env=None) -> tuple[int, str]:
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout + p.stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        return -1, f"{type(exc).__name__}: {exc}"


def probe_gpu(env: dict) -> dict:
    """Whether CuPy sees a device and runs a kernel on it, in a subprocess (a broken driver can hang)."""
    code, text = quick_run([sys.executable, "-c", PROBE_CODE], PROBE_TIMEOUT_S, env)
    for line in text.splitlines():
        if line.startswith("GPU_CHECK_PROBE "):
            return json.loads(line[len("GPU_CHECK_PROBE ") :])
    return {"usable": False, "error": f"the probe gave no answer (exit {code}): {text[-800:]}"}


def commit_info() -> dict:
    """The commit: GPUNN_COMMIT when given (a copied tree can carry a stale .git: the device tool's copy kept
    the session's first HEAD), else git's HEAD and whether tracked files differ from it."""
    env_commit = os.environ.get("GPUNN_COMMIT")
    code, out = quick_run(["git", "rev-parse", "HEAD"], 15)
    if env_commit:
        return {"commit": env_commit, "dirty": None, "source": "GPUNN_COMMIT", "git_head": out.strip() or None}
    if code == 0 and out.strip():
        _, status = quick_run(["git", "status", "--porcelain", "--untracked-files=no"], 15)
        return {"commit": out.strip(), "dirty": bool(status.strip()), "source": "git"}
    return {"commit": "unknown (no .git here: pass GPUNN_COMMIT)", "dirty": None, "source": None}


def kernel_hashes() -> dict:
    return {
        str(p.relative_to(ROOT)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((ROOT / "kernels").rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def kernel_versions() -> dict | None:
    """gpunn.backend.kernel_table's versions and defaults, read from its source (importing it could pull
    in CuPy); None when there is no table."""
    path = ROOT / "gpunn" / "backend" / "kernel_table.py"
    if not path.exists():
        return None
    code = (
        "import json; from gpunn.backend import kernel_table as t; "
        "print(json.dumps({'versions': {k: list(v) for k, v in t.VERSIONS.items()}, "
        "'defaults': dict(t.DEFAULTS)}))"
    )
    rc, text = quick_run([sys.executable, "-c", code], 30, dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        return json.loads(text.strip().splitlines()[-1]) if rc == 0 else {"error": text[-500:]}
    except (ValueError, IndexError):
        return {"error": text[-500:]}


# ----------------------------------------------------------------------------------------------
# running one step: its own process group, killed whole at its deadline
# ----------------------------------------------------------------------------------------------
class Runner:
    """Runs argv in a new session (process group) with output to a file; at its deadline, or once ``stop``
    is set (by a signal handler), the whole group is killed: SIGTERM, then SIGKILL."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.stop = False

    def run(self, argv: list, env: dict, timeout: float, out_path: Path) -> tuple[int | None, bool, float]:
        """(exit code, or None when killed; whether its time ran out; seconds)."""
        t0 = time.monotonic()
        deadline = t0 + max(0.1, timeout)
        with open(out_path, "wb") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                while True:
                    try:
                        code = self.proc.wait(timeout=min(0.25, max(0.01, deadline - time.monotonic())))
                        return code, False, time.monotonic() - t0
                    except subprocess.TimeoutExpired:
                        pass
                    if self.stop or time.monotonic() >= deadline:
                        self.kill()
                        return None, not self.stop, time.monotonic() - t0
            finally:
                self.kill()  # whatever the step left running in its group
                self.proc = None

    def kill(self) -> None:
        proc = self.proc
        if proc is None:
            return
        for sig, grace in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                break  # the group is gone
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass


def read_log(path: Path) -> list[dict]:
    out = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # a line cut by a kill
    return out


def summarize_tests(log: list[dict]) -> dict:
    """Counts, failures (with messages), the slowest tests and the benchmark timings from the plugin log."""
    outcome: dict[str, str] = {}
    failures, durations, benches, events, started = [], {}, [], [], {}
    for rec in log:
        if "start" in rec:
            started[rec["start"]] = True
            continue
        if "event" in rec:
            events.append(rec)
            continue
        if "bench" in rec:
            benches.append(rec)
            continue
        node, when, res = rec["nodeid"], rec["when"], rec["outcome"]
        durations[node] = durations.get(node, 0.0) + rec.get("duration", 0.0)
        if when == "call":
            outcome[node] = {"passed": "passed", "failed": "failed", "skipped": "skipped"}[res]
            if rec.get("xfail"):
                outcome[node] = "xfailed" if res == "skipped" else "xpassed"
        elif res == "failed":
            outcome[node] = "error"
        elif res == "skipped" and when == "setup":
            outcome[node] = "skipped"
        if res == "failed":
            failures.append({"test": node, "when": when, "message": rec.get("message", "")[:2000]})
        if when == "call" or (when == "setup" and res != "passed"):
            started.pop(node, None)
    counts = {k: 0 for k in ("passed", "failed", "error", "skipped", "xfailed", "xpassed")}
    for v in outcome.values():
        counts[v] += 1
    counts["total"] = len(outcome)
    skips = [rec.get("message", "") for rec in log if rec.get("outcome") == "skipped" and "nodeid" in rec]
    slowest = sorted(durations.items(), key=lambda kv: -kv[1])[:10]
    return {
        "counts": counts,
        "failures": failures[:100],
        "failures_total": len(failures),
        "skip_reasons": sorted(set(skips))[:10],
        "slowest": [{"test": k, "seconds": round(v, 2)} for k, v in slowest],
        "benchmarks": benches,
        "events": events,
        "unfinished": list(started)[:20],
    }


SAN_ERRORS = re.compile(r"ERROR SUMMARY: (\d+) errors?")
SAN_RACES = re.compile(r"RACECHECK SUMMARY: (\d+) hazards? displayed \((\d+) errors?, (\d+) warnings?\)")


def sanitizer_findings(text: str) -> dict:
    """Error count and report lines of compute-sanitizer's output (one summary per process it watched).
    Errors come from the ``ERROR SUMMARY`` lines, or, where a tool prints none, from racecheck's
    ``RACECHECK SUMMARY: N hazards displayed (E errors, W warnings)``."""
    errors = [int(n) for n in SAN_ERRORS.findall(text)]
    races = [tuple(int(v) for v in m) for m in SAN_RACES.findall(text)]
    total = sum(errors) if errors else sum(r[1] for r in races) if races else None
    lines = [
        ln.rstrip() for ln in text.splitlines() if ln.startswith("=========") and "SUMMARY" not in ln and ln.strip("= ")
    ]
    # each report's first lines say what, in which kernel (and .cu line, with -lineinfo), by which thread
    out = {"errors": total, "error_summaries": errors, "findings": lines[:150], "findings_total": len(lines)}
    if races:
        out["racecheck"] = {
            "hazards": sum(r[0] for r in races),
            "errors": sum(r[1] for r in races),
            "warnings": sum(r[2] for r in races),
        }
    return out


class Suite:
    """Runs the steps in order, each under its budget and the run's overall deadline, and records each
    outcome in the result file the moment it is known."""

    def __init__(
        self,
        result: dict,
        path: Path,
        *,
        deadline: float | None,
        base_env: dict,
        emulator: bool,
        workers: int,
        has_timeout_plugin: bool,
        work: Path,
    ) -> None:
        self.result, self.path, self.deadline = result, path, deadline
        self.base_env, self.emulator, self.workers = base_env, emulator, workers
        self.has_timeout_plugin, self.work = has_timeout_plugin, work
        self.runner = Runner()
        self.interrupted: str | None = None

    def save(self) -> None:
        self.result["updated"] = now_iso()
        write_json(self.path, self.result)

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic() - WRITE_RESERVE_S

    # -- one step ------------------------------------------------------------------------------
    def argv(self, step: Step, log: Path, raw_json: Path, san_log: Path) -> tuple[list, dict, list]:
        """(argv, extra environment, notes)."""
        notes = []
        env = dict(step.env)
        if step.kind == "command":
            return list(step.command), env, notes
        args = list(step.emulator_args if (self.emulator and step.emulator_args is not None) else step.args)
        pytest_argv = [
            sys.executable,
            "-m",
            "pytest",
            *args,
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "gpu_check",
            "--tb=short",
        ]
        if self.emulator:
            pytest_argv += EMULATOR_WARNINGS
        if self.has_timeout_plugin:
            pytest_argv.append(f"--timeout={step.per_test_timeout}")
        else:
            notes.append("pytest-timeout not installed: no per-test timeout, only the step's budget")
        if step.workers and self.workers > 1 and step.kind == "pytest":
            pytest_argv += ["-n", str(self.workers)]
        if step.kind == "bench":
            pytest_argv.append(f"--benchmark-json={raw_json}")
        env[LOG_ENV] = str(log)
        if step.kind == "sanitizer" and not self.emulator:
            exe = find_tool("compute-sanitizer")
            pytest_argv = [
                exe,
                "--tool",
                step.tool,
                "--error-exitcode",
                "99",
                "--print-limit",
                "200",
                "--log-file",
                str(san_log),
                *pytest_argv,
            ]
        return pytest_argv, env, notes

    def run_step(self, step: Step) -> dict:
        rec = {
            "name": step.name,
            "what": step.what,
            "budget_s": step.budget,
            "estimate": step.estimate,
            "started": now_iso(),
        }
        # absent optional tools: recorded, the suite goes on
        if step.kind == "sanitizer" and not self.emulator and find_tool("compute-sanitizer") is None:
            return {**rec, "status": "missing", "note": "compute-sanitizer is not installed here"}
        if step.kind == "bench" and importlib.util.find_spec("pytest_benchmark") is None:
            return {**rec, "status": "missing", "note": "pytest-benchmark is not installed here"}
        budget = step.budget
        left = self.remaining()
        if left is not None:
            if left < 3:
                return {**rec, "status": "not_run", "note": "the run's overall budget was spent"}
            if left < budget:
                budget = left
                rec["note"] = f"budget cut to {left:.0f} s by the run's overall budget"
        rec["budget_s"] = round(budget, 1)
        tag = slug(step.name)
        log, raw_json = self.work / f"{tag}.jsonl", self.work / f"{tag}-bench.json"
        san_log, out_path = self.work / f"{tag}-sanitizer.log", self.work / f"{tag}.out"
        for p in (log, raw_json, san_log):
            p.unlink(missing_ok=True)
        argv, extra_env, notes = self.argv(step, log, raw_json, san_log)
        if step.kind == "sanitizer" and self.emulator:
            notes.append("emulator: the workload ran without compute-sanitizer (nothing to check on the CPU)")
        if step.kind == "bench":
            if importlib.util.find_spec("torch") is None:
                notes.append("torch is not installed: the PyTorch peers were skipped")
        env = dict(self.base_env, **extra_env)
        rec["command"] = " ".join(argv)
        rec["env"] = {k: v for k, v in extra_env.items() if k != LOG_ENV}
        self.result["running"] = {"step": step.name, "since": rec["started"], "budget_s": rec["budget_s"]}
        self.save()
        code, timed_out, secs = self.runner.run(argv, env, budget, out_path)
        self.result.pop("running", None)
        output = out_path.read_text(errors="replace") if out_path.exists() else ""
        rec.update({"seconds": round(secs, 1), "exit_code": code, "tail": output[-4000:]})
        if step.kind != "command":
            rec.update(summarize_tests(read_log(log)))
            if not rec["benchmarks"]:
                rec.pop("benchmarks")
        if step.kind == "sanitizer" and not self.emulator:
            text = san_log.read_text(errors="replace") if san_log.exists() else output
            rec["sanitizer"] = {"tool": step.tool, **sanitizer_findings(text), "log_tail": text[-3000:]}
        if step.kind == "bench" and raw_json.exists():
            try:
                rec["raw"] = json.loads(raw_json.read_text())
            except ValueError as exc:
                notes.append(f"benchmark JSON unreadable: {exc}")
        rec["status"] = self.status(step, rec, code, timed_out)
        if notes:
            rec["notes"] = notes
        return rec

    def status(self, step: Step, rec: dict, code: int | None, timed_out: bool) -> str:
        if self.interrupted:
            return "interrupted"
        if timed_out:
            return "timed_out"
        san = rec.get("sanitizer") or {}
        if san.get("errors"):
            return "failed"
        if step.kind == "command":
            return "passed" if code == 0 else "failed"
        counts = rec.get("counts", {})
        if code == 0:
            if counts.get("total", 0) and counts["total"] == counts["skipped"]:
                rec["note"] = f"every test skipped ({'; '.join(rec.get('skip_reasons', [])[:2])})"
                return "error"
            return "passed"
        if code == 1 or (code == 99 and step.kind == "sanitizer"):
            return "failed"
        rec["note"] = {
            2: "pytest was interrupted",
            3: "pytest internal error",
            4: "pytest usage error",
            5: "no tests collected (the selection matches nothing)",
        }.get(code, f"exit code {code}")
        return "error"

    # -- all steps -----------------------------------------------------------------------------
    def run(self, steps: list[Step]) -> None:
        self.result["steps"] = []
        self.result["planned"] = [{"name": s.name, "budget_s": s.budget, "estimate": s.estimate} for s in steps]
        self.save()
        for step in steps:
            if self.interrupted:
                rec = {"name": step.name, "status": "not_run", "note": f"run interrupted ({self.interrupted})"}
            else:
                try:
                    rec = self.run_step(step)
                except Exception as exc:  # a harness bug or an unlaunchable tool: recorded, the next step runs
                    self.result.pop("running", None)
                    rec = {
                        "name": step.name,
                        "status": "error",
                        "note": f"{type(exc).__name__}: {exc}",
                        "traceback": traceback.format_exc()[-3000:],
                    }
            rec["finished"] = now_iso()
            self.result["steps"].append(rec)
            self.save()
            print(step_line(rec), flush=True)  # progress; the summary at the end repeats it

    def interrupt(self, signum, frame) -> None:
        """SIGTERM/SIGINT: the running step is killed (by the runner's loop), the rest are not run."""
        self.interrupted = signal.Signals(signum).name
        self.runner.stop = True


# ----------------------------------------------------------------------------------------------
# the pytest plugin (loaded into each step's pytest with -p gpu_check; tools/ is on its PYTHONPATH)
# ----------------------------------------------------------------------------------------------
_PLUGIN = {"worker": False}


def _plugin_log(record: dict) -> None:
    path = os.environ.get(LOG_ENV)
    if path and not _PLUGIN["worker"]:  # under pytest-xdist the controller logs every worker's reports
        with open(path, "a") as f:
            f.write(json.dumps(record, default=str) + "\n")


def pytest_configure(config):
    _PLUGIN["worker"] = hasattr(config, "workerinput")
    if os.environ.get(NO_POOL_ENV) != "1":
        return
    if os.environ.get("GPUNN_KERNEL_EMULATOR") == "1":
        _plugin_log({"event": "emulator: no CuPy memory pool to disable"})
        return
    import cupy

    # no pool: every allocation is its own cudaMalloc, so memcheck sees an access past its end
    cupy.cuda.set_allocator(None)
    cupy.cuda.set_pinned_memory_allocator(None)
    _plugin_log({"event": "cupy memory pools disabled"})


def pytest_runtest_logstart(nodeid, location):
    if os.environ.get(LOG_ENV) is not None:
        _plugin_log({"start": nodeid})  # a test that starts and never ends is what a killed step was running


def pytest_runtest_logreport(report):
    if os.environ.get(LOG_ENV) is None:
        return
    if report.when != "call" and not (report.failed or report.skipped):
        return
    rec = {
        "nodeid": report.nodeid,
        "when": report.when,
        "outcome": report.outcome,
        "duration": round(report.duration, 4),
    }
    if hasattr(report, "wasxfail"):
        rec["xfail"] = True
    if report.failed:
        rec["message"] = report.longreprtext[-2000:]
    elif report.skipped and isinstance(report.longrepr, tuple):
        rec["message"] = str(report.longrepr[2])
    _plugin_log(rec)


def pytest_runtest_makereport(item, call):
    """After a benchmark's call: its timings, at once (a killed bench step keeps what it measured)."""
    if call.when != "call" or os.environ.get(LOG_ENV) is None:
        return
    bm = getattr(item, "funcargs", {}).get("benchmark")
    meta = getattr(bm, "stats", None)
    stats = getattr(meta, "stats", None)
    if stats is None or not getattr(stats, "data", None):
        return
    info = dict(getattr(bm, "extra_info", {}) or {})
    _plugin_log(
        {
            "bench": item.nodeid,
            "op": info.get("op"),
            "size": info.get("size"),
            "impl": info.get("impl"),
            "kernel_version": info.get("kernel_version"),
            "min": stats.min,
            "median": stats.median,
            "mean": stats.mean,
            "stddev": stats.stddev if len(stats.data) > 1 else 0.0,
            "rounds": len(stats.data),
            "max_rel_err": info.get("max_rel_err"),
            "extra_info": info,
            "data": [round(v, 9) for v in stats.data[:2000]],
        }
    )


# ----------------------------------------------------------------------------------------------
# summary
# ----------------------------------------------------------------------------------------------
def fmt_time(s: float) -> str:
    return f"{s:.2f} s" if s >= 1 else f"{s * 1e3:.3f} ms" if s >= 1e-3 else f"{s * 1e6:.1f} us"


def step_line(rec: dict) -> str:
    status = rec.get("status", "?")
    shown = status.upper() if status not in ("passed", "missing", "not_run") else status
    secs = rec.get("seconds")
    took = f"{secs:.0f}/{rec.get('budget_s', 0):.0f} s" if secs is not None else "-"
    c = rec.get("counts")
    res = ", ".join(f"{c[k]} {k}" for k in ("passed", "failed", "error", "skipped") if c and c.get(k)) if c else ""
    san = rec.get("sanitizer")
    if san:
        res += f"; sanitizer errors {san['errors'] if san['errors'] is not None else '?'}"
    if rec.get("benchmarks"):
        res += f"; {len(rec['benchmarks'])} timed"
    if rec.get("unfinished") and status in ("timed_out", "interrupted"):
        res += f"; running at the kill: {rec['unfinished'][0]}"
    note = rec.get("note") or ""
    return f"  {rec['name']:<13} {shown:<11} {took:>11}  {res}{'  (' + note + ')' if note else ''}"


def bench_lines(recs: list, limit: int = 14) -> list[str]:
    by: dict = {}
    for b in recs:
        by.setdefault((b.get("op"), b.get("size")), []).append(b)
    lines = []
    for (op, size), group in by.items():
        peer = next((b for b in group if str(b.get("impl", "")).startswith("torch")), None)
        for b in group:
            if str(b.get("impl", "")).startswith("torch"):
                continue
            ratio = f"{b['min'] / peer['min']:.2f}x" if peer else "-"
            lines.append(
                f"    {op:<19} {str(size)[:22]:<22} {b.get('impl', '?'):<18} {fmt_time(b['min']):>10}  "
                f"torch {fmt_time(peer['min']) if peer else '-':>10}  {ratio}"
            )
    if len(lines) > limit:
        lines = lines[:limit] + [f"    ... {len(lines) - limit} more in the file"]
    return lines


def summary(result: dict, path: Path) -> str:
    m = result.get("machine", {})
    gpu = m.get("gpu", {})
    head = (
        f"gpu-check --{result.get('profile')} on {gpu.get('device', 'no usable GPU')}"
        f" (driver {m.get('tools', {}).get('driver', '?')}, cupy {gpu.get('cupy')},"
        f" torch {m.get('packages', {}).get('torch')}), commit {str(result.get('commit', {}).get('commit'))[:12]}"
    )
    lines = [
        head,
        f"  {result.get('seconds', 0):.0f} s of a {result.get('budget_s') or 'unlimited'} s budget;"
        f" status: {result.get('status')}",
    ]
    if not gpu.get("usable", False):
        lines.append(f"  no usable GPU: {gpu.get('error')}")
    for rec in result.get("steps", []):
        lines.append(step_line(rec))
    fails = [(rec["name"], f) for rec in result.get("steps", []) for f in rec.get("failures", [])]
    if fails:
        lines.append(f"  failures ({len(fails)}; first 6):")
        for name, f in fails[:6]:
            msg = " ".join(f["message"].split())[-150:]
            lines.append(f"    [{name}] {f['test']}: {msg}")
    for rec in result.get("steps", []):
        for finding in (rec.get("sanitizer") or {}).get("findings", [])[:3]:
            lines.append(f"    [{rec['name']}] {finding[:150]}")
    bench = [b for rec in result.get("steps", []) for b in rec.get("benchmarks", [])]
    if bench:
        lines.append("  bench (min time; ratio = gpunn / torch, below 1 gpunn is faster):")
        lines += bench_lines(bench)
    lines.append(f"wrote {path}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------
def parse_args(argv):
    ap = argparse.ArgumentParser(prog="tools/gpu_check.py", description=__doc__.splitlines()[0])
    prof = ap.add_mutually_exclusive_group()
    prof.add_argument("--quick", action="store_true", help="the quick profile (default), <= --budget seconds")
    prof.add_argument("--full", action="store_true", help="everything: both backends' suites, sanitizers, bench")
    ap.add_argument(
        "--budget",
        type=float,
        default=None,
        help=f"overall seconds for the run (default {QUICK_BUDGET_S:.0f} for --quick, none for --full)",
    )
    ap.add_argument(
        "--step-budget",
        action="append",
        default=[],
        metavar="STEP=SECONDS",
        help="override one step's budget (repeatable)",
    )
    ap.add_argument("--steps", help="comma-separated step names to run (the others are recorded as skipped)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"), help="directory of the result file")
    ap.add_argument(
        "--emulator",
        action="store_true",
        help="dry run on the CPU stand-in for CuPy (tests/kernels/emulator.py), each step narrowed",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=None,
        help="pytest-xdist workers for the test steps (default min(8, cores/2) when xdist is there)",
    )
    ap.add_argument("--list", action="store_true", help="print the steps and their budgets, run nothing")
    return ap.parse_args(argv)


def select_steps(args) -> list[Step]:
    steps = full_steps() if args.full else quick_steps()
    if args.emulator:  # the budgets are for a GPU; the emulator runs kernels as CPU fibers, on a shared CI box
        for s in steps:
            s.budget *= EMULATOR_BUDGET_FACTOR
    for item in args.step_budget:
        name, _, secs = item.partition("=")
        match = [s for s in steps if s.name == name]
        if not match or not secs:
            raise SystemExit(
                f"--step-budget {item!r}: expected STEP=SECONDS with STEP one of {[s.name for s in steps]}"
            )
        match[0].budget = float(secs)
    return steps


def main(argv=None) -> int:
    args = parse_args(argv)
    profile = "full" if args.full else "quick"
    steps = select_steps(args)
    if args.list:
        for s in steps:
            print(f"{s.name:<13} budget {s.budget:>5.0f} s  estimate {s.estimate:<10} {s.what}")
        return 0
    wanted = None
    if args.steps:
        wanted = [n.strip() for n in args.steps.split(",") if n.strip()]
        unknown = set(wanted) - {s.name for s in steps}
        if unknown:
            raise SystemExit(f"--steps: unknown step(s) {sorted(unknown)}; have {[s.name for s in steps]}")
    budget = args.budget if args.budget is not None else (QUICK_BUDGET_S if profile == "quick" else None)
    if args.emulator and args.budget is None and budget:
        budget *= EMULATOR_BUDGET_FACTOR
    t0 = time.monotonic()
    deadline = t0 + budget if budget else None
    started = dt.datetime.now(dt.timezone.utc)

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmpdir:
        work = Path(tmpdir)
        env = dict(os.environ)
        path_parts = [str(TOOLS), str(ROOT)]
        if args.emulator:
            sys.path.insert(0, str(ROOT))
            from tests.kernels import emulator

            path_parts.insert(0, str(emulator.install(work / "fake")))
            env["GPUNN_KERNEL_EMULATOR"] = "1"
            env.pop("NUMBA_ENABLE_CUDASIM", None)
        env["PYTHONPATH"] = os.pathsep.join(path_parts + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env.setdefault("PYTHONUNBUFFERED", "1")

        gpu = probe_gpu(env)
        has_xdist = importlib.util.find_spec("xdist") is not None
        workers = (
            args.workers
            if args.workers is not None
            else (min(8, max(1, (os.cpu_count() or 1) // 2)) if has_xdist and not args.emulator else 1)
        )
        if workers > 1 and not has_xdist:
            workers = 1
        device = (
            "gpunn-kernel-emulator"
            if args.emulator
            else slug(gpu.get("device") or "no-gpu")
            if gpu.get("usable")
            else "no-gpu"
        )
        out_dir = Path(args.out)
        path = out_dir / f"gpu-{started:%Y%m%d}-{device}.json"
        for n in range(2, 1000):  # a second run the same day keeps the first one's file
            if not path.exists():
                break
            path = out_dir / f"gpu-{started:%Y%m%d}-{device}-{n}.json"
        result = {
            "suite": "gpunn gpu-check",
            "format": 2,
            "profile": profile,
            "emulator": args.emulator,
            "command": " ".join([Path(sys.executable).name, "tools/gpu_check.py", *(argv or sys.argv[1:])]),
            "started": started.isoformat(timespec="seconds"),
            "budget_s": budget,
            "status": "running",
            "commit": commit_info(),
            "machine": {
                "gpu": gpu,
                "host": os.uname().nodename,
                "cpu_count": os.cpu_count(),
                "python": sys.version.split()[0],
                "packages": package_versions(),
                "tools": tool_info(),
                "pytest_xdist_workers": workers,
            },
            "kernels_sha256": kernel_hashes(),
            "kernel_versions": kernel_versions(),
            "steps": [],
        }
        suite = Suite(
            result,
            path,
            deadline=deadline,
            base_env=env,
            emulator=args.emulator,
            workers=workers,
            has_timeout_plugin=importlib.util.find_spec("pytest_timeout") is not None,
            work=work,
        )
        if not gpu.get("usable"):
            result["status"] = "no usable GPU"
            result["steps"] = [{"name": s.name, "status": "not_run", "note": "no usable GPU"} for s in steps]
            finish(result, suite, t0)
            print(summary(result, path))
            return 2
        print(f"gpu-check --{profile}: {gpu.get('device')}; writing {path} after every step", flush=True)
        old = {sig: signal.signal(sig, suite.interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            chosen = [s for s in steps if wanted is None or s.name in wanted]
            suite.run(chosen)
            for s in steps:
                if s not in chosen:
                    result["steps"].append({"name": s.name, "status": "skipped", "note": "not selected (--steps)"})
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
        bad = [r for r in result["steps"] if r["status"] not in ("passed", "missing", "skipped")]
        result["status"] = (
            f"interrupted ({suite.interrupted})"
            if suite.interrupted
            else "passed"
            if not bad
            else f"{len(bad)} step(s) not passed"
        )
        finish(result, suite, t0)
        print(summary(result, path))
        return 0 if not bad else 1


def finish(result: dict, suite: Suite, t0: float) -> None:
    result["seconds"] = round(time.monotonic() - t0, 1)
    result["finished"] = now_iso()
    suite.save()


if __name__ == "__main__":
    sys.exit(main())
