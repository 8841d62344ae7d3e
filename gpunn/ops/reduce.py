"""Reductions and orderings: sum, mean, prod, std, var, norm, max/min (with ``dim``: (values, indices)),
argmax, cumsum, any, all, sort, argsort, topk. ``axis=`` and ``keepdims=`` are accepted as aliases of
``dim=`` and ``keepdim=`` (NumPy spelling, accepted by PyTorch too)."""

from __future__ import annotations

import builtins
import functools
import math
from collections import namedtuple

import numpy as np

from gpunn.dtypes import _is_float, as_dtype, int64
from gpunn.tensor import Tensor


def _return_type(name: str, qualname: str):
    """PyTorch's ``torch.return_types.<name>``: a ``(values, indices)`` named tuple printed as PyTorch prints it
    (``qualname``: its name in this module, so that it pickles)."""
    cls = namedtuple(name, ["values", "indices"])
    cls.__qualname__ = qualname

    def __repr__(self) -> str:
        return f"gpunn.return_types.{name}(\nvalues={self.values!r},\nindices={self.indices!r})"

    cls.__repr__ = __repr__
    return cls


MaxMin = _return_type("max", "MaxMin")
MinResult = _return_type("min", "MinResult")
SortResult = _return_type("sort", "SortResult")
TopkResult = _return_type("topk", "TopkResult")


def numpy_aliases(fn):
    """Accept ``axis=`` for ``dim=`` and ``keepdims=`` for ``keepdim=``."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if "axis" in kwargs:
            if "dim" in kwargs:
                raise TypeError(f"{fn.__name__}(): got both 'dim' and its alias 'axis'")
            kwargs["dim"] = kwargs.pop("axis")
        if "keepdims" in kwargs:
            kwargs["keepdim"] = kwargs.pop("keepdims")
        return fn(*args, **kwargs)

    return wrapper


def _axes(t: Tensor, dim):
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    nd = builtins.max(t.ndim, 1)
    for d in dims:
        if not -nd <= d < nd:
            raise IndexError(f"dim {d} is out of range for a tensor of {t.ndim} dimensions")
    return tuple(int(d) % nd for d in dims)


def _expand_back(xp, g, axes, keepdim):
    if not keepdim and axes is not None and g.ndim >= 0:
        g = xp.expand_dims(g, axes)
    return g


@numpy_aliases
def sum(input, dim=None, keepdim: bool = False, dtype=None) -> Tensor:  # noqa: A001
    """Sum over ``dim`` (all elements when None); bool/int tensors sum to int64, as in PyTorch."""
    axes = _axes(input, dim)
    x = input._data
    if dtype is not None:
        x = x.astype(as_dtype(dtype))
    elif not _is_float(x.dtype):
        x = x.astype(int64)
    if input.ndim == 0:
        axes = None
    out = x.sum(axis=axes, keepdims=keepdim)
    shape = input.shape
    xp = input._backend.xp

    def backward(g):
        return (xp.broadcast_to(_expand_back(xp, g, axes, keepdim), shape),)

    return input._result(out, (input,), backward, "SumBackward0", saved=())


@numpy_aliases
def mean(input, dim=None, keepdim: bool = False, dtype=None) -> Tensor:
    if dtype is not None:
        input = input.astype(dtype)
    if not _is_float(input.dtype):
        raise RuntimeError(
            f"mean(): could not infer output dtype. Input dtype must be either a floating point "
            f"or complex dtype. Got: {input.dtype}"
        )
    axes = _axes(input, dim)
    count = input._data.size if axes is None else math.prod(input.shape[a] for a in axes)
    return sum(input, dim, keepdim) / float(count) if count else sum(input, dim, keepdim) * math.nan


@numpy_aliases
def prod(input, dim=None, keepdim: bool = False, dtype=None) -> Tensor:
    """Product over ``dim`` (or all); the gradient is the product of the other elements (exact with zeros)."""
    if dtype is not None:
        input = input.astype(dtype)
    xp = input._backend.xp
    x = input._data if dim is not None else input._data.reshape(-1)
    axis = 0 if dim is None else input._dim(dim, "prod")
    out = x.prod(axis=axis, keepdims=keepdim and dim is not None)
    if not _is_float(x.dtype):
        return Tensor._wrap(out.astype(int64), input._backend)

    def backward(g):
        # d prod / d x_i = prod of the others = (exclusive cumprod from the left) * (from the right)
        n = x.shape[axis]
        head = (slice(None),) * axis + (slice(0, n - 1),)  # all but the last along axis
        ones = xp.ones_like(x[(slice(None),) * axis + (slice(0, 1),)])
        left = xp.concatenate([ones, xp.cumprod(x[head], axis=axis)], axis=axis) if n > 1 else ones
        rev = xp.flip(x, axis=axis)
        right = (
            xp.flip(xp.concatenate([ones, xp.cumprod(rev[head], axis=axis)], axis=axis), axis=axis) if n > 1 else ones
        )
        gk = g if (keepdim and dim is not None) else xp.expand_dims(g, axis)
        return ((gk * left * right).reshape(input.shape),)

    return input._result(out, (input,), backward, "ProdBackward0")


@numpy_aliases
def var(input, dim=None, unbiased=None, keepdim: bool = False, *, correction=None) -> Tensor:
    """Variance with Bessel's correction by default (``correction=1``; ``unbiased=False`` is 0)."""
    if correction is None:
        correction = 1 if unbiased is None or unbiased else 0
    if isinstance(dim, bool):  # var(True): the old positional 'unbiased'
        dim, correction = None, 1 if dim else 0
    _need_float(input, "var")
    axes = _axes(input, dim)
    n = input.numel() if axes is None else math.prod(input.shape[a] for a in axes)
    centered = input - mean(input, dim, keepdim=True)
    return (
        sum(centered * centered, dim, keepdim) / float(n - correction)
        if n - correction > 0
        else sum(centered * centered, dim, keepdim) * math.nan
    )


