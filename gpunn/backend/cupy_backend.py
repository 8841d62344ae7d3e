"""The CuPy backend: arrays on the GPU.

The fused primitives run the handwritten kernels of ``kernels/*.cu`` (loaded by
``gpunn.backend.kernels``) for float32 and float64; other dtypes, empty shapes and shapes past a
kernel's grid limits fall back to the ``xp``-generic reference with ``xp = cupy``. Return conventions
are those of ``gpunn.backend.reference``. Imported only when the ``cupy`` backend is requested and a GPU
is usable.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np

from gpunn.backend import kernel_table, reference
from gpunn.backend import kernels as K
from gpunn.backend.base import Backend

_GEMM_TILE = 64  # linear_act.cu: rows and columns of C per block
_GEMM_THREADS = 256
_DZ_COLS, _DZ_ROWS = 32, 256  # linear_act.cu: act_backward_bias block tile


# linear_act's GEMM: the fused tiled kernel, or cuBLAS (cupy.matmul) followed by a separate
# bias+activation pass. GPUNN_LINEAR_IMPL=kernel|cublas forces one; "auto" sends GEMMs of at least
# _CUBLAS_MIN_FLOPS to cuBLAS (the v1 kernel cannot match it on large shapes; on small ones fusing the
# epilogue saves launches). The threshold is a placeholder until a GPU bench run calibrates it.
_CUBLAS_MIN_FLOPS = 2 * 512**3
_SPLITK_PARTIAL = 1 << 20  # values in a split-K partial buffer beyond which slices stay at 16 (4 MiB in float32)
_NUMBA_CUDA_FAILED = False  # set once Numba's CUDA target failed its first launch here (accuracy_count)


def linear_impl(n: int, m: int, k: int) -> str:
    """'kernel' or 'cublas' for an (N, K) x (K, M) linear_act GEMM."""
    mode = os.environ.get("GPUNN_LINEAR_IMPL", "auto").strip().lower()
    if mode not in ("auto", "kernel", "cublas"):
        raise ValueError(f"GPUNN_LINEAR_IMPL must be auto, kernel or cublas, got {mode!r}")
    if mode != "auto":
        return mode
    return "cublas" if 2 * n * m * k >= _CUBLAS_MIN_FLOPS else "kernel"


def _pair(v, what: str) -> tuple[int, int]:
    """An int or a pair of ints as a pair of ints."""
    t = (int(v), int(v)) if np.isscalar(v) else tuple(int(e) for e in v)
    if len(t) != 2:
        raise ValueError(f"{what} must be an int or a pair of ints, got {v!r}")
    return t


def _conv_out(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _geometry(x_shape, kernel_size, stride, padding, dilation, what: str) -> tuple[int, ...]:
    """(N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW), validated."""
    if len(x_shape) != 4:
        raise ValueError(f"{what} expects an NCHW input, got shape {tuple(x_shape)}")
    n, c, h, w = (int(e) for e in x_shape)
    kh, kw = _pair(kernel_size, "kernel_size")
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    dh, dw = _pair(dilation, "dilation")
    if min(kh, kw, sh, sw, dh, dw) < 1 or min(ph, pw) < 0:
        raise ValueError(f"{what}: kernel_size, stride, dilation must be >= 1 and padding >= 0")
    oh, ow = _conv_out(h, kh, sh, ph, dh), _conv_out(w, kw, sw, pw, dw)
    if oh < 1 or ow < 1:
        raise ValueError(f"{what}: input {h}x{w} is too small for kernel {kh}x{kw} (output {oh}x{ow})")
    return n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow


class CupyBackend(Backend):
    name = "cupy"

    def __init__(self) -> None:
        import cupy

        self.xp = cupy
        super().__init__()

    @property
    def device(self) -> str:
        dev = self.xp.cuda.Device()
        props = self.xp.cuda.runtime.getDeviceProperties(dev.id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return f"cuda:{dev.id} ({name})"

    def asarray(self, data, dtype=None):
        return self.xp.asarray(data, dtype=dtype)

    def _make_rng(self, seed):
        # RandomState: CuPy's generator with permutation/randint and dtype-aware normal/uniform draws
        return self.xp.random.RandomState(seed)

    # CuPy's cuRAND generator cannot report its position, so a checkpoint moves it to the start of a stream of
    # its own (``_gen_seed``, derived from the seed) that a restore rebuilds: see get_rng_state
    _gen_seed: int | None = None  # the generator's seed once a checkpoint moved it (None: the backend seed)
    _rng_touched = False  # drawn from since seeding, restoring or the last checkpoint

    def seed(self, seed: int) -> None:
        self._seed = int(seed)
        self._rng, self._gen_seed, self._rng_touched = None, None, False
        self._dropout_offset = 0

    @property
    def rng(self):
        if self._rng is None:
            self._rng = self._make_rng(self._seed if self._gen_seed is None else self._gen_seed)
        self._rng_touched = True
        return self._rng

    def get_rng_state(self) -> dict:
        """The random state a checkpoint keeps (JSON-able), restored exactly by ``set_rng_state``: the seed,
        dropout's position in its counter-based stream, and the cuRAND generator's seed. That generator cannot
        report its position, so when it was drawn from since the last state was taken, it is moved here to the
        start of a fresh stream (its seed derived from the backend seed and the stream it leaves): the run that
        saved and the run that resumes then draw the same numbers (a run that never saves draws others, equally
        random)."""
        if self._rng_touched:
            previous = 0 if self._gen_seed is None else self._gen_seed + 1
            entropy = [0 if self._seed is None else self._seed & (2**64 - 1), previous]
            self._gen_seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
            self._rng, self._rng_touched = None, False
        return {
            "seed": self._seed,
            "dropout_offset": int(getattr(self, "_dropout_offset", 0)),
            "generator_seed": self._gen_seed,
        }

    def set_rng_state(self, state: dict) -> None:
        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        ok = (
            isinstance(state, dict)
            and {"seed", "dropout_offset", "generator_seed"} <= set(state)
            and (state["seed"] is None or is_int(state["seed"]))
            and is_int(state["dropout_offset"])
            and 0 <= state["dropout_offset"] < 2**62
            and (state["generator_seed"] is None or (is_int(state["generator_seed"]) and state["generator_seed"] >= 0))
        )
        if not ok:
            raise ValueError(f"not a cupy backend random state (seed, dropout_offset, generator_seed): {state!r}")
        self._seed, self._dropout_offset = state["seed"], state["dropout_offset"]
        self._gen_seed = state["generator_seed"]
        self._rng, self._rng_touched = None, False

    def randn(self, shape, dtype=np.float32):
        return self.rng.standard_normal(shape, dtype=dtype)

    def rand(self, shape, dtype=np.float32):
        return self.rng.random_sample(shape, dtype=dtype)

    def permutation(self, n: int):
        return self.rng.permutation(n)

    def randint(self, low, high, shape):
        return self.rng.randint(low, high, size=shape, dtype=np.int64)

    def _empty(self, ws, name: str, shape, dtype):
        """A fresh array, or the workspace's ``name`` buffer: ``ws(name, shape, dtype)`` returns an array
        allocated once and reused (a captured step's static buffers), so the launch allocates nothing."""
        return self.xp.empty(shape, dtype=dtype) if ws is None else ws(name, tuple(shape), dtype)

    def copy_into(self, dst, src) -> None:
        """dst[...] = src on the current stream: one device-to-device memcpy when both are contiguous and
        alike (cheaper to issue than an elementwise copy kernel), else ``copyto``. No host sync."""
        mem = getattr(dst, "data", None)
        if (
            hasattr(mem, "copy_from_device_async")
            and dst.dtype == src.dtype
            and dst.shape == src.shape
            and dst.flags.c_contiguous
            and src.flags.c_contiguous
        ):
            mem.copy_from_device_async(src.data, src.nbytes, self.xp.cuda.get_current_stream())
        else:
            self.xp.copyto(dst, src)

    # -- dropout (kernels/dropout.cu) -----------------------------------------------------------------
    def dropout_seed_offset(self, n: int) -> tuple[int, int]:
        """(seed, offset) of the next dropout draw of ``n`` elements, the offset advanced past them on the
        host (no device sync). The stream: gpunn.backend.numba_kernels' module docstring."""
        seed = 0 if self._seed is None else int(self._seed) & (2**64 - 1)
        offset = getattr(self, "_dropout_offset", 0)
        self._dropout_offset = offset + int(n)
        return seed, offset

    def dropout(self, x, p: float):
        """Philox dropout: the mask is a function of (seed, offset, index), so backward regenerates it
        instead of storing it; the offset advances by x.size per call, on the host."""
        if np.dtype(x.dtype) not in K.DTYPE_SUFFIX:
            return super().dropout(x, p)
        x = K.as_contiguous(x)
        seed, offset = self.dropout_seed_offset(x.size)

        def apply(a, out=None):
            a = K.as_contiguous(self.xp.asarray(a), dtype=x.dtype)
            out = self.xp.empty(a.shape, dtype=a.dtype) if out is None else out
            self.dropout_into(a, out, p, seed, offset)
            return out

        return apply(x), apply

    def dropout_into(self, x, out, p: float, seed: int, offset: int, state=None) -> None:
        """out = dropout(x) with the mask of elements offset .. offset + x.size - 1 of ``seed``'s stream.
        ``state``: a (2,) uint64 device array (seed, base offset) read by the kernel instead of ``seed``,
        added to ``offset`` (a captured step's; see kernels/dropout.cu)."""
        from gpunn.backend import numba_kernels

        if out.shape != x.shape or out.dtype != x.dtype or not (x.flags.c_contiguous and out.flags.c_contiguous):
            raise ValueError(f"dropout_into: x {x.shape} {x.dtype} and out {out.shape} {out.dtype} must match")
        threshold = numba_kernels.keep_threshold(p)
        if not 0 <= offset < 2**62 or x.size >= 2**62:
            raise ValueError(f"dropout offset must be in [0, 2**62), got {offset}")
        dt = x.dtype
        scale = K.scalar(dt, 0.0 if p >= 1.0 else 1.0 / (1.0 - p))
        groups = K.ceil_div(offset % 4 + x.size, 4) if x.size else 1
        K.entry("dropout", "dropout_v1", dt)(
            K.elementwise_grid(groups),
            (256,),
            (x, out, np.int64(x.size), np.uint64(seed), np.uint64(offset), state, np.uint64(threshold), scale),
        )

    def dropout_advance(self, state, n: int) -> None:
        """state[1] += n on the device (a captured step's dropout offset, one thread)."""
        K.get_function("dropout", "dropout_advance_v1")((1,), (1,), (state, np.int64(n)))

    # -- Numba kernels -------------------------------------------------------------------------------
    def accuracy_count(self, logits, target):
        """The Numba CUDA kernel (one pass over the logits); CuPy's argmax where Numba's CUDA target fails here,
        said once."""
        global _NUMBA_CUDA_FAILED
        from gpunn.backend import numba_kernels

        if logits.dtype.kind != "f" or not logits.flags.c_contiguous or _NUMBA_CUDA_FAILED:
            return super().accuracy_count(logits, target)
        try:
            return numba_kernels.accuracy_count(logits, self.xp.ascontiguousarray(target))[0]
        except numba_kernels.NumbaCudaUnavailable as exc:
            _NUMBA_CUDA_FAILED = True
            warnings.warn(f"gpunn: {exc}; accuracy is counted with CuPy instead", UserWarning, stacklevel=2)
            return super().accuracy_count(logits, target)

    def index_add(self, target, index, values) -> None:
        at = getattr(self.xp.add, "at", None)  # ufunc.at exists in recent CuPy; older ones have cupyx's
        if at is not None:
            at(target, index, values)
        else:
            import cupyx

            cupyx.scatter_add(target, index, values)

    # -- fused primitives on the handwritten kernels -------------------------------------------------
    def linear_kernel_ok(self, n: int, m: int, k: int, *arrays) -> bool:
        """True when an (N, K) x (M, K)^T linear_act (and its backward) runs on linear_act.cu: float32 or
        float64, non-empty, within the grid limits, not sent to cuBLAS (``linear_impl``)."""
        return (
            K.supported(*arrays)
            and 0 not in (n, m, k)
            and K.ceil_div(m, _GEMM_TILE) <= K.GRID_Y_MAX
            and K.ceil_div(n, _DZ_ROWS) <= K.GRID_Y_MAX
            and K.ceil_div(k, _GEMM_TILE) <= K.GRID_Y_MAX
            and linear_impl(n, m, k) == "kernel"
        )

    def linear_act(self, x, W, b, act="none", negative_slope=0.01, *, ws=None):
        """y = act(x @ W.T + b): one tiled GEMM launch with bias and activation in its epilogue.
        x (..., K), W (M, K), b (M,) or None  ->  y (..., M). ``ws``: a workspace (see ``_empty``) for y."""
        if act not in K.ACT_CODES:
            raise ValueError(f"activation must be one of {reference.ACTIVATIONS}, got {act!r}")
        bad_b = b is not None and b.shape != (W.shape[0],)
        if W.ndim != 2 or x.ndim < 1 or x.shape[-1] != W.shape[1] or bad_b:
            b_shape = None if b is None else b.shape
            raise ValueError(
                f"linear_act: shapes x {x.shape}, W {W.shape}, b {b_shape} do not match x (..., K), W (M, K), b (M,)"
            )
        n, (m, k) = math.prod(x.shape[:-1]), W.shape
        if not self.linear_kernel_ok(n, m, k, x, W, b):
            if ws is not None:
                raise ValueError(
                    f"linear_act: no static-buffer form for x {x.shape}, W {W.shape} (cuBLAS or a fallback)"
                )
            return super().linear_act(x, W, b, act, negative_slope)  # the reference: cupy.matmul = cuBLAS
        dt = x.dtype
        x2 = K.as_contiguous(x).reshape(n, k)
        W = K.as_contiguous(W)
        b = K.as_contiguous(b)
        y = self._empty(ws, "y", (n, m), dt)
        self._gemm("nt", x2, W, y, n, m, k, b, K.ACT_CODES[act], negative_slope, ws=ws)
        return y.reshape(x.shape[:-1] + (m,))

    def _gemm(self, layout: str, A, B, C, R: int, Q: int, Kd: int, bias=None, act: int = 0, slope=0.0, ws=None) -> None:
        """C (R, Q) = act(op(A) @ op(B) + bias) on linear_act.cu's tiled kernels. layout "nt": A (R, Kd) @
        B (Q, Kd)^T (the forward), "nn": A (R, Kd) @ B (Kd, Q) (dx), "tn": A (Kd, R)^T @ B (Kd, Q) (dW).
        Version 2 (kernel_table) splits K over blockIdx.z when the output has too few tiles to fill the GPU
        (200x784x200: 16 tiles on 132 SMs), then adds the slices in order with bias and activation."""
        dt = C.dtype
        grid = (K.ceil_div(R, _GEMM_TILE), K.ceil_div(Q, _GEMM_TILE))
        splits, chunk = self._k_splits(grid[0] * grid[1], Kd, R * Q)
        dims = (np.int64(R), np.int64(Q), np.int64(Kd))
        if splits > 1:
            partial = self._empty(ws, f"splitk_{layout}", (splits, R, Q), dt)
            if layout == "nt":
                fn = K.entry("linear_act", "gemm_splitk_nt_v2", dt)
            elif layout == "nn":
                fn = K.entry("linear_act", "gemm_splitk_nn_v2", dt)
            else:
                fn = K.entry("linear_act", "gemm_splitk_tn_v2", dt)
            fn(grid + (splits,), (_GEMM_THREADS,), (A, B, partial, *dims, np.int64(chunk)))
            K.entry("linear_act", "splitk_reduce_v2", dt)(
                K.elementwise_grid(R * Q),
                (256,),
                (partial, bias, C, np.int64(splits), np.int64(R), np.int64(Q), np.int32(act), K.scalar(dt, slope)),
            )
        elif layout == "nt":
            K.entry("linear_act", "linear_act_forward_v1", dt)(
                grid, (_GEMM_THREADS,), (A, B, bias, C, *dims, np.int32(act), K.scalar(dt, slope))
            )
        elif layout == "nn":
            K.entry("linear_act", "gemm_nn_v1", dt)(grid, (_GEMM_THREADS,), (A, B, C, *dims))
        else:
            K.entry("linear_act", "gemm_tn_v1", dt)(grid, (_GEMM_THREADS,), (A, B, C, *dims))

    @staticmethod
    def _k_splits(tiles: int, kd: int, outputs: int) -> tuple[int, int]:
        """(slices of K, K per slice) for a GEMM of ``tiles`` output tiles holding ``outputs`` values: 1 unless
        linear_act v2 is selected and the tiles cannot fill the GPU; then enough slices for ~2 blocks per SM,
        each at least 4 K steps (64) long, and at most 16 unless the output is so small that more fit in
        _SPLITK_PARTIAL values (the partial buffer holds slices x outputs). A conv's weight gradient is such
        a GEMM: 16 x 9 outputs over K = batch x H x W = 156,800 took 23 ms in one block on the H200."""
        if kernel_table.version("linear_act") != 2:
            return 1, kd
        sms = K.sm_count()
        if tiles >= sms:
            return 1, kd
        want = min(K.ceil_div(2 * sms, tiles), kd // 64, max(16, _SPLITK_PARTIAL // max(1, outputs)))
        if want < 2:
            return 1, kd
        chunk = K.ceil_div(K.ceil_div(kd, want), 16) * 16  # whole K steps of linear_act.cu's GEMM_BK = 16
        return K.ceil_div(kd, chunk), chunk

    def linear_act_backward(
        self,
        dy,
        x,
        W,
        y,
        act="none",
        negative_slope=0.01,
        need_dx=True,
        need_dW=True,
        need_db=True,
        *,
        ws=None,
        out_dW=None,
        out_db=None,
    ):
        """dx, dW, db of y = act(x @ W.T + b) from dy and the saved output y: one fused
        activation-backward + bias-gradient launch (plus a tiny column sum), then two tiled GEMMs.
        dy, y (..., M), x (..., K), W (M, K)  ->  dx (..., K), dW (M, K), db (M,) (None when not needed).
        ``ws``: a workspace (``_empty``) for dx and the temporaries; ``out_dW`` / ``out_db``: contiguous
        arrays the gradients are written into (a captured step's flat gradient views)."""
        if act not in K.ACT_CODES:
            raise ValueError(f"activation must be one of {reference.ACTIVATIONS}, got {act!r}")
        m, k = W.shape
        n = math.prod(dy.shape[:-1])
        if (
            not self.linear_kernel_ok(n, m, k, dy, x, W, y if act != "none" else None)
            or dy.shape[-1] != m
            or x.shape[-1] != k
            or math.prod(x.shape[:-1]) != n
            or (act != "none" and (y is None or y.shape != dy.shape))
        ):
            if ws is not None or out_dW is not None or out_db is not None:
                raise ValueError(f"linear_act_backward: no static-buffer form for dy {dy.shape}, W {W.shape}")
            return super().linear_act_backward(dy, x, W, y, act, negative_slope, need_dx, need_dW, need_db)
        dt = dy.dtype
        code, slope = np.int32(K.ACT_CODES[act]), K.scalar(dt, negative_slope)
        dy2 = K.as_contiguous(dy).reshape(n, m)
        need_gemm = need_dx or need_dW

        dz, db = (dy2 if act == "none" else None), None
        if need_db or (act != "none" and need_gemm):
            grid = (K.ceil_div(m, _DZ_COLS), K.ceil_div(n, _DZ_ROWS))
            dz_out = self._empty(ws, "dz", (n, m), dt) if (act != "none" and need_gemm) else None
            partial = self._empty(ws, "db_partial", (grid[1], m), dt) if need_db else None
            y2 = K.as_contiguous(y).reshape(n, m) if act != "none" else None
            K.entry("linear_act", "act_backward_bias_v1", dt)(
                grid, (_DZ_COLS, 8), (dy2, y2, dz_out, partial, np.int64(n), np.int64(m), code, slope)
            )
            if dz_out is not None:
                dz = dz_out
            if need_db:
                db = self._empty(ws, "db", (m,), dt) if out_db is None else out_db
                K.entry("linear_act", "column_sum_v1", dt)(
                    (K.ceil_div(m, 256),), (256,), (partial, db, np.int64(grid[1]), np.int64(m))
                )

        dx = dW = None
        if need_dx:  # dx (N, K) = dz (N, M) @ W (M, K)
            W = K.as_contiguous(W)
            dx = self._empty(ws, "dx", (n, k), dt)
            self._gemm("nn", dz, W, dx, n, k, m, ws=ws)
            dx = dx.reshape(x.shape)
        if need_dW:  # dW (M, K) = dz^T (M, N) @ x (N, K)
            x2 = K.as_contiguous(x).reshape(n, k)
            dW = self._empty(ws, "dW", (m, k), dt) if out_dW is None else out_dW
            self._gemm("tn", dz, x2, dW, m, k, n, ws=ws)
        return dx, dW, db

    def softmax_cross_entropy(
        self, logits, target, weight=None, reduction="mean", ignore_index=-100, label_smoothing=0.0, check_labels=True
    ):
        """Loss and dlogits of cross-entropy on class indices, one fused launch over the rows (plus a
        one-block denominator pass for 'mean'). logits (N, C), target (N,) int, weight (C,) or None.

        Out-of-range labels raise ValueError at the next host read (``to_numpy``, ``synchronize``: where
        the loss is read), not here: the kernel raises a device-side flag, so nothing waits for the GPU.
        ``check_labels=False`` drops the flag (such rows count as ignored)."""
        run = self._sce_setup(logits, target, weight, reduction, ignore_index, label_smoothing)
        if run is None:
            return super().softmax_cross_entropy(logits, target, weight, reduction, ignore_index, label_smoothing)
        n, c = run["n"], run["c"]
        dlogits = self.xp.empty((n, c), dtype=run["dt"])
        loss = self._sce_launch(run, 0, dlogits=dlogits, check_labels=check_labels)  # SCE_FUSED
        return loss, dlogits

    def softmax_cross_entropy_fwd(
        self,
        logits,
        target,
        weight=None,
        reduction="mean",
        ignore_index=-100,
        label_smoothing=0.0,
        *,
        ws=None,
        loss_ring=None,
    ):
        """(loss, backward): the forward launch writes the loss and each row's log-sum-exp; backward(g)
        launches the gradient pass with the upstream gradient g (a scalar, or (N,) for 'none') folded
        into the kernel: dlogits = g * d loss / d logits in one read of the logits and one write, no
        separate ``dlogits * g`` pass. Labels are checked as in ``softmax_cross_entropy``.

        ``ws``: a workspace (``_empty``) for every temporary and for dlogits. ``loss_ring``: (ring, slot),
        a (R,) array and a (1,) int64 device index: a 'sum'/'mean' loss is written to ring[slot % R] and
        slot incremented on the device (a captured step's losses; see sce_reduce_v1)."""
        run = self._sce_setup(logits, target, weight, reduction, ignore_index, label_smoothing, ws=ws)
        if run is None:
            if ws is not None:
                raise ValueError(
                    f"softmax_cross_entropy: no static-buffer form for logits {logits.shape} {logits.dtype}"
                )
            return super().softmax_cross_entropy_fwd(logits, target, weight, reduction, ignore_index, label_smoothing)
        xp, n, c, dt = self.xp, run["n"], run["c"], run["dt"]
        lse = self._empty(ws, "lse", (n,), dt)
        loss = self._sce_launch(run, 1, lse=lse, ws=ws, loss_ring=loss_ring)  # SCE_FORWARD

        def backward(g):
            g = K.as_contiguous(xp.asarray(g), dtype=dt).reshape(-1)
            if g.size not in (1, n):
                raise ValueError(
                    f"softmax_cross_entropy backward: upstream gradient has {g.size} elements, expected 1 or {n}"
                )
            dlogits = self._empty(ws, "dlogits", (n, c), dt)
            self._sce_launch(run, 2, dlogits=dlogits, lse=lse, gscale=g)  # SCE_BACKWARD
            return dlogits

        return loss, backward

    def _sce_setup(self, logits, target, weight, reduction, ignore_index, label_smoothing, ws=None):
        """Validate, make contiguous, launch the 'mean' denominator pass; None when the kernels do not apply."""
        if reduction not in reference.REDUCTIONS:
            raise ValueError(f"reduction must be one of {reference.REDUCTIONS}, got {reduction!r}")
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
        if logits.ndim != 2 or target.shape != (logits.shape[0],):
            raise ValueError(
                f"softmax_cross_entropy expects logits (N, C) and target (N,), got {logits.shape} and {target.shape}"
            )
        if target.dtype.kind not in "iu":
            raise TypeError(f"target must hold integer class indices, got dtype {target.dtype}")
        n, c = logits.shape
        if weight is not None and weight.shape != (c,):
            raise ValueError(f"weight must have shape ({c},), got {weight.shape}")
        if not K.supported(logits) or n == 0 or c == 0:
            return None
        K.check_int32("number of classes", c)
        K.check_int32("number of rows", n)  # grid.x
        xp, dt = self.xp, logits.dtype
        target = K.as_contiguous(target, dtype=np.int64)
        weight = K.as_contiguous(weight, dtype=dt)
        run = dict(
            n=n,
            c=c,
            dt=dt,
            reduction=reduction,
            ignore=np.int64(ignore_index),
            smoothing=K.scalar(dt, label_smoothing),
            logits=K.as_contiguous(logits),
            target=target,
            weight=weight,
            scale=None,
            denom=None,
            # sum(weight) stays on the device (a 0-d array the kernel reads): no host round trip
            weight_total=weight.sum(keepdims=True) if (weight is not None and label_smoothing > 0) else None,
        )
        if ws is not None and run["weight_total"] is not None:
            raise ValueError("softmax_cross_entropy: a class weight with label smoothing has no static-buffer form")
        if reduction == "mean":  # the denominator first, so the main kernel writes scaled dlogits
            run["scale"] = self._empty(ws, "scale", (1,), dt)
            run["denom"] = self._empty(ws, "denom", (1,), xp.float64)
            K.entry("softmax_cross_entropy", "sce_weight_sum_v1", dt)(
                (1,), (256,), (target, weight, run["scale"], run["denom"], np.int64(n), np.int32(c), run["ignore"])
            )
        return run

    def _sce_launch(self, run, mode, dlogits=None, lse=None, gscale=None, check_labels=True, ws=None, loss_ring=None):
        """One launch of the selected softmax_cross_entropy version (kernel_table) in ``mode`` (0 fused,
        1 forward, 2 backward; see the .cu header), then for 'sum'/'mean' the reduction kernel. Returns the
        reduced loss for modes 0 and 1 (``loss_ring``: see ``softmax_cross_entropy_fwd``)."""
        xp, n, c, dt = self.xp, run["n"], run["c"], run["dt"]
        want_loss = mode != 2
        loss_rows = self._empty(ws, "loss_rows", (n,), dt) if want_loss else None
        row_weight = self._empty(ws, "row_weight", (n,), dt) if want_loss else None
        if not want_loss:
            error = None
        elif check_labels:
            error = self._label_flag()
        else:
            error = xp.zeros((4,), dtype=xp.int64)  # written, never read
        g_stride = np.int64(0 if gscale is None or gscale.size == 1 else 1)
        args = (
            run["logits"],
            run["target"],
            run["weight"],
            run["scale"],
            dlogits,
            loss_rows,
            row_weight,
            error,
            np.int64(n),
            np.int32(c),
            run["ignore"],
            run["smoothing"],
            run["weight_total"],
            lse,
            gscale,
            g_stride,
            np.int32(mode),
        )
        v2 = kernel_table.version("softmax_cross_entropy") == 2
        if c <= 1024:  # a warp per row, 8 rows per block
            fn = (
                K.entry("softmax_cross_entropy", "sce_warp_v2", dt)
                if v2
                else K.entry("softmax_cross_entropy", "sce_warp_v1", dt)
            )
            fn((K.ceil_div(n, 8),), (32, 8), args)
        else:  # a block per row
            threads = 256 if c <= 4096 else 512 if c <= 16384 else 1024
            fn = (
                K.entry("softmax_cross_entropy", "sce_block_v2", dt)
                if v2
                else K.entry("softmax_cross_entropy", "sce_block_v1", dt)
            )
            fn((n,), (threads,), args)
        if not want_loss:
            return None
        if run["reduction"] == "none":
            return loss_rows
        # sum in double, then / denom for 'mean' (0 / 0 = NaN when every row is ignored), cast to dt
        ring, slot = loss_ring if loss_ring is not None else (self._empty(ws, "loss", (1,), dt), None)
        K.entry("softmax_cross_entropy", "sce_reduce_v1", dt)(
            (1,), (256,), (loss_rows, run["denom"], ring, slot, np.int64(n), np.int64(ring.size))
        )
        return ring[0] if loss_ring is None else None

    # -- the deferred label check: a device flag read with the next host read ---------------------------
    def _label_flag(self):
        """The per-device (flag, label, classes, ignore_index) int64 buffer the cross-entropy kernels set on
        an out-of-range label. Allocated once, reset only after a read that found it set; a launch that may
        set it marks it pending, so the next host read brings it back."""
        dev = self.xp.cuda.Device().id
        flags = self.__dict__.setdefault("_label_flags", {})
        if dev not in flags:
            flags[dev] = self.xp.zeros((4,), dtype=self.xp.int64)
        self._label_pending = True
        return flags[dev]

    def _check_label_flag(self, host_flag) -> None:
        """Raise the out-of-range-label error if ``host_flag`` (a host copy of the flag buffer) is set."""
        self._label_pending = False
        flag, label, n_classes, ignore_index = (int(v) for v in host_flag)
        if not flag:
            return
        self._label_flags[self.xp.cuda.Device().id].fill(0)  # a fill kernel: the next steps start clean
        raise ValueError(K.label_error_message(label, n_classes, ignore_index))

    def to_numpy(self, a) -> np.ndarray:
        """A host copy of ``a``. If a cross-entropy launch since the last read may have flagged a bad label,
        the flag comes back in the same transfer (one device-to-host copy) and raises ValueError."""
        if not getattr(self, "_label_pending", None):
            return self.xp.asnumpy(a)
        xp = self.xp
        flag = self._label_flags[xp.cuda.Device().id]
        arr = xp.ascontiguousarray(xp.asarray(a))
        shape, dt = tuple(np.shape(a)), arr.dtype
        if arr.nbytes > 1 << 20:  # a big array: two copies rather than a device-side concatenation
            out = xp.asnumpy(arr).reshape(shape)
            self._check_label_flag(xp.asnumpy(flag))
            return out
        packed = xp.asnumpy(xp.concatenate((flag.view(xp.uint8), arr.reshape(-1).view(xp.uint8))))
        self._check_label_flag(packed[:32].view(np.int64))
        return packed[32:].view(dt).reshape(shape)

    def synchronize(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()
        if getattr(self, "_label_pending", None):
            self._check_label_flag(self.xp.asnumpy(self._label_flags[self.xp.cuda.Device().id]))

    def sgd_step(
        self,
        param,
        grad,
        momentum_buf,
        *,
        lr,
        momentum=0.0,
        dampening=0.0,
        weight_decay=0.0,
        nesterov=False,
        maximize=False,
        first_step=False,
        lr_dev=None,
    ):
        """PyTorch SGD over one flat buffer, in place, in one elementwise launch. ``lr_dev``: a (1,) device
        array of the parameter dtype read for the learning rate instead of ``lr`` (a captured step's)."""
        bufs = (param, momentum_buf) if momentum != 0 else (param,)
        if (
            not K.supported(param, grad, *bufs[1:])
            or any(not a.flags.c_contiguous for a in bufs)
            or any(a.size != param.size for a in (grad, *bufs))
        ):
            if lr_dev is not None:
                raise ValueError("sgd_step: lr_dev needs the kernel path (float32/float64 contiguous buffers)")
            return reference.sgd_step(
                self.xp,
                param,
                grad,
                momentum_buf,
                lr=lr,
                momentum=momentum,
                dampening=dampening,
                weight_decay=weight_decay,
                nesterov=nesterov,
                maximize=maximize,
                first_step=first_step,
            )
        if param.size == 0:
            return None
        dt = param.dtype
        grad = K.as_contiguous(grad)
        fn, grid = self._optim_kernel("sgd_step", param)
        fn(
            grid,
            (256,),
            (
                param,
                grad,
                momentum_buf if momentum != 0 else None,
                np.int64(param.size),
                K.scalar(dt, lr),
                self._lr_dev(lr_dev, dt),
                K.scalar(dt, momentum),
                K.scalar(dt, 1 - dampening),
                K.scalar(dt, weight_decay),
                np.int32(bool(nesterov)),
                np.int32(bool(maximize)),
                np.int32(bool(first_step)),
            ),
        )
        return None

    def adam_step(
        self,
        param,
        grad,
        exp_avg,
        exp_avg_sq,
        max_exp_avg_sq=None,
        *,
        step,
        lr,
        beta1=0.9,
        beta2=0.999,
        eps=1e-8,
        weight_decay=0.0,
        decoupled_weight_decay=False,
        amsgrad=False,
        maximize=False,
        lr_dev=None,
    ):
        """PyTorch Adam / AdamW over one flat buffer, in place, in one elementwise launch.
        ``step`` is an int, or a one-element int64 device array the kernel reads (graph-capturable:
        increment it on the device with ``step_increment``); ``lr_dev`` likewise a (1,) float64 device
        array read for the learning rate instead of ``lr``."""
        xp = self.xp
        bufs = (param, exp_avg, exp_avg_sq) + ((max_exp_avg_sq,) if amsgrad else ())
        if amsgrad and max_exp_avg_sq is None:
            raise ValueError("amsgrad=True needs max_exp_avg_sq")
        if (
            not K.supported(grad, *bufs)
            or any(not a.flags.c_contiguous for a in bufs)
            or any(a.size != param.size for a in (grad, *bufs))
        ):
            if lr_dev is not None:
                raise ValueError("adam_step: lr_dev needs the kernel path (float32/float64 contiguous buffers)")
            host_step = int(xp.asnumpy(step).reshape(-1)[0]) if isinstance(step, xp.ndarray) else int(step)
            return reference.adam_step(
                xp,
                param,
                grad,
                exp_avg,
                exp_avg_sq,
                max_exp_avg_sq,
                step=host_step,
                lr=lr,
                beta1=beta1,
                beta2=beta2,
                eps=eps,
                weight_decay=weight_decay,
                decoupled_weight_decay=decoupled_weight_decay,
                amsgrad=amsgrad,
                maximize=maximize,
            )
        if param.size == 0:
            return None
        if isinstance(step, xp.ndarray):
            if step.dtype != np.int64 or step.size != 1:
                raise ValueError(
                    f"a device step must be a one-element int64 array, got {step.dtype} of size {step.size}"
                )
            step_dev = step
        else:
            step_dev = self._step_scalar()
            step_dev.fill(int(step))  # a fill kernel: no host synchronization
        dt = param.dtype
        grad = K.as_contiguous(grad)
        fn, grid = self._optim_kernel("adam_step", param)
        fn(
            grid,
            (256,),
            (
                param,
                grad,
                exp_avg,
                exp_avg_sq,
                max_exp_avg_sq if amsgrad else None,
                step_dev,
                np.int64(param.size),
                np.float64(lr),
                self._lr_dev(lr_dev, np.float64),
                np.float64(beta1),
                np.float64(beta2),
                K.scalar(dt, eps),
                np.float64(weight_decay),
                np.int32(bool(decoupled_weight_decay)),
                np.int32(bool(amsgrad)),
                np.int32(bool(maximize)),
            ),
        )
        return None

    def _adaptive_launch(self, name, arrays, scalars, fallback) -> None:
        """Launch ``<name>_v1`` over flat buffers ``arrays`` (param first; None = unused) with trailing
        ``scalars``, or run ``fallback`` (the reference) when a dtype, size or layout does not fit."""
        used = [a for a in arrays if a is not None]
        param = arrays[0]
        if (
            not K.supported(*used)
            or any(not a.flags.c_contiguous for a in used[:1] + used[2:])
            or any(a.size != param.size for a in used)
        ):
            return fallback()
        if param.size == 0:
            return None
        grad = K.as_contiguous(arrays[1])
        fn = K.entry("optim", f"{name}_v1", param.dtype)
        fn(K.elementwise_grid(param.size), (256,), (param, grad, *arrays[2:], np.int64(param.size), *scalars))
        return None

    def adagrad_step(
        self, param, grad, state_sum, *, step, lr=1e-2, lr_decay=0.0, weight_decay=0.0, eps=1e-10, maximize=False
    ):
        """PyTorch Adagrad over one flat buffer, in place, in one elementwise launch."""
        dt = param.dtype
        clr = lr / (1 + (int(step) - 1) * lr_decay)
        return self._adaptive_launch(
            "adagrad_step",
            (param, grad, state_sum),
            (K.scalar(dt, clr), K.scalar(dt, weight_decay), K.scalar(dt, eps), np.int32(bool(maximize))),
            lambda: reference.adagrad_step(
                self.xp,
                param,
                grad,
                state_sum,
                step=step,
                lr=lr,
                lr_decay=lr_decay,
                weight_decay=weight_decay,
                eps=eps,
                maximize=maximize,
            ),
        )

    def adadelta_step(
        self, param, grad, square_avg, acc_delta, *, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False
    ):
        """PyTorch Adadelta over one flat buffer, in place, in one elementwise launch."""
        dt = param.dtype
        return self._adaptive_launch(
            "adadelta_step",
            (param, grad, square_avg, acc_delta),
            (
                K.scalar(dt, lr),
                K.scalar(dt, rho),
                K.scalar(dt, 1 - rho),
                K.scalar(dt, eps),
                K.scalar(dt, weight_decay),
                np.int32(bool(maximize)),
            ),
            lambda: reference.adadelta_step(
                self.xp,
                param,
                grad,
                square_avg,
                acc_delta,
                lr=lr,
                rho=rho,
                eps=eps,
                weight_decay=weight_decay,
                maximize=maximize,
            ),
        )

    def rmsprop_step(
        self,
        param,
        grad,
        square_avg,
        momentum_buf=None,
        grad_avg=None,
        *,
        lr=1e-2,
        alpha=0.99,
        eps=1e-8,
        weight_decay=0.0,
        momentum=0.0,
        centered=False,
        maximize=False,
    ):
        """PyTorch RMSprop (momentum, centered) over one flat buffer, in place, in one elementwise launch."""
        if momentum > 0 and momentum_buf is None or centered and grad_avg is None:
            raise ValueError("rmsprop_step needs momentum_buf when momentum > 0 and grad_avg when centered")
        dt = param.dtype
        return self._adaptive_launch(
            "rmsprop_step",
            (param, grad, square_avg, momentum_buf if momentum > 0 else None, grad_avg if centered else None),
            (
                K.scalar(dt, lr),
                K.scalar(dt, alpha),
                K.scalar(dt, 1 - alpha),
                K.scalar(dt, eps),
                K.scalar(dt, weight_decay),
                K.scalar(dt, momentum),
                np.int32(bool(centered)),
                np.int32(bool(maximize)),
            ),
            lambda: reference.rmsprop_step(
                self.xp,
                param,
                grad,
                square_avg,
                momentum_buf,
                grad_avg,
                lr=lr,
                alpha=alpha,
                eps=eps,
                weight_decay=weight_decay,
                momentum=momentum,
                centered=centered,
                maximize=maximize,
            ),
        )

    @staticmethod
    def _optim_kernel(op: str, param):
        """(kernel, grid) of the selected version of ``op`` (kernel_table) for ``param``'s dtype and size:
        v1 takes one element per thread and iteration, v2 a 16-byte vector (4 floats / 2 doubles)."""
        v, dt = kernel_table.version(op), param.dtype
        if op == "sgd_step":
            fn = K.entry("optim", "sgd_step_v2", dt) if v == 2 else K.entry("optim", "sgd_step_v1", dt)
        else:
            fn = K.entry("optim", "adam_step_v2", dt) if v == 2 else K.entry("optim", "adam_step_v1", dt)
        per_thread = 16 // dt.itemsize if v == 2 else 1
        return fn, K.elementwise_grid(K.ceil_div(param.size, per_thread))

    @staticmethod
    def _lr_dev(lr_dev, dtype):
        if lr_dev is not None and (lr_dev.dtype != dtype or lr_dev.size != 1):
            raise ValueError(f"lr_dev must be a one-element {np.dtype(dtype)} device array, got {lr_dev.dtype}")
        return lr_dev

    def _step_scalar(self):
        """A per-device one-element int64 buffer for an int ``step`` (reused: launches are stream-ordered)."""
        dev = self.xp.cuda.Device().id
        cache = self.__dict__.setdefault("_step_scalars", {})
        if dev not in cache:
            cache[dev] = self.xp.zeros((1,), dtype=self.xp.int64)
        return cache[dev]

    def step_increment(self, step) -> None:
        """step[0] += 1 on the device (one thread), for a device-resident Adam step counter."""
        K.get_function("optim", "step_increment_v1")((1,), (1,), (step,))

    # -- convolution and pooling primitives: im2col/col2im and max-pool kernels, GEMM by linear_act ------
    def _contiguous_into(self, ws, name: str, a):
        """``a`` as a C-contiguous array: ``ascontiguousarray``, or copied into the workspace's ``name``."""
        if ws is None:
            return self.xp.ascontiguousarray(a)
        out = ws(name, tuple(a.shape), a.dtype)
        self.xp.copyto(out, a)
        return out

    def conv2d_forward(
        self, x, weight, bias, stride=(1, 1), padding=(0, 0), act="none", negative_slope=0.01, need_grad=True, ws=None
    ):
        """col (N*OH*OW, C*KH*KW) from one launch, then the fused linear_act GEMM (bias and activation in
        its epilogue), laid out as (N, OC, OH, OW); backward is linear_act_backward + col2im. ``ws``: a
        workspace (``_empty``) for the output and temporaries."""
        oc, _, kh, kw = weight.shape
        col = self.conv2d_im2col(x, (kh, kw), stride, padding, ws=ws)
        W2 = weight.reshape(oc, -1)
        y2 = self.linear_act(col, W2, bias, act, negative_slope, ws=ws)  # (N*OH*OW, OC)
        n = x.shape[0]
        oh = _conv_out(x.shape[2], kh, stride[0], padding[0], 1)
        ow = _conv_out(x.shape[3], kw, stride[1], padding[1], 1)
        out = self._contiguous_into(ws, "out", y2.reshape(n, oh, ow, oc).transpose(0, 3, 1, 2))
        saved = (x.shape, weight.shape, col, W2, y2, stride, padding, act, negative_slope) if need_grad else None
        return out, saved

    def conv2d_backward(
        self, dy, saved, need_dx=True, need_dW=True, need_db=True, *, ws=None, out_dW=None, out_db=None
    ):
        """dx, dW, db of conv2d_forward; ``ws``, ``out_dW`` (OC, C, KH, KW), ``out_db``: as linear_act_backward."""
        x_shape, w_shape, col, W2, y2, stride, padding, act, negative_slope = saved
        g2 = self._contiguous_into(ws, "g2", dy.transpose(0, 2, 3, 1)).reshape(-1, w_shape[0])
        dcol, dW2, db = self.linear_act_backward(
            g2,
            col,
            W2,
            y2,
            act,
            negative_slope,
            need_dx=need_dx,
            need_dW=need_dW,
            need_db=need_db,
            ws=ws,
            out_dW=None if out_dW is None else out_dW.reshape(w_shape[0], -1),
            out_db=out_db,
        )
        dx = None if dcol is None else self.conv2d_col2im(dcol, x_shape, w_shape[2:], stride, padding, ws=ws)
        return dx, None if dW2 is None else dW2.reshape(w_shape), db

    def pool2d_forward(
        self, x, mode, kernel_size, stride, padding=(0, 0), count_include_pad=True, need_grad=True, ws=None
    ):
        """max: one kernel launch each way, keeping each winner's index; avg: the xp reference (no
        static-buffer form: ``ws`` raises)."""
        if mode != "max":
            if ws is not None:
                raise ValueError("avg_pool2d has no static-buffer form on the cupy backend")
            return super().pool2d_forward(x, mode, kernel_size, stride, padding, count_include_pad, need_grad)
        y, idx = self.max_pool2d_fwd(x, kernel_size, stride, padding, ws=ws)
        return y, (("max-kernel", x.shape, idx) if need_grad else None)

    def pool2d_backward(self, dy, saved, ws=None):
        if saved[0] != "max-kernel":
            return super().pool2d_backward(dy, saved)
        return self.max_pool2d_bwd(dy, saved[2], saved[1], ws=ws)

    # -- convolution and pooling building blocks (the primitives above call them) --------------------------
    def conv2d_im2col(self, x, kernel_size, stride=1, padding=0, dilation=1, ws=None):
        """col (N*OH*OW, C*KH*KW) of x (N, C, H, W): one row per output pixel, columns ordered (c, ki, kj)
        like weight.reshape(OC, -1), so conv2d = linear_act(col, weight2d, b, act) then
        reshape (N, OH, OW, OC) and transpose to (N, OC, OH, OW)."""
        g = _geometry(x.shape, kernel_size, stride, padding, dilation, "conv2d_im2col")
        self._require_float(x)
        n, c, _, _, kh, kw, *_, oh, ow = g
        col = self._empty(ws, "col", (n * oh * ow, c * kh * kw), x.dtype)
        if col.size:
            K.entry("conv2d", "im2col_v1", x.dtype)(
                K.elementwise_grid(col.size), (256,), (K.as_contiguous(x), col, *map(np.int64, g))
            )
        return col

    def conv2d_col2im(self, dcol, x_shape, kernel_size, stride=1, padding=0, dilation=1, ws=None):
        """dx (N, C, H, W) from dcol (N*OH*OW, C*KH*KW): the adjoint of conv2d_im2col (overlapping
        taps summed, gathered per input element: deterministic)."""
        g = _geometry(x_shape, kernel_size, stride, padding, dilation, "conv2d_col2im")
        self._require_float(dcol)
        n, c, h, w, kh, kw, *_, oh, ow = g
        if dcol.shape != (n * oh * ow, c * kh * kw):
            raise ValueError(f"dcol must have shape {(n * oh * ow, c * kh * kw)}, got {dcol.shape}")
        dx = self._empty(ws, "dx_col2im", (n, c, h, w), dcol.dtype)
        if dx.size:
            K.entry("conv2d", "col2im_v1", dcol.dtype)(
                K.elementwise_grid(dx.size), (256,), (K.as_contiguous(dcol), dx, *map(np.int64, g))
            )
        return dx

    def max_pool2d_fwd(self, x, kernel_size, stride=None, padding=0, dilation=1, ws=None):
        """(y (N, C, OH, OW), idx (N, C, OH, OW) int64): window maxima and the flat h * W + w index of each
        winner within its (H, W) plane (PyTorch's convention). NaN propagates. stride defaults to
        kernel_size; padding may be at most half the kernel."""
        stride = kernel_size if stride is None else stride
        g = _geometry(x.shape, kernel_size, stride, padding, dilation, "max_pool2d_fwd")
        self._require_float(x)
        n, c, _, _, kh, kw, _, _, ph, pw, *_, oh, ow = g
        if 2 * ph > kh or 2 * pw > kw:
            raise ValueError(f"max_pool2d: padding {(ph, pw)} must be at most half the kernel {(kh, kw)}")
        y = self._empty(ws, "pool_y", (n, c, oh, ow), x.dtype)
        idx = self._empty(ws, "pool_idx", (n, c, oh, ow), self.xp.int64)
        if y.size:
            K.entry("conv2d", "max_pool2d_fwd_v1", x.dtype)(
                K.elementwise_grid(y.size), (256,), (K.as_contiguous(x), y, idx, *map(np.int64, g))
            )
        return y, idx

    def max_pool2d_bwd(self, dy, idx, x_shape, ws=None):
        """dx (N, C, H, W): dy scattered to the saved argmax positions (atomicAdd: overlapping windows
        may send several gradients to one input)."""
        if len(x_shape) != 4 or dy.shape != idx.shape or dy.ndim != 4 or dy.shape[:2] != tuple(x_shape[:2]):
            raise ValueError(
                f"max_pool2d_bwd: dy {dy.shape}, idx {idx.shape} and x_shape {tuple(x_shape)} do not match"
            )
        self._require_float(dy)
        n, c, h, w = (int(e) for e in x_shape)
        if ws is None:
            dx = self.xp.zeros((n, c, h, w), dtype=dy.dtype)
        else:
            dx = ws("pool_dx", (n, c, h, w), dy.dtype)
            dx.fill(0)
        if dy.size:
            K.entry("conv2d", "max_pool2d_bwd_v1", dy.dtype)(
                K.elementwise_grid(dy.size),
                (256,),
                (
                    K.as_contiguous(dy),
                    K.as_contiguous(idx, dtype=np.int64),
                    dx,
                    np.int64(n * c),
                    np.int64(dy.shape[2] * dy.shape[3]),
                    np.int64(h * w),
                ),
            )
        return dx

    @staticmethod
    def _require_float(a) -> None:
        if np.dtype(a.dtype) not in K.DTYPE_SUFFIX:
            raise TypeError(f"the CUDA kernels take float32 or float64 arrays, got {a.dtype}")
