// conv2d.cu -- im2col / col2im (conv2d = im2col + GEMM) and max_pool2d forward / backward, NCHW.
//
// Shapes (all C-contiguous)
//   x (N, C, H, W); kernel (KH, KW), stride (SH, SW), padding (PH, PW), dilation (DH, DW)
//   OH = (H + 2 PH - DH (KH - 1) - 1) / SH + 1,  OW likewise (computed in Python)
//   col (N * OH * OW, C * KH * KW): one ROW per output pixel (n, oh, ow), columns ordered (c, ki, kj),
//       the same order as weight.reshape(OC, C * KH * KW). So a convolution is
//           out_rows = linear_act(col, weight.reshape(OC, -1), bias, act)     (N * OH * OW, OC)
//           out = out_rows.reshape(N, OH, OW, OC).transpose(0, 3, 1, 2)        (N, OC, OH, OW)
//       and its input gradient is dcol = dz @ weight2d (linear_act_backward's dx) then col2im.
//
// Math
//   im2col   col[(n, oh, ow), (c, ki, kj)] = x[n, c, oh SH - PH + ki DH, ow SW - PW + kj DW]  (0 outside)
//   col2im   dx[n, c, h, w] = sum over (ki, kj, oh, ow) with oh SH - PH + ki DH == h and
//            ow SW - PW + kj DW == w of dcol[(n, oh, ow), (c, ki, kj)]
//            written as a GATHER (one thread per dx element, looping over the KH x KW taps), so it is
//            deterministic and needs no atomics.
//   max_pool2d_fwd  y[n, c, oh, ow] = max over the window (padding never wins); idx = h * W + w of the
//            winner, flat within the (H, W) plane (PyTorch's convention). Ties: the first in row-major
//            scan order wins. NaN wins and propagates; with several NaNs in a window the LAST one in
//            scan order is the winner (PyTorch 2.13's CPU kernel updates on `v > best || isnan(v)`),
//            so values and the gradient routing of max_pool2d_bwd match PyTorch.
//   max_pool2d_bwd  dx[n, c].flat[idx] += dy[n, c, oh, ow]; windows overlap when stride < kernel, so
//            the scatter uses atomicAdd (dx must be zeroed first). Float atomics make the summation
//            order, and so the last bits of dx where windows overlap, run-dependent.
//
// Launch configuration: 256 threads per block, 1-D grid-stride loops with 64-bit indices,
//   grid = min(ceil(total / 256), 32 * SM count).
//
// Napkin math (float32): im2col reads x (~4 N C H W bytes, cached across the KH KW re-reads) and writes
//   4 N OH OW C KH KW bytes -- KH KW times the input: that write is the cost of the im2col approach.
//
// Build:
//   nvcc -std=c++17 -arch=sm_90 -cubin --resource-usage -o /dev/null kernels/conv2d.cu
//
// Versions
//   v1  one thread per output element, 64-bit index arithmetic.

struct ConvGeom {
    long long N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW;
};

template <typename T>
__device__ __forceinline__ void im2col_v1(const T* __restrict__ x, T* __restrict__ col, ConvGeom g) {
    const long long ckk = g.C * g.KH * g.KW;
    const long long total = g.N * g.OH * g.OW * ckk;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
        // consecutive threads -> consecutive columns of one col row: coalesced writes
        const long long j = e % ckk;
        const long long r = e / ckk;
        const long long kj = j % g.KW;
        const long long ki = (j / g.KW) % g.KH;
        const long long c = j / (g.KW * g.KH);
        const long long ow = r % g.OW;
        const long long oh = (r / g.OW) % g.OH;
        const long long n = r / (g.OW * g.OH);
        const long long h = oh * g.SH - g.PH + ki * g.DH;
        const long long w = ow * g.SW - g.PW + kj * g.DW;
        T v = T(0);
        if (h >= 0 && h < g.H && w >= 0 && w < g.W) v = x[((n * g.C + c) * g.H + h) * g.W + w];
        col[e] = v;
    }
}

