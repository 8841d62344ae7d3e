"""Shape and indexing: views (reshape, permute, expand, basic indexing share the input's storage and its
version counter), copies (advanced indexing, cat, stack), index assignment, gather/scatter, where,
masked_fill, chunk/split."""

from __future__ import annotations

import math

import numpy as np

from gpunn.dtypes import _coerce, _infer_dtype, _is_float
from gpunn.ops.reduce import _along_index
from gpunn.tensor import Tensor, _check_same_backend, _unbroadcast


def _shape_args(shape) -> tuple:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return tuple(int(n) for n in shape)


def reshape(input, *shape) -> Tensor:
    """The same elements in ``shape`` (one dim may be -1); a view whenever the layout allows."""
    shape = _shape_args(shape)
    try:
        out = input._data.reshape(shape)
    except ValueError as exc:
        raise RuntimeError(
            f"reshape: shape '{list(shape)}' is invalid for input of size {input.numel()} "
            f"(tensor of shape {input.shape})"
        ) from exc
    src = input.shape
    return input._result(out, (input,), lambda g: (g.reshape(src),), "ViewBackward0", saved=(), view=True)


def _viewable(shape, strides, new_shape) -> bool:
    """Whether ``new_shape`` can address the same storage as (shape, strides) without a copy: each run of
    dims that is contiguous in memory must be split or merged into whole new dims (PyTorch's rule)."""
    if math.prod(shape) == 0 or len(shape) == 0:
        return True
    view_d = len(new_shape) - 1
    base = strides[-1]
    numel = view_numel = 1
    for d in range(len(shape) - 1, -1, -1):
        numel *= shape[d]
        if d == 0 or (shape[d - 1] != 1 and strides[d - 1] != numel * base):
            while view_d >= 0 and (view_numel < numel or new_shape[view_d] == 1):
                view_numel *= new_shape[view_d]
                view_d -= 1
            if view_numel != numel:
                return False
            if d > 0:
                base = strides[d - 1]
                numel = view_numel = 1
    return view_d == -1


def view(input, *shape) -> Tensor:
    """The same storage in ``shape``; raises (as PyTorch does) where the layout needs a copy: use reshape.
    ``view(dtype)``: the same bytes read as another dtype of the same size (no gradient, as PyTorch)."""
    if len(shape) == 1 and not isinstance(shape[0], (int, np.integer, tuple, list)):
        from gpunn.dtypes import as_dtype

        dt = as_dtype(shape[0])
        if dt == input.dtype:
            return reshape(input, input.shape)
        if dt.itemsize != input.dtype.itemsize:
            raise NotImplementedError(
                f"view({dt}): reading {input.dtype} bytes as a dtype of another size is not supported by gpunn"
            )
        if input.requires_grad:
            raise RuntimeError(f"view({dt}): a view with a different dtype of a tensor that requires grad is not "
                               "differentiable; call .detach() first")  # fmt: skip
        out = Tensor._wrap(input._data.view(dt), input._backend)
        out._vc = input._vc
        return out
    out = reshape(input, *shape)
    if not _viewable(input.shape, input._data.strides, out.shape):
        raise RuntimeError(
            f"view size is not compatible with input tensor's size and stride (shape {input.shape} to "
            f"{out.shape}; at least one dimension spans across two contiguous subspaces). Use .reshape(...) instead."
        )
    return out


def view_as(input, other: Tensor) -> Tensor:
    return view(input, other.shape)


def reshape_as(input, other: Tensor) -> Tensor:
    return reshape(input, other.shape)


