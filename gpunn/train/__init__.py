"""The training front end: ``fit``, ``evaluate``, ``predict``, callbacks, history, checkpoints."""

from gpunn.train.callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    LambdaCallback,
    ModelCheckpoint,
    ProgressBar,
    TerminateOnNaN,
)
from gpunn.train.capture import CaptureError, compile_step
from gpunn.train.crossval import cross_validate
from gpunn.train.history import History
from gpunn.train.loop import Trainer, evaluate, fit, predict
from gpunn.train.metrics import Accuracy, Metric
from gpunn.train.state import load_training_state, save_training_state, training_state

__all__ = [
    "fit",
    "evaluate",
    "predict",
    "History",
    "Callback",
    "EarlyStopping",
    "ModelCheckpoint",
    "CSVLogger",
    "TerminateOnNaN",
    "ProgressBar",
    "LambdaCallback",
    "cross_validate",
    "Metric",
    "Accuracy",
    "Trainer",
    "save_training_state",
    "load_training_state",
    "training_state",
    "compile_step",
    "CaptureError",
]
