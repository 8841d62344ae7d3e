"""conv2d and pool2d as backend primitives on the CPU backends: F.conv2d / F.max_pool2d / F.avg_pool2d
against PyTorch 2.13 CPU, including max pooling's NaN rule (value and gradient routing), and the
numpy backend against the plain reference."""

import numpy as np
import pytest

import gpunn
import gpunn.nn.functional as F
from gpunn.backend import backend_for, reference

torch = pytest.importorskip("torch")
TF = torch.nn.functional


@pytest.fixture(autouse=True, params=["numba", "numpy"], ids=["numba-kernels", "numpy-code"])
def _cpu_backend(request, monkeypatch):
    """These pin the CPU behaviour, whatever GPUNN_TEST_BACKEND says: the numpy backend with its Numba
    kernels (GPUNN_NUMBA=1) and without (the reference code)."""
    monkeypatch.setenv("GPUNN_NUMBA", "1" if request.param == "numba" else "0")
    with gpunn.use_backend("numpy"):
        yield


def _max_pool_both(x, dy, k, s, p):
    """(gpunn y, gpunn dx, torch y, torch dx) of max_pool2d on x with upstream gradient dy."""
    gx = gpunn.tensor(x, requires_grad=True)
    gy = F.max_pool2d(gx, k, s, p)
    (gy * gpunn.tensor(dy)).sum().backward()
    tx = torch.tensor(x, requires_grad=True)
    ty = TF.max_pool2d(tx, k, s, p)
    ty.backward(torch.tensor(dy))
    return gy.detach().numpy(), gx.grad.numpy(), ty.detach().numpy(), tx.grad.numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (3, 1, 1), ((3, 2), (1, 2), (1, 0)), ((2, 3), 3, (1, 1))])
@pytest.mark.parametrize("nan_fraction", [0.0, 0.15, 0.6])
def test_max_pool2d_nan_values_and_gradient_routing_match_torch(rng, dtype, k, s, p, nan_fraction):
    x = rng.standard_normal((3, 4, 9, 7)).astype(dtype)
    x[rng.random(x.shape) < nan_fraction] = np.nan
    x[0, 0, :2] = -np.inf  # windows of -inf: the gradient goes to the first in-bounds element
    x[1, 1, 3:6] = 1.5  # ties: the first maximum wins
    gy_sh = TF.max_pool2d(torch.tensor(x), k, s, p).shape
    dy = rng.standard_normal(tuple(gy_sh)).astype(dtype) + 3  # never zero: every routed gradient shows
    y, dx, ty, tdx = _max_pool_both(x, dy, k, s, p)
    np.testing.assert_array_equal(y, ty)  # NaN in the same places, the same maxima
    if nan_fraction:
        assert np.isnan(y).any()
    np.testing.assert_allclose(dx, tdx, rtol=1e-6, atol=0)  # overlapping windows may sum in another order


@pytest.mark.parametrize(
    "row,expect_idx",
    [
        ([1, np.nan, 3, np.nan], 3),  # the last NaN of the window
        ([np.nan, 5, np.nan, 2], 2),
        ([1, 2, np.nan, 2], 2),
        ([7, 2, 7, 1], 0),  # the first maximum
    ],
)
def test_max_pool2d_nan_window_single(row, expect_idx):
    x = np.array(row, dtype=np.float32).reshape(1, 1, 1, 4)
    y, dx, ty, tdx = _max_pool_both(x, np.ones((1, 1, 1, 1), np.float32), (1, 4), None, 0)
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_array_equal(dx, tdx)
    assert dx.ravel().tolist() == [float(i == expect_idx) for i in range(4)]


def test_max_pool2d_all_minus_inf_window_with_padding():
    x = np.full((1, 1, 1, 3), -np.inf, np.float32)
    y, dx, ty, tdx = _max_pool_both(x, np.array([[[[1, 2, 4]]]], np.float32), (1, 3), 1, (0, 1))
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_array_equal(dx, tdx)  # [3, 4, 0]: windows 0 and 1 pick element 0, window 2 element 1


