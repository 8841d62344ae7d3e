"""What ``fit()`` and ``gpunn train`` do differently on N ranks, in one place (they call it in a few lines).

- every rank sees the same batch loss (the mean over ranks), so NaN checks, early stopping and the LR
  schedule decide alike everywhere and no rank leaves the others waiting in a collective;
- epoch metrics (``loss``, ``accuracy``, ``val_*``) are the mean over ranks;
- only rank 0 prints, shows progress and runs the callbacks that write files (``rank_zero_only``);
- a ``DistributedSampler`` in a loader gets ``set_epoch`` at every epoch, so a resumed run replays the
  same order;
- SIGINT/SIGTERM (which mpiexec forwards to every rank) only raise a flag (fit's ``StopRequests``); the
  ranks agree on it with the next loss they average and all stop at the same batch (a second signal
  interrupts at once).
In a world of one (no process group) everything here is the identity.
"""

from __future__ import annotations

import signal

import numpy as np

# logged values that are not averaged across ranks
_LOCAL_KEYS = ("epoch", "lr", "time")


class FitSync:
    """The identity: a world of one."""

    rank, size = 0, 1
    agrees_on_stop = False  # True: a stop request is acted on only once every rank knows of it
    requests = None  # fit's StopRequests (set by bind)

    def bind(self, requests) -> None:
        self.requests = requests

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def verbose(self, verbose: int) -> int:
        return verbose if self.is_main else 0

    def callbacks(self, callbacks: list) -> list:
        """The callbacks this rank runs: on ranks other than 0, none that write files or print."""
        if self.is_main:
            return list(callbacks)
        return [c for c in callbacks if not getattr(c, "rank_zero_only", False)]

    def epoch_begin(self, loaders, epoch: int) -> None:
        """``sampler.set_epoch(epoch - 1)`` for loaders with a DistributedSampler (fit counts from 1)."""
        for loader in loaders:
            sampler = getattr(loader, "sampler", None)
            if sampler is not None and hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch - 1)

    def batch_loss(self, value: float) -> float:
        return value

    def epoch_logs(self, logs: dict) -> dict:
        return logs


class _Ranks(FitSync):
    """N > 1 ranks: host-side scalars averaged over the process group."""

    agrees_on_stop = True

    def __init__(self, group) -> None:
        self.group, self.rank, self.size = group, group.rank, group.size

    def epoch_begin(self, loaders, epoch: int) -> None:
        super().epoch_begin(loaders, epoch)
        batches = len(loaders[0]) if loaders else 0
        counts = self.group.all_gather_object(batches)
        if len(set(counts)) > 1:
            from gpunn.distributed._groups import CollectiveError

            raise CollectiveError(
                f"fit(): the ranks have different numbers of training batches per epoch (by rank: "
                f"{counts}); each step is a collective, so every rank needs the same number: "
                "give each a DistributedSampler of the same data set"
            )

    def _agree(self, values: list) -> np.ndarray:
        """Sum ``values`` and the stop requests over ranks; raise KeyboardInterrupt on every rank alike."""
        requested = self.requests is not None and self.requests.signum is not None
        buf = np.array([*values, float(requested)], dtype=np.float64)
        self.group.all_reduce(buf, "sum")
        if buf[-1] > 0:
            if self.requests is not None and self.requests.signum is None:
                self.requests.signum = signal.SIGINT  # another rank was asked to stop
            raise KeyboardInterrupt
        return buf[:-1]

    def batch_loss(self, value: float) -> float:
        return float(self._agree([value])[0]) / self.size

    def epoch_logs(self, logs: dict) -> dict:
        keys = sorted(k for k, v in logs.items() if k not in _LOCAL_KEYS and isinstance(v, (int, float)))
        if self.group.all_gather_object(keys) != [keys] * self.size:
            raise RuntimeError(f"fit(): the ranks logged different metrics (rank {self.rank}: {keys})")
        means = self._agree([float(logs[k]) for k in keys]) / self.size
        return {**logs, **dict(zip(keys, means.tolist()))}


