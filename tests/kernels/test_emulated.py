"""Run the GPU tests (test_cupy_kernels.py, marker ``gpu``) on the CPU, through tests/kernels/emulator.py:
the real kernels/*.cu sources compiled as host C++ and the real CuPy-backend launch code, with a
NumPy-backed stand-in for CuPy. It catches indexing, reduction, barrier and argument-passing bugs before
a GPU session; it says nothing about speed or GPU-only hazards (see the emulator's docstring).

A subprocess, because the stand-in must be the ``cupy`` the whole run imports (the backend probe caches
its answer) and must never leak into this process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the emulator uses ucontext (Linux)")
@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="no C++20 compiler (g++)")
def test_gpu_suite_under_the_kernel_emulator(tmp_path):
    from tests.kernels import emulator

    fake = emulator.install(tmp_path / "fake")
    env = {
        **os.environ,
        "GPUNN_KERNEL_EMULATOR": "1",
        "GPUNN_TEST_BACKEND": "numpy",
        "PYTHONPATH": os.pathsep.join([str(fake), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    # CuPy never warns on 0 / 0 ('mean' over all-ignored rows); NumPy does, and the project turns
    # RuntimeWarnings from gpunn into errors.
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(ROOT / "tests" / "kernels" / "test_cupy_kernels.py"),
        str(ROOT / "tests" / "kernels" / "test_host_syncs.py"),
        str(ROOT / "tests" / "kernels" / "test_capture_emulated.py"),
        "-m",
        "gpu",
        "-q",
        "-p",
        "no:cacheprovider",
        "-W",
        "ignore:invalid value encountered:RuntimeWarning",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=1200)
    tail = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout and " failed" not in proc.stdout, tail


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the emulator uses ucontext (Linux)")
@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="no C++20 compiler (g++)")
def test_op_suites_on_the_emulated_cupy_backend(tmp_path):
    """Every Tensor op, functional op, layer and optimizer test again, with each test's tensors on the cupy
    backend (GPUNN_TEST_BACKEND=cupy): the generic CuPy code paths and the kernel launches of the fused
    primitives, end to end. Dropout is left out: its Numba kernel needs a real driver."""
    from tests.kernels import emulator

    fake = emulator.install(tmp_path / "fake")
    env = {
        **os.environ,
        "GPUNN_KERNEL_EMULATOR": "1",
        "GPUNN_TEST_BACKEND": "cupy",
        "PYTHONPATH": os.pathsep.join([str(fake), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    suites = [
        "tests/test_tensor.py",
        "tests/test_autograd.py",
        "tests/test_inplace_and_versions.py",
        "tests/ops/test_ops_parity.py",
        "tests/test_autograd_function.py",
        "tests/nn/test_functional.py",
        "tests/nn/test_functional_gradcheck.py",
        "tests/nn/test_layers.py",
        "tests/nn/test_cnn_layers.py",
        "tests/optim",
        "tests/kernels/test_cupy_linear_choice.py",
    ]
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        *suites,
        "-q",
        "-p",
        "no:cacheprovider",
        "-k",
        "not dropout",
        "-W",
        "ignore:invalid value encountered:RuntimeWarning",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=1200)
    tail = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout and " failed" not in proc.stdout, tail
