"""Metrics accumulated on the device during an epoch and read once at its end."""

from __future__ import annotations


class Metric:
    """Accumulates a running (numerator, denominator) pair; ``value()`` syncs once."""

    name = "metric"

    def reset(self) -> None:
        self.num = 0
        self.den = 0

    def update(self, outputs, targets) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def value(self) -> float:
        return float(self.num) / self.den if self.den else float("nan")


class Accuracy(Metric):
    """Fraction of correct predictions: argmax over classes for (N, C) outputs, ``> 0`` for (N,) logits.

    NaN when any output was NaN: a NaN row has no argmax (NumPy would call it class 0), so no accuracy
    can honestly be reported for it."""

    name = "accuracy"

    def update(self, outputs, targets) -> None:
        out, y = outputs._data, targets._data
        xp = outputs._backend.xp
        if out.ndim == 2 and out.shape[1] > 1:
            correct = outputs._backend.accuracy_count(out, y)
        else:
            pred = out.argmax(axis=1) if out.ndim > 2 else (out.reshape(y.shape) > 0).astype(y.dtype)
            correct = (pred == y).sum()
        # the count stays on the device until value(), which reads it once; a NaN output makes it NaN
        # (counts stay exact in float64 up to 2**53)
        self.num = self.num + correct + xp.where(xp.isnan(out).any(), xp.nan, 0.0)
        self.den += int(y.size)


class FunctionMetric(Metric):
    """Wraps ``fn(outputs, targets) -> float`` as a batch-size-weighted mean."""

    def __init__(self, fn, name=None) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "metric")

    def update(self, outputs, targets) -> None:
        n = int(targets.shape[0]) if targets.ndim else 1
        self.num = self.num + float(self.fn(outputs, targets)) * n
        self.den += n


def make_metrics(specs) -> list[Metric]:
    out = []
    for s in specs or ():
        if isinstance(s, Metric):
            m = s
        elif s in ("accuracy", "acc"):
            m = Accuracy()
        elif callable(s):
            m = FunctionMetric(s)
        else:
            raise ValueError(f"unknown metric {s!r}: use 'accuracy', a Metric, or a callable(outputs, targets)")
        m.reset()
        out.append(m)
    return out
