"""ConstantLR, LinearLR, SequentialLR, CosineAnnealingWarmRestarts and OneCycleLR against
torch.optim.lr_scheduler: the lr (and momentum) sequences, state dicts, bad arguments."""

from __future__ import annotations

import json

import pytest

import gpunn
from gpunn.optim import SGD, Adagrad, Adam, RMSprop, lr_scheduler
from tests.helpers import torch_at_least
from tests.optim.test_lr_scheduler import LRS, assert_lrs_equal, make_optimizers

torch = pytest.importorskip("torch")


SCHEDULERS = {
    "constant": lambda mod, opt: mod.ConstantLR(opt),
    "constant_factor": lambda mod, opt: mod.ConstantLR(opt, factor=0.5, total_iters=3),
    "constant_zero_iters": lambda mod, opt: mod.ConstantLR(opt, factor=0.25, total_iters=0),
    "linear": lambda mod, opt: mod.LinearLR(opt),
    "linear_down": lambda mod, opt: mod.LinearLR(opt, start_factor=1.0, end_factor=0.1, total_iters=7),
    "linear_warmup": lambda mod, opt: mod.LinearLR(opt, start_factor=0.05, total_iters=4),
    "warm_restarts": lambda mod, opt: mod.CosineAnnealingWarmRestarts(opt, T_0=4),
    "warm_restarts_mult": lambda mod, opt: mod.CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=2, eta_min=0.003),
    "seq_linear_cosine": lambda mod, opt: mod.SequentialLR(
        opt, [mod.LinearLR(opt, start_factor=0.1, total_iters=4), mod.CosineAnnealingLR(opt, T_max=9)], milestones=[4]
    ),
    "seq_three": lambda mod, opt: mod.SequentialLR(
        opt,
        [
            mod.ConstantLR(opt, factor=0.2, total_iters=2),
            mod.ExponentialLR(opt, gamma=0.8),
            mod.StepLR(opt, step_size=3, gamma=0.5),
        ],
        milestones=[3, 8],
    ),
    "seq_multistep_restarts": lambda mod, opt: mod.SequentialLR(
        opt,
        [mod.MultiStepLR(opt, milestones=[1, 2], gamma=0.5), mod.CosineAnnealingWarmRestarts(opt, T_0=3, T_mult=2)],
        milestones=[5],
    ),
    "seq_milestone_zero": lambda mod, opt: mod.SequentialLR(
        opt, [mod.ExponentialLR(opt, gamma=0.5), mod.LinearLR(opt, start_factor=0.5, total_iters=3)], milestones=[0]
    ),
    "one_cycle": lambda mod, opt: mod.OneCycleLR(opt, max_lr=0.3, total_steps=25),
    "one_cycle_lists_linear": lambda mod, opt: mod.OneCycleLR(
        opt,
        max_lr=[0.2, 0.05],
        epochs=5,
        steps_per_epoch=5,
        anneal_strategy="linear",
        pct_start=0.4,
        base_momentum=[0.8, 0.7],
        max_momentum=0.9,
        div_factor=10.0,
        final_div_factor=100.0,
    ),
    "one_cycle_three_phase": lambda mod, opt: mod.OneCycleLR(opt, max_lr=0.1, total_steps=25, three_phase=True),
    "one_cycle_no_momentum": lambda mod, opt: mod.OneCycleLR(opt, max_lr=0.1, total_steps=25, cycle_momentum=False),
}
STEPS = 24  # OneCycleLR's 25 steps: construction is step 0


def run_both(name, cls=SGD, momentum=0.9):
    kwargs = {"momentum": momentum} if cls in (SGD, RMSprop) else {}
    ours = cls([{"params": [gpunn.zeros(3, requires_grad=True)], "lr": lr} for lr in LRS], **kwargs)
    theirs = getattr(torch.optim, cls.__name__)(
        [{"params": [torch.zeros(3, requires_grad=True)], "lr": lr} for lr in LRS], **kwargs
    )
    return ours, theirs, SCHEDULERS[name](lr_scheduler, ours), SCHEDULERS[name](torch.optim.lr_scheduler, theirs)


