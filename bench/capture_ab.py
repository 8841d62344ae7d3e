"""Issue 14 on the numpy backend: the captured MLP step against the eager one, interleaved in one process.

    python -m bench.capture_ab [--rounds N] [--steps S] [--out DIR]

The bench's MLP 784-200-200-10 (ReLU), batches 200, 64 and 32, SGD (momentum 0.9) and Adam. Two copies of the
model from the same seed: one trained eagerly (zero_grad, forward, loss, backward, step), one through
``gpunn.train.compile_step``. Validated first: after 20 steps on the same batches the two copies' parameters
must be equal bit for bit (the captured step's contract). Then timed interleaved: each round runs S eager
steps, then S captured steps (the order alternating by round); per-step means per round; the table shows the
median and min over the rounds and the ratio eager / captured (above 1: captured faster; the issue's target
is >= 1.3).
"""

from __future__ import annotations

import argparse
import datetime
import os
import time

import numpy as np

import gpunn
from bench import provenance
from gpunn import nn, optim
from gpunn.train import compile_step

BATCHES = (200, 64, 32)
OPTIMIZERS = {
    "sgd": lambda ps: optim.SGD(ps, lr=0.01, momentum=0.9),
    "adam": lambda ps: optim.Adam(ps, lr=1e-3),
}


def _model():
    return nn.Sequential(nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, 10))


def _pair(opt_name: str):
    loss_fn = nn.CrossEntropyLoss()
    gpunn.manual_seed(0)
    eager_model = _model()
    gpunn.manual_seed(0)
    cap_model = _model()
    eager_opt, cap_opt = OPTIMIZERS[opt_name](eager_model.parameters()), OPTIMIZERS[opt_name](cap_model.parameters())
    captured = compile_step(cap_model, loss_fn, cap_opt)

    def eager(x, y):
        eager_opt.zero_grad()
        loss = loss_fn(eager_model(x), y)
        loss.backward()
        eager_opt.step()
        return loss

    return eager, captured, eager_model, cap_model


def measure(batch: int, opt_name: str, rounds: int, steps: int) -> dict:
    rng = np.random.default_rng(batch)
    data = [
        (gpunn.tensor(rng.standard_normal((batch, 784), dtype=np.float32)), gpunn.tensor(rng.integers(0, 10, batch)))
        for _ in range(4)
    ]
    eager, captured, eager_model, cap_model = _pair(opt_name)
    for i in range(20):  # validation: the captured step's parameters equal the eager step's, bit for bit
        x, y = data[i % len(data)]
        eager(x, y)
        captured(x, y)
    for (name, a), b in zip(eager_model.named_parameters(), cap_model.parameters()):
        if not np.array_equal(a.detach().numpy(), b.detach().numpy()):
            raise SystemExit(f"batch {batch} {opt_name}: captured {name} differs from eager after 20 steps")
    times = {"eager": [], "captured": []}
    for r in range(rounds):
        order = ("eager", "captured") if r % 2 == 0 else ("captured", "eager")
        for which in order:
            fn = eager if which == "eager" else captured
            t = time.perf_counter()
            for i in range(steps):
                fn(*data[i % len(data)])
            times[which].append((time.perf_counter() - t) / steps)
    e, c = np.array(times["eager"]), np.array(times["captured"])
    return {
        "batch": batch,
        "optimizer": opt_name,
        "eager_median_us": float(np.median(e) * 1e6),
        "eager_min_us": float(e.min() * 1e6),
        "captured_median_us": float(np.median(c) * 1e6),
        "captured_min_us": float(c.min() * 1e6),
        "ratio_median": float(np.median(e) / np.median(c)),
        "ratio_min": float(e.min() / c.min()),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rows = [measure(b, o, args.rounds, args.steps) for b in BATCHES for o in OPTIMIZERS]

    lines = [
        f"# captured vs eager MLP step (numpy backend), {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}"
        " UTC",
        "",
        f"`python -m bench.capture_ab` at commit {provenance.commit()}; {os.cpu_count()} CPUs; "
        f"GPUNN_NUM_THREADS={os.environ.get('GPUNN_NUM_THREADS', 'unset')}; load average {os.getloadavg()}. "
        f"{args.rounds} interleaved rounds of {args.steps} steps each way; validated bit for bit first.",
        "",
        "| batch | optimizer | eager median us | eager min | captured median us | captured min | ratio (medians) "
        "| ratio (minima) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['batch']} | {r['optimizer']} | {r['eager_median_us']:.0f} | {r['eager_min_us']:.0f} | "
        f"{r['captured_median_us']:.0f} | {r['captured_min_us']:.0f} | {r['ratio_median']:.2f} | {r['ratio_min']:.2f} |"
        for r in rows
    ]
    text = "\n".join(lines) + "\n"
    provenance.report(text, args.out, "capture-ab")


if __name__ == "__main__":
    main()
