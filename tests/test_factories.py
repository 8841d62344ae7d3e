"""Tensor factories: shapes, dtypes, requires_grad, backends, random statistics, and errors."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
from gpunn.backend import NumpyBackend


class OtherBackend(NumpyBackend):
    name = "other"


SIZED = {
    "zeros": gpunn.zeros,
    "ones": gpunn.ones,
    "empty": gpunn.empty,
    "randn": gpunn.randn,
    "rand": gpunn.rand,
}


@pytest.mark.parametrize("name", list(SIZED))
def test_sized_factories_shapes_and_dtypes(name):
    f = SIZED[name]
    for args, shape in [
        ((2, 3), (2, 3)),
        (((2, 3),), (2, 3)),
        (([4, 1, 5],), (4, 1, 5)),
        ((7,), (7,)),
        ((), ()),
        ((0, 3), (0, 3)),
        ((np.int64(3),), (3,)),
    ]:
        t = f(*args)
        assert isinstance(t, gpunn.Tensor) and t.shape == shape
        assert t.dtype == np.float32 and not t.requires_grad and t.is_leaf
    assert f(3, dtype=np.float64).dtype == np.float64
    assert f(3, dtype=gpunn.float64).dtype == np.float64
    t = f(2, 2, requires_grad=True)
    assert t.requires_grad and t.is_leaf and t.grad is None


def test_zeros_ones_values():
    assert gpunn.zeros(2, 3).tolist() == [[0.0] * 3] * 2
    assert gpunn.ones(2, 3).tolist() == [[1.0] * 3] * 2
    i = gpunn.ones(3, dtype=np.int64)
    assert i.dtype == np.int64 and i.tolist() == [1] * 3


@pytest.mark.parametrize(
    "call",
    [
        lambda: gpunn.zeros(-1),
        lambda: gpunn.ones(2, -3),
        lambda: gpunn.randn((2, -1)),
        lambda: gpunn.rand(-5),
        lambda: gpunn.empty(-1),
        lambda: gpunn.full((2, -2), 1.0),
        lambda: gpunn.zeros(2.5),
        lambda: gpunn.eye(-1),
        lambda: gpunn.arange(0, 5, 0),
    ],
    ids=["zeros", "ones", "randn", "rand", "empty", "full", "float_size", "eye", "arange_step0"],
)
def test_bad_sizes_raise(call):
    with pytest.raises(ValueError):
        call()


def test_requires_grad_on_int_factory_raises():
    with pytest.raises(RuntimeError, match="floating"):
        gpunn.zeros(3, dtype=np.int64, requires_grad=True)
    with pytest.raises(RuntimeError, match="floating"):
        gpunn.arange(4, requires_grad=True)


# ------------------------------------------------------------------------------------------------
# tensor / from_numpy / as_tensor
# ------------------------------------------------------------------------------------------------
def test_tensor_dtype_inference():
    assert gpunn.tensor(1.5).dtype == np.float32 and gpunn.tensor(1.5).shape == ()
    assert gpunn.tensor([[1.0, 2.0], [3.0, 4.0]]).dtype == np.float32
    assert gpunn.tensor([1, 2, 3]).dtype == np.int64
    assert gpunn.tensor([1, 2.5]).dtype == np.float32
    assert gpunn.tensor([True, False]).dtype == np.bool_
    assert gpunn.tensor(np.array([1.5, 2.5])).dtype == np.float64
    assert gpunn.tensor(np.array([1, 2], dtype=np.int32)).dtype == np.int32
    assert gpunn.tensor(np.float64(2.0)).dtype == np.float64
    assert gpunn.tensor([1, 2], dtype=np.float64).dtype == np.float64
    assert gpunn.tensor([]).dtype == np.float32 and gpunn.tensor([]).shape == (0,)


def test_tensor_copies_and_from_numpy_shares(rng):
    a = rng.standard_normal((3, 4))
    t = gpunn.tensor(a)
    f = gpunn.from_numpy(a)
    s = gpunn.as_tensor(a)
    a[0, 0] = 99.0
    assert t[0, 0].item() != 99.0  # tensor() copies
    if f.backend.name == "numpy":
        assert f[0, 0].item() == 99.0 and s[0, 0].item() == 99.0  # from_numpy/as_tensor share
    assert f.dtype == np.float64
    with pytest.raises(TypeError):
        gpunn.from_numpy([1.0, 2.0])


def test_tensor_from_tensor_copies_and_drops_graph(rng):
    x = gpunn.tensor(rng.standard_normal(3), requires_grad=True)
    y = gpunn.tensor(x)
    assert not y.requires_grad and y.is_leaf
    np.testing.assert_array_equal(y.numpy(), x.detach().numpy())
    assert not np.shares_memory(y._data, x._data)
    assert gpunn.tensor(x, dtype=np.float64).dtype == np.float64


def test_tensor_requires_grad():
    t = gpunn.tensor([1.0, 2.0], requires_grad=True)
    assert t.requires_grad and t.is_leaf


@pytest.mark.parametrize(
    "data", [[[1, 2], [3]], [[1.0, 2.0], [3.0, 4.0, 5.0]], [[[1], [2]], [[3]]]], ids=["ints", "floats", "3d"]
)
def test_ragged_lists_raise(data):
    with pytest.raises(ValueError, match="ragged"):
        gpunn.tensor(data)


@pytest.mark.parametrize("data", ["abc", ["1", "a"], [object()], {"a": 1}])
def test_non_numeric_data_raises(data):
    with pytest.raises(TypeError):
        gpunn.tensor(data)


# ------------------------------------------------------------------------------------------------
# full / arange / eye / randint
# ------------------------------------------------------------------------------------------------
def test_full():
    t = gpunn.full((2, 3), 2.5)
    assert t.shape == (2, 3) and t.dtype == np.float32 and t.tolist() == [[2.5] * 3] * 2
    assert gpunn.full((2,), 7).dtype == np.int64
    assert gpunn.full(3, True).dtype == np.bool_
    assert gpunn.full((2, 2), 1, dtype=np.float64).dtype == np.float64
    assert gpunn.full((2,), 0.5, requires_grad=True).requires_grad


def test_arange():
    t = gpunn.arange(5)
    assert t.dtype == np.int64 and t.tolist() == [0, 1, 2, 3, 4]
    assert gpunn.arange(2, 11, 3).tolist() == [2, 5, 8]
    assert gpunn.arange(5, 0, -2).tolist() == [5, 3, 1]
    f = gpunn.arange(0.0, 1.0, 0.25)
    assert f.dtype == np.float32 and f.tolist() == [0.0, 0.25, 0.5, 0.75]
    assert gpunn.arange(0, 1, 0.5).dtype == np.float32
    assert gpunn.arange(3, dtype=np.float64).dtype == np.float64
    g = gpunn.arange(1.0, 2.0, 0.5, requires_grad=True)
    assert g.requires_grad and g.shape == (2,)


def test_arange_matches_torch():
    torch = pytest.importorskip("torch")
    for args in [(7,), (1, 10, 3), (1.0, 2.0, 0.3), (-1.5, 1.5, 0.25), (10, -3, -4)]:
        g, t = gpunn.arange(*args), torch.arange(*args)
        assert g.dtype == np.dtype(str(t.dtype).removeprefix("torch."))
        np.testing.assert_allclose(g.numpy(), t.numpy(), rtol=1e-6)


def test_eye():
    e = gpunn.eye(3)
    assert e.dtype == np.float32 and e.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    r = gpunn.eye(2, 4, dtype=np.float64)
    assert r.shape == (2, 4) and r.dtype == np.float64 and r.numpy().sum() == 2.0
    assert gpunn.eye(0).shape == (0, 0)


def test_randint():
    gpunn.manual_seed(3)
    t = gpunn.randint(2, 9, (1000,))
    assert t.dtype == np.int64 and t.shape == (1000,)
    v = t.numpy()
    assert v.min() == 2 and v.max() == 8
    assert gpunn.randint(5, size=(2, 3)).shape == (2, 3)
    assert gpunn.randint(4).numpy().max() < 4


# ------------------------------------------------------------------------------------------------
# random statistics (loose: 40,000 samples)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_randn_statistics(dtype):
    x = gpunn.randn(200, 200, dtype=dtype).numpy().astype(np.float64)
    assert abs(x.mean()) < 0.03 and abs(x.std() - 1.0) < 0.03
    assert 0.64 < np.mean(np.abs(x) < 1.0) < 0.72  # about 68% within one sigma
    assert len(np.unique(x)) > 39_000


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rand_statistics(dtype):
    x = gpunn.rand(200, 200, dtype=dtype).numpy().astype(np.float64)
    assert x.min() >= 0.0 and x.max() < 1.0
    assert abs(x.mean() - 0.5) < 0.01 and abs(x.var() - 1 / 12) < 0.005
    counts = np.histogram(x, bins=10, range=(0, 1))[0]
    assert counts.min() > 3_600 and counts.max() < 4_400


def test_random_in_place_fills():
    with gpunn.no_grad():
        u = gpunn.zeros(20_000).uniform_(-2.0, 3.0).numpy()
        n = gpunn.zeros(20_000, dtype=np.float64).normal_(5.0, 0.5).numpy()
    assert u.min() >= -2.0 and u.max() < 3.0 and abs(u.mean() - 0.5) < 0.05
    assert abs(n.mean() - 5.0) < 0.02 and abs(n.std() - 0.5) < 0.02


# ------------------------------------------------------------------------------------------------
# *_like
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["zeros_like", "ones_like", "randn_like", "rand_like"])
def test_like_factories(rng, name):
    f = getattr(gpunn, name)
    src = gpunn.tensor(rng.standard_normal((3, 5)), requires_grad=True)  # float64
    t = f(src)
    assert t.shape == (3, 5) and t.dtype == np.float64 and not t.requires_grad and t.backend is src.backend
    assert f(src, dtype=np.float32).dtype == np.float32
    assert f(src, requires_grad=True).requires_grad
    if name in ("randn_like", "rand_like"):
        assert len(np.unique(t.numpy())) == 15
    else:
        assert t.tolist() == [[0.0 if name == "zeros_like" else 1.0] * 5] * 3


def test_full_like(rng):
    src = gpunn.tensor(rng.standard_normal((2, 3)).astype(np.float32))
    t = gpunn.full_like(src, 4.25)
    assert t.shape == (2, 3) and t.dtype == np.float32 and t.tolist() == [[4.25] * 3] * 2
    assert gpunn.full_like(gpunn.arange(3), 7).tolist() == [7, 7, 7]


# ------------------------------------------------------------------------------------------------
# backends
# ------------------------------------------------------------------------------------------------
def test_factories_follow_the_active_backend(rng):
    other = OtherBackend()
    with gpunn.use_backend(other):
        made = [
            gpunn.zeros(2),
            gpunn.ones(2),
            gpunn.randn(2),
            gpunn.rand(2),
            gpunn.full((2,), 1.0),
            gpunn.arange(3),
            gpunn.eye(2),
            gpunn.tensor([1.0]),
            gpunn.from_numpy(np.ones(2)),
            gpunn.randint(0, 3, (2,)),
        ]
    assert all(t.backend is other for t in made)
    assert gpunn.zeros(2).backend is gpunn.get_backend() is not other
    explicit = [gpunn.zeros(2, backend=other), gpunn.tensor([1.0], backend=other), gpunn.randn(2, backend="numpy")]
    assert explicit[0].backend is other and explicit[1].backend is other
    assert explicit[2].backend.name == "numpy"
    like = gpunn.zeros_like(made[0])
    assert like.backend is other  # *_like follows the source tensor, not the active backend


def test_tensor_moves_between_backends(rng):
    other = OtherBackend()
    a = rng.standard_normal(4)
    x = gpunn.tensor(a, requires_grad=True)
    y = gpunn.tensor(x, backend=other)
    assert y.backend is other and not y.requires_grad
    np.testing.assert_array_equal(y.numpy(), a)


# ------------------------------------------------------------------------------------------------
# cat / stack / where: shapes and errors (values and gradients are in test_tensor.py)
# ------------------------------------------------------------------------------------------------
def test_cat_stack_shapes_and_errors(rng):
    a, b = gpunn.tensor(rng.standard_normal((2, 3))), gpunn.tensor(rng.standard_normal((2, 3)))
    assert gpunn.cat([a, b]).shape == (4, 3) and gpunn.cat([a, b], dim=-1).shape == (2, 6)
    assert gpunn.stack([a, b]).shape == (2, 2, 3) and gpunn.stack([a, b], dim=2).shape == (2, 3, 2)
    assert gpunn.stack([a, b], dim=-1).shape == (2, 3, 2)
    with pytest.raises(ValueError):
        gpunn.cat([])
    with pytest.raises(TypeError):
        gpunn.cat([a, np.ones((2, 3))])
    with pytest.raises(RuntimeError, match="sizes of tensors must match"):
        gpunn.cat([a, gpunn.ones(2, 4)])


def test_where_shapes_and_errors(rng):
    a = gpunn.tensor(rng.standard_normal((2, 3)).astype(np.float32))
    w = gpunn.where(a > 0, a, 0.0)
    np.testing.assert_array_equal(w.numpy(), np.where(a.numpy() > 0, a.numpy(), 0.0))
    assert w.dtype == np.float32
    assert gpunn.where(np.array([True, False, True]), a, gpunn.zeros(1)).shape == (2, 3)
    with pytest.raises(TypeError):
        gpunn.where(a.numpy() > 0, 1.0, 2.0)


def test_dlpack_round_trip_with_torch_is_zero_copy():
    torch = pytest.importorskip("torch")
    src = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    t = gpunn.from_dlpack(src)
    assert t.shape == (3, 4) and t.dtype == np.float32 and t.backend.name == "numpy"
    src[0, 0] = 42.0  # shares memory
    assert t.numpy()[0, 0] == 42.0
    back = torch.from_dlpack(t)
    t.data[1, 1] = -7.0
    assert back[1, 1].item() == -7.0
    with pytest.raises(TypeError, match="DLPack"):
        gpunn.from_dlpack([1, 2, 3])


def test_cat_promotes_like_torch():
    out = gpunn.cat([gpunn.ones(2), gpunn.tensor([1, 2])])
    assert out.dtype == np.float32 and out.tolist() == [1.0, 1.0, 1.0, 2.0]
