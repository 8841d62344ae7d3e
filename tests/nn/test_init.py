"""nn.init: PyTorch's gains, fans and formulas; statistics of the fills; reproducibility; errors."""

import math

import numpy as np
import pytest

import gpunn
from gpunn import nn
from gpunn.nn import init


def _w(*shape, **kw):
    return nn.Parameter(gpunn.zeros(*shape, **kw))


@pytest.mark.parametrize(
    "nonlinearity,param",
    [
        ("linear", None),
        ("conv2d", None),
        ("sigmoid", None),
        ("tanh", None),
        ("relu", None),
        ("leaky_relu", None),
        ("leaky_relu", 0.2),
        ("leaky_relu", 1),
        ("selu", None),
    ],
)
def test_calculate_gain_equals_torch(nonlinearity, param):
    torch = pytest.importorskip("torch")
    assert init.calculate_gain(nonlinearity, param) == pytest.approx(
        torch.nn.init.calculate_gain(nonlinearity, param), rel=1e-15
    )


def test_calculate_gain_values_and_errors():
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="not a valid number"):
        init.calculate_gain("leaky_relu", "a")


def test_fans():
    assert init._calculate_fan_in_and_fan_out(_w(400, 500)) == (500, 400)
    assert init._calculate_fan_in_and_fan_out(_w(16, 3, 5, 4)) == (3 * 20, 16 * 20)
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init._calculate_fan_in_and_fan_out(_w(5))
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.kaiming_normal_(_w(5))
    with pytest.raises(ValueError, match="Mode fan_avg not supported"):
        init.kaiming_uniform_(_w(3, 3), mode="fan_avg")
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        init.kaiming_normal_(_w(3, 3), nonlinearity="gelu")


def test_kaiming_normal_std_fan_in_and_fan_out():
    w = _w(400, 500)
    assert init.kaiming_normal_(w, nonlinearity="relu") is w
    std = w.detach().numpy().std()
    assert abs(std / math.sqrt(2 / 500) - 1) < 0.02, std
    assert abs(w.detach().numpy().mean()) < 0.01 * math.sqrt(2 / 500) * 10
    init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    assert abs(w.detach().numpy().std() / math.sqrt(2 / 400) - 1) < 0.02
    init.kaiming_normal_(w)  # leaky_relu with a=0 -> gain sqrt(2)
    assert abs(w.detach().numpy().std() / math.sqrt(2 / 500) - 1) < 0.02


def test_kaiming_uniform_bound():
    w = _w(400, 500)
    init.kaiming_uniform_(w, a=math.sqrt(5))
    bound = math.sqrt(3) * math.sqrt(2 / 6) / math.sqrt(500)  # = 1 / sqrt(fan_in)
    v = w.detach().numpy()
    assert np.abs(v).max() <= bound and np.abs(v).max() > 0.999 * bound
    assert abs(v.std() / (bound / math.sqrt(3)) - 1) < 0.02


def test_xavier():
    w = _w(400, 500)
    init.xavier_uniform_(w, gain=2.0)
    a = 2.0 * math.sqrt(6 / 900)
    v = w.detach().numpy()
    assert np.abs(v).max() <= a and np.abs(v).max() > 0.999 * a
    init.xavier_normal_(w)
    assert abs(w.detach().numpy().std() / math.sqrt(2 / 900) - 1) < 0.02


def test_uniform_normal_constant_ones_zeros():
    w = _w(300, 300)
    init.uniform_(w, -0.5, 2.0)
    v = w.detach().numpy()
    assert v.min() >= -0.5 and v.max() < 2.0 and abs(v.mean() - 0.75) < 0.02
    init.normal_(w, mean=3.0, std=0.5)
    v = w.detach().numpy()
    assert abs(v.mean() - 3.0) < 0.01 and abs(v.std() - 0.5) < 0.01
    init.constant_(w, 0.25)
    assert (w.detach().numpy() == 0.25).all()
    init.ones_(w)
    assert (w.detach().numpy() == 1).all()
    init.zeros_(w)
    assert not w.detach().numpy().any()
    assert w.requires_grad and w.dtype == np.float32


def test_float64_tensor_keeps_its_dtype():
    w = _w(20, 30, dtype=gpunn.float64)
    init.kaiming_normal_(w)
    assert w.dtype == np.float64 and w.detach().numpy().std() > 0


def test_reproducible_under_manual_seed():
    fills = [init.kaiming_normal_, init.kaiming_uniform_, init.xavier_uniform_, init.xavier_normal_]
    for fill in fills:
        gpunn.manual_seed(5)
        a = fill(_w(7, 9)).detach().numpy().copy()
        gpunn.manual_seed(5)
        b = fill(_w(7, 9)).detach().numpy().copy()
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, fill(_w(7, 9)).detach().numpy())


def test_init_works_on_a_parameter_while_grad_is_enabled_and_records_no_graph():
    lin = nn.Linear(4, 3)
    assert gpunn.is_grad_enabled()
    init.kaiming_normal_(lin.weight)
    init.zeros_(lin.bias)
    assert lin.weight.is_leaf and lin.bias.is_leaf and not lin.bias.detach().numpy().any()


def test_zero_element_tensor_is_a_no_op_with_a_warning():
    with pytest.warns(UserWarning, match="zero-element"):
        init.kaiming_uniform_(_w(0, 3))
