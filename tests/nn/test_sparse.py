"""nn.Embedding and F.embedding against PyTorch 2.13: values, weight gradients (repeated indices, padding_idx,
scale_grad_by_freq), the module's init and repr, from_pretrained, and PyTorch's errors."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
import gpunn.nn.functional as F
from tests.helpers import parity, torch_or_skip

torch = torch_or_skip()
DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]
IDX = np.array([[1, 4, 1, 0], [8, 4, 4, 2], [0, 0, 8, 1]], dtype=np.int64)  # repeats, several dims


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "kwargs", [{}, {"padding_idx": 4}, {"padding_idx": -1}, {"scale_grad_by_freq": True, "padding_idx": 0}]
)
def test_embedding_matches_torch(rng, dtype, kwargs):
    W = rng.standard_normal((9, 5))
    parity(rng, lambda L, i, w: L.nn.functional.embedding(i, w, **kwargs), [IDX, W], dtype)


def test_embedding_of_int32_and_0d_indices_matches_torch(rng):
    W = rng.standard_normal((9, 5))
    parity(rng, lambda L, i, w: L.nn.functional.embedding(i, w), [IDX.astype(np.int32), W], np.float32)
    parity(rng, lambda L, i, w: L.nn.functional.embedding(i, w), [np.array(3), W], np.float32)


def test_embedding_module_like_torch():
    gpunn.manual_seed(0)
    for L in (gpunn, torch):
        e = L.nn.Embedding(1000, 16, padding_idx=3)
        w = e.weight.detach().numpy()
        assert w.shape == (1000, 16) and w.dtype == np.float32 and e.weight.requires_grad
        assert not w[3].any() and abs(w.std() - 1) < 0.05 and abs(w.mean()) < 0.05  # N(0, 1), the pad row 0
        assert repr(e) == "Embedding(1000, 16, padding_idx=3)"
        assert [n for n, _ in e.named_parameters()] == ["weight"]
        out = e(L.tensor([[3, 999]]))
        assert tuple(out.shape) == (1, 2, 16) and not out[0, 0].detach().numpy().any()


def test_from_pretrained_shares_and_freezes():
    for L in (gpunn, torch):
        base = L.arange(12.0).reshape(4, 3)
        e = L.nn.Embedding.from_pretrained(base)
        assert not e.weight.requires_grad and e(L.tensor([2])).tolist() == [[6.0, 7.0, 8.0]]
        assert L.nn.Embedding.from_pretrained(base, freeze=False).weight.requires_grad


@pytest.mark.parametrize(
    "idx, match, exc",
    [
        ([9], "index out of range in self", IndexError),
        ([-1], "index out of range in self", IndexError),
        ([1.0], "Long, Int", RuntimeError),
    ],
)
def test_embedding_errors_like_torch(idx, match, exc):
    for L in (gpunn, torch):
        with pytest.raises(exc, match=match):
            L.nn.functional.embedding(L.tensor(idx), L.ones(9, 2))


def test_embedding_unsupported_options_say_so():
    with pytest.raises(NotImplementedError, match="max_norm"):
        F.embedding(gpunn.tensor([1]), gpunn.ones(3, 2), max_norm=1.0)
    with pytest.raises(NotImplementedError, match="sparse"):
        gpunn.nn.Embedding(3, 2, sparse=True)
