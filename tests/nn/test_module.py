"""Module: registration and naming, state_dict round trip and errors, train/eval, zero_grad, to(), repr."""

from collections import OrderedDict

import numpy as np
import pytest

import gpunn
from gpunn import nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 4)
        self.drop = nn.Dropout(0.3)
        self.scale = nn.Parameter(gpunn.ones(4))
        self.register_buffer("running", gpunn.zeros(4))
        self.register_buffer("scratch", gpunn.zeros(2), persistent=False)

    def forward(self, x):
        return self.drop(self.fc(x)) * self.scale + self.running


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()
        self.head = nn.Linear(4, 3, bias=False)

    def forward(self, x):
        return self.head(self.block(x))


# ------------------------------------------------------------------------------------------------
# registration
# ------------------------------------------------------------------------------------------------
def test_parameter_is_a_leaf_requiring_grad_and_shares_data():
    t = gpunn.randn(3, 2)
    p = nn.Parameter(t)
    assert isinstance(p, gpunn.Tensor) and p.requires_grad and p.is_leaf
    assert p._data is t._data
    assert not nn.Parameter(t, requires_grad=False).requires_grad
    a = np.zeros((2, 2), dtype=np.float32)
    if gpunn.get_backend().name == "numpy":  # elsewhere a NumPy array is copied to the device
        assert np.shares_memory(nn.Parameter(a)._data, a)
    assert repr(p).startswith("Parameter containing:\ntensor(")
    with pytest.raises(RuntimeError, match="floating point"):
        nn.Parameter(gpunn.tensor([1, 2]))


def test_named_parameters_are_dotted_and_in_registration_order():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["block.scale", "block.fc.weight", "block.fc.bias", "head.weight"]
    assert [n for n, _ in net.block.named_parameters(prefix="b")] == ["b.scale", "b.fc.weight", "b.fc.bias"]
    assert [n for n, _ in net.block.named_parameters(recurse=False)] == ["scale"]
    assert [n for n, _ in net.named_buffers()] == ["block.running", "block.scratch"]
    assert [n for n, _ in net.named_children()] == ["block", "head"]
    assert [n for n, _ in net.named_modules()] == ["", "block", "block.fc", "block.drop", "head"]
    assert net.get_submodule("block.fc") is net.block.fc
    assert net.num_parameters() == 4 + 5 * 4 + 4 + 4 * 3


def test_shared_parameter_is_yielded_once_and_counted_once():
    net = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    net[1].weight = net[0].weight
    assert [n for n, _ in net.named_parameters()] == ["0.weight", "0.bias", "1.bias"]
    assert net.num_parameters() == 9 + 3 + 3
    # state_dict keeps both names, like PyTorch
    assert list(net.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]


