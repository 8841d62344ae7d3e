import numpy as np
import pytest

import gpunn
from gpunn.data import DataLoader, TensorDataset
from gpunn.data.transforms import Compose, Normalize, RandomShift


def _data(n=10, d=3):
    X = np.arange(n * d, dtype=np.float32).reshape(n, d)
    y = np.arange(n, dtype=np.int64)  # y[i] == i: batches say which samples they hold
    return X, y


def _epoch(loader):
    xs, ys = [], []
    for xb, yb in loader:
        assert isinstance(xb, gpunn.Tensor) and isinstance(yb, gpunn.Tensor)
        xs.append(xb.numpy())
        ys.append(yb.numpy())
    return xs, ys


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("n, bs", [(10, 3), (10, 5), (10, 10), (7, 1), (10, 16)])
def test_every_sample_once_per_epoch(shuffle, n, bs):
    X, y = _data(n)
    loader = DataLoader((X, y), batch_size=bs, shuffle=shuffle, seed=0)
    assert len(loader) == -(-n // bs)
    for _ in range(2):
        xs, ys = _epoch(loader)
        assert len(xs) == len(loader)
        assert [len(b) for b in ys] == [bs] * (n // bs) + ([n % bs] if n % bs else [])
        seen = np.concatenate(ys)
        assert sorted(seen.tolist()) == list(range(n))
        np.testing.assert_array_equal(np.concatenate(xs), X[seen])  # X and y stay aligned
        if not shuffle:
            np.testing.assert_array_equal(seen, np.arange(n))


def test_drop_last():
    X, y = _data(10)
    loader = DataLoader((X, y), batch_size=3, drop_last=True, shuffle=True, seed=1)
    assert len(loader) == 3
    xs, ys = _epoch(loader)
    assert [len(b) for b in ys] == [3, 3, 3]
    assert len(set(np.concatenate(ys).tolist())) == 9
    exact = DataLoader((X, y), batch_size=5, drop_last=True)
    assert len(exact) == 2 and [len(b) for b in _epoch(exact)[1]] == [5, 5]


def test_batch_dtypes():
    X = np.arange(12, dtype=np.uint8).reshape(4, 3)
    y = np.array([0, 1, 1, 0], dtype=np.int32)
    xb, yb = next(iter(DataLoader((X, y), batch_size=4)))
    assert xb.dtype == np.float32 and yb.dtype == np.int64
    X64 = X.astype(np.float64)
    xb, _ = next(iter(DataLoader((X64, y), batch_size=4)))
    assert xb.dtype == np.float64  # float inputs keep their precision


def test_shuffle_changes_order_across_epochs_and_is_reproducible():
    X, y = _data(50)
    loader = DataLoader((X, y), batch_size=8, shuffle=True, seed=123)
    e0 = np.concatenate(_epoch(loader)[1])
    e1 = np.concatenate(_epoch(loader)[1])
    assert not np.array_equal(e0, e1)
    assert not np.array_equal(e0, np.arange(50))
    again = DataLoader((X, y), batch_size=8, shuffle=True, seed=123)
    np.testing.assert_array_equal(np.concatenate(_epoch(again)[1]), e0)
    np.testing.assert_array_equal(np.concatenate(_epoch(again)[1]), e1)
    other = DataLoader((X, y), batch_size=8, shuffle=True, seed=124)
    assert not np.array_equal(np.concatenate(_epoch(other)[1]), e0)
    # resuming at epoch 1 gives epoch 1's order
    resumed = DataLoader((X, y), batch_size=8, shuffle=True, seed=123)
    resumed.set_epoch(1)
    np.testing.assert_array_equal(np.concatenate(_epoch(resumed)[1]), e1)


def test_seed_none_follows_manual_seed():
    X, y = _data(40)
    gpunn.manual_seed(5)
    a = np.concatenate(_epoch(DataLoader((X, y), batch_size=8, shuffle=True))[1])
    gpunn.manual_seed(5)
    b = np.concatenate(_epoch(DataLoader((X, y), batch_size=8, shuffle=True))[1])
    gpunn.manual_seed(6)
    c = np.concatenate(_epoch(DataLoader((X, y), batch_size=8, shuffle=True))[1])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_data_held_once_and_batches_are_views():
    X, y = _data(20)
    loader = DataLoader((X, y), batch_size=6, backend="numpy")
    held_X, held_y = loader.dataset_arrays
    assert held_X is X and held_y is y  # right dtype already: no copy at all
    assert loader.num_samples == 20
    for xb, yb in loader:
        assert np.shares_memory(xb.data, held_X) and np.shares_memory(yb.data, held_y)
    # shuffled batches are gathered from the held array (values equal to its rows)
    shuffled = DataLoader((X, y), batch_size=6, shuffle=True, seed=0)
    assert shuffled.dataset_arrays[0] is X
    for xb, yb in shuffled:
        np.testing.assert_array_equal(xb.data, shuffled.dataset_arrays[0][yb.data])


def test_converted_once_at_creation():
    X = np.arange(12, dtype=np.int64).reshape(6, 2)
    y = np.arange(6, dtype=np.int64)
    loader = DataLoader((X, y), batch_size=2)
    held = loader.dataset_arrays[0]
    assert held.dtype == np.float32 and not np.shares_memory(held, X)
    for xb, _ in loader:
        assert np.shares_memory(xb.data, held)


def test_tensor_dataset_and_tensor_inputs():
    X, y = _data(9)
    ds = TensorDataset(gpunn.from_numpy(X), y)
    assert len(ds) == 9
    xi, yi = ds[4]
    np.testing.assert_array_equal(xi.numpy(), X[4])
    assert yi == 4
    loader = DataLoader(ds, batch_size=4)
    assert len(loader) == 3
    assert sorted(np.concatenate(_epoch(loader)[1]).tolist()) == list(range(9))
    with pytest.raises(ValueError, match=r"len\(X\)=9, len\(y\)=8"):
        TensorDataset(X, y[:8])
    with pytest.raises(TypeError, match="separate arguments"):
        TensorDataset((X, y))


def test_transform_applied_per_batch_and_augment_switch():
    X = np.random.default_rng(0).random((12, 16)).astype(np.float32) + 0.5
    y = np.arange(12)
    norm_only = Compose([RandomShift(1, image_shape=(4, 4)), Normalize(0.5, 2.0)])
    train = DataLoader((X, y), batch_size=4, shuffle=True, seed=0, transform=norm_only)
    test = DataLoader((X, y), batch_size=4, transform=norm_only)
    assert train.augment and not test.augment  # default follows shuffle
    for xb, yb in test:
        np.testing.assert_allclose(xb.numpy(), (X[yb.numpy()] - 0.5) / 2.0, rtol=1e-6)
    moved = 0
    for xb, yb in train:
        assert xb.shape == (4, 16)
        moved += not np.allclose(xb.numpy(), (X[yb.numpy()] - 0.5) / 2.0)
    assert moved > 0
    train.augment = False
    for xb, yb in train:
        np.testing.assert_allclose(xb.numpy(), (X[yb.numpy()] - 0.5) / 2.0, rtol=1e-6)
    np.testing.assert_array_equal(X, train.dataset_arrays[0])  # held data never modified
    # a plain callable always runs
    plain = DataLoader((X, y), batch_size=12, transform=lambda a: a * 0)
    assert next(iter(plain))[0].numpy().max() == 0


@pytest.mark.parametrize("bs", [0, -1, 2.5, True, "4"])
def test_bad_batch_size(bs):
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        DataLoader(_data(), batch_size=bs)


def test_bad_inputs():
    X, y = _data(10)
    with pytest.raises(ValueError, match=r"len\(X\)=10, len\(y\)=7"):
        DataLoader((X, y[:7]), batch_size=2)
    with pytest.raises(ValueError, match="empty"):
        DataLoader((X[:0], y[:0]), batch_size=2)
    with pytest.raises(ValueError, match="larger than the 10 samples and drop_last=True"):
        DataLoader((X, y), batch_size=11, drop_last=True)
    with pytest.raises(TypeError, match="tuple of arrays"):
        DataLoader(3, batch_size=2)
    with pytest.raises(TypeError, match="callable"):
        DataLoader((X, y), transform=3)


def test_none_inside_an_object_array_is_refused_not_made_nan():
    X = np.array([[0.5, 1.0], [None, 2.0], [3.0, 4.0]], dtype=object)
    y = np.array([0, 1, 0])
    with pytest.raises(ValueError, match=r"holds None at index \(1, 0\)"):
        TensorDataset(X, y)
    with pytest.raises(ValueError, match=r"DataLoader: array 0 holds None"):
        DataLoader((X, y), batch_size=2)
    labels = np.array([0, None, 1], dtype=object)
    with pytest.raises(ValueError, match=r"array 1 holds None at index \(1,\)"):
        DataLoader((np.ones((3, 2)), labels), batch_size=2)
    with pytest.raises(TypeError, match="must be numeric"):
        DataLoader((np.array([["1.5", "2"], ["3", "4"]]), np.array([0, 1])), batch_size=2)


def test_numeric_object_arrays_still_work():
    X = np.array([[0.5, 1.0], [2.0, 3.0]], dtype=object)
    y = np.array([0, 1], dtype=object)
    ((xb, yb),) = list(DataLoader((X, y), batch_size=2))
    assert xb.dtype == np.float64 and yb.dtype == np.int64  # as NumPy infers them
    assert np.array_equal(xb.numpy(), [[0.5, 1.0], [2.0, 3.0]]) and yb.numpy().tolist() == [0, 1]
