"""Layers against float64 PyTorch (same weights, forward and every gradient), Sequential fusion, Dropout,
default init and input validation."""

import math

import numpy as np
import pytest

import gpunn
from gpunn import nn
from tests.helpers import randn, to_torch

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

F64 = gpunn.float64


def _sync_weights(gmod, tmod):
    """Copy gpunn module's parameters into the torch module (same names)."""
    tparams = dict(tmod.named_parameters())
    names = [n for n, _ in gmod.named_parameters()]
    assert names == list(tparams), f"{names} != {list(tparams)}"
    with torch.no_grad():
        for n, p in gmod.named_parameters():
            tparams[n].copy_(torch.from_numpy(p.detach().numpy().astype(np.float64)))


def _check_against_torch(gmod, tmod, x_np, tol=1e-12):
    """Forward and backward (with a random upstream gradient) agree with torch in float64."""
    _sync_weights(gmod, tmod)
    x = gpunn.tensor(x_np, requires_grad=True)
    tx = to_torch(x_np.astype(np.float64), requires_grad=True)
    out, tout = gmod(x), tmod(tx)
    np.testing.assert_allclose(out.detach().numpy(), tout.detach().numpy(), rtol=tol, atol=tol)
    g = np.random.default_rng(7).standard_normal(tout.shape)
    out.backward(gpunn.tensor(g.astype(out.dtype)))
    tout.backward(torch.from_numpy(g))
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=tol, atol=tol)
    tparams = dict(tmod.named_parameters())
    for n, p in gmod.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), tparams[n].grad.numpy(), rtol=tol, atol=tol, err_msg=n)


# ------------------------------------------------------------------------------------------------
# parity with torch on irregular shapes
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(rng, bias):
    g = nn.Linear(41, 7, bias=bias, dtype=F64)
    t = torch.nn.Linear(41, 7, bias=bias, dtype=torch.float64)
    _check_against_torch(g, t, randn(rng, 9, 41, dtype=np.float64))


def test_linear_on_3d_input_matches_torch(rng):
    g, t = nn.Linear(6, 5, dtype=F64), torch.nn.Linear(6, 5, dtype=torch.float64)
    _check_against_torch(g, t, randn(rng, 2, 3, 6, dtype=np.float64))


def test_linear_float32_is_close_to_float64_reference(rng):
    g = nn.Linear(41, 7)
    assert g.weight.dtype == np.float32
    x = randn(rng, 9, 41)
    ref = x.astype(np.float64) @ g.weight.detach().numpy().T.astype(np.float64) + g.bias.detach().numpy()
    from tests.helpers import assert_close

    assert_close(g(gpunn.tensor(x)).detach(), ref)


@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_matches_torch(rng, bias):
    g = nn.Conv2d(2, 5, (3, 4), stride=2, padding=1, bias=bias, dtype=F64)
    t = torch.nn.Conv2d(2, 5, (3, 4), stride=2, padding=1, bias=bias, dtype=torch.float64)
    _check_against_torch(g, t, randn(rng, 3, 2, 11, 9, dtype=np.float64))


def test_conv2d_int_args_match_torch(rng):
    g = nn.Conv2d(3, 4, 3, dtype=F64)
    t = torch.nn.Conv2d(3, 4, 3, dtype=torch.float64)
    _check_against_torch(g, t, randn(rng, 2, 3, 7, 6, dtype=np.float64))


@pytest.mark.parametrize(
    "make",
    [
        lambda m: m.MaxPool2d(3, stride=2, padding=1),
        lambda m: m.MaxPool2d(2),
        lambda m: m.AvgPool2d(3, stride=2, padding=1),
        lambda m: m.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
        lambda m: m.AvgPool2d((2, 3)),
        lambda m: m.Flatten(),
        lambda m: m.Flatten(2),
        lambda m: m.ReLU(),
        lambda m: m.LeakyReLU(0.2),
        lambda m: m.Sigmoid(),
        lambda m: m.Tanh(),
        lambda m: m.Softmax(dim=1),
        lambda m: m.LogSoftmax(dim=-1),
        lambda m: m.Identity(),
    ],
    ids=[
        "maxpool",
        "maxpool2",
        "avgpool",
        "avgpool-nopad",
        "avgpool23",
        "flatten",
        "flatten2",
        "relu",
        "leaky",
        "sigmoid",
        "tanh",
        "softmax",
        "logsoftmax",
        "identity",
    ],
)
def test_parameter_free_layers_match_torch(rng, make):
    _check_against_torch(make(nn), make(torch.nn), randn(rng, 3, 2, 11, 9, dtype=np.float64))