def test_primitives_match_the_reference(rng):
    """The numpy backend's primitives equal the plain reference (whatever kernels it runs) -- conv within
    float32 rounding of a different summation order, pools bit for bit."""
    be = backend_for("numpy")
    x = rng.standard_normal((5, 3, 13, 11)).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = np.nan
    for mode, cip in [("max", True), ("avg", True), ("avg", False)]:
        geo = ((3, 3), (2, 2), (1, 1))
        y, saved = be.pool2d_forward(x, mode, *geo, count_include_pad=cip)
        ry, rsaved = reference.pool2d_forward(np, x, mode, *geo, count_include_pad=cip)
        np.testing.assert_array_equal(y, ry)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        np.testing.assert_allclose(
            be.pool2d_backward(dy, saved), reference.pool2d_backward(np, dy, rsaved), rtol=1e-6, atol=1e-6
        )
    x = rng.standard_normal((5, 3, 13, 11)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    for stride, pad in [((1, 1), (0, 0)), ((1, 1), (1, 1)), ((2, 1), (1, 0))]:
        y, saved = be.conv2d_forward(x, w, b, stride, pad)
        ry, rsaved = reference.conv2d_forward(
            np, x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), stride, pad
        )
        assert y.dtype == np.float32
        np.testing.assert_allclose(y, ry, rtol=1e-4, atol=1e-4)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        grads = be.conv2d_backward(dy, saved)
        rgrads = reference.conv2d_backward(np, dy.astype(np.float64), rsaved)
        for g, r in zip(grads, rgrads):
            assert g.dtype == np.float32
            assert np.linalg.norm(g - r) / np.linalg.norm(r) < 1e-5


