"""Kernels compiled ahead in a helper process while this one compiles others: a cold start on two cores.

On a cold Numba cache (the first run after an install or a change of the kernels) each kernel compiles once,
~0.1-1.5 s of one core each, and a process compiles one function at a time (Numba holds one compiler lock).
Where NumpyBackend meets kernels cold, it hands those it will need later to a helper process (``python -m
gpunn.backend.numba_ahead``): the GEMM's chunk function while this process compiles the product's planning
and entry points; a layer's backward kernels while it compiles and runs the forward ones. The helper compiles
each task into the same cache, one after another as they arrive on its standard input, reports each done on
its standard output, and exits when its input closes or after ``_IDLE_S`` without a task. Before this process
first calls a kernel of a pending task it waits for the task (``wait``), then loads the kernel from the cache
-- or compiles it itself, where the helper failed or was too slow (``_TIMEOUT_S``).

The two processes share the cache safely: each load and save of a kernel holds a lock on the cache
directory (numba_cpu.SharedCache). A task compiles the signatures this process would compile for the same
calls (the argument types of NumpyBackend's calls; tests/backend/test_numba_ahead.py checks them against a
real training step), so waiting for it saves this process the compile.

``GPUNN_COMPILE_AHEAD=0`` turns the helper off (every kernel compiles in this process, one after another);
it runs on POSIX systems only (this process reads the helper's reports with ``poll``). Importing this
module imports neither Numba nor the kernels.
"""

from __future__ import annotations

import atexit
import os
import select
import subprocess
import sys
import threading
import time

import numpy as np

_TIMEOUT_S = 300.0  # the longest this process waits for one task before compiling it itself
_IDLE_S = 30.0  # a helper with no task for this long exits (a later cold kernel starts another)
_lock = threading.Lock()
_helper = None  # the live helper (_Helper), if any
_pending: dict = {}  # task -> the _Helper compiling it; empty when no task is pending (wait's fast path)
_asked: set = set()  # tasks this process has asked for (or found cached): each is asked for once


class _Helper:
    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.done: set = set()
        self.closed = False  # its output ended: it exited (or died)
        self._buf = b""

    def send(self, tasks: list) -> bool:
        try:
            self.proc.stdin.write("".join(t + "\n" for t in tasks).encode())
            self.proc.stdin.flush()
            return True
        except (OSError, ValueError):  # (it exited: a broken pipe, or its input closed here)
            return False

    def read(self, timeout: float) -> None:
        """Take the reports it wrote within ``timeout`` seconds; at the end of its output, reap it."""
        fd = self.proc.stdout.fileno()
        if not _readable(fd, timeout):
            return
        chunk = os.read(fd, 4096)
        if not chunk:
            self.close()
            return
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        self.done.update(line[5:].decode() for line in lines if line.startswith(b"done "))

    def close(self) -> None:
        """Close its pipes: it finishes the task it is compiling and exits (it is never killed: a process
        killed while Numba saves a kernel could leave the cache's index naming an older kernel's data)."""
        self.closed = True
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        self.proc.poll()  # (reaped if it has exited; else the interpreter reaps it later)


def _readable(fd: int, timeout: float) -> bool:
    poller = select.poll()  # (poll, not select: any descriptor number)
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(max(0.0, timeout) * 1000))


def enabled() -> bool:
    from gpunn.backend import numba_cpu

    return (
        os.name == "posix"
        and bool(sys.executable)
        and os.path.basename(sys.executable).lower().startswith("python")  # (not an embedding program)
        and hasattr(select, "poll")
        and os.environ.get("GPUNN_COMPILE_AHEAD", "1").strip() != "0"
        and numba_cpu.SHARED_CACHE  # (the two processes' loads and saves take turns)
    )


def ask(*tasks: str) -> None:
    """Have the helper compile ``tasks`` (names of TASKS), in order, those whose kernels Numba's cache lacks:
    the helper is started where none runs. Each task is asked for once per process; nothing happens where
    the helper is off (``enabled``) or cannot start."""
    global _helper
    if all(t in _asked for t in tasks):  # (the common case: asked before)
        return
    with _lock:
        tasks = [t for t in tasks if t not in _asked]
        _asked.update(tasks)
        if not enabled():
            return
        tasks = [t for t in tasks if not _cached(t)]
        if not tasks:
            return
        if _helper is not None and not _helper.closed:
            if _helper.send(tasks):
                _pending.update((t, _helper) for t in tasks)
                return
            _helper.close()
        helper = _start(tasks)
        if helper is not None:
            _helper = helper
            _pending.update((t, helper) for t in tasks)


def wait(kernels: str) -> None:
    """Return once no task of ``kernels`` (a task's name before its ':', any dtype) is pending: each compiled
    into the cache by the helper, or given up (the helper exited without it, or took over _TIMEOUT_S for
    it: then its pipes are closed, and the caller compiles)."""
    if not _pending:  # (the common case: nothing pending)
        return
    with _lock:
        for task in [t for t in _pending if t.partition(":")[0] == kernels]:
            helper = _pending.get(task)
            if helper is None:
                continue
            deadline = time.monotonic() + _TIMEOUT_S
            while task not in helper.done and not helper.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    helper.close()
                    break
                try:
                    helper.read(left)
                except OSError:  # (its output unreadable: given up)
                    helper.close()
            for t in [t for t, h in _pending.items() if h is helper and (t in helper.done or helper.closed)]:
                del _pending[t]
            _pending.pop(task, None)


