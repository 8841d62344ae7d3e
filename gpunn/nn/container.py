"""Containers: ``Sequential`` (runs its modules in order, fusing Linear/Conv2d + activation), ``ModuleList``
and ``ModuleDict``."""

from __future__ import annotations

import operator
from collections import OrderedDict
from collections.abc import Iterable

from gpunn.dtypes import dtype_name
from gpunn.nn.activation import LeakyReLU, ReLU, Sigmoid, Tanh
from gpunn.nn.conv import Conv2d
from gpunn.nn.linear import Linear
from gpunn.nn.module import Module

__all__ = ["Sequential", "ModuleList", "ModuleDict", "ParameterList", "ParameterDict"]

# layers that take the activation that follows them into their own op (F.linear / F.conv2d(activation=)),
# and the activations they take; a subclass that overrides forward is not fused
_FUSING_LAYER_FORWARDS = (Linear.forward, Conv2d.forward)
_FUSABLE_FORWARDS = {cls.forward: cls for cls in (ReLU, LeakyReLU, Sigmoid, Tanh)}


def _fused_activation(module: Module):
    """(activation name, negative_slope) if ``module`` can run inside F.linear, else None."""
    cls = _FUSABLE_FORWARDS.get(type(module).forward)
    if cls is None:
        return None
    return cls.fused_activation, getattr(module, "negative_slope", 0.01)


def _index(idx, n: int, what: str) -> int:
    idx = operator.index(idx)
    if not -n <= idx < n:
        raise IndexError(f"index {idx} is out of range for a {what} of length {n}")
    return idx % n


def _renumber(container: Module, mods: list) -> None:
    """Re-register ``mods`` under the keys 0..n-1 (as PyTorch does after a delete or an insert)."""
    container._modules.clear()
    for i, m in enumerate(mods):
        container.add_module(str(i), m)


class Sequential(Module):
    """Run modules in order: ``Sequential(a, b, c)(x) == c(b(a(x)))``; also ``Sequential(OrderedDict)``.

    A ``Linear`` (or ``Conv2d``) immediately followed by ``ReLU``/``LeakyReLU``/``Sigmoid``/``Tanh`` runs as ONE fused
    op, ``F.linear(x, W, b, activation=...)`` (the backend's ``linear_act`` primitive); the result
    equals running the two modules one after the other.
    >>> model = nn.Sequential(nn.Linear(64, 200), nn.ReLU(), nn.Linear(200, 10))
    """

    def __init__(self, *args) -> None:
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for name, module in args[0].items():
                self.add_module(name, module)
        else:
            for i, module in enumerate(args):
                self.add_module(str(i), module)

    def forward(self, input):  # noqa: A002
        mods = [m for m in self._modules.values() if m is not None]
        x, i = input, 0
        while i < len(mods):
            m = mods[i]
            if type(m).forward in _FUSING_LAYER_FORWARDS and i + 1 < len(mods):
                fused = _fused_activation(mods[i + 1])
                if fused is not None:
                    x = m._forward_act(x, activation=fused[0], negative_slope=fused[1])
                    i += 2
                    continue
            x = m(x)
            i += 1
        return x

    # -- list-like access --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return type(self)(OrderedDict(list(self._modules.items())[idx]))
        return list(self._modules.values())[_index(idx, len(self), "Sequential")]

    def __setitem__(self, idx, module: Module) -> None:
        key = list(self._modules)[_index(idx, len(self), "Sequential")]
        self.add_module(key, module)

    def __delitem__(self, idx) -> None:
        keys = list(self._modules)
        for key in keys[idx] if isinstance(idx, slice) else [keys[_index(idx, len(self), "Sequential")]]:
            del self._modules[key]
        _renumber(self, list(self._modules.values()))

    def append(self, module: Module) -> Sequential:
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules: Iterable[Module]) -> Sequential:
        for m in modules:
            self.append(m)
        return self

    def insert(self, index: int, module: Module) -> Sequential:
        if not isinstance(module, Module):
            raise TypeError(f"module should be of type Module, got {type(module).__name__}")
        n = len(self)
        if not -n <= index <= n:
            raise IndexError(f"Index out of range: {index}")
        index = index + n if index < 0 else index
        mods = list(self._modules.values())
        mods.insert(index, module)
        _renumber(self, mods)
        return self


class ModuleList(Module):
    """A list of modules whose parameters are registered (it has no forward of its own).
    >>> self.layers = nn.ModuleList(nn.Linear(16, 16) for _ in range(3))
    """

    def __init__(self, modules: Iterable[Module] | None = None) -> None:
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return type(self)(list(self._modules.values())[idx])
        return self._modules[str(_index(idx, len(self), "ModuleList"))]

    def __setitem__(self, idx, module: Module) -> None:
        self.add_module(str(_index(idx, len(self), "ModuleList")), module)

    def __delitem__(self, idx) -> None:
        mods = list(self._modules.values())
        if isinstance(idx, slice):
            del mods[idx]
        else:
            del mods[_index(idx, len(self), "ModuleList")]
        _renumber(self, mods)

    def __iadd__(self, modules: Iterable[Module]) -> ModuleList:
        return self.extend(modules)

    def append(self, module: Module) -> ModuleList:
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        if isinstance(modules, Module) and not isinstance(modules, (ModuleList, Sequential)):
            raise TypeError(
                f"ModuleList.extend should be called with an iterable of modules, got a {type(modules).__name__}"
            )
        for m in modules:
            self.append(m)
        return self

    def insert(self, index: int, module: Module) -> None:
        mods = list(self._modules.values())
        mods.insert(index, module)
        _renumber(self, mods)


