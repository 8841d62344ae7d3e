// dropout.cu -- inverted dropout on a counter-based RNG (Philox-4x32-10), the mask never stored.
//
// Math (reference: gpunn/backend/numba_kernels.py, dropout_mask_reference; the same stream)
//   Element g = offset + i of the flattened tensor takes 32-bit word g % 4 of
//   philox(counter = (lo(g / 4), hi(g / 4), 0, 0), key = (lo(seed), hi(seed))) and is kept when
//   word >> 8 >= threshold (threshold = ceil(p * 2^24), computed on the host).
//   out[i] = keep ? x[i] * scale : x[i] * 0   (x * 0 keeps NaN, as x * mask * scale does)
//   The mask depends only on (seed, offset, i): backward is the same launch on dy.
//
// Device-resident state (graph capture): `state`, when not NULL, is a device array (seed, base offset)
//   of two uint64 read by the kernel: seed = state[0], offset = offset + state[1]. A captured training
//   step passes its dropout layers' offsets within the step as `offset` and advances state[1] once per
//   step with dropout_advance_v1, so a CUDA graph replays fresh masks with no host argument changing.
//   NULL: seed and offset are the by-value arguments (the eager launch).
//
// Launch configuration: 256 threads per block, grid-stride over the groups of 4 consecutive g (one
//   Philox call each) that touch [offset, offset + n). Any grid gives the same result.
//
// Bytes per call (float32): read x, write out: 8 n. Philox is ~10 x (2 IMAD.WIDE + 4 LOP) per 4
//   elements: bandwidth-bound on A100/H100.
//
// Build:
//   nvcc -std=c++17 -arch=sm_90 -cubin --resource-usage -o /dev/null kernels/dropout.cu
//
// Versions (one so far; not in kernel_table: nothing to choose between)
//   v1  one Philox call per thread per group of 4 elements, scalar loads and stores. The same stream as
//       the Numba kernel of gpunn.backend.numba_kernels (which the cupy backend no longer launches: this
//       one is capturable in a CUDA graph and runs under the kernel emulator).

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

struct Philox4 {
    unsigned int w[4];
};

__device__ __forceinline__ Philox4 philox4x32_10(unsigned long long q, unsigned long long seed) {
    unsigned int c0 = (unsigned int)q, c1 = (unsigned int)(q >> 32), c2 = 0u, c3 = 0u;
    unsigned int k0 = (unsigned int)seed, k1 = (unsigned int)(seed >> 32);
#pragma unroll
    for (int r = 0; r < 10; ++r) {
        const unsigned long long p0 = (unsigned long long)PHILOX_M0 * c0;
        const unsigned long long p1 = (unsigned long long)PHILOX_M1 * c2;
        const unsigned int n0 = (unsigned int)(p1 >> 32) ^ c1 ^ k0;
        const unsigned int n2 = (unsigned int)(p0 >> 32) ^ c3 ^ k1;
        c0 = n0;
        c1 = (unsigned int)p1;
        c2 = n2;
        c3 = (unsigned int)p0;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    Philox4 out;
    out.w[0] = c0;
    out.w[1] = c1;
    out.w[2] = c2;
    out.w[3] = c3;
    return out;
}

template <typename T>
__device__ __forceinline__ void dropout_v1(const T* __restrict__ x, T* __restrict__ out, long long n,
                                           unsigned long long seed, unsigned long long offset,
                                           const unsigned long long* __restrict__ state,
                                           unsigned long long threshold, T scale) {
    if (state) {
        seed = state[0];
        offset += state[1];
    }
    if (n <= 0) return;
    const unsigned long long end = offset + (unsigned long long)n;
    const unsigned long long q_first = offset / 4, q_count = (end - 1) / 4 - q_first + 1;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long t = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; t < q_count; t += stride) {
        const unsigned long long q = q_first + t;
        const Philox4 r = philox4x32_10(q, seed);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const unsigned long long g = q * 4 + j;
            if (g < offset || g >= end) continue;
            const unsigned long long i = g - offset;
            const bool keep = (unsigned long long)(r.w[j] >> 8) >= threshold;
            out[i] = keep ? x[i] * scale : x[i] * T(0);
        }
    }
}

#define DEFINE_DROPOUT(SUFFIX, T)                                                                   \
    extern "C" __global__ void __launch_bounds__(256) dropout_v1_##SUFFIX(                         \
        const T* __restrict__ x, T* __restrict__ out, long long n, unsigned long long seed,         \
        unsigned long long offset, const unsigned long long* __restrict__ state,                    \
        unsigned long long threshold, T scale) {                                                    \
        dropout_v1<T>(x, out, n, seed, offset, state, threshold, scale);                            \
    }

DEFINE_DROPOUT(f32, float)
DEFINE_DROPOUT(f64, double)

// state[1] += n (one thread): a captured step moves its dropout offset past the elements it used.
extern "C" __global__ void dropout_advance_v1(unsigned long long* state, long long n) {
    if (blockIdx.x == 0 && threadIdx.x == 0) state[1] += (unsigned long long)n;
}
