"""k-fold cross-validation over ``fit``."""

from __future__ import annotations

import math

import numpy as np


def cross_validate(
    build,
    data,
    k: int = 5,
    epochs: int = 10,
    batch_size: int = 32,
    stratified: bool = True,
    seed: int = 0,
    metrics=("accuracy",),
    verbose: int = 0,
) -> dict:
    """Train a fresh model on each of ``k`` folds and score it on the held-out fold.

    ``build()`` returns ``(model, optimizer, loss_fn)`` (called once per fold, so every fold starts from a
    new initialisation); ``data`` is ``(X, y)`` NumPy arrays. Returns ``{"folds": [per-fold logs],
    "mean": {...}, "std": {...}}`` with the held-out ``loss`` and metrics of each fold."""
    from gpunn.data import DataLoader, KFold, StratifiedKFold
    from gpunn.train.loop import evaluate, fit

    X, y = (np.asarray(a) for a in data)
    if len(X) != len(y):
        raise ValueError(f"cross_validate(): X has {len(X)} rows but y has {len(y)}")
    splitter = (StratifiedKFold if stratified else KFold)(n_splits=k, shuffle=True, seed=seed)
    folds = []
    for i, (tr, va) in enumerate(splitter.split(X, y)):
        model, optimizer, loss_fn = build()
        train = DataLoader((X[tr], y[tr]), batch_size=batch_size, shuffle=True, seed=seed + i)
        fit(model, optimizer, loss_fn, train, epochs=epochs, metrics=metrics, verbose=verbose)
        scores = evaluate(model, loss_fn, (X[va], y[va]), metrics)
        scores["fold"] = i
        scores["n_val"] = int(len(va))
        folds.append(scores)
    keys = [key for key in folds[0] if key not in ("fold", "n_val")]
    mean = {key: float(np.mean([f[key] for f in folds])) for key in keys}
    std = {key: float(np.std([f[key] for f in folds])) if len(folds) > 1 else math.nan for key in keys}
    return {"folds": folds, "mean": mean, "std": std}
