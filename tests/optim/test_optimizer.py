"""The Optimizer base: flat buffers, param groups, zero_grad, state dicts, robustness, bad input.

Also holds the helpers the torch-parity tests (test_sgd.py, test_adam.py) share.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

import gpunn
from gpunn.optim import SGD, Adam, AdamW
from tests.helpers import randn, rel_err

SHAPES = [(7, 13), (13,), (5, 3, 2)]
TOL = {np.float32: 1e-5, np.float64: 1e-12}


# ------------------------------------------------------------------------------------------------
# helpers shared with test_sgd.py / test_adam.py
# ------------------------------------------------------------------------------------------------
def make_problem(rng, dtype, shapes=SHAPES):
    """Initial values and the coefficients of loss = sum_k sum(c_k * p_k^2 + d_k * p_k), c_k > 0.

    grad_k = 2 c_k p_k + d_k depends on the parameter, so every step sees a new gradient."""
    inits = [randn(rng, *s, dtype=dtype) for s in shapes]
    coefs = [((rng.random(s) + 0.5).astype(dtype), randn(rng, *s, dtype=dtype)) for s in shapes]
    return inits, coefs


def gpunn_params(inits):
    return [gpunn.tensor(a, requires_grad=True) for a in inits]


def torch_params(inits):
    import torch

    return [torch.tensor(a, requires_grad=True) for a in inits]


def gpunn_loss(params, coefs, active):
    loss = None
    for k in active:
        c, d = (gpunn.tensor(a) for a in coefs[k])
        term = (params[k] * params[k] * c + params[k] * d).sum()
        loss = term if loss is None else loss + term
    return loss


def torch_loss(params, coefs, active):
    import torch

    loss = None
    for k in active:
        c, d = (torch.from_numpy(a) for a in coefs[k])
        term = (params[k] * params[k] * c + params[k] * d).sum()
        loss = term if loss is None else loss + term
    return loss


def all_active(step, n):
    return list(range(n))


def some_active(step, n):
    """A different parameter (or none) is left out on each step, so its grad stays None."""
    return [k for k in range(n) if (step + k) % (n + 1) != 0]


def train_both(ours, theirs, opt, topt, coefs, steps=25, active=all_active, start=0):
    for t in range(start, start + steps):
        act = active(t, len(ours))
        opt.zero_grad()
        gpunn_loss(ours, coefs, act).backward()
        opt.step()
        topt.zero_grad()
        torch_loss(theirs, coefs, act).backward()
        topt.step()


def to_np(x):
    if isinstance(x, gpunn.Tensor):
        return x.detach().numpy()
    if hasattr(x, "detach"):  # a torch tensor
        return x.detach().numpy()
    return gpunn.get_backend().to_numpy(x)


def assert_params_match(ours, theirs, dtype):
    for k, (p, q) in enumerate(zip(ours, theirs)):
        assert p.dtype == np.dtype(dtype)
        err = rel_err(to_np(p), to_np(q))
        assert err < TOL[np.dtype(dtype).type], f"parameter {k}: relative error {err:.3e}"


def assert_state_matches(opt, topt, ours, theirs, names, dtype):
    for p, q in zip(ours, theirs):
        for name in names:
            err = rel_err(to_np(opt.state[p][name]), to_np(topt.state[q][name]))
            assert err < TOL[np.dtype(dtype).type], f"state {name}: relative error {err:.3e}"
        if "step" in topt.state[q]:
            assert opt.state[p]["step"] == int(topt.state[q]["step"])


def counting(monkeypatch, name):
    """Wrap the current backend's primitive ``name`` with a call counter; returns the list of calls."""
    be = gpunn.get_backend()
    calls = []
    original = getattr(be, name)

    def wrapper(*args, **kwargs):
        calls.append(args[0].size)
        return original(*args, **kwargs)

    monkeypatch.setattr(be, name, wrapper)
    return calls


