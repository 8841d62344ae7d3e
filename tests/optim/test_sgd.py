"""SGD against torch.optim.SGD: every option, float32 and float64, grads that are sometimes None."""

from __future__ import annotations

import numpy as np
import pytest

from gpunn.optim import SGD
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
    "plain": {"lr": 0.05},
    "momentum": {"lr": 0.05, "momentum": 0.9},
    "dampening": {"lr": 0.05, "momentum": 0.8, "dampening": 0.3},
    "nesterov": {"lr": 0.05, "momentum": 0.9, "nesterov": True},
    "weight_decay": {"lr": 0.05, "momentum": 0.5, "weight_decay": 0.1},
    "maximize": {"lr": 0.02, "momentum": 0.7, "weight_decay": 0.05, "maximize": True},
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("active", [all_active, some_active], ids=["all_grads", "some_grads_none"])
def test_sgd_matches_torch(rng, dtype, option, active):
    kwargs = OPTIONS[option]
    inits, coefs = make_problem(rng, dtype)
    ours, theirs = gpunn_params(inits), torch_params(inits)
    opt, topt = SGD(ours, **kwargs), torch.optim.SGD(theirs, **kwargs)
    train_both(ours, theirs, opt, topt, coefs, steps=25, active=active)
    assert_params_match(ours, theirs, dtype)
    if kwargs.get("momentum"):
        assert_state_matches(opt, topt, ours, theirs, ["momentum_buffer"], dtype)


def test_sgd_defaults_match_torch():
    import inspect

    ours = inspect.signature(SGD).parameters
    theirs = inspect.signature(torch.optim.SGD).parameters
    for name in ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"):
        assert ours[name].default == theirs[name].default, name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_param_groups_with_different_lr(rng, dtype):
    inits, coefs = make_problem(rng, dtype)
    ours, theirs = gpunn_params(inits), torch_params(inits)

    def groups(ps):
        return [{"params": ps[:1]}, {"params": ps[1:], "lr": 0.01, "momentum": 0.5}]

    opt = SGD(groups(ours), lr=0.08, momentum=0.9, nesterov=False)
    topt = torch.optim.SGD(groups(theirs), lr=0.08, momentum=0.9)
    train_both(ours, theirs, opt, topt, coefs, steps=25, active=some_active)
    assert_params_match(ours, theirs, dtype)


def test_sgd_lr_changed_between_steps_is_used(rng):
    inits, coefs = make_problem(rng, np.float64)
    ours, theirs = gpunn_params(inits), torch_params(inits)
    opt, topt = SGD(ours, lr=0.05, momentum=0.9), torch.optim.SGD(theirs, lr=0.05, momentum=0.9)
    for t in range(10):
        for o in (opt, topt):
            o.param_groups[0]["lr"] = 0.05 / (1 + t)
        train_both(ours, theirs, opt, topt, coefs, steps=1, start=t)
    assert_params_match(ours, theirs, np.float64)
