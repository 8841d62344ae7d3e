"""Offline checks of kernels/*.cu: every file builds with nvcc for sm_80 and sm_90 without a single
register spill, builds with NVRTC (what CuPy uses) where NVRTC is installed, declares every entry point
the CuPy backend launches, and ships inside the wheel. No GPU needed."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gpunn.backend import kernels as K

ROOT = Path(__file__).resolve().parents[2]
NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")
PAIRS = [(name, arch) for name in K.KERNEL_FILES for arch in K.ARCHS]


@pytest.fixture(scope="module")
def nvcc_reports():
    """{(file, arch): (return code, nvcc output)}, all pairs compiled in parallel."""

    def build(pair):
        name, arch = pair
        proc = subprocess.run(
            K.nvcc_command(name, arch, ROOT / "kernels" / f"{name}.cu", nvcc=NVCC), capture_output=True, text=True
        )
        return pair, (proc.returncode, proc.stdout + proc.stderr)

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return dict(pool.map(build, PAIRS))


@needs_nvcc
@pytest.mark.parametrize("name,arch", PAIRS)
def test_builds_without_spills(nvcc_reports, name, arch):
    rc, report = nvcc_reports[(name, arch)]
    assert rc == 0, f"nvcc failed on {name}.cu for {arch}:\n{report}"
    assert "warning" not in report.lower(), report
    stats = K.parse_resource_usage(report)
    declared = K.declared_entry_points(K.kernel_source(name))
    assert set(stats) == declared, f"entry points in the report {sorted(stats)} != declared {sorted(declared)}"
    spilling = {k: v for k, v in stats.items() if v["spill_stores"] or v["spill_loads"] or v["stack"]}
    assert not spilling, f"{name}.cu on {arch}: kernels with spills or a stack frame: {spilling}"


def test_resource_report_is_current():
    """kernels/RESOURCE_USAGE.txt lists every entry point (regenerate: tools/compile_kernels.py --write)."""
    report = (ROOT / "kernels" / "RESOURCE_USAGE.txt").read_text()
    for name in K.KERNEL_FILES:
        for kernel in K.declared_entry_points(K.kernel_source(name)):
            for arch in K.ARCHS:
                assert re.search(rf"^{name}\.cu\s+{arch}\s+{kernel}\s", report, flags=re.M), (
                    f"{kernel} ({arch}) missing from kernels/RESOURCE_USAGE.txt"
                )


def test_parse_resource_usage():
    report = """ptxas info    : Compiling entry function 'k_f32' for 'sm_90'
ptxas info    : Function properties for __internal_accurate_pow
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Function properties for k_f32
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 80 registers, used 1 barriers, 8320 bytes smem, 400 bytes cmem[0]
"""
    assert K.parse_resource_usage(report) == {
        "k_f32": {"registers": 80, "smem": 8320, "stack": 8, "spill_stores": 4, "spill_loads": 12}
    }


def test_backend_launches_only_declared_entry_points():
    """Every K.entry / K.get_function call in the CuPy backend names a kernel the sources declare."""
    declared = {name: K.declared_entry_points(K.kernel_source(name)) for name in K.KERNEL_FILES}
    src = (ROOT / "gpunn" / "backend" / "cupy_backend.py").read_text()
    entries = re.findall(r'K\.entry\("(\w+)", "(\w+)"', src)
    functions = re.findall(r'K\.get_function\("(\w+)", "(\w+)"', src)
    assert len(entries) >= 10 and functions
    for file, base in entries:
        for suffix in ("f32", "f64"):
            assert f"{base}_{suffix}" in declared[file], f"{file}.cu lacks {base}_{suffix}"
    for file, fn in functions:
        assert fn in declared[file], f"{file}.cu lacks {fn}"


def test_every_kernel_file_has_the_header():
    for name in K.KERNEL_FILES:
        head = K.kernel_source(name)[:4000]
        for word in ("Math", "Launch configuration", "Build", "Versions", "v1"):
            assert word in head, f"{name}.cu header lacks {word!r}"


def _nvrtc():
    if importlib.util.find_spec("cuda") is None or importlib.util.find_spec("cuda.bindings") is None:
        return None
    try:
        from cuda.bindings import nvrtc

        nvrtc.nvrtcVersion()
    except Exception:  # bindings present, NVRTC library missing
        return None
    return nvrtc


@pytest.mark.parametrize("name", K.KERNEL_FILES)
def test_builds_with_nvrtc(name):
    """The run-time path: NVRTC with the options CuPy's RawModule gets (skipped without NVRTC)."""
    nvrtc = _nvrtc()
    if nvrtc is None:
        pytest.skip("NVRTC (cuda-bindings + nvidia-cuda-nvrtc) is not installed")
    err, prog = nvrtc.nvrtcCreateProgram(K.kernel_source(name).encode(), f"{name}.cu".encode(), 0, [], [])
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS
    opts = [o.encode() for o in (*K.compile_options(name), "--gpu-architecture=compute_80")]
    (result,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
    _, size = nvrtc.nvrtcGetProgramLogSize(prog)
    log = bytearray(size)  # writable: NVRTC writing into a bytes object corrupts CPython's cached b" "
    nvrtc.nvrtcGetProgramLog(prog, log)
    nvrtc.nvrtcDestroyProgram(prog)
    assert result == nvrtc.nvrtcResult.NVRTC_SUCCESS, log.decode(errors="replace")


def test_loader_finds_the_sources_without_cupy():
    for name in K.KERNEL_FILES:
        assert 'extern "C"' in K.kernel_source(name)
    with pytest.raises(ValueError, match="unknown kernel file"):
        K.kernel_source("nope")
    code = (
        "import sys, gpunn.backend.kernels, gpunn.backend.numba_kernels; "
        "print('cupy' in sys.modules, 'numba' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout.split()
    assert out == ["False", "False"]


def test_wheel_ships_the_kernels_and_the_loader_finds_them(tmp_path):
    """Build a wheel from a copy of the tree, check gpunn/_kernels/*.cu are inside, install it into a
    scratch directory and load a source through the installed package."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed")
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    src.mkdir()
    for item in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / item).exists():
            shutil.copy2(ROOT / item, src / item)
    for folder in ("gpunn", "kernels"):
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    dist = tmp_path / "dist"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(dist),
            str(src),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = dist.glob("gpunn-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in K.KERNEL_FILES:
        assert f"gpunn/_kernels/{name}.cu" in names, sorted(n for n in names if "_kernels" in n)
    assert not any(n.startswith("kernels/") for n in names), "kernels/ must not become a top-level package"

    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    code = (
        "from gpunn.backend import kernels as K; p = K.kernel_path('softmax_cross_entropy'); "
        "print(p); assert 'sce_block_v1_' in K.kernel_source('softmax_cross_entropy')"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert str(site) in proc.stdout, f"loaded from {proc.stdout.strip()}, not from the installed wheel"
