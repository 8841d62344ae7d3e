"""Binds the ops as Tensor methods and operators: ``t.exp()`` and ``gpunn.exp(t)`` are one function."""

from __future__ import annotations

import numpy as np

from gpunn.ops import arith, pointwise, reduce, shape
from gpunn.ops.inplace import INPLACE
from gpunn.tensor import Tensor


def _where_method(self, condition, other):
    return shape.where(condition, self, other)


def _rfloordiv(self, other):
    return arith.floor_divide(self._operand(other, "floor_divide"), self)


def _rmod(self, other):
    return arith.remainder(self._operand(other, "remainder"), self)


def _new(fill):
    def op(self, *size, dtype=None, device=None, requires_grad=False, **kwargs):
        from gpunn import factories

        if len(size) == 1 and isinstance(size[0], (tuple, list)):
            size = tuple(size[0])
        be = self._backend if device is None else None
        dtype = self.dtype if dtype is None else dtype
        if fill == "full":
            size, value = size[0], size[1] if len(size) > 1 else kwargs.pop("fill_value")
            t = factories.full(size, value, dtype=dtype, backend=be, device=device)
        else:
            t = getattr(factories, fill)(*size, dtype=dtype, backend=be, device=device)
        return t.requires_grad_(requires_grad) if requires_grad else t

    op.__name__ = f"new_{fill}"
    op.__doc__ = f"A new {fill} tensor with this tensor's dtype and device (``t.new_{fill}(size)``)."
    return op


def _multinomial(self, num_samples, replacement=False, *, generator=None):
    from gpunn.factories import multinomial

    return multinomial(self, num_samples, replacement, generator=generator)


def _bernoulli(self, p=None, *, generator=None):
    from gpunn.factories import bernoulli

    return bernoulli(self, p, generator=generator)


def _bernoulli_(self, p=0.5, *, generator=None):
    """Fill with 0/1 samples, 1 with probability ``p`` (a number or a tensor of probabilities)."""
    from gpunn.factories import bernoulli
    from gpunn.grad_mode import no_grad

    probs = p if isinstance(p, Tensor) else self.new_full(self.shape, float(p)).float()
    with no_grad():
        return self.copy_(bernoulli(probs.expand_as(self).float(), generator=generator))


def _new_tensor(self, data, dtype=None, device=None, requires_grad=False):
    from gpunn.factories import tensor

    return tensor(
        data,
        dtype=self.dtype if dtype is None else dtype,
        requires_grad=requires_grad,
        backend=self._backend if device is None else None,
        device=device,
    )


def _not_supported(name: str):
    def op(self, *args, **kwargs):
        raise NotImplementedError(f"Tensor.{name}() is not supported by gpunn (see docs/pytorch-compat.md)")

    op.__name__ = name
    return op


