"""Devices, dtypes, constructors, formatting and repr (issue 9, items 4 and 5), compared with PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
from gpunn import nn
from tests.helpers import torch_or_skip

torch = torch_or_skip()


def test_device_objects_match_torch():
    for spec in ["cpu", "cuda", "cuda:0", "cuda:1"]:
        g, t = gpunn.device(spec), torch.device(spec)
        assert (g.type, g.index, str(g), repr(g)) == (t.type, t.index, str(t), repr(t))
    assert gpunn.device("cuda", 0) == gpunn.device("cuda:0") and gpunn.device("cpu") != gpunn.device("cuda")
    assert gpunn.device(gpunn.device("cpu")) == gpunn.device("cpu")
    assert gpunn.device("numpy") == gpunn.device("cpu") and gpunn.device("cupy").type == "cuda"
    with pytest.raises(RuntimeError, match="unsupported device type 'tpu'"):
        gpunn.device("tpu")
    with pytest.raises(ValueError):
        gpunn.device("cuda:x")


def test_tensor_device_and_moves_on_the_cpu():
    if gpunn.get_backend().name != "numpy":
        pytest.skip("the cpu device is the numpy backend")
    x = gpunn.ones(2, 3, requires_grad=True)
    assert x.device == gpunn.device("cpu") and not x.is_cuda
    for target in ("cpu", gpunn.device("cpu"), "numpy", torch.device("cpu").type):
        assert x.to(target) is x
    assert x.cpu() is x
    y = x.to(gpunn.float64)
    assert y.dtype == np.float64 and y.requires_grad and y.grad_fn is not None
    z = x.to("cpu", gpunn.float64)
    assert z.dtype == np.float64
    w = gpunn.zeros(1, dtype=gpunn.int64)
    assert x.to(w).dtype == np.int64 and x.to(dtype=gpunn.float16).dtype == np.float16
    assert x.to(device="cpu", copy=True) is not x
    for factory in (
        gpunn.zeros(2, device="cpu"),
        gpunn.ones(2, device=gpunn.device("cpu")),
        gpunn.randn(2, device="cpu"),
        gpunn.rand(2, device="cpu"),
        gpunn.full((2,), 3.0, device="cpu"),
        gpunn.arange(3, device="cpu"),
        gpunn.eye(2, device="cpu"),
        gpunn.tensor([1.0], device="cpu"),
        gpunn.linspace(0, 1, 3, device="cpu"),
        gpunn.randint(0, 3, (2,), device="cpu"),
        gpunn.zeros_like(x, device="cpu"),
        gpunn.empty(2, device="cpu"),
    ):
        assert factory.device.type == "cpu"


@pytest.mark.skipif(gpunn.cuda.is_available(), reason="checks the error raised without a GPU")
def test_asking_for_cuda_without_a_gpu_raises_one_clear_error():
    assert gpunn.cuda.device_count() == 0 and gpunn.accelerator.current_accelerator() is None
    assert not gpunn.accelerator.is_available()
    why = gpunn.cuda.why_unavailable()
    for call in (
        lambda: gpunn.ones(2).cuda(),
        lambda: gpunn.ones(2).to("cuda"),
        lambda: gpunn.zeros(2, device="cuda"),
        lambda: nn.Linear(2, 3).to("cuda"),
        lambda: nn.Linear(2, 3).cuda(),
        lambda: gpunn.tensor([1.0], device="cuda:0"),
    ):
        with pytest.raises(RuntimeError, match="CUDA is not available") as info:
            call()
        assert why in str(info.value)


def test_module_to_device_and_dtype():
    if gpunn.get_backend().name != "numpy":
        pytest.skip("the cpu device is the numpy backend")
    m = nn.Linear(3, 2)
    w = m.weight
    assert m.to("cpu") is m and m.cpu() is m and m.weight is w
    m.to(gpunn.float64)
    assert m.weight.dtype == np.float64 and m.weight is w
    m.to(device=gpunn.device("cpu"), dtype=gpunn.float32)
    assert m.weight.dtype == np.float32
    m.to(gpunn.zeros(1, dtype=gpunn.float64))
    assert m.bias.dtype == np.float64
    with pytest.raises(TypeError, match="floating point"):
        m.to(gpunn.int64)


def test_dtypes_and_conversions_match_torch():
    for name in [
        "float32",
        "float64",
        "float16",
        "int64",
        "int32",
        "int16",
        "int8",
        "uint8",
        "float",
        "double",
        "long",
        "int",
        "half",
        "bool",
    ]:
        g, t = getattr(gpunn, name), getattr(torch, name)
        assert str(t).split(".")[-1] == str(g), name
    x, t = gpunn.tensor([1.7, -2.2]), torch.tensor([1.7, -2.2])
    for conv in ("float", "double", "long", "int", "bool", "half"):
        assert str(getattr(x, conv)().dtype) == str(getattr(t, conv)().dtype).split(".")[-1]
        np.testing.assert_array_equal(getattr(x, conv)().numpy(), getattr(t, conv)().numpy())
    assert x.type() == "gpunn.FloatTensor" and t.type() == "torch.FloatTensor"
    assert x.type(gpunn.float64).dtype == np.float64 and x.type("gpunn.LongTensor").dtype == np.int64
    assert x.type(gpunn.DoubleTensor).dtype == np.float64
    assert x.type_as(gpunn.zeros(1, dtype=gpunn.int32)).dtype == np.int32
    assert gpunn.is_tensor(x) and not gpunn.is_tensor(1.0) and gpunn.is_floating_point(x) and gpunn.numel(x) == 2


def test_constructors_match_torch():
    cases = [
        lambda L: L.Tensor([1, 2, 3]),
        lambda L: L.Tensor([[1.5], [2.0]]),
        lambda L: L.Tensor(2, 3),
        lambda L: L.FloatTensor([1, 2]),
        lambda L: L.LongTensor([1, 2]),
        lambda L: L.DoubleTensor(3),
        lambda L: L.tensor([1, 2]),
        lambda L: L.tensor(3.5),
        lambda L: L.tensor([True, False]),
        lambda L: L.tensor([[1, 2]], dtype=L.float64),
        lambda L: L.as_tensor([1.0, 2.0]),
        lambda L: L.Tensor(),
        lambda L: L.tensor([L.tensor(1.0), L.tensor(2.0)]),
    ]
    for make in cases:
        g, t = make(gpunn), make(torch)
        assert g.shape == tuple(t.shape) and str(g.dtype) == str(t.dtype).split(".")[-1]
        if make not in (cases[2], cases[5]):  # Tensor(2, 3): torch leaves the memory uninitialised
            np.testing.assert_array_equal(g.numpy(), t.numpy())
    assert isinstance(gpunn.FloatTensor([1.0]), gpunn.FloatTensor) and not isinstance(
        gpunn.LongTensor([1]), gpunn.FloatTensor
    )


def test_formatting_matches_torch():
    for v in [3.4, 2.0, -0.25, 7]:
        g, t = gpunn.tensor(v), torch.tensor(v)
        for spec in ["", ".0f", ".3f", "6.2f", ">8"]:
            if isinstance(v, int) and "f" in spec:
                assert format(g, spec) == format(t, spec)
                continue
            assert format(g, spec) == format(t, spec), (v, spec)
        assert f"{g}" == f"{t}"
    with pytest.raises(TypeError):
        format(gpunn.tensor([1.0, 2.0]), ".2f")
    assert "{}".format(gpunn.tensor([1.0, 2.0])) == "tensor([1., 2.])"  # noqa: UP032


@pytest.mark.parametrize(
    "make",
    [
        lambda L: L.tensor([1.5, 2.0]),
        lambda L: L.tensor([1.0, 2.0]),
        lambda L: L.tensor([[1, 2], [3, 40]]),
        lambda L: L.tensor(3.25),
        lambda L: L.tensor([1.5, 2.0], dtype=L.float64),
        lambda L: L.tensor([True, False]),
        lambda L: L.tensor([[0.001, 2000.5]]),
        lambda L: L.arange(6.0).reshape(2, 3) / 3,
        lambda L: L.tensor([1.0, -2.5], requires_grad=True),
        lambda L: L.tensor([1e-5, 1.0]),
        lambda L: L.tensor([float("nan"), 2.0]),
        lambda L: L.tensor([1.5, float("inf")]),
        # integral values with a wide range print in scientific notation; zeros and non-finite values do not
        # widen the column; a summarized print formats only what it shows, its elision is " ..."
        lambda L: L.tensor([1.0, 2000.0]),
        lambda L: L.tensor([[1e5, 1.0]]),
        lambda L: L.tensor([0.0, -0.0, 5.0]),
        lambda L: L.tensor([-0.0, 0.0]),
        lambda L: L.tensor([-float("inf"), float("nan")]),
        lambda L: L.tensor([[float("nan"), float("inf")], [-float("inf"), 0.0]]),
        lambda L: L.arange(2000),
        lambda L: L.arange(1001.0),
        lambda L: L.arange(2000.0).reshape(40, 50),
        lambda L: L.arange(24.0).reshape(2, 3, 4) / 3,
        lambda L: L.tensor([123456789.0, 1.0]),
        lambda L: L.tensor([1e-3, 5e-3]),
        lambda L: L.tensor(1e-8),
        lambda L: L.zeros(3),
    ],
)
def test_repr_matches_torch(make):
    g, t = repr(make(gpunn)), repr(make(torch))
    assert g == t.replace("torch.", "gpunn.")


def test_repr_of_a_result_names_its_grad_fn():
    x = gpunn.tensor([1.0, 2.0], requires_grad=True)
    assert repr(x * 2) == "tensor([2., 4.], grad_fn=<MulBackward0>)"


@pytest.mark.parametrize(
    "options",
    [{"precision": 2}, {"sci_mode": False}, {"sci_mode": True}, {"profile": "short"}, {"threshold": 5, "edgeitems": 1},
     {"linewidth": 40}, {"profile": "full"}],
)  # fmt: skip
def test_set_printoptions_like_torch(options):
    values = [
        lambda L: L.tensor([1.23456, 2.0, -0.5]),
        lambda L: L.tensor([1e-6, 2.0]),
        lambda L: L.arange(12.0).reshape(3, 4) / 7,
        lambda L: L.arange(1200),
        lambda L: L.arange(30.0) * 1.5,
    ]
    try:
        for L in (gpunn, torch):
            L.set_printoptions(**options)
        for make in values:
            assert repr(make(gpunn)) == repr(make(torch)).replace("torch.", "gpunn."), options
    finally:
        for L in (gpunn, torch):
            L.set_printoptions(profile="default", sci_mode=None)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", None])
def test_finfo_like_torch(dtype):
    g = gpunn.finfo() if dtype is None else gpunn.finfo(getattr(gpunn, dtype))
    t = torch.finfo() if dtype is None else torch.finfo(getattr(torch, dtype))
    for attr in ("bits", "eps", "max", "min", "tiny", "smallest_normal", "resolution"):
        assert getattr(g, attr) == getattr(t, attr) and type(getattr(g, attr)) is type(getattr(t, attr)), attr
    assert str(g.eps) == str(t.eps)


@pytest.mark.parametrize("dtype", ["int64", "int32", "int8", "uint8", "int16"])
def test_iinfo_like_torch(dtype):
    g, t = gpunn.iinfo(getattr(gpunn, dtype)), torch.iinfo(getattr(torch, dtype))
    assert (g.bits, g.max, g.min) == (t.bits, t.max, t.min)


def test_finfo_of_an_integer_dtype_raises():
    for L in (gpunn, torch):
        with pytest.raises(TypeError):
            L.finfo(L.int64)


def test_backends_flags_scripts_set():
    """The lines scripts start with run: cudnn flags are kept (and change nothing), MPS is not available."""
    for L in (gpunn, torch):
        L.backends.cudnn.deterministic = True
        L.backends.cudnn.benchmark = False
        assert L.backends.cudnn.deterministic is True and L.backends.mps.is_available() is False
        device = "cuda" if L.cuda.is_available() else "mps" if L.backends.mps.is_available() else "cpu"
        assert device == "cpu"
    gpunn.backends.cudnn.deterministic = False


def test_rng_state_round_trip_and_seeds():
    gpunn.manual_seed(11)
    assert gpunn.initial_seed() == 11
    state = gpunn.get_rng_state()
    assert isinstance(state, gpunn.Tensor) and state.dtype == gpunn.uint8
    a = gpunn.rand(5)
    gpunn.set_rng_state(state)
    np.testing.assert_array_equal(gpunn.rand(5).numpy(), a.numpy())
    s = gpunn.seed()
    assert gpunn.initial_seed() == s
    with pytest.raises(TypeError, match="uint8"):
        gpunn.set_rng_state(gpunn.ones(3))
    with pytest.raises(RuntimeError, match="get_rng_state"):
        gpunn.set_rng_state(gpunn.tensor(np.array([1, 2, 3], dtype=np.uint8)))


def test_module_half_like_torch():
    for L in (gpunn, torch):
        m = L.nn.Linear(2, 3).half()
        assert str(m.weight.dtype).endswith("float16")
