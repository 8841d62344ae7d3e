"""docs/pytorch-compat.md: every name it lists as supported exists (and so does a real torch counterpart,
so the page can't list a name PyTorch does not have)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import gpunn
import gpunn.nn.functional as F
from gpunn import nn, optim

DOC = Path(__file__).resolve().parents[1] / "docs" / "pytorch-compat.md"
NAME = re.compile(r"`((?:gpunn|Tensor|F|nn|optim)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)`")
ROOTS = {"gpunn": gpunn, "Tensor": gpunn.Tensor, "F": F, "nn": nn, "optim": optim}


def _supported_names() -> list[str]:
    text = DOC.read_text()
    supported = text.split("## Known differences")[0]
    return sorted(set(NAME.findall(supported)))


def _resolve(root, path):
    obj = root
    for part in path:
        obj = getattr(obj, part)
    return obj


def test_the_page_lists_many_names():
    assert len(_supported_names()) > 250


@pytest.mark.parametrize("name", _supported_names())
def test_every_listed_name_exists(name):
    root, *path = name.split(".")
    _resolve(ROOTS[root], path)


@pytest.mark.parametrize("name", _supported_names())
def test_every_listed_name_is_pytorchs(name):
    torch = pytest.importorskip("torch")
    roots = {"gpunn": torch, "Tensor": torch.Tensor, "F": torch.nn.functional, "nn": torch.nn, "optim": torch.optim}
    root, *path = name.split(".")
    if name in ("gpunn.gradcheck",):  # torch.autograd.gradcheck
        path = ["autograd", "gradcheck"]
    if name in ("gpunn.cuda.manual_seed",) or path == ["cuda", "current_device"]:
        return  # exist in torch but initialise CUDA on a CPU build
    _resolve(roots[root], path)
