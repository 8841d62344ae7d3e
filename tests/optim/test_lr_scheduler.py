"""Learning-rate schedulers against torch.optim.lr_scheduler, state dicts, and bad arguments."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import gpunn
from gpunn.optim import SGD, Adam, lr_scheduler
from tests.helpers import randn

torch = pytest.importorskip("torch")

LRS = (0.1, 0.037)  # two groups with different lrs


def make_optimizers(rng, lrs=LRS):
    ours = SGD([{"params": [gpunn.tensor(randn(rng, 3), requires_grad=True)], "lr": lr} for lr in lrs])
    theirs = torch.optim.SGD([{"params": [torch.zeros(3, requires_grad=True)], "lr": lr} for lr in lrs])
    return ours, theirs


def assert_lrs_equal(ours, theirs, what):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert abs(a - b) <= 1e-12 * abs(b), f"{what}: {a} != {b}"


SCHEDULERS = {
    "step": lambda mod, opt: mod.StepLR(opt, step_size=4, gamma=0.5),
    "step_default_gamma": lambda mod, opt: mod.StepLR(opt, step_size=3),
    "multistep": lambda mod, opt: mod.MultiStepLR(opt, milestones=[2, 5, 5, 11], gamma=0.3),
    "exponential": lambda mod, opt: mod.ExponentialLR(opt, gamma=0.9),
    "cosine": lambda mod, opt: mod.CosineAnnealingLR(opt, T_max=7),
    "cosine_eta_min": lambda mod, opt: mod.CosineAnnealingLR(opt, T_max=5, eta_min=0.01),
    "lambda": lambda mod, opt: mod.LambdaLR(opt, lr_lambda=lambda e: 1.0 / (1 + 0.3 * e)),
    "lambda_list": lambda mod, opt: mod.LambdaLR(opt, lr_lambda=[lambda e: 0.9**e, lambda e: 1 + (e % 3)]),
}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_scheduler_matches_torch(rng, name):
    ours, theirs = make_optimizers(rng)
    s = SCHEDULERS[name](lr_scheduler, ours)
    ts = SCHEDULERS[name](torch.optim.lr_scheduler, theirs)
    assert_lrs_equal(s.get_last_lr(), ts.get_last_lr(), "epoch 0")
    assert s.base_lrs == ts.base_lrs == list(LRS)
    assert [g["initial_lr"] for g in ours.param_groups] == list(LRS)
    distinct = 0
    for epoch in range(1, 3 * 7 + 1):  # three cosine periods
        ours.step()
        theirs.step()
        s.step()
        ts.step()
        assert s.last_epoch == ts.last_epoch == epoch
        assert_lrs_equal(s.get_last_lr(), ts.get_last_lr(), f"epoch {epoch}")
        assert_lrs_equal(
            [g["lr"] for g in ours.param_groups], [g["lr"] for g in theirs.param_groups], f"group lr at epoch {epoch}"
        )
        distinct += len(set(s.get_last_lr())) > 1
    assert distinct > 10  # the groups keep distinct lrs


def test_cosine_is_the_closed_form(rng):
    ours, _ = make_optimizers(rng)
    s = lr_scheduler.CosineAnnealingLR(ours, T_max=6, eta_min=0.002)
    for epoch in range(1, 13):
        s.step()
        for base, lr in zip(LRS, s.get_last_lr()):
            expected = 0.002 + (base - 0.002) * (1 + math.cos(math.pi * epoch / 6)) / 2
            assert lr == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", ["step", "multistep", "cosine", "lambda"])
def test_scheduler_state_dict_round_trip(rng, name):
    """Save at epoch 5 through JSON, restore into a fresh optimizer + scheduler, continue identically."""
    straight_opt, _ = make_optimizers(rng)
    straight = SCHEDULERS[name](lr_scheduler, straight_opt)
    first_opt, _ = make_optimizers(rng)
    first = SCHEDULERS[name](lr_scheduler, first_opt)
    for _ in range(5):
        straight.step()
        first.step()
    saved_sched = json.loads(json.dumps(first.state_dict()))
    saved_opt = json.loads(json.dumps(first_opt.state_dict()))

    resumed_opt, _ = make_optimizers(rng, lrs=(0.5, 0.6))
    resumed = SCHEDULERS[name](lr_scheduler, resumed_opt)
    resumed.load_state_dict(saved_sched)
    resumed_opt.load_state_dict(saved_opt)
    assert resumed.last_epoch == 5
    for _ in range(15):
        straight.step()
        resumed.step()
        assert resumed.get_last_lr() == straight.get_last_lr()
        assert [g["lr"] for g in resumed_opt.param_groups] == [g["lr"] for g in straight_opt.param_groups]


def test_lambda_state_dict_keeps_callable_objects_state(rng):
    class Warmup:
        def __init__(self, n):
            self.n = n

        def __call__(self, epoch):
            return min(1.0, (epoch + 1) / self.n)

    opt, _ = make_optimizers(rng)
    s = lr_scheduler.LambdaLR(opt, [Warmup(4), lambda e: 1.0])
    sd = json.loads(json.dumps(s.state_dict()))
    assert sd["lr_lambdas"] == [{"n": 4}, None]
    other = Warmup(10)
    s2 = lr_scheduler.LambdaLR(make_optimizers(rng)[0], [other, lambda e: 1.0])
    s2.load_state_dict(sd)
    assert other.n == 4 and callable(s2.lr_lambdas[1])


def test_resuming_with_last_epoch_needs_initial_lr(rng):
    opt, _ = make_optimizers(rng)
    with pytest.raises(KeyError, match="initial_lr"):
        lr_scheduler.StepLR(opt, step_size=2, last_epoch=3)


# ------------------------------------------------------------------------------------------------
# ReduceLROnPlateau
# ------------------------------------------------------------------------------------------------
PLATEAU = {
    "defaults_short_patience": ({"patience": 2}, "min"),
    "cooldown_min_lr": ({"patience": 1, "factor": 0.5, "cooldown": 2, "min_lr": 0.02}, "min"),
    "min_lr_list": ({"patience": 0, "factor": 0.3, "min_lr": [0.01, 0.005]}, "min"),
    "max_mode": ({"mode": "max", "patience": 1, "factor": 0.2}, "max"),
    "abs_threshold": ({"patience": 1, "threshold": 0.05, "threshold_mode": "abs"}, "min"),
    "max_abs": ({"mode": "max", "patience": 0, "threshold": 0.1, "threshold_mode": "abs", "cooldown": 1}, "max"),
    "eps_blocks_tiny_changes": ({"patience": 0, "factor": 0.5, "eps": 0.02}, "min"),
}


def scripted_metrics(rng, mode, n=40):
    """Improves, stalls with noise, has tiny improvements (below a rel/abs threshold), a NaN and an inf."""
    base = np.concatenate(
        [
            np.linspace(1.0, 0.6, 6),
            0.6 + 0.01 * rng.standard_normal(8),
            0.6 - np.arange(1, 7) * 1e-5,
            np.linspace(0.58, 0.3, 5),
            0.3 + 0.04 * rng.standard_normal(n - 25),
        ]
    )
    metrics = list(base if mode == "min" else 2.0 - base)
    metrics[15] = float("nan")
    metrics[30] = math.inf if mode == "min" else -math.inf  # the worst possible value: not better
    return metrics


@pytest.mark.parametrize("name", list(PLATEAU))
def test_reduce_lr_on_plateau_matches_torch(rng, name):
    kwargs, mode = PLATEAU[name]
    ours, theirs = make_optimizers(rng)
    s = lr_scheduler.ReduceLROnPlateau(ours, **kwargs)
    ts = torch.optim.lr_scheduler.ReduceLROnPlateau(theirs, **kwargs)
    reductions = 0
    for epoch, metric in enumerate(scripted_metrics(rng, mode), start=1):
        before = s.get_last_lr()
        s.step(metric)
        ts.step(metric)
        reductions += s.get_last_lr() != before
        assert_lrs_equal(s.get_last_lr(), ts.get_last_lr(), f"epoch {epoch}")
        assert s.num_bad_epochs == ts.num_bad_epochs, f"epoch {epoch}"
        assert s.cooldown_counter == ts.cooldown_counter, f"epoch {epoch}"
        assert s.best == ts.best or (math.isnan(s.best) and math.isnan(ts.best))
        assert s.last_epoch == ts.last_epoch == epoch
    assert reductions >= 2  # the script really exercises the reductions


def test_reduce_lr_on_plateau_accepts_tensors_and_nan_is_not_better(rng):
    opt, _ = make_optimizers(rng)
    s = lr_scheduler.ReduceLROnPlateau(opt, patience=1, factor=0.5)
    s.step(gpunn.tensor(1.0))
    assert s.best == 1.0
    s.step(float("nan"))
    s.step(np.float64("nan"))
    assert s.best == 1.0 and s.num_bad_epochs == 0  # reduced after the second bad epoch, counter reset
    assert s.get_last_lr() == [LRS[0] * 0.5, LRS[1] * 0.5]


def test_reduce_lr_on_plateau_state_dict_round_trip(rng):
    opt, _ = make_optimizers(rng)
    s = lr_scheduler.ReduceLROnPlateau(opt, mode="max", patience=1, cooldown=1)
    metrics = scripted_metrics(rng, "max")
    for m in metrics[:10]:
        s.step(m)
    sd = json.loads(json.dumps(s.state_dict()))
    opt2, _ = make_optimizers(rng)
    opt2.load_state_dict(json.loads(json.dumps(opt.state_dict())))
    s2 = lr_scheduler.ReduceLROnPlateau(opt2)
    s2.load_state_dict(sd)
    assert s2.mode == "max" and s2.best == s.best
    for m in metrics[10:]:
        s.step(m)
        s2.step(m)
        assert s2.get_last_lr() == s.get_last_lr() and s2.num_bad_epochs == s.num_bad_epochs


# ------------------------------------------------------------------------------------------------
# bad arguments
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make,match",
    [
        (lambda opt: lr_scheduler.ReduceLROnPlateau(opt, factor=1.0), "factor"),
        (lambda opt: lr_scheduler.ReduceLROnPlateau(opt, factor=2.0), "factor"),
        (lambda opt: lr_scheduler.ReduceLROnPlateau(opt, mode="minimum"), "mode"),
        (lambda opt: lr_scheduler.ReduceLROnPlateau(opt, threshold_mode="relative"), "threshold_mode"),
        (lambda opt: lr_scheduler.ReduceLROnPlateau(opt, patience=-1), "patience"),
        (lambda opt: lr_scheduler.ReduceLROnPlateau(opt, cooldown=-2), "cooldown"),
        (lambda opt: lr_scheduler.ReduceLROnPlateau(opt, min_lr=[0.1]), "min_lrs"),
        (lambda opt: lr_scheduler.StepLR(opt, step_size=0), "step_size"),
        (lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=0), "T_max"),
        (lambda opt: lr_scheduler.MultiStepLR(opt, milestones=[2.5]), "milestones"),
        (lambda opt: lr_scheduler.LambdaLR(opt, lr_lambda=[lambda e: 1.0]), "lr_lambdas"),
    ],
)
def test_bad_scheduler_arguments(rng, make, match):
    opt, _ = make_optimizers(rng)
    with pytest.raises(ValueError, match=match):
        make(opt)


def test_scheduler_needs_an_optimizer():
    with pytest.raises(TypeError, match="not an Optimizer"):
        lr_scheduler.StepLR(object(), step_size=2)
    with pytest.raises(TypeError, match="not an Optimizer"):
        lr_scheduler.ReduceLROnPlateau([1, 2])


def test_scheduler_drives_the_optimizer_update(rng):
    """The lr a scheduler writes is the one the next step uses."""
    p = gpunn.tensor(randn(rng, 5, dtype=np.float64), requires_grad=True)
    start = p.detach().numpy().copy()
    opt = Adam([p], lr=0.1)
    s = lr_scheduler.StepLR(opt, step_size=1, gamma=0.0)
    s.step()
    assert opt.param_groups[0]["lr"] == 0.0
    (p * p).sum().backward()
    opt.step()
    np.testing.assert_array_equal(p.detach().numpy(), start)