def flatten(input, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    if input.ndim == 0:
        return reshape(input, 1)
    s, e = input._dim(start_dim, "flatten"), input._dim(end_dim, "flatten")
    if s > e:
        raise RuntimeError(f"flatten() has invalid args: start_dim {start_dim} cannot come after end_dim {end_dim}")
    shape = input.shape[:s] + (math.prod(input.shape[s : e + 1]),) + input.shape[e + 1 :]
    return reshape(input, shape)


def unflatten(input, dim: int, sizes) -> Tensor:
    d = input._dim(dim, "unflatten")
    return reshape(input, input.shape[:d] + tuple(sizes) + input.shape[d + 1 :])


def permute(input, *dims) -> Tensor:
    dims = _shape_args(dims)
    if len(dims) != input.ndim or sorted(d % max(input.ndim, 1) for d in dims) != list(range(input.ndim)):
        raise RuntimeError(f"permute(): dims {dims} are not a permutation of {input.ndim} dimensions")
    xp = input._backend.xp
    dims = tuple(d % input.ndim for d in dims)
    out = xp.transpose(input._data, dims)
    inverse = tuple(int(i) for i in np.argsort(dims))
    return input._result(out, (input,), lambda g: (xp.transpose(g, inverse),), "PermuteBackward0", saved=(), view=True)


def transpose(input, dim0: int, dim1: int) -> Tensor:
    if input.ndim < 2 and input.ndim == 0:
        return input
    dims = list(range(input.ndim))
    d0, d1 = input._dim(dim0, "transpose"), input._dim(dim1, "transpose")
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return permute(input, dims)


def swapaxes(input, axis0: int, axis1: int) -> Tensor:  # noqa: A002
    """``transpose`` under NumPy's name and argument names, as PyTorch has it."""
    return transpose(input, axis0, axis1)


def T(input) -> Tensor:  # noqa: N802  (bound as a property)
    return permute(input, tuple(reversed(range(input.ndim))))


def t(input) -> Tensor:
    if input.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {input.ndim}D")
    return T(input)


def unsqueeze(input, dim: int) -> Tensor:
    dim = input._dim(dim, "unsqueeze", extra=1)
    return reshape(input, input.shape[:dim] + (1,) + input.shape[dim:])


def squeeze(input, dim=None) -> Tensor:
    if dim is None:
        return reshape(input, tuple(n for n in input.shape if n != 1))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    drop = {input._dim(d, "squeeze") for d in dims if input.ndim}
    if input.ndim == 0:
        return input
    return reshape(input, tuple(n for i, n in enumerate(input.shape) if not (i in drop and n == 1)))


def expand(input, *shape) -> Tensor:
    """A broadcast view (no copy; read-only: an in-place write to it raises, as in PyTorch)."""
    shape = _shape_args(shape)
    lead = len(shape) - input.ndim
    if lead < 0:
        raise RuntimeError(
            f"expand: the number of sizes provided ({len(shape)}) must be greater or equal to "
            f"the number of dimensions in the tensor ({input.ndim})"
        )
    if any(n == -1 for n in shape[:lead]):
        raise RuntimeError(f"expand: -1 is not allowed for the new leading dimensions in {shape}")
    shape = tuple(input.shape[i - lead] if n == -1 else n for i, n in enumerate(shape))
    try:
        out = input._backend.xp.broadcast_to(input._data, shape)
    except ValueError as exc:
        raise RuntimeError(
            f"expand: can't expand shape {input.shape} to {shape}: the expanded size must match "
            "the existing size at each non-singleton dimension"
        ) from exc
    src = input.shape
    return input._result(out, (input,), lambda g: (_unbroadcast(g, src),), "ExpandBackward0", saved=(), view=True)


def expand_as(input, other: Tensor) -> Tensor:
    return expand(input, other.shape)


def repeat(input, *sizes) -> Tensor:
    sizes = _shape_args(sizes)
    if len(sizes) < input.ndim:
        raise RuntimeError("repeat(): number of repeat dims can not be smaller than number of tensor dims")
    x = reshape(input, (1,) * (len(sizes) - input.ndim) + input.shape)
    out = x
    for d, r in enumerate(sizes):
        if r != 1:
            out = cat([out] * r, d) if r > 0 else narrow(out, d, 0, 0)
    return out


def flip(input, dims) -> Tensor:
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    axes = tuple(input._dim(d, "flip") for d in dims)
    xp = input._backend.xp
    out = xp.flip(input._data, axes).copy()
    return input._result(out, (input,), lambda g: (xp.flip(g, axes),), "FlipBackward0", saved=())


def contiguous(input, memory_format=None) -> Tensor:
    """This tensor if its elements are laid out in row-major order, else a row-major copy (as PyTorch: after a
    transpose or permute, ``.contiguous().view(...)`` works)."""
    return input if is_contiguous(input) else clone(input)


def is_contiguous(input, memory_format=None) -> bool:
    """Whether the elements are laid out in row-major order (dims of size 1 ignored, as in PyTorch)."""
    return bool(input._data.flags.c_contiguous)


def clone(input, memory_format=None) -> Tensor:
    """A copy with its own storage; gradients flow back to the original."""
    return input._result(input._data.copy(), (input,), lambda g: (g,), "CloneBackward0", saved=())


# -- indexing -----------------------------------------------------------------------------------------
def _index_data(index):
    """Replace Tensors in an index by their arrays; a slice stepping backwards (``t[::-1]``, which NumPy
    allows) raises PyTorch's ValueError instead of silently reversing."""
    for i in index if isinstance(index, tuple) else (index,):
        if isinstance(i, slice) and i.step is not None and not (isinstance(i.step, Tensor) or i.step > 0):
            raise ValueError(f"step must be greater than zero (got the slice {i}; use gpunn.flip to reverse)")
    if isinstance(index, Tensor):
        return index._data
    if isinstance(index, tuple):
        return tuple(i._data if isinstance(i, Tensor) else i for i in index)
    if isinstance(index, list) and any(isinstance(i, Tensor) for i in index):
        return tuple(i._data if isinstance(i, Tensor) else i for i in index)
    return index


def _is_basic_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, slice, type(None), type(Ellipsis))) and not isinstance(i, bool) for i in items)


def getitem(input, index) -> Tensor:
    """``t[index]``: basic indexing (ints, slices, None, ...) is a view; tensors/lists/masks copy."""
    index = _index_data(index)
    try:
        out = input._data[index]
    except IndexError as exc:
        raise IndexError(f"index {index!r} is out of range for a tensor of shape {input.shape} ({exc})") from exc
    basic = _is_basic_index(index)
    be = input._backend
    shape, dtype = input.shape, input.dtype

    def backward(g):
        gx = be.xp.zeros(shape, dtype=dtype)
        if basic:
            gx[index] = g
        else:
            be.index_add(gx, index, g)
        return (gx,)

    result = input._result(out, (input,), backward, "IndexBackward0", saved=(), view=basic)
    if result._view_of is not None:  # an in-place op on this view writes back through the same index
        result._view_of = (input, lambda base, view: index_put(base, index, view))
    return result


