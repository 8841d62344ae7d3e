"""``gpunn.utils.data.distributed.DistributedSampler``: PyTorch's import path for ``gpunn.data.DistributedSampler``."""

from gpunn.data.sampler import DistributedSampler

__all__ = ["DistributedSampler"]
