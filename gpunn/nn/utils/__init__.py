"""``gpunn.nn.utils``: gradient clipping and flat parameter vectors, as ``torch.nn.utils``; ``rnn.pad_sequence``.

>>> loss.backward()
>>> total = nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)   # the norm before clipping
>>> opt.step()
"""

from __future__ import annotations

import math

import numpy as np

from gpunn.grad_mode import no_grad
from gpunn.nn.utils import rnn  # noqa: F401  (torch.nn.utils.rnn)
from gpunn.tensor import Tensor, _check_same_backend

__all__ = ["clip_grad_norm_", "clip_grad_value_", "get_total_norm", "parameters_to_vector", "vector_to_parameters"]


def _as_list(parameters) -> list:
    if isinstance(parameters, Tensor):
        return [parameters]
    return list(parameters)


def _norm_type(norm_type) -> float:
    if isinstance(norm_type, str) and norm_type in ("inf", "-inf"):
        return float(norm_type)
    try:
        return float(norm_type)
    except (TypeError, ValueError):
        raise ValueError(f"norm_type must be a number or 'inf', got {norm_type!r}") from None


def _vector_norm(xp, a, p: float):
    a = xp.abs(a)
    if p == math.inf:
        return a.max() if a.size else xp.zeros((), a.dtype)
    if p == -math.inf:
        return a.min() if a.size else xp.full((), math.inf, a.dtype)
    if p == 0:
        return (a != 0).sum().astype(a.dtype)
    if p == 1:
        return a.sum()
    if p == 2:
        return xp.sqrt((a * a).sum())
    return (a**p).sum() ** (1.0 / p)


def get_total_norm(tensors, norm_type=2.0, error_if_nonfinite: bool = False, foreach=None) -> Tensor:
    """The ``norm_type`` norm of the norms of ``tensors`` (one vector of all their elements); 0 for none."""
    tensors = [t for t in _as_list(tensors) if t is not None]
    p = _norm_type(norm_type)
    if not tensors:
        return Tensor._wrap(np.zeros((), np.float32), _default_backend())
    first = tensors[0]
    for t in tensors[1:]:
        _check_same_backend(first, t, "clip_grad_norm_")
    xp = first._backend.xp
    dtype = np.result_type(*[t.dtype for t in tensors])
    norms = xp.stack([_vector_norm(xp, t._data, p).astype(dtype) for t in tensors])
    total = _vector_norm(xp, norms, p)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so it cannot "
            "be clipped. To disable this error and scale the gradients by the non-finite norm anyway, set "
            "`error_if_nonfinite=False`"
        )
    return Tensor._wrap(total, first._backend)


def _default_backend():
    from gpunn.backend import get_backend

    return get_backend()


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite: bool = False, foreach=None) -> Tensor:
    """Scale the gradients of ``parameters`` in place so that their total ``norm_type`` norm is at most
    ``max_norm`` (factor ``min(1, max_norm / (norm + 1e-6))``, applied even when it is 1, as in PyTorch);
    returns the total norm before clipping (a 0-d Tensor on the gradients' device). A NaN or inf norm
    makes every gradient NaN unless ``error_if_nonfinite`` raises first."""
    grads = [p.grad for p in _as_list(parameters) if p.grad is not None]
    total = get_total_norm(grads, norm_type, error_if_nonfinite)
    if not grads:
        return total
    xp = total._backend.xp
    coef = xp.minimum(float(max_norm) / (total._data + total._data.dtype.type(1e-6)), total._data.dtype.type(1.0))
    # inf * 0 -> NaN is the documented result (a GradScaler's overflow step meets it), not a NumPy warning
    with no_grad(), np.errstate(invalid="ignore"):
        for g in grads:
            g._data *= coef.astype(g.dtype)
            g._bump_version("clip_grad_norm_")
    return total


def clip_grad_value_(parameters, clip_value, foreach=None) -> None:
    """Clamp every gradient of ``parameters`` to ``[-clip_value, clip_value]`` in place."""
    c = float(clip_value)
    with no_grad():
        for p in _as_list(parameters):
            if p.grad is not None:
                g = p.grad._data
                xp = p.grad._backend.xp
                xp.clip(g, -c, c, out=g)
                p.grad._bump_version("clip_grad_value_")


def parameters_to_vector(parameters) -> Tensor:
    """One 1-D tensor of every parameter's elements, in order (differentiable, a copy)."""
    from gpunn.ops.shape import cat

    params = _as_list(parameters)
    if not params:
        raise RuntimeError("parameters_to_vector: expected a non-empty list of parameters")
    return cat([p.reshape(-1) for p in params])


def vector_to_parameters(vec, parameters) -> None:
    """Copy consecutive slices of the 1-D ``vec`` into ``parameters`` (in order; PyTorch makes the
    parameters alias ``vec``, here they keep their own storage and take its values)."""
    if not isinstance(vec, Tensor):
        raise TypeError(f"expected a gpunn Tensor, but got: {type(vec).__name__}")
    if vec.ndim != 1:
        raise RuntimeError(f"vector_to_parameters: vec must be 1-D, got shape {tuple(vec.shape)}")
    params = _as_list(parameters)
    n = sum(p.numel() for p in params)
    if n != vec.numel():
        raise RuntimeError(f"vector_to_parameters: vec has {vec.numel()} elements, the parameters {n}")
    i = 0
    with no_grad():
        for p in params:
            k = p.numel()
            p.copy_(vec[i : i + k].reshape(p.shape))
            i += k