def test_setattr_rules():
    m = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="cannot assign 'Tensor' as parameter 'weight'"):
        m.weight = gpunn.zeros(2, 2)
    m.bias = None
    assert m.bias is None and [n for n, _ in m.named_parameters()] == ["weight"]
    m.extra = nn.ReLU()
    assert "extra" in m._modules
    del m.extra
    assert "extra" not in m._modules and not hasattr(m, "extra")

    class NoInit(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(gpunn.zeros(1))

    with pytest.raises(AttributeError, match="before Module.__init__"):
        NoInit()
    with pytest.raises(KeyError, match="contain"):
        nn.Module().register_buffer("a.b", gpunn.zeros(1))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = m.nope


def test_forward_must_be_defined():
    with pytest.raises(NotImplementedError, match="forward"):
        nn.Module()(gpunn.zeros(1))


# ------------------------------------------------------------------------------------------------
# train / eval, zero_grad, apply
# ------------------------------------------------------------------------------------------------
def test_train_eval_propagate_to_every_submodule():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    net.block.train(False)
    assert net.training and not net.block.fc.training
    with pytest.raises(ValueError, match="boolean"):
        net.train("no")


def test_eval_makes_dropout_deterministic():
    net = Net()
    x = gpunn.randn(6, 5)
    net.eval()
    np.testing.assert_array_equal(net(x).detach().numpy(), net(x).detach().numpy())


def test_zero_grad_to_none_and_in_place():
    net = Net()
    net(gpunn.randn(6, 5)).sum().backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert all(g is not None for g in grads.values())
    net.zero_grad(set_to_none=False)
    for n, p in net.named_parameters():
        assert p.grad is grads[n] and not p.grad.numpy().any()  # same array, zeroed in place
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_apply_visits_children_then_self():
    seen = []
    net = Net()
    assert net.apply(lambda m: seen.append(type(m).__name__)) is net
    assert seen == ["Linear", "Dropout", "Block", "Linear", "Net"]


def test_requires_grad_freezes():
    net = Net()
    net.block.requires_grad_(False)
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["head.weight"]
    assert net.num_parameters(only_trainable=True) == 12


# ------------------------------------------------------------------------------------------------
# state_dict
# ------------------------------------------------------------------------------------------------
def test_state_dict_keys_values_share_data_and_are_detached():
    net = Net()
    sd = net.state_dict()
    assert isinstance(sd, OrderedDict)
    assert list(sd) == ["block.scale", "block.running", "block.fc.weight", "block.fc.bias", "head.weight"]
    assert all(not v.requires_grad and type(v) is gpunn.Tensor for v in sd.values())
    assert sd["head.weight"]._data is net.head.weight._data
    assert net.state_dict(prefix="model.").keys() == {"model." + k for k in sd}
    assert net.state_dict(keep_vars=True)["head.weight"] is net.head.weight


def test_state_dict_round_trip_copies_in_place():
    src, dst = Net(), Net()
    with gpunn.no_grad():
        src.block.running.fill_(2.5)
    x = gpunn.randn(7, 5)
    src.eval(), dst.eval()
    arrays_before = [p._data for p in dst.parameters()]
    snapshot = {k: v.numpy().copy() for k, v in src.state_dict().items()}  # NumPy arrays work too
    result = dst.load_state_dict(snapshot)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert repr(result) == "<All keys matched successfully>"
    # the parameter arrays are the same objects (an optimizer's views stay valid)
    assert all(a is p._data for a, p in zip(arrays_before, dst.parameters()))
    with gpunn.no_grad():
        np.testing.assert_array_equal(dst(x).numpy(), src(x).numpy())
    np.testing.assert_array_equal(dst.block.running.numpy(), np.full(4, 2.5, np.float32))
    # and the copy is independent of the source
    with gpunn.no_grad():
        src.head.weight.fill_(0.0)
    assert dst.head.weight.detach().numpy().any()


def test_load_state_dict_writes_into_a_view_of_a_flat_buffer():
    if gpunn.get_backend().name != "numpy":
        pytest.skip("a NumPy flat buffer holds only numpy-backend parameters")
    m = nn.Linear(3, 2)
    flat = np.zeros(8, dtype=np.float32)
    w_view, b_view = flat[:6].reshape(2, 3), flat[6:]
    w_view[...] = m.weight._data
    b_view[...] = m.bias._data
    m.weight._data, m.bias._data = w_view, b_view  # what a packing optimizer does
    new = {"weight": np.arange(6, dtype=np.float64).reshape(2, 3), "bias": gpunn.tensor([7.0, 8.0])}
    m.load_state_dict(new)
    np.testing.assert_array_equal(flat, np.arange(9, dtype=np.float32)[[0, 1, 2, 3, 4, 5, 7, 8]])
    assert m.weight.dtype == np.float32  # float64 values were cast to the parameter's dtype


def test_strict_load_reports_missing_unexpected_and_size_mismatch_with_torch_wording():
    net = Net()
    sd = net.state_dict()
    del sd["block.fc.bias"]
    sd["extra.weight"] = gpunn.zeros(1)
    sd["head.weight"] = gpunn.zeros(3, 5)
    before = net.block.scale.detach().numpy().copy()
    sd["block.scale"] = gpunn.full((4,), 9.0)
    with pytest.raises(RuntimeError) as info:
        net.load_state_dict(sd)
    msg = str(info.value)
    assert msg.startswith("Error(s) in loading state_dict for Net:\n\t")
    assert 'Missing key(s) in state_dict: "block.fc.bias". ' in msg
    assert 'Unexpected key(s) in state_dict: "extra.weight". ' in msg
    assert (
        "size mismatch for head.weight: copying a param with shape (3, 5) from checkpoint, "
        "the shape in current model is (3, 4)."
    ) in msg
    assert msg.index("Missing") < msg.index("Unexpected") < msg.index("size mismatch")
    np.testing.assert_array_equal(net.block.scale.detach().numpy(), before)  # nothing copied


def test_non_strict_load_returns_the_keys_and_still_rejects_size_mismatch():
    net = Net()
    sd = net.state_dict()
    del sd["head.weight"]
    sd["bogus"] = np.zeros(2)
    result = net.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["head.weight"] and result.unexpected_keys == ["bogus"]
    assert result == (["head.weight"], ["bogus"])
    sd["block.scale"] = np.zeros(5)
    with pytest.raises(RuntimeError, match="size mismatch for block.scale"):
        net.load_state_dict(sd, strict=False)


def test_load_state_dict_rejects_non_numeric_values():
    m = nn.Linear(2, 1)
    sd = {"weight": np.array([["a", "b"]]), "bias": np.zeros(1)}
    with pytest.raises(RuntimeError, match="non-numeric"):
        m.load_state_dict(sd)


def test_non_persistent_buffer_is_not_saved():
    net = Net()
    assert "block.scratch" not in net.state_dict()
    assert "block.scratch" in dict(net.named_buffers())


# ------------------------------------------------------------------------------------------------
# dtype / backend moves, repr
# ------------------------------------------------------------------------------------------------
def test_double_and_float_cast_parameters_grads_and_buffers_in_place():
    net = Net()
    net(gpunn.randn(2, 5)).sum().backward()
    w = net.head.weight
    assert net.double() is net
    assert net.head.weight is w and w.dtype == np.float64 and w.grad.dtype == np.float64
    assert net.block.running.dtype == np.float64
    assert net(gpunn.randn(2, 5, dtype=gpunn.float64)).dtype == np.float64
    net.float()
    assert all(p.dtype == np.float32 for p in net.parameters())
    net.to(gpunn.float64)
    assert w.dtype == np.float64
    net.to("numpy")  # a no-op move keeps the arrays
    with pytest.raises(TypeError, match="floating point"):
        net.to(gpunn.int64)


def test_repr_is_nested_like_torch():
    model = nn.Sequential(nn.Linear(784, 200), nn.ReLU(), nn.Sequential(nn.Linear(200, 10), nn.LogSoftmax(dim=1)))
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Linear(in_features=784, out_features=200, bias=True)\n"
        "  (1): ReLU()\n"
        "  (2): Sequential(\n"
        "    (0): Linear(in_features=200, out_features=10, bias=True)\n"
        "    (1): LogSoftmax(dim=1)\n"
        "  )\n"
        ")"
    )


