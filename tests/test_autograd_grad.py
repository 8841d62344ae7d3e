"""``gpunn.autograd.grad`` and ``Tensor.backward(inputs=...)`` against PyTorch 2.13: the gradients, what is
(not) written into ``.grad``, several outputs and inputs, non-leaf inputs, unused inputs, and the errors."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
from tests.helpers import torch_or_skip

torch = torch_or_skip()
A = np.array([[0.5, -1.5, 2.0], [1.25, 0.75, -0.25]], dtype=np.float32)
B = np.array([0.3, -0.7, 1.1], dtype=np.float32)


def _np(ts):
    return [None if t is None else t.detach().numpy() for t in ts]


def _both(fn):
    """fn(L, a, b) under gpunn and torch, with fresh leaves; returns both results and both leaf pairs."""
    res = []
    for L in (gpunn, torch):
        a, b = L.tensor(A, requires_grad=True), L.tensor(B, requires_grad=True)
        res.append((fn(L, a, b), a, b))
    return res


def _assert_same(x, y):
    assert len(x) == len(y)
    for u, v in zip(x, y):
        assert (u is None) == (v is None)
        if u is not None:
            np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-6)


CASES = {
    "one_input": lambda L, a, b: L.autograd.grad((a * a * b).sum(), a),
    "list_of_inputs": lambda L, a, b: L.autograd.grad((a.tanh() * b).sum(), [a, b]),
    "grad_outputs": lambda L, a, b: L.autograd.grad(a * b, (a, b), grad_outputs=L.ones_like(a) * 3),
    "two_outputs": lambda L, a, b: L.autograd.grad([(a * b).sum(), (a.exp()).mean()], [a]),
    "non_leaf_input": lambda L, a, b: (lambda h: L.autograd.grad(((h * h).sum() + (h * a).sum()), [h, a]))(a * b),
    "unused_allowed": lambda L, a, b: L.autograd.grad((a * 2).sum(), [a, b], allow_unused=True),
    "materialized": lambda L, a, b: L.autograd.grad((a * 2).sum(), [a, b], materialize_grads=True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_grad_matches_torch_and_writes_no_grad(case):
    (g, ga, gb), (t, ta, tb) = _both(CASES[case])
    assert isinstance(g, tuple)
    _assert_same(_np(g), _np(t))
    assert ga.grad is None and gb.grad is None and ta.grad is None and tb.grad is None


def test_retain_graph_lets_backward_run_after_grad():
    for L in (gpunn, torch):
        a = L.tensor(A, requires_grad=True)
        y = (a**3).sum()
        (ga,) = L.autograd.grad(y, a, retain_graph=True)
        y.backward()
        np.testing.assert_allclose(a.grad.numpy(), ga.numpy())
        np.testing.assert_allclose(ga.numpy(), 3 * A**2, rtol=1e-6)


@pytest.mark.parametrize(
    "fn, exc, match",
    [
        (lambda L, a, b: L.autograd.grad((a * 2).sum(), [a, b]), RuntimeError, "not have been used in the graph"),
        (lambda L, a, b: L.autograd.grad((a * 2).sum(), L.ones(2)), RuntimeError, "does not require grad"),
        (lambda L, a, b: L.autograd.grad(a * 2, a), RuntimeError, "only for scalar outputs"),
        (lambda L, a, b: (lambda y: (L.autograd.grad(y, a), L.autograd.grad(y, a)))((a * a).sum()), RuntimeError,
         "second time|graph"),
    ],
)  # fmt: skip
def test_grad_errors_like_torch(fn, exc, match):
    for L in (gpunn, torch):
        a, b = L.tensor(A, requires_grad=True), L.tensor(B, requires_grad=True)
        with pytest.raises(exc, match=match):
            fn(L, a, b)


def test_create_graph_says_it_is_not_supported():
    a = gpunn.tensor(A, requires_grad=True)
    with pytest.raises(NotImplementedError, match="create_graph"):
        gpunn.autograd.grad((a * a).sum(), a, create_graph=True)


def test_backward_inputs_accumulates_only_into_them():
    res = []
    for L in (gpunn, torch):
        a, b = L.tensor(A, requires_grad=True), L.tensor(B, requires_grad=True)
        h = a * b
        h.retain_grad()
        (h.sin() * b).sum().backward(inputs=[a, h])
        res.append((a.grad.numpy(), b.grad, h.grad.numpy()))
    np.testing.assert_allclose(res[0][0], res[1][0], rtol=1e-6)
    np.testing.assert_allclose(res[0][2], res[1][2], rtol=1e-6)
    assert res[0][1] is None and res[1][1] is None
