"""compile_step on the cupy backend, under the kernel emulator (tests/kernels/emulator.py): the captured MLP
and CNN give the eager loop's parameters and losses bit for bit after 50 steps (dropout on its Philox kernel,
a scheduler changing the learning rate mid-run, SGD with momentum and weight decay, Adam), and once the
step is a CUDA graph a replay allocates nothing, reads nothing back and never synchronizes: it is one
graph launch (the emulator records the capture and re-runs it, refusing what CUDA refuses).

Marked ``gpu``: tests/kernels/test_emulated.py runs this file on the emulator, and the GPU suite on a real
GPU, where the equalities are checked and the counts (the emulator's) are not; the tests of refused captures
and of the emulator itself run on the emulator only (CuPy's relaxed capture mode lets its pool allocate).
"""

from __future__ import annotations

import collections
import os
import warnings

import numpy as np
import pytest

import gpunn
from gpunn import nn, optim, train
from gpunn.train import CaptureError, compile_step
from tests.helpers import train_step

pytestmark = pytest.mark.gpu
EMULATED = os.environ.get("GPUNN_KERNEL_EMULATOR") == "1"
emulator_only = pytest.mark.skipif(not EMULATED, reason="the kernel emulator's CuPy stand-in only")


@pytest.fixture
def cupy(monkeypatch):
    import cupy

    if not EMULATED:  # a real CuPy counts nothing: the equalities are checked, the counts are not
        monkeypatch.setattr(cupy, "counters", collections.defaultdict(int), raising=False)
        monkeypatch.setattr(cupy, "reset_counters", lambda: None, raising=False)
    return cupy


def mlp():
    return nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 5))


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.1),
        nn.Conv2d(3, 4, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 2 * 2, 5),
    )


def _optimizer(kind, model):
    if kind == "sgd":
        return optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    if kind == "adamw":
        return optim.AdamW(model.parameters(), lr=1e-2)
    return optim.Adam(model.parameters(), lr=1e-2)


def _run(make, shape, opt_kind, captured, cupy, steps=50):
    rng = np.random.default_rng(7)
    with gpunn.use_backend("cupy"):
        gpunn.manual_seed(0)
        model = make()
        opt = _optimizer(opt_kind, model)
        sched = optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.5)  # stepped per batch here
        loss_fn = nn.CrossEntropyLoss()
        data = [
            (gpunn.tensor(rng.standard_normal(shape).astype(np.float32)), gpunn.tensor(rng.integers(0, 5, shape[0])))
            for _ in range(steps)
        ]
        step = compile_step(model, loss_fn, opt) if captured else None
        counts, losses = [], []
        for x, y in data:
            cupy.reset_counters()
            loss = train_step(model, loss_fn, opt, x, y, step)
            counts.append(dict(cupy.counters))
            losses.append(loss)
            sched.step()
        values = [float(v) for v in gpunn.stack(losses).tolist()]  # one read, after the steps
        params = [p._backend.to_numpy(p._data).copy() for p in model.parameters()]
        state = {k: v for k, v in opt.state_dict()["state"].get(0, {}).items() if not hasattr(v, "shape")}
    return params, values, counts, state


@pytest.mark.parametrize("opt_kind", ["sgd", "adam"])
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_captured_equals_eager_and_a_replay_is_one_graph_launch(cupy, kind, opt_kind):
    make, shape = (mlp, (8, 20)) if kind == "mlp" else (cnn, (4, 1, 8, 8))
    p0, l0, c0, s0 = _run(make, shape, opt_kind, False, cupy)
    p1, l1, c1, s1 = _run(make, shape, opt_kind, True, cupy)
    assert l0 == l1 and np.isfinite(l0).all()
    assert len(set(l0)) > 40  # fresh batches, fresh dropout masks: the losses differ step to step
    for a, b in zip(p0, p1):
        np.testing.assert_array_equal(a, b)
    assert s0 == s1  # Adam's per-parameter step count is kept on the host too
    if not EMULATED:
        return
    assert c1[1]["d2h"] == 0 and c1[1]["sync"] == 0 and c1[1]["graph"] == 0  # the first replay: buffers
    graphed = c1[2:]
    assert all(c == {"d2h": 0, "sync": 0, "alloc": 0, "launch": c["launch"], "graph": 1} for c in graphed), graphed
    assert c0[-1]["alloc"] > 20  # what the eager step allocates, for scale


