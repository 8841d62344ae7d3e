"""The issue-12 target table, measured fairly: gpunn and PyTorch interleaved in one process.

    python -m bench.targets                    # everything (about 5 minutes on the 2-core machine)
    python -m bench.targets adam_step ce       # a subset, by workload name (see WORKLOADS)
    python -m bench.targets --out DIR          # also write DIR/targets-<date>.{json,md}
    python -m bench.targets --threads 1        # every library on one thread (per-core comparison)
    GPUNN_BENCH_SAMPLES=12000 python -m bench.targets cnn_epoch   # epochs of fewer samples (busy machine)

Each workload builds every implementation, VALIDATES each against a float64 reference (a wrong answer
stops the run before anything is timed), then times them interleaved: round r runs every implementation
once, in an order rotated every round, so drift in the machine's load hits all of them alike. A round
of a per-step workload is ``reps`` calls (its time is per call); an epoch is one round. Reported per
implementation: median, min and max over the rounds (at least 5), and the ratio of gpunn's median to
each peer's median. Each peer runs at its best: PyTorch's Adam with ``fused=True`` and with
``foreach=True`` are both reported, and the target ratio is against the faster.

Cold start (workload ``cold``): in fresh processes, the time of ``import gpunn``; of the small CNN's
first training step and its steady-state step, first with an empty Numba cache directory (the kernels
compile; with numba_ahead's helper process, and again with it off) and then again with the cache it
left (later runs: only loading); and of ``make train``'s command (``gpunn train --dataset mnist-sample
--model mlp``, the issue's measure) with an empty cache and then a warm one: the difference is what its
first run pays to compile.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # see bench/conftest.py: spinning BLAS workers
# --threads N (before NumPy and PyTorch load their thread pools): every library on N threads
_THREADS = next((sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--threads"), None)
if _THREADS:
    for var in ("GPUNN_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = _THREADS

import numpy as np  # noqa: E402
import torch  # noqa: E402

import gpunn  # noqa: E402
import gpunn.nn.functional as F  # noqa: E402
from gpunn import nn, optim  # noqa: E402
from gpunn.backend import backend_for  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MIN_ROUNDS = 5
TARGETS = {  # workload -> target ratio gpunn / best PyTorch (issue 12)
    "mlp_epoch": 0.80,
    "cnn_epoch": 0.90,
    "mnist_cnn_step": 1.00,
    "mnist_cnn_step adadelta": 1.00,
    "adam_step 200k": 1.00,
    "adam_step 2M": 1.00,
    "adam_step 17M": 1.00,
    "softmax_ce 2048x1000": 1.00,
}


# ------------------------------------------------------------------------------------------------
# timing and validation
# ------------------------------------------------------------------------------------------------
SETTLE_S = 0.02  # pause before each implementation's turn: the previous one's threads go idle first


def interleave(impls: dict, rounds: int, reps: int = 1, warmup: int = 2) -> dict:
    """impl name -> [(wall seconds, CPU seconds of this process) per call, one pair per round];
    ``impls`` maps name -> zero-argument callable. The CPU time (all threads, spinning included) is the
    measure that other processes' load disturbs least.

    Each turn starts after a ``SETTLE_S`` pause: PyTorch's OpenMP workers spin for ~3 ms after its last
    parallel region (GNU OpenMP's default wait policy; measured: 3.3 ms of CPU burnt in a 5 ms sleep after
    one fused Adam step), holding a core the next library's threads need -- which no user running one
    library sees. Within a turn every implementation runs back to back, as in a training loop (PyTorch's
    spinning then serves its own next call, as it does for a user)."""
    names = list(impls)
    for name in names:
        for _ in range(warmup):
            impls[name]()
    times = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            fn = impls[name]
            time.sleep(SETTLE_S)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(reps):
                fn()
            times[name].append(((time.perf_counter() - t0) / reps, (time.process_time() - c0) / reps))
    return times


def summarize(work: str, times: dict, errors: dict) -> dict:
    stats = {}
    for name, pairs in times.items():
        t, c = [p[0] for p in pairs], [p[1] for p in pairs]
        stats[name] = {
            "median_s": statistics.median(t),
            "min_s": min(t),
            "max_s": max(t),
            "rounds": len(t),
            "cpu_median_s": statistics.median(c),
            "max_rel_err": errors.get(name),
        }
    g = stats["gpunn"]["median_s"]
    peers = {n: s["median_s"] for n, s in stats.items() if n.startswith("torch")}
    best = min(peers, key=peers.get)
    best_cpu = min(s["cpu_median_s"] for n, s in stats.items() if n.startswith("torch"))
    for s in stats.values():
        s["ratio_to_best_peer"] = s["median_s"] / peers[best]
        s["cpu_ratio_to_best_peer"] = s["cpu_median_s"] / best_cpu
    return {
        "work": work,
        "impls": stats,
        "best_peer": best,
        "ratio": g / peers[best],
        "cpu_ratio": stats["gpunn"]["cpu_median_s"] / best_cpu,
        "target": TARGETS.get(work),
    }


def rel_err(got, ref) -> float:
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def validated(name: str, err: float, tol: float) -> float:
    if not (np.isfinite(err) and err <= tol):
        raise SystemExit(f"{name}: relative error {err:.3g} > {tol:g}: not timed")
    return err


# ------------------------------------------------------------------------------------------------
# workloads
# ------------------------------------------------------------------------------------------------
ADAM = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}
ADAM_SIZES = {
    "200k": [(200, 784), (200,), (200, 200), (200,), (10, 200), (10,)],
    "2M": [(1024, 2048), (1024,)],
    "17M": [(4096, 4096), (4096,)],
}


def adam_step(label: str, rounds: int) -> dict:
    """One Adam step over the parameters of ``label``: gpunn (one fused pass over the flat buffer) against
    PyTorch fused=True and foreach=True."""
    shapes = ADAM_SIZES[label]
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s, dtype=np.float32) * np.float32(0.1) for s in shapes]
    grads = [rng.standard_normal(s, dtype=np.float32) * np.float32(0.01) for s in shapes]

    def ref(steps):  # float64 PyTorch Adam with fixed gradients
        out = []
        for p, g in zip(params, grads):
            p, g = p.astype(np.float64), g.astype(np.float64)
            m, v = np.zeros_like(p), np.zeros_like(p)
            for t in range(1, steps + 1):
                m = 0.9 * m + 0.1 * g
                v = 0.999 * v + 0.001 * g * g
                p = p - 1e-3 / (1 - 0.9**t) * m / (np.sqrt(v) / np.sqrt(1 - 0.999**t) + 1e-8)
            out.append(p)
        return out

    def make(impl):
        if impl == "gpunn":
            ps = [nn.Parameter(gpunn.tensor(p)) for p in params]
            for p, g in zip(ps, grads):
                p.grad = gpunn.tensor(g)
            return optim.Adam(ps, **ADAM), ps
        ps = [torch.tensor(p, requires_grad=True) for p in params]
        for p, g in zip(ps, grads):
            p.grad = torch.tensor(g)
        flag = {"torch-fused": {"fused": True}, "torch-foreach": {"foreach": True}}[impl]
        return torch.optim.Adam(ps, **ADAM, **flag), ps

    impls, errors = {}, {}
    r2 = ref(2)
    for impl in ("gpunn", "torch-fused", "torch-foreach"):
        opt, ps = make(impl)
        opt.step()
        opt.step()
        got = [p.detach().numpy() for p in ps]
        errors[impl] = validated(
            f"adam {label} {impl}", max(rel_err(a - p0, b - p0) for a, b, p0 in zip(got, r2, params)), 1e-4
        )
        impls[impl] = opt.step
    n = sum(int(np.prod(s)) for s in shapes)
    reps = max(3, int(2e7 // n))
    return summarize(f"adam_step {label}", interleave(impls, rounds, reps), errors)


def softmax_ce(rounds: int, n: int = 2048, c: int = 1000) -> dict:
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal((n, c)) * 3).astype(np.float32)
    target = rng.integers(0, c, n)
    shifted = logits.astype(np.float64) - logits.max(1, keepdims=True)
    p = np.exp(shifted) / np.exp(shifted).sum(1, keepdims=True)
    ref_loss = -np.log(p[np.arange(n), target]).mean()
    ref_grad = p.copy()
    ref_grad[np.arange(n), target] -= 1
    ref_grad /= n
    gz, gt = gpunn.tensor(logits, requires_grad=True), gpunn.tensor(target)
    tz, tt = torch.tensor(logits, requires_grad=True), torch.tensor(target)

    def g_call():
        gz.grad = None
        loss = F.cross_entropy(gz, gt)
        loss.backward()
        return loss

    def t_call():
        tz.grad = None
        loss = torch.nn.functional.cross_entropy(tz, tt)
        loss.backward()
        return loss

    errors = {}
    for name, call, z in (("gpunn", g_call, gz), ("torch", t_call, tz)):
        loss = call()
        grad = z.grad.numpy() if name == "gpunn" else z.grad.numpy()
        errors[name] = validated(
            f"softmax_ce {name}", max(rel_err(float(loss.item()), ref_loss), rel_err(grad, ref_grad)), 1e-5
        )
    return summarize(f"softmax_ce {n}x{c}", interleave({"gpunn": g_call, "torch": t_call}, rounds, reps=50), errors)


def _epoch(kind: str, rounds: int) -> dict:
    from bench import test_e2e as e2e

    class _Data:  # the module's fixture bodies, without pytest
        X, y, _ = e2e.mnist60k.__wrapped__()
        init = e2e.initial_weights.__wrapped__()

    samples = int(os.environ.get("GPUNN_BENCH_SAMPLES", e2e.SAMPLES))  # a shorter "epoch" on a busy machine
    X, y = e2e._inputs(kind, _Data.X)[:samples], _Data.y[:samples]
    be = backend_for("numpy")
    err_g, g_epoch, g_warm = e2e._gpunn_epoch(kind, X, y, _Data.init[kind], be)
    err_t, t_epoch, t_warm = e2e._torch_epoch(kind, X, y, _Data.init[kind], "cpu", preloaded=True)
    g_warm()
    t_warm()
    times = interleave({"gpunn": g_epoch, "torch-preloaded": t_epoch}, rounds, warmup=0)
    out = summarize(f"{kind}_epoch", times, {"gpunn": err_g, "torch-preloaded": err_t})
    out["samples"] = samples
    return out


class _MnistNet:
    """pytorch/examples mnist/main.py's Net, as a function of a dict of parameters, for both libraries."""

    shapes = {
        "conv1.weight": (32, 1, 3, 3),
        "conv1.bias": (32,),
        "conv2.weight": (64, 32, 3, 3),
        "conv2.bias": (64,),
        "fc1.weight": (128, 9216),
        "fc1.bias": (128,),
        "fc2.weight": (10, 128),
        "fc2.bias": (10,),
    }

    @staticmethod
    def forward(lib, Fn, p, x, training):
        x = Fn.relu(Fn.conv2d(x, p["conv1.weight"], p["conv1.bias"]))
        x = Fn.relu(Fn.conv2d(x, p["conv2.weight"], p["conv2.bias"]))
        x = Fn.max_pool2d(x, 2)
        x = Fn.dropout(x, 0.25, training=training)
        x = lib.flatten(x, 1)
        x = Fn.relu(Fn.linear(x, p["fc1.weight"], p["fc1.bias"]))
        x = Fn.dropout(x, 0.5, training=training)
        return Fn.log_softmax(Fn.linear(x, p["fc2.weight"], p["fc2.bias"]), dim=1)


