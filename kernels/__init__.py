"""gpunn's CUDA C kernels, one ``<op>.cu`` per fused op; installed as the package ``gpunn._kernels``.

Loaded at run time by ``gpunn.backend.kernels`` (CuPy ``RawModule``); nothing here is Python code.
"""
