"""The cupy backend's plan for ``compile_step``: static buffers, device scalars, one CUDA graph per step.

``gpunn.train.capture.CompiledStep`` records a plan per input signature; on the cupy backend that plan
is a ``CudaPlan``. Its first replay runs the step's whole program -- forward, cross-entropy, backward,
optimizer update -- through the backend's primitives with a WORKSPACE (``CupyBackend._empty``): every
intermediate array is allocated once, named per layer, and reused. The second replay captures that
program on a non-blocking stream with CuPy's graph API (``stream.begin_capture()`` ...
``stream.end_capture()``) and every replay from then on is one ``graph.launch()`` on the current stream.

A graph replays kernel arguments as they were captured, so what changes between steps is read from
device memory, updated between launches without a host sync (``fill``, a kernel launch):

- the learning rate of each parameter group (``lr_dev`` of the optimizer kernels), written when
  ``group["lr"]`` changed (a scheduler);
- Adam's step count (``step_increment`` inside the graph; the host's per-parameter ``state["step"]``
  is advanced to match), from which the kernel derives the bias corrections;
- the dropout seed and offset (kernels/dropout.cu's ``state``: the graph advances the offset, the host
  advances ``backend._dropout_offset`` alike, ``manual_seed`` is noticed and written);
- the loss: each step's goes to its own element of a ring of ``LOSS_RING`` device values (the slot index
  lives on the device), so the returned 0-d loss stays valid while later steps run, and ``fit`` reads
  them ``sync_every`` at a time. A wrapped ring is replaced by a new one (one allocation and a re-capture
  every ``LOSS_RING`` steps), so a loss kept by the caller is never overwritten.

Hyper-parameters other than the learning rate (momentum, betas, weight decay, dropout p) and the kernel
versions (``gpunn.backend.kernel_table``) are compared with the captured ones before each launch; a change
runs that step directly (allocating what the new form needs) and re-captures the graph at the next.
Results are the eager step's bit for bit: the same kernels with the same arguments, in the same order
(the eager loss, dropout and optimizer launches are the same kernels as the plan's).

What has no static form here (cuBLAS-sized GEMMs: CuPy cannot capture cuBLAS, cupy issue 6290; average
pooling, standalone sigmoid/leaky_relu, a weighted or label-smoothed loss with class weights, an optimizer
other than SGD/Adam/AdamW, a frozen parameter, ...) makes ``replay_step`` return None: the step then uses
the generic plan of ``gpunn.train.capture`` (no graph; one RuntimeWarning naming the reason). A graph
capture that CUDA refuses raises ``CaptureError`` naming the reason, or with ``on_error="eager"`` warns
and replays the static program without a graph. ``GPUNN_CUDA_GRAPH=0`` replays without a graph.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np

from gpunn.grad_mode import enable_grad
from gpunn.nn import functional as F
from gpunn.nn.activation import LeakyReLU, ReLU, Sigmoid, Tanh
from gpunn.nn.container import Sequential, _fused_activation
from gpunn.nn.conv import Conv2d
from gpunn.nn.dropout import Dropout
from gpunn.nn.flatten import Flatten
from gpunn.nn.linear import Linear
from gpunn.nn.pooling import MaxPool2d
from gpunn.tensor import Tensor

LOSS_RING = 1024  # losses kept on the device per ring (see the module docstring)


class NoStaticForm(Exception):
    """This step has no static-buffer program on the cupy backend (the message says why)."""


def graph_enabled() -> bool:
    return os.environ.get("GPUNN_CUDA_GRAPH", "1").strip() not in ("0", "false", "no", "off")


class _Workspace:
    """Named arrays allocated once and reused: ``ws(name, shape, dtype)``; ``scope(prefix)`` names a layer's."""

    def __init__(self, xp) -> None:
        self.xp = xp
        self.arrays: dict = {}
        self.frozen = False  # set once the program ran: a new or reshaped buffer then is a bug

    def __call__(self, name: str, shape: tuple, dtype):
        a = self.arrays.get(name)
        if a is None or a.shape != shape or a.dtype != dtype:
            if self.frozen:
                raise NoStaticForm(f"buffer {name} changed shape after the program was recorded")
            a = self.arrays[name] = self.xp.empty(shape, dtype=dtype)
        return a

    def scope(self, prefix: str):
        return lambda name, shape, dtype: self(f"{prefix}/{name}", shape, dtype)


