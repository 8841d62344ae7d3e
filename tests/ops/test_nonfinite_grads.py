"""Activations and masks at NaN, +-inf and +-0, value and gradient, against PyTorch 2.13 CPU.

PyTorch's masked derivatives *select* (``where(mask, g, 0)``), they do not multiply by a 0/1 mask: a NaN
output of ReLU passes the incoming gradient (its rule is 0 where y <= 0, else g), and an inf or NaN incoming
gradient where the mask is off gives 0, not inf * 0 = NaN. Each case runs the op on the special values with
several upstream gradients (ones, NaN, inf, random) and compares values, NaN positions and signs of zero.
Large inputs take the numpy backend's Numba kernels; ``nn.Sequential(Linear, ReLU)`` and ``Conv2d`` + ``ReLU``
take the fused primitives (kernels/linear_act.cu on the cupy backend)."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
from gpunn.backend import numpy_backend
from tests.helpers import torch_or_skip

torch = torch_or_skip()

NAN, INF = float("nan"), float("inf")
SPECIAL = [NAN, INF, -INF, 0.0, -0.0, 1.5, -1.5, 0.25, -3.0, 7.0]
DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]
# a few ulp (1 - y * y in tanh's derivative cancels: an absolute bound for values far below 1)
RTOL = {np.float32: 2e-6, np.float64: 1e-13}
ATOL = {np.float32: 1e-6, np.float64: 1e-14}


def assert_same(out, ref, dtype, what):
    """Equal values (to a few ulp), the same NaN positions, the same sign on every zero."""
    out, ref = np.asarray(out, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert out.shape == ref.shape, f"{what}: shape {out.shape}, torch {ref.shape}"
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref), err_msg=f"{what}: NaN positions differ")
    np.testing.assert_allclose(out, ref, rtol=RTOL[dtype], atol=ATOL[dtype], err_msg=what)
    zero = ref == 0
    np.testing.assert_array_equal(np.signbit(out[zero]), np.signbit(ref[zero]), err_msg=f"{what}: sign of zero")


def upstreams(n, rng):
    return {
        "ones": np.ones(n),
        "nan": np.full(n, NAN),
        "inf": np.full(n, INF),
        "-inf": np.full(n, -INF),
        "random": rng.standard_normal(n),
    }


# PyTorch's own answer here depends on where the element sits (its vectorized loop and its scalar tail differ):
# a NaN input's gradient (hardtanh, relu6, hardshrink: 1 or 0) and the sign of a zero (softshrink). gpunn gives
# the scalar rule (NaN passes g); these cases compare everything else.
POSITION_DEPENDENT = {"hardtanh", "relu6", "hardshrink", "softshrink"}


def check(fn, x, dtype, rng, position_dependent=False):
    """``fn(L, t)`` under gpunn and torch on x: the values, then x's gradient for every upstream gradient."""
    x = np.asarray(x, dtype=dtype)
    keep = ~np.isnan(x) if position_dependent else np.ones(x.shape, bool)
    for name, up in upstreams(x.size, rng).items():
        up = up.astype(dtype).reshape(x.shape)
        g = gpunn.tensor(x, requires_grad=True)
        t = torch.tensor(x, requires_grad=True)
        out, ref = fn(gpunn, g), fn(torch, t)
        o, r = out.detach().numpy(), ref.detach().numpy()
        if position_dependent:
            o, r = np.abs(o), np.abs(r)
        assert_same(o, r, dtype, "value")
        out.backward(gpunn.tensor(up))
        ref.backward(torch.tensor(up))
        assert_same(g.grad.numpy()[keep], t.grad.numpy()[keep], dtype, f"gradient (upstream {name})")


