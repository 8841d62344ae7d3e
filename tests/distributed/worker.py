"""What each rank runs in the multi-process tests: ``mpiexec -n N python tests/distributed/worker.py
SCENARIO OUTDIR``. ``training`` is shared with the single-process reference in test_ddp_mpi.py."""

from __future__ import annotations

import os
import sys
import time

import numpy as np

import gpunn
from gpunn import nn, optim
from gpunn.data import DataLoader

STEPS, GLOBAL_BATCH, FEATURES, CLASSES = 20, 8, 6, 4


def data(dtype):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((STEPS * GLOBAL_BATCH, FEATURES)).astype(dtype)
    y = rng.integers(0, CLASSES, STEPS * GLOBAL_BATCH)
    return X, y


def model(dtype, seed: int, hidden: int = 9):
    gpunn.manual_seed(seed)
    m = nn.Sequential(
        nn.Linear(FEATURES, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, CLASSES)
    )
    return m.double() if dtype == np.float64 else m


def make_optimizer(kind: str, params):
    params = list(params)
    if kind == "sgd":
        return optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3)
    if kind == "adam":
        return optim.Adam(params, lr=0.01)
    if kind == "adam-reversed":  # the optimizer's flat buffer in another order: DDP packs its buckets
        return optim.Adam(params[::-1], lr=0.01)
    raise ValueError(kind)


def training(net, opt, loader, steps: int = STEPS) -> None:
    """``steps`` plain PyTorch-style steps (mean cross-entropy of the batch)."""
    batches = iter(loader)
    for _ in range(steps):
        xb, yb = next(batches)
        opt.zero_grad()
        nn.functional.cross_entropy(net(xb), yb).backward()
        opt.step()


def params_of(m) -> dict:
    return {k: v.numpy().copy() for k, v in m.state_dict().items()}