# ----------------------------------------------------------------------------------------------------
# static layers: forward(x) -> y, backward(dy, need_dx) -> dx, every array from the workspace
# ----------------------------------------------------------------------------------------------------
class _Static:
    params: tuple = ()

    def config(self) -> tuple:
        """What the captured launches baked in and a user may change between steps."""
        return ()


class _LinearS(_Static):
    def __init__(self, plan, name, module, act, slope) -> None:
        self.plan, self.name, self.m, self.act, self.slope = plan, name, module, act, slope
        self.ws = plan.ws.scope(name)
        self.params = tuple(p for p in (module.weight, module.bias) if p is not None)

    def forward(self, x):
        be, m = self.plan.be, self.m
        W = m.weight._data
        n, k = math.prod(x.shape[:-1]), x.shape[-1]
        if x.ndim < 1 or k != W.shape[1] or not be.linear_kernel_ok(n, W.shape[0], k, x, W):
            raise NoStaticForm(f"{self.name} (Linear {tuple(W.shape)}): no static-buffer GEMM (cuBLAS or a fallback)")
        self.x = x
        b = None if m.bias is None else m.bias._data
        self.y = be.linear_act(x, W, b, self.act, self.slope, ws=self.ws)
        return self.y

    def backward(self, dy, need_dx):
        m, plan = self.m, self.plan
        dx, _, _ = plan.be.linear_act_backward(
            dy, self.x, m.weight._data, self.y, self.act, self.slope, need_dx=need_dx, ws=self.ws,
            **_param_grads(plan, m),
        )  # fmt: skip
        return dx


def _param_grads(plan, m) -> dict:
    """The weight/bias gradient keywords of a layer's backward primitive: which are wanted, and the plan's
    flat-gradient views they are written into."""
    need_db = m.bias is not None and m.bias.requires_grad
    return {
        "need_dW": m.weight.requires_grad,
        "need_db": need_db,
        "out_dW": plan.grad_out(m.weight),
        "out_db": plan.grad_out(m.bias) if need_db else None,
    }


class _ConvS(_Static):
    def __init__(self, plan, name, module, act, slope) -> None:
        self.plan, self.name, self.m, self.act, self.slope = plan, name, module, act, slope
        self.ws = plan.ws.scope(name)
        self.params = tuple(p for p in (module.weight, module.bias) if p is not None)
        if F._pair(module.dilation, "dilation", "conv2d") != (1, 1) or module.groups != 1:
            raise NoStaticForm(f"{name} (Conv2d with dilation or groups)")
        if getattr(module, "padding_mode", "zeros") != "zeros":
            raise NoStaticForm(f"{name} (Conv2d with padding_mode={module.padding_mode!r})")

    def config(self) -> tuple:
        m = self.m
        return (m.stride, m.padding, m.dilation, m.groups, m.padding_mode)

    def forward(self, x):
        m, be = self.m, self.plan.be
        if F._pair(m.dilation, "dilation", "conv2d") != (1, 1) or m.groups != 1 or m.padding_mode != "zeros":
            raise NoStaticForm(f"{self.name} (Conv2d with dilation, groups or padding_mode set since recording)")
        if x.ndim != 4 or x.dtype != m.weight._data.dtype:
            raise NoStaticForm(f"{self.name} (Conv2d): input of shape {x.shape} and dtype {x.dtype}")
        w = m.weight._data
        padding = F._pair(F._conv_padding(m.padding, w.shape[-2:], m.stride, m.dilation, "conv2d"), "padding", "")
        stride = F._pair(m.stride, "stride", "conv2d")
        n, _, h, wd = x.shape
        oh, ow = (h + 2 * padding[0] - w.shape[2]) // stride[0] + 1, (wd + 2 * padding[1] - w.shape[3]) // stride[1] + 1
        if not be.linear_kernel_ok(n * oh * ow, w.shape[0], math.prod(w.shape[1:]), x, w):
            raise NoStaticForm(f"{self.name} (Conv2d): no static-buffer GEMM (cuBLAS or a fallback)")
        b = None if m.bias is None else m.bias._data
        y, self.saved = be.conv2d_forward(x, w, b, stride, padding, self.act, self.slope, need_grad=True, ws=self.ws)
        return y

    def backward(self, dy, need_dx):
        dx, _, _ = self.plan.be.conv2d_backward(
            dy, self.saved, need_dx=need_dx, ws=self.ws, **_param_grads(self.plan, self.m)
        )
        return dx


