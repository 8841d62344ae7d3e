"""``BatchNorm1d`` and ``BatchNorm2d``: per-channel normalization with running statistics (PyTorch's)."""

from __future__ import annotations

import numpy as np

import gpunn.nn.functional as F
from gpunn.backend import get_backend
from gpunn.dtypes import default_float
from gpunn.grad_mode import no_grad
from gpunn.nn.module import Module
from gpunn.nn.parameter import Parameter
from gpunn.tensor import Tensor

__all__ = ["BatchNorm1d", "BatchNorm2d"]


def _filled(shape, value, dtype) -> Tensor:
    be = get_backend()
    return Tensor._wrap(be.xp.full(shape, value, dtype=default_float if dtype is None else dtype), be)


def _affine_parameters(module, shape, affine: bool, bias: bool, dtype) -> None:
    """A normalization layer's learned affine, as PyTorch registers it: weight = 1 and (``bias``) bias = 0 of
    ``shape``, or both registered as None."""
    module.register_parameter("weight", Parameter(_filled(shape, 1.0, dtype)) if affine else None)
    module.register_parameter("bias", Parameter(_filled(shape, 0.0, dtype)) if affine and bias else None)


class _BatchNorm(Module):
    """y = (x - mean) / sqrt(var + eps) * weight + bias per channel. Training mode normalizes with the
    batch's statistics and (``track_running_stats``) updates ``running_mean`` / ``running_var`` with
    ``momentum`` (None: a cumulative average over ``num_batches_tracked`` batches); eval mode uses the
    running statistics (or the batch's, when they are not tracked). Buffers and parameters are named and
    shaped as in PyTorch, so state dicts load either way."""

    _input_dims: tuple = ()

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"{type(self).__name__}: num_features must be a positive int, got {num_features!r}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{type(self).__name__}: momentum must be in [0, 1] or None, got {momentum}")
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        _affine_parameters(self, (num_features,), affine, bias, dtype)
        if track_running_stats:
            self.register_buffer("running_mean", _filled((num_features,), 0.0, dtype))
            self.register_buffer("running_var", _filled((num_features,), 1.0, dtype))
            self.register_buffer("num_batches_tracked", _filled((), 0, np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        if device is not None:
            self.to(device)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            with no_grad():
                self.running_mean._data[...] = 0
                self.running_var._data[...] = 1
                self.num_batches_tracked._data[...] = 0

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            with no_grad():
                self.weight._data[...] = 1
                if self.bias is not None:
                    self.bias._data[...] = 0

    def forward(self, input):  # noqa: A002
        if not isinstance(input, Tensor):
            raise TypeError(f"{type(self).__name__}: expected a gpunn Tensor, got {type(input).__name__}")
        if input.ndim not in self._input_dims:
            dims = " or ".join(f"{d}D" for d in self._input_dims)
            raise ValueError(
                f"{type(self).__name__}: expected {dims} input (got {input.ndim}D input of shape {input.shape})"
            )
        if input.shape[1] != self.num_features:
            raise ValueError(
                f"{type(self).__name__}({self.num_features}): input has {input.shape[1]} channels (shape {input.shape})"
            )
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked._data[...] += 1
            self.num_batches_tracked._bump_version("batch_norm")
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked._data)
        use_batch = self.training or self.running_mean is None
        track = not self.training or self.track_running_stats
        return F.batch_norm(
            input,
            self.running_mean if track else None,
            self.running_var if track else None,
            self.weight,
            self.bias,
            use_batch,
            factor,
            self.eps,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L) inputs, per channel C.
    >>> nn.BatchNorm1d(200)(gpunn.randn(64, 200)).shape
    (64, 200)
    """

    _input_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W) inputs, per channel C.
    >>> nn.BatchNorm2d(8)(gpunn.randn(4, 8, 5, 5)).shape
    (4, 8, 5, 5)
    """

    _input_dims = (4,)
