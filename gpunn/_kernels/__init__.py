"""Placeholder: lets setuptools discover the package name ``gpunn._kernels``.

In a built wheel this package is the top-level ``kernels/`` directory (``package-dir`` in
pyproject.toml maps it there), so it holds the CUDA sources ``*.cu`` and ``kernels/__init__.py``
replaces this file. In a source checkout ``gpunn.backend.kernels`` reads ``kernels/`` directly.
"""
