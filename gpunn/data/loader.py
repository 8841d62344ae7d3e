"""``DataLoader``: mini-batches from arrays held on the backend.

The data set is moved to the backend once, when the loader is made; on the GPU it then stays on the
device. A batch is a slice of the held arrays (no copy) or, when shuffling, one gather with an index
array that lives on the device too. Nothing crosses to the host per batch.

>>> loader = DataLoader((X_train, y_train), batch_size=64, shuffle=True, seed=0)
>>> for xb, yb in loader:          # gpunn Tensors: xb float, yb int64
...     loss = F.cross_entropy(model(xb), yb)
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from gpunn.backend import backend_for, get_backend
from gpunn.data.transforms import Transform
from gpunn.tensor import Tensor

__all__ = ["DataLoader", "TensorDataset"]


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
            raise ValueError(f"{what}: array {index} holds None at index {tuple(int(i) for i in where)} "
                             f"({len(missing)} missing value{'s' if len(missing) > 1 else ''}); fill or drop them "
                             "first (None would silently become NaN)")
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
            raise ValueError(f"{what}: X and y have different lengths: len(X)={lengths[0]}, "
                             f"len(y)={lengths[1]}")
        raise ValueError(f"{what}: arrays have different lengths {lengths}")
    return lengths[0]


class TensorDataset:
    """Arrays (or Tensors) of equal length, indexed together: ``ds[i] == (X[i], y[i])``."""

    def __init__(self, *tensors) -> None:
        if not tensors:
            raise ValueError("TensorDataset needs at least one array")
        for t in tensors:
            if isinstance(t, (list, tuple)):
                raise TypeError("TensorDataset(*tensors): pass the arrays as separate arguments, "
                                "TensorDataset(X, y), not one tuple")
        self.tensors = tuple(_host_or_device(t, "TensorDataset", i) for i, t in enumerate(tensors))
        _check_lengths(self.tensors, "TensorDataset")

    def __len__(self) -> int:
        return _length(self.tensors[0])

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __repr__(self) -> str:
        shapes = ", ".join(str(tuple(t.shape)) for t in self.tensors)
        return f"TensorDataset({shapes})"


def _to_backend(a, be):
    """``a`` as one of ``be``'s arrays; no copy when it already is one."""
    if isinstance(a, Tensor):
        if a._backend is be:
            return a._data
        return be.asarray(a._backend.to_numpy(a._data))
    if be.is_array(a):
        return a
    if type(a).__module__.startswith("cupy"):  # a device array for a host backend
        a = a.get()
    return be.asarray(np.asarray(a))


