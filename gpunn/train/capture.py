"""``compile_step``: a training step recorded once per input shape and replayed without autograd.

``step = compile_step(model, loss_fn, optimizer)`` returns ``step(x, y) -> loss`` doing what the usual
loop does (``zero_grad``, forward, loss, ``backward``, ``step``). The first call for an input signature
(shapes, dtypes, train/eval mode, which parameters require grad) runs that loop eagerly; the calls after
it replay a PLAN: the model as a fixed chain of layers, each with its forward and backward written
into buffers allocated once (on the first replay) and reused. No autograd graph is built, no Tensor is
made per op, gradients are written straight into the optimizer's flat gradient buffer, and the
optimizer's own ``step()`` runs on them. A new signature (the last, partial batch) gets its own plan
(``new_shape="plan"``), runs eagerly (``"eager"``), or is skipped (``"drop"``: ``step`` returns None).

What a plan can hold (and why):

- ``model`` is an ``nn.Sequential`` (nested ones too) of ``Linear``, ``Conv2d``, ``ReLU``/``LeakyReLU``/
  ``Sigmoid``/``Tanh``, ``Dropout``, ``MaxPool2d``/``AvgPool2d`` and ``Flatten``: a chain whose order is
  fixed by its structure. A module with its own ``forward`` (which may branch on the data) has no plan:
  ``CaptureError`` names it. Linear + activation pairs fuse exactly as ``Sequential.forward`` fuses them.
- ``loss_fn(output, target)`` must be ONE op on the output, such as ``nn.CrossEntropyLoss`` or
  ``F.cross_entropy`` (a loss built from several ops, or one applied to a view of the output, is
  refused). Where the eager loss is exactly the backend's ``softmax_cross_entropy`` (``F.cross_entropy``
  or an unmodified ``nn.CrossEntropyLoss`` without class weights, reduction 'mean' or 'sum', on a backend
  that keeps ``Backend.softmax_cross_entropy_fwd``: the numpy one), the plan calls that primitive
  straight (options read each step); otherwise ``loss_fn`` is called every step on the plan's output
  buffer and its backward is that op's backward.
- every parameter that requires grad is in ``optimizer`` and used by one layer only; nothing hooks its
  gradient (DDP's hooks, ``register_post_accumulate_grad_hook``).
- the parameter set stays: a module or parameter replaced after the plan was recorded raises
  ``CaptureError`` (make a new ``compile_step``), as does a module added to a Sequential. ``p.data = t``
  is fine (read each step, as eagerly). An input that requires grad runs the eager loop (x.grad is set).

Results equal the eager loop's bit for bit: where the backend runs ``gpunn.backend.reference``'s
formula (``Backend.linear_act``, ``Backend.dropout``), the plan performs the same operations in the same
order with ``out=`` buffers; elsewhere it calls the backend's primitive or the functional op itself
(on the cupy backend: every kernel). Differences from the eager loop: the gradients live in one
buffer per optimizer buffer that every step overwrites (a ``.grad`` kept from an earlier step changes),
and ``step.output`` is a buffer the next step overwrites. On the cupy backend the plan is
``gpunn.train.capture_cuda.CudaPlan``: static buffers, the optimizer update included, replayed as one
CUDA graph (see that module); where it has no static form, this module's plan runs (no graph).
"""

from __future__ import annotations

import warnings

import numpy as np

from gpunn.backend import reference
from gpunn.backend.base import Backend
from gpunn.grad_mode import enable_grad
from gpunn.nn import functional as F
from gpunn.nn.activation import LeakyReLU, ReLU, Sigmoid, Tanh
from gpunn.nn.container import Sequential, _fused_activation
from gpunn.nn.conv import Conv2d
from gpunn.nn.dropout import Dropout
from gpunn.nn.flatten import Flatten
from gpunn.nn.linear import Linear
from gpunn.nn.loss import CrossEntropyLoss
from gpunn.nn.module import Module
from gpunn.nn.pooling import AvgPool2d, MaxPool2d
from gpunn.tensor import Tensor

__all__ = ["compile_step", "CaptureError", "CompiledStep"]

NEW_SHAPE_CHOICES = ("plan", "eager", "drop")
_PARAMLESS = (ReLU, LeakyReLU, Sigmoid, Tanh, Dropout, MaxPool2d, AvgPool2d, Flatten)
SUPPORTED = "nn.Sequential of Linear, Conv2d, ReLU, LeakyReLU, Sigmoid, Tanh, Dropout, MaxPool2d, AvgPool2d, Flatten"


