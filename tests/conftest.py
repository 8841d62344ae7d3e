import os

import numpy as np
import pytest

import gpunn


@pytest.fixture(autouse=True)
def _seeded_numpy_backend():
    """Every test starts on the numpy backend (unless GPUNN_TEST_BACKEND says otherwise), seeded."""
    name = os.environ.get("GPUNN_TEST_BACKEND", "numpy")
    with gpunn.use_backend(name):
        gpunn.manual_seed(0)
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def pytest_collection_modifyitems(config, items):
    ok = gpunn.cupy_available()[0]
    skip_gpu = pytest.mark.skip(reason="needs a usable CUDA GPU and CuPy")
    for item in items:
        if "gpu" in item.keywords and not ok:
            item.add_marker(skip_gpu)
