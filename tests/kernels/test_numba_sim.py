"""The Numba kernels (gpunn/backend/numba_kernels.py) without a GPU.

- The Philox stream and the dropout mask reference are checked in-process with NumPy alone
  (Random123's known-answer vectors, keep rate, offset composition); the dropout kernel itself is CUDA C
  (kernels/dropout.cu), tested against that reference in tests/kernels/test_cupy_kernels.py.
- The kernels themselves run under Numba's CUDA simulator in a SUBPROCESS: NUMBA_ENABLE_CUDASIM must be
  set before Numba is first imported, and another test may already have imported it in this process.
- A second subprocess compiles them to PTX with the real Numba CUDA compiler (type inference and NVVM;
  no device needed), skipped where NVVM is missing.
Skipped cleanly when numba (numba-cuda) is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpunn.backend import numba_kernels as nk

ROOT = Path(__file__).resolve().parents[2]
HAVE_NUMBA = importlib.util.find_spec("numba") is not None
needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="numba / numba-cuda is not installed")

# (counter, key, expected): Random123 tests/kat_vectors, the three "philox4x32 10" lines
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


# ----------------------------------------------------------------------------------------------
# NumPy only
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("counter,key,expected", PHILOX_KAT)
def test_philox_known_answers(counter, key, expected):
    assert [int(v) for v in nk.philox4x32_10(counter, key)] == list(expected)


def test_reference_mask_keep_rate_and_offsets():
    p, n = 0.3, 1_000_000
    mask = nk.dropout_mask_reference(n, p, seed=2024)
    rate = mask.mean()
    assert abs(rate - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)
    # the mask of elements [offset, offset + n) is a slice of the stream: offsets compose
    whole = nk.dropout_mask_reference(1000, p, seed=5, offset=3)
    parts = np.concatenate(
        [nk.dropout_mask_reference(37, p, seed=5, offset=3), nk.dropout_mask_reference(963, p, seed=5, offset=40)]
    )
    assert (whole == parts).all()
    assert not (nk.dropout_mask_reference(1000, p, seed=6, offset=3) == whole).all()
    assert nk.dropout_mask_reference(100, 0.0, seed=1).all()
    assert not nk.dropout_mask_reference(100, 1.0, seed=1).any()
    with pytest.raises(ValueError):
        nk.keep_threshold(1.5)


# ----------------------------------------------------------------------------------------------
# the simulator, in a subprocess
# ----------------------------------------------------------------------------------------------
SIM_SCRIPT = r"""
import json, sys, traceback
sys.setswitchinterval(1e-6)  # the simulator runs each CUDA thread as a Python thread
import numpy as np
from gpunn.backend import numba_kernels as nk

results = {}
def check(fn):
    try:
        fn()
        results[fn.__name__] = "ok"
    except Exception:
        results[fn.__name__] = traceback.format_exc()
    return fn

rng = np.random.default_rng(0)

@check
def accuracy_count_matches_argmax():
    logits = rng.standard_normal((57, 6)).astype(np.float32)
    logits[3, [1, 4]] = 9.0          # a tie: the first index wins
    logits[8, 2] = np.nan            # NaN counts as the maximum, as in np.argmax
    target = rng.integers(0, 6, 57)
    target[3], target[8] = 1, 2
    count = nk.accuracy_count(logits, target, threads=16)
    assert count.dtype == np.int64 and count.shape == (1,)
    assert int(count[0]) == int((np.argmax(logits, axis=1) == target).sum())

print("RESULTS" + json.dumps(results))
"""

PTX_SCRIPT = r"""
import json
from gpunn.backend import numba_kernels as nk
nk.kernels()
from numba import cuda, types as t
out = {}
try:
    for dt in (t.float32, t.float64):
        ptx, res = cuda.compile_ptx(nk._accuracy_count_kernel, (dt[:, ::1], t.int64[::1], t.int64[::1]),
                                    cc=(9, 0))
        assert ".entry" in ptx and str(res) == "none", res
    out["status"] = "ok"
except Exception as exc:
    import traceback
    msg = traceback.format_exc()
    out["status"] = "skip" if ("NVVM" in msg or "libnvvm" in msg.lower()) else "fail"
    out["detail"] = msg
print("RESULTS" + json.dumps(out))
"""


def _run(script: str, sim: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    if sim:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS")]
    assert proc.returncode == 0 and lines, f"subprocess failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1][len("RESULTS") :])


@pytest.fixture(scope="module")
def sim_results():
    return _run(SIM_SCRIPT, sim=True)


SIM_CHECKS = ["accuracy_count_matches_argmax"]


@needs_numba
@pytest.mark.parametrize("check", SIM_CHECKS)
def test_in_simulator(sim_results, check):
    assert sim_results.get(check) == "ok", sim_results.get(check, f"{check} did not run: {sim_results}")


@needs_numba
def test_compiles_to_ptx_with_numba():
    out = _run(PTX_SCRIPT, sim=False)
    if out["status"] == "skip":
        pytest.skip(f"Numba cannot find NVVM here: {out['detail'].splitlines()[-1]}")
    assert out["status"] == "ok", out.get("detail")


@needs_numba
def test_device_arrays_are_wrapped_without_a_stream_sync(monkeypatch):
    """Numba syncs on every __cuda_array_interface__ argument unless it gets as_cuda_array(a, sync=False)."""
    from numba import cuda

    seen = []
    monkeypatch.setattr(cuda, "as_cuda_array", lambda a, sync=True: seen.append(sync) or ("wrapped", a))

    class DeviceArray:
        __cuda_array_interface__ = {"shape": (1,), "typestr": "<f4", "data": (0, False), "version": 3}

    dev, host = DeviceArray(), np.zeros(1)
    out = nk._device_args((dev, host, np.uint64(3)))
    assert out[0] == ("wrapped", dev) and out[1] is host and seen == [False]
    assert nk._device_args((host,)) == (host,)
