"""Where the captured MLP step's time goes: the whole call, its CUDA graph alone, and the host's profile.

    python -m bench.capture_profile --backend cupy --top 25     # on a GPU
    python -m bench.capture_profile                             # the numpy backend's replay

One MLP 784-200-200-10 step at batch 200 (SGD, momentum 0.9, or ``--opt adam``) under
``gpunn.train.compile_step``, after the record, the first replay and (cupy) the graph's capture. Prints
the mean time of a ``step(x, y)`` call over ``--steps`` calls (synchronized once at the end: host and device
overlap, as in training), on cupy the mean time of ``plan.graph.launch()`` alone over as many launches (the
device's time for the step, once launches queue faster than they run), and with ``--top N`` cProfile's N
functions of most own time over the step calls. The difference of the first two is host time per step.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import numpy as np

import gpunn
from gpunn import nn, optim
from gpunn.cli import build_model
from gpunn.train import compile_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    parser.add_argument("--opt", choices=("sgd", "adam"), default="sgd")
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--top", type=int, default=0, help="also print cProfile's N functions of most own time")
    args = parser.parse_args()
    gpunn.set_backend(args.backend)
    be = gpunn.get_backend()
    sync = be.xp.cuda.Device().synchronize if args.backend == "cupy" else (lambda: None)
    gpunn.manual_seed(0)
    model = build_model("mlp", (784,), 10, 0.0)
    opt = (
        optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
        if args.opt == "sgd"
        else optim.Adam(model.parameters(), lr=1e-3)
    )
    step = compile_step(model, nn.CrossEntropyLoss(), opt)
    rng = np.random.default_rng(0)
    batches = [
        (gpunn.tensor(rng.random((args.batch, 784), dtype=np.float32)), gpunn.tensor(rng.integers(0, 10, args.batch)))
        for _ in range(16)
    ]
    for i in range(20):  # record, first replay, graph capture, warm
        step(*batches[i % 16])
    sync()
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(*batches[i % 16])
    sync()
    per_call = (time.perf_counter() - t0) / args.steps
    print(f"{args.backend} captured MLP step ({args.opt}, batch {args.batch}): {per_call * 1e6:.1f} us per call")
    (plan,) = step.plans.values()
    graph = getattr(plan, "graph", None)
    if graph is not None:
        t0 = time.perf_counter()
        for _ in range(args.steps):
            graph.launch()
        sync()
        per_launch = (time.perf_counter() - t0) / args.steps
        print(f"  graph.launch() alone: {per_launch * 1e6:.1f} us per launch (device-bound once launches queue)")
        print(f"  host time per call beyond the graph: {(per_call - per_launch) * 1e6:.1f} us")
    if args.top:
        profiler = cProfile.Profile()
        profiler.enable()
        for i in range(args.steps):
            step(*batches[i % 16])
        sync()
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
