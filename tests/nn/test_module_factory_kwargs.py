"""PyTorch's factory keywords on modules: ``device`` and ``dtype``, by keyword or in PyTorch's positional slot
(pytorch/examples' mnist_forward_forward calls ``super().__init__(in_features, out_features, bias, device,
dtype)`` on a Linear subclass). ``device`` means what ``Module.to(device)`` after construction means: 'cpu',
a ``gpunn.device`` or None keep the module on the CPU here; 'cuda' without a GPU raises CUDA's error."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
from gpunn import nn
from tests.helpers import torch_or_skip

torch = torch_or_skip()

# every gpunn.nn module that takes device= and dtype=, built with them as keywords
BUILDERS = {
    "Linear": lambda L, **kw: L.nn.Linear(5, 3, **kw),
    "Conv1d": lambda L, **kw: L.nn.Conv1d(2, 3, 3, **kw),
    "Conv2d": lambda L, **kw: L.nn.Conv2d(2, 3, 3, **kw),
    "ConvTranspose2d": lambda L, **kw: L.nn.ConvTranspose2d(2, 3, 3, **kw),
    "BatchNorm1d": lambda L, **kw: L.nn.BatchNorm1d(4, **kw),
    "BatchNorm2d": lambda L, **kw: L.nn.BatchNorm2d(4, **kw),
    "InstanceNorm1d": lambda L, **kw: L.nn.InstanceNorm1d(4, affine=True, **kw),
    "InstanceNorm2d": lambda L, **kw: L.nn.InstanceNorm2d(4, affine=True, **kw),
    "GroupNorm": lambda L, **kw: L.nn.GroupNorm(2, 4, **kw),
    "LayerNorm": lambda L, **kw: L.nn.LayerNorm(4, **kw),
    "Embedding": lambda L, **kw: L.nn.Embedding(10, 4, **kw),
    "PReLU": lambda L, **kw: L.nn.PReLU(3, **kw),
    "RNN": lambda L, **kw: L.nn.RNN(4, 3, **kw),
    "LSTM": lambda L, **kw: L.nn.LSTM(4, 3, **kw),
    "GRU": lambda L, **kw: L.nn.GRU(4, 3, **kw),
    "RNNCell": lambda L, **kw: L.nn.RNNCell(4, 3, **kw),
    "LSTMCell": lambda L, **kw: L.nn.LSTMCell(4, 3, **kw),
    "GRUCell": lambda L, **kw: L.nn.GRUCell(4, 3, **kw),
    "MultiheadAttention": lambda L, **kw: L.nn.MultiheadAttention(4, 2, **kw),
    "TransformerEncoderLayer": lambda L, **kw: L.nn.TransformerEncoderLayer(4, 2, 8, **kw),
}


def test_builders_cover_every_module_with_a_device_keyword():
    import inspect

    have = set()
    for name in dir(nn):
        cls = getattr(nn, name)
        if inspect.isclass(cls) and issubclass(cls, nn.Module):
            try:
                if "device" in inspect.signature(cls.__init__).parameters:
                    have.add(name)
            except (TypeError, ValueError):
                pass
    assert have == set(BUILDERS)


def _tensors(m):
    return [*m.parameters(), *m.buffers()]


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("device", ["cpu", "cpu:0", gpunn.device("cpu"), None])
def test_device_keyword_like_module_to(name, device):
    if gpunn.get_backend().name != "numpy":
        pytest.skip("the cpu device is the numpy backend")
    m = BUILDERS[name](gpunn, device=device, dtype=gpunn.float64)
    assert _tensors(m)
    for t in _tensors(m):
        assert t.device == gpunn.device("cpu")
        if np.issubdtype(t.dtype, np.floating):
            assert t.dtype == np.float64
    ref = BUILDERS[name](torch, device=str(device) if device is not None else None, dtype=torch.float64)
    assert [tuple(p.shape) for p in m.parameters()] == [tuple(p.shape) for p in ref.parameters()]


@pytest.mark.skipif(gpunn.cuda.is_available(), reason="checks the error raised without a GPU")
@pytest.mark.parametrize("name", list(BUILDERS))
def test_device_cuda_without_a_gpu_raises_like_module_to(name):
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        BUILDERS[name](gpunn, device="cuda")


@pytest.mark.parametrize("name", ["Linear", "Conv2d", "LSTM"])
def test_unknown_device_raises_naming_it(name):
    with pytest.raises((RuntimeError, TypeError), match="meta"):  # PyTorch's meta device: not in gpunn
        BUILDERS[name](gpunn, device="meta")


def test_linear_device_and_dtype_positional_like_torch(rng):
    """PyTorch's order: Linear(in_features, out_features, bias, device, dtype)."""
    x = rng.standard_normal((6, 5))
    res = []
    for L in (gpunn, torch):
        m = L.nn.Linear(5, 3, False, "cpu", L.float64)
        assert m.bias is None and m.weight.dtype == L.float64
        with L.no_grad():
            m.weight.copy_(L.tensor(np.arange(15.0).reshape(3, 5) / 7))
        res.append(m(L.tensor(x)).detach().numpy())
    np.testing.assert_allclose(res[0], res[1], rtol=1e-12)


def test_linear_subclass_passing_device_and_dtype_positionally(rng):
    """pytorch/examples mnist_forward_forward's Layer(nn.Linear)."""
    x = rng.standard_normal((5, 7)).astype(np.float32)
    outs = []
    for L in (gpunn, torch):

        class Layer(L.nn.Linear):
            def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
                super().__init__(in_features, out_features, bias, device, dtype)
                self.relu = L.nn.ReLU()

            def forward(self, x):
                x_direction = x / (x.norm(2, 1, keepdim=True) + 1e-4)
                return self.relu(L.mm(x_direction, self.weight.T) + self.bias.unsqueeze(0))

        layer = Layer(7, 4)
        assert layer.weight.dtype == L.float32 and layer.bias.shape == (4,)
        with L.no_grad():
            layer.weight.copy_(L.tensor(np.linspace(-1, 1, 28).reshape(4, 7), dtype=L.float32))
            layer.bias.copy_(L.tensor([0.1, -0.2, 0.3, 0.0], dtype=L.float32))
        outs.append(layer(L.tensor(x)).detach().numpy())
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-6, atol=1e-7)