class ModuleDict(Module):
    """An ordered dict of modules whose parameters are registered (it has no forward of its own).
    >>> self.heads = nn.ModuleDict({"cls": nn.Linear(16, 10), "box": nn.Linear(16, 4)})
    """

    def __init__(self, modules=None) -> None:
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key: str) -> Module:
        return self._modules[key]

    def __setitem__(self, key: str, module: Module) -> None:
        self.add_module(key, module)

    def __delitem__(self, key: str) -> None:
        del self._modules[key]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key) -> bool:
        return key in self._modules

    def clear(self) -> None:
        self._modules.clear()

    def pop(self, key: str) -> Module:
        m = self[key]
        del self[key]
        return m

    def keys(self):
        return self._modules.keys()

    def items(self):
        return self._modules.items()

    def values(self):
        return self._modules.values()

    def update(self, modules) -> None:
        """Add (or replace) modules from a mapping or an iterable of (key, module) pairs."""
        if isinstance(modules, Module) and not isinstance(modules, ModuleDict):
            raise TypeError(
                f"ModuleDict.update should be called with a mapping or key/module pairs, got a {type(modules).__name__}"
            )
        pairs = modules.items() if hasattr(modules, "items") else modules
        for j, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(
                    f"ModuleDict update sequence element #{j} should be a (key, module) pair, got {pair!r}"
                )
            key, module = pair
            if not isinstance(module, Module):
                raise TypeError(f"ModuleDict[{key!r}] must be a Module, got {type(module).__name__}")
            self[key] = module


def _parameter_lines(items, type_name) -> str:
    """PyTorch's listing of a ParameterList / ParameterDict (it indents these lines itself)."""
    lines = []
    for k, p in items:
        device = f" ({p.device})" if p.device.type == "cuda" else ""
        lines.append(f"  ({k}): Parameter containing: [{type_name(p)} of size {'x'.join(map(str, p.shape))}{device}]")
    return "\n".join(lines)


def _as_parameter(value):
    from gpunn.nn.parameter import Parameter

    return value if isinstance(value, Parameter) else Parameter(value)


class ParameterList(Module):
    """A list of Parameters registered as "0", "1", ... (tensors given are wrapped as Parameters).
    >>> self.ws = nn.ParameterList([nn.Parameter(gpunn.randn(3)) for _ in range(4)])
    """

    def __init__(self, values=None) -> None:
        super().__init__()
        for v in values or ():
            self.append(v)

    def __len__(self) -> int:
        return len(self._parameters)

    def __iter__(self):
        return iter(self._parameters[str(i)] for i in range(len(self)))

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return ParameterList(list(self)[idx])
        return self._parameters[str(_index(idx, len(self), "ParameterList"))]

    def __setitem__(self, idx, value) -> None:
        self.register_parameter(str(_index(idx, len(self), "ParameterList")), _as_parameter(value))

    def __iadd__(self, values):
        return self.extend(values)

    def append(self, value) -> ParameterList:
        self.register_parameter(str(len(self)), _as_parameter(value))
        return self

    def extend(self, values) -> ParameterList:
        for v in values:
            self.append(v)
        return self

    def extra_repr(self) -> str:
        return _parameter_lines(enumerate(self), lambda p: dtype_name(p.dtype))


class ParameterDict(Module):
    """A dict of Parameters registered under their keys (tensors given are wrapped as Parameters)."""

    def __init__(self, parameters=None) -> None:
        super().__init__()
        if parameters is not None:
            self.update(parameters)

    def __getitem__(self, key: str):
        return self._parameters[key]

    def __setitem__(self, key: str, value) -> None:
        self.register_parameter(key, _as_parameter(value))

    def __delitem__(self, key: str) -> None:
        del self._parameters[key]

    def __len__(self) -> int:
        return len(self._parameters)

    def __iter__(self):
        return iter(self._parameters)

    def __contains__(self, key) -> bool:
        return key in self._parameters

    def keys(self):
        return self._parameters.keys()

    def items(self):
        return self._parameters.items()

    def values(self):
        return self._parameters.values()

    def get(self, key, default=None):
        return self._parameters.get(key, default)

    def pop(self, key: str):
        return self._parameters.pop(key)

    def update(self, parameters) -> None:
        items = parameters.items() if hasattr(parameters, "items") else parameters
        for k, v in items:
            self[k] = v

    def extra_repr(self) -> str:
        return _parameter_lines(self.items(), lambda p: p.type())