def test_adamw_and_a_step_without_graph_equal_eager(cupy, monkeypatch):
    p0, l0, _, _ = _run(mlp, (8, 20), "adamw", False, cupy, steps=12)
    monkeypatch.setenv("GPUNN_CUDA_GRAPH", "0")
    p1, l1, c1, _ = _run(mlp, (8, 20), "adamw", True, cupy, steps=12)
    assert l0 == l1
    for a, b in zip(p0, p1):
        np.testing.assert_array_equal(a, b)
    if EMULATED:
        assert all(c["alloc"] == 0 and c["graph"] == 0 and c["d2h"] == 0 and c["sync"] == 0 for c in c1[2:]), c1


def test_fit_with_capture_reads_each_loss_once_per_group(cupy, monkeypatch):
    """fit(capture=True, sync_every=4): each step's loss is its own device value (a ring), read four at a time."""
    from gpunn.backend import backend_for
    from gpunn.backend.base import Backend

    be = backend_for("cupy")  # the accuracy metric's Numba kernel needs a real driver: the generic count
    monkeypatch.setattr(be, "accuracy_count", lambda logits, target: Backend.accuracy_count(be, logits, target))
    rng = np.random.default_rng(3)
    X = rng.standard_normal((72, 20)).astype(np.float32)
    y = rng.integers(0, 5, 72)

    def fit(capture):
        with gpunn.use_backend("cupy"):
            gpunn.manual_seed(1)
            model = mlp()
            opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
            seen = []

            class Record(train.Callback):
                def on_batch_end(self, batch, logs):
                    seen.append(logs["loss"])

            loader = gpunn.data.DataLoader((X, y), batch_size=8, shuffle=True, seed=2)
            train.fit(
                model, opt, nn.CrossEntropyLoss(), loader, epochs=2, verbose=0, sync_every=4, capture=capture,
                callbacks=[Record()],
            )  # fmt: skip
            return seen, [p._backend.to_numpy(p._data) for p in model.parameters()]

    eager, p0 = fit(False)
    captured, p1 = fit(True)
    assert captured == eager and len(set(eager)) == len(eager) == 18
    for a, b in zip(p0, p1):
        np.testing.assert_array_equal(a, b)


def test_two_batch_shapes_share_the_optimizer_and_the_dropout_stream(cupy):
    """Two plans (batch 8 and the partial batch 5) alternate: Adam's step, the learning rate and the dropout
    offset each plan keeps on the device follow what the other plan did, so the run equals eager."""

    def run(captured):
        rng = np.random.default_rng(4)
        with gpunn.use_backend("cupy"):
            gpunn.manual_seed(3)
            model = mlp()
            opt = optim.Adam(model.parameters(), lr=1e-2)
            loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
            step = compile_step(model, loss_fn, opt) if captured else None
            losses = []
            for i in range(16):
                n = 8 if i % 3 else 5
                x = gpunn.tensor(rng.standard_normal((n, 20)).astype(np.float32))
                y = gpunn.tensor(rng.integers(0, 5, n))
                if i == 9:
                    opt.param_groups[0]["lr"] = 3e-3
                if captured:
                    losses.append(step(x, y))
                else:
                    opt.zero_grad()
                    loss = loss_fn(model(x), y)
                    loss.backward()
                    opt.step()
                    losses.append(loss)
            if captured:
                assert len(step.plans) == 2 and all(plan.graph is not None for plan in step.plans.values())
            return [float(v) for v in gpunn.stack(losses).tolist()], [
                p._backend.to_numpy(p._data) for p in model.parameters()
            ]

    l0, p0 = run(False)
    l1, p1 = run(True)
    assert l0 == l1
    for a, b in zip(p0, p1):
        np.testing.assert_array_equal(a, b)


def test_eval_mode_dropout_is_the_identity_and_a_bad_label_raises_at_the_read(cupy):
    rng = np.random.default_rng(2)
    with gpunn.use_backend("cupy"):
        gpunn.manual_seed(0)
        model = mlp().eval()
        step = compile_step(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1))
        x = gpunn.tensor(rng.standard_normal((8, 20)).astype(np.float32))
        for _ in range(3):
            loss = step(x, gpunn.tensor(rng.integers(0, 5, 8)))
        labels = gpunn.tensor(np.arange(8) % 5)
        before = model(x)
        expected = float(nn.CrossEntropyLoss()(before, labels))
        cupy.reset_counters()
        loss = step(x, labels)
        assert not EMULATED or (cupy.counters["graph"] == 1 and cupy.counters["alloc"] == 0)
        np.testing.assert_array_equal(before.detach().numpy(), step.output.numpy())  # no dropout in eval mode
        assert float(loss) == expected
        bad = gpunn.tensor(np.array([0, 1, 2, 3, 4, 5, 0, 1]))
        loss = step(x, bad)  # nothing waits at the step
        with pytest.raises(ValueError, match="target label 5 is out of range for 5 classes"):
            float(loss)