def index_put(input, index, values) -> Tensor:
    """Out-of-place ``t[index] = values``: a copy with the slots replaced; the gradient of the replaced
    slots goes to ``values``, the rest to ``t``. (``t[index] = v`` is this op applied in place.)"""
    index = _index_data(index)
    v = input._operand(values, "index_put")
    if _is_float(v.dtype) and not _is_float(input.dtype):
        raise RuntimeError(
            f"Index put requires the source and destination dtypes match, got {input.dtype} for "
            f"the destination and {v.dtype} for the source."
        )
    out = input._data.copy()
    try:
        out[index] = v._data
    except (ValueError, IndexError) as exc:
        raise RuntimeError(
            f"index assignment: can't put values of shape {v.shape} at index {index!r} of a "
            f"tensor of shape {input.shape} ({exc})"
        ) from exc
    vshape = v.shape

    def backward(g):
        gs = g.copy()
        gs[index] = 0
        gv = None
        if v.requires_grad:
            gv = g[index]
            gv = _unbroadcast(gv, vshape) if gv.ndim >= len(vshape) else gv
            if tuple(gv.shape) != vshape:
                gv = gv.reshape(vshape)
        return gs, gv

    return input._result(out, (input, v), backward, "IndexPutBackward0", saved=())


def masked_fill(input, mask, value) -> Tensor:
    """``value`` where ``mask`` (a bool tensor broadcast to this shape) is True, else this tensor."""
    m = mask._data if isinstance(mask, Tensor) else input._backend.asarray(mask)
    if m.dtype != np.bool_:
        raise RuntimeError(f"masked_fill only supports boolean masks, but got mask with dtype {m.dtype}")
    if isinstance(value, Tensor) and value.ndim != 0:
        raise RuntimeError(
            f"masked_fill only supports a 0-dimensional value tensor, but got tensor with {value.ndim} dimension(s)"
        )
    if isinstance(value, (int, float, bool)):
        value = Tensor._wrap(input._backend.xp.asarray(value, dtype=input.dtype), input._backend)
    out = where(Tensor._wrap(m, input._backend), value, input)
    if out.shape != input.shape:
        raise RuntimeError(f"masked_fill: mask of shape {tuple(m.shape)} can't be broadcast to {input.shape}")
    return out if out.dtype == input.dtype else out.astype(input.dtype)


def _triangle(self, diagonal: int, lower: bool, op: str) -> Tensor:
    if self.ndim < 2:
        raise RuntimeError(f"{op}: input tensor must have at least 2 dimensions, got shape {self.shape}")
    if isinstance(diagonal, bool) or not isinstance(diagonal, (int, np.integer)):
        raise TypeError(f"{op}(): argument 'diagonal' must be an int, got {type(diagonal).__name__}")
    xp = self._backend.xp
    n, m = self.shape[-2:]
    keep = xp.tri(n, m, int(diagonal), dtype=bool)  # j <= i + diagonal
    if not lower:
        keep = ~xp.tri(n, m, int(diagonal) - 1, dtype=bool)  # j >= i + diagonal
    zero = self._data.dtype.type(0)
    out = xp.where(keep, self._data, zero)
    return self._result(out, (self,), lambda g: (xp.where(keep, g, g.dtype.type(0)),), f"{op.capitalize()}Backward0")


def tril(input, diagonal: int = 0) -> Tensor:
    """The lower triangle of the last two dims: x[..., i, j] where j <= i + diagonal, else 0 (a selection,
    so a NaN or inf above it gives 0, as in PyTorch); the gradient is masked the same way.
    >>> gpunn.tril(gpunn.ones(3, 3))  # the causal mask"""
    return _triangle(input, diagonal, True, "tril")


def triu(input, diagonal: int = 0) -> Tensor:
    """The upper triangle of the last two dims: x[..., i, j] where j >= i + diagonal, else 0."""
    return _triangle(input, diagonal, False, "triu")


def gather(input, dim: int, index, *, sparse_grad: bool = False) -> Tensor:  # noqa: A002
    """out[i][j][k] = input[index[i][j][k]][j][k] for dim 0 (and so on); index is an int64 tensor with the
    same number of dims (and sizes no larger than input's off ``dim``)."""
    if sparse_grad:
        raise NotImplementedError("gather(sparse_grad=True) is not supported by gpunn (no sparse tensors)")
    axis = input._dim(dim, "gather")
    idx = index._data if isinstance(index, Tensor) else input._backend.asarray(index)
    if idx.dtype.kind not in "iu":
        raise RuntimeError(f"gather(): Expected dtype int64 for index, got {idx.dtype}")
    if idx.ndim != input.ndim:
        raise RuntimeError(
            f"gather(): Index tensor must have the same number of dimensions as self tensor "
            f"({idx.ndim} vs {input.ndim})"
        )
    for d in range(input.ndim):
        if d != axis and idx.shape[d] > input.shape[d]:
            raise RuntimeError(
                f"gather(): Size does not match at dimension {d}: index {tuple(idx.shape)} vs input {input.shape}"
            )
    if idx.size and (int(idx.min()) < -input.shape[axis] or int(idx.max()) >= input.shape[axis]):
        raise RuntimeError(f"gather(): index out of range for dimension {dim} of size {input.shape[axis]}")
    xp = input._backend.xp
    full = _along_index(xp, idx, axis)
    out = input._data[full]
    be = input._backend
    shape, dtype = input.shape, input.dtype

    def backward(g):
        gx = xp.zeros(shape, dtype=dtype)
        be.index_add(gx, full, g)
        return (gx,)

    return input._result(out, (input,), backward, "GatherBackward0", saved=())


