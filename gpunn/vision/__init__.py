"""``gpunn.vision``: torchvision's names for what an image script needs first, ``datasets.MNIST`` /
``datasets.FashionMNIST`` (with ``download=True``), ``transforms``, and ``models`` (the ResNet family,
``models.resnet18`` ... ``models.resnet152``, without downloadable pretrained weights).

>>> from gpunn.vision import datasets, models, transforms     # for: from torchvision import datasets, ...
"""

from gpunn.vision import datasets, models, transforms

__all__ = ["datasets", "models", "transforms"]
