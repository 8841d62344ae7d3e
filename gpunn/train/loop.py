"""``fit``, ``evaluate`` and ``predict``: the training loop.

One epoch: for each batch, ``zero_grad -> forward -> loss -> (callbacks see the loss) -> backward ->
step``; then validation, the scheduler, the history record and the epoch callbacks. The loss is read
back once per batch (for NaN checks and the progress bar); metrics accumulate on the device.
"""

from __future__ import annotations

import math
import signal
import time

from gpunn.tensor import Tensor, no_grad
from gpunn.train.callbacks import Callback, ProgressBar, TerminateOnNaN
from gpunn.train.history import History
from gpunn.train.metrics import make_metrics
from gpunn.train.signals import StopRequests, signal_name


def _as_loader(data, batch_size: int, shuffle: bool, what: str):
    from gpunn.data import DataLoader

    if data is None:
        return None
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        # an unshuffled loader gets a fixed seed: making it then draws nothing from the generator, so a
        # resumed run's random stream (dropout) stays the straight run's
        return DataLoader(tuple(data), batch_size=batch_size, shuffle=shuffle, seed=None if shuffle else 0)
    raise TypeError(f"fit(): {what} must be a DataLoader or a tuple (X, y), got {type(data).__name__}")


class Trainer:
    """The state ``fit`` shares with callbacks."""

    def __init__(self, model, optimizer, scheduler, history, epochs, loaders, log, callbacks=(),
                 initial_epoch: int = 0) -> None:
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.history, self.epochs, self.loaders, self.log = history, epochs, loaders, log
        self.callbacks = list(callbacks)  # their state goes into training-state checkpoints
        self.stop_training = False
        self.stop_reason: str | None = None
        self.epoch = initial_epoch
        self.batches_per_epoch = len(loaders[0]) if loaders else 0
        # the finished epoch whose end-of-epoch weights the model holds; None once a step moved past it
        self.weights_epoch: int | None = initial_epoch
        self.requests = StopRequests()  # SIGINT/SIGTERM received while training
        self.in_step = False  # inside optimizer.step(): an interrupt there leaves a part-done update

    def stop(self, reason: str) -> None:
        self.stop_training = True
        if self.stop_reason is None:
            self.stop_reason = reason


def _run_metrics(metrics, outputs, targets):
    for m in metrics:
        m.update(outputs, targets)


def evaluate(model, loss_fn, data, metrics=("accuracy",), batch_size: int = 256) -> dict:
    """Mean loss and metrics of ``model`` over ``data`` (a DataLoader or (X, y)), in eval mode, no grad."""
    loader = _as_loader(data, batch_size, False, "data")
    was_training = model.training
    model.eval()
    ms = make_metrics(metrics)
    total, count = 0.0, 0
    try:
        with no_grad():
            for xb, yb in loader:
                out = model(xb)
                n = int(yb.shape[0]) if yb.ndim else 1
                total += float(loss_fn(out, yb).item()) * n
                count += n
                _run_metrics(ms, out, yb)
    finally:
        model.train(was_training)
    logs = {"loss": total / count if count else math.nan}
    logs.update({m.name: m.value() for m in ms})
    return logs


def _check_optimizer_trains(model, optimizer) -> None:
    """An optimizer made for another model (or before the model was rebuilt) would train nothing."""
    params = [p for g in getattr(optimizer, "param_groups", ()) for p in g["params"]]
    own = {id(p) for p in model.parameters()}
    if params and own and not any(id(p) in own for p in params):
        raise ValueError(f"fit(): none of the optimizer's {len(params)} parameters belong to the model, so "
                         "training would change nothing; make the optimizer from this model's "
                         "parameters: optim.SGD(model.parameters(), ...)")


def predict(model, X, batch_size: int = 256) -> Tensor:
    """Model outputs for every row of ``X`` (array or Tensor), batched, in eval mode, no grad."""
    from gpunn.factories import cat, tensor

    X = X if isinstance(X, Tensor) else tensor(X)
    if X.ndim == 0 or X.shape[0] == 0:
        raise ValueError(f"predict(): X must have at least one row, got shape {X.shape}")
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            outs = [model(X[i : i + batch_size]) for i in range(0, X.shape[0], batch_size)]
    finally:
        model.train(was_training)
    return cat(outs, 0)


