"""Training-state checkpoints: model, optimizer, scheduler, epoch, RNG and history in one file, so a
run resumed from it continues exactly as if it had not stopped (same losses on the numpy backend)."""

from __future__ import annotations

from gpunn.checkpoint import CheckpointError, load, save


def _architecture(model) -> list:
    return [[k, list(v.shape)] for k, v in model.state_dict().items()]


def _loader_state(loader):
    # a DataLoader's shuffle order is a function of (seed, epoch): those two numbers resume it exactly
    if hasattr(loader, "seed") and hasattr(loader, "epoch"):
        return {"seed": int(loader.seed), "epoch": int(loader.epoch)}
    return None


def training_state(model, optimizer=None, scheduler=None, epoch: int = 0, history=None, loaders=()) -> dict:
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
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": int(epoch),
        "rng": rng,
        "history": history.state_dict() if history is not None else None,
        "loaders": [_loader_state(ld) for ld in loaders],
    }


def save_training_state(path, model, optimizer=None, scheduler=None, epoch: int = 0, history=None,
                        loaders=()) -> None:
    """Write everything needed to resume training to ``path`` (atomically, no pickle)."""
    save(training_state(model, optimizer, scheduler, epoch, history, loaders), path)


def _check_structure(state, path) -> None:
    """A training-state checkpoint's shape, checked before anything is read into live objects."""
    where = f"checkpoint {str(path)!r}"
    if not isinstance(state, dict) or state.get("kind") != "training_state":
        raise CheckpointError(f"{where} is not a training-state checkpoint "
                              "(was it written by gpunn.save with a plain state_dict?)")
    arch = state.get("architecture")
    if not isinstance(arch, list) or not all(isinstance(e, list) and len(e) == 2 and isinstance(e[0], str)
                                              and isinstance(e[1], list) for e in arch):
        raise CheckpointError(f"{where} is malformed: 'architecture' must be a list of [name, shape]")
    if not isinstance(state.get("model"), dict) or not isinstance(state.get("epoch"), int):
        raise CheckpointError(f"{where} is malformed: it needs a 'model' dict and an integer 'epoch'")
    for key in ("optimizer", "scheduler", "history", "rng"):
        if state.get(key) is not None and not isinstance(state[key], dict):
            raise CheckpointError(f"{where} is malformed: '{key}' must be a dict")
    rng = state.get("rng")
    if rng is not None and not ({"backend", "state"} <= set(rng) and isinstance(rng["backend"], str)):
        raise CheckpointError(f"{where} is malformed: 'rng' must hold 'backend' and 'state'")
    if not isinstance(state.get("loaders") or [], list):
        raise CheckpointError(f"{where} is malformed: 'loaders' must be a list")


def load_training_state(path, model, optimizer=None, scheduler=None, history=None, loaders=()) -> dict:
    """Restore a checkpoint written by ``save_training_state`` into the given objects; returns the state
    dict (``state["epoch"]`` is the last finished epoch).

    All or nothing: a malformed file raises CheckpointError, a model of another shape ValueError naming
    the first difference, and if any part fails to load (say, an SGD checkpoint into an Adam optimizer)
    every object is put back as it was before the error is raised."""
    from gpunn.backend import backend_for

    state = load(path)
    _check_structure(state, path)
    saved = {k: tuple(s) for k, s in state["architecture"]}
    current = {k: tuple(s) for k, s in _architecture(model)}
    if saved != current:
        missing = sorted(set(current) - set(saved))
        extra = sorted(set(saved) - set(current))
        shapes = [f"{k}: checkpoint {saved[k]} vs model {current[k]}" for k in current
                  if k in saved and saved[k] != current[k]]
        detail = "; ".join(filter(None, [
            f"missing in checkpoint: {', '.join(missing)}" if missing else "",
            f"not in model: {', '.join(extra)}" if extra else "",
            f"shape mismatch: {', '.join(shapes)}" if shapes else ""]))
        raise ValueError(f"checkpoint {str(path)!r} was saved from a different architecture ({detail})")

    rng = state.get("rng")
    rng_backend = backend_for(rng["backend"]) if rng is not None else None
    # snapshots of everything this may change, to roll back to
    undo = [(model.load_state_dict, {k: v.numpy().copy() for k, v in model.state_dict().items()})]
    for obj in (optimizer, scheduler, history):
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
        if rng_backend is not None:
            rng_backend.set_rng_state(rng["state"])
        for ld, s in zip(loaders, state.get("loaders") or []):
            if s is not None and hasattr(ld, "set_epoch"):
                ld.seed = int(s["seed"])
                ld.set_epoch(int(s["epoch"]))
    except Exception as exc:
        for restore, snapshot in undo:
            restore(snapshot)
        for ld, seed, epoch in loader_states:
            ld.seed, ld.epoch = seed, epoch
        if isinstance(exc, (ValueError, RuntimeError, TypeError, KeyError)):
            raise ValueError(f"checkpoint {str(path)!r} does not fit the objects it is loaded into "
                             f"(nothing was changed): {exc}") from exc
        raise
    return state