MNIST_OPTIMIZERS = {  # name -> (class name in gpunn.optim and torch.optim, hyper-parameters, PyTorch peers)
    "adam": ("Adam", ADAM, {"torch-foreach": {"foreach": True}, "torch-fused": {"fused": True}}),
    # pytorch/examples' own choice (lr=1.0); PyTorch's Adadelta has no fused step
    "adadelta": ("Adadelta", {"lr": 1.0}, {"torch-foreach": {"foreach": True}, "torch-forloop": {"foreach": False}}),
}


def mnist_cnn_step(rounds: int, batch: int = 64, optimizer: str = "adam") -> dict:
    """One training step of pytorch/examples' MNIST CNN at batch 64 with Adam, or with Adadelta as the
    example trains it. Validated by its gradients in eval mode (no dropout) against float64 PyTorch (the
    first updates, e.g. Adam's lr * g / (|g| + eps), are too sensitive to tiny gradients to compare); timed
    in training mode."""
    opt_name, hyper, peers = MNIST_OPTIMIZERS[optimizer]
    rng = np.random.default_rng(2)
    init = {
        k: (
            rng.standard_normal(s) * (2.0 / np.prod(s[1:])) ** 0.5 if len(s) > 1 else rng.standard_normal(s) * 0.01
        ).astype(np.float32)
        for k, s in _MnistNet.shapes.items()
    }
    X = rng.random((16, batch, 1, 28, 28), dtype=np.float32)
    Y = rng.integers(0, 10, (16, batch))

    def torch_setup(dtype=torch.float32, **flags):
        p = {k: torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in init.items()}
        opt = getattr(torch.optim, opt_name)(p.values(), **hyper, **flags)
        data = [(torch.tensor(X[i], dtype=dtype), torch.tensor(Y[i])) for i in range(len(X))]
        return p, opt, data

    def torch_grads(p, opt, xb, yb, training=True):
        opt.zero_grad()
        loss = torch.nn.functional.nll_loss(_MnistNet.forward(torch, torch.nn.functional, p, xb, training), yb)
        loss.backward()

    gp = {k: nn.Parameter(gpunn.tensor(v)) for k, v in init.items()}
    gopt = getattr(optim, opt_name)(list(gp.values()), **hyper)
    gdata = [(gpunn.tensor(X[i]), gpunn.tensor(Y[i])) for i in range(len(X))]

    def gpunn_grads(xb, yb, training=True):
        gopt.zero_grad()
        loss = F.nll_loss(_MnistNet.forward(gpunn, F, gp, xb, training), yb)
        loss.backward()

    def gpunn_step():
        gpunn_grads(*gdata[next(git) % len(gdata)])
        gopt.step()

    rp, ropt, rdata = torch_setup(torch.float64)
    torch_grads(rp, ropt, *rdata[0], training=False)
    ref = {k: rp[k].grad.numpy() for k in init}
    errors = {}
    gpunn_grads(*gdata[0], training=False)
    errors["gpunn"] = validated("mnist_cnn gpunn", max(rel_err(gp[k].grad.numpy(), ref[k]) for k in init), 1e-4)
    git = iter(range(10**9))
    impls = {"gpunn": gpunn_step}
    for name, flags in peers.items():
        p, opt, data = torch_setup(**flags)
        torch_grads(p, opt, *data[0], training=False)
        errors[name] = validated(f"mnist_cnn {name}", max(rel_err(p[k].grad.numpy(), ref[k]) for k in init), 1e-4)
        it = iter(range(10**9))

        def step(p=p, opt=opt, data=data, it=it):
            torch_grads(p, opt, *data[next(it) % len(data)])
            opt.step()

        impls[name] = step
    work = "mnist_cnn_step" + ("" if optimizer == "adam" else f" {optimizer}")
    return summarize(work, interleave(impls, rounds, reps=10, warmup=5), errors)


