#!/usr/bin/env python3
"""Compile every kernels/*.cu with nvcc for each target architecture and report per-kernel resources.

    python tools/compile_kernels.py            # table on stdout; exit 1 on a compile error or any spill
    python tools/compile_kernels.py --write    # also keep the report in kernels/RESOURCE_USAGE.txt

No GPU is needed: nvcc builds a cubin (-cubin) and ptxas prints registers, shared memory, stack frame
and spill bytes for every entry point (--resource-usage). The options are those CuPy's NVRTC gets at
run time (gpunn.backend.kernels.compile_options), so the report describes the code that runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpunn.backend import kernels as K  # noqa: E402


def compile_one(name: str, arch: str, nvcc: str) -> tuple[str, str, int, str]:
    """(name, arch, return code, nvcc's combined output)."""
    cmd = K.nvcc_command(name, arch, ROOT / "kernels" / f"{name}.cu", nvcc=nvcc)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return name, arch, proc.returncode, proc.stdout + proc.stderr


def compile_all(nvcc: str = "nvcc", archs=K.ARCHS, jobs: int | None = None):
    """compile_one for every (file, arch) pair, in parallel."""
    pairs = [(n, a) for n in K.KERNEL_FILES for a in archs]
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 2) as pool:
        return list(pool.map(lambda p: compile_one(*p, nvcc), pairs))


def table(results) -> tuple[str, bool]:
    """A fixed-width summary and whether everything compiled without spills."""
    ok = True
    lines = [
        f"{'file':24s} {'arch':6s} {'kernel':28s} {'regs':>5s} {'smem B':>7s} {'stack B':>7s} {'spill st/ld B':>13s}"
    ]
    for name, arch, rc, out in results:
        if rc != 0:
            ok = False
            lines.append(f"{name + '.cu':24s} {arch:6s} COMPILE FAILED (exit {rc})")
            continue
        for kernel, r in sorted(K.parse_resource_usage(out).items()):
            spills = r["spill_stores"] + r["spill_loads"]
            ok &= spills == 0
            lines.append(
                f"{name + '.cu':24s} {arch:6s} {kernel:28s} {r['registers']:5d} {r['smem']:7d} "
                f"{r['stack']:7d} {r['spill_stores']:>6d}/{r['spill_loads']:<6d}" + ("  <-- SPILLS" if spills else "")
            )
    return "\n".join(lines), ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nvcc", default=shutil.which("nvcc") or "nvcc")
    ap.add_argument("--arch", action="append", help=f"target(s), default {' '.join(K.ARCHS)}")
    ap.add_argument("--write", action="store_true", help="write kernels/RESOURCE_USAGE.txt")
    args = ap.parse_args(argv)
    if shutil.which(args.nvcc) is None:
        print(f"nvcc not found ({args.nvcc})", file=sys.stderr)
        return 2
    results = compile_all(args.nvcc, tuple(args.arch or K.ARCHS))
    summary, ok = table(results)
    print(summary)
    for name, arch, rc, out in results:
        if rc != 0:
            print(f"\n--- {name}.cu {arch} ---\n{out}", file=sys.stderr)
    if args.write:
        version = subprocess.run([args.nvcc, "--version"], capture_output=True, text=True).stdout.strip()

        def stable(out: str) -> str:  # drop ptxas's per-run compile timings
            return "\n".join(ln for ln in out.strip().splitlines() if "Compile time" not in ln)

        raw = "\n\n".join(
            f"===== {name}.cu  {' '.join(K.nvcc_command(name, arch, f'kernels/{name}.cu'))}\n{stable(out)}"
            for name, arch, rc, out in results
        )
        (ROOT / "kernels" / "RESOURCE_USAGE.txt").write_text(
            "Resource usage of kernels/*.cu, written by `python tools/compile_kernels.py --write`.\n"
            "Registers per thread, static shared memory per block, stack frame and spill bytes per\n"
            "entry point, as ptxas reports them. Every kernel must show zero spill stores and loads\n"
            "(tests/kernels/test_compile.py checks it).\n\n"
            f"{version.splitlines()[-1] if version else args.nvcc}\n\n{summary}\n\n"
            f"Raw report:\n\n{raw}\n"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