class CaptureError(RuntimeError):
    """What a captured step cannot hold (the message names the module, op or parameter)."""


def _reference_impl(be, name: str) -> bool:
    """True when ``be`` runs the base class's (the reference's) ``name``: the plan may then write the
    reference's operations into its own buffers and still equal the eager result bit for bit."""
    return getattr(type(be), name) is getattr(Backend, name)


class _Buffers:
    """Arrays allocated once per (name, shape, dtype) and reused by every replay."""

    def __init__(self, xp) -> None:
        self.xp = xp
        self._arrays: dict = {}

    def get(self, name: str, shape: tuple, dtype):
        a = self._arrays.get(name)
        if a is None or a.shape != shape or a.dtype != dtype:
            a = self._arrays[name] = self.xp.empty(shape, dtype=dtype)
        return a


# ----------------------------------------------------------------------------------------------------
# layers: forward(x) -> y and backward(dy, need_dx) -> dx on backend arrays; parameter gradients are
# written into the optimizer's flat gradient buffer (plan.grad_out(p)).
# ----------------------------------------------------------------------------------------------------
class _Layer:
    def __init__(self, name: str, module, params: list) -> None:
        self.name, self.module, self.params = name, module, params

    def check(self) -> None:
        """Raise CaptureError when the module's parameters were replaced, added or removed since the plan was
        made (a bias set on a layer recorded without one would be ignored)."""
        current = self.module._parameters
        for attr, p in self.params:
            if current.get(attr) is not p:
                raise CaptureError(
                    f"compile_step: parameter {self.name}.{attr} was replaced after the step was "
                    "recorded (a changed parameter set); call compile_step again"
                )
        if sum(p is not None for p in current.values()) != len(self.params):
            added = sorted(k for k, p in current.items() if p is not None and k not in dict(self.params))
            raise CaptureError(
                f"compile_step: parameter {self.name}.{added[0] if added else '?'} was added after the step was "
                "recorded (a changed parameter set); call compile_step again"
            )


