// optim.cu -- fused optimizer steps over one flat parameter buffer: one launch per step for the model.
//
// Math (reference: gpunn/backend/reference.py, sgd_step / adam_step; PyTorch's formulas)
//   SGD   g = maximize ? -grad : grad;   g += wd * p                      (wd != 0)
//         buf = first_step ? g : momentum * buf + (1 - dampening) * g     (momentum != 0)
//         g = nesterov ? g + momentum * buf : buf                         (momentum != 0)
//         p -= lr * g
//   Adam  g = maximize ? -grad : grad
//         AdamW (decoupled): p *= 1 - lr * wd         Adam: g += wd * p   (wd != 0)
//         m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  amsgrad: vmax = max(vmax, v), used for v
//         p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
//   Shapes: param, grad, buffers are flat (P,) arrays of one dtype, contiguous.
//   The step t (after incrementing: 1 on the first step) is READ FROM DEVICE MEMORY (*step, int64), so
//   the launch has no per-step host argument and a whole training step can be captured in a CUDA graph;
//   the host increments it beforehand (step_increment_v1, one thread, or a CuPy `step += 1`).
//   The bias corrections are computed per thread in double from the double hyper-parameters, then cast,
//   exactly as the reference does (Python floats are doubles).
//
// Rounding: this module is compiled with --fmad=false, so every multiply and add rounds separately in
//   the same order as the NumPy reference: float32 results match the NumPy float32 reference bit for
//   bit (up to the last bit of the double pow() inside the bias corrections). The kernels are
//   bandwidth-bound; FMA contraction would buy nothing.
//
// Napkin math (float32, P parameters): SGD with momentum reads p, g, buf and writes p, buf: 20 P bytes;
//   Adam reads p, g, m, v and writes p, m, v: 28 P bytes (36 P with amsgrad). P = 25M on an H100
//   (~3 TB/s): 0.17 ms / 0.23 ms.
//
// Launch configuration: 256 threads per block, grid = min(ceil(P / 256), 32 * SM count), grid-stride
//   loop with 64-bit indices (so any P works with any grid).
//
// Build:
//   nvcc -std=c++17 --fmad=false -arch=sm_90 -cubin --resource-usage -o /dev/null kernels/optim.cu
//
// Versions
//   v1  one element per thread per iteration, scalar loads.

__device__ __forceinline__ float gsqrt(float v) { return sqrtf(v); }  // correctly rounded (-prec-sqrt)
__device__ __forceinline__ double gsqrt(double v) { return sqrt(v); }

template <typename T>
__device__ __forceinline__ void sgd_step_v1(T* __restrict__ param, const T* __restrict__ grad,
                                            T* __restrict__ buf, long long n, T lr, T momentum,
                                            T one_minus_dampening, T weight_decay, int nesterov,
                                            int maximize, int first_step) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        T p = param[i];
        T g = maximize ? -grad[i] : grad[i];
        if (weight_decay != T(0)) g = g + weight_decay * p;
        if (momentum != T(0)) {
            T b;
            if (first_step) {
                b = g;
            } else {
                b = buf[i] * momentum;
                b = b + one_minus_dampening * g;
            }
            buf[i] = b;
            g = nesterov ? g + momentum * b : b;
        }
        param[i] = p - lr * g;
    }
}

// numpy.maximum semantics: NaN in either argument gives NaN
template <typename T>
__device__ __forceinline__ T nan_maximum(T a, T b) {
    return (a != a || a > b) ? a : b;
}

template <typename T>
__device__ __forceinline__ void adam_step_v1(T* __restrict__ param, const T* __restrict__ grad,
                                             T* __restrict__ exp_avg, T* __restrict__ exp_avg_sq,
                                             T* __restrict__ max_exp_avg_sq,
                                             const long long* __restrict__ step, long long n,
                                             double lr, double beta1, double beta2, T eps,
                                             double weight_decay, int decoupled, int amsgrad,
                                             int maximize) {
    const double t = (double)step[0];
    const T step_size = (T)(lr / (1.0 - pow(beta1, t)));
    const T bias_correction2_sqrt = (T)sqrt(1.0 - pow(beta2, t));
    const T b1 = (T)beta1, one_minus_b1 = (T)(1.0 - beta1);
    const T b2 = (T)beta2, one_minus_b2 = (T)(1.0 - beta2);
    const T wd = (T)weight_decay, decay = (T)(1.0 - lr * weight_decay);
    const bool has_wd = weight_decay != 0.0;

    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        T p = param[i];
        T g = maximize ? -grad[i] : grad[i];
        if (has_wd) {
            if (decoupled) p = p * decay;
            else g = g + wd * p;
        }
        T m = exp_avg[i] * b1;
        m = m + one_minus_b1 * g;
        T v = exp_avg_sq[i] * b2;
        v = v + one_minus_b2 * (g * g);
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        if (amsgrad) {
            v = nan_maximum(max_exp_avg_sq[i], v);
            max_exp_avg_sq[i] = v;
        }
        const T denom = gsqrt(v) / bias_correction2_sqrt + eps;
        param[i] = p - step_size * (m / denom);
    }
}

#define DEFINE_OPTIM(SUFFIX, T)                                                                     \
    extern "C" __global__ void __launch_bounds__(256) sgd_step_v1_##SUFFIX(                        \
        T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ buf, long long n, T lr,  \
        T momentum, T one_minus_dampening, T weight_decay, int nesterov, int maximize,              \
        int first_step) {                                                                           \
        sgd_step_v1<T>(param, grad, buf, n, lr, momentum, one_minus_dampening, weight_decay,        \
                       nesterov, maximize, first_step);                                             \
    }                                                                                               \
    extern "C" __global__ void __launch_bounds__(256) adam_step_v1_##SUFFIX(                       \
        T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ exp_avg,                 \
        T* __restrict__ exp_avg_sq, T* __restrict__ max_exp_avg_sq,                                 \
        const long long* __restrict__ step, long long n, double lr, double beta1, double beta2,     \
        T eps, double weight_decay, int decoupled, int amsgrad, int maximize) {                     \
        adam_step_v1<T>(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, n, lr, beta1,       \
                        beta2, eps, weight_decay, decoupled, amsgrad, maximize);                    \
    }

DEFINE_OPTIM(f32, float)
DEFINE_OPTIM(f64, double)

// step[0] += 1, on the device (one thread), so the step counter never leaves the GPU.
extern "C" __global__ void step_increment_v1(long long* step) {
    if (blockIdx.x == 0 && threadIdx.x == 0) step[0] += 1;
}
