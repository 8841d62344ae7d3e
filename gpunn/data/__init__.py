"""Data: ready-made data sets, ``DataLoader``, per-batch transforms, splits and k-fold indices.

>>> from gpunn.data import load_mnist_sample, DataLoader, transforms
>>> ds = load_mnist_sample(seed=0)
>>> train = DataLoader(ds.train, batch_size=64, shuffle=True,
...                    transform=transforms.RandomShift(2, image_shape=(28, 28)))
>>> test = DataLoader(ds.test, batch_size=256)

gpunn.data sits below gpunn.train and never imports it (k-fold training is ``gpunn.train.cross_validate``).
"""

from gpunn.data import transforms
from gpunn.data.collate import default_collate
from gpunn.data.dataset import ConcatDataset, Dataset, IterableDataset, Subset, TensorDataset, random_split
from gpunn.data.datasets import (
    DatasetSplit,
    load_digits,
    load_mnist,
    load_mnist_sample,
    read_idx,
    write_idx,
)
from gpunn.data.loader import DataLoader
from gpunn.data.sampler import (
    BatchSampler,
    DistributedSampler,
    Generator,
    RandomSampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)
from gpunn.data.split import KFold, StratifiedKFold, train_test_split, train_val_test_split

__all__ = [
    "DatasetSplit",
    "load_digits",
    "load_mnist",
    "load_mnist_sample",
    "read_idx",
    "write_idx",
    "DataLoader",
    "TensorDataset",
    "DistributedSampler",
    "Dataset",
    "IterableDataset",
    "Subset",
    "ConcatDataset",
    "random_split",
    "default_collate",
    "Generator",
    "SequentialSampler",
    "RandomSampler",
    "SubsetRandomSampler",
    "WeightedRandomSampler",
    "BatchSampler",
    "transforms",
    "train_test_split",
    "train_val_test_split",
    "KFold",
    "StratifiedKFold",
]
