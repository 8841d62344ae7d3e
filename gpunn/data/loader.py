"""``DataLoader``: mini-batches of a data set, with PyTorch's arguments, and a fast path for arrays.

Two ways to a batch:

- **Fast path** (arrays): ``(X, y)`` tuples of arrays, a bare array or Tensor, a ``TensorDataset``, and
  data sets that offer their arrays (``gpunn.vision.datasets.MNIST`` when its transforms work on whole
  batches). The arrays move to the backend once, when the loader is made, and stay there (on the GPU:
  on the device). A batch is a slice of them (no copy) or, when shuffling or sampling, one gather with
  an index array on the device. Nothing crosses to the host per batch.
- **Item path** (any map-style data set, ``__getitem__``/``__len__``, or an ``IterableDataset``):
  ``dataset[i]`` for each index the sampler gives, then ``collate_fn`` (``default_collate``) builds the
  batch. A custom ``collate_fn`` or a ``batch_sampler`` always takes this path.

``num_workers``, ``pin_memory``, ``prefetch_factor``, ``persistent_workers``, ``timeout`` and
``worker_init_fn`` are validated as PyTorch does and otherwise accepted without effect: batches are
made in the calling process (the fast path is device work with no per-item Python cost, so worker
processes would not help it; the item path runs in the main process).

>>> loader = DataLoader((X_train, y_train), batch_size=64, shuffle=True, seed=0)
>>> for xb, yb in loader:          # gpunn Tensors: xb float, yb int64
...     loss = F.cross_entropy(model(xb), yb)
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from gpunn.backend import backend_for, get_backend
from gpunn.data.collate import default_collate, default_convert
from gpunn.data.dataset import IterableDataset, Subset, TensorDataset, _check_lengths, _host_or_device
from gpunn.data.sampler import BatchSampler, RandomSampler, SequentialSampler, shuffle_order
from gpunn.data.transforms import Transform
from gpunn.tensor import Tensor

__all__ = ["DataLoader", "TensorDataset"]


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


def _array_source(dataset):
    """``(arrays, transform, convert, container)`` when ``dataset`` can be batched by slicing, else None.

    ``convert``: make the first array float32 and integer ones after it int64 (the ``(X, y)`` convenience
    for host arrays); ``container``: what a batch is (``tuple``, ``list``, or ``None`` for a bare array).
    """
    if isinstance(dataset, TensorDataset):
        convert = not all(isinstance(t, Tensor) for t in dataset.tensors)
        return dataset.tensors, None, convert, list
    if isinstance(dataset, tuple) and len(dataset) > 0:  # a list is a data set of samples, as in PyTorch
        arrays = tuple(_host_or_device(a, "DataLoader", i) for i, a in enumerate(dataset))
        return arrays, None, True, tuple
    if isinstance(dataset, (Tensor, np.ndarray)) or type(dataset).__module__.startswith("cupy"):
        return (_host_or_device(dataset, "DataLoader", 0),), None, False, None
    if isinstance(dataset, Subset):  # e.g. from random_split: the inner arrays, gathered once
        inner = _array_source(dataset.dataset)
        if inner is None or inner[3] is not list:
            return None
        arrays, transform, convert, container = inner
        idx = np.asarray(dataset.indices, dtype=np.int64).reshape(-1)
        return tuple(_take(a, idx) for a in arrays), transform, convert, container
    offer = getattr(dataset, "_batch_source", None)
    if callable(offer):
        found = offer()
        if found is not None:
            arrays, transform = found
            return tuple(arrays), transform, False, list
    return None


def _take(a, idx: np.ndarray):
    """Rows ``idx`` of an array or Tensor, on its own backend (a Tensor stays a Tensor)."""
    if isinstance(a, Tensor):
        return Tensor._wrap(a._data[a._backend.asarray(idx)], a._backend)
    if type(a).__module__.startswith("cupy"):
        import cupy

        return a[cupy.asarray(idx)]
    return a[idx]


def _check_flag(value, name: str) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} should be a boolean value, but got {name}={value}")


class DataLoader:
    """Iterate over a data set in mini-batches of gpunn Tensors (PyTorch's ``DataLoader``).

    Args (PyTorch's, in its order):
        dataset: a map-style data set (``__getitem__`` and ``__len__``), an ``IterableDataset``, a
            ``TensorDataset``, a list (of samples), or (gpunn's convenience) a tuple of equal-length arrays
            ``(X, y)``: then the first array becomes float32 unless it is floating point and integer arrays
            after it int64, and a batch is a tuple (a ``TensorDataset``'s is a list, as in PyTorch).
        batch_size: samples per batch (``None``: no batching, yield samples one by one).
        shuffle: a fresh order every epoch (default False).
        sampler: the indices of an epoch (mutually exclusive with ``shuffle``), e.g. a
            ``DistributedSampler`` (this rank's shard) or ``WeightedRandomSampler``.
        batch_sampler: yields lists of indices (mutually exclusive with batch_size, shuffle, sampler and
            drop_last).
        collate_fn: a list of samples -> a batch (default ``default_collate``).
        drop_last: drop the last, incomplete batch.
        generator: the ``gpunn.Generator`` the shuffle draws from.
        num_workers, pin_memory, timeout, worker_init_fn, multiprocessing_context, prefetch_factor,
        persistent_workers, pin_memory_device, in_order: validated, then without effect (see the module).
    gpunn's own keywords (fast path): ``seed`` (epoch e's shuffle is a function of ``(seed, e)``, so a
    resumed run can ``set_epoch(e)``; default drawn from the global generator when the loader is made),
    ``transform`` (called on each input batch; a gpunn ``Transform`` gets ``training=self.augment``),
    ``augment`` (default: same as ``shuffle``) and ``backend`` (where the arrays live).

    ``len(loader)`` is the number of batches, ``loader.dataset`` the data set (a ``TensorDataset`` for a
    tuple of arrays), ``loader.num_samples`` the number of samples.
    """

    def __init__(
        self,
        dataset,
        batch_size: int | None = 1,
        shuffle: bool | None = None,
        sampler=None,
        batch_sampler=None,
        num_workers: int = 0,
        collate_fn=None,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn=None,
        multiprocessing_context=None,
        generator=None,
        *,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        pin_memory_device: str = "",
        in_order: bool = True,
        seed: int | None = None,
        transform=None,
        backend=None,
        augment: bool | None = None,
    ) -> None:
        self._check_worker_options(num_workers, timeout, prefetch_factor, persistent_workers)
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1
        ):
            raise ValueError(
                f"batch_size should be a positive integer value, but got batch_size={batch_size!r} "
                "(DataLoader: batch_size must be a positive int or None)"
            )
        bad_seed = isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0
        if seed is not None and bad_seed:
            raise ValueError(f"DataLoader: seed must be a non-negative int or None, got {seed!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"DataLoader: transform must be callable, got {type(transform).__name__}")
        if collate_fn is not None and not callable(collate_fn):
            raise TypeError(f"DataLoader: collate_fn must be callable, got {type(collate_fn).__name__}")
        if isinstance(dataset, IterableDataset):
            for name, value in (("shuffle", shuffle), ("sampler", sampler), ("batch_sampler", batch_sampler)):
                if value not in (None, False):
                    raise ValueError(
                        f"DataLoader with IterableDataset: expected unspecified {name} option, but got {name}={value!r}"
                    )
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError(
                    "batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, and drop_last"
                )
            batch_size, drop_last = None, False
        elif batch_size is None and drop_last:
            raise ValueError("batch_size=None option disables auto-batching and is mutually exclusive with drop_last")
        for name, s in (("sampler", sampler), ("batch_sampler", batch_sampler)):
            if s is not None and not hasattr(s, "__iter__"):
                raise TypeError(f"DataLoader: {name} must be iterable, got {type(s).__name__}")
        _check_flag(drop_last, "drop_last")
        self.num_workers, self.pin_memory, self.timeout = num_workers, bool(pin_memory), timeout
        self.worker_init_fn, self.multiprocessing_context = worker_init_fn, multiprocessing_context
        self.prefetch_factor, self.persistent_workers = prefetch_factor, persistent_workers
        self.pin_memory_device, self.in_order = pin_memory_device, in_order
        self.batch_size = None if batch_size is None else int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.generator = generator
        self.transform = transform
        self.collate_fn = default_collate if collate_fn is None else collate_fn
        self.epoch = 0
        self.backend = get_backend() if backend is None else backend_for(backend)
        if seed is None:
            seed = int(self.backend.randint(0, 2**31 - 1, (1,))[0])  # one small draw: fine on every backend
        self.seed = int(seed)

        source = None
        if collate_fn is None and batch_sampler is None and batch_size is not None:
            source = _array_source(dataset)
        self._fast = source is not None
        if self._fast:
            self._init_arrays(dataset, source, sampler)
        else:
            self._init_items(dataset, sampler, batch_sampler, transform)
        if augment is None:
            augment = bool(shuffle) or bool(getattr(sampler, "shuffle", False))
        self.augment = bool(augment)

    @staticmethod
    def _check_worker_options(num_workers, timeout, prefetch_factor, persistent_workers) -> None:
        if isinstance(num_workers, bool) or not isinstance(num_workers, numbers.Integral) or num_workers < 0:
            raise ValueError("num_workers option should be non-negative; use num_workers=0 to disable multiprocessing.")
        if not isinstance(timeout, numbers.Real) or timeout < 0:
            raise ValueError("timeout option should be non-negative")
        if num_workers == 0 and prefetch_factor is not None:
            raise ValueError(
                "prefetch_factor option could only be specified in multiprocessing.let num_workers > 0 "
                "to enable multiprocessing, otherwise set prefetch_factor to None."
            )
        if prefetch_factor is not None and (not isinstance(prefetch_factor, numbers.Integral) or prefetch_factor < 0):
            raise ValueError("prefetch_factor option should be non-negative")
        if persistent_workers and num_workers == 0:
            raise ValueError("persistent_workers option needs num_workers > 0")

    def _init_arrays(self, dataset, source, sampler) -> None:
        arrays, batch_transform, convert, container = source
        n = _check_lengths(arrays, "DataLoader")
        if n == 0:
            raise ValueError("DataLoader: the data set is empty (0 samples)")
        if self.generator is not None and self.shuffle and sampler is None:
            sampler, self.shuffle = RandomSampler(range(n), generator=self.generator), False
        if self.drop_last and self.batch_size > (n if sampler is None else getattr(sampler, "__len__", lambda: n)()):
            raise ValueError(
                f"DataLoader: batch_size={self.batch_size} is larger than the {n} samples and "
                "drop_last=True, so no batch would ever be produced"
            )
        be = self.backend
        held = []
        for i, a in enumerate(arrays):
            a = _to_backend(a, be)
            if convert and i == 0 and a.dtype.kind != "f":
                a = a.astype(np.float32)
            elif convert and i > 0 and a.dtype.kind in "biu" and a.dtype != np.int64:
                a = a.astype(np.int64)
            held.append(a)
        self.dataset_arrays = tuple(held)
        self.num_samples = n
        self.sampler = sampler
        self.batch_sampler = None
        self._batch_transform = batch_transform
        self._container = container
        self.dataset = TensorDataset(*arrays) if isinstance(dataset, tuple) else dataset

    def _init_items(self, dataset, sampler, batch_sampler, transform) -> None:
        if transform is not None:
            raise ValueError(
                "DataLoader: transform= works on array batches (the fast path); for a data set of "
                "items put the transform in the data set (or in collate_fn)"
            )
        if isinstance(dataset, tuple) or not (hasattr(dataset, "__getitem__") or hasattr(dataset, "__iter__")):
            hint = " (for a DatasetSplit pass ds.train or ds.test)" if hasattr(dataset, "X_train") else ""
            raise TypeError(
                "DataLoader: dataset must be a tuple of arrays (X, y), a TensorDataset or a data set "
                f"with __getitem__ and __len__, got {type(dataset).__name__}{hint}"
            )
        self.dataset = dataset
        self._iterable = isinstance(dataset, IterableDataset)
        if not self._iterable:
            if sampler is None:
                if self.shuffle:
                    sampler = RandomSampler(dataset, generator=self.generator)
                else:
                    sampler = SequentialSampler(dataset)
            if batch_sampler is None and self.batch_size is not None:
                batch_sampler = BatchSampler(sampler, self.batch_size, self.drop_last)
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.dataset_arrays = None
        try:
            self.num_samples = len(dataset)
        except TypeError:
            self.num_samples = None

    def __len__(self) -> int:
        if not self._fast:
            if self._iterable:
                n = len(self.dataset)  # TypeError when the stream has no length, as in PyTorch
                if self.batch_size is None:
                    return n
                return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
            return len(self.batch_sampler) if self.batch_sampler is not None else len(self.sampler)
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
        idx = np.fromiter(iter(self.sampler), dtype=np.int64)
        bad = idx[(idx < 0) | (idx >= self.num_samples)]
        if bad.size:
            raise IndexError(
                f"DataLoader: the sampler gave index {int(bad[0])} for a data set of {self.num_samples} samples"
            )
        return self.backend.asarray(idx)

    def __iter__(self):
        if not self._fast:
            self.epoch += 1
            return self._items()
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
            if self._batch_transform is not None:
                parts[0] = self._batch_transform(parts[0])
            if self.transform is not None:
                if isinstance(self.transform, Transform):
                    parts[0] = self.transform(parts[0], training=self.augment)
                else:
                    parts[0] = self.transform(parts[0])
            batch = [p if isinstance(p, Tensor) else Tensor._wrap(p, be) for p in parts]
            yield batch[0] if self._container is None else self._container(batch)

    def _fetch(self, indices):
        many = getattr(self.dataset, "__getitems__", None)
        return many(list(indices)) if callable(many) else [self.dataset[i] for i in indices]

    def _items(self):
        if self._iterable:
            yield from self._stream()
            return
        if self.batch_sampler is None:  # batch_size=None: one sample at a time
            for i in self.sampler:
                yield (
                    default_convert(self.dataset[i])
                    if self.collate_fn is default_collate
                    else self.collate_fn(self.dataset[i])
                )
            return
        for indices in self.batch_sampler:
            yield self.collate_fn(self._fetch(indices))

    def _stream(self):
        if self.batch_size is None:
            for sample in self.dataset:
                yield default_convert(sample) if self.collate_fn is default_collate else self.collate_fn(sample)
            return
        batch = []
        for sample in self.dataset:
            batch.append(sample)
            if len(batch) == self.batch_size:
                yield self.collate_fn(batch)
                batch = []
        if batch and not self.drop_last:
            yield self.collate_fn(batch)

    def __repr__(self) -> str:
        if not self._fast:
            return (
                f"DataLoader({type(self.dataset).__name__}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last})"
            )
        shapes = ", ".join(str(tuple(a.shape)) for a in self.dataset_arrays)
        return (
            f"DataLoader(({shapes}), batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"drop_last={self.drop_last}, augment={self.augment}, backend={self.backend.name!r})"
        )
