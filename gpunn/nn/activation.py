"""Activation modules: ``ReLU``, ``LeakyReLU``, ``Sigmoid``, ``Tanh``, ``ELU``, ``GELU``, ``Softplus``,
``Softmax``, ``LogSoftmax``, and the rest of ``torch.nn``'s elementwise ones (``ReLU6``, ``Hardtanh``, ``SELU``, ...),
each a thin module over its ``F`` function.

``inplace=True`` is accepted for PyTorch compatibility; the result is always a new tensor."""

from __future__ import annotations

import warnings

import gpunn.nn.functional as F
from gpunn.nn.module import Module

__all__ = ["ReLU", "LeakyReLU", "Sigmoid", "Tanh", "ELU", "GELU", "Softplus", "Softmax", "LogSoftmax"]
__all__ += ["ReLU6", "Hardtanh", "SELU", "CELU", "Mish", "Hardswish", "Hardsigmoid", "Softshrink", "Hardshrink"]
__all__ += ["Threshold", "LogSigmoid", "Softsign", "Tanhshrink", "Softmin", "GLU", "PReLU"]


class ReLU(Module):
    """max(x, 0), elementwise."""

    fused_activation = "relu"  # the name Sequential passes to F.linear when fusing Linear + this

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, input):  # noqa: A002
        return F.relu(input, inplace=self.inplace)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class LeakyReLU(Module):
    """x if x > 0 else negative_slope * x."""

    fused_activation = "leaky_relu"

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope = negative_slope
        self.inplace = inplace

    def forward(self, input):  # noqa: A002
        return F.leaky_relu(input, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class Sigmoid(Module):
    """1 / (1 + exp(-x))."""

    fused_activation = "sigmoid"

    def forward(self, input):  # noqa: A002
        return F.sigmoid(input)


class Tanh(Module):
    """tanh(x)."""

    fused_activation = "tanh"

    def forward(self, input):  # noqa: A002
        return F.tanh(input)


class ELU(Module):
    """x if x > 0 else alpha * (exp(x) - 1)."""

    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        self.alpha = alpha
        self.inplace = inplace

    def forward(self, input):  # noqa: A002
        return F.elu(input, self.alpha, self.inplace)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}" + (", inplace=True" if self.inplace else "")


