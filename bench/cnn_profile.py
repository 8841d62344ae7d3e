"""Where a CNN training step's time goes, per backend primitive: wall and CPU time.

    python -m bench.cnn_profile small          # build_model("cnn"): conv 16, pool, conv 32, pool, fc; batch 200, SGD
    python -m bench.cnn_profile mnist          # pytorch/examples' MNIST CNN (bench.targets._MnistNet); batch 64, Adam
    GPUNN_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python -m bench.cnn_profile small   # one core: CPU time per part
    python -m bench.cnn_profile small --backend cupy --top 25   # on a GPU; and the host's top 25 functions

On the cupy backend the device is synchronized around every timed primitive (so a part's wall time holds its
GPU time, and the step runs slower than unprofiled); ``--top N`` adds cProfile's N functions of most own time.

Times every call of the backend's primitives (conv2d, pool2d, linear_act, softmax CE, optimizer steps)
over ``--steps`` steps after a warm-up, and the rest of the step (autograd, ReLU, dropout, Python) as
what is left. CPU time (all threads) is the number a busy machine disturbs least; see bench/README.md,
"Where the CNN time goes".
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import os
import pstats
import time

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # as bench.targets

import numpy as np  # noqa: E402

import gpunn  # noqa: E402
import gpunn.nn.functional as F  # noqa: E402
from gpunn import nn, optim  # noqa: E402
from gpunn.backend import backend_for  # noqa: E402
from gpunn.cli import build_model  # noqa: E402

PRIMITIVES = (
    "conv2d_forward",
    "conv2d_backward",
    "pool2d_forward",
    "pool2d_backward",
    "linear_act",
    "linear_act_backward",
    "softmax_cross_entropy",
    "softmax_cross_entropy_fwd",
    "sgd_step",
    "adam_step",
)


_DEPTH = [0]  # timed primitives running: one called inside another (the cupy backend's conv2d_forward runs
# linear_act, softmax_cross_entropy_fwd runs softmax_cross_entropy on numpy) counts as part of the outer one


def _timed(cls, name, wall, cpu, calls, sync):
    fn = getattr(cls, name)

    def wrapper(*args, **kwargs):
        if _DEPTH[0]:
            return fn(*args, **kwargs)
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        _DEPTH[0] += 1
        try:
            return fn(*args, **kwargs)
        finally:
            _DEPTH[0] -= 1
            sync()
            wall[name] += time.perf_counter() - t0
            cpu[name] += time.process_time() - c0
            calls[name] += 1

    setattr(cls, name, wrapper)


def _step_fn(model: str):
    rng = np.random.default_rng(0)
    if model == "small":
        gpunn.manual_seed(0)
        net = build_model("cnn", (1, 28, 28), 10, 0.0)
        opt = optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
        loss_fn = nn.CrossEntropyLoss()
        x = gpunn.tensor(rng.random((200, 1, 28, 28), dtype=np.float32))
        y = gpunn.tensor(rng.integers(0, 10, 200))

        def step():
            opt.zero_grad()
            loss_fn(net(x), y).backward()
            opt.step()

        return step
    from bench.targets import _MnistNet

    params = {
        k: nn.Parameter(gpunn.tensor((rng.standard_normal(s) * 0.05).astype(np.float32)))
        for k, s in _MnistNet.shapes.items()
    }
    opt = optim.Adam(list(params.values()), lr=1e-3)
    x = gpunn.tensor(rng.random((64, 1, 28, 28), dtype=np.float32))
    y = gpunn.tensor(rng.integers(0, 10, 64))

    def step():
        opt.zero_grad()
        F.nll_loss(_MnistNet.forward(gpunn, F, params, x, True), y).backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=("small", "mnist"))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    parser.add_argument("--top", type=int, default=0, help="also print cProfile's N functions of most own time")
    args = parser.parse_args()
    gpunn.set_backend(args.backend)
    be = backend_for(args.backend)
    sync = be.xp.cuda.Device().synchronize if args.backend == "cupy" else (lambda: None)
    wall, cpu, calls = collections.defaultdict(float), collections.defaultdict(float), collections.Counter()
    for name in PRIMITIVES:
        _timed(type(be), name, wall, cpu, calls, sync)
    step = _step_fn(args.model)
    for _ in range(5):  # warm-up: Numba compiles or loads its cache, kernels are built, buffers are allocated
        step()
    sync()
    wall.clear(), cpu.clear(), calls.clear()
    profiler = cProfile.Profile() if args.top else None
    t0, c0 = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    for _ in range(args.steps):
        step()
    sync()
    if profiler:
        profiler.disable()
    total_wall, total_cpu = time.perf_counter() - t0, time.process_time() - c0
    per = 1e3 / args.steps
    print(f"{args.model}: {total_wall * per:.2f} ms/step wall, {total_cpu * per:.2f} ms/step CPU (all threads)")
    print(f"  {'part':26s} {'wall ms':>8s} {'CPU ms':>8s} {'calls':>6s}")
    for name in sorted(wall, key=cpu.get, reverse=True):
        print(f"  {name:26s} {wall[name] * per:8.2f} {cpu[name] * per:8.2f} {calls[name] / args.steps:6.1f}")
    rest_wall, rest_cpu = total_wall - sum(wall.values()), total_cpu - sum(cpu.values())
    print(f"  {'rest (autograd, ReLU...)':26s} {rest_wall * per:8.2f} {rest_cpu * per:8.2f}")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
