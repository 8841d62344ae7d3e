// linear_act.cu -- fused linear layer: y = act(x @ W^T + b), and its backward.
//
// Math (reference: gpunn/backend/reference.py, linear_act / linear_act_backward)
//   forward   z = x @ W^T + b            x (N, K), W (M, K) (PyTorch's out x in), b (M,) or NULL
//             y = act(z)                 y (N, M); act: 0 none, 1 relu, 2 leaky_relu, 3 sigmoid, 4 tanh
//   backward  dz = dy * act'(y)          act' written in terms of the OUTPUT y (forward saves only y)
//             db = sum over rows of dz   (M,)
//             dx = dz @ W                (N, M) @ (M, K) -> (N, K)
//             dW = dz^T @ x              (M, N) @ (N, K) -> (M, K)
//   All arrays are C-contiguous (row-major); the Python side makes them so before the launch.
//
// One GEMM template serves all three products. It computes C (R, Q) = op(A) (R, Kd) @ op(B) (Kd, Q):
//   A(r, k) = TRANS_A ? A[k * R + r] : A[r * Kd + k]      (A stored (Kd, R) when transposed)
//   B(k, q) = TRANS_B ? B[q * Kd + k] : B[k * Q + q]      (B stored (Q, Kd) when transposed)
//   C[r, q] = act(sum_k A(r, k) B(k, q) + bias[q])
//   forward: A = x, B = W, TRANS_B          ->  linear_act_forward_v1_<t>
//   dx:      A = dz, B = W                  ->  gemm_nn_v1_<t>
//   dW:      A = dz (transposed), B = x     ->  gemm_tn_v1_<t>
//
// Launch configuration (v2's split-K kernels: the same blocks, grid.z = K slices; see Versions)
//   GEMM: 256 threads (16 x 16) per block; one block computes a 64 x 64 tile of C, each thread a 4 x 4
//         register block at rows ty + 16 i and columns tx + 16 j (strided, so shared-memory reads are
//         bank-conflict-free and C stores coalesce). K advances 16 at a time through shared memory.
//         grid = (ceil(R / 64), ceil(Q / 64)): row tiles on x (up to 2^31 - 1), column tiles on y
//         (<= 65535, so Q <= 4,194,240; checked in Python).
//   act_backward_bias: block (32, 8); grid = (ceil(M / 32), ceil(N / 256)); a block owns 32 columns and
//         256 rows, writes dz for them and one partial column sum per column into partial (grid.y, M);
//         column_sum_v1 (256 threads, ceil(M / 256) blocks) adds the grid.y partials: db (M,).
//         Deterministic: no atomics, the summation order is fixed by the launch shape.
//
// Napkin math (float32, N = K = M = 4096): 2 N M K = 137 GFLOP; FFMA peak of an H100 ~ 60 TFLOP/s
//   -> 2.3 ms floor; v1 (no tensor cores, no double buffering) should land at ~ 1/3 to 1/2 of FFMA peak.
//   act_backward_bias moves 3 N M floats (dy, y read; dz written): bandwidth-bound.
//
// Build (syntax / resource check; CuPy compiles the same source at run time with NVRTC):
//   nvcc -std=c++17 -arch=sm_90 -cubin --resource-usage -o /dev/null kernels/linear_act.cu
//
// Versions
//   v1  64x64x16 shared-memory tiles, 4x4 register blocking, fused bias + activation epilogue (one
//       branch on act per tile), float accumulation for float, double for double. Each thread's four
//       global load offsets per operand are computed once and advanced by a constant per K step.
//       Known slack, left for a v2 with a bench to justify it: no double buffering (a barrier pair per
//       K step), scalar 4-byte loads, 2-way bank conflicts on the transposing shared stores, no tensor
//       cores (TF32 would change the numerics the 1e-5 tests hold). Entry points carry "_v1".
//   v2  split-K for GEMMs whose output has too few 64 x 64 tiles to fill the GPU (chosen per call in
//       Python, gpunn/backend/kernel_table.py selects the version; larger GEMMs run v1's kernels):
//       gemm_splitk_{nt,nn,tn}_v2_<t> run v1's tile code over K slice blockIdx.z (grid.z = S slices of
//       k_chunk, a multiple of 16) into partial (S, R, Q); splitk_reduce_v2_<t> (256 threads, grid-stride)
//       adds the S slices IN ORDER, then bias and activation: deterministic, no atomics.
//       S = min(ceil(2 SMs / tiles), K / 64, 16). Napkin math, 200x784x200 float32 on an H200 (132 SMs):
//       2 N M K = 63 MFLOP; v1 runs 16 blocks (one per SM on 16 of 132 SMs), each doing 64x64x784
//       FMAs = 3.2 M FMA at roughly 1/4 of an SM's 128 FMA/clk (one 256-thread block, barrier-bound)
//       -> ~100 K cycles ~ 50 us. v2: S = 10 -> 160 blocks over all SMs, ~5-6 us, plus the reduce
//       (10 x 200 x 200 x 4 B = 1.6 MB read, < 2 us) and one more launch. Unmeasured: the quick GPU
//       bench times both, against cuBLAS.
//
// Indexing: every global offset is computed in 64-bit (long long).

