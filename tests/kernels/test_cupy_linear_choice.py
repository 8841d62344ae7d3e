"""linear_act on the cupy backend: the fused kernel and cuBLAS (GPUNN_LINEAR_IMPL) give the same results,
and the choice really changes the path. GPU tests (run on a GPU, and on the CPU kernel emulator in CI)."""

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def _run(monkeypatch, impl, x, W, b, dy, act):
    from gpunn.backend import backend_for, kernels

    monkeypatch.setenv("GPUNN_LINEAR_IMPL", impl)
    be = backend_for("cupy")
    launches = []
    entry = kernels.entry
    monkeypatch.setattr(kernels, "entry", lambda *a: launches.append(a[1]) or entry(*a))
    y = be.linear_act(be.asarray(x), be.asarray(W), be.asarray(b), act)
    grads = be.linear_act_backward(be.asarray(dy), be.asarray(x), be.asarray(W), y, act)
    monkeypatch.setattr(kernels, "entry", entry)
    return [be.to_numpy(a) for a in (y, *grads)], launches


@pytest.mark.parametrize("act", ["none", "relu", "tanh"])
def test_kernel_and_cublas_paths_agree(monkeypatch, rng, act):
    x, W, b = rng.standard_normal((37, 29)), rng.standard_normal((11, 29)), rng.standard_normal(11)
    dy = rng.standard_normal((37, 11))
    ours, k_launches = _run(monkeypatch, "kernel", x, W, b, dy, act)
    theirs, c_launches = _run(monkeypatch, "cublas", x, W, b, dy, act)
    assert "linear_act_forward_v1" in k_launches and not c_launches
    for a, r in zip(ours, theirs):
        assert np.linalg.norm(a - r) / np.linalg.norm(r) < 1e-12


def test_auto_picks_by_size_and_bad_values_raise(monkeypatch):
    from gpunn.backend.cupy_backend import linear_impl

    monkeypatch.setenv("GPUNN_LINEAR_IMPL", "auto")
    assert linear_impl(200, 200, 784) == "kernel" and linear_impl(4096, 4096, 4096) == "cublas"
    monkeypatch.setenv("GPUNN_LINEAR_IMPL", "cuda-graphs")
    with pytest.raises(ValueError, match="GPUNN_LINEAR_IMPL"):
        linear_impl(1, 1, 1)
