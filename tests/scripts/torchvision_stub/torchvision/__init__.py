"""A stand-in for torchvision (not installed here) so that the scripts' original text runs on real PyTorch
for the comparison in tests/scripts/test_scripts.py: ``datasets.MNIST`` reads the same IDX files through
gpunn.vision and hands PyTorch a ``torch.utils.data.TensorDataset`` of the transformed images; the
transforms (ToTensor, Normalize, Compose) are applied to the whole image array at once."""

import types

import numpy as np
import torch


class _Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


class _ToTensor:
    def __call__(self, x):  # uint8 (N, H, W) -> float32 (N, 1, H, W) in [0, 1]
        return torch.from_numpy(x[:, None].astype(np.float32) / np.float32(255.0))


class _Normalize:
    def __init__(self, mean, std):
        self.mean, self.std = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)

    def __call__(self, x):
        return (x - self.mean) / self.std


def _mnist(root, train=True, download=False, transform=None):
    from gpunn.vision import datasets as gdatasets

    ds = gdatasets.MNIST(root, train=train, download=download)
    images = transform(ds.data.numpy())
    return torch.utils.data.TensorDataset(images, torch.from_numpy(ds.targets.numpy()))


datasets = types.SimpleNamespace(MNIST=_mnist)
transforms = types.SimpleNamespace(Compose=_Compose, ToTensor=_ToTensor, Normalize=_Normalize)
