"""F.scaled_dot_product_attention against PyTorch 2.13 (float64): outputs and the gradients of q, k and v with
no mask, is_causal, a bool mask, an additive float mask, a given scale, grouped-query heads; and its errors."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
from tests.helpers import torch_or_skip

torch = torch_or_skip()


@pytest.mark.parametrize("case", ["plain", "causal", "bool_mask", "float_mask", "scale", "gqa", "unbatched"])
def test_scaled_dot_product_attention_matches_torch(rng, case):
    heads_kv = 1 if case == "gqa" else 3
    q = rng.standard_normal((3, 5, 4) if case == "unbatched" else (2, 3, 5, 4))
    k = rng.standard_normal((3, 6, 4) if case == "unbatched" else (2, heads_kv, 6, 4))
    v = rng.standard_normal((3, 6, 7) if case == "unbatched" else (2, heads_kv, 6, 7))
    keep = rng.random((5, 6)) > 0.3
    keep[:, 0] = True
    bias = rng.standard_normal((5, 6))
    up = rng.standard_normal(q.shape[:-1] + (7,))
    res = []
    for L in (gpunn, torch):
        kw = {
            "causal": {"is_causal": True},
            "bool_mask": {"attn_mask": L.tensor(keep)},
            "float_mask": {"attn_mask": L.tensor(bias)},
            "scale": {"scale": 0.3},
            "gqa": {"enable_gqa": True},
        }.get(case, {})
        ts = [L.tensor(a, requires_grad=True) for a in (q, k, v)]
        out = L.nn.functional.scaled_dot_product_attention(*ts, **kw)
        (out * L.tensor(up)).sum().backward()
        res.append([out.detach().numpy()] + [t.grad.numpy() for t in ts])
    for a, b in zip(*res):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_causal_with_a_mask_raises_like_torch():
    for L in (gpunn, torch):
        x = L.ones(1, 2, 3)
        with pytest.raises(RuntimeError, match="attn_mask"):
            L.nn.functional.scaled_dot_product_attention(x, x, x, attn_mask=L.ones(2, 2, dtype=L.bool), is_causal=True)
