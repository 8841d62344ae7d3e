"""Map-style and iterable data sets with PyTorch's names: ``Dataset``, ``IterableDataset``, ``Subset``,
``ConcatDataset``, ``ChainDataset``, ``TensorDataset`` and ``random_split``.

A map-style data set is anything with ``__getitem__(i)`` and ``__len__()``; ``DataLoader`` takes any of
them. ``random_split`` draws its permutation from ``generator`` (see ``gpunn.data.sampler.seed_from``), so
``random_split(ds, [0.8, 0.2], generator=...)`` is reproducible.

>>> train, val = random_split(TensorDataset(X, y), [0.9, 0.1])
>>> len(train) + len(val) == len(X)
True
"""

from __future__ import annotations

import bisect
import math
import numbers

import numpy as np

from gpunn.tensor import Tensor

__all__ = ["Dataset", "IterableDataset", "TensorDataset", "Subset", "ConcatDataset", "ChainDataset", "random_split"]


class Dataset:
    """Base class of map-style data sets: subclasses define ``__getitem__`` and usually ``__len__``.
    ``a + b`` is ``ConcatDataset([a, b])``."""

    def __getitem__(self, index):
        raise NotImplementedError("Subclasses of Dataset should implement __getitem__.")

    def __add__(self, other):
        return ConcatDataset([self, other])


class IterableDataset(Dataset):
    """Base class of data sets that are a stream: subclasses define ``__iter__`` (no indexing, no
    sampler or shuffle in the ``DataLoader``). ``a + b`` chains them."""

    def __iter__(self):
        raise NotImplementedError("Subclasses of IterableDataset should implement __iter__.")

    def __add__(self, other):
        return ChainDataset([self, other])


def _length(a) -> int:
    shape = getattr(a, "shape", None)
    if shape is None:
        raise TypeError(f"expected arrays or Tensors, got {type(a).__name__}")
    if len(shape) == 0:
        raise ValueError("expected arrays with a sample axis, got a 0-d array")
    return int(shape[0])


def _numeric(a, what: str, index: int):
    """``a`` (array-like, not a Tensor) as a numeric NumPy array. Object arrays are refused where they hold
    ``None`` or non-numbers: converting them would turn a ``None`` into a silent NaN."""
    a = np.asarray(a)
    if a.dtype == object:
        missing = [i for i, v in enumerate(a.flat) if v is None]
        if missing:
            where = np.unravel_index(missing[0], a.shape) if a.ndim else ()
            raise ValueError(
                f"{what}: array {index} holds None at index {tuple(int(i) for i in where)} "
                f"({len(missing)} missing value{'s' if len(missing) > 1 else ''}); fill or drop them "
                "first (None would silently become NaN)"
            )
        try:
            a = np.array(a.tolist())
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{what}: array {index} is an object array that is not numeric ({exc})") from None
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{what}: array {index} must be numeric (bool, int or float), got dtype {a.dtype}")
    return a


def _host_or_device(a, what: str, index: int):
    """Tensors and device arrays pass as they are; anything else is checked by ``_numeric``."""
    if isinstance(a, Tensor) or type(a).__module__.startswith("cupy"):
        return a
    return _numeric(a, what, index)


def _check_lengths(arrays, what: str) -> int:
    lengths = [_length(a) for a in arrays]
    if len(set(lengths)) > 1:
        if len(lengths) == 2:
            raise ValueError(f"{what}: X and y have different lengths: len(X)={lengths[0]}, len(y)={lengths[1]}")
        raise ValueError(f"{what}: arrays have different lengths {lengths}")
    return lengths[0]


