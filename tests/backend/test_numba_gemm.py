"""gpunn's AVX-512 GEMM (gpunn.backend.numba_gemm) behind NumpyBackend.matmul: against a float64 reference,
on every operand layout it reads in place or transposes, edge tiles, threads, non-finite values, the
fallbacks to NumPy's BLAS, and the spinning workers' sleep/wake and fork paths."""

import os

import numpy as np
import pytest

pytest.importorskip("numba")

from gpunn.backend import numpy_backend as nb  # noqa: E402

numba_gemm = pytest.importorskip("gpunn.backend.numba_gemm")
pytestmark = pytest.mark.skipif(not numba_gemm.AVAILABLE, reason="the CPU has no AVX-512: NumPy's BLAS runs")


@pytest.fixture
def be(monkeypatch):
    """A numpy backend whose matmul takes every float32 product to the kernel (no size threshold)."""
    monkeypatch.setattr(nb, "_GEMM_MIN", 1)
    monkeypatch.setattr(nb, "_GEMM_PARALLEL_MIN", 1)
    monkeypatch.setattr(nb, "_GEMM_MIN_SIDE", 1)
    monkeypatch.delenv("GPUNN_GEMM", raising=False)
    monkeypatch.delenv("GPUNN_NUMBA", raising=False)
    backend = nb.NumpyBackend()
    x = np.ones((2, 2), np.float32)
    backend.matmul(x, x)
    assert nb._gemm_module is numba_gemm  # the kernel is loaded: the tests below exercise it
    return backend


def rel_err(got, ref) -> float:
    return float(np.linalg.norm(got.astype(np.float64) - ref) / np.linalg.norm(ref))


def operand(rng, rows, cols, layout):
    """A float32 (rows, cols) array in the layout: 'c' row-major, 't' a transposed view, 's' every other
    column of a wider array, 'r' a column slice of a wider array (rows of unit stride, a larger row stride)."""
    if layout == "c":
        return rng.standard_normal((rows, cols), dtype=np.float32)
    if layout == "t":
        return rng.standard_normal((cols, rows), dtype=np.float32).T
    if layout == "s":
        return rng.standard_normal((rows, 2 * cols), dtype=np.float32)[:, ::2]
    return rng.standard_normal((rows, cols + 5), dtype=np.float32)[:, 3 : 3 + cols]


SHAPES = [(1, 1, 1), (9, 7, 41), (3, 423, 37), (6, 16, 64), (7, 300, 129), (200, 784, 200), (64, 600, 10), (13, 1, 80)]


@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("la,lb", [("c", "c"), ("c", "t"), ("t", "c"), ("t", "t"), ("s", "r"), ("r", "s")])
def test_matches_float64_reference_and_is_the_same_on_any_thread_count(be, monkeypatch, m, k, n, la, lb):
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    a, b = operand(rng, m, k, la), operand(rng, k, n, lb)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    results = []
    for threads in ("1", "2", "3"):
        monkeypatch.setenv("GPUNN_NUM_THREADS", threads)
        out = be.matmul(a, b)
        assert out.shape == (m, n) and out.dtype == np.float32
        # float32 products summed with FMAs in blocks of <= 256 terms: error ~ sqrt(k) ulp, bounded here by 1e-5
        assert rel_err(out, ref) < 1e-5
        results.append(out)
    for other in results[1:]:  # the split never changes an element's arithmetic
        np.testing.assert_array_equal(other, results[0])


@pytest.mark.parametrize("threads", ["1", "2"])
def test_out_argument_including_a_strided_view(be, monkeypatch, threads):
    monkeypatch.setenv("GPUNN_NUM_THREADS", threads)
    rng = np.random.default_rng(3)
    a, w = rng.standard_normal((37, 90), dtype=np.float32), rng.standard_normal((71, 90), dtype=np.float32)
    big = np.full((40, 80), 7.0, np.float32)
    view = big[2:39, 4:75]
    got = be.matmul(a, w.T, out=view)
    assert got is view
    assert rel_err(view, a.astype(np.float64) @ w.T.astype(np.float64)) < 1e-5
    untouched = big.copy()
    untouched[2:39, 4:75] = 7.0
    assert (untouched == 7.0).all() and (big[:2] == 7.0).all() and (big[:, 75:] == 7.0).all()


