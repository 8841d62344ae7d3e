"""The DataLoader's two paths over an MNIST-shaped ``gpunn.vision.datasets.MNIST`` with
``Compose([ToTensor(), Normalize((0.1307,), (0.3081,))])``, one epoch at batch 200:

    slicing   the fast path: the uint8 images are held on the backend, each batch is a slice (a gather when
              shuffled) and the transform runs once on the whole batch
    items     the same data set item by item (``collate_fn=default_collate`` forces it): __getitem__,
              a PIL image or a uint8 Tensor per sample, the transform per sample, then a stack
    torch     PyTorch's DataLoader over a ``TensorDataset`` of the already-normalized float32 images (its
              usual item path without the per-item transform, so a lower bound on torchvision's cost)

Every path's first batch is checked against a float64 NumPy normalization of the same images first.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.conftest import GPUNN_IMPL, PEER_IMPL, sync_gpunn, sync_torch, torch
from gpunn.data import write_idx
from gpunn.utils.data import DataLoader, default_collate
from gpunn.vision import datasets, transforms

SAMPLES = 10_000
BATCH = 200
MEAN, STD = 0.1307, 0.3081


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    """An MNIST folder of SAMPLES images: the 5,000-digit sample repeated (random digits without it)."""
    try:
        from gpunn.data import load_mnist_sample

        ds = load_mnist_sample(flatten=False, seed=0)
        X = np.round(np.concatenate([ds.X_train, ds.X_test])[:, 0] * 255).astype(np.uint8)
        y = np.concatenate([ds.y_train, ds.y_test])
    except ImportError:
        rng = np.random.default_rng(0)
        X, y = rng.integers(0, 256, (5000, 28, 28)).astype(np.uint8), rng.integers(0, 10, 5000)
    reps = -(-SAMPLES // len(X))
    X, y = np.tile(X, (reps, 1, 1))[:SAMPLES], np.tile(y, reps)[:SAMPLES]
    root = tmp_path_factory.mktemp("mnist")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, a in (
        ("train-images-idx3-ubyte", X),
        ("train-labels-idx1-ubyte", y),
        ("t10k-images-idx3-ubyte", X[:10]),
        ("t10k-labels-idx1-ubyte", y[:10]),
    ):
        write_idx(raw / name, a)
    return root, X, y


def _first_batch_error(xb, X) -> float:
    ref = (X[:BATCH, None].astype(np.float64) / 255.0 - MEAN) / STD
    got = np.asarray(xb.numpy() if hasattr(xb, "numpy") else xb, dtype=np.float64)
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


@pytest.mark.parametrize("impl", ["slicing", "items", pytest.param("torch", marks=pytest.mark.peer)])
def test_loader_epoch(benchmark, measure, backend, mnist_root, impl):
    benchmark.group = "loader_epoch"
    root, X, y = mnist_root
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
    if impl == "torch":
        if torch is None:
            pytest.skip("needs PyTorch")
        images = torch.from_numpy(((X[:, None].astype(np.float32) / 255.0 - MEAN) / STD).astype(np.float32))
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(images, torch.from_numpy(y)), batch_size=BATCH
        )
        name, sync = f"{PEER_IMPL}-items", sync_torch
    else:
        ds = datasets.MNIST(root, train=True, transform=transform)
        kw = {"collate_fn": default_collate} if impl == "items" else {}
        loader = DataLoader(ds, batch_size=BATCH, **kw)
        assert loader._fast == (impl == "slicing")
        name, sync = f"{GPUNN_IMPL}-{impl}", (lambda: sync_gpunn(backend))
    xb, yb = next(iter(loader))
    err = _first_batch_error(xb, X)
    assert err < 1e-6, err
    assert np.array_equal(np.asarray(yb.numpy()), y[:BATCH])

    def epoch():
        for _ in loader:
            pass

    nbytes = SAMPLES * 784 * (1 + 4) + SAMPLES * 8  # read uint8 pixels, write float32, labels
    t = measure(
        epoch,
        [()],
        op="loader_epoch",
        size=f"{SAMPLES} MNIST images, batch {BATCH}",
        impl=name,
        bytes_moved=nbytes,
        flops=2 * SAMPLES * 784,
        sync=sync,
        bound="memory",
        max_rel_err=err,
        rounds=3 if impl == "items" else None,
        bytes_formula="N*784*(1+4) + N*8",
        flops_formula="2*N*784 (scale and normalize)",
        extra={"samples": SAMPLES, "batch": BATCH},
    )
    benchmark.extra_info["samples_per_s"] = SAMPLES / t
