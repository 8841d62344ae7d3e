"""The GPU suite, in one command (``make gpu-check``): run on a machine with a GPU and no network.

Installs nothing: it expects CuPy, numba-cuda, pytest and pytest-benchmark (and, for the peers, PyTorch)
to be there, and the checkout on ``PYTHONPATH``. Steps, each recorded with its pass/fail counts:

1. the whole test suite on the numpy backend, ``gpu``-marked tests included (they run here);
2. the whole test suite again with every test's tensors on the cupy backend (``GPUNN_TEST_BACKEND=cupy``);
3. the kernel tests under ``compute-sanitizer`` (memcheck and racecheck);
4. the benchmark suite on the cupy backend (``GPUNN_BENCH_BACKEND=cupy``), raw timings kept.

It writes ``bench/results/gpu-<date>-<device>.json`` (device, driver, versions, commit, sha256 of every
file in ``kernels/``, counts, failures, sanitizer findings, raw benchmark JSON) and prints a summary.
Options: ``--out DIR`` (default bench/results), ``--skip STEP`` (tests, cupy-tests, sanitizer, bench).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sh(cmd, env=None, timeout=None):
    t0 = time.time()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr, time.time() - t0


def device_info() -> dict:
    info = {"python": platform.python_version(), "host": platform.node()}
    try:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        info["device"] = name.decode() if isinstance(name, bytes) else name
        info["compute_capability"] = f"{props['major']}.{props['minor']}"
        info["multiprocessors"] = props["multiProcessorCount"]
        info["memory_gib"] = round(props["totalGlobalMem"] / 2**30, 1)
        info["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
        info["cuda_driver"] = cupy.cuda.runtime.driverGetVersion()
        info["cupy"] = cupy.__version__
    except Exception as exc:  # noqa: BLE001 - recorded, the suite still runs what it can
        info["device_error"] = f"{type(exc).__name__}: {exc}"
    code, out, _ = sh(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]) \
        if shutil.which("nvidia-smi") else (1, "", 0)
    if code == 0:
        info["nvidia_smi"] = out.strip()
        info["driver"] = out.strip().split(",")[-1].strip()
    for mod in ("numpy", "numba", "numba_cuda", "torch", "pytest"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            info[mod] = None
    return info


def commit() -> str:
    if os.environ.get("GPUNN_COMMIT"):
        return os.environ["GPUNN_COMMIT"]
    code, out, _ = sh(["git", "rev-parse", "HEAD"])
    return out.strip() if code == 0 else "unknown (no .git here: pass GPUNN_COMMIT)"


def kernel_hashes() -> dict:
    return {str(p.relative_to(ROOT)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((ROOT / "kernels").glob("*")) if p.is_file()}


def junit_counts(path: Path) -> dict:
    if not path.exists():
        return {"error": "no junit report (pytest crashed?)"}
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    failed = []
    for case in root.iter("testcase"):
        for tag in ("failure", "error"):
            el = case.find(tag)
            if el is not None:
                failed.append({"test": f"{case.get('classname')}::{case.get('name')}",
                               "message": (el.get("message") or "")[:500]})
    counts["failed_tests"] = failed[:200]
    return counts


def pytest_step(name, args, env_extra, tmp: Path, timeout) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **env_extra)
    xml = tmp / f"{name}.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *args]
    code, out, secs = sh(cmd, env, timeout)
    res = {"command": " ".join(cmd), "env": env_extra, "exit_code": code, "seconds": round(secs, 1)}
    res.update(junit_counts(xml))
    res["tail"] = out[-3000:]
    return res


def sanitizer_step(tool: str, tmp: Path, timeout) -> dict:
    exe = shutil.which("compute-sanitizer") or "/usr/local/cuda/bin/compute-sanitizer"
    if not Path(exe).exists():
        return {"skipped": "compute-sanitizer not found"}
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    xml = tmp / f"sanitizer-{tool}.xml"
    cmd = [exe, "--tool", tool, "--error-exitcode", "99", sys.executable, "-m", "pytest", "-q", "-p",
           "no:cacheprovider", f"--junitxml={xml}", "-m", "gpu", "tests/kernels"]
    code, out, secs = sh(cmd, env, timeout)
    m = re.findall(r"ERROR SUMMARY: (\d+) error", out)
    findings = [line for line in out.splitlines() if line.startswith("=========") and "ERROR SUMMARY" not in line]
    res = {"command": " ".join(cmd), "exit_code": code, "seconds": round(secs, 1),
           "errors": int(m[-1]) if m else None, "findings": findings[:100]}
    res.update(junit_counts(xml))
    res["tail"] = out[-3000:]
    return res


def bench_step(tmp: Path, timeout) -> dict:
    if not (ROOT / "bench").is_dir():
        return {"skipped": "no bench/ directory"}
    env = dict(os.environ, PYTHONPATH=str(ROOT), GPUNN_BENCH_BACKEND="cupy")
    raw = tmp / "bench.json"
    cmd = [sys.executable, "-m", "pytest", "bench", "-q", "-p", "no:cacheprovider", f"--benchmark-json={raw}"]
    code, out, secs = sh(cmd, env, timeout)
    res = {"command": " ".join(cmd), "exit_code": code, "seconds": round(secs, 1), "tail": out[-3000:]}
    if raw.exists():
        res["raw"] = json.loads(raw.read_text())
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--skip", action="append", default=[], choices=["tests", "cupy-tests", "sanitizer", "bench"])
    ap.add_argument("--step-timeout", type=int, default=1500)
    args = ap.parse_args(argv)

    started = dt.datetime.now(dt.timezone.utc)
    result = {"suite": "gpunn gpu-check", "date": started.isoformat(timespec="seconds"), "commit": commit(),
              "machine": device_info(), "kernels_sha256": kernel_hashes(), "steps": {}}
    steps = result["steps"]
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        if "tests" not in args.skip:
            steps["tests_numpy_backend"] = pytest_step("tests", ["tests"], {}, tmp, args.step_timeout)
        if "cupy-tests" not in args.skip:
            steps["tests_cupy_backend"] = pytest_step("cupy", ["tests"], {"GPUNN_TEST_BACKEND": "cupy"}, tmp,
                                                      args.step_timeout)
        if "sanitizer" not in args.skip:
            steps["sanitizer_memcheck"] = sanitizer_step("memcheck", tmp, args.step_timeout)
            steps["sanitizer_racecheck"] = sanitizer_step("racecheck", tmp, args.step_timeout)
        if "bench" not in args.skip:
            steps["bench_cupy"] = bench_step(tmp, args.step_timeout)
    result["seconds"] = round((dt.datetime.now(dt.timezone.utc) - started).total_seconds(), 1)

    device = re.sub(r"[^A-Za-z0-9]+", "-", result["machine"].get("device", "unknown-gpu")).strip("-").lower()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"gpu-{started:%Y-%m-%d}-{device}.json"
    path.write_text(json.dumps(result, indent=1, default=str))

    print(f"gpu-check on {result['machine'].get('device')} (driver {result['machine'].get('driver')}), "
          f"commit {result['commit'][:12]}")
    ok = True
    for name, s in steps.items():
        if "skipped" in s:
            print(f"  {name:24s} skipped: {s['skipped']}")
            continue
        counts = " ".join(f"{k} {s[k]}" for k in ("passed", "failures", "errors", "skipped") if k in s)
        extra = f" sanitizer errors {s['errors']}" if "errors" in s and name.startswith("sanitizer") else ""
        print(f"  {name:24s} exit {s['exit_code']}  {counts}{extra}  ({s['seconds']} s)")
        ok &= s["exit_code"] == 0
        for f in s.get("failed_tests", [])[:10]:
            print(f"      FAIL {f['test']}: {f['message'][:160]}")
    print(f"wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