class _LinearAct(_Layer):
    """Linear (+ the activation Sequential fuses into it): backend.linear_act / linear_act_backward, or
    their reference formulas into plan buffers."""

    FAST_ACTS = ("none", "relu", "tanh", "sigmoid")

    def __init__(self, name, module, act: str, slope: float) -> None:
        params = [("weight", module.weight)] + ([("bias", module.bias)] if module.bias is not None else [])
        super().__init__(name, module, params)
        self.act, self.slope = act, slope
        self.weight, self.bias = module.weight, module.bias  # check() keeps them the module's
        self.names = {k: f"{name}.{k}" for k in ("y", "dz", "mask", "t", "dx")}  # its buffers
        self.ran_native = False  # did the last replay run it in one backend call each way?

    def bind(self, plan) -> None:
        be = plan.backend
        self.fast = (
            self.act in self.FAST_ACTS
            and _reference_impl(be, "linear_act")
            and _reference_impl(be, "linear_act_backward")
        )
        self.bufs = plan.buffers
        self.plan = plan
        # the backend runs the layer's operations in one call each way (NumpyBackend: float32, ReLU or none)
        self.native = self.fast and self.act in ("none", "relu") and hasattr(be, "captured_linear_forward")

    def forward(self, x):
        xp = self.bufs.xp
        W = self.weight._data
        b = None if self.bias is None else self.bias._data
        self.x_shape = x.shape
        if x.shape[-1] != W.shape[1]:  # (eager F.linear's error: the weight's shape may have changed)
            raise ValueError(
                f"Linear(in_features={W.shape[1]}): the input's last dimension is {x.shape[-1]}, expected "
                f"{W.shape[1]} (input shape {tuple(x.shape)})"
            )
        x2 = x.reshape(-1, W.shape[1])
        if self.fast:  # reference.linear_act: z = x @ W.T; z += b; activation in place
            z = self.bufs.get(self.names["y"], (x2.shape[0], W.shape[0]), x2.dtype)
            self.ran_native = False
            if self.native and self.plan.backend.captured_linear_forward(x2, W, b, z, self.act == "relu"):
                self.x2, self.y = x2, z  # (the same operations in one call: see NumpyBackend)
                self.ran_native = True  # (until the backward says otherwise)
                return z.reshape(x.shape[:-1] + (W.shape[0],))
            self.plan.backend.matmul(x2, W.T, out=z)
            if b is not None:
                xp.add(z, b, out=z)
            if self.act == "relu":  # 0 where z < 0 (NaN and -0.0 kept)
                mask = self.bufs.get(self.names["mask"], z.shape, bool)
                reference.zero_where(xp, z, xp.less(z, 0, out=mask), out=z)
            elif self.act == "tanh":
                xp.tanh(z, out=z)
            elif self.act == "sigmoid":
                z[...] = self._ref_act(z)
            y = z
        else:
            y = self.plan.backend.linear_act(x2, W, b, self.act, self.slope)
        self.x2, self.y = x2, y
        return y.reshape(x.shape[:-1] + (W.shape[0],))

    def _ref_act(self, z):
        from gpunn.backend import reference

        return reference.activation_forward(self.bufs.xp, z, self.act, self.slope)

    def backward(self, dy, need_dx: bool):
        m, xp, plan = self, self.bufs.xp, self.plan
        W, x2, y = m.weight._data, self.x2, self.y
        dy2 = dy.reshape(y.shape)
        need_dW = m.weight.requires_grad
        need_db = m.bias is not None and m.bias.requires_grad
        if not self.fast:
            dx, dW, db = plan.backend.linear_act_backward(
                dy2, x2, W, y, self.act, self.slope, need_dx=need_dx, need_dW=need_dW, need_db=need_db
            )
            if need_dW:
                plan.write_grad(m.weight, dW)
            if need_db:
                plan.write_grad(m.bias, db)
            return None if dx is None else dx.reshape(self.x_shape)
        # reference.linear_act_backward, its operations in its order, into plan buffers
        if self.native:
            dz = dy2 if self.act == "none" else self.bufs.get(self.names["dz"], y.shape, y.dtype)
            dx = self.bufs.get(self.names["dx"], x2.shape, x2.dtype) if need_dx else None
            dW = plan.grad_out(m.weight) if need_dW else None
            db = plan.grad_out(m.bias) if need_db else None
            if (not need_dW or dW is not None) and (not need_db or db is not None):
                if plan.backend.captured_linear_backward(dy2, y, dz, x2, W, dx, dW, db, self.act == "relu"):
                    return None if dx is None else dx.reshape(self.x_shape)
        self.ran_native = False
        if self.act == "none":
            dz = dy2
        else:
            dz = self.bufs.get(self.names["dz"], y.shape, y.dtype)
            if self.act == "relu":  # 0 where y <= 0, else dy (a selection: NaN y passes dy)
                mask = self.bufs.get(self.names["mask"], y.shape, bool)
                reference.zero_where(xp, dy2, xp.less_equal(y, 0, out=mask), out=dz)
            elif self.act == "tanh":  # dy * (1 - y * y)
                xp.multiply(y, y, out=dz)
                xp.subtract(1, dz, out=dz)
                xp.multiply(dy2, dz, out=dz)
            else:  # sigmoid: dy * y * (1 - y)
                t = self.bufs.get(self.names["t"], y.shape, y.dtype)
                xp.multiply(dy2, y, out=dz)
                xp.subtract(1, y, out=t)
                xp.multiply(dz, t, out=dz)
        dx = None
        if need_dx:
            dx = self.bufs.get(self.names["dx"], x2.shape, x2.dtype)
            plan.backend.matmul(dz, W, out=dx)
        if need_dW:
            out = plan.grad_out(m.weight)
            if out is not None:
                plan.backend.matmul(dz.T, x2, out=out)
            else:
                plan.write_grad(m.weight, plan.backend.matmul(dz.T, x2))
        if need_db:
            out = plan.grad_out(m.bias)
            if out is not None:
                dz.sum(axis=0, out=out)
            else:
                plan.write_grad(m.bias, dz.sum(axis=0))
        return None if dx is None else dx.reshape(self.x_shape)


