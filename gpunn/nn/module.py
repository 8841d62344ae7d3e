"""``Module``: the base class of every layer and model (parameters, sub-modules, train/eval, state_dict).

Assigning a ``Parameter`` or a ``Module`` to an attribute registers it, in assignment order, exactly
as in PyTorch; ``parameters()``, ``state_dict()`` and ``repr()`` walk that registry.

>>> class Net(nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.fc = nn.Linear(4, 2)
...     def forward(self, x):
...         return self.fc(x)
>>> [name for name, _ in Net().named_parameters()]
['fc.weight', 'fc.bias']
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import NamedTuple

import numpy as np

from gpunn.backend import Backend
from gpunn.nn.parameter import Parameter
from gpunn.tensor import Tensor, no_grad

__all__ = ["Module"]


class _IncompatibleKeys(NamedTuple):
    """What ``load_state_dict`` returns: the keys it could not match (empty lists when all matched)."""

    missing_keys: list
    unexpected_keys: list

    def __repr__(self) -> str:
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return f"_IncompatibleKeys(missing_keys={self.missing_keys}, unexpected_keys={self.unexpected_keys})"

    __str__ = __repr__


def _addindent(s: str, spaces: int) -> str:
    lines = s.split("\n")
    if len(lines) == 1:
        return s
    return lines[0] + "\n" + "\n".join(" " * spaces + line for line in lines[1:])


def _check_name(name, kind: str, module: Module) -> None:
    if not isinstance(name, str):
        raise TypeError(f"{kind} name should be a string, got {type(name).__name__}")
    if name == "":
        raise KeyError(f'{kind} name can\'t be empty string ""')
    if "." in name:
        raise KeyError(f'{kind} name can\'t contain ".", got: {name}')
    if hasattr(module, name) and not _registered(module, name):
        raise KeyError(f"attribute '{name}' already exists")


def _registered(module: Module, name: str) -> bool:
    d = module.__dict__
    return any(name in d[store] for store in ("_parameters", "_buffers", "_modules"))


class Module:
    """Base class for layers and models: subclass it, assign layers/Parameters in ``__init__``, write
    ``forward``; call the instance to run ``forward``."""

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())

    # -- calling ---------------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required "forward" function')

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- registration ----------------------------------------------------------------------------
    def _require_init(self, what: str) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {what} before Module.__init__() call")

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add ``param`` (a Parameter, or None for an absent optional one such as ``bias``) as ``name``."""
        self._require_init("parameter")
        _check_name(name, "parameter", self)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"cannot assign '{type(param).__name__}' object to parameter '{name}' "
                "(gpunn.nn.Parameter or None required)"
            )
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Add a non-learnable Tensor (saved in ``state_dict`` unless ``persistent=False``)."""
        self._require_init("buffer")
        _check_name(name, "buffer", self)
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(
                f"cannot assign '{type(tensor).__name__}' object to buffer '{name}' (gpunn Tensor or None required)"
            )
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        """Add a child module as ``name`` (``self.name = module`` does the same)."""
        self._require_init("module")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        _check_name(name, "module", self)
        self._modules[name] = module

    register_module = add_module

    def __setattr__(self, name: str, value) -> None:
        d = self.__dict__
        params = d.get("_parameters")

        def forget(*stores):
            for s in stores:
                s.pop(name, None) if isinstance(s, dict) else s.discard(name)

        if isinstance(value, Parameter):
            self._require_init("parameters")
            d.pop(name, None)
            forget(d["_buffers"], d["_modules"], d["_non_persistent_buffers"])
            self.register_parameter(name, value)
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                    "(gpunn.nn.Parameter or None expected)"
                )
            params[name] = None
        elif isinstance(value, Module):
            self._require_init("module")
            d.pop(name, None)
            forget(d["_parameters"], d["_buffers"], d["_non_persistent_buffers"])
            d["_modules"][name] = value
        elif "_modules" in d and name in d["_modules"]:
            if value is not None:
                raise TypeError(
                    f"cannot assign '{type(value).__name__}' as child module '{name}' "
                    "(gpunn.nn.Module or None expected)"
                )
            d["_modules"][name] = None
        elif "_buffers" in d and name in d["_buffers"]:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(
                    f"cannot assign '{type(value).__name__}' as buffer '{name}' (gpunn Tensor or None expected)"
                )
            d["_buffers"][name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str):
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            s = d.get(store)
            if s is not None and name in s:
                return s[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if name in d.get(store, ()):
                del d[store][name]
                d["_non_persistent_buffers"].discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        d = self.__dict__
        extra = [k for store in ("_parameters", "_buffers", "_modules") for k in d.get(store, ())]
        return sorted(set(super().__dir__()) | set(extra))

    # -- traversal --------------------------------------------------------------------------------
    def named_modules(self, memo: set | None = None, prefix: str = "", remove_duplicate: bool = True):
        """Yield ``(dotted_name, module)`` for self (name '') and every descendant, depth first."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is None:
                continue
            sub = prefix + ("." if prefix else "") + name
            yield from child.named_modules(memo, sub, remove_duplicate)

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        seen = set()
        for name, child in self._modules.items():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                yield name, child

    def children(self) -> Iterator[Module]:
        for _, child in self.named_children():
            yield child

    def _named_members(self, store: str, prefix: str, recurse: bool, remove_duplicate: bool = True):
        seen = set()
        mods = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        for mod_prefix, mod in mods:
            for name, value in mod.__dict__[store].items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield mod_prefix + ("." if mod_prefix else "") + name, value

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        """Yield ``(dotted_name, Parameter)``; a Parameter shared by two layers is yielded once."""
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def get_submodule(self, target: str) -> Module:
        """The descendant at dotted path ``target`` ('' is self)."""
        mod = self
        if target == "":
            return mod
        for item in target.split("."):
            if item not in mod._modules or mod._modules[item] is None:
                raise AttributeError(f"{type(mod).__name__} has no attribute `{item}`")
            mod = mod._modules[item]
        return mod

    def num_parameters(self, only_trainable: bool = False) -> int:
        """Total number of scalar parameters (shared ones counted once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not only_trainable)

    def apply(self, fn) -> Module:
        """Call ``fn(module)`` on every child (recursively) and then on self; returns self.

        >>> model.apply(lambda m: nn.init.zeros_(m.bias) if isinstance(m, nn.Linear) else None)"""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # -- modes and gradients ----------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Set training mode (dropout active) on self and every descendant; returns self."""
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> Module:
        """Evaluation mode: ``train(False)``."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Turn gradient tracking on/off for every parameter (freeze a part of a model)."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's ``.grad``: to None (default), or zero it in place."""
        owners = {}
        for p in self.parameters():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
                if p._grad_owner is not None:
                    owners[id(p._grad_owner)] = p._grad_owner
            else:
                p.grad._data[...] = 0  # in place: a grad living in an optimizer's flat buffer stays there
        for owner in owners.values():
            owner.renew_grad()  # the next backward gets fresh storage: grads the caller kept stay intact

    # -- state_dict -------------------------------------------------------------------------------
    def _state_items(self, prefix: str = "", keep_vars: bool = False):
        """(name, tensor) for every parameter and persistent buffer, in registration order, with
        shared tensors listed under each name (as in PyTorch)."""
        out = OrderedDict()
        for mod_prefix, mod in self.named_modules(prefix=prefix.rstrip("."), remove_duplicate=False):
            dot = mod_prefix + ("." if mod_prefix else "")
            for name, p in mod._parameters.items():
                if p is not None:
                    out[dot + name] = p if keep_vars else p.detach()
            for name, b in mod._buffers.items():
                if b is not None and name not in mod._non_persistent_buffers:
                    out[dot + name] = b if keep_vars else b.detach()
        return out

    def state_dict(self, destination=None, prefix: str = "", keep_vars: bool = False) -> OrderedDict:
        """An ordered dict ``name -> Tensor`` of parameters and persistent buffers.

        The tensors are detached but share the module's arrays (copy them to snapshot)."""
        if destination is None:
            destination = OrderedDict()
        destination.update(self._state_items(prefix, keep_vars))
        return destination

    def load_state_dict(self, state_dict: Mapping, strict: bool = True) -> _IncompatibleKeys:
        """Copy ``state_dict`` (values: Tensors or NumPy arrays) into this module's parameters and
        buffers, in place.

        Values are written into the existing arrays (``p._data[...] = value``), so an optimizer that
        holds views of them keeps working. Nothing is copied unless every entry is valid. Raises
        RuntimeError listing missing/unexpected keys (``strict=True``) and any size mismatch (always).
        Returns ``(missing_keys, unexpected_keys)``."""
        if not isinstance(state_dict, Mapping) and not hasattr(state_dict, "keys"):
            raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict).__name__}.")
        own = self._state_items(keep_vars=True)
        keys = list(state_dict.keys())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in keys if k not in own]
        errors, pending = [], []
        for name, target in own.items():
            if name not in state_dict:
                continue
            value = _as_backend_array(state_dict[name], target, name)
            if tuple(value.shape) != target.shape:
                errors.append(
                    f"size mismatch for {name}: copying a param with shape {tuple(value.shape)} "
                    f"from checkpoint, the shape in current model is {target.shape}."
                )
                continue
            pending.append((target, value))
        if strict:
            if unexpected:
                errors.insert(
                    0, "Unexpected key(s) in state_dict: {}. ".format(", ".join(f'"{k}"' for k in unexpected))
                )
            if missing:
                errors.insert(0, "Missing key(s) in state_dict: {}. ".format(", ".join(f'"{k}"' for k in missing)))
        if errors:
            raise RuntimeError(
                "Error(s) in loading state_dict for {}:\n\t{}".format(type(self).__name__, "\n\t".join(errors))
            )
        with no_grad():
            for target, value in pending:
                target._data[...] = value  # in place (casts to the parameter's dtype); never rebinds
                target._bump_version("load_state_dict")  # a graph that saved the old values must not use them
        return _IncompatibleKeys(missing, unexpected)

    # -- moving between backends / dtypes ---------------------------------------------------------
    def to(self, *args, **kwargs) -> Module:
        """Move every parameter, gradient and buffer to a device (``"cpu"``, ``"cuda"``, ``gpunn.device``,
        a backend name, or another tensor's) and/or cast the floating-point ones to ``dtype``; returns self.
        ``model.to(device)``, ``model.to(gpunn.float64)``, ``model.to(device, dtype)``, ``model.to(tensor)``.

        Parameters keep their identity but get new arrays: build the optimizer AFTER moving the model
        (an optimizer created before holds views of the old arrays)."""
        be, dt = _parse_to_args(*args, **kwargs)
        for m in self.modules():
            for p in m._parameters.values():
                if p is not None:
                    _move_tensor_inplace(p, be, dt)
            for name, b in m._buffers.items():
                if b is not None:
                    m._buffers[name] = _moved(b, be, dt)
        return self

    def cpu(self) -> Module:
        return self.to("cpu")

    def cuda(self, device=None) -> Module:
        return self.to("cuda" if device is None else f"cuda:{device}" if isinstance(device, int) else device)

    def double(self) -> Module:
        """Cast floating-point parameters and buffers to float64."""
        return self.to(dtype=np.float64)

    def float(self) -> Module:
        """Cast floating-point parameters and buffers to float32."""
        return self.to(dtype=np.float32)

    def half(self) -> Module:
        """Cast floating-point parameters and buffers to float16."""
        return self.to(dtype=np.float16)

    def __deepcopy__(self, memo):
        # Backend objects are process-wide singletons: the copy shares them (a copied Backend would
        # make the copied tensors "live on a different backend" than everything else)
        for t in (*self.parameters(), *self.buffers()):
            memo.setdefault(id(t._backend), t._backend)
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            object.__setattr__(new, key, copy.deepcopy(value, memo))
        return new

    # -- repr --------------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The text inside this module's parentheses in ``repr`` (override in layers)."""
        return ""

    def _get_name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({key}): " + _addindent(repr(mod), 2) for key, mod in self._modules.items()]
        lines = extra_lines + child_lines
        main = self._get_name() + "("
        if lines:
            if len(extra_lines) == 1 and not child_lines:
                main += extra_lines[0]
            else:
                main += "\n  " + "\n  ".join(lines) + "\n"
        return main + ")"


