"""DistributedSampler: PyTorch's sharding (padding, drop_last, strided ranks), our seed+epoch shuffle, and
DataLoader(sampler=) gathering a rank's shard on the backend."""

import numpy as np
import pytest

from gpunn.backend import get_backend
from gpunn.data import DataLoader, DistributedSampler, TensorDataset
from gpunn.data.loader import shuffle_order


@pytest.mark.torch
@pytest.mark.parametrize("n, replicas", [(10, 3), (9, 3), (2, 5), (17, 4), (1, 1)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_unshuffled_shards_equal_pytorchs(n, replicas, drop_last):
    torch = pytest.importorskip("torch")
    from torch.utils.data.distributed import DistributedSampler as TorchSampler

    for rank in range(replicas):
        ours = DistributedSampler(n, num_replicas=replicas, rank=rank, shuffle=False, drop_last=drop_last)
        theirs = TorchSampler(list(range(n)), num_replicas=replicas, rank=rank, shuffle=False, drop_last=drop_last)
        assert list(ours) == list(theirs) and len(ours) == len(theirs)
    del torch


@pytest.mark.parametrize("n, replicas", [(103, 4), (100, 4), (7, 2)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_shuffled_shards_partition_one_seeded_order(n, replicas, drop_last):
    shards = []
    for rank in range(replicas):
        s = DistributedSampler(
            np.zeros((n, 2)), num_replicas=replicas, rank=rank, shuffle=True, seed=5, drop_last=drop_last
        )
        s.set_epoch(3)
        shards.append(np.array(list(s)))
        assert len(shards[-1]) == len(s)
    order = get_backend().to_numpy(shuffle_order(5, 3, n, get_backend()))
    total = len(shards[0]) * replicas
    expected = np.resize(order, total) if not drop_last else order[:total]
    interleaved = np.stack(shards, axis=1).reshape(-1)  # rank r holds positions r, r+N, ...
    assert np.array_equal(interleaved, expected)
    assert set(interleaved) == set(range(n)) or drop_last


def test_epochs_reshuffle_and_repeat_by_seed():
    a = DistributedSampler(50, num_replicas=2, rank=0, seed=1)
    e0 = list(a)
    assert list(a) == e0  # no set_epoch: the same order again, as PyTorch
    a.set_epoch(1)
    assert list(a) != e0
    b = DistributedSampler(50, num_replicas=2, rank=0, seed=1)
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(DistributedSampler(50, num_replicas=2, rank=0, seed=2)) != e0


def test_sampler_errors():
    with pytest.raises(ValueError, match="Invalid rank 2"):
        DistributedSampler(10, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="num_replicas must be >= 1"):
        DistributedSampler(10, num_replicas=0, rank=0)
    with pytest.raises(ValueError, match="process group has not been initialized"):
        DistributedSampler(10)  # no world size without a process group, as in PyTorch
    with pytest.raises(TypeError, match="needs a length"):
        DistributedSampler(object(), num_replicas=1, rank=0)
    with pytest.raises(ValueError, match="different lengths"):
        DistributedSampler((np.zeros((3, 2)), np.zeros(4)), num_replicas=1, rank=0)


def test_loader_with_sampler_yields_the_shard_in_order(rng):
    X = rng.standard_normal((23, 3)).astype(np.float32)
    y = rng.integers(0, 4, 23)
    s = DistributedSampler(TensorDataset(X, y), num_replicas=3, rank=1, shuffle=True, seed=0)
    loader = DataLoader((X, y), batch_size=3, sampler=s)
    assert len(loader) == 3 and len(s) == 8
    idx = np.array(list(s))
    xs = np.concatenate([xb.numpy() for xb, _ in loader])
    ys = np.concatenate([yb.numpy() for _, yb in loader])
    assert np.array_equal(xs, X[idx]) and np.array_equal(ys, y[idx])
    assert loader.augment  # a shuffling sampler makes a training loader
    assert len(DataLoader((X, y), batch_size=3, sampler=s, drop_last=True)) == 2


def test_global_batches_of_n_ranks_are_the_single_process_batches(rng):
    # the property the data-parallel equivalence rests on: rank r's k-th batch of B/N samples, over r,
    # is the k-th batch of B samples of DataLoader(shuffle=True) with the same seed and epoch
    X = np.arange(40, dtype=np.float32).reshape(40, 1)
    single = [xb.numpy().ravel() for (xb,) in DataLoader((X,), batch_size=8, shuffle=True, seed=4)]
    per_rank = []
    for rank in range(4):
        s = DistributedSampler((X,), num_replicas=4, rank=rank, seed=4)
        per_rank.append([xb.numpy().ravel() for (xb,) in DataLoader((X,), batch_size=2, sampler=s)])
    for k, batch in enumerate(single):
        assert sorted(np.concatenate([per_rank[r][k] for r in range(4)])) == sorted(batch)


def test_loader_sampler_errors():
    X = np.zeros((5, 2), np.float32)
    with pytest.raises(ValueError, match="mutually exclusive with shuffle"):
        DataLoader((X,), batch_size=2, shuffle=True, sampler=[0, 1])
    with pytest.raises(TypeError, match="sampler must be iterable"):
        DataLoader((X,), batch_size=2, sampler=3)
    with pytest.raises(IndexError, match="index 7 for a data set of 5"):
        list(DataLoader((X,), batch_size=2, sampler=[0, 7]))
