"""Gradient checking: compare the autograd gradients of a function with central finite differences.

    >>> x = gpunn.randn(3, 4, dtype=gpunn.float64, requires_grad=True)
    >>> gpunn.gradcheck(lambda t: (t * t).sum(dim=1), x)
    True

For an output ``y = f(x)`` the check compares, for every input element ``x[j]`` that requires grad,

    numerical[j] = (f(x + eps e_j) - f(x - eps e_j)) / (2 eps)      (a column of the Jacobian)
    analytic[j]  = what ``backward()`` puts into ``x.grad``

and fails where ``|analytic - numerical| > atol + rtol * |numerical|``. Small outputs (at most
``FULL_JACOBIAN_MAX`` elements) are compared as full Jacobians: one backward per output element. Larger
outputs are compared through random projections: with a random float64 vector ``v`` of the output's
shape, the analytic side is ``x.grad`` after ``y.backward(v)`` (= ``J^T v``) and the numerical side is
``numerical[j] . v``; a wrong Jacobian column survives a random projection only with probability zero,
and two independent projections are used so that a near-tolerance cancellation is not enough either.
"""

from __future__ import annotations

import numpy as np

from gpunn.dtypes import float64
from gpunn.grad_mode import enable_grad, is_grad_enabled, no_grad
from gpunn.tensor import Tensor

__all__ = ["gradcheck", "GradcheckError", "FULL_JACOBIAN_MAX", "Function", "FunctionCtx", "grad"]

FULL_JACOBIAN_MAX = 16  # outputs with at most this many elements are checked as full Jacobians
N_PROJECTIONS = 2  # random output directions per output in projected mode


class GradcheckError(RuntimeError):
    """Raised by ``gradcheck`` when analytic and numerical gradients disagree."""


def _as_tuple(x) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _outputs(result) -> tuple:
    outs = _as_tuple(result)
    for k, o in enumerate(outs):
        if not isinstance(o, Tensor):
            raise TypeError(
                f"gradcheck: fn must return a Tensor or a tuple of Tensors; output {k} is a {type(o).__name__}"
            )
    return outs


def _host64(t: Tensor) -> np.ndarray:
    """The tensor's values as a float64 NumPy array (a copy)."""
    return np.array(t._backend.to_numpy(t._data), dtype=np.float64)


def _fmt_index(idx: tuple) -> str:
    return "(" + ", ".join(str(int(i)) for i in idx) + (",)" if len(idx) == 1 else ")")


def gradcheck(
    fn,
    inputs,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
    nondet_tol: float = 0.0,
    fast_mode: bool | None = None,
) -> bool:
    """Check ``fn``'s autograd gradients against central differences; True when they agree.

    ``inputs`` is a Tensor or a tuple of arguments; Tensors that require grad must be float64 and are
    checked, every other argument is passed through unchanged. ``fn`` returns a Tensor or a tuple of
    Tensors (non-floating outputs, e.g. indices, are ignored). ``fast_mode``: None (default) compares
    full Jacobians for outputs of at most 16 elements and random projections for larger ones; True
    always projects; False always builds full Jacobians (one backward per output element).
    ``nondet_tol``: how much two backward passes with the same inputs may differ.
    On a mismatch raises ``GradcheckError`` naming the output, the input, the element and both values
    (or returns False when ``raise_exception`` is False).
    """
    args = _as_tuple(inputs)
    diff = [i for i, a in enumerate(args) if isinstance(a, Tensor) and a.requires_grad]
    if not diff:
        raise ValueError("gradcheck: no input requires grad; pass at least one Tensor created with requires_grad=True")
    for i in diff:
        if args[i].dtype != float64:
            raise ValueError(
                f"gradcheck: input {i} has dtype {args[i].dtype}; inputs that require grad must "
                "be float64 (finite differences in float32 are too inexact to tell a wrong "
                "gradient from rounding). Use tensor.double().detach().requires_grad_()"
            )
    try:
        _check(fn, args, diff, eps, atol, rtol, nondet_tol, fast_mode)
    except GradcheckError:
        if raise_exception:
            raise
        return False
    return True


