"""BatchNorm1d/2d, Dropout2d, ELU, GELU, Softplus, AdaptiveAvgPool2d and ModuleDict against PyTorch:
forward and backward (tests/helpers.parity), running statistics over several steps, eval mode, state dicts."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
import gpunn.nn.functional as F
from gpunn import nn
from tests.helpers import parity, randn, torch_at_least

torch = pytest.importorskip("torch")
DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "case",
    [
        ("elu", lambda L, x: L.nn.functional.elu(x)),
        ("elu_alpha", lambda L, x: L.nn.functional.elu(x, alpha=0.3)),
        ("gelu", lambda L, x: L.nn.functional.gelu(x)),
        ("gelu_tanh", lambda L, x: L.nn.functional.gelu(x, approximate="tanh")),
        ("softplus", lambda L, x: L.nn.functional.softplus(x)),
        ("softplus_beta_threshold", lambda L, x: L.nn.functional.softplus(x, beta=3.0, threshold=2.0)),
        ("adaptive_1x1", lambda L, x: L.nn.functional.adaptive_avg_pool2d(x, 1)),
        ("adaptive_3x4", lambda L, x: L.nn.functional.adaptive_avg_pool2d(x, (3, 4))),
        ("adaptive_none", lambda L, x: L.nn.functional.adaptive_avg_pool2d(x, (None, 5))),
        ("adaptive_bigger", lambda L, x: L.nn.functional.adaptive_avg_pool2d(x, (9, 13))),
    ],
    ids=lambda c: c[0],
)
def test_pointwise_and_adaptive_pool_parity(rng, dtype, case):
    _, fn = case
    parity(rng, fn, [randn(rng, 3, 7, 9, 11) * 3], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(9, 7), (9, 7, 41), (4, 7, 5, 3)])
def test_batch_norm_functional_parity(rng, dtype, shape):
    c = shape[1]
    x, w, b = randn(rng, *shape) * 2 + 1, randn(rng, c), randn(rng, c)
    parity(rng, lambda L, x, w, b: L.nn.functional.batch_norm(x, None, None, w, b, training=True), [x, w, b], dtype)
    mean, var = randn(rng, c), rng.random(c).astype(np.float32) + 0.5

    def eval_fn(L, x, w, b):
        m, v = L.tensor(mean.astype(np.float64)).to(x.dtype), L.tensor(var.astype(np.float64)).to(x.dtype)
        return L.nn.functional.batch_norm(x, m, v, w, b, training=False, eps=1e-3)

    parity(rng, eval_fn, [x, w, b], dtype)


def _pair(cls_name, dtype, **kwargs):
    ours = getattr(nn, cls_name)(**kwargs)
    theirs = getattr(torch.nn, cls_name)(**kwargs)
    if dtype == np.float64:
        ours, theirs = ours.double(), theirs.double()
    with torch.no_grad():
        for (n, p), (tn, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
            assert n == tn
            v = np.random.default_rng(len(n)).standard_normal(p.shape).astype(dtype)
            p._data[...] = p._backend.asarray(v)
            tp.copy_(torch.from_numpy(v))
    return ours, theirs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "cls,shape", [("BatchNorm1d", (9, 7)), ("BatchNorm1d", (9, 7, 41)), ("BatchNorm2d", (4, 7, 5, 3))]
)
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"momentum": None}, {"momentum": 0.3, "eps": 1e-3}, {"affine": False}, {"track_running_stats": False}],
    ids=["default", "cumulative", "momentum_eps", "no_affine", "untracked"],
)
def test_batch_norm_module_matches_torch_over_steps(rng, dtype, cls, shape, kwargs):
    ours, theirs = _pair(cls, dtype, num_features=shape[1], **kwargs)
    tol = 1e-5 if dtype == np.float32 else 1e-11
    for step in range(4):
        x = (randn(rng, *shape, dtype=dtype) * (step + 1) + step).astype(dtype)
        g = randn(rng, *shape, dtype=dtype)
        xs, xt = gpunn.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        y, yt = ours(xs), theirs(xt)
        np.testing.assert_allclose(y.detach().numpy(), yt.detach().numpy(), rtol=tol, atol=tol)
        (y * gpunn.tensor(g)).sum().backward()
        (yt * torch.from_numpy(g)).sum().backward()
        np.testing.assert_allclose(xs.grad.numpy(), xt.grad.numpy(), rtol=tol * 10, atol=tol * 10)
        for p, tp in zip(ours.parameters(), theirs.parameters()):
            np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=tol * 10, atol=tol * 10)
            p.grad, tp.grad = None, None
    sd, tsd = ours.state_dict(), theirs.state_dict()
    assert list(sd) == list(tsd)
    for k in tsd:
        np.testing.assert_allclose(np.asarray(sd[k].numpy()), tsd[k].numpy(), rtol=tol, atol=tol, err_msg=k)
        assert sd[k].dtype == np.dtype(str(tsd[k].dtype).removeprefix("torch."))
    # eval mode: the running statistics (or the batch's, untracked)
    ours.eval()
    theirs.eval()
    x = (randn(rng, *shape, dtype=dtype) + 0.5).astype(dtype)
    xs, xt = gpunn.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, yt = ours(xs), theirs(xt)
    np.testing.assert_allclose(y.detach().numpy(), yt.detach().numpy(), rtol=tol, atol=tol)
    y.sum().backward()
    yt.sum().backward()
    np.testing.assert_allclose(xs.grad.numpy(), xt.grad.numpy(), rtol=tol * 10, atol=tol * 10)
    if ours.track_running_stats:
        assert int(ours.num_batches_tracked.item()) == 4


def test_batch_norm_state_dict_loads_from_torch_and_errors(rng):
    theirs = torch.nn.BatchNorm2d(5)
    theirs(torch.randn(6, 5, 3, 3) * 3 + 2)
    ours = nn.BatchNorm2d(5)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    ours.eval()
    theirs.eval()
    x = randn(rng, 2, 5, 4, 4)
    np.testing.assert_allclose(
        ours(gpunn.tensor(x)).detach().numpy(), theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(5)(gpunn.tensor(randn(rng, 1, 5)))
    with pytest.raises(ValueError, match="4D"):
        nn.BatchNorm2d(5)(gpunn.tensor(randn(rng, 2, 5)))
    with pytest.raises(ValueError, match="channels"):
        nn.BatchNorm1d(4)(gpunn.tensor(randn(rng, 3, 5)))


def test_batch_norm_in_a_cnn_trains_with_an_optimizer(rng):
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )
    opt = gpunn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = gpunn.tensor(randn(rng, 16, 1, 6, 6)), gpunn.tensor(rng.integers(0, 3, 16))
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert int(model[1].num_batches_tracked.item()) == 15


def test_dropout2d_zeroes_whole_channels(rng):
    gpunn.manual_seed(3)
    x = gpunn.tensor(randn(rng, 8, 16, 5, 4) + 10, requires_grad=True)
    m = nn.Dropout2d(0.5)
    y = m(x)
    yn = y.detach().numpy()
    per_channel = yn.reshape(8, 16, -1)
    zero = np.all(per_channel == 0, axis=2)
    kept = np.all(per_channel != 0, axis=2)
    assert np.all(zero | kept) and 20 < zero.sum() < 108  # whole channels, about half of 128
    np.testing.assert_allclose(per_channel[kept], 2 * x.detach().numpy().reshape(8, 16, -1)[kept], rtol=1e-6)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy().reshape(8, 16, -1)[zero], 0)
    np.testing.assert_allclose(x.grad.numpy().reshape(8, 16, -1)[kept], 2.0)
    m.eval()
    assert m(x) is x
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout2d(1.5)


def _draw_granularity(y: np.ndarray) -> tuple:
    """The dims along which a dropout output of an all-ones input is constant (the mask's broadcast dims)."""
    return tuple(d for d in range(y.ndim) if np.all(y == np.take(y, [0], axis=d)))


@pytest.mark.parametrize("shape", [(40, 30), (6, 20, 9), (4, 12, 3, 5), (3, 10, 2, 3, 2)])
def test_dropout2d_draws_per_sample_and_channel_of_any_input_as_pytorch(shape):
    """PyTorch's feature dropout: one draw per entry of the first two dims, whatever the number of dims (a 3-D
    input is (N, C, L), not an unbatched image), with its warnings for 3-D and for other than 3-D or 4-D."""
    import warnings

    got, want = [], []
    for lib, out in ((gpunn, got), (torch, want)):
        lib.manual_seed(0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            y = lib.nn.functional.dropout2d(lib.ones(shape), 0.5)
        out += [_draw_granularity(y.numpy()), len(caught)]
    assert got == want and got[0] == tuple(range(2, len(shape)))
    for lib in (gpunn, torch):
        with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="at least 2 dim"):
            lib.nn.functional.dropout2d(lib.ones(7), 0.5)


@pytest.mark.parametrize("fn", ["dropout", "dropout2d"])
def test_dropout_inplace_writes_its_input_as_pytorch(fn):
    x = gpunn.ones(4, 6, 3, 3) * 1.0
    y = getattr(F, fn)(x, 0.5, True, inplace=True)
    assert y is x and (x.numpy() == 0).any() and set(np.unique(x.numpy())) <= {0.0, 2.0}
    m = (nn.Dropout if fn == "dropout" else nn.Dropout2d)(0.5, inplace=True)
    x = gpunn.ones(4, 6, 3, 3) * 1.0
    assert m(x) is x and (x.numpy() == 0).any()
    w = gpunn.ones(4, 6, 3, 3, requires_grad=True)
    h = w * 3.0
    out = getattr(F, fn)(h, 0.5, True, inplace=True)
    out.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), np.where(h.detach().numpy() == 0, 0.0, 6.0))


