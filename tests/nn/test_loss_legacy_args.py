"""PyTorch's legacy loss arguments, against PyTorch 2.13: every loss module and functional form that takes the
deprecated ``size_average``/``reduce`` pair maps it to a reduction as PyTorch does (same value, same
UserWarning), and the positional order matches (``nn.NLLLoss(w, None, 3)`` is ignore_index=3). Also the
per-element ``weight`` of mse_loss / l1_loss / huber_loss, and Hardtanh's ``min_value``/``max_value``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import gpunn
from tests.helpers import torch_or_skip

torch = torch_or_skip()


def _pm1(rng, shape):
    return np.where(rng.random(shape) > 0.5, 1.0, -1.0)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# module name -> (functional name, inputs(rng) as numpy arrays, extra constructor / call keywords)
LOSSES = {
    "CrossEntropyLoss": ("cross_entropy", lambda r: [r.standard_normal((7, 5)), r.integers(0, 5, 7)], {}),
    "NLLLoss": ("nll_loss", lambda r: [np.log(_softmax(r.standard_normal((7, 5)))), r.integers(0, 5, 7)], {}),
    "MSELoss": ("mse_loss", lambda r: [r.standard_normal((7, 5)), r.standard_normal((7, 5))], {}),
    "L1Loss": ("l1_loss", lambda r: [r.standard_normal((7, 5)), r.standard_normal((7, 5))], {}),
    "SmoothL1Loss": ("smooth_l1_loss", lambda r: [r.standard_normal((7, 5)), r.standard_normal((7, 5))], {}),
    "BCELoss": ("binary_cross_entropy", lambda r: [r.uniform(0.05, 0.95, (7, 5)), r.random((7, 5))], {}),
    "BCEWithLogitsLoss": (
        "binary_cross_entropy_with_logits",
        lambda r: [r.standard_normal((7, 5)), r.random((7, 5))],
        {},
    ),
    "MultiMarginLoss": ("multi_margin_loss", lambda r: [r.standard_normal((7, 5)), r.integers(0, 5, 7)], {}),
    "KLDivLoss": ("kl_div", lambda r: [np.log(_softmax(r.standard_normal((7, 5)))), _softmax(r.random((7, 5)))], {}),
    "MarginRankingLoss": (
        "margin_ranking_loss",
        lambda r: [r.standard_normal(7), r.standard_normal(7), _pm1(r, 7)],
        {"margin": 0.3},
    ),
    "HingeEmbeddingLoss": ("hinge_embedding_loss", lambda r: [r.standard_normal((7, 5)), _pm1(r, (7, 5))], {}),
    "SoftMarginLoss": ("soft_margin_loss", lambda r: [r.standard_normal((7, 5)), _pm1(r, (7, 5))], {}),
    "CosineEmbeddingLoss": (
        "cosine_embedding_loss",
        lambda r: [r.standard_normal((7, 5)), r.standard_normal((7, 5)), _pm1(r, 7)],
        {"margin": 0.2},
    ),
    "TripletMarginLoss": (
        "triplet_margin_loss",
        lambda r: [r.standard_normal((7, 5)) for _ in range(3)],
        {"margin": 0.5},
    ),
    "MultiLabelSoftMarginLoss": (
        "multilabel_soft_margin_loss",
        lambda r: [r.standard_normal((7, 5)), (r.random((7, 5)) > 0.5) * 1.0],
        {},
    ),
    "PoissonNLLLoss": (
        "poisson_nll_loss",
        lambda r: [r.standard_normal((7, 5)), r.integers(0, 5, (7, 5)) * 1.0],
        {},
    ),
}

# every (size_average, reduce) pair that is not (None, None): each gives 'mean', 'sum' or 'none'
LEGACY = [(sa, rd) for sa in (None, True, False) for rd in (None, True, False) if (sa, rd) != (None, None)]


def _tensors(L, arrays):
    return [L.tensor(a) for a in arrays]


def _run(fn):
    """fn()'s value as a numpy array and the messages of the size_average/reduce warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
    msgs = [(w.category, str(w.message)) for w in caught if "size_average" in str(w.message)]
    return np.asarray(out.detach().numpy()), msgs


def _same(ours, ref):
    (v0, m0), (v1, m1) = ours, ref
    assert v0.shape == v1.shape
    np.testing.assert_allclose(v0, v1, rtol=1e-10, atol=1e-12)
    assert m0 == m1 and m1  # the same deprecation warning, and PyTorch does warn


@pytest.mark.parametrize("size_average, reduce", LEGACY)
@pytest.mark.parametrize("name", list(LOSSES))
def test_legacy_module_arguments_like_torch(rng, name, size_average, reduce):
    _, make, kwargs = LOSSES[name]
    arrays = make(rng)
    res = []
    for L in (gpunn, torch):

        def call(L=L):
            m = getattr(L.nn, name)(size_average=size_average, reduce=reduce, **kwargs)
            return m(*_tensors(L, arrays))

        res.append(_run(call))
    _same(*res)


@pytest.mark.parametrize("size_average, reduce", LEGACY)
@pytest.mark.parametrize("name", list(LOSSES))
def test_legacy_functional_arguments_like_torch(rng, name, size_average, reduce):
    fname, make, kwargs = LOSSES[name]
    arrays = make(rng)
    res = [
        _run(
            lambda L=L: getattr(L.nn.functional, fname)(
                *_tensors(L, arrays), size_average=size_average, reduce=reduce, **kwargs
            )
        )  # fmt: skip
        for L in (gpunn, torch)
    ]
    _same(*res)


