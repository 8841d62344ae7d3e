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
//   Adagrad   g = (maximize ? -grad : grad) + wd * p;  sum += g^2;  p -= clr * g / (sqrt(sum) + eps)
//             (clr = lr / (1 + (t - 1) lr_decay), computed on the host in double)
//   Adadelta  g as Adagrad;  v = rho v + (1 - rho) g^2;  d = sqrt(u + eps) / sqrt(v + eps) * g
//             u = rho u + (1 - rho) d^2;  p -= lr d
//   RMSprop   g as Adagrad;  v = alpha v + (1 - alpha) g^2
//             centered: m += (1 - alpha) (g - m);  avg = sqrt(v - m^2) + eps    else avg = sqrt(v) + eps
//             momentum: b = momentum b + g / avg;  p -= lr b                    else p -= lr g / avg
//   Shapes: param, grad, buffers are flat (P,) arrays of one dtype, contiguous.
//   The step t (after incrementing: 1 on the first step) is READ FROM DEVICE MEMORY (*step, int64), so
//   the launch has no per-step host argument and a whole training step can be captured in a CUDA graph;
//   the host increments it beforehand (step_increment_v1, one thread, or a CuPy `step += 1`).
//   The learning rate likewise: `lr_dev`, when not NULL, is a one-element device array read instead of
//   the by-value `lr` (T for SGD, double for Adam: the same value either way, so the same rounding), so a
//   captured step follows a scheduler by an update of that array between graph launches.
//   The bias corrections are computed per thread in double from the double hyper-parameters, then cast,
//   exactly as the reference does (Python floats are doubles).
//
// Rounding: this module is compiled with --fmad=false, so every multiply and add rounds separately in
//   the same order as the NumPy reference: float32 results match the NumPy float32 reference bit for
//   bit (up to the last bit of the double pow() inside the bias corrections). The kernels are
//   bandwidth-bound; FMA contraction would buy nothing.
//
// Napkin math (float32, P parameters): SGD with momentum reads p, g, buf and writes p, buf: 20 P bytes;
//   Adam reads p, g, m, v and writes p, m, v: 28 P bytes (36 P with amsgrad); Adagrad 20 P, Adadelta
//   28 P, RMSprop 20 P (28 P with momentum or centered, 36 P with both). P = 25M on an H100
//   (~3 TB/s): 0.17 ms / 0.23 ms.
//
// Launch configuration: 256 threads per block, grid-stride loop with 64-bit indices (so any P works
//   with any grid). v1: grid = min(ceil(P / 256), 32 * SM count). v2: grid = min(ceil(P / (256 V)),
//   32 * SM count) with V = 16 / sizeof(T) elements per vector (4 floats, 2 doubles).
//
// Build:
//   nvcc -std=c++17 --fmad=false -arch=sm_90 -cubin --resource-usage -o /dev/null kernels/optim.cu
//
// Adagrad, Adadelta and RMSprop have v1 only (not in kernel_table: nothing to choose between yet).
//
// Versions (gpunn/backend/kernel_table.py picks one per op; every version uses the same per-element
// update functions below, so all round identically)
//   v1  one element per thread per iteration, scalar 4/8-byte loads: a thread has one load per buffer
//       in flight (4 for Adam), and the grid-stride loop issues P / (256 * grid) such rounds.
//   v2  16-byte vector loads and stores (Pack16: LDG.128 / STG.128): 4 floats (2 doubles) per thread
//       per iteration, 4x fewer load instructions and 4x more bytes in flight per thread. Vectors need
//       16-byte aligned addresses: the elements before the first 16-byte boundary (the "head", at most
//       3 floats) and after the last whole vector (the tail) take the scalar path; if the buffers do not
//       share one misalignment (views at different offsets) the whole call takes the scalar path.
//       Napkin math: both are bandwidth-bound (28 P bytes for Adam); v1 on an H100/H200 is expected to
//       reach ~70-85% of DRAM bandwidth at P = 25M, v2 ~85-90% (fewer instructions per byte, more
//       bytes in flight per SM). Unmeasured: the quick GPU bench times both.

__device__ __forceinline__ float gsqrt(float v) { return sqrtf(v); }  // correctly rounded (-prec-sqrt)
__device__ __forceinline__ double gsqrt(double v) { return sqrt(v); }

// numpy.maximum semantics: NaN in either argument gives NaN
template <typename T>
__device__ __forceinline__ T nan_maximum(T a, T b) {
    return (a != a || a > b) ? a : b;
}