class _Op(_Layer):
    """A module that is one functional op (conv2d, pooling, flatten, an activation, dropout on a kernel
    backend): the op itself runs on leaf wrappers each step and its node's backward is called directly."""

    def __init__(self, name, module, fn, params) -> None:
        super().__init__(name, module, params)
        self.fn = fn  # fn(module, x Tensor, *param Tensors) -> Tensor

    def bind(self, plan) -> None:
        self.plan = plan

    def forward(self, x):
        be = self.plan.backend
        xt = Tensor._wrap(x, be)
        xt.requires_grad = self.plan.need_dx[self.index]
        proxies = []
        for _, p in self.params:
            t = Tensor._wrap(p._data, be)
            t.requires_grad = p.requires_grad
            proxies.append(t)
        with enable_grad():
            out = self.fn(self.module, xt, *proxies)
        if out is xt:  # an identity (dropout in eval mode)
            self.node = None
            return x
        if not out.requires_grad:
            self.node = None
        else:
            if (
                out._backward is None
                or len(out._parents) != 1 + len(proxies)
                or (out._parents[0] is not None and out._parents[0] is not xt)
                # its gradients must be the parameters' own (a dilated conv differentiates a dilated copy)
                or any(q is not None and q is not t for q, t in zip(out._parents[1:], proxies))
            ):
                raise CaptureError(
                    f"compile_step: module {self.name} ({type(self.module).__name__}) did not run "
                    "as one op; it has no static-buffer form"
                )
            self.node = out
        self.proxies = proxies
        return out._data

    def backward(self, dy, need_dx: bool):
        if self.node is None:
            return dy if need_dx else None
        grads = self.node._backward(dy)
        for (_, p), g in zip(self.params, grads[1:]):
            if g is not None and p.requires_grad:
                self.plan.write_grad(p, g)
        self.node = None  # drop the saved arrays
        return grads[0] if need_dx else None


class _Dropout(_Op):
    """Dropout. On a backend that runs ``Backend.dropout`` (the seeded generator), the mask is drawn into a
    plan buffer with the same draws and operations; elsewhere (cupy's Philox kernel) it runs as an _Op."""

    def __init__(self, name, module) -> None:
        super().__init__(name, module, lambda m, x: m(x), [])

    def bind(self, plan) -> None:
        super().bind(plan)
        self.bufs = plan.buffers
        self.fast = _reference_impl(plan.backend, "dropout") and _reference_impl(plan.backend, "rand")

    def forward(self, x):
        if not self.fast:
            return super().forward(x)
        m, xp, be = self.module, self.bufs.xp, self.plan.backend
        self.active = m.training and 0.0 < m.p < 1.0
        if not self.active:
            if m.training and m.p == 1.0:
                return super().forward(x)
            self.node = None
            return x
        # Backend.dropout: u = rand(shape) (float32 for half precision); keep = u >= p; mask = keep * 1/(1-p)
        udt = xp.dtype(xp.float32) if x.dtype.itemsize < 4 else x.dtype
        u = self.bufs.get(self.name + ".u", x.shape, udt)
        be.rng.random(dtype=udt.type, out=u)
        keep = self.bufs.get(self.name + ".keep", x.shape, bool)
        xp.greater_equal(u, udt.type(m.p), out=keep)
        mask = self.mask = self.bufs.get(self.name + ".mask", x.shape, x.dtype)
        xp.multiply(keep, x.dtype.type(1.0 / (1.0 - m.p)), out=mask)
        y = self.bufs.get(self.name + ".y", x.shape, x.dtype)
        return xp.multiply(x, mask, out=y)

    def backward(self, dy, need_dx: bool):
        if not self.fast or not self.active:
            return super().backward(dy, need_dx)
        if not need_dx:
            return None
        dx = self.bufs.get(self.name + ".dx", dy.shape, dy.dtype)
        return self.bufs.xp.multiply(dy, self.mask, out=dx)


def _conv(m, x, w, b=None):
    if m.padding_mode != "zeros":  # as Conv2d.forward: only zero padding
        raise NotImplementedError(f"Conv2d: padding_mode={m.padding_mode!r} is not supported (only 'zeros')")
    return F.conv2d(x, w, b, m.stride, m.padding, m.dilation, m.groups)


def _module_forward_is(m, cls) -> bool:
    return type(m).forward is cls.forward


def _layers(model, prefix: str = "", seqs: list | None = None) -> list:
    """The chain of layers ``model`` runs, or CaptureError naming the first module that has no plan.
    ``seqs`` collects (Sequential, its modules), so a module added or replaced later is noticed."""
    name = prefix or type(model).__name__
    if _module_forward_is(model, Sequential):
        if seqs is not None:
            seqs.append((model, tuple(model._modules.values())))
        mods = [(k, m) for k, m in model._modules.items() if m is not None]
        out, i = [], 0
        while i < len(mods):
            key, m = mods[i]
            path = f"{prefix}.{key}" if prefix else key
            if _module_forward_is(m, Linear) and i + 1 < len(mods):
                fused = _fused_activation(mods[i + 1][1])
                # F.linear runs a leaky_relu of slope <= 0 as a separate op: so does the plan (no fusion)
                if fused is not None and not (fused[0] == "leaky_relu" and fused[1] <= 0):
                    out.append(_LinearAct(path, m, fused[0], fused[1]))
                    i += 2
                    continue
            out.extend(_layers(m, path, seqs))
            i += 1
        return out
    if _module_forward_is(model, Linear):
        return [_LinearAct(name, model, "none", 0.01)]
    if _module_forward_is(model, Dropout):
        return [_Dropout(name, model)]
    if _module_forward_is(model, Conv2d):
        params = [("weight", model.weight)] + ([("bias", model.bias)] if model.bias is not None else [])
        return [_Op(name, model, _conv, params)]
    for cls in _PARAMLESS:
        if _module_forward_is(model, cls):
            if model._parameters:
                break
            return [_Op(name, model, lambda m, x: m(x), [])]
    raise CaptureError(
        f"compile_step: module {name} ({type(model).__name__}) has no static-buffer form: a captured "
        f"step records a fixed chain ({SUPPORTED}); a module with its own forward() may branch on "
        "the data. Run this model eagerly (or fit(capture='auto'))"
    )


