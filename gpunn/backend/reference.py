"""Reference implementations of gpunn's fused primitives, written once over an array module ``xp``.

These are the CPU path of the ``numpy`` backend and the oracle every GPU kernel is checked against.
Each takes ``xp`` (``numpy`` or ``cupy``) first; shapes are in the comments. They are plain on purpose:
one line of math per line of code, reductions accumulated in float64 where precision matters.

The contract (same on every backend):

- ``linear_act(x, W, b, act, negative_slope) -> y``
  ``x (N, K)``, ``W (M, K)`` (PyTorch's out x in layout), ``b (M,)`` or None, ``y = act(x @ W.T + b)``.
- ``linear_act_backward(dy, x, W, y, act, negative_slope, need_dx, need_dW, need_db) -> (dx, dW, db)``
  uses the *output* ``y`` to form the activation derivative (so forward saves only ``y``).
- ``softmax_cross_entropy(logits, target, weight, reduction, ignore_index, label_smoothing)
  -> (loss, dlogits)``: ``logits (N, C)``, ``target (N,)`` int; ``loss`` is 0-d (mean/sum) or ``(N,)``
  (none); ``dlogits (N, C)`` is d(loss)/d(logits) for an upstream gradient of one (per row for none).
- ``sgd_step(param, grad, momentum_buf, ...)`` and ``adam_step(param, grad, exp_avg, exp_avg_sq,
  max_exp_avg_sq, ...)``, ``adagrad_step(param, grad, state_sum, ...)``, ``adadelta_step(param, grad,
  square_avg, acc_delta, ...)`` and ``rmsprop_step(param, grad, square_avg, momentum_buf, grad_avg, ...)``
  update flat 1-D buffers in place, with PyTorch's formulas.
- ``conv2d_forward(x, weight, bias, stride, padding, act, negative_slope, need_grad) -> (y, saved)``
  ``x (N, C, H, W)``, ``weight (OC, C, KH, KW)``, ``bias (OC,)`` or None, ``stride``/``padding`` pairs,
  ``y = act(conv(x, weight) + bias) (N, OC, OH, OW)``; ``saved`` is whatever this backend's backward needs
  (opaque to callers; None when ``need_grad`` is False).
  ``conv2d_backward(dy, saved, need_dx, need_dW, need_db) -> (dx, dW, db)``.
- ``pool2d_forward(x, mode, kernel_size, stride, padding, count_include_pad, need_grad) -> (y, saved)``,
  ``mode`` 'max' or 'avg', pairs for the geometry (padding at most half the kernel);
  ``pool2d_backward(dy, saved) -> dx``. Max pooling follows PyTorch's CPU loop: a window's value and
  gradient go to its first maximal element, or to its LAST NaN when it holds NaNs, and a window of -inf
  sends its gradient to its first in-bounds element.
"""

from __future__ import annotations

import math

ACTIVATIONS = ("none", "relu", "leaky_relu", "sigmoid", "tanh")
REDUCTIONS = ("mean", "sum", "none")


# ----------------------------------------------------------------------------------------------
# activations: forward from the pre-activation z, derivative from the output y
# ----------------------------------------------------------------------------------------------
def zero_where(xp, x, cond, out):
    """``x`` with +0.0 where ``cond``, every other element's bits kept (NaN, -0.0), into ``out``: x's bits
    ANDed with a mask of all zeros where cond, all ones elsewhere (a masked copy, np.copyto(where=) or
    np.where, ran ~2 ns an element here, this ~0.3)."""
    bits = xp.dtype(f"int{8 * x.dtype.itemsize}")
    keep = xp.subtract(cond, 1, dtype=bits)  # 0 where cond, -1 elsewhere
    xp.bitwise_and(x.view(bits), keep, out=out.view(bits))
    return out


def activation_forward(xp, z, act: str, negative_slope: float = 0.01):
    """y = act(z), elementwise; ``z`` may be overwritten (it is a fresh temporary)."""
    if act == "none":
        return z
    if act == "relu":  # PyTorch's rule: 0 where z < 0, else z (NaN and -0.0 kept)
        return zero_where(xp, z, z < 0, out=z)
    if act == "leaky_relu":
        return xp.where(z > 0, z, z * z.dtype.type(negative_slope))
    if act == "sigmoid":
        # 1 / (1 + exp(-z)) written so that exp never overflows: exp(-|z|) is in (0, 1].
        e = xp.exp(-xp.abs(z))
        return xp.where(z >= 0, 1 / (1 + e), e / (1 + e)).astype(z.dtype, copy=False)
    if act == "tanh":
        return xp.tanh(z, out=z)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {act!r}")


