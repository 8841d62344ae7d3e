"""The Numba CPU kernels (gpunn.backend.numba_cpu) behind the numpy backend's pool and conv primitives:
bit for bit equal to the reference, for both dtypes, odd geometries and 1 or 2 threads; Numba imported
lazily; and the NumPy path, announced once, when Numba is unusable."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpunn.backend import numpy_backend, reference
from gpunn.backend.numpy_backend import NumpyBackend

pytest.importorskip("numba")
ROOT = Path(__file__).resolve().parents[2]

POOL_GEOMETRIES = [
    ((2, 2), (2, 2), (0, 0)),
    ((3, 3), (2, 2), (1, 1)),
    ((3, 2), (1, 2), (1, 0)),
    ((2, 3), (3, 1), (1, 1)),
    ((5, 4), (2, 3), (2, 2)),
]
CONV_GEOMETRIES = [((1, 1), (0, 0)), ((1, 1), (1, 1)), ((2, 1), (1, 0)), ((2, 3), (1, 2)), ((3, 3), (0, 0))]


@pytest.fixture(params=["1", "2"], ids=["1-thread", "2-threads"], autouse=True)
def threads(request, monkeypatch):
    monkeypatch.setenv("GPUNN_NUM_THREADS", request.param)
    monkeypatch.setenv("GPUNN_NUMBA", "1")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry", POOL_GEOMETRIES)
@pytest.mark.parametrize("mode,count_include_pad", [("max", True), ("avg", True), ("avg", False)])
def test_pool2d_kernels_equal_the_reference(rng, dtype, geometry, mode, count_include_pad):
    x = rng.standard_normal((3, 5, 11, 9)).astype(dtype)
    x[rng.random(x.shape) < 0.05] = np.nan
    x[0, 1] = -np.inf
    x[2, 2, 4:7] = 0.5  # ties
    be = NumpyBackend()
    y, saved = be.pool2d_forward(x, mode, *geometry, count_include_pad=count_include_pad)
    assert saved[0] == "numba-" + mode  # the kernel ran
    ry, rsaved = reference.pool2d_forward(np, x, mode, *geometry, count_include_pad=count_include_pad)
    assert y.dtype == ry.dtype and y.shape == ry.shape
    np.testing.assert_array_equal(y, ry)  # NaN where the reference has NaN, every other value equal
    dy = rng.standard_normal(y.shape).astype(dtype)
    dy[0, 0, 0, 0] = np.inf  # an infinite gradient stays in its window's winner (max) / cells (avg)
    dx, rdx = be.pool2d_backward(dy, saved), reference.pool2d_backward(np, dy, rsaved)
    assert dx.dtype == rdx.dtype and np.isfinite(rdx).sum() > 0.5 * rdx.size
    np.testing.assert_array_equal(dx, rdx)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 3, 8, 6), (3, 5, 9, 11), (1, 1, 2, 2), (2, 2, 3, 2)])
def test_max_pool_2x2_fast_path_equals_the_reference(rng, dtype, shape):
    """The specialised 2x2/stride-2 kernels (even and odd sizes: the last row/column in no window gets a
    zero gradient): values, NaN windows, ties, and the sign of a -0.0 gradient stored as the reference does."""
    x = rng.standard_normal(shape).astype(dtype)
    x[rng.random(shape) < 0.1] = np.nan
    x[0, 0, :2, :2] = 1.5  # a window of ties: the first wins
    be = NumpyBackend()
    y, saved = be.pool2d_forward(x, "max", (2, 2), (2, 2), (0, 0))
    ry, rsaved = reference.pool2d_forward(np, x, "max", (2, 2), (2, 2), (0, 0))
    np.testing.assert_array_equal(y, ry)
    y_only, none = be.pool2d_forward(x, "max", (2, 2), (2, 2), (0, 0), need_grad=False)  # no winning taps kept
    assert none is None
    np.testing.assert_array_equal(y_only, ry)
    np.testing.assert_array_equal(saved[2].reshape(ry.shape), rsaved[-1])  # the winning taps
    dy = rng.standard_normal(y.shape).astype(dtype)
    dy.flat[1::3] = -0.0
    dx, rdx = be.pool2d_backward(dy, saved), reference.pool2d_backward(np, dy, rsaved)
    np.testing.assert_array_equal(dx, rdx)
    np.testing.assert_array_equal(np.signbit(dx), np.signbit(rdx))
    assert dx.shape == x.shape and np.count_nonzero(dx) > 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride,padding", CONV_GEOMETRIES)
@pytest.mark.parametrize("bias,act", [(True, "none"), (False, "none"), (True, "relu"), (False, "tanh")])
def test_conv2d_kernels_equal_the_reference(rng, dtype, stride, padding, bias, act):
    """im2col, the layout pass and col2im reproduce the reference's values exactly; the GEMMs are the same
    BLAS calls on the same matrices (the stride-1 dx GEMM runs on the reference's padded grid there: where
    BLAS blocks that differently the last bit may differ, hence the 4-ulp bound)."""
    x = rng.standard_normal((4, 3, 13, 10)).astype(dtype)
    w = rng.standard_normal((5, 3, 3, 4)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype) if bias else None
    be = NumpyBackend()
    if act == "relu":
        x[0, 0, :3] = np.nan  # NaN stays NaN through the fused ReLU
    y, saved = be.conv2d_forward(x, w, b, stride, padding, act)
    assert saved[0] == "numba"
    ry, rsaved = reference.conv2d_forward(np, x, w, b, stride, padding, act)
    np.testing.assert_array_equal(y, ry)
    dy = rng.standard_normal(y.shape).astype(dtype)
    got = be.conv2d_backward(dy, saved, need_db=bias)
    ref = reference.conv2d_backward(np, dy, rsaved, need_db=bias)
    np.testing.assert_array_equal(got[1], ref[1])  # dW
    if bias:
        np.testing.assert_array_equal(got[2], ref[2])
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=4 * eps * np.nanmax(np.abs(ref[0])))


IM2COL_GEOMETRIES = [
    ((3, 2, 14, 14), (3, 3), (1, 1), (1, 1)),  # "same" rows: the contiguous shifted run per plane
    ((2, 3, 9, 7), (5, 3), (1, 1), (2, 1)),  # same rows, taller kernel: whole rows of padding
    ((2, 1, 7, 5), (3, 5), (1, 1), (0, 2)),
    ((2, 3, 9, 7), (3, 3), (1, 1), (0, 0)),  # narrower output: row by row
    ((3, 2, 13, 10), (3, 4), (2, 3), (1, 2)),
    ((1, 1, 3, 2), (5, 4), (1, 1), (2, 2)),  # a kernel wider than the input: taps that see only padding
    ((2, 2, 4, 5), (3, 3), (3, 2), (2, 0)),
    ((1, 1, 1, 1), (1, 1), (1, 1), (0, 0)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,k,stride,padding", IM2COL_GEOMETRIES)
def test_im2col_reads_the_padding_as_zeros(rng, dtype, shape, k, stride, padding):
    """im2col reads x directly, the padding as zeros, without a padded copy: its columns equal the reference's
    (built from one strided slice per tap) exactly, for every tap including those that see only padding."""
    x = rng.standard_normal(shape).astype(dtype)
    x[x == 0] = 1.0
    x.flat[1::7] = -0.0  # copied as is
    n, c, h, w = shape
    oh, ow = (reference.conv_out_size(s, kk, st, p) for s, kk, st, p in zip((h, w), k, stride, padding))
    cols = np.full((c, k[0], k[1], n, oh, ow), np.nan, dtype)  # every cell must be written
    numpy_backend.numba_kernels().im2col(x, cols, *stride, *padding)
    weight = np.ones((1, c) + k, dtype)
    _, saved = reference.conv2d_forward(np, x, weight, None, stride, padding)
    np.testing.assert_array_equal(cols.reshape(saved[3].shape), saved[3])
    np.testing.assert_array_equal(np.signbit(cols.reshape(saved[3].shape)), np.signbit(saved[3]))
    assert np.count_nonzero(cols) > 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,k,stride,padding", IM2COL_GEOMETRIES)
def test_col2im_equals_the_reference(rng, dtype, shape, k, stride, padding):
    """col2im (the stride-1 "same" rows as shifted adds of whole blocks) equals the reference's adjoint bit
    for bit, also where the gradient of cells in the padding is NaN or infinite (it is dropped) and where
    dx cells get NaN, inf or -0.0 gradients."""
    n, c, h, w = shape
    oh, ow = (reference.conv_out_size(s, kk, st, p) for s, kk, st, p in zip((h, w), k, stride, padding))
    dcols = rng.standard_normal((c, k[0], k[1], n, oh, ow)).astype(dtype)
    flat = dcols.reshape(-1)
    flat[rng.random(flat.size) < 0.03] = np.nan
    flat[rng.random(flat.size) < 0.03] = -np.inf
    flat[rng.random(flat.size) < 0.05] = -0.0
    row_spans = [reference.tap_span(i, stride[0], padding[0], h, oh) for i in range(k[0])]
    col_spans = [reference.tap_span(j, stride[1], padding[1], w, ow) for j in range(k[1])]
    ref = reference._col2im(np, dcols.copy(), (h, w), row_spans, col_spans)
    dx = np.full(shape, 7.0, dtype)  # overwritten
    numpy_backend.numba_kernels().col2im(dcols, dx, *stride, *padding)
    np.testing.assert_array_equal(dx, ref)
    np.testing.assert_array_equal(np.signbit(dx), np.signbit(ref))
    assert np.isfinite(ref).sum() > 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("per_group", [1, 2, 3])
@pytest.mark.parametrize(
    "n,c,hw,oc,k,stride,padding,act",
    [
        (3, 5, (9, 11), 7, (5, 3), (1, 1), (1, 1), "relu"),
        (7, 2, (9, 11), 4, (3, 3), (2, 2), (1, 0), "none"),
        (5, 1, (8, 8), 6, (3, 2), (2, 1), (0, 1), "tanh"),
    ],
)
def test_conv2d_in_groups_of_images(rng, monkeypatch, dtype, per_group, n, c, hw, oc, k, stride, padding, act):
    """The batch done a group of images at a time (groups of 1-3 images, the last one short). A GEMM over
    fewer columns may block its sums differently (OpenBLAS does), and dW and db add up the groups' GEMMs
    and sums one after another: not the reference's bits, so every output is checked against the float64
    reference -- NaN exactly where it has NaN, elsewhere a relative error within 16 eps sqrt(N)."""
    x = rng.standard_normal((n, c) + hw).astype(dtype)
    w = rng.standard_normal((oc, c) + k).astype(dtype)
    b = rng.standard_normal(oc).astype(dtype)
    if act == "relu":
        x[1, 0, 2:4] = np.nan  # NaN stays NaN through the fused ReLU and in the gradients it reaches
    be = NumpyBackend()
    ckk = c * k[0] * k[1]
    oh = reference.conv_out_size(hw[0], k[0], stride[0], padding[0])
    ow = reference.conv_out_size(hw[1], k[1], stride[1], padding[1])
    monkeypatch.setattr(numpy_backend, "_GROUP_BYTES", per_group * ckk * oh * ow * x.itemsize)
    assert len(numpy_backend._image_groups(n, ckk * oh * ow * x.itemsize)) == -(-n // per_group)
    monkeypatch.setattr(numpy_backend, "_PARALLEL_MIN", 1)  # groups on both threads under "2-threads"
    y, saved = be.conv2d_forward(x, w, b, stride, padding, act)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dW, db = be.conv2d_backward(dy, saved)
    x64, w64, b64, dy64 = (a.astype(np.float64) for a in (x, w, b, dy))
    ry, saved64 = reference.conv2d_forward(np, x64, w64, b64, stride, padding, act)
    rdx, rdW, rdb = reference.conv2d_backward(np, dy64, saved64)
    eps = np.finfo(dtype).eps
    for got, ref in ((y, ry), (dx, rdx), (dW, rdW), (db, rdb)):
        assert got.dtype == dtype and got.shape == ref.shape
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        finite = ~np.isnan(ref)
        assert finite.sum() > 0.3 * ref.size
        err = np.linalg.norm(got[finite] - ref[finite]) / np.linalg.norm(ref[finite])
        assert err <= 16 * eps * np.sqrt(n), err


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "n,c,hw,oc,k,stride,padding,act,bias",
    [
        (9, 1, (28, 28), 16, (3, 3), (1, 1), (1, 1), "relu", True),  # the small CNN's conv1: 4 x 3 blocks only
        (3, 1, (9, 11), 7, (3, 3), (2, 2), (0, 0), "relu", False),  # 7 filters: a 4-row block, then 3 rows
        (1, 1, (5, 8), 4, (3, 5), (1, 2), (2, 2), "none", True),  # batch 1, 15 taps, taps that see only padding
        (4, 3, (7, 6), 5, (2, 2), (1, 1), (0, 1), "tanh", True),  # 3 channels, 12 taps
        (2, 1, (6, 7), 9, (1, 1), (1, 1), (0, 0), "relu", True),  # one tap: no 3-tap block
        (2, 2, (5, 5), 3, (2, 2), (1, 1), (1, 1), "relu", False),  # 8 taps, 3 filters: the 1-row path only
    ],
)
def test_conv2d_forward_by_image(rng, monkeypatch, dtype, n, c, hw, oc, k, stride, padding, act, bias):
    """A convolution with fewer than 16 taps runs conv_forward_by_image: each output the plain dot in tap
    order (products rounded, added left to right), + bias, then the activation -- equal bit for bit to that
    order computed with NumPy from the reference's columns; NaN and -0.0 through the fused ReLU as PyTorch."""
    x = rng.standard_normal((n, c) + hw).astype(dtype)
    x[0, 0, 1, 1] = np.nan
    w = rng.standard_normal((oc, c) + k).astype(dtype)
    b = rng.standard_normal(oc).astype(dtype) if bias else None
    nk = numpy_backend.numba_kernels()
    calls, real = [], nk.conv_forward_by_image
    monkeypatch.setattr(nk, "conv_forward_by_image", lambda *a: calls.append(a[0].shape[0]) or real(*a))
    y, saved = NumpyBackend().conv2d_forward(x, w, b, stride, padding, act)
    assert saved[0] == "numba" and sum(calls) == n  # every image by this kernel
    _, rsaved = reference.conv2d_forward(np, x, w, b, stride, padding)
    cols, w2 = rsaved[3], w.reshape(oc, -1)
    z = w2[:, :1] * cols[:1]
    for t in range(1, w2.shape[1]):
        z = z + w2[:, t : t + 1] * cols[t : t + 1]
    if bias:
        z = z + b[:, None]
    want = reference.activation_forward(np, z.reshape((oc, n) + y.shape[2:]).transpose(1, 0, 2, 3), act)
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(np.signbit(y), np.signbit(want))
    assert np.isnan(y).any() and np.isfinite(y).sum() > 0.5 * y.size
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    ry, _ = reference.conv2d_forward(np, x64, w64, None if b is None else b.astype(np.float64), stride, padding, act)
    np.testing.assert_allclose(y, ry, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "n,c,hw,oc,k,stride,padding,act",
    [
        (200, 1, (28, 28), 16, (3, 3), (1, 1), (1, 1), "relu"),  # the small CNN's conv1: chunks of 512 + 272
        (3, 1, (9, 11), 7, (3, 3), (2, 2), (0, 0), "relu"),  # 7 rows: a 4-row block and 3 rows one at a time
        (1, 1, (5, 8), 4, (3, 5), (1, 2), (2, 2), "none"),  # batch 1, taps that see only padding
        (4, 3, (7, 6), 5, (2, 2), (1, 1), (0, 1), "tanh"),  # 3 channels, 12 taps: 4 blocks of 3
        (2, 1, (6, 7), 9, (1, 1), (1, 1), (0, 0), "relu"),  # a 1x1 kernel: one tap
    ],
)
def test_conv2d_weight_gradient_by_image(rng, monkeypatch, dtype, n, c, hw, oc, k, stride, padding, act):
    """dW and db of a convolution with fewer than 16 taps and no dx wanted (a first layer) come from
    conv_grad_weight_by_image: vector partial sums of at most _DW_CHUNK terms in the input's dtype, added in
    float64 -- each entry within (_DW_CHUNK / 8 + 8) eps of the sum of its terms' magnitudes, against the
    float64 reference; NaN where the reference has NaN (a NaN input reaches every filter's dW of its taps)."""
    x = rng.standard_normal((n, c) + hw).astype(dtype)
    w = rng.standard_normal((oc, c) + k).astype(dtype)
    b = rng.standard_normal(oc).astype(dtype)
    if n == 3:  # (ReLU passes the gradient where y is NaN: NaN reaches dW only through the NaN input)
        x[1, 0, 3, 4] = np.nan
    calls = []
    real = numpy_backend._conv_grad_weight_by_image
    monkeypatch.setattr(numpy_backend, "_conv_grad_weight_by_image", lambda *a: calls.append(1) or real(*a))
    be = NumpyBackend()
    y, saved = be.conv2d_forward(x, w, b, stride, padding, act)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dW, db = be.conv2d_backward(dy, saved, need_dx=False)
    assert calls == [1] and dx is None
    x64, w64, b64, dy64 = (a.astype(np.float64) for a in (x, w, b, dy))
    ry, saved64 = reference.conv2d_forward(np, x64, w64, b64, stride, padding, act)
    _, rdW, rdb = reference.conv2d_backward(np, dy64, saved64, need_dx=False)
    # the sum of the magnitudes of each entry's terms: |g| @ |cols|.T, |g| row sums
    _, sabs = reference.conv2d_forward(np, np.abs(x64), w64, None, stride, padding)
    g_abs = np.abs(reference.activation_backward(np, dy64, ry, act)).transpose(1, 0, 2, 3).reshape(oc, -1)
    bound_w = (g_abs @ sabs[3].T).reshape(rdW.shape)
    eps = np.finfo(dtype).eps * (numpy_backend._numba_module._DW_CHUNK / 8 + 8)
    for got, ref, mag in ((dW, rdW, bound_w), (db, rdb, g_abs.sum(axis=1))):
        assert got.dtype == dtype and got.shape == ref.shape
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        finite = ~np.isnan(ref)
        assert finite.sum() > 0.5 * ref.size and np.count_nonzero(ref[finite]) > 0
        assert np.all(np.abs(got[finite] - ref[finite]) <= eps * mag[finite])
        err = np.linalg.norm(got[finite] - ref[finite]) / np.linalg.norm(ref[finite])
        assert err <= 16 * np.finfo(dtype).eps * np.sqrt(n), err
    # with dx wanted, the grouped path runs and agrees
    dx2, dW2, db2 = be.conv2d_backward(dy, saved)
    assert calls == [1] and dx2 is not None
    np.testing.assert_allclose(dW2, dW, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=0)


