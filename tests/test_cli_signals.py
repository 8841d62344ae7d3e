"""`gpunn train` never loses work: SIGINT/SIGTERM (sent at a fixed batch from a callback, never timed) stop
at a step boundary with exit 130/143 and one line naming what was kept and the resume command; a
stopped-and-resumed run equals the straight one bit for bit; a run that finishes no epoch writes nothing;
a full disk is one error line; re-written files keep their permission bits."""

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpunn
from gpunn.cli import main

ROOT = Path(__file__).resolve().parents[1]

# runs `gpunn` with a callback that sends SIGNAL at the end of batch BATCH (0-based) of epoch EPOCH
DRIVER = """
import os, signal, sys
from gpunn import cli, train

sig, at_epoch, at_batch = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
real_fit = train.fit

class Send(train.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == (at_epoch, at_batch):
            os.kill(os.getpid(), sig)

def fit(*args, callbacks=(), **kwargs):
    return real_fit(*args, callbacks=[*callbacks, Send()], **kwargs)

train.fit = fit
sys.exit(cli.main(sys.argv[4:]))
"""

COMMON = ["train", "--dataset", "digits", "--optimizer", "adam", "--dropout", "0.2", "--patience", "2", "--quiet"]


def gpunn_run(*argv, sig=None, epoch=0, batch=0):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GPUNN_BACKEND": "numpy"}
    cmd = [sys.executable, "-c", DRIVER, str(int(sig or 0)), str(epoch if sig else -1), str(batch), *argv]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def history_rows(folder):
    """history.csv without the time column (wall-clock time is the one thing that may differ)."""
    lines = (folder / "history.csv").read_text().splitlines()
    header = lines[0].split(",")
    keep = [i for i, k in enumerate(header) if k != "time"]
    return [[row.split(",")[i] for i in keep] for row in lines]


def weights(path):
    return {k: v.numpy() for k, v in gpunn.load(path).items()}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stopped_and_resumed_run_equals_the_straight_one(tmp_path, sig):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    r = gpunn_run(*COMMON, "--epochs", "9", "--out", str(straight))
    assert r.returncode == 0, r.stderr

    r = gpunn_run(*COMMON, "--epochs", "9", "--out", str(stopped), sig=sig, epoch=4, batch=5)
    assert r.returncode == 128 + sig, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith(f"gpunn: stopped by {signal.Signals(sig).name}") and "(epoch 3)" in lines[0]
    assert gpunn.load(stopped / "checkpoint.npz")["epoch"] == 3  # never the unfinished epoch 4
    assert len(history_rows(stopped)) == 1 + 3

    resume = shlex.split(lines[0].split("resume with: ")[1])
    assert resume[0] == "gpunn" and resume[-2:] == ["--resume", str(stopped / "checkpoint.npz")]
    r = gpunn_run(*resume[1:])
    assert r.returncode == 0, r.stderr
    assert history_rows(stopped) == history_rows(straight)
    a, b = weights(straight / "model.npz"), weights(stopped / "model.npz")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    a, b = gpunn.load(straight / "checkpoint.npz"), gpunn.load(stopped / "checkpoint.npz")
    assert a["epoch"] == b["epoch"]
    (name_a, es_a), (name_b, es_b) = a["callbacks"][0], b["callbacks"][0]  # early stopping's state
    assert name_a == name_b == "EarlyStopping"
    assert (es_a["best"], es_a["best_epoch"], es_a["wait"]) == (es_b["best"], es_b["best_epoch"], es_b["wait"])


def test_a_run_that_finishes_no_epoch_writes_nothing(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    old = {name: f"from an earlier run: {name}".encode() for name in ("checkpoint.npz", "model.npz", "history.csv")}
    for name, data in old.items():
        (out / name).write_bytes(data)
    r = gpunn_run(*COMMON, "--epochs", "5", "--out", str(out), sig=signal.SIGINT, epoch=1, batch=2)
    assert r.returncode == 130
    assert len(r.stderr.strip().splitlines()) == 1 and "nothing was written" in r.stderr, r.stderr
    for name, data in old.items():
        assert (out / name).read_bytes() == data


def test_a_resumed_run_stopped_in_its_first_epoch_keeps_the_good_checkpoint(tmp_path):
    out = tmp_path / "r"
    r = gpunn_run(*COMMON, "--epochs", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    ckpt = out / "checkpoint.npz"
    r = gpunn_run(
        *COMMON, "--epochs", "5", "--out", str(out), "--resume", str(ckpt), sig=signal.SIGTERM, epoch=3, batch=1
    )
    assert r.returncode == 143 and "nothing was written" in r.stderr and "resume with:" in r.stderr, r.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_resume_with_nothing_left_to_train_exits_2_and_rewrites_nothing(capsys, tmp_path):
    out = tmp_path / "r"
    assert main([*COMMON, "--epochs", "2", "--out", str(out)]) == 0
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    capsys.readouterr()
    for epochs in ("2", "1"):
        code = main([*COMMON, "--epochs", epochs, "--out", str(out), "--resume", str(out / "checkpoint.npz")])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("gpunn: error: ") and "nothing left to train" in err
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before


def test_a_full_disk_is_one_error_line(capsys, tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    code = main([*COMMON, "--epochs", "2", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpunn: error: could not write"), err
    assert "No space left on device" in lines[0] and "Traceback" not in err


def test_rewritten_outputs_keep_their_permission_bits(capsys, tmp_path):
    out = tmp_path / "r"
    assert main([*COMMON, "--epochs", "1", "--out", str(out)]) == 0
    for name in ("checkpoint.npz", "history.csv", "model.npz"):
        os.chmod(out / name, 0o600)
    assert main([*COMMON, "--epochs", "1", "--out", str(out)]) == 0
    for name in ("checkpoint.npz", "history.csv", "model.npz"):
        assert (out / name).stat().st_mode & 0o777 == 0o600, name


def test_sigterm_before_training_is_one_line_and_exit_143(tmp_path, monkeypatch):
    # SIGTERM while the data set loads: the CLI's own handler, not Python's silent death
    import gpunn.cli as cli

    def load_and_get_killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not interrupt")

    def guard(signum, frame):  # without the CLI's handler, fail instead of killing pytest
        raise RuntimeError("SIGTERM reached the test: the CLI did not handle it")

    monkeypatch.setattr(cli, "load_dataset", load_and_get_killed)
    previous = signal.signal(signal.SIGTERM, guard)
    try:
        code = main([*COMMON, "--out", str(tmp_path / "r")])
        assert signal.getsignal(signal.SIGTERM) is guard  # put back
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 143 and not (tmp_path / "r").exists()
