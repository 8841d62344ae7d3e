"""Samplers with PyTorch's names, for ``DataLoader(sampler=...)`` / ``DataLoader(batch_sampler=...)``, and the
``Generator`` their randomness comes from.

- ``SequentialSampler``, ``RandomSampler`` (with or without replacement, ``num_samples``),
  ``SubsetRandomSampler``, ``WeightedRandomSampler``: the sample indices of an epoch.
- ``BatchSampler``: groups another sampler's indices into lists of ``batch_size``.
- ``DistributedSampler``: each rank's share of a data set. PyTorch's semantics: every epoch all ranks
  draw the same order (shuffled by ``seed`` and the epoch set with ``set_epoch``), pad it by repeating its
  start to a multiple of the world size (or, with ``drop_last``, cut the tail), and rank r takes positions
  r, r+N, r+2N, ... So with a per-rank batch of B/N, the k-th batches of the N ranks together are exactly
  positions [kB, (k+1)B) of the order: the global batches one process with batch B and the same order
  would see (``DataLoader(shuffle=True, seed=s)`` on the current backend draws that same order for epoch e).

Random samplers without a ``generator`` draw a fresh seed from the global generator every epoch (so
``gpunn.manual_seed`` makes them reproducible); with a ``Generator`` they advance that one instead.

>>> loader = DataLoader(ds, batch_sampler=BatchSampler(RandomSampler(ds), 32, drop_last=True))
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from gpunn.data.dataset import TensorDataset, _check_lengths

__all__ = [
    "Generator",
    "Sampler",
    "SequentialSampler",
    "RandomSampler",
    "SubsetRandomSampler",
    "WeightedRandomSampler",
    "BatchSampler",
    "DistributedSampler",
]


class Generator:
    """A random-number generator object (``torch.Generator``): ``Generator().manual_seed(42)``. Samplers
    and ``random_split`` draw from it instead of the global generator. Only host (CPU) generation."""

    DEFAULT_SEED = 67280421310721  # a new generator's seed, fixed as in PyTorch (call seed() for a fresh one)

    def __init__(self, device="cpu") -> None:
        self.device = device
        self.manual_seed(self.DEFAULT_SEED)

    def manual_seed(self, seed) -> Generator:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"Generator.manual_seed: seed must be an int, got {type(seed).__name__}")
        self._initial_seed = int(seed) % (2**64)
        self._rng = np.random.Generator(np.random.PCG64(self._initial_seed))
        return self

    def initial_seed(self) -> int:
        return self._initial_seed

    def seed(self) -> int:
        """Re-seed from fresh entropy and return the new seed."""
        s = int(np.random.SeedSequence().entropy % (2**63))
        self.manual_seed(s)
        return s

    def get_state(self):
        return self._rng.bit_generator.state

    def set_state(self, state) -> Generator:
        self._rng.bit_generator.state = state
        return self

    def __repr__(self) -> str:
        return f"Generator(initial_seed={self._initial_seed})"


def _numpy_rng(generator) -> np.random.Generator:
    """A NumPy generator for one epoch's draws: ``generator``'s own (it advances), a ``numpy.random.Generator``
    as given, or (``None``) one seeded by a draw from the global generator (``gpunn.manual_seed``)."""
    if generator is None:
        from gpunn.backend import get_backend

        return np.random.default_rng(int(get_backend().randint(0, 2**31 - 1, (1,))[0]))
    if isinstance(generator, Generator):
        return generator._rng
    if isinstance(generator, np.random.Generator):
        return generator
    raise TypeError(f"generator must be a gpunn.Generator (or numpy.random.Generator), got {type(generator).__name__}")


def permutation(n: int, generator=None) -> np.ndarray:
    """A random permutation of ``range(n)`` (int64, host) drawn from ``generator`` (see ``_numpy_rng``)."""
    return _numpy_rng(generator).permutation(n).astype(np.int64)


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} should be a positive integer value, but got {name}={value}")
    return int(value)


class Sampler:
    """Base class: ``__iter__`` yields indices (or, for batch samplers, lists of indices)."""

    def __init__(self, data_source=None) -> None:
        pass

    def __iter__(self):
        raise NotImplementedError


class SequentialSampler(Sampler):
    """0, 1, ..., len(data_source) - 1."""

    def __init__(self, data_source) -> None:
        self.data_source = data_source

    def __iter__(self):
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler(Sampler):
    """A random order of the data set each epoch; with ``replacement`` (or ``num_samples``), ``num_samples``
    independent uniform draws instead (``num_samples`` without replacement repeats whole permutations)."""

    def __init__(self, data_source, replacement: bool = False, num_samples: int | None = None, generator=None) -> None:
        if not isinstance(replacement, bool):
            raise TypeError(f"replacement should be a boolean value, but got replacement={replacement}")
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = num_samples
        self.generator = generator
        if num_samples is not None:
            _positive_int(num_samples, "num_samples")

    @property
    def num_samples(self) -> int:
        return len(self.data_source) if self._num_samples is None else int(self._num_samples)

    def indices(self) -> np.ndarray:
        n, k = len(self.data_source), self.num_samples
        rng = _numpy_rng(self.generator)
        if self.replacement:
            return rng.integers(0, n, size=k, dtype=np.int64)
        reps = [rng.permutation(n) for _ in range(max(1, math.ceil(k / max(n, 1))))]
        return np.concatenate(reps)[:k].astype(np.int64)

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples


class SubsetRandomSampler(Sampler):
    """The given ``indices`` in a random order each epoch."""

    def __init__(self, indices, generator=None) -> None:
        self.indices = indices
        self.generator = generator

    def __iter__(self):
        order = _numpy_rng(self.generator).permutation(len(self.indices))
        return iter([self.indices[int(i)] for i in order])

    def __len__(self) -> int:
        return len(self.indices)


class WeightedRandomSampler(Sampler):
    """``num_samples`` indices in ``[0, len(weights))`` drawn with probability proportional to ``weights``
    (non-negative, not all zero), with or without replacement."""

    def __init__(self, weights, num_samples: int, replacement: bool = True, generator=None) -> None:
        num_samples = _positive_int(num_samples, "num_samples")
        if not isinstance(replacement, bool):
            raise ValueError(f"replacement should be a boolean value, but got replacement={replacement}")
        w = np.asarray(
            weights._backend.to_numpy(weights._data) if hasattr(weights, "_backend") else weights, dtype=np.float64
        )
        if w.ndim != 1:
            raise ValueError(f"weights should be a 1d sequence but given weights have shape {tuple(w.shape)}")
        if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError("WeightedRandomSampler: weights must be finite, non-negative and not all zero")
        if not replacement and num_samples > np.count_nonzero(w):
            raise RuntimeError(
                f"WeightedRandomSampler: cannot draw {num_samples} samples without replacement from "
                f"{np.count_nonzero(w)} non-zero weights"
            )
        self.weights = w
        self.num_samples = num_samples
        self.replacement = replacement
        self.generator = generator

    def __iter__(self):
        rng = _numpy_rng(self.generator)
        p = self.weights / self.weights.sum()
        idx = rng.choice(len(p), size=self.num_samples, replace=self.replacement, p=p)
        return iter(idx.astype(np.int64).tolist())

    def __len__(self) -> int:
        return self.num_samples


class BatchSampler(Sampler):
    """Lists of ``batch_size`` indices from ``sampler``; the last one shorter unless ``drop_last``."""

    def __init__(self, sampler, batch_size: int, drop_last: bool) -> None:
        _positive_int(batch_size, "batch_size")
        if not isinstance(drop_last, bool):
            raise ValueError(f"drop_last should be a boolean value, but got drop_last={drop_last}")
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.drop_last = drop_last

    def __iter__(self):
        batch = []
        for i in self.sampler:
            batch.append(i)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        return math.ceil(len(self.sampler) / self.batch_size)


def shuffle_order(seed: int, epoch: int, n: int, backend):
    """A permutation of ``range(n)`` made on ``backend``, a function of ``(seed, epoch)`` only (the
    shuffle of ``DataLoader`` and ``DistributedSampler``)."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint32)
    gen = backend._make_rng(int(state[0]))  # a 32-bit seed: every backend's generator takes it
    if hasattr(gen, "permutation"):
        return gen.permutation(n)
    # generators without permutation (CuPy's): sort random keys, on the device
    return backend.xp.argsort(gen.random(n))


