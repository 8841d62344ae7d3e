"""``Tensor`` and reverse-mode autograd.

A Tensor holds one backend's array (``.data``), the backend it lives on, and -- when it was produced by
a differentiable op on inputs that require grad -- its parents and a ``_backward`` closure mapping the
gradient of the output to the gradients of each parent. ``backward()`` sorts the graph topologically,
runs the closures in reverse, reduces broadcast gradients back to each input's shape, and accumulates
into ``.grad`` of the leaves. Each op's forward and backward are written next to each other.
"""

from __future__ import annotations

import functools
import math
import threading
from collections import namedtuple

import numpy as np

from gpunn.backend import Backend, get_backend

float16 = np.dtype(np.float16)
float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
int32 = np.dtype(np.int32)
int64 = np.dtype(np.int64)
uint8 = np.dtype(np.uint8)
bool_ = np.dtype(np.bool_)
default_float = float32

MaxMin = namedtuple("MaxMin", ["values", "indices"])

# ------------------------------------------------------------------------------------------------
# grad mode
# ------------------------------------------------------------------------------------------------
_grad_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_grad_state, "enabled", True)


class set_grad_enabled:
    """Context manager (and decorator) that turns graph recording on or off."""

    def __init__(self, mode: bool) -> None:
        self.mode = bool(mode)

    def __enter__(self):
        self.prev = is_grad_enabled()
        _grad_state.enabled = self.mode

    def __exit__(self, *exc):
        _grad_state.enabled = self.prev
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with type(self)(self.mode) if type(self) is set_grad_enabled else type(self)():
                return fn(*args, **kwargs)

        return wrapper


class _BareDecorator(set_grad_enabled):
    """Lets a no-argument grad-mode class decorate with or without parentheses (``@no_grad``)."""

    def __new__(cls, fn=None):
        self = super().__new__(cls)
        if fn is None:
            return self
        self.__init__()
        return self(fn)  # bare ``@no_grad``: the decorated function, not a context manager


class no_grad(_BareDecorator):
    """``with gpunn.no_grad():`` -- ops inside record no graph (evaluation, parameter updates).

    Also a decorator: ``@gpunn.no_grad()`` or ``@gpunn.no_grad``."""

    def __init__(self, fn=None) -> None:
        super().__init__(False)


class enable_grad(_BareDecorator):
    """``with gpunn.enable_grad():`` -- record the graph again inside a ``no_grad`` block."""

    def __init__(self, fn=None) -> None:
        super().__init__(True)


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
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


def _is_float(dtype) -> bool:
    return np.dtype(dtype).kind == "f"


def _check_same_backend(a: Tensor, b: Tensor, op: str) -> None:
    if a._backend is not b._backend:
        raise RuntimeError(
            f"{op}: expected all tensors on the same backend, got '{a._backend.name}' and "
            f"'{b._backend.name}'; move one with .to('{a._backend.name}')"
        )


def _coerce(a, b):
    """PyTorch's promotion for two arrays: integer/bool with float takes the float's dtype."""
    fa, fb = _is_float(a.dtype), _is_float(b.dtype)
    if fa and not fb:
        b = b.astype(a.dtype)
    elif fb and not fa:
        a = a.astype(b.dtype)
    return a, b


def _add(a, b):
    return a + b


