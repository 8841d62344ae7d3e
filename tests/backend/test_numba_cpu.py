"""The Numba CPU kernels (gpunn.backend.numba_cpu) behind the numpy backend's pool and conv primitives:
bit for bit equal to the reference, for both dtypes, odd geometries and 1 or 2 threads; Numba imported
lazily; and the NumPy path, announced once, when Numba is unusable."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpunn.backend import numpy_backend, reference
from gpunn.backend.numpy_backend import NumpyBackend

pytest.importorskip("numba")
ROOT = Path(__file__).resolve().parents[2]

POOL_GEOMETRIES = [
    ((2, 2), (2, 2), (0, 0)),
    ((3, 3), (2, 2), (1, 1)),
    ((3, 2), (1, 2), (1, 0)),
    ((2, 3), (3, 1), (1, 1)),
    ((5, 4), (2, 3), (2, 2)),
]
CONV_GEOMETRIES = [((1, 1), (0, 0)), ((1, 1), (1, 1)), ((2, 1), (1, 0)), ((2, 3), (1, 2)), ((3, 3), (0, 0))]


@pytest.fixture(params=["1", "2"], ids=["1-thread", "2-threads"], autouse=True)
def threads(request, monkeypatch):
    monkeypatch.setenv("GPUNN_NUM_THREADS", request.param)
    monkeypatch.setenv("GPUNN_NUMBA", "1")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry", POOL_GEOMETRIES)
@pytest.mark.parametrize("mode,count_include_pad", [("max", True), ("avg", True), ("avg", False)])
def test_pool2d_kernels_equal_the_reference(rng, dtype, geometry, mode, count_include_pad):
    x = rng.standard_normal((3, 5, 11, 9)).astype(dtype)
    x[rng.random(x.shape) < 0.05] = np.nan
    x[0, 1] = -np.inf
    x[2, 2, 4:7] = 0.5  # ties
    be = NumpyBackend()
    y, saved = be.pool2d_forward(x, mode, *geometry, count_include_pad=count_include_pad)
    assert saved[0] == "numba-" + mode  # the kernel ran
    ry, rsaved = reference.pool2d_forward(np, x, mode, *geometry, count_include_pad=count_include_pad)
    assert y.dtype == ry.dtype and y.shape == ry.shape
    np.testing.assert_array_equal(y, ry)  # NaN where the reference has NaN, every other value equal
    dy = rng.standard_normal(y.shape).astype(dtype)
    dy[0, 0, 0, 0] = np.inf  # an infinite gradient stays in its window's winner (max) / cells (avg)
    dx, rdx = be.pool2d_backward(dy, saved), reference.pool2d_backward(np, dy, rsaved)
    assert dx.dtype == rdx.dtype and np.isfinite(rdx).sum() > 0.5 * rdx.size
    np.testing.assert_array_equal(dx, rdx)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride,padding", CONV_GEOMETRIES)
@pytest.mark.parametrize("bias,act", [(True, "none"), (False, "none"), (True, "relu"), (False, "tanh")])
def test_conv2d_kernels_equal_the_reference(rng, dtype, stride, padding, bias, act):
    """im2col, the layout pass and col2im reproduce the reference's values exactly; the GEMMs are the same
    BLAS calls on the same matrices (the stride-1 dx GEMM runs on the reference's padded grid there: where
    BLAS blocks that differently the last bit may differ, hence the 4-ulp bound)."""
    x = rng.standard_normal((4, 3, 13, 10)).astype(dtype)
    w = rng.standard_normal((5, 3, 3, 4)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype) if bias else None
    be = NumpyBackend()
    if act == "relu":
        x[0, 0, :3] = np.nan  # NaN stays NaN through the fused ReLU
    y, saved = be.conv2d_forward(x, w, b, stride, padding, act)
    assert saved[0] == "numba"
    ry, rsaved = reference.conv2d_forward(np, x, w, b, stride, padding, act)
    np.testing.assert_array_equal(y, ry)
    dy = rng.standard_normal(y.shape).astype(dtype)
    got = be.conv2d_backward(dy, saved, need_db=bias)
    ref = reference.conv2d_backward(np, dy, rsaved, need_db=bias)
    np.testing.assert_array_equal(got[1], ref[1])  # dW
    if bias:
        np.testing.assert_array_equal(got[2], ref[2])
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=4 * eps * np.nanmax(np.abs(ref[0])))


def test_conv2d_kernels_skip_what_they_do_not_need(rng):
    x, w = rng.standard_normal((2, 3, 6, 5)).astype(np.float32), rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    be = NumpyBackend()
    y, saved = be.conv2d_forward(x, w, None, (1, 1), (0, 0), need_grad=False)
    assert saved is None and y.shape == (2, 4, 5, 4)
    y, saved = be.conv2d_forward(x, w, None, (1, 1), (0, 0))
    dx, dW, db = be.conv2d_backward(np.ones_like(y), saved, need_dx=False, need_db=False)
    assert dx is None and db is None and dW.shape == w.shape


def _python(code: str, **env):
    full = dict(os.environ, PYTHONPATH=str(ROOT), **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=300)


def test_numba_is_imported_on_first_use_only():
    code = (
        "import sys, gpunn\n"
        "import gpunn.nn.functional as F\n"
        "x = gpunn.randn(2, 3, 8, 8, requires_grad=True)\n"
        "print('numba' in sys.modules)\n"
        "F.max_pool2d(x, 2).sum().backward()\n"
        "print('numba' in sys.modules)\n"
    )
    r = _python(code, GPUNN_BACKEND="numpy", GPUNN_NUMBA="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "True"]
    r = _python(code, GPUNN_BACKEND="numpy", GPUNN_NUMBA="0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False"]


def test_without_numba_the_numpy_path_runs_and_says_so_once():
    code = (
        "import sys\n"
        "sys.modules['numba'] = None  # as if Numba were not installed\n"
        "import warnings, numpy as np, gpunn\n"
        "import gpunn.nn.functional as F\n"
        "from gpunn import optim\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    x = gpunn.tensor(np.arange(48.0).reshape(1, 3, 4, 4), requires_grad=True)\n"
        "    F.max_pool2d(x, 2).sum().backward()\n"
        "    opt = optim.Adam([x], lr=0.1)\n"
        "    opt.step(); opt.step()\n"
        "print(len([w for w in caught if 'Numba' in str(w.message)]), x.grad.numpy().sum())\n"
    )
    r = _python(code, GPUNN_BACKEND="numpy", GPUNN_NUMBA="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "12.0"]


def test_a_kernel_that_fails_to_compile_falls_back(rng, monkeypatch):
    from numba.core.errors import TypingError

    nk = numpy_backend.numba_kernels()

    def broken(*args):
        raise TypingError("simulated compile failure")

    monkeypatch.setattr(nk, "adam_step", broken)
    monkeypatch.setattr(numpy_backend, "_numba_module", nk)
    p, g, m, v = (rng.standard_normal(1000).astype(np.float32) for _ in range(4))
    v = np.abs(v)
    ref = [a.copy() for a in (p, g, m, v)]
    with pytest.warns(UserWarning, match="Numba CPU kernels are unavailable"):
        NumpyBackend().adam_step(p, g, m, v, step=1, lr=0.01)
    reference.adam_step(np, *ref, step=1, lr=0.01)
    assert all(np.array_equal(a, b) for a, b in zip((p, g, m, v), ref))
    assert numpy_backend.numba_kernels() is None  # off for the rest of the process...
    monkeypatch.setattr(numpy_backend, "_numba_module", None)  # ...which this test restores


def test_kernels_called_from_several_threads_at_once():
    """Numba's workqueue layer aborts the process on concurrent launches: gpunn serialises its own."""
    code = (
        "import threading, numpy as np, gpunn\n"
        "from gpunn.backend.numpy_backend import NumpyBackend\n"
        "be = NumpyBackend()\n"
        "x = np.random.default_rng(0).standard_normal((64, 16, 28, 28)).astype(np.float32)\n"
        "ref = be.pool2d_forward(x, 'max', (2, 2), (2, 2))[0]\n"
        "ok = []\n"
        "def work():\n"
        "    for _ in range(20):\n"
        "        y, s = be.pool2d_forward(x, 'max', (2, 2), (2, 2))\n"
        "        be.pool2d_backward(np.ones_like(y), s)\n"
        "        ok.append(np.array_equal(y, ref))\n"
        "ts = [threading.Thread(target=work) for _ in range(4)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "import numba; print(len(ok), all(ok), numba.threading_layer())\n"
    )
    r = _python(code, GPUNN_BACKEND="numpy", GPUNN_NUMBA="1", GPUNN_NUM_THREADS="2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["80", "True", "workqueue"]


def test_loading_the_kernels_leaves_scipy_linalg_alone():
    """numba_cpu skips Numba's scipy.linalg probe (cold start) and leaves sys.modules as it found it, so
    scipy.linalg still imports afterwards."""
    pytest.importorskip("scipy")
    code = (
        "import sys, numpy as np, gpunn\n"
        "from gpunn.backend.numpy_backend import NumpyBackend\n"
        "p, g, m, v = (np.ones(10, np.float32) for _ in range(4))\n"
        "NumpyBackend().adam_step(p, g, m, v, step=1, lr=0.1)\n"
        "print('numba' in sys.modules, 'scipy.linalg' in sys.modules, 'scipy.linalg.cython_blas' in sys.modules)\n"
        "import scipy.linalg.cython_blas\n"
        "print(bool(p[0] < 1))\n"
    )
    r = _python(code, GPUNN_BACKEND="numpy", GPUNN_NUMBA="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "False", "False", "True"]
