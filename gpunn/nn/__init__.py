"""``gpunn.nn``: modules, layers, losses, initialisation and penalties, named as in ``torch.nn``.

    from gpunn import nn
    import gpunn.nn.functional as F

    model = nn.Sequential(nn.Linear(64, 200), nn.ReLU(), nn.Linear(200, 10))
    loss = nn.CrossEntropyLoss()(model(x), y)
"""

from gpunn.nn import functional, init, regularization  # noqa: F401
from gpunn.nn.activation import LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from gpunn.nn.container import ModuleList, Sequential
from gpunn.nn.conv import Conv2d
from gpunn.nn.dropout import Dropout
from gpunn.nn.flatten import Flatten
from gpunn.nn.linear import Identity, Linear
from gpunn.nn.loss import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    KLDivLoss,
    L1Loss,
    MSELoss,
    MultiMarginLoss,
    NLLLoss,
)
from gpunn.nn.module import Module
from gpunn.nn.parameter import Parameter
from gpunn.nn.pooling import AvgPool2d, MaxPool2d

__all__ = [
    "functional", "init", "regularization",
    "Module", "Parameter", "Sequential", "ModuleList",
    "Linear", "Identity", "Conv2d", "MaxPool2d", "AvgPool2d", "Flatten", "Dropout",
    "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax",
    "CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss", "BCELoss", "BCEWithLogitsLoss",
    "MultiMarginLoss", "KLDivLoss",
]
