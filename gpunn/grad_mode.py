"""Grad mode: whether ops record the autograd graph (``no_grad``, ``enable_grad``, ``set_grad_enabled``)."""

from __future__ import annotations

import functools
import threading

__all__ = ["is_grad_enabled", "set_grad_enabled", "no_grad", "enable_grad", "inference_mode"]

_grad_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_grad_state, "enabled", True)


class set_grad_enabled:
    """Context manager (and decorator) that turns graph recording on or off."""

    def __init__(self, mode: bool) -> None:
        self.mode = bool(mode)

    def __enter__(self):
        self.prev = is_grad_enabled()
        _grad_state.enabled = self.mode

    def __exit__(self, *exc):
        _grad_state.enabled = self.prev
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with type(self)(self.mode) if type(self) is set_grad_enabled else type(self)():
                return fn(*args, **kwargs)

        return wrapper


class _BareDecorator(set_grad_enabled):
    """Lets a no-argument grad-mode class decorate with or without parentheses (``@no_grad``)."""

    def __new__(cls, fn=None):
        self = super().__new__(cls)
        if fn is None:
            return self
        self.__init__()
        return self(fn)  # bare ``@no_grad``: the decorated function, not a context manager


class no_grad(_BareDecorator):
    """``with gpunn.no_grad():`` -- ops inside record no graph (evaluation, parameter updates).

    Also a decorator: ``@gpunn.no_grad()`` or ``@gpunn.no_grad``."""

    def __init__(self, fn=None) -> None:
        super().__init__(False)


class enable_grad(_BareDecorator):
    """``with gpunn.enable_grad():`` -- record the graph again inside a ``no_grad`` block."""

    def __init__(self, fn=None) -> None:
        super().__init__(True)


class inference_mode(_BareDecorator):
    """``torch.inference_mode()``: here the same as ``no_grad`` (no graph is recorded)."""

    def __init__(self, mode=True) -> None:
        super().__init__(not mode if isinstance(mode, bool) else False)
