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


def load_training_state(path, model, optimizer=None, scheduler=None, history=None, loaders=()) -> dict:
    """Restore a checkpoint written by ``save_training_state`` into the given objects; returns the state
    dict (``state["epoch"]`` is the last finished epoch). A checkpoint from a model of a different shape
    raises ValueError naming the first difference, before anything is modified."""
    state = load(path)
    if not isinstance(state, dict) or state.get("kind") != "training_state":
        raise CheckpointError(f"checkpoint {str(path)!r} is not a training-state checkpoint "
                              "(was it written by gpunn.save with a plain state_dict?)")
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
    model.load_state_dict(state["model"])
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if history is not None and state.get("history") is not None:
        history.load_state_dict(state["history"])
    rng = state.get("rng")
    if rng is not None:
        from gpunn.backend import backend_for

        backend_for(rng["backend"]).set_rng_state(rng["state"])
    for ld, s in zip(loaders, state.get("loaders") or []):
        if s is not None and hasattr(ld, "set_epoch"):
            ld.seed = int(s["seed"])
            ld.set_epoch(int(s["epoch"]))
    return state
