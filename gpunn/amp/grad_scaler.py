"""``torch.amp.GradScaler``: PyTorch's dynamic loss scaling, backend-agnostic.

``scale(loss)`` multiplies by the scale ``s``; ``unscale_(optimizer)`` multiplies every gradient by the float32
``1/s`` once per step and records whether any was inf/NaN; ``step(optimizer)`` skips ``optimizer.step()`` when
one was; ``update()`` then sets ``s <- s * backoff_factor`` after a skipped step, ``s <- s * growth_factor`` after
``growth_interval`` clean steps in a row (each result rounded to float32, a growth to inf ignored), as PyTorch.
The scale lives on the host (a Python float holding a float32 value): one device read per optimizer and
step (the inf/NaN flag), none in ``scale`` or ``update``.

Device 'cuda' where ``gpunn.cuda.is_available()`` is False warns and disables the scaler, as PyTorch: then
``scale`` returns its input, ``step`` is ``optimizer.step()``, ``get_scale()`` is 1.0 and ``state_dict()`` {}.

>>> scaler = gpunn.amp.GradScaler("cpu")
>>> scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update()
"""

from __future__ import annotations

import math
import warnings
from collections import abc
from enum import Enum

import numpy as np

__all__ = ["GradScaler", "OptState"]


class OptState(Enum):
    READY = 0
    UNSCALED = 1
    STEPPED = 2


def _float32(value: float) -> float:
    """``value`` rounded to float32 (overflow to inf, as a float32 scale tensor would store it)."""
    with np.errstate(over="ignore"):
        return float(np.float32(value))


def _fresh_state() -> dict:
    return {"stage": OptState.READY, "found_inf_per_device": {}}


