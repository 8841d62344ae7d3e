"""torchvision's ``datasets.MNIST`` and ``datasets.FashionMNIST``: same signature, same folder layout.

The four IDX files live in ``root/MNIST/raw/`` (``root/FashionMNIST/raw/``), gzipped or not:
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``. ``download=True`` fetches the missing ones from ``mirrors`` (a class attribute,
tried in order) with the published MD5 of each; files already there are used as they are.

An item is ``(image, target)`` with ``target`` an int. The image is what the ``transform`` makes of the
raw image; without a transform the raw image is a PIL image (mode ``L``) when Pillow is installed, as
in torchvision, else a uint8 ``(28, 28)`` Tensor (which ``ToTensor`` also takes). ``data`` (uint8
``(N, 28, 28)``) and ``targets`` (int64 ``(N,)``) are CPU Tensors.

A ``DataLoader`` batches these data sets by slicing (no per-item Python work) when the transform is
made of ``gpunn.vision.transforms`` that work on batches (everything but ``Lambda``) and there is no
``target_transform``; otherwise item by item, as PyTorch does.

>>> train = MNIST("../data", train=True, download=True,
...               transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]))
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gpunn.data.dataset import Dataset
from gpunn.data.datasets import MNIST_FILES, _load_pair
from gpunn.tensor import Tensor
from gpunn.vision.download import fetch_all

__all__ = ["MNIST", "FashionMNIST"]


class MNIST(Dataset):
    """MNIST: 60,000 training and 10,000 test images of handwritten digits, 28x28 uint8, labels 0-9.

    Args: ``root`` (the folder holding ``MNIST/raw``), ``train`` (the training or the test file pair),
    ``transform`` (on the image), ``target_transform`` (on the label), ``download`` (fetch missing files).
    """

    mirrors = [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://yann.lecun.com/exdb/mnist/",
    ]
    resources = [
        ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    ]
    classes = [
        "0 - zero",
        "1 - one",
        "2 - two",
        "3 - three",
        "4 - four",
        "5 - five",
        "6 - six",
        "7 - seven",
        "8 - eight",
        "9 - nine",
    ]
    timeout = 30.0  # seconds without data before a mirror counts as dead

    def __init__(self, root, train: bool = True, transform=None, target_transform=None, download: bool = False) -> None:
        if isinstance(root, (str, bytes, os.PathLike)):
            root = os.path.expanduser(os.fspath(root))
        self.root = root
        self.train = bool(train)
        self.transform = transform
        self.target_transform = target_transform
        if download:
            self.download()
        if not self._check_exists():
            raise RuntimeError(
                f"Dataset not found. You can use download=True to download it (expected the files "
                f"{', '.join(self._stems())}, gzipped or not, in {self.raw_folder!r})"
            )
        images_stem, labels_stem = self._stems()[:2] if self.train else self._stems()[2:]
        images, labels = _load_pair(Path(self.raw_folder), images_stem, labels_stem)
        self._images = np.ascontiguousarray(images, dtype=np.uint8)
        self._labels = labels.astype(np.int64)

    @property
    def raw_folder(self) -> str:
        return os.path.join(self.root, type(self).__name__, "raw")

    @property
    def processed_folder(self) -> str:
        return os.path.join(self.root, type(self).__name__, "processed")

    @property
    def class_to_idx(self) -> dict:
        return {c: i for i, c in enumerate(self.classes)}

    @property
    def data(self) -> Tensor:
        from gpunn.backend import backend_for

        return Tensor._wrap(self._images, backend_for("numpy"))

    @property
    def targets(self) -> Tensor:
        from gpunn.backend import backend_for

        return Tensor._wrap(self._labels, backend_for("numpy"))

    def _stems(self) -> list[str]:
        return [MNIST_FILES[k] for k in ("train_images", "train_labels", "test_images", "test_labels")]

    def _check_exists(self) -> bool:
        folder = Path(self.raw_folder)
        return all((folder / s).is_file() or (folder / (s + ".gz")).is_file() for s in self._stems())

    def download(self) -> None:
        """Fetch the files that are missing (none when all four are there); see ``gpunn.vision.download``."""
        if self._check_exists():
            return
        folder = Path(self.raw_folder)
        missing = [
            (name, md5)
            for name, md5 in self.resources
            if not (folder / name).is_file() and not (folder / name[: -len(".gz")]).is_file()
        ]
        fetch_all(folder, list(self.mirrors), missing, timeout=self.timeout, what=type(self).__name__)

    def __len__(self) -> int:
        return len(self._images)

    def _raw_image(self, index):
        try:
            from PIL import Image
        except ImportError:
            from gpunn.backend import backend_for

            return Tensor._wrap(self._images[index], backend_for("numpy"))
        return Image.fromarray(self._images[index])  # uint8 (H, W): mode "L"

    def __getitem__(self, index):
        img, target = self._raw_image(index), int(self._labels[index])
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    def _batch_source(self):
        """``((images (N, 1, H, W) uint8, labels), batch transform)`` for the loader's slicing path, or None
        when the transforms are not all batch transforms (then the loader goes item by item)."""
        t = self.transform
        if t is None or self.target_transform is not None or not getattr(t, "batchable", False):
            return None
        from gpunn.vision.transforms import ToTensor

        steps = getattr(t, "transforms", [t])
        if not any(isinstance(s, ToTensor) for s in steps):
            return None  # without ToTensor items are PIL images, which do not batch
        return (self._images[:, None], self._labels), t.batch

    def __repr__(self) -> str:
        lines = [
            f"Dataset {type(self).__name__}",
            f"    Number of datapoints: {len(self)}",
            f"    Root location: {self.root}",
            f"    Split: {'Train' if self.train else 'Test'}",
        ]
        if self.transform is not None:
            lines.append(f"    Transform: {self.transform!r}")
        if self.target_transform is not None:
            lines.append(f"    Target transform: {self.target_transform!r}")
        return "\n".join(lines)


class FashionMNIST(MNIST):
    """Fashion-MNIST: Zalando's 28x28 images of clothes, the same layout as MNIST, in ``root/FashionMNIST/raw``."""

    mirrors = ["https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"]
    resources = [
        ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
    ]
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