def scatter(input, dim: int, index, src=None, value=None, *, reduce=None) -> Tensor:
    """Out-of-place scatter: a copy with ``out[index[i][j]][j] = src[i][j]`` (dim 0; likewise others)."""
    if reduce is not None:
        raise NotImplementedError("scatter(reduce=...) is not supported by gpunn; use scatter_add")
    if src is None:
        src = value
    if src is None:
        raise TypeError("scatter(): needs src (a tensor) or value (a number)")
    axis = input._dim(dim, "scatter")
    idx = index._data if isinstance(index, Tensor) else input._backend.asarray(index)
    if idx.dtype.kind not in "iu":
        raise RuntimeError(f"scatter(): Expected dtype int64 for index, got {idx.dtype}")
    if idx.ndim != input.ndim:
        raise RuntimeError("scatter(): Index tensor must have the same number of dimensions as self tensor")
    if idx.size and (int(idx.min()) < -input.shape[axis] or int(idx.max()) >= input.shape[axis]):
        raise RuntimeError(f"scatter(): index out of range for dimension {dim} of size {input.shape[axis]}")
    xp = input._backend.xp
    full = _along_index(xp, idx, axis)
    s = input._operand(src, "scatter")
    region = tuple(slice(0, n) for n in idx.shape)
    s_vals = s._data[region] if s.ndim else s._data
    out = input._data.copy()
    out[full] = s_vals
    sshape = s.shape

    def backward(g):
        gs = g.copy()
        gs[full] = 0
        gsrc = None
        if s.requires_grad:
            gsrc = xp.zeros(sshape, dtype=g.dtype)
            gsrc[region] = g[full]
        return gs, gsrc

    return input._result(out, (input, s), backward, "ScatterBackward0", saved=())


def scatter_add(input, dim: int, index, src) -> Tensor:
    """A copy with ``out[index[i][j]][j] += src[i][j]`` (dim 0; likewise others), duplicates accumulate."""
    axis = input._dim(dim, "scatter_add")
    idx = index._data if isinstance(index, Tensor) else input._backend.asarray(index)
    xp = input._backend.xp
    full = _along_index(xp, idx, axis)
    s = input._operand(src, "scatter_add")
    region = tuple(slice(0, n) for n in idx.shape)
    out = input._data.copy()
    input._backend.index_add(out, full, s._data[region])
    sshape = s.shape

    def backward(g):
        gsrc = None
        if s.requires_grad:
            gsrc = xp.zeros(sshape, dtype=g.dtype)
            gsrc[region] = g[full]
        return g, gsrc

    return input._result(out, (input, s), backward, "ScatterAddBackward0", saved=())


def narrow(input, dim: int, start: int, length: int) -> Tensor:
    d = input._dim(dim, "narrow")
    index = (slice(None),) * d + (slice(start, start + length),)
    return getitem(input, index)


def split(tensor, split_size_or_sections, dim: int = 0) -> tuple:
    """Views of consecutive pieces along ``dim``: each of size ``split_size`` (the last may be smaller),
    or of the listed sizes."""
    d = tensor._dim(dim, "split")
    n = tensor.shape[d]
    if isinstance(split_size_or_sections, int):
        step = split_size_or_sections
        if step <= 0:
            raise RuntimeError(f"split(): split_size must be positive, got {step}")
        sizes = [min(step, n - s) for s in range(0, n, step)] or [0]
    else:
        sizes = [int(s) for s in split_size_or_sections]
        if sum(sizes) != n:
            raise RuntimeError(
                f"split_with_sizes expects split_sizes to sum exactly to {n} (input tensor's size "
                f"at dimension {dim}), but got split_sizes={sizes}"
            )
    out, start = [], 0
    for s in sizes:
        out.append(narrow(tensor, d, start, s))
        start += s
    return tuple(out)


