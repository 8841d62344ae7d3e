"""``Linear`` and ``Identity``."""

from __future__ import annotations

import gpunn.nn.functional as F
from gpunn.backend import get_backend
from gpunn.nn import init
from gpunn.nn.module import Module
from gpunn.nn.parameter import Parameter
from gpunn.tensor import Tensor, default_float

__all__ = ["Linear", "Identity"]


def _empty(shape, dtype) -> Tensor:
    be = get_backend()
    return Tensor._wrap(be.xp.zeros(shape, dtype=default_float if dtype is None else dtype), be)


class Identity(Module):
    """Returns its input unchanged (any constructor arguments are ignored, as in PyTorch)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__()

    def forward(self, input):  # noqa: A002
        return input


class Linear(Module):
    """y = x @ W.T + b.  x: (*, in_features) -> (*, out_features); W: (out_features, in_features).

    Initialised like PyTorch: W ~ kaiming_uniform_(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)), and
    b ~ U(-1/sqrt(in), 1/sqrt(in)).
    >>> nn.Linear(784, 200)(gpunn.randn(32, 784)).shape
    (32, 200)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        if in_features < 0 or out_features < 0:
            raise ValueError(f"Linear: in_features and out_features must be >= 0, got {in_features}, {out_features}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.weight = Parameter(_empty((self.out_features, self.in_features), dtype))
        if bias:
            self.bias = Parameter(_empty((self.out_features,), dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()
        if device is not None:  # as PyTorch's factory kwargs: the same as .to(device) after construction
            self.to(device)

    def reset_parameters(self) -> None:
        """PyTorch's default init (see the class docstring)."""
        init.default_layer_init_(self.weight, self.bias)

    def _check_input(self, input) -> None:  # noqa: A002
        if not isinstance(input, Tensor):
            raise TypeError(f"Linear: expected a gpunn Tensor, got {type(input).__name__}")
        if input.ndim == 0 or input.shape[-1] != self.in_features:
            got = input.shape[-1] if input.ndim else "a 0-d tensor"
            raise ValueError(
                f"Linear(in_features={self.in_features}): the input's last dimension is {got}, "
                f"expected {self.in_features} (input shape {input.shape})"
            )

    def _forward_act(self, input, activation=None, negative_slope: float = 0.01):  # noqa: A002
        """act(x @ W.T + b) in one fused op (used by Sequential to fuse Linear + activation)."""
        self._check_input(input)
        return F.linear(input, self.weight, self.bias, activation=activation, negative_slope=negative_slope)

    def forward(self, input):  # noqa: A002
        return self._forward_act(input)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