ACTIVATIONS = {
    "F.relu": lambda L, x: L.nn.functional.relu(x),
    "Tensor.relu": lambda L, x: x.relu(),
    "torch.relu": lambda L, x: L.relu(x),
    "nn.ReLU": lambda L, x: L.nn.ReLU()(x),
    "leaky_relu": lambda L, x: L.nn.functional.leaky_relu(x, 0.2),
    "sigmoid": lambda L, x: x.sigmoid(),
    "tanh": lambda L, x: x.tanh(),
    "softplus": lambda L, x: L.nn.functional.softplus(x),
    "elu": lambda L, x: L.nn.functional.elu(x, 0.7),
    "abs": lambda L, x: x.abs(),
    "sign": lambda L, x: x.sign() * 3,
    "clamp_min": lambda L, x: x.clamp(min=0.0),
    "clamp": lambda L, x: L.clamp(x, -1.0, 1.0),
    "clamp_max": lambda L, x: x.clamp_max(0.5),
    "hardtanh": lambda L, x: L.nn.functional.hardtanh(x, -1.0, 1.5),
    "relu6": lambda L, x: L.nn.functional.relu6(x),
    "selu": lambda L, x: L.nn.functional.selu(x),
    "celu": lambda L, x: L.nn.functional.celu(x, 0.5),
    "mish": lambda L, x: L.nn.functional.mish(x),
    "hardswish": lambda L, x: L.nn.functional.hardswish(x),
    "hardsigmoid": lambda L, x: L.nn.functional.hardsigmoid(x),
    "softshrink": lambda L, x: L.nn.functional.softshrink(x, 0.25),
    "hardshrink": lambda L, x: L.nn.functional.hardshrink(x),
    "threshold": lambda L, x: L.nn.functional.threshold(x, 0.25, -2.0),
    "logsigmoid": lambda L, x: L.nn.functional.logsigmoid(x),
    "softsign": lambda L, x: L.nn.functional.softsign(x),
    "tanhshrink": lambda L, x: L.nn.functional.tanhshrink(x),
    "prelu": lambda L, x: L.nn.functional.prelu(x, L.tensor([0.3], dtype=x.dtype)),
    "maximum_half": lambda L, x: L.maximum(x, L.full_like(x, 0.5)),  # (torch's max(-0.0, 0.0) varies with size)
    "floor": lambda L, x: x.floor() + x.round() + x.ceil() + x.trunc(),
    "minimum_scalar_tensor": lambda L, x: L.minimum(x, L.tensor(0.25, dtype=x.dtype)),
}


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(ACTIVATIONS))
def test_activation_at_nonfinite_values_matches_torch(rng, case, dtype):
    check(ACTIVATIONS[case], SPECIAL, dtype, rng, case in POSITION_DEPENDENT)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_kernels_at_nonfinite_values_match_torch(rng, dtype):
    """Large enough for the numpy backend's Numba ReLU kernels (shared over threads)."""
    n = numpy_backend._PARALLEL_MIN + 6
    x = rng.standard_normal(n)
    x[: len(SPECIAL)] = SPECIAL
    x[-len(SPECIAL) :] = SPECIAL
    check(lambda L, t: L.relu(t), x.reshape(2, -1), dtype, rng)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("act", ["ReLU", "LeakyReLU", "Sigmoid", "Tanh"])
def test_fused_linear_activation_with_nan_outputs_matches_torch(rng, act):
    """nn.Sequential(Linear, act) runs as one fused op: a NaN weight row makes one output column NaN; the
    gradients of the input and of the weights are PyTorch's."""
    W = rng.standard_normal((5, 4)).astype(np.float32)
    W[2, 1] = NAN
    b = rng.standard_normal(5).astype(np.float32)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    up = rng.standard_normal((3, 5)).astype(np.float32)
    up[0, 3] = INF
    grads = []
    for L in (gpunn, torch):
        model = L.nn.Sequential(L.nn.Linear(4, 5), getattr(L.nn, act)())
        with L.no_grad():
            model[0].weight.copy_(L.tensor(W))
            model[0].bias.copy_(L.tensor(b))
        xt = L.tensor(x, requires_grad=True)
        out = model(xt)
        out.backward(L.tensor(up))
        grads.append([out.detach().numpy(), xt.grad.numpy(), model[0].weight.grad.numpy(), model[0].bias.grad.numpy()])
    for what, o, r in zip(["value", "x.grad", "weight.grad", "bias.grad"], *grads):
        np.testing.assert_array_equal(np.isnan(o), np.isnan(r), err_msg=f"{act} {what}: NaN positions")
        np.testing.assert_allclose(o, r, rtol=2e-5, atol=1e-6, err_msg=f"{act} {what}")


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_fused_conv_relu_with_nan_outputs_matches_torch(rng):
    """nn.Sequential(Conv2d, ReLU): one NaN input pixel makes a patch of NaN outputs; ReLU passes their
    gradient, as PyTorch does."""
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    x[1, 2, 3, 3] = NAN
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    up = rng.standard_normal((2, 4, 7, 6)).astype(np.float32)
    grads = []
    for L in (gpunn, torch):
        model = L.nn.Sequential(L.nn.Conv2d(3, 4, 3, padding=1), L.nn.ReLU())
        with L.no_grad():
            model[0].weight.copy_(L.tensor(conv.weight.detach().numpy()))
            model[0].bias.copy_(L.tensor(conv.bias.detach().numpy()))
        xt = L.tensor(x, requires_grad=True)
        out = model(xt)
        out.backward(L.tensor(up))
        grads.append([out.detach().numpy(), model[0].bias.grad.numpy()])
    for what, o, r in zip(["value", "bias.grad"], *grads):
        np.testing.assert_array_equal(np.isnan(o), np.isnan(r), err_msg=f"{what}: NaN positions")
        np.testing.assert_allclose(o, r, rtol=2e-5, atol=1e-6, err_msg=what)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("op", ["maximum", "minimum", "max", "min"])