// ------------------------------------------------------------------------------------------------
// The per-element updates, shared by every version (so v1 and v2 round identically).
// ------------------------------------------------------------------------------------------------
template <typename T>
struct SgdHyper {
    T lr, momentum, one_minus_dampening, weight_decay;
    int nesterov, maximize, first_step;
};

// p, g, b: the element's parameter, gradient and momentum buffer; b is read only when needed.
template <typename T>
__device__ __forceinline__ void sgd_update(T& p, T g, T& b, const SgdHyper<T>& h) {
    if (h.maximize) g = -g;
    if (h.weight_decay != T(0)) g = g + h.weight_decay * p;
    if (h.momentum != T(0)) {
        if (h.first_step) {
            b = g;
        } else {
            b = b * h.momentum;
            b = b + h.one_minus_dampening * g;
        }
        g = h.nesterov ? g + h.momentum * b : b;
    }
    p = p - h.lr * g;
}

template <typename T>
struct AdamHyper {
    T step_size, bias_correction2_sqrt, b1, one_minus_b1, b2, one_minus_b2, wd, decay, eps;
    bool has_wd;
    int decoupled, amsgrad, maximize;
};

// The bias corrections in double from the double hyper-parameters, then cast (as the reference).
template <typename T>
__device__ __forceinline__ AdamHyper<T> adam_hyper(const long long* __restrict__ step, double lr, double beta1,
                                                   double beta2, T eps, double weight_decay, int decoupled,
                                                   int amsgrad, int maximize) {
    const double t = (double)step[0];
    AdamHyper<T> h;
    h.step_size = (T)(lr / (1.0 - pow(beta1, t)));
    h.bias_correction2_sqrt = (T)sqrt(1.0 - pow(beta2, t));
    h.b1 = (T)beta1;
    h.one_minus_b1 = (T)(1.0 - beta1);
    h.b2 = (T)beta2;
    h.one_minus_b2 = (T)(1.0 - beta2);
    h.wd = (T)weight_decay;
    h.decay = (T)(1.0 - lr * weight_decay);
    h.eps = eps;
    h.has_wd = weight_decay != 0.0;
    h.decoupled = decoupled;
    h.amsgrad = amsgrad;
    h.maximize = maximize;
    return h;
}

// vmax is read and written only with amsgrad.
template <typename T>
__device__ __forceinline__ void adam_update(T& p, T g, T& m, T& v, T& vmax, const AdamHyper<T>& h) {
    if (h.maximize) g = -g;
    if (h.has_wd) {
        if (h.decoupled) p = p * h.decay;
        else g = g + h.wd * p;
    }
    m = m * h.b1;
    m = m + h.one_minus_b1 * g;
    v = v * h.b2;
    v = v + h.one_minus_b2 * (g * g);
    T vv = v;
    if (h.amsgrad) {
        vmax = nan_maximum(vmax, v);
        vv = vmax;
    }
    const T denom = gsqrt(vv) / h.bias_correction2_sqrt + h.eps;
    p = p - h.step_size * (m / denom);
}

// ------------------------------------------------------------------------------------------------
// v1: one element per thread per iteration, scalar loads
// ------------------------------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ void sgd_step_v1(T* __restrict__ param, const T* __restrict__ grad,
                                            T* __restrict__ buf, long long n, const SgdHyper<T>& h) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    const bool use_buf = h.momentum != T(0);
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        T p = param[i];
        T b = (use_buf && !h.first_step) ? buf[i] : T(0);
        sgd_update(p, grad[i], b, h);
        if (use_buf) buf[i] = b;
        param[i] = p;
    }
}

template <typename T>
__device__ __forceinline__ void adam_step_v1(T* __restrict__ param, const T* __restrict__ grad,
                                             T* __restrict__ exp_avg, T* __restrict__ exp_avg_sq,
                                             T* __restrict__ max_exp_avg_sq, long long n,
                                             const AdamHyper<T>& h) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        T p = param[i], m = exp_avg[i], v = exp_avg_sq[i];
        T vmax = h.amsgrad ? max_exp_avg_sq[i] : T(0);
        adam_update(p, grad[i], m, v, vmax, h);
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        if (h.amsgrad) max_exp_avg_sq[i] = vmax;
        param[i] = p;
    }
}

// ------------------------------------------------------------------------------------------------
// v2: 16-byte vector loads and stores (4 floats / 2 doubles per thread per iteration)
// ------------------------------------------------------------------------------------------------
// A 16-byte aligned pack of T (plain alignas: no CUDA vector-type headers needed, and one LDG.128 /
// STG.128 per access once the pointer is aligned).
template <typename T>
struct alignas(16) Pack16 {
    static constexpr int N = 16 / sizeof(T);
    T v[N];
};