template <typename T>
__device__ __forceinline__ void col2im_v1(const T* __restrict__ col, T* __restrict__ dx, ConvGeom g) {
    const long long ckk = g.C * g.KH * g.KW;
    const long long total = g.N * g.C * g.H * g.W;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
        const long long w = e % g.W;
        const long long h = (e / g.W) % g.H;
        const long long c = (e / (g.W * g.H)) % g.C;
        const long long n = e / (g.W * g.H * g.C);
        T s = T(0);
        for (long long ki = 0; ki < g.KH; ++ki) {
            const long long th = h + g.PH - ki * g.DH;  // = oh * SH when this tap hits (h, w)
            if (th < 0 || th % g.SH != 0) continue;
            const long long oh = th / g.SH;
            if (oh >= g.OH) continue;
            for (long long kj = 0; kj < g.KW; ++kj) {
                const long long tw = w + g.PW - kj * g.DW;
                if (tw < 0 || tw % g.SW != 0) continue;
                const long long ow = tw / g.SW;
                if (ow >= g.OW) continue;
                s += col[((n * g.OH + oh) * g.OW + ow) * ckk + (c * g.KH + ki) * g.KW + kj];
            }
        }
        dx[e] = s;
    }
}

template <typename T>
__device__ __forceinline__ void max_pool2d_fwd_v1(const T* __restrict__ x, T* __restrict__ y,
                                                  long long* __restrict__ idx, ConvGeom g) {
    const long long total = g.N * g.C * g.OH * g.OW;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
        const long long ow = e % g.OW;
        const long long oh = (e / g.OW) % g.OH;
        const long long plane = e / (g.OW * g.OH);  // n * C + c
        const T* xp = x + plane * g.H * g.W;
        T best = T(0);
        long long best_i = -1;
#pragma unroll 1
        for (long long ki = 0; ki < g.KH; ++ki) {
            const long long h = oh * g.SH - g.PH + ki * g.DH;
            if (h < 0 || h >= g.H) continue;
#pragma unroll 1
            for (long long kj = 0; kj < g.KW; ++kj) {
                const long long w = ow * g.SW - g.PW + kj * g.DW;
                if (w < 0 || w >= g.W) continue;
                const T v = xp[h * g.W + w];
                // first in-window element, a larger one, or a NaN. A NaN sticks (v > NaN is false) but
                // a LATER NaN replaces it: the winner is the last NaN in scan order, as in PyTorch.
                if (best_i < 0 || v > best || v != v) {
                    best = v;
                    best_i = h * g.W + w;
                }
            }
        }
        y[e] = best;  // a window wholly inside the padding is rejected in Python (padding <= kernel/2)
        idx[e] = best_i;
    }
}

template <typename T>
__device__ __forceinline__ void max_pool2d_bwd_v1(const T* __restrict__ dy, const long long* __restrict__ idx,
                                                  T* __restrict__ dx, long long planes, long long out_hw,
                                                  long long in_hw) {
    const long long total = planes * out_hw;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
        const long long i = idx[e];
        if (i < 0) continue;
        atomicAdd(dx + (e / out_hw) * in_hw + i, dy[e]);
    }
}

// Geometry travels as 14 plain long long arguments (N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW):
// scalars are passed the same way by every CuPy version, structs are not.
#define GEOM_PARAMS                                                                                 \
    long long N, long long C, long long H, long long W, long long KH, long long KW, long long SH,   \
        long long SW, long long PH, long long PW, long long DH, long long DW, long long OH,          \
        long long OW
#define GEOM {N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW}

#define DEFINE_CONV(SUFFIX, T)                                                                      \
    extern "C" __global__ void __launch_bounds__(256)                                               \
        im2col_v1_##SUFFIX(const T* __restrict__ x, T* __restrict__ col, GEOM_PARAMS) {             \
        im2col_v1<T>(x, col, ConvGeom GEOM);                                                        \
    }                                                                                               \
    extern "C" __global__ void __launch_bounds__(256)                                               \
        col2im_v1_##SUFFIX(const T* __restrict__ col, T* __restrict__ dx, GEOM_PARAMS) {            \
        col2im_v1<T>(col, dx, ConvGeom GEOM);                                                       \
    }                                                                                               \
    extern "C" __global__ void __launch_bounds__(256) max_pool2d_fwd_v1_##SUFFIX(                  \
        const T* __restrict__ x, T* __restrict__ y, long long* __restrict__ idx, GEOM_PARAMS) {     \
        max_pool2d_fwd_v1<T>(x, y, idx, ConvGeom GEOM);                                             \
    }                                                                                               \
    extern "C" __global__ void __launch_bounds__(256) max_pool2d_bwd_v1_##SUFFIX(                  \
        const T* __restrict__ dy, const long long* __restrict__ idx, T* __restrict__ dx,            \
        long long planes, long long out_hw, long long in_hw) {                                      \
        max_pool2d_bwd_v1<T>(dy, idx, dx, planes, out_hw, in_hw);                                   \
    }

DEFINE_CONV(f32, float)
DEFINE_CONV(f64, double)
