"""``gpunn.vision``: torchvision's names for what an image script needs first, ``datasets.MNIST`` /
``datasets.FashionMNIST`` (with ``download=True``) and ``transforms``.

>>> from gpunn.vision import datasets, transforms     # for: from torchvision import datasets, transforms
"""

from gpunn.vision import datasets, transforms

__all__ = ["datasets", "transforms"]
