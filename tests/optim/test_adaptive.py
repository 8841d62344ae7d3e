"""Adagrad, Adadelta and RMSprop against torch.optim: every option, float32 and float64, param groups,
grads that are sometimes None, and state dicts that cross between gpunn and PyTorch in both directions."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import gpunn
from gpunn.backend import reference
from gpunn.optim import Adadelta, Adagrad, RMSprop
from tests.optim.test_optimizer import (
    all_active,
    assert_params_match,
    assert_state_matches,
    gpunn_params,
    make_problem,
    some_active,
    to_np,
    torch_loss,
    torch_params,
    train_both,
)

torch = pytest.importorskip("torch")

OPTIONS = {
    "adagrad": (Adagrad, {"lr": 0.1}),
    "adagrad_all": (
        Adagrad,
        {"lr": 0.1, "lr_decay": 0.05, "weight_decay": 0.1, "initial_accumulator_value": 0.3, "eps": 1e-6},
    ),
    "adagrad_maximize": (Adagrad, {"lr": 0.05, "maximize": True, "foreach": False}),
    "adadelta": (Adadelta, {}),
    "adadelta_all": (Adadelta, {"lr": 0.5, "rho": 0.8, "eps": 1e-4, "weight_decay": 0.1}),
    "adadelta_maximize": (Adadelta, {"maximize": True, "capturable": False}),
    "rmsprop": (RMSprop, {}),
    "rmsprop_momentum": (RMSprop, {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.05}),
    "rmsprop_centered": (RMSprop, {"lr": 0.01, "alpha": 0.9, "centered": True, "eps": 1e-5}),
    "rmsprop_all": (
        RMSprop,
        {"lr": 0.005, "momentum": 0.5, "centered": True, "weight_decay": 0.1, "maximize": True, "foreach": None},
    ),
}
STATE = {Adagrad: ["sum"], Adadelta: ["square_avg", "acc_delta"], RMSprop: ["square_avg"]}


def state_names(cls, kwargs):
    names = list(STATE[cls])
    if kwargs.get("momentum"):
        names.append("momentum_buffer")
    if kwargs.get("centered"):
        names.append("grad_avg")
    return names


def train_torch(params, opt, coefs, steps):
    for t in steps:
        opt.zero_grad()
        torch_loss(params, coefs, some_active(t, len(params))).backward()
        opt.step()


def torch_state_dict(sd):
    """Our state dict with its arrays and steps as torch tensors (what torch's load_state_dict expects)."""
    state = {
        k: {n: torch.tensor(np.asarray(v)) if n != "step" else torch.tensor(float(v)) for n, v in st.items()}
        for k, st in sd["state"].items()
    }
    return {"state": state, "param_groups": sd["param_groups"]}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("active", [all_active, some_active], ids=["all_grads", "some_grads_none"])
def test_matches_torch(rng, dtype, option, active):
    cls, kwargs = OPTIONS[option]
    inits, coefs = make_problem(rng, dtype)
    ours, theirs = gpunn_params(inits), torch_params(inits)
    opt, topt = cls(ours, **kwargs), getattr(torch.optim, cls.__name__)(theirs, **kwargs)
    train_both(ours, theirs, opt, topt, coefs, steps=20, active=active)
    assert_params_match(ours, theirs, dtype)
    assert_state_matches(opt, topt, ours, theirs, state_names(cls, kwargs), dtype)
    # the state dict has torch's structure: the same keys per parameter and per group
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert sorted(sd["state"]) == sorted(tsd["state"])
    for k in tsd["state"]:
        assert list(sd["state"][k]) == list(tsd["state"][k])
    assert [sorted(g) for g in sd["param_groups"]] == [sorted(g) for g in tsd["param_groups"]]
    for g, tg in zip(sd["param_groups"], tsd["param_groups"]):
        assert g == tg


@pytest.mark.parametrize("cls", [Adagrad, Adadelta, RMSprop])
def test_defaults_match_torch(cls):
    ours = inspect.signature(cls).parameters
    theirs = inspect.signature(getattr(torch.optim, cls.__name__)).parameters
    assert list(ours) == list(theirs)
    for name, par in theirs.items():
        assert ours[name].default == par.default, name
        assert ours[name].kind == par.kind, name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls", [Adagrad, Adadelta, RMSprop])
def test_param_groups(rng, dtype, cls):
    inits, coefs = make_problem(rng, dtype)
    ours, theirs = gpunn_params(inits), torch_params(inits)
    extra = {Adagrad: {"lr_decay": 0.1}, Adadelta: {"rho": 0.7}, RMSprop: {"momentum": 0.8, "centered": True}}[cls]

    def groups(ps):
        return [{"params": ps[:2], "lr": 0.03}, {"params": ps[2:], "weight_decay": 0.1, **extra}]

    opt, topt = cls(groups(ours), lr=0.2), getattr(torch.optim, cls.__name__)(groups(theirs), lr=0.2)
    train_both(ours, theirs, opt, topt, coefs, steps=15, active=some_active)
    assert_params_match(ours, theirs, dtype)


@pytest.mark.parametrize("option", ["adagrad_all", "adadelta_all", "rmsprop_all", "rmsprop_momentum"])
def test_state_dicts_cross_between_gpunn_and_torch(rng, option):
    """Train 7 steps on each side, swap state dicts (ours into torch, torch's into ours), train 8 more:
    both still agree with an uninterrupted torch run."""
    cls, kwargs = OPTIONS[option]
    dtype = np.float64
    inits, coefs = make_problem(rng, dtype)
    tcls = getattr(torch.optim, cls.__name__)
    ref = torch_params(inits)
    ref_opt = tcls(ref, **kwargs)
    a, b = gpunn_params(inits), torch_params(inits)
    opt_a, opt_b = cls(a, **kwargs), tcls(b, **kwargs)
    train_both(a, ref, opt_a, ref_opt, coefs, steps=7, active=some_active)
    train_torch(b, opt_b, coefs, range(7))
    # fresh optimizers on each side take the other side's state dict
    c = gpunn_params([to_np(p) for p in b])
    opt_c = cls(c, **kwargs)
    opt_c.load_state_dict(opt_b.state_dict())
    d = torch_params([to_np(p) for p in a])
    opt_d = tcls(d, **kwargs)
    opt_d.load_state_dict(torch_state_dict(opt_a.state_dict()))
    ref2 = torch_params([to_np(p) for p in ref])
    ref_opt2 = tcls(ref2, **kwargs)
    ref_opt2.load_state_dict(ref_opt.state_dict())
    train_both(c, ref2, opt_c, ref_opt2, coefs, steps=8, active=some_active, start=7)
    train_torch(d, opt_d, coefs, range(7, 15))
    assert_params_match(c, ref2, dtype)
    assert_params_match(c, d, dtype)
    assert_state_matches(opt_c, ref_opt2, c, ref2, state_names(cls, kwargs), dtype)


def test_adagrad_state_exists_from_construction(rng):
    p = gpunn.tensor(rng.standard_normal((3, 5)), requires_grad=True)
    opt = Adagrad([p], initial_accumulator_value=0.25)
    sd = opt.state_dict()
    assert list(sd["state"][0]) == ["step", "sum"] and sd["state"][0]["step"] == 0
    np.testing.assert_array_equal(sd["state"][0]["sum"], np.full((3, 5), 0.25))


@pytest.mark.parametrize(
    "cls,kwargs,match",
    [
        (Adagrad, {"lr_decay": -1}, "lr_decay"),
        (Adagrad, {"initial_accumulator_value": -0.5}, "initial_accumulator_value"),
        (Adagrad, {"eps": -1}, "eps"),
        (Adadelta, {"rho": 1.5}, "rho"),
        (Adadelta, {"lr": -1}, "learning rate"),
        (RMSprop, {"momentum": -0.1}, "momentum"),
        (RMSprop, {"alpha": -0.1}, "alpha"),
        (RMSprop, {"weight_decay": -1}, "weight_decay"),
    ],
)
def test_bad_hyperparameters(rng, cls, kwargs, match):
    p = gpunn.tensor(rng.standard_normal(3), requires_grad=True)
    with pytest.raises(ValueError, match=match):
        cls([p], **kwargs)


@pytest.mark.parametrize("cls", [Adagrad, Adadelta, RMSprop])
def test_differentiable_is_refused_by_name(rng, cls):
    p = gpunn.tensor(rng.standard_normal(3), requires_grad=True)
    with pytest.raises(NotImplementedError, match="differentiable"):
        cls([p], differentiable=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_references_match_torch_functional_formulas(rng, dtype):
    """The reference primitives, alone, on an odd-sized flat buffer (9*7*41), several steps, against torch."""
    n = 9 * 7 * 41
    p0 = rng.standard_normal(n).astype(dtype)
    grads = [rng.standard_normal(n).astype(dtype) for _ in range(4)]
    cases = [
        ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.1)),
        ("Adadelta", dict(lr=0.9, rho=0.85, weight_decay=0.05)),
        ("RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.7, centered=True, weight_decay=0.02)),
    ]
    for name, kw in cases:
        p = p0.copy()
        bufs = [np.zeros(n, dtype) for _ in range(3)]
        tp = torch.tensor(p0.copy(), requires_grad=True)
        topt = getattr(torch.optim, name)([tp], **kw)
        for t, g in enumerate(grads, 1):
            if name == "Adagrad":
                reference.adagrad_step(np, p, g, bufs[0], step=t, **kw)
            elif name == "Adadelta":
                reference.adadelta_step(np, p, g, bufs[0], bufs[1], **kw)
            else:
                reference.rmsprop_step(np, p, g, bufs[0], bufs[1], bufs[2], **kw)
            tp.grad = torch.from_numpy(g.copy())
            topt.step()
        err = np.linalg.norm(p - tp.detach().numpy()) / np.linalg.norm(tp.detach().numpy())
        assert err < (1e-6 if dtype == np.float32 else 1e-13), (name, err)
