"""A captured step's linear layers on the numpy backend: the products and elementwise passes of a layer,
or of a whole chain of layers, in one call (gpunn.train.capture through NumpyBackend.captured_*).

Imported only when a captured step replays linear layers (its kernels compile, or load from the cache,
then), on top of gpunn.backend.numba_gemm, whose jobs, workers and kernel these run.
"""

from __future__ import annotations

import numpy as np
from numba import carray, njit

from gpunn.backend.numba_gemm import (
    _KERNEL,
    JOB_FIELDS,
    STATE,
    _atomic_load,
    _f32_pointer,
    launch,
    plan,
    run_alone,
    run_job,
)


# ----------------------------------------------------------------------------------------------
# a captured step's linear layers: the products and elementwise passes of one layer in one call
# ----------------------------------------------------------------------------------------------
# gpunn.train.capture replays a linear layer (+ ReLU) of a captured step through these instead of ~6 NumPy
# and GEMM calls from Python (~5 us of dispatch each): the same products -- planned as NumpyBackend.matmul
# plans them, so the same bits whatever the split -- and the same elementwise operations in the same order
# as reference.linear_act / linear_act_backward, so the results equal the eager step's bit for bit.
@njit(**_KERNEL)
def _product_now(a, b, c, threads, parallel_min, chunks_per_thread, ctrls, counters, seq_box, work):
    """c = a @ b as NumpyBackend.matmul computes it (the GEMM lock held by the caller); False when the
    kernel does not take the operands or ``work`` is too small (nothing was written)."""
    m, k, n = a.shape[0], a.shape[1], b.shape[1]
    if m * n * k < parallel_min:
        threads = 1
    job = np.empty(JOB_FIELDS, np.int64)
    need = plan(a, b, c, threads, chunks_per_thread, job)
    if need < 0 or need * threads > work.size:
        return False
    if threads > 1:
        seq = seq_box[0] + 1
        seq_box[0] = seq
        launch(job, seq, ctrls[: threads - 1], counters, work, need)
        run_job(job, counters, seq, work[:need])
    else:
        run_alone(job, work[:need])
    return True


# x, w and the bias are read only: any layout, read-only arrays too (a writable one converts)
_RO2, _RO1 = "Array(float32, 2, 'A', readonly=True)", "Array(float32, 1, 'A', readonly=True)"
_LINEAR_SIG = (
    f"boolean({_RO2}, {_RO2}, {_RO1}, float32[:, ::1], boolean, boolean, "
    "int64, int64, int64, int64[:, ::1], int64[::1], int64[::1], float32[::1])"
)


@njit(_LINEAR_SIG, **_KERNEL)
def linear_forward(x, w, bias, z, has_bias, relu, threads, parallel_min, chunks, ctrls, counters, seq_box, work):
    """z = x @ w.T; z += bias (each row); relu: z = 0 where z < 0 (NaN and -0.0 kept). False when the
    product cannot run here (then nothing was written)."""
    if not _product_now(x, w.T, z, threads, parallel_min, chunks, ctrls, counters, seq_box, work):
        return False
    zero = np.float32(0)
    for i in range(z.shape[0]):
        row = z[i]
        for j in range(z.shape[1]):
            v = row[j] + bias[j] if has_bias else row[j]
            if relu and v < zero:
                v = zero
            row[j] = v
    return True


@njit(
    f"boolean(float32[:, ::1], float32[:, ::1], float32[:, ::1], {_RO2}, {_RO2}, float32[:, ::1], "
    "float32[:, ::1], float32[::1], boolean, boolean, boolean, boolean, int64, int64, int64, int64[:, ::1], "
    "int64[::1], int64[::1], float32[::1])",
    **_KERNEL,
)
def linear_backward(
    dy,
    y,
    dz,
    x,
    w,
    dx,
    dw,
    db,
    relu,
    need_dx,
    need_dw,
    need_db,
    threads,
    parallel_min,
    chunks,
    ctrls,
    counters,
    seq_box,
    work,
):
    """dz = (relu: 0 where y <= 0, else dy; else dz is dy); dx = dz @ w; dw = dz.T @ x; db = dz[0] + dz[1] +
    ... (NumPy's sum(axis=0) order). False when a product cannot run here (dz may have been written)."""
    zero = np.float32(0)
    if relu:
        for i in range(dy.shape[0]):
            for j in range(dy.shape[1]):
                dz[i, j] = zero if y[i, j] <= zero else dy[i, j]
    if need_dx and not _product_now(dz, w, dx, threads, parallel_min, chunks, ctrls, counters, seq_box, work):
        return False
    if need_dw and not _product_now(dz.T, x, dw, threads, parallel_min, chunks, ctrls, counters, seq_box, work):
        return False
    if need_db:
        for j in range(dz.shape[1]):
            db[j] = dz[0, j]
        for i in range(1, dz.shape[0]):
            for j in range(dz.shape[1]):
                db[j] += dz[i, j]
    return True


