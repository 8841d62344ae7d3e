"""float32 matrix products for the numpy backend on AVX-512 CPUs: a register-tiled kernel written in LLVM IR.

Imported by ``NumpyBackend`` (``numpy_backend._load_gemm``: on the first product or large float32 optimizer
step that can use it, never by ``import gpunn``); it imports ``gpunn.backend.numba_cpu``, whose chunk
functions its workers also run (``run_chunks``). NumPy's
BLAS (OpenBLAS) picks its kernels by the CPU it finds or by ``OPENBLAS_CORETYPE``; where it runs its AVX2
kernels on an AVX-512 CPU (this project's machines set ``OPENBLAS_CORETYPE=Haswell``), a GEMM runs at about
half the speed the CPU has. gpunn's own GEMM runs at the CPU's AVX-512 speed whatever OpenBLAS chose; it is
used only where the CPU has AVX-512 (``AVAILABLE``), else NumPy's BLAS runs (see NumpyBackend.matmul).

The micro-kernel keeps a 6 x 64 block of C in 24 zmm registers: per step p of the inner dimension it loads
one row of B (4 vectors of 16), broadcasts 6 elements of A and does 24 fused multiply-adds (measured here:
~250 GFLOP/s on one core, against OpenBLAS's ~125 with AVX2 kernels, ~240 with its AVX-512 ones). It is
built with llvmlite (Numba's LLVM binding) as an internal function of the calling kernel's module: vector
types and ``llvm.fma`` are explicit, so the code does not depend on the auto-vectorizer, and
``@njit(cache=True)`` caches it with the kernel. Narrower kernels (16, 32, 48 columns) take the last
columns of C.

Operands are read in place where their layout allows -- A with any strides (its elements are broadcast one
at a time), B when its rows are contiguous -- so a row-major or transposed A and a row-major B cost no
packing. A B with strided rows (``x @ W.T``) is transposed first, 16 x 16 blocks at a time in registers
(``_transpose``). The inner dimension is split into near-equal blocks of at most ``KC``; C is written on the
first block and added to on the next (so the sum over p runs block by block, each block's sum in order p,
FMA-rounded: results differ from BLAS's in the last bits, as BLAS's own kernels do from each other).
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# (_f32_pointer is an intrinsic: inlined, so a change to it needs a cache refresh)
from gpunn.backend.numba_cpu import _CHUNK_SIG, _f32_pointer, cached_cfunc, share_cache

MR = 6  # rows of C per micro-kernel call
NR = 64  # columns of C per micro-kernel call (4 vectors of 16 float32)
KC = 256  # most of the inner dimension per block (a 6 x KC block of A and KC x 64 of B stay in L1/L2)

AVAILABLE = "+avx512f" in llvm.get_host_cpu_features().flatten().split(",")

_F32 = ir.FloatType()
_V16 = ir.VectorType(_F32, 16)
_I64 = ir.IntType(64)
_I32 = ir.IntType(32)


def _c(v: int) -> ir.Constant:
    return ir.Constant(_I64, v)


def _splat(builder, x):
    undef = ir.Constant(_V16, ir.Undefined)
    v = builder.insert_element(undef, x, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, undef, ir.Constant(ir.VectorType(_I32, 16), [0] * 16))


def _vptr(builder, ptr, offset):
    return builder.bitcast(builder.gep(ptr, [offset]), _V16.as_pointer())


def _micro_kernel(module: ir.Module, nv: int) -> ir.Function:
    """void f(kc, a, sai, sap, b, sbp, c, ldc, accumulate): for i < MR, j < 16 nv
    c[i ldc + j] (+)= sum_{p < kc} a[i sai + p sap] * b[p sbp + j]  (kc >= 1)."""
    name = f"gpunn_sgemm_{MR}x{16 * nv}"
    if name in module.globals:
        return module.globals[name]
    fp = _F32.as_pointer()
    fnty = ir.FunctionType(ir.VoidType(), [_I64, fp, _I64, _I64, fp, _I64, fp, _I64, ir.IntType(1)])
    fn = ir.Function(module, fnty, name=name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")  # one register allocation for the tile, whatever the caller looks like
    kc, a, sai, sap, b, sbp, c, ldc, accumulate = fn.args
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    fma = cgutils.get_or_insert_function(module, ir.FunctionType(_V16, [_V16, _V16, _V16]), "llvm.fma.v16f32")
    rows = [builder.gep(a, [builder.mul(sai, _c(i))]) for i in range(MR)]
    entry = builder.block
    loop, done = fn.append_basic_block("loop"), fn.append_basic_block("done")
    builder.branch(loop)
    builder.position_at_end(loop)
    p = builder.phi(_I64)
    p.add_incoming(_c(0), entry)
    acc = [[builder.phi(_V16) for _ in range(nv)] for _ in range(MR)]
    zero = ir.Constant(_V16, [0.0] * 16)
    for row in acc:
        for phi in row:
            phi.add_incoming(zero, entry)
    brow = builder.gep(b, [builder.mul(p, sbp)])
    bv = [builder.load(_vptr(builder, brow, _c(16 * j)), align=4) for j in range(nv)]
    ap = builder.mul(p, sap)
    new = []
    for i in range(MR):
        av = _splat(builder, builder.load(builder.gep(rows[i], [ap])))
        new.append([builder.call(fma, [av, bv[j], acc[i][j]]) for j in range(nv)])
    p_next = builder.add(p, _c(1))
    for i in range(MR):
        for j in range(nv):
            acc[i][j].add_incoming(new[i][j], loop)
    p.add_incoming(p_next, loop)
    builder.cbranch(builder.icmp_signed("<", p_next, kc), loop, done)
    builder.position_at_end(done)
    with builder.if_else(accumulate) as (add, store):
        for branch, adding in ((add, True), (store, False)):
            with branch:
                for i in range(MR):
                    for j in range(nv):
                        ptr = _vptr(builder, c, builder.add(builder.mul(ldc, _c(i)), _c(16 * j)))
                        v = builder.fadd(builder.load(ptr, align=4), new[i][j]) if adding else new[i][j]
                        builder.store(v, ptr, align=4)
    builder.ret_void()
    return fn


def _transpose16_fn(module: ir.Module) -> ir.Function:
    """void f(src, ss, dst, ds): dst[j ds + i] = src[i ss + j] for i, j < 16, in registers: 16 row loads,
    4 butterfly stages of two-source shuffles (stage k swaps the off-diagonal k x k blocks), 16 row stores."""
    name = "gpunn_transpose16"
    if name in module.globals:
        return module.globals[name]
    fp = _F32.as_pointer()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [fp, _I64, fp, _I64]), name=name)
    fn.linkage = "internal"
    src, ss, dst, ds = fn.args
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    v = [builder.load(_vptr(builder, src, builder.mul(ss, _c(i))), align=4) for i in range(16)]
    for k in (1, 2, 4, 8):
        lo = ir.Constant(ir.VectorType(_I32, 16), [lane if lane & k == 0 else 16 + lane - k for lane in range(16)])
        hi = ir.Constant(ir.VectorType(_I32, 16), [lane + k if lane & k == 0 else 16 + lane for lane in range(16)])
        for i in range(16):
            if i & k == 0:
                v[i], v[i + k] = builder.shuffle_vector(v[i], v[i + k], lo), builder.shuffle_vector(v[i], v[i + k], hi)
    for j in range(16):
        builder.store(v[j], _vptr(builder, dst, builder.mul(ds, _c(j))), align=4)
    builder.ret_void()
    return fn


def _data(context, builder, arrty, value, offset):
    return builder.gep(context.make_array(arrty)(context, builder, value).data, [offset])


def _kernel_intrinsic(nv: int):
    @intrinsic
    def kernel(typingctx, kc, a, aoff, sai, sap, b, boff, sbp, c, coff, ldc, accumulate):
        sig = types.void(kc, a, aoff, sai, sap, b, boff, sbp, c, coff, ldc, accumulate)

        def codegen(context, builder, signature, args):
            kc_, a_, aoff_, sai_, sap_, b_, boff_, sbp_, c_, coff_, ldc_, acc_ = args
            aty, bty, cty = signature.args[1], signature.args[5], signature.args[8]
            fn = _micro_kernel(builder.module, nv)
            builder.call(
                fn,
                [
                    kc_,
                    _data(context, builder, aty, a_, aoff_),
                    sai_,
                    sap_,
                    _data(context, builder, bty, b_, boff_),
                    sbp_,
                    _data(context, builder, cty, c_, coff_),
                    ldc_,
                    acc_,
                ],
            )
            return context.get_dummy_value()

        return sig, codegen

    return kernel


_k16, _k32, _k48, _k64 = (_kernel_intrinsic(nv) for nv in (1, 2, 3, 4))


@intrinsic
def _transpose16(typingctx, src, soff, ss, dst, doff, ds):
    sig = types.void(src, soff, ss, dst, doff, ds)

    def codegen(context, builder, signature, args):
        src_, soff_, ss_, dst_, doff_, ds_ = args
        fn = _transpose16_fn(builder.module)
        s = _data(context, builder, signature.args[0], src_, soff_)
        d = _data(context, builder, signature.args[3], dst_, doff_)
        builder.call(fn, [s, ss_, d, ds_])
        return context.get_dummy_value()

    return sig, codegen


@njit(nogil=True, inline="always")
def _tile(nv, kc, a, aoff, sai, sap, b, boff, sbp, c, coff, ldc, accumulate):
    if nv == 4:
        _k64(kc, a, aoff, sai, sap, b, boff, sbp, c, coff, ldc, accumulate)
    elif nv == 3:
        _k48(kc, a, aoff, sai, sap, b, boff, sbp, c, coff, ldc, accumulate)
    elif nv == 2:
        _k32(kc, a, aoff, sai, sap, b, boff, sbp, c, coff, ldc, accumulate)
    else:
        _k16(kc, a, aoff, sai, sap, b, boff, sbp, c, coff, ldc, accumulate)


_KERNEL = {"nogil": True, "cache": True, "error_model": "numpy", "boundscheck": False}


@intrinsic
def _atomic_load(typingctx, array, index):
    """array[index] of an int64 array, sequentially consistent."""

    def codegen(context, builder, signature, args):
        return builder.load_atomic(_data(context, builder, signature.args[0], args[0], args[1]), "seq_cst", 8)

    return types.int64(array, index), codegen


@intrinsic
def _atomic_store(typingctx, array, index, value):
    def codegen(context, builder, signature, args):
        builder.store_atomic(args[2], _data(context, builder, signature.args[0], args[0], args[1]), "seq_cst", 8)
        return context.get_dummy_value()

    return types.void(array, index, types.int64), codegen


@intrinsic
def _pause(typingctx):
    """x86's spin-wait hint (saves power, frees the core's resources for a sibling thread)."""

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
        builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen


@njit(**_KERNEL)
def _transpose(src, ss, m, n, dst, ds):
    """dst[j ds + i] = src[i ss + j] for i < m, j < n (1-D float32 views, rows of unit stride)."""
    mf, nf = m - m % 16, n - n % 16
    for i0 in range(0, mf, 16):
        for j0 in range(0, nf, 16):
            _transpose16(src, i0 * ss + j0, ss, dst, j0 * ds + i0, ds)
    for i in range(m):
        for j in range(nf if i < mf else 0, n):
            dst[j * ds + i] = src[i * ss + j]


@njit(**_KERNEL)
def _gemm(a, sai, sap, m, k, b, sbp, sbn, n, c, ldc, work):
    """c[i ldc + j] = sum_p a[i sai + p sap] b[p sbp + j sbn] for i < m, j < n (1-D float32 views)."""
    npad = (n + 15) // 16 * 16
    nb = n - n % 16 if sbn == 1 else 0  # columns of b read in place; the rest padded into bt
    # bt: b's columns [nb, n) row by row, zero-padded to a multiple of 16 (all of b when its rows are strided)
    wt = npad - nb
    bt = work[: k * wt]
    if wt:
        if nb == 0 and sbp == 1:  # b = w.T with w's rows contiguous: transpose w back
            _transpose(b, sbn, n, k, bt, wt)
        else:
            for p in range(k):
                for j in range(nb, n):
                    bt[p * wt + j - nb] = b[p * sbp + j * sbn]
        for p in range(k):
            for j in range(n - nb, wt):
                bt[p * wt + j] = 0.0
    # the last m % MR rows of a, zero-padded to MR rows, packed: element (i, p) at i + p MR
    mf = m - m % MR
    at = work[k * wt : k * wt + MR * k]
    if mf < m:
        for p in range(k):
            for i in range(MR):
                at[p * MR + i] = a[(mf + i) * sai + p * sap] if mf + i < m else 0.0
    tile = work[k * wt + MR * k : k * wt + MR * k + MR * NR]
    blocks = (k + KC - 1) // KC
    step = (k + blocks - 1) // blocks
    for p0 in range(0, k, step):
        kc = min(step, k - p0)
        more = p0 > 0
        j0 = 0
        while j0 < npad:
            # panels of b's in-place columns [0, nb), then of bt's [nb, npad): none straddles nb
            width = min(NR, (nb if j0 < nb else npad) - j0)  # a multiple of 16
            nv = width // 16
            valid = min(width, n - j0)
            if j0 < nb:
                bsrc, boff, sb = b, p0 * sbp + j0, sbp
            else:
                bsrc, boff, sb = bt, p0 * wt + (j0 - nb), wt
            for i0 in range(0, m, MR):
                if i0 < mf and valid == width:
                    _tile(nv, kc, a, i0 * sai + p0 * sap, sai, sap, bsrc, boff, sb, c, i0 * ldc + j0, ldc, more)
                    continue
                if i0 < mf:
                    _tile(nv, kc, a, i0 * sai + p0 * sap, sai, sap, bsrc, boff, sb, tile, 0, NR, False)
                else:
                    _tile(nv, kc, at, p0 * MR, 1, MR, bsrc, boff, sb, tile, 0, NR, False)
                for i in range(min(MR, m - i0)):
                    for j in range(valid):
                        if more:
                            c[(i0 + i) * ldc + j0 + j] += tile[i * NR + j]
                        else:
                            c[(i0 + i) * ldc + j0 + j] = tile[i * NR + j]
            j0 += width


@njit(inline="always")
def _swapped(m, k, n, sap, sbn):
    """Whether a product whose b has strided rows and a contiguous ones (x @ W.T) is cheaper as c.T =
    b.T @ a.T (transposing a, k m elements, and the result, m n) than by transposing b (k n)."""
    return sbn != 1 and sap == 1 and k * m + m * n < k * n


# A job: the product as addresses and element strides, and how it is cut into chunks, in an int64 array.
# A chunk is a range of whole 16-column panels of c (WIDE) or of whole MR-row panels; every element of c is
# computed the same way whichever chunk, thread or thread count computes it.
# Every job names the chunk function that runs a chunk (FN: its address, ARGS: its first argument): for a
# product, product_chunk and the job itself; for a flat step, its chunk function and args (see run_chunks).
A_ADDR, SAI, SAP, M, K, B_ADDR, SBP, SBN, N, C_ADDR, LDC, W_ADDR, W_LEN, WIDE, UNIT, PER_CHUNK, CHUNKS, FN, ARGS = (
    range(19)
)
JOB_FIELDS = 19


@njit(inline="always")
def _work_size(m, k, n, sap, sbn):
    """Elements of the float32 scratch of an (m, k) @ (k, n) product (see _product)."""
    extra = 0
    if _swapped(m, k, n, sap, sbn):  # c.T (n m), then the product b.T @ a.T, whose second operand is strided
        extra, m, n, sbn = n * m, n, m, 0
    npad = (n + 15) // 16 * 16
    wt = npad - (n - n % 16 if sbn == 1 else 0)
    return extra + k * wt + MR * k + MR * NR


_OPERAND = types.Array(types.float32, 2, "A", readonly=True)  # a and b: read only (a writable array converts)


_PLAN_SIG = types.int64(_OPERAND, _OPERAND, types.float32[:, :], types.int64, types.int64, types.int64[::1])


@njit(**_KERNEL)  # (one signature, _PLAN_SIG: see load)
def plan(a, b, c, threads, chunks_per_thread, t):
    """Describe c = a @ b in the job ``t`` for ``threads`` threads (about ``chunks_per_thread`` chunks each:
    of 16-column panels, or of MR-row panels when the product is narrow); return the float32 scratch each
    thread needs -- or -1 when the kernel does not take the product: shapes that do not match, a stride
    that is negative or not a whole number of elements, rows of c that are not contiguous or overlap, or c
    sharing memory with a or b (judged by address ranges)."""
    m, k, n = a.shape[0], a.shape[1], b.shape[1]
    for st in (a.strides[0], a.strides[1], b.strides[0], b.strides[1], c.strides[0]):
        if st < 0 or st % 4:
            return -1
    if c.strides[1] != 4 or (m > 1 and c.strides[0] < 4 * n) or m < 1 or n < 1 or k < 1:
        return -1
    if b.shape[0] != k or c.shape[0] != m or c.shape[1] != n:  # (callers in Numba pass buffers unchecked)
        return -1
    a_lo, b_lo, c_lo = a.ctypes.data, b.ctypes.data, c.ctypes.data
    a_hi = a_lo + a.strides[0] * (m - 1) + a.strides[1] * (k - 1) + 4
    b_hi = b_lo + b.strides[0] * (k - 1) + b.strides[1] * (n - 1) + 4
    c_hi = c_lo + c.strides[0] * (m - 1) + 4 * n
    if (c_lo < a_hi and a_lo < c_hi) or (c_lo < b_hi and b_lo < c_hi):
        return -1
    t[A_ADDR], t[SAI], t[SAP], t[M], t[K] = a_lo, a.strides[0] // 4, a.strides[1] // 4, m, k
    t[B_ADDR], t[SBP], t[SBN], t[N] = b_lo, b.strides[0] // 4, b.strides[1] // 4, n
    t[C_ADDR], t[LDC] = c_lo, c.strides[0] // 4
    wide = n >= 32 * threads or threads == 1
    unit = 16 if wide else MR
    size = n if wide else m
    panels = (size + unit - 1) // unit
    per_chunk = panels if threads == 1 else max(1, panels // (threads * chunks_per_thread))
    if wide and per_chunk < NR // 16 and panels >= threads * (NR // 16):
        per_chunk = NR // 16  # a chunk of whole 64-column panels: the 16-wide kernel is load-bound
    chunks = (panels + per_chunk - 1) // per_chunk
    t[WIDE], t[UNIT], t[PER_CHUNK], t[CHUNKS] = wide, unit, per_chunk, chunks
    # the scratch of the largest chunk and of the last one (narrower: it may take the other way of _product)
    span = min(size, per_chunk * unit)
    last = size - per_chunk * unit * (chunks - 1)
    if wide:
        return max(_work_size(m, k, span, t[SAP], t[SBN]), _work_size(m, k, last, t[SAP], t[SBN]))
    return max(_work_size(span, k, n, t[SAP], t[SBN]), _work_size(last, k, n, t[SAP], t[SBN]))


@njit(inline="always")  # (inlined where it is called: compiled once, with the chunk function)
def _product(a_addr, sai, sap, m, k, b_addr, sbp, sbn, n, c_addr, ldc, work):
    a = carray(_f32_pointer(a_addr), (m - 1) * sai + (k - 1) * sap + 1)
    b = carray(_f32_pointer(b_addr), (k - 1) * sbp + (n - 1) * sbn + 1)
    c = carray(_f32_pointer(c_addr), (m - 1) * ldc + n)
    if _swapped(m, k, n, sap, sbn):
        ct = work[: n * m]
        _gemm(b, sbn, sbp, n, k, a, sap, sai, m, ct, m, work[n * m :])
        _transpose(ct, m, n, m, c, ldc)
    else:
        _gemm(a, sai, sap, m, k, b, sbp, sbn, n, c, ldc, work)


def _product_chunk(args, i, work, work_len):
    """Chunk ``i`` of the product job at ``args`` (its JOB_FIELDS fields), on the calling thread, with
    ``work_len`` floats of scratch at ``work``: the GEMM's chunk function (its address is the jobs' FN)."""
    t = carray(args, JOB_FIELDS)
    w = carray(work, work_len)
    size = t[N] if t[WIDE] else t[M]
    lo = i * t[PER_CHUNK] * t[UNIT]
    hi = min(size, lo + t[PER_CHUNK] * t[UNIT])
    if t[WIDE]:
        _product(t[A_ADDR], t[SAI], t[SAP], t[M], t[K], t[B_ADDR] + 4 * lo * t[SBN], t[SBP], t[SBN], hi - lo,
                 t[C_ADDR] + 4 * lo, t[LDC], w)  # fmt: skip
    else:
        _product(t[A_ADDR] + 4 * lo * t[SAI], t[SAI], t[SAP], hi - lo, t[K], t[B_ADDR], t[SBP], t[SBN], t[N],
                 t[C_ADDR] + 4 * lo * t[LDC], t[LDC], w)  # fmt: skip


_product_chunk_cfunc = None


def product_chunk_address() -> int:
    """The address of the GEMM's chunk function (a numba.cfunc of _product_chunk, compiled or loaded from the
    cache on the first call): the workers and product call it through its address, as they call the flat
    steps' chunk functions, so the GEMM is compiled once, not again inside each kernel that runs a product
    (Numba re-optimises every callee it links into a caller: that was ~4 s of a cold first compile). Its own
    compile unit, so a helper process can compile it while this one compiles the rest (numba_ahead)."""
    global _product_chunk_cfunc
    if _product_chunk_cfunc is None:
        _product_chunk_cfunc = cached_cfunc(_CHUNK_SIG, _product_chunk, **_KERNEL)
    return _product_chunk_cfunc.address


# ----------------------------------------------------------------------------------------------
# worker threads that spin: a job posted to a spinning worker starts within a microsecond
# ----------------------------------------------------------------------------------------------
# A Python thread pool wakes a sleeping thread in ~50 us here (a futex on a virtual machine), more than a
# small product's whole time; BLAS libraries keep their threads spinning between calls for the same reason.
# Chunks are claimed, not assigned: the posting thread and the workers each take the next unclaimed chunk
# of the job (an atomic compare-and-swap on NEXT, which carries the job's number in its high 32 bits, so a
# late worker can never claim a chunk of a newer job), and the poster waits only for chunks a worker has
# claimed and not finished -- a worker that is asleep, or descheduled by another process, just takes none.
# A worker runs worker_spin (no GIL): it waits for SEQ to change, runs chunks of the job copied into its
# control array, and after ``spins`` idle rounds sets STATE = 1 and returns to Python to sleep on an Event
# (set by NumpyBackend, which reads STATE before it posts a job: a call into Numba cannot set one). SEQ and
# STATE are sequentially consistent atomics, so a job posted while the worker goes to sleep is seen by its
# last check, or the worker sleeps through it (its chunks run on the other threads) until the next wake.
# Idle rounds pause, and yield the core every 64th round (a busy machine's other threads run meanwhile).
SEQ, STATE, JOB = 0, 8, 16  # a worker's control array (each field on its own cache line)
CONTROL_SIZE = JOB + JOB_FIELDS
NEXT, FINISHED = 0, 8  # the shared counters array
PRODUCT_CHUNK = 16  # ... and there, product_chunk's address (set by NumpyBackend; 0: product takes no job)
COUNTERS_SIZE = 24


@intrinsic
def _atomic_cas(typingctx, array, index, expected, value):
    """array[index] = value if it equals expected (int64, sequentially consistent); True if it did."""

    def codegen(context, builder, signature, args):
        ptr = _data(context, builder, signature.args[0], args[0], args[1])
        pair = builder.cmpxchg(ptr, args[2], args[3], "seq_cst", "seq_cst")
        return builder.extract_value(pair, 1)

    return types.boolean(array, index, types.int64, types.int64), codegen


@intrinsic
def _atomic_add(typingctx, array, index, value):
    def codegen(context, builder, signature, args):
        ptr = _data(context, builder, signature.args[0], args[0], args[1])
        builder.atomic_rmw("add", ptr, args[2], "seq_cst")
        return context.get_dummy_value()

    return types.void(array, index, types.int64), codegen


@intrinsic
def _yield(typingctx):
    """sched_yield(): another runnable thread of this core runs first."""

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I32, []), "sched_yield")
        builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen


@njit(inline="always")
def _idle(round_):
    if round_ % 64 == 63:
        _yield()
    else:
        _pause()


@njit(inline="always")
def _claim(counters, seq, chunks):
    """The next unclaimed chunk of job ``seq``, or -1 when none is left (or a newer job was posted)."""
    while True:
        cur = _atomic_load(counters, NEXT)
        i = cur & 0xFFFFFFFF
        if cur >> 32 != seq or i >= chunks:
            return -1
        if _atomic_cas(counters, NEXT, cur, cur + 1):
            return i


@intrinsic
def _call_chunk(typingctx, fn, args, i, work):
    """The C function at address ``fn``, ``void fn(int64 *args, int64 i, float *work, int64 work_len)`` (a
    numba.cfunc of signature numba_cpu._CHUNK_SIG), called with the float32 array ``work``'s data and size."""

    def codegen(context, builder, signature, a):
        fnty = ir.FunctionType(ir.VoidType(), [_I64.as_pointer(), _I64, _F32.as_pointer(), _I64])
        w = context.make_array(signature.args[3])(context, builder, a[3])
        call = [builder.inttoptr(a[1], _I64.as_pointer()), a[2], w.data, w.nitems]
        builder.call(builder.inttoptr(a[0], fnty.as_pointer()), call)
        return context.get_dummy_value()

    return types.void(types.int64, types.int64, types.int64, work), codegen