# ------------------------------------------------------------------------------------------------
# helpers for load_state_dict and to()
# ------------------------------------------------------------------------------------------------
def _as_backend_array(value, target: Tensor, name: str):
    """``value`` (Tensor, NumPy/CuPy array, nested list) as an array on ``target``'s backend."""
    be = target._backend
    if isinstance(value, Tensor):
        arr = value._data if value._backend is be else be.asarray(value._backend.to_numpy(value._data))
    elif be.is_array(value):
        arr = value
    else:
        if hasattr(value, "get") and type(value).__module__.startswith("cupy"):
            value = value.get()  # a CuPy array loaded into a numpy-backend model
        arr = np.asarray(value)  # checked on the host: CuPy refuses string arrays with its own error
    kind = np.dtype(arr.dtype).kind
    if kind not in "biuf":
        raise RuntimeError(
            f"load_state_dict: value for '{name}' has non-numeric dtype {arr.dtype}; "
            f"expected a numeric array for a tensor of dtype {target.dtype}"
        )
    return arr if be.is_array(arr) else be.asarray(arr)


def _parse_to_args(*args, **kwargs) -> tuple[Backend | None, np.dtype | None]:
    from gpunn.device import backend_of
    from gpunn.dtypes import as_dtype
    from gpunn.tensor import parse_to_args

    target, dtype = parse_to_args(args, kwargs, "Module.to")
    be = None if target is None else backend_of(target)
    if dtype is not None:
        try:
            dtype = as_dtype(dtype)
        except TypeError as exc:
            raise TypeError(f"Module.to: {dtype!r} is neither a device nor a dtype") from exc
        if dtype.kind != "f":
            raise TypeError(f"nn.Module.to only accepts floating point dtypes, but got desired dtype={dtype}")
    return be, dtype


def _convert(data, src: Backend, be: Backend | None, dt):
    """(array, backend) after an optional backend move and float-only dtype cast."""
    out, out_be = data, src
    if be is not None and be is not src:
        out, out_be = be.asarray(src.to_numpy(data)), be
    if dt is not None and np.dtype(out.dtype).kind == "f" and out.dtype != dt:
        out = out.astype(dt)
    return out, out_be


def _move_tensor_inplace(p: Tensor, be: Backend | None, dt) -> None:
    data, new_be = _convert(p._data, p._backend, be, dt)
    if data is p._data:
        return
    p._data, old_be = data, p._backend
    p._backend = new_be
    p._vc = type(p._vc)()  # new storage, new counter
    p._grad_view = None  # any optimizer's flat buffer no longer backs this parameter
    if p.grad is not None:
        g, g_be = _convert(p.grad._data, old_be, be, dt)
        p.grad = Tensor._wrap(g, g_be)


def _moved(t: Tensor, be: Backend | None, dt) -> Tensor:
    data, new_be = _convert(t._data, t._backend, be, dt)
    if data is t._data:
        return t
    out = Tensor._wrap(data, new_be)
    out.requires_grad = t.requires_grad and t.is_leaf
    return out
