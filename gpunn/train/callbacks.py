"""Callbacks for ``fit``: early stopping, checkpoints, CSV logs, NaN termination, progress.

A callback sees the running ``Trainer`` (``trainer.model``, ``.optimizer``, ``.history``,
``.stop_training``, ``.stop_reason``) and is called at the points below. ``on_train_end`` runs however
training ends: all epochs done, stopped early, a NaN loss, Ctrl-C or SIGTERM.

A callback that carries state from epoch to epoch (a best value, a patience counter) returns it from
``state_dict()``; training-state checkpoints store it and ``load_training_state`` puts it back, so a
resumed run continues exactly as the straight one would have.
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

    def on_checkpoint(self, epoch: int, logs=None) -> None:
        """Called after every callback's ``on_epoch_end``, when the epoch's whole state is final: the
        place to write checkpoints (they then hold every callback's end-of-epoch state)."""

    def on_train_end(self, logs=None) -> None: ...

    def state_dict(self) -> dict | None:
        """What a resumed run needs of this callback (numbers, strings, arrays); None: nothing."""
        return None

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()``; the next ``on_train_begin`` then continues from it."""


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
        raise KeyError(
            f"{who}: monitored quantity {monitor!r} is not in the epoch logs {sorted(logs)}; "
            "pass validation data for 'val_*' quantities"
        )
    return float(logs[monitor])


def _snapshot(model) -> dict:
    """A host copy of the model's state (so later in-place updates don't change it)."""
    return {k: v._backend.to_numpy(v._data).copy() for k, v in model.state_dict().items()}


def _number(state: dict, key: str, who: str, kind=(int, float), optional: bool = False):
    v = state.get(key)
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, kind):
        raise ValueError(f"{who} state: {key!r} must be a number, got {v!r}")
    return v


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    With ``restore_best_weights`` the best epoch's weights are put back when training ends for ANY
    reason (ran out of epochs, stopped early, NaN loss, Ctrl-C)."""

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 0,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best_weights: bool = False,
        baseline: float | None = None,
    ) -> None:
        if patience < 0:
            raise ValueError(f"EarlyStopping: patience must be >= 0, got {patience}")
        self.monitor, self.patience, self.min_delta = monitor, patience, abs(min_delta)
        self.mode, self._better, self._init_best = _better_fn(mode, monitor, self.min_delta)
        self.restore_best_weights, self.baseline = restore_best_weights, baseline
        self._reset()
        self._resumed = False

    def _reset(self) -> None:
        self.wait = 0
        self.best = self._init_best if self.baseline is None else self.baseline
        self.best_epoch = None
        self.best_weights = None
        self.stopped_epoch = None

    def on_train_begin(self, logs=None) -> None:
        if not self._resumed:  # a fresh run starts over; a resumed one continues from load_state_dict
            self._reset()
        self._resumed = False

    def state_dict(self) -> dict:
        return {
            "wait": self.wait,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "stopped_epoch": self.stopped_epoch,
            "best_weights": self.best_weights,
        }

    def load_state_dict(self, state: dict) -> None:
        who = "EarlyStopping"
        wait, best = _number(state, "wait", who, int), float(_number(state, "best", who))
        best_epoch = _number(state, "best_epoch", who, int, optional=True)
        stopped = _number(state, "stopped_epoch", who, int, optional=True)
        weights = state.get("best_weights")
        if weights is not None and not (
            isinstance(weights, dict) and all(isinstance(k, str) and hasattr(v, "shape") for k, v in weights.items())
        ):
            raise ValueError(f"{who} state: 'best_weights' must be a dict of arrays")
        if weights is not None:
            weights = {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in weights.items()}
        self.wait, self.best, self.best_epoch, self.stopped_epoch = wait, best, best_epoch, stopped
        self.best_weights = weights
        self._resumed = True

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
            self.trainer.stop(
                f"early stopping: {self.monitor} did not improve for {self.wait} epochs "
                f"(best {self.best:.6g} at epoch {self.best_epoch})"
            )

    def on_train_end(self, logs=None) -> None:
        if not (self.restore_best_weights and self.best_weights is not None):
            return
        t = self.trainer
        t.history.best_epoch = self.best_epoch
        if t.weights_epoch == self.best_epoch:  # the model already holds them: nothing to restore
            return
        t.model.load_state_dict(self.best_weights)
        t.weights_epoch = self.best_epoch
        t.log(f"restored the weights of epoch {self.best_epoch} ({self.monitor} = {self.best:.6g})")