_COLD_SCRIPT = """
import time, sys, os
t0, c0 = time.perf_counter(), time.process_time()
import gpunn
t_import, c_import = time.perf_counter() - t0, time.process_time() - c0
if os.environ.get("GPUNN_BENCH_COMPILE_PROFILE"):  # (a separate run: importing numba here moves its cost)
    from numba.core import event
    compiles, open_ = {}, []
    class Compiles(event.Listener):  # the seconds of each outermost compile (or cache load)
        def on_start(self, e):
            open_.append(time.perf_counter())
        def on_end(self, e):
            t = time.perf_counter() - open_.pop()
            if not open_:
                fn = e.data["dispatcher"].py_func
                name = fn.__module__.rsplit(".", 1)[-1] + "." + fn.__qualname__
                compiles[name] = compiles.get(name, 0.0) + t
    event.register("numba:compile", Compiles())
from gpunn import nn, optim
from gpunn.cli import build_model
import numpy as np
gpunn.manual_seed(0)
model = build_model("cnn", (1, 28, 28), 10, 0.0)
opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()
rng = np.random.default_rng(0)
x, y = gpunn.tensor(rng.random((200, 1, 28, 28), dtype=np.float32)), gpunn.tensor(rng.integers(0, 10, 200))
def step():
    opt.zero_grad(); loss = loss_fn(model(x), y); loss.backward(); opt.step(); return loss.item()
t0, c0 = time.perf_counter(), time.process_time(); step()
t_first, c_first = time.perf_counter() - t0, time.process_time() - c0
ts, cs = [], []
for _ in range(10):
    t0, c0 = time.perf_counter(), time.process_time(); step()
    ts.append(time.perf_counter() - t0); cs.append(time.process_time() - c0)
ts.sort(); cs.sort()
print(t_import, t_first, ts[len(ts) // 2], c_import, c_first, cs[len(cs) // 2])
if os.environ.get("GPUNN_BENCH_COMPILE_PROFILE"):
    import json
    print(json.dumps(dict(sorted(compiles.items(), key=lambda kv: -kv[1]))))
"""