class TensorDataset(Dataset):
    """Arrays (or Tensors) of equal length, indexed together: ``ds[i] == (X[i], y[i])``."""

    def __init__(self, *tensors) -> None:
        if not tensors:
            raise ValueError("TensorDataset needs at least one array")
        for t in tensors:
            if isinstance(t, (list, tuple)):
                raise TypeError(
                    "TensorDataset(*tensors): pass the arrays as separate arguments, TensorDataset(X, y), not one tuple"
                )
        self.tensors = tuple(_host_or_device(t, "TensorDataset", i) for i, t in enumerate(tensors))
        _check_lengths(self.tensors, "TensorDataset")

    def __len__(self) -> int:
        return _length(self.tensors[0])

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __repr__(self) -> str:
        shapes = ", ".join(str(tuple(t.shape)) for t in self.tensors)
        return f"TensorDataset({shapes})"


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order: ``Subset(ds, idx)[i] == ds[idx[i]]``."""

    def __init__(self, dataset, indices) -> None:
        self.dataset = dataset
        self.indices = indices

    def __getitem__(self, idx):
        if isinstance(idx, list):
            return self.dataset[[self.indices[i] for i in idx]]
        return self.dataset[self.indices[idx]]

    def __getitems__(self, indices):
        # forward batched fetching when the wrapped data set has it (as PyTorch does)
        if callable(getattr(self.dataset, "__getitems__", None)):
            return self.dataset.__getitems__([self.indices[i] for i in indices])
        return [self.dataset[self.indices[i]] for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        return f"Subset({type(self.dataset).__name__}, {len(self)} samples)"


class ConcatDataset(Dataset):
    """Map-style data sets one after another: index ``i`` runs through the first, then the second, ..."""

    def __init__(self, datasets) -> None:
        self.datasets = list(datasets)
        if not self.datasets:
            raise AssertionError("datasets should not be an empty iterable")
        for d in self.datasets:
            if isinstance(d, IterableDataset):
                raise AssertionError("ConcatDataset does not support IterableDataset")
        self.cumulative_sizes = list(np.cumsum([len(d) for d in self.datasets]).tolist())

    def __len__(self) -> int:
        return self.cumulative_sizes[-1]

    def __getitem__(self, idx):
        if idx < 0:
            if -idx > len(self):
                raise ValueError("absolute value of index should not exceed dataset length")
            idx = len(self) + idx
        if idx >= len(self):
            raise IndexError(f"index {idx} is out of range for a ConcatDataset of {len(self)} samples")
        which = bisect.bisect_right(self.cumulative_sizes, idx)
        start = 0 if which == 0 else self.cumulative_sizes[which - 1]
        return self.datasets[which][idx - start]


class ChainDataset(IterableDataset):
    """Iterable data sets one after another."""

    def __init__(self, datasets) -> None:
        self.datasets = list(datasets)

    def __iter__(self):
        for d in self.datasets:
            if not isinstance(d, IterableDataset):
                raise AssertionError("ChainDataset only supports IterableDataset")
            yield from d

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)


def _split_lengths(lengths, n: int) -> list[int]:
    """``lengths`` as counts summing to ``n``: fractions summing to 1 become floor(n * f) each, and the
    remainder goes one by one to the parts in order (round-robin), as PyTorch does."""
    lengths = list(lengths)
    if not lengths:
        raise ValueError("random_split: lengths must not be empty")
    is_fraction = math.isclose(sum(lengths), 1) and sum(lengths) <= 1
    if is_fraction and any(isinstance(v, float) for v in lengths):
        counts = []
        for i, frac in enumerate(lengths):
            if frac < 0 or frac > 1:
                raise ValueError(f"Fraction at index {i} is not between 0 and 1")
            counts.append(int(math.floor(n * frac)))
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
        return counts
    for v in lengths:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
            raise ValueError(
                f"random_split: lengths must be non-negative ints or fractions summing to 1, got {lengths}"
            )
    if sum(lengths) != n:
        raise ValueError("Sum of input lengths does not equal the length of the input dataset!")
    return [int(v) for v in lengths]


def random_split(dataset, lengths, generator=None) -> list[Subset]:
    """Split ``dataset`` at random into ``Subset``s of the given ``lengths`` (counts, or fractions that sum
    to 1). The permutation comes from ``generator`` (default: the global seed, ``gpunn.manual_seed``)."""
    from gpunn.data.sampler import permutation

    n = len(dataset)
    counts = _split_lengths(lengths, n)
    order = permutation(n, generator).tolist()
    parts, start = [], 0
    for c in counts:
        parts.append(Subset(dataset, order[start : start + c]))
        start += c
    return parts