def momenta(opt):
    return [g["betas"][0] if "betas" in g else g.get("momentum") for g in opt.param_groups]


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=torch_at_least(2, 13, "SequentialLR with a milestone at 0"))
        if n == "seq_milestone_zero"
        else n
        for n in SCHEDULERS
    ],
)
def test_matches_torch(name):
    ours, theirs, s, ts = run_both(name)
    assert_lrs_equal(s.get_last_lr(), ts.get_last_lr(), "epoch 0")
    lrs = set()
    for epoch in range(1, STEPS + 1):
        ours.step()
        theirs.step()
        s.step()
        ts.step()
        assert s.last_epoch == ts.last_epoch == epoch
        assert_lrs_equal(s.get_last_lr(), ts.get_last_lr(), f"epoch {epoch}")
        assert_lrs_equal([g["lr"] for g in ours.param_groups], [g["lr"] for g in theirs.param_groups], f"{epoch}")
        assert momenta(ours) == pytest.approx(momenta(theirs), rel=1e-12)
        lrs.add(s.get_last_lr()[0])
    assert len(lrs) > 1 or name == "constant_zero_iters"  # the schedule really moves (that one: never, as in torch)
    # the state dict has torch's keys (nested ones for SequentialLR)
    sd, tsd = s.state_dict(), ts.state_dict()
    assert sorted(sd) == sorted(k for k in tsd if k != "_get_lr_called_within_step")
    if "_schedulers" in tsd:
        for a, b in zip(sd["_schedulers"], tsd["_schedulers"]):
            assert sorted(a) == sorted(k for k in b if k != "_get_lr_called_within_step")


@pytest.mark.parametrize("cls", [Adam, RMSprop])
def test_one_cycle_cycles_beta1_or_momentum(cls):
    ours, theirs, s, ts = run_both("one_cycle", cls=cls)
    seen = set()
    for epoch in range(1, STEPS + 1):
        ours.step()
        theirs.step()
        s.step()
        ts.step()
        assert momenta(ours) == pytest.approx(momenta(theirs), rel=1e-12)
        seen.add(round(momenta(ours)[0], 6))
        assert_lrs_equal(s.get_last_lr(), ts.get_last_lr(), f"epoch {epoch}")
    assert len(seen) > 5
    if cls is Adam:
        assert ours.param_groups[0]["betas"][1] == 0.999


def test_one_cycle_past_the_end_and_without_momentum_support():
    ours, _, s, _ = run_both("one_cycle")
    for _ in range(STEPS + 1):  # step 25 (= total_steps) still works, as in torch
        s.step()
    with pytest.raises(ValueError, match="Tried to step 26 times"):
        s.step()
    opt = Adagrad([gpunn.zeros(2, requires_grad=True)])
    with pytest.raises(ValueError, match="momentum or beta1"):
        lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10, cycle_momentum=False)


@pytest.mark.parametrize("t_mult", [1, 2, 3])
def test_warm_restarts_fractional_epochs(t_mult):
    """The per-batch idiom: step(epoch + i / iters), including jumps back and forth."""
    ours, theirs, _, _ = run_both("constant")
    s = lr_scheduler.CosineAnnealingWarmRestarts(ours, T_0=3, T_mult=t_mult, eta_min=0.001)
    ts = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(theirs, T_0=3, T_mult=t_mult, eta_min=0.001)
    epochs = [e + i / 4 for e in range(12) for i in range(4)] + [2.5, 20, 0.3, 7]
    for epoch in epochs:
        ours.step()
        theirs.step()
        ts.step(epoch)  # CosineAnnealingWarmRestarts takes an epoch without a warning, in torch too
        s.step(epoch)
        assert s.last_epoch == ts.last_epoch and s.T_i == ts.T_i
        assert s.T_cur == pytest.approx(ts.T_cur, abs=1e-12)
        assert_lrs_equal(s.get_last_lr(), ts.get_last_lr(), f"epoch {epoch}")
    with pytest.raises(ValueError, match="non-negative epoch"):
        s.step(-1)