def activation_backward(xp, dy, y, act: str, negative_slope: float = 0.01):
    """dz = dy * act'(z), with act' written in terms of the output y (needs negative_slope > 0)."""
    if act == "none":
        return dy
    if act == "relu":  # PyTorch's rule: 0 where y <= 0, else dy (so a NaN output passes dy; no inf * 0)
        return zero_where(xp, dy, y <= 0, out=xp.empty_like(dy))
    if act == "leaky_relu":
        return xp.where(y > 0, dy, dy * dy.dtype.type(negative_slope))
    if act == "sigmoid":
        return dy * y * (1 - y)
    if act == "tanh":
        return dy * (1 - y * y)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {act!r}")


# ----------------------------------------------------------------------------------------------
# fused linear + bias + activation
# ----------------------------------------------------------------------------------------------
def linear_act(xp, x, W, b, act: str = "none", negative_slope: float = 0.01, matmul=None):
    """y = act(x @ W.T + b).  x: (N, K), W: (M, K), b: (M,) or None  ->  y: (N, M).
    ``matmul``: the matrix product to use (a backend's; default xp.matmul)."""
    z = (matmul or xp.matmul)(x, W.T)  # (N, M), a fresh array the activation may overwrite
    if b is not None:
        z += b
    return activation_forward(xp, z, act, negative_slope)


def linear_act_backward(
    xp,
    dy,
    x,
    W,
    y,
    act: str = "none",
    negative_slope: float = 0.01,
    need_dx: bool = True,
    need_dW: bool = True,
    need_db: bool = True,
    matmul=None,
):
    """Gradients of y = act(x @ W.T + b).  dy, y: (N, M)  ->  dx (N, K), dW (M, K), db (M,)."""
    mm = matmul or xp.matmul
    dz = activation_backward(xp, dy, y, act, negative_slope)  # (N, M)
    dx = mm(dz, W) if need_dx else None  # (N, M) @ (M, K)
    dW = mm(dz.T, x) if need_dW else None  # (M, N) @ (N, K)
    db = dz.sum(axis=0) if need_db else None  # (M,)
    return dx, dW, db


# ----------------------------------------------------------------------------------------------
# fused softmax + cross-entropy: loss and dlogits in one pass
# ----------------------------------------------------------------------------------------------
def check_labels(xp, target, num_classes: int, ignore_index: int) -> None:
    """Raise ValueError naming the first label outside [0, num_classes) that is not ignore_index."""
    bad = (target != ignore_index) & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        raise ValueError(
            f"target label {int(target[bad][0])} is out of range for {num_classes} classes "
            f"(labels must be in [0, {num_classes - 1}] or equal ignore_index={ignore_index})"
        )


