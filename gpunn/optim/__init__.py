"""Optimizers over flat parameter buffers (SGD, Adam, AdamW, Adagrad, Adadelta, RMSprop, LBFGS) and learning-rate
schedulers.

opt = gpunn.optim.AdamW(model.parameters(), lr=1e-3)
sched = gpunn.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
"""

from gpunn.optim import lr_scheduler
from gpunn.optim.adam import Adam, AdamW
from gpunn.optim.adaptive import Adadelta, Adagrad, RMSprop
from gpunn.optim.lbfgs import LBFGS
from gpunn.optim.optimizer import Optimizer
from gpunn.optim.sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "Adagrad", "Adadelta", "RMSprop", "LBFGS", "lr_scheduler"]
