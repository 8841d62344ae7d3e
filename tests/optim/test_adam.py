"""Adam and AdamW against torch.optim: every option, float32 and float64, grads that are sometimes None."""

from __future__ import annotations

import numpy as np
import pytest

from gpunn.optim import Adam, AdamW
from tests.optim.test_optimizer import (
    all_active,
    assert_params_match,
    assert_state_matches,
    gpunn_params,
    make_problem,
    some_active,
    torch_params,
    train_both,
)

torch = pytest.importorskip("torch")

OPTIONS = {
    "adam": (Adam, {"lr": 0.05}),
    "adam_betas_eps": (Adam, {"lr": 0.05, "betas": (0.8, 0.95), "eps": 1e-3}),
    "adam_weight_decay": (Adam, {"lr": 0.05, "weight_decay": 0.1}),
    "adam_amsgrad": (Adam, {"lr": 0.05, "amsgrad": True, "weight_decay": 0.01}),
    "adam_maximize": (Adam, {"lr": 0.01, "maximize": True}),
    "adamw": (AdamW, {"lr": 0.05}),
    "adamw_weight_decay": (AdamW, {"lr": 0.05, "weight_decay": 0.2}),
    "adamw_amsgrad_maximize": (AdamW, {"lr": 0.01, "amsgrad": True, "maximize": True}),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("active", [all_active, some_active], ids=["all_grads", "some_grads_none"])
def test_adam_matches_torch(rng, dtype, option, active):
    cls, kwargs = OPTIONS[option]
    inits, coefs = make_problem(rng, dtype)
    ours, theirs = gpunn_params(inits), torch_params(inits)
    opt, topt = cls(ours, **kwargs), getattr(torch.optim, cls.__name__)(theirs, **kwargs)
    train_both(ours, theirs, opt, topt, coefs, steps=25, active=active)
    assert_params_match(ours, theirs, dtype)
    names = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if kwargs.get("amsgrad") else [])
    assert_state_matches(opt, topt, ours, theirs, names, dtype)


@pytest.mark.parametrize("cls", [Adam, AdamW])
def test_adam_defaults_match_torch(cls):
    import inspect

    ours = inspect.signature(cls).parameters
    theirs = inspect.signature(getattr(torch.optim, cls.__name__)).parameters
    for name in ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"):
        assert ours[name].default == theirs[name].default, name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_param_groups_with_different_lr(rng, dtype):
    inits, coefs = make_problem(rng, dtype)
    ours, theirs = gpunn_params(inits), torch_params(inits)

    def groups(ps):
        return [{"params": ps[:2], "lr": 0.003}, {"params": ps[2:], "betas": (0.5, 0.9), "weight_decay": 0.1}]

    opt = AdamW(groups(ours), lr=0.05)
    topt = torch.optim.AdamW(groups(theirs), lr=0.05)
    train_both(ours, theirs, opt, topt, coefs, steps=25, active=some_active)
    assert_params_match(ours, theirs, dtype)


def test_adam_step_counts_are_per_parameter(rng, monkeypatch):
    """A parameter skipped on some steps has a smaller t, so its update is a separate primitive call."""
    from tests.optim.test_optimizer import counting, gpunn_loss

    inits, coefs = make_problem(rng, np.float32)
    ours = gpunn_params(inits)
    opt = Adam(ours, lr=0.01)
    calls = counting(monkeypatch, "adam_step")
    for t in range(4):
        opt.zero_grad()
        gpunn_loss(ours, coefs, [0, 1, 2] if t != 1 else [0, 2]).backward()
        opt.step()
    assert [opt.state[p]["step"] for p in ours] == [4, 3, 4]
    n0, n1, n2 = (a.size for a in inits)
    assert calls == [n0 + n1 + n2, n0, n2, n0, n1, n2, n0, n1, n2]


@pytest.mark.parametrize("cls,kwargs", [(Adam, {"lr": 0.05, "amsgrad": True}), (AdamW, {"lr": 0.05})])
def test_torch_state_dict_loads_and_continues(rng, cls, kwargs):
    """PyTorch's layout is ours: a torch optimizer's state dict (tensors, float steps) resumes here."""
    inits, coefs = make_problem(rng, np.float64)
    warm = torch_params(inits)
    twarm = getattr(torch.optim, cls.__name__)(warm, **kwargs)
    from tests.optim.test_optimizer import torch_loss

    for t in range(5):
        twarm.zero_grad()
        torch_loss(warm, coefs, some_active(t, 3)).backward()
        twarm.step()
    values = [q.detach().numpy().copy() for q in warm]
    ours, theirs = gpunn_params(values), torch_params(values)
    opt, topt = cls(ours, **kwargs), getattr(torch.optim, cls.__name__)(theirs, **kwargs)
    opt.load_state_dict(twarm.state_dict())
    topt.load_state_dict(twarm.state_dict())
    assert [opt.state[p]["step"] for p in ours] == [int(twarm.state[q]["step"]) for q in warm]
    train_both(ours, theirs, opt, topt, coefs, steps=20, active=some_active, start=5)
    assert_params_match(ours, theirs, np.float64)
