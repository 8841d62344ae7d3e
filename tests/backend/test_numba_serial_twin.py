"""The serial twins of the Numba CPU kernels (numba_cpu.serial_twin, run by ``launch`` on one thread) give
the parallel kernels' results bit for bit: every primitive that runs a kernel, once through the parallel
compile and once through its twin, on random inputs with NaN, infinities and ties, in both dtypes."""

import numpy as np
import pytest

from gpunn.backend.numpy_backend import NumpyBackend

numba_cpu = pytest.importorskip("gpunn.backend.numba_cpu")


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("GPUNN_NUM_THREADS", "1")
    monkeypatch.setenv("GPUNN_NUMBA", "1")


def _both(monkeypatch, fn):
    """(fn() through the parallel kernels, fn() through their serial twins), on one thread each."""
    twins = []
    real = numba_cpu.serial_twin

    def record(kernel):
        twins.append(kernel.py_func.__name__)
        return real(kernel)

    monkeypatch.setattr(numba_cpu, "serial_twin", lambda kernel: kernel)
    parallel = fn()
    monkeypatch.setattr(numba_cpu, "serial_twin", record)
    serial = fn()
    assert twins, "no kernel ran through launch"
    return parallel, serial


def _assert_bits(a, b):
    for x, y in zip(a, b):
        if x is None:
            assert y is None
            continue
        x, y = np.asarray(x).reshape(-1), np.asarray(y).reshape(-1)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x.view(np.uint8), y.view(np.uint8)), "the twin's bits differ"


def _noisy(rng, n, dtype):
    a = rng.standard_normal(n).astype(dtype)
    a[rng.random(n) < 0.01] = np.nan
    a[:3] = (np.inf, -np.inf, 0.0)
    return a


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "hyper",
    [
        {"momentum": 0.9, "weight_decay": 1e-4},
        {"momentum": 0.9},
        {},
        {"momentum": 0.5, "weight_decay": 0.1, "maximize": True},
        {"momentum": 0.9, "first_step": True},
    ],
)
def test_sgd_twin(monkeypatch, rng, dtype, hyper):
    n = 12_345
    p0, g, m0 = _noisy(rng, n, dtype), _noisy(rng, n, dtype), rng.standard_normal(n).astype(dtype)

    def run():
        p, m = p0.copy(), m0.copy()
        NumpyBackend().sgd_step(p, g, m, lr=0.05, **hyper)
        return p, m

    _assert_bits(*_both(monkeypatch, run))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "hyper",
    [
        {},
        {"weight_decay": 0.01},
        {"weight_decay": 0.01, "decoupled_weight_decay": True},
        {"amsgrad": True, "maximize": True},
    ],
)
def test_adam_twin(monkeypatch, rng, dtype, hyper):
    n = 9_001
    p0, g = _noisy(rng, n, dtype), _noisy(rng, n, dtype)
    m0, v0 = rng.standard_normal(n).astype(dtype), rng.random(n).astype(dtype)
    v0[5] = 0  # sqrt(0) / bc2 + eps: the smallest denominator
    vmax0 = rng.random(n).astype(dtype)

    def run():
        p, m, v, vmax = p0.copy(), m0.copy(), v0.copy(), vmax0.copy()
        NumpyBackend().adam_step(p, g, m, v, vmax, step=3, lr=1e-3, **hyper)
        return p, m, v, vmax

    _assert_bits(*_both(monkeypatch, run))


@pytest.mark.parametrize("shape", [(200, 10), (9, 41), (1, 3)])
def test_softmax_cross_entropy_twin(monkeypatch, rng, shape):
    logits = (rng.standard_normal(shape) * 5).astype(np.float32)
    logits[0, 0] = 88.0  # past float32's exp range after no shift: the shift keeps it finite
    target = rng.integers(0, shape[1], shape[0])
    _assert_bits(*_both(monkeypatch, lambda: NumpyBackend().softmax_cross_entropy(logits, target)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pool_twin(monkeypatch, rng, dtype, mode):
    x = rng.standard_normal((3, 4, 11, 9)).astype(dtype)
    x[rng.random(x.shape) < 0.05] = np.nan
    x[1, 2, 3:6] = 0.25  # ties
    dy = rng.standard_normal((3, 4, 6, 5)).astype(dtype)

    def run():
        be = NumpyBackend()
        y, saved = be.pool2d_forward(x, mode, (3, 2), (2, 2), (1, 1), count_include_pad=False)
        return y, be.pool2d_backward(dy, saved)

    _assert_bits(*_both(monkeypatch, run))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_conv_twin(monkeypatch, rng, dtype, act):
    x = rng.standard_normal((2, 3, 9, 7)).astype(dtype)
    w = rng.standard_normal((5, 3, 3, 2)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)

    def run():
        be = NumpyBackend()
        y, saved = be.conv2d_forward(x, w, b, (2, 1), (1, 1), act)
        dy = np.cos(np.arange(y.size, dtype=dtype)).reshape(y.shape)
        return (y, *be.conv2d_backward(dy, saved))

    _assert_bits(*_both(monkeypatch, run))
