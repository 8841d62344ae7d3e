"""gpunn: a small neural-network trainer with a PyTorch-familiar API.

    import gpunn
    from gpunn import nn, optim
    import gpunn.nn.functional as F

Arrays live on a backend: ``numpy`` (always there; PyTorch's device ``cpu``) or ``cupy`` (GPU, ``cuda``);
see ``gpunn.set_backend`` and ``gpunn.device``. Importing gpunn needs NumPy only.
docs/pytorch-compat.md lists what of PyTorch's API is here and how it differs.
"""

from gpunn import backend  # noqa: F401  (also callable: ``with gpunn.backend("numpy"):``)
from gpunn import ops as _ops  # noqa: F401
from gpunn._format import set_printoptions
from gpunn.backend import (
    cupy_available,
    get_backend,
    get_rng_state,
    initial_seed,
    manual_seed,
    seed,
    set_backend,
    set_rng_state,
    use_backend,
)
from gpunn.device import device
from gpunn.dtypes import (
    bool_,
    double,
    finfo,
    float16,
    float32,
    float64,
    half,
    iinfo,
    int8,
    int16,
    int32,
    int64,
    long,
    short,
    uint8,
)
from gpunn.factories import (
    arange,
    as_tensor,
    bernoulli,
    empty,
    empty_like,
    eye,
    from_dlpack,
    from_numpy,
    full,
    full_like,
    linspace,
    logspace,
    multinomial,
    normal,
    ones,
    ones_like,
    rand,
    rand_like,
    randint,
    randint_like,
    randn,
    randn_like,
    randperm,
    tensor,
    zeros,
    zeros_like,
)
from gpunn.grad_mode import enable_grad, inference_mode, is_grad_enabled, no_grad, set_grad_enabled
from gpunn.legacy import (
    BoolTensor,
    ByteTensor,
    DoubleTensor,
    FloatTensor,
    IntTensor,
    LongTensor,
    Size,
    get_default_dtype,
    is_floating_point,
    is_tensor,
    numel,
    set_default_dtype,
)
from gpunn.ops import methods as _methods  # noqa: F401  (binds the ops as Tensor methods)
from gpunn.ops.arith import (
    add,
    addcdiv,
    addcmul,
    addmm,
    allclose,
    atan2,
    baddbmm,
    bmm,
    cdist,
    div,
    divide,
    dot,
    einsum,
    eq,
    equal,
    float_power,
    floor_divide,
    fmod,
    ge,
    gt,
    hypot,
    inner,
    isclose,
    kron,
    le,
    lerp,
    logaddexp,
    logical_and,
    logical_not,
    logical_or,
    logical_xor,
    lt,
    matmul,
    mm,
    mul,
    multiply,
    mv,
    ne,
    neg,
    outer,
    pow,
    remainder,
    sub,
    subtract,
    tensordot,
    true_divide,
    vdot,
    xlogy,
)
from gpunn.ops.pointwise import (
    abs,
    acos,
    acosh,
    asin,
    asinh,
    atan,
    atanh,
    ceil,
    clamp,
    clamp_max,
    clamp_min,
    clip,
    cos,
    cosh,
    deg2rad,
    erf,
    exp,
    exp2,
    expm1,
    floor,
    fmax,
    fmin,
    frac,
    heaviside,
    isfinite,
    isinf,
    isnan,
    isneginf,
    isposinf,
    log,
    log1p,
    log2,
    log10,
    log_softmax,
    logsumexp,
    maximum,
    minimum,
    nan_to_num,
    rad2deg,
    reciprocal,
    relu,
    round,
    rsqrt,
    sigmoid,
    sign,
    signbit,
    sin,
    sinh,
    softmax,
    sqrt,
    square,
    tan,
    tanh,
    trunc,
)
from gpunn.ops.reduce import (
    all,
    amax,
    amin,
    aminmax,
    any,
    argmax,
    argmin,
    argsort,
    bincount,
    bucketize,
    count_nonzero,
    cummax,
    cummin,
    cumprod,
    cumsum,
    dist,
    kthvalue,
    logcumsumexp,
    max,
    mean,
    median,
    min,
    nanmean,
    nansum,
    prod,
    searchsorted,
    sort,
    std,
    std_mean,
    sum,
    topk,
    unique,
    var,
    var_mean,
)
from gpunn.ops.reduce import (
    norm_function as norm,
)
from gpunn.ops.shape import (
    argwhere,
    atleast_1d,
    atleast_2d,
    atleast_3d,
    broadcast_tensors,
    broadcast_to,
    cat,
    chunk,
    clone,
    column_stack,
    concat,
    concatenate,
    diag,
    diagonal,
    diff,
    dstack,
    expand_as,
    flatten,
    flip,
    gather,
    hstack,
    index_add,
    index_select,
    masked_fill,
    masked_select,
    meshgrid,
    movedim,
    msort,
    narrow,
    nonzero,
    permute,
    repeat_interleave,
    reshape,
    roll,
    rot90,
    scatter,
    scatter_add,
    select,
    split,
    squeeze,
    stack,
    swapaxes,
    t,
    take,
    take_along_dim,
    tensor_split,
    tile,
    trace,
    transpose,
    tril,
    triu,
    unbind,
    unflatten,
    unsqueeze,
    vstack,
    where,
)
from gpunn.tensor import Tensor

sgn = sign
negative, absolute = neg, abs
greater, less, greater_equal, less_equal, not_equal = gt, lt, ge, le, ne
moveaxis = movedim
float = float32  # noqa: A001  (torch.float, torch.int, torch.bool: dtype names, as in PyTorch)
int = int32  # noqa: A001
bool = bool_  # noqa: A001

__version__ = "0.1.0"

_LAZY = (
    "nn",
    "optim",
    "data",
    "train",
    "autograd",
    "cuda",
    "accelerator",
    "utils",
    "distributed",
    "backends",
    "linalg",
    "distributions",
    "amp",
    "cpu",
)
_AUTOCAST = ("autocast", "is_autocast_enabled", "get_autocast_dtype")
_MATMUL_PRECISION = ("get_float32_matmul_precision", "set_float32_matmul_precision")


def __getattr__(name):
    # heavier submodules load on first use, so `import gpunn` stays light
    import importlib

    if name in _LAZY:
        try:
            return importlib.import_module(f"gpunn.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"gpunn.{name}":
                raise
    if name == "gradcheck":
        from gpunn.autograd import gradcheck

        return gradcheck
    if name in _AUTOCAST:
        from gpunn.amp import autocast_mode

        return getattr(autocast_mode, name)
    if name in _MATMUL_PRECISION:
        from gpunn.backends import cuda

        return getattr(cuda, name)
    if name == "Generator":
        from gpunn.data.sampler import Generator

        return Generator
    if name in ("save", "load"):
        from gpunn import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'gpunn' has no attribute {name!r} (docs/pytorch-compat.md lists what gpunn supports)")
