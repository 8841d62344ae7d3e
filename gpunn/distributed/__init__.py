"""Data-parallel training across processes: ``torch.distributed``'s names over MPI (CPU) and NCCL (GPU).

Launch N copies of a script with ``mpiexec -n N python train.py`` (``pip install gpunn[mpi]`` brings
mpi4py and the mpich wheel's ``mpiexec``); without a launcher a script is a world of one::

    import gpunn.distributed as dist
    from gpunn.distributed import DistributedDataParallel as DDP, DistributedSampler

    dist.init_process_group("auto")                 # "mpi" on CPUs, "nccl" on GPUs
    model = DDP(build_model())                       # rank 0's weights everywhere
    opt = optim.SGD(model.parameters(), lr=0.1)      # unchanged
    sampler = DistributedSampler((X, y), shuffle=True, seed=0)
    loader = DataLoader((X, y), batch_size=B // dist.get_world_size(), sampler=sampler)
    for epoch in range(E):
        sampler.set_epoch(epoch)
        for xb, yb in loader:
            opt.zero_grad(); loss_fn(model(xb), yb).backward(); opt.step()   # grads averaged in backward

Collectives work in place on Tensors. A rank that raises an uncaught exception aborts the whole job; a
collective that waits longer than ``timeout`` (default 1800 s, ``GPUNN_DIST_TIMEOUT``) aborts it too.
"""

from __future__ import annotations

import importlib.util
import os
from datetime import timedelta

from gpunn.distributed._groups import CollectiveError, LocalGroup, ProcessGroup, ReduceOp, launcher_env

__all__ = [
    "init_process_group",
    "destroy_process_group",
    "is_initialized",
    "is_available",
    "is_mpi_available",
    "is_nccl_available",
    "get_rank",
    "get_world_size",
    "get_node_local_rank",
    "get_backend",
    "barrier",
    "all_reduce",
    "broadcast",
    "all_gather",
    "all_gather_object",
    "broadcast_object_list",
    "ReduceOp",
    "DistributedDataParallel",
    "DistributedSampler",
    "CollectiveError",
]

_group: ProcessGroup | None = None
_BACKENDS = ("auto", "mpi", "nccl", "gloo")


def is_available() -> bool:
    return True


def is_mpi_available() -> bool:
    return importlib.util.find_spec("mpi4py") is not None


def is_nccl_available() -> bool:
    return importlib.util.find_spec("cupy") is not None


def is_initialized() -> bool:
    return _group is not None


def _default_timeout(timeout) -> float:
    if timeout is None:
        timeout = float(os.environ.get("GPUNN_DIST_TIMEOUT", 1800))
    if isinstance(timeout, timedelta):
        timeout = timeout.total_seconds()
    if not timeout > 0:
        raise ValueError(f"init_process_group: timeout must be positive, got {timeout!r}")
    return float(timeout)


def init_process_group(
    backend: str | None = "auto",
    init_method: str | None = None,
    timeout=None,
    world_size: int = -1,
    rank: int = -1,
    **unsupported,
) -> None:
    """Join the processes the launcher started (``mpiexec -n N``); without a launcher, a world of one.

    ``backend``: ``"mpi"`` (CPU arrays; ``"gloo"`` is taken as this), ``"nccl"`` (GPU arrays through
    CuPy, one GPU per local rank; a world of one works on one GPU), or ``"auto"``/None: nccl when the
    current gpunn backend is cupy, else mpi. ``world_size``/``rank``, if given, must agree with the
    launcher. ``timeout`` (seconds or timedelta): how long one collective may wait before the job is
    aborted. PyTorch's rendezvous (``init_method`` other than ``env://``, ``store``) is not used: the MPI
    launcher is the rendezvous."""
    global _group
    if _group is not None:
        raise RuntimeError("trying to initialize the default process group twice!")
    bad = sorted(
        k for k, v in unsupported.items() if v is not None and k not in ("group_name", "pg_options", "device_id")
    )
    if bad or (init_method not in (None, "env://")) or unsupported.get("store") is not None:
        what = ", ".join(bad) or f"init_method={init_method!r}"
        raise ValueError(
            f"init_process_group: {what} is not supported: gpunn.distributed takes rank and world size "
            "from the MPI launcher; start the script with mpiexec -n N"
        )
    name = "auto" if backend is None else str(backend).lower()
    if name not in _BACKENDS:
        raise ValueError(f"init_process_group: unknown backend {backend!r}; choose from 'mpi', 'nccl', 'auto'")
    timeout = _default_timeout(timeout)
    env = launcher_env()
    if env is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RuntimeError(
            "init_process_group: WORLD_SIZE > 1 but no MPI launcher environment: gpunn.distributed "
            "runs over MPI, so start the ranks with mpiexec -n N (not torchrun)"
        )
    for arg, key in ((world_size, "size"), (rank, "rank")):
        if arg is not None and arg >= 0 and arg != (env[key] if env else (1 if key == "size" else 0)):
            have = env[key] if env else (1 if key == "size" else 0)
            raise ValueError(
                f"init_process_group: {'world_size' if key == 'size' else 'rank'}={arg} but the "
                f"launcher started this process as {key} {have}"
            )
    if name == "auto":
        from gpunn.backend import get_backend

        name = "nccl" if get_backend().name == "cupy" else "mpi"
    from gpunn.distributed import _groups

    if name == "nccl":
        group = _groups.NCCLGroup(env, timeout)
    elif env is None or env["size"] == 1:
        group = LocalGroup()
    else:
        group = _groups.MPIGroup(env, timeout)
    host = getattr(group, "host", group)
    if isinstance(host, _groups.MPIGroup):
        _groups.install_abort_on_error(host)
    group.backend_name = "nccl" if name == "nccl" else "mpi"
    _group = group


