"""Stopping and resuming fit() from Python: SIGINT/SIGTERM stop at a step boundary (sent at a fixed batch
from a callback, never timed), and a stopped-and-resumed run is bit-identical to the straight one with
dropout, Adam, a plateau scheduler, shuffling, early stopping and best-only checkpoints all on."""

import os
import signal

import numpy as np
import pytest

import gpunn
from gpunn import nn, optim, train
from gpunn.data import DataLoader


@pytest.fixture(scope="module")
def digits():
    from gpunn.data import load_digits

    return load_digits(seed=0)


def _weights(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


class SendSignal(train.Callback):
    """Sends ``sig`` to this process at the end of batch ``batch`` (0-based) of epoch ``epoch``."""

    def __init__(self, sig, epoch, batch):
        self.sig, self.at = sig, (epoch, batch)
        self.weights_when_sent = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            self.weights_when_sent = _weights(self.trainer.model)
            os.kill(os.getpid(), self.sig)


@pytest.fixture
def no_sigterm_death():
    # without fit's handler a SIGTERM would kill pytest itself: make it a test failure instead
    def handler(signum, frame):
        raise RuntimeError("SIGTERM reached the test: fit() did not handle it")

    previous = signal.signal(signal.SIGTERM, handler)
    yield handler
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_fit_at_the_next_step_boundary(digits, tmp_path, no_sigterm_death, sig):
    gpunn.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = DataLoader((digits.X_train, digits.y_train), batch_size=64, shuffle=True, seed=0)
    send = SendSignal(sig, epoch=3, batch=4)
    ckpt = train.ModelCheckpoint(tmp_path / "last.npz", monitor="loss")
    int_handler = signal.getsignal(signal.SIGINT)
    hist = train.fit(model, opt, nn.CrossEntropyLoss(), loader, epochs=6, callbacks=[send, ckpt], verbose=0)
    assert hist.stop_signal == sig
    assert "stopped by SIG" in hist.stop_reason and "during epoch 3 after 5 of" in hist.stop_reason
    assert len(hist) == 2 and hist["epoch"] == [1, 2]  # the unfinished epoch is dropped
    assert _same(_weights(model), send.weights_when_sent)  # the last completed step, nothing after it
    assert gpunn.load(tmp_path / "last.npz")["epoch"] == 2  # checkpoints only ever hold finished epochs
    assert signal.getsignal(signal.SIGTERM) is no_sigterm_death  # handlers are put back
    assert signal.getsignal(signal.SIGINT) is int_handler


def test_a_keyboard_interrupt_keeps_the_last_completed_step(digits):
    gpunn.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 10))
    opt = optim.SGD(model.parameters(), lr=0.05)
    seen = []

    def on_batch_end(batch, logs):
        seen.append(_weights(model))
        if len(seen) == 7:
            raise KeyboardInterrupt

    hist = train.fit(
        model,
        opt,
        nn.CrossEntropyLoss(),
        (digits.X_train, digits.y_train),
        epochs=3,
        batch_size=512,
        callbacks=[train.LambdaCallback(on_batch_end=on_batch_end)],
        verbose=0,
    )
    assert hist.stop_signal == signal.SIGINT and "last completed step" in hist.stop_reason
    assert len(hist) == 2 and _same(_weights(model), seen[-1])


def _setup(digits):
    gpunn.manual_seed(3)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10))
    opt = optim.Adam(model.parameters(), lr=6e-2)
    sched = optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    loader = DataLoader((digits.X_train[:300], digits.y_train[:300]), batch_size=32, shuffle=True, seed=5)
    return model, opt, sched, loader


def _callbacks(folder):
    return [
        train.EarlyStopping(patience=2, restore_best_weights=True),
        train.ModelCheckpoint(folder / "best.npz", save_best_only=True),
        train.ModelCheckpoint(folder / "last.npz", monitor="loss"),
    ]


def test_stopped_and_resumed_equals_straight_with_every_callback(digits, tmp_path):
    val = (digits.X_test, digits.y_test)
    loss_fn = nn.CrossEntropyLoss()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()

    model, opt, sched, loader = _setup(digits)
    straight = train.fit(
        model, opt, loss_fn, loader, val, epochs=15, scheduler=sched, callbacks=_callbacks(tmp_path / "a"), verbose=0
    )
    straight_weights = _weights(model)
    # the scenario this test is about: early stopping ends the run after a best epoch it must remember
    assert straight.stop_reason.startswith("early stopping") and straight.best_epoch < len(straight) - 1

    model, opt, sched, loader = _setup(digits)
    stop_at = straight.best_epoch + 1  # interrupted in the epoch after the best one
    first = train.fit(
        model,
        opt,
        loss_fn,
        loader,
        val,
        epochs=15,
        scheduler=sched,
        callbacks=[SendSignal(signal.SIGINT, stop_at, 3), *_callbacks(tmp_path / "b")],
        verbose=0,
    )
    assert first.stop_signal == signal.SIGINT and len(first) == stop_at - 1

    gpunn.manual_seed(12345)  # the checkpoint restores the generator: the seed in between must not matter
    model, opt, sched, loader = _setup(digits)
    cbs = _callbacks(tmp_path / "b")
    hist = train.History()
    state = train.load_training_state(tmp_path / "b" / "last.npz", model, opt, sched, hist, [loader], cbs)
    resumed = train.fit(
        model,
        opt,
        loss_fn,
        loader,
        val,
        epochs=15,
        scheduler=sched,
        callbacks=cbs,
        verbose=0,
        initial_epoch=state["epoch"],
        history=hist,
    )

    for key in ("loss", "val_loss", "accuracy", "val_accuracy", "lr"):
        assert resumed[key] == straight[key], key
    assert resumed.stop_reason == straight.stop_reason and resumed.best_epoch == straight.best_epoch
    assert _same(_weights(model), straight_weights)  # the same restored best weights
    a, b = gpunn.load(tmp_path / "a" / "best.npz"), gpunn.load(tmp_path / "b" / "best.npz")
    assert a["epoch"] == b["epoch"] == straight.best_epoch  # a worse epoch never replaced the best file
    assert _same({k: v.numpy() for k, v in a["model"].items()}, {k: v.numpy() for k, v in b["model"].items()})


def test_a_second_signal_stops_at_once(digits, no_sigterm_death):
    gpunn.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 10))
    opt = optim.SGD(model.parameters(), lr=0.05)
    seen = []

    def on_batch_end(batch, logs):
        seen.append(_weights(model))
        if len(seen) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)  # asked twice: KeyboardInterrupt right here
            raise AssertionError("the second signal did not interrupt")

    hist = train.fit(
        model,
        opt,
        nn.CrossEntropyLoss(),
        (digits.X_train, digits.y_train),
        epochs=2,
        batch_size=64,
        callbacks=[train.LambdaCallback(on_batch_end=on_batch_end)],
        verbose=0,
    )
    assert hist.stop_signal == signal.SIGTERM and hist.stop_reason.startswith("interrupted by SIGTERM")
    assert len(hist) == 0 and _same(_weights(model), seen[-1])
