"""``Optimizer``: parameter groups, per-parameter state, state dicts -- over flat buffers.

At construction each parameter group's parameters are packed, per (backend, dtype), into ONE contiguous
1-D array; every parameter's ``._data`` becomes a view of its slice (modules keep seeing the same values)
and its ``._grad_view`` a view of the same slice of a flat gradient array, so ``backward()`` writes the
gradients straight into it. Optimizer state (momentum, Adam moments) is flat too, so ``step()`` calls a
backend primitive once per flat buffer::

    flat  = [ W1.ravel() | b1 | W2.ravel() | ... ]      p._data = flat[o:o+n].reshape(p.shape)
    grad  = [ dW1        | db1| dW2        | ... ]      p._grad_view = grad[o:o+n].reshape(p.shape)

PyTorch's semantics hold in the uncommon cases: a parameter whose ``.grad`` is None is skipped entirely,
and per-parameter state (Adam's step count, SGD's uninitialised momentum) is tracked per parameter; the
primitive then runs once per contiguous run of parameters that share the same state.
"""

from __future__ import annotations

import copy
import itertools
from collections import defaultdict

import numpy as np

from gpunn.tensor import Tensor, enable_grad


class _FlatBuffer:
    """The parameters of one group sharing a (backend, dtype): one flat data array, one flat grad array,
    and flat optimizer-state arrays, each parameter a contiguous slice ``[bounds[i], bounds[i+1])``."""

    def __init__(self, params: list, indices: list) -> None:
        self.params = params
        self.indices = indices  # position of each parameter in its group (for error messages)
        self.backend = params[0]._backend
        self.dtype = params[0].dtype
        self.shapes = [p.shape for p in params]
        self.bounds = [0, *itertools.accumulate(int(p._data.size) for p in params)]
        xp = self.backend.xp
        # concatenate copies, so the flat array owns its memory and no caller's array is aliased
        self.data = xp.concatenate([p._data.reshape(-1) for p in params])
        self.grad = xp.zeros_like(self.data)
        self.state: dict = {}  # name -> flat array, allocated (zeroed) on first use
        self.data_views = [self.view(self.data, i) for i in range(len(params))]
        self.grad_views = [self.view(self.grad, i) for i in range(len(params))]
        for i, p in enumerate(params):
            p._data = self.data_views[i]
            p._grad_view = self.grad_views[i]
            p._grad_owner = self  # lets Module.zero_grad renew the gradient storage too
            if p.grad is not None:
                self._adopt_grad(i)

    def renew_grad(self) -> None:
        """New storage for the next gradients, so a ``.grad`` handed out earlier (and perhaps kept by the
        caller) is never overwritten by a later backward, as in PyTorch. No zeroing: the next backward
        overwrites a parameter's slice whole, and a slice nobody writes belongs to a grad that stays None."""
        self.grad = self.backend.xp.empty_like(self.data)
        self.grad_views = [self.view(self.grad, i) for i in range(len(self.params))]
        for i, p in enumerate(self.params):
            p._grad_view = self.grad_views[i]

    def view(self, flat, i: int):
        return flat[self.bounds[i] : self.bounds[i + 1]].reshape(self.shapes[i])

    def state_buffer(self, name: str):
        if name not in self.state:
            self.state[name] = self.backend.xp.zeros_like(self.data)
        return self.state[name]

    def state_view(self, name: str, i: int):
        return self.view(self.state_buffer(name), i)

    def _where(self, i: int) -> str:
        return f"parameter {self.indices[i]} (shape {self.shapes[i]}, dtype {self.dtype})"

    def _adopt_data(self, i: int) -> None:
        """``p._data`` was rebound to a new array: copy it into the flat buffer and re-point ``p._data``."""
        p, new = self.params[i], self.params[i]._data
        if p._backend is not self.backend or not self.backend.is_array(new):
            raise RuntimeError(
                f"{self._where(i)} moved from backend '{self.backend.name}' after the "
                "optimizer was created; create the optimizer after moving the model"
            )
        if tuple(new.shape) != self.shapes[i] or new.dtype != self.dtype:
            raise RuntimeError(
                f"{self._where(i)} was replaced by an array of shape {tuple(new.shape)} and "
                f"dtype {new.dtype}; the optimizer's flat buffer can't hold it, so create a "
                "new optimizer after changing a parameter's shape or dtype"
            )
        self.data_views[i][...] = new
        p._data = self.data_views[i]

    def _adopt_grad(self, i: int) -> None:
        """``p.grad`` was assigned from outside: copy it into the flat gradient buffer and re-point it."""
        p, g = self.params[i], self.params[i].grad
        g_data = g._data if isinstance(g, Tensor) else g
        if tuple(g_data.shape) != self.shapes[i]:
            raise RuntimeError(f"{self._where(i)} has a .grad of shape {tuple(g_data.shape)}")
        if not self.backend.is_array(g_data):
            src = g._backend if isinstance(g, Tensor) else None
            g_data = self.backend.asarray(src.to_numpy(g_data) if src is not None else np.asarray(g_data))
        self.grad_views[i][...] = g_data
        p.grad = Tensor._wrap(self.grad_views[i], self.backend)

    def sync(self) -> list:
        """Re-point rebound ``._data``/``.grad`` into the flat buffers; per parameter: does it have a grad?"""
        has_grad = []
        for i, p in enumerate(self.params):
            if p._data is not self.data_views[i]:
                self._adopt_data(i)
            if p._grad_view is not self.grad_views[i]:
                p._grad_view = self.grad_views[i]
            g = p.grad
            if g is None:
                has_grad.append(False)
                continue
            if g._data is not self.grad_views[i]:
                self._adopt_grad(i)
            has_grad.append(True)
        return has_grad

    def grad_region(self, params: list):
        """The slice of the flat gradient array that holds exactly these parameters' current ``.grad``, in
        this order (so a collective can run on it in place), or None when they are not consecutive here in
        this order, or a ``.grad`` is not this buffer's view. The one hook gpunn.distributed uses into the
        flat buffers."""
        where = {id(p): i for i, p in enumerate(self.params)}
        slots = [where.get(id(p), -1) for p in params]
        if not slots or slots[0] < 0 or slots != list(range(slots[0], slots[0] + len(slots))):
            return None
        for i in slots:
            g = self.params[i].grad
            if g is None or g._data is not self.grad_views[i]:
                return None
        return self.grad[self.bounds[slots[0]] : self.bounds[slots[-1] + 1]]

    def runs(self, keys: list) -> list:
        """Maximal runs of consecutive parameters with the same non-None key, as (lo, hi, key) element
        ranges of the flat buffer; a key of None (no grad) breaks a run."""
        out, start, key = [], None, None
        for i, k in enumerate([*keys, None]):
            if start is not None and (k is None or k != key):
                lo, hi = self.bounds[start], self.bounds[i]
                if hi > lo:
                    out.append((lo, hi, key))
                start = None
            if k is not None and start is None:
                start, key = i, k
        return out


