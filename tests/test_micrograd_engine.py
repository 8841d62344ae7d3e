"""karpathy/micrograd's test/test_engine.py compares its scalar engine with torch on two expressions: the
"sanity check" (x = -4: z = 2x + 2 + x; relu, products, a final backward) and "more ops" (a = -4, b = 2:
sums, products, a cube, relu of sums and differences, in-place style accumulation, squares, division by
a number and of a number). Its torch half uses ``torch.Tensor([v]).double()``, ``x.requires_grad = True``,
``y.backward()`` on a one-element tensor, ``y.data.item()`` and ``x.grad.item()``.

That file was run unchanged with ``import gpunn as torch`` (micrograd 0.1.0; both tests pass). micrograd
itself is not a dependency of this project, so this module re-states the same two checks in its own
words: the torch-side code under gpunn against the same code under PyTorch, values and gradients."""

from __future__ import annotations

import pytest

import gpunn


def _leaf(L, v):
    t = L.Tensor([v]).double()
    t.requires_grad = True  # attribute assignment, as micrograd's test does
    return t


def _sanity(L):
    x = _leaf(L, -4.0)
    z = 2 * x + 2 + x
    q = z.relu() + z * x
    h = (z * z).relu()
    y = h + q + q * x
    y.backward()
    return y.data.item(), x.grad.item()


def _more_ops(L):
    a, b = _leaf(L, -4.0), _leaf(L, 2.0)
    c = a + b
    d = a * b + b**3
    c = c + c + 1
    c = c + 1 + c + (-a)
    d = d + d * 2 + (b + a).relu()
    d = d + 3 * d + (b - a).relu()
    e = c - d
    f = e**2
    g = f / 2.0
    g = g + 10.0 / f
    g.backward()
    return g.data.item(), a.grad.item(), b.grad.item()


@pytest.mark.parametrize("expr", [_sanity, _more_ops])
def test_engine_expression_matches_torch(expr):
    torch = pytest.importorskip("torch")
    with gpunn.backend("numpy"):
        got = expr(gpunn)
    expected = expr(torch)
    assert got == pytest.approx(expected, abs=1e-6, rel=0)


def test_known_values():
    """The numbers themselves (from the float64 expressions above), so the test can fail without torch."""
    with gpunn.backend("numpy"):
        y, xg = _sanity(gpunn)
        g, ag, bg = _more_ops(gpunn)
    assert (y, xg) == (-20.0, 46.0)
    assert g == pytest.approx(24.70408163265306, abs=1e-9)
    assert (ag, bg) == (pytest.approx(138.83381924198252, abs=1e-9), pytest.approx(645.5772594752186, abs=1e-9))
