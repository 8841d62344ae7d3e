"""fit(): history, early stopping, restoring the best weights, checkpoint resume, NaN termination,
Ctrl-C, schedulers, k-fold cross-validation, CSV and plots."""

import numpy as np
import pytest

import gpunn
from gpunn import nn, optim, train
from gpunn.data import DataLoader


@pytest.fixture(scope="module")
def digits():
    from gpunn.data import load_digits

    return load_digits(seed=0)


def _mlp(seed=0, dropout=0.0, features=64):
    gpunn.manual_seed(seed)
    layers = [nn.Linear(features, 32), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Linear(32, 10))


def _weights(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def test_fit_learns_and_records_history(digits):
    model = _mlp()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = DataLoader((digits.X_train, digits.y_train), batch_size=64, shuffle=True, seed=0)
    hist = train.fit(model, opt, nn.CrossEntropyLoss(), loader, (digits.X_test, digits.y_test), epochs=5, verbose=0)
    assert len(hist) == 5 and hist.stop_reason is None
    assert {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "time"} <= set(hist.keys)
    assert hist["loss"][-1] < hist["loss"][0] * 0.5
    assert hist["val_accuracy"][-1] > 0.9
    ev = train.evaluate(model, nn.CrossEntropyLoss(), (digits.X_test, digits.y_test))
    assert ev["accuracy"] == pytest.approx(hist["val_accuracy"][-1])
    pred = train.predict(model, digits.X_test, batch_size=100)
    assert pred.shape == (len(digits.X_test), 10)
    assert (pred.numpy().argmax(1) == digits.y_test).mean() == pytest.approx(ev["accuracy"])


class Scripted:
    """A metric whose value per epoch follows a script (to drive monitors deterministically)."""

    def __init__(self, values):
        self.values, self.epoch, self.__name__ = values, 0, "scripted"

    def __call__(self, outputs, targets):
        return self.values[min(self.epoch, len(self.values) - 1)]


def _fit_scripted(digits, values, callbacks, epochs, extra=()):
    model = _mlp()
    opt = optim.SGD(model.parameters(), lr=0.05)
    script = Scripted(values)
    snaps = {}

    def on_epoch_end(epoch, logs):
        snaps[epoch] = _weights(model)
        script.epoch += 1

    cbs = [train.LambdaCallback(on_epoch_end=on_epoch_end), *callbacks, *extra]
    hist = train.fit(
        model,
        opt,
        nn.CrossEntropyLoss(),
        (digits.X_train[:256], digits.y_train[:256]),
        epochs=epochs,
        metrics=("accuracy", script),
        callbacks=cbs,
        verbose=0,
        batch_size=64,
    )
    return model, hist, snaps


def test_early_stopping_stops_after_patience(digits):
    es = train.EarlyStopping(monitor="scripted", patience=2, mode="min")
    _, hist, _ = _fit_scripted(digits, [5.0, 4.0, 4.5, 4.2, 4.1, 3.0, 2.0], [es], epochs=7)
    assert len(hist) == 4  # best at epoch 2, then patience=2 epochs without improvement
    assert es.best_epoch == 2 and "early stopping" in hist.stop_reason


def test_restore_best_weights_when_training_ends_normally(digits):
    es = train.EarlyStopping(monitor="scripted", patience=100, mode="min", restore_best_weights=True)
    model, hist, snaps = _fit_scripted(digits, [5.0, 1.0, 3.0, 4.0], [es], epochs=4)
    assert len(hist) == 4 and hist.stop_reason is None
    final = _weights(model)
    assert all(np.array_equal(final[k], snaps[2][k]) for k in final)
    assert not all(np.array_equal(final[k], snaps[4][k]) for k in final)


def test_ctrl_c_stops_cleanly_and_restores_best(digits):
    es = train.EarlyStopping(monitor="scripted", patience=100, mode="min", restore_best_weights=True)

    def interrupt(batch, logs):
        if len(hist_holder) and hist_holder[0] >= 3:
            raise KeyboardInterrupt

    hist_holder = []
    counter = train.LambdaCallback(
        on_epoch_end=lambda e, logs: hist_holder.__setitem__(slice(None), [e]), on_batch_end=interrupt
    )
    model, hist, snaps = _fit_scripted(digits, [5.0, 1.0, 3.0, 4.0, 0.5], [es], epochs=5, extra=[counter])
    assert "interrupted" in hist.stop_reason
    assert len(hist) == 3
    final = _weights(model)
    assert all(np.array_equal(final[k], snaps[2][k]) for k in final)


def test_resume_from_checkpoint_continues_exactly(digits, tmp_path):
    def setup():
        model = _mlp(seed=3, dropout=0.2)
        opt = optim.Adam(model.parameters(), lr=3e-3)
        sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
        loader = DataLoader((digits.X_train, digits.y_train), batch_size=50, shuffle=True, seed=11)
        return model, opt, sched, loader

    loss_fn = nn.CrossEntropyLoss()
    model, opt, sched, loader = setup()
    straight = train.fit(model, opt, loss_fn, loader, epochs=4, scheduler=sched, verbose=0)

    model, opt, sched, loader = setup()
    first = train.fit(model, opt, loss_fn, loader, epochs=2, scheduler=sched, verbose=0)
    path = tmp_path / "state.npz"
    train.save_training_state(path, model, opt, sched, epoch=2, history=first, loaders=[loader])
    gpunn.manual_seed(999)  # the checkpoint must restore the RNG, not rely on it
    model, opt, sched, loader = setup()
    hist = train.History()
    state = train.load_training_state(path, model, opt, sched, hist, [loader])
    resumed = train.fit(
        model, opt, loss_fn, loader, epochs=4, scheduler=sched, verbose=0, initial_epoch=state["epoch"], history=hist
    )
    assert resumed["loss"] == straight["loss"]  # bit-identical on the numpy backend
    assert resumed["lr"] == straight["lr"]


def test_checkpoint_from_another_architecture_is_refused(digits, tmp_path):
    model = _mlp()
    path = tmp_path / "state.npz"
    train.save_training_state(path, model)
    other = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    with pytest.raises(ValueError, match="different architecture"):
        train.load_training_state(path, other)


def test_nan_loss_stops_and_keeps_last_good_weights_and_checkpoint(digits, tmp_path):
    model = _mlp()
    opt = optim.SGD(model.parameters(), lr=0.05)
    ckpt = train.ModelCheckpoint(tmp_path / "ckpt.npz", monitor="loss")
    ce = nn.CrossEntropyLoss()
    calls = []

    def loss_fn(out, y):  # the 5th batch of epoch 2 produces a NaN loss
        calls.append(1)
        loss = ce(out, y)
        return loss * float("nan") if len(calls) == len(loader) + 5 else loss

    seen = []
    loader = DataLoader((digits.X_train, digits.y_train), batch_size=64, shuffle=True, seed=0)
    snap = train.LambdaCallback(on_batch_end=lambda b, logs: seen.append(_weights(model)))
    hist = train.fit(model, opt, loss_fn, loader, epochs=5, callbacks=[ckpt, snap], verbose=0)
    assert hist.stop_reason and "loss became nan" in hist.stop_reason
    assert len(hist) == 1  # the epoch with the NaN never completes
    final = _weights(model)
    assert all(np.array_equal(final[k], seen[-1][k]) for k in final)  # the last good step's weights
    assert len(seen) == len(loader) + 4
    back = gpunn.load(tmp_path / "ckpt.npz")
    assert back["epoch"] == 1 and all(np.isfinite(v.numpy()).all() for v in back["model"].values())


def test_reduce_lr_on_plateau_gets_the_monitored_metric(digits):
    model = _mlp()
    opt = optim.SGD(model.parameters(), lr=0.1)
    sched = optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=0)
    script = Scripted([1.0, 1.0, 2.0, 2.0])
    bump = train.LambdaCallback(on_epoch_end=lambda e, logs: setattr(script, "epoch", script.epoch + 1))
    hist = train.fit(
        model,
        opt,
        nn.CrossEntropyLoss(),
        (digits.X_train[:128], digits.y_train[:128]),
        epochs=4,
        scheduler=sched,
        metrics=(script,),
        monitor="scripted",
        callbacks=[bump],
        verbose=0,
    )
    # epoch 1 sets best=1; epoch 2 no improvement -> halve; epoch 3 improves; epoch 4 no improvement -> halve
    assert hist["lr"] == [0.1, 0.1, 0.05, 0.05]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.025)