def softmax_cross_entropy(
    xp,
    logits,
    target,
    weight=None,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
):
    """PyTorch's ``cross_entropy`` on class indices, returning the loss and its gradient.

    logits: (N, C) float, target: (N,) integer, weight: (C,) or None.
    With p = softmax(logits_i), eps = label_smoothing, w = weight (ones if None), y = target_i:
        loss_i = (1 - eps) * w[y] * -log p[y]  +  eps / C * sum_c w[c] * -log p[c]     (0 if ignored)
        dloss_i/dlogits_i[c] = (1 - eps) * w[y] * (p[c] - [c == y]) + eps / C * (p[c] * sum(w) - w[c])
    'mean' divides the sum by sum_i w[y_i] over non-ignored rows (NaN when every row is ignored).
    """
    n, c = logits.shape
    dt = logits.dtype
    check_labels(xp, target, c, ignore_index)
    valid = target != ignore_index  # (N,)
    safe_target = xp.where(valid, target, 0)  # ignored rows read class 0, then get zero weight

    # an ignored row takes no part in the loss, even with an inf or NaN logit (PyTorch's stays finite): its
    # logits read as zeros, whose finite terms the zero weight below then cancels exactly. Its gradient is
    # PyTorch's too: NaN where that row's log-softmax is NaN (a NaN or +inf logit, or all -inf), else 0.
    nan_rows = xp.isnan(logits).any(axis=1) | xp.isposinf(logits).any(axis=1) | xp.isneginf(logits).all(axis=1)
    ignored_nan = ~valid & nan_rows
    logits = xp.where(valid[:, None], logits, dt.type(0))
    # stable log-softmax: subtract the row max before exp
    shifted = logits - logits.max(axis=1, keepdims=True)  # (N, C)
    exp = xp.exp(shifted)
    sumexp = exp.sum(axis=1, keepdims=True)  # (N, 1)
    logp = shifted - xp.log(sumexp)  # (N, C)
    p = exp / sumexp  # (N, C)

    rows = xp.arange(n)
    w_row = (weight[safe_target] if weight is not None else xp.ones(n, dtype=dt)) * valid  # (N,)
    nll = -logp[rows, safe_target]  # (N,)
    loss_rows = (1 - label_smoothing) * w_row * nll
    # dlogits for the nll part: w[y] * (p - onehot(y))
    grad = p * w_row[:, None]
    grad[rows, safe_target] -= w_row
    if label_smoothing > 0:
        eps_c = label_smoothing / c
        wv = weight if weight is not None else xp.ones(c, dtype=dt)  # (C,)
        smooth = -(logp * wv).sum(axis=1)  # (N,)
        loss_rows = loss_rows + eps_c * smooth * valid
        grad *= 1 - label_smoothing
        grad += eps_c * (p * wv.sum() - wv) * valid[:, None]
    loss_rows = loss_rows.astype(dt, copy=False)
    grad = xp.where(ignored_nan[:, None], dt.type(math.nan), grad)

    if reduction == "none":
        return loss_rows, grad.astype(dt, copy=False)
    if reduction == "sum":
        return xp.asarray(loss_rows.sum(dtype=xp.float64), dtype=dt), grad.astype(dt, copy=False)
    if reduction == "mean":
        denom = w_row.sum(dtype=xp.float64)
        loss = loss_rows.sum(dtype=xp.float64) / denom if float(denom) != 0 else xp.float64(math.nan)
        # no valid row: a zero gradient (as PyTorch); valid rows whose weights sum to 0: NaN
        scale = (1.0 / denom) if float(denom) != 0 else (math.nan if bool(valid.any()) else 0.0)
        return xp.asarray(loss, dtype=dt), (grad * dt.type(scale)).astype(dt, copy=False)
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


# ----------------------------------------------------------------------------------------------
# optimizer steps over flat 1-D buffers, in place
# ----------------------------------------------------------------------------------------------
def sgd_step(
    xp,
    param,
    grad,
    momentum_buf,
    *,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
    first_step: bool = False,
):
    """PyTorch SGD on one flat buffer.  param, grad, momentum_buf: (P,) same dtype; momentum_buf may be
    None when momentum == 0.

        g = -grad if maximize else grad;  g += weight_decay * param
        buf = g (first step) or momentum * buf + (1 - dampening) * g
        g = g + momentum * buf (nesterov) or buf
        param -= lr * g
    """
    if momentum != 0 and momentum_buf is None:
        raise ValueError("sgd_step(): momentum != 0 needs a momentum_buf")
    dt = param.dtype.type
    g = -grad if maximize else grad
    if weight_decay != 0:
        g = g + dt(weight_decay) * param
    if momentum != 0:
        if first_step:
            momentum_buf[...] = g
        else:
            momentum_buf *= dt(momentum)
            momentum_buf += dt(1 - dampening) * g
        g = g + dt(momentum) * momentum_buf if nesterov else momentum_buf
    param -= dt(lr) * g