def test_small_cnn_matches_torch(rng):
    def build(m, **kw):
        return m.Sequential(
            m.Conv2d(1, 4, 3, padding=1, **kw),
            m.ReLU(),
            m.MaxPool2d(2),
            m.Flatten(),
            m.Linear(4 * 5 * 4, 10, **kw),
            m.Tanh(),
            m.Linear(10, 3, **kw),
        )

    _check_against_torch(
        build(nn, dtype=F64), build(torch.nn, dtype=torch.float64), randn(rng, 5, 1, 11, 9, dtype=np.float64)
    )


# ------------------------------------------------------------------------------------------------
# Sequential fusion
# ------------------------------------------------------------------------------------------------
def _mlp():
    return nn.Sequential(
        nn.Linear(13, 11, dtype=F64),
        nn.ReLU(),
        nn.Linear(11, 9, dtype=F64),
        nn.LeakyReLU(0.2),
        nn.Linear(9, 8, dtype=F64),
        nn.Sigmoid(),
        nn.Linear(8, 6, dtype=F64),
        nn.Tanh(),
        nn.Linear(6, 4, dtype=F64),
    )


def test_sequential_fuses_linear_and_activation_into_one_call(rng, monkeypatch):
    model = _mlp()
    be = gpunn.get_backend()
    calls = []
    original = be.linear_act

    def counting(x, W, b, act="none", negative_slope=0.01):
        calls.append((act, negative_slope))
        return original(x, W, b, act, negative_slope)

    monkeypatch.setattr(be, "linear_act", counting)
    model(gpunn.tensor(randn(rng, 5, 13, dtype=np.float64)))
    assert calls == [("relu", 0.01), ("leaky_relu", 0.2), ("sigmoid", 0.01), ("tanh", 0.01), ("none", 0.01)]


def test_fused_sequential_equals_unfused_values_and_grads(rng):
    model = _mlp()
    x_np = randn(rng, 5, 13, dtype=np.float64)
    upstream = gpunn.tensor(rng.standard_normal((5, 4)))

    x1 = gpunn.tensor(x_np, requires_grad=True)
    fused = model(x1)
    fused.backward(upstream)
    grads_fused = [p.grad.numpy().copy() for p in model.parameters()]

    model.zero_grad()
    x2 = gpunn.tensor(x_np, requires_grad=True)
    h = x2
    for m in model:  # one module at a time: never fused
        h = m(h)
    h.backward(upstream)
    np.testing.assert_allclose(fused.detach().numpy(), h.detach().numpy(), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(x1.grad.numpy(), x2.grad.numpy(), rtol=1e-12, atol=1e-14)
    for gf, p in zip(grads_fused, model.parameters()):
        np.testing.assert_allclose(gf, p.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_fused_mlp_matches_torch(rng):
    def build(m, **kw):
        return m.Sequential(
            m.Linear(13, 11, **kw),
            m.ReLU(),
            m.Linear(11, 9, **kw),
            m.LeakyReLU(0.2),
            m.Linear(9, 8, **kw),
            m.Sigmoid(),
            m.Linear(8, 4, **kw),
            m.Tanh(),
        )

    _check_against_torch(
        build(nn, dtype=F64), build(torch.nn, dtype=torch.float64), randn(rng, 5, 13, dtype=np.float64)
    )


def test_activation_subclass_with_own_forward_is_not_fused(rng):
    class HalfReLU(nn.ReLU):
        def forward(self, x):
            return super().forward(x) * 0.5

    lin = nn.Linear(4, 3, dtype=F64)
    x = gpunn.tensor(randn(rng, 2, 4, dtype=np.float64))
    out = nn.Sequential(lin, HalfReLU())(x)
    np.testing.assert_allclose(out.detach().numpy(), np.maximum(lin(x).detach().numpy(), 0) * 0.5)


def test_sequential_list_api():
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    seq = nn.Sequential(a, b)
    assert len(seq) == 2 and seq[0] is a and seq[-1] is b and list(seq) == [a, b]
    seq.append(c)
    assert seq[2] is c
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert isinstance(seq[1:], nn.Sequential) and list(seq[1:]) == [b, c]
    with pytest.raises(IndexError):
        seq[3]
    del seq[1]
    assert list(seq._modules) == ["0", "1"] and seq[1] is c
    named = nn.Sequential(__import__("collections").OrderedDict([("fc", a), ("act", b)]))
    assert named.fc is a and [n for n, _ in named.named_children()] == ["fc", "act"]


def test_module_list_registers_parameters():
    layers = nn.ModuleList(nn.Linear(3, 3) for _ in range(3))
    layers.append(nn.Linear(3, 1))
    assert len(layers) == 4 and layers[-1].out_features == 1
    assert len(list(layers.parameters())) == 8
    assert [n for n, _ in layers.named_parameters()][:2] == ["0.weight", "0.bias"]
    assert len(layers[1:3]) == 2


# ------------------------------------------------------------------------------------------------
# Dropout
# ------------------------------------------------------------------------------------------------
def test_dropout_eval_is_identity_and_train_drops_p_and_scales():
    x = gpunn.ones(200, 500, requires_grad=True)
    drop = nn.Dropout(0.3)
    drop.eval()
    np.testing.assert_array_equal(drop(x).detach().numpy(), x.detach().numpy())
    drop.train()
    out = drop(x)
    y = out.detach().numpy()
    zero_frac = float((y == 0).mean())
    assert abs(zero_frac - 0.3) < 0.01, zero_frac
    np.testing.assert_allclose(y[y != 0], 1 / 0.7, rtol=1e-6)
    out.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), y, rtol=1e-6)  # gradient = mask / (1 - p)