def test_csv_logger_and_plot(digits, tmp_path):
    model = _mlp()
    opt = optim.SGD(model.parameters(), lr=0.1)
    hist = train.fit(
        model,
        opt,
        nn.CrossEntropyLoss(),
        (digits.X_train[:300], digits.y_train[:300]),
        (digits.X_test, digits.y_test),
        epochs=3,
        callbacks=[train.CSVLogger(tmp_path / "h.csv")],
        verbose=0,
    )
    lines = (tmp_path / "h.csv").read_text().splitlines()
    assert lines[0].split(",")[:3] == ["epoch", "loss", "accuracy"] and len(lines) == 4
    png = hist.plot(tmp_path / "h.png")
    data = open(png, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_cross_validate_trains_a_fresh_model_per_fold(digits):
    built = []

    def build():
        gpunn.manual_seed(len(built))
        model = nn.Sequential(nn.Linear(64, 10))
        built.append(model)
        return model, optim.SGD(model.parameters(), lr=0.1, momentum=0.9), nn.CrossEntropyLoss()

    X = np.concatenate([digits.X_train, digits.X_test])
    y = np.concatenate([digits.y_train, digits.y_test])
    res = train.cross_validate(build, (X, y), k=3, epochs=4, batch_size=64)
    assert len(built) == 3 and len({id(m) for m in built}) == 3
    assert [f["fold"] for f in res["folds"]] == [0, 1, 2]
    assert sum(f["n_val"] for f in res["folds"]) == len(X)
    assert res["mean"]["accuracy"] == pytest.approx(np.mean([f["accuracy"] for f in res["folds"]]))
    assert res["mean"]["accuracy"] > 0.9


def test_fit_argument_errors(digits):
    model = _mlp()
    opt = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="epochs must be"):
        train.fit(model, opt, nn.CrossEntropyLoss(), (digits.X_train, digits.y_train), epochs=-1)
    with pytest.raises(TypeError, match="DataLoader or a tuple"):
        train.fit(model, opt, nn.CrossEntropyLoss(), digits.X_train, epochs=1)
    with pytest.raises(KeyError, match="not in the epoch logs"):
        train.fit(
            model,
            opt,
            nn.CrossEntropyLoss(),
            (digits.X_train[:64], digits.y_train[:64]),
            epochs=1,
            callbacks=[train.EarlyStopping("val_loss")],
            verbose=0,
        )