class GradScaler:
    """Dynamic loss scaling with PyTorch's arguments, defaults, checks and state dict."""

    def __init__(
        self,
        device: str = "cuda",
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        enabled: bool = True,
    ) -> None:
        self._device = device
        self._enabled = enabled
        if device == "cuda" and enabled:
            from gpunn import cuda

            if not cuda.is_available():
                stacklevel = getattr(self, "_warn_stacklevel", 2)
                warnings.warn(
                    "GradScaler is enabled, but CUDA is not available.  Disabling.", UserWarning, stacklevel=stacklevel
                )
                self._enabled = False
        if self._enabled:
            # PyTorch's checks and exception type; a disabled scaler keeps none of these (its getters raise)
            if growth_factor <= 1.0:
                raise AssertionError("The growth factor must be > 1.0.")
            if backoff_factor >= 1.0:
                raise AssertionError("The backoff factor must be < 1.0.")
            self._init_scale = init_scale
            self._scale: float | None = None  # set by the first scale(): a float32 value
            self._growth_factor = growth_factor
            self._backoff_factor = backoff_factor
            self._growth_interval = growth_interval
            self._init_growth_tracker = 0
            self._growth_tracker: int | None = None
            self._per_optimizer_states: dict[int, dict] = {}

    def _optimizer_state(self, optimizer) -> dict:
        return self._per_optimizer_states.setdefault(id(optimizer), _fresh_state())

    def _check_scale_growth_tracker(self, funcname: str) -> None:
        if self._scale is None:
            raise AssertionError(
                f"Attempted {funcname} but _scale is None.  This may indicate your script did not use "
                "scaler.scale(loss or outputs) earlier in the iteration."
            )

    def _lazy_init_scale_growth_tracker(self) -> None:
        if self._scale is None:
            self._scale = _float32(self._init_scale)
            self._growth_tracker = int(self._init_growth_tracker)

    def scale(self, outputs):
        """``outputs * scale`` for a Tensor, or for each Tensor in a (nested) list/tuple/iterable."""
        if not self._enabled:
            return outputs
        from gpunn.tensor import Tensor

        def apply_scale(value):
            if isinstance(value, Tensor):
                self._lazy_init_scale_growth_tracker()
                with np.errstate(over="ignore"):  # an inf here is the signal the scaler backs off on
                    return value * self._scale
            if isinstance(value, abc.Iterable):
                scaled = map(apply_scale, value)
                return type(value)(scaled) if isinstance(value, (list, tuple)) else scaled
            raise ValueError("outputs must be a Tensor or an iterable of Tensors")

        return apply_scale(outputs)

    def _unscale_grads_(self, optimizer, inv_scale: float, allow_fp16: bool) -> dict:
        """Multiply every gradient by ``inv_scale`` (in its own dtype); per device a 0-d bool Tensor: all finite?"""
        import gpunn
        from gpunn.dtypes import float16

        per_device: dict[str, list] = {}
        for group in optimizer.param_groups:
            for param in group["params"]:
                if not isinstance(param, gpunn.Tensor):
                    raise AssertionError(f"expected param to be a Tensor, got {type(param).__name__}")
                if param.grad is None:
                    continue
                if not allow_fp16 and param.grad.dtype == float16:
                    raise ValueError("Attempting to unscale FP16 gradients.")
                per_device.setdefault(str(param.grad.device), []).append(param.grad)
        all_finite = {}
        with gpunn.no_grad():
            for device, grads in per_device.items():
                # the check reads the scaled values, before the multiplication (as PyTorch's kernel)
                all_finite[device] = gpunn.stack([gpunn.isfinite(g).all() for g in grads]).all()
                if inv_scale != 1.0:
                    for g in grads:
                        g.mul_(inv_scale)
        return all_finite

    def unscale_(self, optimizer) -> None:
        """Divide ``optimizer``'s gradients by the scale, once between two ``update()`` calls (optional before
        ``step``: for clipping or inspecting the true gradients)."""
        if not self._enabled:
            return
        self._check_scale_growth_tracker("unscale_")
        state = self._optimizer_state(optimizer)
        if state["stage"] is OptState.UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update().")
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        inv_scale = _float32(1.0 / self._scale)  # the reciprocal in float64, then rounded, as PyTorch
        state["found_inf_per_device"] = self._unscale_grads_(optimizer, inv_scale, allow_fp16=False)
        state["stage"] = OptState.UNSCALED

    @staticmethod
    def _found_inf(state) -> bool:
        """Whether this optimizer's unscale_ met an inf/NaN: read from the device once, kept for update()."""
        if "found_inf" not in state:
            state["found_inf"] = not all(bool(finite.item()) for finite in state["found_inf_per_device"].values())
        return state["found_inf"]

    def step(self, optimizer, *args, **kwargs):
        """Unscale (unless ``unscale_`` ran), then ``optimizer.step(*args, **kwargs)`` unless a gradient was
        inf/NaN; returns step's value, or None when skipped."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
        self._check_scale_growth_tracker("step")
        state = self._optimizer_state(optimizer)
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if state["stage"] is OptState.READY:
            self.unscale_(optimizer)
        if not state["found_inf_per_device"]:
            raise AssertionError("No inf checks were recorded for this optimizer.")
        retval = None if self._found_inf(state) else optimizer.step(*args, **kwargs)
        state["stage"] = OptState.STEPPED
        return retval

    def update(self, new_scale=None) -> None:
        """Back off after a skipped step, grow after ``growth_interval`` clean ones; or set ``new_scale`` (a float
        or a one-element Tensor on this scaler's device type)."""
        if not self._enabled:
            return
        self._check_scale_growth_tracker("update")
        if new_scale is not None:
            from gpunn.tensor import Tensor

            if isinstance(new_scale, float):
                self._scale = _float32(new_scale)
            else:
                reason = "new_scale should be a float or a 1-element Tensor with requires_grad=False."
                if not isinstance(new_scale, Tensor) or new_scale.device.type != self._device:
                    raise AssertionError(reason)
                if new_scale.numel() != 1 or new_scale.requires_grad:
                    raise AssertionError(reason)
                self._scale = _float32(new_scale.item())
        else:
            states = [s for s in self._per_optimizer_states.values() if s["found_inf_per_device"]]
            if not states:
                raise AssertionError("No inf checks were recorded prior to update.")
            if any(self._found_inf(s) for s in states):
                self._scale = _float32(self._scale * self._backoff_factor)
                self._growth_tracker = 0
            else:
                successful = self._growth_tracker + 1
                if successful == self._growth_interval:
                    grown = _float32(self._scale * self._growth_factor)
                    if math.isfinite(grown):
                        self._scale = grown
                    self._growth_tracker = 0
                else:
                    self._growth_tracker = successful
        self._per_optimizer_states = {}

    def get_scale(self) -> float:
        """The current scale (``init_scale`` before the first ``scale()``); 1.0 when disabled."""
        if self._enabled:
            return self._init_scale if self._scale is None else self._scale
        return 1.0

    def get_growth_factor(self) -> float:
        return self._growth_factor

    def set_growth_factor(self, new_factor: float) -> None:
        self._growth_factor = new_factor

    def get_backoff_factor(self) -> float:
        return self._backoff_factor

    def set_backoff_factor(self, new_factor: float) -> None:
        self._backoff_factor = new_factor

    def get_growth_interval(self) -> int:
        return self._growth_interval

    def set_growth_interval(self, new_interval: int) -> None:
        self._growth_interval = new_interval

    def _get_growth_tracker(self) -> int:
        if self._enabled:
            return self._init_growth_tracker if self._growth_tracker is None else self._growth_tracker
        return 0

    def is_enabled(self) -> bool:
        return self._enabled

    def state_dict(self) -> dict:
        """PyTorch's five entries ({} when disabled), so a state dict loads into either library's scaler."""
        if not self._enabled:
            return {}
        return {
            "scale": self.get_scale(),
            "growth_factor": self._growth_factor,
            "backoff_factor": self._backoff_factor,
            "growth_interval": self._growth_interval,
            "_growth_tracker": self._get_growth_tracker(),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError(
                "The source state dict is empty, possibly because it was saved from a disabled instance of GradScaler."
            )
        self._init_scale = state_dict["scale"]
        if self._scale is not None:
            self._scale = _float32(state_dict["scale"])
        self._growth_factor = state_dict["growth_factor"]
        self._backoff_factor = state_dict["backoff_factor"]
        self._growth_interval = state_dict["growth_interval"]
        self._init_growth_tracker = state_dict["_growth_tracker"]
        if self._growth_tracker is not None:
            self._growth_tracker = int(state_dict["_growth_tracker"])

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if self._enabled:
            if self._per_optimizer_states:
                raise AssertionError(
                    "A GradScaler instance may only be pickled at the beginning of an iteration, "
                    "or at the end after scaler.update()."
                )
            state["_init_scale"] = self.get_scale()
            state["_init_growth_tracker"] = self._get_growth_tracker()
            state["_scale"] = None
            state["_growth_tracker"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
