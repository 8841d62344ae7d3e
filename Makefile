# The two commands of the quick start: `make train` and `make test`.
# Everything they need is installed here, into .venv, by the project's own files.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# PyTorch is the semantic reference for the tests; here it resolves to the local CPU wheel.
# Set TORCH= (empty) to skip it: the tests that need it then skip.
TORCH  ?= torch==2.13.0

.PHONY: venv test train lint clean gpu-check

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e ".[test,dev]"
	if [ -n "$(TORCH)" ]; then $(PIP) install --quiet "$(TORCH)" || echo "torch not installed: torch tests will skip"; fi
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q

train: venv
	$(VENV)/bin/gpunn train --dataset mnist-sample --model mlp --out runs/default

lint: venv
	$(VENV)/bin/ruff check gpunn tests bench

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache

# The GPU suite: on a machine with a GPU (CuPy, numba-cuda, pytest, pytest-benchmark already there) and no
# network. Installs nothing; writes bench/results/gpu-<date>-<device>.json. GPUNN_COMMIT names the commit
# when the checkout has no .git.
gpu-check:
	PYTHONPATH=$(CURDIR) $(PYTHON) tools/gpu_check.py