def cold_start(rounds: int) -> dict:
    """import gpunn, first and steady CNN steps in fresh processes: Numba's cache empty, then warm."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), GPUNN_BACKEND="numpy")

    def run(extra, profile=False):
        out = subprocess.run(
            [sys.executable, "-c", _COLD_SCRIPT],
            env={**env, **extra, **({"GPUNN_BENCH_COMPILE_PROFILE": "1"} if profile else {})},
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        ).stdout.splitlines()
        return json.loads(out[1]) if profile else [float(v) for v in out[0].split()]

    def train(cache: str) -> float:  # make train's command, wall seconds
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            cmd = [sys.executable, "-m", "gpunn.cli", "train", "--dataset", "mnist-sample", "--model", "mlp"]
            cmd += ["--out", out]
            subprocess.run(cmd, env={**env, "NUMBA_CACHE_DIR": cache}, capture_output=True, check=True, timeout=600)
            return time.perf_counter() - t0

    result = {"work": "cold_start"}
    with tempfile.TemporaryDirectory() as cache:
        train_cold = train(cache)
        train_warm = [train(cache) for _ in range(3)]
    result["make_train_s"] = {
        "cold_cache": train_cold,
        "warm_cache_median": statistics.median(train_warm),
        "compile (cold - warm)": train_cold - statistics.median(train_warm),
    }
    with tempfile.TemporaryDirectory() as cache:
        serial = run({"NUMBA_CACHE_DIR": cache, "GPUNN_COMPILE_AHEAD": "0"})
    with tempfile.TemporaryDirectory() as cache:
        cold = run({"NUMBA_CACHE_DIR": cache})
        warm = [run({"NUMBA_CACHE_DIR": cache}) for _ in range(rounds)]
    with tempfile.TemporaryDirectory() as cache:  # where the cold first step's time goes (all in this process)
        profile = run({"NUMBA_CACHE_DIR": cache, "GPUNN_COMPILE_AHEAD": "0"}, profile=True)
    nonumba = [run({"GPUNN_NUMBA": "0"}) for _ in range(rounds)]
    imports = [w[0] for w in warm + nonumba]
    result["import_gpunn_s"] = {"median_s": statistics.median(imports), "min_s": min(imports), "max_s": max(imports)}
    result["cnn_first_step_cold_cache_s"] = cold[1]
    result["cnn_first_step_cold_cache_helper_off_s (GPUNN_COMPILE_AHEAD=0)"] = serial[1]
    result["cnn_steady_step_s"] = cold[2]
    firsts = [w[1] for w in warm]
    result["cnn_first_step_warm_cache_s"] = {
        "median_s": statistics.median(firsts),
        "min_s": min(firsts),
        "max_s": max(firsts),
    }
    result["cnn_first_step_numba_off_s"] = statistics.median([w[1] for w in nonumba])
    result["kernel_compile_s (cold first step - steady)"] = cold[1] - cold[2]
    result["kernel_load_s (warm first step - steady)"] = statistics.median(firsts) - statistics.median(
        [w[2] for w in warm]
    )
    # the same in CPU seconds of the process (all its threads): robust to other processes' load
    result["cpu_import_gpunn_s"] = statistics.median(w[3] for w in warm + nonumba)
    result["cpu_kernel_compile_s"] = cold[4] - cold[5]
    result["cpu_kernel_load_s"] = statistics.median(w[4] - w[5] for w in warm)
    result["cpu_first_step_numba_off_s"] = statistics.median(w[4] for w in nonumba)
    result["cpu_steady_step_s"] = {
        "numba": statistics.median(w[5] for w in warm),
        "numba_off": statistics.median(w[5] for w in nonumba),
    }
    result["cold_compile_s_by_kernel (a separate cold run, helper off; each outermost compile, callees included)"] = {
        k: round(v, 3) for k, v in profile.items()
    }
    return result


WORKLOADS = {
    "adam_step": lambda r: [adam_step(label, r) for label in ADAM_SIZES],
    "ce": lambda r: [softmax_ce(r)],
    "mnist_cnn": lambda r: [mnist_cnn_step(r)],
    "mnist_cnn_adadelta": lambda r: [mnist_cnn_step(r, optimizer="adadelta")],
    "mlp_epoch": lambda r: [_epoch("mlp", r)],
    "cnn_epoch": lambda r: [_epoch("cnn", r)],
    "cold": lambda r: [cold_start(r)],
}


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def _git(*args) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def markdown(results: list, meta: dict) -> str:
    lines = [
        f"# issue-12 targets, {meta['date']}",
        "",
        f"`{meta['command']}` at commit {meta['commit']}{' (DIRTY TREE)' if meta['dirty'] else ''}; "
        f"{meta['machine']}; PyTorch {meta['torch']}, NumPy {meta['numpy']}; {meta['threads']} threads. "
        "Interleaved in one process; seconds per call; ratio = gpunn median / best PyTorch median.",
        "",
        f"Load average at the start {meta['loadavg_start']}, at the end {meta['loadavg_end']} "
        "(a busy machine: read the CPU-time ratio too).",
        "",
        "| work | impl | median | min | max | rounds | ratio | CPU median | CPU ratio | target |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "impls" not in r:
            continue
        for name, s in r["impls"].items():
            ratio = f"{s['ratio_to_best_peer']:.2f}"
            tgt = ""
            if name == "gpunn" and r["target"] is not None:
                tgt = f"<= {r['target']:.2f}: {'met' if r['ratio'] <= r['target'] else 'MISSED'}"
            lines.append(
                f"| {r['work']} | {name} | {s['median_s'] * 1e3:.3f} ms | {s['min_s'] * 1e3:.3f} | "
                f"{s['max_s'] * 1e3:.3f} | {s['rounds']} | {ratio} | {s['cpu_median_s'] * 1e3:.3f} ms | "
                f"{s['cpu_ratio_to_best_peer']:.2f} | {tgt} |"
            )
    for r in results:
        if r["work"] == "cold_start":
            lines += ["", "Cold start (fresh processes):", ""]
            lines += [f"- {k}: {json.dumps(v)}" for k, v in r.items() if k != "work"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workloads", nargs="*", metavar="WORKLOAD", help=f"any of {', '.join(WORKLOADS)} (default: all)")
    ap.add_argument("--rounds", type=int, default=MIN_ROUNDS)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None, help="every library on this many threads")
    args = ap.parse_args(argv)
    rounds = max(MIN_ROUNDS, args.rounds)
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}")
    args.workloads = args.workloads or list(WORKLOADS)
    gpunn.set_backend("numpy")
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m bench.targets " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(_git("status", "--porcelain")),
        "machine": f"{os.cpu_count()} CPUs",
        "torch": torch.__version__,
        "numpy": np.__version__,
        "threads": torch.get_num_threads(),
        "loadavg_start": _loadavg(),
    }
    results = []
    for w in args.workloads:
        for r in WORKLOADS[w](rounds):
            results.append(r)
            print(json.dumps(r), flush=True)
    meta["loadavg_end"] = _loadavg()
    md = markdown(results, meta)
    print(md)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.out / (
            f"targets-{datetime.datetime.now(datetime.timezone.utc):%Y%m%d}"
            + (f"-threads{_THREADS}" if _THREADS else "")
        )
        stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
        stem.with_suffix(".md").write_text(md)


if __name__ == "__main__":
    main()
