// softmax_cross_entropy.cu -- fused softmax + cross-entropy: per-row loss and dlogits in one launch.
//
// Math (reference: gpunn/backend/reference.py, softmax_cross_entropy)
//   logits (N, C) row-major, target (N,) int64, weight (C,) or NULL (all ones), eps = label_smoothing,
//   W = sum_c weight[c] (read from *weight_total, a device scalar, so nothing waits on the host; C when
//   NULL), lse = log sum_c exp(x_c) (max-subtracted), p_c = exp(x_c - lse)
//   row i with label y (ignored when y == ignore_index):
//     loss_i    = (1 - eps) * w[y] * (lse - x_y) + eps / C * sum_c w[c] * (lse - x_c)
//     dlogits_c = scale * ((1 - eps) * w[y] * (p_c - [c == y]) + eps / C * (p_c * W - w[c]))
//     row_w_i   = w[y]
//   ignored rows: loss 0, row weight 0, dlogits 0 * scale (so NaN when 'mean' divides by zero, as in
//   the reference), or NaN where the row's log-softmax is NaN (a NaN or +inf logit, all -inf): PyTorch's. The smoothing sum is accumulated term by term as sum_c w[c] * (lse - x_c) (every
//   term >= 0), not as W * lse - sum_c w[c] x_c, which cancels catastrophically for large logits.
//
//   Out-of-range labels (not ignore_index, < 0 or >= C) set error = (1, label, C, ignore_index)
//   (atomicExch, last writer wins; error is 4 int64) and the row is treated as ignored. The flag buffer
//   persists across launches: Python reads it with the next host read (the loss), in the same transfer,
//   and raises ValueError naming the label and the range. No device-side assert: the CUDA context stays
//   usable, and nothing waits for the GPU at the launch.
//
// Reduction (the Python side drives it):
//   'none': scale = NULL (1); loss = loss_rows.
//   'sum' : scale = NULL (1); loss = sum(loss_rows)   (sce_reduce_v1: a float64 sum in one block, 4 N bytes).
//   'mean': sce_weight_sum_v1 first computes denom = sum_i row_w_i from the labels alone, one block,
//           in double, and writes scale = 1 / denom (0 with no valid row, else NaN when denom == 0);
//           the main kernel reads *scale and writes already-scaled dlogits; loss = sum(loss_rows) / denom
//           (sce_reduce_v1, which can also write a captured step's loss to its slot of a device ring).
//           The denominator pass reads N labels and N gathered weights: 8 N + 4 N bytes, negligible next
//           to the 12 N C bytes below. Nothing goes to the host, so the launch sequence is capturable.
//
// Bytes per call (float32): read logits twice (pass 1: online max/sum; pass 2: p, dlogits and the
//   smoothing sum; the second read of a row usually hits L2: a 32000-class row is 128 KB) and write
//   dlogits once: 8 N C (DRAM, when the re-read hits L2) to 12 N C; plus 8 N labels, 8 N loss + row_w.
//
// Launch configuration
//   sce_block_v1_<t>: one block per row, blockDim.x = 128..1024 (a power of two; Python picks it from C),
//                     grid.x = N. For large C.
//   sce_warp_v1_<t>:  one warp per row, blockDim = (32, 8): 8 rows per block, grid.x = ceil(N / 8).
//                     For C <= 1024, where a 256-thread block per row would idle most threads.
//   sce_weight_sum_v1_<t>: one block of 256 threads, grid-stride over N.
//
// Build:
//   nvcc -std=c++17 -arch=sm_90 -cubin --resource-usage -o /dev/null kernels/softmax_cross_entropy.cu
//
// Modes (one kernel per version serves all three; see SCE_FUSED below):
//   fused     loss and dlogits in one launch (softmax_cross_entropy): 12 N C bytes as above.
//   forward   loss, row weight and lse per row (autograd's forward: softmax_cross_entropy_fwd): 4 N C
//             bytes (8 N C with label smoothing, whose sum needs a second, read-only pass).
//   backward  dlogits = g * d loss / d logits from the saved lse (no pass 1): 8 N C bytes. The upstream
//             gradient g (a device scalar, or one per row for 'none') is folded in here, so autograd
//             needs no `dlogits * g` pass (8 N C more) nor a copy of the gradient.
//
// Versions (gpunn/backend/kernel_table.py picks one)
//   v1  two passes over the row (online max/sum, then write); block-per-row and warp-per-row variants.
//       Pass 1 has one dependent 4-byte load in flight per thread: the online update needs the value
//       before the loop moves on.
//   v2  pass 1 loads 4 elements (t, t + n, t + 2n, t + 3n) into registers before adding any, so a
//       thread keeps 4 independent loads in flight; they are then added in v1's order, so (m, s) and
//       every output are v1's (bit-for-bit where no FMA contraction differs between the unrolled copies;
//       the emulator test checks exact equality). Pass 2 is unrolled 4 ways too. Napkin math: a 32000-class row
//       read by 1024 threads is ~31 loads per thread; with ~1 us DRAM latency and one load in flight, a
//       block streams ~4 KB/us, so 132 SMs x 2 blocks need ~4 loads in flight per thread to approach
//       the ~4 TB/s of an H200. Unmeasured: the quick GPU bench times both.
//
// Indexing: row offsets are 64-bit (long long); C itself must fit in 32 bits (checked in Python).

