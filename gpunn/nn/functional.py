"""Differentiable functions with the names and semantics of ``torch.nn.functional``.

Each op computes its output from the backend arrays and defines its backward right below it.
``linear`` and ``cross_entropy`` go through the backend's fused primitives (one call computes the
output and what backward needs); see ``gpunn.backend.reference`` for their math.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from gpunn.backend.reference import ACTIVATIONS, REDUCTIONS
from gpunn.dtypes import _is_float, check_broadcast
from gpunn.grad_mode import is_grad_enabled
from gpunn.ops import pointwise as _pointwise
from gpunn.ops.pointwise import (  # noqa: F401
    _implicit_dim,
    celu,
    elu,
    gelu,
    glu,
    hardshrink,
    hardsigmoid,
    hardswish,
    hardtanh,
    leaky_relu,
    logsigmoid,
    mish,
    prelu,
    relu,
    relu6,
    selu,
    sigmoid,
    silu,
    softplus,
    softshrink,
    softsign,
    tanh,
    tanhshrink,
    threshold,
)
from gpunn.ops.shape import cat, flatten, where
from gpunn.tensor import Tensor, _check_same_backend, _unbroadcast

__all__ = [
    "linear",
    "relu",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "softmax",
    "log_softmax",
    "dropout",
    "flatten",
    "conv2d",
    "max_pool2d",
    "avg_pool2d",
    "cross_entropy",
    "nll_loss",
    "mse_loss",
    "l1_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "multi_margin_loss",
    "kl_div",
    "entropy",
]


# ------------------------------------------------------------------------------------------------
# argument checks
# ------------------------------------------------------------------------------------------------
# PyTorch's functional softmax family has an internal ``_stacklevel`` in the third slot, so that
# ``F.softmax(x, 1, 3, dtype)`` binds as there; the Tensor methods (``x.softmax(dim, dtype)``) do not.
def softmax(input, dim: int | None = None, _stacklevel: int = 3, dtype=None) -> Tensor:  # noqa: A002
    """exp(x - max) / sum(exp(x - max)) along ``dim`` (see ``gpunn.ops.pointwise.softmax``)."""
    return _pointwise.softmax(input, dim, dtype)


def log_softmax(input, dim: int | None = None, _stacklevel: int = 3, dtype=None) -> Tensor:  # noqa: A002
    """x - max - log(sum(exp(x - max))) along ``dim`` (see ``gpunn.ops.pointwise.log_softmax``)."""
    return _pointwise.log_softmax(input, dim, dtype)


def softmin(input, dim: int | None = None, _stacklevel: int = 3, dtype=None) -> Tensor:  # noqa: A002
    """softmax(-x) along ``dim``."""
    return _pointwise.softmin(input, dim, dtype)


def _tensor(x, fname: str, argname: str = "input") -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{fname}(): argument '{argname}' must be a gpunn Tensor, got {type(x).__name__}")
    return x


def _float_tensor(x, fname: str, argname: str = "input") -> Tensor:
    _tensor(x, fname, argname)
    if not _is_float(x.dtype):
        raise TypeError(f"{fname}(): argument '{argname}' must be a floating-point tensor, got dtype {x.dtype}")
    return x


def _check_reduction(reduction: str, fname: str, allowed=REDUCTIONS) -> None:
    if reduction not in allowed:
        raise ValueError(f"{fname}(): reduction must be one of {allowed}, got {reduction!r}")


def _legacy_reduction(size_average, reduce, reduction: str) -> str:
    """PyTorch's deprecated ``size_average``/``reduce`` pair, mapped to a ``reduction`` as PyTorch does (with its
    UserWarning): both None keep ``reduction``; else reduce=False gives 'none', size_average=False 'sum', and
    anything else 'mean' (so ``MSELoss(size_average=False)`` sums)."""
    if size_average is None and reduce is None:
        return reduction
    if reduce is not None and not reduce:
        legacy = "none"
    elif size_average is not None and not size_average:
        legacy = "sum"
    else:
        legacy = "mean"
    warnings.warn(
        f"size_average and reduce args will be deprecated, please use reduction='{legacy}' instead.",
        UserWarning,
        stacklevel=3,
    )
    return legacy


def _same_shape(input: Tensor, target: Tensor, fname: str) -> None:  # noqa: A002
    if input.shape != target.shape:
        raise ValueError(f"{fname}(): target shape {target.shape} must match input shape {input.shape}")


def _broadcast_target(input: Tensor, target: Tensor, warn: bool = True) -> None:  # noqa: A002
    """PyTorch's pointwise regression losses broadcast a target of another shape against the input -- with
    its warning (mse, l1, smooth L1, Huber; kl_div silently) -- so a (N, 1) prediction against a (N,)
    target averages an (N, N) grid of differences. The same here, warning alike; shapes that do not
    broadcast raise PyTorch's RuntimeError."""
    if input.shape == target.shape:
        return
    if warn:
        warnings.warn(
            f"Using a target size ({list(target.shape)}) that is different to the input size "
            f"({list(input.shape)}). This will likely lead to incorrect results due to broadcasting. "
            "Please ensure they have the same size.",
            UserWarning,
            stacklevel=3,
        )
    check_broadcast(input.shape, target.shape)


def _target_like(input: Tensor, target, fname: str) -> Tensor:  # noqa: A002
    """``target`` as a float tensor on input's backend (a Tensor, array or number)."""
    if isinstance(target, Tensor):
        _check_same_backend(input, target, fname)
        if not _is_float(target.dtype):
            target = target.astype(input.dtype)
        return target
    return Tensor._wrap(input._backend.asarray(target, dtype=input.dtype), input._backend)


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _pair(v, name: str, fname: str) -> tuple[int, int]:
    if isinstance(v, (int, np.integer)):
        v = (int(v), int(v))
    v = tuple(int(a) for a in v)
    if len(v) != 2:
        raise ValueError(f"{fname}(): {name} must be an int or a pair of ints, got {v}")
    return v


def _conv_padding(padding, kernel_size, stride, dilation, fname: str):
    """PyTorch's string paddings as the int pair they stand for: 'valid' is 0; 'same' (stride 1 only) pads
    dilation * (kernel - 1) in total per dim, which is symmetric for odd effective kernels only."""
    if not isinstance(padding, str):
        return padding
    if padding == "valid":
        return (0, 0)
    if padding != "same":
        raise ValueError(f"{fname}(): padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    if _pair(stride, "stride", fname) != (1, 1):
        raise ValueError(f"{fname}(): padding='same' is not supported for strided convolutions")
    totals = [d * (k - 1) for k, d in zip(kernel_size, _pair(dilation, "dilation", fname))]
    if any(t % 2 for t in totals):
        raise NotImplementedError(
            f"{fname}(): padding='same' with an even effective kernel size {tuple(kernel_size)} needs asymmetric "
            "padding, which gpunn does not support; use an odd kernel size or explicit padding"
        )
    return (totals[0] // 2, totals[1] // 2)


# ------------------------------------------------------------------------------------------------
# linear (+ fused activation)
# ------------------------------------------------------------------------------------------------
def linear(input, weight, bias=None, *, activation: str | None = None, negative_slope: float = 0.01) -> Tensor:  # noqa: A002
    """y = act(x @ W.T + b).  x: (*, in), W: (out, in), b: (out,)  ->  (*, out).

    ``activation`` in {None, 'relu', 'leaky_relu', 'sigmoid', 'tanh'} is applied inside the backend's
    fused ``linear_act`` primitive (one call forward, one backward).
    >>> F.linear(x, W, b, activation="relu")
    """
    _float_tensor(input, "linear")
    _float_tensor(weight, "linear", "weight")
    act = "none" if activation is None else activation
    if act not in ACTIVATIONS:
        raise ValueError(f"linear(): activation must be one of {ACTIVATIONS} or None, got {activation!r}")
    _check_same_backend(input, weight, "linear")
    if weight.ndim != 2:
        raise ValueError(f"linear(): weight must be 2-D (out_features, in_features), got shape {weight.shape}")
    if input.ndim < 1 or input.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear(): input's last dimension ({input.shape[-1] if input.ndim else 'none'}) "
            f"must equal in_features ({weight.shape[1]}); input shape {input.shape}, "
            f"weight shape {weight.shape}"
        )
    if bias is not None:
        _float_tensor(bias, "linear", "bias")
        _check_same_backend(input, bias, "linear")
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"linear(): bias must have shape ({weight.shape[0]},), got {bias.shape}")
    if act == "leaky_relu" and negative_slope <= 0:
        # the fused backward reads the derivative off the output, which needs a positive slope
        return leaky_relu(linear(input, weight, bias), negative_slope)
    if input.dtype != weight.dtype or (bias is not None and bias.dtype != weight.dtype):
        raise TypeError(
            f"linear(): input, weight and bias dtypes differ ({input.dtype}, {weight.dtype}"
            f"{'' if bias is None else ', ' + str(bias.dtype)})"
        )

    be = input._backend
    lead = input.shape[:-1]
    x2 = input._data.reshape(-1, weight.shape[1])  # (N, K)
    W, b = weight._data, None if bias is None else bias._data
    y = be.linear_act(x2, W, b, act, negative_slope)  # (N, M)

    def backward(g):
        dx, dW, db = be.linear_act_backward(
            g.reshape(y.shape),
            x2,
            W,
            y,
            act,
            negative_slope,
            need_dx=input.requires_grad,
            need_dW=weight.requires_grad,
            need_db=bias is not None and bias.requires_grad,
        )
        dx = None if dx is None else dx.reshape(input.shape)
        return (dx, dW) if bias is None else (dx, dW, db)

    parents = (input, weight) if bias is None else (input, weight, bias)
    saved = (input if weight.requires_grad else None, weight if input.requires_grad else None)
    return input._result(
        y.reshape(lead + (W.shape[0],)), parents, backward, "LinearActBackward", saved=saved, saves_output=act != "none"
    )


# ------------------------------------------------------------------------------------------------
# activations: relu, leaky_relu, sigmoid, tanh, softmax, log_softmax are gpunn.ops.pointwise's (one
# definition for F.*, Tensor methods and gpunn.*)
# ------------------------------------------------------------------------------------------------
def entropy(input, dim: int = -1) -> Tensor:  # noqa: A002
    """Shannon entropy H = -sum p log p (nats) of softmax(input) along ``dim``, from logits, stably."""
    logp = log_softmax(_float_tensor(input, "entropy"), dim)
    p = logp.exp()
    return -where(p > 0, p * where(p > 0, logp, 0.0), 0.0).sum(dim)  # 0 log 0 = 0: -inf logits are fine