def chunk(input, chunks: int, dim: int = 0) -> tuple:
    if chunks <= 0:
        raise RuntimeError(f"chunk expects `chunks` to be greater than 0, got: {chunks}")
    n = input.shape[input._dim(dim, "chunk")]
    return split(input, max(1, -(-n // chunks)), dim)


def unbind(input, dim: int = 0) -> tuple:
    d = input._dim(dim, "unbind")
    return tuple(getitem(input, (slice(None),) * d + (i,)) for i in range(input.shape[d]))


# -- joining and selecting ------------------------------------------------------------------------------
def _tensors(seq, op):
    if isinstance(seq, Tensor):
        raise TypeError(f"{op}(): expected a sequence of tensors, got a single Tensor")
    ts = list(seq)
    if not ts:
        raise ValueError(f"{op}: expected a non-empty sequence of tensors")
    for t in ts:
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: expected tensors, got {type(t).__name__}")
        _check_same_backend(ts[0], t, op)
    return ts


def no_out(fname: str, out) -> None:
    """PyTorch's ``out=``: accepted by name, and refused unless None (gpunn returns new tensors)."""
    if out is not None:
        raise NotImplementedError(f"{fname}(): the out= argument is not supported by gpunn; use the returned tensor")


def cat(tensors, dim: int = 0, *, out=None) -> Tensor:
    """Concatenate along ``dim``; the gradient is split back into the pieces."""
    no_out("cat", out)
    ts = _tensors(tensors, "cat")
    xp = ts[0]._backend.xp
    dim = ts[0]._dim(dim, "cat")
    # PyTorch's promotion: floats win over integers without widening (float32 + int64 -> float32)
    floats = [t.dtype for t in ts if t.dtype.kind == "f"]
    dtype = np.result_type(*floats) if floats else np.result_type(*[t.dtype for t in ts])
    try:
        out = xp.concatenate([t._data.astype(dtype, copy=False) for t in ts], axis=dim)
    except ValueError as exc:
        raise RuntimeError(
            f"cat(): sizes of tensors must match except in dimension {dim}; got shapes {[t.shape for t in ts]}"
        ) from exc
    bounds = np.cumsum([t.shape[dim] for t in ts])[:-1].tolist()
    return ts[0]._result(out, tuple(ts), lambda g: tuple(xp.split(g, bounds, axis=dim)), "CatBackward0", saved=())


concat = cat


def concatenate(tensors, axis: int = 0, out=None) -> Tensor:
    """``cat`` under NumPy's name and keyword (``axis`` for ``dim``), as PyTorch has it."""
    return cat(tensors, axis, out=out)


def stack(tensors, dim: int = 0, *, out=None) -> Tensor:
    no_out("stack", out)
    ts = _tensors(tensors, "stack")
    if len({t.shape for t in ts}) != 1:
        raise RuntimeError(f"stack expects each tensor to be equal size, but got {[t.shape for t in ts]}")
    return cat([unsqueeze(t, dim) for t in ts], dim)


def where(condition, input=None, other=None) -> Tensor:  # noqa: A002
    """Elementwise ``input if condition else other``; gradients flow to the chosen side.
    ``where(condition)`` alone is ``condition.nonzero(as_tuple=True)``."""
    if input is None and other is None:
        return nonzero(condition, as_tuple=True)
    base = input if isinstance(input, Tensor) else other
    if not isinstance(base, Tensor):
        base = condition if isinstance(condition, Tensor) else None
        if base is None:
            raise TypeError("where: condition, input or other must be a tensor")
        # two Python scalars: PyTorch's inference (float -> float32, int -> int64, bool), not NumPy's float64
        base = Tensor._wrap(base._backend.xp.asarray(input, dtype=_infer_dtype(input)), base._backend)
    cond = condition._data if isinstance(condition, Tensor) else base._backend.asarray(condition)
    if cond.dtype != np.bool_:
        raise RuntimeError(f"where expected condition to be a boolean tensor, but got a tensor with dtype {cond.dtype}")
    a = base._operand(input, "where")
    b = base._operand(other, "where")
    xp = base._backend.xp
    out = xp.where(cond, *_coerce(a._data, b._data))  # where(c, int_tensor, 0.5) -> float32, as in PyTorch

    def backward(g):
        ga = _unbroadcast(xp.where(cond, g, 0), a.shape) if a.requires_grad else None
        gb = _unbroadcast(xp.where(cond, 0, g), b.shape) if b.requires_grad else None
        return ga, gb

    return base._result(out, (a, b), backward, "WhereBackward0", saved=())


def nonzero(input, as_tuple: bool = False):
    xp = input._backend.xp
    idx = xp.nonzero(input._data)
    if as_tuple:
        return tuple(Tensor._wrap(i.astype(np.int64), input._backend) for i in idx)
    return Tensor._wrap(
        xp.stack(idx, axis=1).astype(np.int64) if idx else xp.zeros((0, 0), dtype=np.int64), input._backend
    )


def _int_index(index, be, op: str):
    """An integer index tensor/list as a 1-D int64 backend array (PyTorch's dtype and dimension checks)."""
    idx = index._data if isinstance(index, Tensor) else be.asarray(index)
    if idx.dtype.kind not in "iu":
        raise RuntimeError(f"{op}(): Expected dtype int32/int64 for index, got {idx.dtype}")
    if idx.ndim > 1:
        raise IndexError(f"{op}(): Index is supposed to be a vector, got {idx.ndim} dimensions")
    return idx.reshape(-1).astype(np.int64, copy=False)


def index_select(input, dim: int, index) -> Tensor:
    """The slices ``index`` (a 1-D integer tensor; repeats allowed) of ``dim``: out.shape[dim] = len(index).
    The gradient adds each slice's gradient back into its source slice."""
    axis = input._dim(dim, "index_select")
    be = input._backend
    idx = _int_index(index, be, "index_select")
    n = input.shape[axis] if input.ndim else 1
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise IndexError(f"index_select(): index out of range in self (dim {dim} has size {n})")
    x = input._data if input.ndim else input._data.reshape(1)
    out = be.xp.take(x, idx, axis=axis)
    if not input.ndim:
        out = out.reshape(())
    shape, dtype = input.shape, input.dtype

    def backward(g):
        gx = be.xp.zeros(shape if shape else (1,), dtype=dtype)
        be.index_add(gx, (slice(None),) * axis + (idx,), g if shape else g.reshape(1))
        return (gx.reshape(shape),)

    return input._result(out, (input,), backward, "IndexSelectBackward0", saved=())


def masked_select(input, mask) -> Tensor:
    """The elements where ``mask`` (bool, broadcast with this tensor) is True, as a 1-D tensor."""
    m = mask if isinstance(mask, Tensor) else Tensor._wrap(input._backend.asarray(mask), input._backend)
    if m.dtype != np.bool_:
        raise RuntimeError(f"masked_select: expected a boolean mask, got dtype {m.dtype}")
    shape = tuple(np.broadcast_shapes(input.shape, m.shape))
    x = input if input.shape == shape else expand(input, shape)
    return getitem(x, m if m.shape == shape else expand(m, shape))


def repeat_interleave(input, repeats=None, dim: int | None = None, *, output_size=None) -> Tensor:
    """Each element (``dim=None``: of the flattened tensor) or slice along ``dim`` repeated ``repeats`` times
    (an int, or an integer tensor with one count per slice). ``repeat_interleave(counts)`` alone gives
    the indices 0, 0, 1, ... repeated by ``counts``."""
    be = input._backend
    if repeats is None:  # torch.repeat_interleave(counts)
        counts = _int_index(input, be, "repeat_interleave")
        return Tensor._wrap(be.xp.repeat(be.xp.arange(counts.size, dtype=np.int64), counts), be)
    x = flatten(input) if dim is None else input
    axis = 0 if dim is None else x._dim(dim, "repeat_interleave")
    n = x.shape[axis] if x.ndim else 1
    if isinstance(repeats, Tensor) and repeats.numel() != 1:
        counts = _int_index(repeats, be, "repeat_interleave")
        if counts.size != n:
            raise RuntimeError(f"repeat_interleave: repeats must have the same size as input along dim ({n})")
    else:
        counts = be.xp.full(n, int(repeats.item() if isinstance(repeats, Tensor) else repeats), dtype=np.int64)
    if counts.size and int(counts.min()) < 0:
        raise RuntimeError("repeat_interleave: repeats can not be negative")
    return index_select(x, axis, be.xp.repeat(be.xp.arange(n, dtype=np.int64), counts))


def roll(input, shifts, dims=None) -> Tensor:
    """Elements shifted by ``shifts`` along ``dims`` (wrapping around); ``dims=None``: along the flattened
    tensor, then the shape restored."""
    if dims is None:
        if not isinstance(shifts, (int, np.integer)) and len(shifts) != 1:
            raise RuntimeError("roll: with dims=None, shifts must be a single int")
        flat = flatten(input)
        return reshape(roll(flat, int(np.ravel(shifts)[0]), 0), input.shape)
    shifts = (shifts,) if isinstance(shifts, (int, np.integer)) else tuple(shifts)
    dims = (dims,) if isinstance(dims, (int, np.integer)) else tuple(dims)
    if len(shifts) != len(dims):
        raise RuntimeError(f"roll: shifts and dimensions must align. shifts: {len(shifts)}, dims: {len(dims)}")
    out = input
    xp = input._backend.xp
    for s, d in zip(shifts, dims):
        axis = input._dim(d, "roll")
        n = input.shape[axis]
        out = index_select(out, axis, (xp.arange(n, dtype=np.int64) - int(s)) % max(n, 1))
    return out


def diag(input, diagonal: int = 0) -> Tensor:
    """1-D input: the square matrix with it on the ``diagonal``-th diagonal (0 elsewhere); 2-D input: that
    diagonal as a 1-D tensor."""
    xp = input._backend.xp
    k = int(diagonal)
    if input.ndim == 1:
        n = input.shape[0] + abs(k)
        rows = xp.arange(input.shape[0], dtype=np.int64) + max(-k, 0)
        out = Tensor._wrap(xp.zeros((n, n), dtype=input.dtype), input._backend)
        return index_put(out, (rows, rows + k), input)
    if input.ndim != 2:
        raise RuntimeError(f"diag(): Supports 1D or 2D tensors. Got {input.ndim}D")
    h, w = input.shape
    length = max(0, min(h + min(k, 0), w - max(k, 0)))
    rows = xp.arange(length, dtype=np.int64) + max(-k, 0)
    return getitem(input, (rows, rows + k))


def index_add(input, dim: int, index, source, *, alpha=1) -> Tensor:
    """A copy with ``alpha * source``'s slices added at the slices ``index`` of ``dim`` (repeats accumulate);
    the gradient of input passes through, source's is the gradient's slices ``index``."""
    axis = input._dim(dim, "index_add")
    be = input._backend
    idx = _int_index(index, be, "index_add")
    src = input._operand(source, "index_add")
    n = input.shape[axis] if input.ndim else 1
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise IndexError(f"index_add_(): index out of range in self (dim {dim} has size {n})")
    expected = input.shape[:axis] + (idx.size,) + input.shape[axis + 1 :] if input.ndim else (idx.size,)
    if src.shape != expected and not (input.ndim == 0 and src.numel() == idx.size):
        raise RuntimeError(f"index_add_(): source has shape {src.shape}, expected {expected}")
    vals = src._data if alpha == 1 else src._data * alpha
    out = input._data.copy()
    be.index_add(out.reshape(input.shape or (1,)), (slice(None),) * axis + (idx,), vals.astype(out.dtype).reshape(
        expected))  # fmt: skip

    def backward(g):
        gs = None
        if src.requires_grad:
            gs = be.xp.take(g.reshape(input.shape or (1,)), idx, axis=axis).reshape(src.shape)
            gs = gs if alpha == 1 else gs * alpha
        return g, gs

    return input._result(out, (input, src), backward, "IndexAddBackward0", saved=())


def meshgrid(*tensors, indexing: str | None = None) -> tuple:
    """Coordinate grids from 1-D tensors: with ``indexing='ij'`` (PyTorch's default, with its warning when
    not given) output k varies along dim k; 'xy' swaps the first two dims."""
    import warnings

    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    if indexing is None:
        warnings.warn(
            "torch.meshgrid: in an upcoming release, it will be required to pass the indexing argument.",
            UserWarning,
            stacklevel=2,
        )
        indexing = "ij"
    if indexing not in ("ij", "xy"):
        raise RuntimeError(f'torch.meshgrid: indexing must be one of "xy" or "ij", but received: {indexing}')
    for t in tensors:
        if t.ndim > 1:
            raise RuntimeError(f"torch.meshgrid: Expected 0D or 1D tensor in the tensor list but got: {t.shape}")
    vecs = [t.reshape(-1) for t in tensors]
    if indexing == "xy" and len(vecs) >= 2:
        vecs[0], vecs[1] = vecs[1], vecs[0]
    sizes = tuple(v.shape[0] for v in vecs)
    grids = []
    for k, v in enumerate(vecs):
        shape = [1] * len(vecs)
        shape[k] = -1
        grids.append(expand(reshape(v, tuple(shape)), sizes))
    if indexing == "xy" and len(grids) >= 2:
        grids[0], grids[1] = grids[1], grids[0]
    return tuple(grids)


def tile(input, dims) -> Tensor:
    """``repeat`` with ``dims`` padded with leading 1s to this tensor's rank (and vice versa)."""
    dims = (dims,) if isinstance(dims, (int, np.integer)) else tuple(dims)
    x = input
    if len(dims) > x.ndim:
        x = reshape(x, (1,) * (len(dims) - x.ndim) + x.shape)
    return repeat(x, *((1,) * (x.ndim - len(dims)) + dims))


def diff(input, n: int = 1, dim: int = -1, prepend=None, append=None) -> Tensor:
    """x[i + 1] - x[i] along ``dim``, ``n`` times (``prepend``/``append`` joined first); bool gives xor."""
    parts = [t for t in (prepend, input, append) if t is not None]
    x = cat(parts, dim) if len(parts) > 1 else input
    axis = x._dim(dim, "diff")
    for _ in range(n):
        m = x.shape[axis]
        if m == 0:
            break
        a, b = narrow(x, axis, 1, m - 1), narrow(x, axis, 0, m - 1)
        if x.dtype == np.bool_:
            x = Tensor._wrap(x._backend.xp.logical_xor(a._data, b._data), x._backend)
        else:
            x = a - b
    return x


def trace(input) -> Tensor:
    """The sum of the main diagonal of a 2-D tensor."""
    if input.ndim != 2:
        raise RuntimeError(f"trace: expected a matrix, but got tensor with dim {input.ndim}")
    return diag(input).sum()


def select(input, dim: int, index: int) -> Tensor:
    """The slice ``index`` of ``dim``, that dim removed (``x.select(1, 2)`` is ``x[:, 2]``)."""
    axis = input._dim(dim, "select")
    n = input.shape[axis]
    if not -n <= index < n:
        raise IndexError(f"select(): index {index} out of range for tensor of size {input.shape} at dimension {dim}")
    return getitem(input, (slice(None),) * axis + (int(index),))


def movedim(input, source, destination) -> Tensor:
    """Dims ``source`` moved to the positions ``destination`` (ints or sequences), the others in order."""
    src = (source,) if isinstance(source, int) else tuple(source)
    dst = (destination,) if isinstance(destination, int) else tuple(destination)
    if len(src) != len(dst):
        raise RuntimeError("movedim: Invalid source or destination dims: source and destination must have the "
                           "same number of dims")  # fmt: skip
    src = [input._dim(d, "movedim") for d in src]
    dst = [input._dim(d, "movedim") for d in dst]
    rest = [d for d in range(input.ndim) if d not in src]
    order = [None] * input.ndim
    for s, d in zip(src, dst):
        order[d] = s
    it = iter(rest)
    order = [o if o is not None else next(it) for o in order]
    return permute(input, *order)


def argwhere(input) -> Tensor:
    """The indices of the nonzero elements, (count, ndim) int64 (``nonzero()``)."""
    return nonzero(input)


def take_along_dim(input, indices, dim=None) -> Tensor:
    """``gather`` with the indices broadcast against this tensor off ``dim`` (``dim=None``: the flattened tensor)."""
    if dim is None:
        return gather(flatten(input), 0, flatten(indices))
    axis = input._dim(dim, "take_along_dim")
    shape = list(np.broadcast_shapes(tuple(s for i, s in enumerate(input.shape) if i != axis),
                                     tuple(s for i, s in enumerate(indices.shape) if i != axis)))  # fmt: skip
    x_shape = shape[:axis] + [input.shape[axis]] + shape[axis:]
    i_shape = shape[:axis] + [indices.shape[axis]] + shape[axis:]
    return gather(expand(input, tuple(x_shape)), axis, expand(indices, tuple(i_shape)))


def tensor_split(input, indices_or_sections, dim: int = 0) -> tuple:
    """Split into ``n`` nearly equal parts (the first n % size ones one longer), or at the given indices."""
    axis = input._dim(dim, "tensor_split")
    size = input.shape[axis]
    if isinstance(indices_or_sections, (int, np.integer)):
        n = int(indices_or_sections)
        if n <= 0:
            raise RuntimeError(f"number of sections must be larger than 0, got {n}")
        q, r = divmod(size, n)
        bounds = [i * q + min(i, r) for i in range(n + 1)]
    else:
        idx = [int(i) for i in indices_or_sections]
        bounds = [0, *idx, size]
    bounds = [min(max(b, 0), size) for b in bounds]
    return tuple(narrow(input, axis, a, max(b - a, 0)) for a, b in zip(bounds[:-1], bounds[1:]))


def atleast_1d(*tensors):
    ts = tensors[0] if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)) else tensors
    out = tuple(t.reshape(1) if t.ndim == 0 else t for t in ts)
    return out[0] if len(out) == 1 else out


def atleast_2d(*tensors):
    ts = tensors[0] if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)) else tensors
    out = tuple(t.reshape(1, -1) if t.ndim < 2 else t for t in ts)
    return out[0] if len(out) == 1 else out


