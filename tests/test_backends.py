"""gpunn.backends against torch.backends on PyTorch's CPU build: the cuDNN flags, the TF32 switch and the
MPS query scripts use, their defaults, their bool checks and their import spellings."""

from __future__ import annotations

import importlib

import pytest

import gpunn

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _restore_flags():
    yield
    for L in (gpunn, torch):
        L.backends.cudnn.enabled, L.backends.cudnn.benchmark, L.backends.cudnn.deterministic = True, False, False
        L.backends.cudnn.allow_tf32 = True
        L.set_float32_matmul_precision("highest")


def test_cudnn_imports_as_a_module_both_ways():
    module = importlib.import_module("gpunn.backends.cudnn")
    from gpunn.backends import cudnn

    assert module is cudnn is gpunn.backends.cudnn


@pytest.mark.parametrize("flag", ["enabled", "benchmark", "deterministic", "allow_tf32"])
def test_cudnn_flags_default_set_and_check_bools_as_torch(flag):
    assert getattr(gpunn.backends.cudnn, flag) is getattr(torch.backends.cudnn, flag)
    for L in (gpunn, torch):
        new = not getattr(L.backends.cudnn, flag)
        setattr(L.backends.cudnn, flag, new)
        assert getattr(L.backends.cudnn, flag) is new
        with pytest.raises(RuntimeError, match="expects a bool"):
            setattr(L.backends.cudnn, flag, 1)
        assert getattr(L.backends.cudnn, flag) is new


def test_cudnn_queries_answer_as_pytorchs_cpu_build():
    for name in ("is_available", "version"):
        assert getattr(gpunn.backends.cudnn, name)() == getattr(torch.backends.cudnn, name)()
    assert gpunn.backends.cudnn.is_available() is False and gpunn.backends.cudnn.version() is None


def test_cudnn_flags_context_restores():
    for L in (gpunn, torch):
        with L.backends.cudnn.flags(enabled=False, benchmark=True, deterministic=True):
            assert (L.backends.cudnn.enabled, L.backends.cudnn.benchmark, L.backends.cudnn.deterministic) == (
                False,
                True,
                True,
            )
        assert (L.backends.cudnn.enabled, L.backends.cudnn.benchmark, L.backends.cudnn.deterministic) == (
            True,
            False,
            False,
        )


def test_mps_queries():
    for name in ("is_available", "is_built"):
        assert getattr(gpunn.backends.mps, name)() is getattr(torch.backends.mps, name)() is False


def test_matmul_tf32_switch_is_linked_to_the_float32_precision_as_torch():
    matmul = gpunn.backends.cuda.matmul
    assert matmul.allow_tf32 is torch.backends.cuda.matmul.allow_tf32 is False
    assert gpunn.get_float32_matmul_precision() == torch.get_float32_matmul_precision() == "highest"
    for precision, tf32 in (("high", True), ("medium", True), ("highest", False)):
        gpunn.set_float32_matmul_precision(precision)
        assert gpunn.get_float32_matmul_precision() == precision and matmul.allow_tf32 is tf32
    matmul.allow_tf32 = True
    assert gpunn.get_float32_matmul_precision() == "high"
    for flag in ("allow_fp16_reduced_precision_reduction", "allow_bf16_reduced_precision_reduction"):
        assert getattr(matmul, flag) is getattr(torch.backends.cuda.matmul, flag) is True
    for L in (gpunn, torch):
        with pytest.raises(RuntimeError, match="expects a bool"):
            L.backends.cuda.matmul.allow_tf32 = 1
        with pytest.raises(AttributeError):
            L.backends.cuda.matmul.no_such_flag = True


def test_float32_matmul_precision_rejects_what_torch_rejects():
    for L in (gpunn, torch):
        with pytest.warns(UserWarning, match="not one of"):
            L.set_float32_matmul_precision("HIGHEST")
        assert L.get_float32_matmul_precision() == "highest"
        with pytest.raises(RuntimeError, match="expects a str"):
            L.set_float32_matmul_precision(1)