// Elements before the first 16-byte boundary: the head every pointer must share to vectorize.
template <typename T>
__device__ __forceinline__ long long head_of(const T* p) {
    const unsigned long long a = (unsigned long long)p;
    return (long long)(((16 - a % 16) % 16) / sizeof(T));
}

// True when p is unused (nullptr) or starts `head` elements before a 16-byte boundary, like the others.
template <typename T>
__device__ __forceinline__ bool agrees(const T* p, long long head) {
    return p == nullptr || (((unsigned long long)p % sizeof(T)) == 0 && head_of(p) == head);
}

// Split [0, n) into a scalar head [0, head), vectors [head, head + nvec * N) and a scalar tail. The
// pointers vectorize together only when they share one misalignment (a flat buffer's views usually
// do); otherwise everything takes the scalar path. nullptr pointers (unused buffers) do not count.
// (Plain arguments, not an array: an indexed local array would live on the stack.)
template <typename T>
__device__ __forceinline__ void vector_split(long long n, const T* p0, const T* p1, const T* p2, const T* p3,
                                             const T* p4, long long& head, long long& nvec) {
    head = head_of(p0);
    const bool same = agrees(p0, head) && agrees(p1, head) && agrees(p2, head) && agrees(p3, head) &&
                      agrees(p4, head);
    if (!same || head >= n) {
        head = n;
        nvec = 0;
        return;
    }
    nvec = (n - head) / Pack16<T>::N;
}

template <typename T>
__device__ __forceinline__ void sgd_step_v2(T* __restrict__ param, const T* __restrict__ grad,
                                            T* __restrict__ buf, long long n, const SgdHyper<T>& h) {
    constexpr int N = Pack16<T>::N;
    const bool use_buf = h.momentum != T(0);
    long long head, nvec;
    vector_split<T>(n, param, grad, use_buf ? buf : nullptr, nullptr, nullptr, head, nvec);
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long stride = (long long)gridDim.x * blockDim.x;
    // vector body
    for (long long j = tid; j < nvec; j += stride) {
        const long long i = head + j * N;
        Pack16<T> p = *reinterpret_cast<const Pack16<T>*>(param + i);
        const Pack16<T> g = *reinterpret_cast<const Pack16<T>*>(grad + i);
        Pack16<T> b = {};
        // loaded on the first step too (then unused): a conditional on first_step spills on sm_80
        if (use_buf) b = *reinterpret_cast<const Pack16<T>*>(buf + i);
#pragma unroll
        for (int k = 0; k < N; ++k) {
            T bk = (use_buf && !h.first_step) ? b.v[k] : T(0);
            sgd_update(p.v[k], g.v[k], bk, h);
            b.v[k] = bk;
        }
        if (use_buf) *reinterpret_cast<Pack16<T>*>(buf + i) = b;
        *reinterpret_cast<Pack16<T>*>(param + i) = p;
    }
    // scalar head and tail (fewer than 2 N elements, or all n when the pointers disagree)
    const long long tail = head + nvec * N;
    const long long rest = head + (n - tail);
    for (long long r = tid; r < rest; r += stride) {
        const long long i = r < head ? r : tail + (r - head);
        T p = param[i];
        T b = (use_buf && !h.first_step) ? buf[i] : T(0);
        sgd_update(p, grad[i], b, h);
        if (use_buf) buf[i] = b;
        param[i] = p;
    }
}

