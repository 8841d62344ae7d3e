"""The ops PyTorch users reach for (issue 9, item 6), each written once as ``fn(L, *tensors)`` and run under
gpunn and PyTorch by ``tests.helpers.parity``: values, output dtypes and gradients, float32 and float64,
odd shapes. Plus the names, aliases and errors around them."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
from tests.helpers import parity, randn, torch_or_skip

torch = torch_or_skip()

DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]
S = (9, 7, 5)


def _arr(rng, shape, kind="n"):
    if kind == "p":  # positive, for logs and roots
        return rng.uniform(0.5, 2.0, size=shape)
    if kind == "small":  # inside (-1, 1), for asin / acos / atanh
        return rng.uniform(-0.9, 0.9, size=shape)
    if kind == "u":  # distinct values (no ties for sort/max)
        return rng.permutation(int(np.prod(shape))).reshape(shape) / 7.0 - 3.0
    return randn(rng, *shape, dtype=np.float64, low_abs=0.05)


CASES = {
    # reductions with dim / keepdim and their numpy aliases
    "max_dim": (lambda L, x: x.max(1), [(S, "u")]),
    "min_dim_keepdim": (lambda L, x: x.min(dim=-1, keepdim=True), [(S, "u")]),
    "max_fn_dim": (lambda L, x: L.max(x, 0), [(S, "u")]),
    "max_two_tensors": (lambda L, x, y: L.max(x, y), [(S, "u"), (S, "n")]),
    "maximum": (lambda L, x, y: L.maximum(x, y), [(S, "u"), ((7, 5), "n")]),
    "minimum": (lambda L, x, y: x.minimum(y), [(S, "u"), (S, "n")]),
    "sum_axis_keepdims": (lambda L, x: x.sum(axis=1, keepdims=True), [(S, "n")]),
    "mean_axis_tuple": (lambda L, x: x.mean(axis=(0, 2)), [(S, "n")]),
    "pow_scalar": (lambda L, x: x.pow(3), [(S, "n")]),
    "pow_tensor": (lambda L, x, y: L.pow(x, y), [(S, "p"), (S, "n")]),
    "norm": (lambda L, x: x.norm(), [(S, "n")]),
    "norm_dim": (lambda L, x: x.norm(dim=1), [(S, "n")]),
    "norm_p1": (lambda L, x: x.norm(p=1, dim=2), [(S, "n")]),
    "std": (lambda L, x: x.std(), [(S, "n")]),
    "std_dim": (lambda L, x: x.std(dim=0, keepdim=True), [(S, "n")]),
    "var_unbiased_false": (lambda L, x: x.var(1, unbiased=False), [(S, "n")]),
    "prod": (lambda L, x: x.prod(), [((3, 4), "p")]),
    "prod_dim": (lambda L, x: x.prod(1), [(S, "n")]),
    "cumsum": (lambda L, x: x.cumsum(dim=1), [(S, "n")]),
    "cumsum_fn": (lambda L, x: L.cumsum(x, -1), [(S, "n")]),
    "sort": (lambda L, x: x.sort(dim=1), [(S, "u")]),
    "sort_descending": (lambda L, x: L.sort(x, descending=True), [(S, "u")]),
    "topk": (lambda L, x: x.topk(3, dim=1), [(S, "u")]),
    "topk_smallest": (lambda L, x: x.topk(2, largest=False), [(S, "u")]),
    "amax": (lambda L, x: x.amax(dim=(0, 2)), [(S, "u")]),
    "logsumexp": (lambda L, x: x.logsumexp(dim=1), [(S, "n")]),
    # shape helpers
    "view_as": (lambda L, x, y: x.view_as(y), [((5, 7), "n"), ((35,), "n")]),
    "reshape_as": (lambda L, x, y: x.reshape_as(y), [(S, "n"), ((63, 5), "n")]),
    "expand_as": (lambda L, x, y: x.expand_as(y) * y, [((7, 1), "n"), (S, "n")]),
    "clone": (lambda L, x: x.clone() * 2, [(S, "n")]),
    "masked_fill": (lambda L, x: x.masked_fill(x > 0.5, -1.0), [(S, "n")]),
    "tril": (lambda L, x: x.tril(), [(S, "n")]),
    "tril_fn_offset": (lambda L, x: L.tril(x, -2) + L.tril(x, 9), [((5, 9), "n")]),
    "triu": (lambda L, x: x.triu(1), [(S, "n")]),
    "triu_fn_neg": (lambda L, x: L.triu(x, diagonal=-1), [((4, 9, 7), "n")]),
    "causal_mask": (
        lambda L, x: x.masked_fill(L.tril(L.ones(7, 5)) == 0, float("-inf")).softmax(-1),
        [(S, "n")],
    ),
    "chunk": (lambda L, x: x.chunk(3, dim=1), [(S, "n")]),
    "index_select": (lambda L, x: x.index_select(1, L.tensor([4, 0, 4, 6])), [(S, "n")]),
    "index_select_fn": (lambda L, x: L.index_select(x, -1, L.tensor([2], dtype=L.int32)), [(S, "n")]),
    "masked_select": (lambda L, x: x.masked_select(x > 0.3), [(S, "n")]),
    "masked_select_broadcast": (lambda L, x, m: L.masked_select(x, m > 0), [((7, 5), "n"), ((9, 1, 5), "n")]),
    "repeat_interleave": (lambda L, x: x.repeat_interleave(3), [((4, 3), "n")]),
    "repeat_interleave_dim": (lambda L, x: x.repeat_interleave(L.tensor([2, 0, 1, 3, 1]), dim=-1), [(S, "n")]),
    "roll": (lambda L, x: x.roll(2, 1) + L.roll(x, (-1, 3), (0, 2)), [(S, "n")]),
    "roll_flat": (lambda L, x: L.roll(x, 5), [(S, "n")]),
    "diag_of_vector": (lambda L, x: L.diag(x) + L.diag(x, 0), [((6,), "n")]),
    "diag_offsets": (lambda L, x: L.cat([x.diag(2), x.diag(-3), L.diag(x)]), [((7, 9), "n")]),
    "diag_vector_offset": (lambda L, x: L.diag(x, -2), [((4,), "n")]),
    "outer": (lambda L, a, b: L.outer(a, b) + a.outer(b), [((7,), "n"), ((5,), "n")]),
    "einsum_bmm": (lambda L, a, b: L.einsum("bij,bjk->bik", a, b), [((3, 4, 7), "n"), ((3, 7, 5), "n")]),
    "einsum_attention": (
        lambda L, q, k: L.einsum("bhqd, bhkd -> bhqk", q, k).softmax(-1),
        [((2, 3, 5, 4), "n"), ((2, 3, 6, 4), "n")],
    ),
    "einsum_implicit_trace_sum": (
        lambda L, a, b, c: L.einsum("ij,jk", a, b) + L.einsum("ij->", a) + L.einsum("i,j->ij", [c, c]).sum(),
        [((4, 3), "n"), ((3, 4), "n"), ((2,), "n")],
    ),
    "hyperbolic_and_inverse_trig": (
        lambda L, x, u: x.sinh() + L.cosh(x) + u.asin() + L.acos(u) + x.atan() + L.asinh(x) + u.atanh(),
        [(S, "n"), (S, "small")],
    ),
    "acosh_exp2_frac_erf": (lambda L, p, x: p.add(1).acosh() + L.exp2(x) + x.frac() + L.erf(x), [(S, "p"), (S, "n")]),
    "atan2": (lambda L, y, x: L.atan2(y, x) + y.arctan2(x), [(S, "n"), ((7, 5), "n")]),
    "fmod": (lambda L, a, b: L.fmod(a * 3, b) + a.fmod(0.7), [(S, "n"), (S, "p")]),
    "logaddexp": (lambda L, a, b: L.logaddexp(a * 30, b), [(S, "n"), (S, "n")]),
    "lerp_addcmul_addcdiv": (
        lambda L, a, b, c: L.lerp(a, b, 0.3) + a.lerp(b, c) + L.addcmul(a, b, c, value=0.5) + a.addcdiv(b, c.abs() + 1),
        [(S, "n"), (S, "n"), (S, "n")],
    ),
    "addmm": (
        lambda L, i, a, b: L.addmm(i, a, b, beta=0.5, alpha=2.0) + i.addmm(a, b),
        [((4, 5), "n"), ((4, 7), "n"), ((7, 5), "n")],
    ),
    "cdist": (lambda L, a, b: L.cdist(a, b) + L.cdist(a, b, p=1.0), [((2, 5, 3), "n"), ((2, 4, 3), "n")]),
    "nan_to_num": (
        lambda L, x: (
            L.nan_to_num(L.where(x > 0.5, float("nan"), x), nan=0.5)
            + L.where(x < -1, float("-inf"), L.where(x > 1, float("inf"), x)).nan_to_num(posinf=2.0, neginf=-3.0)
        ),
        [(S, "n")],
    ),
    "cumprod": (lambda L, x: x.cumprod(1) + L.cumprod(x, dim=-1), [(S, "n")]),
    "cumprod_with_zeros": (lambda L, x: (x * (x.abs() > 0.4)).cumprod(0), [((6, 4), "n")]),
    "median_dim": (lambda L, x: x.median(1), [(S, "u")]),
    "median_even_keepdim": (lambda L, x: L.median(x, dim=-1, keepdim=True), [((3, 6), "u")]),
    "median_all": (lambda L, x: x.median(), [(S, "u")]),
    "std_mean_var_mean": (lambda L, x: L.std_mean(x, 1) + L.var_mean(x, dim=(0, 2), correction=0), [(S, "n")]),
    "index_add": (lambda L, x, s: x.index_add(1, L.tensor([0, 6, 0]), s, alpha=2.0), [(S, "n"), ((9, 3, 5), "n")]),
    "meshgrid_ij": (lambda L, a, b: L.meshgrid(a, b, indexing="ij"), [((4,), "n"), ((3,), "n")]),
    "meshgrid_xy": (lambda L, a, b, c: L.meshgrid([a, b, c], indexing="xy"), [((4,), "n"), ((3,), "n"), ((2,), "n")]),
    "tile": (lambda L, x: L.tile(x, (2,)) + 0 * x.tile((1, 1, 2)).sum(), [((3, 4), "n")]),
    "diff": (lambda L, x, p: (L.diff(x, dim=1), x.diff(n=2, dim=1, prepend=p, append=p)), [(S, "n"), ((9, 1, 5), "n")]),
    "trace": (lambda L, x: L.trace(x) + x.trace(), [((5, 7), "n")]),
    "linalg_norms": (
        lambda L, x: L.linalg.norm(x) + L.linalg.norm(x[0], "fro") + L.linalg.vector_norm(x, 3, dim=1).sum(),
        [(S, "n")],
    ),
    "select": (lambda L, x: x.select(1, 2) + L.select(x, -1, 0).sum(), [(S, "n")]),
    "movedim": (lambda L, x: L.movedim(x, 0, -1) + 0 * x.moveaxis((0, 1), (2, 0)).sum(), [(S, "n")]),
    "take_along_dim": (
        lambda L, x: (L.take_along_dim(x, x.argsort(dim=1)[:, :3], dim=1), x.take_along_dim(L.tensor([[[0]]]), 2)),
        [(S, "u")],
    ),
    "take_along_dim_flat": (lambda L, x: L.take_along_dim(x, L.tensor([4, 0, 9])), [(S, "n")]),
    "tensor_split": (lambda L, x: x.tensor_split(3, dim=1) + L.tensor_split(x, [1, 4, 10], dim=2), [(S, "n")]),
    "nansum_nanmean": (
        lambda L, x: L.nansum(L.where(x > 1, float("nan"), x), 1) + L.where(x > 1, float("nan"), x).nanmean(0).sum(),
        [(S, "n")],
    ),
    "aminmax": (lambda L, x: tuple(x.aminmax(dim=1)) + tuple(L.aminmax(x)), [(S, "u")]),
    "cummax_cummin": (lambda L, x: L.cummax(x, 1) + x.cummin(dim=-1), [(S, "u")]),
    "logcumsumexp": (lambda L, x: x.logcumsumexp(1), [(S, "n")]),
    "kthvalue": (lambda L, x: x.kthvalue(3, 1) + L.kthvalue(x, 1, dim=0, keepdim=True), [(S, "u")]),
    "dist": (lambda L, a, b: a.dist(b) + L.dist(a, b, 1) + a.dist(b, 3), [(S, "n"), ((7, 5), "n")]),
    "mv": (lambda L, m, v: L.mv(m, v) + m.mv(v), [((4, 7), "n"), ((7,), "n")]),
    "hypot_xlogy": (lambda L, a, b: L.hypot(a, b) + L.xlogy(a, b.abs()) + a.xlogy(2.0), [(S, "n"), (S, "n")]),
    "float_power": (lambda L, a: L.float_power(a.abs(), 2.5), [(S, "n")]),
    "deg_rad": (lambda L, x: x.deg2rad() + L.rad2deg(x), [(S, "n")]),
    "fmax_fmin": (
        lambda L, a, b: L.fmax(L.where(a > 1, float("nan"), a), b) + a.fmin(L.where(b > 1, float("nan"), b)),
        [(S, "u"), (S, "n")],
    ),
    "stacks": (
        lambda L, a, b, c: (
            L.hstack([a, b]),
            L.vstack([a, b]),
            L.dstack([a, b]),
            L.column_stack([c, c, a[:, 0]]),
            L.hstack([c, c]),
            L.vstack([c, c]),
            L.concatenate([a, b], 1),
        ),
        [((4, 3), "n"), ((4, 3), "n"), ((4,), "n")],
    ),  # fmt: skip
    "broadcasting": (
        lambda L, a, b: L.broadcast_tensors(a, b) + (a.broadcast_to((9, 7, 5)),),
        [((7, 1), "n"), (S, "n")],
    ),
    "diagonal": (
        lambda L, x: (L.diagonal(x), x.diagonal(1, 0, 2), x.diagonal(-2, dim1=-1, dim2=0)),
        [(S, "n")],
    ),
    "take": (lambda L, x: L.take(x, L.tensor([[0, 5], [-1, 100]])), [(S, "n")]),
    "rot90": (lambda L, x: (L.rot90(x), x.rot90(2, (1, 2)), L.rot90(x, -1, (2, 0)), x.rot90(4)), [(S, "n")]),
    "msort": (lambda L, x: L.msort(x), [(S, "u")]),
    "tensordot": (
        lambda L, a, b: (L.tensordot(a, b, 1), L.tensordot(a, b.transpose(0, 1), ([2], [1])), L.tensordot(a, a, 3)),
        [(S, "n"), ((5, 3), "n")],
    ),
    "inner_vdot_kron": (
        lambda L, a, b, v: (L.inner(a, b), L.vdot(v, v), L.kron(a, b), v.inner(v), L.kron(v, a)),
        [((3, 4), "n"), ((2, 4), "n"), ((4,), "n")],
    ),
    "baddbmm": (
        lambda L, i, a, b: L.baddbmm(i, a, b, beta=0.5, alpha=2.0),
        [((3, 4, 5), "n"), ((3, 4, 7), "n"), ((3, 7, 5), "n")],
    ),
    "aliases": (
        lambda L, a, b: L.negative(a) + L.absolute(a) + L.true_divide(a, b) + L.frac(a * 3),
        [(S, "n"), (S, "p")],
    ),
    "einsum_lonely_index": (lambda L, a, b: L.einsum("ijk,j->i", a, b), [(S, "n"), ((7,), "n")]),
    "split_size": (lambda L, x: x.split(2, dim=2), [(S, "n")]),
    "split_sections": (lambda L, x: L.split(x, [3, 6]), [(S, "n")]),
    "flip": (lambda L, x: x.flip(0), [(S, "n")]),
    "repeat": (lambda L, x: x.repeat(2, 1, 3), [(S, "n")]),
    "unbind": (lambda L, x: x.unbind(1), [((3, 4), "n")]),
    "narrow": (lambda L, x: x.narrow(1, 2, 3), [(S, "n")]),
    # unary math
    "sin": (lambda L, x: x.sin(), [(S, "n")]),
    "cos": (lambda L, x: L.cos(x), [(S, "n")]),
    "tan": (lambda L, x: x.tan(), [(S, "n")]),
    "exp": (lambda L, x: L.exp(x), [(S, "n")]),
    "log1p": (lambda L, x: x.log1p(), [(S, "p")]),
    "expm1": (lambda L, x: x.expm1(), [(S, "n")]),
    "rsqrt": (lambda L, x: x.rsqrt(), [(S, "p")]),
    "log10": (lambda L, x: x.log10(), [(S, "p")]),
    "reciprocal": (lambda L, x: x.reciprocal(), [(S, "p")]),
    "square": (lambda L, x: x.square(), [(S, "n")]),
    "sign_times": (lambda L, x: x.sign() * x, [(S, "n")]),
    "floor_ceil_round": (lambda L, x: (x * 3).floor() + (x * 3).ceil() + (x * 3).round() + x, [(S, "n")]),
    "clamp_tensor_bounds": (lambda L, x, lo: x.clamp(min=lo), [(S, "n"), ((5,), "n")]),
    "softmax_method": (lambda L, x: x.softmax(dim=1), [(S, "n")]),
    "functions": (lambda L, x: L.sum(L.flatten(L.relu(x)), 0) + L.mean(L.sigmoid(x)) + L.tanh(x).sum(), [(S, "n")]),
    "remainder": (lambda L, x, y: x % y + L.remainder(x, 0.7), [(S, "n"), (S, "p")]),
    "maximum_ties": (lambda L, x: L.maximum(x, x.round()) + L.minimum(x.clamp(max=0.5), x.clamp(min=-0.5)), [(S, "n")]),
    "where_cond": (lambda L, x, y: L.where(x > y, x, y), [(S, "n"), (S, "n")]),
    "matmul_fn": (lambda L, a, b: L.matmul(a, b), [((4, 9, 7), "n"), ((7, 3), "n")]),
}


def _gather_case(L, x):
    idx = L.tensor(np.array([[0, 2, 1], [4, 4, 0], [1, 3, 3]], dtype=np.int64))
    return x.gather(1, idx)


def _scatter_case(L, x, src):
    idx = L.tensor(np.array([[0, 2, 1, 4], [3, 1, 0, 2]], dtype=np.int64))
    return x.scatter(1, idx, src)


CASES["gather"] = (_gather_case, [((3, 5), "n")])
CASES["scatter"] = (_scatter_case, [((2, 5), "n"), ((2, 4), "n")])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CASES))
def test_op_matches_torch(rng, case, dtype):
    fn, specs = CASES[case]
    parity(rng, fn, [_arr(rng, s, k) for s, k in specs], dtype)


NO_GRAD_CASES = {
    "argmax_fn": lambda L, x: L.argmax(x, dim=1),
    "argmax_keepdim": lambda L, x: x.argmax(axis=0, keepdims=True),
    "argsort": lambda L, x: x.argsort(dim=-1, descending=True),
    "any": lambda L, x: (x > 1).any(dim=0),
    "all": lambda L, x: (x > -3).all(),
    "comparisons": lambda L, x: L.stack([x.eq(x.round()), x.ne(0.5), x.lt(0.1), x.le(0), x.gt(0.2), x.ge(-0.3)]),
    "isclose": lambda L, x: L.isclose(x, x + 1e-9),
    "isfinite": lambda L, x: (x / (x > 0).float()).isfinite(),
    "unique": lambda L, x: L.unique((x * 2).round().long(), return_inverse=True, return_counts=True),
    "unique_dim": lambda L, x: (x[:, :2] > 0).long().unique(dim=0),
    "unique_float": lambda L, x: (x * 2).round().unique(),
    "bincount": lambda L, x: L.bincount((x * 2).round().long().clamp(min=0).flatten(), minlength=9),
    "bincount_weights": lambda L, x: (x > 0).long().flatten().bincount(weights=x.flatten()),
    "repeat_interleave_counts": lambda L, x: L.repeat_interleave(L.tensor([2, 0, 3, 1])),
    "median_int": lambda L, x: (x * 3).long().median(0),
    "logical_xor": lambda L, x: L.logical_xor(x > 0, x < 1),
    "cumprod_int": lambda L, x: (x > 0).long().add(1).cumprod(1),
    "argwhere": lambda L, x: L.argwhere(x > 0.5),
    "comparison_aliases": lambda L, x: L.stack(
        [L.greater(x, 0.2), L.less(x, 0.1), L.greater_equal(x, 0.0), L.less_equal(x, 0.3), L.not_equal(x, 0.5)]
    ),
    "heaviside_posneginf": lambda L, x: (
        L.heaviside(x.round(), L.tensor(0.5, dtype=x.dtype)),
        L.isposinf(x / (x > 2)),
        L.isneginf(-x / (x > 2)),
    ),
    "searchsorted_bucketize": lambda L, x: (
        L.searchsorted(L.tensor([-1.0, 0.0, 0.5, 2.0], dtype=x.dtype), x),
        L.searchsorted(L.tensor([-1.0, 0.0, 0.5, 2.0], dtype=x.dtype), x, right=True),
        L.bucketize(x, L.tensor([-1.0, 0.0, 0.5, 2.0], dtype=x.dtype), out_int32=True),
        L.searchsorted(L.sort(x[:, :, 0], 1).values, x[:, :, 1].contiguous()),
    ),
    "signbit": lambda L, x: L.signbit(x) | x.signbit(),
    "byte_char_short": lambda L, x: (x.abs().byte(), x.char(), x.short()),
    # two Python scalars: PyTorch's dtypes (float32, int64, bool), not NumPy's float64
    "where_float_scalars": lambda L, x: L.where(x > 0, 1.0, 0.0),
    "where_int_scalars": lambda L, x: L.where(x > 0, 1, 0),
    "where_bool_scalars": lambda L, x: L.where(x > 0, True, False),
    "where_int_float_scalars": lambda L, x: L.where(x > 0, 2, 0.5),
}


@pytest.mark.parametrize("case", list(NO_GRAD_CASES))
def test_no_grad_op_matches_torch(rng, case):
    parity(rng, NO_GRAD_CASES[case], [_arr(rng, S, "u")], np.float64, grad=False)


def test_max_with_dim_returns_named_values_and_indices(rng):
    x = gpunn.tensor(_arr(rng, S, "u"))
    out = x.max(dim=2)
    assert out.values.shape == (9, 7) and out.indices.dtype == np.int64
    values, indices = gpunn.max(x, 2)
    np.testing.assert_array_equal(values.numpy(), out[0].numpy())
    np.testing.assert_array_equal(indices.numpy(), x.numpy().argmax(2))


def test_values_indices_tuples_print_and_pickle_like_torch(rng):
    import pickle

    x = _arr(rng, (3, 4), "u")
    for op in (lambda L, t: L.max(t, 1), lambda L, t: t.min(dim=0), lambda L, t: t.sort(1), lambda L, t: t.topk(2)):
        r, tr = op(gpunn, gpunn.tensor(x)), op(torch, torch.tensor(x))
        assert type(r).__name__ == type(tr).__name__ and (r.values is r[0]) and (r.indices is r[1])
        assert repr(r).replace("gpunn.", "torch.").replace(", device='cuda:0'", "") == repr(tr)
        back = pickle.loads(pickle.dumps(r))
        assert type(back) is type(r) and np.array_equal(back.values.numpy(), r.values.numpy())


def test_factories_match_torch():
    for args in [(0, 1, 5), (-2.0, 3.5, 7), (1, 1, 1)]:
        np.testing.assert_allclose(gpunn.linspace(*args).numpy(), torch.linspace(*args).numpy(), rtol=1e-6)
        np.testing.assert_allclose(gpunn.logspace(*args).numpy(), torch.logspace(*args).numpy(), rtol=1e-5)
        assert gpunn.linspace(*args).dtype == np.float32
    gpunn.manual_seed(3)
    z = gpunn.normal(2.0, 3.0, size=(4000,))
    assert z.dtype == np.float32 and abs(z.mean().item() - 2.0) < 0.3 and abs(z.std().item() - 3.0) < 0.3
    m = gpunn.normal(gpunn.zeros(3, 4), gpunn.full((3, 4), 0.5))
    assert m.shape == (3, 4)
    assert gpunn.randint(0, 10, (5,), dtype=gpunn.int32).dtype == np.int32
    assert gpunn.randint(5, (2, 3)).shape == (2, 3)


def test_properties_and_grad_mode_decorator(rng):
    x = gpunn.tensor(_arr(rng, S), requires_grad=True)
    t = torch.tensor(_arr(rng, S), requires_grad=True)
    for a in (x, t):
        y = a * 2
        y.retain_grad()
        y.sum().backward()
        assert (a.numel(), a.size(), a.size(1), a.dim(), a.ndim, a.is_leaf, y.is_leaf) == (315, S, 7, 3, 3, True, False)
        assert y.grad_fn is not None and a.grad_fn is None and y.grad is not None
    for L in (gpunn, torch):

        @L.no_grad()
        def f(a):
            return a * 2

        @L.no_grad
        def g(a):
            return a * 2

        a = L.ones(2, requires_grad=True)
        assert not f(a).requires_grad and not g(a).requires_grad and (a * 2).requires_grad


@pytest.mark.parametrize("name", ["svd", "fft", "cholesky", "stft"])
def test_unsupported_ops_say_so_by_name(name):
    with pytest.raises(AttributeError, match=name):
        getattr(gpunn, name)
    x = gpunn.ones(2)
    with pytest.raises(NotImplementedError, match="register_hook"):
        x.register_hook(lambda g: g)
    with pytest.raises(AttributeError, match="Tensor.stft is not supported by gpunn"):
        x.stft(4)


@pytest.mark.parametrize(
    "fn, exc, match",
    [
        (lambda L: L.arange(3.0).index_select(0, L.tensor([3])), IndexError, "out of range"),
        (lambda L: L.arange(3.0).index_select(0, L.tensor([-1])), IndexError, "out of range"),
        (lambda L: L.arange(3.0).index_select(0, L.tensor([0.0])), RuntimeError, "int"),
        (lambda L: L.diag(L.ones(2, 2, 2)), RuntimeError, "1D or 2D"),
        (lambda L: L.bincount(L.tensor([1, -1])), RuntimeError, "non-negative"),
        (lambda L: L.einsum("ij,jk->ik", L.ones(2, 3), L.ones(4, 2)), RuntimeError, "subscript j"),
        (lambda L: L.roll(L.ones(2, 2), (1, 1), 0), RuntimeError, "shifts and dimensions must align"),
        (lambda L: L.multinomial(L.tensor([0.5, 0.0, 0.5]), 4), RuntimeError, "without replacement"),
        (lambda L: L.multinomial(L.tensor([0.5, -0.1]), 1), RuntimeError, "element < 0"),
    ],
)
def test_new_ops_raise_like_torch(fn, exc, match):
    for L in (gpunn, torch):
        with pytest.raises(exc, match=match):
            fn(L)


def test_einsum_ellipsis_and_diagonals_say_they_are_unsupported():
    x = gpunn.ones(3, 3)
    for eq in ("...ij->...ji", "ii->i"):
        with pytest.raises(NotImplementedError, match="einsum"):
            gpunn.einsum(eq, x)


@pytest.mark.parametrize("replacement", [True, False])
def test_multinomial_draws_in_proportion(replacement):
    """Frequencies of the first draw follow the weights (5 sigma), zero weights are never drawn, rows of a
    2-D input are independent, and without replacement a row's draws are distinct."""
    gpunn.manual_seed(3)
    w = np.array([[1.0, 0.0, 6.0, 3.0], [0.0, 2.0, 2.0, 0.0]])
    n = 4000
    first = np.stack([gpunn.multinomial(gpunn.tensor(w), 2, replacement=replacement).numpy() for _ in range(n)])
    assert first.dtype == np.int64 and first.shape == (n, 2, 2)
    for row in range(2):
        p = w[row] / w[row].sum()
        freq = np.bincount(first[:, row, 0], minlength=4) / n
        assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-12), (row, freq, p)
    assert not np.isin(first[:, 0], [1]).any() and np.isin(first[:, 1], [1, 2]).all()
    if not replacement:
        assert np.all(first[:, :, 0] != first[:, :, 1])
    assert gpunn.tensor([0.2, 0.8]).multinomial(5, replacement=True).shape == (5,)


