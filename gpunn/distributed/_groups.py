"""Process groups: which processes train together, and the collectives over backend arrays.

Three kinds, one interface (every collective works in place on a backend array):

- ``LocalGroup``: a world of one (no launcher): every collective is the identity.
- ``MPIGroup``: MPI through mpi4py (``pip install gpunn[mpi]``), on host arrays; a cupy array goes
  through a host copy (use ``nccl`` on GPUs). A watchdog thread aborts the job when one collective
  waits longer than ``timeout`` (a peer hung), and an uncaught exception on any rank aborts the job
  (``install_abort_on_error``): a rank never waits forever for one that died.
- ``NCCLGroup``: NCCL through CuPy on device arrays (one GPU per local rank), its unique id broadcast
  over MPI; host arrays (metrics, objects) go over that MPI group.

mpi4py and CuPy are imported only when such a group is made, so ``import gpunn`` never loads them.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np


class ReduceOp:
    """Reduction operators of ``all_reduce`` (PyTorch's names)."""

    SUM = "sum"
    PRODUCT = "product"
    MIN = "min"
    MAX = "max"
    AVG = "avg"


_OPS = (ReduceOp.SUM, ReduceOp.PRODUCT, ReduceOp.MIN, ReduceOp.MAX, ReduceOp.AVG)


def check_op(op, dtype) -> str:
    name = getattr(op, "name", op)  # also accept an enum-like object with .name
    name = str(name).lower()
    if name == "prod":
        name = ReduceOp.PRODUCT
    if name not in _OPS:
        raise ValueError(f"all_reduce: unsupported op {op!r}; use ReduceOp.SUM, PRODUCT, MIN, MAX or AVG")
    if name == ReduceOp.AVG and np.dtype(dtype).kind != "f":
        raise TypeError(f"all_reduce: ReduceOp.AVG needs a floating-point tensor, got dtype {dtype}")
    return name


def launcher_env() -> dict | None:
    """Rank, world size and node-local rank from the MPI launcher's environment, or None without one.

    MPICH/Intel MPI (hydra) set PMI_RANK/PMI_SIZE and MPI_LOCALRANKID; Open MPI sets OMPI_COMM_WORLD_*."""
    env = os.environ
    for rank_key, size_key, local_key, local_size_key in (
        ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
        ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
    ):
        if rank_key in env and size_key in env:
            try:
                rank, size = int(env[rank_key]), int(env[size_key])
                local = int(env.get(local_key, rank))
                local_size = int(env.get(local_size_key, size))
            except ValueError:
                raise RuntimeError(
                    f"the launcher's environment is malformed: {rank_key}={env[rank_key]!r}, "
                    f"{size_key}={env[size_key]!r}"
                ) from None
            return {"rank": rank, "size": size, "local_rank": local, "local_size": local_size}
    return None


class ProcessGroup:
    """The interface: ``rank``, ``size``, ``local_rank`` and in-place collectives on backend arrays."""

    name = "?"
    rank, size, local_rank = 0, 1, 0

    def all_reduce(self, arr, op: str = ReduceOp.SUM) -> None:
        raise NotImplementedError

    def broadcast(self, arr, src: int) -> None:
        raise NotImplementedError

    def all_gather(self, arr):
        """An array of shape ``(size, *arr.shape)`` on arr's array module: row ``r`` is rank r's ``arr``."""
        raise NotImplementedError

    def all_gather_object(self, obj) -> list:
        raise NotImplementedError

    def broadcast_object(self, obj, src: int):
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError

    def destroy(self) -> None:
        pass


class LocalGroup(ProcessGroup):
    """A world of one: nothing to exchange."""

    name = "local"

    def all_reduce(self, arr, op=ReduceOp.SUM) -> None:
        check_op(op, arr.dtype)

    def broadcast(self, arr, src: int) -> None:
        pass

    def all_gather(self, arr):
        return arr.reshape(1, *arr.shape).copy()

    def all_gather_object(self, obj) -> list:
        return [obj]

    def broadcast_object(self, obj, src: int):
        return obj

    def barrier(self) -> None:
        pass


# ------------------------------------------------------------------------------------------------
# MPI
# ------------------------------------------------------------------------------------------------
def import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise RuntimeError(
            "gpunn.distributed needs mpi4py for more than one process: pip install 'gpunn[mpi]' "
            f"(brings mpi4py and the mpich wheel, whose mpiexec launches the ranks) ({exc})"
        ) from None
    return MPI


class MPIGroup(ProcessGroup):
    """MPI_COMM_WORLD through mpi4py. Host (NumPy) arrays go straight to MPI; other arrays via a host copy."""

    name = "mpi"

    def __init__(self, env: dict | None, timeout: float) -> None:
        MPI = import_mpi()
        self.MPI, self.comm = MPI, MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.local_rank = env["local_rank"] if env else 0
        if env and (env["rank"], env["size"]) != (self.rank, self.size):
            raise RuntimeError(
                f"MPI reports rank {self.rank} of {self.size} but the launcher's environment says "
                f"rank {env['rank']} of {env['size']}: was mpi4py built against another MPI than "
                "the mpiexec that launched this process?"
            )
        self._ops = {
            ReduceOp.SUM: MPI.SUM,
            ReduceOp.AVG: MPI.SUM,
            ReduceOp.PRODUCT: MPI.PROD,
            ReduceOp.MIN: MPI.MIN,
            ReduceOp.MAX: MPI.MAX,
        }
        self.timeout = float(timeout)
        self._inflight: tuple | None = None  # (what, start time) of the blocking call in progress
        self._alive = True
        if self.size > 1 and self.timeout > 0:
            threading.Thread(target=self._watchdog, name="gpunn-dist-watchdog", daemon=True).start()

    # -- bounded waiting -------------------------------------------------------------------------
    def _watchdog(self) -> None:
        poll = min(1.0, self.timeout / 10)
        while self._alive:
            time.sleep(poll)
            current = self._inflight
            if current is not None and time.monotonic() - current[1] > self.timeout:
                abort_job(
                    f"{current[0]} did not complete within {self.timeout:g} s: another rank died, hangs, "
                    "or did not call the same collective (set the limit with init_process_group(timeout=) "
                    "or GPUNN_DIST_TIMEOUT)",
                    self,
                )

    def _call(self, what: str, fn, *args, **kwargs):
        self._inflight = (what, time.monotonic())
        try:
            return fn(*args, **kwargs)
        finally:
            self._inflight = None

    # -- collectives -----------------------------------------------------------------------------
    def _host(self, arr):
        """(host array MPI can use in place, copy-back function or None)."""
        if isinstance(arr, np.ndarray) and arr.flags.c_contiguous:
            return arr, None
        host = np.ascontiguousarray(arr.get() if hasattr(arr, "get") else arr)

        def back():
            arr[...] = host if isinstance(arr, np.ndarray) else _to_like(host, arr)

        return host, back

    def all_reduce(self, arr, op=ReduceOp.SUM) -> None:
        op = check_op(op, arr.dtype)
        host, back = self._host(arr)
        try:
            self._call("all_reduce", self.comm.Allreduce, self.MPI.IN_PLACE, host, op=self._ops[op])
        except (KeyError, TypeError, ValueError) as exc:
            raise TypeError(f"all_reduce: MPI can't reduce dtype {arr.dtype} ({exc})") from None
        if op == ReduceOp.AVG:
            host /= self.size
        if back is not None:
            back()

    def broadcast(self, arr, src: int) -> None:
        host, back = self._host(arr)
        self._call("broadcast", self.comm.Bcast, host, root=src)
        if back is not None:
            back()

    def all_gather(self, arr):
        host, _ = self._host(arr)
        out = np.empty((self.size, *host.shape), host.dtype)
        self._call("all_gather", self.comm.Allgather, host, out)
        return out if isinstance(arr, np.ndarray) else _to_like(out, arr)

    def all_gather_object(self, obj) -> list:
        return self._call("all_gather_object", self.comm.allgather, obj)

    def broadcast_object(self, obj, src: int):
        return self._call("broadcast_object", self.comm.bcast, obj, root=src)

    def barrier(self) -> None:
        self._call("barrier", self.comm.Barrier)

    def destroy(self) -> None:
        self._alive = False


def _to_like(host: np.ndarray, like):
    """``host`` on ``like``'s array module (cupy.asarray for a device array)."""
    import importlib

    xp = importlib.import_module(type(like).__module__.split(".")[0])
    return xp.asarray(host)


def abort_job(message: str, group: MPIGroup) -> None:
    """Print ``message`` for this rank and end every rank of the job (MPI_Abort): nobody waits forever."""
    try:
        sys.stderr.write(f"gpunn.distributed: rank {group.rank}: {message}; aborting all {group.size} ranks\n")
        sys.stderr.flush()
        time.sleep(0.5)  # let the launcher forward what this rank printed before MPI_Abort ends the job
    finally:
        try:
            group.comm.Abort(1)
        finally:
            os._exit(1)


class CollectiveError(RuntimeError):
    """An error every rank raises at the same point (e.g. the models differ): the ranks exit one by one,
    each with the message, instead of aborting the job from the first one."""


def install_abort_on_error(group: MPIGroup) -> None:
    """An uncaught exception on one rank aborts the whole job (after printing it), so the other ranks,
    perhaps blocked in a collective, end too. A ``CollectiveError`` (raised on every rank alike) exits
    normally so every rank prints it."""
    previous = sys.excepthook

    def hook(kind, value, tb):
        previous(kind, value, tb)
        if issubclass(kind, CollectiveError) or issubclass(kind, KeyboardInterrupt):
            return
        sys.stdout.flush()
        abort_job(f"uncaught {kind.__name__} (above)", group)

    sys.excepthook = hook


# ------------------------------------------------------------------------------------------------
# NCCL
# ------------------------------------------------------------------------------------------------
# ncclDataType_t and ncclRedOp_t values from nccl.h (a stable ABI)
_NCCL_DTYPES = {
    "int8": 0,
    "uint8": 1,
    "int32": 2,
    "uint32": 3,
    "int64": 4,
    "uint64": 5,
    "float16": 6,
    "float32": 7,
    "float64": 8,
}
_NCCL_OPS = {ReduceOp.SUM: 0, ReduceOp.AVG: 0, ReduceOp.PRODUCT: 1, ReduceOp.MAX: 2, ReduceOp.MIN: 3}


class NCCLGroup(ProcessGroup):
    """NCCL over CuPy: collectives on device arrays on the current stream (no host copies); this rank
    uses GPU ``local_rank``. Host arrays and objects go over MPI (or nowhere, in a world of one)."""

    name = "nccl"

    def __init__(self, env: dict | None, timeout: float) -> None:
        try:
            import cupy
            from cupy.cuda import nccl
        except Exception as exc:
            raise RuntimeError(f"backend 'nccl' needs CuPy built with NCCL (pip install 'gpunn[gpu]'): {exc}") from None
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:
            count, why = 0, f" ({type(exc).__name__}: {exc})"
        else:
            why = ""
        if count == 0:
            raise RuntimeError(
                f"backend 'nccl' needs a CUDA GPU and this process sees none{why}; use backend='mpi' to train on CPUs"
            )
        self.host = MPIGroup(env, timeout) if env and env["size"] > 1 else LocalGroup()
        self.rank, self.size = self.host.rank, self.host.size
        self.local_rank = env["local_rank"] if env else 0
        local_size = env["local_size"] if env else 1
        if local_size <= count:
            device = self.local_rank
        elif count == 1 and os.environ.get("CUDA_VISIBLE_DEVICES"):
            device = 0  # the launcher gave each rank its own GPU
        else:
            raise RuntimeError(
                f"backend 'nccl': {local_size} ranks on this node but only {count} GPU(s); NCCL "
                "needs one GPU per rank (launch at most that many ranks per node)"
            )
        self.cupy, self.nccl = cupy, nccl
        try:
            self.device = cupy.cuda.Device(device)
            self.device.use()
            uid = nccl.get_unique_id() if self.rank == 0 else None
            uid = self.host.broadcast_object(uid, 0)
            self.comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        except Exception as exc:
            if isinstance(self.host, MPIGroup):  # the other ranks may be waiting in NCCL's setup
                abort_job(f"NCCL setup failed on GPU {device}: {type(exc).__name__}: {exc}", self.host)
            raise

    def _device_array(self, arr, what: str):
        if not isinstance(arr, self.cupy.ndarray):
            return None
        if not arr.flags.c_contiguous:
            raise ValueError(f"{what}: NCCL needs a contiguous tensor")
        if arr.dtype.name not in _NCCL_DTYPES:
            raise TypeError(f"{what}: NCCL can't carry dtype {arr.dtype}")
        if arr.device.id != self.device.id:
            raise RuntimeError(
                f"{what}: the tensor is on GPU {arr.device.id}, this rank's NCCL GPU is {self.device.id}"
            )
        return arr

    def _stream(self) -> int:
        return self.cupy.cuda.get_current_stream().ptr

    def all_reduce(self, arr, op=ReduceOp.SUM) -> None:
        op = check_op(op, arr.dtype)
        dev = self._device_array(arr, "all_reduce")
        if dev is None:
            self.host.all_reduce(arr, op)
            return
        ptr = dev.data.ptr
        self.comm.allReduce(ptr, ptr, dev.size, _NCCL_DTYPES[dev.dtype.name], _NCCL_OPS[op], self._stream())
        if op == ReduceOp.AVG and self.size > 1:
            dev /= self.size

    def broadcast(self, arr, src: int) -> None:
        dev = self._device_array(arr, "broadcast")
        if dev is None:
            self.host.broadcast(arr, src)
            return
        self.comm.bcast(dev.data.ptr, dev.size, _NCCL_DTYPES[dev.dtype.name], src, self._stream())

    def all_gather(self, arr):
        dev = self._device_array(arr, "all_gather")
        if dev is None:
            return self.host.all_gather(arr)
        out = self.cupy.empty((self.size, *dev.shape), dev.dtype)
        self.comm.allGather(dev.data.ptr, out.data.ptr, dev.size, _NCCL_DTYPES[dev.dtype.name], self._stream())
        return out

    def all_gather_object(self, obj) -> list:
        return self.host.all_gather_object(obj)

    def broadcast_object(self, obj, src: int):
        return self.host.broadcast_object(obj, src)

    def barrier(self) -> None:
        self.cupy.cuda.get_current_stream().synchronize()
        self.host.barrier()

    def destroy(self) -> None:
        self.comm.destroy()
        self.host.destroy()
