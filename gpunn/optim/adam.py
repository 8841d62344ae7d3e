"""Adam and AdamW (PyTorch's formulas): they differ only in how weight decay is applied."""

from __future__ import annotations

from gpunn.optim.optimizer import Optimizer, _FlatBuffer


class Adam(Optimizer):
    """Adam, one backend ``adam_step`` per flat buffer:
    ``m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;  p -= lr/(1-b1^t) * m / (sqrt(v/(1-b2^t)) + eps)``
    with ``g = ±grad + wd*p`` (Adam) or ``p *= 1 - lr*wd`` first (``decoupled_weight_decay``, AdamW).

    >>> opt = gpunn.optim.Adam(model.parameters(), lr=1e-3)
    """

    _array_state = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": tuple(betas) if isinstance(betas, list) else betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
            "fused": fused,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    def _validate(self, group: dict, where: str) -> None:
        super()._validate(group, where)
        eps = group.get("eps", 0.0)
        if not eps >= 0:
            raise ValueError(f"{where}Invalid epsilon value: eps={eps} (must be >= 0)")
        betas = group.get("betas", (0.0, 0.0))
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{where}betas must be a pair (beta1, beta2), got {betas!r}")
        for k, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"{where}Invalid beta parameter at index {k}: betas[{k}]={beta} (must be in [0, 1))")

    @staticmethod
    def kernel_hyper(group: dict) -> dict:
        """The keywords of ``Backend.adam_step`` that come from ``group`` (its caller adds buffers and step)."""
        beta1, beta2 = group["betas"]
        keys = ("lr", "eps", "weight_decay", "decoupled_weight_decay", "amsgrad", "maximize")
        return {"beta1": beta1, "beta2": beta2, **{k: group[k] for k in keys}}

    def _step_buffer(self, group: dict, buf: _FlatBuffer, has_grad: list) -> None:
        # the step count t is per parameter (a parameter without a grad is not stepped), so a run
        # groups consecutive parameters at the same t; in the common case that is the whole buffer
        # (each state dict looked up once: a Tensor key hashes in Python)
        states = [self.state[p] if has else None for p, has in zip(buf.params, has_grad)]
        keys = [None if st is None else st.get("step", 0) + 1 for st in states]
        amsgrad = group["amsgrad"]
        exp_avg, exp_avg_sq = buf.state_buffer("exp_avg"), buf.state_buffer("exp_avg_sq")
        max_exp_avg_sq = buf.state_buffer("max_exp_avg_sq") if amsgrad else None
        for lo, hi, step in buf.runs(keys):
            buf.backend.adam_step(
                buf.data[lo:hi],
                buf.grad[lo:hi],
                exp_avg[lo:hi],
                exp_avg_sq[lo:hi],
                None if max_exp_avg_sq is None else max_exp_avg_sq[lo:hi],
                step=step,
                **self.kernel_hyper(group),
            )
        for i, (st, step) in enumerate(zip(states, keys)):
            if st is None:
                continue
            if "exp_avg" not in st:  # first step of this parameter: views into the flat state buffers
                st["exp_avg"] = buf.state_view("exp_avg", i)
                st["exp_avg_sq"] = buf.state_view("exp_avg_sq", i)
            if amsgrad and "max_exp_avg_sq" not in st:
                st["max_exp_avg_sq"] = buf.state_view("max_exp_avg_sq", i)
            st["step"] = step


class AdamW(Adam):
    """Adam with decoupled weight decay (``p *= 1 - lr*wd`` before the Adam update), default wd 1e-2.

    >>> opt = gpunn.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize, capturable=capturable,
            differentiable=differentiable, fused=fused, decoupled_weight_decay=True,
        )  # fmt: skip

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:  # whatever was saved, AdamW stays decoupled (as in PyTorch)
            group["decoupled_weight_decay"] = True