def test_non_finite_values_propagate_like_the_reference(be, monkeypatch):
    monkeypatch.setenv("GPUNN_NUM_THREADS", "2")
    rng = np.random.default_rng(4)
    m, k, n = 13, 40, 70  # edge tiles in both directions: the padded rows and columns must not leak
    a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    a[12, 5] = np.nan  # the last (padded) row block
    a[3, 7] = np.inf
    b[9, 69] = -np.inf  # the last (padded) column panel
    b[20, 0] = np.nan
    ref = a.astype(np.float64) @ b.astype(np.float64)
    got = be.matmul(a, b)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
    np.testing.assert_array_equal(np.sign(got[np.isinf(got)]), np.sign(ref[np.isinf(ref)]))
    fin = np.isfinite(ref)
    assert np.allclose(got[fin], ref[fin], rtol=1e-4, atol=1e-4)


def test_what_the_kernel_does_not_take_runs_on_numpy_bit_for_bit(be, monkeypatch):
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((20, 30)), rng.standard_normal((30, 40))
    assert be.matmul(a, b).dtype == np.float64
    np.testing.assert_array_equal(be.matmul(a, b), np.matmul(a, b))
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    for x, y in [(a32[::-1], b32), (a32, b32[:, ::-1]), (a32[None], b32)]:  # negative strides, batched
        np.testing.assert_array_equal(be.matmul(x, y), np.matmul(x, y))
    sq = rng.standard_normal((30, 30)).astype(np.float32)
    expect = sq @ sq
    got = be.matmul(sq, sq, out=sq)  # out is an operand: NumPy's matmul handles the overlap
    assert rel_err(got, expect.astype(np.float64)) < 1e-6
    monkeypatch.setenv("GPUNN_GEMM", "blas")
    np.testing.assert_array_equal(be.matmul(a32, b32), np.matmul(a32, b32))
    with pytest.raises(ValueError):
        be.matmul(a32, a32)  # mismatched inner dimensions: NumPy's error


def test_workers_that_went_to_sleep_wake_for_the_next_product(be, monkeypatch):
    monkeypatch.setenv("GPUNN_NUM_THREADS", "2")
    monkeypatch.setattr(nb, "_GEMM_SPINS", 1)  # a worker sleeps as soon as it is idle: every post wakes it
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((50, 64), dtype=np.float32), rng.standard_normal((64, 96), dtype=np.float32)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    for i in range(200):
        if i % 50 == 0:
            import time

            time.sleep(0.01)
        assert rel_err(be.matmul(a, b), ref) < 1e-5


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_forked_child_makes_its_own_workers(be, monkeypatch):
    monkeypatch.setenv("GPUNN_NUM_THREADS", "2")
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((64, 64), dtype=np.float32), rng.standard_normal((64, 128), dtype=np.float32)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    be.matmul(a, b)  # the parent's worker exists (and may be spinning)
    pid = os.fork()
    if pid == 0:  # the child: its first split product must not wait for the parent's worker
        code = 1
        try:
            import signal

            signal.alarm(20)
            code = 0 if rel_err(be.matmul(a, b), ref) < 1e-5 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


@pytest.mark.parametrize("m,n", [(16, 16), (37, 53), (200, 784), (1, 31), (48, 5)])
def test_transpose_kernel(m, n):
    rng = np.random.default_rng(m + n)
    full = rng.standard_normal((m, n + 3), dtype=np.float32)  # rows of n + 3, the first n transposed
    src = full[:, :n]
    dst = np.full((n, m + 2), np.nan, np.float32)
    numba_gemm._transpose(full.reshape(-1), n + 3, m, n, dst.reshape(-1), m + 2)
    np.testing.assert_array_equal(dst[:, :m], src.T)
    assert np.isnan(dst[:, m:]).all()


def test_linear_layer_on_the_kernel_matches_torch(be):
    torch = pytest.importorskip("torch")
    import gpunn

    rng = np.random.default_rng(8)
    x, w, bias = (rng.standard_normal(s, dtype=np.float32) for s in ((200, 784), (200, 784), (200,)))
    g = rng.standard_normal((200, 200), dtype=np.float32)
    tx, tw, tb = (torch.tensor(v.astype(np.float64), requires_grad=True) for v in (x, w, bias))
    torch.nn.functional.linear(tx, tw, tb).backward(torch.tensor(g.astype(np.float64)))
    gx, gw, gb = (gpunn.tensor(v, requires_grad=True) for v in (x, w, bias))
    y = gpunn.nn.functional.linear(gx, gw, gb)
    y.backward(gpunn.tensor(g))
    ref = torch.nn.functional.linear(tx, tw, tb).detach().numpy()
    assert rel_err(y.detach().numpy(), ref) < 1e-5
    for got, want in ((gx, tx), (gw, tw), (gb, tb)):
        assert rel_err(got.grad.numpy(), want.grad.numpy()) < 1e-5


