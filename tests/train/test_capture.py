"""compile_step: a captured step gives the eager loop's parameters bit for bit, and refuses what it cannot hold.

Runs on the backend GPUNN_TEST_BACKEND names (numpy by default); tests/kernels/test_capture_emulated.py runs
the MLP/CNN equality and counts host reads on the emulated cupy backend.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import gpunn
import gpunn.nn.functional as F
from gpunn import nn, optim
from gpunn.train import CaptureError, capture, compile_step
from tests.helpers import train_step


def mlp(dropout=0.2, k=784, h=64):
    return nn.Sequential(nn.Linear(k, h), nn.ReLU(), nn.Dropout(dropout), nn.Linear(h, h), nn.Tanh(), nn.Linear(h, 10))


def cnn(dropout=0.1):
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(dropout),
        nn.Conv2d(4, 6, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 10),
    )


OPTIMIZERS = {
    "sgd": lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-4),
    "nesterov": lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda ps: optim.Adam(ps, lr=1e-3),
    "adamw": lambda ps: optim.AdamW(ps, lr=1e-3, weight_decay=0.05),
}


def batches(shapes, rng_seed=1):
    rng = np.random.default_rng(rng_seed)
    return [
        (gpunn.tensor(rng.standard_normal(s).astype(np.float32)), gpunn.tensor(rng.integers(0, 10, s[0])))
        for s in shapes
    ]


def train_run(make, opt_name, data, captured, loss_fn=None, before_step=None, **step_kw):
    gpunn.manual_seed(0)
    model = make()
    opt = OPTIMIZERS[opt_name](model.parameters())
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    step = compile_step(model, loss_fn, opt, **step_kw) if captured else None
    losses = []
    for i, (x, y) in enumerate(data):
        if before_step is not None:
            before_step(i, model, opt)
        loss = train_step(model, loss_fn, opt, x, y, step)
        losses.append(None if loss is None else float(loss.item()))
    params = [p._backend.to_numpy(p._data).copy() for p in model.parameters()]
    grads = [None if p.grad is None else p._backend.to_numpy(p.grad._data).copy() for p in model.parameters()]
    return params, losses, grads, step


def assert_same(a, b):
    pa, la, ga, _ = a
    pb, lb, gb, _ = b
    assert la == lb
    assert len(pa) == len(pb)
    for x, y in zip(pa, pb):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(ga, gb):
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_mlp_50_steps_equal_eager_bit_for_bit(opt_name):
    data = batches([(24, 784)] * 50)
    eager = train_run(mlp, opt_name, data, False)
    cap = train_run(mlp, opt_name, data, True)
    assert_same(eager, cap)
    step = cap[3]
    assert len(step.plans) == 1 and next(iter(step.plans.values())).replays == 49
    assert np.isfinite(eager[1]).all() and eager[1][-1] != eager[1][0]


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_cnn_50_steps_equal_eager_bit_for_bit(opt_name):
    data = batches([(9, 1, 12, 12)] * 50)
    assert_same(train_run(cnn, opt_name, data, False), train_run(cnn, opt_name, data, True))


@pytest.mark.parametrize("act", [nn.ReLU, nn.Sigmoid, nn.Tanh, lambda: nn.LeakyReLU(0.1)])
def test_every_fused_activation_and_an_unfused_one(act):
    def make():
        return nn.Sequential(nn.Linear(13, 11), act(), nn.Linear(11, 7), nn.Dropout(0.3), act(), nn.Linear(7, 10))

    data = batches([(5, 13)] * 6)
    assert_same(train_run(make, "adam", data, False), train_run(make, "adam", data, True))


def test_a_partial_batch_gets_its_own_plan_and_the_results_stay_eager():
    data = batches([(16, 784), (16, 784), (7, 784), (16, 784), (7, 784), (7, 784)])
    eager = train_run(mlp, "sgd", data, False)
    cap = train_run(mlp, "sgd", data, True)
    assert_same(eager, cap)
    assert len(cap[3].plans) == 2
    assert_same(eager, train_run(mlp, "sgd", data, True, new_shape="eager"))


def test_new_shape_drop_skips_the_batch():
    data = batches([(16, 784), (16, 784), (7, 784), (16, 784)])
    cap = train_run(mlp, "sgd", data, True, new_shape="drop")
    assert cap[1][2] is None
    eager = train_run(mlp, "sgd", [d for i, d in enumerate(data) if i != 2], False)
    assert cap[1][:2] + cap[1][3:] == eager[1]
    for x, y in zip(eager[0], cap[0]):
        np.testing.assert_array_equal(x, y)


def test_eval_mode_frozen_layers_and_lr_changes_follow_the_eager_loop():
    def before(i, model, opt):
        if i == 3:
            model.eval()  # dropout off: a new plan
        if i == 5:
            model.train()
            model[0].weight.requires_grad_(False)  # frozen first layer
        if i == 7:
            opt.param_groups[0]["lr"] = 0.01  # what a scheduler does

    data = batches([(12, 784)] * 10)
    eager = train_run(mlp, "sgd", data, False, before_step=before)
    cap = train_run(mlp, "sgd", data, True, before_step=before)
    assert_same(eager, cap)
    assert len(cap[3].plans) == 3


def test_a_rebound_parameter_value_is_read_each_step():
    def before(i, model, opt):
        if i == 4:
            model[3].weight.data = gpunn.zeros(model[3].weight.shape) + 0.01

    data = batches([(8, 784)] * 7)
    assert_same(
        train_run(mlp, "adam", data, False, before_step=before), train_run(mlp, "adam", data, True, before_step=before)
    )


class Branchy(nn.Module):
    def __init__(self, k=784):
        super().__init__()
        self.fc = nn.Linear(k, 10)

    def forward(self, x):
        return self.fc(x) if float(x.sum().item()) > 0 else -self.fc(x)


def test_a_module_with_its_own_forward_is_refused_by_name():
    model = nn.Sequential(nn.Linear(784, 784), Branchy())
    with pytest.raises(CaptureError, match=r"module 1 \(Branchy\).*own forward"):
        compile_step(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(CaptureError, match=r"Branchy"):
        compile_step(Branchy(), nn.CrossEntropyLoss(), optim.SGD(Branchy().parameters(), lr=0.1))


def test_on_error_eager_warns_once_and_trains_as_eager():
    def make():
        return nn.Sequential(nn.Linear(784, 16), Branchy(16))

    data = batches([(6, 784)] * 4)
    eager = train_run(make, "sgd", data, False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cap = train_run(make, "sgd", data, True, on_error="eager")
    assert [str(w.message) for w in caught if "compile_step" in str(w.message)] == [str(caught[0].message)]
    assert "Branchy" in str(caught[0].message)
    assert_same(eager, cap)


def test_a_loss_of_several_ops_is_refused_before_the_step():
    def loss_fn(out, y):
        return F.cross_entropy(out, y) * 2

    gpunn.manual_seed(0)
    model = mlp()
    before = [p._backend.to_numpy(p._data).copy() for p in model.parameters()]
    step = compile_step(model, loss_fn, optim.SGD(model.parameters(), lr=0.1))
    ((x, y),) = batches([(4, 784)])
    with pytest.raises(CaptureError, match="not one op on the model's output"):
        step(x, y)
    for b, p in zip(before, model.parameters()):  # nothing was stepped
        np.testing.assert_array_equal(b, p._backend.to_numpy(p._data))
    data = batches([(4, 784)] * 3)
    with pytest.warns(RuntimeWarning, match="not one op"):
        cap = train_run(mlp, "sgd", data, True, loss_fn=loss_fn, on_error="eager")
    assert_same(train_run(mlp, "sgd", data, False, loss_fn=loss_fn), cap)


def test_replaced_modules_shared_weights_and_missing_parameters_are_refused():
    gpunn.manual_seed(0)
    model = mlp()
    step = compile_step(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1))
    ((x, y),) = batches([(4, 784)])
    step(x, y)
    model[3].weight = nn.Parameter(gpunn.zeros(64, 64))
    with pytest.raises(CaptureError, match=r"parameter 3\.weight was replaced"):
        step(x, y)

    lin = nn.Linear(10, 10)
    shared = nn.Sequential(lin, nn.ReLU(), lin)
    with pytest.raises(CaptureError, match="used by two layers"):
        compile_step(shared, nn.CrossEntropyLoss(), optim.SGD(shared.parameters(), lr=0.1))

    model = mlp()
    with pytest.raises(CaptureError, match=r"parameter 5\.weight requires grad but is not in the optimizer"):
        compile_step(model, nn.CrossEntropyLoss(), optim.SGD(list(model.parameters())[:4], lr=0.1))


def test_bad_labels_and_bad_arguments_raise():
    gpunn.manual_seed(0)
    model = mlp()
    step = compile_step(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1))
    ((x, y),) = batches([(4, 784)])
    step(x, y)
    step(x, y)
    if gpunn.get_backend().name == "numpy":  # the cupy backend raises at the next host read
        with pytest.raises(ValueError, match="out of range"):
            step(x, gpunn.tensor([0, 1, 2, 10]))
    with pytest.raises(TypeError, match="must be gpunn Tensors"):
        step(np.zeros((4, 784), np.float32), y)
    with pytest.raises(ValueError, match="new_shape must be one of"):
        compile_step(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), new_shape="pad")


def _fit(make, capture, sync_every=1, epochs=2):
    from gpunn import train

    gpunn.manual_seed(0)
    rng = np.random.default_rng(3)
    X = rng.standard_normal((70, 784)).astype(np.float32)
    y = rng.integers(0, 10, 70)
    model = make()
    opt = optim.Adam(model.parameters(), lr=1e-3)
    from gpunn.data import DataLoader

    loader = DataLoader((X, y), batch_size=16, shuffle=True, seed=2)  # 4 batches of 16 and one of 6
    hist = train.fit(
        model,
        opt,
        nn.CrossEntropyLoss(),
        loader,
        val=(X[:20], y[:20]),
        epochs=epochs,
        verbose=0,
        sync_every=sync_every,
        capture=capture,
        scheduler=optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
    )
    return hist, [p._backend.to_numpy(p._data).copy() for p in model.parameters()]


@pytest.mark.parametrize("sync_every", [1, 3])
def test_fit_capture_gives_the_eager_history_and_weights(sync_every):
    h0, p0 = _fit(mlp, False, sync_every)
    h1, p1 = _fit(mlp, True, sync_every)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert h0[key] == h1[key], key
    for a, b in zip(p0, p1):
        np.testing.assert_array_equal(a, b)


def test_fit_capture_auto_falls_back_with_one_warning_and_true_raises():
    def make():
        return nn.Sequential(nn.Linear(784, 16), Branchy(16))

    h0, p0 = _fit(make, False)
    with pytest.warns(RuntimeWarning, match="Branchy.*training eagerly instead") as rec:
        h1, p1 = _fit(make, "auto")
    assert len([w for w in rec if "compile_step" in str(w.message)]) == 1
    assert h0["loss"] == h1["loss"]
    for a, b in zip(p0, p1):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(CaptureError, match="Branchy"):
        _fit(make, True)
    with pytest.raises(ValueError, match="capture must be"):
        _fit(mlp, "yes")


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.Linear(784, 10),  # one module, no Sequential
        lambda: nn.Sequential(nn.Linear(784, 30, bias=False), nn.ReLU(), nn.Sequential(nn.Linear(30, 10))),
    ],
)
def test_single_layers_nested_sequentials_and_no_bias(make):
    data = batches([(5, 784)] * 5)
    assert_same(train_run(make, "adam", data, False), train_run(make, "adam", data, True))


def test_float64_models_and_zero_grad_between_steps():
    def make():
        return mlp(h=9).to(dtype=gpunn.float64)

    rng = np.random.default_rng(5)
    data = [(gpunn.tensor(rng.standard_normal((6, 784))), gpunn.tensor(rng.integers(0, 10, 6))) for _ in range(5)]

    def before(i, model, opt):
        opt.zero_grad()  # a habit from the eager loop: the plan then writes into the renewed buffers

    eager = train_run(make, "sgd", data, False, before_step=before)
    cap = train_run(make, "sgd", data, True, before_step=before)
    assert cap[0][0].dtype == np.float64
    assert_same(eager, cap)


def test_an_input_that_requires_grad_runs_eagerly_and_a_late_hook_is_refused():
    gpunn.manual_seed(0)
    model = mlp()
    step = compile_step(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1))
    ((x, y),) = batches([(4, 784)])
    step(x, y)
    xg = x.detach().requires_grad_()
    step(xg, y)
    assert xg.grad is not None and xg.grad.shape == x.shape
    model[0].weight.register_post_accumulate_grad_hook(lambda p: None)
    with pytest.raises(CaptureError, match="post-accumulate-grad hook"):
        step(x, y)


def test_a_leaky_relu_of_non_positive_slope_stays_unfused_as_in_f_linear():
    def make():
        return nn.Sequential(nn.Linear(784, 12), nn.LeakyReLU(-0.5), nn.Linear(12, 10), nn.LeakyReLU(0.0))

    data = batches([(6, 784)] * 6)
    assert_same(train_run(make, "sgd", data, False), train_run(make, "sgd", data, True))


def test_a_module_added_to_the_model_after_recording_is_refused():
    gpunn.manual_seed(0)
    model = mlp()
    step = compile_step(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1))
    ((x, y),) = batches([(4, 784)])
    step(x, y)
    step(x, y)
    model.append(nn.ReLU())
    with pytest.raises(CaptureError, match="modules of Sequential changed"):
        step(x, y)


@pytest.mark.parametrize(
    "loss_fn,direct",
    [
        (nn.CrossEntropyLoss(reduction="sum"), True),
        (nn.CrossEntropyLoss(ignore_index=3), True),
        (nn.CrossEntropyLoss(label_smoothing=0.2), True),
        (F.cross_entropy, True),
        (nn.CrossEntropyLoss(weight=gpunn.tensor(np.linspace(0.5, 2.0, 10).astype(np.float32))), False),
        (lambda out, y: F.cross_entropy(out, y, reduction="sum"), False),
    ],
    ids=["sum", "ignore_index", "label_smoothing", "F.cross_entropy", "weight", "lambda"],
)
def test_every_cross_entropy_form_equals_eager(loss_fn, direct):
    """The plan runs cross-entropy through the backend's primitive straight where the eager loss is exactly
    that call (``direct``), and through the loss op otherwise: both give the eager losses and weights bit for
    bit."""
    data = batches([(12, 784)] * 6)
    y2 = data[2][1]._data.copy()
    y2[::2] = 3  # half the targets of one batch are the ignore_index of one case
    data[2] = (data[2][0], gpunn.tensor(y2))
    assert_same(
        train_run(mlp, "adam", data, False, loss_fn=loss_fn), train_run(mlp, "adam", data, True, loss_fn=loss_fn)
    )
    assert (capture._cross_entropy_options(loss_fn) is not None) == direct


def test_int32_targets_and_a_loss_option_changed_mid_run_follow_the_eager_loop():
    loss_fn = nn.CrossEntropyLoss()

    def before(i, model, opt):
        if i == 3:
            loss_fn.label_smoothing = 0.1
        if i == 5:
            loss_fn.reduction = "sum"

    rng = np.random.default_rng(4)
    data = [
        (gpunn.tensor(rng.standard_normal((10, 784)).astype(np.float32)), gpunn.tensor(rng.integers(0, 10, 10)).int())
        for _ in range(8)
    ]
    eager = train_run(mlp, "sgd", data, False, loss_fn=loss_fn, before_step=before)
    loss_fn.label_smoothing, loss_fn.reduction = 0.0, "mean"
    assert_same(eager, train_run(mlp, "sgd", data, True, loss_fn=loss_fn, before_step=before))


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_a_scheduler_changing_lr_every_step_and_the_state_dict_equal_eager(opt_name):
    """lr from a scheduler (read each step), Adam's step counts and moments, SGD's momentum: the
    optimizer's state_dict after captured steps is the eager one, and training resumes from it alike."""
    data = batches([(10, 784)] * 12)

    def run(captured):
        gpunn.manual_seed(0)
        model = mlp()
        opt = OPTIMIZERS[opt_name](model.parameters())
        sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=len(data))
        loss_fn = nn.CrossEntropyLoss()
        step = compile_step(model, loss_fn, opt)
        lrs = []
        for x, y in data[:8]:
            if captured:
                step(x, y)
            else:
                opt.zero_grad()
                loss_fn(model(x), y).backward()
                opt.step()
            sched.step()
            lrs.append(opt.param_groups[0]["lr"])
        state = opt.state_dict()
        # resume in a fresh model and optimizer from the saved states, captured
        gpunn.manual_seed(1)
        model2 = mlp()
        model2.load_state_dict(model.state_dict())
        opt2 = OPTIMIZERS[opt_name](model2.parameters())
        opt2.load_state_dict(state)
        step2 = compile_step(model2, loss_fn, opt2)
        for x, y in data[8:]:
            step2(x, y)
        return lrs, state, [p._backend.to_numpy(p._data).copy() for p in model2.parameters()]

    lrs0, s0, p0 = run(False)
    lrs1, s1, p1 = run(True)
    assert lrs0 == lrs1 and len(set(lrs0)) == len(lrs0)
    assert s0["param_groups"] == s1["param_groups"]
    assert s0["state"].keys() == s1["state"].keys() and len(s0["state"]) == 6
    for k in s0["state"]:
        assert s0["state"][k].keys() == s1["state"][k].keys()
        for name, v in s0["state"][k].items():
            if isinstance(v, np.ndarray):
                np.testing.assert_array_equal(v, s1["state"][k][name])
                assert np.abs(v).sum() > 0
            else:
                assert v == s1["state"][k][name], name
    if opt_name == "adam":
        assert s1["state"][0]["step"] == 8
    for a, b in zip(p0, p1):
        np.testing.assert_array_equal(a, b)