def test_two_tensor_max_min_gradients_at_nan_and_ties_match_torch(rng, op):
    """The gradient is g (g / 2 on a tie), zeroed on the side that lost: where either side is NaN, both get g."""
    a = np.array([NAN, INF, -INF, 0.0, -0.0, 1.5, -1.5, 2.0, NAN], dtype=np.float32)
    b = np.array([0.0, NAN, 0.0, 0.0, 1.0, 1.5, NAN, -2.0, NAN], dtype=np.float32)
    for up in upstreams(a.size, rng).values():
        up = up.astype(np.float32)
        res = []
        for L in (gpunn, torch):
            x, y = L.tensor(a, requires_grad=True), L.tensor(b, requires_grad=True)
            out = getattr(L, op)(x, y)
            out.backward(L.tensor(up))
            res.append([out.detach().numpy(), x.grad.numpy(), y.grad.numpy()])
        for what, o, r in zip(["value", "a.grad", "b.grad"], *res):
            assert_same(o, r, np.float32, f"{op} {what}")


RANDOM_CASES = {
    **{k: ACTIVATIONS[k] for k in ("hardtanh", "relu6", "selu", "celu", "mish", "hardswish", "hardsigmoid")},
    **{k: ACTIVATIONS[k] for k in ("softshrink", "hardshrink", "threshold", "logsigmoid", "softsign", "tanhshrink")},
    "softmin": lambda L, x: L.nn.functional.softmin(x, dim=1),
    "glu": lambda L, x: L.nn.functional.glu(x, dim=0),
    "prelu_channels": lambda L, x, w: L.nn.functional.prelu(x, w),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(RANDOM_CASES))
def test_activation_on_random_values_matches_torch(rng, case, dtype):
    """Values and gradients on an odd shape, the inputs spread over every branch (|x| up to 5)."""
    from tests.helpers import parity

    x = rng.uniform(-5, 5, size=(10, 7, 3))
    arrays = [x, rng.uniform(-1, 1, size=7)] if case == "prelu_channels" else [x]
    parity(rng, RANDOM_CASES[case], arrays, dtype)


MODULES = [
    ("ReLU6", ()), ("Hardtanh", (-2.0, 0.5)), ("SELU", ()), ("CELU", (0.7,)), ("Mish", ()), ("Hardswish", ()),
    ("Hardsigmoid", ()), ("Softshrink", (0.3,)), ("Hardshrink", ()), ("Threshold", (0.1, 20.0)), ("LogSigmoid", ()),
    ("Softsign", ()), ("Tanhshrink", ()), ("Softmin", (1,)), ("GLU", ()), ("PReLU", ()), ("PReLU", (7, 0.1)),
]  # fmt: skip


@pytest.mark.parametrize("name, args", MODULES)
def test_activation_modules_like_torch(rng, name, args):
    """The module's repr, parameters and output are PyTorch's."""
    x = rng.uniform(-4, 4, size=(5, 7, 4)).astype(np.float32)
    res = []
    for L in (gpunn, torch):
        m = getattr(L.nn, name)(*args)
        res.append((repr(m), [n for n, _ in m.named_parameters()], m(L.tensor(x)).detach().numpy()))
    assert res[0][:2] == res[1][:2]
    np.testing.assert_allclose(res[0][2], res[1][2], rtol=2e-6, atol=1e-6)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning")
def test_pow_gradients_at_zero_negative_and_nonfinite_match_torch(rng):
    """x ** 0 has gradient 0 (not g * 0); the exponent's gradient is g x^e log x: 0 where x == 0 and e >= 0,
    NaN for a negative base (as PyTorch)."""
    base = np.array([0.0, 0.0, -1.5, 2.0, -2.0, NAN, INF, 0.5], dtype=np.float64)
    expo = np.array([2.0, -1.0, 2.0, 0.0, 3.0, 1.0, 2.0, -0.5], dtype=np.float64)
    for up in upstreams(base.size, rng).values():
        res = []
        for L in (gpunn, torch):
            x, e = L.tensor(base, requires_grad=True), L.tensor(expo, requires_grad=True)
            (x**e + x**0).backward(L.tensor(up))
            res.append((x.grad.numpy(), e.grad.numpy()))
        assert_same(res[0][0], res[1][0], np.float64, "base gradient")
        assert_same(res[0][1], res[1][1], np.float64, "exponent gradient")
