"""Tensor ops against PyTorch (CPU): forward values, output dtypes and gradients, float32 and float64.

Each parity case runs the same function on gpunn and on torch (``fn(L, *xs)`` with ``L`` the library
module). The gpunn result in dtype D is compared with a float64 torch computation on the same
D-rounded inputs (relative error below 2e-5 for float32, 1e-10 for float64); the output dtype with
torch run in D; the gradients after backward with a random (not all-ones) upstream gradient.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

import gpunn
from tests.helpers import assert_close, parity, randn, to_torch

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.torch

DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]
BIG = (9, 7, 41)


def _np_dtype(torch_dtype) -> np.dtype:
    return np.dtype(str(torch_dtype).removeprefix("torch."))


def _make(rng, shape, kind):
    """'n': normal values kept away from 0; 'p': positive in [0.5, 2] (logs, roots, divisors)."""
    if kind == "p":
        return rng.uniform(0.5, 2.0, size=shape)
    return randn(rng, *shape, dtype=np.float64, low_abs=0.05)


def _parity(rng, fn, arrays, dtype, torch_fn=None, grad=True):
    return parity(rng, fn, arrays, dtype, torch_fn, grad)


def _case(fn, *shapes, kinds=None, torch_fn=None, id=None):  # noqa: A002
    kinds = kinds or "n" * len(shapes)
    return pytest.param(fn, shapes, kinds, torch_fn, id=id)


def _run_cases(rng, fn, shapes, kinds, torch_fn, dtype):
    arrays = [_make(rng, s, k) for s, k in zip(shapes, kinds)]
    _parity(rng, fn, arrays, dtype, torch_fn)


# ------------------------------------------------------------------------------------------------
# arithmetic with broadcasting
# ------------------------------------------------------------------------------------------------
BROADCAST_PAIRS = [
    (BIG, (7, 1)),
    (BIG, (1,)),
    (BIG, (41,)),
    ((7, 1), BIG),
    ((9, 1, 41), (7, 1)),
    ((), BIG),
]
BINARY = {
    "add": (lambda L, a, b: a + b, "nn"),
    "sub": (lambda L, a, b: a - b, "nn"),
    "mul": (lambda L, a, b: a * b, "nn"),
    "div": (lambda L, a, b: a / b, "np"),
    "rdiv_tensor": (lambda L, a, b: b / a, "pn"),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pair", BROADCAST_PAIRS, ids=lambda p: f"{p[0]}x{p[1]}")
@pytest.mark.parametrize("op", list(BINARY))
def test_binary_broadcast(rng, op, pair, dtype):
    fn, kinds = BINARY[op]
    _run_cases(rng, fn, pair, kinds, None, dtype)


SCALAR_CASES = [
    _case(lambda L, x: x + 2.5, BIG, id="x+2.5"),
    _case(lambda L, x: 2.5 + x, BIG, id="2.5+x"),
    _case(lambda L, x: x + 3, BIG, id="x+3int"),
    _case(lambda L, x: x - 1.3, BIG, id="x-1.3"),
    _case(lambda L, x: 1.3 - x, BIG, id="1.3-x"),
    _case(lambda L, x: x * -0.7, BIG, id="x*-0.7"),
    _case(lambda L, x: -0.7 * x, BIG, id="-0.7*x"),
    _case(lambda L, x: 3 * x, BIG, id="3int*x"),
    _case(lambda L, x: x / 1.9, BIG, id="x/1.9"),
    _case(lambda L, x: x / 2, BIG, id="x/2int"),
    _case(lambda L, x: 1.9 / x, BIG, id="1.9/x"),
    _case(lambda L, x: -x, BIG, id="neg"),
    _case(lambda L, x: +x * 1.5, BIG, id="pos"),
    _case(lambda L, x: (x * x - x) / (x + 3.0), BIG, id="x_used_three_times"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn,shapes,kinds,torch_fn", SCALAR_CASES)
def test_scalar_arithmetic(rng, fn, shapes, kinds, torch_fn, dtype):
    _run_cases(rng, fn, shapes, kinds, torch_fn, dtype)


POW_CASES = [
    _case(lambda L, x: x**2, BIG, id="x**2"),
    _case(lambda L, x: x**3, BIG, id="x**3"),
    _case(lambda L, x: x**2.5, BIG, kinds="p", id="x**2.5"),
    _case(lambda L, x: x**0.5, BIG, kinds="p", id="x**0.5"),
    _case(lambda L, x: x**-1.5, BIG, kinds="p", id="x**-1.5"),
    _case(lambda L, x: x**-2, BIG, id="x**-2"),
    _case(lambda L, a, b: a**b, BIG, BIG, kinds="pn", id="tensor**tensor"),
    _case(lambda L, a, b: a**b, BIG, (41,), kinds="pn", id="tensor**tensor_bcast"),
    _case(lambda L, a, b: a**b, (7, 1), BIG, kinds="pn", id="tensor_bcast**tensor"),
    _case(lambda L, x: 2.0**x, BIG, id="2.0**x"),
    _case(lambda L, x: 0.5**x, BIG, id="0.5**x"),
    _case(lambda L, x: 3**x, BIG, id="3int**x"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn,shapes,kinds,torch_fn", POW_CASES)
def test_pow(rng, fn, shapes, kinds, torch_fn, dtype):
    _run_cases(rng, fn, shapes, kinds, torch_fn, dtype)


MATMUL_SHAPES = [
    ((13,), (13,)),
    ((13,), (13, 6)),
    ((9, 13), (13,)),
    ((9, 13), (13, 6)),
    ((3, 1, 4, 5), (2, 5, 6)),
    ((4, 5), (3, 5, 6)),
    ((5,), (2, 5, 6)),
    ((2, 4, 5), (5,)),
    ((2, 3, 4, 5), (2, 3, 5, 2)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=lambda s: f"{s[0]}@{s[1]}")
def test_matmul(rng, shapes, dtype):
    _run_cases(rng, lambda L, a, b: a @ b, shapes, "nn", None, dtype)


def test_matmul_function_and_errors(rng):
    a, b = gpunn.tensor(randn(rng, 3, 4)), gpunn.tensor(randn(rng, 4, 2))
    assert_close(gpunn.matmul(a, b), a.numpy().astype(np.float64) @ b.numpy().astype(np.float64))
    with pytest.raises((ValueError, RuntimeError), match="matmul"):
        a @ gpunn.tensor(randn(rng, 3, 2))
    with pytest.raises(RuntimeError, match="matmul"):
        a @ gpunn.tensor(2.0)


# ------------------------------------------------------------------------------------------------
# reductions
# ------------------------------------------------------------------------------------------------
REDUCTION_CASES = [
    _case(lambda L, x: x.sum(), BIG, id="sum"),
    _case(lambda L, x: x.sum(dim=1), BIG, id="sum1"),
    _case(lambda L, x: x.sum(dim=-1, keepdim=True), BIG, id="sum-1k"),
    _case(lambda L, x: x.sum(dim=(0, 2)), BIG, id="sum02"),
    _case(lambda L, x: x.sum(dim=(0, -1), keepdim=True), BIG, id="sum0-1k"),
    _case(lambda L, x: L.sum(x, 0), BIG, id="L.sum"),
    _case(lambda L, x: x.mean(), BIG, id="mean"),
    _case(lambda L, x: x.mean(dim=2), BIG, id="mean2"),
    _case(lambda L, x: x.mean(dim=0, keepdim=True), BIG, id="mean0k"),
    _case(lambda L, x: x.mean(dim=(1, 2)), BIG, id="mean12"),
    _case(lambda L, x: x.mean(dim=(-1, 0), keepdim=True), BIG, id="mean-10k"),
    _case(lambda L, x: L.mean(x, 1), BIG, id="L.mean"),
    _case(lambda L, x: x.max(), BIG, id="max"),
    _case(lambda L, x: x.min(), BIG, id="min"),
    _case(lambda L, x: x.max(dim=1).values, BIG, id="max1"),
    _case(lambda L, x: x.max(dim=-1, keepdim=True).values, BIG, id="max-1k"),
    _case(lambda L, x: x.min(dim=0).values, BIG, id="min0"),
    _case(lambda L, x: x.min(dim=2, keepdim=True)[0], BIG, id="min2k"),
    _case(lambda L, x: L.max(x, 0).values + L.min(x, 0).values, BIG, id="L.max+L.min"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn,shapes,kinds,torch_fn", REDUCTION_CASES)
def test_reductions(rng, fn, shapes, kinds, torch_fn, dtype):
    _run_cases(rng, fn, shapes, kinds, torch_fn, dtype)


@pytest.mark.parametrize("name", ["max", "min"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_full_max_min_gradient_splits_ties_evenly(rng, name, dtype):
    x = randn(rng, 5, 6, dtype=np.float64)
    extreme = (x.max() + 1.0) if name == "max" else (x.min() - 1.0)
    x[0, 0] = x[1, 2] = x[3, 4] = extreme
    out = _parity(rng, lambda L, t: getattr(t, name)() * 1.5, [x], dtype)
    assert out.item() == pytest.approx(1.5 * extreme, rel=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_min_dim_indices_and_arg(rng, dtype):
    x = randn(rng, *BIG, dtype=dtype)
    g, t = gpunn.tensor(x), to_torch(x)
    for dim in (0, 1, 2, -1):
        for keepdim in (False, True):
            for name in ("max", "min"):
                r, rt = getattr(g, name)(dim, keepdim), getattr(t, name)(dim=dim, keepdim=keepdim)
                np.testing.assert_array_equal(r.indices.numpy(), rt.indices.numpy())
                assert r.indices.dtype == np.int64
                np.testing.assert_array_equal(r.values.numpy(), rt.values.numpy())
            for name in ("argmax", "argmin"):
                r, rt = getattr(g, name)(dim=dim, keepdim=keepdim), getattr(t, name)(dim=dim, keepdim=keepdim)
                assert r.dtype == np.int64 and r.shape == tuple(rt.shape)
                np.testing.assert_array_equal(r.numpy(), rt.numpy())
    assert g.argmax().item() == t.argmax().item()
    assert g.argmin().item() == t.argmin().item()
    assert gpunn.argmax(g, 1).shape == (9, 41)


def test_reduction_dim_out_of_range(rng):
    x = gpunn.tensor(randn(rng, 3, 4))
    with pytest.raises(IndexError):
        x.sum(dim=2)
    with pytest.raises(IndexError):
        x.max(dim=-3)


def test_mean_of_int_tensor_raises():
    with pytest.raises(RuntimeError, match="floating"):
        gpunn.tensor([1, 2, 3]).mean()


# ------------------------------------------------------------------------------------------------
# shape ops
# ------------------------------------------------------------------------------------------------
SHAPE_CASES = [
    _case(lambda L, x: x.reshape(9, -1), BIG, id="reshape"),
    _case(lambda L, x: x.reshape((63, 41)), BIG, id="reshape_tuple"),
    _case(lambda L, x: x.view(-1), BIG, id="view"),
    _case(lambda L, x: x.flatten(), BIG, id="flatten"),
    _case(lambda L, x: x.flatten(1), BIG, id="flatten1"),
    _case(lambda L, x: x.flatten(0, 1), BIG, id="flatten01"),
    _case(lambda L, x: x.flatten(-2, -1), BIG, id="flatten-2-1"),
    _case(lambda L, x: L.flatten(x, 1, 2), BIG, id="L.flatten"),
    _case(lambda L, x: x.transpose(0, 2), BIG, id="transpose02"),
    _case(lambda L, x: x.transpose(-1, -2), BIG, id="transpose-1-2"),
    _case(lambda L, x: L.transpose(x, 0, 1), BIG, id="L.transpose"),
    _case(lambda L, x: x.permute(2, 0, 1), BIG, id="permute"),
    _case(lambda L, x: x.permute((1, -1, 0)), BIG, id="permute_tuple_neg"),
    _case(lambda L, x: x.T, (7, 41), id="T2d"),
    _case(lambda L, x: x.t(), (7, 41), id="t"),
    _case(lambda L, x: x.T, BIG, torch_fn=lambda L, x: x.permute(2, 1, 0), id="T3d"),
    _case(lambda L, x: x.unsqueeze(0), BIG, id="unsqueeze0"),
    _case(lambda L, x: x.unsqueeze(-1), BIG, id="unsqueeze-1"),
    _case(lambda L, x: x.unsqueeze(2), BIG, id="unsqueeze2"),
    _case(lambda L, x: x.squeeze(), (9, 1, 41, 1), id="squeeze"),
    _case(lambda L, x: x.squeeze(1), (9, 1, 41, 1), id="squeeze1"),
    _case(lambda L, x: x.squeeze(-1), (9, 1, 41, 1), id="squeeze-1"),
    _case(lambda L, x: x.squeeze(0) * 2.0, (9, 1, 41, 1), id="squeeze_noop"),
    _case(lambda L, x: x.expand(9, 7, 41), (7, 1), id="expand"),
    _case(lambda L, x: x.expand(-1, 5), (7, 1), id="expand-1"),
    _case(lambda L, x: x.expand(4, 3, 41), (1, 41), id="expand_newdim"),
    _case(lambda L, x: x.contiguous() * 2.0, BIG, id="contiguous"),
    _case(lambda L, x: x.clone(), BIG, id="clone"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn,shapes,kinds,torch_fn", SHAPE_CASES)
def test_shape_ops(rng, fn, shapes, kinds, torch_fn, dtype):
    _run_cases(rng, fn, shapes, kinds, torch_fn, dtype)


def test_shape_op_errors(rng):
    x = gpunn.tensor(randn(rng, 3, 4))
    with pytest.raises(RuntimeError, match="reshape"):
        x.reshape(5, 3)
    with pytest.raises(RuntimeError, match="permutation"):
        x.permute(0, 0)
    with pytest.raises(RuntimeError):
        gpunn.tensor(randn(rng, 2, 3, 4)).t()


# ------------------------------------------------------------------------------------------------
# indexing
# ------------------------------------------------------------------------------------------------

INDEX_CASES = [
    _case(lambda L, x: x[2], BIG, id="int"),
    _case(lambda L, x: x[-1, 3], BIG, id="neg_int"),
    _case(lambda L, x: x[1:5], BIG, id="slice"),
    _case(lambda L, x: x[:, 2:6, ::3], BIG, id="slices_step"),
    _case(lambda L, x: x[..., 3], BIG, id="ellipsis"),
    _case(lambda L, x: x[None, 1, :, -3:], BIG, id="none"),
    _case(lambda L, x: x[x > 0.3], BIG, id="bool_mask_full"),
    _case(lambda L, x: x[x[:, :, 0] > 0], BIG, id="bool_mask_leading"),
    _case(lambda L, x: x[[0, 2, 2, 5, 0]], BIG, id="int_list_repeats"),
    _case(lambda L, x: x[:, [1, 1, 3, -1]], BIG, id="slice_then_int_list"),
    _case(lambda L, x: x[[0, 0, 1], [2, 2, 3]], BIG, id="paired_int_lists"),
    _case(lambda L, x: x[L.tensor([4, 4, -1])], BIG, id="int_tensor_index"),
    _case(lambda L, x: x[L.tensor([[1, 1], [0, 1]])], (3, 5), id="2d_int_tensor_index"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn,shapes,kinds,torch_fn", INDEX_CASES)
def test_indexing(rng, fn, shapes, kinds, torch_fn, dtype):
    _run_cases(rng, fn, shapes, kinds, torch_fn, dtype)


def test_indexing_repeated_indices_accumulate():
    x = gpunn.tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x[[0, 0, 0, 2]] * gpunn.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [6.0, 0.0, 4.0])


def test_index_out_of_range(rng):
    with pytest.raises(IndexError):
        gpunn.tensor(randn(rng, 3, 4))[3]


# ------------------------------------------------------------------------------------------------
# elementwise math
# ------------------------------------------------------------------------------------------------
UNARY_CASES = [
    _case(lambda L, x: x.exp(), BIG, id="exp"),
    _case(lambda L, x: L.exp(x * 0.5), BIG, id="L.exp"),
    _case(lambda L, x: x.log(), BIG, kinds="p", id="log"),
    _case(lambda L, x: L.log(x), BIG, kinds="p", id="L.log"),
    _case(lambda L, x: x.log2(), BIG, kinds="p", id="log2"),
    _case(lambda L, x: x.sqrt(), BIG, kinds="p", id="sqrt"),
    _case(lambda L, x: L.sqrt(x), BIG, kinds="p", id="L.sqrt"),
    _case(lambda L, x: x.abs(), BIG, id="abs"),
    _case(lambda L, x: abs(x), BIG, id="builtin_abs"),
    _case(lambda L, x: x.clamp(min=-0.3), BIG, id="clamp_min"),
    _case(lambda L, x: x.clamp(max=0.4), BIG, id="clamp_max"),
    _case(lambda L, x: x.clamp(-0.3, 0.4), BIG, id="clamp_both"),
    _case(lambda L, x: L.clamp(x, min=-0.5, max=0.2), BIG, id="L.clamp"),
    _case(lambda L, x: x.sigmoid(), BIG, id="sigmoid"),
    _case(lambda L, x: L.sigmoid(x * 12.0), BIG, id="sigmoid_saturating"),
    _case(lambda L, x: x.tanh(), BIG, id="tanh"),
    _case(lambda L, x: L.tanh(x * 4.0), BIG, id="L.tanh"),
    _case(lambda L, x: x.relu(), BIG, id="relu"),
    _case(lambda L, x: L.relu(x), BIG, id="L.relu"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn,shapes,kinds,torch_fn", UNARY_CASES)
def test_unary(rng, fn, shapes, kinds, torch_fn, dtype):
    _run_cases(rng, fn, shapes, kinds, torch_fn, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_clamp_gradient_at_boundaries(dtype):
    # torch passes the gradient where min <= x <= max (boundaries included)
    x = np.array([-1.0, -0.5, 0.0, 0.25, 0.5, 1.0])
    g = gpunn.tensor(x.astype(dtype), requires_grad=True)
    g.clamp(-0.5, 0.5).sum().backward()
    t = to_torch(x.astype(dtype), requires_grad=True)
    t.clamp(-0.5, 0.5).sum().backward()
    np.testing.assert_array_equal(g.grad.numpy(), t.grad.numpy())


def test_clamp_needs_a_bound():
    with pytest.raises(RuntimeError, match="min.*max"):
        gpunn.ones(3).clamp()


# ------------------------------------------------------------------------------------------------
# cat / stack / where / dtype casts
# ------------------------------------------------------------------------------------------------
JOIN_CASES = [
    _case(lambda L, a, b: L.cat([a, b], dim=1), BIG, (9, 3, 41), id="cat1"),
    _case(lambda L, a, b, c: L.cat([a, b, c], dim=-1), (4, 5), (4, 1), (4, 7), id="cat-1_three"),
    _case(lambda L, a, b: L.cat((a, b)), (3, 5), (6, 5), id="cat0_tuple"),
    _case(lambda L, a, b: L.cat([a, a * b, b], dim=0), (3, 5), (3, 5), id="cat_shared_input"),
    _case(lambda L, a, b: L.stack([a, b]), BIG, BIG, id="stack0"),
    _case(lambda L, a, b: L.stack([a, b], dim=1), (7, 41), (7, 41), id="stack1"),
    _case(lambda L, a, b: L.stack([a, b, a], dim=-1), (7, 41), (7, 41), id="stack-1"),
    _case(lambda L, a, b: L.where(a > 0, a, b), BIG, BIG, id="where"),
    _case(lambda L, a, b: L.where(a > 0.2, a, b), BIG, (41,), id="where_bcast"),
    _case(lambda L, a, b: L.where(b > 0, a, b), (7, 1), BIG, id="where_bcast_input"),
    _case(lambda L, a: L.where(a < 0.1, a, 2.5), BIG, id="where_scalar_other"),
    _case(lambda L, a: L.where(a < 0.1, -1.5, a), BIG, id="where_scalar_input"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn,shapes,kinds,torch_fn", JOIN_CASES)
def test_cat_stack_where(rng, fn, shapes, kinds, torch_fn, dtype):
    _run_cases(rng, fn, shapes, kinds, torch_fn, dtype)


CAST_CASES = [
    _case(lambda L, x: x.double() * 3.0, BIG, id="double"),
    _case(lambda L, x: x.float() * 3.0, BIG, id="float"),
    _case(
        lambda L, x: x.astype(np.float64) * x.astype(np.float32),
        BIG,
        torch_fn=lambda L, x: x.to(torch.float64) * x.to(torch.float32),
        id="astype",
    ),
    _case(lambda L, a, b: a.double() + b, BIG, (41,), id="promote_to_f64"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn,shapes,kinds,torch_fn", CAST_CASES)
def test_casts(rng, fn, shapes, kinds, torch_fn, dtype):
    _run_cases(rng, fn, shapes, kinds, torch_fn, dtype)


def test_cast_to_int_cuts_the_graph(rng):
    x = gpunn.tensor(randn(rng, 4) * 10, requires_grad=True)
    i = x.long()
    assert i.dtype == np.int64 and not i.requires_grad
    np.testing.assert_array_equal(i.numpy(), to_torch(x.detach().numpy()).long().numpy())
    assert x.int().dtype == np.int32 and x.bool().dtype == np.bool_
    assert x.to(gpunn.float64).dtype == np.float64 and x.to(dtype=np.float64).requires_grad


# ------------------------------------------------------------------------------------------------
# comparisons
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["eq", "ne", "lt", "le", "gt", "ge"])
def test_comparisons(rng, op):
    import operator

    f = getattr(operator, op)
    a = np.round(randn(rng, 9, 7, 41, dtype=np.float64), 1)  # coarse values: many exact ties
    b = np.round(randn(rng, 41, dtype=np.float64), 1)
    ga, gb, ta, tb = gpunn.tensor(a), gpunn.tensor(b), to_torch(a), to_torch(b)
    for lhs, rhs, tl, tr in [(ga, gb, ta, tb), (gb, ga, tb, ta), (ga, 0.3, ta, 0.3), (ga, 0, ta, 0)]:
        out, ref = f(lhs, rhs), f(tl, tr)
        assert out.dtype == np.bool_ and not out.requires_grad
        np.testing.assert_array_equal(out.numpy(), ref.numpy())
    assert f(ga, gb).numpy().any() and not f(ga, gb).numpy().all()


def test_comparison_of_tensor_requiring_grad_has_no_graph(rng):
    x = gpunn.tensor(randn(rng, 5), requires_grad=True)
    m = x > 0
    assert not m.requires_grad and m.grad_fn is None
    assert (~m).numpy().tolist() == (x.detach().numpy() <= 0).tolist()
    assert ((x > 0) & (x < 1)).dtype == np.bool_ and ((x > 0) | (x < -1)).dtype == np.bool_


# ------------------------------------------------------------------------------------------------
# a composite graph with shared subexpressions (value and grads vs torch)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_composite_mlp_graph(rng, dtype):
    def mlp(L, x, w1, b1, w2, b2):
        h = (x @ w1 + b1).tanh()
        z = h @ w2 + b2
        s = z.sigmoid()
        return ((s - 0.5) ** 2).mean() + (h * h).sum() * 0.01 + z.relu().max()

    shapes = [(11, 6), (6, 9), (9,), (9, 3), (3,)]
    _parity(rng, mlp, [_make(rng, s, "n") for s in shapes], dtype)


# ------------------------------------------------------------------------------------------------
# autograd engine behaviour
# ------------------------------------------------------------------------------------------------
def test_grads_accumulate_over_two_backward_calls(rng):
    a = randn(rng, 4, 3, dtype=np.float64)
    x = gpunn.tensor(a, requires_grad=True)
    (x * x).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * a + 3.0, rtol=1e-12)


def test_retain_graph_allows_a_second_backward(rng):
    a = randn(rng, 5, dtype=np.float64)
    x = gpunn.tensor(a, requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * (np.exp(a) * (1 + a)), rtol=1e-12)


def test_second_backward_without_retain_graph_raises(rng):
    x = gpunn.tensor(randn(rng, 5), requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_backward_on_non_scalar_needs_gradient(rng):
    x = gpunn.tensor(randn(rng, 3), requires_grad=True)
    with pytest.raises(RuntimeError, match="scalar"):
        (x * 2).backward()


def test_backward_gradient_argument(rng):
    a, w = randn(rng, 3, 2, dtype=np.float64), randn(rng, 3, 2, dtype=np.float64)
    x = gpunn.tensor(a, requires_grad=True)
    (x * x).backward(w)  # a NumPy array works as well as a Tensor
    np.testing.assert_allclose(x.grad.numpy(), 2 * a * w, rtol=1e-12)
    with pytest.raises(RuntimeError, match="shape"):
        (x * x).backward(gpunn.ones(2, 3, dtype=np.float64))
    with pytest.raises(RuntimeError, match="shape"):
        (x * x).backward(gpunn.ones(6, dtype=np.float64))


def test_backward_without_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        gpunn.ones(3).sum().backward()


def test_wrong_gradient_shape_from_an_op_raises(rng):
    x = gpunn.tensor(randn(rng, 3, 2), requires_grad=True)
    bad = x._result(x._data * 2, (x,), lambda g: (g.sum(axis=0),), "BadShapeBackward")
    with pytest.raises(RuntimeError, match="BadShapeBackward"):
        bad.sum().backward()


def test_diamond_graph_and_retain_grad(rng):
    a = randn(rng, 4, dtype=np.float64)
    x = gpunn.tensor(a, requires_grad=True)
    h = x * 2.0
    h.retain_grad()
    y = (h * h + h.exp()).sum()
    y.backward()
    np.testing.assert_allclose(h.grad.numpy(), 2 * 2 * a + np.exp(2 * a), rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), 2 * h.grad.numpy(), rtol=1e-12)
    assert x.is_leaf and not h.is_leaf


def test_inputs_not_requiring_grad_get_no_grad(rng):
    x = gpunn.tensor(randn(rng, 3), requires_grad=True)
    c = gpunn.tensor(randn(rng, 3))
    (x * c).sum().backward()
    assert c.grad is None and x.grad is not None


def test_no_grad_context_records_nothing(rng):
    x = gpunn.tensor(randn(rng, 3), requires_grad=True)
    with gpunn.no_grad():
        assert not gpunn.is_grad_enabled()
        y = (x * 2).exp().sum()
        with gpunn.enable_grad():
            z = x * 2
    assert gpunn.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None and y.is_leaf
    assert z.requires_grad
    with pytest.raises(RuntimeError):
        y.backward()


def test_no_grad_restores_mode_after_exception():
    with pytest.raises(ZeroDivisionError), gpunn.no_grad():
        1 / 0  # noqa: B018
    assert gpunn.is_grad_enabled()


def test_no_grad_as_decorator(rng):
    x = gpunn.tensor(randn(rng, 3), requires_grad=True)

    @gpunn.no_grad()
    def f(t):
        return t * 2

    @gpunn.no_grad
    def g(t):
        return t * 2

    assert not f(x).requires_grad and not g(x).requires_grad
    assert g.__name__ == "g"
    assert gpunn.is_grad_enabled() and (x * 2).requires_grad
    with gpunn.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert (x * 2).requires_grad


def test_detach(rng):
    a = randn(rng, 3, dtype=np.float64)
    x = gpunn.tensor(a, requires_grad=True)
    d = x.detach()
    assert not d.requires_grad and d.is_leaf and d._data is x._data
    (d * x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), a)


def test_requires_grad_on_int_tensor_raises():
    with pytest.raises(RuntimeError, match="floating"):
        gpunn.tensor([1, 2, 3], requires_grad=True)
    with pytest.raises(RuntimeError, match="floating"):
        gpunn.arange(3).requires_grad_()


@pytest.mark.parametrize(
    "op",
    [
        lambda t: t.zero_(),
        lambda t: t.fill_(1.0),
        lambda t: t.copy_(gpunn.ones(3)),
        lambda t: t.uniform_(),
        lambda t: t.normal_(),
        lambda t: t.__setitem__(0, 5.0),
    ],
    ids=["zero_", "fill_", "copy_", "uniform_", "normal_", "setitem"],
)
def test_in_place_on_tensor_requiring_grad(rng, op):
    x = gpunn.tensor(randn(rng, 3), requires_grad=True)
    before = x.detach().numpy().copy()
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad .*in-place operation"):
        op(x)
    np.testing.assert_array_equal(x.detach().numpy(), before)
    with gpunn.no_grad():
        op(x)  # allowed (e.g. optimizer updates)
    assert not np.array_equal(x.detach().numpy(), before)


def test_item_tolist_numpy(rng):
    a = randn(rng, 2, 3, dtype=np.float64)
    x = gpunn.tensor(a)
    assert x.tolist() == a.tolist()
    assert x[1, 2].item() == a[1, 2] and isinstance(x[1, 2].item(), float)
    assert isinstance(gpunn.tensor([7]).item(), int)
    assert float(x[0, 1]) == a[0, 1] and int(gpunn.tensor(3)) == 3
    with pytest.raises((ValueError, RuntimeError)):
        x.item()
    n = x.numpy()
    assert isinstance(n, np.ndarray)
    if x.backend.name == "numpy":
        assert np.shares_memory(n, x._data)  # a view, not a copy
    y = gpunn.tensor(a, requires_grad=True)
    with pytest.raises(RuntimeError, match="detach"):
        y.numpy()
    np.testing.assert_array_equal(y.detach().numpy(), a)
    assert np.asarray(x).dtype == np.float64


def test_dtype_inference_matches_torch():
    exprs = [
        lambda L: L.tensor([1.5, 2.0]),
        lambda L: L.tensor([1, 2]),
        lambda L: L.tensor(3.0),
        lambda L: L.tensor(True),
        lambda L: L.tensor([1, 2.5]),
        lambda L: L.tensor(np.array([1.0, 2.0])),
        lambda L: L.tensor(np.array([1.0], dtype=np.float32)),
        lambda L: L.tensor(np.float64(2.0)),
        lambda L: L.tensor([1, 2]) * 0.5,
        lambda L: L.tensor([1, 2]) + 3,
        lambda L: L.tensor([1, 2]) / L.tensor([2, 4]),
        lambda L: L.tensor([1, 2]) / 2,
        lambda L: L.tensor([1, 2]) ** 0.5,
        lambda L: L.tensor([1, 2]) ** 2,
        lambda L: 2 ** L.tensor([1, 2]),
        lambda L: 2.5 ** L.tensor([1, 2]),
        lambda L: L.tensor([1.5]) ** L.tensor([2]),
        lambda L: L.where(L.tensor([True, False]), L.tensor([1, 2]), 0.5),
        lambda L: L.where(L.tensor([True, False]), L.tensor([1, 2]), 3),
        lambda L: L.tensor([1.0]) * 2,
        lambda L: L.tensor([1.0]) + L.tensor([1.0], dtype=L.float64),
        lambda L: L.tensor([1, 2]) + L.tensor([1.0, 2.0]),
        lambda L: L.tensor([1.0], dtype=L.float64) * 2.5,
        lambda L: L.tensor([1, 2]).sum(),
        lambda L: L.tensor([True, False]).sum(),
        lambda L: L.arange(5),
        lambda L: L.arange(0.0, 1.0, 0.25),
        lambda L: L.zeros(2),
    ]
    for i, e in enumerate(exprs):
        assert e(gpunn).dtype == _np_dtype(e(torch).dtype), f"expression {i}"


def test_tensor_constructor_infers_float32():
    assert gpunn.Tensor([1.5, 2.0]).dtype == np.float32
    assert gpunn.Tensor([1, 2]).dtype == np.float32  # torch.Tensor is always float32
    assert gpunn.Tensor(np.ones(2)).dtype == np.float32
    assert gpunn.Tensor(2, 3).shape == (2, 3)


def test_numpy_array_operands(rng):
    if gpunn.get_backend().name != "numpy":
        pytest.skip("NumPy arrays mix only with numpy-backend tensors")
    a = randn(rng, 3, 4, dtype=np.float64)
    b = randn(rng, 4, dtype=np.float64)
    x = gpunn.tensor(a, requires_grad=True)
    for out, ref in [(x + b, a + b), (b + x, b + a), (x * b, a * b), (b - x, b - a), (b / x, b / a)]:
        assert isinstance(out, gpunn.Tensor) and out.requires_grad
        np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-12)


def test_very_deep_graph_backward():
    x = gpunn.tensor(1.5, dtype=np.float64, requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)  # a recursive graph walk would need ~10,000 frames
    try:
        y.backward(retain_graph=True)
        assert x.grad.item() == pytest.approx(1.0001**10_000, rel=1e-9)
        assert math.isclose(y.item(), 1.5 * 1.0001**10_000, rel_tol=1e-9)
        del y  # dropping a 10,000-deep retained graph must not overflow the stack either
    finally:
        sys.setrecursionlimit(limit)


def test_repr_and_properties(rng):
    x = gpunn.tensor(randn(rng, 2, 3), requires_grad=True)
    assert "requires_grad=True" in repr(x)
    assert "grad_fn=<MulBackward0>" in repr(x * 2)
    assert "float64" in repr(gpunn.ones(2, dtype=np.float64))
    assert x.ndim == x.dim() == 2 and x.size() == (2, 3) and x.size(1) == 3 and x.numel() == 6
    assert len(x) == 2 and x.backend is gpunn.get_backend()
    assert x.device.type == ("cpu" if x.backend.name == "numpy" else "cuda")
    with pytest.raises(TypeError):
        len(gpunn.tensor(1.0))
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(gpunn.ones(2))


def test_pow_gradient_at_zero_exponent_is_zero_like_torch():
    torch = pytest.importorskip("torch")
    x = gpunn.tensor([0.0, 1.0, 2.0], requires_grad=True)
    (x**0).sum().backward()
    assert np.array_equal(x.grad.numpy(), [0.0, 0.0, 0.0])
    x = gpunn.tensor([0.0, 1.0, 2.0], requires_grad=True)
    e = gpunn.tensor([0.0, 0.0, 1.0], requires_grad=True)
    (x**e).sum().backward()
    tx = torch.tensor([0.0, 1.0, 2.0], requires_grad=True)
    te = torch.tensor([0.0, 0.0, 1.0], requires_grad=True)
    (tx**te).sum().backward()
    assert np.allclose(x.grad.numpy(), tx.grad.numpy()) and np.allclose(e.grad.numpy(), te.grad.numpy())


def test_full_max_with_nan_sends_the_gradient_to_the_nan():
    x = gpunn.tensor([1.0, float("nan"), 3.0], requires_grad=True)
    x.max().backward()
    assert np.array_equal(x.grad.numpy(), [0.0, 1.0, 0.0])


@pytest.mark.parametrize(
    "call",
    [
        lambda: gpunn.randn(3, 1).squeeze(5),
        lambda: gpunn.randn(3, 1).unsqueeze(7),
        lambda: gpunn.randn(2, 3, 4).flatten(0, 9),
        lambda: gpunn.cat([gpunn.randn(2), gpunn.randn(2)], dim=3),
    ],
)
def test_out_of_range_dims_raise_index_error(call):
    with pytest.raises(IndexError, match="out of range"):
        call()


def test_expand_rejects_minus_one_in_new_dims_and_bad_shapes():
    with pytest.raises(RuntimeError, match="-1 is not allowed"):
        gpunn.randn(3).expand(-1, 3)
    with pytest.raises(RuntimeError, match="can't expand"):
        gpunn.randn(3).expand(2, 4)


def test_where_numpy_and_pytorch_differ_pytorch_wins():
    """sign(nan) is 0, a backwards slice and a mixed-dtype matmul raise: PyTorch's answers, not NumPy's."""
    vals = [float("nan"), -0.0, 0.0, -2.5, 3.0, float("-inf")]
    for dt, tdt in ((gpunn.float32, torch.float32), (gpunn.float64, torch.float64)):
        got = gpunn.tensor(vals, dtype=dt).sign().numpy()
        np.testing.assert_array_equal(got, torch.tensor(vals, dtype=tdt).sign().numpy())
    assert gpunn.tensor(float("nan")).sign().item() == torch.tensor(float("nan")).sign().item() == 0.0
    x, tx = gpunn.arange(12).reshape(3, 4), torch.arange(12).reshape(3, 4)
    for index in ((slice(None, None, -1),), (slice(0, 2), slice(None, None, -2))):
        with pytest.raises(ValueError):
            tx[index]
        with pytest.raises(ValueError, match="step must be greater than zero"):
            x[index]
        with pytest.raises(ValueError, match="step must be greater than zero"):
            x[index] = 0
    np.testing.assert_array_equal(x[::2, 1::3].numpy(), tx[::2, 1::3].numpy())
    pairs = [
        (gpunn.int64, gpunn.float32, torch.int64, torch.float32),
        (gpunn.float32, gpunn.float64, torch.float32, torch.float64),
    ]
    for a, b, ta, tb in pairs:
        with pytest.raises(RuntimeError):
            torch.ones(2, 3, dtype=ta) @ torch.ones(3, dtype=tb)
        with pytest.raises(RuntimeError, match="same dtype"):
            gpunn.ones(2, 3, dtype=a) @ gpunn.ones(3, dtype=b)
