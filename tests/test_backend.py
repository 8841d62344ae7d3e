"""Backend selection (set_backend, use_backend, gpunn.backend(...), GPUNN_BACKEND), seeding, and the
rule that one op never mixes backends."""

from __future__ import annotations

import contextvars
import os
import subprocess
import sys

import numpy as np
import pytest

import gpunn
from gpunn.backend import NumpyBackend

GPU = gpunn.cupy_available()[0]
no_gpu_only = pytest.mark.skipif(GPU, reason="checks the behaviour on a machine without a usable GPU")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class OtherBackend(NumpyBackend):
    """A second CPU backend, to check that ops refuse to mix backends."""

    name = "other"


@pytest.fixture
def restore_default():
    """set_backend changes a process-wide default: put it back afterwards."""
    saved = gpunn.backend._default
    yield
    gpunn.backend._default = saved


def _outside_use_backend(fn):
    """Run ``fn`` in a fresh context, where no ``use_backend`` block (e.g. conftest's) is active."""
    return contextvars.Context().run(fn)


def _python(code: str, **env):
    full_env = {k: v for k, v in os.environ.items() if k != "GPUNN_BACKEND"}
    full_env.update(env)
    full_env["PYTHONPATH"] = REPO + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=120, cwd=REPO
    )


# ------------------------------------------------------------------------------------------------
# selection
# ------------------------------------------------------------------------------------------------
def test_set_backend_and_get_backend(restore_default):
    be = gpunn.set_backend("numpy")
    assert isinstance(be, NumpyBackend) and be.name == "numpy" and be.xp is np
    assert _outside_use_backend(gpunn.get_backend) is be
    assert gpunn.set_backend(" NumPy ") is be  # names are trimmed and case-insensitive
    assert gpunn.backend.backend_for("numpy") is be  # one instance per name


@no_gpu_only
def test_auto_is_numpy_without_gpu(restore_default):
    assert gpunn.set_backend("auto").name == "numpy"
    assert gpunn.set_backend().name == "numpy"


@no_gpu_only
def test_cupy_without_gpu_raises_with_reason(restore_default):
    before = gpunn.backend._default
    with pytest.raises(RuntimeError, match="cupy") as info:
        gpunn.set_backend("cupy")
    assert gpunn.cupy_available()[1] in str(info.value)  # says why (not importable / no device)
    assert gpunn.cupy_available()[1]
    assert gpunn.backend._default is before  # a failed switch changes nothing
    with pytest.raises(RuntimeError, match="cupy"), gpunn.backend("cupy"):
        pass


def test_unknown_backend_name_raises(restore_default):
    with pytest.raises(ValueError, match="tpu"):
        gpunn.set_backend("tpu")
    with pytest.raises(ValueError):
        gpunn.use_backend("").__enter__()
    with pytest.raises(TypeError):
        gpunn.set_backend(3)


def test_use_backend_context_restores(restore_default):
    other = OtherBackend()

    def body():
        default = gpunn.get_backend()
        with gpunn.use_backend(other) as be:
            assert be is other and gpunn.get_backend() is other
            assert gpunn.zeros(2).backend is other
            with gpunn.backend("numpy") as inner:  # the module itself is callable
                assert inner.name == "numpy" and gpunn.get_backend() is inner
                assert gpunn.randn(3).backend is inner
            assert gpunn.get_backend() is other
        assert gpunn.get_backend() is default
        with pytest.raises(KeyError), gpunn.backend(other):
            raise KeyError("boom")
        assert gpunn.get_backend() is default  # restored after an exception too

    gpunn.set_backend("numpy")
    _outside_use_backend(body)


def test_use_backend_overrides_set_backend(restore_default):
    other = OtherBackend()

    def body():
        with gpunn.backend("numpy"):
            gpunn.set_backend(other)  # changes the default, not the active block
            assert gpunn.get_backend().name == "numpy"
        assert gpunn.get_backend() is other

    _outside_use_backend(body)


# ------------------------------------------------------------------------------------------------
# GPUNN_BACKEND and import hygiene (fresh interpreters)
# ------------------------------------------------------------------------------------------------
def test_env_var_numpy_is_honoured():
    r = _python("import gpunn; print(gpunn.get_backend().name, gpunn.zeros(2).backend.name)", GPUNN_BACKEND="numpy")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["numpy", "numpy"]


def test_env_var_unknown_name_raises():
    r = _python("import gpunn; gpunn.zeros(2)", GPUNN_BACKEND="nope")
    assert r.returncode != 0
    assert "ValueError" in r.stderr and "nope" in r.stderr


@no_gpu_only
def test_env_var_cupy_without_gpu_raises_with_reason():
    code = "import gpunn\ntry:\n    gpunn.zeros(2)\nexcept RuntimeError as e:\n    print('RuntimeError:', e)\n"
    r = _python(code, GPUNN_BACKEND="cupy")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("RuntimeError:") and "cupy" in r.stdout
    assert "not importable" in r.stdout or "GPU" in r.stdout or "devices" in r.stdout


