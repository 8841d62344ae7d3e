# The two commands of the quick start: `make train` and `make test`.
# Everything they need is installed here, into .venv, by the project's own files. `make train` installs
# only what training needs (the `train` extra); `make test` adds the test and lint tools and PyTorch.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# PyTorch is the semantic reference for the tests; here it resolves to the local CPU wheel.
# Set TORCH= (empty) to skip it: the tests that need it then skip.
TORCH  ?= torch==2.13.0

.PHONY: venv test train lint clean gpu-check bench bench-targets

# "pip>=23": editable installs from pyproject.toml alone; a no-op (no download) when pip is recent
$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet "pip>=23"

$(VENV)/.installed-train: pyproject.toml | $(PY)
	$(PIP) install --quiet -e ".[train]"
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.installed-train
	$(PIP) install --quiet -e ".[test,dev,mpi]"
	if [ -n "$(TORCH)" ]; then $(PIP) install --quiet "$(TORCH)" || echo "torch not installed: torch tests will skip"; fi
	touch $@

# the full development environment (training, tests, lint, bench)
venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q

train: $(VENV)/.installed-train
	mkdir -p runs
	$(VENV)/bin/gpunn train --dataset mnist-sample --model mlp --out runs/default

lint: venv
	$(VENV)/bin/ruff check gpunn tests bench tools
	$(VENV)/bin/ruff format --check gpunn tests bench tools

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache

# The benchmark suite (bench/): gpunn against PyTorch and the measured ceilings, validated before timed.
# Writes bench/results/<cpu|gpu>-<date>.json and, next to it, the report (.md) and plot (.png).
# BENCH_BACKEND=cupy runs the GPU suite (PyTorch on CUDA as the peer); BENCH_ARGS adds pytest options
# (e.g. BENCH_ARGS="-k mlp"). OPENBLAS_THREAD_TIMEOUT: see bench/conftest.py.
BENCH_BACKEND ?= numpy
BENCH_KIND    := $(if $(filter cupy,$(BENCH_BACKEND)),gpu,cpu)
BENCH_JSON    ?= bench/results/$(BENCH_KIND)-$(shell date -u +%Y%m%d).json
BENCH_ARGS    ?=

bench: venv
	mkdir -p $(dir $(BENCH_JSON))
	OPENBLAS_THREAD_TIMEOUT=4 GPUNN_BENCH_BACKEND=$(BENCH_BACKEND) \
	GPUNN_BENCH_COMMAND="make bench$(if $(filter-out numpy,$(BENCH_BACKEND)), BENCH_BACKEND=$(BENCH_BACKEND))$(if $(BENCH_ARGS), BENCH_ARGS='$(BENCH_ARGS)')" \
	$(PY) -m pytest bench -q -p no:cacheprovider --benchmark-json=$(BENCH_JSON) \
		--benchmark-max-time=1.0 --benchmark-min-rounds=5 --benchmark-columns=min,median,rounds $(BENCH_ARGS)
	$(PY) -m bench.report $(BENCH_JSON) --quiet
	@echo "report: $(BENCH_JSON:.json=.md)"

# issue 12's target table: gpunn and PyTorch interleaved in one process (bench/targets.py, bench/README.md)
bench-targets: venv
	OPENBLAS_THREAD_TIMEOUT=4 $(PY) -m bench.targets --out bench/results $(BENCH_ARGS)

# The GPU suite: on a machine with a GPU (CuPy, pytest; compute-sanitizer, PyTorch, pytest-benchmark where
# there) and no network. Installs nothing. The quick profile takes at most 8 minutes (README, "GPU"); each step
# appends to bench/results/gpu-<date>-<device>.json as it ends. GPU_CHECK_ARGS=--full runs everything.
# GPUNN_COMMIT names the commit when the checkout has no .git.
GPU_CHECK_ARGS ?= --quick
gpu-check:
	PYTHONPATH=$(CURDIR) $(PYTHON) tools/gpu_check.py $(GPU_CHECK_ARGS)
