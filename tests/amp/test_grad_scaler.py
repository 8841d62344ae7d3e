"""gpunn.amp.GradScaler against torch.amp.GradScaler('cpu') (PyTorch 2.13's CPU build): the same scale history,
skipped steps and parameters over a training run with injected inf/NaN gradients; the disabled scaler (device
'cuda' without CUDA) method by method; PyTorch's errors for misuse.

Runs on the emulated cupy backend too (GPUNN_TEST_BACKEND=cupy): there the gpunn scaler is a 'cuda' one."""

from __future__ import annotations

import os
import pickle
import warnings

import numpy as np
import pytest

import gpunn
from tests.helpers import assert_close

torch = pytest.importorskip("torch")

CUDA = gpunn.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"  # gpunn's device for an enabled scaler on this backend


def _models(rng, dtype=np.float32):
    """The same two-layer net in both libraries."""
    weights = {
        "0.weight": rng.standard_normal((11, 7)) * 0.4,
        "0.bias": rng.standard_normal(11) * 0.1,
        "2.weight": rng.standard_normal((3, 11)) * 0.4,
        "2.bias": rng.standard_normal(3) * 0.1,
    }
    nets = {}
    for L in (gpunn, torch):
        net = L.nn.Sequential(L.nn.Linear(7, 11), L.nn.Tanh(), L.nn.Linear(11, 3))
        net = net.double() if dtype == np.float64 else net
        net.load_state_dict({k: L.tensor(v.astype(dtype)) for k, v in weights.items()})
        nets[L] = net
    return nets


def _counting(optimizer, calls):
    """optimizer.step that records its calls and returns a marker (so scaler.step's return can be checked)."""
    step = optimizer.step

    def counted(*args, **kwargs):
        step(*args, **kwargs)
        calls.append(1)
        return "stepped"

    optimizer.step = counted
    return optimizer


def _run(L, net, scaler, x, y, steps, poison, clip=None):
    calls = []
    opt = _counting(L.optim.SGD(net.parameters(), lr=0.05, momentum=0.9), calls)
    history = []
    for i in range(steps):
        opt.zero_grad()
        loss = L.nn.functional.mse_loss(net(L.tensor(x[i])), L.tensor(y[i]))
        scaler.scale(loss).backward()
        if i in poison:
            with L.no_grad():
                net[0].weight.grad[1, 2] = poison[i]
        if clip is not None:
            scaler.unscale_(opt)
            L.nn.utils.clip_grad_norm_(net.parameters(), clip)
        returned = scaler.step(opt)
        scaler.update()
        history.append((returned, scaler.get_scale(), scaler.state_dict()["_growth_tracker"], len(calls)))
    return history


@pytest.mark.parametrize(
    "dtype, settings, clip",
    [
        (np.float32, {}, None),
        (np.float32, {"init_scale": 1000.1, "growth_factor": 1.7, "backoff_factor": 0.3, "growth_interval": 3}, None),
        (np.float32, {"init_scale": 2.0**110, "growth_factor": 2.0**10, "growth_interval": 2}, 0.5),
        (np.float64, {"init_scale": 77.7, "growth_interval": 2}, None),
    ],
    ids=["defaults", "odd-factors", "overflowing-growth-clipped", "float64"],
)
def test_training_run_matches_torch_scale_history_skips_and_parameters(rng, dtype, settings, clip):
    steps = 12
    x = rng.standard_normal((steps, 9, 7)).astype(dtype)
    y = rng.standard_normal((steps, 9, 3)).astype(dtype)
    poison = {3: float("inf"), 7: float("nan"), 8: float("-inf")}
    nets = _models(rng, dtype)
    ours = _run(gpunn, nets[gpunn], gpunn.amp.GradScaler(DEVICE, **settings), x, y, steps, poison, clip)
    theirs = _run(torch, nets[torch], torch.amp.GradScaler("cpu", **settings), x, y, steps, poison, clip)
    assert ours == theirs  # step's returns (None when skipped), scales, growth trackers, optimizer.step calls
    assert [h[0] for h in ours].count(None) >= len(poison)  # the poisoned steps were skipped
    for p, q in zip(nets[gpunn].parameters(), nets[torch].parameters()):
        assert_close(p.detach().numpy(), q.detach().numpy(), dtype, tol=1e-5 if dtype == np.float32 else 1e-12)


