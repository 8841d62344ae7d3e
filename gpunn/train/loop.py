"""``fit``, ``evaluate`` and ``predict``: the training loop.

One epoch: for each batch, ``zero_grad -> forward -> loss -> (callbacks see the loss) -> backward ->
step``; then validation, the scheduler, the history record and the epoch callbacks. The loss is read
back once per batch (for NaN checks and the progress bar), or once per ``sync_every`` batches; metrics
accumulate on the device.
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

    def __init__(
        self, model, optimizer, scheduler, history, epochs, loaders, log, callbacks=(), initial_epoch: int = 0
    ) -> None:
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
        self.sync = None  # the FitSync of gpunn.distributed.training (identity in a world of one)

    def local_stop_request(self) -> bool:
        """A signal arrived and this process may act on it alone (on N ranks they agree on it instead,
        with the next averaged loss: see ``gpunn.distributed.training``)."""
        return self.requests.signum is not None and not self.sync.agrees_on_stop

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
        raise ValueError(
            f"fit(): none of the optimizer's {len(params)} parameters belong to the model, so "
            "training would change nothing; make the optimizer from this model's "
            "parameters: optim.SGD(model.parameters(), ...)"
        )


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


def fit(
    model,
    optimizer,
    loss_fn,
    train,
    val=None,
    epochs: int = 1,
    scheduler=None,
    metrics=("accuracy",),
    callbacks=(),
    batch_size: int = 32,
    verbose: int = 1,
    initial_epoch: int = 0,
    history: History | None = None,
    terminate_on_nan: bool = True,
    monitor: str | None = None,
    sync_every: int = 1,
    capture: bool | str = False,
) -> History:
    """Train ``model`` for ``epochs`` epochs and return the ``History``.

    ``train``/``val``: DataLoaders or (X, y) tuples. ``scheduler`` is stepped once per epoch after
    validation; a ``ReduceLROnPlateau`` gets ``monitor`` (default ``val_loss`` with validation data, else
    ``loss``). ``initial_epoch`` (with ``history``) continues a resumed run.

    Stopping: Ctrl-C (SIGINT) or SIGTERM stops at the next step boundary (see ``gpunn.train.signals``):
    the unfinished epoch is dropped from the history, the model keeps the weights of the last completed
    step, callbacks' ``on_train_end`` still run, and the history is returned with ``stop_reason`` and
    ``stop_signal`` (the signal's number) set. A ``KeyboardInterrupt`` raised inside the loop is handled
    the same way. On N ranks the ranks agree on a stop request with the next loss they average, so all
    of them stop at the same batch.

    ``sync_every=k`` reads the batch losses back from the device once every ``k`` steps (and the last,
    partial group at the end of the epoch) instead of after every step: on a GPU the steps in between
    never wait for the host. The callbacks' ``on_batch_loss`` / ``on_batch_end`` then run for each of the
    ``k`` batches when the group is read. The price: with ``k > 1`` a NaN or infinite loss (and a
    bad-label error) is seen up to ``k - 1`` steps late, after those steps AND the bad batch's own step
    have updated the weights; TerminateOnNaN still stops training there, but cannot keep the weights of
    the last good step as it does with the default ``k = 1``.

    ``capture=True`` trains with ``gpunn.train.compile_step`` (each batch shape recorded once, then
    replayed without autograd; the same numbers as the eager loop); ``CaptureError`` names what the model
    or loss has that a plan cannot hold. ``capture="auto"`` warns once and trains eagerly instead. A
    captured step does forward, backward and update in one call, so its loss is read after the update, as
    with ``sync_every > 1`` (TerminateOnNaN stops after the bad step, not before it).
    >>> hist = fit(model, opt, nn.CrossEntropyLoss(), train_loader, val_loader, epochs=10)
    """
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"fit(): epochs must be a non-negative int, got {epochs!r}")
    if isinstance(sync_every, bool) or not isinstance(sync_every, int) or sync_every < 1:
        raise ValueError(f"fit(): sync_every must be a positive int (steps between loss reads), got {sync_every!r}")
    if capture not in (False, True, "auto"):
        raise ValueError(f"fit(): capture must be False, True or 'auto', got {capture!r}")
    _check_optimizer_trains(model, optimizer)
    stepper = None
    if capture:
        from gpunn.train.capture import compile_step

        stepper = compile_step(model, loss_fn, optimizer, on_error="eager" if capture == "auto" else "raise")
    train_loader = _as_loader(train, batch_size, True, "train")
    val_loader = _as_loader(val, batch_size, False, "val")
    history = history if history is not None else History()
    monitor = monitor or ("val_loss" if val_loader is not None else "loss")
    from gpunn.distributed.training import fit_sync

    sync = fit_sync()  # on N ranks: losses/metrics averaged over ranks, output from rank 0 only
    verbose = sync.verbose(verbose)
    cbs: list[Callback] = sync.callbacks(callbacks)
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
    trainer.sync = sync
    sync.bind(trainer.requests)
    history.stop_reason = history.stop_signal = history.best_epoch = None
    for c in cbs:
        c.set_trainer(trainer)
    with trainer.requests:
        try:
            for c in cbs:
                c.on_train_begin()
            for epoch in range(initial_epoch + 1, epochs + 1):
                trainer.epoch = epoch
                _train_one_epoch(
                    trainer, cbs, loss_fn, train_loader, val_loader, metrics, monitor, epoch, sync_every, stepper
                )
                if trainer.local_stop_request() and trainer.weights_epoch == epoch:
                    trainer.stop(f"stopped by {signal_name(trainer.requests.signum)} after epoch {epoch}")
                if trainer.stop_training:
                    break
        except KeyboardInterrupt:
            if trainer.requests.signum is None:
                trainer.requests.signum = signal.SIGINT
            held = (
                "a part-done optimizer step (interrupted inside it)"
                if trainer.in_step
                else "the weights of its last completed step"
            )
            trainer.stop(
                f"interrupted by {signal_name(trainer.requests.signum)} during epoch {trainer.epoch}: "
                f"that epoch is dropped, the model holds {held}"
            )
        finally:
            history.stop_reason = trainer.stop_reason
            history.stop_signal = trainer.requests.signum
            if trainer.stop_reason:
                log(trainer.stop_reason)
            for c in cbs:
                c.on_train_end()
    return history


def _read_losses(pending) -> list[float]:
    """The values of ``pending`` [(batch, loss Tensor, n)] in ONE device-to-host read."""
    from gpunn.factories import cat

    for _, loss, _ in pending:
        if loss.numel() != 1:
            raise ValueError(f"fit(): the loss must be a single value, got shape {tuple(loss.shape)}")
    if len(pending) == 1:
        return [float(pending[0][1].item())]
    return [float(v) for v in cat([loss.reshape(-1) for _, loss, _ in pending]).tolist()]


def _train_one_epoch(
    trainer, cbs, loss_fn, train_loader, val_loader, metrics, monitor, epoch, sync_every: int = 1, stepper=None
) -> None:
    model, optimizer, scheduler = trainer.model, trainer.optimizer, trainer.scheduler
    t0 = time.perf_counter()
    trainer.sync.epoch_begin(trainer.loaders, epoch)
    for c in cbs:
        c.on_epoch_begin(epoch)
    model.train()
    ms = make_metrics(metrics)
    total, count = 0.0, 0
    lr = optimizer.param_groups[0]["lr"]
    pending = []  # (batch, detached loss, batch size) not read yet (sync_every > 1)

    def flush() -> bool:
        """Read the pending losses, run the batch callbacks; False when a callback stopped training."""
        nonlocal total, count
        values = [trainer.sync.batch_loss(v) for v in _read_losses(pending)]
        group = list(pending)
        pending.clear()
        for (b, _, n), value in zip(group, values):
            for c in cbs:
                c.on_batch_loss(b, value)
            if trainer.stop_training:
                return False
            total += value * n
            count += n
            for c in cbs:
                c.on_batch_end(b, {"loss": value})
        return True

    def take_step(loss) -> None:
        loss.backward()
        trainer.in_step = True
        optimizer.step()
        trainer.in_step = False
        trainer.weights_epoch = None

    for b, (xb, yb) in enumerate(train_loader):
        if trainer.local_stop_request():  # a stop was asked for: before the next step begins
            if pending:
                flush()  # the finished steps' losses still reach the callbacks
            trainer.stop(
                f"stopped by {signal_name(trainer.requests.signum)} during epoch {epoch} after "
                f"{b} of {trainer.batches_per_epoch} batches: that epoch is dropped, the model holds "
                "the weights of its last completed step"
            )
            return
        n = int(yb.shape[0]) if yb.ndim else 1
        if stepper is not None:  # forward, backward and update in one call; the loss is read afterwards
            trainer.in_step = True
            loss = stepper(xb, yb)
            trainer.in_step = False
            trainer.weights_epoch = None
            _run_metrics(ms, stepper.output.detach(), yb)
            pending.append((b, loss, n))
            if len(pending) == sync_every and not flush():
                return
            continue
        optimizer.zero_grad()
        out = model(xb)
        loss = loss_fn(out, yb)
        if sync_every > 1:  # read later, k at a time (see fit's docstring for what that costs)
            take_step(loss)
            _run_metrics(ms, out.detach(), yb)
            pending.append((b, loss.detach(), n))
            if len(pending) == sync_every and not flush():
                return
            continue
        value = trainer.sync.batch_loss(float(loss.item()))
        for c in cbs:
            c.on_batch_loss(b, value)
        if trainer.stop_training:  # e.g. a NaN loss: leave the weights as the last good step made them
            return
        take_step(loss)
        total += value * n
        count += n
        _run_metrics(ms, out.detach(), yb)
        for c in cbs:
            c.on_batch_end(b, {"loss": value})
    if pending and not flush():  # the last, partial group
        return
    logs = {"epoch": epoch, "loss": total / max(count, 1)}
    logs.update({m.name: m.value() for m in ms})
    if val_loader is not None:
        v = evaluate(model, loss_fn, val_loader, metrics)
        logs.update({f"val_{k}": val for k, val in v.items()})
    logs = trainer.sync.epoch_logs(logs)
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
