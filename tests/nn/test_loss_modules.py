"""Loss modules against torch.nn's (float64; value and input gradient), options passed through."""

import numpy as np
import pytest

import gpunn
from gpunn import nn
from tests.helpers import randn, to_torch

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

N, C = 9, 5


def _compare(gloss, tloss, x_np, target_np, tol=1e-12):
    x = gpunn.tensor(x_np, requires_grad=True)
    tx = to_torch(x_np, requires_grad=True)
    target = gpunn.tensor(target_np)
    ttarget = torch.from_numpy(np.array(target_np, copy=True))
    out, tout = gloss(x, target), tloss(tx, ttarget)
    assert out.shape == tuple(tout.shape)
    np.testing.assert_allclose(out.detach().numpy(), tout.detach().numpy(), rtol=tol, atol=tol)
    g = np.asarray(np.random.default_rng(3).standard_normal(tout.shape) + 1.5)
    out.backward(gpunn.tensor(g))
    tout.backward(torch.from_numpy(g))
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=tol, atol=tol)


def _class_weight(rng):
    w = rng.uniform(0.5, 2.0, C)
    return gpunn.tensor(w), torch.from_numpy(w)


def _labels(rng, ignore=False):
    y = rng.integers(0, C, N)
    if ignore:
        y[[1, 4]] = -100
    return y


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_loss(rng, reduction, weighted):
    kw, tkw = {}, {}
    if weighted:
        kw["weight"], tkw["weight"] = _class_weight(rng)
    _compare(
        nn.CrossEntropyLoss(reduction=reduction, **kw),
        torch.nn.CrossEntropyLoss(reduction=reduction, **tkw),
        randn(rng, N, C, dtype=np.float64),
        _labels(rng),
    )


def test_cross_entropy_loss_ignore_index_and_label_smoothing(rng):
    gw, tw = _class_weight(rng)
    y = _labels(rng, ignore=True)
    y[y == -100] = 3
    _compare(
        nn.CrossEntropyLoss(weight=gw, ignore_index=3, label_smoothing=0.15),
        torch.nn.CrossEntropyLoss(weight=tw, ignore_index=3, label_smoothing=0.15),
        randn(rng, N, C, dtype=np.float64),
        y,
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss(rng, reduction):
    gw, tw = _class_weight(rng)
    logp = np.log(np.random.default_rng(1).dirichlet(np.ones(C), N))
    _compare(
        nn.NLLLoss(weight=gw, reduction=reduction),
        torch.nn.NLLLoss(weight=tw, reduction=reduction),
        logp,
        _labels(rng, ignore=True),
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", ["MSELoss", "L1Loss"])
def test_regression_losses(rng, name, reduction):
    _compare(
        getattr(nn, name)(reduction=reduction),
        getattr(torch.nn, name)(reduction=reduction),
        randn(rng, N, 3, dtype=np.float64),
        randn(rng, N, 3, dtype=np.float64),
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_loss(rng, reduction):
    probs = rng.uniform(0.05, 0.95, (N, 3))
    target = rng.uniform(0, 1, (N, 3))
    w = rng.uniform(0.5, 2, (N, 3))
    _compare(
        nn.BCELoss(weight=gpunn.tensor(w), reduction=reduction),
        torch.nn.BCELoss(weight=torch.from_numpy(w), reduction=reduction),
        probs,
        target,
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_with_logits_loss(rng, reduction):
    target = (rng.uniform(0, 1, (N, 3)) > 0.5).astype(np.float64)
    w, pw = rng.uniform(0.5, 2, 3), np.array([0.5, 1.0, 3.0])
    _compare(
        nn.BCEWithLogitsLoss(weight=gpunn.tensor(w), reduction=reduction, pos_weight=gpunn.tensor(pw)),
        torch.nn.BCEWithLogitsLoss(weight=torch.from_numpy(w), reduction=reduction, pos_weight=torch.from_numpy(pw)),
        randn(rng, N, 3, dtype=np.float64) * 3,
        target,
    )


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_multi_margin_loss(rng, p, reduction):
    gw, tw = _class_weight(rng)
    _compare(
        nn.MultiMarginLoss(p=p, margin=0.7, weight=gw, reduction=reduction),
        torch.nn.MultiMarginLoss(p=p, margin=0.7, weight=tw, reduction=reduction),
        randn(rng, N, C, dtype=np.float64),
        _labels(rng),
    )


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning")
@pytest.mark.parametrize("reduction", ["mean", "sum", "batchmean", "none"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_loss(rng, reduction, log_target):
    logq = np.log(rng.dirichlet(np.ones(C), N))
    p = rng.dirichlet(np.ones(C), N)
    _compare(
        nn.KLDivLoss(reduction=reduction, log_target=log_target),
        torch.nn.KLDivLoss(reduction=reduction, log_target=log_target),
        logq,
        np.log(p) if log_target else p,
    )


def test_loss_modules_validate_reduction_and_hold_weight_as_buffer():
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss(reduction="avg")
    with pytest.raises(ValueError, match="reduction"):
        nn.CrossEntropyLoss(reduction="batchmean")
    crit = nn.CrossEntropyLoss(weight=gpunn.ones(3))
    assert list(crit.state_dict()) == ["weight"]
    crit.double()
    assert crit.weight.dtype == np.float64
    assert list(nn.CrossEntropyLoss().state_dict()) == []
    assert repr(nn.CrossEntropyLoss()) == "CrossEntropyLoss()"