# ------------------------------------------------------------------------------------------------
def equivalence(out: str) -> None:
    import gpunn.distributed as dist
    from gpunn.data import DistributedSampler
    from gpunn.distributed import DistributedDataParallel as DDP

    rank, world = dist.get_rank(), dist.get_world_size()
    results = {}
    for dtype in (np.float64, np.float32):
        X, y = data(dtype)
        for kind, cap in (("sgd", 25), ("adam", 25), ("sgd", 1e-4), ("adam-reversed", 25)):
            net = model(dtype, seed=100 + rank)  # different on each rank: the wrap broadcasts rank 0's
            ddp = DDP(net, bucket_cap_mb=cap)
            opt = make_optimizer(kind, ddp.parameters())
            sampler = DistributedSampler((X, y), shuffle=True, seed=3)
            training(ddp, opt, DataLoader((X, y), batch_size=GLOBAL_BATCH // world, sampler=sampler))
            tag = f"{np.dtype(dtype).name}/{kind}/{cap:g}"
            for k, v in params_of(net).items():
                results[f"{tag}/{k}"] = v
            if cap < 1:
                assert len(ddp._buckets) == 6, ddp._buckets  # one bucket per parameter

    # gradient accumulation: two micro-batches under no_sync, then one synced backward
    X, y = data(np.float64)
    net = model(np.float64, seed=100 + rank)
    ddp = DDP(net)
    opt = make_optimizer("sgd", ddp.parameters())
    per = GLOBAL_BATCH // world
    for step in range(3):
        opt.zero_grad()
        for micro in range(2):
            lo = (step * 2 + micro) * GLOBAL_BATCH + rank * per
            xb, yb = gpunn.tensor(X[lo : lo + per]), gpunn.tensor(y[lo : lo + per])
            loss = nn.functional.cross_entropy(ddp(xb), yb) / 2
            if micro == 0:
                with ddp.no_sync():
                    loss.backward()
            else:
                loss.backward()
        opt.step()
    for k, v in params_of(net).items():
        results[f"no_sync/{k}"] = v
    np.savez(os.path.join(out, f"rank{rank}.npz"), **results)


class Heads(nn.Module):
    """A trunk and three heads; ``forward(x, head)`` uses one head (the others get no gradient)."""

    def __init__(self):
        super().__init__()
        self.trunk, self.a, self.b, self.c = (
            nn.Linear(FEATURES, 9),
            nn.Linear(9, CLASSES),
            nn.Linear(9, CLASSES),
            nn.Linear(9, CLASSES),
        )

    def forward(self, x, head):
        return getattr(self, head)(self.trunk(x).tanh())


def heads(seed: int):
    gpunn.manual_seed(seed)
    return Heads().double()


def unused(out: str) -> None:
    """find_unused_parameters=True: rank 0 uses head a, rank 1 head b, nobody head c."""
    import gpunn.distributed as dist

    rank = dist.get_rank()
    X, y = data(np.float64)
    net = heads(100 + rank)
    ddp = dist.DistributedDataParallel(net, find_unused_parameters=True)
    opt = make_optimizer("sgd", ddp.parameters())
    half = GLOBAL_BATCH // 2
    for step in range(5):
        lo = step * GLOBAL_BATCH + rank * half
        opt.zero_grad()
        logits = ddp(gpunn.tensor(X[lo : lo + half]), "a" if rank == 0 else "b")
        nn.functional.cross_entropy(logits, gpunn.tensor(y[lo : lo + half])).backward()
        assert net.c.weight.grad is None  # used by no rank: left alone, so SGD skips it
        opt.step()
    np.savez(os.path.join(out, f"unused{rank}.npz"), **params_of(net))


def collectives(out: str) -> None:
    """The tensor API against values every rank can compute by itself."""
    import gpunn.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    base = np.arange(12, dtype=np.float64).reshape(3, 4)
    for op, expect in (
        (dist.ReduceOp.SUM, sum(base + r for r in range(world))),
        (dist.ReduceOp.AVG, sum(base + r for r in range(world)) / world),
        (dist.ReduceOp.MAX, base + world - 1),
        (dist.ReduceOp.MIN, base),
        (dist.ReduceOp.PRODUCT, np.prod([base + r for r in range(world)], axis=0)),
    ):
        t = gpunn.tensor(base + rank)
        dist.all_reduce(t, op=op)
        assert np.array_equal(t.numpy(), expect), (op, t.numpy(), expect)
    t = gpunn.tensor(np.arange(5, dtype=np.int64) * (rank + 1))
    dist.all_reduce(t)
    assert np.array_equal(t.numpy(), np.arange(5) * sum(range(1, world + 1)))
    t = gpunn.tensor(np.full((2, 3), float(rank), np.float32))
    dist.broadcast(t, src=world - 1)
    assert np.all(t.numpy() == world - 1)
    parts = [gpunn.zeros(2, 2) for _ in range(world)]
    dist.all_gather(parts, gpunn.full((2, 2), float(rank) + 0.5))
    assert [float(p.numpy()[0, 0]) for p in parts] == [r + 0.5 for r in range(world)]
    objs = [None] * world
    dist.all_gather_object(objs, {"rank": rank})
    assert objs == [{"rank": r} for r in range(world)]
    lst = [rank, "x"]
    dist.broadcast_object_list(lst, src=0)
    assert lst == [0, "x"]
    if dist.get_rank() == 0:
        print("collectives ok", flush=True)


def mismatch(out: str) -> None:
    import gpunn.distributed as dist

    hidden = 9 if dist.get_rank() == 0 else 10
    dist.DistributedDataParallel(model(np.float32, 0, hidden))
    print("UNREACHABLE: the wrap accepted different models", flush=True)


def dies(out: str) -> None:
    import gpunn.distributed as dist

    if dist.get_rank() == 1:
        time.sleep(0.5)
        raise ValueError("rank 1 fails on purpose")
    dist.barrier()  # rank 0 waits for a rank that will never come
    print("UNREACHABLE: barrier returned", flush=True)


def killed(out: str) -> None:
    import signal

    import gpunn.distributed as dist

    if dist.get_rank() == 1:
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)
    dist.barrier()
    print("UNREACHABLE: barrier returned", flush=True)


def hangs(out: str) -> None:
    import gpunn.distributed as dist

    if dist.get_rank() == 1:
        time.sleep(60)  # alive but never joins: only the timeout ends rank 0's wait
    dist.barrier()
    print("UNREACHABLE: barrier returned", flush=True)


def fitting(out: str) -> None:
    """fit() on two ranks; rank 0 alone gets a Ctrl-C in epoch 2: both ranks must stop at the same batch."""
    import signal

    import gpunn.distributed as dist
    from gpunn import train
    from gpunn.data import DistributedSampler

    rank, world = dist.get_rank(), dist.get_world_size()
    X, y = data(np.float64)
    net = dist.DistributedDataParallel(model(np.float64, seed=100 + rank))
    opt = make_optimizer("sgd", net.parameters())
    loader = DataLoader(
        (X, y), batch_size=GLOBAL_BATCH // world, sampler=DistributedSampler((X, y), shuffle=True, seed=3)
    )
    val = DataLoader((X[:40], y[:40]), batch_size=16, sampler=DistributedSampler((X[:40], y[:40]), shuffle=False))

    class CtrlCOnRankZero(train.Callback):
        def on_batch_end(self, batch, logs=None):
            if self.trainer.epoch == 2 and batch == 3 and rank == 0:
                os.kill(os.getpid(), signal.SIGINT)

    hist = train.fit(
        net,
        opt,
        nn.CrossEntropyLoss(),
        loader,
        val=val,
        epochs=3,
        callbacks=[CtrlCOnRankZero(), train.CSVLogger(os.path.join(out, f"log{rank}.csv"))],
    )
    rows = np.array([[r["loss"], r["accuracy"], r["val_loss"], r["val_accuracy"]] for r in hist.epochs])
    np.savez(os.path.join(out, f"fit{rank}.npz"), rows=rows, stop=str(hist.stop_reason), **params_of(net.module))


def uneven(out: str) -> None:
    """fit() with a different number of batches on each rank: one clear error everywhere, no hang."""
    import gpunn.distributed as dist
    from gpunn import train

    rank = dist.get_rank()
    X, y = data(np.float32)
    net = dist.DistributedDataParallel(model(np.float32, 0))
    n = 40 + 8 * rank
    train.fit(
        net,
        make_optimizer("sgd", net.parameters()),
        nn.CrossEntropyLoss(),
        DataLoader((X[:n], y[:n]), batch_size=8),
        epochs=1,
        verbose=0,
    )
    print("UNREACHABLE: fit accepted uneven ranks", flush=True)


SCENARIOS = {
    "equivalence": equivalence,
    "fit": fitting,
    "uneven": uneven,
    "unused": unused,
    "collectives": collectives,
    "mismatch": mismatch,
    "dies": dies,
    "killed": killed,
    "hangs": hangs,
}

if __name__ == "__main__":
    import gpunn.distributed as dist

    scenario, outdir = sys.argv[1], sys.argv[2]
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else None
    dist.init_process_group("mpi", timeout=timeout)
    SCENARIOS[scenario](outdir)
    dist.destroy_process_group()
