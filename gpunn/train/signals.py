"""Stopping a training run cleanly: SIGINT (Ctrl-C) and SIGTERM (``timeout``, schedulers, containers).

While ``fit`` runs, the first SIGINT or SIGTERM only records a request; the loop stops at the next step
boundary (after a whole optimizer step, never inside one), drops the unfinished epoch and runs every
callback's ``on_train_end``. A second signal of either kind raises ``KeyboardInterrupt`` at once, for a
run that must not wait for the step to finish. Handlers can only be set in the main thread; elsewhere
``fit`` still stops cleanly on a ``KeyboardInterrupt``.
"""

from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def signal_name(signum: int) -> str:
    return {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}.get(signum, f"signal {signum}")


def exit_code(signum: int) -> int:
    """The shell's convention for a process ended by ``signum``: 128 + its number (130, 143)."""
    return 128 + int(signum)


class StopRequests:
    """Context manager: while active, SIGINT/SIGTERM set ``self.signum`` instead of ending the process."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # asked twice: stop now, even mid-step
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                try:
                    self._previous[sig] = signal.signal(sig, self._handle)
                except (ValueError, OSError):  # e.g. an embedding interpreter that owns its signals
                    pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
