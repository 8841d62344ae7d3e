"""``LayerNorm``: normalization over each sample's last dims, with a learned elementwise affine (PyTorch's);
``GroupNorm`` over groups of channels, ``InstanceNorm1d/2d`` over each channel of each sample."""

from __future__ import annotations

import gpunn.nn.functional as F
from gpunn.nn.batchnorm import _affine_parameters
from gpunn.nn.module import Module

__all__ = ["LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d"]


class LayerNorm(Module):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last dims given by ``normalized_shape``
    (an int or a shape); weight = 1 and bias = 0 of that shape (``elementwise_affine``, ``bias``). See
    ``F.layer_norm``.
    >>> nn.LayerNorm(64)(gpunn.randn(8, 10, 64)).shape
    (8, 10, 64)
    """

    def __init__(
        self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
        device=None, dtype=None,
    ) -> None:  # fmt: skip
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(int(n) for n in normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        _affine_parameters(self, self.normalized_shape, elementwise_affine, bias, dtype)
        if device is not None:
            self.to(device)

    def reset_parameters(self) -> None:
        if self.weight is not None:
            self.weight.data.fill_(1.0)
        if self.bias is not None:
            self.bias.data.fill_(0.0)

    def forward(self, input):  # noqa: A002
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
            f"bias={self.bias is not None}"
        )


class GroupNorm(Module):
    """Normalize x (N, C, *) over groups of C / num_groups channels; per-channel weight = 1 and bias = 0
    (``affine``). See ``F.group_norm``."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 device=None, dtype=None, *, bias: bool = True) -> None:  # fmt: skip
        super().__init__()
        if num_channels % num_groups:
            raise ValueError("num_channels must be divisible by num_groups")
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        _affine_parameters(self, (num_channels,), affine, bias, dtype)
        if device is not None:
            self.to(device)

    def forward(self, input):  # noqa: A002
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
            f"bias={self.bias is not None}"
        )


class _InstanceNorm(Module):
    _dims = 1

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = False,
                 track_running_stats: bool = False, device=None, dtype=None, *, bias: bool = True) -> None:  # fmt: skip
        super().__init__()
        if track_running_stats:
            raise NotImplementedError(f"{type(self).__name__}(track_running_stats=True) is not supported by gpunn")
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        _affine_parameters(self, (num_features,), affine, bias, dtype)
        if device is not None:
            self.to(device)

    def forward(self, input):  # noqa: A002
        if input.ndim == self._dims + 1:  # one unbatched sample (C, *spatial)
            return F.instance_norm(input.unsqueeze(0), weight=self.weight, bias=self.bias, eps=self.eps).squeeze(0)
        if input.ndim != self._dims + 2:
            raise ValueError(f"{type(self).__name__}: expected {self._dims + 1}D or {self._dims + 2}D input "
                             f"(got {input.ndim}D input)")  # fmt: skip
        return F.instance_norm(input, weight=self.weight, bias=self.bias, eps=self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")  # fmt: skip


class InstanceNorm1d(_InstanceNorm):
    """Normalize each channel of each sample of x (N, C, L) over L."""

    _dims = 1


class InstanceNorm2d(_InstanceNorm):
    """Normalize each channel of each sample of x (N, C, H, W) over H, W (style transfer's normalization)."""

    _dims = 2
