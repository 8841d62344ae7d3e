"""Weight penalties to add to a loss: L1, L2 and elastic net, differentiable (built from Tensor ops).

>>> loss = criterion(model(x), y) + l2_penalty(weights(model), 1e-4)

Relation to weight decay: ``optim.SGD(..., weight_decay=lam)`` adds ``lam * w`` to each gradient,
which is the gradient of ``(lam / 2) * sum(w^2)``; so ``l2_penalty(params, lam / 2)`` reproduces it
(for the same parameters; ``weight_decay`` usually applies to biases too).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from gpunn.nn.module import Module
from gpunn.nn.parameter import Parameter
from gpunn.tensor import Tensor

__all__ = ["l1_penalty", "l2_penalty", "elastic_net_penalty", "weights"]


def weights(model: Module) -> Iterator[Parameter]:
    """The weight matrices and kernels of ``model`` (parameters with >= 2 dimensions), not the biases."""
    for p in model.parameters():
        if p.ndim >= 2:
            yield p


def _as_list(params, fname: str) -> list[Tensor]:
    if isinstance(params, Module):
        raise TypeError(
            f"{fname}: pass tensors, e.g. weights(model) (weights only) or model.parameters() "
            "(biases too), not the Module itself"
        )
    if isinstance(params, Tensor):
        return [params]
    params = list(params)
    for p in params:
        if not isinstance(p, Tensor):
            raise TypeError(f"{fname}: expected gpunn Tensors, got {type(p).__name__}")
    return params


def _zero():
    from gpunn.factories import tensor

    return tensor(0.0)


def _sum_abs(params: list[Tensor]) -> Tensor:
    total = None
    for p in params:
        s = p.abs().sum()
        total = s if total is None else total + s
    return total if total is not None else _zero()


def _sum_sq(params: list[Tensor]) -> Tensor:
    total = None
    for p in params:
        s = (p * p).sum()
        total = s if total is None else total + s
    return total if total is not None else _zero()


def l1_penalty(params: Iterable[Tensor], weight: float) -> Tensor:
    """weight * sum_p sum |p|, a scalar Tensor (gradient weight * sign(p); 0 at p == 0)."""
    return _sum_abs(_as_list(params, "l1_penalty")) * float(weight)


def l2_penalty(params: Iterable[Tensor], weight: float) -> Tensor:
    """weight * sum_p sum p^2, a scalar Tensor (gradient 2 * weight * p). Note: SGD's
    ``weight_decay=lam`` equals ``l2_penalty(params, lam / 2)``."""
    return _sum_sq(_as_list(params, "l2_penalty")) * float(weight)


def elastic_net_penalty(params: Iterable[Tensor], l1: float, l2: float) -> Tensor:
    """l1 * sum |p| + l2 * sum p^2, a scalar Tensor."""
    params = _as_list(params, "elastic_net_penalty")
    return _sum_abs(params) * float(l1) + _sum_sq(params) * float(l2)
