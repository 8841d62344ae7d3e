"""gpunn.vision.datasets: torchvision's layout and items, the loader's two paths, and download=True
against a local HTTP server on 127.0.0.1 (good, corrupt, cut and dead mirrors). Never the real network."""

import gzip
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

import gpunn
from gpunn.data import write_idx
from gpunn.utils.data import DataLoader, default_collate
from gpunn.vision import datasets, transforms
from gpunn.vision.download import DownloadError

STEMS = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def _arrays(seed=0, n_train=40, n_test=15):
    rng = np.random.default_rng(seed)
    return [
        rng.integers(0, 256, (n_train, 28, 28)).astype(np.uint8),
        rng.integers(0, 10, n_train).astype(np.uint8),
        rng.integers(0, 256, (n_test, 28, 28)).astype(np.uint8),
        rng.integers(0, 10, n_test).astype(np.uint8),
    ]


def write_mnist(folder: Path, arrays, gz=(True, False, False, True)):
    folder.mkdir(parents=True, exist_ok=True)
    for stem, a, z in zip(STEMS, arrays, gz):
        write_idx(folder / (stem + (".gz" if z else "")), a)


@pytest.fixture()
def root(tmp_path):
    arrays = _arrays()
    write_mnist(tmp_path / "MNIST" / "raw", arrays)
    return tmp_path, arrays


NORM = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])


def test_items_match_torchvision_conventions(root):
    path, (Xtr, ytr, Xte, yte) = root
    train = datasets.MNIST(str(path), train=True, transform=NORM)
    test = datasets.MNIST(path, train=False)
    assert len(train) == 40 and len(test) == 15
    x, y = train[3]
    assert isinstance(y, int) and y == ytr[3]
    assert tuple(x.shape) == (1, 28, 28) and x.dtype == gpunn.float32
    np.testing.assert_allclose(x.numpy()[0], (Xtr[3] / 255.0 - 0.1307) / 0.3081, rtol=1e-5, atol=1e-6)
    assert train.data.dtype == gpunn.uint8 and tuple(train.data.shape) == (40, 28, 28)
    assert train.targets.dtype == gpunn.int64 and train.targets.numpy().tolist() == ytr.tolist()
    raw, _ = test[0]
    np.testing.assert_array_equal(np.asarray(raw.numpy() if isinstance(raw, gpunn.Tensor) else raw), Xte[0])
    assert train.classes[0] == "0 - zero" and train.class_to_idx["9 - nine"] == 9
    assert train.raw_folder == str(path / "MNIST" / "raw")
    assert "Number of datapoints: 40" in repr(train)
    target = datasets.MNIST(path, target_transform=lambda t: t + 100)[0][1]
    assert target == ytr[0] + 100


def test_fashion_mnist_has_its_own_folder(tmp_path):
    arrays = _arrays(1)
    write_mnist(tmp_path / "FashionMNIST" / "raw", arrays, gz=(False,) * 4)
    ds = datasets.FashionMNIST(tmp_path, train=False, transform=transforms.ToTensor())
    assert len(ds) == 15 and ds.classes[9] == "Ankle boot"
    with pytest.raises(RuntimeError, match="Dataset not found"):
        datasets.MNIST(tmp_path)


def test_missing_files_name_what_is_expected(tmp_path):
    with pytest.raises(RuntimeError, match="t10k-labels-idx1-ubyte"):
        datasets.MNIST(tmp_path)


def test_loader_slices_batchable_transforms_and_matches_the_item_path(root):
    path, (Xtr, ytr, _, _) = root
    ds = datasets.MNIST(path, transform=NORM)
    fast = DataLoader(ds, batch_size=16)
    slow = DataLoader(ds, batch_size=16, collate_fn=default_collate)
    assert fast._fast and not slow._fast and len(fast) == len(slow) == 3
    for (xa, ya), (xb, yb) in zip(fast, slow):
        np.testing.assert_allclose(xa.numpy(), xb.numpy(), rtol=1e-6)
        assert ya.dtype == yb.dtype == gpunn.int64
        np.testing.assert_array_equal(ya.numpy(), yb.numpy())
    # a Lambda or a target_transform sends the loader item by item
    lam = datasets.MNIST(path, transform=transforms.Compose([transforms.ToTensor(), transforms.Lambda(lambda t: t)]))
    assert not DataLoader(lam, batch_size=8)._fast
    shuffled = DataLoader(ds, batch_size=8, shuffle=True)
    labels = np.concatenate([y.numpy() for _, y in shuffled])
    assert sorted(labels.tolist()) == sorted(ytr.tolist())


