"""``History``: what ``fit`` returns -- one dict per epoch (losses, metrics, lr, time)."""

from __future__ import annotations

import csv
import io
import math
import os

from gpunn._io import atomic_path, atomic_write_text


class History:
    """Per-epoch records of a training run.

    ``history.epochs`` is a list of dicts ({"epoch": 1, "loss": ..., "accuracy": ..., "val_loss": ...,
    "lr": ..., "time": ...}); ``history["val_loss"]`` is one column; ``history.history`` all columns
    (Keras-style); ``stop_reason`` says why training ended early (None when it ran all epochs);
    ``stop_signal`` is the number of the signal (SIGINT, SIGTERM) that stopped it, else None."""

    def __init__(self, epochs=None) -> None:
        self.epochs: list[dict] = list(epochs or [])
        self.stop_reason: str | None = None
        self.stop_signal: int | None = None
        self.best_epoch: int | None = None

    def append(self, record: dict) -> None:
        self.epochs.append(dict(record))

    def __len__(self) -> int:
        return len(self.epochs)

    def __getitem__(self, key: str) -> list:
        return [e.get(key, math.nan) for e in self.epochs]

    @property
    def keys(self) -> list[str]:
        seen: dict[str, None] = {}
        for e in self.epochs:
            for k in e:
                seen.setdefault(k, None)
        return list(seen)

    @property
    def history(self) -> dict[str, list]:
        return {k: self[k] for k in self.keys}

    def last(self, key: str, default=math.nan):
        return self.epochs[-1].get(key, default) if self.epochs else default

    def to_csv(self, path=None) -> str:
        """The history as CSV text (one row per epoch); also written atomically to ``path`` if given."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.keys, lineterminator="\n")
        writer.writeheader()
        for e in self.epochs:
            writer.writerow(e)
        text = buf.getvalue()
        if path is not None:
            atomic_write_text(path, text)
        return text

    def state_dict(self) -> dict:
        return {
            "epochs": [dict(e) for e in self.epochs],
            "stop_reason": self.stop_reason,
            "best_epoch": self.best_epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        self.epochs = [dict(e) for e in state.get("epochs", [])]
        self.stop_reason = state.get("stop_reason")
        self.best_epoch = state.get("best_epoch")

    def lr_changes(self) -> list[tuple[int, float]]:
        """(epoch, new lr) for every epoch whose learning rate differs from the epoch before."""
        out, prev = [], None
        for e in self.epochs:
            lr = e.get("lr")
            if lr is not None and prev is not None and lr != prev:
                out.append((e.get("epoch"), lr))
            prev = lr if lr is not None else prev
        return out

    def figure(self, title: str | None = None):
        """A matplotlib Figure: train/val loss (left) and metrics (right) per epoch, with the best (restored)
        epoch and every learning-rate change marked by vertical lines."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as exc:  # pragma: no cover - matplotlib is in the train extra
            raise ImportError("History.plot needs matplotlib: pip install 'gpunn[train]'") from exc
        if not self.epochs:
            raise ValueError("History.plot(): the history is empty (no epoch finished)")
        epochs = self["epoch"]
        metric_keys = [
            k for k in self.keys if k not in ("epoch", "loss", "val_loss", "lr", "time") and not k.startswith("val_")
        ]
        ncols = 2 if metric_keys else 1
        fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 4), squeeze=False)
        ax = axes[0][0]
        ax.plot(epochs, self["loss"], "o-", label="train")
        if "val_loss" in self.keys:
            ax.plot(epochs, self["val_loss"], "s-", label="validation")
        ax.set(xlabel="epoch", ylabel="loss", title="loss")
        if metric_keys:
            ax = axes[0][1]
            for k in metric_keys:
                ax.plot(epochs, self[k], "o-", label=f"train {k}")
                if f"val_{k}" in self.keys:
                    ax.plot(epochs, self[f"val_{k}"], "s-", label=f"validation {k}")
            ax.set(xlabel="epoch", ylabel=", ".join(metric_keys), title=", ".join(metric_keys))
        for ax in axes[0]:
            for i, (epoch, lr) in enumerate(self.lr_changes()):
                ax.axvline(
                    epoch, color="0.5", linestyle=":", linewidth=1, label="learning rate changed" if i == 0 else None
                )
                ax.annotate(
                    f"lr {lr:.2g}",
                    (epoch, 1.0),
                    xycoords=("data", "axes fraction"),
                    fontsize=7,
                    color="0.4",
                    rotation=90,
                    ha="right",
                    va="top",
                )
            if self.best_epoch is not None:
                ax.axvline(
                    self.best_epoch,
                    color="tab:green",
                    linestyle="--",
                    linewidth=1.2,
                    label=f"best epoch {self.best_epoch} (restored)",
                )
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        return fig

    def plot(self, path, title: str | None = None) -> str:
        """Write ``figure(title)`` as a PNG (atomically); returns the path."""
        import matplotlib.pyplot as plt

        fig = self.figure(title)
        path = os.fspath(path)
        try:
            with atomic_path(path, suffix=".png") as tmp:
                fig.savefig(tmp, dpi=110, format="png")
        finally:
            plt.close(fig)
        return path

    def __repr__(self) -> str:
        return f"History({len(self)} epochs, keys={self.keys}, stop_reason={self.stop_reason!r})"
