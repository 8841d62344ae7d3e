"""Training-state checkpoints: model, optimizer, scheduler, epoch, RNG, history, data loaders and every
stateful callback (early stopping's best value, patience and best weights; a checkpoint's best) in one
file, so a run resumed from it continues exactly as if it had not stopped (bit-identical on the numpy
backend)."""

from __future__ import annotations

import numbers
import warnings

from gpunn.checkpoint import CheckpointError, load, save

_MAX_EPOCH = 10**9


def _architecture(model) -> list:
    return [[k, list(v.shape)] for k, v in model.state_dict().items()]


def _loader_state(loader):
    # a DataLoader's shuffle order is a function of (seed, epoch): those two numbers resume it exactly
    if hasattr(loader, "seed") and hasattr(loader, "epoch"):
        return {"seed": int(loader.seed), "epoch": int(loader.epoch)}
    return None


def _callback_states(callbacks) -> list:
    out = []
    for c in callbacks:
        state = c.state_dict() if hasattr(c, "state_dict") else None
        if state is not None:
            out.append([type(c).__name__, state])
    return out


def training_state(
    model, optimizer=None, scheduler=None, epoch: int = 0, history=None, loaders=(), callbacks=()
) -> dict:
    be = next(iter(model.state_dict().values()))._backend if model.state_dict() else None
    rng = None
    if be is not None:
        try:
            rng = {"backend": be.name, "state": be.get_rng_state()}
        except NotImplementedError:
            rng = None
    return {
        "kind": "training_state",
        "architecture": _architecture(model),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "optimizer_class": type(optimizer).__name__ if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scheduler_class": type(scheduler).__name__ if scheduler is not None else None,
        "epoch": int(epoch),
        "rng": rng,
        "history": history.state_dict() if history is not None else None,
        "loaders": [_loader_state(ld) for ld in loaders],
        "callbacks": _callback_states(callbacks),
    }


def save_training_state(
    path, model, optimizer=None, scheduler=None, epoch: int = 0, history=None, loaders=(), callbacks=()
) -> None:
    """Write everything needed to resume training to ``path`` (atomically, no pickle)."""
    save(training_state(model, optimizer, scheduler, epoch, history, loaders, callbacks), path)


def _is_int(v, lo: int = 0, hi: int = 2**63) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and lo <= v < hi


def _check_structure(state, path) -> None:
    """Every field of a training-state checkpoint, checked before anything is read into live objects."""
    where = f"checkpoint {str(path)!r}"

    def bad(what: str):
        return CheckpointError(f"{where} is malformed: {what}")

    if not isinstance(state, dict) or state.get("kind") != "training_state":
        raise CheckpointError(
            f"{where} is not a training-state checkpoint (was it written by gpunn.save with a plain state_dict?)"
        )
    arch = state.get("architecture")
    if not isinstance(arch, list) or not all(
        isinstance(e, list)
        and len(e) == 2
        and isinstance(e[0], str)
        and isinstance(e[1], list)
        and all(_is_int(n) for n in e[1])
        for e in arch
    ):
        raise bad("'architecture' must be a list of [name, shape]")
    model = state.get("model")
    if not isinstance(model, dict) or not _is_int(state.get("epoch"), 0, _MAX_EPOCH):
        raise bad("it needs a 'model' dict and an integer 'epoch' >= 0")
    shapes = {k: tuple(s) for k, s in arch}
    for k, v in model.items():
        if not isinstance(k, str) or not hasattr(v, "shape") or not hasattr(v, "dtype"):
            raise bad(f"model entry {k!r} is not an array")
        if tuple(v.shape) != shapes.get(k, tuple(v.shape)):
            raise bad(f"model entry {k!r} has shape {tuple(v.shape)}, its architecture says {shapes[k]}")
    for key in ("optimizer", "scheduler", "history", "rng"):
        if state.get(key) is not None and not isinstance(state[key], dict):
            raise bad(f"'{key}' must be a dict")
    for key in ("optimizer_class", "scheduler_class"):
        if state.get(key) is not None and not isinstance(state[key], str):
            raise bad(f"'{key}' must be a class name")
    opt = state.get("optimizer")
    if opt is not None:
        groups = opt.get("param_groups")
        if (
            not isinstance(opt.get("state"), dict)
            or not isinstance(groups, list)
            or not all(
                isinstance(g, dict) and isinstance(g.get("params"), list) and all(_is_int(i) for i in g["params"])
                for g in groups
            )
        ):
            raise bad("'optimizer' must hold 'state' and 'param_groups' (each with a list of parameter indices)")
    rng = state.get("rng")
    if rng is not None and not ({"backend", "state"} <= set(rng) and isinstance(rng["backend"], str)):
        raise bad("'rng' must hold 'backend' and 'state'")
    hist = state.get("history")
    if hist is not None:
        epochs = hist.get("epochs", [])
        if not isinstance(epochs, list) or not all(
            isinstance(e, dict) and all(isinstance(k, str) and isinstance(v, (int, float, str)) for k, v in e.items())
            for e in epochs
        ):
            raise bad("'history' epochs must be a list of {name: number}")
        if not (hist.get("stop_reason") is None or isinstance(hist["stop_reason"], str)):
            raise bad("'history' stop_reason must be a string")
        if not (hist.get("best_epoch") is None or _is_int(hist["best_epoch"], 0, _MAX_EPOCH)):
            raise bad("'history' best_epoch must be an epoch number")
    loaders = state.get("loaders") or []
    if not isinstance(loaders, list) or not all(
        s is None or (isinstance(s, dict) and _is_int(s.get("seed")) and _is_int(s.get("epoch"), 0, _MAX_EPOCH))
        for s in loaders
    ):
        raise bad("'loaders' must be a list of {seed, epoch} (non-negative integers)")
    cbs = state.get("callbacks") or []
    if not isinstance(cbs, list) or not all(
        isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) and isinstance(e[1], dict) for e in cbs
    ):
        raise bad("'callbacks' must be a list of [class name, state]")