__device__ __forceinline__ float gexp(float v) { return expf(v); }
__device__ __forceinline__ double gexp(double v) { return exp(v); }
__device__ __forceinline__ float glog(float v) { return logf(v); }
__device__ __forceinline__ double glog(double v) { return log(v); }
template <typename T> __device__ __forceinline__ T neg_inf();
template <> __device__ __forceinline__ float neg_inf<float>() { return __int_as_float(0xff800000); }
template <> __device__ __forceinline__ double neg_inf<double>() {
    return __longlong_as_double(0xfff0000000000000ULL);
}
template <typename T> __device__ __forceinline__ T quiet_nan();
template <> __device__ __forceinline__ float quiet_nan<float>() { return __int_as_float(0x7fffffff); }
template <> __device__ __forceinline__ double quiet_nan<double>() {
    return __longlong_as_double(0x7fffffffffffffffULL);
}

// Online softmax state: m = running max, s = sum exp(x - m). Empty: (-inf, 0).
// NaN propagates through s: a NaN logit never wins the "x > m" test, so it lands in s += exp(NaN - m).
template <typename T>
__device__ __forceinline__ void online_add(T& m, T& s, T x) {
    if (x == neg_inf<T>()) return;  // contributes exp(-inf) = 0; skipping avoids (-inf) - (-inf)
    if (x > m) {
        s = s * gexp(m - x) + T(1);  // m == -inf: exp(-inf) = 0, s becomes 1
        m = x;
    } else {
        s += gexp(x - m);
    }
}

template <typename T>
__device__ __forceinline__ void online_merge(T& m, T& s, T m2, T s2) {
    const T mm = (m2 > m) ? m2 : m;
    // an empty side (max -inf) contributes its s unchanged: 0, or NaN that must propagate
    const T a = (m == neg_inf<T>()) ? s : s * gexp(m - mm);
    const T b = (m2 == neg_inf<T>()) ? s2 : s2 * gexp(m2 - mm);
    m = mm;
    s = a + b;
}

