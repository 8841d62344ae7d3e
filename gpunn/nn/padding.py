"""Padding modules (``ZeroPad2d``, ``ConstantPad1d/2d``, ``ReflectionPad1d/2d``, ``ReplicationPad1d/2d``): F.pad
with a fixed mode; ``padding`` an int (every side) or a tuple (left, right[, top, bottom])."""

from __future__ import annotations

import gpunn.nn.functional as F
from gpunn.nn.module import Module

__all__ = ["ZeroPad2d", "ConstantPad1d", "ConstantPad2d", "ReflectionPad1d", "ReflectionPad2d",
           "ReplicationPad1d", "ReplicationPad2d"]  # fmt: skip


class _Pad(Module):
    _sides = 2
    _mode = "constant"

    def __init__(self, padding, value: float = 0.0) -> None:
        super().__init__()
        self.padding = (int(padding),) * self._sides if isinstance(padding, int) else tuple(padding)
        if len(self.padding) != self._sides:
            raise ValueError(f"{type(self).__name__}: padding must be an int or {self._sides} ints, got {padding!r}")
        self.value = value

    def forward(self, input):  # noqa: A002
        if self._mode == "constant":
            return F.pad(input, self.padding, "constant", self.value)
        return F.pad(input, self.padding, self._mode)

    def extra_repr(self) -> str:
        return f"padding={self.padding}, value={self.value}" if self._mode == "constant" else f"{self.padding}"


class ConstantPad1d(_Pad):
    def __init__(self, padding, value: float) -> None:
        super().__init__(padding, value)


class ConstantPad2d(_Pad):
    _sides = 4

    def __init__(self, padding, value: float) -> None:
        super().__init__(padding, value)


class ZeroPad2d(_Pad):
    _sides = 4

    def __init__(self, padding) -> None:
        super().__init__(padding, 0.0)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class _EdgePad(_Pad):
    """Reflection and replication take only ``padding`` (a second argument raises, as in PyTorch)."""

    def __init__(self, padding) -> None:
        super().__init__(padding)


class ReflectionPad1d(_EdgePad):
    _mode = "reflect"


class ReflectionPad2d(_EdgePad):
    _sides, _mode = 4, "reflect"


class ReplicationPad1d(_EdgePad):
    _mode = "replicate"


class ReplicationPad2d(_EdgePad):
    _sides, _mode = 4, "replicate"
