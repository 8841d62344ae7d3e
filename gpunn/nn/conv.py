"""``Conv2d``: 2-D convolution (cross-correlation) over NCHW inputs; ``ConvTranspose2d``: its adjoint."""

from __future__ import annotations

import gpunn.nn.functional as F
from gpunn.nn import init
from gpunn.nn.linear import _empty
from gpunn.nn.module import Module
from gpunn.nn.parameter import Parameter
from gpunn.tensor import Tensor

__all__ = ["Conv1d", "Conv2d", "ConvTranspose2d"]


def _pair(v, name: str) -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    v = tuple(v)
    if len(v) != 2 or not all(isinstance(a, int) for a in v):
        raise ValueError(f"Conv2d: {name} must be an int or a pair of ints, got {v}")
    return v


class Conv2d(Module):
    """y[n, o] = b[o] + sum_c W[o, c] (*) x[n, c].  x: (N, C_in, H, W) -> (N, C_out, OH, OW),
    OH = (H + 2 * padding - kH) // stride + 1; W: (C_out, C_in, kH, kW).

    Initialised like PyTorch: W ~ kaiming_uniform_(a=sqrt(5)), b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    with fan_in = C_in * kH * kW.
    >>> nn.Conv2d(1, 8, 3, padding=1)(gpunn.randn(4, 1, 28, 28)).shape
    (4, 8, 28, 28)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if in_channels <= 0 or out_channels <= 0:
            raise ValueError(
                f"Conv2d: in_channels and out_channels must be positive, got {in_channels}, {out_channels}"
            )
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(F._conv_padding(padding, self.kernel_size, stride, dilation, "Conv2d"), "padding")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(
                f"Conv2d: kernel_size and stride must be >= 1 and padding >= 0, got "
                f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
            )
        self.dilation = _pair(dilation, "dilation")
        if min(self.dilation) < 1:
            raise ValueError(f"Conv2d: dilation must be >= 1, got {self.dilation}")
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"Conv2d: groups must be a positive int, got {groups!r}")
        if self.in_channels % groups or self.out_channels % groups:
            raise ValueError(
                f"Conv2d: in_channels ({in_channels}) and out_channels ({out_channels}) must both be "
                f"divisible by groups ({groups})"
            )
        if padding_mode != "zeros":
            raise NotImplementedError(f"Conv2d: padding_mode={padding_mode!r} is not supported (only 'zeros')")
        self.groups = groups
        self.padding_mode = padding_mode
        _conv_parameters(self, (self.out_channels, self.in_channels // groups) + self.kernel_size, bias, device, dtype)

    def reset_parameters(self) -> None:
        """PyTorch's default init."""
        init.default_layer_init_(self.weight, self.bias)

    def forward(self, input):  # noqa: A002
        return self._forward_act(input)

    def _forward_act(self, input, activation=None, negative_slope: float = 0.01):  # noqa: A002
        """act(conv2d(x) + b) in one op (Sequential fuses Conv2d + activation through it)."""
        if not isinstance(input, Tensor):
            raise TypeError(f"Conv2d: expected a gpunn Tensor, got {type(input).__name__}")
        if input.ndim not in (3, 4):  # (C, H, W) is one unbatched image, as in PyTorch
            raise ValueError(
                f"Conv2d: expected a 4-D input (N, C, H, W) or 3-D (C, H, W), got {input.ndim}-D input of "
                f"shape {input.shape}"
            )
        if input.shape[-3] != self.in_channels:
            raise ValueError(
                f"Conv2d(in_channels={self.in_channels}): input has {input.shape[-3]} channels, "
                f"expected {self.in_channels} (input shape {input.shape})"
            )
        if self.padding_mode != "zeros":  # set after construction: PyTorch would pad otherwise, not with zeros
            raise NotImplementedError(f"Conv2d: padding_mode={self.padding_mode!r} is not supported (only 'zeros')")
        return F.conv2d(
            input,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            activation=activation,
            negative_slope=negative_slope,
        )

    def extra_repr(self) -> str:
        return _conv_repr(self)


