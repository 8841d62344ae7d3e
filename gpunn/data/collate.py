"""``default_collate`` and ``default_convert``: a list of samples into one batch, as PyTorch builds it.

- Tensors are stacked along a new first axis (same shape, dtype and device required); NumPy arrays and
  NumPy scalars become Tensors of their dtype, stacked.
- Python ``float`` -> float64 Tensor, ``int`` -> int64, ``bool`` -> bool; ``str``/``bytes`` stay a list.
- A dict is collated key by key, a namedtuple field by field, a tuple into a list of collated
  positions, a list into a list (all samples must have the same length).

>>> default_collate([(np.zeros(3), 1), (np.ones(3), 0)])    # [Tensor (2, 3) float64, Tensor([1, 0])]
"""

from __future__ import annotations

import collections.abc
import numbers

import numpy as np

from gpunn.tensor import Tensor

__all__ = ["default_collate", "default_convert"]

_UNSUPPORTED = "default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; found {}"


def _wrap_host(a: np.ndarray) -> Tensor:
    """A NumPy array as a CPU (numpy-backend) Tensor, no copy when possible, as ``torch.as_tensor``."""
    from gpunn.backend import backend_for

    return Tensor._wrap(a, backend_for("numpy"))


def _stack_tensors(batch) -> Tensor:
    first = batch[0]
    for t in batch:
        if not isinstance(t, Tensor):
            raise TypeError(f"default_collate: a batch mixes Tensors with {type(t).__name__}")
        if t._backend is not first._backend:
            raise RuntimeError(
                f"default_collate: the samples' Tensors are on different devices ({first.device} and {t.device})"
            )
        if tuple(t.shape) != tuple(first.shape):
            raise RuntimeError(
                f"stack expects each tensor to be equal size, but got {list(first.shape)} at entry 0 "
                f"and {list(t.shape)} at entry {batch.index(t)}"
            )
    xp = first._backend.xp
    dtypes = {t._data.dtype for t in batch}
    data = xp.stack([t._data for t in batch])
    if len(dtypes) > 1:  # PyTorch's stack refuses mixed dtypes only for some; promote as it does
        data = data.astype(np.result_type(*dtypes))
    return Tensor._wrap(data, first._backend)


def _check_numeric(a: np.ndarray) -> None:
    if a.dtype.kind not in "biufc":
        raise TypeError(_UNSUPPORTED.format(a.dtype))


def default_collate(batch):
    """Samples (a list) into one batch, recursively; see the module docstring."""
    if not isinstance(batch, collections.abc.Sequence) or isinstance(batch, (str, bytes)):
        batch = list(batch)
    if not batch:
        raise IndexError("default_collate: got an empty batch")
    elem = batch[0]
    if isinstance(elem, Tensor):
        return _stack_tensors(list(batch))
    if isinstance(elem, np.ndarray):
        arrays = [np.asarray(b) for b in batch]
        for a in arrays:
            _check_numeric(a)
        if any(a.shape != elem.shape for a in arrays):
            shapes = [list(a.shape) for a in arrays]
            raise RuntimeError(
                f"stack expects each tensor to be equal size, but got {shapes[0]} at entry 0 and "
                f"{next(s for s in shapes if s != shapes[0])} at a later entry"
            )
        return _wrap_host(np.stack(arrays))
    if isinstance(elem, np.generic):
        a = np.array(batch)
        _check_numeric(a)
        return _wrap_host(a)
    if isinstance(elem, bool):
        return _wrap_host(np.array(batch, dtype=np.bool_))
    if isinstance(elem, numbers.Integral):
        return _wrap_host(np.array(batch, dtype=np.int64))
    if isinstance(elem, float):
        return _wrap_host(np.array(batch, dtype=np.float64))
    if isinstance(elem, (str, bytes)):
        return list(batch)
    if isinstance(elem, collections.abc.Mapping):
        try:
            return type(elem)({key: default_collate([d[key] for d in batch]) for key in elem})
        except TypeError:  # a Mapping type whose constructor takes no dict
            return {key: default_collate([d[key] for d in batch]) for key in elem}
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return type(elem)(*(default_collate(list(s)) for s in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        size = len(elem)
        if not all(len(b) == size for b in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        columns = [default_collate(list(s)) for s in zip(*batch)]
        if isinstance(elem, tuple):
            return columns
        try:
            return type(elem)(columns)
        except TypeError:
            return columns
    raise TypeError(_UNSUPPORTED.format(type(elem)))


def default_convert(data):
    """One sample as the loader yields it with ``batch_size=None``: NumPy arrays and scalars become Tensors
    (numeric only), containers are converted element by element, anything else passes unchanged."""
    if isinstance(data, Tensor):
        return data
    if isinstance(data, np.ndarray):
        return _wrap_host(data) if data.dtype.kind in "biufc" else data
    if isinstance(data, np.generic):
        return _wrap_host(np.asarray(data)) if np.asarray(data).dtype.kind in "biufc" else data
    if isinstance(data, collections.abc.Mapping):
        return {k: default_convert(v) for k, v in data.items()}
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(default_convert(d) for d in data))
    if isinstance(data, tuple):
        return [default_convert(d) for d in data]
    if isinstance(data, collections.abc.Sequence) and not isinstance(data, (str, bytes)):
        try:
            return type(data)([default_convert(d) for d in data])
        except TypeError:
            return [default_convert(d) for d in data]
    return data
