"""Adagrad, Adadelta and RMSprop (PyTorch's formulas, defaults and state-dict keys), one backend primitive
per flat buffer: ``adagrad_step``, ``adadelta_step``, ``rmsprop_step`` (gpunn.backend.reference).

Each parameter's state uses PyTorch's names (``step``, ``sum`` / ``square_avg``, ``acc_delta`` /
``momentum_buffer``, ``grad_avg``) and its param groups PyTorch's keys, so ``state_dict()`` has the
structure ``torch.optim`` writes and either side can load the other's.
"""

from __future__ import annotations

from gpunn.optim.optimizer import Optimizer, _FlatBuffer


def _check_common(group: dict, where: str) -> None:
    """eps >= 0 (``Optimizer._validate`` refuses ``differentiable=True``)."""
    eps = group.get("eps", 0.0)
    if not eps >= 0:
        raise ValueError(f"{where}Invalid epsilon value: eps={eps} (must be >= 0)")


class _PerParamStep(Optimizer):
    """Shared bookkeeping: a per-parameter ``step`` count, and the array state created lazily (as zeros)
    on a parameter's first update, in PyTorch's key order."""

    _array_state: tuple = ()

    def _validate(self, group: dict, where: str) -> None:
        super()._validate(group, where)
        _check_common(group, where)

    def _state_names(self, group: dict) -> tuple:
        return self._array_state

    def _record(self, group: dict, buf: _FlatBuffer, states: list, steps: list) -> None:
        """After an update: step counts, and views into the flat state for a parameter's first update."""
        names = self._state_names(group)
        for i, (st, step) in enumerate(zip(states, steps)):
            if st is None:
                continue
            st["step"] = step
            for name in names:
                if name not in st:
                    st[name] = buf.state_view(name, i)

    def _steps(self, buf: _FlatBuffer, has_grad: list) -> tuple:
        """(each parameter's state dict, its step number after this update), both None for a parameter
        without a grad (not stepped); each state looked up once (a Tensor key hashes in Python)."""
        states = [self.state[p] if has else None for p, has in zip(buf.params, has_grad)]
        return states, [None if st is None else st.get("step", 0) + 1 for st in states]


class Adagrad(_PerParamStep):
    """Adagrad: ``g = ±grad + wd*p;  sum += g^2;  p -= lr / (1 + (t-1)*lr_decay) * g / (sqrt(sum) + eps)``.
    As in PyTorch, every parameter's state (``step`` 0, ``sum`` = ``initial_accumulator_value``) exists
    from construction on.

    >>> opt = gpunn.optim.Adagrad(model.parameters(), lr=0.01)
    """

    _array_state = ("sum",)

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "fused": fused,
        }
        super().__init__(params, defaults)

    def _validate(self, group: dict, where: str) -> None:
        super()._validate(group, where)
        lr_decay = group.get("lr_decay", 0.0)
        if not lr_decay >= 0:
            raise ValueError(f"{where}Invalid lr_decay value: lr_decay={lr_decay} (must be >= 0)")
        init = group.get("initial_accumulator_value", 0.0)
        if not init >= 0:
            raise ValueError(
                f"{where}Invalid initial_accumulator_value value: initial_accumulator_value={init} (must be >= 0)"
            )

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for buf in self._buffers[-1]:
            buf.state_buffer("sum")[...] = group["initial_accumulator_value"]
            for i, p in enumerate(buf.params):
                self.state[p] = {"step": 0, "sum": buf.state_view("sum", i)}

    def _step_buffer(self, group: dict, buf: _FlatBuffer, has_grad: list) -> None:
        states, steps = self._steps(buf, has_grad)
        flat_sum = buf.state_buffer("sum")
        # the step enters the update only through lr_decay; a run shares one step number
        for lo, hi, step in buf.runs(steps):
            buf.backend.adagrad_step(
                buf.data[lo:hi],
                buf.grad[lo:hi],
                flat_sum[lo:hi],
                step=step,
                lr=group["lr"],
                lr_decay=group["lr_decay"],
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=group["maximize"],
            )
        self._record(group, buf, states, steps)