def test_deepcopy_of_a_model_gives_independent_parameters():
    import copy

    net = Net()
    twin = copy.deepcopy(net)
    assert twin.head.weight is not net.head.weight
    np.testing.assert_array_equal(twin.head.weight.detach().numpy(), net.head.weight.detach().numpy())
    with gpunn.no_grad():
        twin.head.weight.fill_(0.0)
    assert net.head.weight.detach().numpy().any()
    twin.eval()
    twin(gpunn.randn(2, 5))  # the copy still runs


def test_load_state_dict_after_building_the_optimizer_reaches_its_flat_buffer():
    from gpunn import optim

    model, source = nn.Linear(4, 3), nn.Linear(4, 3)
    opt = optim.SGD(model.parameters(), lr=0.1)
    arrays = [p._data for p in model.parameters()]  # views of the optimizer's flat buffer
    model.load_state_dict(source.state_dict())
    assert all(a is p._data for a, p in zip(arrays, model.parameters()))
    x = gpunn.randn(5, 4)
    opt.zero_grad()
    model(x).sum().backward()
    opt.step()
    with gpunn.no_grad():
        expected = source.weight.detach().numpy() - 0.1 * np.ones((3, 1)) * x.numpy().sum(0)
    np.testing.assert_allclose(model.weight.detach().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_parameter_list_and_dict_like_torch():
    """Registered names, counting, indexing, appending plain tensors, state_dict keys, training, and the repr."""
    import torch

    outs = []
    for L in (gpunn, torch):

        class M(L.nn.Module):
            def __init__(self):
                super().__init__()
                self.ws = L.nn.ParameterList([L.nn.Parameter(L.ones(3)) for _ in range(2)])
                self.d = L.nn.ParameterDict({"a": L.nn.Parameter(L.zeros(2, 4))})
                self.ws.append(L.ones(1))
                self.d["b"] = L.nn.Parameter(L.full((2,), 0.5))

            def forward(self, x):
                return sum((w.sum() for w in self.ws), x * self.d["b"]).sum() + self.d["a"].sum()

        m = M()
        opt = L.optim.SGD(m.parameters(), lr=0.1)
        m(L.ones(2)).backward()
        opt.step()
        outs.append((
            [n for n, _ in m.named_parameters()], list(m.state_dict()), len(m.ws), tuple(m.ws[-1].shape),
            "a" in m.d, list(m.d.keys()),
            repr(m).replace("torch.", "gpunn.").replace(" (cuda:0)", "").replace("gpunn.cuda.", "gpunn."),
            m.d["b"].detach().numpy().tolist(),
            len(m.ws[:2]),
        ))  # fmt: skip
    assert outs[0] == outs[1]