LAYOUTS = {
    "transpose": lambda L, x: x.transpose(0, 2),
    "t": lambda L, x: x[0].t(),
    "permute": lambda L, x: x.permute(1, 0, 2),
    "slice": lambda L, x: x[:, 1:3],
    "step": lambda L, x: x[::2],
    "expand": lambda L, x: x[:, :1].expand(-1, 4, -1),
    "size_one_dims": lambda L, x: x[:1].transpose(0, 1),
    "fresh": lambda L, x: x * 2,
}


@pytest.mark.parametrize("case", list(LAYOUTS))
def test_is_contiguous_and_contiguous_view_like_torch(rng, case):
    """is_contiguous() says what PyTorch says; .contiguous().view(-1) always works, and equals torch's;
    .view(-1) raises exactly where PyTorch's does."""
    x = _arr(rng, (3, 4, 5))
    g, t = LAYOUTS[case](gpunn, gpunn.tensor(x, requires_grad=True)), LAYOUTS[case](torch, torch.tensor(x))
    assert g.is_contiguous() == t.is_contiguous()
    np.testing.assert_array_equal(g.contiguous().view(-1).detach().numpy(), t.contiguous().view(-1).numpy())
    try:
        t.view(-1)
        torch_raises = False
    except RuntimeError:
        torch_raises = True
    if torch_raises:
        with pytest.raises(RuntimeError, match="view size is not compatible"):
            g.view(-1)
    else:
        g.view(-1)
    g.contiguous().sum().backward()  # the copy passes gradients back