def test_a_target_on_another_backend_raises_as_eagerly():
    from gpunn.backend.numpy_backend import NumpyBackend
    from gpunn.tensor import Tensor

    class Other(NumpyBackend):
        name = "other"

    gpunn.manual_seed(0)
    model = mlp()
    step = compile_step(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1))
    ((x, y),) = batches([(4, 784)])
    step(x, y)
    step(x, y)  # a replay
    with pytest.raises(RuntimeError, match="same device"):
        step(x, Tensor._wrap(y._data, Other()))


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
@pytest.mark.parametrize("threads", ["1", "2"])
def test_mlp_layers_in_one_backend_call_each_way_equal_eager_bit_for_bit(monkeypatch, opt_name, threads):
    """The numpy backend replays a Linear(+ReLU) layer in one call each way (its GEMM and passes in Numba),
    then the whole chain in one call each way: the bench's 784-200-200-10 MLP, 50 steps, gives the eager
    step's parameters and losses bit for bit."""
    from gpunn.backend import get_backend

    be = get_backend()
    if not hasattr(be, "captured_linear_forward"):
        pytest.skip("the numpy backend's one-call layers")
    monkeypatch.setenv("GPUNN_NUM_THREADS", threads)
    calls = {"linear_forward": 0, "linear_backward": 0, "chain_forward": 0, "chain_backward": 0}
    for way in calls:
        original = getattr(type(be), f"captured_{way}")

        def counted(self, *args, _original=original, _way=way):
            done = _original(self, *args)
            calls[_way] += bool(done)
            return done

        monkeypatch.setattr(type(be), f"captured_{way}", counted)

    def make():
        return nn.Sequential(nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, 10))

    data = batches([(200, 784)] * 50, rng_seed=3)
    eager = train_run(make, opt_name, data, False)
    cap = train_run(make, opt_name, data, True)
    assert_same(eager, cap)
    if calls["linear_forward"] == 0:
        pytest.skip("gpunn's GEMM does not run here (no AVX-512 or no Numba): the NumPy replay ran")
    # the first replay runs each layer in one call each way, the 48 others the whole chain in one call each way
    assert calls["linear_forward"] == calls["linear_backward"] == 3
    assert calls["chain_forward"] == calls["chain_backward"] == 48


