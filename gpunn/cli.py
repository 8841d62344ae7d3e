"""The ``gpunn`` command: ``gpunn train ...`` and ``gpunn info``.

User errors (bad names, sizes, paths, checkpoints) print one line ``gpunn: error: ...`` and exit 2,
with no traceback; a failed write (a full disk) prints one such line and exits 1.

Never losing work: ``checkpoint.npz`` (the whole training state) and ``history.csv`` are written
atomically at the end of every completed epoch, so they always describe a finished epoch; ``model.npz``
and ``history.png`` are written when training ends. A run that completes no epoch writes nothing, so
it never replaces what an earlier run left in ``--out``. SIGINT (Ctrl-C) and SIGTERM stop at a step
boundary; the exit code is then 130 or 143, after one line saying what was kept and how to resume.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import signal
import sys
import threading


class UserError(Exception):
    """A mistake in the command line or its inputs: reported in one line, exit code 2."""

    code = 2


class WriteError(UserError):
    """An output could not be written (a full disk, no permission): one line, exit code 1."""

    code = 1


class Terminated(Exception):
    """SIGTERM outside the training loop (which handles it itself)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's default prints the usage too)
        raise UserError(message)


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default (options whose default depends on others say so)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" not in text and action.default not in (None, argparse.SUPPRESS) and action.option_strings:
            text += " (default: %(default)s)"
        return text


DATASETS = ("mnist-sample", "digits", "mnist", "fashion-mnist", "idx:DIR")
VISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}  # --dataset -> gpunn.vision.datasets class
MODELS = ("mlp", "cnn", "softmax", "svm")
OPTIMIZERS = ("sgd", "adam", "adamw")


def build_parser() -> argparse.ArgumentParser:
    from gpunn import __version__

    p = _Parser(prog="gpunn", description="Train small neural networks with gpunn.")
    p.add_argument("--version", action="version", version=f"gpunn {__version__}")
    sub = p.add_subparsers(dest="command", parser_class=_Parser, metavar="{train,info}")
    t = sub.add_parser(
        "train",
        help="train a model and write checkpoint.npz, model.npz, history.csv and history.png",
        formatter_class=_HelpFormatter,
    )
    t.add_argument(
        "--dataset", default="mnist-sample", help="mnist-sample, digits, mnist or fashion-mnist (in --data), or idx:DIR"
    )
    t.add_argument(
        "--data",
        default="data",
        help="root folder of --dataset mnist / fashion-mnist (files in DATA/MNIST/raw or DATA/FashionMNIST/raw)",
    )
    t.add_argument(
        "--download",
        action="store_true",
        help="fetch missing mnist / fashion-mnist files from the "
        "standard mirrors (default: off, nothing touches the network)",
    )
    t.add_argument("--model", default="mlp", help=f"one of {', '.join(MODELS)}")
    t.add_argument("--optimizer", default="sgd", help=f"one of {', '.join(OPTIMIZERS)}")
    t.add_argument(
        "--epochs", type=int, default=15, help="epochs to train (with --resume: the total, counting the checkpoint's)"
    )
    t.add_argument("--batch-size", type=int, default=64, help="samples per training step")
    t.add_argument(
        "--lr", type=float, default=None, help="learning rate (default: 0.05 for sgd, 1e-3 for adam and adamw)"
    )
    t.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    t.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        help="L2 weight decay (default: 1e-4 for sgd, 0 for adam, 1e-2 for adamw)",
    )
    t.add_argument("--dropout", type=float, default=0.0, help="drop probability of the hidden layers (mlp, cnn)")
    t.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random +-2 pixel shifts of training images (default: on for cnn, off otherwise)",
    )
    t.add_argument(
        "--val-fraction", type=float, default=0.1, help="fraction of the training set held out for validation"
    )
    t.add_argument("--patience", type=int, default=5, help="early-stopping patience in epochs (0 disables)")
    t.add_argument("--backend", default="auto", help="auto, numpy or cupy")
    t.add_argument("--seed", type=int, default=0, help="seed of the weights, the split and the shuffling")
    t.add_argument("--out", default="runs/latest", help="output folder (created if its parent exists)")
    t.add_argument(
        "--resume", default=None, help="continue from a training-state checkpoint (default: none, a fresh run)"
    )
    t.add_argument("--quiet", action="store_true", help="print only the final result (default: off)")
    sub.add_parser("info", help="print the version, each backend's status, the optional packages and kernels")
    return p


