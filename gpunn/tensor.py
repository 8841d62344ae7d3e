"""``Tensor``: storage, version counters, the autograd graph and ``backward()``.

A Tensor holds one backend's array (``_data``, the internal accessor), the backend it lives on, and a
version counter shared by every tensor that aliases the same memory (views, ``detach()``, ``.data``, an
optimizer's flat-buffer slices). When a differentiable op produces it from inputs that require grad it
also records its parents, a ``_backward`` closure (gradient of the output -> gradients of the parents)
and ``_saved``: the (counter, version) of every tensor whose values that closure reads. Every in-place
write bumps the counter, and ``backward()`` refuses to run a closure whose saved tensors changed, with
PyTorch's "modified by an inplace operation" error, instead of returning wrong gradients.

The ops themselves live in ``gpunn.ops`` (one definition each, bound here as methods and exported as
``gpunn.*`` and ``F.*`` functions); this module is the core they build on.
"""

from __future__ import annotations

import numpy as np

from gpunn.backend import Backend, get_backend
from gpunn.dtypes import (  # noqa: F401  (re-exported: older imports name them from here)
    _coerce,
    _infer_dtype,
    _is_float,
    as_dtype,
    bool_,
    default_float,
    dtype_name,
    float16,
    float32,
    float64,
    int32,
    int64,
    legacy_type_name,
    uint8,
)
from gpunn.grad_mode import _grad_state, enable_grad, is_grad_enabled, no_grad, set_grad_enabled  # noqa: F401


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
class _Version:
    """The in-place write count of one storage, shared by every tensor aliasing it."""

    value = 0  # class defaults: creating a counter (once per tensor) costs one object allocation
    last_op = ""


def _freed_backward(_g):
    raise RuntimeError(
        "Trying to backward through the graph a second time: its intermediate results were freed by "
        "the first backward(). Call backward(retain_graph=True) the first time if you need to."
    )