def test_the_chain_follows_parameters_replaced_or_reloaded_between_steps():
    """The one-call chain reads the parameters' and gradients' buffers by address: a weight whose array is
    replaced (``.data =``), a state_dict loaded, a zero_grad(set_to_none=True) -- the next step sees them."""

    def make():
        return nn.Sequential(nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 64), nn.ReLU(), nn.Linear(64, 10))

    gpunn.manual_seed(5)
    saved = make().state_dict()

    def before(i, model, opt):
        if i == 7:
            model[2].weight.data = gpunn.zeros(model[2].weight.shape) + 0.01
        if i == 13:
            model.load_state_dict(saved)
        if i == 19:
            opt.zero_grad(set_to_none=True)
        if i == 23:
            with gpunn.no_grad():
                model[0].bias.mul_(0.5)

    data = batches([(200, 784)] * 30, rng_seed=4)
    for opt_name in ("sgd", "adam"):
        assert_same(
            train_run(make, opt_name, data, False, before_step=before),
            train_run(make, opt_name, data, True, before_step=before),
        )


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_a_chain_replayed_after_another_plan_ran_reads_its_own_buffers(opt_name):
    """Two plans (full and partial batches, epoch after epoch) share the step's layers: a plan's one-call chain
    must compute the loss from, and run its backward over, its own buffers, not those the other plan's replay
    left in the layers."""

    def make():
        return nn.Sequential(nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, 10))

    data = batches(([(200, 784)] * 3 + [(120, 784)]) * 4, rng_seed=6)
    eager = train_run(make, opt_name, data, False)
    cap = train_run(make, opt_name, data, True)
    assert_same(eager, cap)
    assert len(cap[3].plans) == 2


