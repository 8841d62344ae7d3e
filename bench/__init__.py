"""gpunn's benchmark suite: gpunn against PyTorch and the measured hardware ceiling, side by side.

Run the CPU part with ``make bench``; the GPU part is the same files with ``GPUNN_BENCH_BACKEND=cupy``
(see ``bench/README.md``). ``python -m bench.report RESULTS.json`` turns a results file into a table
and a plot. Nothing here is collected by ``make test``.
"""
