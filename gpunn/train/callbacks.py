"""Callbacks for ``fit``: early stopping, checkpoints, CSV logs, NaN termination, progress.

A callback sees the running ``Trainer`` (``trainer.model``, ``.optimizer``, ``.history``,
``.stop_training``, ``.stop_reason``) and is called at the points below. ``on_train_end`` runs however
training ends: all epochs done, stopped early, a NaN loss, or Ctrl-C.
"""

from __future__ import annotations

import math
import os
import sys
import time


class Callback:
    rank_zero_only = False  # True: under N ranks only rank 0 runs it (it writes files or prints)

    def set_trainer(self, trainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, logs=None) -> None: ...

    def on_epoch_begin(self, epoch: int, logs=None) -> None: ...

    def on_batch_loss(self, batch: int, loss: float) -> None:
        """Called with each batch's loss before backward/step (so a bad loss never touches the weights)."""

    def on_batch_end(self, batch: int, logs=None) -> None: ...

    def on_epoch_end(self, epoch: int, logs=None) -> None: ...

    def on_train_end(self, logs=None) -> None: ...


def _better_fn(mode: str, monitor: str, min_delta: float):
    if mode == "auto":
        mode = "max" if any(k in monitor for k in ("acc", "auc", "precision", "recall", "f1")) else "min"
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
    if mode == "min":
        return mode, (lambda cur, best: cur < best - min_delta), math.inf
    return mode, (lambda cur, best: cur > best + min_delta), -math.inf


def _monitored(logs: dict, monitor: str, who: str) -> float:
    if monitor not in logs:
        raise KeyError(f"{who}: monitored quantity {monitor!r} is not in the epoch logs {sorted(logs)}; "
                       "pass validation data for 'val_*' quantities")
    return float(logs[monitor])