class _ActS(_Static):
    """A standalone ReLU or Tanh: F.relu / F.tanh's operations, into workspace buffers."""

    def __init__(self, plan, name, kind) -> None:
        self.plan, self.name, self.kind = plan, name, kind
        self.ws = plan.ws.scope(name)

    def forward(self, x):
        xp = self.plan.be.xp
        y = self.y = self.ws("y", x.shape, x.dtype)
        if self.kind == "relu":  # 0 where x < 0, else x (NaN and -0.0 kept)
            mask = self.ws("mask", x.shape, np.dtype(bool))
            xp.less(x, 0, out=mask)
            xp.copyto(y, x)
            xp.copyto(y, 0, where=mask)
        else:
            xp.tanh(x, out=y)
        return y

    def backward(self, dy, need_dx):
        if not need_dx:
            return None
        xp, y = self.plan.be.xp, self.y
        dx = self.ws("dx", y.shape, y.dtype)
        if self.kind == "relu":  # 0 where out <= 0, else g (a selection: NaN out passes g)
            mask = self.ws("mask", y.shape, np.dtype(bool))
            xp.less_equal(y, 0, out=mask)
            xp.copyto(dx, dy)
            xp.copyto(dx, 0, where=mask)
        else:  # g * (1 - y * y)
            t = self.ws("t", y.shape, y.dtype)
            xp.multiply(y, y, out=t)
            xp.subtract(1, t, out=t)
            xp.multiply(dy, t, out=dx)
        return dx