template <typename T>
__device__ __forceinline__ void adam_step_v2(T* __restrict__ param, const T* __restrict__ grad,
                                             T* __restrict__ exp_avg, T* __restrict__ exp_avg_sq,
                                             T* __restrict__ max_exp_avg_sq, long long n,
                                             const AdamHyper<T>& h) {
    constexpr int N = Pack16<T>::N;
    long long head, nvec;
    vector_split<T>(n, param, grad, exp_avg, exp_avg_sq, h.amsgrad ? max_exp_avg_sq : nullptr, head, nvec);
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long j = tid; j < nvec; j += stride) {
        const long long i = head + j * N;
        Pack16<T> p = *reinterpret_cast<const Pack16<T>*>(param + i);
        const Pack16<T> g = *reinterpret_cast<const Pack16<T>*>(grad + i);
        Pack16<T> m = *reinterpret_cast<const Pack16<T>*>(exp_avg + i);
        Pack16<T> v = *reinterpret_cast<const Pack16<T>*>(exp_avg_sq + i);
        Pack16<T> vmax = {};
        if (h.amsgrad) vmax = *reinterpret_cast<const Pack16<T>*>(max_exp_avg_sq + i);
#pragma unroll
        for (int k = 0; k < N; ++k) {
            T vm = h.amsgrad ? vmax.v[k] : T(0);
            adam_update(p.v[k], g.v[k], m.v[k], v.v[k], vm, h);
            vmax.v[k] = vm;
        }
        *reinterpret_cast<Pack16<T>*>(exp_avg + i) = m;
        *reinterpret_cast<Pack16<T>*>(exp_avg_sq + i) = v;
        if (h.amsgrad) *reinterpret_cast<Pack16<T>*>(max_exp_avg_sq + i) = vmax;
        *reinterpret_cast<Pack16<T>*>(param + i) = p;
    }
    const long long tail = head + nvec * N;
    const long long rest = head + (n - tail);
    for (long long r = tid; r < rest; r += stride) {
        const long long i = r < head ? r : tail + (r - head);
        T p = param[i], m = exp_avg[i], v = exp_avg_sq[i];
        T vmax = h.amsgrad ? max_exp_avg_sq[i] : T(0);
        adam_update(p, grad[i], m, v, vmax, h);
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        if (h.amsgrad) max_exp_avg_sq[i] = vmax;
        param[i] = p;
    }
}

#define SGD_PARAMS(T)                                                                               \
    T *__restrict__ param, const T *__restrict__ grad, T *__restrict__ buf, long long n, T lr,       \
        const T *__restrict__ lr_dev, T momentum, T one_minus_dampening, T weight_decay, int nesterov, \
        int maximize, int first_step
#define SGD_HYPER                                                                                   \
    {lr_dev ? lr_dev[0] : lr, momentum, one_minus_dampening, weight_decay, nesterov, maximize, first_step}
#define ADAM_PARAMS(T)                                                                              \
    T *__restrict__ param, const T *__restrict__ grad, T *__restrict__ exp_avg,                     \
        T *__restrict__ exp_avg_sq, T *__restrict__ max_exp_avg_sq,                                  \
        const long long *__restrict__ step, long long n, double lr, const double *__restrict__ lr_dev,  \
        double beta1, double beta2, T eps, double weight_decay, int decoupled, int amsgrad, int maximize
#define ADAM_HYPER(T)                                                                               \
    adam_hyper<T>(step, lr_dev ? lr_dev[0] : lr, beta1, beta2, eps, weight_decay, decoupled, amsgrad, maximize)

#define DEFINE_OPTIM(SUFFIX, T)                                                                     \
    extern "C" __global__ void __launch_bounds__(256) sgd_step_v1_##SUFFIX(SGD_PARAMS(T)) {        \
        sgd_step_v1<T>(param, grad, buf, n, SgdHyper<T> SGD_HYPER);                                 \
    }                                                                                               \
    extern "C" __global__ void __launch_bounds__(256) sgd_step_v2_##SUFFIX(SGD_PARAMS(T)) {        \
        sgd_step_v2<T>(param, grad, buf, n, SgdHyper<T> SGD_HYPER);                                 \
    }                                                                                               \
    extern "C" __global__ void __launch_bounds__(256) adam_step_v1_##SUFFIX(ADAM_PARAMS(T)) {      \
        adam_step_v1<T>(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, n, ADAM_HYPER(T));        \
    }                                                                                               \
    extern "C" __global__ void __launch_bounds__(256) adam_step_v2_##SUFFIX(ADAM_PARAMS(T)) {      \
        adam_step_v2<T>(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, n, ADAM_HYPER(T));        \
    }

DEFINE_OPTIM(f32, float)
DEFINE_OPTIM(f64, double)

// step[0] += 1, on the device (one thread), so the step counter never leaves the GPU.
extern "C" __global__ void step_increment_v1(long long* step) {
    if (blockIdx.x == 0 && threadIdx.x == 0) step[0] += 1;
}

// ------------------------------------------------------------------------------------------------
// Adagrad, Adadelta, RMSprop: v1 (one element per thread per iteration, scalar loads), the same
// operation order as the reference so float32 rounds like NumPy's float32.
// ------------------------------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ T decayed_grad(T g, T p, T weight_decay, int maximize) {
    if (maximize) g = -g;
    if (weight_decay != T(0)) g = g + weight_decay * p;
    return g;
}