def test_loading_a_state_that_does_not_fit_changes_nothing(digits, tmp_path):
    model = _mlp(seed=1)
    sgd = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train.fit(model, sgd, nn.CrossEntropyLoss(), (digits.X_train[:128], digits.y_train[:128]), epochs=1, verbose=0)
    path = tmp_path / "sgd.npz"
    train.save_training_state(path, model, sgd, epoch=1)

    other = _mlp(seed=2)
    adam = optim.Adam(other.parameters(), lr=1e-3)
    train.fit(other, adam, nn.CrossEntropyLoss(), (digits.X_train[:128], digits.y_train[:128]), epochs=1, verbose=0)
    before_w, before_opt = _weights(other), adam.state_dict()
    with pytest.raises(ValueError, match="optimizer SGD, but it is being loaded into optimizer Adam"):
        train.load_training_state(path, other, adam)
    after = _weights(other)
    assert all(np.array_equal(before_w[k], after[k]) for k in before_w)
    assert adam.state_dict()["state"].keys() == before_opt["state"].keys()

    # a field that fails late (a callback's state, after the model loaded): everything is rolled back
    state = gpunn.load(path)
    state["callbacks"] = [["EarlyStopping", {"wait": "x", "best": 1.0}]]
    gpunn.save(state, path)
    es = train.EarlyStopping("loss", patience=2)
    sgd2 = optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    from gpunn.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="nothing was changed"):
        train.load_training_state(path, other, sgd2, callbacks=[es])
    after = _weights(other)
    assert all(np.array_equal(before_w[k], after[k]) for k in before_w)  # the model was rolled back


def test_malformed_training_state_is_a_checkpoint_error(tmp_path):
    from gpunn.checkpoint import CheckpointError

    model = _mlp()
    for bad in (
        {"kind": "training_state"},
        {"kind": "training_state", "architecture": 5},
        {"kind": "training_state", "architecture": [], "model": {}, "epoch": "x"},
    ):
        gpunn.save(bad, tmp_path / "bad.npz")
        with pytest.raises(CheckpointError, match="malformed"):
            train.load_training_state(tmp_path / "bad.npz", model)


