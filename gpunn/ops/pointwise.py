"""Elementwise math and activations: exp, log, sqrt, abs, clamp, trig, rounding, relu, sigmoid, tanh,
leaky_relu, elu, gelu, softplus, silu, hardtanh, relu6, selu, celu, mish, hardswish, hardsigmoid, the shrinks,
threshold, logsigmoid, softsign, softmin, glu, prelu, softmax, log_softmax. Each op's derivative is written next
to its forward; ops whose derivative is read off the output save the output, the others their input."""

from __future__ import annotations

import math

import numpy as np

from gpunn.backend.reference import activation_forward
from gpunn.dtypes import _is_float, default_float
from gpunn.tensor import Tensor, _quiet_div


def _as_float(t: Tensor):
    return t._data if _is_float(t.dtype) else t._data.astype(default_float)


def _unary(t: Tensor, fn, dfn, op: str, saves: str = "input"):
    """out = fn(x); backward g -> dfn(g, x, out). ``saves``: which values dfn reads: 'input', 'output',
    'both' or 'none'."""
    x = _as_float(t)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = fn(t._backend.xp, x)

    def backward(g):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return (dfn(g, x, out),)

    saved = (t,) if saves in ("input", "both") else ()
    return t._result(out, (t,), backward, op, saved=saved, saves_output=saves in ("output", "both"))


def exp(input) -> Tensor:
    return _unary(input, lambda xp, x: xp.exp(x), lambda g, x, y: g * y, "ExpBackward0", "output")


def expm1(input) -> Tensor:
    return _unary(input, lambda xp, x: xp.expm1(x), lambda g, x, y: g * (y + 1), "Expm1Backward0", "output")


def log(input) -> Tensor:
    return _unary(input, lambda xp, x: xp.log(x), lambda g, x, y: _quiet_div(g, x), "LogBackward0")


def log2(input) -> Tensor:
    return _unary(
        input, lambda xp, x: xp.log2(x), lambda g, x, y: _quiet_div(g, x * x.dtype.type(math.log(2.0))), "Log2Backward0"
    )


def log10(input) -> Tensor:
    return _unary(
        input,
        lambda xp, x: xp.log10(x),
        lambda g, x, y: _quiet_div(g, x * x.dtype.type(math.log(10.0))),
        "Log10Backward0",
    )


def log1p(input) -> Tensor:
    return _unary(input, lambda xp, x: xp.log1p(x), lambda g, x, y: _quiet_div(g, 1 + x), "Log1PBackward0")


def sqrt(input) -> Tensor:
    return _unary(input, lambda xp, x: xp.sqrt(x), lambda g, x, y: _quiet_div(g, 2 * y), "SqrtBackward0", "output")


def rsqrt(input) -> Tensor:
    return _unary(input, lambda xp, x: 1 / xp.sqrt(x), lambda g, x, y: -0.5 * g * y * y * y, "RsqrtBackward0", "output")


def square(input) -> Tensor:
    return input * input


def reciprocal(input) -> Tensor:
    return _unary(input, lambda xp, x: 1 / x, lambda g, x, y: -g * y * y, "ReciprocalBackward0", "output")


def sin(input) -> Tensor:
    xp = input._backend.xp
    return _unary(input, lambda xp_, x: xp_.sin(x), lambda g, x, y: g * xp.cos(x), "SinBackward0")


def cos(input) -> Tensor:
    xp = input._backend.xp
    return _unary(input, lambda xp_, x: xp_.cos(x), lambda g, x, y: -g * xp.sin(x), "CosBackward0")


def tan(input) -> Tensor:
    return _unary(input, lambda xp, x: xp.tan(x), lambda g, x, y: g * (1 + y * y), "TanBackward0", "output")


def abs(input) -> Tensor:  # noqa: A001
    xp = input._backend.xp
    if not _is_float(input.dtype):
        return Tensor._wrap(xp.abs(input._data), input._backend)
    return _unary(input, lambda xp_, x: xp_.abs(x), lambda g, x, y: g * _sign(xp, x), "AbsBackward0")


def _step_grad(xp):
    """The gradient of a step function (sign, floor, round, ...): zeros, as in PyTorch (not g * 0: NaN for an
    inf or NaN g)."""
    return lambda g, x, y: xp.zeros_like(g)