@numpy_aliases
def std(input, dim=None, unbiased=None, keepdim: bool = False, *, correction=None) -> Tensor:
    return var(input, dim, unbiased, keepdim, correction=correction).sqrt()


def _need_float(t, op):
    if not _is_float(t.dtype):
        raise RuntimeError(f"{op}(): needs a floating-point tensor, got dtype {t.dtype}")


@numpy_aliases
def norm(input, p="fro", dim=None, keepdim: bool = False, dtype=None) -> Tensor:
    """Vector p-norm over ``dim`` (all elements by default): p in {'fro', 2, 1, inf, -inf, other > 0}."""
    if dtype is not None:
        input = input.astype(dtype)
    _need_float(input, "norm")
    if p in ("fro", 2, 2.0):
        axes = _axes(input, dim)
        xp = input._backend.xp
        x = input._data
        out = xp.sqrt((x * x).sum(axis=axes, keepdims=keepdim))

        def backward(g):
            o = _expand_back(xp, out, axes, keepdim)
            gk = _expand_back(xp, g, axes, keepdim)
            with np.errstate(divide="ignore", invalid="ignore"):
                return (xp.where(o == 0, 0, gk * x / o),)  # 0 at the zero vector, as PyTorch

        return input._result(out, (input,), backward, "NormBackward1", saves_output=True)
    if p in (1, 1.0):
        return sum(input.abs(), dim, keepdim)
    if p in (math.inf, "inf"):
        return amax(input.abs(), dim, keepdim)
    if p in (-math.inf, "-inf"):
        return amin(input.abs(), dim, keepdim)
    if isinstance(p, str):
        raise NotImplementedError(f"norm(p={p!r}): only vector norms ('fro', 1, 2, inf, numbers) are supported")
    return sum(input.abs() ** p, dim, keepdim) ** (1.0 / p)


def norm_function(input, p="fro", dim=None, keepdim: bool = False, out=None, dtype=None) -> Tensor:  # noqa: A002
    """``gpunn.norm``: PyTorch's function has ``out`` in the fifth slot, where the method ``Tensor.norm`` has
    ``dtype``; out= is refused."""
    from gpunn.ops.shape import no_out

    no_out("norm", out)
    return norm(input, p, dim, keepdim, dtype)


def _take_along(self: Tensor, idx, axis: int, keepdim: bool, op: str) -> Tensor:
    """values = x[..., idx, ...] along ``axis`` (idx has x's ndim); the gradient is scattered back."""
    xp = self._backend.xp
    x = self._data
    vals = xp.take_along_axis(x, idx, axis=axis)
    if not keepdim:
        vals = vals.squeeze(axis)
    be = self._backend

    def backward(g):
        gx = xp.zeros(x.shape, dtype=g.dtype)
        gk = g if keepdim else xp.expand_dims(g, axis)
        be.index_add(gx, _along_index(xp, idx, axis), gk)
        return (gx,)

    return self._result(vals, (self,), backward, op, saved=())


