"""gpunn.autocast against PyTorch 2.13's CPU build: every autocast PyTorch disables (with its warnings) is a
no-op here too; an enabled autocast on a device gpunn computes on raises NotImplementedError on entry (PyTorch
would compute in float16/bfloat16 there); device types gpunn has no tensors on are recorded only.

Runs on the emulated cupy backend too (GPUNN_TEST_BACKEND=cupy), where CUDA counts as available."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import gpunn

torch = pytest.importorskip("torch")

CUDA = gpunn.cuda.is_available()


def _warnings_of(make):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        made = make()
    return made, [(w.category, str(w.message)) for w in caught]


def _categories(caught):
    return [category for category, _ in caught]


@pytest.mark.skipif(CUDA, reason="CUDA counts as available on this backend")
@pytest.mark.parametrize(
    "make",
    [
        lambda L: L.autocast("cuda"),
        lambda L: L.autocast(device_type="cuda", dtype=L.float16),
        lambda L: L.amp.autocast("cuda", dtype=L.float32),
        lambda L: L.cuda.amp.autocast(),
    ],
    ids=["autocast", "float16", "amp-float32", "cuda.amp"],
)
def test_cuda_autocast_without_cuda_warns_and_runs_in_float32_as_torch(make, rng):
    x = rng.standard_normal((9, 7)).astype(np.float32)
    w = rng.standard_normal((7, 5)).astype(np.float32)
    results = {}
    for L in (gpunn, torch):
        region, caught = _warnings_of(lambda: make(L))
        assert UserWarning in _categories(caught) and "Disabling autocast" in caught[-1][1]
        with region:
            assert L.is_autocast_enabled() is False and L.is_autocast_enabled("cuda") is False
            out = L.tensor(x) @ L.tensor(w)
        assert out.dtype == L.float32
        results[L.__name__] = out.numpy()
    np.testing.assert_allclose(results["gpunn"], results["torch"], rtol=1e-6, atol=1e-6)


def test_deprecated_spellings_warn_future_warning_first_as_torch():
    for L in (gpunn, torch):
        for make in (lambda: L.cuda.amp.autocast(enabled=False), lambda: L.cpu.amp.autocast(enabled=False)):
            region, caught = _warnings_of(make)
            assert _categories(caught) == [FutureWarning] and "deprecated" in caught[0][1]
            assert isinstance(region, L.amp.autocast)
    _, caught = _warnings_of(lambda: gpunn.cuda.amp.autocast())
    assert _categories(caught) == ([FutureWarning] if CUDA else [FutureWarning, UserWarning])


@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
def test_disabled_autocast_is_silent_and_changes_nothing(device_type):
    for L in (gpunn, torch):
        region, caught = _warnings_of(lambda: L.autocast(device_type, enabled=False))
        assert caught == []
        with region:
            assert L.is_autocast_enabled(device_type) is False
            assert (L.ones(2, 2) @ L.ones(2, 2)).dtype == L.float32


def test_cpu_autocast_with_a_dtype_torch_refuses_warns_and_disables():
    for L in (gpunn, torch):
        for dtype in (L.float32, L.float64):
            region, caught = _warnings_of(lambda: L.autocast("cpu", dtype=dtype))
            assert _categories(caught) == [UserWarning] and "Disabling autocast" in caught[0][1]
            with region:
                assert L.is_autocast_enabled("cpu") is False


@pytest.mark.parametrize("spelling", ["autocast", "amp", "float16", "cpu.amp", "decorator"])
def test_enabled_cpu_autocast_raises_instead_of_computing_in_another_precision(spelling):
    """PyTorch computes this region's matmuls in bfloat16 (checked below); gpunn cannot, so it refuses."""
    with torch.autocast("cpu"):
        assert torch.is_autocast_enabled("cpu") and (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        region = {
            "autocast": lambda: gpunn.autocast("cpu"),
            "amp": lambda: gpunn.amp.autocast(device_type="cpu"),
            "float16": lambda: gpunn.autocast("cpu", dtype=gpunn.float16),
            "cpu.amp": lambda: gpunn.cpu.amp.autocast(),
            "decorator": lambda: gpunn.autocast("cpu"),
        }[spelling]()
    ran = []
    with pytest.raises(NotImplementedError, match=r"autocast\(device_type='cpu'.*(bfloat16|float16)"):
        if spelling == "decorator":
            region(lambda: ran.append(1))()
        else:
            with region:
                ran.append(1)
    assert ran == [] and gpunn.is_autocast_enabled("cpu") is False


@pytest.mark.skipif(not CUDA, reason="needs gpunn.cuda.is_available() (a GPU or the emulated cupy backend)")
def test_enabled_cuda_autocast_raises_where_cuda_is_available():
    with pytest.raises(NotImplementedError, match=r"autocast\(device_type='cuda'.*float16"):
        with gpunn.autocast("cuda"):
            pass
    with gpunn.autocast("cuda", enabled=False):
        assert gpunn.is_autocast_enabled() is False


def test_a_device_type_gpunn_has_no_tensors_on_is_recorded_only_as_torch():
    for L in (gpunn, torch):
        region, caught = _warnings_of(lambda: L.autocast("mps"))
        assert caught == []
        with region:
            assert L.is_autocast_enabled("mps") is True
            with L.autocast("mps", enabled=False):
                assert L.is_autocast_enabled("mps") is False
            assert L.is_autocast_enabled("mps") is True
            assert (L.ones(2, 2) @ L.ones(2, 2)).dtype == L.float32
        assert L.is_autocast_enabled("mps") is False
        assert L.get_autocast_dtype("mps") == L.float16


def test_decorator_wraps_and_restores():
    for L in (gpunn, torch):

        @L.autocast("mps")
        def forward(x):
            """doc"""
            return L.is_autocast_enabled("mps"), x * 2

        enabled, y = forward(L.ones(3))
        assert forward.__name__ == "forward" and forward.__doc__ == "doc"
        assert enabled is True and L.is_autocast_enabled("mps") is False and y.tolist() == [2.0, 2.0, 2.0]
        with pytest.raises(TypeError, match="callable"):
            L.autocast("cpu", enabled=False)(3)


def test_bad_device_types_raise_as_torch():
    for L in (gpunn, torch):
        with pytest.raises(ValueError, match="device_type"):
            L.autocast(1)
        with pytest.raises(RuntimeError):
            L.autocast("tpu-v9")
        with pytest.raises(RuntimeError):
            L.is_autocast_enabled("tpu-v9")
    assert gpunn.amp.is_autocast_available("cuda") is torch.amp.is_autocast_available("cuda") is True


def test_autocast_defaults_and_queries_outside_any_region():
    for device_type in ("cpu", "cuda", "mps", "xpu"):
        assert gpunn.is_autocast_enabled(device_type) is torch.is_autocast_enabled(device_type) is False
    assert gpunn.is_autocast_enabled() is torch.is_autocast_enabled() is False
    assert gpunn.get_autocast_dtype("cuda") == gpunn.float16 and torch.get_autocast_dtype("cuda") == torch.float16
    assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    with pytest.raises(NotImplementedError, match="bfloat16"):
        gpunn.get_autocast_dtype("cpu")


def _scaled_function(L, fwd_decorator, bwd_decorator, seen):
    class Twice(L.autograd.Function):
        @staticmethod
        @fwd_decorator
        def forward(ctx, x):
            seen.append(("forward", L.is_autocast_enabled("mps")))
            return x * 2

        @staticmethod
        @bwd_decorator
        def backward(ctx, grad):
            seen.append(("backward", L.is_autocast_enabled("mps")))
            return grad * 2

    return Twice


@pytest.mark.parametrize("cast_inputs", [None, "float32"])
def test_custom_fwd_and_bwd_record_and_replay_the_autocast_state_as_torch(cast_inputs):
    seen = {}
    for L in (gpunn, torch):
        seen[L] = []
        fwd = L.amp.custom_fwd(device_type="mps", cast_inputs=None if cast_inputs is None else L.float32)
        Twice = _scaled_function(L, fwd, L.amp.custom_bwd(device_type="mps"), seen[L])
        x = L.ones(3, requires_grad=True)
        with L.autocast("mps"):
            y = Twice.apply(x)
        y.sum().backward()
        assert x.grad.tolist() == [2.0, 2.0, 2.0]
    assert seen[gpunn] == seen[torch] == [("forward", cast_inputs is None), ("backward", cast_inputs is None)]


def test_deprecated_custom_fwd_and_bwd_warn_and_pass_gradients():
    for L in (gpunn, torch):
        with pytest.warns(FutureWarning, match="deprecated"):
            fwd = L.cuda.amp.custom_fwd(cast_inputs=L.float32)
        with pytest.warns(FutureWarning, match="deprecated"):
            Twice = _scaled_function(L, fwd, L.cuda.amp.custom_bwd, [])
        x = L.ones(3, requires_grad=True)
        Twice.apply(x).sum().backward()
        assert x.grad.tolist() == [2.0, 2.0, 2.0]


def test_bf16_query_scripts_pick_their_amp_dtype_with():
    assert gpunn.cuda.is_bf16_supported() is False and torch.cuda.is_bf16_supported() is False
