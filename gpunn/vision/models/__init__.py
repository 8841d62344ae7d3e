"""``gpunn.vision.models``: torchvision's model builders, so far the ResNet family (``resnet18`` ... ``resnet152``),
built as torchvision builds them: the same modules, names, registration order, state_dict keys and initialisation,
so a PyTorch checkpoint loads and ``list(model.children())`` surgery works unchanged.

Pretrained weights are not downloaded (gpunn has no network access here): ``weights=`` other than None, or
``pretrained=True``, raises. Load a checkpoint you have instead: ``model.load_state_dict(gpunn.load(path))``.

>>> from gpunn.vision import models            # for: from torchvision import models
>>> models.resnet18(num_classes=10).fc.in_features
512
"""

from gpunn.vision.models import resnet
from gpunn.vision.models.resnet import (
    BasicBlock,
    Bottleneck,
    ResNet,
    ResNet18_Weights,
    ResNet34_Weights,
    ResNet50_Weights,
    ResNet101_Weights,
    ResNet152_Weights,
    Weights,
    WeightsEnum,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
)

__all__ = [
    "resnet",
    "ResNet",
    "BasicBlock",
    "Bottleneck",
    "Weights",
    "WeightsEnum",
    "ResNet18_Weights",
    "ResNet34_Weights",
    "ResNet50_Weights",
    "ResNet101_Weights",
    "ResNet152_Weights",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
]