#define GPUNN_ACT_NONE 0
#define GPUNN_ACT_RELU 1
#define GPUNN_ACT_LEAKY_RELU 2
#define GPUNN_ACT_SIGMOID 3
#define GPUNN_ACT_TANH 4

// Precision-matched math helpers (no headers: NVRTC compiles this file without includes).
__device__ __forceinline__ float gexp(float v) { return expf(v); }
__device__ __forceinline__ double gexp(double v) { return exp(v); }
__device__ __forceinline__ float gtanh(float v) { return tanhf(v); }
__device__ __forceinline__ double gtanh(double v) { return tanh(v); }
__device__ __forceinline__ float gabs(float v) { return fabsf(v); }
__device__ __forceinline__ double gabs(double v) { return fabs(v); }

// y = act(z). NaN in z stays NaN for every activation (relu: NaN > 0 is false, but we return z then).
template <typename T>
__device__ __forceinline__ T act_forward(T z, int act, T slope) {
    switch (act) {
        case GPUNN_ACT_RELU:
            return (z < T(0)) ? T(0) : z;  // PyTorch's rule: keeps NaN and -0.0 (as the reference does)
        case GPUNN_ACT_LEAKY_RELU:
            return (z > T(0)) ? z : z * slope;
        case GPUNN_ACT_SIGMOID: {
            // exp never overflows: exp(-|z|) is in (0, 1]
            T e = gexp(-gabs(z));
            return (z >= T(0)) ? T(1) / (T(1) + e) : e / (T(1) + e);
        }
        case GPUNN_ACT_TANH:
            return gtanh(z);
        default:
            return z;
    }
}

// dz = dy * act'(z), with act' from the output y. ReLU selects (PyTorch's rule: 0 where y <= 0, else dy),
// so a NaN output passes dy and an inf or NaN dy where y <= 0 gives 0, as in the reference.
template <typename T>
__device__ __forceinline__ T act_backward(T dy, T y, int act, T slope) {
    switch (act) {
        case GPUNN_ACT_RELU:
            return (y <= T(0)) ? T(0) : dy;
        case GPUNN_ACT_LEAKY_RELU:
            return (y > T(0)) ? dy : dy * slope;
        case GPUNN_ACT_SIGMOID:
            return dy * y * (T(1) - y);
        case GPUNN_ACT_TANH:
            return dy * (T(1) - y * y);
        default:
            return dy;
    }
}

// ------------------------------------------------------------------------------------------------
// v1 tiled GEMM with fused bias + activation epilogue
// ------------------------------------------------------------------------------------------------
#define GEMM_BM 64
#define GEMM_BN 64
#define GEMM_BK 16
#define GEMM_THREADS 256
#define GEMM_PAD 1  // one extra element per shared row: transposing stores stay bank-conflict-free

// Tile coordinates of the e-th element a thread loads (e in [0, 1024)); powers of two: shifts and masks.
#define A_K(e) (TRANS_A ? (e) / GEMM_BM : (e) % GEMM_BK)
#define A_R(e) (TRANS_A ? (e) % GEMM_BM : (e) / GEMM_BK)
#define B_K(e) (TRANS_B ? (e) % GEMM_BK : (e) / GEMM_BN)
#define B_Q(e) (TRANS_B ? (e) / GEMM_BK : (e) % GEMM_BN)

// Epilogue: C = act(acc + bias), ACT a compile-time constant (one branch on act for the whole tile).
template <typename T, int ACT>
__device__ __forceinline__ void store_tile(T (&acc)[4][4], const T* __restrict__ bias, T* __restrict__ C,
                                           long long R, long long Q, long long r0, long long q0, int tx,
                                           int ty, T slope) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const long long gq = q0 + tx + 16 * j;
        if (gq >= Q) continue;
        const T bq = bias ? bias[gq] : T(0);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const long long gr = r0 + ty + 16 * i;
            if (gr < R) C[gr * Q + gq] = act_forward(acc[i][j] + bq, ACT, slope);
        }
    }
}

