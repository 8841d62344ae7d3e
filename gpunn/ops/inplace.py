"""In-place ops (``add_``, ``t += x``, ``t[idx] = v``, ``zero_``, ``normal_`` ...), each the out-of-place
op of the same name applied through ``Tensor._inplace``: PyTorch's rules (a leaf that requires grad can
be modified only under ``no_grad``), a version bump for every write, and -- when the result needs a
gradient -- the tensor takes over the op's graph node."""

from __future__ import annotations

from gpunn.ops import arith, pointwise, shape
from gpunn.tensor import Tensor, _unbroadcast, is_grad_enabled


def _inplace_of(fn, name: str):
    def op(self, *args, **kwargs):
        return self._inplace(name, (lambda t, *a: fn(t, *a, **kwargs)) if kwargs else fn, *args)

    op.__name__ = name
    op.__doc__ = f"In-place ``{fn.__name__}``: ``t.{name}(...)`` writes the result into ``t``'s storage."
    return op


def _reshaping_of(fn, name: str):
    """``unsqueeze_``, ``squeeze_``, ``t_``, ``transpose_``: this tensor takes the view's shape (same storage).
    As PyTorch, a leaf that requires grad refuses outside ``no_grad``; on a non-leaf that requires grad gpunn
    refuses too (write ``x = x.unsqueeze(...)``)."""

    def op(self, *args, **kwargs):
        if self.requires_grad and is_grad_enabled():
            if self.is_leaf:
                raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")
            raise NotImplementedError(
                f"Tensor.{name}() on a tensor that requires grad is not supported by gpunn; "
                f"use the out-of-place form (x = x.{name[:-1]}(...))"
            )
        self._data = fn(self, *args, **kwargs)._data
        return self

    op.__name__ = name
    op.__doc__ = f"In-place ``{fn.__name__}``: this tensor takes the new shape (its storage is unchanged)."
    return op


def _filled(t: Tensor, values) -> Tensor:
    """An op whose output (``values``, broadcast to t's shape) does not depend on ``t``: zero gradient."""
    xp = t._backend.xp
    out = xp.empty(t.shape, dtype=t.dtype)
    out[...] = values
    return t._result(out, (t,), lambda g: (xp.zeros_like(g),), "FillBackward0", saved=())


def _copied(t: Tensor, src: Tensor) -> Tensor:
    xp = t._backend.xp
    out = xp.empty(t.shape, dtype=t.dtype)
    try:
        out[...] = src._data
    except ValueError as exc:
        raise RuntimeError(
            f"copy_: the source of shape {src.shape} can't be broadcast to the destination's shape {t.shape}"
        ) from exc
    sshape = src.shape
    return t._result(out, (t, src), lambda g: (xp.zeros_like(g), _unbroadcast(g, sshape)), "CopyBackwards", saved=())


def _needs_graph(self: Tensor, value) -> bool:
    return is_grad_enabled() and (self.requires_grad or (isinstance(value, Tensor) and value.requires_grad))


def zero_(self) -> Tensor:
    return fill_(self, 0)


def fill_(self, value) -> Tensor:
    self._check_inplace("fill_")
    if isinstance(value, Tensor):
        if value.ndim != 0:
            raise RuntimeError(
                f"fill_ only supports 0-dimension value tensor but got tensor with {value.ndim} dimensions."
            )
        if _needs_graph(self, value):
            return self._inplace("fill_", _copied, value)
        value = value._data
    if _needs_graph(self, None):
        return self._inplace("fill_", lambda t: _filled(t, value))
    self._write(value, "fill_", cast=True)
    return self


def copy_(self, src, non_blocking: bool = False) -> Tensor:
    """Copy ``src``'s values (broadcast, cast to this dtype; from any device) into this tensor."""
    self._check_inplace("copy_")
    if not isinstance(src, Tensor):
        src = Tensor._wrap(self._backend.asarray(src), self._backend)
    elif src._backend is not self._backend:
        src = Tensor._wrap(self._backend.asarray(src._backend.to_numpy(src._data)), self._backend)
    if _needs_graph(self, src):
        return self._inplace("copy_", _copied, src)
    try:
        self._data[...] = src._data
    except ValueError as exc:
        raise RuntimeError(
            f"copy_: the source of shape {src.shape} can't be broadcast to the destination's shape {self.shape}"
        ) from exc
    self._bump_version("copy_")
    return self


def normal_(self, mean: float = 0.0, std: float = 1.0, *, generator=None) -> Tensor:
    """Fill with samples of N(mean, std^2) from the backend's seeded generator."""
    if generator is not None:
        raise NotImplementedError("normal_(generator=...) is not supported; seed with gpunn.manual_seed")
    return fill_(self, self._backend.normal(self.shape, mean, std, self.dtype))


def uniform_(self, a: float = 0.0, b: float = 1.0, *, generator=None) -> Tensor:
    """Fill with samples of U[a, b) from the backend's seeded generator."""
    if generator is not None:
        raise NotImplementedError("uniform_(generator=...) is not supported; seed with gpunn.manual_seed")
    return fill_(self, self._backend.uniform(self.shape, a, b, self.dtype))


