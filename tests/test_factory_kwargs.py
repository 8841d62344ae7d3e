"""PyTorch's keywords on the top-level factories and on nn.functional, against PyTorch 2.13: the ones gpunn
honours give PyTorch's result; the ones it cannot (out=, generator=, a non-default layout=) raise naming
themselves; gpunn's own backend= never takes a positional slot."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
import gpunn.nn.functional as gF
from tests.helpers import torch_or_skip

torch = torch_or_skip()

# each factory called with PyTorch's spelling; kw adds the keyword under test
FACTORIES = {
    "zeros": lambda L, **kw: L.zeros(2, 3, **kw),
    "ones": lambda L, **kw: L.ones((2, 3), **kw),
    "empty": lambda L, **kw: L.empty(2, 3, **kw),
    "full": lambda L, **kw: L.full((2, 3), 1.5, **kw),
    "eye": lambda L, **kw: L.eye(3, 4, **kw),
    "arange": lambda L, **kw: L.arange(1.0, 7.0, 0.5, **kw),
    "linspace": lambda L, **kw: L.linspace(-1, 2, 7, **kw),
    "logspace": lambda L, **kw: L.logspace(-1, 2, 7, 2.0, **kw),
    "rand": lambda L, **kw: L.rand(2, 3, **kw),
    "randn": lambda L, **kw: L.randn(2, 3, **kw),
    "randint": lambda L, **kw: L.randint(2, 9, (2, 3), **kw),
    "randperm": lambda L, **kw: L.randperm(7, **kw),
    "normal": lambda L, **kw: L.normal(0.5, 2.0, (2, 3), **kw),
}
DETERMINISTIC = {"zeros", "ones", "empty", "full", "eye", "arange", "linspace", "logspace"}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_factory_keywords_honoured_like_torch(name):
    make = FACTORIES[name]
    floating = name not in ("randint", "randperm")
    kw = {"device": "cpu", "pin_memory": False}
    if floating:
        kw.update(dtype=gpunn.float64, requires_grad=True)
    ours = make(gpunn, **kw)
    ref = make(torch, **{**kw, "dtype": torch.float64} if floating else kw)
    assert ours.shape == tuple(ref.shape) and str(ours.dtype) == str(ref.dtype).removeprefix("torch.")
    assert ours.requires_grad == ref.requires_grad and ours.device == gpunn.device("cpu")
    if name in DETERMINISTIC and name != "empty":
        np.testing.assert_allclose(ours.detach().numpy(), ref.detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("keyword", ["out", "layout"])
def test_unsupported_factory_keywords_raise_naming_them(name, keyword):
    value = gpunn.zeros(2, 3) if keyword == "out" else "sparse_coo"
    with pytest.raises(NotImplementedError, match=keyword):
        FACTORIES[name](gpunn, **{keyword: value})


@pytest.mark.parametrize("name", ["rand", "randn", "randint", "randperm", "normal"])
def test_generator_raises_naming_it(name):
    with pytest.raises(NotImplementedError, match="generator"):
        FACTORIES[name](gpunn, generator=object())


@pytest.mark.parametrize("fn", ["zeros_like", "ones_like", "empty_like", "rand_like", "randn_like"])
def test_like_factories_take_input_keyword_like_torch(rng, fn):
    x = rng.standard_normal((3, 4))
    ours = getattr(gpunn, fn)(input=gpunn.tensor(x), dtype=gpunn.float32, requires_grad=True, memory_format=None)
    ref = getattr(torch, fn)(input=torch.tensor(x), dtype=torch.float32, requires_grad=True)
    assert ours.shape == tuple(ref.shape) and ours.dtype == np.float32 and ours.requires_grad
    if fn in ("zeros_like", "ones_like"):
        np.testing.assert_array_equal(ours.detach().numpy(), ref.detach().numpy())
    if fn in ("rand_like", "randn_like"):
        with pytest.raises(NotImplementedError, match="generator"):
            getattr(gpunn, fn)(gpunn.tensor(x), generator=object())


@pytest.mark.parametrize("args", [(10,), (3, 8)])
def test_randint_like_bounds_like_torch(args):
    t = gpunn.zeros(50, 40, dtype=gpunn.int32)
    r = gpunn.randint_like(t, *args).numpy()
    ref = torch.randint_like(torch.zeros(50, 40, dtype=torch.int32), *args).numpy()
    assert r.dtype == ref.dtype
    low, high = (0, args[0]) if len(args) == 1 else args
    assert r.min() == low and r.max() == high - 1  # 2000 draws hit both ends


def test_full_like_and_positional_dtype_like_torch():
    x = gpunn.ones(2, 3)
    np.testing.assert_array_equal(gpunn.full_like(x, 7, gpunn.float64).numpy(), np.full((2, 3), 7.0))
    assert gpunn.full_like(input=x, fill_value=2).dtype == np.float32


def test_backend_is_keyword_only():
    """gpunn's backend= has no positional slot: PyTorch's fourth argument of tensor() raises there too."""
    with pytest.raises(TypeError):
        gpunn.tensor([1.0], None, False, "numpy")
    with pytest.raises(TypeError):
        gpunn.eye(3, 3, None, "numpy")
    assert gpunn.tensor([1.0], backend="numpy").device == gpunn.device("cpu")


def test_cat_stack_concatenate_keywords_like_torch(rng):
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    for name, kw in (("cat", {"dim": 1}), ("concat", {"dim": 1}), ("concatenate", {"axis": 1}), ("stack", {"dim": 1})):
        ours = getattr(gpunn, name)(tensors=[gpunn.tensor(a), gpunn.tensor(b)], **kw).numpy()
        ref = getattr(torch, name)(tensors=[torch.tensor(a), torch.tensor(b)], **kw).numpy()
        np.testing.assert_array_equal(ours, ref)
        with pytest.raises(NotImplementedError, match="out="):
            getattr(gpunn, name)([gpunn.tensor(a)], out=gpunn.zeros(2, 3))


@pytest.mark.parametrize("fname", ["softmax", "log_softmax", "softmin"])
def test_softmax_family_stacklevel_slot_like_torch(rng, fname):
    """PyTorch's F.softmax(input, dim, _stacklevel, dtype): a third positional argument is _stacklevel."""
    x = rng.standard_normal((4, 5)).astype(np.float32)
    ours = getattr(gF, fname)(gpunn.tensor(x), 1, 3, gpunn.float64)
    ref = getattr(torch.nn.functional, fname)(torch.tensor(x), 1, 3, torch.float64)
    assert ours.dtype == np.float64
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-12)