class _DropoutS(_Static):
    """Dropout on kernels/dropout.cu, its seed and step offset read from the plan's device state."""

    def __init__(self, plan, name, module) -> None:
        self.plan, self.name, self.m = plan, name, module
        self.ws = plan.ws.scope(name)
        self._check_p()

    def _check_p(self) -> None:
        if not 0.0 < self.m.p < 1.0:
            raise NoStaticForm(f"{self.name} (Dropout p={self.m.p})")

    def config(self) -> tuple:
        return (self.m.p,)

    def forward(self, x):
        plan = self.plan
        if np.dtype(x.dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise NoStaticForm(f"{self.name} (Dropout on {x.dtype})")
        self._check_p()
        self.p = self.m.p  # as it is now: a p set after recording re-captures the graph (config) with it
        self.offset = plan.dropout_elements  # this layer's elements within the step's draws
        plan.dropout_elements += x.size
        y = self.ws("y", x.shape, x.dtype)
        plan.be.dropout_into(x, y, self.p, 0, self.offset, state=plan.dropout_state)
        return y

    def backward(self, dy, need_dx):
        if not need_dx:
            return None
        dx = self.ws("dx", dy.shape, dy.dtype)
        self.plan.be.dropout_into(dy, dx, self.p, 0, self.offset, state=self.plan.dropout_state)
        return dx


class _MaxPoolS(_Static):
    def __init__(self, plan, name, module) -> None:
        self.plan, self.name, self.m = plan, name, module
        self.ws = plan.ws.scope(name)
        self._check()

    def _check(self) -> None:  # at recording, and at each capture (an option may have been set since)
        m = self.m
        if m.ceil_mode or m.return_indices or F._pair(m.dilation, "dilation", "") != (1, 1):
            raise NoStaticForm(f"{self.name} (MaxPool2d with ceil_mode, return_indices or dilation)")

    def config(self) -> tuple:
        m = self.m
        return (m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, m.return_indices)

    def forward(self, x):
        self._check()
        if x.ndim != 4:
            raise NoStaticForm(f"{self.name} (MaxPool2d on a {x.ndim}-D input)")
        m = self.m
        kh, kw, sh, sw, ph, pw, _, _ = F._pool_geometry(x, m.kernel_size, m.stride, m.padding, "max_pool2d")
        y, self.saved = self.plan.be.pool2d_forward(x, "max", (kh, kw), (sh, sw), (ph, pw), ws=self.ws)
        return y

    def backward(self, dy, need_dx):
        return self.plan.be.pool2d_backward(dy, self.saved, ws=self.ws) if need_dx else None


class _FlattenS(_Static):
    """Flatten (a view), or with ``module`` None the identity (dropout in eval mode or with p = 0)."""

    def __init__(self, plan, name, module) -> None:
        self.plan, self.m = plan, module

    def config(self) -> tuple:
        return () if self.m is None else (self.m.start_dim, self.m.end_dim)

    def forward(self, x):
        self.x_shape = x.shape
        if self.m is None:
            return x
        shape = Tensor._wrap(x, self.plan.be).flatten(self.m.start_dim, self.m.end_dim).shape
        return x.reshape(shape)

    def backward(self, dy, need_dx):
        return dy.reshape(self.x_shape) if need_dx else None


def _static_layers(plan, model, prefix: str = "") -> list:
    """The model as static layers, fused exactly as ``Sequential.forward`` fuses (Linear or Conv2d followed by
    an activation), or NoStaticForm naming the first module that has none."""
    name = prefix or type(model).__name__
    if type(model).forward is Sequential.forward:
        mods = [(k, m) for k, m in model._modules.items() if m is not None]
        out, i = [], 0
        while i < len(mods):
            key, m = mods[i]
            path = f"{prefix}.{key}" if prefix else key
            fused = _fused_activation(mods[i + 1][1]) if i + 1 < len(mods) else None
            if type(m).forward in (Linear.forward, Conv2d.forward) and fused is not None:
                act, slope = fused
                if act == "leaky_relu" and slope <= 0:
                    raise NoStaticForm(f"{path} (leaky_relu of slope {slope} <= 0 after {type(m).__name__})")
                cls = _LinearS if type(m).forward is Linear.forward else _ConvS
                out.append(cls(plan, path, m, act, slope))
                i += 2
                continue
            out.extend(_static_layers(plan, m, path))
            i += 1
        return out
    kind = type(model).forward
    if kind is Linear.forward:
        return [_LinearS(plan, name, model, "none", 0.01)]
    if kind is Conv2d.forward:
        return [_ConvS(plan, name, model, "none", 0.01)]
    if kind is ReLU.forward:
        return [_ActS(plan, name, "relu")]
    if kind is Tanh.forward:
        return [_ActS(plan, name, "tanh")]
    if kind is Dropout.forward:
        if not model.training or model.p == 0.0:  # F.dropout returns its input
            return [_FlattenS(plan, name, None)]
        return [_DropoutS(plan, name, model)]
    if kind is MaxPool2d.forward:
        return [_MaxPoolS(plan, name, model)]
    if kind is Flatten.forward:
        return [_FlattenS(plan, name, model)]
    what = "standalone activation" if kind in (Sigmoid.forward, LeakyReLU.forward) else "module"
    raise NoStaticForm(f"{name} ({type(model).__name__}: no static-buffer form for this {what} on the cupy backend)")


# ----------------------------------------------------------------------------------------------------
class _Seen(Exception):
    """Stops a spied loss call once its cross-entropy arguments are known (_LossS.refresh)."""


class _LossS:
    """Cross-entropy on class indices through the backend's kernels (what the loss function calls, found by
    running it once), the loss written to the plan's device ring."""

    def __init__(self, plan, out, y) -> None:
        self.plan, self.out, self.y = plan, out, y
        self.reduction, self.ignore_index, self.smoothing = self._options(check=True)
        self.ws = plan.ws.scope("loss")
        self.ones = plan.ws("loss/ones", (1,), out.dtype)
        self.ones.fill(1)

    def _options(self, check: bool) -> tuple:
        """(reduction, ignore_index, label_smoothing) of the cross-entropy the loss function calls now, found by
        running it on the output with the backend's entry point spied on; NoStaticForm when it is no static
        cross-entropy. ``check``: let the call run (the loss must be one op on the output); else the spy stops
        it before any launch."""
        plan, out, y = self.plan, self.out, self.y
        be, seen = plan.be, {}
        original = be.softmax_cross_entropy_fwd

        def spy(logits, target, weight=None, reduction="mean", ignore_index=-100, label_smoothing=0.0, **kw):
            seen["args"] = (logits, target, weight, reduction, ignore_index, label_smoothing)
            if not check:
                raise _Seen
            return original(logits, target, weight, reduction, ignore_index, label_smoothing, **kw)

        out_t = Tensor._wrap(out, be)
        out_t.requires_grad = True
        be.softmax_cross_entropy_fwd = spy
        try:
            with enable_grad():
                loss = plan.step.loss_fn(out_t, Tensor._wrap(y, be))
        except _Seen:
            loss = None
        finally:
            del be.softmax_cross_entropy_fwd  # the class's method again
        if check:
            plan.step.check_loss(loss, out_t)  # one op on the output, or CaptureError
        args = seen.get("args")
        if args is None:
            raise NoStaticForm(f"the loss ({type(plan.step.loss_fn).__name__}) is not a cross-entropy")
        logits, target, weight, reduction, ignore_index, smoothing = args
        if logits is not out or target.shape != y.shape or y.ndim != 1 or reduction not in ("mean", "sum"):
            raise NoStaticForm("the cross-entropy is not on the (N, C) output and (N,) labels with a reduced loss")
        if weight is not None:
            raise NoStaticForm("a cross-entropy with class weights")
        return reduction, ignore_index, smoothing

    def refresh(self) -> bool:
        """Re-read the loss's options before a replay, so a change since recording (``label_smoothing``,
        ``reduction``, ``ignore_index`` set on the loss module, or read by a loss function at each call) is
        launched, never the recorded value (a changed one re-captures the graph through ``config``): an
        unmodified CrossEntropyLoss by its attributes, any other loss function by spying on a call of it.
        False when the loss has no static form now (class weights, ``reduction="none"``): that step then runs
        eagerly."""
        from gpunn.train.capture import _cross_entropy_options

        options = _cross_entropy_options(self.plan.step.loss_fn)
        if options is None:
            try:
                options = self._options(check=False)
            except NoStaticForm:
                return False
        self.reduction, self.ignore_index, self.smoothing = options
        return True

    def config(self) -> tuple:
        return (self.reduction, self.ignore_index, self.smoothing)

    def forward_backward(self, out, y):
        plan = self.plan
        _, backward = plan.be.softmax_cross_entropy_fwd(
            out,
            y,
            None,
            self.reduction,
            self.ignore_index,
            self.smoothing,
            ws=self.ws,
            loss_ring=(plan.ring, plan.slot),
        )
        return backward(self.ones)


class _OptimS:
    """SGD / Adam / AdamW over the optimizer's flat buffers, the learning rate (and Adam's step) read from
    device memory."""

    def __init__(self, plan) -> None:
        from gpunn.optim.adam import Adam, AdamW
        from gpunn.optim.sgd import SGD

        opt, xp = plan.step.optimizer, plan.be.xp
        if type(opt) is SGD:
            self.kind = "sgd"
        elif type(opt) in (Adam, AdamW):
            self.kind = "adam"
        else:
            raise NoStaticForm(f"optimizer {type(opt).__name__} (static forms: SGD, Adam, AdamW)")
        self.plan, self.opt = plan, opt
        self.units = []  # (group, buffer, lr_dev, step_dev): one kernel launch each
        for group, buffers in zip(opt.param_groups, opt._buffers):
            for buf in buffers:
                for p in buf.params:
                    if id(p) not in plan.step.slots or not p.requires_grad:
                        raise NoStaticForm("an optimizer parameter the model does not train (frozen or unused)")
                if np.dtype(buf.dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
                    raise NoStaticForm(f"a {buf.dtype} parameter buffer")
                lr_dt = buf.dtype if self.kind == "sgd" else np.float64
                lr_dev = xp.empty((1,), dtype=lr_dt)
                step_dev = xp.zeros((1,), dtype=xp.int64) if self.kind == "adam" else None
                self.units.append([group, buf, lr_dev, step_dev, None, None])  # + mirrors (lr, step)

    def config(self) -> tuple:
        return tuple(tuple(sorted((k, str(v)) for k, v in g.items() if k not in ("params", "lr", "param_names")))
                     for g in self.opt.param_groups)  # fmt: skip

    def ready(self) -> bool:
        """Update the device learning rates and step counts from the host (no sync); False when the
        optimizer's state is not uniform per buffer (a reset state, a parameter without momentum yet):
        that step then runs eagerly."""
        state = self.opt.state
        for unit in self.units:
            group, buf, lr_dev, step_dev, lr_seen, step_seen = unit
            if self.kind == "sgd":
                if group["momentum"] != 0 and any("momentum_buffer" not in state.get(p, ()) for p in buf.params):
                    return False
            else:
                steps = {state.get(p, {}).get("step") for p in buf.params}
                if len(steps) != 1 or None in steps or "exp_avg" not in state.get(buf.params[0], ()):
                    return False
                t = steps.pop()
                if step_seen != t:
                    step_dev.fill(t)
                    unit[5] = t
            if lr_seen != group["lr"]:
                lr_dev.fill(group["lr"])
                unit[4] = group["lr"]
        return True

    def launch(self) -> None:
        be = self.plan.be
        for group, buf, lr_dev, step_dev, _, _ in self.units:
            if self.kind == "sgd":
                be.sgd_step(
                    buf.data,
                    self.plan.grads[id(buf)][0],
                    buf.state_buffer("momentum_buffer") if group["momentum"] != 0 else None,
                    first_step=False,
                    lr_dev=lr_dev,
                    **self.opt.kernel_hyper(group),
                )
            else:
                be.step_increment(step_dev)
                be.adam_step(
                    buf.data,
                    self.plan.grads[id(buf)][0],
                    buf.state_buffer("exp_avg"),
                    buf.state_buffer("exp_avg_sq"),
                    buf.state_buffer("max_exp_avg_sq") if group["amsgrad"] else None,
                    step=step_dev,
                    lr_dev=lr_dev,
                    **self.opt.kernel_hyper(group),
                )

    def after(self) -> None:
        """The host's view of the update: Adam's per-parameter step, the device mirrors, version counters."""
        state = self.opt.state
        for unit in self.units:
            buf = unit[1]
            if self.kind == "adam":
                unit[5] += 1
                for p in buf.params:
                    state[p]["step"] = unit[5]
            for p in buf.params:
                p._bump_version("optimizer.step")


# ----------------------------------------------------------------------------------------------------
class CudaPlan:
    """One input signature's static program on the cupy backend (see the module docstring)."""

    def __init__(self, step, backend) -> None:
        self.step, self.be = step, backend
        self.ws = _Workspace(backend.xp)
        self.program = None  # built on the first replay
        self.graph = None
        self.program_config = None  # the _config() the program last ran directly with (a change re-runs it)
        self.graph_off = not graph_enabled()
        self.replays = 0
        self.need_dx = step._need_dx()  # the signature fixes which parameters require grad

    # -- the parts of the program ---------------------------------------------------------------------
    def grad_out(self, p):
        """The flat gradient view the program writes ``p``'s gradient into (fixed at the build)."""
        buf, i = self.step.slots[id(p)]
        return self.grads[id(buf)][1][i]

    def _build(self, x, y) -> None:
        xp = self.be.xp
        self.layers = _static_layers(self, self.step.model)
        opt_params = [p for layer in self.layers for p in layer.params]
        if [id(p) for p in opt_params] != [id(p) for p in self.step.params]:
            raise NoStaticForm("the static layers do not hold the step's parameters")
        self.grads = {}  # id(buffer) -> (flat grad, views): the buffers the graph writes
        self.buffers = []  # (buffer, flat grad, views) of every optimizer buffer
        for bufs in self.step.optimizer._buffers:
            for buf in bufs:
                self.grads[id(buf)] = (buf.grad, list(buf.grad_views))
                self.buffers.append((buf, buf.grad, self.grads[id(buf)][1]))
        self.opt = _OptimS(self)
        self.x = self.ws("input/x", x.shape, x.dtype)
        self.y = self.ws("input/y", y.shape, np.dtype(np.int64))
        if y.dtype.kind not in "iu":
            raise NoStaticForm(f"labels of dtype {y.dtype}")
        self.ring = xp.empty((LOSS_RING,), dtype=x.dtype if x.dtype.kind == "f" else np.float32)
        self.slot = xp.zeros((1,), dtype=xp.int64)
        self.slot_seen = 0
        self.dropout_state = xp.zeros((2,), dtype=xp.uint64)
        self.dropout_seen = (0, 0)
        self.dropout_elements = 0
        xp.copyto(self.x, x)
        xp.copyto(self.y, y)
        # a forward to find the loss (and check every layer has a static form) before anything is updated
        h = self.x
        for layer in self.layers:
            h = layer.forward(h)
        if h.ndim != 2:
            raise NoStaticForm(f"the model's output has shape {h.shape} (a cross-entropy on (N, C) only)")
        self.ring = self.ring.astype(h.dtype, copy=False)
        self.loss = _LossS(self, h, self.y)
        self.step_dropout = self.dropout_elements
        self.program = True

    def _program(self) -> None:
        """Forward, loss, backward, update: the launches a graph captures."""
        self.dropout_elements = 0
        h = self.x
        for layer in self.layers:
            h = layer.forward(h)
        self.out = h
        g = self.loss.forward_backward(h, self.y)
        need_dx = self.need_dx
        for k in range(len(self.layers) - 1, -1, -1):
            g = self.layers[k].backward(g, need_dx[k])
            if g is None:
                break
        if self.step_dropout:
            self.be.dropout_advance(self.dropout_state, self.step_dropout)
        self.opt.launch()

    def _config(self) -> tuple:
        from gpunn.backend import kernel_table

        return (
            kernel_table.state(),  # the kernel versions its launches picked
            tuple(layer.config() for layer in self.layers),
            self.loss.config(),
            self.opt.config(),
            tuple(self.need_dx),
        )

    # -- one replay ------------------------------------------------------------------------------------
    def replay_step(self, x_t, y_t):
        """Run the step; the loss (a 0-d device Tensor), or None when this step has no static form (the
        caller then uses the generic plan)."""
        be, xp, step = self.be, self.be.xp, self.step
        x, y = x_t._data, y_t._data
        if self.program is None:
            try:
                self._build(x, y)
            except (NoStaticForm, ValueError, TypeError) as exc:
                warnings.warn(
                    f"compile_step: the cupy backend replays this step without static buffers or a CUDA graph: {exc}",
                    RuntimeWarning,
                    stacklevel=3,
                )
                return None
        for buf, _, _ in self.buffers:  # p.data = t since the last step: into the flat buffer
            for i, p in enumerate(buf.params):
                if p._data is not buf.data_views[i]:
                    buf._adopt_data(i)
        if not self.loss.refresh() or not self.opt.ready():  # the loss's options as they are now
            return step._eager(x_t, y_t, check=False)
        for buf, flat, views in self.buffers:  # the gradient storage the program writes (after a zero_grad)
            if buf.grad is not flat:
                buf.grad, buf.grad_views = flat, list(views)
                for p, v in zip(buf.params, views):
                    p._grad_view = v
        if x is not self.x:
            be.copy_into(self.x, x)
        if y is not self.y:
            be.copy_into(self.y, y)
        seed, offset = be.dropout_seed_offset(0) if self.step_dropout else self.dropout_seen
        if (seed, offset) != self.dropout_seen:
            self.dropout_state[0:1].fill(seed)
            self.dropout_state[1:2].fill(offset)
        if self.slot_seen == LOSS_RING:  # a fresh ring: the losses handed out stay valid
            self.ring = xp.empty((LOSS_RING,), dtype=self.ring.dtype)
            self.slot.fill(0)
            self.slot_seen = 0
            self.graph = None
        try:
            self._run()
        except NoStaticForm:
            # an option set since recording has no static form (a dilated pool, a conv whose output no longer
            # fits the recorded layers): this step runs eagerly, from the same state, and later ones retry
            return step._eager(x_t, y_t, check=False)
        # the host's view of what the step did
        if self.step_dropout:
            self.dropout_seen = (seed, offset + self.step_dropout)
            be._dropout_offset = offset + self.step_dropout
        be._label_pending = True  # the loss launch may flag a bad label: checked at the next read
        self.opt.after()
        for buf, _, views in self.buffers:
            for p, v in zip(buf.params, views):
                g = p.grad
                if g is None or g._data is not v:
                    p.grad = Tensor._wrap(v, buf.backend)
        loss = Tensor._wrap(self.ring[self.slot_seen], be)
        self.slot_seen += 1
        self.replays += 1
        step.output = Tensor._wrap(self.out, be)
        return loss

    def _run(self) -> None:
        config = self._config()
        if self.replays == 0 or config != self.program_config:
            # the first replay, and the first after an option or a kernel version changed, run directly: what
            # the program needs now is allocated (linear_act v2's split-K partials, absent under v1) and
            # compiled; the next replay captures it
            self.ws.frozen = False
            self._program()
            self.ws.frozen = True
            self.program_config, self.graph = config, None
            return
        if self.graph_off:
            self._program()
            return
        if self.graph is None:
            try:
                self.graph = self._capture()
            except Exception as exc:  # CUDA refused the capture
                from gpunn.train.capture import CaptureError

                msg = f"compile_step: the step could not be captured as a CUDA graph: {exc}"
                if self.step.on_error == "raise":
                    raise CaptureError(msg) from exc
                warnings.warn(msg + "; replaying it without a graph", RuntimeWarning, stacklevel=4)
                self.graph_off = True
                self._program()
                return
        self.graph.launch()

    def _capture(self):
        xp = self.be.xp
        stream = xp.cuda.Stream(non_blocking=True)
        with stream:
            stream.begin_capture()
            try:
                self._program()
            except BaseException:
                try:
                    stream.end_capture()
                except Exception:  # the capture was invalidated by the error being raised
                    pass
                raise
            return stream.end_capture()