def test_a_chain_over_an_input_of_more_than_two_dims_equals_eager():
    """Linear layers on an (N, L, K) input: the one-call chain's output keeps the (N, L, C) shape eager gives
    (the loss reads it: here cross-entropy over C = 13 classes at 10 positions), bit for bit the eager step."""

    def make():
        return nn.Sequential(nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, 10))

    rng = np.random.default_rng(9)
    data = [
        (
            gpunn.tensor(rng.standard_normal((16, 13, 784)).astype(np.float32)),
            gpunn.tensor(rng.integers(0, 13, (16, 10))),
        )
        for _ in range(6)
    ]
    eager = train_run(make, "sgd", data, False)
    cap = train_run(make, "sgd", data, True)
    assert_same(eager, cap)
    assert cap[3].output.shape == (16, 13, 10)


def test_read_only_inputs_broadcast_loss_gradients_and_a_strided_bias_equal_eager():
    """What the one-call layers' signatures do not take -- a read-only input (a tensor over a read-only NumPy
    array), the read-only broadcast gradient of a loss like ``out.sum()``, a bias set to a strided view after
    recording -- runs as eagerly, bit for bit, instead of raising Numba's dispatch TypeError."""

    def make():
        return nn.Sequential(nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, 10))

    rng = np.random.default_rng(10)
    data = []
    for _ in range(5):
        xa = rng.standard_normal((200, 784)).astype(np.float32)
        xa.flags.writeable = False
        data.append((gpunn.from_numpy(xa), gpunn.tensor(rng.integers(0, 10, 200))))

    def strided_bias(i, model, opt):
        if i == 3:
            model[2].bias.data = gpunn.tensor(np.arange(400, dtype=np.float32) / 4000)[::2]

    for loss_fn in (nn.CrossEntropyLoss(), lambda out, y: out.sum()):  # (adam: bounded steps on a sum)
        eager = train_run(make, "adam", data, False, loss_fn=loss_fn, before_step=strided_bias)
        cap = train_run(make, "adam", data, True, loss_fn=loss_fn, before_step=strided_bias)
        assert_same(eager, cap)


