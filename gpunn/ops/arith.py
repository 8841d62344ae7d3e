"""Arithmetic (+ - * / ** @ and their broadcasting gradients) and comparisons (no gradient)."""

from __future__ import annotations

import numpy as np

from gpunn.dtypes import _coerce, _is_float, default_float
from gpunn.tensor import Tensor, _check_same_backend, _unbroadcast


def add(input, other, alpha=1) -> Tensor:
    """input + alpha * other (broadcasting)."""
    b = input._operand(other, "add")
    if alpha != 1:
        b = mul(b, alpha)
    a_data, b_data = _coerce(input._data, b._data)
    out = a_data + b_data
    sa, sb = input.shape, b.shape
    return input._result(
        out, (input, b), lambda g: (_unbroadcast(g, sa), _unbroadcast(g, sb)), "AddBackward0", saved=()
    )


def sub(input, other, alpha=1) -> Tensor:
    """input - alpha * other (broadcasting)."""
    b = input._operand(other, "sub")
    if alpha != 1:
        b = mul(b, alpha)
    if input.dtype == np.bool_ or b.dtype == np.bool_:
        raise RuntimeError(
            "Subtraction, the `-` operator, with a bool tensor is not supported; use `^` or logical_xor() instead"
        )
    a_data, b_data = _coerce(input._data, b._data)
    out = a_data - b_data
    sa, sb = input.shape, b.shape
    return input._result(
        out, (input, b), lambda g: (_unbroadcast(g, sa), _unbroadcast(-g, sb)), "SubBackward0", saved=()
    )


def rsub(input, other) -> Tensor:
    return sub(input._operand(other, "sub"), input)


def mul(input, other) -> Tensor:
    """input * other (broadcasting); d/dself = other, d/dother = input."""
    b = input._operand(other, "mul")
    a_data, b_data = _coerce(input._data, b._data)
    out = a_data * b_data

    def backward(g):
        ga = _unbroadcast(g * b_data, a_data.shape) if input.requires_grad else None
        gb = _unbroadcast(g * a_data, b_data.shape) if b.requires_grad else None
        return ga, gb

    saved = (b if input.requires_grad else None, input if b.requires_grad else None)
    return input._result(out, (input, b), backward, "MulBackward0", saved=saved)