class ModelCheckpoint(Callback):
    """Save a checkpoint each epoch, or only when ``monitor`` improves (``save_best_only``).

    ``filepath`` may contain ``{epoch}`` and log keys (``"ckpt-{epoch:03d}.npz"``). The file holds the
    full training state (model, optimizer, scheduler, epoch, RNG, history) unless ``save_weights_only``.
    Files are written atomically; a run stopped by a NaN loss never overwrites the last good one."""

    rank_zero_only = True

    def __init__(
        self,
        filepath,
        monitor: str = "val_loss",
        save_best_only: bool = False,
        mode: str = "auto",
        save_weights_only: bool = False,
    ) -> None:
        self.filepath = os.fspath(filepath)
        self.monitor, self.save_best_only, self.save_weights_only = monitor, save_best_only, save_weights_only
        self.mode, self._better, self._init_best = _better_fn(mode, monitor, 0.0)
        self.best = self._init_best
        self.last_saved: str | None = None
        self._due: str | None = None

    def _path(self, epoch, logs) -> str:
        try:
            return self.filepath.format(**{**logs, "epoch": epoch})
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise ValueError(
                f"ModelCheckpoint: the file name {self.filepath!r} cannot be filled from this "
                f"epoch's logs ({type(exc).__name__}: {exc}); the keys that exist are "
                f"{sorted({**logs, 'epoch': epoch})} (val_* keys need validation data)"
            ) from None

    def on_epoch_end(self, epoch, logs=None) -> None:
        self._due = None
        if self.save_best_only:
            current = _monitored(logs, self.monitor, "ModelCheckpoint")
            if not (math.isfinite(current) and self._better(current, self.best)):
                return
            self.best = current
        self._due = self._path(epoch, logs)

    def on_checkpoint(self, epoch, logs=None) -> None:
        from gpunn.checkpoint import save
        from gpunn.train.state import save_training_state

        path, self._due = self._due, None
        if path is None:
            return
        t = self.trainer
        if self.save_weights_only:
            save(t.model.state_dict(), path)
        else:
            save_training_state(
                path,
                t.model,
                t.optimizer,
                t.scheduler,
                epoch=epoch,
                history=t.history,
                loaders=t.loaders,
                callbacks=t.callbacks,
            )
        self.last_saved = path

    def state_dict(self) -> dict:
        return {"best": self.best, "last_saved": self.last_saved}

    def load_state_dict(self, state: dict) -> None:
        best = float(_number(state, "best", "ModelCheckpoint"))
        last = state.get("last_saved")
        if last is not None and not isinstance(last, str):
            raise ValueError("ModelCheckpoint state: 'last_saved' must be a path or None")
        self.best, self.last_saved = best, last


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
            bad = [name for name, p in t.model.named_parameters() if not bool(p._backend.xp.isfinite(p._data).all())]
            if bad:  # the previous step already broke them (e.g. Adam at a huge learning rate)
                kept = (
                    f"the weights are NOT finite ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''} "
                    "hold inf or NaN): the last step before it broke them"
                )
            else:
                kept = "the weights are those of the last good step"
            t.stop(
                f"loss became {loss} at epoch {t.epoch}, batch {batch + 1}; training stopped, {kept} "
                "(lower the learning rate?)"
            )


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
            self.bar = tqdm(
                total=self.trainer.batches_per_epoch,
                desc=f"epoch {epoch}/{self.trainer.epochs}",
                leave=False,
                unit="batch",
                dynamic_ncols=True,
            )

    def on_batch_end(self, batch, logs=None) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if batch % 10 == 0 and logs:
                self.bar.set_postfix(loss=f"{logs['loss']:.4f}")

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.close()
        if self.verbose:
            print(self.line(epoch, self.trainer.epochs, logs), file=self.stream or sys.stdout, flush=True)

    @staticmethod
    def line(epoch: int, epochs: int, logs: dict) -> str:
        """One epoch's summary, in fixed-width columns (``epoch  9/12`` lines up with ``epoch 10/12``)."""
        width = len(str(epochs))
        parts = [f"epoch {epoch:>{width}}/{epochs}"]
        for k, v in logs.items():
            if k == "epoch":
                continue
            if k == "time":
                parts.append(f"{v:6.2f}s")
            elif k == "lr":
                parts.append(f"lr {v:<8.3g}")
            else:
                parts.append(f"{k} {v:7.4f}")
        return "  ".join(parts).rstrip()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_train_end(self, logs=None) -> None:
        self.close()


class LambdaCallback(Callback):
    """A callback from plain functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``."""

    def __init__(self, **hooks) -> None:
        for name, fn in hooks.items():
            if not hasattr(Callback, name):
                raise ValueError(f"LambdaCallback: unknown hook {name!r}")
            setattr(self, name, fn)


__all__ = [
    "Callback",
    "EarlyStopping",
    "ModelCheckpoint",
    "CSVLogger",
    "TerminateOnNaN",
    "ProgressBar",
    "LambdaCallback",
]
