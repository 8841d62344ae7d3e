"""Turn a benchmark results file into a markdown report and a plot.

    python -m bench.report bench/results/cpu-20250101.json          # prints the markdown, writes
                                                                     # cpu-20250101.md and .png beside it
    python -m bench.report RESULTS.json --md OUT.md --png OUT.png --quiet

The table has one row per (op, size, peer): gpunn's and the peer's best time (each benchmark's
minimum over its rounds), their ratio (gpunn / peer: below 1 gpunn is faster), and the fraction of the
run's own ceiling each reaches (copy bandwidth for memory-bound ops, float32 matmul for compute-bound
ones). The targets of the benchmark issue are judged here, never in a test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# (op, the largest allowed time ratio gpunn / peer, description): judged against every peer and every
# size of the op, so the worst ratio decides
TARGETS = {
    "cpu": [
        ("mlp_epoch", 0.8, "MLP epoch <= 0.8x PyTorch's time"),
        ("cnn_epoch", 1.0, "CNN epoch <= 1.0x PyTorch's time"),
        ("cross_entropy", 1.0, "softmax cross-entropy no slower than PyTorch"),
        ("adam_step", 1.0, "Adam step no slower than PyTorch"),
    ],
    "gpu": [
        ("mlp_step", 1 / 3, "one MLP step at batch 200 >= 3x faster than PyTorch eager"),
    ],
}
# Why a target is missed, from profiling this implementation (bench/README.md has the numbers); printed
# under a missed target. The measured figures in the same line come from the results file itself.
WHY = {
    ("cpu", "mlp_epoch"): (
        "both sides spend about 2/3 of a step in the same float32 GEMMs (OpenBLAS here, MKL in PyTorch, "
        "each at ~75-95% of the matmul ceiling at these shapes), so 0.8x needs gpunn's remaining work "
        "(Python autograd and module calls, bias/ReLU passes, the batch gather, the leaf-gradient copies "
        "into the flat buffer, the SGD step; ~0.45 ms of a ~1.3 ms step) to be about half of PyTorch's. "
        "Page faults (fixed: malloc tuning) and the optimizer (fixed: in-place, blocked) are gone; what "
        "is left is spread over many small pieces, most outside the numpy backend (tensor.py, "
        "functional.linear, data.loader)."
    ),
    ("cpu", "cnn_epoch"): (
        "PyTorch runs the convolutions through oneDNN's direct/Winograd kernels on both cores (conv2 "
        "forward+backward ~3 ms, faster than NumPy's own matmul ceiling allows for its FLOPs); gpunn's "
        "im2col + OpenBLAS GEMM does 3 GEMMs at ~150-220 GFLOP/s plus im2col/col2im copies on one core "
        "(~14 ms). The pools are now faster than PyTorch's; the ReLU (Tensor.relu, 3 single-threaded "
        "passes of 10 MB) is ~5x slower than PyTorch's."
    ),
    ("cpu", "cross_entropy"): (
        "PyTorch's log_softmax/nll kernels make about two fused passes over the logits on both cores; "
        "gpunn's fused primitive (blocked, both cores) makes five NumPy passes (max, subtract, exp, sum, "
        "divide) and takes ~1.7 ms at 2048x1000, and the autograd around it adds two full-size passes "
        "PyTorch does not make: F.cross_entropy's backward multiplies dlogits by the upstream gradient "
        "even when it is 1, and a leaf's gradient is copied (Tensor._accumulate_grad). At the MLP's "
        "200x10 both are dominated by per-call overhead (~40 us); at 4096x8192 gpunn is faster."
    ),
    ("cpu", "adam_step"): (
        "the step is memory-bound: each side reads and writes the 28 bytes per parameter it needs, and "
        "below ~2M parameters both reach about the same bandwidth (gpunn: 13 NumPy passes per cache-sized "
        "block, one thread under 262k parameters; PyTorch: 7 ops per tensor on two threads), so the "
        "ratio there sits at 1.0 +- run-to-run noise (compare the median ratio); from 2M up gpunn's "
        "blocked, threaded step is faster."
    ),
}
QUIET = 0.1  # the share of the CPUs other processes may use before a row is flagged (bench/conftest.py)
OP_ORDER = [
    "mlp_epoch",
    "cnn_epoch",
    "mlp_step",
    "cnn_step",
    "linear_relu_fwd",
    "linear_relu_fwdbwd",
    "cross_entropy",
    "sgd_step",
    "adam_step",
    "conv2d_fwdbwd",
    "max_pool2d_fwdbwd",
]


def fmt_time(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def fmt_rate(info: dict) -> str:
    if info.get("bound") == "memory":
        return f"{info['gbps']:.1f} GB/s"
    return f"{info['gflops']:.1f} GFLOP/s"


def fmt_frac(info: dict) -> str:
    f = info.get("ceiling_fraction")
    return "-" if f is None else f"{100 * f:.0f}%"


def load(path: str) -> dict:
    """A pytest-benchmark JSON written by the suite, or a ``make gpu-check`` result that embeds one."""
    with open(path) as f:
        data = json.load(f)
    steps = data.get("steps")
    if "benchmarks" not in data and isinstance(steps, (dict, list)):  # tools/gpu_check.py's file
        steps = list(steps.values() if isinstance(steps, dict) else steps)
        for step in steps:
            if isinstance(step, dict) and isinstance(step.get("raw"), dict) and "benchmarks" in step["raw"]:
                return step["raw"]
        for step in steps:  # a bench step killed before pytest-benchmark wrote its JSON: the per-test records
            if isinstance(step, dict) and step.get("benchmarks"):
                return {
                    "benchmarks": [
                        {
                            "name": b["bench"],
                            "extra_info": b.get("extra_info") or {},
                            "stats": {k: b[k] for k in ("min", "median", "rounds")},
                        }
                        for b in step["benchmarks"]
                    ],
                    "gpunn_bench": {
                        "backend": "cupy",
                        "command": data.get("command"),
                        "commit_short": str((data.get("commit") or {}).get("commit", "?"))[:7],
                    },
                }
        raise SystemExit(f"{path}: a gpu-check result without benchmark data (was the bench step skipped?)")
    return data


def entries(results: dict) -> list:
    """The benchmarks that carry gpunn's extra_info, with their min time attached as ``t``."""
    out = []
    for b in results.get("benchmarks", []):
        info = b.get("extra_info") or {}
        if "op" in info:
            out.append(
                {
                    **info,
                    "t": b["stats"]["min"],
                    "median": b["stats"]["median"],
                    "rounds": b["stats"]["rounds"],
                    "name": b["name"],
                }
            )
    return out


