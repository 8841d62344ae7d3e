"""Shared test helpers: relative error against a float64 reference, and PyTorch parity."""

from __future__ import annotations

import re

import numpy as np
import pytest

import gpunn

# float32 results are compared with a float64 reference at this relative error
TOL = {np.float32: 2e-5, np.float64: 1e-10}


def rel_err(out, ref) -> float:
    """||out - ref|| / ||ref||, computed in float64 (ref must not be all zeros)."""
    out = np.asarray(out.numpy() if isinstance(out, gpunn.Tensor) else out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert out.shape == ref.shape, f"shape {out.shape} != reference shape {ref.shape}"
    denom = np.linalg.norm(ref)
    assert denom > 0, "reference is all zeros: pick inputs that make the test able to fail"
    return float(np.linalg.norm(out - ref) / denom)


def assert_close(out, ref, dtype=np.float32, tol=None):
    tol = TOL[np.dtype(dtype).type] if tol is None else tol
    err = rel_err(out, ref)
    assert err < tol, f"relative error {err:.3e} >= {tol:.1e}"


def torch_or_skip():
    return pytest.importorskip("torch")


def torch_at_least(major: int, minor: int, what: str):
    """A skip mark for a comparison with behaviour PyTorch has from ``major.minor`` on. gpunn follows the pinned
    2.13; the GPU machine's image carries 2.11, whose reprs, ``bias=`` options and schedulers differ."""
    try:
        import torch
    except ImportError:
        return pytest.mark.skip(reason="PyTorch is not installed")
    have = tuple(int(p) for p in re.match(r"(\d+)\.(\d+)", torch.__version__).groups())
    return pytest.mark.skipif(
        have < (major, minor), reason=f"{what} as PyTorch {major}.{minor}; installed {torch.__version__}"
    )


def to_torch(a: np.ndarray, requires_grad: bool = False):
    torch = torch_or_skip()
    t = torch.from_numpy(np.array(a, copy=True))
    return t.requires_grad_(requires_grad) if requires_grad else t


def randn(rng, *shape, dtype=np.float32, low_abs=0.05):
    """Random normal values kept away from 0 (so relu/abs kinks are not hit exactly)."""
    x = rng.standard_normal(shape)
    x = np.where(np.abs(x) < low_abs, np.sign(x + 1e-12) * low_abs, x)
    return x.astype(dtype)


def parity(
    rng, fn, arrays, dtype, torch_fn=None, grad=True, tol=None, reference=np.float64, nonfinite_grads_may_differ=False
):
    """THE parity check against PyTorch: ``fn(L, *tensors)`` is run with ``L = gpunn`` on the arrays in
    ``dtype`` and with ``L = torch`` in ``reference`` (float64) on the same dtype-rounded values (``torch_fn`` when the
    torch spelling differs). Checks, for every output (a tensor or a tuple such as ``(values, indices)``):
    the dtype torch gives in ``dtype``, the shape, the values (relative error, exact for integers); then
    the gradient of every floating input after a backward with a random (not all-ones) upstream gradient.
    Integer arrays (indices, labels) are passed through without gradients. Where torch's gradient is not
    finite gpunn's must not be either (``nonfinite_grads_may_differ``: compare the finite ones only).
    Returns gpunn's output."""
    torch = torch_or_skip()
    tfn = torch_fn or fn
    arrays = [np.asarray(a) for a in arrays]
    is_float = [a.dtype.kind == "f" for a in arrays]
    arrays = [a.astype(dtype) if f else a for a, f in zip(arrays, is_float)]
    xs = [gpunn.tensor(a, requires_grad=grad and f) for a, f in zip(arrays, is_float)]
    ts = [to_torch(a.astype(reference) if f else a, requires_grad=grad and f) for a, f in zip(arrays, is_float)]
    out, ref = fn(gpunn, *xs), tfn(torch, *ts)
    with torch.no_grad():
        ref_in_dtype = tfn(torch, *[to_torch(a) for a in arrays])
    outs, refs = _as_tuple(out), _as_tuple(ref)
    refs_in_dtype = _as_tuple(ref_in_dtype)
    assert len(outs) == len(refs), f"{len(outs)} outputs, torch gives {len(refs)}"
    for k, (o, r, rd) in enumerate(zip(outs, refs, refs_in_dtype)):
        assert isinstance(o, gpunn.Tensor), f"output {k} is a {type(o).__name__}"
        assert o.dtype == np.dtype(str(rd.dtype).removeprefix("torch.")), (
            f"output {k}: dtype {o.dtype}, torch gives {rd.dtype}"
        )
        assert o.shape == tuple(r.shape), f"output {k}: shape {o.shape}, torch gives {tuple(r.shape)}"
        if o.dtype.kind == "f":
            if np.any(r.detach().numpy()):
                assert_close(o.detach(), r.detach().numpy(), dtype, tol)
            else:
                np.testing.assert_allclose(o.detach().numpy(), 0, atol=1e-6)
        else:
            np.testing.assert_array_equal(o.numpy(), r.numpy(), err_msg=f"output {k}")
    if not grad:
        return out
    diff = [(o, r) for o, r in zip(outs, refs) if o.dtype.kind == "f" and r.requires_grad]
    assert diff, "no differentiable output to compare"
    total, total_ref = None, None
    for o, r in diff:
        assert o.requires_grad and o.grad_fn is not None, "the output does not require grad"
        w = randn(rng, *o.shape, dtype=np.float64)
        term, term_ref = (o * gpunn.tensor(w.astype(o.dtype))).sum(), (r * torch.from_numpy(w.astype(reference))).sum()
        total = term if total is None else total + term
        total_ref = term_ref if total_ref is None else total_ref + term_ref
    total.backward()
    total_ref.backward()
    compared = 0
    for i, (x, t) in enumerate(zip(xs, ts)):
        if t.grad is None:
            continue
        g = np.zeros(x.shape) if x.grad is None else x.grad.numpy()
        assert x.grad is None or (x.grad.shape == x.shape and x.grad.dtype == x.dtype), f"input {i}"
        tg = t.grad.numpy()
        finite = np.isfinite(tg)
        if nonfinite_grads_may_differ:
            finite &= np.isfinite(g)
        else:
            np.testing.assert_array_equal(np.isfinite(g), finite, err_msg=f"input {i}: non-finite gradients differ")
        if np.any(tg[finite]):
            assert_close(g[finite], tg[finite], dtype, tol)
            compared += 1
        else:
            np.testing.assert_allclose(g[finite], 0, atol=1e-6, err_msg=f"input {i}")
    assert compared or not any(is_float), "no non-zero gradient was compared"
    return out


def _as_tuple(x) -> tuple:
    return tuple(x) if isinstance(x, tuple) else (x,)


def train_step(model, loss_fn, opt, x, y, step=None):
    """One training step: the captured ``step(x, y)`` when given, else the eager zero_grad, forward, backward
    and optimizer step; the loss."""
    if step is not None:
        return step(x, y)
    opt.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    return loss