def test_conv2d_groups_run_on_one_thread_blas_and_restore_it(rng, monkeypatch):
    """The image groups run (shared out under 2 threads) with OpenBLAS set to one thread meanwhile, on any
    thread count (its spinning workers would take gpunn's cores), and its setting restored after -- also when
    a group fails."""

    class FakeBlas:
        def __init__(self):
            self.threads, self.calls = 2, []

        def get_num_threads(self):
            return self.threads

        def set_num_threads(self, k):
            self.calls.append(k)
            self.threads = k

    blas = FakeBlas()
    monkeypatch.setattr(numpy_backend, "_blas_control", [blas])
    monkeypatch.setattr(numpy_backend, "_PARALLEL_MIN", 1)
    monkeypatch.setattr(numpy_backend, "_GROUP_BYTES", 1)  # one image a group
    x = rng.standard_normal((6, 2, 7, 5)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    be = NumpyBackend()
    y, saved = be.conv2d_forward(x, w, None, (1, 1), (1, 1), "relu")
    ry, _ = reference.conv2d_forward(np, x.astype(np.float64), w.astype(np.float64), None, (1, 1), (1, 1), "relu")
    np.testing.assert_allclose(y, ry, rtol=1e-5, atol=1e-5)
    assert blas.calls == [1, 2] and blas.threads == 2

    def failing(*args):
        raise ValueError("simulated failure in a group")

    monkeypatch.setattr(numpy_backend._numba_module, "col2im", failing)
    with pytest.raises(ValueError, match="simulated"):  # a failing group: the setting is still restored
        be.conv2d_backward(np.ones_like(y), saved)
    assert blas.calls == [1, 2, 1, 2] and blas.threads == 2


def test_conv2d_without_threadpoolctl_runs_the_groups_on_the_calling_thread(rng, monkeypatch):
    """No way to set OpenBLAS's thread count (threadpoolctl missing): the groups run one after another on
    the calling thread, BLAS threaded as it is, with the same results."""
    monkeypatch.setattr(numpy_backend, "_blas_control", [])
    monkeypatch.setattr(numpy_backend, "_PARALLEL_MIN", 1)
    monkeypatch.setattr(numpy_backend, "_GROUP_BYTES", 1)
    calls = []
    real = numpy_backend.parallel_for
    monkeypatch.setattr(numpy_backend, "parallel_for", lambda *a: calls.append(a) or real(*a))
    x = rng.standard_normal((4, 3, 8, 7)).astype(np.float64)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float64)
    be = NumpyBackend()
    y, saved = be.conv2d_forward(x, w, None, (1, 1), (1, 1), "relu")
    dx, dW, _ = be.conv2d_backward(np.ones_like(y), saved, need_db=False)
    assert calls == []  # never shared out
    ry, rsaved = reference.conv2d_forward(np, x, w, None, (1, 1), (1, 1), "relu")
    rdx, rdW, _ = reference.conv2d_backward(np, np.ones_like(ry), rsaved, need_db=False)
    for got, ref in ((y, ry), (dx, rdx), (dW, rdW)):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_conv2d_kernels_skip_what_they_do_not_need(rng):
    x, w = rng.standard_normal((2, 3, 6, 5)).astype(np.float32), rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    be = NumpyBackend()
    y, saved = be.conv2d_forward(x, w, None, (1, 1), (0, 0), need_grad=False)
    assert saved is None and y.shape == (2, 4, 5, 4)
    y, saved = be.conv2d_forward(x, w, None, (1, 1), (0, 0))
    dx, dW, db = be.conv2d_backward(np.ones_like(y), saved, need_dx=False, need_db=False)
    assert dx is None and db is None and dW.shape == w.shape