def _along_index(xp, idx, axis: int) -> tuple:
    """The full advanced index selecting ``idx`` along ``axis`` (the others broadcast from aranges)."""
    out = []
    for d in range(idx.ndim):
        if d == axis:
            out.append(idx)
        else:
            shape = [1] * idx.ndim
            shape[d] = idx.shape[d]
            out.append(xp.arange(idx.shape[d]).reshape(shape))
    return tuple(out)


def _extremum(self, dim, keepdim, find_max: bool):
    name = "max" if find_max else "min"
    if self._data.size == 0:
        raise RuntimeError(f"{name}(): Expected reduction dim to be specified for input.numel() == 0.")
    if isinstance(dim, Tensor):  # torch.max(a, b): the elementwise maximum
        from gpunn.ops.pointwise import maximum, minimum

        return (maximum if find_max else minimum)(self, dim)
    x = self._data
    if dim is None:
        xp = self._backend.xp
        out = x.max() if find_max else x.min()

        def backward(g):  # split evenly between ties, as PyTorch does for the full reduction
            mask = ((x == out) | (xp.isnan(x) & xp.isnan(out))).astype(x.dtype)  # a NaN max is NaN's
            return (g * mask / mask.sum(),)

        return self._result(out, (self,), backward, f"{name.capitalize()}Backward1", saves_output=True)
    xp = self._backend.xp
    axis = self._dim(dim, name)
    if self.ndim == 0:
        return (MaxMin if find_max else MinResult)(
            self.clone(), Tensor._wrap(xp.zeros((), dtype=np.int64), self._backend)
        )
    idx = xp.expand_dims(x.argmax(axis=axis) if find_max else x.argmin(axis=axis), axis)
    values = _take_along(self, idx, axis, keepdim, f"{name.capitalize()}Backward0")
    indices = Tensor._wrap((idx if keepdim else idx.squeeze(axis)).astype(np.int64), self._backend)
    return (MaxMin if find_max else MinResult)(values, indices)


def max(input, dim=None, keepdim: bool = False, *, axis=None, keepdims=None):  # noqa: A001
    """Largest element; with ``dim``: a named tuple ``(values, indices)``; with a tensor: elementwise max."""
    dim = axis if dim is None else dim
    return _extremum(input, dim, keepdim if keepdims is None else keepdims, True)


def min(input, dim=None, keepdim: bool = False, *, axis=None, keepdims=None):  # noqa: A001
    dim = axis if dim is None else dim
    return _extremum(input, dim, keepdim if keepdims is None else keepdims, False)


@numpy_aliases
def amax(input, dim=None, keepdim: bool = False) -> Tensor:
    if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):
        return max(input)
    if isinstance(dim, (tuple, list)):
        out = input
        for d in sorted((input._dim(d, "amax") for d in dim), reverse=True):
            out = max(out, d, keepdim).values
        return out
    return max(input, dim, keepdim).values


@numpy_aliases
def amin(input, dim=None, keepdim: bool = False) -> Tensor:
    if dim is None:
        return min(input)
    if isinstance(dim, (tuple, list)):
        out = input
        for d in sorted((input._dim(d, "amin") for d in dim), reverse=True):
            out = min(out, d, keepdim).values
        return out
    return min(input, dim, keepdim).values


@numpy_aliases
def argmax(input, dim=None, keepdim: bool = False) -> Tensor:
    if dim is None:
        return Tensor._wrap(input._data.argmax().astype(int64), input._backend)
    return max(input, dim, keepdim).indices


@numpy_aliases
def argmin(input, dim=None, keepdim: bool = False) -> Tensor:
    if dim is None:
        return Tensor._wrap(input._data.argmin().astype(int64), input._backend)
    return min(input, dim, keepdim).indices


@numpy_aliases
def cumsum(input, dim, dtype=None) -> Tensor:
    """Running sum along ``dim``; the gradient is the reversed running sum of the output gradient."""
    xp = input._backend.xp
    axis = input._dim(dim, "cumsum")
    x = input._data.astype(as_dtype(dtype)) if dtype is not None else input._data
    if not _is_float(x.dtype):
        x = x.astype(int64)
    out = xp.cumsum(x, axis=axis) if input.ndim else x.copy()

    def backward(g):
        return (xp.flip(xp.cumsum(xp.flip(g, axis), axis=axis), axis) if g.ndim else g,)

    return input._result(out, (input,), backward, "CumsumBackward0", saved=())