template <typename T>
__device__ __forceinline__ void adagrad_step_v1(T* __restrict__ param, const T* __restrict__ grad,
                                                T* __restrict__ state_sum, long long n, T clr, T weight_decay,
                                                T eps, int maximize) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const T p = param[i];
        const T g = decayed_grad(grad[i], p, weight_decay, maximize);
        const T s = state_sum[i] + g * g;
        state_sum[i] = s;
        param[i] = p - (clr * g) / (gsqrt(s) + eps);
    }
}

template <typename T>
__device__ __forceinline__ void adadelta_step_v1(T* __restrict__ param, const T* __restrict__ grad,
                                                 T* __restrict__ square_avg, T* __restrict__ acc_delta, long long n,
                                                 T lr, T rho, T one_minus_rho, T eps, T weight_decay, int maximize) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const T p = param[i];
        const T g = decayed_grad(grad[i], p, weight_decay, maximize);
        T v = square_avg[i] * rho;
        v = v + one_minus_rho * (g * g);
        const T std = gsqrt(v + eps);
        const T delta = gsqrt(acc_delta[i] + eps) / std * g;
        T u = acc_delta[i] * rho;
        u = u + one_minus_rho * (delta * delta);
        square_avg[i] = v;
        acc_delta[i] = u;
        param[i] = p - lr * delta;
    }
}

// momentum_buf is touched only when momentum > 0, grad_avg only when centered (either may be nullptr).
template <typename T>
__device__ __forceinline__ void rmsprop_step_v1(T* __restrict__ param, const T* __restrict__ grad,
                                                T* __restrict__ square_avg, T* __restrict__ momentum_buf,
                                                T* __restrict__ grad_avg, long long n, T lr, T alpha,
                                                T one_minus_alpha, T eps, T weight_decay, T momentum, int centered,
                                                int maximize) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const T p = param[i];
        const T g = decayed_grad(grad[i], p, weight_decay, maximize);
        T v = square_avg[i] * alpha;
        v = v + one_minus_alpha * (g * g);
        square_avg[i] = v;
        T avg;
        if (centered) {
            T m = grad_avg[i];
            m = m + one_minus_alpha * (g - m);
            grad_avg[i] = m;
            avg = gsqrt(v - m * m) + eps;
        } else {
            avg = gsqrt(v) + eps;
        }
        // one division for both cases (two division slow paths spill on sm_80 in double)
        const bool use_buf = momentum > T(0);
        const T q = (use_buf ? g : lr * g) / avg;
        if (use_buf) {
            T b = momentum_buf[i] * momentum;
            b = b + q;
            momentum_buf[i] = b;
            param[i] = p - lr * b;
        } else {
            param[i] = p - q;
        }
    }
}

#define DEFINE_ADAPTIVE(SUFFIX, T)                                                                  \
    extern "C" __global__ void __launch_bounds__(256) adagrad_step_v1_##SUFFIX(                    \
        T *__restrict__ param, const T *__restrict__ grad, T *__restrict__ state_sum, long long n,    \
        T clr, T weight_decay, T eps, int maximize) {                                               \
        adagrad_step_v1<T>(param, grad, state_sum, n, clr, weight_decay, eps, maximize);            \
    }                                                                                               \
    extern "C" __global__ void __launch_bounds__(256) adadelta_step_v1_##SUFFIX(                   \
        T *__restrict__ param, const T *__restrict__ grad, T *__restrict__ square_avg,              \
        T *__restrict__ acc_delta, long long n, T lr, T rho, T one_minus_rho, T eps, T weight_decay, \
        int maximize) {                                                                             \
        adadelta_step_v1<T>(param, grad, square_avg, acc_delta, n, lr, rho, one_minus_rho, eps,      \
                            weight_decay, maximize);                                                \
    }                                                                                               \
    extern "C" __global__ void __launch_bounds__(256) rmsprop_step_v1_##SUFFIX(                    \
        T *__restrict__ param, const T *__restrict__ grad, T *__restrict__ square_avg,              \
        T *__restrict__ momentum_buf, T *__restrict__ grad_avg, long long n, T lr, T alpha,         \
        T one_minus_alpha, T eps, T weight_decay, T momentum, int centered, int maximize) {         \
        rmsprop_step_v1<T>(param, grad, square_avg, momentum_buf, grad_avg, n, lr, alpha,           \
                           one_minus_alpha, eps, weight_decay, momentum, centered, maximize);       \
    }

DEFINE_ADAPTIVE(f32, float)
DEFINE_ADAPTIVE(f64, double)