# A chain of linear layers (a captured MLP): one call runs every layer's forward, one every layer's
# backward, from a table of the plan's buffer addresses (one row per layer, CHAIN_* columns); the caller
# (NumpyBackend.captured_chain_*) checks the arrays behind the addresses before each call.
C_X, C_M, C_K, C_N, C_W, C_B, C_Z, C_RELU, C_DZ, C_DX, C_DW, C_DB = range(12)
CHAIN_FIELDS = 12


@njit(**_KERNEL)
def _f32_2d(address, rows, cols):
    return carray(_f32_pointer(address), (rows, cols))


@njit("boolean(int64[:, ::1], int64, int64, int64, int64[:, ::1], int64[::1], int64[::1], float32[::1])", **_KERNEL)
def chain_forward(table, threads, parallel_min, chunks, ctrls, counters, seq_box, work):
    """linear_forward for each layer (row of ``table``) in order; False at the first that cannot run."""
    for r in range(table.shape[0]):
        t = table[r]
        m, k, n = t[C_M], t[C_K], t[C_N]
        x, w, z = _f32_2d(t[C_X], m, k), _f32_2d(t[C_W], n, k), _f32_2d(t[C_Z], m, n)
        bias = carray(_f32_pointer(t[C_B] if t[C_B] else t[C_Z]), n)
        if not linear_forward(x, w, bias, z, t[C_B] != 0, t[C_RELU] != 0, threads, parallel_min, chunks, ctrls,
                              counters, seq_box, work):  # fmt: skip
            return False
    return True


@njit(
    "boolean(int64[:, ::1], float32[:, ::1], int64, int64, int64, int64[:, ::1], int64[::1], int64[::1], float32[::1])",
    **_KERNEL,
)
def chain_backward(table, dlogits, threads, parallel_min, chunks, ctrls, counters, seq_box, work):
    """linear_backward for each layer from the last, the gradient ``dlogits`` of the last layer's output
    flowing down through the layers' dx buffers; a layer without C_DX ends the chain. Columns C_DZ (0: dz is
    dy), C_DW, C_DB: 0 when not wanted."""
    dy = dlogits
    for r in range(table.shape[0] - 1, -1, -1):
        t = table[r]
        m, k, n = t[C_M], t[C_K], t[C_N]
        x, w, y = _f32_2d(t[C_X], m, k), _f32_2d(t[C_W], n, k), _f32_2d(t[C_Z], m, n)
        relu = t[C_RELU] != 0
        dz = _f32_2d(t[C_DZ], m, n) if relu else dy
        dx = _f32_2d(t[C_DX], m, k) if t[C_DX] else _f32_2d(t[C_Z], 1, 1)  # (not written)
        dw = _f32_2d(t[C_DW], n, k) if t[C_DW] else _f32_2d(t[C_Z], 1, 1)
        db = carray(_f32_pointer(t[C_DB] if t[C_DB] else t[C_Z]), n)
        if not linear_backward(dy, y, dz, x, w, dx, dw, db, relu, t[C_DX] != 0, t[C_DW] != 0, t[C_DB] != 0,
                               threads, parallel_min, chunks, ctrls, counters, seq_box, work):  # fmt: skip
            return False
        if not t[C_DX]:
            return True
        dy = dx
    return True


@njit("int64(int64[:, ::1])", **_KERNEL)
def sleeping_workers(ctrls):
    """The bit mask of the workers (rows of ``ctrls``) that sleep: a call into this module cannot wake them."""
    mask = 0
    for w in range(ctrls.shape[0]):
        if _atomic_load(ctrls[w], STATE) == 1:
            mask |= 1 << w
    return mask
