"""On a GPU: whole training runs agree between the numpy and cupy backends, and the Numba-backed
dropout/accuracy primitives behave. Marked ``gpu``: skipped where CuPy sees no GPU (CI)."""

import numpy as np
import pytest

import gpunn
import gpunn.nn.functional as F
from gpunn import nn, optim

pytestmark = pytest.mark.gpu


def _train(backend: str, model_kind: str, steps: int = 100):
    from gpunn.cli import build_model

    rng = np.random.default_rng(0)
    shape = (1, 12, 12) if model_kind == "cnn" else (64,)
    X = rng.random((steps * 16,) + shape, dtype=np.float32)
    y = rng.integers(0, 10, steps * 16)
    with gpunn.use_backend("numpy"):
        gpunn.manual_seed(0)
        init = build_model(model_kind, shape, 10, 0.0).state_dict()  # the same initial weights for both
    with gpunn.use_backend(backend):
        model = build_model(model_kind, shape, 10, 0.0)
        model.load_state_dict({k: v.numpy() for k, v in init.items()})
        opt = (
            optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
            if model_kind == "mlp"
            else optim.Adam(model.parameters(), lr=1e-3)
        )
        loss_fn = nn.CrossEntropyLoss()
        losses = []
        for i in range(steps):
            xb, yb = gpunn.tensor(X[i * 16 : (i + 1) * 16]), gpunn.tensor(y[i * 16 : (i + 1) * 16])
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return np.array(losses)


@pytest.mark.parametrize("model_kind", ["mlp", "cnn"])
def test_numpy_and_cupy_training_agree_over_100_steps(model_kind):
    a, b = _train("numpy", model_kind), _train("cupy", model_kind)
    rel = np.abs(a - b) / np.abs(a)
    assert rel.max() < 1e-4, f"worst step {rel.argmax()}: numpy {a[rel.argmax()]} vs cupy {b[rel.argmax()]}"


def test_dropout_on_cupy_uses_one_mask_for_forward_and_backward():
    with gpunn.use_backend("cupy"):
        gpunn.manual_seed(3)
        x = gpunn.ones(300, 200, requires_grad=True)
        out = F.dropout(x, 0.3)
        out.sum().backward()
        y, g = out.detach().numpy(), x.grad.numpy()
        assert abs((y == 0).mean() - 0.3) < 0.01
        assert np.allclose(y[y != 0], 1 / 0.7)
        assert np.array_equal(y, g)  # same mask, regenerated in backward
        gpunn.manual_seed(3)
        again = F.dropout(gpunn.ones(300, 200), 0.3).numpy()
        assert np.array_equal(again, y)  # reproducible under manual_seed


def test_accuracy_count_on_cupy_matches_numpy(rng):
    logits, y = rng.standard_normal((1000, 10)).astype(np.float32), rng.integers(0, 10, 1000)
    expected = int((logits.argmax(1) == y).sum())
    from gpunn.backend import backend_for

    be = backend_for("cupy")
    assert int(be.accuracy_count(be.asarray(logits), be.asarray(y))) == expected