def _leaf_args(args, diff) -> list:
    """The arguments with each checked input replaced by a fresh leaf, so the caller's .grad stays put."""
    out = list(args)
    for i in diff:
        a = args[i]
        out[i] = Tensor._wrap(a._data.copy(), a._backend).requires_grad_(True)
    return out


def _analytic(fn, args, diff, k, v: np.ndarray) -> list[np.ndarray]:
    """Gradients of ``(output_k * v).sum()`` with respect to each checked input, from one backward."""
    leaves = _leaf_args(args, diff)
    with enable_grad():  # gradcheck may be called inside a no_grad block
        out = _outputs(fn(*leaves))[k]
        if out.requires_grad:
            out.backward(Tensor._wrap(out._backend.asarray(v.astype(out.dtype)), out._backend))
    grads = []
    for i in diff:
        g = leaves[i].grad
        if g is None:  # the output does not depend on this input
            grads.append(np.zeros(args[i].shape))
            continue
        if g.shape != args[i].shape:
            raise GradcheckError(
                f"gradcheck: the analytic gradient for input {i} has shape {g.shape}, "
                f"expected the input's shape {args[i].shape}"
            )
        grads.append(_host64(g))
    return grads


def _numerical(fn, args, i, kept: list[int], eps: float) -> list[np.ndarray]:
    """For each kept output k: an array (input elements, output elements) of central differences."""
    x = args[i]
    n_in = x.numel()
    cols = None
    base = x._data.copy()
    with no_grad():
        for j, idx in enumerate(np.ndindex(*x.shape)):
            vals = []
            for sign in (1.0, -1.0):
                data = base.copy()
                data[idx] += sign * eps
                perturbed = list(args)
                perturbed[i] = Tensor._wrap(data, x._backend)
                outs = _outputs(fn(*perturbed))
                vals.append([_host64(outs[k]).ravel() for k in kept])
            if cols is None:
                cols = [np.empty((n_in, p.size)) for p in vals[0]]
            for c, plus, minus in zip(cols, vals[0], vals[1]):
                c[j] = (plus - minus) / (2.0 * eps)
    if cols is None:  # an empty input
        cols = [np.empty((0, 0)) for _ in kept]
    return cols


def _compare(analytic, numerical, atol, rtol, where: str, i: int, shape: tuple) -> None:
    """Raise GradcheckError at the worst element of input ``i`` where the two differ beyond tolerance."""
    tol = atol + rtol * np.abs(numerical)
    excess = np.abs(analytic - numerical) - tol
    bad = ~(excess <= 0)  # NaN counts as a mismatch
    if not bad.any():
        return
    order = np.where(np.isnan(excess), np.inf, excess)
    j = int(np.argmax(order))
    idx = np.unravel_index(j, shape) if shape else ()
    raise GradcheckError(
        f"gradcheck: Jacobian mismatch for input {i} at element {_fmt_index(idx)} ({where}): "
        f"numerical {numerical.flat[j]:.10g}, analytic {analytic.flat[j]:.10g}, difference "
        f"{abs(analytic.flat[j] - numerical.flat[j]):.3g} > tolerance {tol.flat[j]:.3g} "
        f"(atol={atol:g} + rtol={rtol:g} * |numerical|); {int(bad.sum())} of input {i}'s {bad.size} "
        "elements differ in this comparison"
    )


