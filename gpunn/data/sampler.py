"""``DistributedSampler``: each rank's share of a data set, for ``DataLoader(..., sampler=)``.

PyTorch's semantics: every epoch all ranks draw the same order (shuffled by ``seed`` and the epoch set
with ``set_epoch``), pad it by repeating its start to a multiple of the world size (or, with
``drop_last``, cut the tail), and rank r takes positions r, r+N, r+2N, ... So with a per-rank batch of
B/N, the k-th batches of the N ranks together are exactly positions [kB, (k+1)B) of the order: the
global batches one process with batch B and the same order would see (``DataLoader(shuffle=True,
seed=s)`` on the current backend draws that same order for epoch e).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from gpunn.data.loader import TensorDataset, _check_lengths, shuffle_order

__all__ = ["DistributedSampler"]


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


class DistributedSampler:
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

    def __init__(self, dataset, num_replicas: int | None = None, rank: int | None = None, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False) -> None:
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
        return (f"DistributedSampler({self.dataset_length} samples, rank {self.rank} of {self.num_replicas}, "
                f"shuffle={self.shuffle}, seed={self.seed}, drop_last={self.drop_last}, epoch={self.epoch})")