def _unbroadcast(g, shape):
    """Sum ``g`` over the axes along which an input of ``shape`` was broadcast."""
    if g.shape == tuple(shape):
        return g
    extra = g.ndim - len(shape)
    if extra > 0:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def _quiet_div(a, b):
    """a / b where b may be 0: inf/nan as in PyTorch, without NumPy's warning."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return a / b


def _check_same_backend(a: Tensor, b: Tensor, op: str) -> None:
    if a._backend is not b._backend:
        raise RuntimeError(
            f"{op}: expected all tensors on the same device, got '{a._backend.name}' ({a.device}) and "
            f"'{b._backend.name}' ({b.device}); move one with .to('{a.device}')"
        )


def _describe(t) -> str:
    return f"[{legacy_type_name(t.dtype)} {list(t.shape)}]"


class _HookHandle:
    """What a ``register_*_hook`` returns: ``remove()`` takes the hook out of its table again."""

    _next_id = 0

    def __init__(self, table: dict, hook) -> None:
        _HookHandle._next_id += 1
        self.id, self._table = _HookHandle._next_id, table
        table[self.id] = hook

    def remove(self) -> None:
        self._table.pop(self.id, None)


# ------------------------------------------------------------------------------------------------
# Tensor
# ------------------------------------------------------------------------------------------------
class Tensor:
    """An n-dimensional array on one backend, with optional gradient tracking.

    ``gpunn.Tensor([1, 2])`` is float32 (as ``torch.Tensor``); ``gpunn.Tensor(2, 3)`` has shape (2, 3).
    >>> x = gpunn.tensor([[1.0, 2.0]], requires_grad=True)
    >>> (x * x).sum().backward(); x.grad
    tensor([[2., 4.]])
    """

    __array_priority__ = 1000  # numpy_array * tensor -> Tensor.__rmul__
    # defaults shared by every instance (an op's output sets only what differs)
    _grad_owner = None  # the optimizer flat buffer holding this parameter's storage, if any
    _post_accumulate_hooks = None  # {handle id: hook(tensor)}, set by register_post_accumulate_grad_hook
    grad = None
    requires_grad = False
    _parents: tuple = ()
    _backward = None
    _op = ""
    _saved: tuple = ()  # ((version counter, version at save time, tensor or None for the output), ...)
    _uses = 0  # how many recorded ops take this tensor as an input
    _is_view = False  # a view (reshape, index, ...) recorded in the graph of a tensor that requires grad
    _view_of = None  # (base, rebase) for a view aliasing base: rebase(base, view) writes the view back
    _retains_grad = False
    _grad_view = None  # set by an optimizer: where this leaf's grad lives in a flat buffer

    def __init__(self, *data, requires_grad: bool = False, device=None, dtype=None) -> None:
        be = get_backend() if device is None else _backend_of(device)
        dtype = float32 if dtype is None else as_dtype(dtype)
        if len(data) == 1 and isinstance(data[0], Tensor):
            raise TypeError("Tensor(tensor): use tensor.clone() or tensor.detach() instead")
        if not data:
            array = be.xp.zeros((0,), dtype=dtype)  # Tensor(): empty, as torch.Tensor()
        elif all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in data):
            array = be.xp.zeros(tuple(int(n) for n in data), dtype=dtype)  # Tensor(2, 3): a (2, 3) tensor
        elif len(data) == 1:
            src = data[0]
            if not be.is_array(src):
                src = np.asarray(src)
                if src.dtype.kind not in "biuf":
                    raise TypeError(f"Tensor(): data must be numeric, got dtype {src.dtype}")
            array = _owned_copy(be.asarray(src, dtype=dtype), data[0], be)
        else:
            raise TypeError(f"Tensor(): expected a sequence of data or a size, got {data!r}")
        self._init(array, be)
        if requires_grad:
            self.requires_grad_(True)

    def _init(self, array, backend: Backend) -> None:
        self._data = array
        self._backend = backend
        self._vc = _Version()

    # -- construction from an op ------------------------------------------------------------------
    @classmethod
    def _wrap(cls, data, backend: Backend) -> Tensor:
        """A new leaf Tensor owning ``data`` (an array of ``backend``; converted if it is not one)."""
        t = object.__new__(Tensor)
        if not isinstance(data, backend.xp.ndarray):
            data = backend.xp.asarray(data)
        t._data = data
        t._backend = backend
        t._vc = _Version()
        return t

    def _result(
        self, data, parents: tuple, backward, op: str, saved=None, saves_output: bool = False, view: bool = False
    ) -> Tensor:
        """Wrap an op's output; record the graph edge when grad mode is on and a parent needs grad.

        ``saved``: the tensors whose values ``backward`` reads (default: every parent); ``saves_output``:
        it reads the output too; ``view``: the output aliases ``self``'s memory (shares its counter)."""
        out = Tensor._wrap(data, self._backend)
        if view and _may_alias(self, out._data):
            out._vc = self._vc
            out._view_of = (self, None)
        if not getattr(_grad_state, "enabled", True):
            return out
        needed = every = False
        for p in parents:
            if p.requires_grad:
                needed = True
                p._uses += 1
            else:
                every = True  # some parent needs no gradient
        if not needed:
            return out
        out.requires_grad = True
        # an edge only to the parents that require grad now (a parent made to require grad later, by an
        # in-place op, must not receive this op's gradient)
        out._parents = tuple(p if p.requires_grad else None for p in parents) if every else parents
        out._backward = backward
        out._op = op
        if saved is None:
            saved = parents
        if saved or saves_output:
            rec = [(t._vc, t._vc.value, t) for t in saved if t is not None]
            if saves_output:
                rec.append((out._vc, out._vc.value, None))
            out._saved = tuple(rec)
        if view:
            out._is_view = True
        return out

    def _operand(self, other, op: str) -> Tensor:
        """``other`` (Tensor, scalar, array) as a Tensor on this tensor's backend."""
        if isinstance(other, Tensor):
            _check_same_backend(self, other, op)
            return other
        be = self._backend
        if isinstance(other, (bool, int, float)):
            # a Python scalar never widens a tensor's dtype (as in PyTorch); a float scalar makes an
            # integer or bool tensor's result float32, an int scalar makes a bool tensor's result int64
            if isinstance(other, float) and not _is_float(self.dtype):
                dtype = default_float
            elif self.dtype == np.bool_ and not isinstance(other, bool):
                dtype = np.dtype(np.int64)
            else:
                dtype = self.dtype
            return Tensor._wrap(be.xp.asarray(other, dtype=dtype), be)
        if isinstance(other, np.ndarray) or be.is_array(other):
            if not be.is_array(other):
                if be.name != "numpy":
                    raise RuntimeError(
                        f"{op}: got a NumPy array where the '{be.name}' backend needs its "
                        "own array; wrap it with gpunn.tensor(...) first"
                    )
            return Tensor._wrap(be.xp.asarray(other), be)
        if type(other).__module__.startswith("cupy"):
            raise RuntimeError(f"{op}: got a CuPy array where the '{be.name}' backend needs its own array")
        try:
            return Tensor._wrap(be.xp.asarray(other), be)
        except Exception as exc:
            raise TypeError(f"{op}: unsupported operand of type {type(other).__name__}") from exc

    # -- storage: .data (PyTorch's detached alias) ---------------------------------------------------
    @property
    def data(self) -> Tensor:
        """A tensor sharing this one's storage (and version counter), detached, not requiring grad."""
        return self.detach()

    @data.setter
    def data(self, value) -> None:
        """``t.data = other``: ``t`` now uses ``other``'s storage (shape and dtype may change). An
        optimizer holding ``t`` copies the new values into its flat buffer at its next step."""
        if not isinstance(value, Tensor):
            raise TypeError(
                f"Tensor.data must be assigned a Tensor, got {type(value).__name__}; wrap it with "
                "gpunn.tensor(...) or use t.copy_(...)"
            )
        if self._grad_owner is not None:  # the optimizer will copy the new values over the old storage
            self._bump_version("data assignment")
        self._data = value._data
        self._backend = value._backend
        self._vc = value._vc

    def _bump_version(self, op: str) -> None:
        """Record an in-place write to this tensor's storage (done by every in-place op)."""
        v = self._vc
        v.value += 1
        v.last_op = op

    @property
    def _version(self) -> int:
        return self._vc.value

    # -- basic properties -------------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return tuple(self._data.shape)

    @property
    def dtype(self):
        return self._data.dtype

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def device(self):
        from gpunn.device import device_of

        return device_of(self._backend)

    @property
    def is_cuda(self) -> bool:
        return self._backend.name != "numpy"

    @property
    def is_leaf(self) -> bool:
        return self._backward is None

    @property
    def grad_fn(self):
        return self._op or None

    @property
    def itemsize(self) -> int:
        return int(self._data.dtype.itemsize)

    def element_size(self) -> int:
        return self.itemsize

    def dim(self) -> int:
        return self._data.ndim

    ndimension = dim

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[self._dim(dim, "size")]

    def numel(self) -> int:
        return int(self._data.size)

    nelement = numel

    def _dim(self, dim: int, op: str, extra: int = 0) -> int:
        """``dim`` in [-(ndim + extra), ndim + extra) as a non-negative index, or IndexError (as PyTorch)."""
        n = max(self.ndim + extra, 1)
        if not -n <= dim < n:
            raise IndexError(
                f"{op}: dimension {dim} is out of range for a tensor of {self.ndim} dimensions "
                f"(expected one in [{-n}, {n - 1}])"
            )
        return dim % n

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    def __repr__(self) -> str:
        from gpunn._format import tensor_repr

        return tensor_repr(self)

    def __format__(self, spec: str) -> str:
        if self.ndim == 0:  # '{:.0f}'.format(t) formats the number, as in PyTorch
            return format(self.item(), spec)
        if spec:
            raise TypeError(
                f"unsupported format string {spec!r} passed to Tensor.__format__ (only 0-d "
                "tensors format as numbers; use t.item() or t.tolist())"
            )
        return repr(self)

    def __hash__(self) -> int:
        return id(self)

    def __getattr__(self, name: str):
        # only reached when normal lookup failed: name the unsupported PyTorch method plainly
        if name.startswith("_"):
            raise AttributeError(f"'Tensor' object has no attribute {name!r}")
        raise AttributeError(
            f"'Tensor' object has no attribute {name!r}: Tensor.{name} is not supported by gpunn "
            "(docs/pytorch-compat.md lists what is)"
        )

    # -- conversions ------------------------------------------------------------------------------
    def numpy(self, force: bool = False) -> np.ndarray:
        """The data as a NumPy array (a view on the numpy backend; a copy from the GPU, where PyTorch
        would ask for ``.cpu()`` first)."""
        if self.requires_grad and not force:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead.")
        return self._backend.to_numpy(self._data)

    def item(self):
        if self._data.size != 1:
            raise RuntimeError(
                f"a Tensor with {self._data.size} elements cannot be converted to Scalar "
                f"(item() needs exactly one element; shape {self.shape})"
            )
        return self._backend.to_numpy(self._data).reshape(()).item()

    def tolist(self):
        return self._backend.to_numpy(self._data).tolist()

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self.dtype.kind not in "iu":
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __bool__(self) -> bool:
        if self._data.size != 1:
            raise RuntimeError(
                f"Boolean value of Tensor with more than one value is ambiguous ({self._data.size} elements)"
            )
        return bool(self.item())

    def __array__(self, dtype=None, copy=None):
        a = self._backend.to_numpy(self._data)
        return a.astype(dtype) if dtype is not None else a

    # -- DLPack: zero-copy exchange with PyTorch, CuPy, NumPy, JAX ... --------------------------
    def __dlpack__(self, *args, **kwargs):
        """Export the data (no copy): ``torch.from_dlpack(t)``, ``cupy.from_dlpack(t)``."""
        return self._data.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self._data.__dlpack_device__()

    # -- graph ---------------------------------------------------------------------------------------
    def detach(self) -> Tensor:
        """A tensor sharing this one's storage and version counter, cut from the graph."""
        t = Tensor._wrap(self._data, self._backend)
        t._vc = self._vc
        return t

    def detach_(self) -> Tensor:
        if self._is_view:
            raise RuntimeError("detach_(): can't detach a view in place; use detach()")
        self._parents, self._backward, self._op, self._saved = (), None, "", ()
        self.requires_grad = False
        return self

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if requires_grad and not _is_float(self.dtype):
            raise RuntimeError(
                f"only Tensors of floating point dtype can require gradients, got dtype {dtype_name(self.dtype)}"
            )
        if not self.is_leaf and not requires_grad:
            raise RuntimeError(
                "you can only change requires_grad flags of leaf variables. If you want to use "
                "a computed variable in a subgraph that doesn't require differentiation use "
                "var_no_grad = var.detach()."
            )
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self) -> None:
        """Keep ``.grad`` for this non-leaf tensor after backward()."""
        if not self.requires_grad:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        if not self.is_leaf:
            self._retains_grad = True

    def register_post_accumulate_grad_hook(self, hook):
        """Call ``hook(self)`` each time backward() has accumulated a gradient into this leaf's ``.grad``
        (DistributedDataParallel starts its gradient all-reduce from here). Returns a handle whose
        ``remove()`` unregisters it.

        >>> h = w.register_post_accumulate_grad_hook(lambda p: print(p.grad)); h.remove()
        """
        if not self.is_leaf:
            raise RuntimeError("post accumulate grad hooks cannot be registered on non-leaf tensors")
        if not callable(hook):
            raise TypeError(f"hook must be callable, got {type(hook).__name__}")
        if self._post_accumulate_hooks is None:
            self._post_accumulate_hooks = {}
        return _HookHandle(self._post_accumulate_hooks, hook)

    @property
    def retains_grad(self) -> bool:
        return self._retains_grad

    # -- devices and dtypes -------------------------------------------------------------------------
    def astype(self, dtype) -> Tensor:
        """This tensor in ``dtype`` (itself when it already is); float -> float keeps the graph."""
        dtype = as_dtype(dtype)
        if dtype == self.dtype:
            return self
        src = self.dtype
        data = self._data.astype(dtype)
        if _is_float(dtype) and _is_float(src):
            return self._result(data, (self,), lambda g: (g.astype(src),), "ToCopyBackward", saved=())
        return Tensor._wrap(data, self._backend)

    def float(self) -> Tensor:
        return self.astype(float32)

    def double(self) -> Tensor:
        return self.astype(float64)

    def half(self) -> Tensor:
        return self.astype(float16)

    def long(self) -> Tensor:
        return self.astype(int64)

    def int(self) -> Tensor:
        return self.astype(int32)

    def bool(self) -> Tensor:
        return self.astype(bool_)

    def type(self, dtype=None, non_blocking: bool = False):
        """``t.type()`` -> ``'gpunn.FloatTensor'``; ``t.type(gpunn.float64)`` / ``t.type('gpunn.LongTensor')``
        -> a converted tensor."""
        if dtype is None:
            name = legacy_type_name(self.dtype)
            return name if self._backend.name == "numpy" else name.replace("gpunn.", "gpunn.cuda.")
        if isinstance(dtype, str) and dtype.split(".")[-1].endswith("Tensor"):
            from gpunn.dtypes import _LEGACY_NAMES

            by_name = {v: k for k, v in _LEGACY_NAMES.items()}
            if dtype.split(".")[-1] not in by_name:
                raise TypeError(f"type(): unknown tensor type {dtype!r}")
            dtype = by_name[dtype.split(".")[-1]]
        return self.astype(dtype)

    def type_as(self, other: Tensor) -> Tensor:
        return self.to(other)

    def to(self, *args, **kwargs) -> Tensor:
        """``.to(device)``, ``.to(dtype)``, ``.to(device, dtype)``, ``.to(other_tensor)``, keywords
        ``device=``/``dtype=``/``copy=``; devices are 'cpu', 'cuda', 'cuda:0', gpunn.device or a backend
        name. Both a dtype change and a device move keep the graph (the result is not a leaf), as in PyTorch."""
        copy = kwargs.pop("copy", False)
        target, dtype = parse_to_args(args, kwargs, "to()")
        out = self
        if target is not None:
            be = _backend_of(target)
            if be is not self._backend:
                out = self._moved_to(be)
        if dtype is not None:
            out = out.astype(dtype)
        if copy and out is self:
            out = self.clone()
        return out

    def _moved_to(self, be: Backend) -> Tensor:
        """A copy on another backend; differentiable (ToCopyBackward0), as PyTorch's device moves are."""
        src = self._backend
        out = Tensor._wrap(be.asarray(src.to_numpy(self._data)), be)
        if is_grad_enabled() and self.requires_grad:
            out.requires_grad = True
            out._parents = (self,)
            out._backward = lambda g: (src.asarray(be.to_numpy(g)),)
            out._op = "ToCopyBackward0"
            self._uses += 1
        return out

    def cpu(self) -> Tensor:
        return self.to("cpu")

    def cuda(self, device=None, non_blocking: bool = False) -> Tensor:
        return self.to("cuda" if device is None else device if not isinstance(device, int) else f"cuda:{device}")

    # -- in-place machinery ----------------------------------------------------------------------------
    def _check_inplace(self, op: str) -> None:
        data = self._data
        if data.size > 1 and 0 in data.strides and any(st == 0 and n > 1 for st, n in zip(data.strides, data.shape)):
            raise RuntimeError(
                f"{op}: unsupported operation: more than one element of the written-to tensor "
                "refers to a single memory location (an expand()ed tensor); clone() it first"
            )
        if is_grad_enabled() and self.requires_grad:
            if self._backward is None:
                raise RuntimeError(
                    f"{op}: a leaf Variable that requires grad is being used in an in-place "
                    "operation. Wrap the update in `with gpunn.no_grad():` (a parameter update) "
                    "or use the out-of-place op"
                )
            if self._is_view:
                raise RuntimeError(
                    f"{op}: in-place modification of a view of a tensor that requires grad is "
                    "not supported by gpunn's autograd; use the out-of-place op (e.g. "
                    "y = y.clone(); y[...] = ...) or modify it under gpunn.no_grad()"
                )

    def _write(self, data, op: str, cast: bool = False) -> None:
        """Write ``data`` (an array, broadcast to this shape) into the storage. An op's float result can't
        go into an integer tensor (PyTorch's rule) unless ``cast`` (fill_, copy_: values are converted)."""
        src = getattr(data, "dtype", None)
        if not cast and src is not None and _is_float(src) and not _is_float(self.dtype):
            raise RuntimeError(
                f"{op}: result type {dtype_name(src)} can't be cast to the desired output type {dtype_name(self.dtype)}"
            )
        if hasattr(data, "shape") and tuple(data.shape) != self.shape:
            try:
                shape = np.broadcast_shapes(tuple(data.shape), self.shape)
            except ValueError:
                shape = None
            if shape != self.shape:
                raise RuntimeError(
                    f"{op}: output with shape {list(self.shape)} doesn't match the broadcast "
                    f"shape {list(shape) if shape else list(data.shape)}"
                )
        try:
            self._data[...] = data
        except ValueError as exc:
            if getattr(getattr(self._data, "flags", None), "writeable", True):
                raise
            raise RuntimeError(
                f"{op}: unsupported operation: more than one element of the written-to tensor "
                "refers to a single memory location (an expand()ed tensor); clone() it "
                "first"
            ) from exc
        self._bump_version(op)

    def _inplace(self, op: str, fn, *args) -> Tensor:
        """``self <- fn(self, *args)`` in place, with PyTorch's rules; ``fn`` is the out-of-place op.

        Outside the graph (no grad needed, or ``no_grad``) the result is written into the storage. When
        the result needs a gradient, this tensor takes over the op's node: the old value becomes a
        private snapshot that the op consumed, so every alias sees the new values and backward
        differentiates through both."""
        self._check_inplace(op)
        record = is_grad_enabled() and (
            self.requires_grad or any(isinstance(a, Tensor) and a.requires_grad for a in args)
        )
        if not record:
            with no_grad():
                res = fn(self, *args)
            self._write(res._data, op)
            return self
        if self._uses:
            raise RuntimeError(
                f"{op}: this tensor was already used by another operation of the graph, which "
                "gpunn's autograd can't rewrite in place; use the out-of-place op (x = x + y) "
                "instead"
            )
        view_of = self._view_of
        if view_of is not None:  # the base must see the new graph too: only through a basic index, once
            base, rebase = view_of
            if rebase is None or base._view_of is not None or base._uses or base.requires_grad:
                raise RuntimeError(
                    f"{op}: an in-place op whose result requires grad on a view (reshape, "
                    "permute, expand, a view of a view) is not supported by gpunn's autograd; "
                    "write through indexing of the base tensor (base[idx] = ...) or use the "
                    "out-of-place op"
                )
        old = Tensor._wrap(self._data.copy(), self._backend)
        old.requires_grad, old._parents, old._backward = self.requires_grad, self._parents, self._backward
        old._op, old._saved = self._op, self._saved
        res = fn(old, *args)
        self._write(res._data, op)
        self.requires_grad = True
        self._parents, self._backward, self._op = res._parents, res._backward, res._op
        now = self._vc.value
        self._saved = tuple((self._vc, now, None) if c is res._vc else (c, v, t) for c, v, t in res._saved)
        if view_of is not None:
            base._inplace("index_put_", rebase, self)  # base = index_put(old base, idx, this view)
            # that write put back the values this node just produced: what it saved of them is current
            self._saved = tuple((c, c.value if c is self._vc else v, t) for c, v, t in self._saved)
        return self

    # -- backward -----------------------------------------------------------------------------------
    def backward(
        self, gradient=None, retain_graph: bool | None = None, create_graph: bool = False, inputs=None
    ) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad (only into the
        tensors in ``inputs``, leaves or not, when given).

        ``gradient`` is required when self is not a scalar (it is d(loss)/d(self), same shape)."""
        if create_graph:
            raise NotImplementedError("backward(create_graph=True): higher-order gradients are not supported by gpunn")
        if inputs is not None:
            inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
            if not inputs:
                raise RuntimeError("backward(): 'inputs' argument to backward() cannot be empty.")
            for t in inputs:
                if not isinstance(t, Tensor) or not t.requires_grad:
                    raise RuntimeError("backward(): one of the tensors in 'inputs' does not require grad")
        if not self.requires_grad:
            raise RuntimeError(
                "element 0 of tensors does not require grad and does not have a grad_fn "
                "(did you call backward() on a result computed inside no_grad(), or forget "
                "requires_grad=True?)"
            )
        got = _backprop([self], [self._seed_grad(gradient, "backward()")], retain_graph, inputs)
        for t in inputs or ():
            if id(t) in got:
                t._accumulate_grad(got[id(t)])

    def _seed_grad(self, gradient, who: str):
        """The gradient backward starts from: ``gradient`` (this tensor's shape), or 1 for a single element."""
        if gradient is None:
            if self._data.size != 1:
                raise RuntimeError(
                    f"grad can be implicitly created only for scalar outputs; this tensor has "
                    f"shape {self.shape}, pass gradient= of that shape"
                )
            return self._backend.xp.ones_like(self._data)
        g = gradient._data if isinstance(gradient, Tensor) else self._backend.asarray(gradient)
        if tuple(g.shape) != self.shape:
            raise RuntimeError(f"{who}: gradient has shape {tuple(g.shape)}, expected {self.shape}")
        return g.astype(self.dtype, copy=False)

    def _accumulate_grad(self, g) -> None:
        if g.dtype != self.dtype:
            g = g.astype(self.dtype)
        if self.grad is None:
            if self._grad_view is not None and self._grad_view.shape == g.shape:
                self._grad_view[...] = g  # lands in the optimizer's flat gradient buffer
                self.grad = Tensor._wrap(self._grad_view, self._backend)
            else:
                self.grad = Tensor._wrap(g.copy(), self._backend)
        else:
            self.grad._data += g
            self.grad._bump_version("backward")
        if self._post_accumulate_hooks:
            for hook in list(self._post_accumulate_hooks.values()):
                hook(self)


def _backprop(roots, seeds, retain_graph, inputs=None) -> dict:
    """Run the graph backward from ``roots`` (tensors that require grad) seeded with ``seeds`` (their gradient
    arrays). Without ``inputs`` every leaf's gradient (and every retain_grad() tensor's) is accumulated into
    its ``.grad``; with ``inputs`` nothing is, and the gradients reaching those tensors are returned,
    ``{id(tensor): array}`` (propagation goes on through them: an input may depend on another)."""
    # topological order over the nodes that require grad (iterative DFS: deep graphs are fine)
    order, seen = [], set()
    for root in roots:
        stack = [(root, False)]
        while stack:
            node, done = stack.pop()
            if done:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            for p in node._parents:
                if p is not None and p.requires_grad and id(p) not in seen:
                    stack.append((p, False))
    grads = {}
    for root, g in zip(roots, seeds):
        grads[id(root)] = grads[id(root)] + g if id(root) in grads else g
    wanted = None if inputs is None else {id(t) for t in inputs}
    captured = {}
    with no_grad():
        for node in reversed(order):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if wanted is not None and id(node) in wanted:
                captured[id(node)] = g
            if node._backward is None:  # a leaf
                if wanted is None:
                    node._accumulate_grad(g)
                continue
            if node._retains_grad and wanted is None:
                node._accumulate_grad(g)
            for counter, version, t in node._saved:
                if counter.value != version:
                    raise RuntimeError(_modified_message(node, counter, version, t))
            parent_grads = node._backward(g)
            for p, pg in zip(node._parents, parent_grads):
                if pg is None or p is None or not p.requires_grad:
                    continue
                if tuple(pg.shape) != p.shape:  # a broken backward would otherwise broadcast silently
                    raise RuntimeError(
                        f"{node._op} returned a gradient of shape {tuple(pg.shape)} for an input of shape {p.shape}"
                    )
                if pg.dtype != p._data.dtype:
                    pg = pg.astype(p._data.dtype)
                key = id(p)
                grads[key] = grads[key] + pg if key in grads else pg
            if not retain_graph:
                for p in node._parents:
                    if p is not None:
                        p._uses -= 1
                node._backward = _freed_backward
                node._parents = ()
                node._saved = ()
    return captured


def parse_to_args(args: tuple, kwargs: dict, who: str) -> tuple:
    """(device-like or None, dtype-like or None) from the arguments of ``Tensor.to`` / ``Module.to``:
    ``(device)``, ``(dtype)``, ``(device, dtype)``, ``(tensor)``, keywords ``device=``/``dtype=``
    (``non_blocking=`` is accepted and ignored)."""
    target, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    kwargs.pop("non_blocking", None)
    if kwargs:
        raise TypeError(f"{who}: unexpected keyword arguments {sorted(kwargs)}")
    if len(args) > 2:
        raise TypeError(f"{who}: expected at most (device, dtype), got {len(args)} arguments")
    for a in args:
        if isinstance(a, Tensor):
            target, dtype = a._backend, a.dtype
        elif a is None:
            continue
        elif _is_device_like(a):
            target = a
        else:
            dtype = a
    return target, dtype


def _modified_message(node, counter, version, t) -> str:
    what = (
        f"output 0 of {node._op}"
        if t is None
        else (f"output 0 of {t._op}" if t._op else "a leaf tensor" if t.is_leaf else "an input")
    )
    desc = _describe(node) if t is None else _describe(t)
    by = f" (last modified by {counter.last_op})" if counter.last_op else ""
    return (
        f"one of the variables needed for gradient computation has been modified by an inplace operation: "
        f"{desc}, which is {what} and saved by {node._op}, is at version {counter.value}; expected "
        f"version {version} instead{by}. Compute the backward before modifying it (e.g. call "
        "optimizer.step() after loss.backward()), or modify a clone()."
    )


def _owned_copy(arr, src, be):
    """``arr`` (made from the user's ``src`` by ``be.asarray``), copied when it is or shares memory with ``src``:
    ``tensor(x)`` and ``Tensor(x)`` never alias the caller's array. Only a NumPy result can share a NumPy
    source's memory (CuPy's shares_memory refuses host arrays)."""
    if arr is src or (be.name == "numpy" and isinstance(src, np.ndarray) and np.shares_memory(arr, src)):
        return arr.copy()
    return arr


def _may_alias(t: Tensor, out) -> bool:
    """Whether a view op's output array may share memory with ``t``'s (NumPy's reshape sometimes copies)."""
    if out is t._data:
        return True
    check = getattr(t._backend.xp, "may_share_memory", None)
    return True if check is None else bool(check(t._data, out))


def _is_device_like(a) -> bool:
    from gpunn.device import device

    if isinstance(a, (device, Backend)):
        return True
    if isinstance(a, str):
        name = a.split(":")[0].strip().lower()
        return name in ("cpu", "cuda", "numpy", "cupy", "auto")
    return isinstance(a, int) and not isinstance(a, bool)


def _backend_of(target) -> Backend:
    from gpunn.device import backend_of

    return backend_of(target)
