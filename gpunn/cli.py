"""The ``gpunn`` command: ``gpunn train ...`` and ``gpunn info``.

User errors (bad names, sizes, paths, checkpoints) print one line ``gpunn: error: ...`` and exit 2,
with no traceback. Outputs are written only when training ends (finished, stopped early, or Ctrl-C),
each atomically, so a failed run never replaces files an earlier run left in ``--out``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys


class UserError(Exception):
    """A mistake in the command line or its inputs: reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's default prints the usage too)
        raise UserError(message)


DATASETS = ("mnist-sample", "digits", "idx:DIR")
MODELS = ("mlp", "cnn", "softmax", "svm")
OPTIMIZERS = ("sgd", "adam", "adamw")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="gpunn", description="Train small neural networks with gpunn.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("train", help="train a model and write checkpoint, history.csv and history.png")
    t.add_argument("--dataset", default="mnist-sample", help="mnist-sample, digits, or idx:DIR (MNIST IDX files)")
    t.add_argument("--model", default="mlp", help=f"one of {', '.join(MODELS)}")
    t.add_argument("--optimizer", default="sgd", help=f"one of {', '.join(OPTIMIZERS)}")
    t.add_argument("--epochs", type=int, default=15)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=None, help="learning rate (default: 0.05 for sgd, 1e-3 for adam)")
    t.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    t.add_argument("--weight-decay", type=float, default=None,
                   help="L2 weight decay (default 1e-4 sgd, 0 adam, 1e-2 adamw)")
    t.add_argument("--dropout", type=float, default=0.0, help="drop probability of the hidden layers (mlp, cnn)")
    t.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random +-2 pixel shifts of training images (default: on for cnn, off otherwise)")
    t.add_argument("--val-fraction", type=float, default=0.1,
                   help="fraction of the training set held out for validation")
    t.add_argument("--patience", type=int, default=5, help="early-stopping patience in epochs (0 disables)")
    t.add_argument("--backend", default="auto", help="auto, numpy or cupy")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default="runs/latest", help="output folder (created if its parent exists)")
    t.add_argument("--resume", default=None, help="continue from a training-state checkpoint")
    t.add_argument("--quiet", action="store_true", help="print only the final result")
    sub.add_parser("info", help="print the backend, device, versions and available kernels")
    return p