def _sign(xp, x):
    """-1, 0 or 1, and 0 for NaN as in PyTorch (NumPy gives NaN)."""
    return xp.where(xp.isnan(x), x.dtype.type(0), xp.sign(x))


def sign(input) -> Tensor:
    """-1, 0 or 1, and 0 for NaN as in PyTorch (NumPy gives NaN); gradient 0 everywhere."""
    xp = input._backend.xp
    if not _is_float(input.dtype):
        return Tensor._wrap(xp.sign(input._data), input._backend)

    return _unary(input, lambda xp_, x: _sign(xp_, x), _step_grad(xp), "SignBackward0", "none")


def _rounding(name):
    def op(input) -> Tensor:  # noqa: A002
        if not _is_float(input.dtype):
            return input.clone()
        return _unary(
            input,
            lambda xp, x: getattr(xp, name)(x),
            _step_grad(input._backend.xp),
            f"{name.capitalize()}Backward0",
            "none",
        )

    op.__name__ = name
    op.__doc__ = f"Elementwise {name} (gradient 0, as in PyTorch)."
    return op


floor = _rounding("floor")
ceil = _rounding("ceil")
trunc = _rounding("trunc")


def round(input, decimals: int = 0) -> Tensor:  # noqa: A001
    """Round half to even (as PyTorch); gradient 0."""
    if not _is_float(input.dtype):
        return input.clone()
    xp = input._backend.xp
    return _unary(input, lambda xp_, x: xp_.round(x, decimals), _step_grad(xp), "RoundBackward0", "none")


def clamp(input, min=None, max=None) -> Tensor:  # noqa: A002
    """min(max(x, min), max); gradient g inside [min, max], 0 outside and at NaN (a selection, as in PyTorch: an
    inf or NaN g outside gives 0). ``min``/``max`` may be tensors."""
    if min is None and max is None:
        raise RuntimeError("clamp: at least one of 'min' or 'max' must not be None")
    if isinstance(min, Tensor) or isinstance(max, Tensor):  # tensor bounds get gradients too
        from gpunn.ops.shape import where

        out = input
        if min is not None:
            out = where((out >= min) | isnan(out), out, min)  # NaN stays NaN, as in PyTorch
        if max is not None:
            out = where((out <= max) | isnan(out), out, max)
        return out
    xp = input._backend.xp
    x = input._data
    lo = min._data if isinstance(min, Tensor) else min
    hi = max._data if isinstance(max, Tensor) else max
    out = x  # x where it is not beyond a bound (as PyTorch: NaN propagates, -0.0 stays -0.0)
    if lo is not None:
        out = xp.where(out < lo, lo, out)
    if hi is not None:
        out = xp.where(out > hi, hi, out)
    if _is_float(x.dtype) or not any(isinstance(v, float) for v in (lo, hi)):
        out = out.astype(x.dtype, copy=False)
    else:  # an integer tensor clamped to a float bound is float32, as in PyTorch
        out = out.astype(default_float, copy=False)
    inside = xp.ones(x.shape, dtype=bool)
    if lo is not None:
        inside = inside & (x >= lo)
    if hi is not None:
        inside = inside & (x <= hi)
    if inside.shape != out.shape:
        inside = xp.broadcast_to(inside, out.shape)
    return input._result(out, (input,), lambda g: (xp.where(inside, g, g.dtype.type(0)),), "ClampBackward1", saved=())


def clamp_min(input, min) -> Tensor:  # noqa: A002
    return clamp(input, min, None)


def clamp_max(input, max) -> Tensor:  # noqa: A002
    return clamp(input, None, max)


