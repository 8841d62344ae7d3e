"""``torch.linalg``: the vector and Frobenius norms (``norm``, ``vector_norm``, ``matrix_norm`` with 'fro').
Decompositions, solves, inverses and the spectral/nuclear norms are not in gpunn: they raise naming themselves."""

from __future__ import annotations

from gpunn.tensor import Tensor

__all__ = ["norm", "vector_norm", "matrix_norm"]


def vector_norm(x: Tensor, ord=2, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    """The ``ord``-norm of the entries over ``dim`` (all of them by default)."""
    return x.norm(ord, dim, keepdim=keepdim, dtype=dtype)


def matrix_norm(A: Tensor, ord="fro", dim=(-2, -1), keepdim: bool = False, *, dtype=None) -> Tensor:
    """The Frobenius norm over the two dims ``dim`` (other orders raise)."""
    if ord != "fro":
        raise NotImplementedError(f"linalg.matrix_norm(ord={ord!r}): only 'fro' is supported by gpunn")
    return A.norm(2, dim, keepdim=keepdim, dtype=dtype)


def norm(A: Tensor, ord=None, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    """``ord=None``: the 2-norm of the flattened tensor (the Frobenius norm of a matrix); with a number the
    vector norm over ``dim`` (a 1-D input or one dim); 'fro' the Frobenius norm. Matrix orders raise."""
    if ord is None:
        return A.norm(2, dim, keepdim=keepdim, dtype=dtype)
    if ord == "fro":
        return matrix_norm(A, "fro", (-2, -1) if dim is None else dim, keepdim, dtype=dtype)
    if (dim is None and A.ndim == 1) or isinstance(dim, int) or (isinstance(dim, (tuple, list)) and len(dim) == 1):
        return vector_norm(A, ord, dim, keepdim, dtype=dtype)
    raise NotImplementedError(f"linalg.norm(ord={ord!r}) of a matrix is not supported by gpunn")


def __getattr__(name):
    raise AttributeError(f"module 'gpunn.linalg' has no attribute {name!r} (gpunn has the norms only)")