@numpy_aliases
def any(input, dim=None, keepdim: bool = False) -> Tensor:  # noqa: A001
    return Tensor._wrap(
        input._data.astype(bool).any(axis=_axes(input, dim) if input.ndim else None, keepdims=keepdim), input._backend
    )


@numpy_aliases
def all(input, dim=None, keepdim: bool = False) -> Tensor:  # noqa: A001
    return Tensor._wrap(
        input._data.astype(bool).all(axis=_axes(input, dim) if input.ndim else None, keepdims=keepdim), input._backend
    )


def count_nonzero(input, dim=None) -> Tensor:
    return sum(input != 0, dim)


def sort(input, dim: int = -1, descending: bool = False, stable: bool = False):
    """Sorted values and their indices along ``dim`` (a named tuple); NaN sorts last, as in PyTorch."""
    xp = input._backend.xp
    if input.ndim == 0:
        return SortResult(input.clone(), Tensor._wrap(xp.zeros((), dtype=np.int64), input._backend))
    axis = input._dim(dim, "sort")
    idx = _argsort(xp, input._data, axis, descending)
    values = _take_along(input, idx, axis, True, "SortBackward0")
    return SortResult(values, Tensor._wrap(idx.astype(np.int64), input._backend))


def _argsort(xp, x, axis, descending):
    """Stable argsort (CuPy's is always stable and accepts no ``kind``); descending keeps ties in order."""
    stable = {"kind": "stable"} if xp is np else {}
    if not descending:
        return xp.argsort(x, axis=axis, **stable)
    key = ~x if x.dtype == np.bool_ else -(x.astype(np.int64) if x.dtype.kind == "u" else x)
    return xp.argsort(key, axis=axis, **stable)


def argsort(input, dim: int = -1, descending: bool = False, stable: bool = False) -> Tensor:
    return sort(input, dim, descending, stable).indices


def topk(input, k: int, dim: int = -1, largest: bool = True, sorted: bool = True):  # noqa: A002
    """The ``k`` largest (or smallest) elements along ``dim`` and their indices, sorted."""
    axis = input._dim(dim, "topk")
    n = input.shape[axis] if input.ndim else 1
    if not 0 <= k <= n:
        raise RuntimeError(f"topk(): k ({k}) is out of range for dimension {dim} of size {n}")
    xp = input._backend.xp
    idx = _argsort(xp, input._data, axis, largest)
    idx = idx[(slice(None),) * axis + (slice(0, k),)]
    values = _take_along(input, idx, axis, True, "TopkBackward0")
    return TopkResult(values, Tensor._wrap(idx.astype(np.int64), input._backend))


def unique(input, sorted: bool = True, return_inverse: bool = False, return_counts: bool = False, dim=None):  # noqa: A002
    """The distinct values (sorted; slices along ``dim`` when given), with the inverse indices (each element's
    position in them, input-shaped) and/or the counts when asked, as PyTorch returns them. Not differentiable."""
    xp, be = input._backend.xp, input._backend
    axis = None if dim is None else input._dim(dim, "unique")
    vals, inverse, counts = xp.unique(input._data, return_inverse=True, return_counts=True, axis=axis)
    out = [Tensor._wrap(vals, be)]
    if return_inverse:
        inv_shape = input.shape if axis is None else (input.shape[axis],)
        out.append(Tensor._wrap(inverse.reshape(inv_shape).astype(np.int64), be))
    if return_counts:
        out.append(Tensor._wrap(counts.astype(np.int64), be))
    return out[0] if len(out) == 1 else tuple(out)


def bincount(input, weights=None, minlength: int = 0) -> Tensor:
    """How many times each value 0..max occurs in the 1-D non-negative integer tensor (at least ``minlength``
    bins); with ``weights`` the sum of the weights instead (in the weights' float dtype). Not differentiable."""
    xp = input._backend.xp
    if input.ndim != 1 or input.dtype.kind not in "iu":
        raise RuntimeError(f"bincount only supports 1-d non-negative integral inputs, got {input.dtype} {input.shape}")
    x = input._data
    if x.size and int(x.min()) < 0:
        raise RuntimeError("bincount only supports 1-d non-negative integral inputs (got a negative value)")
    if minlength < 0:
        raise RuntimeError("minlength should be >= 0")
    if weights is None:
        return Tensor._wrap(xp.bincount(x, minlength=minlength).astype(np.int64), input._backend)
    w = weights._data if isinstance(weights, Tensor) else input._backend.asarray(weights)
    if w.shape != x.shape:
        raise RuntimeError(
            f"bincount: weights should be 1-d and have the same length as input ({w.shape} vs {x.shape})"
        )
    dtype = w.dtype if w.dtype.kind == "f" else np.float64
    return Tensor._wrap(xp.bincount(x, weights=w, minlength=minlength).astype(dtype), input._backend)