def atleast_3d(*tensors):
    ts = tensors[0] if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)) else tensors
    out = tuple(t.reshape(1, -1, 1) if t.ndim < 2 else (t.unsqueeze(-1) if t.ndim == 2 else t) for t in ts)
    return out[0] if len(out) == 1 else out


def hstack(tensors) -> Tensor:
    """cat along dim 1 (dim 0 for 1-D tensors)."""
    ts = [atleast_1d(t) for t in tensors]
    return cat(ts, 0 if ts[0].ndim == 1 else 1)


def vstack(tensors) -> Tensor:
    """cat along dim 0 of the tensors made at least 2-D."""
    return cat([atleast_2d(t) for t in tensors], 0)


def dstack(tensors) -> Tensor:
    """cat along dim 2 of the tensors made at least 3-D."""
    return cat([atleast_3d(t) for t in tensors], 2)


def column_stack(tensors) -> Tensor:
    """1-D and 0-D tensors as columns, then hstack."""
    return hstack([t.reshape(-1, 1) if t.ndim < 2 else t for t in tensors])


def broadcast_to(input, size) -> Tensor:  # noqa: A002
    return expand(input, *_shape_args((size,) if isinstance(size, int) else tuple(size)))


def broadcast_tensors(*tensors) -> tuple:
    shape = tuple(np.broadcast_shapes(*(t.shape for t in tensors)))
    return tuple(expand(t, shape) for t in tensors)


