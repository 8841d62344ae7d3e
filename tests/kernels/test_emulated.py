"""Run the GPU tests (test_cupy_kernels.py, marker ``gpu``) on the CPU, through tests/kernels/emulator.py:
the real kernels/*.cu sources compiled as host C++ and the real CuPy-backend launch code, with a
NumPy-backed stand-in for CuPy. It catches indexing, reduction, barrier and argument-passing bugs before
a GPU session; it says nothing about speed or GPU-only hazards (see the emulator's docstring).

A subprocess, because the stand-in must be the ``cupy`` the whole run imports (the backend probe caches
its answer) and must never leak into this process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kernels import emulator

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@emulator.available
def test_gpu_suite_under_the_kernel_emulator(tmp_path):
    files = ("test_cupy_kernels.py", "test_host_syncs.py", "test_capture_emulated.py")
    emulator.run_pytest(tmp_path, "numpy", [str(ROOT / "tests" / "kernels" / f) for f in files] + ["-m", "gpu"])


@pytest.mark.slow
@emulator.available
def test_op_suites_on_the_emulated_cupy_backend(tmp_path):
    """Every Tensor op, functional op, layer and optimizer test again, with each test's tensors on the cupy
    backend (GPUNN_TEST_BACKEND=cupy): the generic CuPy code paths and the kernel launches of the fused
    primitives, end to end (dropout too: its kernel is kernels/dropout.cu)."""
    suites = [
        "tests/test_tensor.py",
        "tests/test_autograd.py",
        "tests/test_inplace_and_versions.py",
        "tests/ops/test_ops_parity.py",
        "tests/ops/test_nonfinite_grads.py",
        "tests/test_autograd_function.py",
        "tests/nn/test_functional.py",
        "tests/nn/test_functional_gradcheck.py",
        "tests/nn/test_layers.py",
        "tests/nn/test_cnn_layers.py",
        "tests/nn/test_functional_more.py",
        "tests/nn/test_normalization.py",
        "tests/nn/test_sparse.py",
        "tests/nn/test_rnn.py",
        "tests/nn/test_transformer.py",
        "tests/nn/test_attention.py",
        "tests/test_distributions.py",
        "tests/optim",
        "tests/amp",
        "tests/kernels/test_cupy_linear_choice.py",
    ]
    emulator.run_pytest(tmp_path, "cupy", suites)