def div(input, other, rounding_mode=None) -> Tensor:
    """input / other (true division: integers give float32); ``rounding_mode`` 'floor' or 'trunc'."""
    b = input._operand(other, "div")
    if rounding_mode is not None:
        if rounding_mode not in ("floor", "trunc"):
            raise ValueError(f"div(): rounding_mode must be None, 'floor' or 'trunc', got {rounding_mode!r}")
        from gpunn.ops.pointwise import floor, trunc

        if not _is_float(input.dtype) and not _is_float(b.dtype):  # integer division stays integer
            q = _int_divide(*_coerce(input._data, b._data), rounding_mode)
            return Tensor._wrap(q, input._backend)
        return (floor if rounding_mode == "floor" else trunc)(div(input, b))
    a_data, b_data = _coerce(input._data, b._data)
    if not _is_float(a_data.dtype) and not _is_float(b_data.dtype):  # int / int -> float32
        a_data, b_data = a_data.astype(default_float), b_data.astype(default_float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = a_data / b_data

    def backward(g):
        with np.errstate(divide="ignore", invalid="ignore"):
            ga = _unbroadcast(g / b_data, a_data.shape) if input.requires_grad else None
            gb = _unbroadcast(-g * out / b_data, b_data.shape) if b.requires_grad else None
        return ga, gb

    return input._result(out, (input, b), backward, "DivBackward0", saved=(b,), saves_output=b.requires_grad)


def _int_divide(a, b, mode):
    if bool((b == 0).any()):
        raise RuntimeError("ZeroDivisionError: integer division by zero")
    q = a // b
    if mode == "trunc":
        q = q + ((q < 0) & (q * b != a))
    return q


def rdiv(input, other) -> Tensor:
    return div(input._operand(other, "div"), input)


def floor_divide(input, other) -> Tensor:
    return div(input, other, rounding_mode="floor")


def remainder(input, other) -> Tensor:
    """input - floor(input / other) * other (Python's sign convention, as PyTorch)."""
    b = input._operand(other, "remainder")
    a_data, b_data = _coerce(input._data, b._data)
    if not _is_float(a_data.dtype):
        return Tensor._wrap(a_data % b_data, input._backend)
    from gpunn.ops.pointwise import floor

    return sub(input, mul(floor(div(input, b)).detach(), b))  # d/dself 1, d/dother -floor(input / other)


def neg(input) -> Tensor:
    if input.dtype == np.bool_:
        raise RuntimeError("Negation, the `-` operator, on a bool tensor is not supported; use `~` instead")
    return input._result(-input._data, (input,), lambda g: (-g,), "NegBackward0", saved=())


def pos(input) -> Tensor:
    return input


def pow(input, exponent) -> Tensor:  # noqa: A001
    """input ** exponent (a number or a tensor; both broadcast)."""
    if isinstance(input, (int, float)):  # gpunn.pow(2, t)
        return pow(exponent._operand(input, "pow"), exponent)
    x = input._data
    if isinstance(exponent, (int, float)) and not isinstance(exponent, bool):
        p = exponent
        if isinstance(p, float) and not _is_float(x.dtype):  # int tensor ** 0.5 -> float32
            x = x.astype(default_float)
        if not _is_float(x.dtype) and p < 0:
            raise RuntimeError("Integers to negative integer powers are not allowed.")
        with np.errstate(divide="ignore", invalid="ignore"):
            out = x ** x.dtype.type(p) if _is_float(x.dtype) else x**p
        if p == 0:  # d/dx x^0 = 0 everywhere, including x = 0 (not 0 * inf), as in PyTorch
            xp = input._backend.xp  # zeros, not g * 0 (NaN for an inf or NaN g)
            return input._result(out, (input,), lambda g: (xp.zeros_like(g),), "PowBackward0", saved=())

        def backward_scalar(g):
            with np.errstate(divide="ignore", invalid="ignore"):
                return (g * p * x ** x.dtype.type(p - 1),)

        return input._result(out, (input,), backward_scalar, "PowBackward0")
    e = input._operand(exponent, "pow")
    x, e_data = _coerce(x, e._data)  # 2.5 ** int_tensor -> float32, as in PyTorch
    with np.errstate(divide="ignore", invalid="ignore"):
        out = x**e_data
    xp = input._backend.xp

    def backward(g):
        gx = ge = None
        with np.errstate(divide="ignore", invalid="ignore"):
            if input.requires_grad:
                gx = g * e_data * x ** (e_data - 1)
                gx = _unbroadcast(xp.where(e_data == 0, 0, gx), x.shape)  # torch: 0 where e == 0
            if e.requires_grad:  # PyTorch's: g * x^e log x, 0 where x == 0 and e >= 0 (NaN for x < 0)
                ge = g * xp.where((e_data >= 0) & (x == 0), out.dtype.type(0), out * xp.log(x))
                ge = _unbroadcast(ge, e.shape)
        return gx, ge

    return input._result(out, (input, e), backward, "PowBackward1", saves_output=e.requires_grad)


def rpow(input, base) -> Tensor:
    return pow(input._operand(base, "pow"), input)


def matmul(input, other) -> Tensor:
    """Matrix product with NumPy/PyTorch broadcasting of batch dims; 1-D operands are vectors."""
    b = input._operand(other, "matmul")
    if input.dtype != b.dtype:  # PyTorch's matmul does not promote: int @ float and float32 @ float64 raise
        raise RuntimeError(
            f"matmul: expected both operands to have the same dtype, but got {input.dtype} and {b.dtype}"
        )
    a_data, b_data = input._data, b._data
    if a_data.ndim == 0 or b_data.ndim == 0:
        raise RuntimeError("matmul: both arguments need at least 1 dimension, got a 0-d tensor")
    if a_data.shape[-1] != b_data.shape[-2 if b_data.ndim > 1 else 0]:
        raise RuntimeError(
            f"matmul: shapes {input.shape} and {b.shape} can't be multiplied "
            f"({a_data.shape[-1]} != {b_data.shape[-2 if b_data.ndim > 1 else 0]})"
        )
    be = input._backend
    out = be.matmul(a_data, b_data)
    xp = be.xp

    def backward(g):
        a2 = a_data[None, :] if a_data.ndim == 1 else a_data
        b2 = b_data[:, None] if b_data.ndim == 1 else b_data
        g2 = g  # restore the dims matmul dropped for 1-D operands (b's first: g is 0-d for 1-D @ 1-D)
        if b_data.ndim == 1:
            g2 = xp.expand_dims(g2, -1)
        if a_data.ndim == 1:
            g2 = xp.expand_dims(g2, -2)
        ga = gb = None
        if input.requires_grad:
            ga = be.matmul(g2, xp.swapaxes(b2, -1, -2))
            ga = _unbroadcast(ga, a2.shape).reshape(a_data.shape)
        if b.requires_grad:
            gb = be.matmul(xp.swapaxes(a2, -1, -2), g2)
            gb = _unbroadcast(gb, b2.shape).reshape(b_data.shape)
        return ga, gb

    saved = (b if input.requires_grad else None, input if b.requires_grad else None)
    return input._result(out, (input, b), backward, "MmBackward0", saved=saved)


def rmatmul(input, other) -> Tensor:
    return matmul(input._operand(other, "matmul"), input)


def mm(input, mat2) -> Tensor:  # noqa: A002
    if input.ndim != 2 or getattr(mat2, "ndim", 0) != 2:
        raise RuntimeError(f"mm(): both arguments must be 2-D, got {input.ndim}-D and {getattr(mat2, 'ndim', 0)}-D")
    return matmul(input, mat2)


def bmm(input, mat2) -> Tensor:  # noqa: A002
    if input.ndim != 3 or getattr(mat2, "ndim", 0) != 3:
        raise RuntimeError("bmm(): both arguments must be 3-D (batch, n, m)")
    return matmul(input, mat2)


def dot(input, tensor) -> Tensor:  # noqa: A002
    if input.ndim != 1 or getattr(tensor, "ndim", 0) != 1:
        raise RuntimeError("dot(): 1D tensors expected")
    return matmul(input, tensor)


# -- comparisons and logic (no gradient) --------------------------------------------------------------
def _compare(self, other, fn, op):
    b = self._operand(other, op)
    return Tensor._wrap(fn(*_coerce(self._data, b._data)), self._backend)


def eq(input, other):
    return _compare(input, other, lambda a, b: a == b, "eq")


def ne(input, other):
    return _compare(input, other, lambda a, b: a != b, "ne")


def lt(input, other):
    return _compare(input, other, lambda a, b: a < b, "lt")


def le(input, other):
    return _compare(input, other, lambda a, b: a <= b, "le")


def gt(input, other):
    return _compare(input, other, lambda a, b: a > b, "gt")


def ge(input, other):
    return _compare(input, other, lambda a, b: a >= b, "ge")


def equal(input, other) -> bool:
    """True when both have the same shape and elements (``torch.equal``)."""
    return input.shape == other.shape and bool((input._data == other._data).all())


def isclose(input, other, rtol=1e-5, atol=1e-8, equal_nan=False):
    b = input._operand(other, "isclose")
    return Tensor._wrap(
        input._backend.xp.isclose(input._data, b._data, rtol=rtol, atol=atol, equal_nan=equal_nan), input._backend
    )


def allclose(input, other, rtol=1e-5, atol=1e-8, equal_nan=False) -> bool:
    return bool(isclose(input, other, rtol, atol, equal_nan)._data.all())


def _logic(self, other, fn, op):
    b = self._operand(other, op)
    if _is_float(self.dtype) or _is_float(b.dtype):
        raise RuntimeError(
            f"{op}: bitwise/logical operators need integer or bool tensors, got {self.dtype} and {b.dtype}"
        )
    return Tensor._wrap(fn(self._data, b._data), self._backend)


def bitwise_and(input, other):
    return _logic(input, other, lambda a, b: a & b, "and")


def bitwise_or(input, other):
    return _logic(input, other, lambda a, b: a | b, "or")


def bitwise_xor(input, other):
    return _logic(input, other, lambda a, b: a ^ b, "xor")


def bitwise_not(input):
    if _is_float(input.dtype):
        raise RuntimeError("~ (bitwise_not) needs an integer or bool tensor")
    return Tensor._wrap(~input._data, input._backend)


def logical_not(input):
    return Tensor._wrap(input._backend.xp.logical_not(input._data), input._backend)


def logical_and(input, other):
    return Tensor._wrap(
        input._backend.xp.logical_and(input._data, input._operand(other, "logical_and")._data), input._backend
    )


def logical_or(input, other):
    return Tensor._wrap(
        input._backend.xp.logical_or(input._data, input._operand(other, "logical_or")._data), input._backend
    )


subtract, multiply, divide = sub, mul, div


def true_divide(input, other) -> Tensor:  # noqa: A002
    """input / other, always true division (``div`` without a rounding mode)."""
    return div(input, other)


def outer(input, vec2) -> Tensor:
    """The outer product of two 1-D tensors: out[i, j] = a[i] b[j]."""
    b = input._operand(vec2, "outer")
    if input.ndim != 1 or b.ndim != 1:
        raise RuntimeError(f"outer: expected two 1-D tensors, got shapes {input.shape} and {b.shape}")
    return mul(input.reshape(-1, 1), b.reshape(1, -1))


def einsum(equation: str, *operands) -> Tensor:
    """Einstein summation (``'bij,bjk->bik'``): the product of the operands summed over the letters missing
    from the output (implicit output: the letters used once, in alphabetical order). The gradient of each
    operand is the einsum of the output gradient with the other operands onto its letters (a letter seen
    only in that operand and summed away is broadcast back). ``...`` and a letter repeated within one
    operand (a diagonal) are not supported and raise."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if not operands or not all(isinstance(t, Tensor) for t in operands):
        raise TypeError("einsum(): operands must be gpunn Tensors")
    eq = equation.replace(" ", "")
    if "." in eq:
        raise NotImplementedError("einsum: '...' (ellipsis) is not supported by gpunn; write the dimensions out")
    lhs, arrow, rhs = eq.partition("->")
    ins = lhs.split(",")
    if len(ins) != len(operands):
        raise RuntimeError(f"einsum(): {len(ins)} operand subscripts but {len(operands)} operands were given")
    if not arrow:
        letters = "".join(ins)
        rhs = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    sizes = {}
    for sub, t in zip(ins, operands):
        if not sub.isalpha() and sub:
            raise RuntimeError(f"einsum(): invalid subscript {sub!r} (letters only)")
        if len(set(sub)) != len(sub):
            raise NotImplementedError(
                f"einsum: a letter repeated within one operand ({sub!r}) is not supported by gpunn"
            )
        if len(sub) != t.ndim:
            raise RuntimeError(
                f"einsum(): the subscript {sub!r} has {len(sub)} letters for an operand of {t.ndim} dims"
            )
        for c, n in zip(sub, t.shape):
            if sizes.setdefault(c, n) != n:
                raise RuntimeError(f"einsum(): subscript {c} has size {n} for an operand which does not broadcast "
                                   f"with the previously seen size {sizes[c]}")  # fmt: skip
    if any(c not in sizes for c in rhs) or len(set(rhs)) != len(rhs):
        raise RuntimeError(f"einsum(): invalid output subscripts {rhs!r}")
    first = operands[0]
    for t in operands[1:]:
        _check_same_backend(first, t, "einsum")
    dtypes = {t.dtype for t in operands}
    if len(dtypes) != 1:
        raise RuntimeError(f"einsum(): expected operands of one dtype, got {sorted(map(str, dtypes))}")
    xp = first._backend.xp
    datas = [t._data for t in operands]
    out = xp.einsum(f"{','.join(ins)}->{rhs}", *datas)

    def backward(g):
        grads = []
        for i, (sub, t) in enumerate(zip(ins, operands)):
            if not t.requires_grad:
                grads.append(None)
                continue
            others = [(s, d) for j, (s, d) in enumerate(zip(ins, datas)) if j != i]
            seen = set(rhs).union(*(set(s) for s, _ in others))
            lonely = "".join(c for c in sub if c not in seen)  # summed over in this operand only
            subs = [rhs] + [s for s, _ in others]
            arrays = [g] + [d for _, d in others]
            if lonely:
                subs.append(lonely)
                arrays.append(xp.ones(tuple(sizes[c] for c in lonely), dtype=g.dtype))
            grads.append(xp.einsum(f"{','.join(subs)}->{sub}", *arrays))
        return tuple(grads)

    return first._result(xp.asarray(out), tuple(operands), backward, "EinsumBackward0")


def atan2(input, other) -> Tensor:
    """The angle of (other, input) (``atan2(y, x)``), broadcasting; gradients x / r^2 and -y / r^2."""
    b = input._operand(other, "atan2")
    xp = input._backend.xp
    y, x = _coerce(input._data, b._data)
    if not _is_float(y.dtype):
        y, x = y.astype(default_float), x.astype(default_float)
    out = xp.arctan2(y, x)

    def backward(g):
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = x * x + y * y
            gy = _unbroadcast(g * x / r2, input.shape) if input.requires_grad else None
            gx = _unbroadcast(-g * y / r2, b.shape) if b.requires_grad else None
        return gy, gx

    return input._result(out, (input, b), backward, "Atan2Backward0")


def fmod(input, other) -> Tensor:
    """C's remainder: the sign of the dividend (``remainder``/``%`` takes the divisor's); gradient 1 for
    input, -trunc(input / other) for other."""
    b = input._operand(other, "fmod")
    xp = input._backend.xp
    a_data, b_data = _coerce(input._data, b._data)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = xp.fmod(a_data, b_data)
    if not _is_float(out.dtype):
        return Tensor._wrap(out, input._backend)

    def backward(g):
        with np.errstate(divide="ignore", invalid="ignore"):
            ga = _unbroadcast(g, input.shape) if input.requires_grad else None
            gb = _unbroadcast(-g * xp.trunc(a_data / b_data), b.shape) if b.requires_grad else None
        return ga, gb

    return input._result(out, (input, b), backward, "FmodBackward0")


def logaddexp(input, other) -> Tensor:
    """log(exp(a) + exp(b)) without overflow (composite)."""
    from gpunn.ops.pointwise import maximum

    b = input._operand(other, "logaddexp")
    m = maximum(input.detach(), b.detach())
    m = m.masked_fill(~m.isfinite(), 0.0)
    return ((input - m).exp() + (b - m).exp()).log() + m


def lerp(input, end, weight) -> Tensor:
    """input + weight (end - input) (composite; ``weight`` a number or a tensor)."""
    return add(input, mul(sub(input._operand(end, "lerp"), input), weight))


def addcmul(input, tensor1, tensor2, value=1) -> Tensor:
    """input + value * tensor1 * tensor2 (composite)."""
    return add(input, mul(mul(input._operand(tensor1, "addcmul"), tensor2), value))


def addcdiv(input, tensor1, tensor2, value=1) -> Tensor:
    """input + value * tensor1 / tensor2 (composite)."""
    return add(input, mul(div(input._operand(tensor1, "addcdiv"), tensor2), value))


def addmm(input, mat1, mat2, *, beta=1, alpha=1) -> Tensor:
    """beta * input + alpha * (mat1 @ mat2) (composite; beta = 0 ignores input, NaN included, as PyTorch)."""
    prod = mm(input._operand(mat1, "addmm"), mat2)
    if alpha != 1:
        prod = mul(prod, alpha)
    if beta == 0:  # input only has to broadcast to the product's shape
        np.broadcast_shapes(input.shape, prod.shape)
        return prod
    return add(mul(input, beta) if beta != 1 else input, prod)


def logical_xor(input, other) -> Tensor:
    b = input._operand(other, "logical_xor")
    return Tensor._wrap(input._backend.xp.logical_xor(input._data, b._data), input._backend)


_CDIST_MODES = ("use_mm_for_euclid_dist_if_necessary", "use_mm_for_euclid_dist", "donot_use_mm_for_euclid_dist")


def cdist(x1, x2, p: float = 2.0, compute_mode="use_mm_for_euclid_dist_if_necessary") -> Tensor:
    """Pairwise p-norm distances between the rows of x1 (*, P, M) and x2 (*, R, M): (*, P, R) (composite).
    ``compute_mode`` picks PyTorch's algorithm; gpunn always takes the direct difference (the exact one)."""
    if compute_mode is not None and compute_mode not in _CDIST_MODES:
        raise ValueError(f"cdist: {compute_mode} is not a valid value for compute_mode")
    if x1.ndim < 2 or x2.ndim < 2 or x1.shape[-1] != x2.shape[-1]:
        raise RuntimeError(f"cdist: expected (*, P, M) and (*, R, M) with the same M, got {x1.shape} and {x2.shape}")
    return (x1.unsqueeze(-2) - x2.unsqueeze(-3)).norm(p, dim=-1)