def fit_sync() -> FitSync:
    """The ``FitSync`` for this process: averaging over ranks when a process group of N > 1 is running."""
    from gpunn import distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        return _Ranks(dist._default())
    return FitSync()


def launched_ranks() -> int:
    """How many ranks the MPI launcher started (1 without one)."""
    from gpunn.distributed._groups import launcher_env

    env = launcher_env()
    return env["size"] if env else 1


class World:
    """The ranks ``gpunn train`` runs on: ``wrap`` the model, make the training ``loader``, ``is_main``."""

    def __init__(self, rank: int = 0, size: int = 1, backend: str = "") -> None:
        self.rank, self.size, self.backend = rank, size, backend

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model):
        """``DistributedDataParallel(model)`` on N ranks, the model itself on one."""
        if self.size == 1:
            return model
        from gpunn.distributed.ddp import DistributedDataParallel

        return DistributedDataParallel(model)

    def split_rng(self, seed: int) -> None:
        """After the shared initialization: each rank its own random stream (dropout masks, augmentation),
        so the ranks' sub-batches are not masked alike. Rank r continues from seed (seed, r)."""
        if self.size > 1:
            import gpunn

            gpunn.manual_seed(int(np.random.SeedSequence([seed, self.rank]).generate_state(1)[0]))

    def rng_states(self, backend) -> list | None:
        """Every rank's generator state (for the checkpoint rank 0 writes); None on one rank."""
        if self.size == 1:
            return None
        from gpunn import distributed as dist

        return dist._default().all_gather_object(backend.get_rng_state())

    def restore_rng(self, states, backend) -> bool:
        """Put this rank's saved generator state back; False when the checkpoint has none for this world."""
        if self.size == 1:
            return True
        if not isinstance(states, list) or len(states) != self.size:
            return False
        backend.set_rng_state(states[self.rank])
        return True

    def loader(self, arrays: tuple, batch_size: int, seed: int, transform=None):
        """The shuffled training loader for a global batch of ``batch_size``: on N ranks each takes
        ``batch_size / N`` samples of its ``DistributedSampler`` shard, which together are the batches one
        process draws with ``DataLoader(shuffle=True, seed=seed)``."""
        from gpunn.data import DataLoader, DistributedSampler

        if self.size == 1:
            return DataLoader(arrays, batch_size=batch_size, shuffle=True, seed=seed, transform=transform)
        if batch_size % self.size:
            raise ValueError(f"the global batch size {batch_size} must be divisible by the {self.size} ranks")
        sampler = DistributedSampler(arrays, num_replicas=self.size, rank=self.rank, shuffle=True, seed=seed)
        return DataLoader(arrays, batch_size=batch_size // self.size, sampler=sampler, seed=seed, transform=transform)


def cli_world(array_backend, global_batch: int) -> World:
    """Join the other ranks when started by ``mpiexec -n N`` (nccl on the cupy backend, else mpi);
    ``global_batch`` must split evenly (checked before joining: every rank says so and exits)."""
    n = launched_ranks()
    if n == 1:
        return World()
    if global_batch % n:
        raise ValueError(f"--batch-size {global_batch} is the global batch: it must be divisible by the {n} ranks")
    from gpunn import distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if array_backend.name == "cupy" else "mpi")
    return World(dist.get_rank(), dist.get_world_size(), dist.get_backend())


def abort_other_ranks() -> None:
    """After an error was reported on this rank: end the whole job if ranks had joined (the others may
    wait in a collective for this one); nothing without a process group of N > 1."""
    from gpunn import distributed as dist
    from gpunn.distributed._groups import MPIGroup, abort_job

    if dist.is_initialized() and dist.get_world_size() > 1:
        group = dist._default()
        host = getattr(group, "host", group)
        if isinstance(host, MPIGroup):
            abort_job("stopped by the error above", host)
