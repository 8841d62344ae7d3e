"""The CUDA kernels through the CuPy backend, against the NumPy reference (float64 unless said).

Tests marked ``gpu`` need CuPy and a CUDA device (skipped otherwise); run them on a GPU machine with
``PYTHONPATH=. pytest tests/kernels -m gpu``. Irregular shapes on purpose (1x1x1, 7x13x5, 9x7x41,
1823x781, 3 rows x 32000 classes): tiles and warps that do not divide the problem.

The NumPy references for im2col / col2im / max_pool2d are defined here and checked against PyTorch on
the CPU (not marked gpu), so the GPU comparisons rest on a verified oracle.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from gpunn.backend import kernel_table, reference
from tests.helpers import randn, torch_or_skip

gpu = pytest.mark.gpu
# tests/kernels/test_emulated.py runs this file with a CPU stand-in for CuPy (tests/kernels/emulator.py)
EMULATED = os.environ.get("GPUNN_KERNEL_EMULATOR") == "1"
needs_real_gpu = pytest.mark.skipif(EMULATED, reason="Numba needs a real GPU (the simulator test covers it)")
TOL = {np.float32: 1e-5, np.float64: 1e-12}
DTYPES = [np.float32, np.float64]


def close(out, ref, tol):
    """||out - ref|| / ||ref|| < tol (absolute when ref is all zeros); NaN never passes."""
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert out.shape == ref.shape, f"shape {out.shape} != {ref.shape}"
    assert not np.isnan(out).any() and not np.isnan(ref).any(), "NaN in a comparison"
    denom = np.linalg.norm(ref)
    err = np.linalg.norm(out - ref) / (denom if denom > 0 else 1.0)
    assert err < tol, f"relative error {err:.3e} >= {tol:.1e}"


@pytest.fixture(scope="module")
def cp():
    return pytest.importorskip("cupy")


@pytest.fixture(scope="module")
def be(cp):
    from gpunn.backend.cupy_backend import CupyBackend

    return CupyBackend()


def host(a):
    import cupy

    return cupy.asnumpy(a)


# ----------------------------------------------------------------------------------------------
# NumPy references for the convolution building blocks (validated against torch below)
# ----------------------------------------------------------------------------------------------
def out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def im2col_ref(x, k, s, p, d):
    """col (N*OH*OW, C*KH*KW), rows (n, oh, ow), columns (c, ki, kj)."""
    n, c, h, w = x.shape
    oh, ow = out_size(h, k, s, p, d), out_size(w, k, s, p, d)
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    cols = np.empty((n, oh, ow, c, k, k), dtype=x.dtype)
    for ki in range(k):
        for kj in range(k):
            win = xp[:, :, ki * d : ki * d + s * (oh - 1) + 1 : s, kj * d : kj * d + s * (ow - 1) + 1 : s]
            cols[..., ki, kj] = win.transpose(0, 2, 3, 1)
    return cols.reshape(n * oh * ow, c * k * k)


def col2im_ref(dcol, x_shape, k, s, p, d):
    """The adjoint of im2col_ref: overlapping taps summed."""
    n, c, h, w = x_shape
    oh, ow = out_size(h, k, s, p, d), out_size(w, k, s, p, d)
    cols = dcol.reshape(n, oh, ow, c, k, k)
    dxp = np.zeros((n, c, h + 2 * p, w + 2 * p), dtype=dcol.dtype)
    for ki in range(k):
        for kj in range(k):
            dxp[:, :, ki * d : ki * d + s * (oh - 1) + 1 : s, kj * d : kj * d + s * (ow - 1) + 1 : s] += cols[
                ..., ki, kj
            ].transpose(0, 3, 1, 2)
    return dxp[:, :, p : p + h, p : p + w]


def max_pool_ref(x, k, s, p, d=1):
    """(y, idx): window max (first on ties) and its flat h * W + w index within the plane."""
    n, c, h, w = x.shape
    oh, ow = out_size(h, k, s, p, d), out_size(w, k, s, p, d)
    y = np.empty((n, c, oh, ow), dtype=x.dtype)
    idx = np.empty((n, c, oh, ow), dtype=np.int64)
    for i in range(oh):
        for j in range(ow):
            hs = [i * s - p + ki * d for ki in range(k)]
            ws = [j * s - p + kj * d for kj in range(k)]
            cand = [(hh, ww) for hh in hs for ww in ws if 0 <= hh < h and 0 <= ww < w]
            vals = np.stack([x[:, :, hh, ww] for hh, ww in cand], axis=-1)  # (n, c, taps)
            best = np.argmax(vals, axis=-1)
            y[:, :, i, j] = np.take_along_axis(vals, best[..., None], -1)[..., 0]
            flat = np.array([hh * w + ww for hh, ww in cand])
            idx[:, :, i, j] = flat[best]
    return y, idx


def max_pool_bwd_ref(dy, idx, x_shape):
    n, c, h, w = x_shape
    dx = np.zeros((n * c, h * w), dtype=dy.dtype)
    planes = np.repeat(np.arange(n * c), dy.shape[2] * dy.shape[3])
    np.add.at(dx, (planes, idx.reshape(-1)), dy.reshape(-1))
    return dx.reshape(x_shape)


CONV_CASES = [  # (N, C, H, W, kernel, stride, padding, dilation)
    (1, 1, 1, 1, 1, 1, 0, 1),
    (2, 3, 7, 5, 3, 1, 1, 1),
    (2, 3, 9, 7, 3, 2, 1, 1),
    (1, 2, 8, 8, 2, 2, 0, 1),
    (2, 2, 11, 9, 3, 2, 1, 2),
]
POOL_CASES = [  # (N, C, H, W, kernel, stride, padding)
    (1, 1, 1, 1, 1, 1, 0),
    (2, 3, 8, 8, 2, 2, 0),
    (2, 3, 9, 7, 3, 2, 1),  # overlapping windows: the backward pass needs atomics
    (1, 2, 13, 11, 3, 1, 1),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_im2col_col2im_references_match_torch(case, rng):
    torch = torch_or_skip()
    n, c, h, w, k, s, p, d = case
    x = rng.standard_normal((n, c, h, w))
    unf = torch.nn.functional.unfold(torch.from_numpy(x), k, dilation=d, padding=p, stride=s).numpy()
    col = im2col_ref(x, k, s, p, d)
    np.testing.assert_allclose(col, unf.transpose(0, 2, 1).reshape(col.shape))
    dcol = rng.standard_normal(col.shape)
    folded = torch.nn.functional.fold(
        torch.from_numpy(dcol.reshape(n, -1, col.shape[1]).transpose(0, 2, 1).copy()),
        (h, w),
        k,
        dilation=d,
        padding=p,
        stride=s,
    )
    np.testing.assert_allclose(col2im_ref(dcol, x.shape, k, s, p, d), folded.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool_reference_matches_torch(case, rng):
    torch = torch_or_skip()
    n, c, h, w, k, s, p = case
    x = rng.standard_normal((n, c, h, w))
    tx = torch.from_numpy(x).requires_grad_(True)
    ty, tidx = torch.nn.functional.max_pool2d(tx, k, s, p, return_indices=True)
    y, idx = max_pool_ref(x, k, s, p)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(max_pool_bwd_ref(dy, idx, x.shape), tx.grad.numpy(), rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# loader
# ----------------------------------------------------------------------------------------------
@gpu
def test_every_module_compiles_once_per_device(be):
    from gpunn.backend import kernels as K

    for name in K.KERNEL_FILES:
        assert K.get_module(name) is K.get_module(name)
    assert K.get_function("optim", "step_increment_v1") is not None


# ----------------------------------------------------------------------------------------------
# linear_act
# ----------------------------------------------------------------------------------------------
LINEAR_SHAPES = [(1, 1, 1), (7, 13, 5), (9, 7, 41), (64, 64, 64), (65, 17, 130), (1823, 781, 67)]


def linear_inputs(rng, n, k, m, dtype):
    x = randn(rng, n, k, dtype=dtype)
    W = (randn(rng, m, k) / np.sqrt(k)).astype(dtype)
    b = randn(rng, m, dtype=dtype)
    return x, W, b


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", reference.ACTIVATIONS)
@pytest.mark.parametrize("shape", LINEAR_SHAPES)
def test_linear_act_forward(be, cp, rng, shape, act, dtype):
    x, W, b = linear_inputs(rng, *shape, dtype)
    y = be.linear_act(cp.asarray(x), cp.asarray(W), cp.asarray(b), act, 0.1)
    assert y.dtype == dtype and y.shape == (shape[0], shape[2])
    ref = reference.linear_act(np, x.astype(np.float64), W.astype(np.float64), b.astype(np.float64), act, 0.1)
    close(host(y), ref, TOL[dtype])


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", reference.ACTIVATIONS)
@pytest.mark.parametrize("shape", LINEAR_SHAPES)
def test_linear_act_backward(be, cp, rng, shape, act, dtype):
    n, k, m = shape
    x, W, b = linear_inputs(rng, n, k, m, dtype)
    y = reference.linear_act(np, x.astype(np.float64), W.astype(np.float64), b.astype(np.float64), act, 0.1)
    y = y.astype(dtype)  # both sides differentiate through the same saved output
    dy = randn(rng, n, m, dtype=dtype)
    got = be.linear_act_backward(cp.asarray(dy), cp.asarray(x), cp.asarray(W), cp.asarray(y), act, 0.1)
    want = reference.linear_act_backward(np, *(a.astype(np.float64) for a in (dy, x, W, y)), act, 0.1)
    for name, g, r in zip(("dx", "dW", "db"), got, want):
        assert g.dtype == dtype, name
        close(host(g), r, TOL[dtype])


# (N, K, M); the last two have a tiny output over a long K (a conv's weight gradient is the second: 16 x 9
# over K = 13000 rows), split over ~200 slices
SPLITK_SHAPES = [(200, 784, 200), (37, 300, 20), (5, 1000, 3), (70, 129, 65), (9, 13000, 16), (13000, 9, 16)]


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["none", "tanh", "leaky_relu"])
@pytest.mark.parametrize("shape", SPLITK_SHAPES)
def test_linear_act_v2_split_k(be, cp, rng, monkeypatch, shape, act, dtype):
    """linear_act v2 on an H200-sized device (132 SMs): small outputs split K over blockIdx.z, the slices
    are added in order with bias and activation; forward and both backward GEMMs against the reference."""
    from gpunn.backend import kernels as K

    monkeypatch.setattr(K, "sm_count", lambda: 132)
    n, k, m = shape
    launched = []
    entry = K.entry
    monkeypatch.setattr(K, "entry", lambda f, base, dt: launched.append(base) or entry(f, base, dt))
    x, W, b = linear_inputs(rng, n, k, m, dtype)
    with kernel_table.use_version("linear_act", 2):
        y = be.linear_act(cp.asarray(x), cp.asarray(W), cp.asarray(b), act, 0.1)
        ref = reference.linear_act(np, x.astype(np.float64), W.astype(np.float64), b.astype(np.float64), act, 0.1)
        close(host(y), ref, TOL[dtype])
        if k >= 128:  # K long enough to split (the forward of (13000, 9, 16) has 204 tiles and K = 9)
            assert "gemm_splitk_nt_v2" in launched and "splitk_reduce_v2" in launched
        y = ref.astype(dtype)
        dy = randn(rng, n, m, dtype=dtype)
        got = be.linear_act_backward(cp.asarray(dy), cp.asarray(x), cp.asarray(W), cp.asarray(y), act, 0.1)
    want = reference.linear_act_backward(np, *(a.astype(np.float64) for a in (dy, x, W, y)), act, 0.1)
    for name, g, r in zip(("dx", "dW", "db"), got, want):
        assert g.dtype == dtype, name
        close(host(g), r, TOL[dtype])
    if shape == (200, 784, 200):
        assert {"gemm_splitk_nn_v2", "gemm_splitk_tn_v2"} <= set(launched)
    if shape == (13000, 9, 16):
        assert "gemm_splitk_tn_v2" in launched  # dW: 16 x 9 over K = 13000


def test_split_k_plan():
    """How v2 splits K: whole 16-wide K steps, at least 64 per slice, ~2 blocks per SM, never with v1."""
    from gpunn.backend import kernels as K
    from gpunn.backend.cupy_backend import CupyBackend

    orig = K.sm_count
    K.sm_count = lambda: 132
    try:
        with kernel_table.use_version("linear_act", 1):
            assert CupyBackend._k_splits(16, 784, 40000) == (1, 784)  # v1 selected: never split
        with kernel_table.use_version("linear_act", 2):
            # 200x784x200: 16 tiles; min(ceil(2 * 132 / 16), 784 // 64, 16) = 12 slices wanted, 784 / 12 ->
            # 66 -> 80 (whole K steps of 16), so ceil(784 / 80) = 10 slices, the last 64 long
            assert CupyBackend._k_splits(16, 784, 40000) == (10, 80)
            assert CupyBackend._k_splits(200, 4096, 10**6) == (1, 4096)  # enough tiles already
            assert CupyBackend._k_splits(4, 100, 10**4) == (1, 100)  # too little K to split
            # a conv's weight gradient: 16 x 9 outputs (one tile) over K = 200 x 28 x 28; 264 slices wanted,
            # 156800 / 264 -> 594 -> 608, so 258 slices (16 would leave each block 9,800 long)
            assert CupyBackend._k_splits(1, 156800, 144) == (258, 608)
            assert CupyBackend._k_splits(1, 156800, 2**20) == (16, 9808)  # a large output: 16 at most
    finally:
        K.sm_count = orig


@gpu
@pytest.mark.parametrize("act", ["none", "relu"])
def test_linear_act_backward_need_flags(be, cp, rng, act):
    x, W, b = linear_inputs(rng, 300, 19, 37, np.float32)
    y = reference.linear_act(np, x, W, b, act)
    dy = randn(rng, 300, 37)
    want = reference.linear_act_backward(np, *(a.astype(np.float64) for a in (dy, x, W, y)), act)
    for flags in [(True, False, False), (False, True, False), (False, False, True), (False, True, True)]:
        got = be.linear_act_backward(cp.asarray(dy), cp.asarray(x), cp.asarray(W), cp.asarray(y), act, 0.01, *flags)
        for need, g, r in zip(flags, got, want):
            if need:
                close(host(g), r, 1e-5)
            else:
                assert g is None


@gpu
def test_linear_act_noncontiguous_batched_and_no_bias(be, cp, rng):
    big = randn(rng, 3, 5, 26)
    x = big[..., ::2]  # (3, 5, 13), non-contiguous
    Wt = randn(rng, 13, 6)
    W = Wt.T  # (6, 13), Fortran order
    y = be.linear_act(cp.asarray(big)[..., ::2], cp.asarray(Wt).T, None, "tanh")
    assert y.shape == (3, 5, 6)
    close(host(y), reference.linear_act(np, x.astype(np.float64), W.astype(np.float64), None, "tanh"), 1e-5)
    dy = randn(rng, 3, 5, 6)
    dx, dW, db = be.linear_act_backward(cp.asarray(dy), cp.asarray(big)[..., ::2], cp.asarray(Wt).T, y, "tanh")
    z = host(y).astype(np.float64).reshape(15, 6)
    want = reference.linear_act_backward(
        np, dy.reshape(15, 6).astype(np.float64), x.reshape(15, 13).astype(np.float64), W.astype(np.float64), z, "tanh"
    )
    close(host(dx).reshape(15, 13), want[0], 1e-5)
    close(host(dW), want[1], 1e-5)
    close(host(db), want[2], 1e-5)


@gpu
@pytest.mark.parametrize("act", reference.ACTIVATIONS)
def test_linear_act_nan_propagates(be, cp, rng, act):
    x, W, b = linear_inputs(rng, 9, 7, 41, np.float32)
    x[2, 3] = np.nan
    y = host(be.linear_act(cp.asarray(x), cp.asarray(W), cp.asarray(b), act))
    assert np.isnan(y[2]).all()
    assert np.isfinite(np.delete(y, 2, axis=0)).all()


@gpu
def test_linear_act_other_dtypes_fall_back(be, cp, rng):
    x, W, b = linear_inputs(rng, 7, 13, 5, np.float16)
    y = be.linear_act(cp.asarray(x), cp.asarray(W), cp.asarray(b), "relu")
    assert y.dtype == np.float16 and y.shape == (7, 5)


# ----------------------------------------------------------------------------------------------
# softmax_cross_entropy
# ----------------------------------------------------------------------------------------------
SCE_SHAPES = [(1, 1), (7, 13), (9, 41), (5, 1024), (5, 1025), (3, 32000), (1823, 781)]


def sce_inputs(rng, n, c, dtype, ignore_index=-100):
    logits = (rng.standard_normal((n, c)) * 3).astype(dtype)
    target = rng.integers(0, c, n)
    if n > 2:
        target[1] = ignore_index
    weight = rng.uniform(0.5, 2.0, c).astype(dtype)
    return logits, target, weight


@gpu
@pytest.mark.parametrize("version", kernel_table.VERSIONS["softmax_cross_entropy"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", reference.REDUCTIONS)
@pytest.mark.parametrize("shape", SCE_SHAPES)
def test_softmax_cross_entropy(be, cp, rng, shape, reduction, weighted, smoothing, dtype, version):
    logits, target, weight = sce_inputs(rng, *shape, dtype)
    w = weight if weighted else None
    with kernel_table.use_version("softmax_cross_entropy", version):
        loss, dlogits = be.softmax_cross_entropy(
            cp.asarray(logits), cp.asarray(target), None if w is None else cp.asarray(w), reduction, -100, smoothing
        )
    ref_loss, ref_d = reference.softmax_cross_entropy(
        np, logits.astype(np.float64), target, None if w is None else w.astype(np.float64), reduction, -100, smoothing
    )
    assert loss.dtype == dtype and dlogits.dtype == dtype
    assert loss.shape == np.shape(ref_loss)
    close(host(loss), ref_loss, TOL[dtype])
    close(host(dlogits), ref_d, TOL[dtype])


@gpu
@pytest.mark.parametrize("entry", ["fused", "fwd"])
@pytest.mark.parametrize("bad", [13, -5, 10**12])
def test_out_of_range_label_raises_at_the_next_read_and_the_context_survives(be, cp, rng, bad, entry):
    """No sync at the call: the kernel sets a device flag that the next host read (the loss) brings back in
    the same transfer and raises on, naming the label and the class range; the flag is then reset."""
    logits, target, _ = sce_inputs(rng, 7, 13, np.float32)
    target[4] = bad
    call = be.softmax_cross_entropy if entry == "fused" else be.softmax_cross_entropy_fwd
    loss, _ = call(cp.asarray(logits), cp.asarray(target))
    with pytest.raises(ValueError, match=rf"target label {bad} is out of range for 13 classes \(valid: 0..12"):
        be.to_numpy(loss)
    target[4] = 0
    loss, _ = call(cp.asarray(logits), cp.asarray(target))
    ref, _ = reference.softmax_cross_entropy(np, logits.astype(np.float64), target)
    close(be.to_numpy(loss), ref, 1e-5)  # no stale flag
    assert int((cp.arange(5) + 1).sum()) == 15  # the CUDA context is still usable
    target[4] = bad
    call(cp.asarray(logits), cp.asarray(target))
    with pytest.raises(ValueError, match=str(bad)):
        be.synchronize()  # a sync reads the flag too
    be.synchronize()


@gpu
@pytest.mark.parametrize("shape", [(7, 13), (9, 41), (5, 1025), (3, 32000), (6, 4099)])
def test_softmax_cross_entropy_v2_adds_in_v1_order(be, cp, rng, shape):
    """v2 only issues pass 1's loads earlier: the same additions in the same order as v1. Bit-for-bit on the
    emulator (no FMA contraction); on a GPU nvcc may contract the unrolled copies differently: 1e-6."""
    logits, target, weight = sce_inputs(rng, *shape, np.float32)
    out = {}
    for v in (1, 2):
        with kernel_table.use_version("softmax_cross_entropy", v):
            loss, d = be.softmax_cross_entropy(
                cp.asarray(logits), cp.asarray(target), cp.asarray(weight), "none", -100, 0.1
            )
        out[v] = host(loss), host(d)
    for a, b in zip(out[1], out[2]):
        if EMULATED:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@gpu
def test_bad_label_message_names_the_launch_that_flagged(be, cp, rng):
    a, ta, _ = sce_inputs(rng, 5, 7, np.float32)
    b, tb, _ = sce_inputs(rng, 5, 9, np.float32, ignore_index=-1)
    tb[0] = 9
    be.softmax_cross_entropy(cp.asarray(a), cp.asarray(ta))
    loss, _ = be.softmax_cross_entropy(cp.asarray(b), cp.asarray(tb), ignore_index=-1)
    with pytest.raises(ValueError, match=r"label 9 is out of range for 9 classes \(valid: 0..8, or ignore_index=-1\)"):
        be.to_numpy(loss)


@gpu
@pytest.mark.parametrize("version", kernel_table.VERSIONS["softmax_cross_entropy"])
@pytest.mark.parametrize("reduction", reference.REDUCTIONS)
@pytest.mark.parametrize("shape", [(9, 41), (5, 1025), (3, 5000)])
def test_softmax_cross_entropy_fwd_folds_the_upstream_gradient(be, cp, rng, shape, reduction, version):
    """backward(g) of the split forward/backward launches = g * dlogits of the reference, with g a scalar
    (or one per row for 'none'); every kernel version."""
    logits, target, weight = sce_inputs(rng, *shape, np.float64)
    g = rng.standard_normal(shape[0]) if reduction == "none" else np.float64(rng.standard_normal())
    with kernel_table.use_version("softmax_cross_entropy", version):
        loss, backward = be.softmax_cross_entropy_fwd(
            cp.asarray(logits), cp.asarray(target), cp.asarray(weight), reduction, -100, 0.1
        )
        d = backward(cp.asarray(g))
    ref_loss, ref_d = reference.softmax_cross_entropy(np, logits, target, weight, reduction, -100, 0.1)
    close(be.to_numpy(loss), ref_loss, 1e-12)
    close(host(d), ref_d * (g[:, None] if reduction == "none" else g), 1e-12)
    with pytest.raises(ValueError, match="upstream gradient has 2 elements"):
        backward(cp.asarray(np.ones(2)))


@gpu
def test_unchecked_bad_label_is_ignored(be, cp, rng):
    logits, target, _ = sce_inputs(rng, 7, 13, np.float32)
    target[4] = 99
    loss, d = be.softmax_cross_entropy(cp.asarray(logits), cp.asarray(target), reduction="none", check_labels=False)
    assert float(loss[4]) == 0.0 and not host(d)[4].any()


@gpu
def test_custom_ignore_index_and_int32_targets(be, cp, rng):
    logits, target, weight = sce_inputs(rng, 50, 9, np.float32, ignore_index=3)
    got = be.softmax_cross_entropy(
        cp.asarray(logits), cp.asarray(target.astype(np.int32)), cp.asarray(weight), "mean", 3, 0.05
    )
    want = reference.softmax_cross_entropy(
        np, logits.astype(np.float64), target, weight.astype(np.float64), "mean", 3, 0.05
    )
    close(host(got[0]), want[0], 1e-5)
    close(host(got[1]), want[1], 1e-5)


@gpu
def test_all_rows_ignored_mean_is_nan(be, cp, rng):
    logits = rng.standard_normal((4, 6)).astype(np.float32)
    target = np.full(4, -100)
    loss, d = be.softmax_cross_entropy(cp.asarray(logits), cp.asarray(target))
    assert np.isnan(float(loss)) and not host(d).any()  # 0 / 0, and PyTorch's zero gradient
    loss, d = be.softmax_cross_entropy(cp.asarray(logits), cp.asarray(target), reduction="sum")
    assert float(loss) == 0.0 and not host(d).any()


@gpu
@pytest.mark.parametrize("c", [13, 5000])  # warp-per-row and block-per-row kernels
def test_softmax_cross_entropy_nan_propagates(be, cp, rng, c):
    logits, target, _ = sce_inputs(rng, 6, c, np.float32)
    target[1] = 0
    logits[2, c // 2] = np.nan
    loss, d = be.softmax_cross_entropy(cp.asarray(logits), cp.asarray(target), reduction="none")
    loss, d = host(loss), host(d)
    assert np.isnan(loss[2]) and np.isnan(d[2]).all()
    keep = [0, 1, 3, 4, 5]
    ref_loss, ref_d = reference.softmax_cross_entropy(
        np, logits[keep].astype(np.float64), target[keep], reduction="none"
    )
    close(loss[keep], ref_loss, 1e-5)
    close(d[keep], ref_d, 1e-5)


@gpu
def test_softmax_cross_entropy_noncontiguous(be, cp, rng):
    big = (rng.standard_normal((11, 40)) * 2).astype(np.float32)
    target = rng.integers(0, 20, 11)
    got = be.softmax_cross_entropy(cp.asarray(big)[:, ::2], cp.asarray(target)[::1], label_smoothing=0.2)
    want = reference.softmax_cross_entropy(np, big[:, ::2].astype(np.float64), target, label_smoothing=0.2)
    close(host(got[0]), want[0], 1e-5)
    close(host(got[1]), want[1], 1e-5)


# ----------------------------------------------------------------------------------------------
# optimizers: the same dtype on both sides (the kernel is built with --fmad=false to round like NumPy)
# ----------------------------------------------------------------------------------------------
OPT_SIZES = [1, 1000, 100_003]
SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-2),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    dict(lr=0.05, momentum=0.5, maximize=True),
]
ADAM_CASES = [
    dict(lr=1e-3),
    dict(lr=1e-2, weight_decay=1e-2),
    dict(lr=1e-2, weight_decay=1e-2, decoupled_weight_decay=True),
    dict(lr=1e-3, amsgrad=True, maximize=True),
    dict(lr=3e-3, beta1=0.8, beta2=0.99, eps=1e-6, amsgrad=True, weight_decay=0.1, decoupled_weight_decay=True),
]


@gpu
@pytest.mark.parametrize("version", kernel_table.VERSIONS["sgd_step"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hyper", SGD_CASES)
@pytest.mark.parametrize("size", OPT_SIZES)
def test_sgd_step(be, cp, rng, size, hyper, dtype, version):
    p = rng.standard_normal(size).astype(dtype)
    buf = np.zeros(size, dtype)
    gp, gbuf = cp.asarray(p), cp.asarray(buf)
    for step in range(3):
        g = rng.standard_normal(size).astype(dtype)
        with kernel_table.use_version("sgd_step", version):
            be.sgd_step(gp, cp.asarray(g), gbuf, first_step=step == 0, **hyper)
        reference.sgd_step(np, p, g, buf, first_step=step == 0, **hyper)
    np.testing.assert_allclose(host(gp), p, rtol=1e-6, atol=1e-7)
    if hyper.get("momentum"):
        np.testing.assert_allclose(host(gbuf), buf, rtol=1e-6, atol=1e-7)


@gpu
@pytest.mark.parametrize("version", kernel_table.VERSIONS["adam_step"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device_step", [False, True])
@pytest.mark.parametrize("hyper", ADAM_CASES)
@pytest.mark.parametrize("size", OPT_SIZES)
def test_adam_step(be, cp, rng, size, hyper, device_step, dtype, version):
    p = rng.standard_normal(size).astype(dtype)
    m, v, vmax = (np.zeros(size, dtype) for _ in range(3))
    gp, gm, gv, gvmax = (cp.asarray(a) for a in (p, m, v, vmax))
    step_dev = cp.zeros((1,), dtype=cp.int64)
    for step in range(1, 5):
        g = rng.standard_normal(size).astype(dtype)
        if device_step:
            be.step_increment(step_dev)
        with kernel_table.use_version("adam_step", version):
            be.adam_step(gp, cp.asarray(g), gm, gv, gvmax, step=step_dev if device_step else step, **hyper)
        reference.adam_step(np, p, g, m, v, vmax, step=step, **hyper)
    if device_step:
        assert int(step_dev[0]) == 4
    for got, want in ((gp, p), (gm, m), (gv, v), (gvmax, vmax)):
        np.testing.assert_allclose(host(got), want, rtol=1e-6, atol=1e-7)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("offsets", [(0, 0), (1, 1), (3, 3), (2, 2), (1, 0), (0, 3)])
@pytest.mark.parametrize("size", [1, 3, 37, 1001])
def test_vectorized_optimizers_at_unaligned_offsets(be, cp, rng, size, offsets, dtype):
    """v2 over views at element offsets into flat buffers: a scalar head up to the 16-byte boundary, vectors,
    a scalar tail; views that disagree on alignment take the scalar path. Same result as v1 and the reference."""
    po, go = offsets
    results = {}
    for version in kernel_table.VERSIONS["adam_step"]:
        r = np.random.default_rng(7)
        flat = [cp.asarray(r.standard_normal(size + 4).astype(dtype)) for _ in range(4)]
        flat[2][:] = 0
        flat[3][:] = 0
        before = host(flat[0]).copy()
        p, m, v = (a[po : po + size] for a in (flat[0], flat[2], flat[3]))
        g = flat[1][go : go + size]
        sbuf = cp.zeros(size + 4, dtype=dtype)[po : po + size]
        with kernel_table.use_version("adam_step", version), kernel_table.use_version("sgd_step", version):
            for step in (1, 2):
                be.adam_step(p, g, m, v, None, step=step, lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)
                be.sgd_step(p, g, sbuf, lr=0.1, momentum=0.9, first_step=step == 1)
        results[version] = [host(a).copy() for a in (p, m, v, sbuf)]
        after = host(flat[0])
        outside = np.r_[0:po, po + size : size + 4]
        np.testing.assert_array_equal(after[outside], before[outside])  # no write past the view
    # the reference on host copies of the same inputs
    r = np.random.default_rng(7)
    flat = [r.standard_normal(size + 4).astype(dtype) for _ in range(4)]
    p, g = flat[0][po : po + size].copy(), flat[1][go : go + size].copy()
    m, v, sbuf = (np.zeros(size, dtype) for _ in range(3))
    for step in (1, 2):
        reference.adam_step(np, p, g, m, v, None, step=step, lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)
        reference.sgd_step(np, p, g, sbuf, lr=0.1, momentum=0.9, first_step=step == 1)
    for version, got in results.items():
        for a, want in zip(got, (p, m, v, sbuf)):
            np.testing.assert_allclose(a, want, rtol=1e-6, atol=1e-7, err_msg=f"v{version}")


ADAPTIVE_CASES = [
    ("adagrad_step", 1, dict(lr=0.1)),
    ("adagrad_step", 1, dict(lr=0.1, lr_decay=0.05, weight_decay=0.1, eps=1e-6, maximize=True)),
    ("adadelta_step", 2, dict()),
    ("adadelta_step", 2, dict(lr=0.5, rho=0.8, eps=1e-4, weight_decay=0.1, maximize=True)),
    ("rmsprop_step", 3, dict()),
    ("rmsprop_step", 3, dict(lr=0.01, momentum=0.9, weight_decay=0.05)),
    ("rmsprop_step", 3, dict(lr=0.01, alpha=0.9, centered=True, eps=1e-5)),
    ("rmsprop_step", 3, dict(lr=0.005, momentum=0.5, centered=True, weight_decay=0.1, maximize=True)),
]


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ADAPTIVE_CASES, ids=lambda c: f"{c[0]}-{sorted(c[2])}")
@pytest.mark.parametrize("size", [1, 2873, 100_003])
def test_adaptive_optimizer_steps(be, cp, rng, size, case, dtype, monkeypatch):
    """Adagrad / Adadelta / RMSprop kernels, 4 steps, against the reference on host copies (state included)."""
    name, n_state, hyper = case
    ref_step = getattr(reference, name)

    def no_fallback(*args, **kwargs):
        raise AssertionError(f"{name} fell back to the reference instead of launching its kernel")

    p = rng.standard_normal(size).astype(dtype)
    state = [np.zeros(size, dtype) for _ in range(n_state)]
    if name == "adagrad_step":
        state[0][:] = 0.1  # initial_accumulator_value
    gp, gstate = cp.asarray(p), [cp.asarray(a) for a in state]
    for step in range(1, 5):
        g = rng.standard_normal(size).astype(dtype)
        extra = {"step": step} if name == "adagrad_step" else {}
        with monkeypatch.context() as m:
            m.setattr(reference, name, no_fallback)
            getattr(be, name)(gp, cp.asarray(g), *gstate, **extra, **hyper)
        ref_step(np, p, g, *state, **extra, **hyper)
    np.testing.assert_allclose(host(gp), p, rtol=1e-6, atol=1e-7)
    for got, want in zip(gstate, state):
        np.testing.assert_allclose(host(got), want, rtol=1e-6, atol=1e-7)
    assert np.linalg.norm(p) > 0


@gpu
def test_optimizer_noncontiguous_param_falls_back(be, cp, rng):
    p = rng.standard_normal(20).astype(np.float32)
    g = rng.standard_normal(10).astype(np.float32)
    gp = cp.asarray(p)
    be.sgd_step(gp[::2], cp.asarray(g), None, lr=0.1)
    p[::2] -= np.float32(0.1) * g
    np.testing.assert_allclose(host(gp), p, rtol=1e-6)
    # the adaptive steps too: a strided param takes the reference path, with the same result
    s, s_ref = cp.zeros(10, dtype=cp.float32), np.zeros(10, np.float32)
    be.adagrad_step(gp[::2], cp.asarray(g), s, step=1, lr=0.1)
    reference.adagrad_step(np, p[::2], g, s_ref, step=1, lr=0.1)
    np.testing.assert_allclose(host(gp), p, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# convolution building blocks
# ----------------------------------------------------------------------------------------------
@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_im2col_col2im(be, cp, rng, case, dtype):
    n, c, h, w, k, s, p, d = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    col = be.conv2d_im2col(cp.asarray(x), k, s, p, d)
    np.testing.assert_array_equal(host(col), im2col_ref(x, k, s, p, d))
    dcol = rng.standard_normal(col.shape).astype(dtype)
    dx = be.conv2d_col2im(cp.asarray(dcol), x.shape, k, s, p, d)
    close(host(dx), col2im_ref(dcol.astype(np.float64), x.shape, k, s, p, d), TOL[dtype])


@gpu
def test_conv2d_as_im2col_plus_linear(be, cp, rng):
    n, c, h, w, k, s, p, d = 2, 3, 9, 7, 3, 2, 1, 1
    oc = 5
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    weight = rng.standard_normal((oc, c, k, k)).astype(np.float32)
    bias = rng.standard_normal(oc).astype(np.float32)
    col = be.conv2d_im2col(cp.asarray(x), k, s, p, d)
    rows = be.linear_act(col, cp.asarray(weight).reshape(oc, -1), cp.asarray(bias), "relu")
    oh, ow = out_size(h, k, s, p, d), out_size(w, k, s, p, d)
    out = host(rows.reshape(n, oh, ow, oc).transpose(0, 3, 1, 2))
    col64 = im2col_ref(x.astype(np.float64), k, s, p, d)
    ref = np.maximum(col64 @ weight.reshape(oc, -1).T.astype(np.float64) + bias, 0)
    close(out, ref.reshape(n, oh, ow, oc).transpose(0, 3, 1, 2), 1e-5)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool2d(be, cp, rng, case, dtype):
    n, c, h, w, k, s, p = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    y, idx = be.max_pool2d_fwd(cp.asarray(x), k, s, p)
    y_ref, idx_ref = max_pool_ref(x, k, s, p)
    np.testing.assert_array_equal(host(y), y_ref)
    np.testing.assert_array_equal(host(idx), idx_ref)
    dy = rng.standard_normal(y_ref.shape).astype(dtype)
    dx = be.max_pool2d_bwd(cp.asarray(dy), idx, x.shape)
    close(host(dx), max_pool_bwd_ref(dy.astype(np.float64), idx_ref, x.shape), TOL[dtype])


@gpu
def test_max_pool2d_nan_propagates(be, cp, rng):
    x = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
    x[0, 0, 1, 2] = np.nan
    y, idx = be.max_pool2d_fwd(cp.asarray(x), 2, 2)
    y, idx = host(y), host(idx)
    assert np.isnan(y[0, 0, 0, 1]) and idx[0, 0, 0, 1] == 1 * 4 + 2
    assert np.isfinite(np.delete(y.reshape(-1), 1)).all()


NAN_POOL_CASES = [  # (N, C, H, W, kernel, stride, padding)
    (1, 1, 4, 4, 2, 2, 0),
    (2, 3, 9, 7, 3, 2, 1),
    (1, 2, 7, 6, 3, 1, 1),  # overlapping windows: several windows route gradient to one NaN
]


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", NAN_POOL_CASES)
def test_max_pool2d_with_nans_matches_torch(be, cp, rng, case, dtype):
    """NaNs (several per window), +-inf and ties: PyTorch's values, indices (the LAST NaN of a window in
    row-major order wins) and gradient routing, checked against torch.nn.functional.max_pool2d."""
    torch = torch_or_skip()
    n, c, h, w, k, s, p = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    flat = x.reshape(-1)
    hit = rng.choice(flat.size, size=max(3, flat.size // 5), replace=False)
    flat[hit[: len(hit) // 2]] = np.nan
    flat[hit[len(hit) // 2 :][:2]] = [np.inf, -np.inf]
    x[0, 0, 0, :2] = np.nan  # two NaNs side by side in the first window
    x[-1, -1, -1, -1] = x[-1, -1, -1, -2] = 7.0  # a tie
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    ty, tidx = torch.nn.functional.max_pool2d(tx, k, s, p, return_indices=True)
    dy = rng.standard_normal(tuple(ty.shape)).astype(dtype)
    ty.backward(torch.from_numpy(dy))

    y, idx = be.max_pool2d_fwd(cp.asarray(x), k, s, p)
    np.testing.assert_array_equal(host(y), ty.detach().numpy())  # NaN == NaN here
    np.testing.assert_array_equal(host(idx), tidx.numpy())
    assert np.isnan(host(y)).any()
    dx = host(be.max_pool2d_bwd(cp.asarray(dy), idx, x.shape))
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-6 if dtype == np.float32 else 1e-12, atol=0)


# ----------------------------------------------------------------------------------------------
# dropout.cu: the Philox stream of gpunn.backend.numba_kernels.dropout_mask_reference
# ----------------------------------------------------------------------------------------------
@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,offset,seed", [((37, 29), 7, 11), ((1,), 0, 0), ((9, 7, 41), 2**40 + 3, 2**63 + 5)])
def test_dropout_kernel_matches_the_philox_reference(cp, be, rng, dtype, shape, offset, seed):
    from gpunn.backend import numba_kernels as nk

    p = 0.3
    x = rng.standard_normal(shape).astype(dtype)
    x.flat[0] = np.nan  # x * 0 keeps NaN where dropped, as x * mask * scale does
    out = cp.empty(shape, dtype=dtype)
    be.dropout_into(cp.asarray(x), out, p, seed, offset)
    keep = nk.dropout_mask_reference(x.size, p, seed, offset).reshape(shape)
    assert 0 < keep.sum() < keep.size or x.size == 1
    np.testing.assert_array_equal(host(out), np.where(keep, x * dtype(1 / (1 - p)), x * dtype(0)))
    # the device-resident (seed, base offset) state gives the same draws, the offset then relative
    rel = min(offset, 2)
    state = cp.asarray(np.array([seed, offset - rel], dtype=np.uint64))
    out2 = cp.empty(shape, dtype=dtype)
    be.dropout_into(cp.asarray(x), out2, p, 12345, rel, state=state)
    np.testing.assert_array_equal(host(out2), host(out))
    be.dropout_advance(state, 10)
    assert host(state).tolist() == [seed, offset - rel + 10]


@gpu
def test_dropout_kernel_offsets_compose_keep_rate_and_edges(cp, be, rng):
    from gpunn.backend import numba_kernels as nk

    x = rng.standard_normal(90).astype(np.float32)
    whole, a, b = cp.empty((90,), np.float32), cp.empty((13,), np.float32), cp.empty((77,), np.float32)
    be.dropout_into(cp.asarray(x), whole, 0.4, 77, 11)
    be.dropout_into(cp.asarray(x[:13]), a, 0.4, 77, 11)
    be.dropout_into(cp.asarray(x[13:]), b, 0.4, 77, 24)
    np.testing.assert_array_equal(host(whole), np.concatenate([host(a), host(b)]))
    n, p = 4000, 0.25
    out = cp.empty((n,), np.float32)
    be.dropout_into(cp.ones((n,), np.float32), out, p, 31337, 0)
    rate = float((host(out) != 0).mean())
    assert abs(rate - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n), rate
    assert rate == nk.dropout_mask_reference(n, p, 31337).mean()
    y = cp.empty((5, 7), np.float32)
    xs = cp.asarray(rng.standard_normal((5, 7)).astype(np.float32))
    be.dropout_into(xs, y, 0.0, 1, 0)
    np.testing.assert_array_equal(host(y), host(xs))
    be.dropout_into(xs, y, 1.0, 1, 0)
    assert not host(y).any()
    empty = cp.empty((0, 3), np.float32)
    be.dropout_into(empty, cp.empty((0, 3), np.float32), 0.5, 1, 0)  # nothing to do, no error
    with pytest.raises(ValueError, match="must match"):
        be.dropout_into(xs, cp.empty((7, 5), np.float32), 0.5, 1, 0)


@gpu
def test_eager_dropout_draws_consecutive_offsets(cp, be, rng):
    from gpunn.backend import numba_kernels as nk

    be.seed(5)
    x = rng.standard_normal((6, 11)).astype(np.float32)
    y1, back1 = be.dropout(cp.asarray(x), 0.5)
    y2, _ = be.dropout(cp.asarray(x), 0.5)
    k1 = nk.dropout_mask_reference(x.size, 0.5, 5, 0).reshape(x.shape)
    k2 = nk.dropout_mask_reference(x.size, 0.5, 5, x.size).reshape(x.shape)
    np.testing.assert_array_equal(host(y1), np.where(k1, x * np.float32(2), 0))
    np.testing.assert_array_equal(host(y2), np.where(k2, x * np.float32(2), 0))
    g = rng.standard_normal(x.shape).astype(np.float32)
    np.testing.assert_array_equal(host(back1(cp.asarray(g))), np.where(k1, g * np.float32(2), 0))


@gpu
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_cross_entropy_loss_ring(cp, be, rng, reduction):
    """The reduced loss written to a device ring at a device slot (a captured step's), as the eager loss."""
    logits = cp.asarray(rng.standard_normal((13, 6)).astype(np.float32))
    target = cp.asarray(rng.integers(0, 6, 13))
    eager, _ = be.softmax_cross_entropy_fwd(logits, target, reduction=reduction)
    ring, slot = cp.zeros((3,), dtype=np.float32), cp.asarray(np.array([4], dtype=np.int64))
    assert be.softmax_cross_entropy_fwd(logits, target, reduction=reduction, loss_ring=(ring, slot))[0] is None
    assert host(slot).tolist() == [5]
    assert host(ring)[1] == host(eager) and host(ring)[0] == 0 == host(ring)[2]
    ref = reference.softmax_cross_entropy(np, host(logits).astype(np.float64), host(target), reduction=reduction)[0]
    close(host(eager), ref, 1e-6)


# ----------------------------------------------------------------------------------------------
# Numba kernels on the device
# ----------------------------------------------------------------------------------------------
@gpu
@needs_real_gpu
def test_numba_accuracy_count_on_device(cp, rng):
    pytest.importorskip("numba")
    from gpunn.backend import numba_kernels as nk

    logits = rng.standard_normal((1000, 10)).astype(np.float32)
    target = rng.integers(0, 10, 1000)
    try:
        count = nk.accuracy_count(cp.asarray(logits), cp.asarray(target))
    except nk.NumbaCudaUnavailable as exc:  # e.g. a numba-cuda that does not import with the NumPy installed
        pytest.skip(f"Numba's CUDA target does not work here: {exc}")
    assert int(count[0]) == int((logits.argmax(1) == target).sum())


@gpu
def test_accuracy_count_falls_back_to_cupy_once_when_numba_cuda_fails(cp, rng, monkeypatch):
    """A Numba CUDA target that cannot compile (numba-cuda 0.2x with NumPy 2.5 raises AttributeError on
    np.row_stack at its first compile) gives the same count through CuPy, and says so once."""
    import warnings

    from gpunn.backend import backend_for, cupy_backend
    from gpunn.backend import numba_kernels as nk

    def broken():
        raise AttributeError("module 'numpy' has no attribute 'row_stack'")

    monkeypatch.setattr(nk, "_kernels", None)
    monkeypatch.setattr(nk, "_launched", set())
    monkeypatch.setattr(nk, "_build", broken)
    monkeypatch.setattr(cupy_backend, "_NUMBA_CUDA_FAILED", False)
    be = backend_for("cupy")
    logits = rng.standard_normal((1000, 10)).astype(np.float32)
    target = rng.integers(0, 10, 1000)
    expected = int((logits.argmax(1) == target).sum())
    with pytest.warns(UserWarning, match="row_stack.*counted with CuPy"):
        assert int(be.accuracy_count(cp.asarray(logits), cp.asarray(target))) == expected
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        assert int(be.accuracy_count(cp.asarray(logits[:500]), cp.asarray(target[:500]))) == int(
            (logits[:500].argmax(1) == target[:500]).sum()
        )
    # a kernel that ran once and then fails is a real error, not a fallback
    monkeypatch.setattr(nk, "_launched", {"accuracy_count"})
    with pytest.raises(AttributeError, match="row_stack"):
        nk.accuracy_count(cp.asarray(logits), cp.asarray(target))


@gpu
def test_cupy_random_state_resumes_dropout_and_the_generator_exactly(cp):
    """A checkpoint's random state on the cupy backend: dropout's counter-based stream and CuPy's cuRAND draws
    continue after a restore (even after another seed) exactly as in the run that saved it. cuRAND cannot
    report its position, so taking the state moves the generator to a fresh stream of its own (recorded)."""
    import json

    from gpunn.backend import backend_for

    be = backend_for("cupy")
    x = cp.ones((300, 7), dtype=cp.float32)
    be.seed(5)
    assert be.get_rng_state() == {"seed": 5, "dropout_offset": 0, "generator_seed": None}  # nothing drawn yet
    be.dropout(x, 0.3)  # advances the dropout stream
    be.randn((4,))  # draws from cuRAND (a model's init does)
    state = json.loads(json.dumps(be.get_rng_state()))  # what a checkpoint stores
    assert state["seed"] == 5 and state["dropout_offset"] == x.size and state["generator_seed"] is not None
    assert be.get_rng_state() == state  # nothing drawn since: the same state, no new stream
    want_mask, want_draw = cp.asnumpy(be.dropout(x, 0.3)[0]), cp.asnumpy(be.randn((6,)))
    saved_again = be.get_rng_state()  # the run that saved takes a second checkpoint later
    want_next = cp.asnumpy(be.randn((5,)))
    be.seed(999)
    be.randn((3,))
    be.set_rng_state(state)  # the resumed run
    np.testing.assert_array_equal(cp.asnumpy(be.dropout(x, 0.3)[0]), want_mask)
    np.testing.assert_array_equal(cp.asnumpy(be.randn((6,))), want_draw)
    again = be.get_rng_state()  # drawn since the restore: another fresh stream, the same as the saving run's
    assert again == saved_again and again["generator_seed"] != state["generator_seed"]
    np.testing.assert_array_equal(cp.asnumpy(be.randn((5,))), want_next)
    for bad in (
        {"seed": 5},
        {"seed": "5", "dropout_offset": 0, "generator_seed": None},
        {"seed": 5, "dropout_offset": 0, "generator_seed": -1},
        [1, 2],
    ):
        with pytest.raises(ValueError, match="not a cupy backend random state"):
            be.set_rng_state(bad)
