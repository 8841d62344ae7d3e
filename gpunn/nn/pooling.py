"""``MaxPool2d``, ``AvgPool2d`` and ``AdaptiveAvgPool2d`` over NCHW inputs; their 1-D forms over (N, C, L)."""

from __future__ import annotations

import gpunn.nn.functional as F
from gpunn.nn.module import Module

__all__ = ["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "MaxPool1d", "AvgPool1d", "AdaptiveAvgPool1d"]


class _Pool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size  # PyTorch: stride defaults to kernel_size
        self.padding = padding
        self.ceil_mode = ceil_mode

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def _max(self, fn, input):  # noqa: A002
        """A max pooling with the module's options as they are now (F raises for a dilation or return_indices
        it does not support, set after construction too)."""
        return fn(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            ceil_mode=self.ceil_mode,
            return_indices=self.return_indices,
        )


class MaxPool2d(_Pool2d):
    """Max over each kH x kW window.  (N, C, H, W) -> (N, C, OH, OW), OH = (H + 2p - kH) // stride + 1.
    >>> nn.MaxPool2d(2)(gpunn.randn(1, 3, 8, 8)).shape
    (1, 3, 4, 4)
    """

    def __init__(
        self, kernel_size, stride=None, padding=0, dilation=1, return_indices: bool = False, ceil_mode: bool = False
    ) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode)
        F._pool_unsupported("MaxPool2d", dilation, return_indices)
        self.dilation = dilation
        self.return_indices = return_indices

    def forward(self, input):  # noqa: A002
        return self._max(F.max_pool2d, input)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", dilation={self.dilation}, ceil_mode={self.ceil_mode}"


class AvgPool2d(_Pool2d):
    """Mean over each kH x kW window (padding zeros counted unless ``count_include_pad=False``)."""

    def __init__(
        self,
        kernel_size,
        stride=None,
        padding=0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override=None,
    ) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode)
        if divisor_override is not None:
            raise NotImplementedError("AvgPool2d: divisor_override is not supported")
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def forward(self, input):  # noqa: A002
        return F.avg_pool2d(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            ceil_mode=self.ceil_mode,
            count_include_pad=self.count_include_pad,
        )


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output size (an int, or a pair whose None entries keep the input's size):
    (N, C, H, W) -> (N, C, OH, OW) over PyTorch's adaptive windows.
    >>> nn.AdaptiveAvgPool2d((1, 1))(gpunn.randn(2, 8, 7, 5)).shape
    (2, 8, 1, 1)
    """

    def __init__(self, output_size) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, input):  # noqa: A002
        return F.adaptive_avg_pool2d(input, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class MaxPool1d(_Pool2d):
    """Max over windows along L: (N, C, L) -> (N, C, OL). See ``F.max_pool1d``."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices: bool = False,
                 ceil_mode: bool = False) -> None:  # fmt: skip
        super().__init__(kernel_size, stride, padding, ceil_mode)
        F._pool_unsupported("MaxPool1d", dilation, return_indices)
        self.dilation, self.return_indices = dilation, return_indices

    def forward(self, input):  # noqa: A002
        return self._max(F.max_pool1d, input)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", dilation={self.dilation}, ceil_mode={self.ceil_mode}"


class AvgPool1d(_Pool2d):
    """Mean over windows along L. See ``F.avg_pool1d``."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True) -> None:  # fmt: skip
        one = F._single
        super().__init__((one(kernel_size, "kernel_size", "AvgPool1d"),),
                         None if stride is None else (one(stride, "stride", "AvgPool1d"),),
                         (one(padding, "padding", "AvgPool1d"),), ceil_mode)  # fmt: skip
        self.count_include_pad = count_include_pad

    def forward(self, input):  # noqa: A002
        return F.avg_pool1d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad)


class AdaptiveAvgPool1d(AdaptiveAvgPool2d):
    """Average pooling along L to ``output_size``."""

    def forward(self, input):  # noqa: A002
        return F.adaptive_avg_pool1d(input, self.output_size)
