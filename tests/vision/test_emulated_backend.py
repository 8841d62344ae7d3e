"""The loader, the samplers and the vision transforms again with every test's tensors on the cupy backend
(GPUNN_TEST_BACKEND=cupy), through the CPU stand-in for CuPy (tests/kernels/emulator.py): the batch
transforms and the loader's device-side gathers run on ``cupy`` arrays there. A subprocess, as in
tests/kernels/test_emulated.py, so the stand-in never leaks into this process."""

from __future__ import annotations

import pytest

from tests.kernels import emulator


@pytest.mark.slow
@emulator.available
def test_data_and_vision_suites_on_the_emulated_cupy_backend(tmp_path):
    suites = ["tests/vision/test_transforms.py", "tests/vision/test_datasets.py", "tests/utils"]
    # the CLI test trains a model (its Numba accuracy kernel needs a real driver)
    emulator.run_pytest(tmp_path, "cupy", [*suites, "-k", "not cli"], timeout=900)


@pytest.mark.slow
@emulator.available
def test_resnet_on_the_emulated_cupy_backend(tmp_path):
    """The ResNet parity tests for resnet18 (float64 and float32, stage by stage in training mode), the checkpoint
    load and the siamese surgery with the model on the cupy backend: its conv, pooling and batch-norm paths."""
    select = "resnet18 and (forward or each_block) or checkpoint or siamese or zero_init"
    emulator.run_pytest(tmp_path, "cupy", ["tests/vision/test_models.py", "-k", select], timeout=900)
