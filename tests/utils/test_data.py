"""gpunn.utils.data against torch.utils.data: the same batches, lengths, splits and argument errors."""

import collections

import numpy as np
import pytest

import gpunn
from gpunn.utils import data as gdata

torch = pytest.importorskip("torch")
tdata = torch.utils.data


def _np(x):
    if isinstance(x, gpunn.Tensor):
        return x.numpy()
    if isinstance(x, torch.Tensor):
        return x.numpy()
    return x


def _same(a, b):
    """Batches built by gpunn and by PyTorch agree: same container types, dtypes and values."""
    if isinstance(b, torch.Tensor):
        assert isinstance(a, gpunn.Tensor), type(a)
        assert str(a.dtype).split(".")[-1] == str(b.dtype).split(".")[-1], (a.dtype, b.dtype)
        np.testing.assert_array_equal(_np(a), _np(b))
    elif isinstance(b, dict):
        assert isinstance(a, dict) and a.keys() == b.keys()
        for k in b:
            _same(a[k], b[k])
    elif isinstance(b, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), (type(a), type(b))
        for x, y in zip(a, b):
            _same(x, y)
    else:
        assert a == b


Point = collections.namedtuple("Point", "x label")


class Items:
    """A plain map-style data set whose samples are a mix of containers and scalar kinds."""

    def __init__(self, lib, n=11):
        self.lib, self.n = lib, n
        self.rng = np.random.default_rng(0)
        self.X = self.rng.standard_normal((n, 3, 2)).astype(np.float32)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i >= self.n:
            raise IndexError(i)
        x = self.lib.from_numpy(self.X[i].copy()) if self.lib is torch else gpunn.tensor(self.X[i])
        return {
            "x": x,
            "arr": np.arange(4) * i,
            "f": 0.5 * i,
            "i": i,
            "b": i % 2 == 0,
            "name": f"s{i}",
            "pair": (i, float(i)),
            "pt": Point(np.float32(i), i),
            "np64": np.int64(i),
        }


@pytest.mark.parametrize("batch_size,drop_last", [(4, False), (4, True), (1, False), (11, False)])
def test_default_collate_and_len_match_pytorch(batch_size, drop_last):
    ours = gdata.DataLoader(Items(gpunn), batch_size=batch_size, drop_last=drop_last)
    theirs = tdata.DataLoader(Items(torch), batch_size=batch_size, drop_last=drop_last)
    assert len(ours) == len(theirs)
    got, want = list(ours), list(theirs)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        _same(a, b)


def test_batch_size_none_converts_samples_like_pytorch():
    ours = list(gdata.DataLoader(Items(gpunn, 3), batch_size=None))
    theirs = list(tdata.DataLoader(Items(torch, 3), batch_size=None))
    for a, b in zip(ours, theirs):
        _same(a, b)


def test_tensor_dataset_batches_match_pytorch_and_keep_dtypes():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((23, 5)).astype(np.float64)
    y = rng.integers(0, 7, 23).astype(np.int32)
    ours = gdata.DataLoader(gdata.TensorDataset(gpunn.tensor(X), gpunn.tensor(y)), batch_size=6)
    theirs = tdata.DataLoader(tdata.TensorDataset(torch.from_numpy(X), torch.from_numpy(y)), batch_size=6)
    assert len(ours) == len(theirs) == 4 and len(ours.dataset) == 23
    for a, b in zip(ours, theirs):
        _same(a, b)


def test_fast_and_item_paths_give_the_same_batches():
    rng = np.random.default_rng(2)
    ds = gdata.TensorDataset(
        gpunn.tensor(rng.standard_normal((17, 3)).astype(np.float32)), gpunn.tensor(rng.integers(0, 3, 17))
    )
    fast = gdata.DataLoader(ds, batch_size=5, sampler=gdata.SequentialSampler(ds))
    items = gdata.DataLoader(ds, batch_size=5, collate_fn=gdata.default_collate)  # forces the item path
    assert fast._fast and not items._fast
    for a, b in zip(fast, items):
        np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
        np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())


@pytest.mark.parametrize("fast", [True, False])
def test_shuffle_is_a_permutation_each_epoch_and_seeded(fast):
    X = np.arange(40, dtype=np.float32)[:, None]
    ds = gdata.TensorDataset(gpunn.tensor(X), gpunn.tensor(np.arange(40)))
    kw = {} if fast else {"collate_fn": gdata.default_collate}
    gpunn.manual_seed(3)
    loader = gdata.DataLoader(ds, batch_size=8, shuffle=True, **kw)
    e1 = np.concatenate([yb.numpy() for _, yb in loader])
    e2 = np.concatenate([yb.numpy() for _, yb in loader])
    assert sorted(e1.tolist()) == list(range(40)) == sorted(e2.tolist())
    assert not np.array_equal(e1, e2) and not np.array_equal(e1, np.arange(40))
    gpunn.manual_seed(3)
    again = gdata.DataLoader(ds, batch_size=8, shuffle=True, **kw)
    np.testing.assert_array_equal(np.concatenate([yb.numpy() for _, yb in again]), e1)
    g1 = gdata.DataLoader(ds, batch_size=8, shuffle=True, generator=gpunn.Generator().manual_seed(5), **kw)
    g2 = gdata.DataLoader(ds, batch_size=8, shuffle=True, generator=gpunn.Generator().manual_seed(5), **kw)
    np.testing.assert_array_equal(
        np.concatenate([b[1].numpy() for b in g1]), np.concatenate([b[1].numpy() for b in g2])
    )