# ------------------------------------------------------------------------------------------------
# data and models
# ------------------------------------------------------------------------------------------------
def _load_vision(name: str, root: str, download: bool, image: bool):
    """The full MNIST / Fashion-MNIST through gpunn.vision (torchvision's layout under ``root``)."""
    import numpy as np

    from gpunn import data
    from gpunn.vision import datasets

    cls = getattr(datasets, VISION[name])
    try:
        train, test = cls(root, train=True, download=download), cls(root, train=False, download=download)
    except RuntimeError as exc:
        hint = "" if download else " (or pass --download)"
        raise UserError(f"--dataset {name}: {exc}{hint}") from None

    def images(ds):
        X = ds.data.numpy().astype(np.float32) / np.float32(255.0)
        return X.reshape(len(X), 1, *X.shape[1:]) if image else X.reshape(len(X), -1)

    return data.DatasetSplit(
        images(train),
        train.targets.numpy(),
        images(test),
        test.targets.numpy(),
        num_classes=len(train.classes),
        image_shape=(1, *train.data.shape[1:]),
        name=name,
    )


def load_dataset(name: str, seed: int, image: bool, root: str = "data", download: bool = False):
    from gpunn import data

    if name in VISION:
        return _load_vision(name, root, download, image)
    try:
        if name == "mnist-sample":
            return data.load_mnist_sample(flatten=not image, seed=seed)
        if name == "digits":
            return data.load_digits(flatten=not image, seed=seed)
        if name.startswith("idx:"):
            folder = name[4:]
            if not os.path.isdir(folder):
                raise UserError(f"--dataset {name}: {folder!r} is not a folder")
            return data.load_mnist(folder, flatten=not image)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(f"--dataset {name}: {exc}") from None
    except ImportError as exc:
        raise UserError(f"--dataset {name}: {exc}") from None
    raise UserError(f"--dataset: unknown data set {name!r}; choose from {', '.join(DATASETS)}")


