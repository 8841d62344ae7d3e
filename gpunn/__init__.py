"""gpunn: a small neural-network trainer with a PyTorch-familiar API.

    import gpunn
    from gpunn import nn, optim
    import gpunn.nn.functional as F

Arrays live on a backend: ``numpy`` (always there) or ``cupy`` (GPU); see ``gpunn.set_backend``.
Importing gpunn needs NumPy only.
"""

from gpunn import backend  # noqa: F401  (also callable: ``with gpunn.backend("numpy"):``)
from gpunn.backend import (
    cupy_available,
    get_backend,
    manual_seed,
    set_backend,
    use_backend,
)
from gpunn.factories import (
    arange,
    as_tensor,
    cat,
    empty,
    eye,
    from_dlpack,
    from_numpy,
    full,
    full_like,
    ones,
    ones_like,
    rand,
    rand_like,
    randint,
    randn,
    randn_like,
    stack,
    tensor,
    where,
    zeros,
    zeros_like,
)
from gpunn.tensor import (
    Tensor,
    bool_,
    enable_grad,
    float16,
    float32,
    float64,
    int32,
    int64,
    is_grad_enabled,
    no_grad,
    set_grad_enabled,
    uint8,
)

__version__ = "0.1.0"


def __getattr__(name):
    # heavier submodules load on first use, so `import gpunn` stays light
    import importlib

    if name in ("nn", "optim", "data", "train", "autograd", "distributed"):
        return importlib.import_module(f"gpunn.{name}")
    if name == "gradcheck":
        from gpunn.autograd import gradcheck

        return gradcheck
    if name in ("save", "load"):
        from gpunn import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'gpunn' has no attribute {name!r}")


def exp(x):
    return x.exp()


def log(x):
    return x.log()


def log2(x):
    return x.log2()


def sqrt(x):
    return x.sqrt()


def abs(x):  # noqa: A001
    return x.abs()


def clamp(x, min=None, max=None):  # noqa: A002
    return x.clamp(min, max)


def sum(x, dim=None, keepdim=False):  # noqa: A001
    return x.sum(dim, keepdim)


def mean(x, dim=None, keepdim=False):
    return x.mean(dim, keepdim)


def max(x, dim=None, keepdim=False):  # noqa: A001
    return x.max(dim, keepdim)


def min(x, dim=None, keepdim=False):  # noqa: A001
    return x.min(dim, keepdim)


def argmax(x, dim=None, keepdim=False):
    return x.argmax(dim, keepdim)


def matmul(a, b):
    return a @ b


def reshape(x, *shape):
    return x.reshape(*shape)


def flatten(x, start_dim=0, end_dim=-1):
    return x.flatten(start_dim, end_dim)


def transpose(x, dim0, dim1):
    return x.transpose(dim0, dim1)


def sigmoid(x):
    return x.sigmoid()


def tanh(x):
    return x.tanh()


def relu(x):
    return x.relu()


def softmax(x, dim):
    return x.softmax(dim)


def log_softmax(x, dim):
    return x.log_softmax(dim)