# ----------------------------------------------------------------------------------------------------
class _Plan:
    """The layers of one input signature, their buffers, and where each parameter's gradient goes."""

    def __init__(self, step, backend) -> None:
        self.step, self.backend = step, backend
        self.layers = step.layers
        self.buffers = _Buffers(backend.xp)
        self.replays = 0
        # per layer: does its input need a gradient? Fixed by the signature (it holds the requires_grad flags)
        self.need_dx = step._need_dx()
        # the eager loss on this backend is Backend.softmax_cross_entropy_fwd: the primitive, then dlogits * 1
        self.direct_loss = _reference_impl(backend, "softmax_cross_entropy_fwd")
        self.chain = None  # the linear chain's table (see _chain): None until built, False when it cannot be

    def grad_out(self, p):
        """The optimizer's flat-gradient view for ``p`` (written with out=), or None when dtypes differ."""
        buf, i = self.step.slots[id(p)]
        view = buf.grad_views[i]
        return view if view.dtype == p._data.dtype else None

    def write_grad(self, p, g) -> None:
        buf, i = self.step.slots[id(p)]
        view = buf.grad_views[i]
        if g.dtype != view.dtype:
            g = g.astype(view.dtype)
        view[...] = g

    def run(self, x, y):
        """Forward, loss, backward into the flat gradient buffers; returns (loss array, output array)."""
        layers, step = self.layers, self.step
        if step._bound is not self:  # the plans of one step share its layers: bind them to this one
            for layer in layers:
                layer.bind(self)
            step._bound = self
        if self.chain is not None:
            out = self._run_chain(x, y)
            if out is not None:
                return out
        h = x
        for layer in layers:
            h = layer.forward(h)
        loss, g = self.loss(h, y)
        if g.dtype != h.dtype:
            g = g.astype(h.dtype)
        need_dx = self.need_dx
        for k in range(len(layers) - 1, -1, -1):
            g = layers[k].backward(g, need_dx[k])
            if g is None:
                break
        self.replays += 1
        if self.chain is None:  # (after the first replay, or after a check found the table stale)
            self.chain = self._chain()
        return loss, h

    # -- a chain of linear layers the backend runs whole: one call forward, one backward ---------------------
    def _chain(self):
        """(table, bound, checks) for NumpyBackend.captured_chain_*, once a replay ran every layer in one call
        each way (the buffers exist then), or False: the table holds the addresses of the layers' buffers and
        parameters; ``checks`` the arrays behind them, compared before each run (a replaced parameter array,
        renewed gradient views: the table is rebuilt)."""
        be = self.backend
        if not (hasattr(be, "captured_chain_forward") and self.direct_loss) or not all(
            isinstance(layer, _LinearAct) and layer.ran_native for layer in self.layers
        ):
            return False
        from gpunn.backend import numba_gemm as G
        from gpunn.backend.numpy_backend import product_bound

        table = np.zeros((len(self.layers), G.CHAIN_FIELDS), np.int64)
        checks, bound = [], 0
        for r, layer in enumerate(self.layers):
            W, b, y = layer.weight._data, None if layer.bias is None else layer.bias._data, layer.y
            m, n = y.shape
            k = W.shape[1]
            need_dx = self.need_dx[r]
            arrays = {
                G.C_W: W,
                G.C_B: b,
                G.C_Z: y,
                G.C_DZ: layer.bufs.get(layer.names["dz"], y.shape, y.dtype) if layer.act == "relu" else None,
                G.C_DX: layer.bufs.get(layer.names["dx"], (m, k), y.dtype) if need_dx else None,
                G.C_DW: self.grad_out(layer.weight) if layer.weight.requires_grad else None,
                G.C_DB: self.grad_out(layer.bias) if layer.bias is not None and layer.bias.requires_grad else None,
            }
            if r > 0:  # a layer's input is the buffer of the layer below it
                arrays[G.C_X] = self.layers[r - 1].y
            for col, a in arrays.items():
                if a is not None:
                    if a.dtype != np.float32 or not a.flags.c_contiguous:
                        return False
                    table[r, col] = a.ctypes.data
            table[r, G.C_M], table[r, G.C_K], table[r, G.C_N] = m, k, n
            table[r, G.C_RELU] = layer.act == "relu"
            checks.append((layer, W, b, arrays[G.C_DW], arrays[G.C_DB]))
            bound = max(bound, product_bound(m, k, n), product_bound(m, n, k), product_bound(n, m, k))
        # this plan's layer outputs and input shapes: another plan's replay rebinds the shared layers to its own
        return table, bound, checks, [(layer.y, layer.x_shape) for layer in self.layers]

    def _run_chain(self, x, y):
        """run() through the chain's two calls, or None (nothing of the step done) when the chain does not
        apply to this call: an input not float32 or not contiguous, a parameter array or gradient view
        replaced (then the next replay rebuilds the table)."""
        if not self.chain:
            return None
        table, bound, checks, outputs = self.chain
        for layer, W, b, dw, db in checks:
            bias = layer.bias
            if (
                layer.weight._data is not W
                or (bias is not None and bias._data is not b)
                or (dw is not None and self.grad_out(layer.weight) is not dw)
                or (db is not None and self.grad_out(bias) is not db)
            ):
                self.chain = None
                return None
        from gpunn.backend import numba_gemm as G

        first = self.layers[0]
        if x.dtype != np.float32 or not x.flags.c_contiguous or x.size != table[0, G.C_M] * table[0, G.C_K]:
            return None
        first.x2 = x2 = x.reshape(table[0, G.C_M], table[0, G.C_K])
        table[0, G.C_X] = x2.ctypes.data
        for r, (layer, (out, x_shape)) in enumerate(zip(self.layers, outputs)):
            layer.y, layer.x_shape = out, x_shape  # (the loss and a fallback backward read them)
            if r > 0:
                layer.x2 = outputs[r - 1][0]
        first.x_shape = x.shape
        be = self.backend
        if not be.captured_chain_forward(table, bound):
            return None  # (a product the kernel refused: the layer by layer replay runs the step)
        last = self.layers[-1]  # its output in the shape the layer by layer replay gives (an (N, L, C) input...)
        h = last.y.reshape(last.x_shape[:-1] + last.y.shape[1:])
        loss, g = self.loss(h, y)
        g = np.ascontiguousarray(g, dtype=np.float32).reshape(last.y.shape)
        if not be.captured_chain_backward(table, g, bound):  # not expected: then layer by layer from g
            for k in range(len(self.layers) - 1, -1, -1):
                g = self.layers[k].backward(g, self.need_dx[k])
                if g is None:
                    break
        self.replays += 1
        return loss, h

    def loss(self, h, y):
        """(loss array, d loss / d h) for the output ``h``: cross-entropy through the backend's primitive
        straight where that is what the eager loss runs, else the loss op's own forward and backward."""
        options = _cross_entropy_options(self.step.loss_fn) if self.direct_loss and h.ndim == 2 else None
        if options is not None and y.ndim == 1:
            try:  # F.cross_entropy's call, without its Tensor and node; its backward is dlogits * 1
                return self.backend.softmax_cross_entropy(
                    h, y.astype(self.backend.xp.int64, copy=False), None, *options
                )
            except ValueError as exc:
                raise ValueError(f"cross_entropy(): {exc}") from None
        be = self.backend
        out_t = Tensor._wrap(h, be)
        out_t.requires_grad = True
        with enable_grad():
            loss = self.step.loss_fn(out_t, Tensor._wrap(y, be))
        self.step.check_loss(loss, out_t)
        return loss._data, loss._backward(be.xp.ones_like(loss._data))[0]