// The K range [k_begin, k_end) is a parameter so split-K (v2) runs the same tile code over one slice of
// K per blockIdx.z; v1 passes the whole range [0, Kd).
template <typename T, bool TRANS_A, bool TRANS_B>
__device__ __forceinline__ void gemm_bias_act_v1(const T* __restrict__ A, const T* __restrict__ B,
                                                 const T* __restrict__ bias, T* __restrict__ C,
                                                 long long R, long long Q, long long Kd, int act,
                                                 T slope, long long k_begin, long long k_end) {
    __shared__ T As[GEMM_BK][GEMM_BM + GEMM_PAD];  // As[k][r]
    __shared__ T Bs[GEMM_BK][GEMM_BN + GEMM_PAD];  // Bs[k][q]

    const int tid = threadIdx.x;
    const int tx = tid % 16;  // column group
    const int ty = tid / 16;  // row group
    const long long r0 = (long long)blockIdx.x * GEMM_BM;
    const long long q0 = (long long)blockIdx.y * GEMM_BN;

    // Each thread loads 4 elements of the A tile and 4 of the B tile per K step, always at the same
    // tile coordinates: map them so consecutive threads read consecutive global addresses (along k
    // for a row-major operand, along r or q for a transposed one). The global offset of a load is a
    // per-thread constant plus k0 (row-major) or k0 * stride (transposed): computed once, here.
    constexpr int LOADS = (GEMM_BM * GEMM_BK) / GEMM_THREADS;  // 4 (the B tile has as many elements)
    long long a_off[LOADS], b_off[LOADS];
#pragma unroll
    for (int l = 0; l < LOADS; ++l) {
        const int e = tid + l * GEMM_THREADS;
        const int ak = A_K(e), ar = A_R(e), bk = B_K(e), bq = B_Q(e);
        a_off[l] = TRANS_A ? (k_begin + ak) * R + (r0 + ar) : (r0 + ar) * Kd + (k_begin + ak);
        b_off[l] = TRANS_B ? (q0 + bq) * Kd + (k_begin + bk) : (k_begin + bk) * Q + (q0 + bq);
    }
    const long long a_step = TRANS_A ? GEMM_BK * R : GEMM_BK;  // offset advance per K step
    const long long b_step = TRANS_B ? GEMM_BK : GEMM_BK * Q;

    T acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = T(0);

    for (long long k0 = k_begin; k0 < k_end; k0 += GEMM_BK) {
#pragma unroll
        for (int l = 0; l < LOADS; ++l) {
            const int e = tid + l * GEMM_THREADS;
            const int ak = A_K(e), ar = A_R(e), bk = B_K(e), bq = B_Q(e);
            As[ak][ar] = (r0 + ar < R && k0 + ak < k_end) ? A[a_off[l]] : T(0);
            Bs[bk][bq] = (q0 + bq < Q && k0 + bk < k_end) ? B[b_off[l]] : T(0);
            a_off[l] += a_step;
            b_off[l] += b_step;
        }
        __syncthreads();

#pragma unroll
        for (int kk = 0; kk < GEMM_BK; ++kk) {
            T a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }

    // epilogue: bias, activation, store (consecutive tx -> consecutive columns: coalesced)
    switch (act) {
        case GPUNN_ACT_RELU: store_tile<T, GPUNN_ACT_RELU>(acc, bias, C, R, Q, r0, q0, tx, ty, slope); break;
        case GPUNN_ACT_LEAKY_RELU:
            store_tile<T, GPUNN_ACT_LEAKY_RELU>(acc, bias, C, R, Q, r0, q0, tx, ty, slope);
            break;
        case GPUNN_ACT_SIGMOID:
            store_tile<T, GPUNN_ACT_SIGMOID>(acc, bias, C, R, Q, r0, q0, tx, ty, slope);
            break;
        case GPUNN_ACT_TANH: store_tile<T, GPUNN_ACT_TANH>(acc, bias, C, R, Q, r0, q0, tx, ty, slope); break;
        default: store_tile<T, GPUNN_ACT_NONE>(acc, bias, C, R, Q, r0, q0, tx, ty, slope); break;
    }
}

// y (N, M) = act(x (N, K) @ W (M, K)^T + b (M,))
#define DEFINE_LINEAR_ACT_FORWARD(SUFFIX, T)                                                        \
    extern "C" __global__ void __launch_bounds__(GEMM_THREADS)                                      \
        linear_act_forward_v1_##SUFFIX(const T* __restrict__ x, const T* __restrict__ W,            \
                                       const T* __restrict__ b, T* __restrict__ y, long long N,     \
                                       long long M, long long K, int act, T slope) {                \
        gemm_bias_act_v1<T, false, true>(x, W, b, y, N, M, K, act, slope, 0, K);                    \
    }