# ------------------------------------------------------------------------------------------------
# flat buffers
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [SGD, Adam])
def test_params_become_views_of_one_flat_buffer(rng, cls):
    inits, _ = make_problem(rng, np.float32)
    params = gpunn_params(inits)
    cls(params, lr=0.1)
    flat = params[0]._data.base
    assert flat is not None and flat.ndim == 1 and flat.size == sum(a.size for a in inits)
    xp = gpunn.get_backend().xp
    offset = 0
    for p, a in zip(params, inits):
        assert p._data.base is flat and xp.shares_memory(p._data, flat)
        assert p.shape == a.shape
        np.testing.assert_array_equal(to_np(p), a)  # same values, now a view
        if isinstance(flat, np.ndarray):  # laid out back to back, in group order
            assert p._data.__array_interface__["data"][0] == flat.__array_interface__["data"][0] + offset
        offset += a.nbytes
    # the gradient lands in one flat buffer too
    gpunn_loss(params, [(np.ones_like(a), np.ones_like(a)) for a in inits], range(3)).backward()
    gbase = params[0].grad._data.base
    assert gbase is not None and gbase is not flat and gbase.size == flat.size
    assert all(p.grad._data.base is gbase for p in params)


def test_one_primitive_call_per_step_in_the_common_case(rng, monkeypatch):
    inits, coefs = make_problem(rng, np.float32)
    params = gpunn_params(inits)
    opt = Adam(params, lr=0.01)
    calls = counting(monkeypatch, "adam_step")
    for _ in range(3):
        opt.zero_grad()
        gpunn_loss(params, coefs, range(3)).backward()
        opt.step()
    assert calls == [sum(a.size for a in inits)] * 3


def test_skipped_params_split_the_call_into_runs(rng, monkeypatch):
    inits, coefs = make_problem(rng, np.float32)
    params = gpunn_params(inits)
    opt = SGD(params, lr=0.01, momentum=0.9)
    calls = counting(monkeypatch, "sgd_step")
    gpunn_loss(params, coefs, [0, 2]).backward()  # the middle parameter has no grad
    before = to_np(params[1]).copy()
    opt.step()
    assert calls == [inits[0].size, inits[2].size]
    np.testing.assert_array_equal(to_np(params[1]), before)
    assert params[1] not in opt.state or not opt.state[params[1]]


def test_mixed_dtypes_in_a_group_pack_one_buffer_per_dtype(rng, monkeypatch):
    a32, b64, c32 = (randn(rng, 4, 3), randn(rng, 5, dtype=np.float64), randn(rng, 2, 2))
    params = gpunn_params([a32, b64, c32])
    opt = SGD(params, lr=0.1)
    assert params[0]._data.base is params[2]._data.base
    assert params[1]._data.base is not params[0]._data.base
    assert params[1].dtype == np.float64 and params[0].dtype == np.float32
    calls = counting(monkeypatch, "sgd_step")
    for p in params:
        (p * p).sum().backward()
    opt.step()
    assert sorted(calls) == [5, 16]
    for p, a in zip(params, [a32, b64, c32]):  # p -= 0.1 * 2p
        np.testing.assert_allclose(to_np(p), 0.8 * a, rtol=1e-6)


def test_rebound_data_and_assigned_grad_are_copied_into_the_buffers(rng):
    inits, _ = make_problem(rng, np.float64)
    params = gpunn_params(inits)
    opt = SGD(params, lr=0.5)
    new = randn(rng, *inits[1].shape, dtype=np.float64)
    params[1].data = gpunn.tensor(new).data  # someone rebinds .data
    g = [randn(rng, *a.shape, dtype=np.float64) for a in inits]
    for p, gk in zip(params, g):
        p.grad = gpunn.tensor(gk)  # someone assigns .grad
    opt.step()
    expected = [inits[0] - 0.5 * g[0], new - 0.5 * g[1], inits[2] - 0.5 * g[2]]
    flat = params[0]._data.base
    for p, e in zip(params, expected):
        np.testing.assert_allclose(to_np(p), e, rtol=1e-12)
        assert p._data.base is flat  # re-pointed to the flat buffer
        assert p.grad._data.base is params[0].grad._data.base
    # a grad that existed before the optimizer was created is adopted too
    q = gpunn.tensor(inits[0], requires_grad=True)
    q.grad = gpunn.tensor(g[0])
    SGD([q], lr=1.0).step()
    np.testing.assert_allclose(to_np(q), inits[0] - g[0], rtol=1e-12)