def _infer_dtype(data):
    """PyTorch's inference: Python floats -> float32, Python ints -> int64, bools -> bool."""
    if isinstance(data, np.generic):  # NumPy scalars keep their dtype (np.float64 is a float subclass)
        return None
    if isinstance(data, bool):
        return bool_
    if isinstance(data, int):
        return int64
    if isinstance(data, float):
        return default_float
    return None


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

    >>> x = gpunn.tensor([[1.0, 2.0]], requires_grad=True)
    >>> (x * x).sum().backward(); x.grad
    tensor([[2., 4.]])
    """

    __array_priority__ = 1000  # numpy_array * tensor -> Tensor.__rmul__
    _grad_owner = None  # the optimizer flat buffer holding this parameter's gradient storage, if any
    _post_accumulate_hooks = None  # {handle id: hook(tensor)}, set by register_post_accumulate_grad_hook

    def __init__(self, data, requires_grad: bool = False, *, _backend: Backend | None = None) -> None:
        backend = _backend if _backend is not None else get_backend()
        if isinstance(data, Tensor):
            raise TypeError("Tensor(tensor): use tensor.clone() or tensor.detach() instead")
        if not backend.is_array(data):
            dtype = _infer_dtype(data)
            if dtype is None and isinstance(data, (list, tuple)) and np.asarray(data).dtype == float64:
                dtype = default_float  # nested Python floats -> float32, as torch.Tensor([...]) does
            data = backend.asarray(data, dtype=dtype)
        self.data = data
        self._backend = backend
        self.grad: Tensor | None = None
        self._parents: tuple = ()
        self._backward = None
        self._op = ""
        self._retains_grad = False
        self._grad_view = None  # set by an optimizer: where this leaf's grad lives in a flat buffer
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # -- construction from an op ------------------------------------------------------------------
    @classmethod
    def _wrap(cls, data, backend: Backend) -> Tensor:
        t = cls.__new__(Tensor)
        if not isinstance(data, backend.xp.ndarray):
            data = backend.xp.asarray(data)
        t.data = data
        t._backend = backend
        t.grad = None
        t._parents = ()
        t._backward = None
        t._op = ""
        t._retains_grad = False
        t._grad_view = None
        t.requires_grad = False
        return t

    def _result(self, data, parents: tuple, backward, op: str) -> Tensor:
        """Wrap an op's output; record the graph edge when grad mode is on and a parent needs grad."""
        out = Tensor._wrap(data, self._backend)
        if is_grad_enabled() and any(p.requires_grad for p in parents):
            out.requires_grad = True
            out._parents = parents
            out._backward = backward
            out._op = op
        return out

    def _operand(self, other, op: str) -> Tensor:
        """``other`` (Tensor, scalar, array) as a Tensor on this tensor's backend."""
        if isinstance(other, Tensor):
            _check_same_backend(self, other, op)
            return other
        be = self._backend
        if isinstance(other, (bool, int, float)):
            # a Python scalar never widens a tensor's dtype (as in PyTorch); a float scalar makes an
            # integer tensor's result float32
            if _is_float(self.dtype) or not isinstance(other, float):
                dtype = self.dtype
            else:
                dtype = default_float
            return Tensor._wrap(be.xp.asarray(other, dtype=dtype), be)
        if isinstance(other, np.ndarray) or be.is_array(other):
            if not be.is_array(other):
                if be.name != "numpy":
                    raise RuntimeError(f"{op}: got a NumPy array where the '{be.name}' backend needs its "
                                       "own array; wrap it with gpunn.tensor(...) first")
            return Tensor._wrap(be.xp.asarray(other), be)
        if type(other).__module__.startswith("cupy"):
            raise RuntimeError(f"{op}: got a CuPy array where the '{be.name}' backend needs its own array")
        try:
            return Tensor._wrap(be.xp.asarray(other), be)
        except Exception as exc:
            raise TypeError(f"{op}: unsupported operand of type {type(other).__name__}") from exc

    # -- basic properties -------------------------------------------------------------------------
    # ``_data`` is the internal accessor of the backend array; new internal code uses it, because
    # ``.data`` is becoming PyTorch's detached Tensor view (issue 9).
    @property
    def _data(self):
        return self.data

    @_data.setter
    def _data(self, value) -> None:
        self.data = value

    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def device(self) -> str:
        return self._backend.device

    @property
    def is_leaf(self) -> bool:
        return self._backward is None

    @property
    def grad_fn(self):
        return self._op or None

    def dim(self) -> int:
        return self.data.ndim

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return int(self.data.size)

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self) -> str:
        body = np.array2string(self._backend.to_numpy(self.data), separator=", ", precision=4,
                               prefix="tensor(")
        extra = ""
        if self.dtype not in (float32, int64, bool_):
            extra += f", dtype={self.dtype}"
        if self._backend.name != "numpy":
            extra += f", backend='{self._backend.name}'"
        if self.requires_grad:
            extra += f", grad_fn={self._op}" if self._op else ", requires_grad=True"
        return f"tensor({body}{extra})"

    def __hash__(self) -> int:
        return id(self)

    # -- conversions ------------------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (a view on the numpy backend, a copy from the GPU)."""
        if self.requires_grad:
            raise RuntimeError("Can't call numpy() on a tensor that requires grad; use "
                               "tensor.detach().numpy() instead")
        return self._backend.to_numpy(self.data)

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item(): only a tensor with one element can be converted to a Python "
                             f"scalar, this one has {self.data.size} (shape {self.shape})")
        return self._backend.to_numpy(self.data).reshape(()).item()

    def tolist(self):
        return self._backend.to_numpy(self.data).tolist()

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self.dtype.kind not in "iu":
            raise TypeError("only integer tensors of a single element can be used as an index")
        return int(self.item())

    def __bool__(self) -> bool:
        if self.data.size != 1:
            raise RuntimeError(f"the truth value of a tensor with {self.data.size} elements is ambiguous")
        return bool(self.item())

    def __array__(self, dtype=None, copy=None):
        a = self._backend.to_numpy(self.data)
        return a.astype(dtype) if dtype is not None else a

    # -- DLPack: zero-copy exchange with PyTorch, CuPy, NumPy, JAX ... --------------------------
    def __dlpack__(self, *args, **kwargs):
        """Export the data (no copy): ``torch.from_dlpack(t)``, ``cupy.from_dlpack(t)``."""
        return self.data.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.data.__dlpack_device__()

    def detach(self) -> Tensor:
        """A tensor sharing this one's data, cut from the graph."""
        return Tensor._wrap(self.data, self._backend)

    def clone(self) -> Tensor:
        data = self.data.copy()
        return self._result(data, (self,), lambda g: (g,), "CloneBackward")

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if requires_grad and not _is_float(self.dtype):
            raise RuntimeError(f"only floating-point tensors can require gradients, got dtype {self.dtype}")
        if not self.is_leaf and not requires_grad:
            raise RuntimeError("requires_grad_(False) on a non-leaf tensor; use detach() instead")
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self) -> None:
        """Keep ``.grad`` for this non-leaf tensor after backward()."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad() on a tensor that does not require grad")
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

    def astype(self, dtype) -> Tensor:
        dtype = np.dtype(dtype)
        if dtype == self.dtype:
            return self
        src = self.dtype
        data = self.data.astype(dtype)
        if _is_float(dtype) and _is_float(src):
            return self._result(data, (self,), lambda g: (g.astype(src),), "ToCopyBackward")
        return Tensor._wrap(data, self._backend)

    def float(self) -> Tensor:
        return self.astype(float32)

    def double(self) -> Tensor:
        return self.astype(float64)

    def long(self) -> Tensor:
        return self.astype(int64)

    def int(self) -> Tensor:
        return self.astype(int32)

    def bool(self) -> Tensor:
        return self.astype(bool_)

    def to(self, target=None, dtype=None) -> Tensor:
        """``.to(dtype)``, ``.to("numpy" | "cupy")`` or both: a copy on that backend/dtype (graph kept
        for dtype changes; a backend move returns a new leaf)."""
        out = self
        if target is not None and not isinstance(target, (str, Backend)):
            dtype, target = target, None
        if target is not None:
            from gpunn.backend import backend_for

            be = backend_for(target)
            if be is not self._backend:
                host = self._backend.to_numpy(self.data)
                out = Tensor._wrap(be.asarray(host), be)
                out.requires_grad = self.requires_grad and self.is_leaf
        if dtype is not None:
            out = out.astype(dtype)
        return out

    # -- in-place helpers (no graph) --------------------------------------------------------------
    def _check_inplace(self, op: str) -> None:
        if self.requires_grad and is_grad_enabled():
            raise RuntimeError(f"{op}: a tensor that requires grad can't be modified in place while grad "
                               "is recorded; wrap the update in gpunn.no_grad()")

    def zero_(self) -> Tensor:
        self._check_inplace("zero_")
        self.data[...] = 0
        return self

    def fill_(self, value) -> Tensor:
        self._check_inplace("fill_")
        self.data[...] = value
        return self

    def copy_(self, src) -> Tensor:
        self._check_inplace("copy_")
        src_data = src.data if isinstance(src, Tensor) else self._backend.asarray(src)
        if isinstance(src, Tensor):
            _check_same_backend(self, src, "copy_")
        try:
            self.data[...] = src_data
        except ValueError as exc:
            raise RuntimeError(f"copy_: can't copy shape {tuple(src_data.shape)} into shape {self.shape}") \
                from exc
        return self

    def uniform_(self, a: float = 0.0, b: float = 1.0) -> Tensor:
        self._check_inplace("uniform_")
        self.data[...] = self._backend.uniform(self.shape, a, b, self.dtype)
        return self

    def normal_(self, mean: float = 0.0, std: float = 1.0) -> Tensor:
        self._check_inplace("normal_")
        self.data[...] = self._backend.normal(self.shape, mean, std, self.dtype)
        return self

    def __setitem__(self, index, value) -> None:
        self._check_inplace("__setitem__")
        index = _index_data(index)
        self.data[index] = value.data if isinstance(value, Tensor) else value

    # -- backward -----------------------------------------------------------------------------------
    def backward(self, gradient=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        ``gradient`` is required when self is not a scalar (it is d(loss)/d(self), same shape)."""
        if not self.requires_grad:
            raise RuntimeError("backward(): this tensor does not require grad and has no grad_fn "
                               "(did you call it inside no_grad(), or forget requires_grad=True?)")
        xp = self._backend.xp
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward(): grad can be implicitly created only for scalar outputs; "
                                   f"this tensor has shape {self.shape}, pass gradient= of that shape")
            g = xp.ones_like(self.data)
        else:
            g = gradient.data if isinstance(gradient, Tensor) else self._backend.asarray(gradient)
            if tuple(g.shape) != self.shape:
                raise RuntimeError(f"backward(): gradient has shape {tuple(g.shape)}, expected {self.shape}")
            g = g.astype(self.dtype, copy=False)

        # topological order over the nodes that require grad (iterative DFS: deep graphs are fine)
        order, seen, stack = [], set(), [(self, False)]
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
                if p.requires_grad and id(p) not in seen:
                    stack.append((p, False))

        grads = {id(self): g}
        with no_grad():
            for node in reversed(order):
                g = grads.pop(id(node), None)
                if g is None:
                    continue
                if node._backward is None:  # a leaf
                    node._accumulate_grad(g)
                    continue
                if node._retains_grad:
                    node._accumulate_grad(g)
                parent_grads = node._backward(g)
                for p, pg in zip(node._parents, parent_grads):
                    if pg is None or not p.requires_grad:
                        continue
                    if tuple(pg.shape) != p.shape:  # a broken backward would otherwise broadcast silently
                        raise RuntimeError(f"{node._op} returned a gradient of shape {tuple(pg.shape)} for "
                                           f"an input of shape {p.shape}")
                    if pg.dtype != p.data.dtype:
                        pg = pg.astype(p.data.dtype)
                    key = id(p)
                    grads[key] = grads[key] + pg if key in grads else pg
                if not retain_graph:
                    node._backward = _freed_backward
                    node._parents = ()

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
            self.grad.data += g
        if self._post_accumulate_hooks:
            for hook in list(self._post_accumulate_hooks.values()):
                hook(self)

    # -- arithmetic ---------------------------------------------------------------------------------
    def __add__(self, other) -> Tensor:
        b = self._operand(other, "add")
        out = _add(*_coerce(self.data, b.data))
        sa, sb = self.shape, b.shape
        return self._result(out, (self, b), lambda g: (_unbroadcast(g, sa), _unbroadcast(g, sb)),
                            "AddBackward")

    __radd__ = __add__

    def __sub__(self, other) -> Tensor:
        b = self._operand(other, "sub")
        a_data, b_data = _coerce(self.data, b.data)
        out = a_data - b_data
        sa, sb = self.shape, b.shape
        return self._result(out, (self, b), lambda g: (_unbroadcast(g, sa), _unbroadcast(-g, sb)),
                            "SubBackward")

    def __rsub__(self, other) -> Tensor:
        return self._operand(other, "sub").__sub__(self)

    def __mul__(self, other) -> Tensor:
        b = self._operand(other, "mul")
        a_data, b_data = _coerce(self.data, b.data)
        out = a_data * b_data

        def backward(g):
            ga = _unbroadcast(g * b_data, a_data.shape) if self.requires_grad else None
            gb = _unbroadcast(g * a_data, b_data.shape) if b.requires_grad else None
            return ga, gb

        return self._result(out, (self, b), backward, "MulBackward")

    __rmul__ = __mul__

    def __truediv__(self, other) -> Tensor:
        b = self._operand(other, "div")
        a_data, b_data = _coerce(self.data, b.data)
        if not _is_float(a_data.dtype) and not _is_float(b_data.dtype):  # int / int -> float32
            a_data, b_data = a_data.astype(default_float), b_data.astype(default_float)
        out = a_data / b_data

        def backward(g):
            ga = _unbroadcast(g / b_data, a_data.shape) if self.requires_grad else None
            gb = _unbroadcast(-g * out / b_data, b_data.shape) if b.requires_grad else None
            return ga, gb

        return self._result(out, (self, b), backward, "DivBackward")

    def __rtruediv__(self, other) -> Tensor:
        return self._operand(other, "div").__truediv__(self)

    def __neg__(self) -> Tensor:
        return self._result(-self.data, (self,), lambda g: (-g,), "NegBackward")

    def __pos__(self) -> Tensor:
        return self

    def __pow__(self, exponent) -> Tensor:
        x = self.data
        if isinstance(exponent, (int, float)) and not isinstance(exponent, bool):
            p = exponent
            if isinstance(p, float) and not _is_float(x.dtype):  # int tensor ** 0.5 -> float32
                x = x.astype(default_float)
            out = x ** x.dtype.type(p) if _is_float(x.dtype) else x**p
            if p == 0:  # d/dx x^0 = 0 everywhere, including x = 0 (not 0 * inf), as in PyTorch
                return self._result(out, (self,), lambda g: (g * 0,), "PowBackward0")
            return self._result(out, (self,), lambda g: (g * p * x ** x.dtype.type(p - 1),), "PowBackward0")
        e = self._operand(exponent, "pow")
        x, e_data = _coerce(x, e.data)  # 2.5 ** int_tensor -> float32, as in PyTorch
        out = x**e_data

        def backward(g):
            gx = None
            if self.requires_grad:
                with np.errstate(divide="ignore", invalid="ignore"):
                    gx = g * e_data * x ** (e_data - 1)
                gx = _unbroadcast(self._backend.xp.where(e_data == 0, 0, gx), x.shape)  # torch: 0 where e == 0
            ge = None
            if e.requires_grad:
                xp = self._backend.xp
                with np.errstate(divide="ignore", invalid="ignore"):
                    logx = xp.where(x > 0, xp.log(xp.where(x > 0, x, 1)), 0)
                ge = _unbroadcast(g * out * logx, e.shape)
            return gx, ge

        return self._result(out, (self, e), backward, "PowBackward1")

    def __rpow__(self, base) -> Tensor:
        return self._operand(base, "pow").__pow__(self)

    def __matmul__(self, other) -> Tensor:
        b = self._operand(other, "matmul")
        a_data, b_data = _coerce(self.data, b.data)
        if a_data.ndim == 0 or b_data.ndim == 0:
            raise RuntimeError("matmul: both arguments need at least 1 dimension, got a 0-d tensor")
        if a_data.shape[-1] != b_data.shape[-2 if b_data.ndim > 1 else 0]:
            raise ValueError(f"matmul: shapes {self.shape} and {b.shape} can't be multiplied "
                             f"({a_data.shape[-1]} != {b_data.shape[-2 if b_data.ndim > 1 else 0]})")
        out = a_data @ b_data
        xp = self._backend.xp

        def backward(g):
            a2 = a_data[None, :] if a_data.ndim == 1 else a_data
            b2 = b_data[:, None] if b_data.ndim == 1 else b_data
            g2 = g  # restore the dims matmul dropped for 1-D operands (b's first: g is 0-d for 1-D @ 1-D)
            if b_data.ndim == 1:
                g2 = xp.expand_dims(g2, -1)
            if a_data.ndim == 1:
                g2 = xp.expand_dims(g2, -2)
            ga = gb = None
            if self.requires_grad:
                ga = g2 @ xp.swapaxes(b2, -1, -2)
                ga = _unbroadcast(ga, a2.shape).reshape(a_data.shape)
            if b.requires_grad:
                gb = xp.swapaxes(a2, -1, -2) @ g2
                gb = _unbroadcast(gb, b2.shape).reshape(b_data.shape)
            return ga, gb

        return self._result(out, (self, b), backward, "MmBackward")

    def __rmatmul__(self, other) -> Tensor:
        return self._operand(other, "matmul").__matmul__(self)

    # -- comparisons (no gradient) ----------------------------------------------------------------
    def _compare(self, other, fn, op):
        b = self._operand(other, op)
        return Tensor._wrap(fn(*_coerce(self.data, b.data)), self._backend)

    def __eq__(self, other):  # noqa: D105
        return self._compare(other, lambda a, b: a == b, "eq")

    def __ne__(self, other):
        return self._compare(other, lambda a, b: a != b, "ne")

    def __lt__(self, other):
        return self._compare(other, lambda a, b: a < b, "lt")

    def __le__(self, other):
        return self._compare(other, lambda a, b: a <= b, "le")

    def __gt__(self, other):
        return self._compare(other, lambda a, b: a > b, "gt")

    def __ge__(self, other):
        return self._compare(other, lambda a, b: a >= b, "ge")

    def eq(self, other):
        return self == other

    def __invert__(self):
        return Tensor._wrap(~self.data, self._backend)

    def __and__(self, other):
        return self._compare(other, lambda a, b: a & b, "and")

    def __or__(self, other):
        return self._compare(other, lambda a, b: a | b, "or")

    # -- reductions ---------------------------------------------------------------------------------
    def _axes(self, dim):
        if dim is None:
            return None
        dims = (dim,) if isinstance(dim, int) else tuple(dim)
        nd = max(self.ndim, 1)
        for d in dims:
            if not -nd <= d < nd:
                raise IndexError(f"dim {d} is out of range for a tensor of {self.ndim} dimensions")
        return tuple(d % nd for d in dims)

    def sum(self, dim=None, keepdim: bool = False) -> Tensor:
        axes = self._axes(dim)
        out = self.data.sum(axis=axes, keepdims=keepdim)
        shape = self.shape
        xp = self._backend.xp

        def backward(g):
            if not keepdim and axes is not None:
                g = xp.expand_dims(g, axes)
            return (xp.broadcast_to(g, shape),)

        return self._result(out, (self,), backward, "SumBackward")

    def mean(self, dim=None, keepdim: bool = False) -> Tensor:
        if not _is_float(self.dtype):
            raise RuntimeError(f"mean(): needs a floating-point tensor, got dtype {self.dtype}")
        axes = self._axes(dim)
        count = self.data.size if axes is None else math.prod(self.shape[a] for a in axes)
        return self.sum(dim, keepdim) / float(count) if count else self.sum(dim, keepdim) * math.nan

    def _extremum(self, dim, keepdim, find_max: bool):
        xp = self._backend.xp
        name = "max" if find_max else "min"
        if self.data.size == 0:
            raise RuntimeError(f"{name}(): the tensor is empty")
        x = self.data
        if dim is None:
            out = x.max() if find_max else x.min()

            def backward(g):  # split evenly between ties, as PyTorch does for the full reduction
                xp = self._backend.xp
                mask = ((x == out) | (xp.isnan(x) & xp.isnan(out))).astype(x.dtype)  # a NaN max is NaN's
                return (g * mask / mask.sum(),)

            return self._result(out, (self,), backward, f"{name.capitalize()}Backward")
        (axis,) = self._axes(dim)
        idx = x.argmax(axis=axis) if find_max else x.argmin(axis=axis)
        vals = xp.take_along_axis(x, xp.expand_dims(idx, axis), axis=axis)
        if not keepdim:
            vals = vals.squeeze(axis)

        def backward(g):
            gx = xp.zeros_like(x)
            g_k = g if keepdim else xp.expand_dims(g, axis)
            xp.put_along_axis(gx, xp.expand_dims(idx, axis), g_k, axis=axis)
            return (gx,)

        values = self._result(vals, (self,), backward, f"{name.capitalize()}Backward")
        indices = Tensor._wrap(idx if not keepdim else xp.expand_dims(idx, axis), self._backend)
        return MaxMin(values, indices.astype(int64))

    def max(self, dim=None, keepdim: bool = False):
        """Largest element, or ``(values, indices)`` along ``dim``."""
        return self._extremum(dim, keepdim, True)

    def min(self, dim=None, keepdim: bool = False):
        return self._extremum(dim, keepdim, False)

    def argmax(self, dim=None, keepdim: bool = False) -> Tensor:
        if dim is None:
            return Tensor._wrap(self.data.argmax().astype(int64), self._backend)
        return self.max(dim, keepdim).indices

    def argmin(self, dim=None, keepdim: bool = False) -> Tensor:
        if dim is None:
            return Tensor._wrap(self.data.argmin().astype(int64), self._backend)
        return self.min(dim, keepdim).indices

    # -- shape --------------------------------------------------------------------------------------
    def reshape(self, *shape) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        try:
            out = self.data.reshape(shape)
        except ValueError as exc:
            raise RuntimeError(f"reshape: shape {tuple(shape)} is invalid for a tensor of shape "
                               f"{self.shape} ({self.numel()} elements)") from exc
        src = self.shape
        return self._result(out, (self,), lambda g: (g.reshape(src),), "ViewBackward")

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        if self.ndim == 0:
            return self.reshape(1)
        s, e = self._dim(start_dim, "flatten"), self._dim(end_dim, "flatten")
        if s > e:
            raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
        shape = self.shape[:s] + (math.prod(self.shape[s : e + 1]),) + self.shape[e + 1 :]
        return self.reshape(shape)

    def permute(self, *dims) -> Tensor:
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        if sorted(d % self.ndim for d in dims) != list(range(self.ndim)):
            raise ValueError(f"permute: dims {dims} are not a permutation of {self.ndim} dimensions")
        xp = self._backend.xp
        out = xp.transpose(self.data, dims)
        inverse = tuple(np.argsort([d % self.ndim for d in dims]))
        return self._result(out, (self,), lambda g: (xp.transpose(g, inverse),), "PermuteBackward")

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        dims = list(range(self.ndim))
        dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
        return self.permute(dims)

    @property
    def T(self) -> Tensor:
        return self.permute(tuple(reversed(range(self.ndim))))

    def t(self) -> Tensor:
        if self.ndim > 2:
            raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, got {self.ndim}")
        return self.T

    def _dim(self, dim: int, op: str, extra: int = 0) -> int:
        """``dim`` in [-(ndim + extra), ndim + extra) as a non-negative index, or IndexError (as PyTorch)."""
        n = max(self.ndim + extra, 1)
        if not -n <= dim < n:
            raise IndexError(f"{op}: dimension {dim} is out of range for a tensor of {self.ndim} dimensions "
                             f"(expected one in [{-n}, {n - 1}])")
        return dim % n

    def unsqueeze(self, dim: int) -> Tensor:
        dim = self._dim(dim, "unsqueeze", extra=1)
        return self.reshape(self.shape[:dim] + (1,) + self.shape[dim:])

    def squeeze(self, dim=None) -> Tensor:
        if dim is None:
            return self.reshape(tuple(n for n in self.shape if n != 1))
        dim = self._dim(dim, "squeeze")
        if self.ndim == 0 or self.shape[dim] != 1:
            return self
        return self.reshape(self.shape[:dim] + self.shape[dim + 1 :])

    def expand(self, *shape) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        lead = len(shape) - self.ndim
        if lead < 0:
            raise RuntimeError(f"expand: the new shape {shape} has fewer dimensions than the tensor {self.shape}")
        if any(n == -1 for n in shape[:lead]):
            raise RuntimeError(f"expand: -1 is not allowed for the new leading dimensions in {shape}")
        shape = tuple(self.shape[i - lead] if n == -1 else n for i, n in enumerate(shape))
        try:
            out = self._backend.xp.broadcast_to(self.data, shape)
        except ValueError as exc:
            raise RuntimeError(f"expand: can't expand shape {self.shape} to {shape}") from exc
        src = self.shape
        return self._result(out, (self,), lambda g: (_unbroadcast(g, src),), "ExpandBackward")

    def contiguous(self) -> Tensor:
        return self

    def __getitem__(self, index) -> Tensor:
        index = _index_data(index)
        try:
            out = self.data[index]
        except IndexError as exc:
            raise IndexError(f"index {index!r} is out of range for a tensor of shape {self.shape}") from exc
        x_data = self.data
        be = self._backend

        def backward(g):
            gx = be.xp.zeros_like(x_data)
            if _is_basic_index(index):
                gx[index] = g
            else:
                be.index_add(gx, index, g)
            return (gx,)

        return self._result(out, (self,), backward, "IndexBackward")

    # -- elementwise math -----------------------------------------------------------------------------
    def _unary(self, out, dfn, op):
        return self._result(out, (self,), lambda g: (dfn(g),), op)

    def exp(self) -> Tensor:
        out = self._backend.xp.exp(self._as_float())
        return self._unary(out, lambda g: g * out, "ExpBackward")

    def log(self) -> Tensor:
        x = self._as_float()
        with np.errstate(divide="ignore", invalid="ignore"):
            out = self._backend.xp.log(x)
        return self._unary(out, lambda g: _quiet_div(g, x), "LogBackward")

    def log2(self) -> Tensor:
        x = self._as_float()
        with np.errstate(divide="ignore", invalid="ignore"):
            out = self._backend.xp.log2(x)
        ln2 = x.dtype.type(math.log(2.0))
        return self._unary(out, lambda g: _quiet_div(g, x * ln2), "Log2Backward")

    def sqrt(self) -> Tensor:
        x = self._as_float()
        with np.errstate(invalid="ignore"):
            out = self._backend.xp.sqrt(x)
        return self._unary(out, lambda g: _quiet_div(g, 2 * out), "SqrtBackward")

    def abs(self) -> Tensor:
        x = self.data
        return self._unary(self._backend.xp.abs(x), lambda g: g * self._backend.xp.sign(x), "AbsBackward")

    __abs__ = abs

    def clamp(self, min=None, max=None) -> Tensor:  # noqa: A002
        if min is None and max is None:
            raise ValueError("clamp: at least one of min and max must be given")
        xp = self._backend.xp
        x = self.data
        out = x
        if min is not None:
            out = xp.maximum(out, min)
        if max is not None:
            out = xp.minimum(out, max)
        out = out.astype(x.dtype, copy=False)
        inside = xp.ones(x.shape, dtype=bool)
        if min is not None:
            inside &= x >= min
        if max is not None:
            inside &= x <= max
        return self._unary(out, lambda g: g * inside, "ClampBackward")

    clip = clamp

    def relu(self) -> Tensor:
        x = self.data
        out = self._backend.xp.maximum(x, 0)
        return self._unary(out, lambda g: g * (x > 0), "ReluBackward")

    def sigmoid(self) -> Tensor:
        from gpunn.backend.reference import activation_forward

        out = activation_forward(self._backend.xp, self._as_float().copy(), "sigmoid")
        return self._unary(out, lambda g: g * out * (1 - out), "SigmoidBackward")

    def tanh(self) -> Tensor:
        out = self._backend.xp.tanh(self._as_float())
        return self._unary(out, lambda g: g * (1 - out * out), "TanhBackward")

    def _as_float(self):
        return self.data if _is_float(self.dtype) else self.data.astype(default_float)

    def softmax(self, dim: int) -> Tensor:
        from gpunn.nn import functional as F

        return F.softmax(self, dim)

    def log_softmax(self, dim: int) -> Tensor:
        from gpunn.nn import functional as F

        return F.log_softmax(self, dim)


# ------------------------------------------------------------------------------------------------
# indexing helpers
# ------------------------------------------------------------------------------------------------
def _index_data(index):
    """Replace Tensors in an index by their arrays."""
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index


def _is_basic_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, slice, type(None), type(Ellipsis))) and not isinstance(i, bool)
               for i in items)
