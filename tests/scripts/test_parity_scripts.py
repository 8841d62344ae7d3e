"""The parity sweep as a regression test: short programs in the style of the PyTorch tutorials, pytorch/examples
and course notes (tests/scripts/parity: linear and logistic regression, an MLP with DataLoader, StepLR and
state_dict save/load, a CNN with BatchNorm and CosineAnnealingLR, makemore's bigram and embedding MLP, an
attention block with LayerNorm/GELU/AdamW/clip_grad_norm_, the VAE, the polynomial regression, a DCGAN step,
the word language model with LSTM/GRU, time_sequence_prediction with LSTMCell and LBFGS) each run once under
``torch`` and once under ``gpunn`` (``python s.py torch|gpunn``: ``import gpunn as torch`` is the only change).
Every number and True/False they print must agree (numbers to float32 training drift: rtol 1e-4); the line
counts too. Weights are set from NumPy, since the two libraries' random generators differ."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent / "parity"
ROOT = HERE.parents[2]
SCRIPTS = sorted(p.name for p in HERE.glob("s*.py"))
TOKEN = re.compile(r"-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|True|False|nan|inf")


def _run(script: str, lib: str, cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(HERE / script), lib], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )
    assert proc.returncode == 0, f"{script} under {lib} failed:\n{proc.stderr[-3000:]}"
    return proc.stdout


def _tokens(line: str) -> list:
    line = re.sub(r"(torch|gpunn)\.(float|int)(16|32|64)", "", line)  # dtype names print differently
    return TOKEN.findall(line)


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_prints_torchs_numbers(script, tmp_path):
    torch_out, gpunn_out = _run(script, "torch", tmp_path), _run(script, "gpunn", tmp_path)
    t_lines, g_lines = torch_out.splitlines(), gpunn_out.splitlines()
    assert len(g_lines) == len(t_lines), f"{len(g_lines)} lines, torch printed {len(t_lines)}:\n{gpunn_out}"
    for k, (t, g) in enumerate(zip(t_lines, g_lines)):
        tt, gt = _tokens(t), _tokens(g)
        assert len(tt) == len(gt), f"line {k}: torch {t!r}, gpunn {g!r}"
        for a, b in zip(tt, gt):
            if a in ("True", "False", "nan", "inf") or b in ("True", "False", "nan", "inf"):
                assert a == b, f"line {k}: torch {t!r}, gpunn {g!r}"
            else:
                np.testing.assert_allclose(float(b), float(a), rtol=1e-4, atol=1e-5, err_msg=f"line {k}: {t!r} / {g!r}")
