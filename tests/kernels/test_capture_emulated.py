"""compile_step on the cupy backend, under the kernel emulator (tests/kernels/emulator.py): the captured MLP
and CNN give the eager loop's parameters bit for bit after 50 steps (dropout on), and a replayed step reads
nothing back from the device and never synchronizes.

Only meaningful under the emulator (tests/kernels/test_emulated.py runs this file there); skipped elsewhere.
Dropout uses the generic seeded mask here (its Numba kernel needs a real driver), in both loops alike.

Not pinned to zero: allocations. A replay launches the same kernels as the eager step, each allocating its
outputs from CuPy's pool; only the autograd bookkeeping and the gradient copies are gone. The count is pinned
to be the same on every replay and below the eager step's.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import gpunn
from gpunn import nn, optim
from gpunn.train import compile_step

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        os.environ.get("GPUNN_KERNEL_EMULATOR") != "1",
        reason="runs the cupy backend on the kernel emulator's CuPy stand-in",
    ),
]


@pytest.fixture
def emulated(monkeypatch):
    import cupy

    from gpunn.backend import backend_for
    from gpunn.backend.base import Backend

    be = backend_for("cupy")
    monkeypatch.setattr(be, "dropout", lambda x, p: Backend.dropout(be, x, p))
    return cupy


def mlp():
    return nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 5))


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.1),
        nn.Conv2d(3, 4, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 2 * 2, 5),
    )


def _run(make, shape, opt_kind, captured, cupy, steps=50):
    rng = np.random.default_rng(7)
    with gpunn.use_backend("cupy"):
        gpunn.manual_seed(0)
        model = make()
        opt = (
            optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            if opt_kind == "sgd"
            else optim.Adam(model.parameters(), lr=1e-2)
        )
        loss_fn = nn.CrossEntropyLoss()
        data = [
            (gpunn.tensor(rng.standard_normal(shape).astype(np.float32)), gpunn.tensor(rng.integers(0, 5, shape[0])))
            for _ in range(steps)
        ]
        step = compile_step(model, loss_fn, opt) if captured else None
        counts, losses = [], []
        for x, y in data:
            cupy.reset_counters()
            if captured:
                loss = step(x, y)
            else:
                opt.zero_grad()
                loss = loss_fn(model(x), y)
                loss.backward()
                opt.step()
            counts.append(dict(cupy.counters))
            losses.append(loss)
        values = [float(v) for v in gpunn.stack(losses).tolist()]  # one read, after the steps
        params = [p._backend.to_numpy(p._data).copy() for p in model.parameters()]
    return params, values, counts


@pytest.mark.parametrize("opt_kind", ["sgd", "adam"])
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_captured_equals_eager_and_a_replay_never_waits(emulated, kind, opt_kind):
    make, shape = (mlp, (8, 20)) if kind == "mlp" else (cnn, (4, 1, 8, 8))
    steps = 50
    p0, l0, c0 = _run(make, shape, opt_kind, False, emulated, steps)
    p1, l1, c1 = _run(make, shape, opt_kind, True, emulated, steps)
    assert l0 == l1 and np.isfinite(l0).all()
    for a, b in zip(p0, p1):
        np.testing.assert_array_equal(a, b)
    replays = c1[1:]
    assert all(c["d2h"] == 0 and c["sync"] == 0 for c in replays), replays[:3]
    assert len({c["alloc"] for c in replays[1:]}) == 1, [c["alloc"] for c in replays]
    if kind == "mlp":  # the CNN's replay calls the conv/pool primitives as eager does, at no fewer arrays
        assert replays[-1]["alloc"] < c0[-1]["alloc"], (replays[-1], c0[-1])