def adam_step(
    xp,
    param,
    grad,
    exp_avg,
    exp_avg_sq,
    max_exp_avg_sq=None,
    *,
    step: int,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    amsgrad: bool = False,
    maximize: bool = False,
):
    """PyTorch Adam (decoupled_weight_decay=False) or AdamW (True) on one flat buffer, in place.
    ``step`` is the step number after incrementing (1 on the first call).

        g = -grad if maximize else grad
        AdamW: param *= 1 - lr * wd        Adam: g += wd * param
        m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2;   (amsgrad: vmax = max(vmax, v), use vmax)
        param -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """
    dt = param.dtype.type
    g = -grad if maximize else grad
    if weight_decay != 0:
        if decoupled_weight_decay:
            param *= dt(1 - lr * weight_decay)
        else:
            g = g + dt(weight_decay) * param
    exp_avg *= dt(beta1)
    exp_avg += dt(1 - beta1) * g
    exp_avg_sq *= dt(beta2)
    exp_avg_sq += dt(1 - beta2) * (g * g)
    if amsgrad:
        xp.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        v = max_exp_avg_sq
    else:
        v = exp_avg_sq
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = math.sqrt(1 - beta2**step)
    denom = xp.sqrt(v) / dt(bias_correction2_sqrt) + dt(eps)
    param -= dt(lr / bias_correction1) * (exp_avg / denom)


# ----------------------------------------------------------------------------------------------
# convolution (NCHW): im2col with one strided slice per kernel tap, one GEMM, the layout pass
# ----------------------------------------------------------------------------------------------
def conv_out_size(size: int, k: int, s: int, p: int) -> int:
    """Output length of a window of ``k`` cells moved by ``s`` over ``size`` cells padded by ``p``."""
    return (size + 2 * p - k) // s + 1