def diagonal(input, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Tensor:
    """The diagonal of dims dim1, dim2 (``offset`` above/below), appended as the last dim."""
    d1, d2 = input._dim(dim1, "diagonal"), input._dim(dim2, "diagonal")
    if d1 == d2:
        raise RuntimeError(f"diagonal dimensions cannot be identical {dim1}, {dim2}")
    x = movedim(input, (d1, d2), (-2, -1))
    h, w = x.shape[-2:]
    k = int(offset)
    length = max(0, min(h + min(k, 0), w - max(k, 0)))
    rows = input._backend.xp.arange(length, dtype=np.int64) + max(-k, 0)
    return getitem(x, (Ellipsis, rows, rows + k))


def take(input, index) -> Tensor:
    """Elements of the flattened tensor at ``index`` (any shape)."""
    idx = index if isinstance(index, Tensor) else Tensor._wrap(input._backend.asarray(index), input._backend)
    n = input.numel()
    if idx.numel() and (int(idx._data.min()) < -n or int(idx._data.max()) >= n):
        raise IndexError(f"take(): index out of range for tensor of size {input.shape}")
    return reshape(gather(flatten(input), 0, flatten(idx) % max(n, 1)), idx.shape)


def rot90(input, k: int = 1, dims=(0, 1)) -> Tensor:
    """Rotate by 90 degrees ``k`` times in the plane of ``dims`` (from the first towards the second)."""
    d0, d1 = (input._dim(d, "rot90") for d in dims)
    k %= 4
    if k == 1:
        return transpose(flip(input, [d1]), d0, d1)
    if k == 2:
        return flip(input, [d0, d1])
    if k == 3:
        return flip(transpose(input, d0, d1), [d1])
    return input.clone()


def msort(input) -> Tensor:
    """The values sorted along dim 0."""
    from gpunn.ops.reduce import sort

    return sort(input, 0).values