@njit(**_KERNEL)
def _run_chunks(t, counters, seq, work):
    while True:
        i = _claim(counters, seq, t[CHUNKS])
        if i < 0:
            return
        _call_chunk(t[FN], t[ARGS], i, work)
        _atomic_add(counters, FINISHED, 1)


# The entry points: product (below; one signature, compiled or loaded from the cache by load, with launch,
# run_job and run_alone inside it), worker_spin (compiled or loaded on a worker's first call) and run_chunks
# (on the first large float32 optimizer step).
@njit(**_KERNEL)
def worker_spin(ctrl, counters, spins):
    _atomic_store(ctrl, STATE, 0)
    last = 0  # (jobs are numbered from 1): a worker woken for a job joins it -- its chunks' claims check the number
    idle = 0
    while True:
        seq = _atomic_load(ctrl, SEQ)
        if seq != last:
            t = ctrl[JOB : JOB + JOB_FIELDS]
            _run_chunks(t, counters, seq, carray(_f32_pointer(t[W_ADDR]), t[W_LEN]))
            last = seq
            idle = 0
            continue
        idle += 1
        if idle >= spins:
            _atomic_store(ctrl, STATE, 1)
            if _atomic_load(ctrl, SEQ) == last:
                return
            _atomic_store(ctrl, STATE, 0)
            idle = 0
        _idle(idle)


