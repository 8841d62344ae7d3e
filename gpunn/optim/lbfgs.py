"""L-BFGS (PyTorch's ``optim.LBFGS`` without a line search): each ``step(closure)`` runs up to ``max_iter``
iterations of the two-loop recursion over the last ``history_size`` (s, y) pairs, a step of ``lr`` along the
direction (the first step scaled by min(1, 1 / |g|_1)), and PyTorch's stopping rules (gradient below
``tolerance_grad``, a step or loss change below ``tolerance_change``, ``max_eval`` closure calls). The
arithmetic is PyTorch's, in the parameters' dtype (scalars included), so the iterates follow PyTorch's.
``line_search_fn='strong_wolfe'`` is not supported: it raises."""

from __future__ import annotations

from gpunn.grad_mode import enable_grad, no_grad
from gpunn.optim.optimizer import Optimizer


class LBFGS(Optimizer):
    """>>> opt = gpunn.optim.LBFGS(model.parameters(), lr=0.8)
    >>> def closure():
    ...     opt.zero_grad(); loss = criterion(model(x), y); loss.backward(); return loss
    >>> opt.step(closure)
    """

    def __init__(self, params, lr: float = 1, max_iter: int = 20, max_eval=None, tolerance_grad: float = 1e-7,
                 tolerance_change: float = 1e-9, history_size: int = 100, line_search_fn=None) -> None:  # fmt: skip
        if line_search_fn is not None:
            raise NotImplementedError(f"LBFGS(line_search_fn={line_search_fn!r}) is not supported by gpunn")
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        defaults = {
            "lr": lr,
            "max_iter": max_iter,
            "max_eval": max_eval,
            "tolerance_grad": tolerance_grad,
            "tolerance_change": tolerance_change,
            "history_size": history_size,
            "line_search_fn": line_search_fn,
        }
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        self._params = self.param_groups[0]["params"]
        dtypes = {p.dtype for p in self._params}
        if len(dtypes) != 1 or len({id(p._backend) for p in self._params}) != 1:
            raise ValueError("LBFGS: all parameters must share one dtype and device (it works on one flat vector)")

    def _flat_grad(self):
        xp = self._params[0]._backend.xp
        parts = [xp.zeros(p.numel(), p.dtype) if p.grad is None else p.grad._data.reshape(-1) for p in self._params]
        return xp.concatenate(parts)

    def _add_grad(self, t, d) -> None:
        offset = 0
        for p in self._params:
            n = p.numel()
            p._data += (d[offset : offset + n] * t).reshape(p.shape).astype(p.dtype, copy=False)
            p._bump_version("optimizer.step")
            offset += n

    @no_grad()
    def step(self, closure):
        """Up to ``max_iter`` L-BFGS iterations; ``closure`` re-evaluates the model (zero_grad, forward,
        backward) and returns the loss. Returns the first loss, as PyTorch."""
        if closure is None:
            raise RuntimeError("LBFGS.step requires a closure that re-evaluates the model and returns the loss")
        group = self.param_groups[0]
        lr, max_iter, max_eval = group["lr"], group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        history_size = group["history_size"]
        for p in self._params:  # a p.data rebinding reaches the flat buffer first
            self._slot[id(p)][0].sync()
        state = self.state[self._params[0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)
        with enable_grad():
            orig_loss = closure()
        loss = float(orig_loss)
        current_evals = 1
        state["func_evals"] += 1
        xp = self._params[0]._backend.xp
        flat_grad = self._flat_grad()
        one = flat_grad.dtype.type(1)
        if xp.abs(flat_grad).max() <= tolerance_grad:
            return orig_loss
        d, t = state.get("d"), state.get("t")
        old_dirs, old_stps, ro = state.get("old_dirs"), state.get("old_stps"), state.get("ro")
        h_diag, prev_flat_grad, prev_loss = state.get("H_diag"), state.get("prev_flat_grad"), state.get("prev_loss")
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            if state["n_iter"] == 1:
                d = -flat_grad
                old_dirs, old_stps, ro, h_diag = [], [], [], 1
            else:
                y = flat_grad - prev_flat_grad
                s = d * t
                ys = y.dot(s)
                if ys > 1e-10:
                    if len(old_dirs) == history_size:
                        old_dirs.pop(0), old_stps.pop(0), ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(one / ys)
                    h_diag = ys / y.dot(y)
                al = [None] * len(old_dirs)
                q = -flat_grad
                for i in range(len(old_dirs) - 1, -1, -1):
                    al[i] = old_stps[i].dot(q) * ro[i]
                    q = q - old_dirs[i] * al[i]
                d = r = q * h_diag
                for i in range(len(old_dirs)):
                    be_i = old_dirs[i].dot(r) * ro[i]
                    r += old_stps[i] * (al[i] - be_i)
            prev_flat_grad = flat_grad.copy()
            prev_loss = loss
            if state["n_iter"] == 1:
                inv = one / xp.abs(flat_grad).sum()
                t = (inv if inv < 1.0 else 1.0) * lr
            else:
                t = lr
            gtd = flat_grad.dot(d)
            if gtd > -tolerance_change:
                break
            ls_func_evals = 0
            self._add_grad(t, d)
            if n_iter != max_iter:
                with enable_grad():
                    loss = float(closure())
                flat_grad = self._flat_grad()
                opt_cond = bool(xp.abs(flat_grad).max() <= tolerance_grad)
                ls_func_evals = 1
            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals
            if n_iter == max_iter or current_evals >= max_eval or opt_cond:
                break
            if xp.abs(d * t).max() <= tolerance_change or abs(loss - prev_loss) < tolerance_change:
                break
        state.update(d=d, t=t, old_dirs=old_dirs, old_stps=old_stps, ro=ro, H_diag=h_diag,
                     prev_flat_grad=prev_flat_grad, prev_loss=prev_loss)  # fmt: skip
        return orig_loss
