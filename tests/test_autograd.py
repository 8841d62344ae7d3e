"""``gpunn.gradcheck``: passes for every differentiable Tensor op (float64), fails on wrong gradients."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
from gpunn.autograd import GradcheckError, gradcheck
from tests.helpers import randn

SMALL = (3, 4, 5)


def _inputs(rng, shapes, kinds):
    """'n': normal values kept away from 0 (and from kinks); 'p': positive in [0.5, 2]."""
    out = []
    for shape, kind in zip(shapes, kinds):
        a = rng.uniform(0.5, 2.0, size=shape) if kind == "p" else randn(rng, *shape, dtype=np.float64)
        out.append(gpunn.tensor(a, requires_grad=True))
    return tuple(out)


def _case(fn, *shapes, kinds=None, id=None):  # noqa: A002
    return pytest.param(fn, shapes, kinds or "n" * len(shapes), id=id)


OPS = [
    # arithmetic, broadcasting both ways
    _case(lambda a, b: a + b, SMALL, (4, 1), id="add"),
    _case(lambda a, b: a - b, (4, 1), SMALL, id="sub"),
    _case(lambda a, b: a * b, SMALL, (5,), id="mul"),
    _case(lambda a, b: a / b, SMALL, (1,), kinds="np", id="div"),
    _case(lambda a, b: b / a, (3, 1, 5), (4, 1), kinds="pn", id="div_both_bcast"),
    _case(lambda x: 2.5 + x - 1.5 * x / 0.7, SMALL, id="scalars"),
    _case(lambda x: 1.9 / x - x, SMALL, kinds="p", id="rdiv"),
    _case(lambda x: -x, SMALL, id="neg"),
    _case(lambda x: x**3, SMALL, id="pow_int"),
    _case(lambda x: x**2.5, SMALL, kinds="p", id="pow_float"),
    _case(lambda x: x**-1.5, SMALL, kinds="p", id="pow_negative"),
    _case(lambda a, b: a**b, SMALL, (5,), kinds="pn", id="pow_tensor"),
    _case(lambda x: 2.0**x, SMALL, id="rpow"),
    # matmul
    _case(lambda a, b: a @ b, (6,), (6,), id="matmul_1d_1d"),
    _case(lambda a, b: a @ b, (4,), (4, 3), id="matmul_1d_2d"),
    _case(lambda a, b: a @ b, (3, 4), (4,), id="matmul_2d_1d"),
    _case(lambda a, b: a @ b, (3, 1, 2, 4), (2, 4, 3), id="matmul_batched_bcast"),
    _case(lambda a, b: a @ b, (4,), (2, 4, 3), id="matmul_1d_3d"),
    # reductions
    _case(lambda x: x.sum(), SMALL, id="sum"),
    _case(lambda x: x.sum(dim=(0, 2), keepdim=True), SMALL, id="sum_tuple_keepdim"),
    _case(lambda x: x.sum(dim=-1), SMALL, id="sum_neg_dim"),
    _case(lambda x: x.mean(), SMALL, id="mean"),
    _case(lambda x: x.mean(dim=1), SMALL, id="mean_dim"),
    _case(lambda x: x.max(), SMALL, id="max"),
    _case(lambda x: x.min(), SMALL, id="min"),
    _case(lambda x: x.max(dim=1).values, SMALL, id="max_dim"),
    _case(lambda x: x.min(dim=-1, keepdim=True).values, SMALL, id="min_dim_keepdim"),
    # shapes
    _case(lambda x: x.reshape(4, -1), SMALL, id="reshape"),
    _case(lambda x: x.view(-1) * 1.0, SMALL, id="view"),
    _case(lambda x: x.flatten(1), SMALL, id="flatten"),
    _case(lambda x: x.transpose(0, 2), SMALL, id="transpose"),
    _case(lambda x: x.permute(1, 2, 0), SMALL, id="permute"),
    _case(lambda x: x.T, (3, 5), id="T"),
    _case(lambda x: x.unsqueeze(1), SMALL, id="unsqueeze"),
    _case(lambda x: x.squeeze(1), (3, 1, 5), id="squeeze"),
    _case(lambda x: x.expand(3, 4, 5), (4, 1), id="expand"),
    # indexing
    _case(lambda x: x[1:, ::2, -1], SMALL, id="slices"),
    _case(lambda x: x.flip(0)[:, 2], SMALL, id="flip_then_index"),
    _case(lambda x: x[x > 0.2], SMALL, id="bool_mask"),
    _case(lambda x: x[[0, 2, 2, 0]], SMALL, id="int_array_repeats"),
    _case(lambda x: x[:, [1, 1, 3], [0, 4, 4]], SMALL, id="paired_int_arrays"),
    # elementwise
    _case(lambda x: x.exp(), SMALL, id="exp"),
    _case(lambda x: x.log(), SMALL, kinds="p", id="log"),
    _case(lambda x: x.log2(), SMALL, kinds="p", id="log2"),
    _case(lambda x: x.sqrt(), SMALL, kinds="p", id="sqrt"),
    _case(lambda x: x.abs(), SMALL, id="abs"),
    _case(lambda x: x.clamp(min=-0.3), SMALL, id="clamp_min"),
    _case(lambda x: x.clamp(max=0.4), SMALL, id="clamp_max"),
    _case(lambda x: x.clamp(-0.3, 0.4), SMALL, id="clamp_both"),
    _case(lambda x: x.sigmoid(), SMALL, id="sigmoid"),
    _case(lambda x: x.tanh(), SMALL, id="tanh"),
    _case(lambda x: x.relu(), SMALL, id="relu"),
    # joins
    _case(lambda a, b: gpunn.cat([a, b, a], dim=1), (3, 2), (3, 4), id="cat"),
    _case(lambda a, b: gpunn.stack([a, b], dim=-1), (3, 4), (3, 4), id="stack"),
    _case(lambda a, b: gpunn.where(a > 0, a, b), SMALL, (5,), id="where"),
    _case(lambda x: x.clone() * x.double(), SMALL, id="clone_double"),
]


@pytest.mark.parametrize("fn,shapes,kinds", OPS)
def test_gradcheck_passes_for_op(rng, fn, shapes, kinds):
    assert gradcheck(fn, _inputs(rng, shapes, kinds))


@pytest.mark.parametrize("fast_mode", [None, True, False])
def test_gradcheck_composite_mlp_with_shared_subexpressions(rng, fast_mode):
    def mlp(x, w1, b1, w2, b2):
        h = (x @ w1 + b1).tanh()  # h feeds three branches below
        z = h @ w2 + b2
        loss = ((z.sigmoid() - 0.5) ** 2).mean() + (h * h).sum() * 0.1
        return loss + (z * h.sum(dim=1, keepdim=True)).relu().sum(), z

    args = _inputs(rng, [(5, 4), (4, 6), (6,), (6, 3), (3,)], "nnnnn")
    assert gradcheck(mlp, args, fast_mode=fast_mode)


def test_gradcheck_passes_through_non_tensor_args_and_constant_tensors(rng):
    x, c = _inputs(rng, [(3, 4), (4,)], "nn")
    c.requires_grad_(False)

    def fn(t, scale, const, mode):
        assert mode == "mul" and isinstance(scale, float)
        return t * const * scale

    assert gradcheck(fn, (x, 2.5, c, "mul"))
    assert gradcheck(lambda t: (t * 3.0).sum(), x)  # a bare Tensor is accepted too


def test_gradcheck_multiple_outputs_and_unused_input(rng):
    x, y, unused = _inputs(rng, [(4, 3), (3,), (2,)], "nnn")

    def fn(a, b, u):
        return (a * b).sum(dim=1), a.exp(), a.argmax(dim=1), gpunn.ones(2, dtype=np.float64)

    assert gradcheck(fn, (x, y, unused))


def test_gradcheck_leaves_callers_grad_alone(rng):
    (x,) = _inputs(rng, [(3, 2)], "n")
    assert gradcheck(lambda t: t.sigmoid(), x)
    assert x.grad is None


def test_gradcheck_inside_no_grad(rng):
    (x,) = _inputs(rng, [(3, 2)], "n")
    with gpunn.no_grad():
        assert gradcheck(lambda t: t.tanh() * t, x)
        with pytest.raises(GradcheckError):
            gradcheck(_wrong_op, x)
        assert not gpunn.is_grad_enabled()


def test_gradcheck_is_exposed_at_top_level():
    assert gpunn.gradcheck is gradcheck
    assert issubclass(GradcheckError, RuntimeError)


# ------------------------------------------------------------------------------------------------
# failures
# ------------------------------------------------------------------------------------------------
def _wrong_op(x, factor=3.0):
    """y = 2 x, whose backward claims dy/dx = 2 * factor."""
    return x._result(x._data * 2.0, (x,), lambda g: (g * 2.0 * factor,), "Wrong")


def _wrong_at(x, idx, delta=1e-2):
    """y = x ** 2 with a backward that is wrong at one element ``idx`` of x only."""

    def backward(g):
        gx = g * 2.0 * x._data
        gx[idx] += delta
        return (gx,)

    return x._result(x._data**2, (x,), backward, "WrongAtOneElement")


@pytest.mark.parametrize("fast_mode", [None, True, False])
@pytest.mark.parametrize("shape", [(3, 4), (4, 5, 3)])
def test_gradcheck_fails_on_wrong_backward(rng, shape, fast_mode):
    (x,) = _inputs(rng, [shape], "n")
    with pytest.raises(GradcheckError, match=r"input 0 at element \(") as info:
        gradcheck(_wrong_op, x, fast_mode=fast_mode)
    msg = str(info.value)
    assert "numerical" in msg and "analytic" in msg and "tolerance" in msg
    assert gradcheck(_wrong_op, x, raise_exception=False, fast_mode=fast_mode) is False
    assert gradcheck(lambda t: _wrong_op(t, factor=1.0), x, fast_mode=fast_mode)  # the right one passes


@pytest.mark.parametrize("fast_mode", [None, True, False])
@pytest.mark.parametrize("shape,idx", [((3, 4), (1, 2)), ((4, 5, 3), (2, 3, 1)), ((7,), (6,))])
def test_gradcheck_names_the_wrong_element(rng, shape, idx, fast_mode):
    x, other = _inputs(rng, [(2,), shape], "nn")

    def fn(a, b):  # the wrong gradient is in input 1 only
        return a.sum() * 0.5 + _wrong_at(b, idx) * 1.5

    with pytest.raises(GradcheckError) as info:
        gradcheck(fn, (x, other), fast_mode=fast_mode)
    elem = "(" + ", ".join(map(str, idx)) + (",)" if len(idx) == 1 else ")")
    assert f"input 1 at element {elem}" in str(info.value)
    assert "1 of " in str(info.value)  # exactly one element differs


def test_gradcheck_catches_a_small_error_in_a_large_output(rng):
    # 60 output elements: projected mode; a 1e-3 error in one gradient entry must still be caught
    (x,) = _inputs(rng, [SMALL], "n")
    with pytest.raises(GradcheckError, match=r"element \(2, 0, 4\)"):
        gradcheck(lambda t: _wrong_at(t, (2, 0, 4), delta=1e-3), x)


def test_gradcheck_wrong_second_output(rng):
    (x,) = _inputs(rng, [(3, 4)], "n")
    with pytest.raises(GradcheckError, match="output 1"):
        gradcheck(lambda t: (t * 2.0, _wrong_op(t)), x)


def test_gradcheck_nondeterministic_backward(rng):
    (x,) = _inputs(rng, [(3,)], "n")
    noise = np.random.default_rng(5)

    def jittery(t):
        jitter = lambda g: t._backend.asarray(noise.normal(0, 1e-9, g.shape))  # noqa: E731
        return t._result(t._data * 2.0, (t,), lambda g: (g * 2.0 + jitter(g),), "Jitter")

    with pytest.raises(GradcheckError, match="deterministic"):
        gradcheck(jittery, x)
    assert gradcheck(jittery, x, nondet_tol=1e-6)


def test_gradcheck_rejects_float32(rng):
    x = gpunn.tensor(randn(rng, 3), requires_grad=True)
    assert x.dtype == np.float32
    with pytest.raises(ValueError, match="float64"):
        gradcheck(lambda t: t * 2, x)


def test_gradcheck_needs_an_input_requiring_grad(rng):
    with pytest.raises(ValueError, match="requires_grad"):
        gradcheck(lambda t: t * 2, gpunn.tensor(randn(rng, 3, dtype=np.float64)))


def test_gradcheck_output_must_be_tensor(rng):
    (x,) = _inputs(rng, [(3,)], "n")
    with pytest.raises(TypeError, match="output 0"):
        gradcheck(lambda t: t.sum().item(), x)
