"""gpunn.distributions against torch.distributions 2.13 (float64): log_prob, entropy, mean/variance and
kl_divergence values and gradients; sample shapes and frequencies (the generators differ, so samples are
checked statistically); PyTorch's parameter and support errors."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
from tests.helpers import torch_or_skip

torch = torch_or_skip()


def _both(rng, make):
    """make(L, params) under both libraries with the same random float64 parameters requiring grad."""
    params = {
        "loc": rng.standard_normal(4),
        "scale": rng.random(4) + 0.2,
        "logits": rng.standard_normal((2, 5)),
        "probs": rng.random((2, 5)) + 0.05,
        "p": rng.random(4) * 0.9 + 0.05,
        "v": rng.standard_normal((3, 4)),
    }
    out = []
    for L in (gpunn, torch):
        ts = {k: L.tensor(v, requires_grad=True) for k, v in params.items()}
        value = make(L, ts)
        value.sum().backward()
        out.append((value.detach().numpy(), {k: t.grad.numpy() for k, t in ts.items() if t.grad is not None}))
    return out


CASES = {
    "normal_log_prob": lambda L, t: L.distributions.Normal(t["loc"], t["scale"]).log_prob(t["v"]),
    "normal_entropy_cdf": lambda L, t: (
        L.distributions.Normal(t["loc"], t["scale"]).entropy()
        + L.distributions.Normal(t["loc"], t["scale"]).cdf(t["v"]).sum(0)
    ),
    "normal_scalar_params": lambda L, t: L.distributions.Normal(0.0, 2.0).log_prob(t["v"]),
    "categorical_logits": lambda L, t: (
        L.distributions.Categorical(logits=t["logits"]).log_prob(L.tensor([1, 4]))
        + L.distributions.Categorical(logits=t["logits"]).entropy()
    ),
    "categorical_probs": lambda L, t: (
        L.distributions.Categorical(probs=t["probs"]).log_prob(L.tensor([[0, 2], [1, 1]]))
        + L.distributions.Categorical(probs=t["probs"]).entropy()
    ),
    "bernoulli": lambda L, t: (
        L.distributions.Bernoulli(probs=t["p"]).log_prob(L.tensor([1.0, 0.0, 1.0, 0.0]).double())
        + L.distributions.Bernoulli(logits=t["loc"]).entropy()
    ),
    "uniform": lambda L, t: (
        L.distributions.Uniform(t["loc"] - 3, t["loc"] + t["scale"] + 3).log_prob(t["v"])
        + L.distributions.Uniform(t["loc"] - 3, t["loc"] + 3).entropy()
    ),
    "kl_normal": lambda L, t: L.distributions.kl_divergence(
        L.distributions.Normal(t["loc"], t["scale"]), L.distributions.Normal(t["v"][0], t["scale"] + 1)
    ),
    "kl_categorical": lambda L, t: L.distributions.kl_divergence(
        L.distributions.Categorical(logits=t["logits"]), L.distributions.Categorical(probs=t["probs"])
    ),
    "kl_bernoulli": lambda L, t: L.distributions.kl_divergence(
        L.distributions.Bernoulli(probs=t["p"]), L.distributions.Bernoulli(logits=t["loc"])
    ),
    "moments": lambda L, t: (
        L.distributions.Normal(t["loc"], t["scale"]).variance
        + L.distributions.Normal(t["loc"], t["scale"]).stddev
        + L.distributions.Bernoulli(probs=t["p"]).mean
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_torch(rng, case):
    (g, gg), (t, tg) = _both(rng, CASES[case])
    np.testing.assert_allclose(g, t, rtol=1e-10, atol=1e-12)
    assert gg.keys() == tg.keys()
    for k in gg:
        np.testing.assert_allclose(gg[k], tg[k], rtol=1e-9, atol=1e-12, err_msg=k)


def test_samples_have_torchs_shapes_and_frequencies():
    gpunn.manual_seed(0)
    D = gpunn.distributions
    n = D.Normal(gpunn.tensor([1.0, -2.0]), gpunn.tensor([0.5, 2.0]))
    s = n.sample((20000,))
    assert s.shape == (20000, 2) and not s.requires_grad
    np.testing.assert_allclose(s.numpy().mean(0), [1.0, -2.0], atol=0.05)
    np.testing.assert_allclose(s.numpy().std(0), [0.5, 2.0], rtol=0.05)
    loc = gpunn.tensor([0.0, 1.0], requires_grad=True)
    D.Normal(loc, 1.0).rsample((3,)).sum().backward()
    np.testing.assert_array_equal(loc.grad.numpy(), [3.0, 3.0])
    c = D.Categorical(probs=gpunn.tensor([[0.1, 0.0, 0.9], [0.5, 0.5, 0.0]]))
    draws = c.sample((4000,)).numpy()
    assert draws.shape == (4000, 2) and draws.dtype == np.int64
    np.testing.assert_allclose(np.bincount(draws[:, 0], minlength=3) / 4000, [0.1, 0.0, 0.9], atol=0.03)
    assert c.sample().shape == (2,)
    assert D.Bernoulli(probs=gpunn.full((3, 2), 0.5)).sample((4,)).shape == (4, 3, 2)
    u = D.Uniform(-1.0, 3.0).sample((5000,)).numpy()
    assert u.min() >= -1 and u.max() < 3 and abs(u.mean() - 1) < 0.1


@pytest.mark.parametrize(
    "fn",
    [
        lambda L: L.distributions.Normal(L.tensor([0.0]), L.tensor([-1.0])),
        lambda L: L.distributions.Categorical(probs=L.tensor([0.5, -0.1])),
        lambda L: L.distributions.Categorical(probs=L.tensor([0.5, 0.5]), logits=L.tensor([0.0, 0.0])),
        lambda L: L.distributions.Uniform(L.tensor(-1.0), L.tensor(2.0)).log_prob(L.tensor([3.0])),
        lambda L: L.distributions.Categorical(logits=L.tensor([0.0, 1.0])).log_prob(L.tensor(2)),
        lambda L: L.distributions.Bernoulli(probs=L.tensor([0.3])).log_prob(L.tensor([0.5])),
    ],
)
def test_errors_like_torch(fn):
    for L in (gpunn, torch):
        with pytest.raises(ValueError):
            fn(L)