METHODS = {
    # arithmetic
    "add": arith.add,
    "__add__": arith.add,
    "__radd__": arith.add,
    "sub": arith.sub,
    "subtract": arith.sub,
    "__sub__": arith.sub,
    "__rsub__": arith.rsub,
    "mul": arith.mul,
    "multiply": arith.mul,
    "__mul__": arith.mul,
    "__rmul__": arith.mul,
    "div": arith.div,
    "divide": arith.div,
    "true_divide": arith.true_divide,
    "__truediv__": arith.div,
    "__rtruediv__": arith.rdiv,
    "floor_divide": arith.floor_divide,
    "__floordiv__": arith.floor_divide,
    "__rfloordiv__": _rfloordiv,
    "remainder": arith.remainder,
    "__mod__": arith.remainder,
    "__rmod__": _rmod,
    "neg": arith.neg,
    "negative": arith.neg,
    "__neg__": arith.neg,
    "__pos__": arith.pos,
    "pow": arith.pow,
    "__pow__": arith.pow,
    "__rpow__": arith.rpow,
    "matmul": arith.matmul,
    "__matmul__": arith.matmul,
    "__rmatmul__": arith.rmatmul,
    "mm": arith.mm,
    "bmm": arith.bmm,
    "dot": arith.dot,
    "outer": arith.outer,
    "atan2": arith.atan2,
    "arctan2": arith.atan2,
    "fmod": arith.fmod,
    "logaddexp": arith.logaddexp,
    "lerp": arith.lerp,
    "addcmul": arith.addcmul,
    "addcdiv": arith.addcdiv,
    "addmm": arith.addmm,
    "logical_xor": arith.logical_xor,
    "sinh": pointwise.sinh,
    "cosh": pointwise.cosh,
    "asin": pointwise.asin,
    "arcsin": pointwise.asin,
    "acos": pointwise.acos,
    "arccos": pointwise.acos,
    "atan": pointwise.atan,
    "arctan": pointwise.atan,
    "asinh": pointwise.asinh,
    "acosh": pointwise.acosh,
    "atanh": pointwise.atanh,
    "exp2": pointwise.exp2,
    "frac": pointwise.frac,
    "erf": pointwise.erf,
    "nan_to_num": pointwise.nan_to_num,
    "cumprod": reduce.cumprod,
    "nansum": reduce.nansum,
    "nanmean": reduce.nanmean,
    "aminmax": reduce.aminmax,
    "cummax": reduce.cummax,
    "cummin": reduce.cummin,
    "logcumsumexp": reduce.logcumsumexp,
    "kthvalue": reduce.kthvalue,
    "dist": reduce.dist,
    "mv": arith.mv,
    "hypot": arith.hypot,
    "xlogy": arith.xlogy,
    "float_power": arith.float_power,
    "signbit": pointwise.signbit,
    "sgn": pointwise.sign,
    "deg2rad": pointwise.deg2rad,
    "rad2deg": pointwise.rad2deg,
    "fmax": pointwise.fmax,
    "fmin": pointwise.fmin,
    "select": shape.select,
    "broadcast_to": shape.broadcast_to,
    "diagonal": shape.diagonal,
    "take": shape.take,
    "rot90": shape.rot90,
    "msort": shape.msort,
    "inner": arith.inner,
    "vdot": arith.vdot,
    "kron": arith.kron,
    "baddbmm": arith.baddbmm,
    "heaviside": pointwise.heaviside,
    "isposinf": pointwise.isposinf,
    "isneginf": pointwise.isneginf,
    "movedim": shape.movedim,
    "moveaxis": shape.movedim,
    "argwhere": shape.argwhere,
    "take_along_dim": shape.take_along_dim,
    "tensor_split": shape.tensor_split,
    "byte": lambda self: self.astype(np.uint8),
    "char": lambda self: self.astype(np.int8),
    "short": lambda self: self.astype(np.int16),
    "is_signed": lambda self: self.dtype.kind in "if",
    "is_complex": lambda self: False,
    "__contains__": lambda self, v: bool((self == v).any()),
    "bernoulli": _bernoulli,
    "median": reduce.median,
    "index_add": shape.index_add,
    "tile": shape.tile,
    "diff": shape.diff,
    "trace": shape.trace,
    # comparisons and logic
    "eq": arith.eq,
    "__eq__": arith.eq,
    "ne": arith.ne,
    "__ne__": arith.ne,
    "lt": arith.lt,
    "__lt__": arith.lt,
    "le": arith.le,
    "__le__": arith.le,
    "gt": arith.gt,
    "__gt__": arith.gt,
    "ge": arith.ge,
    "__ge__": arith.ge,
    "greater": arith.gt,
    "less": arith.lt,
    "greater_equal": arith.ge,
    "less_equal": arith.le,
    "not_equal": arith.ne,
    "equal": arith.equal,
    "isclose": arith.isclose,
    "allclose": arith.allclose,
    "__and__": arith.bitwise_and,
    "__or__": arith.bitwise_or,
    "__xor__": arith.bitwise_xor,
    "__invert__": arith.bitwise_not,
    "bitwise_not": arith.bitwise_not,
    "logical_not": arith.logical_not,
    "logical_and": arith.logical_and,
    "logical_or": arith.logical_or,
    # pointwise
    "exp": pointwise.exp,
    "expm1": pointwise.expm1,
    "log": pointwise.log,
    "log2": pointwise.log2,
    "log10": pointwise.log10,
    "log1p": pointwise.log1p,
    "sqrt": pointwise.sqrt,
    "rsqrt": pointwise.rsqrt,
    "square": pointwise.square,
    "reciprocal": pointwise.reciprocal,
    "sin": pointwise.sin,
    "cos": pointwise.cos,
    "tan": pointwise.tan,
    "abs": pointwise.abs,
    "__abs__": pointwise.abs,
    "absolute": pointwise.abs,
    "sign": pointwise.sign,
    "floor": pointwise.floor,
    "ceil": pointwise.ceil,
    "trunc": pointwise.trunc,
    "round": pointwise.round,
    "clamp": pointwise.clamp,
    "clip": pointwise.clamp,
    "clamp_min": pointwise.clamp_min,
    "clamp_max": pointwise.clamp_max,
    "maximum": pointwise.maximum,
    "minimum": pointwise.minimum,
    "relu": pointwise.relu,
    "sigmoid": pointwise.sigmoid,
    "tanh": pointwise.tanh,
    "softmax": pointwise.softmax,
    "log_softmax": pointwise.log_softmax,
    "logsumexp": pointwise.logsumexp,
    "isfinite": pointwise.isfinite,
    "isnan": pointwise.isnan,
    "isinf": pointwise.isinf,
    # reductions
    "sum": reduce.sum,
    "mean": reduce.mean,
    "prod": reduce.prod,
    "var": reduce.var,
    "std": reduce.std,
    "norm": reduce.norm,
    "max": reduce.max,
    "min": reduce.min,
    "amax": reduce.amax,
    "amin": reduce.amin,
    "argmax": reduce.argmax,
    "argmin": reduce.argmin,
    "cumsum": reduce.cumsum,
    "any": reduce.any,
    "all": reduce.all,
    "count_nonzero": reduce.count_nonzero,
    "sort": reduce.sort,
    "argsort": reduce.argsort,
    "topk": reduce.topk,
    "unique": reduce.unique,
    "bincount": reduce.bincount,
    # shape and indexing
    "reshape": shape.reshape,
    "view": shape.view,
    "view_as": shape.view_as,
    "reshape_as": shape.reshape_as,
    "flatten": shape.flatten,
    "unflatten": shape.unflatten,
    "permute": shape.permute,
    "transpose": shape.transpose,
    "swapaxes": shape.swapaxes,
    "t": shape.t,
    "squeeze": shape.squeeze,
    "unsqueeze": shape.unsqueeze,
    "expand": shape.expand,
    "expand_as": shape.expand_as,
    "repeat": shape.repeat,
    "flip": shape.flip,
    "contiguous": shape.contiguous,
    "clone": shape.clone,
    "__getitem__": shape.getitem,
    "index_put": shape.index_put,
    "masked_fill": shape.masked_fill,
    "tril": shape.tril,
    "index_select": shape.index_select,
    "masked_select": shape.masked_select,
    "repeat_interleave": shape.repeat_interleave,
    "roll": shape.roll,
    "diag": shape.diag,
    "triu": shape.triu,
    "gather": shape.gather,
    "scatter": shape.scatter,
    "scatter_add": shape.scatter_add,
    "narrow": shape.narrow,
    "split": shape.split,
    "chunk": shape.chunk,
    "unbind": shape.unbind,
    "nonzero": shape.nonzero,
    "where": _where_method,
    # construction and queries
    "new_zeros": _new("zeros"),
    "new_ones": _new("ones"),
    "new_empty": _new("empty"),
    "new_full": _new("full"),
    "new_tensor": _new_tensor,
    "multinomial": _multinomial,
    "is_floating_point": lambda self: self.dtype.kind == "f",
    "is_contiguous": shape.is_contiguous,
    "get_device": lambda self: -1 if self._backend.name == "numpy" else self.device.index,
    "bernoulli_": _bernoulli_,
    # in-place
    **INPLACE,
}

for _name, _fn in METHODS.items():
    setattr(Tensor, _name, _fn)
Tensor.T = property(shape.T)
Tensor.mT = property(lambda self: shape.transpose(self, -2, -1))
for _name in (
    "backward_hook",
    "register_hook",
    "share_memory_",
    "pin_memory",
    "is_pinned",
    "stride",
    "storage",
    "untyped_storage",
    "data_ptr",
    "to_sparse",
    "as_strided",
    "resize_",
):
    if not hasattr(Tensor, _name):
        setattr(Tensor, _name, _not_supported(_name))