def mv(input, vec) -> Tensor:
    """Matrix (n, m) times vector (m,)."""
    if input.ndim != 2 or vec.ndim != 1:
        raise RuntimeError(f"mv: expected a matrix and a vector, got shapes {input.shape} and {vec.shape}")
    return matmul(input, vec)


def hypot(input, other) -> Tensor:
    """sqrt(a^2 + b^2) (composite)."""
    b = input._operand(other, "hypot")
    return (input * input + b * b).sqrt()


def xlogy(input, other) -> Tensor:
    """input * log(other), 0 where input == 0 (unless other is NaN), as PyTorch."""
    from gpunn.ops.shape import where

    b = input._operand(other, "xlogy")
    zero = (input == 0) & ~b.isnan()
    return where(zero, 0.0, input * b.log())


def float_power(input, exponent) -> Tensor:
    """input ** exponent in float64."""
    e = exponent.astype(np.float64) if isinstance(exponent, Tensor) else float(exponent)
    return pow(input.astype(np.float64), e)


def tensordot(a, b, dims=2) -> Tensor:
    """Sum of products over the last ``dims`` dims of a and the first of b (or the dim lists ``dims``)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    if isinstance(dims, int):
        da, db = list(range(a.ndim - dims, a.ndim)), list(range(dims))
    else:
        da, db = ([dims[0]] if isinstance(dims[0], int) else list(dims[0])), (
            [dims[1]] if isinstance(dims[1], int) else list(dims[1]))  # fmt: skip
    da, db = [d % a.ndim for d in da], [d % b.ndim for d in db]
    sa = list(letters[: a.ndim])
    sb = list(letters[a.ndim : a.ndim + b.ndim])
    for i, j in zip(da, db):
        sb[j] = sa[i]
    out = [c for i, c in enumerate(sa) if i not in da] + [c for j, c in enumerate(sb) if j not in db]
    return einsum(f"{''.join(sa)},{''.join(sb)}->{''.join(out)}", a, b)


def inner(input, other) -> Tensor:
    """Sum of products over the last dims (scalars multiply)."""
    b = input._operand(other, "inner")
    if input.ndim == 0 or b.ndim == 0:
        return mul(input, b)
    return tensordot(input, b, ([-1], [-1]))


def vdot(input, other) -> Tensor:
    """The dot product of two 1-D tensors."""
    return dot(input, other)


def kron(input, other) -> Tensor:
    """The Kronecker product (same rank, or the lower-rank one padded with leading 1s)."""
    b = input._operand(other, "kron")
    a = input
    n = max(a.ndim, b.ndim)
    a = a.reshape((1,) * (n - a.ndim) + a.shape)
    b = b.reshape((1,) * (n - b.ndim) + b.shape)
    inter_a = [v for s in a.shape for v in (s, 1)]
    inter_b = [v for s in b.shape for v in (1, s)]
    return mul(a.reshape(inter_a), b.reshape(inter_b)).reshape(tuple(x * y for x, y in zip(a.shape, b.shape)))


def baddbmm(input, batch1, batch2, *, beta=1, alpha=1) -> Tensor:
    """beta * input + alpha * (batch1 @ batch2), batched (composite; beta = 0 ignores input)."""
    prod = bmm(input._operand(batch1, "baddbmm"), batch2)
    if alpha != 1:
        prod = mul(prod, alpha)
    if beta == 0:
        np.broadcast_shapes(input.shape, prod.shape)
        return prod
    return add(mul(input, beta) if beta != 1 else input, prod)