template <typename T>
__device__ __forceinline__ void warp_merge(T& m, T& s) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const T m2 = __shfl_xor_sync(0xffffffffu, m, o);
        const T s2 = __shfl_xor_sync(0xffffffffu, s, o);
        online_merge(m, s, m2, s2);
    }
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Row reduction over a group of threads: a warp (GROUP == 32) or the whole block (GROUP == 0, any
// multiple of 32 up to 1024). Results are returned to every thread of the group.
template <typename T, int GROUP>
struct RowReduce {
    __device__ __forceinline__ static void merge(T& m, T& s) {
        warp_merge(m, s);
        if (GROUP == 32) return;
        __shared__ T sm[32], ss[32];
        const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
        __syncthreads();  // the shared slots may still be read by a previous reduction
        if (lane == 0) {
            sm[warp] = m;
            ss[warp] = s;
        }
        __syncthreads();
        m = (lane < nwarps) ? sm[lane] : neg_inf<T>();
        s = (lane < nwarps) ? ss[lane] : T(0);
        warp_merge(m, s);
    }
    __device__ __forceinline__ static T sum(T v) {
        v = warp_sum(v);
        if (GROUP == 32) return v;
        __shared__ T sv[32];
        const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
        __syncthreads();
        if (lane == 0) sv[warp] = v;
        __syncthreads();
        v = (lane < nwarps) ? sv[lane] : T(0);
        return warp_sum(v);
    }
};

// What a launch computes (the same kernels serve all three; mode is uniform over the grid):
//   SCE_FUSED     loss_rows, row_weight and dlogits = g * d loss / d logits in one launch (two passes)
//   SCE_FORWARD   loss_rows, row_weight and lse_rows (pass 1, plus a read-only pass 2 for smoothing)
//   SCE_BACKWARD  dlogits from the saved lse_rows (pass 2 only); no loss, no error flag
// g (the upstream gradient, folded into dlogits): *gscale for a scalar (g_stride 0), gscale[row] for
// 'none' (g_stride 1), 1 when gscale is NULL.
#define SCE_FUSED 0
#define SCE_FORWARD 1
#define SCE_BACKWARD 2

template <typename T>
struct SceArgs {
    const T* __restrict__ logits;
    const long long* __restrict__ target;
    const T* __restrict__ weight;
    const T* __restrict__ scale;
    T* __restrict__ dlogits;
    T* __restrict__ loss_rows;
    T* __restrict__ row_weight;
    long long* __restrict__ error;
    long long N;
    int C;
    long long ignore_index;
    T smoothing;
    const T* __restrict__ weight_total;
    T* __restrict__ lse_rows;
    const T* __restrict__ gscale;
    long long g_stride;
    int mode;
};

// Pass 1 (online max and sum of exp) over this thread's share of a row: elements t, t + n, t + 2n, ...
// v1: one element per iteration, so one dependent 4-byte load in flight per thread.
// v2: UNROLL = 4 independent loads issued before any is used (4 loads in flight per thread), then added
//     in the same order as v1: bit-for-bit the same (m, s) as v1.
template <typename T, int UNROLL>
__device__ __forceinline__ void pass1(const T* __restrict__ x, int C, int t, int nthreads, T& m, T& s) {
    int c = t;
    if (UNROLL > 1) {
        for (; c + (UNROLL - 1) * nthreads < C; c += UNROLL * nthreads) {
            T v[UNROLL];
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) v[u] = x[c + u * nthreads];
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) online_add(m, s, v[u]);
        }
    }
    for (; c < C; c += nthreads) online_add(m, s, x[c]);
}

// One row, processed by `nthreads` threads with index `t` (a warp or a block).
template <typename T, int GROUP, int UNROLL>
__device__ __forceinline__ void sce_row(const SceArgs<T>& a, long long row, int t, int nthreads) {
    const int C = a.C;
    const T* x = a.logits + row * (long long)C;
    T* d = a.dlogits ? a.dlogits + row * (long long)C : nullptr;
    const bool want_d = a.mode != SCE_FORWARD, want_loss = a.mode != SCE_BACKWARD;
    const T scale = a.scale ? *a.scale : T(1);
    const T gval = a.gscale ? a.gscale[row * a.g_stride] : T(1);
    const long long y = a.target[row];
    bool valid = (y != a.ignore_index);
    if (valid && (y < 0 || y >= C)) {
        if (t == 0 && want_loss) {  // the forward (or fused) launch reports it; the backward just skips
            atomicExch(reinterpret_cast<unsigned long long*>(a.error + 1), (unsigned long long)y);
            atomicExch(reinterpret_cast<unsigned long long*>(a.error + 2), (unsigned long long)C);
            atomicExch(reinterpret_cast<unsigned long long*>(a.error + 3), (unsigned long long)a.ignore_index);
            atomicExch(reinterpret_cast<unsigned long long*>(a.error), 1ULL);
        }
        valid = false;
    }
    if (!valid) {  // uniform within the group: every thread read the same label
        if (want_d) {
            // PyTorch's gradient of an ignored row: NaN where the row's log-softmax is NaN (a NaN or +inf
            // logit, or every logit -inf), else 0 (the loss ignores the row either way)
            // one sum per row: each thread adds +inf if it saw a NaN or +inf logit, else 1 per finite
            // logit; a NaN row sums to +inf (some bad logit) or to 0 (every logit -inf)
            bool nan_row = false;
            if (y == a.ignore_index) {
                T v = T(0);
                for (int c = t; c < C; c += nthreads) {
                    const T xc = x[c];
                    v += (xc != xc || xc == -neg_inf<T>()) ? -neg_inf<T>() : T(xc != neg_inf<T>());
                }
                v = RowReduce<T, GROUP>::sum(v);
                nan_row = !(v > T(0) && v < -neg_inf<T>());
            }
            const T z = nan_row ? quiet_nan<T>() : (T(0) * scale) * gval;
            for (int c = t; c < C; c += nthreads) d[c] = z;
        }
        if (t == 0 && want_loss) {
            a.loss_rows[row] = T(0);
            a.row_weight[row] = T(0);
            if (a.lse_rows) a.lse_rows[row] = T(0);
        }
        return;
    }

    T lse;
    if (a.mode == SCE_BACKWARD) {
        lse = a.lse_rows[row];
    } else {  // pass 1: online max and sum of exp over the row
        T m = neg_inf<T>(), s = T(0);
        pass1<T, UNROLL>(x, C, t, nthreads, m, s);
        RowReduce<T, GROUP>::merge(m, s);
        lse = m + glog(s);
    }

    // pass 2: p, dlogits and the smoothing sum (the forward launch only needs the sum)
    const T wy = a.weight ? a.weight[y] : T(1);
    const T smoothing = a.smoothing;
    const T one_minus_eps = T(1) - smoothing;
    const T eps_c = smoothing / T(C);
    const T hard = one_minus_eps * wy;  // coefficient of (p_c - [c == y])
    const T wsum = (smoothing != T(0) && a.weight_total) ? *a.weight_total : T(C);
    T smooth = T(0);
    if (want_d || smoothing != T(0)) {
#pragma unroll(UNROLL)
        for (int c = t; c < C; c += nthreads) {
            const T xc = x[c];
            if (smoothing != T(0) && want_loss) smooth += (a.weight ? a.weight[c] : T(1)) * (lse - xc);
            if (!want_d) continue;
            const T p = gexp(xc - lse);
            T g = hard * (p - T(c == y));
            if (smoothing != T(0)) {
                const T wc = a.weight ? a.weight[c] : T(1);
                g += eps_c * (p * wsum - wc);
            }
            d[c] = (g * scale) * gval;
        }
    }
    if (!want_loss) return;
    if (smoothing != T(0)) smooth = RowReduce<T, GROUP>::sum(smooth);  // smoothing is uniform
    if (t == 0) {
        T loss = hard * (lse - x[y]);
        if (smoothing != T(0)) loss += eps_c * smooth;
        a.loss_rows[row] = loss;
        a.row_weight[row] = wy;
        if (a.lse_rows) a.lse_rows[row] = lse;
    }
}