def _dataset_length(dataset) -> int:
    if isinstance(dataset, TensorDataset):
        return len(dataset)
    if isinstance(dataset, (tuple, list)) and dataset and all(hasattr(a, "shape") for a in dataset):
        return _check_lengths(dataset, "DistributedSampler")  # (X, y) arrays, as DataLoader takes them
    if isinstance(dataset, numbers.Integral) and not isinstance(dataset, bool):
        return int(dataset)
    try:
        return len(dataset)
    except TypeError:
        raise TypeError(f"DistributedSampler: the data set needs a length, got {type(dataset).__name__}") from None


class DistributedSampler(Sampler):
    """The indices of rank ``rank``'s share of ``dataset`` (``len(sampler)`` of them per epoch).

    Args:
        dataset: ``(X, y)`` arrays, a ``TensorDataset``, or anything with ``len()``.
        num_replicas, rank: default to the process group's world size and this process's rank.
        shuffle: a new order every epoch, from ``(seed, epoch)``; call ``set_epoch(e)`` before each
            epoch (``fit`` does it), or every epoch repeats epoch 0's order.
        seed: the same on every rank.
        drop_last: drop the tail so every rank gets ``floor(n / num_replicas)`` samples, instead of
            repeating the first ones to reach ``ceil(n / num_replicas)`` each.
    >>> sampler = DistributedSampler((X, y), shuffle=True, seed=0)
    >>> loader = DataLoader((X, y), batch_size=32, sampler=sampler)
    """

    def __init__(
        self,
        dataset,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if num_replicas is None or rank is None:
            from gpunn import distributed as dist  # the process group, when one is needed

            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        for name, v in (("num_replicas", num_replicas), ("rank", rank), ("seed", seed)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise TypeError(f"DistributedSampler: {name} must be an int, got {v!r}")
        if num_replicas < 1:
            raise ValueError(f"DistributedSampler: num_replicas must be >= 1, got {num_replicas}")
        if rank >= num_replicas or rank < 0:
            raise ValueError(f"Invalid rank {rank}, rank should be in the interval [0, {num_replicas - 1}]")
        if seed < 0:
            raise ValueError(f"DistributedSampler: seed must be >= 0, got {seed}")
        self.dataset = dataset
        self.dataset_length = _dataset_length(dataset)
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.epoch = 0
        n, r = self.dataset_length, self.num_replicas
        if self.drop_last and n % r != 0:
            self.num_samples = math.ceil((n - r) / r)
        else:
            self.num_samples = math.ceil(n / r)
        self.total_size = self.num_samples * r

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order from the next iteration on (the same call on every rank)."""
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray:
        """This rank's indices for the current epoch, as an int64 NumPy array (the order is drawn on the
        current backend, as ``DataLoader(shuffle=True)`` draws it there)."""
        from gpunn.backend import get_backend

        n = self.dataset_length
        if self.shuffle:
            be = get_backend()
            order = np.asarray(be.to_numpy(shuffle_order(self.seed, self.epoch, n, be)), dtype=np.int64)
        else:
            order = np.arange(n, dtype=np.int64)
        if self.drop_last:
            order = order[: self.total_size]
        elif self.total_size > n:  # pad by repeating the start (as often as needed)
            order = np.resize(order, self.total_size)
        return order[self.rank : self.total_size : self.num_replicas]

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:
        return (
            f"DistributedSampler({self.dataset_length} samples, rank {self.rank} of {self.num_replicas}, "
            f"shuffle={self.shuffle}, seed={self.seed}, drop_last={self.drop_last}, epoch={self.epoch})"
        )