def _to_host(value, backend):
    """A state value as a NumPy array (a copy: a snapshot, not a view into the live buffer) or scalar."""
    if backend.is_array(value) or isinstance(value, np.ndarray):
        return np.array(backend.to_numpy(value), copy=True)
    return value


def _as_scalar(value, what: str):
    """A saved scalar (Python number, 0-d/1-element array, tensor) as a Python int or float."""
    if isinstance(value, Tensor):
        value = value._backend.to_numpy(value._data)
    if hasattr(value, "shape") and hasattr(value, "item"):
        if int(np.prod(value.shape)) != 1:
            raise ValueError(f"{what} must be a scalar, got an array of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # torch saves Adam's step as a float tensor
    return value


class Optimizer:
    """Base class: ``params`` is an iterable of Tensors, or of dicts (param groups) with ``'params'`` and
    hyper-parameters overriding ``defaults``.

    >>> opt = gpunn.optim.SGD([{"params": [w]}, {"params": [b], "lr": 0.1}], lr=0.01)
    """

    # names of the per-parameter state entries that are arrays shaped like the parameter (flat-backed)
    _array_state: tuple = ()

    def __init__(self, params, defaults: dict) -> None:
        if isinstance(params, Tensor):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Tensors or "
                f"dicts, but got a {type(params).__name__}"
            )
        if isinstance(params, (set, frozenset)):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but the "
                "ordering of a set changes between runs; use a list instead"
            )
        self._validate(defaults, "")
        self.defaults = dict(defaults)
        self.state: defaultdict = defaultdict(dict)  # Tensor -> {name: array view or Python scalar}
        self.param_groups: list = []
        self._buffers: list = []  # per group: its list of _FlatBuffer
        self._slot: dict = {}  # id(param) -> (_FlatBuffer, position in it)
        groups = list(params)
        if len(groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # -- hyper-parameters ----------------------------------------------------------------------------
    def _validate(self, group: dict, where: str) -> None:
        """Raise ValueError naming the hyper-parameter that is out of range (subclasses extend)."""
        lr = group.get("lr", 0.0)
        if not lr >= 0:
            raise ValueError(f"{where}Invalid learning rate: lr={lr} (must be >= 0)")
        wd = group.get("weight_decay", 0.0)
        if not wd >= 0:
            raise ValueError(f"{where}Invalid weight_decay value: weight_decay={wd} (must be >= 0)")
        if group.get("differentiable"):  # foreach/fused/capturable are accepted: every step is one fused call
            raise NotImplementedError(
                f"{where}differentiable=True is not supported: gpunn's optimizer steps "
                "update the flat parameter buffer outside autograd"
            )

    # -- parameter groups ----------------------------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        """Add a group (``{'params': [...], **hyper-parameters}``); its params go into flat buffers."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError("param_group must have a 'params' entry")
        gi = len(self.param_groups)
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but the "
                "ordering of a set changes between runs; use a list instead"
            )
        else:
            params = list(params)
        names = [p[0] for p in params if isinstance(p, tuple)]
        params = [p[1] if isinstance(p, tuple) else p for p in params]
        if names and len(names) != len(params):
            raise ValueError("all optimizer params should be with/without names. Some param names are missing")

        seen = {id(p): k for k, p in enumerate(params)}
        for k, p in enumerate(params):
            where = f"parameter {k} of param group {gi}"
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but {where} is a {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(
                    f"can't optimize a non-leaf Tensor: {where} was computed by {p.grad_fn}; "
                    "optimize the leaf it comes from, or detach() it"
                )
            # a frozen parameter (requires_grad=False) is accepted, as in PyTorch: it never gets a
            # gradient, so step() skips it
            if seen[id(p)] != k:
                raise ValueError(
                    f"{where} is the same tensor as parameter {seen[id(p)]}: a parameter group "
                    "can't list a parameter twice"
                )
            if id(p) in self._slot:
                raise ValueError(f"some parameters appear in more than one parameter group ({where})")

        group = {k: v for k, v in param_group.items() if k != "params"}
        for name, default in self.defaults.items():
            group.setdefault(name, default)
        self._validate(group, f"param_groups[{gi}]: ")
        group["params"] = params
        if names:
            group["param_names"] = names

        # one flat buffer per (backend, dtype), in order of first appearance
        by_key: dict = {}
        for k, p in enumerate(params):
            by_key.setdefault((id(p._backend), p.dtype), []).append(k)
        buffers = []
        for ks in by_key.values():
            buf = _FlatBuffer([params[k] for k in ks], ks)
            for i, p in enumerate(buf.params):
                self._slot[id(p)] = (buf, i)
            buffers.append(buf)
        self.param_groups.append(group)
        self._buffers.append(buffers)

    # -- gradients -----------------------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients: ``p.grad = None`` (the next backward overwrites the flat gradient
        buffer), or, with ``set_to_none=False``, zero the flat gradient buffers (None grads stay None)."""
        for buffers in self._buffers:
            for buf in buffers:
                if set_to_none:
                    if any(p.grad is not None for p in buf.params):
                        buf.renew_grad()
                    for p in buf.params:
                        p.grad = None
                    continue
                for i, p in enumerate(buf.params):
                    if p.grad is not None and p.grad._data is not buf.grad_views[i]:
                        p.grad = Tensor._wrap(buf.grad_views[i], buf.backend)
                buf.grad[...] = 0

    # -- the update ----------------------------------------------------------------------------------
    def step(self, closure=None):
        """One update of every parameter that has a gradient; ``closure`` (re-evaluates the model and
        returns the loss) runs first, with grad enabled, and its loss is returned."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group, buffers in zip(self.param_groups, self._buffers):
            for buf in buffers:
                has_grad = buf.sync()
                if any(has_grad):
                    self._step_buffer(group, buf, has_grad)
                    for p, updated in zip(buf.params, has_grad):  # a graph that saved them must not use them
                        if updated:
                            p._bump_version("optimizer.step")
        return loss

    def _step_buffer(self, group: dict, buf: _FlatBuffer, has_grad: list) -> None:
        raise NotImplementedError

    # -- state dicts ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """``{'state': {index: {name: ndarray | scalar}}, 'param_groups': [{..., 'params': [index]}]}``,
        PyTorch's layout; arrays are NumPy copies, so it can be saved without pickle."""
        index: dict = {}
        groups = []
        for group in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            packed["params"] = []
            for p in group["params"]:
                index[id(p)] = len(index)
                packed["params"].append(index[id(p)])
            groups.append(packed)
        state = {}
        for p, st in self.state.items():
            if st and id(p) in index:
                state[index[id(p)]] = {k: _to_host(v, p._backend) for k, v in st.items()}
        return {"state": dict(sorted(state.items())), "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore hyper-parameters and state saved by ``state_dict()`` (checked before anything changes)."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"loaded state dict has {len(saved_groups)} parameter groups, this optimizer "
                f"has {len(self.param_groups)}"
            )
        id_map = {}
        for gi, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"loaded state dict's parameter group {gi} has {len(saved['params'])} "
                    f"parameters, this optimizer's group has {len(group['params'])}"
                )
            for idx, p in zip(saved["params"], group["params"]):
                id_map[int(idx)] = p

        # validate everything first, so a bad state dict leaves the optimizer untouched
        new_state = {}
        for key, st in state_dict["state"].items():
            idx = int(key)  # JSON turns the integer keys into strings
            if idx not in id_map:
                raise ValueError(f"loaded state dict has state for parameter {idx}, which no parameter group lists")
            p = id_map[idx]
            entry = {}
            for name, value in st.items():
                if name in self._array_state:
                    shape = tuple(value.shape) if hasattr(value, "shape") else np.shape(value)
                    if shape != p.shape:
                        raise ValueError(
                            f"loaded state '{name}' of parameter {idx} has shape {shape}, the "
                            f"parameter has shape {p.shape}"
                        )
                    entry[name] = value
                else:
                    entry[name] = _as_scalar(value, f"loaded state '{name}' of parameter {idx}")
            new_state[id(p)] = (p, entry)
        new_groups = []
        for gi, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            new = {k: copy.deepcopy(v) for k, v in saved.items() if k != "params"}
            if "betas" in new:
                new["betas"] = tuple(new["betas"])  # a JSON round trip makes the tuple a list
            for name, default in self.defaults.items():
                new.setdefault(name, default)
            if "param_names" in group and "param_names" not in new:
                new["param_names"] = group["param_names"]
            self._validate(new, f"loaded param_groups[{gi}]: ")
            new_groups.append(new)

        for group, new in zip(self.param_groups, new_groups):
            params = group["params"]
            group.clear()  # in place: whoever holds the group dict sees the loaded values
            group.update(new)
            group["params"] = params
        # zero every flat state array: a parameter with no saved state must start from zeros again
        for buffers in self._buffers:
            for buf in buffers:
                for flat in buf.state.values():
                    flat[...] = 0
        self.state.clear()
        for p, entry in new_state.values():
            buf, i = self._slot[id(p)]
            st = {}
            for name, value in entry.items():
                if name in self._array_state:
                    view = buf.state_view(name, i)
                    view[...] = self._on_backend(value, buf.backend)
                    st[name] = view
                else:
                    st[name] = value
            self.state[p] = st

    @staticmethod
    def _on_backend(value, backend):
        if backend.is_array(value):
            return value
        if isinstance(value, Tensor):
            return backend.asarray(value._backend.to_numpy(value._data))
        return backend.asarray(np.asarray(value))

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {group[k]}" for k in sorted(group) if k not in ("params", "param_names")]
        return "\n".join([*lines, ")"])