@njit(**_KERNEL)
def launch(job, seq, ctrls, counters, work, need):
    """Post job number ``seq`` to the workers (one row of ``ctrls`` each; worker w's scratch is
    work[(w + 1) need:], the caller's work[:need]). NumpyBackend wakes the sleeping workers before it posts
    a job (sleeping_workers); one that fell asleep since sleeps through this job."""
    _atomic_store(counters, FINISHED, 0)
    _atomic_store(counters, NEXT, seq << 32)
    for w in range(ctrls.shape[0]):
        ctrl = ctrls[w]
        for f in range(JOB_FIELDS):  # a loop, not a slice assignment: that pulls in Numba's shape-error
            ctrl[JOB + f] = job[f]  # message formatting, ~1.4 s of a cold first compile
        ctrl[JOB + W_ADDR] = work.ctypes.data + 4 * need * (w + 1)
        ctrl[JOB + W_LEN] = need
        _atomic_store(ctrl, SEQ, seq)


@njit(**_KERNEL)
def run_job(job, counters, seq, work):
    """Claim and run chunks of job ``seq`` (posted by launch) until none is left, then wait for the chunks
    the workers claimed."""
    _run_chunks(job, counters, seq, work)
    idle = 0
    while _atomic_load(counters, FINISHED) < job[CHUNKS]:
        idle += 1
        _idle(idle)


