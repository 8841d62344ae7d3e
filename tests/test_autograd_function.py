"""Custom differentiable functions: PyTorch's LegendrePolynomial3 example, run under both libraries."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
from tests.helpers import torch_or_skip


def _legendre(L):
    class LegendrePolynomial3(L.autograd.Function):
        @staticmethod
        def forward(ctx, input):  # noqa: A002
            ctx.save_for_backward(input)
            return 0.5 * (5 * input**3 - 3 * input)

        @staticmethod
        def backward(ctx, grad_output):
            (input,) = ctx.saved_tensors  # noqa: A001
            return grad_output * 1.5 * (5 * input**2 - 1)

    return LegendrePolynomial3


def _fit(L):
    import math

    x = L.linspace(-math.pi, math.pi, 100, dtype=L.float64)
    y = L.sin(x)
    a, b, c, d = (L.full((), v, dtype=L.float64, requires_grad=True) for v in (0.0, -1.0, 0.0, 0.3))
    P3 = _legendre(L).apply
    for _ in range(20):
        y_pred = a + b * P3(c + d * x)
        loss = (y_pred - y).pow(2).sum()
        loss.backward()
        with L.no_grad():
            for p in (a, b, c, d):
                p -= 5e-6 * p.grad
                p.grad = None
    return [p.item() for p in (a, b, c, d)] + [loss.item()]


def test_custom_function_matches_torch():
    torch = torch_or_skip()
    np.testing.assert_allclose(_fit(gpunn), _fit(torch), rtol=1e-10, atol=1e-12)  # a, c stay ~0 by symmetry


def test_custom_function_checks():
    P3 = _legendre(gpunn)
    x = gpunn.tensor([0.5, -0.2], dtype=gpunn.float64, requires_grad=True)
    y = P3.apply(x)
    assert y.grad_fn == "LegendrePolynomial3Backward" and y.requires_grad
    assert not P3.apply(x.detach()).requires_grad
    assert gpunn.gradcheck(P3.apply, x)
    y = P3.apply(x)
    with gpunn.no_grad():
        x.mul_(2)  # the saved input changed
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()

    class Bad(gpunn.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            return a * b

        @staticmethod
        def backward(ctx, g):
            return g

    with pytest.raises(RuntimeError, match="incorrect number of gradients"):
        Bad.apply(x, x).sum().backward()
