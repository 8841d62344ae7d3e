"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay (PyTorch's SGD)."""

from __future__ import annotations

from gpunn.optim.optimizer import Optimizer, _FlatBuffer


class SGD(Optimizer):
    """SGD, one backend ``sgd_step`` per flat buffer:
    ``g = ±grad + wd*p;  buf = mu*buf + (1-dampening)*g (buf = g at first);  g = g + mu*buf (nesterov)
    or buf;  p -= lr*g``.

    >>> opt = gpunn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    """

    _array_state = ("momentum_buffer",)

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "differentiable": differentiable,
            "fused": fused,
        }
        super().__init__(params, defaults)

    def _validate(self, group: dict, where: str) -> None:
        super()._validate(group, where)
        momentum = group.get("momentum", 0)
        if not momentum >= 0:
            raise ValueError(f"{where}Invalid momentum value: momentum={momentum} (must be >= 0)")
        dampening = group.get("dampening", 0)
        if group.get("nesterov") and (momentum <= 0 or dampening != 0):
            raise ValueError(
                f"{where}Nesterov momentum requires a momentum and zero dampening "
                f"(nesterov=True with momentum={momentum}, dampening={dampening})"
            )

    @staticmethod
    def kernel_hyper(group: dict) -> dict:
        """The keywords of ``Backend.sgd_step`` that come from ``group`` (its caller adds the buffers)."""
        return {k: group[k] for k in ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")}

    def _step_buffer(self, group: dict, buf: _FlatBuffer, has_grad: list) -> None:
        momentum = group["momentum"]
        # a parameter's momentum buffer starts as its first (decayed) gradient, as in PyTorch: that
        # "first step" is per parameter, so a run never mixes initialised and uninitialised buffers
        keys = [
            (momentum != 0 and "momentum_buffer" not in self.state.get(p, ())) if has else None
            for p, has in zip(buf.params, has_grad)
        ]
        momentum_buf = buf.state_buffer("momentum_buffer") if momentum != 0 else None
        for lo, hi, first in buf.runs(keys):
            buf.backend.sgd_step(
                buf.data[lo:hi],
                buf.grad[lo:hi],
                None if momentum_buf is None else momentum_buf[lo:hi],
                first_step=first,
                **self.kernel_hyper(group),
            )
        if momentum != 0:
            for i, (p, first) in enumerate(zip(buf.params, keys)):
                if first:
                    self.state[p]["momentum_buffer"] = buf.state_view("momentum_buffer", i)