def test_activation_modules_and_bad_arguments(rng):
    x = randn(rng, 6, 5) * 3
    for ours, theirs in [
        (nn.ELU(0.5), torch.nn.ELU(0.5)),
        (nn.GELU("tanh"), torch.nn.GELU("tanh")),
        (nn.GELU(), torch.nn.GELU()),
        (nn.Softplus(2.0, 4.0), torch.nn.Softplus(2.0, 4.0)),
    ]:
        np.testing.assert_allclose(
            ours(gpunn.tensor(x)).numpy(), theirs(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6
        )
        assert repr(ours) == repr(theirs)
    with pytest.raises(ValueError, match="approximate"):
        nn.GELU("erf")
    with pytest.raises(ValueError, match="approximate"):
        F.gelu(gpunn.tensor(x), approximate="fast")
    with pytest.raises(ValueError, match="output_size"):
        F.adaptive_avg_pool2d(gpunn.tensor(randn(rng, 1, 2, 4, 4)), (0, 2))
    a = gpunn.tensor(x.astype(np.float64), requires_grad=True)
    b = a * 1
    F.elu(b, inplace=True)
    assert b.grad_fn is not None


def test_module_dict():
    d = nn.ModuleDict({"conv": nn.Conv2d(1, 2, 3), "act": nn.ReLU()})
    d["head"] = nn.Linear(2, 3)
    d.update([("bn", nn.BatchNorm1d(3))])
    assert list(d) == ["conv", "act", "head", "bn"] and len(d) == 4 and "act" in d
    names = [n for n, _ in d.named_parameters()]
    assert names == ["conv.weight", "conv.bias", "head.weight", "head.bias", "bn.weight", "bn.bias"]
    assert "bn.running_mean" in d.state_dict() and "bn.num_batches_tracked" in d.state_dict()
    assert isinstance(d.pop("act"), nn.ReLU) and "act" not in d
    assert [k for k, _ in d.items()] == list(d.keys())
    theirs = torch.nn.ModuleDict(
        {"conv": torch.nn.Conv2d(1, 2, 3), "head": torch.nn.Linear(2, 3), "bn": torch.nn.BatchNorm1d(3)}
    )
    assert list(d.state_dict()) == list(theirs.state_dict())
    with pytest.raises(TypeError, match="Module"):
        d["x"] = 3
    with pytest.raises(ValueError, match="pair"):
        d.update([("a",)])
    del d["conv"]
    assert list(d) == ["head", "bn"]


# ------------------------------------------------------------------------------------------------
# conv dilation / groups, pool ceil_mode
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "cfg",
    [
        dict(dilation=2),
        dict(dilation=(2, 3), padding=2, stride=2),
        dict(groups=3),
        dict(groups=6, stride=(2, 1)),
        dict(groups=3, dilation=2, padding=1),
        dict(groups=2, bias=False, padding=(0, 2)),
        dict(padding="same", dilation=(1, 2)),
        dict(padding="same", dilation=(3, 2), groups=3),
        dict(padding="valid", stride=2),
    ],
    ids=str,
)
def test_conv2d_dilation_groups_parity(rng, dtype, cfg):
    cfg = dict(cfg)
    use_bias = cfg.pop("bias", True)
    groups = cfg.get("groups", 1)
    x, w, b = randn(rng, 2, 6, 11, 9), randn(rng, 12, 6 // groups, 3, 2), randn(rng, 12)
    if use_bias:
        parity(rng, lambda L, x, w, b: L.nn.functional.conv2d(x, w, b, **cfg), [x, w, b], dtype)
    else:
        parity(rng, lambda L, x, w: L.nn.functional.conv2d(x, w, **cfg), [x, w], dtype)


def test_conv2d_module_groups_dilation_state_dict_matches_torch(rng):
    ours = nn.Conv2d(4, 8, 3, stride=1, padding=2, dilation=2, groups=2)
    theirs = torch.nn.Conv2d(4, 8, 3, stride=1, padding=2, dilation=2, groups=2)
    assert ours.weight.shape == tuple(theirs.weight.shape) == (8, 2, 3, 3)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = randn(rng, 2, 4, 9, 9)
    np.testing.assert_allclose(
        ours(gpunn.tensor(x)).detach().numpy(), theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-5
    )
    assert repr(ours) == repr(theirs)
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(4, 6, 3, groups=4)
    with pytest.raises(ValueError, match="groups=3 must divide"):
        F.conv2d(gpunn.tensor(randn(rng, 1, 4, 5, 5)), gpunn.tensor(randn(rng, 6, 2, 3, 3)), groups=3)
    with pytest.raises(ValueError, match="expects 9"):
        F.conv2d(gpunn.tensor(randn(rng, 1, 6, 5, 5)), gpunn.tensor(randn(rng, 6, 3, 3, 3)), groups=3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "op,cfg",
    [
        ("max", dict(kernel_size=2)),
        ("max", dict(kernel_size=3, stride=2)),
        ("max", dict(kernel_size=3, stride=2, padding=1)),
        ("max", dict(kernel_size=(2, 3), stride=(3, 2))),
        ("avg", dict(kernel_size=2)),
        ("avg", dict(kernel_size=3, stride=2, padding=1)),
        ("avg", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
        ("avg", dict(kernel_size=(2, 3), stride=(3, 2))),
    ],
    ids=str,
)
def test_pool_ceil_mode_parity(rng, dtype, op, cfg):
    fn = "max_pool2d" if op == "max" else "avg_pool2d"
    grew = False
    for shape in [(2, 3, 9, 7), (3, 10, 11)]:
        out = parity(
            rng, lambda L, x: getattr(L.nn.functional, fn)(x, ceil_mode=True, **cfg), [randn(rng, *shape)], dtype
        )
        grew |= out.shape[-2:] != getattr(torch.nn.functional, fn)(torch.zeros(shape), **cfg).shape[-2:]
    assert grew  # the cases really have a last partial window


def test_pool_modules_ceil_mode_and_unsupported_options(rng):
    x = randn(rng, 1, 2, 7, 7)
    for ours, theirs in [
        (nn.MaxPool2d(2, ceil_mode=True), torch.nn.MaxPool2d(2, ceil_mode=True)),
        (
            nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
            torch.nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
        ),
    ]:
        got, want = ours(gpunn.tensor(x)).numpy(), theirs(torch.from_numpy(x)).numpy()
        assert got.shape == want.shape == (1, 2, 4, 4)
        np.testing.assert_allclose(got, want, rtol=1e-6)
    with pytest.raises(NotImplementedError, match="return_indices"):
        nn.MaxPool2d(2, return_indices=True)
    with pytest.raises(NotImplementedError, match="dilation"):
        F.max_pool2d(gpunn.tensor(x), 2, dilation=2)
    with pytest.raises(NotImplementedError, match="divisor_override"):
        nn.AvgPool2d(2, divisor_override=3)


def test_conv2d_string_padding_module_and_unsupported_cases(rng):
    """padding='same'/'valid' as in PyTorch; the asymmetric 'same' (even effective kernel) raises rather than
    padding differently from PyTorch."""
    ours, theirs = nn.Conv2d(3, 4, (3, 5), padding="same"), torch.nn.Conv2d(3, 4, (3, 5), padding="same")
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = randn(rng, 2, 3, 7, 6)
    np.testing.assert_allclose(
        ours(gpunn.tensor(x)).detach().numpy(), theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(NotImplementedError, match="asymmetric"):
        nn.Conv2d(3, 4, 2, padding="same")
    with pytest.raises(NotImplementedError, match="asymmetric"):
        F.conv2d(gpunn.tensor(x), gpunn.tensor(randn(rng, 4, 3, 2, 3)), padding="same")
    with pytest.raises(ValueError, match="strided"):
        F.conv2d(gpunn.tensor(x), gpunn.tensor(randn(rng, 4, 3, 3, 3)), padding="same", stride=2)
    with pytest.raises(ValueError, match="'full'"):
        F.conv2d(gpunn.tensor(x), gpunn.tensor(randn(rng, 4, 3, 3, 3)), padding="full")


def test_unbatched_image_through_conv_relu_pool_matches_torch(rng):
    """A (C, H, W) input is one unbatched image for nn.Conv2d (fused with its ReLU in a Sequential) and the
    pools, as in PyTorch: values and input gradients equal torch's; a wrong channel count still raises."""
    gpunn.manual_seed(3)
    conv = nn.Conv2d(3, 5, (3, 2), stride=(1, 2), padding=1)
    tconv = torch.nn.Conv2d(3, 5, (3, 2), stride=(1, 2), padding=1)
    tconv.load_state_dict({k: torch.tensor(v.numpy()) for k, v in conv.state_dict().items()})
    model = nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2), nn.AvgPool2d(2, ceil_mode=True))
    tmodel = torch.nn.Sequential(tconv, torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.AvgPool2d(2, ceil_mode=True))
    x = randn(rng, 3, 9, 13)
    gx, tx = gpunn.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, ty = model(gx), tmodel(tx)
    assert y.shape == tuple(ty.shape)
    np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    dy = randn(rng, *y.shape)
    y.backward(gpunn.tensor(dy))
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(gx.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="input has 4 channels"):
        conv(gpunn.tensor(randn(rng, 4, 9, 13)))
    with pytest.raises(ValueError, match="4-D input .* or 3-D"):
        conv(gpunn.tensor(randn(rng, 9, 13)))


@torch_at_least(2, 13, "the norm layers' bias= option and reprs")
@pytest.mark.parametrize(
    "name, kwargs",
    [("BatchNorm1d", {}), ("BatchNorm2d", {"affine": False}), ("BatchNorm2d", {"bias": False, "momentum": None})],
)
def test_batchnorm_repr_bias_option_and_state_dict_like_torch(rng, name, kwargs):
    x = randn(rng, 6, 4, 3, 5) if name == "BatchNorm2d" else randn(rng, 6, 4)
    res = []
    for L in (gpunn, torch):
        m = getattr(L.nn, name)(4, **kwargs)
        y = m(L.tensor(x))
        res.append((repr(m), list(m.state_dict()), y.detach().numpy()))
    assert res[0][:2] == res[1][:2]
    np.testing.assert_allclose(res[0][2], res[1][2], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["max", "avg"])
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_pool_ceil_mode_kernel_wider_than_the_input(rng, dtype, op, count_include_pad):
    """PyTorch's ceil_mode accepts a kernel larger than the (padded) input when its ceil output size is >= 1
    (the window runs past the input's end): gpunn raised 'kernel size 3 is larger than the padded input'."""
    fn = "max_pool2d" if op == "max" else "avg_pool2d"
    extra = {} if op == "max" else dict(count_include_pad=count_include_pad)
    for shape, cfg in [((2, 3, 5, 2), dict(kernel_size=3, stride=2)), ((1, 2, 2, 7), dict(kernel_size=(3, 2)))]:
        parity(
            rng,
            lambda L, x: getattr(L.nn.functional, fn)(x, ceil_mode=True, **cfg, **extra),
            [randn(rng, *shape)],
            dtype,
        )
    with pytest.raises(ValueError, match="too small"):  # PyTorch: "Output size is too small"
        getattr(F, fn)(gpunn.tensor(randn(rng, 1, 1, 1, 5)), 3, 2, ceil_mode=True)
