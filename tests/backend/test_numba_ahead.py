"""Kernels compiled ahead in a helper process (gpunn.backend.numba_ahead) and the on-disk cache the two
processes share (numba_cpu.SharedCache): the helper's tasks compile exactly what a training step then loads;
a helper that dies or is off leaves this process to compile; concurrent saves of one function keep every
entry."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("numba")
ROOT = Path(__file__).resolve().parents[2]

from gpunn.backend import numba_ahead, numba_cpu  # noqa: E402

needs_ahead = pytest.mark.skipif(
    os.name != "posix" or not numba_cpu.SHARED_CACHE, reason="the helper runs on POSIX systems only"
)


def _run(code: str, cache: Path, **env) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_CACHE_DIR": str(cache), "GPUNN_BACKEND": "numpy",
             **env},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


# A training step through every kernel the tasks compile ahead: a first-layer convolution (dW by image) and
# a grouped one (ReLU mask in the layout pass, dx by col2im), max and avg pooling, the GEMM; float32. It
# prints, for each of those kernels, its cache hits and misses here -- after the helper's tasks, no miss.
_STEP = """
import json, numpy as np, gpunn
from gpunn import nn, optim
from gpunn.backend import numpy_backend as nb, numba_cpu as nk
gpunn.manual_seed(0)
model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 16, 3, padding=1),
                      nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16 * 7 * 7, 10))
x = gpunn.tensor(np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32))
y = gpunn.tensor(np.random.default_rng(1).integers(0, 10, 64))
opt = optim.SGD(model.parameters(), lr=0.1)
loss = nn.CrossEntropyLoss()(model(x), y)
loss.backward()
opt.step()
kernels = {k: getattr(nk, k) for k in ("col2im", "swap01_relu_mask", "conv_grad_weight_by_image",
                                       "max_pool_backward", "avg_pool_backward")}
report = {k: [sum(d.stats.cache_hits.values()), sum(d.stats.cache_misses.values())] for k, d in kernels.items()}
if nb._gemm_module:
    report["product_chunk"] = [nb._gemm_module._product_chunk_cfunc.cache_hits, None]
print(json.dumps(report))
"""


@needs_ahead
def test_the_tasks_compile_what_a_training_step_then_loads(tmp_path):
    """The helper's tasks (run alone into an empty cache) leave nothing of theirs for a training step to
    compile: their argument types are those of NumpyBackend's calls. (The step's process has the helper
    off: every kernel it lacks it compiles itself, which the cache-miss counts show.)"""
    import json

    tasks = ["conv_backward:float32", "max_pool_backward:float32", "avg_pool_backward:float32"]
    from gpunn.backend import numpy_backend

    if numpy_backend._load_gemm() is not None:
        tasks.insert(0, "product_chunk")
    helper = subprocess.run(
        [sys.executable, "-m", "gpunn.backend.numba_ahead"],
        input="".join(t + "\n" for t in tasks), capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_CACHE_DIR": str(tmp_path)},
    )  # fmt: skip
    assert helper.returncode == 0, helper.stderr[-3000:]
    assert helper.stdout.split("\n")[:-1] == [f"done {t}" for t in tasks]
    report = json.loads(_run(_STEP, tmp_path, GPUNN_COMPILE_AHEAD="0").splitlines()[-1])
    for kernel, (hits, misses) in report.items():
        assert hits >= 1, f"{kernel} was not loaded from the cache the helper wrote"
        assert not misses, f"{kernel} compiled again: the task's argument types differ from the step's"
    assert ("product_chunk" in report) == ("product_chunk" in tasks)


@needs_ahead
def test_a_cold_step_with_the_helper_gives_the_same_result(tmp_path):
    """On an empty cache, a step with the helper on (the default) asks it for the tasks, waits for them,
    and computes the same loss and gradients as a step with every kernel compiled in its own process."""
    code = _STEP.replace(
        "print(json.dumps(report))",
        "print(json.dumps([float(loss.item())] + [float(np.abs(p.grad.numpy()).sum()) for p in model.parameters()]))"
        "\nprint(json.dumps(sorted(nb._ahead._asked)), nb._ahead._helper is not None, len(nb._ahead._pending))",
    )
    on = _run(code, tmp_path / "on").splitlines()
    off = _run(code, tmp_path / "off", GPUNN_COMPILE_AHEAD="0").splitlines()
    assert on[-2] == off[-2]  # the same bits (printed in full by json)
    asked, started, pending = on[-1].rsplit(" ", 2)
    assert "conv_backward:float32" in asked and "max_pool_backward:float32" in asked
    assert started == "True" and pending == "0"  # a helper ran; every task was waited for
    assert off[-1].endswith("False 0")  # off: no helper


@needs_ahead
def test_a_helper_that_dies_leaves_the_task_to_this_process(monkeypatch):
    """wait returns at once when the helper exits without reporting the task, and forgets it."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    helper = numba_ahead._Helper(dead)
    monkeypatch.setattr(numba_ahead, "_pending", {"conv_backward:float32": helper})
    t0 = time.monotonic()
    numba_ahead.wait("conv_backward")
    assert time.monotonic() - t0 < 30
    assert not numba_ahead._pending and helper.closed