def dropout(input, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:  # noqa: A002
    """Zero each element with probability ``p`` (the DROP probability) and scale the rest by 1/(1-p).

    Identity when ``training`` is False (evaluation). The mask comes from the backend's seeded RNG."""
    _float_tensor(input, "dropout")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout(): p (drop probability) must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return input
    if inplace:
        return input._inplace("dropout_", lambda t: dropout(t, p, training))
    be = input._backend
    if p == 1.0:
        zeros = be.xp.zeros(input.shape, dtype=input.dtype)
        return input._result(zeros, (input,), lambda g: (g * 0,), "DropoutBackward", saved=())
    out, apply_mask = be.dropout(input._data, p)
    return input._result(out, (input,), lambda g: (apply_mask(g),), "DropoutBackward", saved=())


# ------------------------------------------------------------------------------------------------
# convolution and pooling (NCHW): argument checks here, the arithmetic in the backend's primitives
# (conv2d_forward/backward, pool2d_forward/backward; the math is in gpunn.backend.reference)
# ------------------------------------------------------------------------------------------------
def _as_batched_4d(input: Tensor, fname: str):
    if input.ndim == 3:
        return input.unsqueeze(0), True
    if input.ndim != 4:
        raise ValueError(f"{fname}(): expected a 4-D input (N, C, H, W) or 3-D (C, H, W), got shape {input.shape}")
    return input, False


def _out_size(size: int, k: int, s: int, p: int, fname: str, what: str) -> int:
    out = (size + 2 * p - k) // s + 1
    if out < 1:
        raise ValueError(f"{fname}(): kernel size {k} is larger than the padded input {what} ({size} + 2*{p})")
    return out


def conv2d(
    input,
    weight,
    bias=None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    *,  # noqa: A002
    activation: str | None = None,
    negative_slope: float = 0.01,
) -> Tensor:
    """2-D cross-correlation.  x: (N, C, H, W), W: (OC, C, KH, KW), b: (OC,) -> (N, OC, OH, OW),
    OH = (H + 2 ph - KH) // sh + 1.  One call of the backend's ``conv2d_forward`` (im2col + one GEMM);
    ``activation`` (keyword only, as in ``linear``) is applied in the pass that lays out the GEMM output.
    ``dilation`` and ``groups`` are composed from this plain convolution (see _conv2d_dilated_grouped).
    >>> F.conv2d(x, W, b, padding=1, activation="relu")
    """
    _float_tensor(input, "conv2d")
    _float_tensor(weight, "conv2d", "weight")
    padding = _conv_padding(padding, weight.shape[-2:], stride, dilation, "conv2d")
    act = "none" if activation is None else activation
    if act not in ACTIVATIONS:
        raise ValueError(f"conv2d(): activation must be one of {ACTIVATIONS} or None, got {activation!r}")
    if act == "leaky_relu" and negative_slope <= 0:  # the backward reads the derivative off the output
        return leaky_relu(conv2d(input, weight, bias, stride, padding, dilation, groups), negative_slope)
    _check_same_backend(input, weight, "conv2d")
    if groups != 1 or _pair(dilation, "dilation", "conv2d") != (1, 1):
        out = _conv2d_dilated_grouped(input, weight, bias, stride, padding, dilation, groups)
        return (
            out
            if act == "none"
            else {
                "relu": relu,
                "sigmoid": sigmoid,
                "tanh": tanh,
                "leaky_relu": lambda t: leaky_relu(t, negative_slope),
            }[act](out)
        )
    x_t, unbatched = _as_batched_4d(input, "conv2d")
    if weight.ndim != 4:
        raise ValueError(f"conv2d(): weight must be 4-D (out_channels, in_channels, kH, kW), got {weight.shape}")
    n, c, h, w = x_t.shape
    oc, wc, kh, kw = weight.shape
    if wc != c:
        raise ValueError(
            f"conv2d(): input has {c} channels but weight expects {wc} "
            f"(input shape {input.shape}, weight shape {weight.shape})"
        )
    if input.dtype != weight.dtype:
        raise TypeError(f"conv2d(): input dtype {input.dtype} and weight dtype {weight.dtype} differ")
    if bias is not None:
        _float_tensor(bias, "conv2d", "bias")
        _check_same_backend(input, bias, "conv2d")
        if bias.dtype != weight.dtype:
            raise TypeError(f"conv2d(): bias dtype {bias.dtype} and weight dtype {weight.dtype} differ")
        if bias.shape != (oc,):
            raise ValueError(f"conv2d(): bias must have shape ({oc},), got {bias.shape}")
    sh, sw = _pair(stride, "stride", "conv2d")
    ph, pw = _pair(padding, "padding", "conv2d")
    if sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise ValueError(f"conv2d(): stride must be >= 1 and padding >= 0, got stride {stride}, padding {padding}")
    _out_size(h, kh, sh, ph, "conv2d", "height")
    _out_size(w, kw, sw, pw, "conv2d", "width")
    parents = (input, weight) if bias is None else (input, weight, bias)
    be = input._backend
    need_grad = is_grad_enabled() and any(t.requires_grad for t in parents)
    out, saved = be.conv2d_forward(
        x_t._data,
        weight._data,
        None if bias is None else bias._data,
        (sh, sw),
        (ph, pw),
        act,
        negative_slope,
        need_grad=need_grad,
    )

    def backward(g):
        dx, dW, db = be.conv2d_backward(
            g[None] if unbatched else g,
            saved,
            need_dx=input.requires_grad,
            need_dW=weight.requires_grad,
            need_db=bias is not None and bias.requires_grad,
        )
        if dx is not None and unbatched:
            dx = dx[0]
        return (dx, dW) if bias is None else (dx, dW, db)

    return input._result(out[0] if unbatched else out, parents, backward, "ConvolutionBackward")


def _pool_geometry(x_t, kernel_size, stride, padding, fname: str, ceil_mode: bool = False) -> tuple:
    """(kh, kw, sh, sw, ph, pw, oh, ow) of a pooling over the batched input ``x_t``, checked (with ceil_mode,
    PyTorch's ceil output size, which may be >= 1 for a kernel larger than the padded input)."""
    kh, kw = _pair(kernel_size, "kernel_size", fname)
    sh, sw = _pair(stride if stride is not None and stride != [] else (kh, kw), "stride", fname)
    ph, pw = _pair(padding, "padding", fname)
    if kh < 1 or kw < 1 or sh < 1 or sw < 1:
        raise ValueError(f"{fname}(): kernel_size and stride must be >= 1, got {kernel_size}, {stride}")
    if ph < 0 or pw < 0 or ph > kh // 2 or pw > kw // 2:
        raise ValueError(
            f"{fname}(): padding must be >= 0 and at most half the kernel size, got padding "
            f"{padding} for kernel_size {kernel_size}"
        )
    _, _, h, w = x_t.shape
    if ceil_mode:
        oh, ow = _ceil_out(h, kh, sh, ph), _ceil_out(w, kw, sw, pw)
        if oh < 1 or ow < 1:
            raise ValueError(
                f"{fname}(): output size {oh}x{ow} is too small (input {h}x{w}, kernel_size {(kh, kw)}, "
                f"stride {(sh, sw)}, padding {(ph, pw)}, ceil_mode=True)"
            )
        return kh, kw, sh, sw, ph, pw, oh, ow
    return kh, kw, sh, sw, ph, pw, _out_size(h, kh, sh, ph, fname, "height"), _out_size(w, kw, sw, pw, fname, "width")


def _pool2d(
    input,
    mode: str,
    kernel_size,
    stride,
    padding,
    count_include_pad: bool,
    fname: str,  # noqa: A002
    node: str,
) -> Tensor:
    _float_tensor(input, fname)
    x_t, unbatched = _as_batched_4d(input, fname)
    kh, kw, sh, sw, ph, pw, _, _ = _pool_geometry(x_t, kernel_size, stride, padding, fname)
    be = input._backend
    out, saved = be.pool2d_forward(
        x_t._data,
        mode,
        (kh, kw),
        (sh, sw),
        (ph, pw),
        count_include_pad,
        need_grad=is_grad_enabled() and input.requires_grad,
    )

    def backward(g):
        dx = be.pool2d_backward(g[None] if unbatched else g, saved)
        return (dx[0] if unbatched else dx,)

    return input._result(out[0] if unbatched else out, (input,), backward, node)


def max_pool2d(
    input,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode: bool = False,  # noqa: A002
    return_indices: bool = False,
) -> Tensor:
    """Max over each window (stride defaults to kernel_size; padding at most half the kernel).
    ``ceil_mode`` (PyTorch's last partial windows) is composed from this plain pooling (_pool_ceil_mode).

    As PyTorch on the CPU: the value and gradient of a window go to its first maximal element, or to its
    last NaN when it holds NaNs (the output is then NaN)."""
    _float_tensor(input, "max_pool2d")
    _pool_unsupported("max_pool2d", dilation, return_indices)
    if ceil_mode:
        return _pool_ceil_mode(max_pool2d, input, kernel_size, stride, padding, "max_pool2d")
    return _pool2d(input, "max", kernel_size, stride, padding, True, "max_pool2d", "MaxPool2DBackward")


def avg_pool2d(
    input,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode: bool = False,  # noqa: A002
    count_include_pad: bool = True,
    divisor_override=None,
) -> Tensor:
    """Mean over each window (zero padding counted in the divisor unless count_include_pad=False).
    ``ceil_mode`` (PyTorch's last partial windows) is composed from this plain pooling (_pool_ceil_mode)."""
    _float_tensor(input, "avg_pool2d")
    if divisor_override is not None:
        raise NotImplementedError("avg_pool2d(): divisor_override is not supported")
    if ceil_mode:
        return _pool_ceil_mode(avg_pool2d, input, kernel_size, stride, padding, "avg_pool2d", count_include_pad)
    return _pool2d(input, "avg", kernel_size, stride, padding, count_include_pad, "avg_pool2d", "AvgPool2DBackward")


# ------------------------------------------------------------------------------------------------
# conv dilation/groups and pool ceil_mode, composed from the plain ops above (so they work on every
# backend, kernels or not): a dilated kernel is the kernel with zeros between its taps; a grouped conv
# is one conv per group of channels; ceil_mode pads the bottom/right edge so the last partial window exists
# ------------------------------------------------------------------------------------------------
def _dilate_kernel(weight: Tensor, dh: int, dw: int) -> Tensor:
    """(OC, C, KH, KW) -> (OC, C, (KH-1) dh + 1, (KW-1) dw + 1) with the taps at multiples of the dilation
    and zeros between; backward reads the gradient back at the taps."""
    xp = weight._backend.xp
    oc, c, kh, kw = weight.shape
    out = xp.zeros((oc, c, (kh - 1) * dh + 1, (kw - 1) * dw + 1), dtype=weight.dtype)
    out[:, :, ::dh, ::dw] = weight._data
    return weight._result(
        out, (weight,), lambda g: (xp.ascontiguousarray(g[:, :, ::dh, ::dw]),), "DilateBackward", saved=()
    )


def _conv2d_dilated_grouped(input, weight, bias, stride, padding, dilation, groups) -> Tensor:  # noqa: A002
    """conv2d with ``dilation`` (h, w) >= 1 and ``groups`` dividing both channel counts: input channels
    [g C/G, (g+1) C/G) meet weight rows [g OC/G, (g+1) OC/G), whose second axis is C/G."""
    dh, dw = _pair(dilation, "dilation", "conv2d")
    if dh < 1 or dw < 1:
        raise ValueError(f"conv2d(): dilation must be >= 1, got {dilation}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"conv2d(): groups must be a positive int, got {groups!r}")
    if weight.ndim != 4 or input.ndim not in (3, 4):
        raise ValueError(
            f"conv2d(): expected a 3-D or 4-D input and a 4-D weight, got {input.shape} and {weight.shape}"
        )
    c, oc, wc = input.shape[-3], weight.shape[0], weight.shape[1]
    if c % groups or oc % groups:
        raise ValueError(
            f"conv2d(): groups={groups} must divide the input channels ({c}) and the output channels ({oc})"
        )
    if wc * groups != c:
        raise ValueError(
            f"conv2d(): input has {c} channels but weight {weight.shape} with groups={groups} expects {wc * groups}"
        )
    w_eff = _dilate_kernel(weight, dh, dw) if (dh, dw) != (1, 1) else weight
    if groups == 1:
        return conv2d(input, w_eff, bias, stride, padding)
    og = oc // groups
    outs = [
        conv2d(
            input[..., g * wc : (g + 1) * wc, :, :],
            w_eff[g * og : (g + 1) * og],
            None if bias is None else bias[g * og : (g + 1) * og],
            stride,
            padding,
        )
        for g in range(groups)
    ]
    return cat(outs, dim=-3)


def _pad_bottom_right(x: Tensor, eh: int, ew: int, value: float) -> Tensor:
    """x (..., H, W) with ``eh`` rows and ``ew`` columns of ``value`` added at the bottom and right."""
    xp = x._backend.xp
    h, w = x.shape[-2:]
    out = xp.full(x.shape[:-2] + (h + eh, w + ew), value, dtype=x.dtype)
    out[..., :h, :w] = x._data
    return x._result(out, (x,), lambda g: (xp.ascontiguousarray(g[..., :h, :w]),), "ConstantPadNdBackward0", saved=())


def _ceil_out(size: int, k: int, s: int, p: int) -> int:
    """PyTorch's ceil_mode output size: ceil((size + 2p - k) / s) + 1, less one if the last window would
    start in the right padding."""
    out = -(-(size + 2 * p - k) // s) + 1
    if (out - 1) * s >= size + p:
        out -= 1
    return out


def _pool_unsupported(fname: str, dilation, return_indices) -> None:
    if _pair(dilation, "dilation", fname) != (1, 1):
        raise NotImplementedError(f"{fname}(): dilation other than 1 is not supported")
    if return_indices:
        raise NotImplementedError(f"{fname}(): return_indices=True is not supported")


def _pool_ceil_mode(pool, input, kernel_size, stride, padding, fname, count_include_pad=True) -> Tensor:  # noqa: A002
    """``pool`` (max_pool2d or avg_pool2d) with ceil_mode: the input padded at the bottom/right (-inf for max,
    0 for avg) until the last partial window fits, then the plain pool; avg's divisor counts, as PyTorch's
    does, the window's cells inside the padded input (count_include_pad) or inside the input."""
    x_t, _ = _as_batched_4d(input, fname)
    kh, kw, sh, sw, ph, pw, oh, ow = _pool_geometry(x_t, kernel_size, stride, padding, fname, ceil_mode=True)
    h, w = x_t.shape[2:]
    eh, ew = max(0, (oh - 1) * sh + kh - (h + 2 * ph)), max(0, (ow - 1) * sw + kw - (w + 2 * pw))
    is_max = pool is max_pool2d
    x_ext = _pad_bottom_right(input, eh, ew, -math.inf if is_max else 0.0)
    if is_max:
        return pool(x_ext, (kh, kw), (sh, sw), (ph, pw))
    out = pool(x_ext, (kh, kw), (sh, sw), (ph, pw), count_include_pad=True)  # sum / (kh kw)

    def counts(size, k, s, p, n_out, include_pad):  # per output index: the cells PyTorch divides by
        start = np.arange(n_out) * s - p
        end = np.minimum(start + k, size + p)
        if include_pad:
            return end - start
        return np.minimum(end, size) - np.maximum(start, 0)

    div = np.outer(counts(h, kh, sh, ph, oh, count_include_pad), counts(w, kw, sw, pw, ow, count_include_pad))
    scale = Tensor._wrap(x_t._backend.asarray((kh * kw / div).astype(x_t.dtype)), x_t._backend)
    return out * scale


# ------------------------------------------------------------------------------------------------
# losses
# ------------------------------------------------------------------------------------------------
def _class_targets(input: Tensor, target, fname: str):
    """Validate (input, class-index target) and return (logits2d array, target1d array, move-back info).

    input: (N, C) or (N, C, d1, ...) or (C,);  target: (N,) or (N, d1, ...) or ()."""
    _float_tensor(input, fname)
    if not isinstance(target, Tensor):
        target = Tensor._wrap(input._backend.asarray(target), input._backend)
    _check_same_backend(input, target, fname)
    if target.dtype.kind not in "iu":
        raise TypeError(
            f"{fname}(): target must be an integer tensor of class indices (int64), got dtype "
            f"{target.dtype}; convert labels with .long() (probability targets are not supported)"
        )
    if input.ndim == 0:
        raise ValueError(f"{fname}(): input must have a class dimension, got a 0-d tensor")
    if input.ndim == 1:
        expected = ()
    else:
        expected = (input.shape[0],) + input.shape[2:]
    if target.shape != expected:
        raise ValueError(
            f"{fname}(): target shape {target.shape} does not match input shape {input.shape} "
            f"(expected target shape {expected})"
        )
    xp = input._backend.xp
    c = input.shape[1] if input.ndim > 1 else input.shape[0]
    if input.ndim == 1:
        logits = input._data.reshape(1, c)
    elif input.ndim == 2:
        logits = input._data
    else:
        logits = xp.ascontiguousarray(xp.moveaxis(input._data, 1, -1)).reshape(-1, c)
    return logits, target._data.reshape(-1).astype(xp.int64, copy=False), c


def _restore_class_axis(xp, d2, input: Tensor):
    if input.ndim == 1:
        return d2.reshape(input.shape)
    if input.ndim == 2:
        return d2
    moved = d2.reshape((input.shape[0],) + input.shape[2:] + (input.shape[1],))
    return xp.moveaxis(moved, -1, 1)


def _check_labels(xp, t, c: int, ignore_index: int, fname: str) -> None:
    bad = (t != ignore_index) & ((t < 0) | (t >= c))
    if bool(bad.any()):
        first = int(t[bad][0])
        raise ValueError(
            f"{fname}(): target label {first} is out of range for {c} classes "
            f"(labels must be in [0, {c - 1}] or equal ignore_index={ignore_index})"
        )


def _class_weight(input: Tensor, weight, c: int, fname: str):
    if weight is None:
        return None
    if not isinstance(weight, Tensor):
        weight = Tensor._wrap(input._backend.asarray(weight, dtype=input.dtype), input._backend)
    _check_same_backend(input, weight, fname)
    if weight.shape != (c,):
        raise ValueError(f"{fname}(): weight must have shape ({c},) (one per class), got {weight.shape}")
    return weight._data.astype(input.dtype, copy=False)


def cross_entropy(
    input,
    target,
    weight=None,
    size_average=None,
    ignore_index: int = -100,
    reduce=None,
    reduction: str = "mean",  # noqa: A002
    label_smoothing: float = 0.0,
) -> Tensor:
    """Softmax cross-entropy on class indices, through the backend's fused primitive.

    input: (N, C) logits (or (N, C, d1, ...), or (C,)); target: (N,) int64 class indices.
    loss_i = -(1 - eps) w[y_i] log softmax(x_i)[y_i] - eps/C sum_c w[c] log softmax(x_i)[c].
    Non-finite logits give a NaN loss (documented, as in PyTorch); out-of-range labels raise ValueError
    (on the cupy backend at the next host read, e.g. ``loss.item()``, as PyTorch's CUDA errors surface).
    """
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, "cross_entropy")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy(): label_smoothing must be in [0, 1], got {label_smoothing}")
    logits, t, c = _class_targets(input, target, "cross_entropy")
    be = input._backend
    w = _class_weight(input, weight, c, "cross_entropy")
    # The primitive checks the labels: here on the CPU; on the GPU through the kernel's error flag, which
    # raises at the next host read of the loss (no sync here). backward(g) folds g into dlogits.
    try:
        loss, dlogits_times = be.softmax_cross_entropy_fwd(logits, t, w, reduction, ignore_index, label_smoothing)
    except ValueError as exc:
        raise ValueError(f"cross_entropy(): {exc}") from None
    if reduction == "none":
        loss = (
            loss.reshape(target.shape if isinstance(target, Tensor) else t.shape)
            if input.ndim > 1
            else loss.reshape(())
        )

    def backward(g):
        return (_restore_class_axis(be.xp, dlogits_times(g), input),)

    return input._result(loss, (input,), backward, "CrossEntropyBackward", saved=())


def nll_loss(input, target, weight=None, size_average=None, ignore_index: int = -100, reduce=None,  # noqa: A002
             reduction: str = "mean") -> Tensor:  # fmt: skip
    """Negative log-likelihood: loss_i = -w[y_i] * input[i, y_i] (input holds log-probabilities);
    'mean' divides by the sum of the weights of the non-ignored targets."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, "nll_loss")
    logp, t, c = _class_targets(input, target, "nll_loss")
    be = input._backend
    xp = be.xp
    _check_labels(xp, t, c, ignore_index, "nll_loss")
    w = _class_weight(input, weight, c, "nll_loss")
    valid = t != ignore_index
    safe = xp.where(valid, t, 0)
    rows = xp.arange(t.shape[0])
    w_row = (w[safe] if w is not None else xp.ones(t.shape[0], dtype=logp.dtype)) * valid
    per_row = -w_row * logp[rows, safe]
    if reduction == "none":
        loss = per_row.reshape(target.shape if input.ndim > 1 else ())
        scale = None
    elif reduction == "sum":
        loss, scale = per_row.sum(), 1.0
    else:
        denom = w_row.sum()
        if float(denom) != 0:
            loss, scale = per_row.sum() / denom, 1.0 / denom
        else:  # 0 / 0: NaN loss; zero gradient with no valid row (as PyTorch), else NaN
            loss, scale = math.nan, (math.nan if bool(valid.any()) else 0.0)

    def backward(g):
        d = xp.zeros(logp.shape, dtype=logp.dtype)
        coef = -w_row * (g.reshape(-1) if scale is None else g * logp.dtype.type(scale))
        d[rows, safe] = coef.astype(logp.dtype, copy=False)
        return (_restore_class_axis(xp, d, input),)

    return input._result(xp.asarray(loss, dtype=logp.dtype), (input,), backward, "NllLossBackward", saved=())


def _weighted_reduce(loss: Tensor, weight, reduction: str, fname: str, normalize: bool) -> Tensor:
    """A pointwise regression loss times a per-element ``weight`` (input's shape), reduced as PyTorch: 'mean' is
    sum(w loss) / sum(w) for MSE and L1 (``normalize``), mean(w loss) for Huber."""
    if weight is None:
        return _reduce(loss, reduction)
    if not isinstance(weight, Tensor):
        weight = _target_like(loss, weight, fname)
    if weight.shape != loss.shape:
        raise ValueError(f"{fname}(): weight shape {weight.shape} must match the input's {loss.shape}")
    weighted = loss * weight
    if reduction == "mean" and normalize:
        return weighted.sum() / weight.sum()
    return _reduce(weighted, reduction)


def mse_loss(input, target, size_average=None, reduce=None, reduction: str = "mean", weight=None) -> Tensor:  # noqa: A002
    """mean((input - target)^2); with ``weight`` (input's shape) 'mean' is sum(w d^2) / sum(w)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, "mse_loss")
    _float_tensor(input, "mse_loss")
    target = _target_like(input, target, "mse_loss")
    _broadcast_target(input, target)
    diff = input - target
    return _weighted_reduce(diff * diff, weight, reduction, "mse_loss", normalize=True)


def l1_loss(input, target, size_average=None, reduce=None, reduction: str = "mean", weight=None) -> Tensor:  # noqa: A002
    """mean(|input - target|); with ``weight`` (input's shape) 'mean' is sum(w |d|) / sum(w)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, "l1_loss")
    _float_tensor(input, "l1_loss")
    target = _target_like(input, target, "l1_loss")
    _broadcast_target(input, target)
    return _weighted_reduce((input - target).abs(), weight, reduction, "l1_loss", normalize=True)


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None,  # noqa: A002
                         reduction: str = "mean") -> Tensor:  # fmt: skip
    """-w [y log x + (1 - y) log(1 - x)], logs clamped at -100 as in PyTorch; input must be in [0, 1]."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, "binary_cross_entropy")
    _float_tensor(input, "binary_cross_entropy")
    target = _target_like(input, target, "binary_cross_entropy")
    _same_shape(input, target, "binary_cross_entropy")
    xp = input._backend.xp
    x, y = input._data, target._data
    if bool(((x < 0) | (x > 1)).any()):
        raise ValueError(
            "binary_cross_entropy(): all elements of input must be probabilities in [0, 1] "
            "(use binary_cross_entropy_with_logits for raw scores)"
        )
    w = None if weight is None else _target_like(input, weight, "binary_cross_entropy")._data
    with np.errstate(divide="ignore"):
        log_x = xp.maximum(xp.log(x), -100)
        log_1mx = xp.maximum(xp.log1p(-x), -100)
    loss = -(y * log_x + (1 - y) * log_1mx)
    if w is not None:
        loss = loss * w

    def backward(g):
        gx = gy = None
        wg = g if w is None else g * w
        if input.requires_grad:
            gx = wg * (x - y) / xp.maximum((1 - x) * x, x.dtype.type(1e-12))
        if target.requires_grad:
            gy = wg * (log_1mx - log_x)
        return gx, gy

    out = input._result(loss.astype(x.dtype, copy=False), (input, target), backward, "BinaryCrossEntropyBackward")
    return _reduce(out, reduction)


def binary_cross_entropy_with_logits(
    input,
    target,
    weight=None,
    size_average=None,
    reduce=None,
    reduction: str = "mean",  # noqa: A002
    pos_weight=None,
) -> Tensor:
    """BCE on logits, stably: (1 - y) x + (1 + (pw - 1) y) * log(1 + exp(-x)), times weight."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, "binary_cross_entropy_with_logits")
    _float_tensor(input, "binary_cross_entropy_with_logits")
    fname = "binary_cross_entropy_with_logits"
    target = _target_like(input, target, fname)
    _same_shape(input, target, fname)
    xp = input._backend.xp
    x, y = input._data, target._data
    w = None if weight is None else _target_like(input, weight, fname)._data
    pw = None if pos_weight is None else _target_like(input, pos_weight, fname)._data
    softplus_neg = xp.log1p(xp.exp(-xp.abs(x))) + xp.maximum(-x, 0)  # log(1 + exp(-x)), no overflow
    coef = 1 + (pw - 1) * y if pw is not None else 1
    loss = (1 - y) * x + coef * softplus_neg
    if w is not None:
        loss = loss * w

    def backward(g):
        wg = g if w is None else g * w
        gx = gy = None
        if input.requires_grad:
            sig_neg = xp.exp(-softplus_neg)  # sigmoid(x) = exp(-log(1+exp(-x)))
            gx = wg * ((1 - y) - coef * (1 - sig_neg))
            gx = _unbroadcast(gx, x.shape)
        if target.requires_grad:
            gy = wg * (-x + ((pw - 1) * softplus_neg if pw is not None else 0))
            gy = _unbroadcast(gy, y.shape)
        return gx, gy

    out = input._result(xp.asarray(loss, dtype=x.dtype), (input, target), backward, "BCEWithLogitsBackward")
    return _reduce(out, reduction)


def multi_margin_loss(
    input,
    target,
    p: int = 1,
    margin: float = 1.0,
    weight=None,  # noqa: A002
    size_average=None,
    reduce=None,
    reduction: str = "mean",
) -> Tensor:
    """Multiclass hinge (SVM) loss: loss_i = sum_{j != y} w[y] max(0, margin - x[y] + x[j])^p / C."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, "multi_margin_loss")
    if p not in (1, 2):
        raise ValueError(f"multi_margin_loss(): only p == 1 and p == 2 are supported, got p={p}")
    if input.ndim not in (1, 2):
        raise ValueError(f"multi_margin_loss(): input must be (N, C) or (C,), got shape {input.shape}")
    x2, t, c = _class_targets(input, target, "multi_margin_loss")
    xp = input._backend.xp
    _check_labels(xp, t, c, -(10**18), "multi_margin_loss")
    w = _class_weight(input, weight, c, "multi_margin_loss")
    rows = xp.arange(t.shape[0])
    m = margin - x2[rows, t][:, None] + x2  # (N, C)
    m[rows, t] = 0  # the true class does not count
    h = xp.maximum(m, 0)
    w_row = w[t] if w is not None else xp.ones(t.shape[0], dtype=x2.dtype)
    per_row = (h**p).sum(axis=1) / c * w_row
    if reduction == "none":
        loss = per_row.reshape(input.shape[:-1])
    else:
        loss = per_row.sum() if reduction == "sum" else per_row.mean()

    def backward(g):
        gr = g.reshape(-1) if reduction == "none" else (g if reduction == "sum" else g / t.shape[0])
        dh = (p * h ** (p - 1) if p > 1 else (m > 0).astype(x2.dtype)) * (m > 0)
        d = dh * (w_row * gr / c)[:, None]
        d[rows, t] = 0
        d[rows, t] = -d.sum(axis=1)
        return (d.reshape(input.shape).astype(x2.dtype, copy=False),)

    return input._result(xp.asarray(loss, dtype=x2.dtype), (input,), backward, "MultiMarginLossBackward", saved=())


def kl_div(input, target, size_average=None, reduce=None, reduction: str = "mean",  # noqa: A002
           log_target: bool = False) -> Tensor:  # fmt: skip
    """KL(target || q) with input = log q: sum target * (log target - input).

    reduction 'batchmean' divides by the batch size (the mathematical KL); 'mean' by the element count."""
    legacy = size_average is not None or reduce is not None
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, "kl_div", REDUCTIONS + ("batchmean",))
    _float_tensor(input, "kl_div")
    target = _target_like(input, target, "kl_div")
    _broadcast_target(input, target, warn=False)
    if reduction == "mean" and not legacy:  # PyTorch warns only when 'mean' is asked for by name
        warnings.warn(
            "kl_div(): reduction='mean' divides the sum by the number of elements; reduction='batchmean' divides "
            "it by the batch size, which is the KL divergence (PyTorch warns alike)",
            UserWarning,
            stacklevel=2,
        )
    if log_target:
        pointwise = target.exp() * (target - input)
    else:
        safe = where(target > 0, target, 1.0)  # xlogy: 0 * log 0 = 0
        pointwise = target * safe.log() - target * input
    if reduction == "batchmean":
        return pointwise.sum() / (input.shape[0] if input.ndim else 1)
    return _reduce(pointwise, reduction)


# ------------------------------------------------------------------------------------------------
# batch normalization, channel dropout, adaptive average pooling (issue 10)
# ------------------------------------------------------------------------------------------------
def batch_norm(
    input,
    running_mean,
    running_var,
    weight=None,
    bias=None,
    training: bool = False,  # noqa: A002
    momentum: float | None = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """y = (x - mean) / sqrt(var + eps) * weight + bias per channel (axis 1) of x (N, C, *).

    ``training``: mean and biased var of this batch (over every axis but 1), and the running stats (if
    given) move toward them in place: ``r = (1 - momentum) r + momentum * batch`` with the unbiased var
    (``nn.BatchNorm*`` with ``momentum=None`` passes 1 / num_batches_tracked: a cumulative average).
    Otherwise the running stats normalize. Backward: dx = inv_std / M * (M dxhat - sum dxhat - xhat sum(dxhat xhat))."""
    x_t = _float_tensor(input, "batch_norm")
    if x_t.ndim < 2:
        raise ValueError(f"batch_norm: expected an input of at least 2 dimensions (N, C, ...), got shape {x_t.shape}")
    c = x_t.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight), ("bias", bias)):
        if t is not None:
            _check_same_backend(x_t, _tensor(t, "batch_norm", name), "batch_norm")
            if t.shape != (c,):
                raise ValueError(
                    f"batch_norm: {name} must have shape ({c},) for an input with {c} channels, got {t.shape}"
                )
    xp = x_t._backend.xp
    x = x_t._data
    axes = (0,) + tuple(range(2, x.ndim))
    bshape = (1, c) + (1,) * (x.ndim - 2)
    m = x.size // c if c else 0
    if training:
        if m <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {x_t.shape}")
        mean = x.mean(axis=axes, dtype=xp.float64 if x.dtype == np.float16 else None)
        var = ((x - mean.reshape(bshape).astype(x.dtype)) ** 2).mean(axis=axes)
        if running_mean is not None and running_var is not None:
            if momentum is None:
                raise ValueError(
                    "batch_norm: momentum must be a number (nn.BatchNorm's momentum=None passes "
                    "the cumulative-average factor 1 / num_batches_tracked)"
                )
            f = float(momentum)
            rm, rv = running_mean._data, running_var._data
            rm[...] = (1 - f) * rm + f * mean.astype(rm.dtype)
            rv[...] = (1 - f) * rv + f * (var * (m / (m - 1))).astype(rv.dtype)
            running_mean._bump_version("batch_norm")
            running_var._bump_version("batch_norm")
        mean, var = mean.astype(x.dtype, copy=False), var.astype(x.dtype, copy=False)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm: running_mean and running_var are needed when training=False")
        mean, var = running_mean._data.astype(x.dtype), running_var._data.astype(x.dtype)
    inv_std = 1 / xp.sqrt(var + x.dtype.type(eps))
    xhat = (x - mean.reshape(bshape)) * inv_std.reshape(bshape)
    out = xhat
    if weight is not None:
        out = out * weight._data.reshape(bshape)
    if bias is not None:
        out = out + bias._data.reshape(bshape)
    parents = tuple(t for t in (x_t, weight, bias) if t is not None)

    def backward(g):
        dxhat = g * weight._data.reshape(bshape) if weight is not None else g
        if training:
            s1 = dxhat.sum(axis=axes).reshape(bshape)
            s2 = (dxhat * xhat).sum(axis=axes).reshape(bshape)
            dx = inv_std.reshape(bshape) / m * (m * dxhat - s1 - xhat * s2)
        else:
            dx = dxhat * inv_std.reshape(bshape)
        grads = [dx]
        if weight is not None:
            grads.append((g * xhat).sum(axis=axes))
        if bias is not None:
            grads.append(g.sum(axis=axes))
        return tuple(grads)

    return x_t._result(
        out.astype(x.dtype, copy=False),
        parents,
        backward,
        "NativeBatchNormBackward0",
        saved=tuple(t for t in (x_t, weight) if t is not None),
    )


def dropout2d(input, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:  # noqa: A002
    """Zero whole channels with probability ``p`` and scale the rest by 1/(1-p), as PyTorch's feature dropout:
    one draw per (sample, channel) of the first two dims, x (N, C, H, W) times a mask (N, C, 1, 1). Like
    PyTorch, a 3-D input is (N, C, L) (a warning says so: not an unbatched (C, H, W) sample), and another
    number of dims warns and is dropped by its first two dims too. Identity in eval."""
    x_t = _float_tensor(input, "dropout2d")
    if isinstance(p, bool) or not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout2d(): p (drop probability) must be in [0, 1], got {p}")
    if x_t.ndim not in (3, 4):
        warnings.warn(
            f"dropout2d(): a {x_t.ndim}-D input; dropout2d drops channels of (N, C, H, W) or (N, C, L) inputs, "
            "and PyTorch deprecates other shapes (use dropout for elementwise dropout)",
            UserWarning,
            stacklevel=2,
        )
    if x_t.ndim < 2:
        raise RuntimeError("dropout2d(): feature dropout needs an input of at least 2 dimensions")
    if x_t.ndim == 3:
        warnings.warn(
            "dropout2d(): a 3-D input is taken as (N, C, L), one draw per sample and channel, as PyTorch "
            "does; for an unbatched (C, H, W) image, unsqueeze(0) first",
            UserWarning,
            stacklevel=2,
        )
    if not training or p == 0.0:
        return x_t
    if inplace:  # (the checks and warnings above, once)
        return x_t._inplace("dropout2d_", _feature_dropout, p)
    return _feature_dropout(x_t, p)


def _feature_dropout(x_t: Tensor, p: float) -> Tensor:
    """x times a mask of one draw per entry of the first two dims (0 < p <= 1, training)."""
    be = x_t._backend
    mshape = x_t.shape[:2] + (1,) * (x_t.ndim - 2)
    if p == 1.0:
        mask = be.xp.zeros(mshape, dtype=x_t.dtype)
    else:
        u = be.rand(mshape, np.float32 if x_t.dtype.itemsize < 4 else x_t.dtype)
        mask = (u >= u.dtype.type(p)).astype(x_t.dtype) * x_t.dtype.type(1.0 / (1.0 - p))
    out = x_t._data * mask
    return x_t._result(out, (x_t,), lambda g: (g * mask,), "MulBackward0", saved=())


def _adaptive_matrix(xp, size: int, out: int, dtype):
    """(out, size) averaging matrix: row i averages x[floor(i size / out) : ceil((i + 1) size / out)]."""
    a = np.zeros((out, size), dtype=np.float64)
    for i in range(out):
        lo, hi = (i * size) // out, -((-(i + 1) * size) // out)
        a[i, lo:hi] = 1.0 / (hi - lo)
    return xp.asarray(a.astype(dtype))


def adaptive_avg_pool2d(input, output_size) -> Tensor:  # noqa: A002
    """Average over PyTorch's adaptive windows: output cell (i, j) averages rows floor(i H / OH) to
    ceil((i + 1) H / OH) and the same for columns. x (N, C, H, W) or (C, H, W) -> (..., OH, OW);
    ``output_size`` an int or a pair, None keeping that input size. Computed as A_h @ x @ A_w^T."""
    x_t = _float_tensor(input, "adaptive_avg_pool2d")
    if x_t.ndim not in (3, 4):
        raise ValueError(f"adaptive_avg_pool2d: expected a 3-D or 4-D input, got shape {x_t.shape}")
    h, w = x_t.shape[-2:]
    if isinstance(output_size, int) and not isinstance(output_size, bool):
        output_size = (output_size, output_size)
    output_size = tuple(output_size)
    if len(output_size) != 2:
        raise ValueError(f"adaptive_avg_pool2d: output_size must be an int or a pair, got {output_size}")
    oh, ow = (size if o is None else o for o, size in zip(output_size, (h, w)))
    if (
        isinstance(oh, bool)
        or isinstance(ow, bool)
        or not isinstance(oh, int)
        or not isinstance(ow, int)
        or oh < 1
        or ow < 1
    ):
        raise ValueError(f"adaptive_avg_pool2d: output_size must be positive ints (or None), got {output_size}")
    if h == 0 or w == 0:
        raise ValueError(f"adaptive_avg_pool2d: the input's spatial size must be non-empty, got shape {x_t.shape}")
    xp = x_t._backend.xp
    ah, aw = _adaptive_matrix(xp, h, oh, x_t.dtype), _adaptive_matrix(xp, w, ow, x_t.dtype)
    out = ah @ x_t._data @ aw.T

    def backward(g):
        return (ah.T @ g @ aw,)

    return x_t._result(out, (x_t,), backward, "AdaptiveAvgPool2DBackward0", saved=())


__all__ += ["batch_norm", "dropout2d", "adaptive_avg_pool2d", "elu", "gelu", "softplus"]


def one_hot(input, num_classes: int = -1) -> Tensor:  # noqa: A002
    """int64 ``(*input.shape, num_classes)`` with a 1 at each class index; ``num_classes=-1``: max + 1."""
    if not isinstance(input, Tensor):
        raise TypeError(f"one_hot(): argument 'input' must be a gpunn Tensor, got {type(input).__name__}")
    if input.dtype != np.int64:
        raise RuntimeError(f"one_hot is only applicable to index tensor of type int64, got {input.dtype}")
    xp, t = input._backend.xp, input._data
    if not isinstance(num_classes, (int, np.integer)) or num_classes < -1:
        raise RuntimeError(f"one_hot: num_classes must be a non-negative int or -1, got {num_classes!r}")
    if t.size == 0 and num_classes <= 0:  # PyTorch's check, num_classes=0 included
        raise RuntimeError("Can not infer total number of classes from empty input.")
    if num_classes == -1:
        num_classes = int(t.max()) + 1
    if t.size:
        lo, hi = int(t.min()), int(t.max())
        if lo < 0:
            raise RuntimeError(f"Class values must be non-negative (one_hot got {lo})")
        if hi >= num_classes:
            raise RuntimeError(f"Class values must be smaller than num_classes ({hi} >= {num_classes})")
    out = (t[..., None] == xp.arange(int(num_classes))).astype(np.int64)
    return Tensor._wrap(out, input._backend)


__all__ += ["silu", "one_hot"]
__all__ += ["hardtanh", "relu6", "selu", "celu", "mish", "hardswish", "hardsigmoid", "softshrink", "hardshrink"]
__all__ += ["threshold", "logsigmoid", "softsign", "tanhshrink", "softmin", "glu", "prelu"]


def embedding(
    input,  # noqa: A002
    weight,
    padding_idx: int | None = None,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
) -> Tensor:
    """Rows of ``weight`` (V, D) picked by the integer tensor ``input`` (any shape S) -> (*S, D). The gradient
    adds each output row's gradient into its row of W (repeated indices accumulate; divided by the index's
    count in the batch with ``scale_grad_by_freq``); the ``padding_idx`` row gets none.
    >>> F.embedding(gpunn.tensor([[1, 2], [0, 1]]), W)  # (2, 2, D)"""
    _tensor(input, "embedding")
    _tensor(weight, "embedding", "weight")
    _check_same_backend(input, weight, "embedding")
    if input.dtype.kind not in "iu" or input.dtype == np.uint8:
        raise RuntimeError(
            "Expected tensor for argument #1 'indices' to have one of the following scalar types: Long, Int; "
            f"but got {input.dtype} instead (call .long() on the indices)"
        )
    if weight.ndim != 2:
        raise RuntimeError(f"embedding(): 'weight' must be 2-D (num_embeddings, embedding_dim), got {weight.shape}")
    if max_norm is not None:
        raise NotImplementedError("embedding(max_norm=...) (renormalising rows in place) is not supported by gpunn")
    if sparse:
        raise NotImplementedError("embedding(sparse=True): sparse gradients are not supported by gpunn")
    n, d = weight.shape
    if padding_idx is not None:
        if not -n <= padding_idx < n:
            raise AssertionError(f"Padding_idx must be within num_embeddings (got {padding_idx} for {n} rows)")
        padding_idx %= n
    idx = input._data
    if idx.size:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= n:
            raise IndexError(f"index out of range in self (embedding indices span [{lo}, {hi}], weight has {n} rows)")
    xp = weight._backend.xp
    flat = idx.reshape(-1).astype(np.int64, copy=False)
    out = weight._data[flat].reshape(tuple(idx.shape) + (d,))

    def backward(g):
        rows = g.reshape(-1, d)
        if scale_grad_by_freq:
            counts = xp.bincount(flat, minlength=n)
            rows = rows / counts[flat][:, None].astype(rows.dtype)
        dW = xp.zeros((n, d), dtype=g.dtype)
        weight._backend.index_add(dW, flat, rows)
        if padding_idx is not None:
            dW[padding_idx] = 0
        return (dW,)

    return weight._result(out, (weight,), backward, "EmbeddingBackward0", saved=())


__all__ += ["embedding"]


def layer_norm(input, normalized_shape, weight=None, bias=None, eps: float = 1e-5) -> Tensor:  # noqa: A002
    """y = (x - mean) / sqrt(var + eps) * weight + bias, mean and biased var over the last
    len(normalized_shape) dims of x (which must equal ``normalized_shape``); weight and bias have that shape.
    Backward: dx = inv_std (dxhat - mean(dxhat) - xhat mean(dxhat xhat)), the means over those dims.
    >>> F.layer_norm(x, (x.shape[-1],))"""
    x_t = _float_tensor(input, "layer_norm")
    if isinstance(normalized_shape, (int, np.integer)):
        normalized_shape = (int(normalized_shape),)
    shape = tuple(int(n) for n in normalized_shape)
    k = len(shape)
    if k == 0 or x_t.shape[x_t.ndim - k :] != shape or x_t.ndim < k:
        raise RuntimeError(
            f"Given normalized_shape={list(shape)}, expected input with shape [*, {', '.join(map(str, shape))}], "
            f"but got input of size {list(x_t.shape)}"
        )
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            _check_same_backend(x_t, _tensor(t, "layer_norm", name), "layer_norm")
            if t.shape != shape:
                raise RuntimeError(f"layer_norm: {name} must have shape {shape} (normalized_shape), got {t.shape}")
    xp = x_t._backend.xp
    x = x_t._data
    axes = tuple(range(x.ndim - k, x.ndim))
    lead = tuple(range(x.ndim - k))
    m = math.prod(shape)
    mean = x.mean(axis=axes, keepdims=True)
    xc = x - mean
    inv_std = 1 / xp.sqrt((xc * xc).mean(axis=axes, keepdims=True) + x.dtype.type(eps))
    xhat = xc * inv_std
    out = xhat
    if weight is not None:
        out = out * weight._data
    if bias is not None:
        out = out + bias._data
    parents = tuple(t for t in (x_t, weight, bias) if t is not None)

    def backward(g):
        dxhat = g * weight._data if weight is not None else g
        s1 = dxhat.sum(axis=axes, keepdims=True)
        s2 = (dxhat * xhat).sum(axis=axes, keepdims=True)
        grads = [inv_std / m * (m * dxhat - s1 - xhat * s2)]
        if weight is not None:
            grads.append((g * xhat).sum(axis=lead))
        if bias is not None:
            grads.append(g.sum(axis=lead))
        return tuple(grads)

    return x_t._result(
        out.astype(x.dtype, copy=False),
        parents,
        backward,
        "NativeLayerNormBackward0",
        saved=tuple(t for t in (x_t, weight) if t is not None),
    )


__all__ += ["layer_norm"]


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction: str = "mean",  # noqa: A002
                   beta: float = 1.0) -> Tensor:  # fmt: skip
    """0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta (d = input - target); beta = 0 is the L1 loss."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, "smooth_l1_loss")
    _float_tensor(input, "smooth_l1_loss")
    if beta < 0:
        raise RuntimeError("smooth_l1_loss does not support negative values for beta.")
    target = _target_like(input, target, "smooth_l1_loss")
    _broadcast_target(input, target)
    d = input - target
    if beta == 0:
        return _reduce(d.abs(), reduction)
    ad = d.abs()
    return _reduce(where(ad < beta, d * d * (0.5 / beta), ad - 0.5 * beta), reduction)


def huber_loss(input, target, reduction: str = "mean", delta: float = 1.0, weight=None) -> Tensor:  # noqa: A002
    """0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta) (d = input - target); ``weight`` (input's shape)
    scales each element ('mean' stays the plain mean, as PyTorch)."""
    _check_reduction(reduction, "huber_loss")
    _float_tensor(input, "huber_loss")
    if delta <= 0:
        raise RuntimeError("huber_loss does not support non-positive values for delta.")
    target = _target_like(input, target, "huber_loss")
    _broadcast_target(input, target)
    d = input - target
    ad = d.abs()
    loss = where(ad < delta, d * d * 0.5, (ad - 0.5 * delta) * delta)
    return _weighted_reduce(loss, weight, reduction, "huber_loss", normalize=False)


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def pad(input, pad, mode: str = "constant", value: float | None = None) -> Tensor:  # noqa: A002
    """Pad the last len(pad) / 2 dims: ``pad = (left, right, top, bottom, ...)`` from the last dim backwards
    (negative amounts crop). ``mode``: 'constant' (``value``, 0 by default), 'reflect', 'replicate' or
    'circular'. The gradient of a padded cell goes back to the cell it copies.
    >>> F.pad(x, (1, 1, 2, 0))  # last dim +1 each side, the one before +2 on top"""
    x_t = _tensor(input, "pad")
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2 or len(pad) // 2 > x_t.ndim:
        raise RuntimeError(
            f"Padding length must be divisible by 2 and at most twice the input's dims, got {len(pad)} for {x_t.ndim}"
        )
    if mode not in _PAD_MODES:
        raise NotImplementedError(f"pad: mode must be one of {tuple(_PAD_MODES)}, got {mode!r}")
    if mode != "constant" and value not in (None, 0, 0.0):
        raise RuntimeError(f'Padding mode "{mode}" doesn\'t take in value argument')
    xp = x_t._backend.xp
    amounts = [(0, 0)] * x_t.ndim
    for k in range(len(pad) // 2):
        amounts[x_t.ndim - 1 - k] = (pad[2 * k], pad[2 * k + 1])
    for axis, ((lo, hi), n) in enumerate(zip(amounts, x_t.shape)):
        if n + lo + hi < (0 if mode == "constant" else 1) or n + min(lo, 0) + min(hi, 0) < 0:
            raise RuntimeError(
                f"pad: the input size {n} of dim {axis}, plus negative padding {lo} and {hi}, leaves a negative "
                "(or, outside constant mode, empty) output size"
            )
    out = x_t
    if mode != "constant":  # each padded cell copies a cell of the input: an index map per dim, then index_select
        from gpunn.ops.shape import index_select

        for axis, (lo, hi) in enumerate(amounts):
            if lo == hi == 0:
                continue
            n = x_t.shape[axis]
            if mode == "reflect" and (lo >= n or hi >= n):
                raise RuntimeError(
                    f"Argument #4: Padding size should be less than the corresponding input dimension, but got: "
                    f"padding ({lo}, {hi}) at dimension {axis} of input {list(x_t.shape)}"
                )
            if n == 0:
                raise RuntimeError(f"pad: can't {mode}-pad an empty dimension (dim {axis} of {x_t.shape})")
            idx = np.arange(n)
            idx = np.pad(idx, (max(lo, 0), max(hi, 0)), mode=_PAD_MODES[mode])
            idx = idx[max(-lo, 0) : len(idx) - max(-hi, 0)]
            out = index_select(out, axis, xp.asarray(idx.astype(np.int64)))
        return out
    crop = tuple(slice(max(-lo, 0), n - max(-hi, 0)) for (lo, hi), n in zip(amounts, x_t.shape))
    if any(lo < 0 or hi < 0 for lo, hi in amounts):
        out = out[crop]
    widths = [(max(lo, 0), max(hi, 0)) for lo, hi in amounts]
    fill = 0 if value is None else value
    data = xp.pad(out._data, widths, mode="constant", constant_values=fill)
    inside = tuple(slice(lo, lo + n) for (lo, _), n in zip(widths, out.shape))
    return out._result(data.astype(out.dtype, copy=False), (out,), lambda g: (g[inside],), "ConstantPadNdBackward0",
                       saved=())  # fmt: skip


def normalize(input, p: float = 2.0, dim: int = 1, eps: float = 1e-12, out=None) -> Tensor:  # noqa: A002
    """x / max(||x||_p, eps) along ``dim`` (composite, as in PyTorch)."""
    if out is not None:
        raise NotImplementedError("normalize(out=...) is not supported by gpunn")
    x_t = _float_tensor(input, "normalize")
    return x_t / x_t.norm(p, dim, keepdim=True).clamp_min(eps)


def cosine_similarity(x1, x2, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """sum(x1 x2) / (max(||x1||, eps) max(||x2||, eps)) along ``dim``, x1 and x2 broadcast together."""
    a, b = _float_tensor(x1, "cosine_similarity", "x1"), _float_tensor(x2, "cosine_similarity", "x2")
    shape = tuple(np.broadcast_shapes(a.shape, b.shape))
    a, b = a.expand(*shape), b.expand(*shape)
    return ((a / a.norm(2, dim, keepdim=True).clamp_min(eps)) * (b / b.norm(2, dim, keepdim=True).clamp_min(eps))).sum(
        dim
    )


def pairwise_distance(x1, x2, p: float = 2.0, eps: float = 1e-6, keepdim: bool = False) -> Tensor:
    """||x1 - x2 + eps||_p over the last dim."""
    a, b = _float_tensor(x1, "pairwise_distance", "x1"), _float_tensor(x2, "pairwise_distance", "x2")
    return (a - b + eps).norm(p, -1, keepdim=keepdim)


__all__ += ["smooth_l1_loss", "huber_loss", "pad", "normalize", "cosine_similarity", "pairwise_distance"]


def conv_transpose2d(
    input,  # noqa: A002
    weight,
    bias=None,
    stride=1,
    padding=0,
    output_padding=0,
    groups: int = 1,
    dilation=1,
) -> Tensor:
    """The adjoint of conv2d (a "deconvolution"): x (N, C_in, H, W), W (C_in, C_out / groups, KH, KW) ->
    (N, C_out, OH, OW), OH = (H - 1) sh - 2 ph + dh (KH - 1) + output_padding + 1. Composed: the input
    spread out with sh - 1 zeros between pixels, padded by dh (KH - 1) - ph (+ output_padding at the end),
    then conv2d with the kernel flipped and its in/out channels swapped; gradients flow through those ops.
    >>> F.conv_transpose2d(x, W, stride=2, padding=1, output_padding=1)  # doubles H and W for KH = 3"""
    from gpunn.ops.shape import index_put

    x_t = _float_tensor(input, "conv_transpose2d")
    _float_tensor(weight, "conv_transpose2d", "weight")
    _check_same_backend(x_t, weight, "conv_transpose2d")
    x_t, unbatched = _as_batched_4d(x_t, "conv_transpose2d")
    if weight.ndim != 4 or weight.shape[0] != x_t.shape[1] or x_t.shape[1] % groups:
        raise RuntimeError(
            f"conv_transpose2d: weight of shape {weight.shape} does not fit an input with {x_t.shape[1]} channels "
            f"and groups={groups} (expected (C_in, C_out / groups, KH, KW))"
        )
    (sh, sw), (ph, pw) = _pair(stride, "stride", "conv_transpose2d"), _pair(padding, "padding", "conv_transpose2d")
    (oph, opw), (dh, dw) = (_pair(output_padding, "output_padding", "conv_transpose2d"),
                            _pair(dilation, "dilation", "conv_transpose2d"))  # fmt: skip
    if oph >= max(sh, dh) or opw >= max(sw, dw):
        raise RuntimeError("conv_transpose2d: output padding must be smaller than either stride or dilation")
    n, c_in, h, w = x_t.shape
    kh, kw = weight.shape[2:]
    z = x_t
    if (sh, sw) != (1, 1):
        zeros = Tensor._wrap(x_t._backend.xp.zeros((n, c_in, (h - 1) * sh + 1, (w - 1) * sw + 1), x_t.dtype),
                             x_t._backend)  # fmt: skip
        z = index_put(zeros, (slice(None), slice(None), slice(None, None, sh), slice(None, None, sw)), x_t)
    eh, ew = dh * (kh - 1) - ph, dw * (kw - 1) - pw
    z = pad(z, (ew, ew + opw, eh, eh + oph))
    c_out_g = weight.shape[1]
    w2 = weight.reshape(groups, c_in // groups, c_out_g, kh, kw).transpose(1, 2)
    w2 = w2.reshape(groups * c_out_g, c_in // groups, kh, kw).flip((2, 3))
    out = conv2d(z, w2, bias, 1, 0, (dh, dw), groups)
    return out.squeeze(0) if unbatched else out


__all__ += ["conv_transpose2d"]


def _source_index(xp, out_size: int, in_size: int, scale, mode: str, align_corners: bool):
    """Per output position along one dim: (i0, i1, w1) with out = (1 - w1) x[i0] + w1 x[i1] (PyTorch's source
    coordinates; ``scale`` is 1 / scale_factor when one was given, else in / out)."""
    dst = np.arange(out_size, dtype=np.float64)
    if mode in ("nearest", "nearest-exact"):
        s = in_size / out_size if scale is None else scale
        src = np.floor((dst + 0.5) * s) if mode == "nearest-exact" else np.floor(dst * np.float32(s))
        i0 = np.minimum(src.astype(np.int64), in_size - 1)
        return i0, i0, None
    if align_corners:
        src = dst * ((in_size - 1) / (out_size - 1)) if out_size > 1 else dst * 0
    else:
        s = in_size / out_size if scale is None else scale
        src = np.maximum((dst + 0.5) * s - 0.5, 0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, src - i0


def interpolate(input, size=None, scale_factor=None, mode: str = "nearest", align_corners=None,  # noqa: A002
                recompute_scale_factor=None, antialias: bool = False) -> Tensor:  # fmt: skip
    """Resize the spatial dims of x (N, C, *spatial; 1 to 3 of them) to ``size`` or by ``scale_factor``:
    ``mode`` 'nearest' / 'nearest-exact' (copies), 'linear' / 'bilinear' / 'trilinear' (PyTorch's
    ``align_corners`` rules). Done one dim at a time as index_select (+ a weighted sum), so gradients and
    non-finite values behave as the gathers they are."""
    from gpunn.ops.shape import index_select

    x_t = _float_tensor(input, "interpolate")
    nsp = x_t.ndim - 2
    linear_modes = {"linear": 1, "bilinear": 2, "trilinear": 3}
    if mode not in ("nearest", "nearest-exact", *linear_modes):
        raise NotImplementedError(f"interpolate: mode {mode!r} is not supported by gpunn")
    if nsp < 1 or nsp > 3 or (mode in linear_modes and linear_modes[mode] != nsp):
        raise NotImplementedError(f"Got {x_t.ndim}D input, but {mode} mode needs {linear_modes.get(mode, '1-3')} "
                                  "spatial dims (input (N, C, *spatial))")  # fmt: skip
    if align_corners is not None and mode not in linear_modes:
        raise ValueError("align_corners option can only be set with the interpolating modes: linear | bilinear | "
                         "bicubic | trilinear")  # fmt: skip
    if antialias:
        raise NotImplementedError("interpolate(antialias=True) is not supported by gpunn")
    if (size is None) == (scale_factor is None):
        raise ValueError("only one of size or scale_factor should be defined")
    in_sizes = x_t.shape[2:]
    if size is not None:
        sizes = (size,) * nsp if isinstance(size, int) else tuple(size)
        scales = (None,) * nsp
    else:
        factors = (scale_factor,) * nsp if isinstance(scale_factor, (int, float)) else tuple(scale_factor)
        sizes = tuple(int(math.floor(n * f)) for n, f in zip(in_sizes, factors))
        scales = (None,) * nsp if recompute_scale_factor else tuple(1.0 / f for f in factors)
    if len(sizes) != nsp:
        raise ValueError(f"interpolate: size/scale_factor has {len(sizes)} entries for {nsp} spatial dims")
    if min(sizes) <= 0 or min(in_sizes) <= 0:
        raise RuntimeError(f"Input and output sizes should be greater than 0, but got input {tuple(in_sizes)} and "
                           f"output {tuple(sizes)}")  # fmt: skip
    xp = x_t._backend.xp
    out = x_t
    for k, (n_out, n_in, scale) in enumerate(zip(sizes, in_sizes, scales)):
        axis = 2 + k
        i0, i1, w1 = _source_index(xp, n_out, n_in, scale, mode, bool(align_corners))
        lo = index_select(out, axis, xp.asarray(i0))
        if w1 is None:
            out = lo
            continue
        shape = [1] * out.ndim
        shape[axis] = n_out
        w = Tensor._wrap(xp.asarray(w1.reshape(shape).astype(x_t.dtype)), x_t._backend)
        out = lo + (index_select(out, axis, xp.asarray(i1)) - lo) * w
    return out


__all__ += ["interpolate"]


def pixel_shuffle(input, upscale_factor: int) -> Tensor:  # noqa: A002
    """(*, C r^2, H, W) -> (*, C, H r, W r): out[c, h r + i, w r + j] = x[c r^2 + i r + j, h, w] (composite)."""
    x_t = _tensor(input, "pixel_shuffle")
    r = int(upscale_factor)
    if x_t.ndim < 3 or x_t.shape[-3] % (r * r):
        raise RuntimeError(f"pixel_shuffle expects its input's 'channel' dimension to be divisible by the square of "
                           f"upscale_factor, but input.size(-3)={x_t.shape[-3] if x_t.ndim >= 3 else None} is not "
                           f"divisible by {r * r}")  # fmt: skip
    *lead, c, h, w = x_t.shape
    k = len(lead)
    y = x_t.reshape(*lead, c // (r * r), r, r, h, w)
    y = y.permute(*range(k), k, k + 3, k + 1, k + 4, k + 2)
    return y.reshape(*lead, c // (r * r), h * r, w * r)


def pixel_unshuffle(input, downscale_factor: int) -> Tensor:  # noqa: A002
    """The inverse of pixel_shuffle: (*, C, H r, W r) -> (*, C r^2, H, W)."""
    x_t = _tensor(input, "pixel_unshuffle")
    r = int(downscale_factor)
    *lead, c, h, w = x_t.shape
    if h % r or w % r:
        raise RuntimeError(f"pixel_unshuffle expects height and width divisible by {r}, got {h} x {w}")
    k = len(lead)
    y = x_t.reshape(*lead, c, h // r, r, w // r, r)
    y = y.permute(*range(k), k, k + 2, k + 4, k + 1, k + 3)
    return y.reshape(*lead, c * r * r, h // r, w // r)


def group_norm(input, num_groups: int, weight=None, bias=None, eps: float = 1e-5) -> Tensor:  # noqa: A002
    """Normalize x (N, C, *) over each group of C / num_groups channels (and all spatial positions), then the
    per-channel affine ``weight``, ``bias`` (C,). Composite: layer_norm over the regrouped tensor."""
    x_t = _float_tensor(input, "group_norm")
    if x_t.ndim < 2 or x_t.shape[1] % num_groups:
        raise RuntimeError(f"Expected number of channels in input to be divisible by num_groups, but got input of "
                           f"shape {list(x_t.shape)} and num_groups={num_groups}")  # fmt: skip
    n, c = x_t.shape[:2]
    grouped = x_t.reshape(n, num_groups, -1)
    y = layer_norm(grouped, (grouped.shape[-1],), eps=eps).reshape(x_t.shape)
    shape = (1, c) + (1,) * (x_t.ndim - 2)
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,  # noqa: A002
                  use_input_stats: bool = True, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:  # fmt: skip
    """Normalize each (sample, channel) over its spatial positions, then the per-channel affine. Running
    statistics (``track_running_stats``) are not supported by gpunn: they raise."""
    x_t = _float_tensor(input, "instance_norm")
    if running_mean is not None or running_var is not None or not use_input_stats:
        raise NotImplementedError("instance_norm with running statistics is not supported by gpunn")
    if x_t.ndim < 3:
        raise ValueError(f"instance_norm: expected an input (N, C, *spatial), got shape {x_t.shape}")
    return group_norm(x_t, x_t.shape[1], weight, bias, eps)


__all__ += ["pixel_shuffle", "pixel_unshuffle", "group_norm", "instance_norm"]


def _single(v, name: str, fname: str) -> int:
    if isinstance(v, (tuple, list)):
        if len(v) != 1:
            raise ValueError(f"{fname}(): {name} must be an int or a 1-tuple, got {v}")
        v = v[0]
    return int(v)


def _as_batched_3d(input: Tensor, fname: str):
    if input.ndim == 2:
        return input.unsqueeze(0), True
    if input.ndim != 3:
        raise ValueError(f"{fname}(): expected a 3-D input (N, C, L) or 2-D (C, L), got shape {input.shape}")
    return input, False


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups: int = 1) -> Tensor:  # noqa: A002
    """1-D cross-correlation: x (N, C, L), W (OC, C / groups, K) -> (N, OC, OL): conv2d over a height-1 image."""
    x_t, unbatched = _as_batched_3d(_float_tensor(input, "conv1d"), "conv1d")
    _float_tensor(weight, "conv1d", "weight")
    if weight.ndim != 3:
        raise RuntimeError(f"conv1d(): weight must be 3-D (out_channels, in_channels / groups, K), got {weight.shape}")
    if isinstance(padding, str):
        padding = _conv_padding(padding, (1, weight.shape[-1]), 1 if stride in (1, (1,)) else 2,
                                (1, _single(dilation, "dilation", "conv1d")), "conv1d")[1]  # fmt: skip
    stride, padding = _single(stride, "stride", "conv1d"), _single(padding, "padding", "conv1d")
    dilation = _single(dilation, "dilation", "conv1d")
    out = conv2d(x_t.unsqueeze(2), weight.unsqueeze(2), bias, (1, stride), (0, padding), (1, dilation), groups)
    out = out.squeeze(2)
    return out.squeeze(0) if unbatched else out


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,  # noqa: A002
               return_indices: bool = False) -> Tensor:  # fmt: skip
    """Max over windows along L of x (N, C, L): max_pool2d over a height-1 image."""
    x_t, unbatched = _as_batched_3d(_float_tensor(input, "max_pool1d"), "max_pool1d")
    k = _single(kernel_size, "kernel_size", "max_pool1d")
    s = k if stride is None or stride == () else _single(stride, "stride", "max_pool1d")
    p, d = _single(padding, "padding", "max_pool1d"), _single(dilation, "dilation", "max_pool1d")
    out = max_pool2d(x_t.unsqueeze(2), (1, k), (1, s), (0, p), (1, d), ceil_mode, return_indices).squeeze(2)
    return out.squeeze(0) if unbatched else out


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode: bool = False,  # noqa: A002
               count_include_pad: bool = True) -> Tensor:  # fmt: skip
    """Mean over windows along L of x (N, C, L): avg_pool2d over a height-1 image."""
    x_t, unbatched = _as_batched_3d(_float_tensor(input, "avg_pool1d"), "avg_pool1d")
    k = _single(kernel_size, "kernel_size", "avg_pool1d")
    s = k if stride is None or stride == () else _single(stride, "stride", "avg_pool1d")
    out = avg_pool2d(x_t.unsqueeze(2), (1, k), (1, s), (0, _single(padding, "padding", "avg_pool1d")), ceil_mode,
                     count_include_pad).squeeze(2)  # fmt: skip
    return out.squeeze(0) if unbatched else out


def adaptive_avg_pool1d(input, output_size) -> Tensor:  # noqa: A002
    """Average over PyTorch's adaptive windows along L: (N, C, L) -> (N, C, output_size)."""
    x_t = _float_tensor(input, "adaptive_avg_pool1d")
    if x_t.ndim not in (2, 3):
        raise ValueError(f"adaptive_avg_pool1d(): expected a 2-D or 3-D input, got shape {x_t.shape}")
    return adaptive_avg_pool2d(x_t.unsqueeze(-2), (1, _single(output_size, "output_size", "adaptive_avg_pool1d")))\
        .squeeze(-2)  # fmt: skip


__all__ += ["conv1d", "max_pool1d", "avg_pool1d", "adaptive_avg_pool1d"]


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p: float = 0.0, is_causal: bool = False,
                                 scale=None, enable_gqa: bool = False) -> Tensor:  # fmt: skip
    """softmax(q k^T * scale + mask) v over the last two dims: q (*, L, E), k (*, S, E), v (*, S, Ev) ->
    (*, L, Ev); ``scale`` 1 / sqrt(E) by default; ``is_causal``: query i sees keys j <= i; ``attn_mask`` a bool
    mask (True = may attend) or an additive float bias; ``dropout_p`` on the attention weights; ``enable_gqa``
    repeats the key/value heads (dim -3) to the query's. PyTorch's math path, composed from gpunn ops."""
    q, k, v = (_float_tensor(t, "scaled_dot_product_attention", n) for t, n in ((query, "query"), (key, "key"),
                                                                             (value, "value")))  # fmt: skip
    if is_causal and attn_mask is not None:
        raise RuntimeError("_scaled_dot_product_attention: Explicit attn_mask should not be set when is_causal=True")
    if enable_gqa and q.ndim >= 3 and k.shape[-3] != q.shape[-3]:
        from gpunn.ops.shape import repeat_interleave

        k = repeat_interleave(k, q.shape[-3] // k.shape[-3], dim=-3)
        v = repeat_interleave(v, q.shape[-3] // v.shape[-3], dim=-3)
    n_q, n_k = q.shape[-2], k.shape[-2]
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    scores = (q @ k.transpose(-2, -1)) * s
    if is_causal:
        keep = Tensor._wrap(q._backend.xp.tri(n_q, n_k, 0, dtype=bool), q._backend)
        scores = scores.masked_fill(~keep, float("-inf"))
    elif attn_mask is not None:
        if attn_mask.dtype == np.bool_:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    weights = softmax(scores, dim=-1)
    if dropout_p > 0.0:
        weights = dropout(weights, dropout_p, True)
    return weights @ v


__all__ += ["scaled_dot_product_attention"]


def margin_ranking_loss(input1, input2, target, margin: float = 0.0, size_average=None, reduce=None,
                        reduction: str = "mean") -> Tensor:  # fmt: skip
    """max(0, -y (x1 - x2) + margin), y in {1, -1}."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, "margin_ranking_loss")
    return _reduce((-target * (input1 - input2) + margin).clamp_min(0), reduction)


def hinge_embedding_loss(input, target, margin: float = 1.0, size_average=None, reduce=None,  # noqa: A002
                         reduction: str = "mean") -> Tensor:  # fmt: skip
    """x where y == 1, max(0, margin - x) where y == -1."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, "hinge_embedding_loss")
    margin_part = (margin - input).clamp_min(0)
    loss = where(target == 1, input, 0.0) + where(target == -1, margin_part, 0.0)
    return _reduce(loss, reduction)


def soft_margin_loss(input, target, size_average=None, reduce=None, reduction: str = "mean") -> Tensor:  # noqa: A002
    """log(1 + exp(-y x)), averaged over elements."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, "soft_margin_loss")
    return _reduce(softplus(-target * input, threshold=1e30), reduction)


def cosine_embedding_loss(input1, input2, target, margin: float = 0.0, size_average=None, reduce=None,
                          reduction: str = "mean") -> Tensor:  # fmt: skip
    """1 - cos(x1, x2) where y == 1, max(0, cos(x1, x2) - margin) where y == -1 (cos over dim -1, eps 1e-8
    on the squared norms, as PyTorch)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, "cosine_embedding_loss")
    eps = 1e-12
    prod = (input1 * input2).sum(-1)
    mag1, mag2 = (input1 * input1).sum(-1) + eps, (input2 * input2).sum(-1) + eps
    cos = prod / (mag1 * mag2).sqrt()
    loss = where(target == 1, 1 - cos, 0.0) + where(target == -1, (cos - margin).clamp_min(0), 0.0)
    return _reduce(loss, reduction)


def triplet_margin_loss(anchor, positive, negative, margin: float = 1.0, p: float = 2, eps: float = 1e-6,
                        swap: bool = False, size_average=None, reduce=None,
                        reduction: str = "mean") -> Tensor:  # fmt: skip
    """max(0, d(a, p) - d(a, n) + margin) with d the pairwise p-norm distance (``swap``: d(a, n) is the smaller
    of d(a, n) and d(p, n))."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, "triplet_margin_loss")
    d_pos = pairwise_distance(anchor, positive, p, eps)
    d_neg = pairwise_distance(anchor, negative, p, eps)
    if swap:
        from gpunn.ops.pointwise import minimum

        d_neg = minimum(d_neg, pairwise_distance(positive, negative, p, eps))
    return _reduce((d_pos - d_neg + margin).clamp_min(0), reduction)


def multilabel_soft_margin_loss(input, target, weight=None, size_average=None, reduce=None,  # noqa: A002
                                reduction: str = "mean") -> Tensor:  # fmt: skip
    """-mean over classes of y log sigmoid(x) + (1 - y) log sigmoid(-x) (times ``weight``), per sample."""
    from gpunn.ops.pointwise import logsigmoid

    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, "multilabel_soft_margin_loss")
    loss = -(target * logsigmoid(input) + (1 - target) * logsigmoid(-input))
    if weight is not None:
        loss = loss * weight
    return _reduce(loss.mean(-1), reduction)


def poisson_nll_loss(input, target, log_input: bool = True, full: bool = False, size_average=None, eps: float = 1e-8,  # noqa: A002
                     reduce=None, reduction: str = "mean") -> Tensor:  # fmt: skip
    """exp(x) - y x (``log_input``) or x - y log(x + eps); ``full`` adds Stirling's term for y > 1."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, "poisson_nll_loss")
    loss = input.exp() - target * input if log_input else input - target * (input + eps).log()
    if full:
        t = target
        stirling = t * t.clamp_min(1).log() - t + 0.5 * (2 * math.pi * t.clamp_min(1)).log()
        loss = loss + where(t > 1, stirling, 0.0)
    return _reduce(loss, reduction)


def gaussian_nll_loss(input, target, var, full: bool = False, eps: float = 1e-6, reduction: str = "mean") -> Tensor:  # noqa: A002
    """0.5 (log(max(var, eps)) + (x - y)^2 / max(var, eps)) (+ 0.5 log(2 pi) with ``full``)."""
    _check_reduction(reduction, "gaussian_nll_loss")
    if isinstance(var, (int, float)):
        var = Tensor._wrap(input._backend.xp.full(input.shape, float(var), dtype=input.dtype), input._backend)
    if var.shape != input.shape:
        if input.shape[:-1] == var.shape:
            var = var.unsqueeze(-1)
        elif not (input.shape[:-1] == var.shape[:-1] and var.shape[-1] == 1):
            raise ValueError("var is of incorrect size")
    if bool((var._data < 0).any()):
        raise ValueError("var has negative entry/entries")
    v = var + (var.detach().clamp(min=eps) - var.detach())  # clamped value, gradient passed straight (as torch)
    loss = 0.5 * (v.log() + (input - target) ** 2 / v)
    if full:
        loss = loss + 0.5 * math.log(2 * math.pi)
    return _reduce(loss, reduction)


__all__ += ["margin_ranking_loss", "hinge_embedding_loss", "soft_margin_loss", "cosine_embedding_loss"]
__all__ += ["triplet_margin_loss", "multilabel_soft_margin_loss", "poisson_nll_loss", "gaussian_nll_loss"]