def test_a_layer_of_one_output_equals_eager_bit_for_bit():
    """A Linear(K, 1) layer (a bottleneck, a regression head) in one call: its bias gradient is the sum of a
    column, which NumPy adds pairwise, not row after row as it sums a wider dz: the step must still equal
    the eager one bit for bit."""

    def make():
        return nn.Sequential(nn.Linear(1024, 1), nn.ReLU(), nn.Linear(1, 10))

    data = batches([(256, 1024)] * 8, rng_seed=11)
    eager = train_run(make, "sgd", data, False)
    cap = train_run(make, "sgd", data, True)
    assert_same(eager, cap)


def test_a_bias_added_or_a_weight_of_another_width_after_recording_is_not_ignored():
    """A captured step never silently drops a bias set on a layer recorded without one, nor reshapes an input
    into a weight whose width changed: it raises, as eager raises (or would count the bias)."""
    gpunn.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 64, bias=False), nn.ReLU(), nn.Linear(64, 10))
    opt = optim.SGD(model.parameters(), lr=0.1)
    step = compile_step(model, nn.CrossEntropyLoss(), opt)
    ((x, y),) = batches([(32, 784)])
    for _ in range(3):
        step(x, y)
    model[0].bias = nn.Parameter(gpunn.ones(64))
    with pytest.raises(CaptureError, match=r"0\.bias was added"):
        step(x, y)

    gpunn.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    step = compile_step(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1))
    for _ in range(3):
        step(x, y)
    model[2].weight.data = gpunn.randn(10, 32)  # 64 inputs arrive, the weight takes 32
    with pytest.raises(ValueError, match="in_features=32"):
        step(x, y)


