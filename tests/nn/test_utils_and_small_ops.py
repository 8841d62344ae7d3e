"""nn.utils (clip_grad_norm_, clip_grad_value_, parameters_to_vector, vector_to_parameters), F.silu / nn.SiLU,
F.one_hot and gpunn.randperm against PyTorch 2.13 CPU."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpunn
import gpunn.nn.functional as F
from gpunn import nn

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

SHAPES = [(9, 7), (41,), (3, 5, 2)]


def _pair(dtype, scale, seed=0, nan_at=None):
    """The same parameters with the same gradients in gpunn and torch."""
    rng = np.random.default_rng(seed)
    g_params, t_params = [], []
    for k, s in enumerate(SHAPES):
        p = rng.standard_normal(s).astype(dtype)
        g = (rng.standard_normal(s) * scale).astype(dtype)
        if nan_at == k:
            g.flat[3] = np.nan
        gp, tp = nn.Parameter(gpunn.tensor(p)), torch.nn.Parameter(torch.tensor(p))
        gp.grad, tp.grad = gpunn.tensor(g), torch.tensor(g)
        g_params.append(gp)
        t_params.append(tp)
    # a parameter without a gradient is skipped by both
    g_params.append(nn.Parameter(gpunn.ones(4, dtype=gpunn.float32 if dtype == np.float32 else gpunn.float64)))
    t_params.append(torch.nn.Parameter(torch.ones(4, dtype=getattr(torch, np.dtype(dtype).name))))
    return g_params, t_params


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("norm_type", [2.0, 1, math.inf, 3.5, "inf"])
@pytest.mark.parametrize("max_norm", [0.3, 1e4])
def test_clip_grad_norm_matches_torch(dtype, norm_type, max_norm):
    gp, tp = _pair(dtype, scale=2.0)
    got = nn.utils.clip_grad_norm_(gp, max_norm, norm_type=norm_type)
    want = torch.nn.utils.clip_grad_norm_(tp, max_norm, norm_type=norm_type)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    assert got.dtype == np.dtype(dtype) and got.shape == ()
    assert abs(got.item() - want.item()) <= tol * abs(want.item())
    for a, b in zip(gp, tp):
        if b.grad is None:
            assert a.grad is None
            continue
        ref = b.grad.double().numpy()
        assert np.linalg.norm(a.grad.numpy() - ref) <= tol * 10 * np.linalg.norm(ref)
    clipped = nn.utils.get_total_norm([p.grad for p in gp if p.grad is not None], norm_type).item()
    assert clipped == pytest.approx(min(max_norm, want.item()), rel=1e-4)


def test_clip_grad_norm_nonfinite_and_edge_cases():
    gp, tp = _pair(np.float32, 1.0, nan_at=1)
    with pytest.raises(RuntimeError, match="non-finite"):
        nn.utils.clip_grad_norm_(gp, 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError):
        torch.nn.utils.clip_grad_norm_(tp, 1.0, error_if_nonfinite=True)
    # without the check both scale by NaN: every gradient becomes NaN (PyTorch's answer)
    total = nn.utils.clip_grad_norm_(gp, 1.0)
    torch.nn.utils.clip_grad_norm_(tp, 1.0)
    assert math.isnan(total.item())
    for a, b in zip(gp, tp):
        if b.grad is not None:
            np.testing.assert_array_equal(np.isnan(a.grad.numpy()), np.isnan(b.grad.numpy()))
    # no gradients at all: 0, nothing changes; a single tensor is accepted
    p = nn.Parameter(gpunn.randn(3))
    assert nn.utils.clip_grad_norm_([p], 1.0).item() == 0.0
    p.grad = gpunn.tensor([3.0, 4.0, 0.0])
    assert nn.utils.clip_grad_norm_(p, 1.0).item() == pytest.approx(5.0)
    np.testing.assert_allclose(p.grad.numpy(), [0.6, 0.8, 0.0], rtol=1e-5)
    with pytest.raises(ValueError, match="norm_type"):
        nn.utils.clip_grad_norm_(p, 1.0, norm_type="fro2")


def test_clip_grad_norm_in_a_training_loop_equals_torch():
    gpunn.manual_seed(0)
    model = nn.Sequential(nn.Linear(13, 9), nn.Tanh(), nn.Linear(9, 3))
    tmodel = torch.nn.Sequential(torch.nn.Linear(13, 9), torch.nn.Tanh(), torch.nn.Linear(9, 3))
    tmodel.load_state_dict({k: torch.tensor(v.numpy()) for k, v in model.state_dict().items()})
    opt, topt = gpunn.optim.SGD(model.parameters(), lr=0.5), torch.optim.SGD(tmodel.parameters(), lr=0.5)
    rng = np.random.default_rng(3)
    for _ in range(5):
        x = rng.standard_normal((17, 13)).astype(np.float32) * 4
        y = rng.integers(0, 3, 17)
        for m, o, L in ((model, opt, gpunn), (tmodel, topt, torch)):
            o.zero_grad()
            loss = L.nn.functional.cross_entropy(m(L.tensor(x)), L.tensor(y))
            loss.backward()
            L.nn.utils.clip_grad_norm_(m.parameters(), 0.25)
            o.step()
    for k, v in tmodel.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[k].numpy(), v.numpy(), rtol=2e-5, atol=2e-6)


def test_clip_grad_value_matches_torch():
    gp, tp = _pair(np.float32, 3.0)
    nn.utils.clip_grad_value_(gp, 1.5)
    torch.nn.utils.clip_grad_value_(tp, 1.5)
    for a, b in zip(gp, tp):
        if b.grad is not None:
            np.testing.assert_array_equal(a.grad.numpy(), b.grad.numpy())


def test_parameters_to_vector_and_back():
    gp, tp = _pair(np.float64, 1.0)
    v = nn.utils.parameters_to_vector(gp)
    np.testing.assert_array_equal(v.detach().numpy(), torch.nn.utils.parameters_to_vector(tp).detach().numpy())
    v.sum().backward()  # differentiable: every parameter gets ones
    assert all(p.grad is not None for p in gp)
    new = gpunn.arange(v.numel(), dtype=gpunn.float64) * 0.5
    nn.utils.vector_to_parameters(new, gp)
    torch.nn.utils.vector_to_parameters(torch.arange(v.numel(), dtype=torch.float64) * 0.5, tp)
    for a, b in zip(gp, tp):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
    with pytest.raises(RuntimeError, match="elements"):
        nn.utils.vector_to_parameters(new[:-1], gp)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_silu_values_and_gradients(dtype):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((9, 7, 41)) * 4).astype(dtype)
    x.flat[:3] = [-100.0, 100.0, 0.0]
    gx = gpunn.tensor(x, requires_grad=True)
    tx = torch.tensor(x.astype(np.float64), requires_grad=True)
    dy = rng.standard_normal(x.shape).astype(dtype)
    F.silu(gx).backward(gpunn.tensor(dy))
    want = torch.nn.functional.silu(tx)
    want.backward(torch.tensor(dy.astype(np.float64)))
    tol = 1e-6 if dtype == np.float32 else 1e-13
    ref = want.detach().numpy()
    assert np.linalg.norm(nn.SiLU()(gx).detach().numpy() - ref) <= tol * np.linalg.norm(ref)
    assert np.linalg.norm(gx.grad.numpy() - tx.grad.numpy()) <= tol * np.linalg.norm(tx.grad.numpy())
    small = gpunn.tensor(rng.standard_normal((3, 4)), dtype=gpunn.float64, requires_grad=True)
    assert gpunn.gradcheck(F.silu, (small,))
    t = gpunn.tensor(x.copy())
    F.silu(t, inplace=True)
    np.testing.assert_allclose(t.numpy(), ref, rtol=tol * 10, atol=tol)


def test_one_hot_matches_torch_and_refuses_bad_labels():
    labels = np.array([[0, 3, 1], [2, 2, 0]])
    for n in (-1, 4, 7):
        np.testing.assert_array_equal(
            F.one_hot(gpunn.tensor(labels), n).numpy(), torch.nn.functional.one_hot(torch.tensor(labels), n).numpy()
        )
    assert F.one_hot(gpunn.tensor(labels)).dtype == gpunn.int64
    for bad, n, match in (([0, -1], 3, "non-negative"), ([0, 3], 3, "smaller than num_classes")):
        with pytest.raises(RuntimeError):
            torch.nn.functional.one_hot(torch.tensor(bad), n)
        with pytest.raises(RuntimeError, match=match):
            F.one_hot(gpunn.tensor(bad), n)
    with pytest.raises(RuntimeError, match="index tensor"):
        F.one_hot(gpunn.tensor([0.0, 1.0]))
    for n in (-1, 0):  # an empty tensor with no positive class count: PyTorch raises for 0 too
        with pytest.raises(RuntimeError):
            torch.nn.functional.one_hot(torch.zeros(0, dtype=torch.long), n)
        with pytest.raises(RuntimeError, match="empty"):
            F.one_hot(gpunn.tensor(np.zeros(0, np.int64)), n)
    assert F.one_hot(gpunn.tensor(np.zeros(0, np.int64)), 3).shape == (0, 3)


def test_randperm_is_a_seeded_permutation():
    gpunn.manual_seed(5)
    a = gpunn.randperm(41)
    assert a.dtype == gpunn.int64
    assert sorted(a.tolist()) == list(range(41))
    gpunn.manual_seed(5)
    assert gpunn.randperm(41).tolist() == a.tolist()
    assert gpunn.randperm(0).shape == (0,)
    assert gpunn.randperm(5, dtype=gpunn.float32).dtype == gpunn.float32
    with pytest.raises(RuntimeError, match="non-negative"):
        gpunn.randperm(-1)


@pytest.mark.parametrize("kwargs", [{}, {"batch_first": True, "padding_value": -1.0}, {"padding_side": "left"}])
def test_pad_sequence_matches_torch(kwargs):
    import torch

    rng = np.random.default_rng(0)
    seqs = [rng.standard_normal((n, 3)) for n in (4, 2, 5)]
    res = []
    for L in (gpunn, torch):
        ts = [L.tensor(s, requires_grad=True) for s in seqs]
        out = L.nn.utils.rnn.pad_sequence(ts, **kwargs)
        (out * L.tensor(np.arange(out.numel()).reshape(tuple(out.shape)) * 1.0)).sum().backward()
        res.append([out.detach().numpy()] + [t.grad.numpy() for t in ts])
    for a, b in zip(*res):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(NotImplementedError, match="packed sequences"):
        gpunn.nn.utils.rnn.pack_padded_sequence(gpunn.ones(3, 2, 1), [3, 2])