def test_augmenting_transforms_batch_per_image(root):
    path, _ = root
    aug = transforms.Compose(
        [
            transforms.RandomCrop(28, padding=2),
            transforms.RandomAffine(5, translate=(0.05, 0.05)),
            transforms.ToTensor(),
            transforms.Normalize((0.5,), (0.5,)),
        ]
    )
    ds = datasets.MNIST(path, transform=aug)
    xb, yb = next(iter(DataLoader(ds, batch_size=10)))
    assert tuple(xb.shape) == (10, 1, 28, 28) and xb.dtype == gpunn.float32
    x, _ = ds[0]
    assert tuple(x.shape) == (1, 28, 28)


# --- download, against a local server ---------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}

    def log_message(self, *args):
        pass

    def do_GET(self):
        kind, _, name = self.path.strip("/").partition("/")
        body = self.files.get(name)
        if body is None:
            self.send_error(404)
            return
        if kind == "corrupt":
            body = body[:-8] + b"\x00" * 8
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if kind == "cut":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture()
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _dead_url():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    return f"http://127.0.0.1:{port}/"


@pytest.fixture()
def served(tmp_path, monkeypatch):
    """Gzipped IDX files as the server serves them, and MNIST's resources pointed at their MD5s."""
    src = tmp_path / "src"
    arrays = _arrays(2)
    write_mnist(src, arrays, gz=(True,) * 4)
    files = {p.name: p.read_bytes() for p in src.iterdir()}
    monkeypatch.setattr(_Handler, "files", files)
    resources = [(s + ".gz", hashlib.md5(files[s + ".gz"]).hexdigest()) for s in STEMS]
    monkeypatch.setattr(datasets.MNIST, "resources", resources)
    monkeypatch.setattr(datasets.MNIST, "timeout", 5.0)
    return tmp_path / "root", arrays


def _no_partial_files(folder: Path):
    return not [p for p in folder.iterdir() if p.name.endswith(".part")] if folder.exists() else True


def test_download_skips_dead_corrupt_and_cut_mirrors(server, served, monkeypatch):
    root, (Xtr, ytr, _, _) = served
    mirrors = [_dead_url(), f"{server}/corrupt/", f"{server}/cut/", f"{server}/good/"]
    monkeypatch.setattr(datasets.MNIST, "mirrors", mirrors)
    ds = datasets.MNIST(root, train=True, download=True)
    raw = root / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(STEMS + [s + ".gz" for s in STEMS])
    np.testing.assert_array_equal(ds.data.numpy(), Xtr)
    np.testing.assert_array_equal(ds.targets.numpy(), ytr)
    assert gzip.decompress((raw / (STEMS[0] + ".gz")).read_bytes()) == (raw / STEMS[0]).read_bytes()
    assert _no_partial_files(raw)
    # present files: nothing is fetched again (every mirror dead now)
    monkeypatch.setattr(datasets.MNIST, "mirrors", [_dead_url()])
    before = {p.name: p.stat().st_mtime_ns for p in raw.iterdir()}
    datasets.MNIST(root, train=False, download=True)
    assert before == {p.name: p.stat().st_mtime_ns for p in raw.iterdir()}


def test_offline_gives_one_error_naming_the_files(server, served, monkeypatch):
    root, _ = served
    monkeypatch.setattr(datasets.MNIST, "mirrors", [_dead_url(), f"{server}/corrupt/", f"{server}/cut/"])
    with pytest.raises(DownloadError) as info:
        datasets.MNIST(root, download=True)
    message = str(info.value)
    for stem in STEMS:
        assert stem + ".gz" in message
    assert "by hand" in message and str(root / "MNIST" / "raw") in message
    assert "MD5 mismatch" in message and ("IncompleteRead" in message or "connection cut" in message)
    assert "Connection refused" in message or "URLError" in message
    assert _no_partial_files(root / "MNIST" / "raw")
    assert not any((root / "MNIST" / "raw").iterdir())  # nothing half-written


def test_download_fetches_only_the_missing_files(server, served, monkeypatch):
    root, arrays = served
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / STEMS[0], arrays[0])  # one placed by hand, uncompressed
    monkeypatch.setattr(datasets.MNIST, "mirrors", [f"{server}/good/"])
    datasets.MNIST(root, download=True)
    assert not (raw / (STEMS[0] + ".gz")).exists() and (raw / (STEMS[1] + ".gz")).exists()


def test_cli_trains_on_mnist_from_data_folder(root, tmp_path, capsys):
    from gpunn import cli

    path, _ = root
    code = cli.main(
        [
            "train",
            "--dataset",
            "mnist",
            "--data",
            str(path),
            "--model",
            "softmax",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--out",
            str(tmp_path / "run"),
            "--quiet",
            "--backend",
            "numpy",
        ]
    )
    assert code == 0, capsys.readouterr().err
    code = cli.main(["train", "--dataset", "fashion-mnist", "--data", str(path), "--out", str(tmp_path / "r2")])
    err = capsys.readouterr().err
    assert code != 0 and "Dataset not found" in err and "--download" in err