def _cross_entropy_options(loss_fn):
    """(reduction, ignore_index, label_smoothing) when ``loss_fn`` is ``F.cross_entropy`` or an unmodified
    ``nn.CrossEntropyLoss`` with no class weight, a reduced loss and valid options; None otherwise."""
    if loss_fn is F.cross_entropy:
        return ("mean", -100, 0.0)
    if not isinstance(loss_fn, CrossEntropyLoss):
        return None
    cls = type(loss_fn)  # a subclass or an instance with its own forward runs through autograd
    if cls.forward is not CrossEntropyLoss.forward or cls.__call__ is not Module.__call__ or "forward" in vars(loss_fn):
        return None
    if loss_fn.weight is not None or loss_fn.reduction not in ("mean", "sum"):
        return None
    if not 0.0 <= loss_fn.label_smoothing <= 1.0:
        return None
    return (loss_fn.reduction, loss_fn.ignore_index, loss_fn.label_smoothing)


def _new_plan(step, backend):
    """The plan for ``backend``: on cupy the static program and CUDA graph of gpunn.train.capture_cuda."""
    if backend.name == "cupy":
        from gpunn.train.capture_cuda import CudaPlan

        return CudaPlan(step, backend)
    return _Plan(step, backend)


class CompiledStep:
    """``step(x, y) -> loss``: see the module docstring. ``plans`` maps each input signature to its plan;
    ``output`` is the last step's model output (a Tensor over the plan's buffer, overwritten next step)."""

    def __init__(self, model, loss_fn, optimizer, new_shape: str = "plan", on_error: str = "raise") -> None:
        if new_shape not in NEW_SHAPE_CHOICES:
            raise ValueError(f"compile_step: new_shape must be one of {NEW_SHAPE_CHOICES}, got {new_shape!r}")
        if on_error not in ("raise", "eager"):
            raise ValueError(f"compile_step: on_error must be 'raise' or 'eager', got {on_error!r}")
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.new_shape, self.on_error = new_shape, on_error
        self.plans: dict = {}
        self.output = None
        self.eager_only = False  # set when on_error='eager' met something a plan cannot hold
        self._bound = None  # the plan the layers are bound to
        try:
            self._record_structure()
        except CaptureError as exc:
            self._fall_back(exc)

    def _fall_back(self, exc: CaptureError) -> None:
        if self.on_error == "raise":
            raise exc
        if not self.eager_only:
            warnings.warn(f"{exc}; training eagerly instead", RuntimeWarning, stacklevel=3)
        self.eager_only = True

    def _record_structure(self) -> None:
        self.sequentials: list = []
        self.layers = _layers(self.model, seqs=self.sequentials)
        for k, layer in enumerate(self.layers):
            layer.index = k
        slots = getattr(self.optimizer, "_slot", None)
        if slots is None:
            raise CaptureError(f"compile_step: optimizer {type(self.optimizer).__name__} is not a gpunn optimizer")
        self.slots = {}
        seen = set()
        for layer in self.layers:
            for attr, p in layer.params:
                where = f"{layer.name}.{attr}"
                if id(p) in seen:
                    raise CaptureError(f"compile_step: parameter {where} is used by two layers (shared weights)")
                seen.add(id(p))
                if p._post_accumulate_hooks:
                    raise CaptureError(
                        f"compile_step: parameter {where} has a post-accumulate-grad hook "
                        "(DistributedDataParallel?); hooks do not run in a captured step"
                    )
                if id(p) in slots:
                    self.slots[id(p)] = slots[id(p)]
                elif p.requires_grad:
                    raise CaptureError(f"compile_step: parameter {where} requires grad but is not in the optimizer")
        self.params = [p for layer in self.layers for _, p in layer.params]
        self.opt_buffers = [list(bufs) for bufs in self.optimizer._buffers]
        # (parameter, its flat buffer, its index there) for the model's parameters; the optimizer's others
        self.grad_slots = [(p, *self.slots[id(p)]) for p in self.params if id(p) in self.slots]
        self.unused = [p for bufs in self.opt_buffers for buf in bufs for p in buf.params if id(p) not in self.slots]

    def _check_structure(self) -> None:
        for seq, mods in self.sequentials:
            now = tuple(seq._modules.values())
            if len(now) != len(mods) or any(a is not b for a, b in zip(now, mods)):
                raise CaptureError(
                    f"compile_step: the modules of {type(seq).__name__} changed after the step was "
                    "recorded (a changed parameter set); call compile_step again"
                )
        for layer in self.layers:
            layer.check()
        for p in self.params:
            if p._post_accumulate_hooks:
                raise CaptureError(
                    "compile_step: a parameter got a post-accumulate-grad hook after the step was "
                    "recorded; hooks do not run in a captured step"
                )
        if len(self.optimizer._buffers) != len(self.opt_buffers) or any(
            a != b for a, b in zip(self.optimizer._buffers, self.opt_buffers)
        ):
            raise CaptureError(
                "compile_step: the optimizer's parameter groups changed after the step was recorded; "
                "call compile_step again"
            )

    def check_loss(self, loss, out_t) -> None:
        ok = (
            isinstance(loss, Tensor)
            and loss._backward is not None
            and len(loss._parents) == 1
            and loss._parents[0] is out_t
            and loss._data.size == 1
        )
        if not ok:
            op = getattr(loss, "_op", None) or type(loss).__name__
            name = getattr(self.loss_fn, "__name__", type(self.loss_fn).__name__)
            raise CaptureError(
                f"compile_step: the loss ({name}, last op {op}) is not one op on the model's "
                "output; a captured step replays "
                "single-op losses (nn.CrossEntropyLoss, F.cross_entropy)"
            )

    def _signature(self, x, y) -> tuple:
        xd, yd = x._data, y._data
        flags = tuple([p.requires_grad for p in self.params])  # (lists: cheaper than generators, every step)
        modes = tuple([layer.module.training for layer in self.layers])
        # y's backend too: a target on another device then runs eagerly, where F.cross_entropy names it
        return (xd.shape, xd.dtype, yd.shape, yd.dtype, x._backend.name, y._backend.name, flags, modes)

    def _eager(self, x, y, check: bool):
        opt = self.optimizer
        opt.zero_grad()
        out = self.model(x)
        loss = self.loss_fn(out, y)
        if check and not self.eager_only:
            try:
                if not (isinstance(loss, Tensor) and len(loss._parents) == 1 and loss._parents[0] is out):
                    self.check_loss(loss, out)  # raises with the message
            except CaptureError as exc:
                self._fall_back(exc)
        loss.backward()
        opt.step()
        self.output = out
        return loss.detach()

    def __call__(self, x, y):
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            raise TypeError(
                f"compiled step: x and y must be gpunn Tensors, got {type(x).__name__} and {type(y).__name__}"
            )
        if self.eager_only or x.requires_grad:  # x.grad wanted: the plan computes no input gradient
            return self._eager(x, y, check=False)
        self._check_structure()
        key = self._signature(x, y)
        plan = self.plans.get(key)
        if plan is None:
            if self.plans and self.new_shape != "plan":
                if self.new_shape == "drop":
                    return None
                return self._eager(x, y, check=False)
            loss = self._eager(x, y, check=True)
            if not self.eager_only:
                self.plans[key] = _new_plan(self, x._backend)  # recorded: replayed from the next call on
            return loss
        if hasattr(plan, "replay_step"):  # the whole step, the update included (capture_cuda.CudaPlan)
            loss = plan.replay_step(x, y)
            if loss is not None:
                return loss
            plan = self.plans[key] = _Plan(self, x._backend)  # no static form: the generic plan
        loss, out = plan.run(x._data, y._data)
        be = x._backend
        for p, buf, i in self.grad_slots:  # the grads as backward leaves them (renewed views after a zero_grad)
            if not p.requires_grad:
                p.grad = None
                continue
            view = buf.grad_views[i]
            g = p.grad
            if g is None or g._data is not view:
                p.grad = Tensor._wrap(view, buf.backend)
        for p in self.unused:  # optimizer parameters the model does not use get no gradient
            p.grad = None
        self.optimizer.step()
        self.output = Tensor._wrap(out, be)
        return Tensor._wrap(loss, be)

    def _need_dx(self) -> list:
        """Per layer: does its input need a gradient (some earlier layer has a parameter that requires grad)?"""
        need, any_grad = [], False
        for layer in self.layers:
            need.append(any_grad)
            any_grad = any_grad or any(p.requires_grad for _, p in layer.params)
        return need


def compile_step(model, loss_fn, optimizer, *, new_shape: str = "plan", on_error: str = "raise") -> CompiledStep:
    """A training step ``step(x, y) -> loss`` (a 0-d Tensor on the device) that records its work on the
    first call for an input shape and replays it after (see ``gpunn.train.capture``).

    ``new_shape``: what a later call with a new input signature does -- ``"plan"`` records another plan,
    ``"eager"`` runs the eager loop, ``"drop"`` skips the batch and returns None. ``on_error="eager"``
    warns once and trains eagerly where a plan is impossible, instead of raising ``CaptureError``.
    >>> step = compile_step(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1))
    >>> for xb, yb in loader: loss = step(xb, yb)
    """
    return CompiledStep(model, loss_fn, optimizer, new_shape=new_shape, on_error=on_error)