def test_batch_sampler_and_custom_collate():
    ds = list(range(10))
    bs = gdata.BatchSampler(gdata.SequentialSampler(ds), 3, drop_last=False)
    assert list(bs) == list(tdata.BatchSampler(tdata.SequentialSampler(ds), 3, drop_last=False))
    assert len(bs) == 4 and len(gdata.BatchSampler(range(10), 3, drop_last=True)) == 3
    loader = gdata.DataLoader(ds, batch_sampler=bs, collate_fn=lambda b: sum(b))
    assert list(loader) == [3, 12, 21, 9] and len(loader) == 4


def test_samplers():
    gen = gpunn.Generator().manual_seed(0)
    r = list(gdata.RandomSampler(range(9), generator=gen))
    assert sorted(r) == list(range(9))
    rr = list(gdata.RandomSampler(range(4), replacement=True, num_samples=50, generator=gen))
    assert len(rr) == 50 and set(rr) <= set(range(4))
    assert len(list(gdata.RandomSampler(range(4), num_samples=10, generator=gen))) == 10
    sub = list(gdata.SubsetRandomSampler([7, 3, 5], generator=gen))
    assert sorted(sub) == [3, 5, 7]
    w = gdata.WeightedRandomSampler([0.0, 1.0, 0.0, 3.0], num_samples=400, generator=gen)
    draws = np.array(list(w))
    assert set(draws.tolist()) <= {1, 3} and 0.65 < np.mean(draws == 3) < 0.85
    assert sorted(gdata.WeightedRandomSampler([1, 1, 1], 3, replacement=False, generator=gen)) == [0, 1, 2]
    with pytest.raises(ValueError, match="num_samples should be a positive integer"):
        gdata.WeightedRandomSampler([1.0], 0)
    with pytest.raises(ValueError, match="non-negative"):
        gdata.WeightedRandomSampler([1.0, -1.0], 3)
    with pytest.raises(RuntimeError, match="without replacement"):
        gdata.WeightedRandomSampler([1.0, 0.0], 2, replacement=False)
    # a weighted sampler drives the fast path too
    ds = gdata.TensorDataset(gpunn.tensor(np.arange(4.0)[:, None]))
    got = np.concatenate([b[0].numpy().ravel() for b in gdata.DataLoader(ds, batch_size=7, sampler=w)])
    assert set(got.tolist()) <= {1.0, 3.0} and len(got) == 400


def test_subset_concat_random_split():
    base = gdata.TensorDataset(gpunn.tensor(np.arange(10.0)))
    sub = gdata.Subset(base, [9, 0, 4])
    assert len(sub) == 3 and float(sub[0][0]) == 9.0
    cat = gdata.ConcatDataset([sub, base])
    assert len(cat) == 13 and float(cat[3][0]) == 0.0 and float(cat[-1][0]) == 9.0
    assert len(sub + base) == 13
    with pytest.raises(IndexError):
        cat[13]
    parts = gdata.random_split(range(10), [0.5, 0.3, 0.2], generator=gpunn.Generator().manual_seed(1))
    assert [len(p) for p in parts] == [5, 3, 2]
    assert sorted(i for p in parts for i in p) == list(range(10))
    # PyTorch's remainder rule: floor each fraction, then hand the rest out round-robin
    ours = [len(p) for p in gdata.random_split(range(11), [0.34, 0.33, 0.33])]
    theirs = [len(p) for p in tdata.random_split(range(11), [0.34, 0.33, 0.33])]
    assert ours == theirs
    assert [len(p) for p in gdata.random_split(range(7), [3, 4])] == [3, 4]
    with pytest.raises(ValueError, match="Sum of input lengths"):
        gdata.random_split(range(7), [3, 3])
    loader = gdata.DataLoader(cat, batch_size=5)
    assert len(loader) == 3 and [b[0].shape[0] for b in loader] == [5, 5, 3]


class Stream(gdata.IterableDataset):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return iter(np.arange(self.n, dtype=np.int64))


def test_iterable_dataset():
    got = [b.numpy().tolist() for b in gdata.DataLoader(Stream(7), batch_size=3)]
    want = [b.numpy().tolist() for b in tdata.DataLoader(_TorchStream(7), batch_size=3)]
    assert got == want == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(ValueError, match="expected unspecified shuffle option"):
        gdata.DataLoader(Stream(3), shuffle=True)
    with pytest.raises(TypeError):
        len(gdata.DataLoader(Stream(3)))