#define SCE_ARGS(T)                                                                                 \
    const T *__restrict__ logits, const long long *__restrict__ target, const T *__restrict__ weight, \
        const T *__restrict__ scale, T *__restrict__ dlogits, T *__restrict__ loss_rows,            \
        T *__restrict__ row_weight, long long *__restrict__ error, long long N, int C,               \
        long long ignore_index, T smoothing, const T *__restrict__ weight_total,                    \
        T *__restrict__ lse_rows, const T *__restrict__ gscale, long long g_stride, int mode
#define SCE_PACK(T)                                                                                 \
    SceArgs<T> {logits, target, weight, scale, dlogits, loss_rows, row_weight, error, N, C,          \
                ignore_index, smoothing, weight_total, lse_rows, gscale, g_stride, mode}

#define DEFINE_SCE(SUFFIX, T)                                                                       \
    extern "C" __global__ void __launch_bounds__(1024) sce_block_v1_##SUFFIX(SCE_ARGS(T)) {        \
        const long long row = blockIdx.x;                                                           \
        if (row >= N) return;                                                                       \
        sce_row<T, 0, 1>(SCE_PACK(T), row, threadIdx.x, blockDim.x);                                \
    }                                                                                               \
    extern "C" __global__ void __launch_bounds__(256) sce_warp_v1_##SUFFIX(SCE_ARGS(T)) {          \
        const long long row = (long long)blockIdx.x * blockDim.y + threadIdx.y;                     \
        if (row >= N) return; /* whole warps leave together: the warp reduction stays full */      \
        sce_row<T, 32, 1>(SCE_PACK(T), row, threadIdx.x, 32);                                       \
    }                                                                                               \
    extern "C" __global__ void __launch_bounds__(1024) sce_block_v2_##SUFFIX(SCE_ARGS(T)) {        \
        const long long row = blockIdx.x;                                                           \
        if (row >= N) return;                                                                       \
        sce_row<T, 0, 4>(SCE_PACK(T), row, threadIdx.x, blockDim.x);                                \
    }                                                                                               \
    extern "C" __global__ void __launch_bounds__(256) sce_warp_v2_##SUFFIX(SCE_ARGS(T)) {          \
        const long long row = (long long)blockIdx.x * blockDim.y + threadIdx.y;                     \
        if (row >= N) return;                                                                       \
        sce_row<T, 32, 4>(SCE_PACK(T), row, threadIdx.x, 32);                                       \
    }

DEFINE_SCE(f32, float)
DEFINE_SCE(f64, double)