def test_two_optimizers_skip_separately_and_update_backs_off_for_either(rng):
    """The inf is in the first layer: its optimizer skips, the second layer's steps; the scale backs off once."""
    nets = _models(rng)
    x = rng.standard_normal((9, 7)).astype(np.float32)
    seen = {}
    for L, device in ((gpunn, DEVICE), (torch, "cpu")):
        net, scaler, calls = nets[L], L.amp.GradScaler(device, init_scale=64.0, growth_interval=1), ([], [])
        first = _counting(L.optim.SGD(net[0].parameters(), lr=0.1), calls[0])
        second = _counting(L.optim.Adam(net[2].parameters(), lr=0.01), calls[1])
        for poisoned in (True, False):
            scaler.scale(net(L.tensor(x)).square().mean()).backward()
            if poisoned:
                with L.no_grad():
                    net[0].bias.grad[0] = float("inf")
            returned = (scaler.step(first), scaler.step(second))
            scaler.update()
            first.zero_grad()
            second.zero_grad()
            seen.setdefault(L, []).append((returned, scaler.get_scale(), len(calls[0]), len(calls[1])))
    assert seen[gpunn] == seen[torch] == [((None, "stepped"), 32.0, 0, 1), (("stepped", "stepped"), 64.0, 1, 2)]
    for p, q in zip(nets[gpunn].parameters(), nets[torch].parameters()):
        assert_close(p.detach().numpy(), q.detach().numpy(), tol=1e-5)


def test_unscale_divides_the_gradients_by_the_float32_scale_as_torch(rng):
    nets = _models(rng)
    x = rng.standard_normal((9, 7)).astype(np.float32)
    grads = {}
    for L, device in ((gpunn, DEVICE), (torch, "cpu")):
        scaler = L.amp.GradScaler(device, init_scale=3000.3)
        opt = L.optim.SGD(nets[L].parameters(), lr=0.1)
        scaler.scale(nets[L](L.tensor(x)).square().sum()).backward()
        scaled = [p.grad.clone() for p in nets[L].parameters()]
        scaler.unscale_(opt)
        grads[L] = [p.grad.numpy().copy() for p in nets[L].parameters()]
        inv = np.float32(1.0 / np.float64(np.float32(3000.3)))
        for g, s in zip(grads[L], scaled):
            np.testing.assert_array_equal(g, s.numpy() * inv)  # exactly one float32 multiplication
        with pytest.raises(RuntimeError, match="already been called"):
            scaler.unscale_(opt)
        scaler.step(opt)
        with pytest.raises(RuntimeError, match="after step"):
            scaler.unscale_(opt)
        with pytest.raises(RuntimeError, match="already been called since the last update"):
            scaler.step(opt)
    for a, b in zip(grads[gpunn], grads[torch]):
        assert_close(a, b, tol=1e-5)


def test_scale_keeps_structure_and_dtype_as_torch(rng):
    a32 = rng.standard_normal((4, 3)).astype(np.float32)
    a64 = rng.standard_normal(5)
    for L, device in ((gpunn, DEVICE), (torch, "cpu")):
        scaler = L.amp.GradScaler(device, init_scale=1000.1)
        assert scaler.get_scale() == 1000.1  # not yet rounded: no scale() so far
        t32, t64 = L.tensor(a32), L.tensor(a64)
        out = scaler.scale([t32, (t64, [t32])])
        assert isinstance(out, list) and isinstance(out[1], tuple) and isinstance(out[1][1], list)
        assert out[0].dtype == L.float32 and out[1][0].dtype == L.float64
        s = float(np.float32(1000.1))
        assert scaler.get_scale() == s
        np.testing.assert_array_equal(out[0].numpy(), a32 * np.float32(s))
        np.testing.assert_array_equal(out[1][0].numpy(), a64 * s)
        assert [v.tolist() for v in scaler.scale(iter([t32]))] == [out[0].tolist()]
        with pytest.raises(ValueError, match="Tensor or an iterable"):
            scaler.scale(3.0)