class _TorchStream(tdata.IterableDataset):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return iter(np.arange(self.n, dtype=np.int64))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(batch_sampler=[[0]], batch_size=2), "batch_sampler option is mutually exclusive"),
        (dict(batch_sampler=[[0]], shuffle=True), "batch_sampler option is mutually exclusive"),
        (dict(sampler=[0, 1], shuffle=True), "sampler option is mutually exclusive with shuffle"),
        (dict(batch_size=None, drop_last=True), "batch_size=None option disables auto-batching"),
        (dict(num_workers=-1), "num_workers option should be non-negative"),
        (dict(prefetch_factor=2), "prefetch_factor option could only be specified"),
        (dict(persistent_workers=True), "persistent_workers option needs num_workers > 0"),
        (dict(timeout=-1), "timeout option should be non-negative"),
        (dict(batch_size=0), "batch_size should be a positive integer value, but got batch_size=0"),
    ],
)
def test_argument_errors_match_pytorch(kwargs, message):
    ds = Items(gpunn, 4)
    with pytest.raises(ValueError, match=message):
        gdata.DataLoader(ds, **kwargs)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tdata.DataLoader(Items(torch, 4), **kwargs)


def test_worker_options_are_accepted():
    loader = gdata.DataLoader(
        Items(gpunn, 5), batch_size=2, num_workers=2, pin_memory=True, persistent_workers=True, prefetch_factor=2
    )
    assert len(list(loader)) == 3 and loader.num_workers == 2


def test_collate_errors():
    with pytest.raises(TypeError, match="default_collate: batch must contain"):
        gdata.default_collate([object(), object()])
    with pytest.raises(RuntimeError, match="equal size"):
        gdata.default_collate([[1, 2], [1]])
    with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
        gdata.default_collate([np.zeros(2), np.zeros(3)])


def test_pytorch_import_paths():
    import gpunn.utils.data.distributed as dist_mod

    assert gpunn.utils.data.DataLoader is gpunn.data.DataLoader
    assert dist_mod.DistributedSampler is gpunn.data.DistributedSampler
    s = dist_mod.DistributedSampler(range(10), num_replicas=2, rank=1, shuffle=False)
    assert list(s) == [1, 3, 5, 7, 9] and isinstance(s, gdata.Sampler)


def test_random_split_subsets_take_the_fast_path_with_the_same_batches():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((30, 4)).astype(np.float32)
    y = rng.integers(0, 5, 30)
    train, val = gdata.random_split(
        gdata.TensorDataset(gpunn.tensor(X), gpunn.tensor(y)), [0.7, 0.3], generator=gpunn.Generator().manual_seed(0)
    )
    fast = gdata.DataLoader(val, batch_size=4)
    items = gdata.DataLoader(val, batch_size=4, collate_fn=gdata.default_collate)
    assert fast._fast and len(fast) == len(items) == 3 and len(fast.dataset) == 9
    for (xa, ya), (xb, yb) in zip(fast, items):
        np.testing.assert_array_equal(xa.numpy(), xb.numpy())
        np.testing.assert_array_equal(ya.numpy(), yb.numpy())
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in fast]), y[val.indices])
    with pytest.raises(IndexError):
        gdata.DataLoader(gdata.Subset(gdata.TensorDataset(gpunn.tensor(X)), [0, 99]), batch_size=2)


def test_generator_is_deterministic_like_pytorchs():
    assert gpunn.Generator().initial_seed() == torch.Generator().initial_seed()
    a = gdata.random_split(range(20), [10, 10], generator=gpunn.Generator())
    b = gdata.random_split(range(20), [10, 10], generator=gpunn.Generator())
    assert list(a[0]) == list(b[0])
    g = gpunn.Generator()
    assert g.manual_seed(3) is g and g.initial_seed() == 3
    state = g.get_state()
    first = list(gdata.RandomSampler(range(8), generator=g))
    g.set_state(state)
    assert list(gdata.RandomSampler(range(8), generator=g)) == first
    with pytest.raises(TypeError, match="seed must be an int"):
        g.manual_seed(1.5)
    with pytest.raises(TypeError, match="generator must be a gpunn.Generator"):
        list(gdata.RandomSampler(range(3), generator=torch.Generator()))


def test_a_generator_keeps_augmentation_on():
    from gpunn.data import transforms as batch_transforms

    X = np.arange(32, dtype=np.float32).reshape(2, 16)
    loader = gdata.DataLoader(
        (X, np.arange(2)),
        batch_size=2,
        shuffle=True,
        generator=gpunn.Generator(),
        transform=batch_transforms.GaussianNoise(1.0),
    )
    assert loader.augment
    xb, _ = next(iter(loader))
    assert not np.array_equal(np.sort(xb.numpy().ravel()), X.ravel())  # noise was added