def pairs(rows: list) -> list:
    """(op, size, gpunn entry or None, peer entry or None) for every peer of every (op, size), in order."""
    by_key: dict = {}
    for r in rows:
        by_key.setdefault((r["op"], r["size"]), []).append(r)

    def order(key):
        op, size = key
        first = min(rows.index(r) for r in by_key[key])
        return (OP_ORDER.index(op) if op in OP_ORDER else len(OP_ORDER), first)

    out = []
    for key in sorted(by_key, key=order):
        group = by_key[key]
        mine = [r for r in group if r["role"] == "gpunn"]
        peers = [r for r in group if r["role"] != "gpunn"]
        for g in mine or [None]:  # one gpunn entry per kernel version
            for p in peers or [None]:
                out.append((key[0], key[1], g, p))
    return out


def contended(*entries) -> bool:
    """Whether other processes used more than the quiet share of the CPUs while any of these ran."""
    return any(e and (e.get("other_load") or 0) > QUIET for e in entries)


def version_note(entry: dict) -> str:
    """' (v2)' after a time measured with a kernel version other than the default, ' (captured)' after a
    compile_step time (bench/test_capture.py), else ''."""
    note = " (captured)" if str(entry.get("impl", "")).endswith("-captured") else ""
    if entry.get("kernel_default", True) or entry.get("kernel_version") is None:
        return note
    return f" (v{entry['kernel_version']})" + note