def fit(model, optimizer, loss_fn, train, val=None, epochs: int = 1, scheduler=None, metrics=("accuracy",),
        callbacks=(), batch_size: int = 32, verbose: int = 1, initial_epoch: int = 0, history: History | None = None,
        terminate_on_nan: bool = True, monitor: str | None = None) -> History:
    """Train ``model`` for ``epochs`` epochs and return the ``History``.

    ``train``/``val``: DataLoaders or (X, y) tuples. ``scheduler`` is stepped once per epoch after
    validation; a ``ReduceLROnPlateau`` gets ``monitor`` (default ``val_loss`` with validation data, else
    ``loss``). ``initial_epoch`` (with ``history``) continues a resumed run.

    Stopping: Ctrl-C (SIGINT) or SIGTERM stops at the next step boundary (see ``gpunn.train.signals``):
    the unfinished epoch is dropped from the history, the model keeps the weights of the last completed
    step, callbacks' ``on_train_end`` still run, and the history is returned with ``stop_reason`` and
    ``stop_signal`` (the signal's number) set. A ``KeyboardInterrupt`` raised inside the loop is handled
    the same way.
    >>> hist = fit(model, opt, nn.CrossEntropyLoss(), train_loader, val_loader, epochs=10)
    """
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"fit(): epochs must be a non-negative int, got {epochs!r}")
    _check_optimizer_trains(model, optimizer)
    train_loader = _as_loader(train, batch_size, True, "train")
    val_loader = _as_loader(val, batch_size, False, "val")
    history = history if history is not None else History()
    monitor = monitor or ("val_loss" if val_loader is not None else "loss")
    cbs: list[Callback] = list(callbacks)
    if terminate_on_nan and not any(isinstance(c, TerminateOnNaN) for c in cbs):
        cbs.insert(0, TerminateOnNaN())
    if verbose and not any(isinstance(c, ProgressBar) for c in cbs):
        cbs.append(ProgressBar(verbose))
    bars = [c for c in cbs if isinstance(c, ProgressBar)]

    def log(msg: str) -> None:
        if verbose:
            for bar in bars:  # a message never lands inside a progress bar's line
                bar.close()
            print(msg, flush=True)

    loaders = [ld for ld in (train_loader, val_loader) if ld is not None]
    trainer = Trainer(model, optimizer, scheduler, history, epochs, loaders, log, cbs, initial_epoch)
    history.stop_reason = history.stop_signal = history.best_epoch = None
    for c in cbs:
        c.set_trainer(trainer)
    with trainer.requests:
        try:
            for c in cbs:
                c.on_train_begin()
            for epoch in range(initial_epoch + 1, epochs + 1):
                trainer.epoch = epoch
                _train_one_epoch(trainer, cbs, loss_fn, train_loader, val_loader, metrics, monitor, epoch)
                if trainer.requests.signum is not None and trainer.weights_epoch == epoch:
                    trainer.stop(f"stopped by {signal_name(trainer.requests.signum)} after epoch {epoch}")
                if trainer.stop_training:
                    break
        except KeyboardInterrupt:
            if trainer.requests.signum is None:
                trainer.requests.signum = signal.SIGINT
            held = ("a part-done optimizer step (interrupted inside it)" if trainer.in_step
                    else "the weights of its last completed step")
            trainer.stop(f"interrupted by {signal_name(trainer.requests.signum)} during epoch {trainer.epoch}: "
                         f"that epoch is dropped, the model holds {held}")
        finally:
            history.stop_reason = trainer.stop_reason
            history.stop_signal = trainer.requests.signum
            if trainer.stop_reason:
                log(trainer.stop_reason)
            for c in cbs:
                c.on_train_end()
    return history


def _train_one_epoch(trainer, cbs, loss_fn, train_loader, val_loader, metrics, monitor, epoch) -> None:
    model, optimizer, scheduler = trainer.model, trainer.optimizer, trainer.scheduler
    t0 = time.perf_counter()
    for c in cbs:
        c.on_epoch_begin(epoch)
    model.train()
    ms = make_metrics(metrics)
    total, count = 0.0, 0
    lr = optimizer.param_groups[0]["lr"]
    for b, (xb, yb) in enumerate(train_loader):
        if trainer.requests.signum is not None:  # a stop was asked for: before the next step begins
            trainer.stop(f"stopped by {signal_name(trainer.requests.signum)} during epoch {epoch} after "
                         f"{b} of {trainer.batches_per_epoch} batches: that epoch is dropped, the model holds "
                         "the weights of its last completed step")
            return
        optimizer.zero_grad()
        out = model(xb)
        loss = loss_fn(out, yb)
        value = float(loss.item())
        for c in cbs:
            c.on_batch_loss(b, value)
        if trainer.stop_training:  # e.g. a NaN loss: leave the weights as the last good step made them
            return
        loss.backward()
        trainer.in_step = True
        optimizer.step()
        trainer.in_step = False
        trainer.weights_epoch = None
        n = int(yb.shape[0]) if yb.ndim else 1
        total += value * n
        count += n
        _run_metrics(ms, out.detach(), yb)
        for c in cbs:
            c.on_batch_end(b, {"loss": value})
    logs = {"epoch": epoch, "loss": total / max(count, 1)}
    logs.update({m.name: m.value() for m in ms})
    if val_loader is not None:
        v = evaluate(model, loss_fn, val_loader, metrics)
        logs.update({f"val_{k}": val for k, val in v.items()})
    logs["lr"] = lr
    logs["time"] = time.perf_counter() - t0
    trainer.history.append(logs)
    if scheduler is not None:
        if type(scheduler).__name__ == "ReduceLROnPlateau":
            if monitor not in logs:
                raise KeyError(f"fit(): ReduceLROnPlateau monitors {monitor!r}, which is not in {sorted(logs)}")
            scheduler.step(logs[monitor])
        else:
            scheduler.step()
    for c in cbs:
        c.on_epoch_end(epoch, logs)
    trainer.weights_epoch = epoch
    for c in cbs:
        c.on_checkpoint(epoch, logs)