def test_an_optimizer_of_another_model_is_refused(digits):
    model, other = _mlp(seed=1), _mlp(seed=2)
    opt = optim.SGD(other.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="none of the optimizer's 4 parameters belong to the model"):
        train.fit(model, opt, nn.CrossEntropyLoss(), (digits.X_train, digits.y_train), epochs=1, verbose=0)


def test_evaluate_reports_nan_accuracy_for_nan_outputs(digits):
    model = _mlp()
    model.load_state_dict({**_weights(model), "2.bias": np.full(10, np.nan, np.float32)})
    with np.errstate(all="ignore"):
        ev = train.evaluate(model, nn.CrossEntropyLoss(), (digits.X_test, digits.y_test))
    assert np.isnan(ev["loss"]) and np.isnan(ev["accuracy"])  # not the share of class 0


def test_terminate_on_nan_says_when_the_weights_are_not_finite(digits):
    model = _mlp()
    opt = optim.Adam(model.parameters(), lr=1e39)  # one step overflows the weights to inf
    with np.errstate(all="ignore"):
        hist = train.fit(model, opt, nn.CrossEntropyLoss(), (digits.X_train, digits.y_train), epochs=2, verbose=0)
    assert "loss became nan" in hist.stop_reason
    assert not all(np.isfinite(w).all() for w in _weights(model).values())
    assert "NOT finite" in hist.stop_reason and "last good step" not in hist.stop_reason
    model = _mlp()  # a NaN loss with finite weights keeps the honest "last good step" wording
    ce = nn.CrossEntropyLoss()
    hist = train.fit(
        model,
        optim.SGD(model.parameters(), lr=0.1),
        lambda o, y: ce(o, y) * float("nan"),
        (digits.X_train, digits.y_train),
        epochs=1,
        verbose=0,
    )
    assert "the weights are those of the last good step" in hist.stop_reason


def test_model_checkpoint_template_with_a_missing_key_names_the_keys(digits, tmp_path):
    model = _mlp()
    ckpt = train.ModelCheckpoint(tmp_path / "ck-{val_loss:.3f}.npz", monitor="loss")
    with pytest.raises(ValueError, match=r"val_loss.*the keys that exist are \['accuracy', 'epoch', 'loss'"):
        train.fit(
            model,
            optim.SGD(model.parameters(), lr=0.1),
            nn.CrossEntropyLoss(),
            (digits.X_train[:128], digits.y_train[:128]),
            epochs=1,
            callbacks=[ckpt],
            verbose=0,
        )


def test_epoch_lines_align_and_restore_line_follows_the_stop_line(digits, capsys):
    model = _mlp()
    script = Scripted([9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.5, 1.0, 2.0, 3.0, 4.0])
    bump = train.LambdaCallback(on_epoch_end=lambda e, logs: setattr(script, "epoch", script.epoch + 1))
    es = train.EarlyStopping(monitor="scripted", patience=2, mode="min", restore_best_weights=True)
    capsys.readouterr()
    train.fit(
        model,
        optim.SGD(model.parameters(), lr=0.05),
        nn.CrossEntropyLoss(),
        (digits.X_train[:256], digits.y_train[:256]),
        epochs=14,
        metrics=("accuracy", script),
        callbacks=[bump, es],
        verbose=1,
        batch_size=64,
    )
    lines = capsys.readouterr().out.splitlines()
    epoch_lines = [ln for ln in lines if ln.startswith("epoch")]
    assert epoch_lines[0].startswith("epoch  1/14") and epoch_lines[9].startswith("epoch 10/14")
    assert len(epoch_lines) == 12
    assert len({ln.index("loss") for ln in epoch_lines}) == 1  # columns line up past epoch 9
    assert lines[-2].startswith("early stopping") and lines[-1].startswith("restored the weights of epoch 10")


def test_no_restore_line_when_the_best_epoch_is_the_last(digits, capsys):
    es = train.EarlyStopping(monitor="loss", patience=5, restore_best_weights=True)
    model = _mlp()
    train.fit(
        model,
        optim.SGD(model.parameters(), lr=0.05),
        nn.CrossEntropyLoss(),
        (digits.X_train, digits.y_train),
        epochs=3,
        callbacks=[es],
        verbose=1,
    )
    assert es.best_epoch == 3 and "restored" not in capsys.readouterr().out