def _check(fn, args, diff, eps, atol, rtol, nondet_tol, fast_mode) -> None:
    probe = _outputs(fn(*_leaf_args(args, diff)))
    kept = [k for k, o in enumerate(probe) if o.dtype.kind == "f"]
    if not kept:
        raise ValueError("gradcheck: fn returned no floating-point output to check")
    shapes = {k: probe[k].shape for k in kept}
    full = {k: (fast_mode is False) or (fast_mode is None and probe[k].numel() <= FULL_JACOBIAN_MAX) for k in kept}
    rng = np.random.default_rng(0)  # local: never disturbs gpunn's seeded generators

    # numerical Jacobians: numerical[i][slot] has shape (input elements, output elements)
    numerical = {i: _numerical(fn, args, i, kept, eps) for i in diff}

    for slot, k in enumerate(kept):
        shape, n_out = shapes[k], int(np.prod(shapes[k], dtype=np.int64))
        if full[k]:
            directions = [
                (
                    f"output {k} element {_fmt_index(np.unravel_index(o, shape) if shape else ())}",
                    np.eye(n_out)[o].reshape(shape),
                )
                for o in range(n_out)
            ]
        else:
            directions = [
                (f"output {k} projected on random direction {p}", rng.standard_normal(shape))
                for p in range(N_PROJECTIONS)
            ]
        for d, (where, v) in enumerate(directions):
            analytic = _analytic(fn, args, diff, k, v)
            if d == 0:  # backward must be deterministic: run it again and compare
                again = _analytic(fn, args, diff, k, v)
                for i, a, b in zip(diff, analytic, again):
                    worst = float(np.max(np.abs(a - b), initial=0.0))
                    if not worst <= nondet_tol:
                        raise GradcheckError(
                            f"gradcheck: backward is not deterministic for input {i}: two "
                            f"runs differ by {worst:.3g} > nondet_tol={nondet_tol:g}"
                        )
            for i, a in zip(diff, analytic):
                num = numerical[i][slot] @ v.ravel()
                _compare(a.ravel(), num, atol, rtol, where, i, args[i].shape)


# ------------------------------------------------------------------------------------------------
# custom differentiable functions (torch.autograd.Function)
# ------------------------------------------------------------------------------------------------
class FunctionCtx:
    """What ``forward`` hands to ``backward``: ``save_for_backward(*tensors)`` / ``saved_tensors`` (checked
    against in-place changes like every saved tensor), ``needs_input_grad``, and any attribute."""

    def __init__(self, needs_input_grad: tuple) -> None:
        self.needs_input_grad = needs_input_grad
        self.to_save: tuple = ()

    def save_for_backward(self, *tensors) -> None:
        for t in tensors:
            if t is not None and not isinstance(t, Tensor):
                raise TypeError(f"save_for_backward can only save tensors, but got {type(t).__name__}")
        self.to_save = tensors

    @property
    def saved_tensors(self) -> tuple:
        return self.to_save

    def mark_non_differentiable(self, *tensors) -> None:
        pass  # outputs of a gpunn Function carry one graph node; an integer output never requires grad

    def set_materialize_grads(self, value: bool) -> None:
        pass  # the gradient handed to backward is always a tensor

    def mark_dirty(self, *tensors) -> None:
        raise NotImplementedError("ctx.mark_dirty (an in-place custom Function) is not supported by gpunn")


class Function:
    """A differentiable op written as two static methods, as ``torch.autograd.Function``::

        class Cube(gpunn.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return x ** 3

            @staticmethod
            def backward(ctx, grad_output):
                (x,) = ctx.saved_tensors
                return grad_output * 3 * x ** 2

        y = Cube.apply(x)

    ``forward`` runs without recording a graph and returns one tensor; ``backward`` returns one gradient
    (or None) per argument of ``forward``."""

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError("a Function subclass must define forward(ctx, ...)")

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError("a Function subclass must define backward(ctx, grad_output)")

    def __init__(self, *args, **kwargs) -> None:
        raise RuntimeError(
            f"Function instances are not used: call the class's static apply(): {type(self).__name__}.apply(...)"
        )

    @classmethod
    def apply(cls, *args):
        needs = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        ctx = FunctionCtx(needs)
        with no_grad():
            out = cls.forward(ctx, *args)
        if isinstance(out, (tuple, list)):
            raise NotImplementedError(
                f"{cls.__name__}.forward returned {len(out)} outputs; gpunn's custom "
                "Functions support one output tensor"
            )
        if not isinstance(out, Tensor):
            raise TypeError(f"{cls.__name__}.forward must return a Tensor, got {type(out).__name__}")
        parents = tuple(a for a in args if isinstance(a, Tensor))
        if not (is_grad_enabled() and any(needs)):
            return out
        be = out._backend
        name = cls.__name__

        def backward(g):
            grads = cls.backward(ctx, Tensor._wrap(g, be))
            grads = grads if isinstance(grads, tuple) else (grads,)
            if len(grads) != len(args):
                raise RuntimeError(
                    f"function {name}Backward returned an incorrect number of gradients "
                    f"(expected {len(args)}, got {len(grads)})"
                )
            result = []
            for a, gr in zip(args, grads):
                if isinstance(a, Tensor):
                    if gr is not None and not isinstance(gr, Tensor):
                        raise TypeError(
                            f"function {name}Backward returned a {type(gr).__name__} as a "
                            "gradient; return a Tensor or None"
                        )
                    result.append(None if gr is None else gr._data)
            return tuple(result)

        saved = tuple(t for t in ctx.to_save if t is not None)
        res = parents[0]._result(out._data, parents, backward, f"{name}Backward", saved=saved)
        res._vc = out._vc  # the tensor forward returned and the result are one storage
        return res


