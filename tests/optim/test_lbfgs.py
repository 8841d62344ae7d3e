"""optim.LBFGS against torch.optim.LBFGS 2.13: the same iterates in float64 (losses, parameters, n_iter and
func_evals) over several steps for the defaults, a short history and max_iter=1; float32 losses to rounding;
the closure-less and unsupported calls raise."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
from tests.helpers import torch_or_skip

torch = torch_or_skip()


def _run(L, dtype, kwargs, steps=4):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 4))
    Y = np.sin(X @ rng.standard_normal((4, 2)))
    m = L.nn.Sequential(L.nn.Linear(4, 8), L.nn.Tanh(), L.nn.Linear(8, 2)).to(getattr(L, dtype))
    with L.no_grad():
        for k, p in enumerate(m.parameters()):
            p.copy_(L.tensor(np.cos(np.arange(p.numel()) * (k + 1.3)).reshape(tuple(p.shape)) * 0.5))
    opt = L.optim.LBFGS(m.parameters(), **kwargs)
    x, y = L.tensor(X.astype(dtype)), L.tensor(Y.astype(dtype))

    def closure():
        opt.zero_grad()
        loss = ((m(x) - y) ** 2).mean()
        loss.backward()
        return loss

    losses = [opt.step(closure).item() for _ in range(steps)]
    st = opt.state[next(iter(m.parameters()))]
    return losses, [p.detach().numpy().copy() for p in m.parameters()], (st["n_iter"], st["func_evals"]), repr(opt)


@pytest.mark.parametrize("kwargs", [{}, {"history_size": 3, "max_iter": 7, "lr": 0.5}, {"max_iter": 1}])
def test_lbfgs_follows_torch_in_float64(kwargs):
    g, t = _run(gpunn, "float64", kwargs), _run(torch, "float64", kwargs)
    np.testing.assert_allclose(g[0], t[0], rtol=1e-10)
    for a, b in zip(g[1], t[1]):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    assert g[2] == t[2] and g[3] == t[3]


def test_lbfgs_float32_losses_match_torch_to_rounding():
    g, t = _run(gpunn, "float32", {"lr": 0.8}), _run(torch, "float32", {"lr": 0.8})
    np.testing.assert_allclose(g[0], t[0], rtol=1e-3)  # 80 float32 iterations amplify rounding


def test_lbfgs_refuses_what_it_does_not_do():
    w = gpunn.zeros(2, requires_grad=True)
    with pytest.raises(NotImplementedError, match="strong_wolfe"):
        gpunn.optim.LBFGS([w], line_search_fn="strong_wolfe")
    with pytest.raises(ValueError, match="per-parameter"):
        gpunn.optim.LBFGS([{"params": [w]}, {"params": [gpunn.zeros(1, requires_grad=True)]}])
    with pytest.raises(RuntimeError, match="closure"):
        gpunn.optim.LBFGS([w]).step(None)
