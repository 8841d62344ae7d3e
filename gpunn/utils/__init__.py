"""``gpunn.utils``: PyTorch's ``torch.utils`` names (``gpunn.utils.data``)."""

from gpunn.utils import data

__all__ = ["data"]