def test_changed_shape_or_dtype_is_an_error(rng):
    p = gpunn.tensor(randn(rng, 3, 4), requires_grad=True)
    opt = SGD([p], lr=0.1)
    p.grad = gpunn.tensor(randn(rng, 3, 4))
    p.data = gpunn.tensor(randn(rng, 4, 3)).data
    with pytest.raises(RuntimeError, match=r"shape \(4, 3\)"):
        opt.step()
    p.data = gpunn.tensor(randn(rng, 3, 4, dtype=np.float64)).data
    with pytest.raises(RuntimeError, match="float64"):
        opt.step()
    p.data = gpunn.tensor(randn(rng, 3, 4)).data
    p.grad = gpunn.tensor(randn(rng, 2))
    with pytest.raises(RuntimeError, match=r"\.grad of shape \(2,\)"):
        opt.step()


def test_zero_grad(rng):
    inits, coefs = make_problem(rng, np.float32)
    params = gpunn_params(inits)
    opt = SGD(params, lr=0.1)
    gpunn_loss(params, coefs, [0, 1]).backward()
    opt.zero_grad(set_to_none=False)
    assert params[2].grad is None  # None stays None, as in torch
    for p in params[:2]:
        assert p.grad is not None and not np.any(to_np(p.grad))
    gpunn_loss(params, coefs, [0, 1]).backward()
    opt.zero_grad()
    assert all(p.grad is None for p in params)
    # after set_to_none the next backward overwrites the stale values in the flat buffer
    gpunn_loss(params, coefs, [0]).backward()
    c, d = coefs[0]
    np.testing.assert_allclose(to_np(params[0].grad), 2 * c * inits[0] + d, rtol=1e-6)


def test_closure_is_evaluated_with_grad_and_returned(rng):
    inits, coefs = make_problem(rng, np.float64)
    params = gpunn_params(inits)
    opt = SGD(params, lr=0.1)

    def closure():
        opt.zero_grad()
        loss = gpunn_loss(params, coefs, range(3))
        loss.backward()
        return loss

    with gpunn.no_grad():
        loss = opt.step(closure)
    expected = sum(float((c * a * a + d * a).sum()) for a, (c, d) in zip(inits, coefs))
    assert abs(loss.item() - expected) < 1e-9 * abs(expected)
    assert not np.allclose(to_np(params[0]), inits[0])


# ------------------------------------------------------------------------------------------------
# param groups and state dicts
# ------------------------------------------------------------------------------------------------
def test_param_groups_take_defaults_and_overrides(rng):
    a, b = gpunn_params([randn(rng, 3), randn(rng, 2, 2)])
    opt = SGD([{"params": [a]}, {"params": b, "lr": 0.5, "momentum": 0.9}], lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    assert [g["momentum"] for g in opt.param_groups] == [0, 0.9]
    assert opt.defaults["lr"] == 0.1 and opt.param_groups[1]["params"][0] is b
    c = gpunn.tensor(randn(rng, 4), requires_grad=True)
    opt.add_param_group({"params": [c], "weight_decay": 0.1})
    assert opt.param_groups[2]["lr"] == 0.1 and opt.param_groups[2]["weight_decay"] == 0.1
    assert "SGD (" in repr(opt) and "Parameter Group 2" in repr(opt)


def test_named_params_are_kept(rng):
    w, b = gpunn_params([randn(rng, 3, 2), randn(rng, 2)])
    opt = Adam([("weight", w), ("bias", b)])
    assert opt.param_groups[0]["param_names"] == ["weight", "bias"]
    assert opt.param_groups[0]["params"][1] is b


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        (SGD, {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}),
        (Adam, {"lr": 0.05, "amsgrad": True}),
        (AdamW, {"lr": 0.05}),
    ],
)
def test_state_dict_round_trip_continues_identically(rng, cls, kwargs):
    """Save after k steps (through JSON-able lists + npz-able arrays), load into a new optimizer over new
    parameters with those values, continue: identical to the uninterrupted run."""
    inits, coefs = make_problem(rng, np.float64)

    def run(params, opt, steps, start):
        for t in range(start, start + steps):
            opt.zero_grad()
            gpunn_loss(params, coefs, some_active(t, 3)).backward()
            opt.step()

    straight = gpunn_params(inits)
    opt = cls([{"params": straight[:2]}, {"params": straight[2:], "lr": 0.02}], **kwargs)
    run(straight, opt, 12, 0)

    first = gpunn_params(inits)
    opt1 = cls([{"params": first[:2]}, {"params": first[2:], "lr": 0.02}], **kwargs)
    run(first, opt1, 5, 0)
    values = [to_np(p).copy() for p in first]
    sd = opt1.state_dict()
    # npz-able (no pickle) state, JSON-able groups
    arrays = {f"{k}/{n}": np.asarray(v) for k, st in sd["state"].items() for n, v in st.items()}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        loaded = {name: z[name] for name in z.files}
    groups = json.loads(json.dumps(sd["param_groups"]))
    # the state dict is a snapshot: stepping on does not change it
    run(first, opt1, 1, 5)
    for name, v in loaded.items():
        k, n = name.split("/")
        np.testing.assert_array_equal(sd["state"][int(k)][n], v)
    state: dict = {}
    for name, v in loaded.items():  # keys as strings and steps as 0-d arrays, as a checkpoint gives them
        k, n = name.split("/")
        state.setdefault(k, {})[n] = v

    resumed = gpunn_params(values)
    opt2 = cls([{"params": resumed[:2]}, {"params": resumed[2:], "lr": 0.3}], **kwargs)
    opt2.load_state_dict({"state": state, "param_groups": groups})
    assert opt2.param_groups[1]["lr"] == 0.02
    run(resumed, opt2, 7, 5)
    for p, q in zip(resumed, straight):
        np.testing.assert_array_equal(to_np(p), to_np(q))


