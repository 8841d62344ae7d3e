"""nn.LayerNorm, GroupNorm, InstanceNorm1d/2d and their F functions against PyTorch 2.13: values and gradients on odd
shapes, with and without the affine, the module's parameters, repr and state_dict, and PyTorch's shape errors."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
from tests.helpers import parity, torch_at_least, torch_or_skip

torch = torch_or_skip()
DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, norm", [((9, 7, 41), (41,)), ((4, 9, 7), (9, 7)), ((13,), (13,))])
def test_layer_norm_matches_torch(rng, dtype, shape, norm):
    x = rng.standard_normal(shape) * 3 + 1.5
    w, b = rng.standard_normal(norm), rng.standard_normal(norm)
    parity(rng, lambda L, x, w, b: L.nn.functional.layer_norm(x, norm, w, b, eps=1e-3), [x, w, b], dtype)
    parity(rng, lambda L, x: L.nn.functional.layer_norm(x, norm), [x], dtype)
    parity(rng, lambda L, x, w: L.nn.functional.layer_norm(x, norm, weight=w), [x, w], dtype)


@torch_at_least(2, 13, "the norm layers' bias= option and reprs")
@pytest.mark.parametrize("kwargs", [{}, {"elementwise_affine": False}, {"bias": False}, {"eps": 1e-3}])
def test_layer_norm_module_like_torch(rng, kwargs):
    x = rng.standard_normal((6, 3, 8)).astype(np.float32)
    outs = []
    for L in (gpunn, torch):
        m = L.nn.LayerNorm((3, 8), **kwargs)
        outs.append((repr(m), list(m.state_dict()), m(L.tensor(x)).detach().numpy()))
    assert outs[0][:2] == outs[1][:2]
    np.testing.assert_allclose(outs[0][2], outs[1][2], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape, norm", [((4, 5), (4,)), ((5,), (2, 5)), ((3, 5), ())])
def test_layer_norm_shape_errors_like_torch(shape, norm):
    for L in (gpunn, torch):
        with pytest.raises(RuntimeError, match="normalized_shape"):
            L.nn.functional.layer_norm(L.ones(*shape), norm)


MORE = [
    ("GroupNorm", (4, 8), {}, (2, 8, 6, 5)),
    ("GroupNorm", (2, 8), {"affine": False}, (3, 8, 7)),
    ("GroupNorm", (8, 8), {"bias": False, "eps": 1e-3}, (2, 8, 3, 4)),
    ("InstanceNorm2d", (8,), {"affine": True}, (2, 8, 6, 5)),
    ("InstanceNorm2d", (8,), {}, (8, 6, 5)),
    ("InstanceNorm1d", (8,), {"affine": True, "bias": False}, (3, 8, 9)),
]


@torch_at_least(2, 13, "the norm layers' bias= option and reprs")
@pytest.mark.parametrize("name, args, kwargs, shape", MORE)
def test_group_and_instance_norm_match_torch(rng, name, args, kwargs, shape):
    """Values and the gradients of the input and of the affine parameters (set to random values), float64."""
    x = rng.standard_normal(shape) * 2 + 0.5
    up = rng.standard_normal(shape)
    res = []
    for L in (gpunn, torch):
        m = getattr(L.nn, name)(*args, **kwargs).double()
        with L.no_grad():
            for p in m.parameters():
                p.copy_(L.tensor(np.linspace(-1, 2, p.numel())))
        xt = L.tensor(x, requires_grad=True)
        out = m(xt)
        (out * L.tensor(up)).sum().backward()
        res.append((repr(m), list(m.state_dict()), out, xt.grad, [p.grad for p in m.parameters()]))
    assert res[0][:2] == res[1][:2]
    for a, b in [(res[0][2], res[1][2]), (res[0][3], res[1][3]), *zip(res[0][4], res[1][4])]:
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_instance_norm_running_stats_say_they_are_unsupported():
    with pytest.raises(NotImplementedError, match="track_running_stats"):
        gpunn.nn.InstanceNorm2d(3, track_running_stats=True)