def cumprod(input, dim, dtype=None) -> Tensor:
    """Running product along ``dim``. Gradient (exact with zeros): dx_k = P_k S_k with P_k the product of the
    entries before k and S_k = g_k + x_{k+1} S_{k+1} (the later outputs' gradients, run back along dim)."""
    xp = input._backend.xp
    axis = input._dim(dim, "cumprod")
    x = input._data.astype(as_dtype(dtype)) if dtype is not None else input._data
    if not _is_float(x.dtype):
        return Tensor._wrap(xp.cumprod(x.astype(int64), axis=axis), input._backend)
    if input.ndim == 0:
        return input._result(x.copy(), (input,), lambda g: (g,), "CumprodBackward0")
    out = xp.cumprod(x, axis=axis)

    def backward(g):
        xm, gm = xp.moveaxis(x, axis, 0), xp.moveaxis(g, axis, 0)
        n = xm.shape[0]
        before = xp.concatenate([xp.ones_like(xm[:1]), xp.cumprod(xm[:-1], axis=0)], axis=0)
        s = xp.empty_like(gm)
        s[n - 1] = gm[n - 1]
        for k in range(n - 2, -1, -1):
            s[k] = gm[k] + xm[k + 1] * s[k + 1]
        return (xp.moveaxis(before * s, 0, axis).astype(input.dtype, copy=False),)

    return input._result(out, (input,), backward, "CumprodBackward0")


MedianResult = _return_type("median", "MedianResult")


def median(input, dim=None, keepdim: bool = False):
    """The lower median (the ((n - 1) // 2)-th smallest; NaN if the values hold one), as PyTorch; with ``dim``
    a named tuple (values, indices). The gradient goes to the chosen element."""
    xp = input._backend.xp
    if dim is None:
        flat = input.reshape(-1)
        if flat.numel() == 0:
            raise IndexError("median() input tensor cannot be empty")
        return median(flat, 0).values
    axis = input._dim(dim, "median")
    if input.ndim == 0:
        return MedianResult(input.clone(), Tensor._wrap(xp.zeros((), dtype=np.int64), input._backend))
    x = input._data
    n = x.shape[axis]
    order = xp.argsort(x, axis=axis, kind="stable")  # NaN last
    k = (n - 1) // 2
    pick = xp.take(order, [k], axis=axis)
    if _is_float(x.dtype):  # a slice holding NaN: its median is NaN, at its first NaN
        n_nan = xp.isnan(x).sum(axis=axis, keepdims=True)
        first_nan = xp.take_along_axis(order, xp.minimum(n - n_nan, n - 1), axis=axis)
        pick = xp.where(n_nan > 0, first_nan, pick)
    values = _take_along(input, pick, axis, keepdim, "MedianBackward1")
    indices = Tensor._wrap((pick if keepdim else pick.squeeze(axis)).astype(np.int64), input._backend)
    return MedianResult(values, indices)


def std_mean(input, dim=None, unbiased=None, keepdim: bool = False, *, correction=None) -> tuple:
    """(std, mean) over ``dim``."""
    return std(input, dim, unbiased, keepdim, correction=correction), mean(input, dim, keepdim)


def var_mean(input, dim=None, unbiased=None, keepdim: bool = False, *, correction=None) -> tuple:
    """(var, mean) over ``dim``."""
    return var(input, dim, unbiased, keepdim, correction=correction), mean(input, dim, keepdim)


def nansum(input, dim=None, keepdim: bool = False, dtype=None) -> Tensor:
    """sum with NaN counted as 0."""
    return sum(input.masked_fill(input.isnan(), 0.0) if _is_float(input.dtype) else input, dim, keepdim, dtype=dtype)


def nanmean(input, dim=None, keepdim: bool = False, dtype=None) -> Tensor:
    """mean over the non-NaN elements."""
    _need_float(input, "nanmean")
    valid = ~input.isnan()
    return nansum(input, dim, keepdim, dtype) / sum(valid, dim, keepdim).astype(input.dtype)


AminmaxResult = namedtuple("aminmax", ["min", "max"])
AminmaxResult.__qualname__ = "AminmaxResult"