def destroy_process_group(group=None) -> None:
    """Leave the process group (a later ``init_process_group`` may start a new one)."""
    global _group
    if _group is not None:
        _group.destroy()
    _group = None


def _default(group=None) -> ProcessGroup:
    if group is not None and group is not _group:
        raise ValueError("gpunn.distributed has one process group (the default, WORLD); pass group=None")
    if _group is None:
        raise ValueError("Default process group has not been initialized, please make sure to call init_process_group.")
    return _group


def get_rank(group=None) -> int:
    return _default(group).rank


def get_world_size(group=None) -> int:
    return _default(group).size


def get_node_local_rank(fallback_rank: int | None = None) -> int:
    """This process's rank among those on its machine (which GPU it uses under nccl)."""
    if _group is not None:
        return _group.local_rank
    env = launcher_env()
    if env is not None:
        return env["local_rank"]
    if fallback_rank is not None:
        return int(fallback_rank)
    raise RuntimeError("get_node_local_rank: no launcher environment and no process group")


def get_backend(group=None) -> str:
    return _default(group).backend_name


def _data(tensor, what: str):
    from gpunn.tensor import Tensor

    if not isinstance(tensor, Tensor):
        raise TypeError(f"{what}: expected a gpunn Tensor, got {type(tensor).__name__}")
    return tensor._data


class _Work:
    """What ``async_op=True`` returns: gpunn's collectives have finished when they return."""

    def wait(self, timeout=None) -> bool:
        return True

    def is_completed(self) -> bool:
        return True


def barrier(group=None, async_op: bool = False, device_ids=None):
    _default(group).barrier()
    return _Work() if async_op else None


def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op: bool = False):
    """Reduce ``tensor`` across ranks, in place: afterwards every rank holds the same result."""
    _default(group).all_reduce(_data(tensor, "all_reduce"), op)
    return _Work() if async_op else None


def broadcast(tensor, src: int, group=None, async_op: bool = False):
    """Overwrite ``tensor`` on every rank with rank ``src``'s ``tensor`` (same shape and dtype everywhere)."""
    g = _default(group)
    if not 0 <= int(src) < g.size:
        raise ValueError(f"broadcast: src={src} is not a rank of this world of {g.size}")
    g.broadcast(_data(tensor, "broadcast"), int(src))
    return _Work() if async_op else None


def all_gather(tensor_list: list, tensor, group=None, async_op: bool = False):
    """Fill ``tensor_list[r]`` (in place) with rank r's ``tensor``; every rank passes the same shape."""
    g = _default(group)
    data = _data(tensor, "all_gather")
    if not isinstance(tensor_list, list) or len(tensor_list) != g.size:
        n = len(tensor_list) if isinstance(tensor_list, list) else type(tensor_list).__name__
        raise ValueError(f"all_gather: tensor_list must be a list of world_size={g.size} tensors, got {n}")
    for r, t in enumerate(tensor_list):
        out = _data(t, "all_gather")
        if tuple(out.shape) != tuple(data.shape) or out.dtype != data.dtype:
            raise ValueError(
                f"all_gather: tensor_list[{r}] has shape {tuple(out.shape)} and dtype {out.dtype}, "
                f"the input has {tuple(data.shape)} and {data.dtype}"
            )
    shapes = g.all_gather_object((tuple(data.shape), str(data.dtype)))
    if len(set(shapes)) > 1:
        raise CollectiveError(f"all_gather: the ranks passed different tensors (shape, dtype by rank: {shapes})")
    gathered = g.all_gather(data)
    for r, t in enumerate(tensor_list):
        t._data[...] = gathered[r]
    return _Work() if async_op else None


def all_gather_object(object_list: list, obj, group=None) -> None:
    """``object_list[r]`` = rank r's ``obj`` (any picklable object)."""
    g = _default(group)
    if not isinstance(object_list, list) or len(object_list) != g.size:
        raise ValueError(f"all_gather_object: object_list must be a list of world_size={g.size} entries")
    object_list[:] = g.all_gather_object(obj)


def broadcast_object_list(object_list: list, src: int = 0, group=None, device=None) -> None:
    """Replace ``object_list``'s entries on every rank with rank ``src``'s (same length everywhere)."""
    g = _default(group)
    object_list[:] = g.broadcast_object(list(object_list), int(src))


def __getattr__(name):
    # the heavier parts load on first use
    if name in ("DistributedDataParallel", "DDP"):
        from gpunn.distributed.ddp import DistributedDataParallel

        return DistributedDataParallel
    if name == "DistributedSampler":
        from gpunn.data.sampler import DistributedSampler

        return DistributedSampler
    raise AttributeError(f"module 'gpunn.distributed' has no attribute {name!r}")