class ConvTranspose2d(Module):
    """The transposed convolution (F.conv_transpose2d): (N, C_in, H, W) -> (N, C_out, OH, OW) with
    OH = (H - 1) stride - 2 padding + dilation (kH - 1) + output_padding + 1; W: (C_in, C_out / groups, kH, kW),
    initialised as PyTorch does (kaiming_uniform_(a=sqrt(5)) over fan_in = C_out / groups * kH * kW).
    >>> nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)(gpunn.randn(2, 16, 7, 7)).shape
    (2, 8, 14, 14)
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, output_padding=0,
        groups: int = 1, bias: bool = True, dilation=1, padding_mode: str = "zeros", device=None, dtype=None,
    ) -> None:  # fmt: skip
        super().__init__()
        if padding_mode != "zeros":
            raise ValueError('Only "zeros" padding mode is supported for ConvTranspose2d')
        if in_channels % groups or out_channels % groups:
            raise ValueError("in_channels and out_channels must be divisible by groups")
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(out_channels), groups
        self.kernel_size, self.stride = _pair(kernel_size, "kernel_size"), _pair(stride, "stride")
        self.padding, self.output_padding = _pair(padding, "padding"), _pair(output_padding, "output_padding")
        self.dilation, self.padding_mode = _pair(dilation, "dilation"), padding_mode
        _conv_parameters(self, (self.in_channels, self.out_channels // groups) + self.kernel_size, bias, device, dtype)

    def reset_parameters(self) -> None:
        init.default_layer_init_(self.weight, self.bias)

    def forward(self, input, output_size=None):  # noqa: A002
        if output_size is not None:
            raise NotImplementedError("ConvTranspose2d(output_size=...) is not supported by gpunn; set output_padding")
        return F.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding, self.output_padding,
                                  self.groups, self.dilation)  # fmt: skip

    def extra_repr(self) -> str:
        return _conv_repr(self)


class Conv1d(Module):
    """y[n, o] = b[o] + sum_c W[o, c] (*) x[n, c] along L: (N, C_in, L) -> (N, C_out, OL); W (C_out, C_in / groups,
    K), initialised as PyTorch's (kaiming_uniform_(a=sqrt(5)) and the bias from U(-1/sqrt(fan_in), ...)).
    See ``F.conv1d``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None,
                 dtype=None) -> None:  # fmt: skip
        super().__init__()
        if padding_mode != "zeros":
            raise NotImplementedError(f"Conv1d: padding_mode={padding_mode!r} is not supported (only 'zeros')")
        if in_channels % groups or out_channels % groups:
            raise ValueError("in_channels and out_channels must be divisible by groups")
        one = F._single
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(out_channels), groups
        self.kernel_size = (one(kernel_size, "kernel_size", "Conv1d"),)
        self.stride, self.dilation = (one(stride, "stride", "Conv1d"),), (one(dilation, "dilation", "Conv1d"),)
        self.padding = padding if isinstance(padding, str) else (one(padding, "padding", "Conv1d"),)
        self.padding_mode = padding_mode
        _conv_parameters(self, (self.out_channels, self.in_channels // groups) + self.kernel_size, bias, device, dtype)

    def reset_parameters(self) -> None:
        init.default_layer_init_(self.weight, self.bias)

    def forward(self, input):  # noqa: A002
        padding = self.padding if isinstance(self.padding, str) else self.padding[0]
        return F.conv1d(input, self.weight, self.bias, self.stride[0], padding, self.dilation[0], self.groups)

    def extra_repr(self) -> str:
        return _conv_repr(self)


def _conv_repr(m) -> str:
    """PyTorch's _ConvNd.extra_repr: the non-default settings of a Conv1d/Conv2d/ConvTranspose2d, in its order."""
    s = f"{m.in_channels}, {m.out_channels}, kernel_size={m.kernel_size}, stride={m.stride}"
    if any(p != 0 for p in m.padding):
        s += f", padding={m.padding}"
    if any(d != 1 for d in m.dilation):
        s += f", dilation={m.dilation}"
    if any(p != 0 for p in getattr(m, "output_padding", ())):
        s += f", output_padding={m.output_padding}"
    if m.groups != 1:
        s += f", groups={m.groups}"
    if m.bias is None:
        s += ", bias=False"
    return s


def _conv_parameters(m, weight_shape: tuple, bias: bool, device, dtype) -> None:
    """A convolution's weight of ``weight_shape`` and (``bias``) bias of out_channels, or bias registered as
    None, initialised as PyTorch's (m.reset_parameters), then moved to ``device``."""
    m.weight = Parameter(_empty(weight_shape, dtype))
    m.register_parameter("bias", Parameter(_empty((m.out_channels,), dtype)) if bias else None)
    m.reset_parameters()
    if device is not None:
        m.to(device)