def test_dropout_edge_probabilities_and_validation():
    x = gpunn.randn(50, 40)
    np.testing.assert_array_equal(nn.Dropout(0.0)(x).numpy(), x.numpy())
    assert not nn.Dropout(1.0)(x).numpy().any()
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            nn.Dropout(p)
    assert repr(nn.Dropout(0.25)) == "Dropout(p=0.25, inplace=False)"


def test_dropout_is_reproducible_under_manual_seed():
    x = gpunn.ones(30, 30)
    gpunn.manual_seed(11)
    a = nn.Dropout(0.5)(x).numpy()
    gpunn.manual_seed(11)
    b = nn.Dropout(0.5)(x).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, nn.Dropout(0.5)(x).numpy())


# ------------------------------------------------------------------------------------------------
# default init and validation
# ------------------------------------------------------------------------------------------------
def test_default_init_matches_torch_bounds():
    lin = nn.Linear(300, 400)
    bound = 1 / math.sqrt(300)  # kaiming_uniform_(a=sqrt(5)) on fan_in=300
    w, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.02 * bound
    assert np.abs(b).max() <= bound and np.abs(b).max() > 0.9 * bound
    conv = nn.Conv2d(3, 64, 5)
    cbound = 1 / math.sqrt(3 * 25)
    assert np.abs(conv.weight.detach().numpy()).max() <= cbound
    assert np.abs(conv.bias.detach().numpy()).max() <= cbound
    assert conv.weight.shape == (64, 3, 5, 5)


def test_default_init_is_reproducible_under_manual_seed():
    gpunn.manual_seed(3)
    a = nn.Linear(10, 10).weight.detach().numpy()
    gpunn.manual_seed(3)
    b = nn.Linear(10, 10).weight.detach().numpy()
    np.testing.assert_array_equal(a, b)


def test_linear_rejects_wrong_feature_count():
    with pytest.raises(ValueError, match=r"(?s)41.*40|40.*41"):
        nn.Linear(41, 7)(gpunn.randn(9, 40))
    with pytest.raises(ValueError, match=r"(?s)41.*40|40.*41"):
        nn.Sequential(nn.Linear(41, 7), nn.ReLU())(gpunn.randn(9, 40))  # the fused path checks too


def test_conv2d_rejects_bad_inputs():
    conv = nn.Conv2d(2, 4, 3)
    for shape in ((11, 9), (1, 1, 2, 11, 9)):  # (2, 11, 9) is one unbatched image, as in PyTorch
        with pytest.raises(ValueError, match="4-D"):
            conv(gpunn.randn(*shape))
    with pytest.raises(ValueError, match=r"(?s)3 channels.*expected 2"):
        conv(gpunn.randn(1, 3, 11, 9))
    with pytest.raises(ValueError):
        nn.Conv2d(2, 4, 3, stride=0)


def test_layer_reprs():
    assert repr(nn.Linear(784, 200)) == "Linear(in_features=784, out_features=200, bias=True)"
    assert repr(nn.Conv2d(1, 8, 3, padding=1)) == "Conv2d(1, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))"
    assert repr(nn.MaxPool2d(2)) == "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)"
    assert repr(nn.LeakyReLU()) == "LeakyReLU(negative_slope=0.01)"
    assert repr(nn.Flatten()) == "Flatten(start_dim=1, end_dim=-1)"
    assert repr(nn.Softmax(dim=1)) == "Softmax(dim=1)"