// ------------------------------------------------------------------------------------------------
// 'mean' denominator: denom = sum over rows of w[y_i] (valid rows only), then scale = 1 / denom.
// One block of 256 threads (grid-stride over N), accumulated in double; deterministic.
// ------------------------------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ void sce_weight_sum_v1(const long long* __restrict__ target,
                                                  const T* __restrict__ weight, T* __restrict__ scale,
                                                  double* __restrict__ denom, long long N, int C,
                                                  long long ignore_index) {
    double acc = 0.0, rows = 0.0;
    for (long long i = threadIdx.x; i < N; i += blockDim.x) {
        const long long y = target[i];
        if (y == ignore_index || y < 0 || y >= C) continue;  // out-of-range rows count as ignored
        acc += weight ? (double)weight[y] : 1.0;
        rows += 1.0;
    }
    __shared__ double part[32], part_rows[32];
    acc = warp_sum(acc);
    rows = warp_sum(rows);
    if (threadIdx.x % 32 == 0) {
        part[threadIdx.x / 32] = acc;
        part_rows[threadIdx.x / 32] = rows;
    }
    __syncthreads();
    if (threadIdx.x < 32) {
        acc = (threadIdx.x < blockDim.x / 32) ? part[threadIdx.x] : 0.0;
        rows = (threadIdx.x < blockDim.x / 32) ? part_rows[threadIdx.x] : 0.0;
        acc = warp_sum(acc);
        rows = warp_sum(rows);
        if (threadIdx.x == 0) {
            denom[0] = acc;
            // no valid row: every dlogit is 0 (PyTorch's zero gradient); valid rows of zero weight: NaN
            scale[0] = (acc != 0.0) ? (T)(1.0 / acc) : (rows == 0.0 ? (T)0 : quiet_nan<T>());
        }
    }
}

#define DEFINE_SCE_WEIGHT_SUM(SUFFIX, T)                                                            \
    extern "C" __global__ void __launch_bounds__(1024) sce_weight_sum_v1_##SUFFIX(                 \
        const long long* __restrict__ target, const T* __restrict__ weight, T* __restrict__ scale,  \
        double* __restrict__ denom, long long N, int C, long long ignore_index) {                   \
        sce_weight_sum_v1<T>(target, weight, scale, denom, N, C, ignore_index);                     \
    }

DEFINE_SCE_WEIGHT_SUM(f32, float)
DEFINE_SCE_WEIGHT_SUM(f64, double)

// ------------------------------------------------------------------------------------------------
// 'sum' / 'mean' reduction of the row losses: out[slot] = (T)(sum_i loss_rows[i] [/ *denom]), the sum
// in double in a fixed order (per-thread strided partial sums, then a warp/block tree): deterministic,
// and the same kernel for the eager loss and a captured step's, so both give the same bits.
//   denom: NULL for 'sum', else the denominator written by sce_weight_sum_v1 ('mean'; 0 / 0 = NaN when
//   every row is ignored, as the reference).
//   slot: NULL (write out[0]), or a device int64 index into out (a captured step's ring of losses): the
//   loss goes to out[slot[0] % ring] and slot[0] is incremented, so a CUDA graph replayed every step
//   writes each step's loss to its own element with no host argument changing.
// One block of 256 threads.
// ------------------------------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ void sce_reduce_v1(const T* __restrict__ loss_rows, const double* __restrict__ denom,
                                              T* __restrict__ out, long long* __restrict__ slot, long long N,
                                              long long ring) {
    double acc = 0.0;
    for (long long i = threadIdx.x; i < N; i += blockDim.x) acc += (double)loss_rows[i];
    __shared__ double part[32];
    acc = warp_sum(acc);
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = acc;
    __syncthreads();
    if (threadIdx.x < 32) {
        acc = (threadIdx.x < blockDim.x / 32) ? part[threadIdx.x] : 0.0;
        acc = warp_sum(acc);
        if (threadIdx.x == 0) {
            const double v = denom ? acc / denom[0] : acc;
            long long k = 0;
            if (slot) {
                k = slot[0] % ring;
                slot[0] = slot[0] + 1;
            }
            out[k] = (T)v;
        }
    }
}

#define DEFINE_SCE_REDUCE(SUFFIX, T)                                                                \
    extern "C" __global__ void __launch_bounds__(256) sce_reduce_v1_##SUFFIX(                      \
        const T* __restrict__ loss_rows, const double* __restrict__ denom, T* __restrict__ out,     \
        long long* __restrict__ slot, long long N, long long ring) {                                \
        sce_reduce_v1<T>(loss_rows, denom, out, slot, N, ring);                                     \
    }

DEFINE_SCE_REDUCE(f32, float)
DEFINE_SCE_REDUCE(f64, double)