def test_scaled_loss_backpropagates_the_scale(rng):
    nets = _models(rng)
    x = rng.standard_normal((9, 7)).astype(np.float32)
    for L, device in ((gpunn, DEVICE), (torch, "cpu")):
        net = nets[L]
        net(L.tensor(x)).sum().backward()
        plain = [p.grad.numpy().copy() for p in net.parameters()]
        net.zero_grad()
        L.amp.GradScaler(device, init_scale=256.0).scale(net(L.tensor(x)).sum()).backward()
        for p, g in zip(net.parameters(), plain):
            assert_close(p.grad.numpy(), 256.0 * g, tol=1e-6)


@pytest.mark.skipif(CUDA, reason="CUDA counts as available on this backend")
def test_cuda_scaler_without_cuda_warns_and_is_disabled_method_by_method_as_torch(rng):
    nets = _models(rng)
    x = rng.standard_normal((9, 7)).astype(np.float32)
    for L in (gpunn, torch):
        for make, expected in (
            (lambda: L.amp.GradScaler(), [UserWarning]),
            (lambda: L.amp.GradScaler("cuda", init_scale=8.0), [UserWarning]),
            (lambda: L.cuda.amp.GradScaler(), [FutureWarning, UserWarning]),
        ):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                scaler = make()
            assert [w.category for w in caught] == expected and "Disabling" in str(caught[-1].message)
            assert scaler.is_enabled() is False and scaler.get_scale() == 1.0 and scaler.state_dict() == {}
            loss = nets[L](L.tensor(x)).sum()
            assert scaler.scale(loss) is loss and scaler.scale(3.0) == 3.0
            calls = []
            opt = _counting(L.optim.SGD(nets[L].parameters(), lr=0.1), calls)
            loss.backward()
            before = [p.grad.numpy().copy() for p in nets[L].parameters()]
            assert scaler.unscale_(opt) is None and scaler.unscale_(opt) is None
            assert scaler.step(opt) == "stepped" and calls == [1]
            assert scaler.step(opt) == "stepped" and calls == [1, 1]  # no stage checks when disabled
            assert scaler.update() is None and scaler.update(4.0) is None and scaler.get_scale() == 1.0
            for p, g in zip(nets[L].parameters(), before):
                np.testing.assert_array_equal(p.grad.numpy(), g)
            assert scaler.load_state_dict({}) is None and scaler._get_growth_tracker() == 0
            with pytest.raises(AttributeError):
                scaler.get_growth_factor()  # PyTorch keeps no factors on a disabled scaler


def test_explicitly_disabled_scaler_is_silent():
    for L in (gpunn, torch):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert L.amp.GradScaler("cuda", enabled=False).is_enabled() is False
            assert L.amp.GradScaler("cpu", enabled=False).get_scale() == 1.0


def test_state_dict_round_trip_and_setters_as_torch(rng):
    dicts = {}
    for L, device in ((gpunn, DEVICE), (torch, "cpu")):
        scaler = L.amp.GradScaler(device, init_scale=512.0, growth_interval=5)
        scaler.set_growth_factor(3.0)
        scaler.set_backoff_factor(0.25)
        scaler.set_growth_interval(7)
        assert (scaler.get_growth_factor(), scaler.get_backoff_factor(), scaler.get_growth_interval()) == (3.0, 0.25, 7)
        dicts[L] = scaler.state_dict()
        other = L.amp.GradScaler(device)
        other.load_state_dict({**dicts[L], "scale": 1000.1, "_growth_tracker": 4})
        assert other.get_scale() == 1000.1 and other._get_growth_tracker() == 4
        other.scale(L.ones(1))
        assert other.get_scale() == float(np.float32(1000.1))
        other.load_state_dict({**dicts[L], "scale": 12.5})
        assert other.get_scale() == 12.5
        with pytest.raises(RuntimeError, match="empty"):
            other.load_state_dict({})
        revived = pickle.loads(pickle.dumps(other))
        assert revived.state_dict() == other.state_dict()
    assert dicts[gpunn] == dicts[torch]
    assert gpunn.amp.GradScaler(DEVICE).state_dict() == torch.amp.GradScaler("cpu").state_dict()