def shuffle_order(seed: int, epoch: int, n: int, backend):
    """A permutation of ``range(n)`` made on ``backend``, a function of ``(seed, epoch)`` only (the
    shuffle of ``DataLoader`` and ``DistributedSampler``)."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint32)
    gen = backend._make_rng(int(state[0]))  # a 32-bit seed: every backend's generator takes it
    if hasattr(gen, "permutation"):
        return gen.permutation(n)
    # generators without permutation (CuPy's): sort random keys, on the device
    return backend.xp.argsort(gen.random(n))


class DataLoader:
    """Iterate over ``(X, y)`` (or any number of equal-length arrays) in mini-batches of gpunn Tensors.

    Args:
        dataset: a tuple/list of arrays (NumPy, backend arrays, or Tensors) with the same first length,
            or a ``TensorDataset``. The first array is the input: converted to float32 unless it is
            already floating point. Integer arrays after it (labels) become int64.
        batch_size: samples per batch; the last batch is smaller unless ``drop_last``.
        shuffle: a fresh permutation every epoch. Epoch ``e`` uses a generator seeded from
            ``(seed, e)``, so the order is reproducible and a resumed run can ``set_epoch(e)``. With
            ``seed=None`` the seed is drawn from the backend's generator when the loader is made
            (reproducible under ``gpunn.manual_seed``).
        transform: called on each input batch (a backend array) and must return a new array, e.g.
            ``transforms.Compose([...])``. A gpunn ``Transform`` gets ``training=self.augment``; any
            other callable always runs.
        augment: whether random transforms run. Default: same as ``shuffle`` -- a training loader
            augments, an evaluation loader (``shuffle=False``) only applies deterministic transforms
            such as ``Normalize``. Can be changed later: ``loader.augment = False``.
        backend: where the data lives (default: the current backend).
        sampler: the sample indices of an epoch, in order, instead of ``shuffle`` (e.g. a
            ``DistributedSampler``: this rank's shard); taken once per epoch and gathered on the device.

    ``len(loader)`` is the number of batches; ``loader.num_samples`` the number of samples;
    ``loader.dataset_arrays`` the arrays held on the backend.
    """

    def __init__(self, dataset, batch_size: int = 1, shuffle: bool = False, drop_last: bool = False,
                 seed: int | None = None, transform=None, backend=None, augment: bool | None = None,
                 sampler=None) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size!r}")
        bad_seed = isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0
        if seed is not None and bad_seed:
            raise ValueError(f"DataLoader: seed must be a non-negative int or None, got {seed!r}")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler option is mutually exclusive with shuffle")
        if sampler is not None and not (hasattr(sampler, "__iter__") and hasattr(sampler, "__len__")):
            raise TypeError(f"DataLoader: sampler must be iterable with a length, got {type(sampler).__name__}")
        if transform is not None and not callable(transform):
            raise TypeError(f"DataLoader: transform must be callable, got {type(transform).__name__}")
        if isinstance(dataset, TensorDataset):
            arrays = dataset.tensors
        elif isinstance(dataset, (tuple, list)) and len(dataset) > 0:
            arrays = tuple(_host_or_device(a, "DataLoader", i) for i, a in enumerate(dataset))
        else:
            hint = " (for a DatasetSplit pass ds.train or ds.test)" if hasattr(dataset, "X_train") else ""
            raise TypeError("DataLoader: dataset must be a tuple of arrays (X, y) or a TensorDataset, got "
                            f"{type(dataset).__name__}{hint}")
        n = _check_lengths(arrays, "DataLoader")
        if n == 0:
            raise ValueError("DataLoader: the data set is empty (0 samples)")
        if drop_last and batch_size > (n if sampler is None else len(sampler)):
            raise ValueError(f"DataLoader: batch_size={batch_size} is larger than the {n} samples and "
                             "drop_last=True, so no batch would ever be produced")
        self.backend = get_backend() if backend is None else backend_for(backend)
        be = self.backend
        held = []
        for i, a in enumerate(arrays):
            a = _to_backend(a, be)
            if i == 0 and a.dtype.kind != "f":
                a = a.astype(np.float32)
            elif i > 0 and a.dtype.kind in "biu" and a.dtype != np.int64:
                a = a.astype(np.int64)
            held.append(a)
        self.dataset_arrays = tuple(held)
        self.num_samples = n
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.transform = transform
        self.sampler = sampler
        if augment is None:
            augment = self.shuffle or bool(getattr(sampler, "shuffle", False))
        self.augment = bool(augment)
        if seed is None:
            seed = int(be.randint(0, 2**31 - 1, (1,))[0])  # one small draw: fine on every backend
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        n = self.num_samples if self.sampler is None else len(self.sampler)
        if self.drop_last:
            return n // self.batch_size
        return math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter(loader)`` produce epoch ``epoch``'s order (to resume a run)."""
        self.epoch = int(epoch)

    def _permutation(self, epoch: int):
        """A permutation of the sample indices, made on the backend, seeded from (seed, epoch)."""
        return shuffle_order(self.seed, epoch, self.num_samples, self.backend)

    def _sampled(self):
        """The sampler's indices for this epoch, checked, as one index array on the backend."""
        idx = np.fromiter(iter(self.sampler), dtype=np.int64, count=len(self.sampler))
        bad = idx[(idx < 0) | (idx >= self.num_samples)]
        if bad.size:
            raise IndexError(f"DataLoader: the sampler gave index {int(bad[0])} for a data set of "
                             f"{self.num_samples} samples")
        return self.backend.asarray(idx)

    def __iter__(self):
        if self.sampler is not None:
            order = self._sampled()
        else:
            order = self._permutation(self.epoch) if self.shuffle else None
        self.epoch += 1
        return self._batches(order)

    def _batches(self, order):
        be, bs = self.backend, self.batch_size
        n = self.num_samples if order is None else int(order.shape[0])
        stop = n - n % bs if self.drop_last else n
        for start in range(0, stop, bs):
            end = min(start + bs, n)
            if order is None:
                parts = [a[start:end] for a in self.dataset_arrays]
            else:
                idx = order[start:end]
                parts = [a[idx] for a in self.dataset_arrays]
            if self.transform is not None:
                if isinstance(self.transform, Transform):
                    parts[0] = self.transform(parts[0], training=self.augment)
                else:
                    parts[0] = self.transform(parts[0])
            yield tuple(Tensor._wrap(p, be) for p in parts)

    def __repr__(self) -> str:
        shapes = ", ".join(str(tuple(a.shape)) for a in self.dataset_arrays)
        return (f"DataLoader(({shapes}), batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last}, augment={self.augment}, backend={self.backend.name!r})")