@njit(**_KERNEL)
def run_alone(job, work):
    """Every chunk of the job, in order, on the calling thread."""
    for i in range(job[CHUNKS]):
        _call_chunk(job[FN], job[ARGS], i, work)


@njit(**_KERNEL)  # (compiled or loaded on its first call)
def run_chunks(fn, args, chunks, threads, ctrls, counters, seq_box):
    """fn(args, i) for i in [0, chunks), split over ``threads`` threads like a product (the caller and the
    workers of ``ctrls``, awake; the GEMM lock held): the flat steps' chunk functions (numba_cpu.pack)."""
    job = np.zeros(JOB_FIELDS, np.int64)
    job[FN], job[ARGS], job[CHUNKS] = fn, args, chunks
    work = np.empty(0, np.float32)
    seq = seq_box[0] + 1
    seq_box[0] = seq
    launch(job, seq, ctrls[: threads - 1], counters, work, 0)
    run_job(job, counters, seq, work)


# ----------------------------------------------------------------------------------------------
# a captured step's linear layers: the products and elementwise passes of one layer in one call
# ----------------------------------------------------------------------------------------------
# (In this file, not their own: Numba renews a cached function when its file changes, and these inline the
# GEMM above. No signatures: they compile, or load from the cache, on a captured step's first call.)
# gpunn.train.capture replays a linear layer (+ ReLU) of a captured step through these instead of ~6 NumPy
# and GEMM calls from Python (~5 us of dispatch each): the same products -- planned as NumpyBackend.matmul
# plans them, so the same bits whatever the split -- and the same elementwise operations in the same order
# as reference.linear_act / linear_act_backward, so the results equal the eager step's bit for bit.
_PRODUCT_SIG = types.boolean(
    _OPERAND, _OPERAND, types.float32[:, :], types.int64, types.int64, types.int64, types.int64[:, ::1],
    types.int64[::1], types.int64[::1], types.float32[::1],
)  # fmt: skip