def test_import_gpunn_does_not_import_gpu_stacks():
    code = (
        "import sys, gpunn\n"
        "gpunn.zeros(2) + 1\n"
        "print(sorted(m for m in ('cupy', 'cupyx', 'numba', 'torch') if m in sys.modules))\n"
    )
    r = _python(code, GPUNN_BACKEND="numpy")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------------
# seeding
# ------------------------------------------------------------------------------------------------
def test_manual_seed_reproducible_and_seed_dependent():
    def draw():
        return (gpunn.randn(4, 5).numpy().copy(), gpunn.rand(7).numpy().copy(), gpunn.randint(0, 100, 6).numpy().copy())

    gpunn.manual_seed(123)
    a = draw()
    gpunn.manual_seed(123)
    b = draw()
    gpunn.manual_seed(124)
    c = draw()
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(x, y)
        assert not np.array_equal(x, z)
    assert not np.array_equal(a[0], gpunn.randn(4, 5).numpy())  # the stream advances


def test_manual_seed_applies_to_backends_created_later():
    registry = gpunn.backend._instances
    saved = dict(registry)
    try:
        gpunn.manual_seed(7)
        draws = []
        for _ in range(2):
            registry.pop("numpy", None)  # the next lookup builds a fresh instance
            fresh = gpunn.backend.backend_for("numpy")
            assert fresh is not saved["numpy"]
            draws.append(gpunn.rand(50, backend=fresh).numpy())
        np.testing.assert_array_equal(draws[0], draws[1])
    finally:
        registry.clear()
        registry.update(saved)


def test_manual_seed_rejects_non_int():
    with pytest.raises(TypeError):
        gpunn.manual_seed(1.5)
    with pytest.raises(TypeError):
        gpunn.manual_seed(True)


def test_rng_state_round_trip():
    be = gpunn.get_backend()
    state = be.get_rng_state()
    a = gpunn.randn(5).numpy().copy()
    be.set_rng_state(state)
    np.testing.assert_array_equal(a, gpunn.randn(5).numpy())


# ------------------------------------------------------------------------------------------------
# mixing backends in one op
# ------------------------------------------------------------------------------------------------
MIXED_OPS = {
    "add": lambda a, b: a + b,
    "radd": lambda a, b: b + a,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: a**b,
    "matmul": lambda a, b: a @ b,
    "lt": lambda a, b: a < b,
    "eq": lambda a, b: a == b,
    "cat": lambda a, b: gpunn.cat([a, b]),
    "stack": lambda a, b: gpunn.stack([a, b]),
    "where": lambda a, b: gpunn.where(a > 0, a, b),
}


@pytest.mark.parametrize("op", list(MIXED_OPS))
def test_mixing_backends_raises(rng, op):
    other = OtherBackend()
    a = gpunn.tensor(rng.standard_normal((3, 3)))
    b = gpunn.Tensor._wrap(rng.standard_normal((3, 3)), other)
    assert b.backend is other and a.backend is not other
    with pytest.raises(RuntimeError) as info:
        MIXED_OPS[op](a, b)
    assert f"'{a.backend.name}'" in str(info.value) and "'other'" in str(info.value)


def test_copy_between_backends_copies(rng):
    """copy_ is the one op that crosses devices, as in PyTorch (cpu_t.copy_(cuda_t))."""
    other = OtherBackend()
    a = gpunn.tensor(rng.standard_normal((3, 3)))
    src = rng.standard_normal((3, 3))
    a.copy_(gpunn.Tensor._wrap(src.copy(), other))
    assert a.backend is not other
    np.testing.assert_array_equal(a.numpy(), src)


def test_moving_between_backends_is_differentiable(rng):
    """As PyTorch's .to(device): the copy is a non-leaf and the gradient comes back to the source."""
    other = OtherBackend()
    x0 = rng.standard_normal((3, 4))
    x = gpunn.tensor(x0, requires_grad=True)
    y = x.to(other)
    assert y.backend is other and y.requires_grad and not y.is_leaf and y.grad_fn == "ToCopyBackward0"
    (y * y).sum().backward()
    assert x.grad.backend is x.backend
    np.testing.assert_allclose(x.grad.numpy(), 2 * x0)
    with gpunn.no_grad():
        assert not x.to(other).requires_grad


def test_same_backend_ops_on_a_second_backend_work(rng):
    other = OtherBackend()
    x = rng.standard_normal((3, 3))
    b = gpunn.Tensor._wrap(x.copy(), other)
    b.requires_grad_()
    out = (b * b + 1.0).sum()
    assert out.backend is other
    out.backward()
    assert b.grad.backend is other
    np.testing.assert_allclose(b.grad.numpy(), 2 * x)