def test_mse_loss_size_average_false_sums(rng):
    """The course-notes idiom: nn.MSELoss(size_average=False) is a sum, with PyTorch's warning."""
    x, y = rng.standard_normal((9, 7)), rng.standard_normal((9, 7))
    with pytest.warns(UserWarning, match="reduction='sum'"):
        crit = gpunn.nn.MSELoss(size_average=False)
    assert crit.reduction == "sum"
    ref = torch.nn.functional.mse_loss(torch.tensor(x), torch.tensor(y), reduction="sum").item()
    np.testing.assert_allclose(crit(gpunn.tensor(x), gpunn.tensor(y)).item(), ref, rtol=1e-12)


@pytest.mark.parametrize(
    "build",
    [
        lambda L, w: L.nn.NLLLoss(w, None, 3),  # weight, size_average, ignore_index
        lambda L, w: L.nn.CrossEntropyLoss(w, None, 3, None, "sum"),  # ..., reduce, reduction
        lambda L, w: L.nn.CrossEntropyLoss(w, None, 3, None, "mean", 0.2),  # ..., label_smoothing
        lambda L, w: L.nn.BCEWithLogitsLoss(None, None, None, "sum", w),  # ..., reduction, pos_weight
        lambda L, w: L.nn.MultiMarginLoss(2, 0.5, w, None, None, "none"),
        lambda L, w: L.nn.KLDivLoss(None, None, "batchmean", True),  # ..., log_target
        lambda L, w: L.nn.SmoothL1Loss(None, None, "sum", 0.4),  # ..., beta
    ],
)
def test_loss_modules_positional_like_torch(rng, build):
    w = rng.random(5) + 0.1
    logits, labels = rng.standard_normal((8, 5)), rng.integers(0, 5, 8)
    labels[:3] = 3  # ignored where ignore_index=3
    multi_hot = (rng.random((8, 5)) > 0.5) * 1.0
    log_probs = np.log(_softmax(rng.standard_normal((8, 5))))
    res = []
    for L in (gpunn, torch):
        m = build(L, L.tensor(w))
        if isinstance(m, L.nn.BCEWithLogitsLoss):
            target = multi_hot
        elif isinstance(m, (L.nn.KLDivLoss, L.nn.SmoothL1Loss)):
            target = log_probs
        else:
            target = labels
        res.append(m(L.tensor(logits), L.tensor(target)).detach().numpy())
    np.testing.assert_allclose(res[0], res[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "call",
    [
        lambda F, x, y, w: F.nll_loss(F.log_softmax(x, 1), y, w, None, 3),
        lambda F, x, y, w: F.cross_entropy(x, y, w, None, 3, None, "sum", 0.1),
        lambda F, x, y, w: F.multi_margin_loss(x, y, 2, 0.5, w, None, None, "none"),
    ],
)
def test_loss_functions_positional_like_torch(rng, call):
    x, y, w = rng.standard_normal((8, 5)), rng.integers(0, 5, 8), rng.random(5) + 0.1
    y[:2] = 3
    res = [call(L.nn.functional, L.tensor(x), L.tensor(y), L.tensor(w)).detach().numpy() for L in (gpunn, torch)]
    np.testing.assert_allclose(res[0], res[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fname", ["mse_loss", "l1_loss", "huber_loss"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_pointwise_loss_weight_like_torch(rng, fname, reduction):
    """PyTorch 2.13's per-element ``weight``: 'mean' is sum(w l) / sum(w) for MSE and L1, mean(w l) for Huber."""
    x, y, w = rng.standard_normal((9, 7)), rng.standard_normal((9, 7)) * 2, rng.random((9, 7))
    outs, grads = [], []
    for L in (gpunn, torch):
        xt = L.tensor(x, requires_grad=True)
        out = getattr(L.nn.functional, fname)(xt, L.tensor(y), reduction=reduction, weight=L.tensor(w))
        out.sum().backward()
        outs.append(out.detach().numpy())
        grads.append(xt.grad.numpy())
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-10, atol=1e-12)


def test_pointwise_loss_weight_shape_checked():
    with pytest.raises(ValueError, match="weight"):
        gpunn.nn.functional.mse_loss(gpunn.ones(3, 2), gpunn.zeros(3, 2), weight=gpunn.ones(2))


@pytest.mark.parametrize("kwargs", [{"min_value": -0.3}, {"max_value": 0.7}, {"min_value": -2.0, "max_value": 0.1}])
def test_hardtanh_deprecated_aliases_like_torch(rng, kwargs):
    x = rng.standard_normal((9, 7)) * 2
    res = []
    for L in (gpunn, torch):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m = L.nn.Hardtanh(**kwargs)
        msgs = [(w.category, str(w.message)) for w in caught]
        res.append((msgs, m(L.tensor(x)).numpy(), m.min_val, m.max_val))
    assert res[0][0] == res[1][0] and res[1][0]
    np.testing.assert_array_equal(res[0][1], res[1][1])
    assert res[0][2:] == res[1][2:]
