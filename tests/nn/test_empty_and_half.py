"""Edge inputs that used to end in a NumPy error: softmax/log_softmax over an empty dimension (PyTorch
returns an empty tensor) and Dropout on float16 input."""

import numpy as np
import pytest

import gpunn
import gpunn.nn.functional as F
from gpunn import nn


@pytest.mark.parametrize("fn", [F.softmax, F.log_softmax])
@pytest.mark.parametrize("shape,dim", [((3, 0), 1), ((0, 4), 1), ((0, 4), 0), ((2, 0, 5), -2)])
def test_softmax_over_an_empty_tensor_is_empty(fn, shape, dim):
    x = gpunn.zeros(*shape, requires_grad=True)
    y = fn(x, dim=dim)
    assert y.shape == shape
    y.sum().backward()
    assert x.grad.shape == shape


@pytest.mark.parametrize("fn", [F.softmax, F.log_softmax])
def test_softmax_still_refuses_an_out_of_range_dim(fn):
    with pytest.raises(Exception, match="(?i)dim|axis"):
        fn(gpunn.zeros(3, 0), dim=5)


def test_dropout_on_float16():
    gpunn.manual_seed(0)
    x = gpunn.tensor(np.random.default_rng(0).standard_normal((64, 33)).astype(np.float16))
    y = nn.Dropout(0.25)(x)
    assert y.dtype == np.float16 and y.shape == x.shape
    kept = y.numpy() != 0
    assert 0.6 < kept.mean() < 0.9  # about 3/4 kept
    np.testing.assert_allclose(
        y.numpy()[kept], (x.numpy()[kept].astype(np.float32) / 0.75).astype(np.float16), rtol=1e-3
    )
