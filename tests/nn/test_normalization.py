"""nn.LayerNorm and F.layer_norm against PyTorch 2.13: values and gradients of input, weight and bias on odd
shapes, with and without the affine, the module's parameters, repr and state_dict, and PyTorch's shape errors."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
from tests.helpers import parity, torch_or_skip

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