def aminmax(input, *, dim=None, keepdim: bool = False):
    """(amin, amax) over ``dim`` (all elements by default), a named tuple (min, max)."""
    return AminmaxResult(amin(input, dim, keepdim), amax(input, dim, keepdim))


CummaxResult = _return_type("cummax", "CummaxResult")
CumminResult = _return_type("cummin", "CumminResult")


def _cumextreme(self, dim: int, larger: bool):
    """Running max/min along ``dim`` and the index where each running value was last reached (PyTorch picks
    the latest among equal values; a NaN stays once seen). The gradient goes to that index."""
    xp = self._backend.xp
    axis = self._dim(dim, "cummax" if larger else "cummin")
    x = xp.moveaxis(self._data, axis, 0)
    vals, idx = x.copy(), xp.zeros(x.shape, dtype=np.int64)
    for t in range(1, x.shape[0]):
        prev, cur = vals[t - 1], x[t]
        take = (cur >= prev) if larger else (cur <= prev)
        if _is_float(x.dtype):
            take = take | xp.isnan(cur)
            take = take & ~(xp.isnan(prev) & ~xp.isnan(cur))
        vals[t] = xp.where(take, cur, prev)
        idx[t] = xp.where(take, t, idx[t - 1])
    idx = xp.moveaxis(idx, 0, axis)
    values = _take_along(self, idx, axis, True, "CummaxBackward0" if larger else "CumminBackward0")
    return (CummaxResult if larger else CumminResult)(values, Tensor._wrap(idx, self._backend))


def cummax(input, dim: int):
    return _cumextreme(input, dim, True)


def cummin(input, dim: int):
    return _cumextreme(input, dim, False)


def logcumsumexp(input, dim: int) -> Tensor:
    """log(cumsum(exp(x))) along ``dim``, stably (composite)."""
    _need_float(input, "logcumsumexp")
    m = input.detach().amax(dim, keepdim=True)
    m = m.masked_fill(~m.isfinite(), 0.0)
    return (input - m).exp().cumsum(dim).log() + m


KthvalueResult = _return_type("kthvalue", "KthvalueResult")


def kthvalue(input, k: int, dim: int = -1, keepdim: bool = False):
    """The k-th smallest element (1-based) along ``dim`` and its index."""
    xp = input._backend.xp
    axis = input._dim(dim, "kthvalue")
    n = input.shape[axis] if input.ndim else 1
    if not 1 <= k <= n:
        raise IndexError(f"kthvalue(): selected number k out of range for dimension {dim}")
    order = xp.argsort(input._data, axis=axis, kind="stable")
    pick = xp.take(order, [k - 1], axis=axis)
    values = _take_along(input, pick, axis, keepdim, "KthvalueBackward0")
    return KthvalueResult(
        values, Tensor._wrap((pick if keepdim else pick.squeeze(axis)).astype(np.int64), input._backend)
    )


def dist(input, other, p: float = 2) -> Tensor:
    """||input - other||_p over all elements (broadcast)."""
    return norm(input - other, p)


def searchsorted(sorted_sequence, input, *, out_int32: bool = False, right: bool = False, side=None, sorter=None,
                 out=None):  # fmt: skip
    """For each value of ``input``, the index where it would be inserted into ``sorted_sequence`` (1-D, or one
    row per leading index) to keep it sorted (``right``/``side='right'``: after equal values)."""
    from gpunn.ops.shape import no_out

    no_out("searchsorted", out)
    if sorter is not None:
        raise NotImplementedError("searchsorted(sorter=...) is not supported by gpunn")
    xp, be = sorted_sequence._backend.xp, sorted_sequence._backend
    side = side or ("right" if right else "left")
    seq = sorted_sequence._data
    vals = input._data if isinstance(input, Tensor) else xp.asarray(input)
    if seq.ndim == 1:
        out = xp.searchsorted(seq, vals, side=side)
    else:
        flat_s, flat_v = seq.reshape(-1, seq.shape[-1]), vals.reshape(-1, vals.shape[-1])
        out = xp.stack([xp.searchsorted(s, v, side=side) for s, v in zip(flat_s, flat_v)]).reshape(vals.shape)
    return Tensor._wrap(xp.asarray(out).astype(np.int32 if out_int32 else np.int64), be)


def bucketize(input, boundaries, *, out_int32: bool = False, right: bool = False):  # noqa: A002
    """The bucket of each value among the 1-D ``boundaries`` (``right=False``: boundaries[i-1] < x <= boundaries[i])."""
    return searchsorted(boundaries, input, out_int32=out_int32, right=right)