def test_load_state_dict_errors(rng):
    a, b = gpunn_params([randn(rng, 3), randn(rng, 2, 2)])
    opt = Adam([a, b], lr=0.1)
    (a * a).sum().backward()
    (b * b).sum().backward()
    opt.step()
    sd = opt.state_dict()

    c, d = gpunn_params([randn(rng, 3), randn(rng, 2, 2)])
    two_groups = Adam([{"params": [c]}, {"params": [d]}])
    with pytest.raises(ValueError, match="parameter groups"):
        two_groups.load_state_dict(sd)
    e = gpunn.tensor(randn(rng, 3), requires_grad=True)
    with pytest.raises(ValueError, match="group 0 has 2 parameters"):
        Adam([e]).load_state_dict(sd)
    bad = {"state": {0: dict(sd["state"][0]), 1: dict(sd["state"][1])}, "param_groups": sd["param_groups"]}
    bad["state"][1]["exp_avg"] = np.zeros((4,))
    target = Adam(gpunn_params([randn(rng, 3), randn(rng, 2, 2)]), lr=0.3)
    with pytest.raises(ValueError, match=r"'exp_avg' of parameter 1 has shape \(4,\)"):
        target.load_state_dict(bad)
    assert target.param_groups[0]["lr"] == 0.3 and not target.state  # untouched by the failed load
    bad["state"][1]["exp_avg"] = sd["state"][1]["exp_avg"]
    bad["state"][5] = dict(sd["state"][0])
    with pytest.raises(ValueError, match="parameter 5"):
        target.load_state_dict(bad)


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------
def test_empty_parameter_list():
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        Adam(iter(()))