def test_small_float32_products_pin_blas_to_one_thread_and_large_batched_ones_do_not(monkeypatch):
    from gpunn.backend import numpy_backend as nb

    entered = []

    class Spy:
        def __enter__(self):
            entered.append(True)

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(nb, "_blas_one_thread", Spy)
    be = nb.NumpyBackend()
    rng = np.random.default_rng(0)
    small = rng.standard_normal((8, 20), dtype=np.float32)
    np.testing.assert_array_equal(be.matmul(small, small.T), small @ small.T)
    assert entered == [True]
    big = rng.standard_normal((16, 128, 64), dtype=np.float32)  # attention-like batched product: 16.8M MACs
    got = be.matmul(big, big.transpose(0, 2, 1))
    np.testing.assert_array_equal(got, big @ big.transpose(0, 2, 1))
    assert entered == [True]


@pytest.mark.parametrize("kwargs", [{"dilation": 2, "padding": 2}, {"groups": 2, "padding": 1}])
def test_a_dilated_or_grouped_conv_is_refused_not_replayed_without_its_option(kwargs):
    """The plan's conv once dropped dilation and groups: F.conv2d then differentiated a dilated (or sliced) copy
    of the weight, and the plan wrote those gradients as the weight's. Such a conv now has no static form."""
    gpunn.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, **kwargs), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    step = compile_step(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1))
    rng = np.random.default_rng(0)
    x, y = gpunn.tensor(rng.standard_normal((3, 2, 8, 8)).astype(np.float32)), gpunn.tensor(rng.integers(0, 3, 3))
    step(x, y)  # recorded eagerly
    with pytest.raises(CaptureError, match=r"module 0 \(Conv2d\) did not run as one op"):
        step(x, y)


def test_a_padding_mode_set_after_construction_raises_as_in_eager():
    gpunn.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    step = compile_step(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1))
    x, y = gpunn.randn(4, 1, 6, 6), gpunn.tensor([0, 1, 2, 0])
    step(x, y)
    step(x, y)
    model[0].padding_mode = "reflect"  # PyTorch would reflect-pad from here on; gpunn pads only with zeros
    for run in (lambda: model(x), lambda: step(x, y)):
        with pytest.raises(NotImplementedError, match="padding_mode='reflect'"):
            run()