def test_no_static_form_warns_and_replays_the_generic_plan(cupy):
    rng = np.random.default_rng(1)
    with gpunn.use_backend("cupy"):
        gpunn.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 4), nn.Sigmoid(), nn.Linear(4, 3), nn.LeakyReLU(-0.5), nn.Linear(3, 3))
        opt = optim.SGD(model.parameters(), lr=0.1)
        step = compile_step(model, nn.CrossEntropyLoss(), opt)
        x, y = gpunn.tensor(rng.standard_normal((5, 6)).astype(np.float32)), gpunn.tensor(rng.integers(0, 3, 5))
        step(x, y)
        with pytest.warns(RuntimeWarning, match=r"without static buffers or a CUDA graph: .*leaky_relu of slope"):
            step(x, y)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            loss = step(x, y)
        assert np.isfinite(float(loss))


def _graph_step(cupy, on_error):
    rng = np.random.default_rng(1)
    gpunn.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    step = compile_step(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), on_error=on_error)
    x, y = gpunn.tensor(rng.standard_normal((5, 6)).astype(np.float32)), gpunn.tensor(rng.integers(0, 3, 5))
    step(x, y)
    step(x, y)  # the first replay: buffers
    plan = next(iter(step.plans.values()))
    launch = plan.opt.launch

    def leaky_launch():  # an allocation inside the captured program: CUDA refuses it
        cupy.zeros((3,))
        launch()

    plan.opt.launch = leaky_launch
    return step, x, y


@emulator_only
def test_a_refused_capture_raises_capture_error_naming_it(cupy):
    with gpunn.use_backend("cupy"):
        step, x, y = _graph_step(cupy, "raise")
        with pytest.raises(CaptureError, match=r"could not be captured as a CUDA graph: .*allocation"):
            step(x, y)


@emulator_only
def test_a_refused_capture_falls_back_to_no_graph_with_on_error_eager(cupy):
    with gpunn.use_backend("cupy"):
        step, x, y = _graph_step(cupy, "eager")
        with pytest.warns(RuntimeWarning, match=r"could not be captured .* without a graph"):
            step(x, y)
        cupy.reset_counters()
        step(x, y)
        assert cupy.counters["graph"] == 0 and cupy.counters["d2h"] == 0


# -- the emulator's graph capture itself -----------------------------------------------------------------------
@emulator_only
def test_emulated_capture_records_and_refuses_like_cuda(cupy):
    a = cupy.asarray(np.arange(4, dtype=np.float32))
    b = cupy.empty((4,), dtype=np.float32)
    s = cupy.cuda.Stream(non_blocking=True)
    with s:
        s.begin_capture()
        assert s.is_capturing()
        cupy.multiply(a, 2, out=b)  # recorded, not run
        cupy.add(b, 1, out=b)
        g = s.end_capture()
    b.fill(-1)
    g.launch()
    np.testing.assert_array_equal(np.asarray(b), [1, 3, 5, 7])
    a[...] = 10  # the graph reads the arrays' memory when it runs
    g.launch()
    np.testing.assert_array_equal(np.asarray(b), [21, 21, 21, 21])
    for bad in (lambda: a + 1, lambda: cupy.asnumpy(a), lambda: s.synchronize(), lambda: float(a[0])):
        with s:
            s.begin_capture()
            with pytest.raises(Exception, match="not permitted when stream is capturing"):
                bad()
            with pytest.raises(RuntimeError, match="invalidated"):
                s.end_capture()
    with pytest.raises(RuntimeError, match="default"):
        cupy.cuda.Stream.null.begin_capture()
    s.begin_capture()  # not the current stream: work goes to the legacy stream, which CUDA refuses
    with pytest.raises(Exception, match="other than the capturing one"):
        cupy.multiply(a, 2, out=b)
    with pytest.raises(RuntimeError, match="invalidated"):
        s.end_capture()