def test_frozen_parameters_are_accepted_and_never_updated(rng):
    # as in PyTorch: SGD(model.parameters()) works on a partly frozen model
    a = gpunn.tensor(randn(rng, 3), requires_grad=True)
    a_before = a.detach().numpy().copy()
    frozen = gpunn.tensor(randn(rng, 4))
    before = frozen.numpy().copy()
    opt = SGD([a, frozen], lr=0.1, momentum=0.9, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        (a * a).sum().backward()
        opt.step()
    assert np.array_equal(frozen.numpy(), before)
    assert not np.allclose(a.detach().numpy(), a_before)


def test_bad_params(rng):
    a = gpunn.tensor(randn(rng, 3), requires_grad=True)
    with pytest.raises(TypeError, match="iterable of Tensors or dicts"):
        SGD(a, lr=0.1)
    with pytest.raises(TypeError, match="ordered collections"):
        SGD({a}, lr=0.1)
    with pytest.raises(TypeError, match="parameter 1 of param group 0 is a ndarray"):
        SGD([a, np.zeros(3)], lr=0.1)
    with pytest.raises(ValueError, match="non-leaf"):
        SGD([a * 2], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        SGD([{"params": [a]}, {"params": [a]}], lr=0.1)
    with pytest.raises(ValueError, match="twice"):
        SGD([a, a], lr=0.1)
    opt = SGD([a], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [a]})
    with pytest.raises(TypeError, match="must be a dict"):
        opt.add_param_group([a])


@pytest.mark.parametrize(
    "cls,kwargs,match",
    [
        (SGD, {"lr": -0.1}, "lr=-0.1"),
        (SGD, {"lr": 0.1, "momentum": -0.5}, "momentum=-0.5"),
        (SGD, {"lr": 0.1, "weight_decay": -1.0}, "weight_decay=-1.0"),
        (SGD, {"lr": 0.1, "nesterov": True}, "Nesterov.*momentum=0"),
        (SGD, {"lr": 0.1, "nesterov": True, "momentum": 0.9, "dampening": 0.1}, "Nesterov.*dampening=0.1"),
        (Adam, {"lr": -1e-3}, "lr=-0.001"),
        (Adam, {"betas": (1.0, 0.999)}, r"betas\[0\]=1.0"),
        (Adam, {"betas": (0.9, -0.1)}, r"betas\[1\]=-0.1"),
        (Adam, {"betas": (0.9,)}, "pair"),
        (Adam, {"eps": -1e-8}, "eps=-1e-08"),
        (Adam, {"weight_decay": -0.1}, "weight_decay=-0.1"),
        (AdamW, {"betas": (0.9, 1.5)}, r"betas\[1\]=1.5"),
    ],
)
def test_bad_hyperparameters(rng, cls, kwargs, match):
    a = gpunn.tensor(randn(rng, 3), requires_grad=True)
    with pytest.raises(ValueError, match=match):
        cls([a], **kwargs)


def test_bad_hyperparameter_in_a_group_names_the_group(rng):
    a, b = gpunn_params([randn(rng, 3), randn(rng, 2)])
    with pytest.raises(ValueError, match=r"param_groups\[1\].*lr=-1"):
        SGD([{"params": [a]}, {"params": [b], "lr": -1}], lr=0.1)
    with pytest.raises(ValueError, match=r"param_groups\[0\].*betas\[0\]=2"):
        Adam([{"params": [a], "betas": (2, 0.9)}])


def test_a_kept_grad_is_not_overwritten_by_the_next_backward(rng):
    # PyTorch gives each backward after zero_grad() fresh gradient storage; so must the flat buffer
    w = gpunn.tensor(randn(rng, 3, 2), requires_grad=True)
    x = gpunn.tensor(randn(rng, 4, 3))
    opt = SGD([w], lr=0.1)
    kept = []
    for _ in range(3):
        opt.zero_grad()
        ((x @ w) ** 2).sum().backward()
        kept.append((w.grad, w.grad.numpy().copy()))
        opt.step()
    for grad, snapshot in kept:
        assert np.array_equal(grad.numpy(), snapshot)
    assert not np.array_equal(kept[0][1], kept[2][1])


def test_a_kept_grad_survives_module_zero_grad_too(rng):
    from gpunn import nn

    model = nn.Linear(3, 2)
    opt = SGD(model.parameters(), lr=0.1)
    x = gpunn.tensor(randn(rng, 4, 3))
    kept = []
    for _ in range(3):
        model.zero_grad()
        (model(x) ** 2).sum().backward()
        kept.append((model.weight.grad, model.weight.grad.numpy().copy()))
        opt.step()
    for grad, snapshot in kept:
        assert np.array_equal(grad.numpy(), snapshot)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta"])
def test_param_group_keys_and_repr_are_torchs(name):
    """Every optimizer takes PyTorch's keyword arguments (foreach=, fused=, ...), its param groups hold
    PyTorch's keys (so state dicts travel either way) and it prints as PyTorch's does."""
    import torch

    kw = {"lr": 0.1, "foreach": False}
    g = getattr(gpunn.optim, name)(gpunn.nn.Linear(2, 2).parameters(), **kw)
    t = getattr(torch.optim, name)(torch.nn.Linear(2, 2).parameters(), **kw)
    assert set(g.param_groups[0]) == set(t.param_groups[0])
    assert repr(g) == repr(t)
    with pytest.raises(NotImplementedError, match="differentiable"):
        getattr(gpunn.optim, name)(gpunn.nn.Linear(2, 2).parameters(), lr=0.1, differentiable=True)
