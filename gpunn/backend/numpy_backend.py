"""The NumPy backend: the CPU path, always available, and the reference for every GPU kernel."""

from __future__ import annotations

import numpy as np

from gpunn.backend.base import Backend


class NumpyBackend(Backend):
    name = "numpy"
    xp = np