@njit(**_KERNEL)  # (one signature, _PRODUCT_SIG: see load)
def product(a, b, c, threads, parallel_min, chunks_per_thread, ctrls, counters, seq_box, work):
    """c = a @ b: planned, then split over ``threads`` threads (the caller and the workers of ``ctrls``,
    which must be awake to take part; the GEMM lock held) from ``parallel_min`` multiply-adds, else run on
    the calling thread. False when the kernel does not take the operands or ``work`` is too small (nothing
    was written). The one entry point of NumpyBackend.matmul and of the captured layers below."""
    m, k, n = a.shape[0], a.shape[1], b.shape[1]
    if m * n * k < parallel_min:
        threads = 1
    job = np.zeros(JOB_FIELDS, np.int64)
    need = plan(a, b, c, threads, chunks_per_thread, job)
    if need < 0 or need * threads > work.size or counters[PRODUCT_CHUNK] == 0:
        return False
    job[FN], job[ARGS] = counters[PRODUCT_CHUNK], job.ctypes.data  # (the workers read the job here: it outlives them)
    if threads > 1:
        seq = seq_box[0] + 1
        seq_box[0] = seq
        launch(job, seq, ctrls[: threads - 1], counters, work, need)
        run_job(job, counters, seq, work[:need])
    else:
        run_alone(job, work[:need])
    return True


