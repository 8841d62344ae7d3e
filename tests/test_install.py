"""What `make train` installs (training only: no PyTorch, test or lint tools), what `make test` adds, and
CI running lint before the README's test command. Read from the project's own files with `make -n`."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOT_FOR_TRAINING = {"torch", "pytest", "pytest-benchmark", "ruff", "numba-cuda", "nvidia-cuda-nvrtc"}


def _extras():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _names(reqs):
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in reqs}


def test_the_train_extra_holds_training_needs_only():
    train = _names(_extras()["train"])
    assert {"mlxtend", "scikit-learn", "matplotlib", "tqdm", "numba"} <= train
    assert not train & NOT_FOR_TRAINING


def _dry_run(target):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # -B: as on a fresh clone (every step due); -n: print the commands, run nothing
    out = subprocess.run(
        ["make", "-n", "-B", target, "VENV=/nonexistent/venv"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return out.stdout


def test_make_train_installs_only_the_train_extra():
    commands = _dry_run("train")
    assert '.[train]"' in commands
    for word in ("[test", "dev]", "torch", "pytest", "ruff"):
        assert word not in commands, word


def test_make_test_adds_the_test_tools_and_torch():
    commands = _dry_run("test")
    assert '.[train]"' in commands and '".[test,dev,mpi]"' in commands and "torch==2.13.0" in commands


def test_ci_lints_then_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme
    lines = [ln.strip() for ln in ci.splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines.index("make lint") < lines.index("make test")
    lint = subprocess.run(
        ["make", "-n", "-B", "lint", "VENV=/nonexistent/venv"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    assert "ruff check" in lint and "ruff format --check" in lint
