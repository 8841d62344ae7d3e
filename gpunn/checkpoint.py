"""``gpunn.save`` / ``gpunn.load``: nested dicts of tensors and arrays in one ``.npz``, without pickle.

Format (version 1): a NumPy ``.npz`` (zip) holding one entry per array (``a0``, ``a1``, ...) and
``__gpunn__``, a UTF-8 JSON document stored as a uint8 array. The JSON mirrors the saved object, with
arrays replaced by ``{"__array__": "a0", "kind": "tensor"|"ndarray", "sha256": ...}``. Loading uses
``np.load(allow_pickle=False)`` and checks every array's digest, so a truncated or tampered file is
reported as such, never half-loaded. Writing goes to a temporary file in the same folder that is then
``os.replace``d over the target: a crash mid-write never leaves a half-written checkpoint.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile

import numpy as np

from gpunn._io import atomic_path

FORMAT = "gpunn-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt, or not a gpunn checkpoint."""


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).view(np.uint8).reshape(-1).data).hexdigest()


def _encode(obj, arrays: dict, where: str):
    from gpunn.tensor import Tensor

    if isinstance(obj, Tensor):
        host = obj._backend.to_numpy(obj._data)
        kind = "tensor"
    elif isinstance(obj, np.ndarray):
        host, kind = obj, "ndarray"
    elif type(obj).__module__.startswith("cupy"):
        host, kind = obj.get(), "ndarray"
    else:
        host = None
    if host is not None:
        if host.dtype.kind not in "biuf":
            raise TypeError(f"save(): {where}: arrays of dtype {host.dtype} can't be saved (numeric only)")
        key = f"a{len(arrays)}"
        arrays[key] = np.ascontiguousarray(host)
        return {"__array__": key, "kind": kind, "sha256": _digest(arrays[key])}
    if isinstance(obj, dict):
        for k in obj:
            if not isinstance(k, (str, int)):
                raise TypeError(f"save(): {where}: dict keys must be str or int, got {type(k).__name__}")
        # int keys (optimizer state) survive the JSON round trip through this tagged list
        return {"__dict__": [[k, _encode(v, arrays, f"{where}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(obj)],
                "tuple": isinstance(obj, tuple)}
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        if isinstance(obj, float) and not np.isfinite(obj):
            return {"__float__": repr(obj)}
        return obj
    raise TypeError(f"save(): {where}: objects of type {type(obj).__name__} can't be saved without pickle")


def save(obj, path) -> None:
    """Write ``obj`` (nested dicts/lists of Tensors, NumPy arrays, numbers, strings) to ``path``, atomically.

    >>> gpunn.save({"model": model.state_dict(), "epoch": 3}, "ckpt.npz")"""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"save(): the folder {folder!r} for {path!r} does not exist")
    arrays: dict[str, np.ndarray] = {}
    tree = _encode(obj, arrays, "obj")
    meta = json.dumps({"format": FORMAT, "version": VERSION, "tree": tree}).encode()
    arrays["__gpunn__"] = np.frombuffer(meta, dtype=np.uint8)
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _decode(node, npz, path, backend):
    if isinstance(node, dict):
        if "__array__" in node:
            key = node["__array__"]
            try:
                a = npz[key]
            except KeyError as exc:
                raise CheckpointError(f"checkpoint {path!r} is corrupt: array {key} is missing") from exc
            if a.dtype.kind not in "biuf":
                raise CheckpointError(f"checkpoint {path!r} is corrupt: array {key} has dtype {a.dtype}, "
                                      "but checkpoints hold numeric arrays only")
            if _digest(a) != node.get("sha256"):
                raise CheckpointError(f"checkpoint {path!r} is corrupt: array {key} does not match its "
                                      "checksum (the file was modified or damaged)")
            if node.get("kind") == "tensor":
                from gpunn.factories import as_tensor

                return as_tensor(a, backend=backend)
            return a
        if "__dict__" in node:
            return {k: _decode(v, npz, path, backend) for k, v in node["__dict__"]}
        if "__list__" in node:
            items = [_decode(v, npz, path, backend) for v in node["__list__"]]
            return tuple(items) if node.get("tuple") else items
        if "__float__" in node:
            return float(node["__float__"])
        raise CheckpointError(f"checkpoint {path!r} is corrupt: unknown node {sorted(node)}")
    return node


def load(path, backend=None):
    """Read a checkpoint written by ``gpunn.save``; tensors come back on ``backend`` (default: current).

    Raises ``FileNotFoundError`` for a missing file and ``CheckpointError`` (a ValueError) for a file that
    is truncated, tampered with, or not a gpunn checkpoint. Never unpickles anything."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load(): no checkpoint file at {path!r}")
    try:
        with open(path, "rb") as f:
            raw = f.read()
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            # gpunn.save never compresses: refusing compressed entries rules out decompression bombs,
            # since every array is then no larger than the file itself
            if any(info.compress_type != zipfile.ZIP_STORED for info in z.infolist()):
                raise CheckpointError(f"checkpoint {path!r} has compressed entries; gpunn checkpoints are "
                                      "stored uncompressed (was it written by another tool?)")
        npz = np.load(io.BytesIO(raw), allow_pickle=False)
        files = set(npz.files)
        if "__gpunn__" not in files:
            raise CheckpointError(f"checkpoint {path!r} is not a gpunn checkpoint (no __gpunn__ header)")
        meta = json.loads(bytes(npz["__gpunn__"]).decode())
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise CheckpointError(f"checkpoint {path!r} is not a gpunn checkpoint (bad header)")
        if meta.get("version") != VERSION:
            raise CheckpointError(f"checkpoint {path!r} has format version {meta.get('version')}, "
                                  f"this gpunn reads version {VERSION}")
        return _decode(meta["tree"], npz, path, backend)
    except CheckpointError:
        raise
    except RecursionError as exc:
        raise CheckpointError(f"checkpoint {path!r} is malformed: its structure is nested too deeply") from exc
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, UnicodeDecodeError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path!r} is truncated or corrupt "
                              f"({type(exc).__name__}: {exc})") from exc
