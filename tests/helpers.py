"""Shared test helpers: relative error against a float64 reference, and PyTorch parity."""

from __future__ import annotations

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


def to_torch(a: np.ndarray, requires_grad: bool = False):
    torch = torch_or_skip()
    t = torch.from_numpy(np.array(a, copy=True))
    return t.requires_grad_(requires_grad) if requires_grad else t


def randn(rng, *shape, dtype=np.float32, low_abs=0.05):
    """Random normal values kept away from 0 (so relu/abs kinks are not hit exactly)."""
    x = rng.standard_normal(shape)
    x = np.where(np.abs(x) < low_abs, np.sign(x + 1e-12) * low_abs, x)
    return x.astype(dtype)