def table(rows: list) -> str:
    lines = [
        "| op | size | gpunn | peer | peer time | ratio | ratio of medians | gpunn achieved "
        "| gpunn % of ceiling | peer % of ceiling |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for op, size, g, p in pairs(rows):
        ratio = f"{g['t'] / p['t']:.2f}x" if g and p else "-"
        if contended(g, p):
            ratio += " †"
        median_ratio = f"{g['median'] / p['median']:.2f}x" if g and p else "-"
        lines.append(
            "| "
            + " | ".join(
                [
                    op,
                    size,
                    (fmt_time(g["t"]) + version_note(g)) if g else "-",
                    p["impl"] if p else "-",
                    fmt_time(p["t"]) if p else "-",
                    ratio,
                    median_ratio,
                    fmt_rate(g) if g else "-",
                    fmt_frac(g) if g else "-",
                    fmt_frac(p) if p else "-",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def judge_targets(rows: list, platform_kind: str) -> list:
    """(description, met?, detail) for each target of this platform that has results."""
    out = []
    for op, limit, desc in TARGETS.get(platform_kind, []):
        # judged on the version the backend uses (the default), not on the alternatives timed beside it
        found = [(size, g, p) for o, size, g, p in pairs(rows) if o == op and g and p and g.get("kernel_default", True)]
        if not found:
            continue
        worst = max(found, key=lambda f: f[1]["t"] / f[2]["t"])
        size, g, p = worst
        ratio = g["t"] / p["t"]
        met = ratio <= limit
        details = ", ".join(f"{pp['impl']} {s}: {gg['t'] / pp['t']:.2f}x" for s, gg, pp in found)
        if met:
            detail = f"met: worst ratio {ratio:.2f}x (limit {limit:.2f}x) [{details}]"
        else:
            over = ratio / limit - 1
            detail = (
                f"MISSED by {100 * over:.0f}%: gpunn takes {ratio:.2f}x the time of {p['impl']} at {size} "
                f"(limit {limit:.2f}x; gpunn {fmt_time(g['t'])}, peer {fmt_time(p['t'])}) [{details}]"
            )
            why = WHY.get((platform_kind, op))
            if why:
                detail += f"\n  - why: {why}"
        out.append((desc, met, detail))
    return out


def header(results: dict) -> str:
    meta = results.get("gpunn_bench") or results.get("machine_info", {}).get("gpunn_bench") or {}
    mach = meta.get("machine", {})
    ceil = meta.get("ceilings") or {}
    lines = [
        f"- command: `{meta.get('command', '?')}`",
        f"- backend: {meta.get('gpunn_impl', '?')} vs {meta.get('peer_impl', '?')}"
        f" (torch {mach.get('torch')}, {mach.get('torch_threads')} threads)",
        f"- machine: {mach.get('cpu', '?')}, {mach.get('cpu_count', '?')} cores, {mach.get('platform', '')}; "
        f"numpy {mach.get('numpy')} ({mach.get('blas')}), python {mach.get('python')}"
        + (f"; GPU {mach.get('gpu')}, cupy {mach.get('cupy')}" if mach.get("gpu") else ""),
        f"- commit: {meta.get('commit_short', '?')}{' (with uncommitted changes)' if meta.get('dirty') else ''}; "
        f"run {meta.get('started', '?')} to {meta.get('finished', '?')} (UTC)",
        f"- ceilings measured in this run: copy {ceil.get('copy_gbps', float('nan')):.1f} GB/s, "
        f"float32 matmul {ceil.get('matmul_gflops', float('nan')):.1f} GFLOP/s "
        f"(n={ceil.get('matmul_n')})",
        f"- load average (1, 5, 15 min) at start {meta.get('loadavg_start')}, at end {meta.get('loadavg_end')}",
        "- times are each benchmark's minimum over its rounds; ratio = gpunn / peer (below 1: gpunn faster); "
        "the ratio of the medians shows how much of a ratio is run-to-run noise",
    ]
    return "\n".join(lines)


def markdown(results: dict, png_name: str | None = None) -> str:
    rows = entries(results)
    meta = results.get("gpunn_bench") or {}
    kind = "gpu" if meta.get("backend") == "cupy" else "cpu"
    parts = [f"# gpunn benchmark report ({kind.upper()})", "", header(results), "", table(rows), ""]
    if any(contended(g, p) for _, _, g, p in pairs(rows)):
        parts += [
            f"† other processes used more than {100 * QUIET:.0f}% of the CPUs while gpunn or the peer "
            "was timed (extra_info.other_load): that ratio is less trustworthy. PyTorch's 2-thread ops "
            "lose most when a core is taken, NumPy's 1-thread ops least.",
            "",
        ]
    judged = judge_targets(rows, kind)
    if judged:
        parts += ["## Targets", ""]
        parts += [f"- {'MET' if met else 'MISSED'} -- {desc}: {detail}" for desc, met, detail in judged]
        parts.append("")
    if png_name:
        parts += [f"![achieved rates and epoch times]({png_name})", ""]
    return "\n".join(parts)


def plot(results: dict, path: str) -> None:
    """Three panels: achieved GB/s vs bytes moved (memory-bound ops) and GFLOP/s vs FLOPs (compute-bound
    ops), each against this run's ceiling (one colour per op; solid gpunn, dashed the peer); and each
    training benchmark's time relative to gpunn's, the absolute times written on the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = entries(results)
    ceil = (results.get("gpunn_bench") or {}).get("ceilings") or {}
    training = ("mlp_epoch", "cnn_epoch", "mlp_step", "cnn_step")
    fig, axes = plt.subplots(1, 3, figsize=(19, 5.8))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, bound, xkey, ykey, ckey, label in (
        (axes[0], "memory", "bytes", "gbps", "copy_gbps", "GB/s"),
        (axes[1], "compute", "flops", "gflops", "matmul_gflops", "GFLOP/s"),
    ):
        series: dict = {}
        for r in rows:
            if r.get("bound") == bound and r["op"] not in training:
                series.setdefault((r["op"], r["impl"]), []).append((r[xkey], r[ykey]))
        ops = sorted({op for op, _ in series})
        for (op, impl), pts in sorted(series.items()):
            pts.sort()
            mine = impl.startswith("gpunn")
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                "-o" if mine else "--s",
                markersize=4,
                color=palette[ops.index(op) % len(palette)],
                label=f"{op} ({impl})",
                alpha=1 if mine else 0.7,
            )
        if ceil.get(ckey):
            ax.axhline(ceil[ckey], color="black", linestyle=":", label=f"ceiling {ceil[ckey]:.0f} {label}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("bytes moved per call (napkin count)" if bound == "memory" else "FLOPs per call")
        ax.set_ylabel(f"achieved {label}")
        ax.set_title(f"{bound}-bound ops: achieved {label} vs size")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    ax = axes[2]
    groups = [op for op in training if any(r["op"] == op and r["role"] == "gpunn" for r in rows)]
    x = 0.0
    ticks = []
    for op in groups:
        group = sorted((r for r in rows if r["op"] == op), key=lambda r: (r["role"] != "gpunn", r["impl"]))
        base = next(r["t"] for r in group if r["role"] == "gpunn")
        start = x
        for r in group:
            mine = r["role"] == "gpunn"
            ax.bar(
                x, r["t"] / base, 0.8, color=palette[0] if mine else "lightgray", edgecolor="black" if mine else "gray"
            )
            name = r["impl"].split("-", 2)[-1] if r["impl"].count("-") >= 2 else r["impl"]  # "preloaded"
            ax.annotate(f"{name}\n{fmt_time(r['t'])}", (x, r["t"] / base), ha="center", va="bottom", fontsize=7)
            x += 1
        ticks.append(((start + x - 1) / 2, op))
        x += 0.8
    ax.axhline(1.0, color=palette[0], linestyle=":")
    ax.set_xticks([t for t, _ in ticks], [op for _, op in ticks])
    ax.set_ylabel("time relative to gpunn (min over rounds)")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.15)
    ax.set_title("training: gpunn (blue) vs the PyTorch peers")
    meta = results.get("gpunn_bench") or {}
    fig.suptitle(
        f"gpunn bench: {meta.get('gpunn_impl', '?')} vs {meta.get('peer_impl', '?')}, "
        f"commit {meta.get('commit_short', '?')}, {meta.get('started', '')}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    ap.add_argument("results", help="a pytest-benchmark JSON file written by the bench suite")
    ap.add_argument("--md", help="markdown output (default: RESULTS with .md)")
    ap.add_argument("--png", help="plot output (default: RESULTS with .png)")
    ap.add_argument("--quiet", action="store_true", help="don't print the markdown")
    args = ap.parse_args(argv)
    results = load(args.results)
    stem = os.path.splitext(args.results)[0]
    md_path, png_path = args.md or stem + ".md", args.png or stem + ".png"
    plot(results, png_path)
    text = markdown(results, os.path.relpath(png_path, os.path.dirname(os.path.abspath(md_path))))
    with open(md_path, "w") as f:
        f.write(text.rstrip("\n") + "\n")
    if not args.quiet:
        print(text)
    print(f"wrote {md_path} and {png_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