def _check_classes(state, path, optimizer, scheduler) -> None:
    for what, obj, key in (("optimizer", optimizer, "optimizer_class"), ("scheduler", scheduler, "scheduler_class")):
        saved = state.get(key)
        if obj is not None and state.get(what) is not None and saved is not None and saved != type(obj).__name__:
            raise CheckpointError(
                f"checkpoint {str(path)!r} holds the state of {what} {saved}, but it is being "
                f"loaded into {what} {type(obj).__name__}; make the same {what} as the saved run"
            )


def _match_callbacks(saved: list, callbacks) -> list:
    """Pairs (callback, saved state): each stateful callback takes the next saved state of its class."""
    queue = {}
    for name, st in saved:
        queue.setdefault(name, []).append(st)
    pairs = []
    for c in callbacks:
        if hasattr(c, "load_state_dict") and c.state_dict() is not None and queue.get(type(c).__name__):
            pairs.append((c, queue[type(c).__name__].pop(0)))
    return pairs


def load_training_state(path, model, optimizer=None, scheduler=None, history=None, loaders=(), callbacks=()) -> dict:
    """Restore a checkpoint written by ``save_training_state`` into the given objects; returns the state
    dict (``state["epoch"]`` is the last finished epoch).

    ``callbacks``: the run's callbacks; each stateful one (``EarlyStopping``, ``ModelCheckpoint``, ...)
    takes the saved state of the same class, in order, and continues from it in the next ``fit``.

    All or nothing: a damaged or malformed file raises ``CheckpointError``, a model of another shape
    ``ValueError`` naming the first difference, and if any part fails to load (say, an SGD checkpoint
    into an Adam optimizer) every object is put back as it was and a ``CheckpointError`` says why."""
    from gpunn.backend import backend_for

    state = load(path)
    _check_structure(state, path)
    saved = {k: tuple(s) for k, s in state["architecture"]}
    current = {k: tuple(s) for k, s in _architecture(model)}
    if saved != current:
        missing = sorted(set(current) - set(saved))
        extra = sorted(set(saved) - set(current))
        shapes = [
            f"{k}: checkpoint {saved[k]} vs model {current[k]}"
            for k in current
            if k in saved and saved[k] != current[k]
        ]
        detail = "; ".join(
            filter(
                None,
                [
                    f"missing in checkpoint: {', '.join(missing)}" if missing else "",
                    f"not in model: {', '.join(extra)}" if extra else "",
                    f"shape mismatch: {', '.join(shapes)}" if shapes else "",
                ],
            )
        )
        raise ValueError(f"checkpoint {str(path)!r} was saved from a different architecture ({detail})")
    _check_classes(state, path, optimizer, scheduler)

    rng = state.get("rng")
    try:
        rng_backend = backend_for(rng["backend"]) if rng is not None else None
    except ValueError as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: its random state is for backend {rng['backend']!r}: {exc}"
        ) from None
    except RuntimeError as exc:  # a GPU run resumed where CuPy is not usable: everything else still loads
        rng_backend = None
        warnings.warn(
            f"gpunn: checkpoint {str(path)!r} holds the random state of backend {rng['backend']!r}, which is not "
            f"usable here ({exc}); resuming without it, so random draws (dropout masks...) differ from the "
            "uninterrupted run",
            UserWarning,
            stacklevel=2,
        )
    cb_pairs = _match_callbacks(state.get("callbacks") or [], callbacks)
    # snapshots of everything this may change, to roll back to
    undo = [(model.load_state_dict, {k: v.numpy().copy() for k, v in model.state_dict().items()})]
    for obj in (optimizer, scheduler, history, *(c for c, _ in cb_pairs)):
        if obj is not None:
            undo.append((obj.load_state_dict, obj.state_dict()))
    if rng_backend is not None:
        undo.append((rng_backend.set_rng_state, rng_backend.get_rng_state()))
    loader_states = [(ld, ld.seed, ld.epoch) for ld in loaders if hasattr(ld, "set_epoch")]
    try:
        model.load_state_dict(state["model"])
        if optimizer is not None and state.get("optimizer") is not None:
            optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        if history is not None and state.get("history") is not None:
            history.load_state_dict(state["history"])
        for c, st in cb_pairs:
            c.load_state_dict(st)
        if rng_backend is not None:
            rng_backend.set_rng_state(rng["state"])
        for ld, s in zip(loaders, state.get("loaders") or []):
            if s is not None and hasattr(ld, "set_epoch"):
                ld.seed = int(s["seed"])
                ld.set_epoch(int(s["epoch"]))
    except Exception as exc:  # whatever a crafted field makes a load_state_dict raise: undo, then say so
        for restore, snapshot in undo:
            restore(snapshot)
        for ld, seed, epoch in loader_states:
            ld.seed, ld.epoch = seed, epoch
        for c, _ in cb_pairs:
            c._resumed = False
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not fit the objects it is loaded into "
            f"(nothing was changed): {type(exc).__name__}: {exc}"
        ) from exc
    return state