@emulator_only
def test_the_stand_in_refuses_host_arrays_where_cupy_does(cupy):
    """CuPy raises on a NumPy array among a ufunc's or a NumPy function's operands (TypeError) and on one
    written into a device array (``a[...] = h``, ``a.fill(h)``: ValueError), and ``asarray`` copies a host
    array to the device: the stand-in does the same, so such gpunn code fails here and not first on a GPU.
    0-d host arrays and NumPy scalars are values; NumPy's own calls inside a function are not CuPy's."""
    h = np.arange(6, dtype=np.float32)
    a = cupy.asarray(h)
    h[0] = 100
    assert float(a[0]) == 0  # a copy, not a view of the host array
    assert cupy.asarray(a) is a and cupy.asarray(a, dtype=np.float32) is a and cupy.asarray(a, np.float64) is not a
    with gpunn.use_backend("cupy"):  # so tensor(a) copies a device array as it does on a GPU (tensor.py's _owned_copy)
        t, u = gpunn.tensor(a), gpunn.Tensor(a)
    a[0] = -1
    assert t.tolist()[0] == 0 == u.tolist()[0]
    a[0] = 0
    for bad in (lambda: a + h, lambda: np.concatenate([a, h]), lambda: np.add(a, h, out=a)):
        with pytest.raises(TypeError, match="Unsupported type"):
            bad()
    for bad in (lambda: a.__setitem__(Ellipsis, h), lambda: a.__setitem__(slice(0, 2), h[:2]), lambda: a.fill(h)):
        with pytest.raises(ValueError, match="non-scalar numpy.ndarray"):
            bad()
    a[...] = cupy.asarray(h)
    a[1:3] = np.float32(7)
    a[0] = np.array(5.0)
    a.fill(np.array(2.0))
    a[4:] = np.float64(3)
    np.testing.assert_array_equal(cupy.asnumpy(a), [2, 2, 2, 2, 3, 3])
    np.testing.assert_array_equal(cupy.asnumpy(np.pad(a, 1)), [0, 2, 2, 2, 2, 3, 3, 0])


def test_split_k_gemms_and_a_kernel_version_change_mid_run(cupy, monkeypatch):
    """linear_act v2 (split-K over a partial-sum workspace, as on a 132-SM GPU) in the graph; switching the
    version mid-run re-captures, so the captured run still equals the eager one: from v1 to v2 too, which
    needs partial buffers the v1 program never allocated (a CaptureError 'buffer 0/splitk_nt changed shape
    after the program was recorded' before)."""
    from gpunn.backend import kernel_table
    from gpunn.backend import kernels as K

    monkeypatch.setitem(K._sm_counts, 0, 132)
    monkeypatch.setenv("GPUNN_KERNEL_VERSIONS", "linear_act=2,sgd_step=2,softmax_cross_entropy=2")

    def run(captured):
        rng = np.random.default_rng(5)
        with gpunn.use_backend("cupy"):
            gpunn.manual_seed(2)
            model = nn.Sequential(nn.Linear(256, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 5))
            opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
            loss_fn = nn.CrossEntropyLoss()
            step = compile_step(model, loss_fn, opt) if captured else None
            losses = []
            for i in range(10):
                x = gpunn.tensor(rng.standard_normal((8, 256)).astype(np.float32))
                y = gpunn.tensor(rng.integers(0, 5, 8))
                with kernel_table.use_version("linear_act", 2 if 3 <= i < 7 else 1):
                    if captured:
                        losses.append(step(x, y))
                    else:
                        opt.zero_grad()
                        loss = loss_fn(model(x), y)
                        loss.backward()
                        opt.step()
                        losses.append(loss)
            if captured:
                (plan,) = step.plans.values()
                assert any(name.endswith("splitk_nt") for name in plan.ws.arrays)  # split-K did run
            return [float(v) for v in gpunn.stack(losses).tolist()], [
                p._backend.to_numpy(p._data) for p in model.parameters()
            ]

    l0, p0 = run(False)
    l1, p1 = run(True)
    assert l0 == l1
    for a, b in zip(p0, p1):
        np.testing.assert_array_equal(a, b)


def _changed_mid_run(captured, before, make, shape, loss_fn=None, steps=10, seed=3):
    """Losses and final parameters of ``steps`` SGD steps, eager or captured, ``before(i, model)`` changing
    something before step i; a NotImplementedError's message instead when a step raises one (as eager may)."""
    rng = np.random.default_rng(seed)
    with gpunn.use_backend("cupy"):
        gpunn.manual_seed(0)
        model = make()
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        loss_fn = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()
        data = [
            (gpunn.tensor(rng.standard_normal(shape).astype(np.float32)), gpunn.tensor(rng.integers(0, 5, shape[0])))
            for _ in range(steps)
        ]
        step = compile_step(model, loss_fn, opt) if captured else None
        losses = []
        for i, (x, y) in enumerate(data):
            before(i, model)
            try:
                loss = train_step(model, loss_fn, opt, x, y, step)
            except NotImplementedError as exc:
                return str(exc)
            losses.append(float(loss))
        return losses, [p._backend.to_numpy(p._data).copy() for p in model.parameters()]