# x and w are read only: any layout, read-only arrays too (a writable one converts)
_RO2 = "Array(float32, 2, 'A', readonly=True)"


@njit(**_KERNEL)
def linear_forward(x, w, bias, z, has_bias, relu, threads, parallel_min, chunks, ctrls, counters, seq_box, work):
    """z = x @ w.T; z += bias (each row); relu: z = 0 where z < 0 (NaN and -0.0 kept). False when the
    product cannot run here (then nothing was written)."""
    if not product(x, w.T, z, threads, parallel_min, chunks, ctrls, counters, seq_box, work):
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


_LINEAR_BACKWARD_SIG = (
    f"boolean(float32[:, ::1], float32[:, ::1], float32[:, ::1], {_RO2}, {_RO2}, float32[:, ::1], "
    "float32[:, ::1], float32[::1], boolean, boolean, boolean, boolean, int64, int64, int64, int64[:, ::1], "
    "int64[::1], int64[::1], float32[::1])"
)


@njit(**_KERNEL)  # (one signature, _LINEAR_BACKWARD_SIG: see load)
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
    if need_dx and not product(dz, w, dx, threads, parallel_min, chunks, ctrls, counters, seq_box, work):
        return False
    if need_dw and not product(dz.T, x, dw, threads, parallel_min, chunks, ctrls, counters, seq_box, work):
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


@njit(inline="always")
def _f32_2d(address, rows, cols):
    return carray(_f32_pointer(address), (rows, cols))


@njit(**_KERNEL)
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


@njit(**_KERNEL)
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


@njit(**_KERNEL)
def sleeping_workers(ctrls):
    """The bit mask of the workers (rows of ``ctrls``) that sleep: a call into this module cannot wake them."""
    mask = 0
    for w in range(ctrls.shape[0]):
        if _atomic_load(ctrls[w], STATE) == 1:
            mask |= 1 << w
    return mask


_loaded = False


def load() -> None:
    """Compile, or load from the cache, the entry points of one signature -- plan, product, linear_backward --
    and take no other signature from then on (an argument of another layout converts, as with a signature
    in the decorator). NumpyBackend calls this once before its first product; importing this module
    compiles nothing (so a helper process may import it to compile product_chunk alone: numba_ahead)."""
    global _loaded
    if _loaded:  # (a second call: NumpyBackend's threads may ask at once)
        return
    for fn, sig in ((plan, _PLAN_SIG), (product, _PRODUCT_SIG), (linear_backward, _LINEAR_BACKWARD_SIG)):
        fn.compile(sig)
        fn.disable_compile()
    _loaded = True


share_cache(globals())
