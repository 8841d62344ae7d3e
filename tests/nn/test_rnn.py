"""nn.RNN / LSTM / GRU and their cells against PyTorch 2.13 in float64: outputs, final states and the gradients
of the input and of every parameter (PyTorch's names and shapes), for several layers, both directions,
batch_first, unbatched inputs and given initial states; init ranges, reprs and PyTorch's errors."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
from tests.helpers import torch_or_skip

torch = torch_or_skip()


def _same_weights(rng, gm, tm):
    names = []
    with torch.no_grad(), gpunn.no_grad():
        for (n1, p1), (n2, p2) in zip(gm.named_parameters(), tm.named_parameters()):
            assert n1 == n2 and tuple(p1.shape) == tuple(p2.shape)
            v = rng.standard_normal(tuple(p2.shape)) * 0.4
            p1.copy_(gpunn.tensor(v))
            p2.copy_(torch.tensor(v))
            names.append(n1)
    assert len(names) == len(list(tm.parameters()))


def _close(a, b):
    np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-10, atol=1e-12)


LAYERS = [
    ("RNN", {}),
    ("RNN", {"nonlinearity": "relu", "num_layers": 2}),
    ("LSTM", {}),
    ("LSTM", {"num_layers": 2, "bidirectional": True, "batch_first": True}),
    ("LSTM", {"bias": False}),
    ("GRU", {}),
    ("GRU", {"num_layers": 3, "bidirectional": True}),
    ("GRU", {"batch_first": True, "num_layers": 2, "dropout": 0.5}),  # dropout acts in training mode: eval here
]


@pytest.mark.parametrize("name, kwargs", LAYERS)
@pytest.mark.parametrize("given_state", [False, True])
def test_recurrent_layer_matches_torch(rng, name, kwargs, given_state):
    gm, tm = getattr(gpunn.nn, name)(5, 4, dtype=gpunn.float64, **kwargs), getattr(torch.nn, name)(5, 4, **kwargs)
    tm = tm.double()
    _same_weights(rng, gm, tm)
    gm.eval(), tm.eval()
    assert repr(gm) == repr(tm) and list(gm.state_dict()) == list(tm.state_dict())
    x = rng.standard_normal((6, 3, 5))
    dirs = 2 if kwargs.get("bidirectional") else 1
    lstm = name == "LSTM"
    args_g, args_t = [gpunn.tensor(x, requires_grad=True)], [torch.tensor(x, requires_grad=True)]
    if given_state:
        shape = (kwargs.get("num_layers", 1) * dirs, 6 if kwargs.get("batch_first") else 3, 4)
        hs = [rng.standard_normal(shape) for _ in range(2 if lstm else 1)]
        args_g.append(tuple(gpunn.tensor(h) for h in hs) if lstm else gpunn.tensor(hs[0]))
        args_t.append(tuple(torch.tensor(h) for h in hs) if lstm else torch.tensor(hs[0]))
    (go, gh), (to, th) = gm(*args_g), tm(*args_t)
    up = rng.standard_normal(tuple(to.shape))
    losses = []
    for L, o, h in ((gpunn, go, gh), (torch, to, th)):
        loss = (o * L.tensor(up)).sum()
        for k, s in enumerate(h if lstm else (h,)):
            loss = loss + s.sum() * (0.3 + k)
        losses.append(loss)
    losses[0].backward(), losses[1].backward()
    _close(go, to)
    for a, b in zip(gh if lstm else (gh,), th if lstm else (th,)):
        _close(a, b)
    _close(args_g[0].grad, args_t[0].grad)
    for p1, p2 in zip(gm.parameters(), tm.parameters()):
        _close(p1.grad, p2.grad)


@pytest.mark.parametrize("name", ["RNNCell", "LSTMCell", "GRUCell"])
@pytest.mark.parametrize("batched", [True, False])
def test_cells_match_torch(rng, name, batched):
    gm, tm = getattr(gpunn.nn, name)(5, 4, dtype=gpunn.float64), getattr(torch.nn, name)(5, 4).double()
    _same_weights(rng, gm, tm)
    assert repr(gm) == repr(tm)
    x = rng.standard_normal((3, 5) if batched else (5,))
    gx, tx = gpunn.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    go, to = gm(gx), tm(tx)
    go, to = (go if isinstance(go, tuple) else (go,)), (to if isinstance(to, tuple) else (to,))
    sum(o.sum() * (k + 1) for k, o in enumerate(go)).backward()
    sum(o.sum() * (k + 1) for k, o in enumerate(to)).backward()
    for a, b in zip(go, to):
        _close(a, b)
    _close(gx.grad, tx.grad)


def test_unbatched_sequence_and_init_range_like_torch(rng):
    gpunn.manual_seed(0)
    gm = gpunn.nn.LSTM(3, 8, num_layers=2)
    bound = 1 / np.sqrt(8)
    for p in gm.parameters():
        v = p.detach().numpy()
        assert p.dtype == np.float32 and np.abs(v).max() <= bound and v.std() > bound / 3
    out, (h, c) = gm(gpunn.randn(7, 3))
    assert out.shape == (7, 8) and h.shape == (2, 8) and c.shape == (2, 8)


def test_training_mode_dropout_between_layers_changes_the_output():
    gpunn.manual_seed(0)
    m = gpunn.nn.GRU(4, 6, num_layers=2, dropout=0.5)
    x = gpunn.randn(5, 2, 4)
    m.eval()
    a, b = m(x)[0], m(x)[0]
    np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
    m.train()
    assert not np.allclose(m(x)[0].detach().numpy(), a.detach().numpy())


@pytest.mark.parametrize(
    "fn, exc, match",
    [
        (lambda L: L.nn.LSTM(3, 4)(L.ones(2, 2, 5)), RuntimeError, "input_size"),
        (lambda L: L.nn.GRU(3, 4)(L.ones(2, 2, 3), L.zeros(2, 2, 4)), RuntimeError, "hidden size"),
        (lambda L: L.nn.RNN(3, 4)(L.ones(2, 2, 2, 3)), ValueError, "2D or 3D"),
        (lambda L: L.nn.RNN(3, 4, nonlinearity="gelu"), ValueError, "nonlinearity"),
    ],
)
def test_errors_like_torch(fn, exc, match):
    for L in (gpunn, torch):
        with pytest.raises(exc, match=match):
            fn(L)


def test_dropout_with_one_layer_warns_like_torch():
    for L in (gpunn, torch):
        with pytest.warns(UserWarning, match="num_layers greater than 1"):
            L.nn.LSTM(3, 4, dropout=0.2)