def _assert_same_runs(eager, captured):
    if isinstance(eager, str):  # eager raised: so must the captured step, with the same message
        assert captured == eager
        return
    assert eager[0] == captured[0]
    for a, b in zip(eager[1], captured[1]):
        np.testing.assert_array_equal(a, b)


def _small_mlp():
    return nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 5))


def test_loss_options_changed_after_recording_are_launched_not_the_recorded_ones(cupy):
    """label_smoothing, reduction and ignore_index set on the loss between steps, on an nn.CrossEntropyLoss and
    on a loss function reading its options at each call: the captured step (graph re-captured) equals the eager
    loop bit for bit. Before, the cupy plan kept the recorded options: a silently different loss and update."""
    opts = {"label_smoothing": 0.0, "reduction": "mean", "ignore_index": -100}

    def fn(out, y):
        return nn.functional.cross_entropy(out, y, **opts)

    for make_loss in (nn.CrossEntropyLoss, lambda: fn):
        runs = []
        for captured in (False, True):
            opts.update(label_smoothing=0.0, reduction="mean", ignore_index=-100)
            loss_fn = make_loss()
            target = loss_fn if isinstance(loss_fn, nn.CrossEntropyLoss) else None

            def before(i, model, target=target):
                change = {3: ("label_smoothing", 0.2), 5: ("reduction", "sum"), 7: ("ignore_index", 2)}.get(i)
                if change:
                    opts[change[0]] = change[1]
                    if target is not None:
                        setattr(target, *change)

            runs.append(_changed_mid_run(captured, before, _small_mlp, (8, 20), loss_fn))
        assert runs[0][0][5] > 4 * runs[0][0][4]  # the sum over the batch took effect
        _assert_same_runs(*runs)


def test_a_dropout_p_set_after_recording_is_launched(cupy):
    """Dropout's p changed between steps: the graph is re-captured with the new p (it kept the recorded one)."""

    def before(i, model):
        if i == 4:
            model[2].p = 0.6

    _assert_same_runs(*(_changed_mid_run(c, before, mlp, (8, 20), seed=5) for c in (False, True)))


def test_cross_entropy_options_changed_mid_run_are_followed_as_eager(cupy):
    """An nn.CrossEntropyLoss's label_smoothing, reduction, ignore_index or weight changed between captured steps:
    the graph (which baked the recorded options in) is re-captured, or the step runs eagerly where the new
    options have no static form; before, the captured step kept the recorded options (a 'sum' loss came back
    as the mean, its gradients 1/N as large)."""
    with gpunn.use_backend("cupy"):
        weight = gpunn.tensor(np.linspace(0.5, 2.0, 5).astype(np.float32))
    runs = []
    for captured in (False, True):
        loss_fn = nn.CrossEntropyLoss()
        changes = {3: ("label_smoothing", 0.1), 5: ("reduction", "sum"), 7: ("ignore_index", 2)}
        changes.update({8: ("weight", weight), 10: ("weight", None)})

        def before(i, model, loss_fn=loss_fn, changes=changes):
            if i in changes:
                setattr(loss_fn, *changes[i])

        runs.append(_changed_mid_run(captured, before, _small_mlp, (8, 20), loss_fn, steps=12, seed=9))
    assert runs[0][0][5] > 4 * runs[0][0][4]  # the 'sum' over 8 rows: the change is visible in the losses
    _assert_same_runs(*runs)


@pytest.mark.parametrize("change", ["conv_dilation", "conv_padding_mode", "pool_dilation"])
def test_a_conv_or_pool_option_set_after_recording_runs_eagerly_or_raises_as_eager(cupy, change):
    """Options the cupy plan's conv and pool kernels do not take, set after recording: the step runs eagerly
    (the same numbers as the eager loop) or raises as the eager loop does; never the recorded form."""

    def make():
        return nn.Sequential(
            nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 5 * 5, 5)
        )

    def before(i, model):
        if i == 3:
            if change == "conv_dilation":
                model[0].dilation, model[0].padding = (2, 2), (2, 2)  # the same output shape
            elif change == "conv_padding_mode":
                model[0].padding_mode = "reflect"
            else:
                model[2].dilation, model[2].padding = 2, 1

    _assert_same_runs(*(_changed_mid_run(c, before, make, (4, 1, 10, 10), steps=6, seed=2) for c in (False, True)))
