"""A module whose flag attributes accept only bools, as PyTorch's ``torch.backends.*`` flags do."""

from __future__ import annotations

import types


class BoolFlagModule(types.ModuleType):
    """Assigning a non-bool to a name in ``_BOOL_FLAGS`` raises (PyTorch: ``RuntimeError ... expects a bool``);
    other names behave as on any module."""

    _BOOL_FLAGS: frozenset[str] = frozenset()

    def __setattr__(self, name, value):
        if name in self._BOOL_FLAGS and not isinstance(value, bool):
            raise RuntimeError(f"{self.__name__}.{name} expects a bool, but got {type(value).__name__}")
        super().__setattr__(name, value)
