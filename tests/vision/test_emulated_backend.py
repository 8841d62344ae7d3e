"""The loader, the samplers and the vision transforms again with every test's tensors on the cupy backend
(GPUNN_TEST_BACKEND=cupy), through the CPU stand-in for CuPy (tests/kernels/emulator.py): the batch
transforms and the loader's device-side gathers run on ``cupy`` arrays there. A subprocess, as in
tests/kernels/test_emulated.py, so the stand-in never leaks into this process."""

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
def test_data_and_vision_suites_on_the_emulated_cupy_backend(tmp_path):
    from tests.kernels import emulator

    fake = emulator.install(tmp_path / "fake")
    env = {
        **os.environ,
        "GPUNN_KERNEL_EMULATOR": "1",
        "GPUNN_TEST_BACKEND": "cupy",
        "PYTHONPATH": os.pathsep.join([str(fake), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    suites = ["tests/vision/test_transforms.py", "tests/vision/test_datasets.py", "tests/utils"]
    # the CLI test trains a model (its Numba dropout kernel needs a real driver)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        *suites,
        "-q",
        "-p",
        "no:cacheprovider",
        "-k",
        "not cli",
        "-W",
        "ignore:invalid value encountered:RuntimeWarning",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    tail = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout and " failed" not in proc.stdout, tail