def _snapshot(model) -> dict:
    """A host copy of the model's state (so later in-place updates don't change it)."""
    return {k: v._backend.to_numpy(v._data).copy() for k, v in model.state_dict().items()}


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    With ``restore_best_weights`` the best epoch's weights are put back when training ends for ANY
    reason (ran out of epochs, stopped early, NaN loss, Ctrl-C)."""

    def __init__(self, monitor: str = "val_loss", patience: int = 0, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = False, baseline: float | None = None) -> None:
        if patience < 0:
            raise ValueError(f"EarlyStopping: patience must be >= 0, got {patience}")
        self.monitor, self.patience, self.min_delta = monitor, patience, abs(min_delta)
        self.mode, self._better, self._init_best = _better_fn(mode, monitor, self.min_delta)
        self.restore_best_weights, self.baseline = restore_best_weights, baseline

    def on_train_begin(self, logs=None) -> None:
        self.wait = 0
        self.best = self._init_best if self.baseline is None else self.baseline
        self.best_epoch = None
        self.best_weights = None
        self.stopped_epoch = None

    def on_epoch_end(self, epoch, logs=None) -> None:
        current = _monitored(logs, self.monitor, "EarlyStopping")
        if math.isfinite(current) and self._better(current, self.best):
            self.best, self.best_epoch, self.wait = current, epoch, 0
            if self.restore_best_weights:
                self.best_weights = _snapshot(self.trainer.model)
            return
        self.wait += 1
        if self.wait >= self.patience:  # as Keras: stop after `patience` epochs without improvement
            self.stopped_epoch = epoch
            self.trainer.stop(f"early stopping: {self.monitor} did not improve for {self.wait} epochs "
                              f"(best {self.best:.6g} at epoch {self.best_epoch})")

    def on_train_end(self, logs=None) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            self.trainer.model.load_state_dict(self.best_weights)
            self.trainer.history.best_epoch = self.best_epoch
            self.trainer.log(f"restored the weights of epoch {self.best_epoch} "
                             f"({self.monitor} = {self.best:.6g})")


class ModelCheckpoint(Callback):
    """Save a checkpoint each epoch, or only when ``monitor`` improves (``save_best_only``).

    ``filepath`` may contain ``{epoch}`` and log keys (``"ckpt-{epoch:03d}.npz"``). The file holds the
    full training state (model, optimizer, scheduler, epoch, RNG, history) unless ``save_weights_only``.
    Files are written atomically; a run stopped by a NaN loss never overwrites the last good one."""

    rank_zero_only = True

    def __init__(self, filepath, monitor: str = "val_loss", save_best_only: bool = False, mode: str = "auto",
                 save_weights_only: bool = False) -> None:
        self.filepath = os.fspath(filepath)
        self.monitor, self.save_best_only, self.save_weights_only = monitor, save_best_only, save_weights_only
        self.mode, self._better, self._init_best = _better_fn(mode, monitor, 0.0)
        self.best = self._init_best
        self.last_saved: str | None = None

    def on_epoch_end(self, epoch, logs=None) -> None:
        from gpunn.checkpoint import save
        from gpunn.train.state import save_training_state

        if self.save_best_only:
            current = _monitored(logs, self.monitor, "ModelCheckpoint")
            if not (math.isfinite(current) and self._better(current, self.best)):
                return
            self.best = current
        path = self.filepath.format(**{**logs, "epoch": epoch})
        t = self.trainer
        if self.save_weights_only:
            save(t.model.state_dict(), path)
        else:
            save_training_state(path, t.model, t.optimizer, t.scheduler, epoch=epoch, history=t.history,
                                loaders=t.loaders)
        self.last_saved = path


class CSVLogger(Callback):
    """Write the history as CSV after every epoch (the whole file, atomically)."""

    rank_zero_only = True

    def __init__(self, filename) -> None:
        self.filename = os.fspath(filename)

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.trainer.history.to_csv(self.filename)


class TerminateOnNaN(Callback):
    """Stop as soon as a batch loss is NaN or infinite -- before that batch updates any weight."""

    def on_batch_loss(self, batch, loss) -> None:
        if not math.isfinite(loss):
            t = self.trainer
            t.stop(f"loss became {loss} at epoch {t.epoch}, batch {batch + 1}; training stopped, the weights "
                   "are those of the last good step (lower the learning rate?)")


class ProgressBar(Callback):
    """A tqdm bar over the batches when stderr is a terminal; one summary line per epoch on stdout."""

    rank_zero_only = True

    def __init__(self, verbose: int = 1, stream=None) -> None:
        self.verbose = verbose
        self.stream = stream
        self.bar = None

    def _tty(self) -> bool:
        err = sys.stderr
        return bool(getattr(err, "isatty", lambda: False)())

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self.t0 = time.perf_counter()
        if self.verbose and self._tty():
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=self.trainer.batches_per_epoch, desc=f"epoch {epoch}/{self.trainer.epochs}",
                            leave=False, unit="batch", dynamic_ncols=True)

    def on_batch_end(self, batch, logs=None) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if batch % 10 == 0 and logs:
                self.bar.set_postfix(loss=f"{logs['loss']:.4f}")

    def on_epoch_end(self, epoch, logs=None) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.verbose:
            parts = [f"epoch {epoch}/{self.trainer.epochs}"]
            for k, v in logs.items():
                if k in ("epoch",):
                    continue
                if k == "time":
                    parts.append(f"{v:.2f}s")
                elif k == "lr":
                    parts.append(f"lr {v:.3g}")
                else:
                    parts.append(f"{k} {v:.4f}")
            print("  ".join(parts), file=self.stream or sys.stdout, flush=True)

    def on_train_end(self, logs=None) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class LambdaCallback(Callback):
    """A callback from plain functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``."""

    def __init__(self, **hooks) -> None:
        for name, fn in hooks.items():
            if not hasattr(Callback, name):
                raise ValueError(f"LambdaCallback: unknown hook {name!r}")
            setattr(self, name, fn)


__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint", "CSVLogger", "TerminateOnNaN", "ProgressBar",
           "LambdaCallback"]