def test_read_only_and_broadcast_operands(be, monkeypatch):
    """A read-only operand (an expanded tensor, the broadcast gradient of ``out.sum()``, a tensor over a
    read-only NumPy array) is read in place like any other, not refused with Numba's dispatch error."""
    import gpunn

    monkeypatch.setenv("GPUNN_NUM_THREADS", "2")
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal((37, 90), dtype=np.float32), rng.standard_normal((90, 71), dtype=np.float32)
    ro = a.copy()
    ro.flags.writeable = False
    for x, y in [(ro, b), (np.broadcast_to(a[:1], a.shape), b), (a, np.broadcast_to(b[:, :1], b.shape))]:
        assert rel_err(be.matmul(x, y), x.astype(np.float64) @ y.astype(np.float64)) < 1e-5
    gpunn.manual_seed(0)
    lin = gpunn.nn.Linear(784, 200)
    x = gpunn.randn(1, 784).expand(200, 784)
    lin(x).sum().backward()  # the output gradient: a read-only broadcast of one
    ref_x = x.detach().numpy().astype(np.float64)
    assert rel_err(lin.weight.grad.numpy(), np.ones((200, 200)) @ ref_x) < 1e-5


def test_an_interrupt_while_waking_the_workers_still_completes_the_posted_product(be, monkeypatch):
    """A KeyboardInterrupt raised in the Python lines between posting a job and running it (waking a sleeping
    worker) must not leave the job half done: workers would go on reading a and b and writing c (and the
    scratch) after Python may have freed them, and count their chunks into the next job's counter."""
    import time

    monkeypatch.setenv("GPUNN_NUM_THREADS", "2")
    monkeypatch.setattr(nb, "_GEMM_SPINS", 1)
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal((64, 200), dtype=np.float32), rng.standard_normal((200, 256), dtype=np.float32)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    be.matmul(a, b)  # the worker exists
    deadline = time.monotonic() + 30
    while nb._gemm_ctrls[0, numba_gemm.STATE] != 1:  # and sleeps: the next post sets its Event
        assert time.monotonic() < deadline
        time.sleep(0.01)

    def interrupted():
        raise KeyboardInterrupt

    wake = nb._gemm_workers[0]
    wake.set = interrupted
    c = np.full((64, 256), np.nan, np.float32)
    try:
        with pytest.raises(KeyboardInterrupt):
            be.matmul(a, b, out=c)
    finally:
        del wake.set
    assert rel_err(c, ref) < 1e-5  # the posted job ran to its end before the interrupt went on
    assert rel_err(be.matmul(a, b), ref) < 1e-5


def test_captured_layers_never_write_past_gradient_views_of_another_shape(be, monkeypatch):
    """The captured step writes a layer's dW and db into the optimizer's views of its flat gradient buffer; a
    parameter whose .data got another shape leaves views of the old one: the one-call layer (and the GEMM's
    plan, which must check the result's shape) declines instead of writing past them, and reads no bias
    shorter than its output."""
    monkeypatch.setenv("GPUNN_NUM_THREADS", "2")
    rng = np.random.default_rng(13)
    m, k, n = 64, 300, 48
    x, w = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((n, k), dtype=np.float32) * 0.1
    dy, y = rng.standard_normal((m, n), dtype=np.float32), np.abs(rng.standard_normal((m, n), dtype=np.float32))
    dz, dx = np.empty_like(dy), np.empty_like(x)
    flat = np.full(n * k + n + 1000, 7.0, np.float32)  # views for the old shapes: n - 8 rows, n - 8 biases
    dw, db = flat[: (n - 8) * k].reshape(n - 8, k), flat[(n - 8) * k : (n - 8) * k + n - 8]
    for want_dw in (dw, None):
        assert not be.captured_linear_backward(dy, y, dz, x, w, dx, want_dw, db, True)
    assert (flat[(n - 8) * k + n - 8 :] == 7.0).all()
    assert not be.captured_linear_forward(x, w, np.zeros(n - 8, np.float32), np.empty((m, n), np.float32), True)
    job = np.empty(numba_gemm.JOB_FIELDS, np.int64)
    assert numba_gemm.plan(x, w.T, np.empty((m - 1, n), np.float32), 1, 1, job) == -1  # c of other rows
    assert numba_gemm.plan(x, w.T[: k - 1], np.empty((m, n), np.float32), 1, 1, job) == -1  # b of k - 1 rows