def tap_span(k: int, stride: int, pad: int, size: int, out: int) -> tuple[slice, slice]:
    """Kernel offset ``k`` reads input index ``o * stride + k - pad`` for output index ``o``: the slice of
    outputs whose input lies inside ``[0, size)`` (the others read the zero padding) and the slice of
    inputs they read."""
    lo = min(out, max(0, -((k - pad) // stride)))  # first o with o * stride + k - pad >= 0
    hi = max(lo, min(out, (size - 1 + pad - k) // stride + 1))  # one past the last o inside the input
    start = lo * stride + k - pad
    return slice(lo, hi), slice(start, start + (hi - lo - 1) * stride + 1 if hi > lo else start, stride)


def conv2d_forward(
    xp,
    x,
    weight,
    bias,
    stride=(1, 1),
    padding=(0, 0),
    act: str = "none",
    negative_slope: float = 0.01,
    need_grad: bool = True,
):
    """y = act(conv2d(x, weight) + bias).  x (N, C, H, W), weight (OC, C, KH, KW), bias (OC,) or None
    -> (y (N, OC, OH, OW), saved), OH = (H + 2 ph - KH) // sh + 1.

    The columns are channel-major, ``cols[c, i, j, n, oh, ow] = x[n, c, oh sh + i - ph, ow sw + j - pw]``
    (0 in the padding), so the whole batch is one GEMM ``W (OC, C KH KW) @ cols (C KH KW, N OH OW)``; the
    padding is never materialised: each tap copies only the part of the input it sees."""
    n, c, h, w = x.shape
    oc, _, kh, kw = weight.shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = conv_out_size(h, kh, sh, ph), conv_out_size(w, kw, sw, pw)
    row_spans = [tap_span(i, sh, ph, h, oh) for i in range(kh)]  # (output rows, input rows) per tap row
    col_spans = [tap_span(j, sw, pw, w, ow) for j in range(kw)]
    cols = xp.empty((c, kh, kw, n, oh, ow), dtype=x.dtype)
    for i, (out_r, in_r) in enumerate(row_spans):
        for j, (out_c, in_c) in enumerate(col_spans):
            tap = cols[:, i, j]  # (C, N, OH, OW)
            tap[:, :, : out_r.start] = 0  # the outputs that read padding
            tap[:, :, out_r.stop :] = 0
            tap[:, :, out_r, : out_c.start] = 0
            tap[:, :, out_r, out_c.stop :] = 0
            tap[:, :, out_r, out_c] = x[:, :, in_r, in_c].transpose(1, 0, 2, 3)
    cols2 = cols.reshape(c * kh * kw, n * oh * ow)  # (CKK, N*L)
    W2 = weight.reshape(oc, c * kh * kw)  # (OC, CKK)
    out_cm = (W2 @ cols2).reshape(oc, n, oh, ow)
    y = xp.empty((n, oc, oh, ow), dtype=out_cm.dtype)
    if bias is not None:  # to (N, OC, OH, OW) and the bias added in the same pass
        xp.add(out_cm.transpose(1, 0, 2, 3), bias.reshape(1, oc, 1, 1), out=y)
    else:
        y[...] = out_cm.transpose(1, 0, 2, 3)
    y = activation_forward(xp, y, act, negative_slope)
    saved = (x.shape, (kh, kw), W2, cols2, y, stride, padding, act, negative_slope) if need_grad else None
    return y, saved


def conv2d_backward(xp, dy, saved, need_dx: bool = True, need_dW: bool = True, need_db: bool = True):
    """Gradients of conv2d_forward from dy (N, OC, OH, OW) -> (dx (N, C, H, W), dW (OC, C, KH, KW), db (OC,))."""
    x_shape, (kh, kw), W2, cols2, y, (sh, sw), (ph, pw), act, negative_slope = saved
    n, c, h, w = x_shape
    _, oc, oh, ow = dy.shape
    dz = activation_backward(xp, dy, y, act, negative_slope)  # (N, OC, OH, OW)
    g2 = xp.empty((oc, n, oh, ow), dtype=dz.dtype)
    g2[...] = dz.transpose(1, 0, 2, 3)
    g2 = g2.reshape(oc, n * oh * ow)  # (OC, N*L)
    dW = (g2 @ cols2.T).reshape(oc, c, kh, kw) if need_dW else None
    db = g2.sum(axis=1) if need_db else None
    dx = None
    if need_dx:
        if (sh, sw) == (1, 1):
            dx = _col2im_stride1(xp, W2.T, dz, (c, kh, kw), (ph, pw))
        else:
            row_spans = [tap_span(i, sh, ph, h, oh) for i in range(kh)]
            col_spans = [tap_span(j, sw, pw, w, ow) for j in range(kw)]
            dx = _col2im(xp, (W2.T @ g2).reshape(c, kh, kw, n, oh, ow), (h, w), row_spans, col_spans)
    return dx, dW, db


def _col2im(xp, dcols, hw, row_spans, col_spans):
    """dx (N, C, H, W) from dcols (C, KH, KW, N, OH, OW): the adjoint of conv2d's im2col, each tap's
    block added where it was read from (accumulated channel-major, the layout dcols has)."""
    c, kh, kw, n = dcols.shape[:4]
    dxc = xp.zeros((c, n) + tuple(hw), dtype=dcols.dtype)
    for i, (out_r, in_r) in enumerate(row_spans):
        for j, (out_c, in_c) in enumerate(col_spans):
            if out_r.stop > out_r.start and out_c.stop > out_c.start:
                dxc[:, :, in_r, in_c] += dcols[:, i, j, :, out_r, out_c]
    return dxc.transpose(1, 0, 2, 3)


def _col2im_stride1(xp, W2T, g4, ckk, pad):
    """dx (N, C, H, W) of a stride-1 convolution from W2T (C KH KW, OC) and the output gradient g4.

    In the padded input flattened per channel, ``flat[c, n*Hp*Wp + y*Wp + x]``, tap (i, j) of output
    (y, x) reads position ``q + i*Wp + j`` with ``q = n*Hp*Wp + y*Wp + x``: a constant shift. So with
    the output gradient laid out on that padded grid (zeros outside the OH x OW outputs), every tap's
    contribution is ONE contiguous shifted add, instead of a strided add per (channel, image, row)."""
    c, kh, kw = ckk
    ph, pw = pad
    n, oc, oh, ow = g4.shape
    hp, wp = oh + kh - 1, ow + kw - 1  # the padded input size
    grid = n * hp * wp
    g_pad = xp.empty((oc, n, hp, wp), dtype=g4.dtype)
    g_pad[:, :, oh:] = 0
    g_pad[:, :, :oh, ow:] = 0
    g_pad[:, :, :oh, :ow] = g4.transpose(1, 0, 2, 3)
    dcols = (W2T @ g_pad.reshape(oc, grid)).reshape(c, kh, kw, grid)  # 0 at the padding positions
    flat = xp.zeros((c, grid + (kh - 1) * wp + kw - 1), dtype=dcols.dtype)
    for i in range(kh):
        for j in range(kw):
            shift = i * wp + j
            flat[:, shift : shift + grid] += dcols[:, i, j]
    dxc = flat[:, :grid].reshape(c, n, hp, wp)[:, :, ph : hp - ph, pw : wp - pw]
    return dxc.transpose(1, 0, 2, 3)


# ----------------------------------------------------------------------------------------------
# pooling (NCHW): one strided view of the padded input per window tap
# ----------------------------------------------------------------------------------------------
POOL_MODES = ("max", "avg")


def pad_hw(xp, x, ph: int, pw: int, value=0.0, out=None):
    """x (N, C, H, W) with ``ph`` rows and ``pw`` columns of ``value`` on each side (x itself when both are 0):
    one copy into a new array (or into ``out``, of that shape) whose border strips are filled (xp.pad costs
    about twice that)."""
    if ph == 0 and pw == 0:
        return x
    n, c, h, w = x.shape
    if out is None:
        out = xp.empty((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    out[:, :, :ph] = value
    out[:, :, ph + h :] = value
    out[:, :, ph : ph + h, :pw] = value
    out[:, :, ph : ph + h, pw + w :] = value
    out[:, :, ph : ph + h, pw : pw + w] = x
    return out


def pool2d_forward(
    xp, x, mode: str, kernel_size, stride, padding, count_include_pad: bool = True, need_grad: bool = True
):
    """Max or mean over each window.  x (N, C, H, W) -> (y (N, C, OH, OW), saved).

    max: a running maximum over the KH*KW taps (NaN propagates); with ``need_grad``, ``arg`` records the
    tap whose element wins each window under PyTorch's CPU rule -- the element replaces the running
    winner when it is greater or NaN, starting from the window's first in-bounds element -- so ties go
    to the first maximum, NaNs to the last NaN. avg: the sum over the taps divided by KH*KW (or by the
    count of in-bounds cells when ``count_include_pad`` is False)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    n, c, h, w = x.shape
    oh, ow = conv_out_size(h, kh, sh, ph), conv_out_size(w, kw, sw, pw)
    if mode == "max":
        xpad = pad_hw(xp, x, ph, pw, value=-math.inf)
        taps = [xpad[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw] for i in range(kh) for j in range(kw)]
        y = taps[0].copy()  # (N, C, OH, OW)
        arg = None
        if need_grad:  # start at each window's first in-bounds tap: row i0 = max(0, ph - o sh), likewise j0
            i0 = xp.maximum(ph - xp.arange(oh) * sh, 0)
            j0 = xp.maximum(pw - xp.arange(ow) * sw, 0)
            first = (i0[:, None] * kw + j0[None, :]).astype(xp.int8 if kh * kw <= 127 else xp.int32)
            arg = xp.empty(y.shape, dtype=first.dtype)
            arg[...] = first
        for k in range(1, len(taps)):
            if arg is not None:
                # arg = k where this tap replaces the winner; k exceeds every earlier arg that a tap at or
                # after the window's first in-bounds one can hold, so that is max(arg, k * replaces)
                replaces = (taps[k] > y) | xp.isnan(taps[k])
                xp.maximum(arg, replaces.astype(arg.dtype) * arg.dtype.type(k), out=arg)
            xp.maximum(y, taps[k], out=y)  # NaN propagates
        saved = (mode, x.shape, xpad.shape, kernel_size, stride, padding, arg) if need_grad else None
        return y, saved
    if mode != "avg":
        raise ValueError(f"pool2d mode must be one of {POOL_MODES}, got {mode!r}")
    xpad = pad_hw(xp, x, ph, pw)
    total = xp.zeros((n, c, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            total += xpad[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw]
    if count_include_pad or (ph == 0 and pw == 0):
        divisor = x.dtype.type(kh * kw)
    else:  # count the real (unpadded) cells of each window
        ones = pad_hw(xp, xp.ones((1, 1, h, w), dtype=x.dtype), ph, pw)
        divisor = sum(ones[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw] for i in range(kh) for j in range(kw))
    y = total / divisor
    saved = (mode, x.shape, xpad.shape, kernel_size, stride, padding, divisor) if need_grad else None
    return y, saved


def pool2d_backward(xp, dy, saved):
    """dx (N, C, H, W) of pool2d_forward from dy (N, C, OH, OW)."""
    mode, (n, c, h, w), pad_shape, (kh, kw), (sh, sw), (ph, pw), extra = saved
    oh, ow = dy.shape[2:]
    disjoint = sh >= kh and sw >= kw  # each input cell is in at most one window
    covered = disjoint and (sh, sw) == (kh, kw) and ph == pw == 0 and (oh * kh, ow * kw) == (h, w)
    dxpad = (xp.empty if covered else xp.zeros)(pad_shape, dtype=dy.dtype)
    g = dy / extra if mode == "avg" else dy
    for k in range(kh * kw):
        i, j = divmod(k, kw)
        window_cells = dxpad[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw]
        part = xp.where(extra == k, g, g.dtype.type(0)) if mode == "max" else g  # (not g * mask: inf * 0)
        if disjoint:
            window_cells[...] = part
        else:
            window_cells += part
    return dxpad[:, :, ph : ph + h, pw : pw + w]


def _decayed_grad(param, grad, weight_decay: float, maximize: bool):
    """g = (-grad if maximize else grad) + weight_decay * param: the start of every update below."""
    g = -grad if maximize else grad
    if weight_decay != 0:
        g = g + param.dtype.type(weight_decay) * param
    return g


def adagrad_step(
    xp,
    param,
    grad,
    state_sum,
    *,
    step: int,
    lr: float = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    eps: float = 1e-10,
    maximize: bool = False,
):
    """PyTorch Adagrad on one flat buffer, in place; ``step`` counts this update (1 on the first call).

    g = ±grad + wd * param;   clr = lr / (1 + (step - 1) * lr_decay)
    sum += g * g;   param -= clr * g / (sqrt(sum) + eps)
    """
    dt = param.dtype.type
    g = _decayed_grad(param, grad, weight_decay, maximize)
    clr = lr / (1 + (step - 1) * lr_decay)
    state_sum += g * g
    std = xp.sqrt(state_sum) + dt(eps)
    param -= dt(clr) * g / std


def adadelta_step(
    xp,
    param,
    grad,
    square_avg,
    acc_delta,
    *,
    lr: float = 1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    maximize: bool = False,
):
    """PyTorch Adadelta on one flat buffer, in place.

    g = ±grad + wd * param
    square_avg = rho * square_avg + (1 - rho) * g^2
    delta = sqrt(acc_delta + eps) / sqrt(square_avg + eps) * g
    acc_delta = rho * acc_delta + (1 - rho) * delta^2;   param -= lr * delta
    """
    dt = param.dtype.type
    g = _decayed_grad(param, grad, weight_decay, maximize)
    square_avg *= dt(rho)
    square_avg += dt(1 - rho) * (g * g)
    std = xp.sqrt(square_avg + dt(eps))
    delta = xp.sqrt(acc_delta + dt(eps)) / std * g
    acc_delta *= dt(rho)
    acc_delta += dt(1 - rho) * (delta * delta)
    param -= dt(lr) * delta


def rmsprop_step(
    xp,
    param,
    grad,
    square_avg,
    momentum_buf=None,
    grad_avg=None,
    *,
    lr: float = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    maximize: bool = False,
):
    """PyTorch RMSprop on one flat buffer, in place (momentum_buf used when momentum > 0, grad_avg when
    centered; otherwise they may be None).

        g = ±grad + wd * param;   square_avg = alpha * square_avg + (1 - alpha) * g^2
        centered: grad_avg = lerp(grad_avg, g, 1 - alpha);  avg = sqrt(square_avg - grad_avg^2) + eps
        else:     avg = sqrt(square_avg) + eps
        momentum: buf = momentum * buf + g / avg;  param -= lr * buf      else: param -= lr * g / avg
    """
    dt = param.dtype.type
    g = _decayed_grad(param, grad, weight_decay, maximize)
    square_avg *= dt(alpha)
    square_avg += dt(1 - alpha) * (g * g)
    if centered:
        grad_avg += dt(1 - alpha) * (g - grad_avg)  # torch's lerp for a weight below 0.5
        avg = xp.sqrt(square_avg - grad_avg * grad_avg) + dt(eps)
    else:
        avg = xp.sqrt(square_avg) + dt(eps)
    if momentum > 0:
        momentum_buf *= dt(momentum)
        momentum_buf += g / avg
        param -= dt(lr) * momentum_buf
    else:
        param -= dt(lr) * g / avg