def test_in_place_variants_match_torch(rng):
    x, s = _arr(rng, (5, 4)), _arr(rng, (2, 4))
    res = []
    for L in (gpunn, torch):
        a = L.tensor(x)
        a.index_add_(0, L.tensor([4, 1]), L.tensor(s)).lerp_(L.ones(5, 4, dtype=a.dtype), 0.25)
        a.addcmul_(a, a, value=-0.1).addcdiv_(a, a.abs() + 1, value=2).nan_to_num_()
        res.append(a.numpy())
    np.testing.assert_allclose(res[0], res[1], rtol=1e-6)


def test_meshgrid_without_indexing_warns_like_torch():
    for L in (gpunn, torch):
        with pytest.warns(UserWarning, match="indexing"):
            L.meshgrid(L.arange(2), L.arange(3))


def test_linalg_decompositions_say_they_are_missing():
    with pytest.raises(AttributeError, match="inv"):
        gpunn.linalg.inv(gpunn.eye(2))
    with pytest.raises(NotImplementedError, match="ord"):
        gpunn.linalg.norm(gpunn.eye(2), 2)


def test_median_of_slices_holding_nan_is_nan_like_torch(rng):
    x = _arr(rng, (6, 7), "u")
    x[1, 3] = x[4, 0] = x[4, 5] = np.nan
    for dim in (0, 1):
        g, t = gpunn.tensor(x).median(dim), torch.tensor(x).median(dim)
        np.testing.assert_array_equal(g.values.numpy(), t.values.numpy())
        np.testing.assert_array_equal(g.indices.numpy(), t.indices.numpy())
    assert np.isnan(gpunn.tensor(x).median().item()) and np.isnan(torch.tensor(x).median().item())


