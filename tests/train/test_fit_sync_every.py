"""fit(..., sync_every=k): the batch losses are read back every k steps (and the last partial group at the
end of the epoch), with the same training as k = 1 and NaNs still caught, up to k - 1 steps late."""

import numpy as np
import pytest

import gpunn
from gpunn import nn, optim, train
from gpunn.data import DataLoader
from gpunn.train.callbacks import Callback


def _data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 12)).astype(np.float32), rng.integers(0, 4, n)


def _model():
    gpunn.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4))


class Recorder(Callback):
    def __init__(self):
        self.losses, self.ends = [], []

    def on_batch_loss(self, batch, loss):
        self.losses.append((batch, loss))

    def on_batch_end(self, batch, logs=None):
        self.ends.append(batch)


def _fit(sync_every, loss_fn=None, epochs=2, weights=True, **kw):
    X, y = _data()
    model = _model()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rec = Recorder()
    loader = DataLoader((X, y), batch_size=16, shuffle=True, seed=3)  # 13 batches: 4 + 4 + 4 + 1 with k = 4
    hist = train.fit(
        model,
        opt,
        loss_fn or nn.CrossEntropyLoss(),
        loader,
        epochs=epochs,
        verbose=0,
        callbacks=[rec],
        sync_every=sync_every,
        **kw,
    )
    return hist, rec, ({k: v.numpy().copy() for k, v in model.state_dict().items()} if weights else None)


@pytest.mark.parametrize("k", [2, 4, 13, 50])
def test_same_training_and_history_as_every_step(k):
    h1, r1, w1 = _fit(1)
    hk, rk, wk = _fit(k)
    assert rk.losses == r1.losses and rk.ends == r1.ends == list(range(13)) * 2  # every batch, in order
    np.testing.assert_allclose(hk["loss"], h1["loss"], rtol=1e-12)
    np.testing.assert_allclose(hk["accuracy"], h1["accuracy"], rtol=1e-12)
    for name in w1:
        np.testing.assert_array_equal(wk[name], w1[name])


def test_losses_are_read_once_per_group(monkeypatch):
    be = gpunn.get_backend()
    reads = []
    original = be.to_numpy
    monkeypatch.setattr(be, "to_numpy", lambda a: reads.append(np.shape(a)) or original(a))
    _fit(4, epochs=1, metrics=(), weights=False)
    assert reads == [(4,), (4,), (4,), ()]  # three full groups, then the last batch alone at epoch end
    reads.clear()
    _fit(1, epochs=1, metrics=(), weights=False)
    assert reads == [()] * 13


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "3", None])
def test_sync_every_is_validated(bad):
    with pytest.raises(ValueError, match="sync_every must be a positive int"):
        _fit(bad)


def test_nan_is_caught_up_to_k_minus_1_steps_late():
    calls = []

    def loss_fn(out, y):  # batch 5 (0-based) of epoch 1 gives a NaN loss
        loss = nn.functional.cross_entropy(out, y)
        calls.append(1)
        return loss * float("nan") if len(calls) == 6 else loss

    hist, rec, w = _fit(4, loss_fn=loss_fn)
    assert hist.stop_reason and "loss became nan" in hist.stop_reason and "batch 6" in hist.stop_reason
    assert len(hist) == 0  # the epoch never completes
    assert len(calls) == 8  # the group of batches 4..7 ran (and stepped) before its losses were read
    assert [b for b, _ in rec.losses] == [0, 1, 2, 3, 4, 5] and rec.ends == [0, 1, 2, 3, 4]
    assert any(np.isnan(v).any() for v in w.values())  # documented: the bad step already touched the weights
    # with k = 1 the NaN batch never steps
    calls.clear()
    hist1, _, w1 = _fit(1, loss_fn=loss_fn)
    assert "batch 6" in hist1.stop_reason and len(calls) == 6
    assert all(np.isfinite(v).all() for v in w1.values())
