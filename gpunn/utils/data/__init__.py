"""``gpunn.utils.data``: PyTorch's ``torch.utils.data`` names. One home for each: the classes live in
``gpunn.data`` (``gpunn.data.DataLoader`` is this ``DataLoader``, fast array path included); this package
only gives them PyTorch's import paths.

>>> from gpunn.utils.data import DataLoader, TensorDataset, random_split
>>> train, val = random_split(TensorDataset(X, y), [0.8, 0.2])
>>> loader = DataLoader(train, batch_size=32, shuffle=True)
"""

from gpunn.data.collate import default_collate, default_convert
from gpunn.data.dataset import (
    ChainDataset,
    ConcatDataset,
    Dataset,
    IterableDataset,
    Subset,
    TensorDataset,
    random_split,
)
from gpunn.data.loader import DataLoader
from gpunn.data.sampler import (
    BatchSampler,
    DistributedSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)
from gpunn.utils.data import distributed

__all__ = [
    "DataLoader",
    "Dataset",
    "IterableDataset",
    "TensorDataset",
    "Subset",
    "ConcatDataset",
    "ChainDataset",
    "random_split",
    "default_collate",
    "default_convert",
    "Sampler",
    "SequentialSampler",
    "RandomSampler",
    "SubsetRandomSampler",
    "WeightedRandomSampler",
    "BatchSampler",
    "DistributedSampler",
    "distributed",
]