class SiLU(Module):
    """x * sigmoid(x)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, input):  # noqa: A002
        return F.silu(input, self.inplace)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class GELU(Module):
    """x * Phi(x) (``approximate='none'``) or its tanh approximation (``'tanh'``)."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, input):  # noqa: A002
        return F.gelu(input, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Softplus(Module):
    """log(1 + exp(beta x)) / beta, linear (x) where beta x > threshold."""

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta = beta
        self.threshold = threshold

    def forward(self, input):  # noqa: A002
        return F.softplus(input, self.beta, self.threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


class Softmax(Module):
    """exp(x) / sum(exp(x)) along ``dim`` (pass dim explicitly; None picks PyTorch's legacy default)."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input):  # noqa: A002
        return F.softmax(input, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Module):
    """log(softmax(x)) along ``dim``, computed stably."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input):  # noqa: A002
        return F.log_softmax(input, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Hardtanh(Module):
    """x clamped to [min_val, max_val]."""

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False, min_value=None,
                 max_value=None) -> None:  # fmt: skip
        super().__init__()
        # PyTorch's deprecated spellings, with its FutureWarning
        if min_value is not None:
            warnings.warn("keyword argument `min_value` is deprecated and renamed to `min_val`", FutureWarning,
                          stacklevel=2)  # fmt: skip
            min_val = min_value
        if max_value is not None:
            warnings.warn("keyword argument `max_value` is deprecated and renamed to `max_val`", FutureWarning,
                          stacklevel=2)  # fmt: skip
            max_val = max_value
        self.min_val, self.max_val, self.inplace = min_val, max_val, inplace
        if max_val <= min_val:
            raise AssertionError("Hardtanh: max_val must be greater than min_val")

    def forward(self, input):  # noqa: A002
        return F.hardtanh(input, self.min_val, self.max_val, self.inplace)

    def extra_repr(self) -> str:
        return f"min_val={self.min_val}, max_val={self.max_val}" + (", inplace=True" if self.inplace else "")


class ReLU6(Hardtanh):
    """min(max(x, 0), 6)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__(0.0, 6.0, inplace)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class _Elementwise(Module):
    """A module that calls ``F.<fn>(input, **its arguments)``; ``extra_repr`` lists them as PyTorch does."""

    _fn = ""
    _repr_args: tuple = ()

    def forward(self, input):  # noqa: A002
        return getattr(F, self._fn)(input, *(getattr(self, a) for a in self._args))

    _args: tuple = ()

    def extra_repr(self) -> str:
        parts = [f"{a}={getattr(self, a)}" for a in self._repr_args]
        if getattr(self, "inplace", False):
            parts.append("inplace=True")
        return ", ".join(parts)


class SELU(_Elementwise):
    """scale * elu(x, alpha), PyTorch's self-normalising constants."""

    _fn, _args = "selu", ("inplace",)

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace


class CELU(_Elementwise):
    """x if x > 0 else alpha (exp(x / alpha) - 1)."""

    _fn, _args, _repr_args = "celu", ("alpha", "inplace"), ("alpha",)

    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        self.alpha, self.inplace = alpha, inplace


class Mish(_Elementwise):
    """x tanh(softplus(x))."""

    _fn, _args = "mish", ("inplace",)

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace


class Hardswish(Mish):
    """x relu6(x + 3) / 6."""

    _fn = "hardswish"


class Hardsigmoid(Mish):
    """relu6(x + 3) / 6."""

    _fn = "hardsigmoid"


class Softshrink(_Elementwise):
    """x -+ lambd outside [-lambd, lambd], 0 inside."""

    _fn, _args = "softshrink", ("lambd",)

    def __init__(self, lambd: float = 0.5) -> None:
        super().__init__()
        self.lambd = lambd

    def extra_repr(self) -> str:
        return str(self.lambd)


class Hardshrink(Softshrink):
    """x outside [-lambd, lambd], 0 inside."""

    _fn = "hardshrink"


class Threshold(_Elementwise):
    """``value`` where x <= threshold, else x."""

    _fn, _args = "threshold", ("threshold", "value", "inplace")

    def __init__(self, threshold: float, value: float, inplace: bool = False) -> None:
        super().__init__()
        self.threshold, self.value, self.inplace = threshold, value, inplace

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, value={self.value}" + (", inplace=True" if self.inplace else "")


class LogSigmoid(_Elementwise):
    """log(sigmoid(x))."""

    _fn = "logsigmoid"


class Softsign(_Elementwise):
    """x / (1 + |x|)."""

    _fn = "softsign"


class Tanhshrink(_Elementwise):
    """x - tanh(x)."""

    _fn = "tanhshrink"


class Softmin(_Elementwise):
    """softmax(-x) along ``dim``."""

    _fn, _args, _repr_args = "softmin", ("dim",), ("dim",)

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim


class GLU(_Elementwise):
    """a * sigmoid(b), the halves of x along ``dim``."""

    _fn, _args, _repr_args = "glu", ("dim",), ("dim",)

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim


class PReLU(Module):
    """x where x > 0, else a * x with a learned slope ``a`` (``num_parameters``: 1 or one per channel,
    initialised to ``init``)."""

    def __init__(self, num_parameters: int = 1, init: float = 0.25, device=None, dtype=None) -> None:
        from gpunn.nn.batchnorm import _filled
        from gpunn.nn.parameter import Parameter

        super().__init__()
        self.num_parameters, self.init = num_parameters, init
        self.weight = Parameter(_filled((num_parameters,), init, dtype))
        if device is not None:
            self.to(device)

    def forward(self, input):  # noqa: A002
        return F.prelu(input, self.weight)

    def extra_repr(self) -> str:
        return f"num_parameters={self.num_parameters}"