def setitem(self, index, value) -> None:
    """``t[index] = value``: an in-place index_put (differentiable when the result needs a gradient)."""
    self._check_inplace("__setitem__")
    if _needs_graph(self, value):
        self._inplace("index_put_", lambda t, v: shape.index_put(t, index, v), value)
        return
    idx = shape._index_data(index)
    if isinstance(value, Tensor):
        if value._backend is not self._backend:
            raise RuntimeError(f"index assignment: the value is on {value.device}, the tensor on {self.device}")
        v = value._data
    else:
        v = value
    if (
        isinstance(value, Tensor) and value.ndim > 0 and value.dtype != self.dtype and not shape._is_basic_index(idx)
    ):  # numbers and 0-d tensors are converted, as in PyTorch
        raise RuntimeError(
            f"Index put requires the source and destination dtypes match, got {self.dtype} for "
            f"the destination and {value.dtype} for the source."
        )
    try:
        self._data[idx] = v
    except IndexError as exc:
        raise IndexError(f"index {index!r} is out of range for a tensor of shape {self.shape} ({exc})") from exc
    except ValueError as exc:
        raise RuntimeError(
            f"index assignment: can't put a value of shape {getattr(v, 'shape', ())} at index "
            f"{index!r} of a tensor of shape {self.shape} ({exc})"
        ) from exc
    self._bump_version("__setitem__")


def index_put_(self, indices, values, accumulate: bool = False) -> Tensor:
    if accumulate:
        raise NotImplementedError("index_put_(accumulate=True) is not supported by gpunn")
    setitem(self, tuple(indices) if isinstance(indices, list) else indices, values)
    return self


INPLACE = {
    "add_": _inplace_of(arith.add, "add_"),
    "sub_": _inplace_of(arith.sub, "sub_"),
    "mul_": _inplace_of(arith.mul, "mul_"),
    "div_": _inplace_of(arith.div, "div_"),
    "pow_": _inplace_of(arith.pow, "pow_"),
    "neg_": _inplace_of(arith.neg, "neg_"),
    "abs_": _inplace_of(pointwise.abs, "abs_"),
    "sqrt_": _inplace_of(pointwise.sqrt, "sqrt_"),
    "rsqrt_": _inplace_of(pointwise.rsqrt, "rsqrt_"),
    "exp_": _inplace_of(pointwise.exp, "exp_"),
    "log_": _inplace_of(pointwise.log, "log_"),
    "sin_": _inplace_of(pointwise.sin, "sin_"),
    "cos_": _inplace_of(pointwise.cos, "cos_"),
    "floor_": _inplace_of(pointwise.floor, "floor_"),
    "ceil_": _inplace_of(pointwise.ceil, "ceil_"),
    "round_": _inplace_of(pointwise.round, "round_"),
    "sign_": _inplace_of(pointwise.sign, "sign_"),
    "clamp_": _inplace_of(pointwise.clamp, "clamp_"),
    "clip_": _inplace_of(pointwise.clamp, "clip_"),
    "clamp_min_": _inplace_of(pointwise.clamp_min, "clamp_min_"),
    "clamp_max_": _inplace_of(pointwise.clamp_max, "clamp_max_"),
    "relu_": _inplace_of(pointwise.relu, "relu_"),
    "sigmoid_": _inplace_of(pointwise.sigmoid, "sigmoid_"),
    "tanh_": _inplace_of(pointwise.tanh, "tanh_"),
    "masked_fill_": _inplace_of(shape.masked_fill, "masked_fill_"),
    "tril_": _inplace_of(shape.tril, "tril_"),
    "unsqueeze_": _reshaping_of(shape.unsqueeze, "unsqueeze_"),
    "squeeze_": _reshaping_of(shape.squeeze, "squeeze_"),
    "t_": _reshaping_of(shape.t, "t_"),
    "transpose_": _reshaping_of(shape.transpose, "transpose_"),
    "index_add_": _inplace_of(shape.index_add, "index_add_"),
    "lerp_": _inplace_of(arith.lerp, "lerp_"),
    "addcmul_": _inplace_of(arith.addcmul, "addcmul_"),
    "addcdiv_": _inplace_of(arith.addcdiv, "addcdiv_"),
    "nan_to_num_": _inplace_of(pointwise.nan_to_num, "nan_to_num_"),
    "triu_": _inplace_of(shape.triu, "triu_"),
    "scatter_": _inplace_of(shape.scatter, "scatter_"),
    "scatter_add_": _inplace_of(shape.scatter_add, "scatter_add_"),
    "zero_": zero_,
    "fill_": fill_,
    "copy_": copy_,
    "normal_": normal_,
    "uniform_": uniform_,
    "index_put_": index_put_,
    "__setitem__": setitem,
    "__iadd__": _inplace_of(arith.add, "add_"),
    "__isub__": _inplace_of(arith.sub, "sub_"),
    "__imul__": _inplace_of(arith.mul, "mul_"),
    "__itruediv__": _inplace_of(arith.div, "div_"),
    "__ipow__": _inplace_of(arith.pow, "pow_"),
}