# ------------------------------------------------------------------------------------------------
# data and models
# ------------------------------------------------------------------------------------------------
def load_dataset(name: str, seed: int, image: bool):
    from gpunn import data

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
        layers = [nn.Conv2d(c, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                  nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()]
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
    if not (args.dataset in ("mnist-sample", "digits") or args.dataset.startswith("idx:")):
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


def cmd_train(args) -> int:
    _check_args(args)
    import gpunn
    from gpunn import nn, train
    from gpunn.checkpoint import CheckpointError
    from gpunn.data import DataLoader, train_test_split
    from gpunn.data.transforms import RandomShift

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
    ds = load_dataset(args.dataset, args.seed, image)
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
    scheduler = gpunn.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=2) \
        if X_val is not None else None
    augment = args.model == "cnn" if args.augment is None else args.augment
    transform = RandomShift(2, image_shape=ds.image_shape) if augment else None
    train_loader = world.loader((X, y), args.batch_size, seed=args.seed, transform=transform)
    # evaluation loaders get a fixed seed so that making them never draws from the generator
    val_loader = DataLoader((X_val, y_val), batch_size=512, seed=0) if X_val is not None else None
    history = train.History()
    start_epoch = 0
    if args.resume:
        try:
            state = train.load_training_state(args.resume, model, optimizer, scheduler, history, [train_loader])
        except (CheckpointError, ValueError, RuntimeError) as exc:
            raise UserError(f"--resume {args.resume}: {exc}") from None
        start_epoch = int(state["epoch"])
        same = state.get("world_size", 1) == world.size and world.restore_rng(state.get("rng_ranks"), backend)
        if not same and world.is_main:
            print(f"gpunn: note: --resume {args.resume} was trained on {state.get('world_size', 1)} rank(s), this "
                  f"run has {world.size}: it continues, but not bit for bit", file=sys.stderr)
    class LastEpochState(train.Callback):
        """A host copy of the whole training state after each finished epoch (what checkpoint.npz holds)."""

        state = None

        def on_epoch_end(self, epoch, logs=None):
            t = self.trainer
            state = train.training_state(model, t.optimizer, t.scheduler, epoch, t.history, [train_loader])
            state["model"] = {k: v.numpy().copy() for k, v in state["model"].items()}  # not live views
            state["world_size"], state["rng_ranks"] = world.size, world.rng_states(backend)
            self.state = state

    last = LastEpochState()
    callbacks = [last]
    if X_val is not None and args.patience > 0:
        callbacks.append(train.EarlyStopping("val_loss", patience=args.patience, restore_best_weights=True))
    verbose = 0 if args.quiet else 1
    if verbose and world.is_main:
        ranks = f" | {world.size} ranks ({world.backend})" if world.size > 1 else ""
        print(f"gpunn train: {args.model} on {args.dataset} ({len(X)} train, "
              f"{0 if X_val is None else len(X_val)} val, {len(ds.X_test)} test) | backend {backend.name}{ranks} | "
              f"{model.num_parameters():,} parameters", flush=True)
    hist = train.fit(net, optimizer, loss_fn, train_loader, val_loader, epochs=args.epochs, scheduler=scheduler,
                     callbacks=callbacks, verbose=verbose, initial_epoch=start_epoch, history=history)
    if not world.is_main:  # rank 0 writes and reports; every rank stopped alike
        failed = hist.stop_reason and hist.stop_reason.startswith("loss became")
        return 1 if failed else 130 if hist.stop_reason and hist.stop_reason.startswith("interrupted") else 0
    if hist.stop_reason and hist.stop_reason.startswith("loss became"):
        print(f"gpunn: training failed: {hist.stop_reason}", file=sys.stderr)
        print("gpunn: nothing was written to --out (files from earlier runs are unchanged)", file=sys.stderr)
        return 1
    os.makedirs(args.out, exist_ok=True)
    # checkpoint.npz: the state after the last finished epoch (before EarlyStopping put the best weights
    # back), so --resume continues exactly; model.npz: the weights evaluated below
    ckpt = os.path.join(args.out, "checkpoint.npz")
    if last.state is not None:
        gpunn.save(last.state, ckpt)
    else:  # stopped (Ctrl-C) before the first epoch of this run finished
        train.save_training_state(ckpt, model, optimizer, scheduler, epoch=start_epoch, history=hist,
                                  loaders=[train_loader])
    weights = os.path.join(args.out, "model.npz")
    gpunn.save(model.state_dict(), weights)
    test = train.evaluate(model, loss_fn, DataLoader((ds.X_test, ds.y_test), batch_size=512, seed=0))
    hist.to_csv(os.path.join(args.out, "history.csv"))
    wrote = [ckpt, weights, os.path.join(args.out, "history.csv")]
    if len(hist):
        try:
            wrote.append(hist.plot(os.path.join(args.out, "history.png"),
                                   title=f"gpunn {args.model} on {args.dataset}"))
        except ImportError as exc:
            print(f"gpunn: no plot: {exc}", file=sys.stderr)
    print(f"test accuracy {test['accuracy'] * 100:.2f}%  test loss {test['loss']:.4f}  "
          f"({len(ds.X_test)} images)", flush=True)
    print("wrote " + ", ".join(wrote), flush=True)
    return 130 if hist.stop_reason and hist.stop_reason.startswith("interrupted") else 0


def cmd_info(_args) -> int:
    import numpy as np

    import gpunn
    from gpunn.backend import cupy_available

    be = gpunn.get_backend()
    print(f"gpunn {gpunn.__version__}  python {platform.python_version()}  numpy {np.__version__}")
    print(f"backend: {be.name} on {be.device}")
    ok, why = cupy_available()
    print(f"cupy: {'usable' if ok else 'not usable: ' + why}")
    for mod in ("cupy", "numba", "numba_cuda", "torch"):
        try:
            m = __import__(mod)
            print(f"{mod}: {getattr(m, '__version__', 'installed')}")
        except Exception:
            print(f"{mod}: not installed")
    try:
        from gpunn.backend.kernels import KERNEL_FILES, kernel_path

        names = [f"{n}.cu" for n in KERNEL_FILES if kernel_path(n)]
        print(f"kernels: {', '.join(names) if names else 'none found'}"
              f"{'' if ok else ' (sources only: no GPU to run them)'}")
    except Exception as exc:  # the kernel loader is optional here
        print(f"kernels: unavailable ({exc})")
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "train":
            return cmd_train(args)
        return cmd_info(args)
    except UserError as exc:
        print(f"gpunn: error: {exc}", file=sys.stderr)
        from gpunn.distributed.training import abort_other_ranks

        abort_other_ranks()  # under mpiexec, after the ranks joined: end them all, none waits forever
        return 2
    except KeyboardInterrupt:
        print("gpunn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
