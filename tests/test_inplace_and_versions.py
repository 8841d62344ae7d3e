"""PyTorch's storage semantics: ``.data`` is a detached alias, in-place ops follow the leaf/no_grad rules
and are differentiated (or refused) on non-leaves, and version counters make backward raise instead of
using values that changed after the forward pass. Each case is compared with PyTorch 2.13 CPU."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
from gpunn import nn, optim
from tests.helpers import randn, torch_or_skip

MODIFIED = "modified by an inplace operation"


def _pair(a, requires_grad=False):
    torch = torch_or_skip()
    return (gpunn.tensor(a, requires_grad=requires_grad), torch.tensor(np.array(a), requires_grad=requires_grad))


# ------------------------------------------------------------------------------------------------
# the silent-wrong cases of issue 9: each now raises PyTorch's error or gives PyTorch's answer
# ------------------------------------------------------------------------------------------------
def test_writing_a_saved_input_between_forward_and_backward_raises():
    x = gpunn.tensor([1.0, 2.0, 3.0], requires_grad=True)
    w = gpunn.ones(3)
    y = (x * w).sum()
    w[0] = 100
    with pytest.raises(RuntimeError, match=MODIFIED) as info:
        y.backward()
    assert "MulBackward0" in str(info.value) and "__setitem__" in str(info.value)
    assert x.grad is None


@pytest.mark.parametrize(
    "how",
    [
        "setitem",
        "copy_no_grad",
        "detach_alias",
        "data_alias",
        "iadd_no_grad",
        "view_alias",
        "load_state_dict",
        "optimizer_step",
        "normal_",
        "data_assignment",
    ],
)
def test_every_write_path_to_a_saved_tensor_is_caught(rng, how):
    lin = nn.Linear(4, 3)
    opt = optim.SGD(lin.parameters(), lr=0.1)
    x = gpunn.tensor(randn(rng, 5, 4), requires_grad=True)
    loss = lin(x).sum()
    w = lin.weight
    if how == "setitem":
        with gpunn.no_grad():
            w[0, 0] = 5.0
    elif how == "copy_no_grad":
        with gpunn.no_grad():
            w.copy_(gpunn.zeros(3, 4))
    elif how == "detach_alias":
        w.detach().mul_(2)
    elif how == "data_alias":
        w.data.zero_()
    elif how == "iadd_no_grad":
        with gpunn.no_grad():
            w += 1
    elif how == "view_alias":
        with gpunn.no_grad():
            w.view(-1)[3] = 1.0
    elif how == "load_state_dict":
        lin.load_state_dict({k: v.detach().clone() * 2 for k, v in lin.state_dict().items()})
    elif how == "optimizer_step":
        for p in lin.parameters():
            p.grad = gpunn.ones_like(p)
        opt.step()
    elif how == "normal_":
        w.data.normal_(0, 0.01)
    elif how == "data_assignment":  # the optimizer copies the new values into the storage the graph saved
        w.data = gpunn.zeros(3, 4)
        for p in lin.parameters():
            p.grad = gpunn.zeros_like(p)
        opt.step()
    with pytest.raises(RuntimeError, match=MODIFIED):
        loss.backward()


def test_a_write_to_a_tensor_nobody_saved_is_fine(rng):
    """add saves nothing: changing an addend after the forward pass leaves the gradient valid (as torch)."""
    x = gpunn.tensor(randn(rng, 3), requires_grad=True)
    b = gpunn.ones(3)
    y = (x + b).sum()
    b.add_(5)
    y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.ones(3))


def test_sgd_by_hand_updates_the_weights_in_place(rng):
    torch = torch_or_skip()
    w0, x0 = randn(rng, 3, 2), randn(rng, 4, 3)
    results = []
    for lib in (gpunn, torch):
        w = lib.tensor(w0, requires_grad=True)
        x = lib.tensor(x0)
        same = w
        for _ in range(3):
            loss = (x @ w).pow(2).mean()
            loss.backward()
            with lib.no_grad():
                w -= 0.1 * w.grad
                w.grad.zero_()
        assert w is same and w.is_leaf and w.requires_grad
        results.append(w.detach().numpy().copy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6)


def test_in_place_on_a_leaf_that_requires_grad_outside_no_grad_raises():
    w = gpunn.ones(3, requires_grad=True)
    for op in (
        lambda: w.add_(1),
        lambda: w.__isub__(1),
        lambda: w.zero_(),
        lambda: w.normal_(),
        lambda: w.__setitem__(0, 2.0),
        lambda: w.copy_(gpunn.zeros(3)),
    ):
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
            op()
    np.testing.assert_array_equal(w.detach().numpy(), np.ones(3))


# ------------------------------------------------------------------------------------------------
# .data
# ------------------------------------------------------------------------------------------------
def test_data_is_a_detached_tensor_sharing_storage(rng):
    x = gpunn.tensor(randn(rng, 4, 5), requires_grad=True)
    d = x.data
    assert isinstance(d, gpunn.Tensor) and not d.requires_grad and d.is_leaf
    d[0, 0] = 42.0
    assert x[0, 0].item() == 42.0
    pred = x.data.max(1)[1]  # the course notes' evaluation idiom
    assert pred.shape == (4,) and pred.dtype == np.int64
    np.testing.assert_array_equal(pred.numpy(), x.detach().numpy().argmax(1))
    with pytest.raises(RuntimeError, match="requires grad"):
        x.numpy()


def test_data_setter_replaces_the_storage_and_the_optimizer_follows(rng):
    torch = torch_or_skip()
    new = randn(rng, 3, 4)
    lin = nn.Linear(4, 3)
    opt = optim.SGD(lin.parameters(), lr=1.0)
    lin.weight.data = gpunn.tensor(new)
    np.testing.assert_array_equal(lin.weight.detach().numpy(), new)
    lin.weight.grad = gpunn.ones(3, 4)
    lin.bias.grad = gpunn.zeros(3)
    opt.step()
    np.testing.assert_allclose(lin.weight.detach().numpy(), new - 1.0, rtol=1e-6)
    t = torch.zeros(2)
    t.data = torch.ones(3)  # the shape may change, as in torch
    g = gpunn.zeros(2)
    g.data = gpunn.ones(3)
    assert g.shape == tuple(t.shape)
    with pytest.raises(TypeError, match="Tensor"):
        g.data = np.ones(3)


# ------------------------------------------------------------------------------------------------
# in-place ops on non-leaves are differentiated like PyTorch
# ------------------------------------------------------------------------------------------------
INPLACE_CASES = {
    "add_": lambda L, x, w: (lambda y: (y.add_(w), y)[1])(x * 2),
    "iadd": lambda L, x, w: _iadd(x * 2, w),
    "isub_mul": lambda L, x, w: _isub_imul(x * 3, w),
    "itruediv": lambda L, x, w: _idiv(x * 1.5, w),
    "mul_self_saved": lambda L, x, w: (lambda y: (y.mul_(w), y * y)[1])(x + 1),
    "exp_": lambda L, x, w: (x * 0.5).exp_() * w,
    "log_": lambda L, x, w: (x * x + 1).log_(),
    "sqrt_": lambda L, x, w: (x * x + 1).sqrt_(),
    "sigmoid_tanh_": lambda L, x, w: (x * 2).sigmoid_().tanh_(),
    "relu_": lambda L, x, w: (x - 0.1).relu_() * w,
    "clamp_": lambda L, x, w: (x * 2).clamp_(-0.5, 0.7),
    "pow_": lambda L, x, w: (x + 3).pow_(3),
    "neg_abs_": lambda L, x, w: (x * 2).neg_().abs_(),
    "masked_fill_": lambda L, x, w: (x * 2).masked_fill_(x > 0.3, 0.0) * w,
    "setitem_value_grad": lambda L, x, w: _setitem(L, x, w),
    "setitem_into_constant": lambda L, x, w: _setitem_const(L, x, w),
    "zero_then_add": lambda L, x, w: (lambda y: (y.zero_(), y.add_(w), y * x)[2])(x * 1),
    "copy_": lambda L, x, w: (lambda y: (y.copy_(w * 3), y * x)[1])(L.zeros(3)),
}


def _iadd(y, w):
    y += w
    return y * y


def _isub_imul(y, w):
    y -= w
    y *= w
    return y


def _idiv(y, w):
    y /= w
    return y


def _setitem(L, x, w):
    y = x * 2
    y[1] = w[0] * 3
    return y * y


def _setitem_const(L, x, w):
    buf = L.zeros(3)
    buf[1:] = x[:2] * w[1:]
    return buf * buf


@pytest.mark.parametrize("case", list(INPLACE_CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inplace_on_non_leaves_matches_torch(rng, case, dtype):
    torch = torch_or_skip()
    x0, w0 = randn(rng, 3, dtype=dtype) * 0.5, randn(rng, 3, dtype=dtype)
    out, raised = {}, {}
    for L in (gpunn, torch):
        x = L.tensor(x0, requires_grad=True)
        w = L.tensor(w0, requires_grad=True)
        y = INPLACE_CASES[case](L, x, w)
        try:
            (y * L.tensor(np.arange(1.0, 4.0, dtype=dtype))).sum().backward()
        except RuntimeError as exc:  # e.g. sigmoid_ saved its output and tanh_ overwrote it
            raised[L.__name__] = str(exc)
            continue
        out[L.__name__] = [
            y.detach().numpy().copy(),
            x.grad.numpy().copy(),
            None if w.grad is None else w.grad.numpy().copy(),
        ]
    if "torch" in raised:
        assert MODIFIED in raised["torch"] and MODIFIED in raised.get("gpunn", ""), raised
        return
    assert not raised, raised
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for a, b in zip(out["gpunn"], out["torch"]):
        if b is None:
            assert a is None or not np.any(a)
        else:
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def test_inplace_on_a_non_leaf_already_used_raises_instead_of_a_wrong_gradient():
    x = gpunn.ones(3, requires_grad=True)
    y = x * 2
    z = y * 3
    with pytest.raises(RuntimeError, match="already used"):
        y.add_(1)
    z.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), 6 * np.ones(3))


def test_inplace_on_a_view_of_a_tensor_that_requires_grad_raises():
    x = gpunn.ones(3, 4, requires_grad=True)
    v = (x * 2)[0]
    with pytest.raises(RuntimeError, match="view"):
        v.mul_(2)
    with pytest.raises(RuntimeError, match="view|leaf"):
        x[0].mul_(2)


def test_inplace_dtype_and_shape_rules_match_torch():
    torch = torch_or_skip()
    for L in (gpunn, torch):
        t = L.tensor([1, 2])
        with pytest.raises(RuntimeError, match="can't be cast"):
            t += 0.5
        with pytest.raises(RuntimeError, match="doesn't match the broadcast shape"):
            L.ones(3).add_(L.ones(2, 3))
        f = L.ones(2, 3)
        f += L.tensor([1.0, 2.0, 3.0])  # broadcasting into the destination is fine
        np.testing.assert_array_equal(f.numpy(), np.array([[2.0, 3.0, 4.0]] * 2))
    with pytest.raises(RuntimeError, match="single memory location"):
        gpunn.ones(3).expand(2, 3).add_(1)


def test_version_counter_is_shared_by_aliases():
    x = gpunn.ones(2, 3)
    v0 = x._version
    x.view(-1).add_(1)
    x.detach()[0].zero_()
    x.data.mul_(2)
    x[1] = 3.0
    assert x._version == v0 + 4
    c = x.clone()
    c.add_(1)
    assert x._version == v0 + 4  # a clone has its own storage


def test_retain_graph_backward_twice_then_inplace_raises():
    x = gpunn.tensor([0.5, -1.0], requires_grad=True)
    y = x.exp()
    z = y.sum()
    z.backward(retain_graph=True)
    with gpunn.no_grad():
        y.mul_(2)
    with pytest.raises(RuntimeError, match=MODIFIED):
        z.backward()


@pytest.mark.parametrize(
    "write",
    [
        lambda L, t: t.__setitem__(0, 1.7),
        lambda L, t: t.__setitem__(0, L.tensor(1.7)),
        lambda L, t: t.fill_(2.7),
        lambda L, t: t.copy_(L.tensor([1.5, 2.5])),
        lambda L, t: t.__iadd__(L.tensor(2)),
        lambda L, t: t.__setitem__(slice(0, 1), L.tensor([3.9])),
    ],
)
def test_writes_into_integer_tensors_convert_like_torch(write):
    torch = torch_or_skip()
    got, expected = gpunn.tensor([1, 2]), torch.tensor([1, 2])
    write(gpunn, got)
    write(torch, expected)
    assert got.dtype == np.int64 and got.tolist() == expected.tolist()
    with pytest.raises(RuntimeError, match="dtypes match"):
        gpunn.tensor([1, 2])[[0]] = gpunn.tensor([1.7])


def test_a_tensor_made_to_require_grad_later_gets_no_gradient_from_earlier_ops():
    """z = buf + x was recorded while buf needed no gradient; buf.add_(w) must not route z's gradient to w."""
    torch = torch_or_skip()
    out = {}
    for L in (gpunn, torch):
        x, w = L.ones(3, requires_grad=True), L.full((3,), 2.0, requires_grad=True)
        buf = L.zeros(3)
        z = buf + x
        buf.add_(w)
        (z.sum() + (buf * 3).sum()).backward()
        out[L.__name__] = (x.grad.numpy().copy(), w.grad.numpy().copy())
    for a, b in zip(out["gpunn"], out["torch"]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case", ["iadd_index", "view_add_", "slice_mul_", "row_copy_", "div_saves_output"])
def test_inplace_through_an_index_view_reaches_the_base_like_torch(rng, case):
    torch = torch_or_skip()
    x0, w0 = randn(rng, 4, 3), randn(rng, 3)
    out = {}
    for L in (gpunn, torch):
        x, w = L.tensor(x0), L.tensor(w0, requires_grad=True)
        if case == "iadd_index":
            x[1] += w * 2  # tmp = x[1]; tmp += ...; x[1] = tmp
        elif case == "view_add_":
            x[2].add_(w)
        elif case == "slice_mul_":
            x[1:3].mul_(w)
        elif case == "row_copy_":
            x[0].copy_(w.exp())
        else:
            x[3].div_(w)
        (x * L.tensor(np.arange(12.0, dtype=np.float32).reshape(4, 3))).sum().backward()
        out[L.__name__] = (x.detach().numpy().copy(), w.grad.numpy().copy())
    for a, b in zip(out["gpunn"], out["torch"]):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_inplace_with_grad_through_a_reshape_view_raises():
    x, w = gpunn.zeros(2, 3), gpunn.ones(6, requires_grad=True)
    with pytest.raises(RuntimeError, match="on a view"):
        x.view(-1).add_(w)