def _pick(self, other, op: str, larger: bool) -> Tensor:
    """Elementwise max/min of two tensors (NaN propagates); the gradient goes to the chosen side and is
    split evenly on ties, as in PyTorch: g (g / 2 on a tie), set to 0 on the side that lost -- so both sides
    get g where either is NaN, and an inf or NaN g on the losing side gives 0."""
    from gpunn.dtypes import _coerce
    from gpunn.tensor import _unbroadcast

    b = self._operand(other, op)
    xp = self._backend.xp
    a_data, b_data = _coerce(self._data, b._data)
    out = xp.maximum(a_data, b_data) if larger else xp.minimum(a_data, b_data)
    if not _is_float(out.dtype):
        return Tensor._wrap(out, self._backend)

    def backward(g):
        zero = g.dtype.type(0)
        shared = xp.where(a_data == b_data, g / g.dtype.type(2), g)
        a_lost, b_lost = (a_data < b_data, a_data > b_data) if larger else (a_data > b_data, a_data < b_data)
        ga = _unbroadcast(xp.where(a_lost, zero, shared), a_data.shape) if self.requires_grad else None
        gb = _unbroadcast(xp.where(b_lost, zero, shared), b_data.shape) if b.requires_grad else None
        return ga, gb

    return self._result(out, (self, b), backward, "MaximumBackward0" if larger else "MinimumBackward0")


def maximum(input, other) -> Tensor:
    return _pick(input, other, "maximum", True)


def minimum(input, other) -> Tensor:
    return _pick(input, other, "minimum", False)


# -- activations ------------------------------------------------------------------------------------
def relu(input, inplace: bool = False) -> Tensor:
    """max(x, 0) as PyTorch: 0 where x < 0, else x (NaN and -0.0 kept); gradient g, or 0 where the output <= 0."""
    _tensor(input, "relu")
    if inplace:
        return input.relu_()
    be = input._backend
    out = be.relu(input._data)
    return input._result(
        out, (input,), lambda g: (be.relu_backward(g, out),), "ReluBackward0", saved=(), saves_output=True
    )