@pytest.mark.parametrize(
    "name",
    [
        "constant_factor",
        "linear_down",
        "warm_restarts_mult",
        "seq_three",
        "seq_multistep_restarts",
        "one_cycle_lists_linear",
    ],
)
def test_state_dict_round_trip(name):
    """Save at step 6 through JSON, restore into a fresh optimizer + scheduler, continue identically."""
    straight_opt, _, straight, _ = run_both(name)
    first_opt, _, first, _ = run_both(name)
    for _ in range(6):
        straight.step()
        first.step()
    saved_sched = json.loads(json.dumps(first.state_dict()))
    saved_opt = json.loads(json.dumps(first_opt.state_dict()))
    resumed_opt, _, resumed, _ = run_both(name)
    resumed.load_state_dict(saved_sched)
    resumed_opt.load_state_dict(saved_opt)
    for _ in range(STEPS - 6):
        straight.step()
        resumed.step()
        assert resumed.get_last_lr() == straight.get_last_lr()
        assert [g["lr"] for g in resumed_opt.param_groups] == [g["lr"] for g in straight_opt.param_groups]
        assert momenta(resumed_opt) == momenta(straight_opt)


def test_epoch_argument_uses_the_closed_form_and_warns(rng):
    ours, theirs = make_optimizers(rng)
    s = lr_scheduler.StepLR(ours, step_size=2, gamma=0.5)
    ts = torch.optim.lr_scheduler.StepLR(theirs, step_size=2, gamma=0.5)
    for epoch in (5, 1, 8):
        ours.step()
        theirs.step()
        with pytest.warns(UserWarning, match="deprecated"):
            s.step(epoch)
        with pytest.warns(UserWarning):
            ts.step(epoch)
        assert_lrs_equal(s.get_last_lr(), ts.get_last_lr(), f"epoch {epoch}")


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda opt: lr_scheduler.ConstantLR(opt, factor=1.5), "factor"),
        (lambda opt: lr_scheduler.LinearLR(opt, start_factor=0), "Starting"),
        (lambda opt: lr_scheduler.LinearLR(opt, end_factor=1.2), "Ending"),
        (lambda opt: lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=0), "T_0"),
        (lambda opt: lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=0), "T_mult"),
        (lambda opt: lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=2, eta_min="0"), "eta_min"),
        (lambda opt: lr_scheduler.OneCycleLR(opt, max_lr=0.1), "total_steps OR"),
        (lambda opt: lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=0), "total_steps"),
        (lambda opt: lr_scheduler.OneCycleLR(opt, max_lr=0.1, epochs=2, steps_per_epoch=-1), "steps_per_epoch"),
        (lambda opt: lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=9, pct_start=1.5), "pct_start"),
        (lambda opt: lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=9, anneal_strategy="exp"), "anneal"),
        (lambda opt: lr_scheduler.OneCycleLR(opt, max_lr=[0.1], total_steps=9), "max_lr"),
        (lambda opt: lr_scheduler.SequentialLR(opt, [], milestones=[]), "at least one"),
        (lambda opt: lr_scheduler.SequentialLR(opt, [lr_scheduler.ConstantLR(opt)], milestones=[3]), "milestone"),
        (
            lambda opt: lr_scheduler.SequentialLR(opt, [lr_scheduler.ReduceLROnPlateau(opt)], milestones=[]),
            "ReduceLROnPlateau",
        ),
    ],
)
def test_bad_arguments(rng, make, match):
    opt, _ = make_optimizers(rng)
    with pytest.raises(ValueError, match=match):
        make(opt)


def test_sequential_needs_one_optimizer(rng):
    a, _ = make_optimizers(rng)
    b, _ = make_optimizers(rng)
    with pytest.raises(ValueError, match="same optimizer"):
        lr_scheduler.SequentialLR(a, [lr_scheduler.ConstantLR(a), lr_scheduler.ConstantLR(b)], milestones=[2])
