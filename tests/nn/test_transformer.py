"""nn.MultiheadAttention, TransformerEncoderLayer and TransformerEncoder against PyTorch 2.13: outputs, attention
weights and every gradient (float64) with no mask, a causal bool mask, a float mask, a key padding mask,
batch_first, per-head weights, no bias; post- and pre-norm layers; reprs and parameter names; and PyTorch's
zeroed padded outputs on its nested-tensor inference path."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
from tests.helpers import torch_at_least, torch_or_skip

torch = torch_or_skip()


def _same_params(rng, gm, tm):
    gp, tp = dict(gm.named_parameters()), dict(tm.named_parameters())
    assert list(gp) == list(tp)
    with torch.no_grad(), gpunn.no_grad():
        for n in tp:
            v = rng.standard_normal(tuple(tp[n].shape)) * 0.3
            gp[n].copy_(gpunn.tensor(v))
            tp[n].copy_(torch.tensor(v))


MHA = [
    ({}, {}),
    ({"batch_first": True}, {}),
    ({}, {"attn_mask": "causal"}),
    ({}, {"key_padding_mask": True}),
    ({}, {"attn_mask": "float", "average_attn_weights": False}),
    ({"bias": False}, {"need_weights": False}),
]


@pytest.mark.parametrize("kwargs, call", MHA)
def test_multihead_attention_matches_torch(rng, kwargs, call):
    gm = gpunn.nn.MultiheadAttention(8, 2, dtype=gpunn.float64, **kwargs)
    tm = torch.nn.MultiheadAttention(8, 2, dtype=torch.float64, **kwargs)
    _same_params(rng, gm, tm)
    assert repr(gm) == repr(tm)
    n, lq, ls = 3, 5, 6

    def shape(length):
        return (n, length, 8) if kwargs.get("batch_first") else (length, n, 8)

    q, k, v = rng.standard_normal(shape(lq)), rng.standard_normal(shape(ls)), rng.standard_normal(shape(ls))
    masks = {
        "causal": np.triu(np.ones((lq, ls), bool), 1),
        "float": rng.standard_normal((lq, ls)),
    }
    kpm = np.zeros((n, ls), bool)
    kpm[1, 4:] = True
    res = []
    for L, m in ((gpunn, gm), (torch, tm)):
        ts = [L.tensor(a, requires_grad=True) for a in (q, k, v)]
        extra = dict(call)
        if "attn_mask" in extra:
            extra["attn_mask"] = L.tensor(masks[extra["attn_mask"]])
        if extra.pop("key_padding_mask", False):
            extra["key_padding_mask"] = L.tensor(kpm)
        out, w = m(*ts, **extra)
        up = L.tensor(np.linspace(-1, 1, out.numel()).reshape(tuple(out.shape)))
        loss = (out * up).sum() + (0 if w is None else (w**2).sum())
        loss.backward()
        res.append([out, w] + [t.grad for t in ts] + [p.grad for p in m.parameters()])
    for a, b in zip(*res):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-9, atol=1e-12)


@torch_at_least(2, 13, "TransformerEncoderLayer's repr")
@pytest.mark.parametrize("kwargs", [{}, {"norm_first": True, "activation": "gelu", "batch_first": True}])
def test_transformer_encoder_matches_torch(rng, kwargs):
    gl = gpunn.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, dtype=gpunn.float64, **kwargs)
    tl = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, dtype=torch.float64, **kwargs)
    assert repr(gl) == repr(tl)
    ge = gpunn.nn.TransformerEncoder(gl, 2, norm=gpunn.nn.LayerNorm(8, dtype=gpunn.float64))
    te = torch.nn.TransformerEncoder(tl, 2, norm=torch.nn.LayerNorm(8, dtype=torch.float64), enable_nested_tensor=False)
    _same_params(rng, ge, te)
    x = rng.standard_normal((3, 5, 8) if kwargs.get("batch_first") else (5, 3, 8))
    mask = np.triu(np.ones((5, 5), bool), 1)
    res = []
    for L, m in ((gpunn, ge), (torch, te)):
        xt = L.tensor(x, requires_grad=True)
        out = m(xt, mask=L.tensor(mask))
        (out**2).sum().backward()
        res.append([out, xt.grad] + [p.grad for p in m.parameters()])
    for a, b in zip(*res):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-9, atol=1e-11)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("batch_first", [True, False])
def test_encoder_inference_with_padding_like_torch(rng, batch_first):
    """In eval mode without autograd, PyTorch's batch_first encoder returns 0 at the padded positions."""
    x = rng.standard_normal((3, 5, 8) if batch_first else (5, 3, 8)).astype(np.float32)
    res = []
    for L in (gpunn, torch):
        e = L.nn.TransformerEncoder(L.nn.TransformerEncoderLayer(8, 2, 16, batch_first=batch_first), 2)
        e.eval()
        with L.no_grad():
            for p in e.parameters():
                p.copy_(L.tensor(np.sin(np.arange(p.numel()).reshape(tuple(p.shape)) * 0.37).astype(np.float32)))
            kpm = L.zeros(3, 5, dtype=L.bool)
            kpm[1, 3:] = True
            res.append(e(L.tensor(x), src_key_padding_mask=kpm).numpy())
    np.testing.assert_allclose(res[0], res[1], rtol=1e-5, atol=2e-6)


def test_unsupported_options_say_so():
    with pytest.raises(NotImplementedError, match="add_bias_kv"):
        gpunn.nn.MultiheadAttention(8, 2, add_bias_kv=True)
