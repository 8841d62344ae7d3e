"""A test-only Adadelta with PyTorch's update rule, used by tests/scripts/test_scripts.py to run
pytorch/examples' mnist/main.py while ``gpunn.optim.Adadelta`` does not exist yet (it is being built in
parallel, issue 10 item 3). Once gpunn.optim has Adadelta, the tests use that and this file is unused.

PyTorch's rule: ``g += wd*p;  v = rho*v + (1-rho)*g^2;  d = sqrt(u+eps)/sqrt(v+eps)*g;
u = rho*u + (1-rho)*d^2;  p -= lr*d``.
"""

from gpunn.optim.optimizer import Optimizer


class Adadelta(Optimizer):
    _array_state = ("square_avg", "acc_delta")

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0):
        super().__init__(params, {"lr": lr, "rho": rho, "eps": eps, "weight_decay": weight_decay})

    def _step_buffer(self, group, buf, has_grad):
        xp = buf.backend.xp
        rho, eps, lr, wd = group["rho"], group["eps"], group["lr"], group["weight_decay"]
        v, u = buf.state_buffer("square_avg"), buf.state_buffer("acc_delta")
        for i, has in enumerate(has_grad):
            if not has:
                continue
            lo, hi = buf.bounds[i], buf.bounds[i + 1]
            p, g = buf.data[lo:hi], buf.grad[lo:hi] + wd * buf.data[lo:hi]
            v[lo:hi] = rho * v[lo:hi] + (1 - rho) * g * g
            d = xp.sqrt(u[lo:hi] + eps) / xp.sqrt(v[lo:hi] + eps) * g
            u[lo:hi] = rho * u[lo:hi] + (1 - rho) * d * d
            p -= lr * d
