"""L1 / L2 / elastic-net penalties: values and gradients against NumPy; weights() skips biases."""

import numpy as np
import pytest

import gpunn
from gpunn import nn
from gpunn.nn.regularization import elastic_net_penalty, l1_penalty, l2_penalty, weights


def _model():
    f64 = gpunn.float64
    return nn.Sequential(
        nn.Linear(7, 5, dtype=f64), nn.ReLU(), nn.Conv2d(2, 3, 2, dtype=f64), nn.Linear(4, 2, bias=False, dtype=f64)
    )


def _np(params):
    return [p.detach().numpy().copy() for p in params]


def test_weights_yields_matrices_and_kernels_not_biases():
    model = _model()
    assert [p.shape for p in weights(model)] == [(5, 7), (3, 2, 2, 2), (2, 4)]
    assert all(any(p is q for q in model.parameters()) for p in weights(model))


@pytest.mark.parametrize("which", ["l1", "l2", "elastic"])
def test_penalty_value_and_grads_match_numpy(which):
    model = _model()
    ps = list(weights(model))
    arrs = _np(ps)
    if which == "l1":
        pen = l1_penalty(ps, 0.3)
        ref = 0.3 * sum(np.abs(a).sum() for a in arrs)
        ref_grads = [0.3 * np.sign(a) for a in arrs]
    elif which == "l2":
        pen = l2_penalty(ps, 0.3)
        ref = 0.3 * sum((a * a).sum() for a in arrs)
        ref_grads = [0.6 * a for a in arrs]
    else:
        pen = elastic_net_penalty(iter(ps), l1=0.2, l2=0.05)  # a one-shot iterator is fine
        ref = sum(0.2 * np.abs(a).sum() + 0.05 * (a * a).sum() for a in arrs)
        ref_grads = [0.2 * np.sign(a) + 0.1 * a for a in arrs]
    assert pen.shape == () and pen.requires_grad
    np.testing.assert_allclose(pen.item(), ref, rtol=1e-13)
    pen.backward()
    for p, g in zip(ps, ref_grads):
        np.testing.assert_allclose(p.grad.numpy(), g, rtol=1e-13, atol=1e-15)
    for n, p in model.named_parameters():
        if n.endswith("bias"):
            assert p.grad is None  # biases untouched


def test_l2_penalty_with_half_lambda_equals_sgd_weight_decay_gradient():
    lam = 0.01
    lin = nn.Linear(6, 4, dtype=gpunn.float64)
    l2_penalty(lin.parameters(), lam / 2).backward()
    for p in lin.parameters():
        np.testing.assert_allclose(p.grad.numpy(), lam * p.detach().numpy(), rtol=1e-13)


def test_penalty_gradient_adds_to_the_loss_gradient():
    lin = nn.Linear(3, 1, dtype=gpunn.float64)
    x = gpunn.randn(8, 3, dtype=gpunn.float64)
    (lin(x) ** 2).mean().backward()
    g_loss = lin.weight.grad.numpy().copy()
    lin.zero_grad()
    ((lin(x) ** 2).mean() + l2_penalty(weights(lin), 0.7)).backward()
    expected = g_loss + 1.4 * lin.weight.detach().numpy()
    np.testing.assert_allclose(lin.weight.grad.numpy(), expected, rtol=1e-13)


def test_penalty_arguments_are_checked():
    with pytest.raises(TypeError, match="weights\\(model\\)"):
        l2_penalty(_model(), 0.1)
    with pytest.raises(TypeError, match="Tensor"):
        l1_penalty([np.ones(3)], 0.1)
    assert l1_penalty([], 0.5).item() == 0.0
    w = nn.Parameter(gpunn.tensor([[-2.0, 0.0, 3.0]], dtype=gpunn.float64))
    pen = l1_penalty(w, 1.0)  # a single tensor works too
    pen.backward()
    np.testing.assert_array_equal(w.grad.numpy(), [[-1.0, 0.0, 1.0]])  # subgradient 0 at 0, as torch