def test_view_as_dtype_reads_the_same_bytes_like_torch(rng):
    x = _arr(rng, (3, 4)).astype(np.float32)
    for dt in ("int32", "float32"):
        g, t = gpunn.tensor(x).view(getattr(gpunn, dt)), torch.tensor(x).view(getattr(torch, dt))
        np.testing.assert_array_equal(g.numpy(), t.numpy())
    with pytest.raises(NotImplementedError, match="another size"):
        gpunn.tensor(x).view(gpunn.float64)
    with pytest.raises(RuntimeError, match="detach"):
        gpunn.tensor(x, requires_grad=True).view(gpunn.int32)


def test_small_queries_like_torch():
    for L in (gpunn, torch):
        x = L.tensor([1.0, 2.5])
        assert 2.5 in x and 3 not in x and x.is_signed() and not x.is_complex() and not L.tensor([1]).byte().is_signed()


def test_bernoulli_draws_in_proportion():
    gpunn.manual_seed(5)
    p = gpunn.tensor(np.array([0.0, 0.2, 0.9, 1.0] * 2000, dtype=np.float32))
    s = gpunn.bernoulli(p).numpy().reshape(-1, 4)
    assert s.dtype == np.float32 and set(np.unique(s)) <= {0.0, 1.0}
    np.testing.assert_allclose(s.mean(0), [0.0, 0.2, 0.9, 1.0], atol=0.03)
    assert abs(gpunn.zeros(4000).bernoulli_(0.3).mean().item() - 0.3) < 0.03
    with pytest.raises(RuntimeError, match=r"\[0, 1\]"):
        gpunn.bernoulli(gpunn.tensor([1.5]))


def test_in_place_reshaping_ops_like_torch():
    """unsqueeze_/squeeze_/t_/transpose_ change the tensor's own shape (storage kept); a leaf that requires
    grad refuses outside no_grad, as PyTorch; gpunn also refuses on a non-leaf that requires grad (it says so)."""
    for L in (gpunn, torch):
        z = L.arange(6.0).reshape(2, 3)
        z.t_()
        assert tuple(z.shape) == (3, 2) and z[0, 1].item() == 3.0
        z.unsqueeze_(1).transpose_(0, 2)
        assert tuple(z.shape) == (2, 1, 3)
        z.squeeze_()
        assert tuple(z.shape) == (2, 3) and z.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
        x = L.ones(2, 3, requires_grad=True)
        with pytest.raises(RuntimeError, match="leaf Variable"):
            x.unsqueeze_(0)
        with L.no_grad():
            x.unsqueeze_(0)
        assert tuple(x.shape) == (1, 2, 3)
    with pytest.raises(NotImplementedError, match="out-of-place"):
        (gpunn.ones(2, requires_grad=True) * 2).unsqueeze_(0)
