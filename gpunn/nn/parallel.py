"""``torch.nn.parallel``'s name for data parallel: ``from gpunn.nn.parallel import DistributedDataParallel``.

It lives in ``gpunn.distributed`` (above the modules); this name loads it on first use."""


def __getattr__(name):
    if name in ("DistributedDataParallel", "DDP"):
        from gpunn.distributed.ddp import DistributedDataParallel

        return DistributedDataParallel
    raise AttributeError(f"module 'gpunn.nn.parallel' has no attribute {name!r}")