class Adadelta(_PerParamStep):
    """Adadelta: ``g = ±grad + wd*p;  v = rho*v + (1-rho)*g^2;  d = sqrt(u + eps) / sqrt(v + eps) * g;
    u = rho*u + (1-rho)*d^2;  p -= lr*d`` (v: ``square_avg``, u: ``acc_delta``).

    >>> opt = gpunn.optim.Adadelta(model.parameters(), lr=1.0)
    """

    _array_state = ("square_avg", "acc_delta")

    def __init__(
        self,
        params,
        lr: float = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "rho": rho,
            "eps": eps,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "capturable": capturable,
            "foreach": foreach,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)

    def _validate(self, group: dict, where: str) -> None:
        super()._validate(group, where)
        rho = group.get("rho", 0.9)
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"{where}Invalid rho value: rho={rho} (must be in [0, 1])")

    def _step_buffer(self, group: dict, buf: _FlatBuffer, has_grad: list) -> None:
        states, steps = self._steps(buf, has_grad)
        square_avg, acc_delta = buf.state_buffer("square_avg"), buf.state_buffer("acc_delta")
        for lo, hi, _ in buf.runs([True if s is not None else None for s in steps]):
            buf.backend.adadelta_step(
                buf.data[lo:hi],
                buf.grad[lo:hi],
                square_avg[lo:hi],
                acc_delta[lo:hi],
                lr=group["lr"],
                rho=group["rho"],
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                maximize=group["maximize"],
            )
        self._record(group, buf, states, steps)


class RMSprop(_PerParamStep):
    """RMSprop: ``g = ±grad + wd*p;  v = alpha*v + (1-alpha)*g^2;  avg = sqrt(v - m^2) + eps`` with
    ``m = lerp(m, g, 1-alpha)`` when ``centered`` (else ``sqrt(v) + eps``); then ``b = momentum*b + g/avg;
    p -= lr*b`` with momentum, else ``p -= lr*g/avg``.

    >>> opt = gpunn.optim.RMSprop(model.parameters(), lr=0.01, momentum=0.9, centered=True)
    """

    _array_state = ("square_avg", "momentum_buffer", "grad_avg")

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "alpha": alpha,
            "eps": eps,
            "centered": centered,
            "weight_decay": weight_decay,
            "capturable": capturable,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)

    def _validate(self, group: dict, where: str) -> None:
        super()._validate(group, where)
        momentum = group.get("momentum", 0)
        if not momentum >= 0:
            raise ValueError(f"{where}Invalid momentum value: momentum={momentum} (must be >= 0)")
        alpha = group.get("alpha", 0.99)
        if not alpha >= 0:
            raise ValueError(f"{where}Invalid alpha value: alpha={alpha} (must be >= 0)")

    def _state_names(self, group: dict) -> tuple:
        return (
            ("square_avg",)
            + (("momentum_buffer",) if group["momentum"] > 0 else ())
            + (("grad_avg",) if group["centered"] else ())
        )

    def _step_buffer(self, group: dict, buf: _FlatBuffer, has_grad: list) -> None:
        states, steps = self._steps(buf, has_grad)
        momentum, centered = group["momentum"], group["centered"]
        square_avg = buf.state_buffer("square_avg")
        momentum_buf = buf.state_buffer("momentum_buffer") if momentum > 0 else None
        grad_avg = buf.state_buffer("grad_avg") if centered else None
        for lo, hi, _ in buf.runs([True if s is not None else None for s in steps]):
            buf.backend.rmsprop_step(
                buf.data[lo:hi],
                buf.grad[lo:hi],
                square_avg[lo:hi],
                None if momentum_buf is None else momentum_buf[lo:hi],
                None if grad_avg is None else grad_avg[lo:hi],
                lr=group["lr"],
                alpha=group["alpha"],
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                momentum=momentum,
                centered=centered,
                maximize=group["maximize"],
            )
        self._record(group, buf, states, steps)