@needs_ahead
def test_a_helper_slower_than_the_timeout_is_stopped(monkeypatch):
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    helper = numba_ahead._Helper(sleeper)
    monkeypatch.setattr(numba_ahead, "_pending", {"max_pool_backward:float64": helper})
    monkeypatch.setattr(numba_ahead, "_TIMEOUT_S", 0.5)
    try:
        numba_ahead.wait("max_pool_backward")
        assert not numba_ahead._pending and helper.closed  # (given up, its pipes closed: never killed)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_off_by_environment_and_asked_once(monkeypatch):
    monkeypatch.setenv("GPUNN_COMPILE_AHEAD", "0")
    monkeypatch.setattr(numba_ahead, "_asked", set())
    started = []
    monkeypatch.setattr(numba_ahead, "_start", lambda tasks: started.append(tasks))
    numba_ahead.ask("conv_backward:float32")
    numba_ahead.ask("conv_backward:float32")
    assert not numba_ahead.enabled() and not started and not numba_ahead._pending
    assert numba_ahead._asked == {"conv_backward:float32"}


def test_unknown_task_raises_in_the_helper():
    with pytest.raises(ValueError, match="no such task"):
        numba_ahead._run("relu_backward:float32")


def test_the_kernels_share_the_cache():
    """Every cached kernel of numba_cpu and numba_gemm loads and saves through SharedCache."""
    from numba.core.registry import CPUDispatcher

    if not numba_cpu.SHARED_CACHE:
        pytest.skip("no fcntl here")
    from gpunn.backend import numba_gemm

    cached = [
        d for m in (numba_cpu, numba_gemm) for d in vars(m).values()
        if isinstance(d, CPUDispatcher) and d._cache.__class__.__name__ != "NullCache"
    ]  # fmt: skip
    assert len(cached) > 15
    assert all(isinstance(d._cache, numba_cpu.SharedCache) for d in cached)


# Two processes save different signatures of one function at the same moment (each save slowed down between
# reading the function's index and writing it back, as a busy machine may); a third then loads both.
_MODULE = """
from numba import njit
from gpunn.backend.numba_cpu import share_cache

@njit(cache=True)
def plus_one(x):
    return x + 1

{share}
"""
_SAVE = """
import sys, time, numpy as np
from numba.core import caching
save_index = caching.IndexDataCacheFile._save_index
def slow_save_index(self, overloads):
    time.sleep(2.0)
    save_index(self, overloads)
caching.IndexDataCacheFile._save_index = slow_save_index
import kern
import os
value = np.float32(1) if sys.argv[1] == "f" else np.int64(1)
open(os.path.join(sys.argv[2], "ready-" + sys.argv[1]), "w").close()
while len([f for f in os.listdir(sys.argv[2]) if f.startswith("ready-")]) < 2:  # (both start together)
    time.sleep(0.01)
assert kern.plus_one(value) == 2
"""
_LOAD = """
import numpy as np, kern
assert kern.plus_one(np.float32(1)) == 2 and kern.plus_one(np.int64(1)) == 2
print(sum(kern.plus_one.stats.cache_misses.values()))
"""


@needs_ahead
@pytest.mark.parametrize("shared", [True, False], ids=["shared-cache", "numba-cache"])
def test_concurrent_saves_of_one_function_keep_both_entries(tmp_path, shared):
    """With SharedCache both signatures load from the cache afterwards. Numba's own cache (the control)
    loses one: the later save rewrites the index without the other's entry."""
    (tmp_path / "kern.py").write_text(_MODULE.format(share="share_cache(globals())" if shared else ""))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]),
           "NUMBA_CACHE_DIR": str(tmp_path / "cache")}  # fmt: skip
    start = str(tmp_path)
    procs = [
        subprocess.Popen([sys.executable, "-c", _SAVE, kind, start], env=env, stderr=subprocess.PIPE, text=True)
        for kind in "fi"
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    out = subprocess.run([sys.executable, "-c", _LOAD], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    misses = int(out.stdout.split()[-1])
    assert misses == (0 if shared else 1)


@needs_ahead
def test_a_file_system_without_locks_loads_unlocked_and_turns_the_helper_off(monkeypatch, tmp_path):
    """Where the lock cannot be taken (ENOSYS: a Lustre or NFS mount without locks) a load still runs,
    unlocked, and the helper is off for the process (its saves could no longer take turns)."""
    import errno

    def no_locks(fd, op):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(numba_cpu.fcntl, "lockf", no_locks)
    monkeypatch.setattr(numba_cpu, "SHARED_CACHE", True)
    cache = numba_cpu.SharedCache(numba_cpu.relu.py_func)
    monkeypatch.setattr(cache, "_cache_path", str(tmp_path))
    ran = []
    with cache._locked():
        ran.append(True)
    assert ran and not numba_cpu.SHARED_CACHE and not numba_ahead.enabled()