def leaky_relu(input, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """x if x > 0 else negative_slope * x."""
    _float(input, "leaky_relu")
    if inplace:
        return input._inplace("leaky_relu_", lambda t: leaky_relu(t, negative_slope))
    x = input._data
    xp = input._backend.xp
    slope = x.dtype.type(negative_slope)
    out = xp.where(x > 0, x, x * slope)
    return input._result(out, (input,), lambda g: (xp.where(x > 0, g, g * slope),), "LeakyReluBackward0")


def sigmoid(input) -> Tensor:
    """1 / (1 + exp(-x)), computed without overflow; gradient y (1 - y)."""
    _tensor(input, "sigmoid")
    out = activation_forward(input._backend.xp, _as_float(input).copy(), "sigmoid")
    return input._result(
        out, (input,), lambda g: (g * out * (1 - out),), "SigmoidBackward0", saved=(), saves_output=True
    )


def tanh(input) -> Tensor:
    """tanh(x); gradient 1 - y^2."""
    _tensor(input, "tanh")
    return _unary(input, lambda xp, x: xp.tanh(x), lambda g, x, y: g * (1 - y * y), "TanhBackward0", "output")


def elu(input, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """x if x > 0 else alpha * (exp(x) - 1); gradient g * alpha * exp(x) where x <= 0, else g (NaN passes g, as in
    PyTorch)."""
    _float(input, "elu")
    if inplace:
        return input._inplace("elu_", lambda t: elu(t, alpha))
    xp = input._backend.xp

    def fwd(xp_, x):
        return xp.where(x > 0, x, x.dtype.type(alpha) * xp.expm1(x))

    def bwd(g, x, y):
        return xp.where(x <= 0, g * x.dtype.type(alpha) * xp.exp(x), g)

    return _unary(input, fwd, bwd, "EluBackward0")


def _erf(xp, x):
    """The error function elementwise: SciPy's (CuPy's on the GPU) when present, else math.erf per element."""
    if isinstance(x, np.ndarray):
        try:
            from scipy.special import erf
        except ImportError:  # SciPy is optional: exact, slower
            return np.vectorize(math.erf, otypes=[x.dtype])(x)
        return erf(x).astype(x.dtype, copy=False)
    from cupyx.scipy.special import erf

    return erf(x)


_SQRT_2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def gelu(input, approximate: str = "none") -> Tensor:
    """x * Phi(x) (``approximate='none'``, Phi the standard normal CDF: (1 + erf(x / sqrt 2)) / 2) or
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (``'tanh'``); gradients written out below."""
    _float(input, "gelu")
    xp = input._backend.xp
    if approximate == "none":

        def fwd(xp_, x):
            return x * (x.dtype.type(0.5) * (1 + _erf(xp, x / x.dtype.type(_SQRT_2))))

        def bwd(g, x, y):
            cdf = x.dtype.type(0.5) * (1 + _erf(xp, x / x.dtype.type(_SQRT_2)))
            pdf = xp.exp(x * x * x.dtype.type(-0.5)) * x.dtype.type(_INV_SQRT_2PI)
            return g * (cdf + x * pdf)

        return _unary(input, fwd, bwd, "GeluBackward0")
    if approximate == "tanh":

        def inner_tanh(x):
            k, c = x.dtype.type(_SQRT_2_OVER_PI), x.dtype.type(0.044715)
            return xp.tanh(k * (x + c * x * x * x))

        def bwd_tanh(g, x, y):
            k, c = x.dtype.type(_SQRT_2_OVER_PI), x.dtype.type(0.044715)
            t = inner_tanh(x)
            half = x.dtype.type(0.5)
            return g * (half * (1 + t) + half * x * (1 - t * t) * k * (1 + 3 * c * x * x))

        return _unary(input, lambda xp_, x: x.dtype.type(0.5) * x * (1 + inner_tanh(x)), bwd_tanh, "GeluBackward0")
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def softplus(input, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (linear there, as in PyTorch);
    gradient sigmoid(beta x) (1 above the threshold)."""
    _float(input, "softplus")
    b, th = float(beta), float(threshold)
    xp = input._backend.xp

    def fwd(xp_, x):
        bx = x * x.dtype.type(b)
        return xp.where(bx > th, x, xp.log1p(xp.exp(bx)) / x.dtype.type(b))

    def bwd(g, x, y):
        bx = x * x.dtype.type(b)
        return g * xp.where(bx > th, x.dtype.type(1), activation_forward(xp, bx, "sigmoid"))

    return _unary(input, fwd, bwd, "SoftplusBackward0")


def silu(input, inplace: bool = False) -> Tensor:
    """x * sigmoid(x) (the swish); gradient s (1 + x (1 - s)) with s = sigmoid(x)."""
    _float(input, "silu")
    if inplace:
        return input._inplace("silu_", lambda t: silu(t))
    xp = input._backend.xp

    def fwd(xp_, x):
        return x * activation_forward(xp, x.copy(), "sigmoid")

    def bwd(g, x, y):
        s = activation_forward(xp, x.copy(), "sigmoid")
        return g * (s * (1 + x * (1 - s)))

    return _unary(input, fwd, bwd, "SiluBackward0")


def hardtanh(input, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> Tensor:
    """x clamped to [min_val, max_val] (NaN and -0.0 kept); gradient g strictly inside, 0 at and beyond the
    bounds (a NaN input passes g, as in PyTorch)."""
    _tensor(input, "hardtanh")
    if inplace:
        return input._inplace("hardtanh_", lambda t: hardtanh(t, min_val, max_val))
    if min_val > max_val:
        raise ValueError("hardtanh: min_val cannot be greater than max_val")
    xp = input._backend.xp

    def fwd(xp_, x):
        lo, hi = x.dtype.type(min_val), x.dtype.type(max_val)
        return xp.where(x < lo, lo, xp.where(x > hi, hi, x))

    def bwd(g, x, y):
        return xp.where((x <= min_val) | (x >= max_val), g.dtype.type(0), g)

    return _unary(input, fwd, bwd, "HardtanhBackward0")


def relu6(input, inplace: bool = False) -> Tensor:
    """min(max(x, 0), 6): hardtanh(x, 0, 6)."""
    return hardtanh(input, 0.0, 6.0, inplace)


def _elu_family(self, alpha: float, scale: float, input_scale: float, op: str) -> Tensor:
    """PyTorch's ELU kernel: scale x where x > 0, else scale alpha (exp(input_scale x) - 1); gradient scale g,
    or g scale alpha input_scale exp(input_scale x) where x <= 0 (a NaN input takes the first)."""
    _float(self, op.lower())
    xp = self._backend.xp

    def fwd(xp_, x):
        t = x.dtype.type
        return xp.where(x <= 0, t(alpha * scale) * xp.expm1(x * t(input_scale)), x * t(scale))

    def bwd(g, x, y):
        t = x.dtype.type
        return xp.where(x <= 0, g * t(input_scale * alpha * scale) * xp.exp(x * t(input_scale)), g * t(scale))

    return _unary(self, fwd, bwd, op)


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def selu(input, inplace: bool = False) -> Tensor:
    """scale * elu(x, alpha) with PyTorch's constants (alpha 1.6733, scale 1.0507)."""
    if inplace:
        return input._inplace("selu_", selu)
    return _elu_family(input, _SELU_ALPHA, _SELU_SCALE, 1.0, "EluBackward0")


def celu(input, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """x if x > 0 else alpha (exp(x / alpha) - 1)."""
    if alpha == 0:
        raise RuntimeError("ZeroDivisionError: celu's alpha must not be 0")
    if inplace:
        return input._inplace("celu_", lambda t: celu(t, alpha))
    return _elu_family(input, alpha, 1.0, 1.0 / alpha, "EluBackward0")


def mish(input, inplace: bool = False) -> Tensor:
    """x tanh(softplus(x)); gradient tanh(sp) + x sigmoid(x) (1 - tanh(sp)^2)."""
    _float(input, "mish")
    if inplace:
        return input._inplace("mish_", mish)
    xp = input._backend.xp

    def tanh_sp(x):
        return xp.tanh(xp.where(x > 20, x, xp.log1p(xp.exp(xp.minimum(x, 20)))))

    def bwd(g, x, y):
        t = tanh_sp(x)
        return g * (t + x * activation_forward(xp, x.copy(), "sigmoid") * (1 - t * t))

    return _unary(input, lambda xp_, x: x * tanh_sp(x), bwd, "MishBackward0")


def hardswish(input, inplace: bool = False) -> Tensor:
    """x relu6(x + 3) / 6; gradient 0 up to -3, g (x / 3 + 1/2) in (-3, 3), g from 3 (a NaN input passes g)."""
    _float(input, "hardswish")
    if inplace:
        return input._inplace("hardswish_", hardswish)
    xp = input._backend.xp

    def fwd(xp_, x):
        t = x.dtype.type
        return x * xp.minimum(xp.maximum(x + t(3), t(0)), t(6)) / t(6)

    def bwd(g, x, y):
        t = x.dtype.type
        return xp.where(x <= -3, t(0), xp.where(x < 3, g * (x / t(3) + t(0.5)), g))

    return _unary(input, fwd, bwd, "HardswishBackward0")


def hardsigmoid(input, inplace: bool = False) -> Tensor:
    """relu6(x + 3) / 6; gradient g / 6 strictly inside (-3, 3), else 0."""
    _float(input, "hardsigmoid")
    if inplace:
        return input._inplace("hardsigmoid_", hardsigmoid)
    xp = input._backend.xp

    def fwd(xp_, x):
        t = x.dtype.type
        return xp.where(x <= -3, t(0), xp.where(x >= 3, t(1), x / t(6) + t(0.5)))

    def bwd(g, x, y):  # PyTorch multiplies by 1/6 rounded to float32, in float64 too
        return xp.where((x > -3) & (x < 3), g * g.dtype.type(np.float32(1 / 6)), g.dtype.type(0))

    return _unary(input, fwd, bwd, "HardsigmoidBackward0")


def _shrink(self, lambd: float, soft: bool, op: str) -> Tensor:
    _float(self, op.lower().removesuffix("backward0"))
    if lambd < 0:
        raise RuntimeError(f"{op.removesuffix('Backward0').lower()}: lambda must be non-negative, got {lambd}")
    xp = self._backend.xp

    def fwd(xp_, x):
        t = x.dtype.type
        inside = (x >= -lambd) & (x <= lambd)
        if not soft:
            return xp.where(inside, t(0), x)
        return xp.where(x > lambd, x - t(lambd), xp.where(x < -lambd, x + t(lambd), t(0) * x))

    def bwd(g, x, y):
        return xp.where((x >= -lambd) & (x <= lambd), g.dtype.type(0), g)

    return _unary(self, fwd, bwd, op)


def softshrink(input, lambd: float = 0.5) -> Tensor:
    """x - lambd above lambd, x + lambd below -lambd, 0 between; gradient g outside [-lambd, lambd] (NaN too)."""
    return _shrink(input, lambd, True, "SoftshrinkBackward0")


def hardshrink(input, lambd: float = 0.5) -> Tensor:
    """x outside [-lambd, lambd], 0 inside; gradient likewise."""
    return _shrink(input, lambd, False, "HardshrinkBackward0")


def threshold(input, threshold: float, value: float, inplace: bool = False) -> Tensor:
    """``value`` where x <= threshold, else x (NaN kept); gradient 0 there, else g."""
    return _threshold(input, threshold, value, inplace)


def _threshold(self, th: float, value: float, inplace: bool) -> Tensor:
    _tensor(self, "threshold")
    if inplace:
        return self._inplace("threshold_", lambda t: _threshold(t, th, value, False))
    xp = self._backend.xp

    def fwd(xp_, x):
        return xp.where(x <= th, x.dtype.type(value), x)

    return _unary(self, fwd, lambda g, x, y: xp.where(x <= th, g.dtype.type(0), g), "ThresholdBackward0")


def logsigmoid(input) -> Tensor:
    """log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)), without overflow; gradient g sigmoid(-x)."""
    _float(input, "logsigmoid")
    xp = input._backend.xp

    def fwd(xp_, x):
        return xp.minimum(x, x.dtype.type(0)) - xp.log1p(xp.exp(-xp.abs(x)))

    def bwd(g, x, y):
        return g * activation_forward(xp, -x, "sigmoid")

    return _unary(input, fwd, bwd, "LogSigmoidBackward0")


def softsign(input) -> Tensor:
    """x / (1 + |x|) (composite, as in PyTorch)."""
    _float(input, "softsign")
    return input / (abs(input) + 1)


def tanhshrink(input) -> Tensor:
    """x - tanh(x) (composite, as in PyTorch)."""
    _float(input, "tanhshrink")
    return input - tanh(input)


def softmin(input, dim: int | None = None, dtype=None) -> Tensor:
    """softmax(-x) along ``dim``."""
    if dim is None:
        dim = _implicit_dim(input.ndim, "softmin")
    return softmax(-input, dim, dtype)


def glu(input, dim: int = -1) -> Tensor:
    """a * sigmoid(b), a and b the two halves of x along ``dim`` (its size must be even)."""
    _float(input, "glu")
    axis = input._dim(dim, "glu")
    if input.shape[axis] % 2:
        raise RuntimeError(f"Halving dimension must be even, but dimension {axis} is size {input.shape[axis]}")
    a, b = input.chunk(2, axis)
    return a * sigmoid(b)


def prelu(input, weight) -> Tensor:
    """x where x > 0, else weight * x; ``weight`` has 1 element or one per channel (dim 1)."""
    _float(input, "prelu")
    from gpunn.ops.shape import where

    w = weight
    if w.numel() != 1:
        if input.ndim < 2 or w.numel() != input.shape[1]:
            raise RuntimeError(
                f"Mismatch of parameter numbers and input channel size. Found parameter numbers = {w.numel()} "
                f"and channel size = {input.shape[1] if input.ndim > 1 else 1}."
            )
        w = w.reshape((1, -1) + (1,) * (input.ndim - 2))
    elif input.ndim:
        w = w.reshape(())
    return where(input > 0, input, w * input)


def _tensor(t, fname: str):
    if not isinstance(t, Tensor):
        raise TypeError(f"{fname}(): argument 'input' must be a gpunn Tensor, got {type(t).__name__}")
    return t


def _float(t, fname: str):
    _tensor(t, fname)
    if not _is_float(t.dtype):
        raise TypeError(f"{fname}(): argument 'input' must be a floating-point tensor, got dtype {t.dtype}")
    return t


def _implicit_dim(ndim: int, fname: str) -> int:
    import warnings

    warnings.warn(
        f"Implicit dimension choice for {fname} has been deprecated. Change the call to include dim=X as an argument.",
        UserWarning,
        stacklevel=3,
    )
    return 0 if ndim in (0, 1, 3) else 1


def softmax(input, dim: int | None = None, dtype=None) -> Tensor:
    """exp(x - max) / sum(exp(x - max)) along ``dim``; backward y * (g - sum(g * y))."""
    if dtype is not None:
        input = input.astype(dtype)
    _float(input, "softmax")
    dim = _implicit_dim(input.ndim, "softmax") if dim is None else input._dim(dim, "softmax")
    xp = input._backend.xp
    x = input._data
    if x.size == 0:  # as PyTorch: an empty result (a max over nothing would fail)
        return input._result(x.copy(), (input,), lambda g: (g * 0,), "SoftmaxBackward0", saved=())
    e = xp.exp(x - x.max(axis=dim, keepdims=True))
    y = e / e.sum(axis=dim, keepdims=True)
    return input._result(
        y,
        (input,),
        lambda g: (y * (g - (g * y).sum(axis=dim, keepdims=True)),),
        "SoftmaxBackward0",
        saved=(),
        saves_output=True,
    )


def log_softmax(input, dim: int | None = None, dtype=None) -> Tensor:
    """x - logsumexp(x) along ``dim``; backward g - softmax(x) * sum(g)."""
    if dtype is not None:
        input = input.astype(dtype)
    _float(input, "log_softmax")
    dim = _implicit_dim(input.ndim, "log_softmax") if dim is None else input._dim(dim, "log_softmax")
    xp = input._backend.xp
    x = input._data
    if x.size == 0:  # as PyTorch: an empty result (a max over nothing would fail)
        return input._result(x.copy(), (input,), lambda g: (g * 0,), "LogSoftmaxBackward0", saved=())
    shifted = x - x.max(axis=dim, keepdims=True)
    y = shifted - xp.log(xp.exp(shifted).sum(axis=dim, keepdims=True))
    return input._result(
        y,
        (input,),
        lambda g: (g - xp.exp(y) * g.sum(axis=dim, keepdims=True),),
        "LogSoftmaxBackward0",
        saved=(),
        saves_output=True,
    )


def logsumexp(input, dim, keepdim: bool = False) -> Tensor:
    """log(sum(exp(x))) along ``dim``, stably."""
    _float(input, "logsumexp")
    m = input.detach().amax(dim, keepdim=True)
    m = m.masked_fill(~m.isfinite(), 0.0)
    out = (input - m).exp().sum(dim, keepdim=True).log() + m
    return (
        out
        if keepdim
        else out.squeeze(dim)
        if isinstance(dim, int)
        else out.reshape(tuple(n for i, n in enumerate(out.shape) if i not in {d % input.ndim for d in dim}))
    )


def isfinite(input) -> Tensor:
    return Tensor._wrap(input._backend.xp.isfinite(input._data), input._backend)


def isnan(input) -> Tensor:
    return Tensor._wrap(input._backend.xp.isnan(input._data), input._backend)


def isinf(input) -> Tensor:
    return Tensor._wrap(input._backend.xp.isinf(input._data), input._backend)


clip = clamp


# -- more elementwise math ----------------------------------------------------------------------------
def _math(name: str, fwd, dfn, saves: str = "input", doc: str = ""):
    """A float op ``fwd(xp, x)`` with derivative ``dfn(xp, g, x, y)`` (x: input, y: output)."""

    def op(input) -> Tensor:  # noqa: A002
        _tensor(input, name)
        xp = input._backend.xp
        return _unary(input, fwd, lambda g, x, y: dfn(xp, g, x, y), f"{name.capitalize()}Backward0", saves)

    op.__name__ = name
    op.__doc__ = doc
    return op


sinh = _math("sinh", lambda xp, x: xp.sinh(x), lambda xp, g, x, y: g * xp.cosh(x), doc="sinh(x); gradient cosh(x).")
cosh = _math("cosh", lambda xp, x: xp.cosh(x), lambda xp, g, x, y: g * xp.sinh(x), doc="cosh(x); gradient sinh(x).")
asin = _math(
    "asin", lambda xp, x: xp.arcsin(x), lambda xp, g, x, y: g / xp.sqrt(1 - x * x), doc="arcsin; 1 / sqrt(1 - x^2)."
)
acos = _math(
    "acos", lambda xp, x: xp.arccos(x), lambda xp, g, x, y: -g / xp.sqrt(1 - x * x), doc="arccos; -1/sqrt(1 - x^2)."
)
atan = _math("atan", lambda xp, x: xp.arctan(x), lambda xp, g, x, y: g / (1 + x * x), doc="arctan; 1 / (1 + x^2).")
asinh = _math(
    "asinh", lambda xp, x: xp.arcsinh(x), lambda xp, g, x, y: g / xp.sqrt(x * x + 1), doc="arsinh; 1/sqrt(x^2 + 1)."
)
acosh = _math(
    "acosh", lambda xp, x: xp.arccosh(x), lambda xp, g, x, y: g / xp.sqrt(x * x - 1), doc="arcosh; 1/sqrt(x^2 - 1)."
)
atanh = _math("atanh", lambda xp, x: xp.arctanh(x), lambda xp, g, x, y: g / (1 - x * x), doc="artanh; 1 / (1 - x^2).")
exp2 = _math(
    "exp2",
    lambda xp, x: xp.exp2(x),
    lambda xp, g, x, y: g * y * y.dtype.type(math.log(2.0)),
    "output",
    doc="2^x; gradient 2^x ln 2.",
)
frac = _math("frac", lambda xp, x: x - xp.trunc(x), lambda xp, g, x, y: g, "none", doc="x - trunc(x); gradient 1.")


def erf(input) -> Tensor:
    """The error function; gradient 2 / sqrt(pi) exp(-x^2)."""
    _tensor(input, "erf")
    xp = input._backend.xp
    two_over_sqrt_pi = 2.0 / math.sqrt(math.pi)
    return _unary(
        input,
        lambda xp_, x: _erf(xp, x),
        lambda g, x, y: g * x.dtype.type(two_over_sqrt_pi) * xp.exp(-x * x),
        "ErfBackward0",
    )


def nan_to_num(input, nan: float = 0.0, posinf: float | None = None, neginf: float | None = None) -> Tensor:
    """NaN -> ``nan``, +inf -> ``posinf`` (the dtype's max by default), -inf -> ``neginf`` (its lowest);
    gradient g where x is finite, else 0 (g times the finite mask, as PyTorch)."""
    _tensor(input, "nan_to_num")
    xp = input._backend.xp
    if not _is_float(input.dtype):
        return input.clone()

    def fwd(xp_, x):
        return xp.nan_to_num(x, nan=nan, posinf=posinf, neginf=neginf)

    return _unary(input, fwd, lambda g, x, y: g * xp.isfinite(x), "NanToNumBackward0")


def signbit(input) -> Tensor:
    """True where the sign bit is set (negative values, -0.0, negative NaN)."""
    return Tensor._wrap(input._backend.xp.signbit(input._data), input._backend)


def deg2rad(input) -> Tensor:
    return input * (math.pi / 180.0)


def rad2deg(input) -> Tensor:
    return input * (180.0 / math.pi)


def _pick_number(self, other, larger: bool) -> Tensor:
    """fmax / fmin: like maximum / minimum, but a NaN loses to a number."""
    from gpunn.ops.shape import where

    b = self._operand(other, "fmax" if larger else "fmin")
    a_nan, b_nan = self.isnan(), b.isnan()
    picked = maximum(self, b) if larger else minimum(self, b)
    return where(a_nan & ~b_nan, b, where(b_nan & ~a_nan, self, picked))


def fmax(input, other) -> Tensor:
    return _pick_number(input, other, True)


def fmin(input, other) -> Tensor:
    return _pick_number(input, other, False)


def heaviside(input, values) -> Tensor:
    """0 where x < 0, ``values`` where x == 0, 1 where x > 0 (not differentiable, as in PyTorch)."""
    xp = input._backend.xp
    v = values._data if isinstance(values, Tensor) else values
    return Tensor._wrap(xp.heaviside(input._data, v).astype(input.dtype), input._backend)


def isposinf(input) -> Tensor:
    return Tensor._wrap(input._backend.xp.isposinf(input._data), input._backend)


def isneginf(input) -> Tensor:
    return Tensor._wrap(input._backend.xp.isneginf(input._data), input._backend)