def _start(tasks: list):
    """A new helper process given ``tasks``, or None where it cannot start. It imports the modules this
    process imported (this process's sys.path, nothing of the working directory's first) and uses its
    Numba cache directory."""
    import json

    from numba.core import config

    env = dict(os.environ, GPUNN_COMPILE_AHEAD="0")  # (the helper's own kernels start no helper)
    env["NUMBA_CACHE_DIR"] = config.CACHE_DIR or ""
    code = f"import sys; sys.path[:] = {json.dumps(sys.path)}; from gpunn.backend.numba_ahead import main; main()"
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # (a Ctrl-C at the terminal stops this process, which stops the helper)
        )
    except OSError:
        return None
    helper = _Helper(proc)
    if not helper.send(tasks):
        helper.close()
        return None
    return helper


def _stop() -> None:
    """At exit: close the helper's pipes (it finishes its current task, then exits)."""
    global _helper
    if _helper is not None and not _helper.closed:
        _helper.close()
    _helper = None
    _pending.clear()


def _forget_in_child() -> None:  # a forked child: the parent's helper is the parent's
    global _helper, _lock
    _helper, _lock = None, threading.Lock()
    _pending.clear()


atexit.register(_stop)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


# ----------------------------------------------------------------------------------------------
# the tasks: each compiles (or loads) kernels with the argument types of NumpyBackend's calls
# ----------------------------------------------------------------------------------------------
# A task named "<kernels>:<dtype>" takes arrays of that dtype. Values do not matter (types do): small ones.
def _product_chunk() -> None:
    from gpunn.backend import numba_gemm

    numba_gemm.product_chunk_address()


def _conv_backward(dtype) -> None:
    """NumpyBackend.conv2d_backward's kernels: by image (a first layer's dW) and by groups (the ReLU mask
    in the layout pass, col2im); im2col and swap01 come with the forward (this process compiles them)."""
    from gpunn.backend import numba_cpu as nk

    x, y = np.ones((1, 1, 4, 4), dtype), np.ones((1, 2, 4, 4), dtype)
    acc, dacc = np.zeros((2, 9)), np.zeros(2)
    nk.col2im(np.ones((1, 3, 3, 1, 4, 4), dtype), np.empty((1, 1, 4, 4), dtype), 1, 1, 1, 1)
    nk.swap01_relu_mask(y.reshape(1, 2, 16), y.reshape(1, 2, 16), np.empty((2, 1, 16), dtype))
    nk.conv_grad_weight_by_image(x, y, y, acc, dacc, 3, 3, 1, 1, 1, 1, True, True)


def _pool_backward(mode: str, dtype) -> None:
    from gpunn.backend import numba_cpu as nk

    dy, dx = np.ones((1, 2, 2), dtype), np.empty((1, 4, 4), dtype)
    if mode == "max":
        nk.max_pool_backward(dy, np.zeros((1, 2, 2), np.int32), dx, 2, 2, 2, 2, 0, 0)
    else:
        nk.avg_pool_backward(dy, dx, np.full((2, 2), 4, dtype), 2, 2, 2, 2, 0, 0)


def _run(task: str) -> None:
    name, _, dtype = task.partition(":")
    if name == "product_chunk":
        _product_chunk()
    elif name == "conv_backward":
        _conv_backward(np.dtype(dtype))
    elif name in ("max_pool_backward", "avg_pool_backward"):
        _pool_backward(name[:3], np.dtype(dtype))
    else:
        raise ValueError(f"no such task {task!r}")


def _cached(task: str) -> bool:
    """Whether Numba's cache holds compiled code of the task's (first) kernel, as its source is now (any
    signature: a miss only costs this process the compile). True where that cannot be told."""
    try:
        from numba.core.caching import FunctionCache

        from gpunn.backend import numba_cpu as nk

        name = task.partition(":")[0]
        if name == "product_chunk":
            from gpunn.backend import numba_gemm

            fn = numba_gemm._product_chunk  # (a cfunc's cache is a FunctionCache too)
        else:
            fn = ({"conv_backward": nk.conv_grad_weight_by_image}.get(name) or getattr(nk, name)).py_func
        return bool(FunctionCache(fn)._cache_file._load_index())
    except Exception:  # (a Numba whose cache is laid out otherwise: no helper)
        return True


def main() -> None:
    """The helper: compile the tasks named on standard input, one a line, reporting each ``done <task>``;
    exit at the end of the input or after _IDLE_S without a line. A failed task is reported done too (this
    process then compiles it and meets the error itself)."""
    fd = sys.stdin.fileno()
    buf = b""
    while _readable(fd, _IDLE_S):
        chunk = os.read(fd, 4096)
        if not chunk:
            return
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            task = line.decode().strip()
            try:
                _run(task)
            except Exception:  # noqa: BLE001 (reported done: the waiting process compiles and sees the error)
                pass
            sys.stdout.write(f"done {task}\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