// C (R, Q) = A (R, Kd) @ B (Kd, Q)           (dx = dz @ W)
#define DEFINE_GEMM_NN(SUFFIX, T)                                                                   \
    extern "C" __global__ void __launch_bounds__(GEMM_THREADS)                                      \
        gemm_nn_v1_##SUFFIX(const T* __restrict__ A, const T* __restrict__ B, T* __restrict__ C,    \
                            long long R, long long Q, long long Kd) {                               \
        gemm_bias_act_v1<T, false, false>(A, B, nullptr, C, R, Q, Kd, GPUNN_ACT_NONE, T(0), 0, Kd);  \
    }
// C (R, Q) = A^T @ B with A stored (Kd, R), B (Kd, Q)   (dW = dz^T @ x)
#define DEFINE_GEMM_TN(SUFFIX, T)                                                                   \
    extern "C" __global__ void __launch_bounds__(GEMM_THREADS)                                      \
        gemm_tn_v1_##SUFFIX(const T* __restrict__ A, const T* __restrict__ B, T* __restrict__ C,    \
                            long long R, long long Q, long long Kd) {                               \
        gemm_bias_act_v1<T, true, false>(A, B, nullptr, C, R, Q, Kd, GPUNN_ACT_NONE, T(0), 0, Kd);   \
    }

DEFINE_LINEAR_ACT_FORWARD(f32, float)
DEFINE_LINEAR_ACT_FORWARD(f64, double)
DEFINE_GEMM_NN(f32, float)
DEFINE_GEMM_NN(f64, double)
DEFINE_GEMM_TN(f32, float)
DEFINE_GEMM_TN(f64, double)

// ------------------------------------------------------------------------------------------------
// v2 split-K: for GEMMs whose output has too few 64 x 64 tiles to fill the GPU
// ------------------------------------------------------------------------------------------------
// Partial products: blockIdx.z = s computes the tile over K slice [s * k_chunk, min((s + 1) k_chunk, Kd))
// (k_chunk a multiple of GEMM_BK) into partial[s] (R, Q), raw (no bias, no activation). The same tile code
// as v1, so each slice rounds like v1 over that slice. __launch_bounds__(256, 2): at most 128 registers,
// which also keeps sm_80's ptxas from spilling the float kernel (it did at its own choice of 64).
template <typename T, bool TRANS_A, bool TRANS_B>
__device__ __forceinline__ void gemm_splitk_partial_v2(const T* __restrict__ A, const T* __restrict__ B,
                                                       T* __restrict__ partial, long long R, long long Q,
                                                       long long Kd, long long k_chunk) {
    const long long k_begin = (long long)blockIdx.z * k_chunk;
    long long k_end = k_begin + k_chunk;
    if (k_end > Kd) k_end = Kd;
    gemm_bias_act_v1<T, TRANS_A, TRANS_B>(A, B, nullptr, partial + (long long)blockIdx.z * R * Q, R, Q, Kd,
                                          GPUNN_ACT_NONE, T(0), k_begin, k_end);
}

// C[r, q] = act(sum_{s < S} partial[s, r, q] + bias[q]): the slices added in order s = 0, 1, ...
// (deterministic; no atomics). Grid-stride over the R * Q outputs, 256 threads.
template <typename T>
__device__ __forceinline__ void splitk_reduce_v2(const T* __restrict__ partial, const T* __restrict__ bias,
                                                 T* __restrict__ C, long long S, long long R, long long Q,
                                                 int act, T slope) {
    const long long total = R * Q;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
        T acc = T(0);
        for (long long s = 0; s < S; ++s) acc += partial[s * total + e];
        if (bias) acc += bias[e % Q];
        C[e] = act_forward(acc, act, slope);
    }
}