def test_update_with_new_scale_as_torch():
    for L, device in ((gpunn, DEVICE), (torch, "cpu")):
        scaler = L.amp.GradScaler(device)
        with pytest.raises(AssertionError, match="did not use scaler.scale"):
            scaler.update()
        scaler.scale(L.ones(1))
        with pytest.raises(AssertionError, match="No inf checks"):
            scaler.update()
        scaler.update(1000.1)
        assert scaler.get_scale() == float(np.float32(1000.1))
        scaler.update(L.tensor(64.0, device=device))
        assert scaler.get_scale() == 64.0
        for bad in (L.tensor([1.0, 2.0], device=device), L.tensor(2.0, device=device, requires_grad=True)):
            with pytest.raises(AssertionError, match="new_scale"):
                scaler.update(bad)


def test_misuse_raises_as_torch(rng):
    nets = _models(rng)
    for L, device in ((gpunn, DEVICE), (torch, "cpu")):
        with pytest.raises(AssertionError, match="growth factor"):
            L.amp.GradScaler(device, growth_factor=1.0)
        with pytest.raises(AssertionError, match="backoff factor"):
            L.amp.GradScaler(device, backoff_factor=1.0)
        scaler = L.amp.GradScaler(device)
        opt = L.optim.SGD(nets[L].parameters(), lr=0.1)
        with pytest.raises(AssertionError, match="did not use scaler.scale"):
            scaler.step(opt)
        scaler.scale(L.ones(1))
        with pytest.raises(RuntimeError, match="Closure"):
            scaler.step(opt, closure=lambda: 0.0)
        for _ in range(2):  # no parameter has a gradient: nothing was checked (the stage stays unscaled)
            with pytest.raises(AssertionError, match="No inf checks were recorded for this optimizer"):
                scaler.step(opt)
        scaler.update(2.0)
        nets[L].half()
        nets[L](L.ones(2, 7, dtype=L.float16)).sum().backward()
        with pytest.raises(ValueError, match="FP16"):
            scaler.unscale_(opt)
        nets[L].float()


def test_deprecated_cpu_spelling_warns_and_is_enabled():
    for L in (gpunn, torch):
        with pytest.warns(FutureWarning, match="deprecated"):
            scaler = L.cpu.amp.GradScaler(init_scale=4.0)
        assert scaler.is_enabled() and scaler.get_scale() == 4.0


@pytest.mark.skipif(
    os.environ.get("GPUNN_KERNEL_EMULATOR") != "1", reason="counts come from the kernel emulator's CuPy stand-in"
)
def test_one_device_read_per_step_and_none_in_scale_or_update(rng):
    """On the (emulated) cupy backend: scale() and update() never read the device; step() reads the inf/NaN flag
    once (beyond what optimizer.step itself reads)."""
    import cupy

    net = _models(rng)[gpunn]
    opt = gpunn.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    scaler = gpunn.amp.GradScaler("cuda")
    x = gpunn.tensor(rng.standard_normal((9, 7)).astype(np.float32))
    reads = []
    for _ in range(3):
        loss = net(x).square().mean()
        cupy.reset_counters()
        scaled = scaler.scale(loss)
        reads.append(cupy.counters["d2h"])
        scaled.backward()
        cupy.reset_counters()
        opt.step()
        own = cupy.counters["d2h"]
        cupy.reset_counters()
        scaler.step(opt)
        reads.append(cupy.counters["d2h"] - own)
        cupy.reset_counters()
        scaler.update()
        reads.append(cupy.counters["d2h"])
        opt.zero_grad()
    assert reads == [0, 1, 0] * 3