def test_plot_marks_the_best_epoch_and_lr_changes_and_labels_both_axes(tmp_path):
    hist = train.History(
        [
            {
                "epoch": e,
                "loss": 1.0 / e,
                "accuracy": 0.5 + e / 20,
                "val_loss": 1.5 / e,
                "val_accuracy": 0.5 + e / 25,
                "lr": 0.1 if e < 3 else (0.05 if e < 5 else 0.025),
            }
            for e in range(1, 7)
        ]
    )
    hist.best_epoch = 4
    assert hist.lr_changes() == [(3, 0.05), (5, 0.025)]
    fig = hist.figure("t")
    try:
        for ax in fig.axes:
            assert ax.get_xlabel() == "epoch" and ax.get_ylabel()
            vertical = {
                ln.get_label(): ln.get_xdata()[0]
                for ln in ax.get_lines()
                if len(set(ln.get_xdata())) == 1 and len(ln.get_xdata()) == 2
            }
            assert vertical.get("best epoch 4 (restored)") == 4
            xs = sorted(ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_linestyle() == ":")
            assert xs == [3, 5]
        assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "accuracy"]
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    assert open(hist.plot(tmp_path / "h.png"), "rb").read()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "field,value",
    [
        ("model", {"0.weight": 5}),  # not an array (AttributeError before)
        ("loaders", [{"seed": 2**80, "epoch": 0}]),  # OverflowError before
        ("loaders", [{"seed": 1, "epoch": "x"}]),
        ("epoch", 10**30),
        ("epoch", True),
        ("history", {"epochs": [["not", "a dict"]]}),
        ("history", {"epochs": [], "best_epoch": "x"}),
        ("optimizer", {"state": {}, "param_groups": [{"params": ["a"]}]}),
        ("optimizer", {"state": 3, "param_groups": []}),
        ("callbacks", [["EarlyStopping"]]),
        ("rng", {"backend": "tpu", "state": 1}),
        ("rng", {"backend": "numpy", "state": {"bit_generator": "nope"}}),
    ],
)
def test_every_field_of_a_crafted_training_state_is_a_checkpoint_error(digits, tmp_path, field, value):
    from gpunn.checkpoint import CheckpointError

    model = _mlp()
    opt = optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "state.npz"
    train.save_training_state(
        path,
        model,
        opt,
        epoch=1,
        history=train.History(),
        loaders=[DataLoader((digits.X_train, digits.y_train), batch_size=64, seed=0)],
    )
    state = gpunn.load(path)
    state[field] = value
    gpunn.save(state, path)
    before = _weights(model)
    with pytest.raises(CheckpointError):
        train.load_training_state(
            path,
            model,
            opt,
            None,
            train.History(),
            [DataLoader((digits.X_train, digits.y_train), batch_size=64, seed=0)],
        )
    assert _same_weights(before, _weights(model))


def _same_weights(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)


def test_a_state_saved_on_the_gpu_resumes_where_cupy_is_not_usable(digits, tmp_path, monkeypatch):
    """The cupy backend's random state in a checkpoint (seed, dropout position) cannot be restored where CuPy
    is not usable: the model, optimizer and epoch still load (a GPU run resumed on the CPU), with a warning
    that the random draws differ; an unknown backend name stays a CheckpointError."""
    from gpunn import backend as B
    from gpunn.checkpoint import CheckpointError

    model = _mlp(seed=3)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train.fit(model, opt, nn.CrossEntropyLoss(), (digits.X_train[:128], digits.y_train[:128]), epochs=1, verbose=0)
    path = tmp_path / "gpu.npz"
    train.save_training_state(path, model, opt, epoch=4)
    state = gpunn.load(path)
    state["rng"] = {"backend": "cupy", "state": {"seed": 3, "dropout_offset": 1280, "generator_seed": 12345}}
    gpunn.save(state, path)
    monkeypatch.delitem(B._instances, "cupy", raising=False)
    monkeypatch.setattr(B, "cupy_available", lambda: (False, "no GPU in this test"))
    other = _mlp(seed=4)
    other_opt = optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    with pytest.warns(UserWarning, match="random state of backend 'cupy'.*no GPU in this test"):
        loaded = train.load_training_state(path, other, other_opt)
    assert loaded["epoch"] == 4 and _same_weights(_weights(model), _weights(other))
    assert other_opt.state_dict()["state"].keys() == opt.state_dict()["state"].keys()
    state["rng"] = {"backend": "tpu", "state": {}}
    gpunn.save(state, path)
    with pytest.raises(CheckpointError, match="backend 'tpu'"):
        train.load_training_state(path, other, other_opt)
