"""``gpunn.nn``: modules, layers, losses, initialisation and penalties, named as in ``torch.nn``.

from gpunn import nn
import gpunn.nn.functional as F

model = nn.Sequential(nn.Linear(64, 200), nn.ReLU(), nn.Linear(200, 10))
loss = nn.CrossEntropyLoss()(model(x), y)
"""

from gpunn.nn import functional, init, regularization, utils  # noqa: F401
from gpunn.nn.activation import (
    CELU,
    ELU,
    GELU,
    GLU,
    SELU,
    Hardshrink,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    LeakyReLU,
    LogSigmoid,
    LogSoftmax,
    Mish,
    PReLU,
    ReLU,
    ReLU6,
    Sigmoid,
    SiLU,
    Softmax,
    Softmin,
    Softplus,
    Softshrink,
    Softsign,
    Tanh,
    Tanhshrink,
    Threshold,
)
from gpunn.nn.batchnorm import BatchNorm1d, BatchNorm2d
from gpunn.nn.container import ModuleDict, ModuleList, ParameterDict, ParameterList, Sequential
from gpunn.nn.conv import Conv1d, Conv2d, ConvTranspose2d
from gpunn.nn.distance import CosineSimilarity, PairwiseDistance
from gpunn.nn.dropout import Dropout, Dropout2d
from gpunn.nn.flatten import Flatten, Unflatten
from gpunn.nn.linear import Identity, Linear
from gpunn.nn.loss import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    MSELoss,
    MultiMarginLoss,
    NLLLoss,
    SmoothL1Loss,
)
from gpunn.nn.module import Module
from gpunn.nn.normalization import GroupNorm, InstanceNorm1d, InstanceNorm2d, LayerNorm
from gpunn.nn.padding import (
    ConstantPad1d,
    ConstantPad2d,
    ReflectionPad1d,
    ReflectionPad2d,
    ReplicationPad1d,
    ReplicationPad2d,
    ZeroPad2d,
)
from gpunn.nn.parameter import Parameter
from gpunn.nn.pixelshuffle import PixelShuffle, PixelUnshuffle
from gpunn.nn.pooling import AdaptiveAvgPool1d, AdaptiveAvgPool2d, AvgPool1d, AvgPool2d, MaxPool1d, MaxPool2d
from gpunn.nn.rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from gpunn.nn.sparse import Embedding
from gpunn.nn.upsampling import Upsample, UpsamplingBilinear2d, UpsamplingNearest2d

__all__ = [
    "functional",
    "init",
    "regularization",
    "utils",
    "Module",
    "Parameter",
    "Sequential",
    "ModuleList",
    "ModuleDict",
    "ParameterList",
    "ParameterDict",
    "Linear",
    "Identity",
    "Embedding",
    "RNN",
    "LSTM",
    "GRU",
    "RNNCell",
    "LSTMCell",
    "GRUCell",
    "Conv1d",
    "Conv2d",
    "MaxPool1d",
    "AvgPool1d",
    "AdaptiveAvgPool1d",
    "ConvTranspose2d",
    "Upsample",
    "UpsamplingNearest2d",
    "UpsamplingBilinear2d",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "Flatten",
    "Unflatten",
    "CosineSimilarity",
    "PairwiseDistance",
    "SmoothL1Loss",
    "HuberLoss",
    "Dropout",
    "Dropout2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "LayerNorm",
    "GroupNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "ZeroPad2d",
    "ConstantPad1d",
    "ConstantPad2d",
    "ReflectionPad1d",
    "ReflectionPad2d",
    "ReplicationPad1d",
    "ReplicationPad2d",
    "PixelShuffle",
    "PixelUnshuffle",
    "ReLU",
    "LeakyReLU",
    "Sigmoid",
    "Tanh",
    "ELU",
    "GELU",
    "SiLU",
    "Softplus",
    "Softmax",
    "LogSoftmax",
    "ReLU6",
    "Hardtanh",
    "SELU",
    "CELU",
    "Mish",
    "Hardswish",
    "Hardsigmoid",
    "Softshrink",
    "Hardshrink",
    "Threshold",
    "LogSigmoid",
    "Softsign",
    "Tanhshrink",
    "Softmin",
    "GLU",
    "PReLU",
    "CrossEntropyLoss",
    "NLLLoss",
    "MSELoss",
    "L1Loss",
    "BCELoss",
    "BCEWithLogitsLoss",
    "MultiMarginLoss",
    "KLDivLoss",
]
