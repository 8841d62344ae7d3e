"""Host syncs and allocations per fitted training step on the cupy backend, counted by the kernel emulator's
stand-in for CuPy (tests/kernels/emulator.py: device-to-host reads, synchronize calls, fresh arrays).

Only meaningful under the emulator (tests/kernels/test_emulated.py runs this file there); skipped elsewhere.
What is pinned: with ``sync_every=1`` exactly one device-to-host read per step (the loss, which also brings
back the cross-entropy label flag), with ``sync_every=k`` none between the reads of a group; never a
``synchronize``; the same allocations every step after the first (optimizer state), at most ALLOC_BUDGET.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import gpunn
from gpunn import nn, optim, train
from gpunn.data import DataLoader

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        os.environ.get("GPUNN_KERNEL_EMULATOR") != "1", reason="counts come from the kernel emulator's CuPy stand-in"
    ),
]
# fresh device arrays per MLP step (forward, loss, backward, SGD step), as measured on the emulator when
# pinned; a change that adds allocations to the step must raise this knowingly (28 -> 33: the accuracy
# metric's NaN flag, so that a NaN output reports a NaN accuracy, accumulated on the device)
ALLOC_BUDGET = {"sgd": 33, "adam": 33}


@pytest.fixture
def cupy_counters(monkeypatch):
    import cupy

    from gpunn.backend import backend_for
    from gpunn.backend.base import Backend

    be = backend_for("cupy")
    # the accuracy metric's Numba kernel needs a real driver: count on the device with the generic code
    monkeypatch.setattr(be, "accuracy_count", lambda logits, target: Backend.accuracy_count(be, logits, target))
    return cupy.counters, cupy.reset_counters


def _fit_and_count(counters, reset, sync_every, opt_kind, batches=9, epochs=1):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((batches * 8, 20)).astype(np.float32)
    y = rng.integers(0, 5, batches * 8)
    with gpunn.use_backend("cupy"):
        gpunn.manual_seed(0)
        model = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 5))
        opt = (
            optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            if opt_kind == "sgd"
            else optim.Adam(model.parameters(), lr=1e-3)
        )
        loader = DataLoader((X, y), batch_size=8, shuffle=True, seed=1)
        per_step = []
        step = opt.step

        def counted_step(*a, **k):  # one snapshot per step, taken after the optimizer's update
            out = step(*a, **k)
            per_step.append(dict(counters))
            reset()
            return out

        opt.step = counted_step
        reset()
        hist = train.fit(model, opt, nn.CrossEntropyLoss(), loader, epochs=epochs, verbose=0, sync_every=sync_every)
        tail = dict(counters)
    assert np.isfinite(hist["loss"]).all()
    return per_step, tail


@pytest.mark.parametrize("opt_kind", ["sgd", "adam"])
def test_one_host_read_per_step_by_default(cupy_counters, opt_kind):
    per_step, tail = _fit_and_count(*cupy_counters, 1, opt_kind)
    assert [s["d2h"] for s in per_step] == [1] * 9  # the loss (with the label flag in the same copy)
    assert all(s["sync"] == 0 for s in per_step) and tail["sync"] == 0
    assert tail["d2h"] == 1  # the epoch's accuracy, read once at its end
    allocs = [s["alloc"] for s in per_step]
    assert len(set(allocs[1:])) == 1, f"allocations per step vary: {allocs}"
    assert allocs[1] <= ALLOC_BUDGET[opt_kind], f"{allocs[1]} fresh arrays per step > {ALLOC_BUDGET[opt_kind]}"


@pytest.mark.parametrize("opt_kind", ["sgd", "adam"])
def test_no_host_read_between_groups_with_sync_every(cupy_counters, opt_kind):
    per_step, tail = _fit_and_count(*cupy_counters, 4, opt_kind)
    # steps 1-4 run without a read; the group (4 losses, one copy) is read after step 4, i.e. it shows in
    # the counts taken at step 5; likewise steps 5-8; the lone 9th batch is read at the epoch's end
    assert [s["d2h"] for s in per_step] == [0, 0, 0, 0, 1, 0, 0, 0, 1]
    assert all(s["sync"] == 0 for s in per_step)
    assert tail["d2h"] == 2 and tail["sync"] == 0  # the last partial group, then the accuracy
    allocs = [s["alloc"] for s in per_step]
    # no read: one fresh array fewer than a read step (the packed copy); a group read: the concatenation too
    assert max(allocs[1:]) <= ALLOC_BUDGET[opt_kind] + 1, allocs
    assert allocs[1:4] == allocs[5:8], allocs


def test_a_bad_label_still_raises_at_the_loss_read(cupy_counters):
    counters, reset = cupy_counters
    with gpunn.use_backend("cupy"):
        logits = gpunn.randn(6, 4)
        target = gpunn.tensor(np.array([0, 1, 2, 3, 4, 0]))
        reset()
        loss = nn.CrossEntropyLoss()(logits, target)
        assert counters["d2h"] == 0 and counters["sync"] == 0  # nothing waited at the call
        with pytest.raises(ValueError, match=r"target label 4 is out of range for 4 classes"):
            loss.item()
        assert counters["d2h"] == 1