@pytest.mark.parametrize("act", ["relu", "leaky_relu", "sigmoid", "tanh"])
def test_conv2d_activation_matches_torch(rng, act):
    x, w, b = rng.standard_normal((3, 2, 9, 7)), rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(4)
    tact = {
        "relu": TF.relu,
        "leaky_relu": lambda z: TF.leaky_relu(z, 0.1),
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
    }[act]
    gx, gw, gb = (gpunn.tensor(a, requires_grad=True) for a in (x, w, b))
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    gy = F.conv2d(gx, gw, gb, 1, 1, activation=act, negative_slope=0.1)
    ty = tact(TF.conv2d(tx, tw, tb, 1, 1))
    np.testing.assert_allclose(gy.detach().numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    dy = rng.standard_normal(gy.shape)
    (gy * gpunn.tensor(dy)).sum().backward()
    ty.backward(torch.tensor(dy))
    for g, t in ((gx, tx), (gw, tw), (gb, tb)):
        np.testing.assert_allclose(g.grad.numpy(), t.grad.numpy(), rtol=1e-9, atol=1e-11)


def test_conv2d_activation_is_keyword_only_and_checked(rng):
    x, w = gpunn.randn(1, 2, 5, 5), gpunn.randn(3, 2, 3, 3)
    # PyTorch's 6th and 7th positionals are dilation and groups; an 8th is never silently an activation
    ref = F.conv2d(x, w, None, 1, 0, 1, 1)
    np.testing.assert_array_equal(ref.numpy(), F.conv2d(x, w).numpy())
    with pytest.raises(TypeError):
        F.conv2d(x, w, None, 1, 0, 1, 1, "relu")
    with pytest.raises(ValueError, match="activation must be one of"):
        F.conv2d(x, w, activation="gelu")


def test_sequential_fuses_conv2d_and_relu_with_the_same_result(rng, monkeypatch):
    from gpunn import nn

    be = backend_for("numpy")
    acts = []
    forward = type(be).conv2d_forward
    monkeypatch.setattr(type(be), "conv2d_forward", lambda self, *a, **k: acts.append(a[5]) or forward(self, *a, **k))
    gpunn.manual_seed(3)
    fused = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    x = rng.standard_normal((3, 2, 8, 6)).astype(np.float32)
    gx = gpunn.tensor(x, requires_grad=True)
    y = fused(gx)
    assert acts == ["relu"]  # one op: the ReLU ran in the conv's layout pass
    conv, relu, pool = list(fused)
    gx2 = gpunn.tensor(x, requires_grad=True)
    y2 = pool(relu(conv(gx2)))  # the same modules, unfused
    np.testing.assert_array_equal(y.detach().numpy(), y2.detach().numpy())
    y.sum().backward()
    g_fused = (gx.grad.numpy().copy(), conv.weight.grad.numpy().copy())
    conv.weight.grad = None
    y2.sum().backward()
    np.testing.assert_array_equal(g_fused[0], gx2.grad.numpy())
    np.testing.assert_array_equal(g_fused[1], conv.weight.grad.numpy())


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape,oc,k,stride,padding",
    [
        ((3, 5, 9, 11), 7, (5, 3), 2, 1),
        ((5, 1, 9, 11), 4, 3, 1, 1),
        ((4, 3, 10, 7), 6, (2, 3), (1, 2), (1, 0)),
    ],
)
def test_conv2d_relu_max_pool_in_image_groups_match_torch(
    rng, monkeypatch, threads, dtype, shape, oc, k, stride, padding
):
    """conv2d + ReLU + max_pool2d with the batch split into one-image groups shared over the threads
    (where the numba path runs): values and the gradients of x, W, b equal PyTorch 2.13 CPU's within the
    dtype's rounding. (Finite inputs: at a NaN ReLU output PyTorch passes the gradient through, gpunn's
    ReLU derivative everywhere -- reference, kernels -- gives 0; not this test's subject.)"""
    from gpunn.backend import numpy_backend

    monkeypatch.setenv("GPUNN_NUM_THREADS", threads)
    monkeypatch.setattr(numpy_backend, "_GROUP_BYTES", 1)  # one image a group
    monkeypatch.setattr(numpy_backend, "_PARALLEL_MIN", 1)  # the groups on both threads even at this size
    x = rng.standard_normal(shape).astype(dtype)
    kk = (k, k) if isinstance(k, int) else k
    w = rng.standard_normal((oc, shape[1]) + kk).astype(dtype)
    b = rng.standard_normal(oc).astype(dtype)
    gx, gw, gb = (gpunn.tensor(a, requires_grad=True) for a in (x, w, b))
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    gy = F.max_pool2d(F.relu(F.conv2d(gx, gw, gb, stride, padding)), 2)
    ty = TF.max_pool2d(TF.relu(TF.conv2d(tx, tw, tb, stride, padding)), 2)
    tol = {np.float32: 2e-5, np.float64: 1e-12}[dtype]
    np.testing.assert_allclose(gy.detach().numpy(), ty.detach().numpy(), rtol=tol, atol=tol)
    dy = rng.standard_normal(gy.shape).astype(dtype)
    (gy * gpunn.tensor(dy)).sum().backward()
    ty.backward(torch.tensor(dy))
    for g, t in ((gx, tx), (gw, tw), (gb, tb)):
        got, want = g.grad.numpy(), t.grad.numpy()
        assert got.dtype == dtype and np.count_nonzero(want) > 0
        np.testing.assert_allclose(got, want, rtol=tol * 10, atol=tol * 10 * np.abs(want).max())


@pytest.mark.parametrize("numba", ["1", "0"])
def test_conv2d_backward_of_an_empty_batch_gives_zero_weight_and_bias_gradients(monkeypatch, numba):
    """A batch of 0 images: conv2d's dW and db are zeros (PyTorch's answer), dx is empty; no IndexError."""
    monkeypatch.setenv("GPUNN_NUMBA", numba)
    x = gpunn.tensor(np.zeros((0, 3, 8, 7), np.float32), requires_grad=True)
    w = gpunn.tensor(np.ones((4, 3, 3, 2), np.float32), requires_grad=True)
    b = gpunn.tensor(np.ones(4, np.float32), requires_grad=True)
    y = F.conv2d(x, w, b, padding=1)
    assert y.shape == (0, 4, 8, 8)
    y.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), np.zeros((4, 3, 3, 2), np.float32))
    np.testing.assert_array_equal(b.grad.numpy(), np.zeros(4, np.float32))
    assert x.grad.shape == (0, 3, 8, 7)