#define DEFINE_SPLITK(SUFFIX, T)                                                                    \
    extern "C" __global__ void __launch_bounds__(GEMM_THREADS, 2)                                   \
        gemm_splitk_nt_v2_##SUFFIX(const T* __restrict__ A, const T* __restrict__ B,                \
                                   T* __restrict__ partial, long long R, long long Q, long long Kd,  \
                                   long long k_chunk) {                                             \
        gemm_splitk_partial_v2<T, false, true>(A, B, partial, R, Q, Kd, k_chunk);                   \
    }                                                                                               \
    extern "C" __global__ void __launch_bounds__(GEMM_THREADS, 2)                                   \
        gemm_splitk_nn_v2_##SUFFIX(const T* __restrict__ A, const T* __restrict__ B,                \
                                   T* __restrict__ partial, long long R, long long Q, long long Kd,  \
                                   long long k_chunk) {                                             \
        gemm_splitk_partial_v2<T, false, false>(A, B, partial, R, Q, Kd, k_chunk);                  \
    }                                                                                               \
    extern "C" __global__ void __launch_bounds__(GEMM_THREADS, 2)                                   \
        gemm_splitk_tn_v2_##SUFFIX(const T* __restrict__ A, const T* __restrict__ B,                \
                                   T* __restrict__ partial, long long R, long long Q, long long Kd,  \
                                   long long k_chunk) {                                             \
        gemm_splitk_partial_v2<T, true, false>(A, B, partial, R, Q, Kd, k_chunk);                   \
    }                                                                                               \
    extern "C" __global__ void __launch_bounds__(256)                                               \
        splitk_reduce_v2_##SUFFIX(const T* __restrict__ partial, const T* __restrict__ bias,        \
                                  T* __restrict__ C, long long S, long long R, long long Q, int act, \
                                  T slope) {                                                        \
        splitk_reduce_v2<T>(partial, bias, C, S, R, Q, act, slope);                                 \
    }

DEFINE_SPLITK(f32, float)
DEFINE_SPLITK(f64, double)

// ------------------------------------------------------------------------------------------------
// v1 activation backward fused with the bias-gradient column reduction
// ------------------------------------------------------------------------------------------------
#define DZ_COLS 32
#define DZ_ROW_THREADS 8
#define DZ_ROWS_PER_BLOCK 256

// dz = dy * act'(y) for rows [blockIdx.y * 256, +256) and columns [blockIdx.x * 32, +32);
// partial[blockIdx.y, col] = sum of those dz over the block's rows.
// dz may be NULL (only db wanted, act == none); partial may be NULL (db not wanted).
template <typename T>
__device__ __forceinline__ void act_backward_bias_v1(const T* __restrict__ dy, const T* __restrict__ y,
                                                     T* __restrict__ dz, T* __restrict__ partial,
                                                     long long N, long long M, int act, T slope) {
    __shared__ T red[DZ_ROW_THREADS][DZ_COLS + 1];
    const long long col = (long long)blockIdx.x * DZ_COLS + threadIdx.x;
    const long long row_begin = (long long)blockIdx.y * DZ_ROWS_PER_BLOCK;
    long long row_end = row_begin + DZ_ROWS_PER_BLOCK;
    if (row_end > N) row_end = N;

    T sum = T(0);
    if (col < M) {
        for (long long r = row_begin + threadIdx.y; r < row_end; r += DZ_ROW_THREADS) {
            const long long o = r * M + col;
            const T g = act_backward(dy[o], y ? y[o] : T(0), act, slope);
            if (dz) dz[o] = g;
            sum += g;
        }
    }
    if (partial == nullptr) return;  // uniform across the block: no thread reaches the barrier
    red[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && col < M) {
        T s = T(0);
#pragma unroll
        for (int t = 0; t < DZ_ROW_THREADS; ++t) s += red[t][threadIdx.x];
        partial[(long long)blockIdx.y * M + col] = s;
    }
}

// out[c] = sum_p partial[p, c]      partial (P, M), out (M,)
template <typename T>
__device__ __forceinline__ void column_sum_v1(const T* __restrict__ partial, T* __restrict__ out,
                                              long long P, long long M) {
    const long long col = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= M) return;
    T s = T(0);
    for (long long p = 0; p < P; ++p) s += partial[p * M + col];
    out[col] = s;
}

#define DEFINE_ACT_BACKWARD(SUFFIX, T)                                                              \
    extern "C" __global__ void __launch_bounds__(DZ_COLS * DZ_ROW_THREADS)                          \
        act_backward_bias_v1_##SUFFIX(const T* __restrict__ dy, const T* __restrict__ y,            \
                                      T* __restrict__ dz, T* __restrict__ partial, long long N,     \
                                      long long M, int act, T slope) {                              \
        act_backward_bias_v1<T>(dy, y, dz, partial, N, M, act, slope);                              \
    }                                                                                               \
    extern "C" __global__ void __launch_bounds__(256)                                               \
        column_sum_v1_##SUFFIX(const T* __restrict__ partial, T* __restrict__ out, long long P,     \
                               long long M) {                                                       \
        column_sum_v1<T>(partial, out, P, M);                                                       \
    }

DEFINE_ACT_BACKWARD(f32, float)
DEFINE_ACT_BACKWARD(f64, double)