def grad(
    outputs,
    inputs,
    grad_outputs=None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    only_inputs: bool = True,
    allow_unused: bool | None = None,
    is_grads_batched: bool = False,
    materialize_grads: bool = False,
) -> tuple:
    """``torch.autograd.grad``: the gradients of ``outputs`` (a tensor or a sequence, each seeded with its
    entry of ``grad_outputs``, or 1 for a single element) with respect to each of ``inputs``, returned as a
    tuple; no ``.grad`` is written. An input that the outputs do not depend on raises unless
    ``allow_unused`` (then None, or zeros with ``materialize_grads``). The graph is freed unless
    ``retain_graph``.
    >>> (dx,) = gpunn.autograd.grad((x * x).sum(), x)  # 2 x"""
    if create_graph:
        raise NotImplementedError("autograd.grad(create_graph=True): higher-order gradients are not supported by gpunn")
    if is_grads_batched:
        raise NotImplementedError("autograd.grad(is_grads_batched=True) is not supported by gpunn")
    outputs = (outputs,) if isinstance(outputs, Tensor) else tuple(outputs)
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    if grad_outputs is None or isinstance(grad_outputs, Tensor):
        grad_outputs = (grad_outputs,) * len(outputs) if grad_outputs is None else (grad_outputs,)
    grad_outputs = tuple(grad_outputs)
    if len(grad_outputs) != len(outputs):
        raise RuntimeError(f"grad requires one grad_output per output: got {len(grad_outputs)} for {len(outputs)}")
    if not inputs:
        raise RuntimeError("grad requires non-empty inputs.")
    for t in inputs:
        if not isinstance(t, Tensor):
            raise TypeError(f"grad(): inputs must be tensors, got {type(t).__name__}")
        if not t.requires_grad:
            raise RuntimeError("One of the differentiated Tensors does not require grad")
    roots, seeds = [], []
    for i, (out, g) in enumerate(zip(outputs, grad_outputs)):
        if not isinstance(out, Tensor):
            raise TypeError(f"grad(): outputs must be tensors, got {type(out).__name__}")
        if not out.requires_grad:
            raise RuntimeError(f"element {i} of tensors does not require grad and does not have a grad_fn")
        roots.append(out)
        seeds.append(out._seed_grad(g, "grad()"))
    from gpunn.tensor import _backprop

    got = _backprop(roots, seeds, retain_graph, inputs)
    result = []
    for t in inputs:
        g = got.get(id(t))
        if g is None:
            if not (allow_unused or materialize_grads):
                raise RuntimeError(
                    "One of the differentiated Tensors appears to not have been used in the graph. "
                    "Set allow_unused=True if this is the desired behavior."
                )
            result.append(t._backend.xp.zeros(t.shape, dtype=t.dtype) if materialize_grads else None)
            continue
        result.append(g if g.dtype == t.dtype else g.astype(t.dtype))
    return tuple(None if g is None else Tensor._wrap(g.copy(), t._backend) for g, t in zip(result, inputs))