@pytest.mark.parametrize(
    "call",
    [
        lambda F, x: F.relu(input=x),
        lambda F, x: F.leaky_relu(input=x, negative_slope=0.2),
        lambda F, x: F.hardtanh(input=x, min_val=-0.5, max_val=0.3),
        lambda F, x: F.elu(input=x, alpha=0.7),
        lambda F, x: F.gelu(input=x, approximate="tanh"),
        lambda F, x: F.softmax(input=x, dim=0),
        lambda F, x: F.threshold(input=x, threshold=0.1, value=-1.0),
        lambda F, x: F.sigmoid(input=x),
        lambda F, x: F.tanh(input=x),
        lambda F, x: F.glu(input=x, dim=1),
    ],
)
def test_functional_input_keyword_like_torch(rng, call):
    x = rng.standard_normal((3, 4))
    np.testing.assert_allclose(
        call(gF, gpunn.tensor(x)).numpy(), call(torch.nn.functional, torch.tensor(x)).numpy(), rtol=1e-12
    )


def test_linear_fused_activation_is_keyword_only(rng):
    x, w = gpunn.tensor(rng.standard_normal((3, 4))), gpunn.tensor(rng.standard_normal((2, 4)))
    with pytest.raises(TypeError):
        gF.linear(x, w, None, "relu")
    np.testing.assert_allclose(gF.linear(x, w, activation="relu").numpy(), gF.relu(gF.linear(x, w)).numpy())


@pytest.mark.parametrize("name", ["ReflectionPad1d", "ReflectionPad2d", "ReplicationPad1d", "ReplicationPad2d"])
def test_edge_pads_take_no_fill_value_like_torch(name):
    for L in (gpunn, torch):
        with pytest.raises(TypeError):
            getattr(L.nn, name)(1, 0.5)


@pytest.mark.parametrize(
    "call",
    [
        lambda L, x, y: L.exp(input=x),
        lambda L, x, y: L.sum(input=x, dim=1, keepdim=True),
        lambda L, x, y: L.mm(input=x, mat2=y.T),
        lambda L, x, y: L.matmul(input=x, other=y.T),
        lambda L, x, y: L.dot(input=x[0], tensor=y[0]),
        lambda L, x, y: L.swapaxes(x, axis0=0, axis1=1),
        lambda L, x, y: L.split(tensor=x, split_size_or_sections=2, dim=1)[1],
        lambda L, x, y: L.true_divide(input=x, other=y),
        lambda L, x, y: L.broadcast_to(x[0], size=(2, 3, 4)),
        lambda L, x, y: L.norm(x, 2, 1, False, None, L.float64),  # PyTorch's fifth slot is out=
        lambda L, x, y: L.cdist(x, y, 1.5, "donot_use_mm_for_euclid_dist"),
        lambda L, x, y: L.gather(x, 1, L.tensor([[0, 2], [1, 1], [3, 0]]), sparse_grad=False),
        lambda L, x, y: L.clamp(input=x, min=-0.5, max=0.5),
    ],
)
def test_op_keywords_like_torch(rng, call):
    x, y = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    ours = call(gpunn, gpunn.tensor(x), gpunn.tensor(y))
    ref = call(torch, torch.tensor(x), torch.tensor(y))
    assert str(ours.dtype) == str(ref.dtype).removeprefix("torch.")
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-12)


def test_searchsorted_keywords_like_torch(rng):
    seq, vals = np.sort(rng.standard_normal(9)), rng.standard_normal(5)
    ours = gpunn.searchsorted(sorted_sequence=gpunn.tensor(seq), input=gpunn.tensor(vals), right=True)
    ref = torch.searchsorted(sorted_sequence=torch.tensor(seq), input=torch.tensor(vals), right=True)
    np.testing.assert_array_equal(ours.numpy(), ref.numpy())
    with pytest.raises(NotImplementedError, match="out="):
        gpunn.searchsorted(gpunn.tensor(seq), gpunn.tensor(vals), out=gpunn.zeros(5))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x: gpunn.norm(x, 2, 1, False, gpunn.zeros(3)), "out="),
        (lambda x: gpunn.gather(x, 1, gpunn.tensor([[0], [1], [2]]), sparse_grad=True), "sparse_grad"),
        (lambda x: gpunn.cdist(x, x, compute_mode="fastest"), "compute_mode"),
    ],
)
def test_unsupported_op_keywords_raise_naming_them(call, match):
    with pytest.raises((NotImplementedError, ValueError), match=match):
        call(gpunn.ones(3, 4))


def test_from_dlpack_torch_keywords(rng):
    src = torch.tensor(rng.standard_normal((3, 4)))
    shared = gpunn.from_dlpack(ext_tensor=src, device="cpu")
    copied = gpunn.from_dlpack(src, copy=True)
    src[0, 0] = 123.0
    assert shared[0, 0].item() == 123.0 and copied[0, 0].item() != 123.0
    if not gpunn.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            gpunn.from_dlpack(src, device="cuda")
