"""The numpy backend's fast primitives (in place, cache-blocked, multi-threaded; Numba kernels or NumPy)
must equal the plain reference in gpunn.backend.reference bit for bit, for every option, dtype and
thread count."""

import numpy as np
import pytest

from gpunn.backend import numpy_backend, reference
from gpunn.backend.numpy_backend import NumpyBackend

# large enough for several cache blocks and for the work to be split across threads (NumPy code from
# 1 << 18 elements on, the flat Numba kernels from 1 << 19 on)
SIZES = [7, 13 * 4099, (1 << 18) + 77, (1 << 19) + 77]


@pytest.fixture(params=["1", "2"], ids=["1-thread", "2-threads"])
def threads(request, monkeypatch):
    monkeypatch.setenv("GPUNN_NUM_THREADS", request.param)
    return int(request.param)


@pytest.fixture(autouse=True, params=["numba", "numpy"], ids=["numba-kernels", "numpy-code"])
def kernels(request, monkeypatch):
    """Each test runs with the Numba kernels on (GPUNN_NUMBA=1) and off."""
    monkeypatch.setenv("GPUNN_NUMBA", "1" if request.param == "numba" else "0")
    return request.param


def _bufs(rng, n, dtype, k):
    return [rng.standard_normal(n).astype(dtype) for _ in range(k)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize(
    "opts",
    [
        dict(momentum=0.0),
        dict(momentum=0.9),
        dict(momentum=0.9, first_step=True),
        dict(momentum=0.8, weight_decay=0.01),
        dict(momentum=0.9, maximize=True),
        dict(weight_decay=0.1, maximize=True),
        dict(momentum=0.9, nesterov=True),
        dict(momentum=0.9, dampening=0.3),
    ],
)
def test_sgd_step_equals_reference(rng, threads, dtype, n, opts):
    p, g, buf = _bufs(rng, n, dtype, 3)
    if opts.get("momentum", 0.0) == 0.0:  # (gpunn.optim.SGD passes no buffer then: the kernels run all the same)
        buf = None
    p2, g2, buf2 = p.copy(), g.copy(), None if buf is None else buf.copy()
    NumpyBackend().sgd_step(p, g, buf, lr=0.03, **opts)
    reference.sgd_step(np, p2, g2, buf2, lr=0.03, **opts)
    assert np.array_equal(p, p2) and np.array_equal(g, g2) and (buf is None or np.array_equal(buf, buf2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize(
    "opts",
    [
        dict(),
        dict(weight_decay=0.01),
        dict(weight_decay=0.01, decoupled_weight_decay=True),
        dict(amsgrad=True),
        dict(maximize=True, weight_decay=0.02),
        dict(maximize=True, weight_decay=0.02, decoupled_weight_decay=True),
        dict(amsgrad=True, maximize=True, weight_decay=0.01, decoupled_weight_decay=True),
    ],
)
def test_adam_step_equals_reference(rng, threads, dtype, n, opts):
    p, g, m = _bufs(rng, n, dtype, 3)
    v = np.abs(rng.standard_normal(n)).astype(dtype)
    vmax = v + np.abs(rng.standard_normal(n)).astype(dtype) * 0.1
    ours = [a.copy() for a in (p, g, m, v, vmax)]
    ref = [a.copy() for a in (p, g, m, v, vmax)]
    for step in (1, 7):
        NumpyBackend().adam_step(*ours, step=step, lr=1e-3, **opts)
        reference.adam_step(np, *ref, step=step, lr=1e-3, **opts)
    for a, b in zip(ours, ref):
        assert np.array_equal(a, b)


ADAPTIVE = [  # (primitive, number of state arrays, options)
    ("adagrad", 1, dict(step=1)),
    ("adagrad", 1, dict(step=4, lr=0.1, lr_decay=0.05, weight_decay=0.1, eps=1e-6)),
    ("adagrad", 1, dict(step=2, maximize=True)),
    ("adadelta", 2, dict()),
    ("adadelta", 2, dict(lr=0.5, rho=0.8, eps=1e-4, weight_decay=0.1, maximize=True)),
    ("rmsprop", 1, dict()),
    ("rmsprop", 2, dict(momentum=0.9, weight_decay=0.05)),
    ("rmsprop", 2, dict(alpha=0.9, centered=True, eps=1e-5)),
    ("rmsprop", 3, dict(lr=0.005, momentum=0.5, centered=True, weight_decay=0.1, maximize=True)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("name,n_state,opts", ADAPTIVE)
def test_adaptive_steps_equal_reference(rng, threads, kernels, dtype, n, name, n_state, opts):
    """adagrad_step, adadelta_step, rmsprop_step: three steps from a nonzero state, bit for bit."""
    p, g = _bufs(rng, n, dtype, 2)
    state = [np.abs(a) + dtype(0.01) for a in _bufs(rng, n, dtype, n_state)]
    args = [p, g, *state]
    if name == "rmsprop":  # (param, grad, square_avg, momentum_buf, grad_avg): None where unused
        momentum_buf = state[1] if opts.get("momentum") else None
        # grad_avg^2 < square_avg, which each step keeps (a variance stays >= 0)
        grad_avg = np.sqrt(state[0]) * rng.uniform(-0.9, 0.9, n).astype(dtype) if opts.get("centered") else None
        args = [p, g, state[0], momentum_buf, grad_avg]
    ours = [None if a is None else a.copy() for a in args]
    ref = [None if a is None else a.copy() for a in args]
    for _ in range(3):
        getattr(NumpyBackend(), name + "_step")(*ours, **opts)
        getattr(reference, name + "_step")(np, *ref, **opts)
        g_next = rng.standard_normal(n).astype(dtype)
        ours[1][...] = g_next
        ref[1][...] = g_next
    for a, b in zip(ours, ref):
        assert (a is None) == (b is None)
        if a is not None:
            assert np.isfinite(b).all() and np.array_equal(a, b)
    assert (numpy_backend._numba() is not None) == (kernels == "numba")  # the kernel ran, or was off


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(13, 7), (3, 4230), (700, 1000)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted,smoothing", [(False, 0.0), (True, 0.0), (True, 0.2), (False, 0.1)])
@pytest.mark.parametrize("ignored", [True, False])
def test_softmax_cross_entropy_equals_reference(
    rng, threads, kernels, dtype, shape, reduction, weighted, smoothing, ignored
):
    n, c = shape
    logits = (rng.standard_normal(shape) * 3).astype(dtype)
    target = rng.integers(0, c, n)
    if ignored:
        target[::5] = -100
    weight = (rng.random(c) + 0.1).astype(dtype) if weighted else None
    ours = NumpyBackend().softmax_cross_entropy(logits.copy(), target, weight, reduction, -100, smoothing)
    ref = reference.softmax_cross_entropy(np, logits.copy(), target, weight, reduction, -100, smoothing)
    numba_rows = kernels == "numba" and dtype == np.float32 and not weighted and smoothing == 0
    for a, b in zip(ours, ref):
        assert a.dtype == b.dtype and a.shape == b.shape
        if numba_rows:  # its own exp and float32 row sums: the stated bound, 8 float32 ulps of the scale
            np.testing.assert_allclose(a, b, rtol=0, atol=8 * np.finfo(np.float32).eps * np.abs(b).max())
        else:
            assert np.array_equal(a, b)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_softmax_cross_entropy_every_row_ignored_equals_the_reference(rng, kernels, reduction):
    """'mean' over no valid row: NaN loss and a zero gradient (the reference path); 'none': zeros."""
    logits = rng.standard_normal((5, 7)).astype(np.float32)
    target = np.full(5, -100)
    with np.errstate(invalid="ignore"):
        ours = NumpyBackend().softmax_cross_entropy(logits, target, None, reduction)
        ref = reference.softmax_cross_entropy(np, logits, target, None, reduction)
    for a, b in zip(ours, ref):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("ignored_row", [False, True])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_softmax_cross_entropy_non_finite_logits_equal_the_reference(rng, bad, ignored_row):
    logits = rng.standard_normal((6, 9)).astype(np.float32)
    logits[2, 3] = bad
    target = rng.integers(0, 9, 6)
    if ignored_row:  # a non-finite logit in an ignored row still reaches the result, as in the reference
        target[2] = -100
    with np.errstate(invalid="ignore"):  # inf - inf in the reference's shift
        ours = NumpyBackend().softmax_cross_entropy(logits, target)
        ref = reference.softmax_cross_entropy(np, logits, target)
        if ignored_row:
            ours_none = NumpyBackend().softmax_cross_entropy(logits, target, None, "none")
            ref_none = reference.softmax_cross_entropy(np, logits, target, None, "none")
            for a, b in zip(ours_none, ref_none):
                np.testing.assert_array_equal(a, b)
    for a, b in zip(ours, ref):
        np.testing.assert_array_equal(a, b)


def test_softmax_cross_entropy_rows_accuracy_against_float64(rng, threads, kernels):
    """The float32 kernel against a float64 computation: loss and every gradient element (the bound is
    relative to the row's largest gradient: small probabilities carry exp's few-ulp error)."""
    n, c = 517, 1000
    logits = (rng.standard_normal((n, c)) * 6).astype(np.float32)
    logits[0, :500] = -200  # exp underflows: those probabilities are 0
    target = rng.integers(0, c, n)
    target[0] = 700
    loss, grad = NumpyBackend().softmax_cross_entropy(logits, target)
    z = logits.astype(np.float64)
    e = np.exp(z - z.max(1, keepdims=True))
    p = e / e.sum(1, keepdims=True)
    ref_loss = -np.log(p[np.arange(n), target]).mean()
    ref_grad = p.copy()
    ref_grad[np.arange(n), target] -= 1
    ref_grad /= n
    assert abs(float(loss) - ref_loss) <= 4e-7 * abs(ref_loss)
    row_scale = np.abs(ref_grad).max(axis=1, keepdims=True)
    assert (np.abs(grad - ref_grad) <= 8 * np.finfo(np.float32).eps * row_scale).all()
    assert (grad[0, :500] == 0).all()


def test_small_work_stays_on_the_calling_thread(monkeypatch):
    monkeypatch.setenv("GPUNN_NUM_THREADS", "2")
    seen = []
    numpy_backend.parallel_for(lambda lo, hi: seen.append((lo, hi)), 10, work=10)
    assert seen == [(0, 10)]
    seen.clear()
    numpy_backend.parallel_for(lambda lo, hi: seen.append((lo, hi)), 10, work=1 << 20)
    assert sorted(seen) == [(0, 5), (5, 10)]


@pytest.mark.parametrize("primitive", ["reference", "numpy"])
@pytest.mark.parametrize("bad", [5, -1])
def test_softmax_cross_entropy_checks_its_labels(rng, primitive, bad):
    logits = rng.standard_normal((4, 5)).astype(np.float32)
    target = np.array([0, bad, 2, 3])
    fn = (
        (lambda *a: reference.softmax_cross_entropy(np, *a))
        if primitive == "reference"
        else NumpyBackend().softmax_cross_entropy
    )
    with pytest.raises(ValueError, match=f"target label {bad} is out of range for 5 classes"):
        fn(logits, target, None, "mean", -100, 0.0)


def test_parallel_work_in_a_forked_child(monkeypatch):
    """A child forked after the parent used its worker threads (a DataLoader worker) makes its own: the
    parent's do not exist there, and work handed to them would wait forever."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    monkeypatch.setenv("GPUNN_NUM_THREADS", "2")
    n = 1 << 20
    p, g, m, v = (np.full(n, 0.5, np.float32) for _ in range(4))
    NumpyBackend().adam_step(p, g, m, v, step=1, lr=0.1)  # the parent's pool exists now
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        got = pool.apply_async(_big_adam_step_sum, (n,)).get(timeout=120)
    q = np.full(n, 0.5, np.float32)
    reference.adam_step(np, q, *(np.full(n, 0.5, np.float32) for _ in range(3)), step=1, lr=0.1)
    assert got == float(q.sum(dtype=np.float64))


def _big_adam_step_sum(n):
    p, g, m, v = (np.full(n, 0.5, np.float32) for _ in range(4))
    NumpyBackend().adam_step(p, g, m, v, step=1, lr=0.1)
    return float(p.sum(dtype=np.float64))


def test_parallel_chunks_covers_every_element_once(monkeypatch):
    monkeypatch.setenv("GPUNN_NUM_THREADS", "2")
    seen = []
    numpy_backend.parallel_chunks(lambda lo, hi: seen.append((lo, hi)), 1000, pieces=7)
    seen.sort()
    assert seen[0][0] == 0 and seen[-1][1] == 1000 and len(seen) == 7
    assert all(a[1] == b[0] for a, b in zip(seen, seen[1:]))


def test_parallel_chunks_does_not_wait_for_a_helper_that_never_woke(monkeypatch):
    """With the pool's thread held elsewhere, the caller does every chunk itself and returns."""
    import threading

    monkeypatch.setenv("GPUNN_NUM_THREADS", "2")
    monkeypatch.setattr(numpy_backend, "_pool", None)  # a pool of exactly one thread, for this test
    monkeypatch.setattr(numpy_backend, "_pool_workers", 0)
    release = threading.Event()
    pool = numpy_backend._get_pool(1)
    blocker = pool.submit(release.wait, 60)
    try:
        seen = []
        numpy_backend.parallel_chunks(lambda lo, hi: seen.append((lo, hi, threading.get_ident())), 100, pieces=4)
        assert sorted(s[:2] for s in seen) == [(0, 25), (25, 50), (50, 75), (75, 100)]
        assert {s[2] for s in seen} == {threading.get_ident()}
    finally:
        release.set()
        blocker.result()
        pool.shutdown()


def test_parallel_chunks_raises_a_chunks_error(monkeypatch):
    monkeypatch.setenv("GPUNN_NUM_THREADS", "2")

    def fn(lo, hi):
        if lo >= 50:
            raise ValueError(f"chunk {lo}")

    with pytest.raises(ValueError, match="chunk"):
        numpy_backend.parallel_chunks(fn, 100, pieces=4)


def test_a_child_forked_while_the_blas_setting_was_held_runs_small_products():
    """Every small float32 product takes the lock under which OpenBLAS is set to one thread: a child forked
    while another thread held it (a DataLoader worker forked during a conv or a small product elsewhere)
    must not wait forever on a lock no thread of its own will release."""
    import os
    import signal

    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    be = NumpyBackend()
    rng = np.random.default_rng(12)
    a, b = rng.standard_normal((9, 7), dtype=np.float32), rng.standard_normal((7, 41), dtype=np.float32)
    with numpy_backend._blas_lock:  # (held by "another thread" at the moment of the fork)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.alarm(10)
                code = 0 if np.array_equal(be.matmul(a, b), np.matmul(a, b)) else 2
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _gemm_workers_or_skip():
    if numpy_backend._load_gemm() is None:
        pytest.skip("the GEMM's workers need an AVX-512 CPU and the Numba kernels")


@pytest.mark.parametrize("name", ["sgd", "adam", "adagrad", "adadelta", "rmsprop"])
def test_large_float32_steps_run_on_the_gemm_workers(rng, monkeypatch, kernels, name):
    """A float32 step from _FLAT_PARALLEL_MIN elements on is one job of the GEMM's workers (its chunk
    function), whose result equals the reference bit for bit (the option sweeps above cover the flags)."""
    if kernels != "numba":
        pytest.skip("the workers run Numba kernels")
    _gemm_workers_or_skip()
    monkeypatch.setenv("GPUNN_NUM_THREADS", "2")
    n = 3 * numpy_backend._FLAT_CHUNK + 1234  # a short last chunk
    monkeypatch.setattr(numpy_backend, "_FLAT_PARALLEL_MIN", n)
    opts = {"sgd": dict(lr=0.03, momentum=0.9, weight_decay=0.01), "adam": dict(step=3, lr=1e-3, amsgrad=True)}
    opts = opts.get(name, dict(step=2) if name == "adagrad" else dict(weight_decay=0.1))
    n_state = {"sgd": 1, "adam": 3, "adagrad": 1, "adadelta": 2, "rmsprop": 1}[name]
    p, g = _bufs(rng, n, np.float32, 2)
    state = [np.abs(a) + np.float32(0.01) for a in _bufs(rng, n, np.float32, n_state)]
    ours, ref = [p.copy(), g.copy(), *(s.copy() for s in state)], [p, g, *state]
    jobs = []
    real = numpy_backend._on_workers
    monkeypatch.setattr(numpy_backend, "_on_workers", lambda *a: jobs.append(a[1]) or real(*a))
    getattr(NumpyBackend(), name + "_step")(*ours, **opts)
    getattr(reference, name + "_step")(np, *ref, **opts)
    assert jobs and jobs[0].__name__ == "run_chunks"
    for a, b in zip(ours, ref):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_step_finds_the_gemm_workers_busy_or_not_float32_and_splits_it_itself(rng, monkeypatch, kernels, dtype):
    """Workers held by another thread's product, or float64 buffers: the step is split by parallel_chunks."""
    if kernels != "numba":
        pytest.skip("the workers run Numba kernels")
    _gemm_workers_or_skip()
    monkeypatch.setenv("GPUNN_NUM_THREADS", "2")
    n = (1 << 19) + 5
    p, g, m, v = _bufs(rng, n, dtype, 4)
    v = np.abs(v)
    ours, ref = [a.copy() for a in (p, g, m, v)], [p, g, m, v]
    split = []
    real = numpy_backend.parallel_chunks
    monkeypatch.setattr(numpy_backend, "parallel_chunks", lambda fn, k: split.append(k) or real(fn, k))
    with numpy_backend._gemm_lock:  # (as while another thread's product runs on the workers)
        NumpyBackend().adam_step(*ours, step=1, lr=1e-3)
    reference.adam_step(np, *ref, step=1, lr=1e-3)
    assert split == [n]
    for a, b in zip(ours, ref):
        assert np.array_equal(a, b)


def test_pack_takes_only_what_the_chunk_functions_read():
    nk = numpy_backend._numba()
    if nk is None:
        pytest.skip("no Numba")
    a = np.ones(10, np.float32)
    f = np.float32
    good = (a, a, a, f(0.1), f(0.9), f(0.0), True, False, np.bool_(False), False)
    packed, scalars = nk.pack("sgd_step", 10, 4, good)
    assert packed[:2].tolist() == [10, 4] and packed[2] == scalars.ctypes.data
    assert packed[3:].tolist() == [a.ctypes.data] * 3 + [1, 0, 0, 0]
    assert scalars[:3].tolist() == [f(0.1), f(0.9), 0.0]
    assert nk.pack("sgd_step", 10, 4, good[:-1]) is None  # a flag short
    assert nk.pack("sgd_step", 10, 4, (a.astype(np.float64),) + good[1:]) is None
    assert nk.pack("sgd_step", 10, 4, (a[::2],) + good[1:]) is None  # not contiguous
    assert nk.pack("sgd_step", 11, 4, good) is None  # shorter than n
    assert nk.pack("sgd_step", 10, 4, good[:3] + (0.1,) + good[4:]) is None  # a Python float: not float32
    ro = a.copy()
    ro.flags.writeable = False
    assert nk.pack("sgd_step", 10, 4, (ro,) + good[1:]) is None  # written: the param...
    assert nk.pack("sgd_step", 10, 4, good[:2] + (ro,) + good[3:]) is None  # ...and the momentum buffer
    assert nk.pack("sgd_step", 10, 4, good[:1] + (ro,) + good[2:]) is not None  # the gradient: only read
    unaligned = np.frombuffer(bytearray(44), np.float32, 10, offset=2)
    assert nk.pack("sgd_step", 10, 4, (unaligned,) + good[1:]) is None


def test_a_large_step_on_read_only_memory_is_refused_not_written(rng, monkeypatch, kernels):
    """A read-only parameter (here over an immutable bytes object) is not handed to the workers, whose chunk
    function would write it regardless (on a read-only file mapping: a segfault); a read-only gradient is."""
    if kernels != "numba":
        pytest.skip("the workers run Numba kernels")
    _gemm_workers_or_skip()
    monkeypatch.setenv("GPUNN_NUM_THREADS", "2")
    n = (1 << 19) + 5
    raw = rng.standard_normal(n).astype(np.float32).tobytes()
    frozen = np.frombuffer(raw, np.float32)
    g, m = _bufs(rng, n, np.float32, 2)
    args = (np.float32(0.1), np.float32(0.9), np.float32(0), True, False, False, False)
    nk = numpy_backend._numba()
    assert not numpy_backend._flat_on_workers(nk, "sgd_step", n, (frozen, g, m.copy(), *args))
    assert frozen.tobytes() == raw
    p, ref = frozen.copy(), [frozen.copy(), frozen.copy(), m.copy()]
    assert numpy_backend._flat_on_workers(nk, "sgd_step", n, (p, frozen, m, *args))
    reference.sgd_step(np, *ref, lr=0.1, momentum=0.9)
    assert np.array_equal(p, ref[0]) and np.array_equal(m, ref[2])


def test_a_woken_worker_leaves_its_wakers_cpu():
    """_leave_cpu moves the calling thread off the given CPU when it runs there, and keeps its affinity."""
    import os
    import threading

    if numpy_backend._current_cpu() < 0 or not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs sched_getcpu, sched_setaffinity and two CPUs")
    seen = {}

    def worker():
        allowed = os.sched_getaffinity(0)
        here = numpy_backend._current_cpu()
        numpy_backend._leave_cpu(here)
        seen.update(moved=numpy_backend._current_cpu() != here, same_mask=os.sched_getaffinity(0) == allowed)
        numpy_backend._leave_cpu(-1)  # (unknown: nothing happens)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == {"moved": True, "same_mask": True}


def test_the_current_cpu_is_unknown_where_the_c_library_cannot_be_opened_by_none(monkeypatch):
    """On Windows ctypes.CDLL(None) raises TypeError: _current_cpu (called on every wake of a sleeping GEMM
    worker) says -1 instead of raising out of the product or optimizer step."""
    import ctypes

    def no_process_handle(name, *args, **kwargs):
        raise TypeError("argument of type 'NoneType' is not iterable")

    monkeypatch.setattr(numpy_backend, "_sched_getcpu", None)
    monkeypatch.setattr(ctypes, "CDLL", no_process_handle)
    assert numpy_backend._current_cpu() == -1
    numpy_backend._leave_cpu(0)  # (nothing to do: its own CPU is unknown)


def test_a_job_in_flight_at_a_fork_is_not_run_by_the_childs_workers(monkeypatch, kernels):
    """A child forked while another thread's job was posted (its chunks not all claimed) inherits the shared
    counters and the workers' rows of that job; the child's new worker, started on its row, must not claim
    the dead job's chunks (it wrote the child's copy of the arrays, and its late FINISHED count could end the
    child's next job before a chunk of it was written)."""
    import os
    import signal
    import time

    if kernels != "numba":
        pytest.skip("the workers run Numba kernels")
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    _gemm_workers_or_skip()
    monkeypatch.setenv("GPUNN_NUM_THREADS", "2")
    nk, gemm = numpy_backend._numba(), numpy_backend._gemm_module
    n = 2 * numpy_backend._FLAT_CHUNK
    p, g = np.ones(n, np.float32), np.ones(n, np.float32)
    f = np.float32
    step = (f(1), f(0), f(0), False, False, False, False)  # p -= 1 * g
    packed = nk.pack("sgd_step", n, numpy_backend._FLAT_CHUNK, (p, g, p, *step))
    fn = nk.chunk_function("sgd_step")
    job = np.zeros(gemm.JOB_FIELDS, np.int64)
    job[gemm.FN], job[gemm.ARGS], job[gemm.CHUNKS] = fn, packed[0].ctypes.data, 2
    assert numpy_backend._flat_on_workers(nk, "sgd_step", n, (p.copy(), g, p.copy(), *step))
    time.sleep(0.05)  # (the parent's worker settled: no thread of it mid-import at the fork)
    with numpy_backend._gemm_lock:  # (no job of this process's own runs meanwhile)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.alarm(10)
                # the memory as a fork left it while another thread's job was posted: its number, the counters
                # and the worker's row (posted here in the child: the parent's live worker must not see it)
                seq = int(numpy_backend._gemm_seq[0]) + 1
                numpy_backend._gemm_seq[0] = seq
                gemm.launch(job, seq, numpy_backend._gemm_ctrls[:1], numpy_backend._gemm_counters, np.empty(0, f), 0)
                numpy_backend._forget_pool()  # (what the fork ran)
                with numpy_backend._gemm_lock:
                    numpy_backend._gemm_worker_pool(1)  # the child's worker, on row 0
                time.sleep(0.3)  # (it spins, then sleeps)
                code = 0 if (p == 1).all() else 2
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_sgd_without_momentum_runs_the_flat_kernel(rng, monkeypatch, kernels):
    """gpunn.optim.SGD passes no momentum buffer when momentum is 0; the fused kernel runs (not the reference)."""
    ran = []
    real = numpy_backend._run_flat
    monkeypatch.setattr(numpy_backend, "_run_flat", lambda name, *a, **k: ran.append(name) or real(name, *a, **k))
    p, g = _bufs(rng, 1000, np.float32, 2)
    p2 = p.copy()
    NumpyBackend().sgd_step(p, g, None, lr=0.1, weight_decay=0.01)
    reference.sgd_step(np, p2, g.copy(), None, lr=0.1, weight_decay=0.01)
    assert ran == ["sgd_step"] and np.array_equal(p, p2)
    with pytest.raises(ValueError, match="needs a momentum_buf"):
        NumpyBackend().sgd_step(p, g, None, lr=0.1, momentum=0.9)


@pytest.mark.parametrize("n", [1000, (1 << 19) + 5])
def test_a_step_on_a_read_only_parameter_raises_and_keeps_the_kernels_on(rng, monkeypatch, kernels, n):
    """Numba cannot compile a write into a read-only array: that is the caller's error (NumPy's ValueError),
    not a broken kernel -- the kernels must stay on for the next step (they were all turned off, with a
    warning that Numba was unavailable)."""
    monkeypatch.setenv("GPUNN_NUM_THREADS", "2")
    p, g, m = _bufs(rng, n, np.float32, 3)
    p.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        NumpyBackend().sgd_step(p, g, m, lr=0.1, momentum=0.9)
    assert (numpy_backend._numba() is not None) == (kernels == "numba")
