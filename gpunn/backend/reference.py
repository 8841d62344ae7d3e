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
"""

from __future__ import annotations

import math

ACTIVATIONS = ("none", "relu", "leaky_relu", "sigmoid", "tanh")
REDUCTIONS = ("mean", "sum", "none")


# ----------------------------------------------------------------------------------------------
# activations: forward from the pre-activation z, derivative from the output y
# ----------------------------------------------------------------------------------------------
def activation_forward(xp, z, act: str, negative_slope: float = 0.01):
    """y = act(z), elementwise; ``z`` may be overwritten (it is a fresh temporary)."""
    if act == "none":
        return z
    if act == "relu":
        return xp.maximum(z, 0, out=z)
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
    if act == "relu":
        return dy * (y > 0)
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
def linear_act(xp, x, W, b, act: str = "none", negative_slope: float = 0.01):
    """y = act(x @ W.T + b).  x: (N, K), W: (M, K), b: (M,) or None  ->  y: (N, M)."""
    z = x @ W.T  # (N, M), a fresh array the activation may overwrite
    if b is not None:
        z += b
    return activation_forward(xp, z, act, negative_slope)


def linear_act_backward(
    xp, dy, x, W, y, act: str = "none", negative_slope: float = 0.01,
    need_dx: bool = True, need_dW: bool = True, need_db: bool = True,
):
    """Gradients of y = act(x @ W.T + b).  dy, y: (N, M)  ->  dx (N, K), dW (M, K), db (M,)."""
    dz = activation_backward(xp, dy, y, act, negative_slope)  # (N, M)
    dx = dz @ W if need_dx else None  # (N, M) @ (M, K)
    dW = dz.T @ x if need_dW else None  # (M, N) @ (N, K)
    db = dz.sum(axis=0) if need_db else None  # (M,)
    return dx, dW, db


# ----------------------------------------------------------------------------------------------
# fused softmax + cross-entropy: loss and dlogits in one pass
# ----------------------------------------------------------------------------------------------
def check_labels(xp, target, num_classes: int, ignore_index: int) -> None:
    """Raise ValueError naming the first label outside [0, num_classes) that is not ignore_index."""
    bad = (target != ignore_index) & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        raise ValueError(f"target label {int(target[bad][0])} is out of range for {num_classes} classes "
                         f"(labels must be in [0, {num_classes - 1}] or equal ignore_index={ignore_index})")


def softmax_cross_entropy(
    xp, logits, target, weight=None, reduction: str = "mean", ignore_index: int = -100,
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

    if reduction == "none":
        return loss_rows, grad.astype(dt, copy=False)
    if reduction == "sum":
        return xp.asarray(loss_rows.sum(dtype=xp.float64), dtype=dt), grad.astype(dt, copy=False)
    if reduction == "mean":
        denom = w_row.sum(dtype=xp.float64)
        loss = loss_rows.sum(dtype=xp.float64) / denom if float(denom) != 0 else xp.float64(math.nan)
        scale = (1.0 / denom) if float(denom) != 0 else math.nan
        return xp.asarray(loss, dtype=dt), (grad * dt.type(scale)).astype(dt, copy=False)
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


# ----------------------------------------------------------------------------------------------
# optimizer steps over flat 1-D buffers, in place
# ----------------------------------------------------------------------------------------------
def sgd_step(
    xp, param, grad, momentum_buf, *, lr: float, momentum: float = 0.0, dampening: float = 0.0,
    weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False, first_step: bool = False,
):
    """PyTorch SGD on one flat buffer.  param, grad, momentum_buf: (P,) same dtype; momentum_buf may be
    None when momentum == 0.

        g = -grad if maximize else grad;  g += weight_decay * param
        buf = g (first step) or momentum * buf + (1 - dampening) * g
        g = g + momentum * buf (nesterov) or buf
        param -= lr * g
    """
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
    xp, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, step: int, lr: float,
    beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False, amsgrad: bool = False, maximize: bool = False,
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


def _decayed_grad(param, grad, weight_decay: float, maximize: bool):
    """g = (-grad if maximize else grad) + weight_decay * param: the start of every update below."""
    g = -grad if maximize else grad
    if weight_decay != 0:
        g = g + param.dtype.type(weight_decay) * param
    return g


def adagrad_step(
    xp, param, grad, state_sum, *, step: int, lr: float = 1e-2, lr_decay: float = 0.0,
    weight_decay: float = 0.0, eps: float = 1e-10, maximize: bool = False,
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
    xp, param, grad, square_avg, acc_delta, *, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
    weight_decay: float = 0.0, maximize: bool = False,
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
    xp, param, grad, square_avg, momentum_buf=None, grad_avg=None, *, lr: float = 1e-2, alpha: float = 0.99,
    eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
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