def build_model(kind: str, in_shape: tuple, num_classes: int, dropout: float):
    """The models of the course notes: an MLP, a small CNN, and two linear classifiers."""
    from gpunn import nn

    features = 1
    for n in in_shape:
        features *= n
    if kind == "mlp":
        layers = [nn.Linear(features, 200), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers += [nn.Linear(200, 200), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(200, num_classes))
        model = nn.Sequential(*layers)
        for m in model.modules():
            if isinstance(m, nn.Linear):  # Kaiming init for the ReLU layers, zero biases
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        return model
    if kind == "cnn":
        c, h, w = in_shape
        flat = 32 * (h // 4) * (w // 4)
        layers = [
            nn.Conv2d(c, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        ]
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(flat, num_classes))
        model = nn.Sequential(*layers)
        for m in model.modules():
            if isinstance(m, (nn.Conv2d,)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        return model
    if kind in ("softmax", "svm"):
        return nn.Sequential(nn.Flatten(), nn.Linear(features, num_classes))
    raise UserError(f"--model: unknown model {kind!r}; choose from {', '.join(MODELS)}")


def build_optimizer(args, params):
    from gpunn import optim

    name = args.optimizer
    if name == "sgd":
        lr = 0.05 if args.lr is None else args.lr
        wd = 1e-4 if args.weight_decay is None else args.weight_decay
        return optim.SGD(params, lr=lr, momentum=args.momentum, weight_decay=wd)
    if name in ("adam", "adamw"):
        lr = 1e-3 if args.lr is None else args.lr
        if name == "adam":
            wd = 0.0 if args.weight_decay is None else args.weight_decay
            return optim.Adam(params, lr=lr, weight_decay=wd)
        wd = 1e-2 if args.weight_decay is None else args.weight_decay
        return optim.AdamW(params, lr=lr, weight_decay=wd)
    raise UserError(f"--optimizer: unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")


# ------------------------------------------------------------------------------------------------
# commands
# ------------------------------------------------------------------------------------------------
def _check_args(args) -> None:
    if args.model not in MODELS:
        raise UserError(f"--model: unknown model {args.model!r}; choose from {', '.join(MODELS)}")
    if args.optimizer not in OPTIMIZERS:
        raise UserError(f"--optimizer: unknown optimizer {args.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
    if not (args.dataset in ("mnist-sample", "digits", *VISION) or args.dataset.startswith("idx:")):
        raise UserError(f"--dataset: unknown data set {args.dataset!r}; choose from {', '.join(DATASETS)}")
    if args.epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {args.epochs}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.lr is not None and not args.lr > 0:
        raise UserError(f"--lr must be > 0, got {args.lr}")
    import math

    if not (args.momentum >= 0 and math.isfinite(args.momentum)):
        raise UserError(f"--momentum must be a finite number >= 0, got {args.momentum}")
    if args.weight_decay is not None and not (args.weight_decay >= 0 and math.isfinite(args.weight_decay)):
        raise UserError(f"--weight-decay must be a finite number >= 0, got {args.weight_decay}")
    if args.lr is not None and not math.isfinite(args.lr):
        raise UserError(f"--lr must be finite, got {args.lr}")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    if args.patience < 0:
        raise UserError(f"--patience must be >= 0 (0 turns early stopping off), got {args.patience}")
    if not 0.0 <= args.dropout < 1.0:
        raise UserError(f"--dropout is a drop probability in [0, 1), got {args.dropout}")
    if not 0.0 <= args.val_fraction < 0.5:
        raise UserError(f"--val-fraction must be in [0, 0.5), got {args.val_fraction}")
    parent = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(parent):
        raise UserError(f"--out {args.out}: the parent folder {parent!r} does not exist")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UserError(f"--out {args.out}: exists and is not a folder")
    if args.resume is not None and not os.path.isfile(args.resume):
        raise UserError(f"--resume {args.resume}: no such file")


def _write(what: str, fn, *args):
    """Run one output write; a failure (full disk, no permission) becomes one ``gpunn: error:`` line."""
    try:
        return fn(*args)
    except OSError as exc:
        raise WriteError(
            f"could not write {what}: {exc.strerror or exc} (files from finished epochs are kept)"
        ) from None


def _resume_command(argv, ckpt: str) -> str:
    """The command line that continues this run from ``ckpt``: the same options, ``--resume`` replaced."""
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--resume":
            skip = True
        elif not a.startswith("--resume="):
            kept.append(a)
    return shlex.join(["gpunn", *kept, "--resume", ckpt])


def cmd_train(args, argv=()) -> int:
    _check_args(args)
    import gpunn
    from gpunn import nn, train
    from gpunn.checkpoint import CheckpointError
    from gpunn.data import DataLoader, train_test_split
    from gpunn.data.transforms import RandomShift
    from gpunn.train.signals import exit_code, signal_name

    try:
        backend = gpunn.set_backend(args.backend)
    except (RuntimeError, ValueError) as exc:
        raise UserError(f"--backend {args.backend}: {exc}") from None
    from gpunn.distributed.training import cli_world

    try:
        world = cli_world(backend, args.batch_size)  # under mpiexec -n N: data parallel over N ranks
    except (RuntimeError, ValueError) as exc:
        raise UserError(str(exc)) from None
    gpunn.manual_seed(args.seed)
    image = args.model == "cnn"
    ds = load_dataset(args.dataset, args.seed, image, args.data, args.download)
    X, y = ds.X_train, ds.y_train
    if args.val_fraction > 0:
        X, X_val, y, y_val = train_test_split(X, y, test_size=args.val_fraction, seed=args.seed, stratify=True)
    else:
        X_val = y_val = None
    if args.batch_size > len(X):
        raise UserError(f"--batch-size {args.batch_size} is larger than the training set ({len(X)} samples)")
    num_classes = int(max(ds.y_train.max(), ds.y_test.max())) + 1
    model = build_model(args.model, tuple(X.shape[1:]), num_classes, args.dropout)
    net = world.wrap(model)  # DistributedDataParallel on N ranks (rank 0's weights everywhere)
    world.split_rng(args.seed)  # N ranks: a random stream each (dropout, augmentation)
    optimizer = build_optimizer(args, net.parameters())
    loss_fn = nn.MultiMarginLoss() if args.model == "svm" else nn.CrossEntropyLoss()
    scheduler = (
        gpunn.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=2) if X_val is not None else None
    )
    augment = args.model == "cnn" if args.augment is None else args.augment
    transform = RandomShift(2, image_shape=ds.image_shape) if augment else None
    train_loader = world.loader((X, y), args.batch_size, seed=args.seed, transform=transform)
    # evaluation loaders get a fixed seed so that making them never draws from the generator
    val_loader = DataLoader((X_val, y_val), batch_size=512, seed=0) if X_val is not None else None

    ckpt = os.path.join(args.out, "checkpoint.npz")
    csv_path = os.path.join(args.out, "history.csv")

    class RankStreams(train.Callback):
        """N ranks: every rank's generator state after each epoch, for the checkpoint rank 0 writes (an
        all-gather, so this runs on every rank)."""

        states = None

        def on_epoch_end(self, epoch, logs=None):
            self.states = world.rng_states(backend)

    streams = RankStreams()

    class EpochOutputs(train.Callback):
        """checkpoint.npz and history.csv after every completed epoch, each atomically; nothing before
        the first one (so a run that finishes no epoch leaves --out as it was)."""

        rank_zero_only = True  # on N ranks only rank 0 writes
        epochs_done = 0
        weights = None  # a host copy of the last completed epoch's weights

        def on_checkpoint(self, epoch, logs=None):
            t = self.trainer  # t.model may be the DistributedDataParallel wrapper: save the model itself
            state = train.training_state(model, t.optimizer, t.scheduler, epoch, t.history, [train_loader], t.callbacks)
            state["world_size"], state["rng_ranks"] = world.size, streams.states
            _write(args.out, os.makedirs, args.out, 0o777, True)
            _write(ckpt, gpunn.save, state, ckpt)
            _write(csv_path, t.history.to_csv, csv_path)
            self.weights = {k: v.numpy().copy() for k, v in model.state_dict().items()}
            self.epochs_done += 1

    outputs = EpochOutputs()
    callbacks = [streams, outputs]
    if X_val is not None and args.patience > 0:
        callbacks.append(train.EarlyStopping("val_loss", patience=args.patience, restore_best_weights=True))
    history = train.History()
    start_epoch = 0
    if args.resume:
        try:
            state = train.load_training_state(
                args.resume, model, optimizer, scheduler, history, [train_loader], callbacks
            )
        except (CheckpointError, ValueError, RuntimeError) as exc:
            raise UserError(f"--resume {args.resume}: {exc}") from None
        start_epoch = int(state["epoch"])
        same = state.get("world_size", 1) == world.size and world.restore_rng(state.get("rng_ranks"), backend)
        if not same and world.is_main:
            print(
                f"gpunn: note: --resume {args.resume} was trained on {state.get('world_size', 1)} rank(s), this "
                f"run has {world.size}: it continues, but not bit for bit",
                file=sys.stderr,
            )
        if args.epochs <= start_epoch:
            raise UserError(
                f"--resume {args.resume}: the checkpoint has finished epoch {start_epoch} and --epochs "
                f"is {args.epochs}: nothing left to train (give --epochs above {start_epoch})"
            )
    verbose = 0 if args.quiet else 1
    if verbose and world.is_main:
        ranks = f" | {world.size} ranks ({world.backend})" if world.size > 1 else ""
        print(
            f"gpunn train: {args.model} on {args.dataset} ({len(X)} train, "
            f"{0 if X_val is None else len(X_val)} val, {len(ds.X_test)} test) | backend {backend.name}{ranks} | "
            f"{model.num_parameters():,} parameters",
            flush=True,
        )
    hist = train.fit(
        net,
        optimizer,
        loss_fn,
        train_loader,
        val_loader,
        epochs=args.epochs,
        scheduler=scheduler,
        callbacks=callbacks,
        verbose=verbose,
        initial_epoch=start_epoch,
        history=history,
    )
    if not world.is_main:  # rank 0 writes and reports; every rank stopped alike
        if hist.stop_signal is not None:
            return exit_code(hist.stop_signal)
        return 1 if hist.stop_reason and hist.stop_reason.startswith("loss became") else 0
    resume = _resume_command(argv, ckpt)
    if hist.stop_reason and hist.stop_reason.startswith("loss became"):
        print(f"gpunn: training failed: {hist.stop_reason}", file=sys.stderr)
        if outputs.epochs_done:
            print(
                f"gpunn: kept {ckpt} and {csv_path} of epoch {start_epoch + outputs.epochs_done}, the last good one",
                file=sys.stderr,
            )
        else:
            print("gpunn: nothing was written to --out (files from earlier runs are unchanged)", file=sys.stderr)
        return 1
    if hist.stop_signal is not None:
        how = f"gpunn: stopped by {signal_name(hist.stop_signal)}"
        if not outputs.epochs_done:
            kept = f"no epoch finished, nothing was written to {args.out}"
            if args.resume:
                kept += f"; {args.resume} is unchanged; resume with: {resume}"
            print(f"{how}: {kept}", file=sys.stderr, flush=True)
            return exit_code(hist.stop_signal)
        if hist.best_epoch is None:  # else EarlyStopping put the best epoch's weights back
            model.load_state_dict(outputs.weights)  # the last finished epoch's, not a step of the unfinished one
        weights = os.path.join(args.out, "model.npz")
        _write(weights, gpunn.save, model.state_dict(), weights)
        last = start_epoch + outputs.epochs_done
        print(
            f"{how}: kept {ckpt} (epoch {last}), {csv_path} and {weights}; resume with: {resume}",
            file=sys.stderr,
            flush=True,
        )
        return exit_code(hist.stop_signal)
    # checkpoint.npz holds the state after the last finished epoch (before EarlyStopping put the best
    # weights back), so --resume continues exactly; model.npz: the weights evaluated below
    weights = os.path.join(args.out, "model.npz")
    _write(args.out, os.makedirs, args.out, 0o777, True)
    _write(weights, gpunn.save, model.state_dict(), weights)
    test = train.evaluate(model, loss_fn, DataLoader((ds.X_test, ds.y_test), batch_size=512, seed=0))
    wrote = [ckpt, weights, csv_path]
    if len(hist):
        try:
            wrote.append(
                _write(
                    "history.png",
                    hist.plot,
                    os.path.join(args.out, "history.png"),
                    f"gpunn {args.model} on {args.dataset}",
                )
            )
        except ImportError as exc:
            print(f"gpunn: no plot: {exc}", file=sys.stderr)
    print(
        f"test accuracy {test['accuracy'] * 100:.2f}%  test loss {test['loss']:.4f}  ({len(ds.X_test)} images)",
        flush=True,
    )
    print("wrote " + ", ".join(wrote), flush=True)
    return 0


def cmd_info(_args) -> int:
    """The version line, then one line per backend (usable or why not), the optional packages, the kernels."""
    import numpy as np

    import gpunn
    from gpunn.backend import BACKEND_NAMES, backend_for, cupy_available

    default = gpunn.get_backend().name
    print(f"gpunn {gpunn.__version__}  python {platform.python_version()}  numpy {np.__version__}")
    for name in (n for n in BACKEND_NAMES if n != "auto"):
        try:
            be = backend_for(name)
        except (RuntimeError, ValueError) as exc:
            print(f"backend {name}: not usable: {cupy_available()[1] if name == 'cupy' else exc}")
            continue
        print(f"backend {name}: usable on {be.device}{' (the default here)' if name == default else ''}")
    versions = []
    for mod in ("numba", "numba_cuda", "cupy", "torch"):
        try:
            m = __import__(mod)
            versions.append(f"{mod} {getattr(m, '__version__', 'installed')}")
        except Exception:
            versions.append(f"{mod} not installed")
    print("optional: " + ", ".join(versions))
    try:
        from gpunn.backend.kernels import KERNEL_FILES, kernel_path

        names = [f"{n}.cu" for n in KERNEL_FILES if kernel_path(n)]
        print(
            f"kernels: {', '.join(names) if names else 'none found'}"
            f"{'' if cupy_available()[0] else ' (sources only: no GPU to run them)'}"
        )
    except Exception as exc:  # the kernel loader is optional here
        print(f"kernels: unavailable ({exc})")
    return 0


def _terminate(signum, frame):
    raise Terminated


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    previous = None
    if threading.current_thread() is threading.main_thread():  # fit() handles it itself while training
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        if args.command == "train":
            return cmd_train(args, argv)
        return cmd_info(args)
    except UserError as exc:
        print(f"gpunn: error: {exc}", file=sys.stderr)
        from gpunn.distributed.training import abort_other_ranks

        abort_other_ranks()  # under mpiexec, after the ranks joined: end them all, none waits forever
        return exc.code
    except (KeyboardInterrupt, Terminated) as exc:  # outside the training loop, which handles both itself
        name, code = ("SIGTERM", 143) if isinstance(exc, Terminated) else ("SIGINT (Ctrl-C)", 130)
        print(
            f"gpunn: stopped by {name} outside training; every file already written is complete (each is "
            "written atomically), nothing more was written",
            file=sys.stderr,
        )
        return code
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