def _python(code: str, **env):
    full = dict(os.environ, PYTHONPATH=str(ROOT), **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=300)


def test_numba_is_imported_on_first_use_only():
    code = (
        "import sys, gpunn\n"
        "import gpunn.nn.functional as F\n"
        "x = gpunn.randn(2, 3, 8, 8, requires_grad=True)\n"
        "print('numba' in sys.modules)\n"
        "F.max_pool2d(x, 2).sum().backward()\n"
        "print('numba' in sys.modules)\n"
    )
    r = _python(code, GPUNN_BACKEND="numpy", GPUNN_NUMBA="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "True"]
    r = _python(code, GPUNN_BACKEND="numpy", GPUNN_NUMBA="0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False"]


def test_without_numba_the_numpy_path_runs_and_says_so_once():
    code = (
        "import sys\n"
        "sys.modules['numba'] = None  # as if Numba were not installed\n"
        "import warnings, numpy as np, gpunn\n"
        "import gpunn.nn.functional as F\n"
        "from gpunn import optim\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    x = gpunn.tensor(np.arange(48.0).reshape(1, 3, 4, 4), requires_grad=True)\n"
        "    F.max_pool2d(x, 2).sum().backward()\n"
        "    opt = optim.Adam([x], lr=0.1)\n"
        "    opt.step(); opt.step()\n"
        "print(len([w for w in caught if 'Numba' in str(w.message)]), x.grad.numpy().sum())\n"
    )
    r = _python(code, GPUNN_BACKEND="numpy", GPUNN_NUMBA="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "12.0"]


def test_a_kernel_that_fails_to_compile_falls_back(rng, monkeypatch):
    from numba.core.errors import TypingError

    nk = numpy_backend.numba_kernels()

    def broken(*args):
        raise TypingError("simulated compile failure")

    monkeypatch.setattr(nk, "adam_step", broken)
    monkeypatch.setattr(numpy_backend, "_numba_module", nk)
    p, g, m, v = (rng.standard_normal(1000).astype(np.float32) for _ in range(4))
    v = np.abs(v)
    ref = [a.copy() for a in (p, g, m, v)]
    with pytest.warns(UserWarning, match="Numba CPU kernels are unavailable"):
        NumpyBackend().adam_step(p, g, m, v, step=1, lr=0.01)
    reference.adam_step(np, *ref, step=1, lr=0.01)
    assert all(np.array_equal(a, b) for a, b in zip((p, g, m, v), ref))
    assert numpy_backend.numba_kernels() is None  # off for the rest of the process...
    monkeypatch.setattr(numpy_backend, "_numba_module", None)  # ...which this test restores


def test_kernels_called_from_several_threads_at_once():
    """The kernels are serial and nogil, run from several user threads at once, each sharing its work over
    the backend's threads (pools by planes, Adam by chunks of the flat buffer): same results, no crash."""
    code = (
        "import threading, numpy as np, gpunn\n"
        "from gpunn.backend.numpy_backend import NumpyBackend\n"
        "be = NumpyBackend()\n"
        "x = np.random.default_rng(0).standard_normal((64, 16, 28, 28)).astype(np.float32)\n"
        "ref = be.pool2d_forward(x, 'max', (2, 2), (2, 2))[0]\n"
        "ok = []\n"
        "def work():\n"
        "    p, g = np.zeros(1 << 19, np.float32), np.ones(1 << 19, np.float32)\n"
        "    m, v = np.zeros_like(p), np.zeros_like(p)\n"
        "    for _ in range(20):\n"
        "        y, s = be.pool2d_forward(x, 'max', (2, 2), (2, 2))\n"
        "        be.pool2d_backward(np.ones_like(y), s)\n"
        "        be.adam_step(p, g, m, v, step=1, lr=0.1)  # split over 2 threads\n"
        "        ok.append(np.array_equal(y, ref))\n"
        "ts = [threading.Thread(target=work) for _ in range(4)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "print(len(ok), all(ok))\n"
    )
    r = _python(code, GPUNN_BACKEND="numpy", GPUNN_NUMBA="1", GPUNN_NUM_THREADS="2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["80", "True"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_kernels_equal_numpy_bit_for_bit(rng, dtype):
    """Tensor.relu's forward and backward on the numpy backend (Numba, the array shared over the threads)
    give the NumPy path's (Backend.relu / relu_backward, PyTorch's rules) exactly: 0 where x < 0, else x
    (-0.0 and NaN kept); the gradient 0 where y <= 0, else g (a NaN y passes g; no inf * 0)."""
    from gpunn.backend.base import Backend

    n = numpy_backend._PARALLEL_MIN + 6  # large enough for the kernels, an odd share for each thread
    x = rng.standard_normal(n).astype(dtype)
    x[:6] = [-0.0, 0.0, np.nan, np.inf, -np.inf, -1.0]
    g = rng.standard_normal(n).astype(dtype)
    g[6:9] = [np.inf, -np.inf, np.nan]
    x[6:9] = [-1.0, 2.0, -3.0]
    g[2] = -2.5  # the NaN output's gradient
    be = NumpyBackend()
    y = be.relu(x.reshape(2, -1)).reshape(-1)
    ry = np.where(x < 0, dtype(0), x)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(np.signbit(y), np.signbit(ry))
    assert np.signbit(y[0]) and np.isnan(y[2])
    dx = be.relu_backward(g.reshape(2, -1), ry.reshape(2, -1)).reshape(-1)
    rdx = np.where(ry <= 0, dtype(0), g)
    assert dx.dtype == dtype
    np.testing.assert_array_equal(dx, rdx)
    np.testing.assert_array_equal(np.signbit(dx), np.signbit(rdx))
    assert dx[2] == -2.5 and dx[6] == 0 and dx[8] == 0
    np.testing.assert_array_equal(Backend.relu(be, x), ry)  # the NumPy path says the same
    np.testing.assert_array_equal(Backend.relu_backward(be, g, ry), rdx)
    # through the Tensor op: the same values and gradient
    import gpunn

    t = gpunn.tensor(x, requires_grad=True)
    out = t.relu()
    out.backward(gpunn.tensor(g))
    np.testing.assert_array_equal(out.detach().numpy(), ry)
    np.testing.assert_array_equal(t.grad.numpy(), rdx)


def test_loading_the_kernels_leaves_scipy_linalg_alone():
    """numba_cpu skips Numba's scipy.linalg probe (cold start) and leaves sys.modules as it found it, so
    scipy.linalg still imports afterwards."""
    pytest.importorskip("scipy")
    code = (
        "import sys, numpy as np, gpunn\n"
        "from gpunn.backend.numpy_backend import NumpyBackend\n"
        "p, g, m, v = (np.ones(10, np.float32) for _ in range(4))\n"
        "NumpyBackend().adam_step(p, g, m, v, step=1, lr=0.1)\n"
        "print('numba' in sys.modules, 'scipy.linalg' in sys.modules, 'scipy.linalg.cython_blas' in sys.modules)\n"
        "import scipy.linalg.cython_blas\n"
        "print(bool(p[0] < 1))\n"
    )
    r = _python(code, GPUNN_BACKEND="numpy", GPUNN_NUMBA="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "False", "False", "True"]
