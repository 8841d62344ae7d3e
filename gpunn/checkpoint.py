"""``gpunn.save`` / ``gpunn.load``: nested dicts of tensors and arrays in one ``.npz``, without pickle.

``load`` also reads PyTorch's ``torch.save`` files (``.pt``/``.pth``, the zip format) through a
restricted reader, and safetensors files; ``save`` writes those formats too (``format=``, or from the
suffix: ``.pt``/``.pth`` -> PyTorch's, ``.safetensors`` -> safetensors, anything else -> gpunn's).
See ``gpunn.interop``.

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
        arrays[key] = np.asarray(host, order="C")  # (ascontiguousarray would make a 0-d array 1-d)
        return {"__array__": key, "kind": kind, "sha256": _digest(arrays[key])}
    if isinstance(obj, dict):
        for k in obj:
            if not isinstance(k, (str, int)):
                raise TypeError(f"save(): {where}: dict keys must be str or int, got {type(k).__name__}")
        # int keys (optimizer state) survive the JSON round trip through this tagged list
        return {"__dict__": [[k, _encode(v, arrays, f"{where}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {
            "__list__": [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(obj)],
            "tuple": isinstance(obj, tuple),
        }
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        if isinstance(obj, float) and not np.isfinite(obj):
            return {"__float__": repr(obj)}
        return obj
    raise TypeError(f"save(): {where}: objects of type {type(obj).__name__} can't be saved without pickle")


FORMATS = ("gpunn", "torch", "safetensors")
_SUFFIX_FORMATS = {".pt": "torch", ".pth": "torch", ".safetensors": "safetensors"}


def save(obj, path, format: str | None = None, *, metadata: dict | None = None) -> None:  # noqa: A002
    """Write ``obj`` (nested dicts/lists of Tensors, NumPy arrays, numbers, strings) to ``path``, atomically.

    ``format``: 'gpunn' (an .npz, no pickle), 'torch' (PyTorch's zip format: ``torch.load`` reads it) or
    'safetensors' (a flat dict of tensors; ``metadata`` a str -> str dict). Default: from the suffix
    (.pt/.pth -> torch, .safetensors -> safetensors), else gpunn.

    >>> gpunn.save({"model": model.state_dict(), "epoch": 3}, "ckpt.npz")
    >>> gpunn.save(model.state_dict(), "mnist_cnn.pt")             # torch.load("mnist_cnn.pt") reads it"""
    if hasattr(path, "write"):
        raise TypeError(
            "save(): pass a file path (gpunn writes checkpoints atomically: a temporary file, then "
            "a rename), not a file object"
        )
    path = os.fspath(path)
    if format is None:
        format = _SUFFIX_FORMATS.get(os.path.splitext(path)[1].lower(), "gpunn")  # noqa: A001
    if format not in FORMATS:
        raise ValueError(f"save(): format must be one of {FORMATS}, got {format!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"save(): the folder {folder!r} for {path!r} does not exist")
    if metadata is not None and format != "safetensors":
        raise ValueError("save(): metadata= is for format='safetensors'")
    if format == "torch":
        from gpunn.interop import write_torch

        return write_torch(obj, path)
    if format == "safetensors":
        from gpunn.interop import write_safetensors

        return write_safetensors(obj, path, metadata)
    arrays: dict[str, np.ndarray] = {}
    tree = _encode(obj, arrays, "obj")
    meta = json.dumps({"format": FORMAT, "version": VERSION, "tree": tree}).encode()
    arrays["__gpunn__"] = np.frombuffer(meta, dtype=np.uint8)
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return None


class _Entries:
    """The arrays of a checkpoint's zip, each read at most once and checked before it is allocated."""

    def __init__(self, raw: bytes, path: str) -> None:
        self.path, self.size = path, len(raw)
        self.zip = zipfile.ZipFile(io.BytesIO(raw))
        self.infos = {}
        for info in self.zip.infolist():
            if info.flag_bits & 0x1:
                raise CheckpointError(
                    f"checkpoint {path!r} has encrypted entries; gpunn checkpoints are never "
                    "encrypted (was it written by another tool?)"
                )
            # gpunn.save never compresses: refusing compressed entries rules out decompression bombs,
            # since every array is then no larger than the file itself
            if info.compress_type != zipfile.ZIP_STORED:
                raise CheckpointError(
                    f"checkpoint {path!r} has compressed entries; gpunn checkpoints are "
                    "stored uncompressed (was it written by another tool?)"
                )
            if info.filename.endswith(".npy"):
                self.infos[info.filename[:-4]] = info
        self.decoded: dict[str, np.ndarray] = {}
        self.decoded_bytes = 0

    def array(self, key) -> np.ndarray:
        """Entry ``key`` as an array; its declared size is checked against the entry before allocating."""
        if not isinstance(key, str) or key not in self.infos:
            raise CheckpointError(f"checkpoint {self.path!r} is corrupt: array {key!r} is missing")
        if key in self.decoded:  # the tree may name one array many times: decode it once
            return self.decoded[key]
        info = self.infos[key]
        with self.zip.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise CheckpointError(
                    f"checkpoint {self.path!r} is corrupt: array {key} has .npy version {version}, gpunn writes 1.0"
                )
            if dtype.hasobject or dtype.kind not in "biuf":
                raise CheckpointError(
                    f"checkpoint {self.path!r} is corrupt: array {key} has dtype {dtype}, "
                    "but checkpoints hold numeric arrays only"
                )
            declared = dtype.itemsize
            for n in shape:
                declared *= n
            stored = info.file_size - f.tell()
            if declared != stored:
                raise CheckpointError(
                    f"checkpoint {self.path!r} is corrupt: array {key} declares shape "
                    f"{shape} ({declared} bytes) but its entry holds {stored} bytes"
                )
            if self.decoded_bytes + declared > self.size:
                raise CheckpointError(
                    f"checkpoint {self.path!r} is corrupt: its arrays would decode to more "
                    f"bytes than the {self.size}-byte file holds"
                )
            data = f.read()  # reading to the end also checks the entry's CRC
        if len(data) != declared:
            raise CheckpointError(
                f"checkpoint {self.path!r} is truncated: array {key} has {len(data)} of {declared} bytes"
            )
        a = np.frombuffer(bytearray(data), dtype=dtype)
        a = a.reshape(shape[::-1]).T if fortran else a.reshape(shape)
        self.decoded[key] = a
        self.decoded_bytes += declared
        return a


def _decode(node, entries: _Entries, backend, memo: dict):
    path = entries.path
    if isinstance(node, dict):
        if "__array__" in node:
            key, kind = node["__array__"], node.get("kind")
            if kind not in ("tensor", "ndarray"):
                raise CheckpointError(f"checkpoint {path!r} is corrupt: array {key!r} has kind {kind!r}")
            if (key, kind) in memo:
                return memo[key, kind]
            a = entries.array(key)
            if _digest(a) != node.get("sha256"):
                raise CheckpointError(
                    f"checkpoint {path!r} is corrupt: array {key} does not match its "
                    "checksum (the file was modified or damaged)"
                )
            if kind == "tensor":
                from gpunn.factories import as_tensor

                a = as_tensor(a, backend=backend)
            memo[key, kind] = a
            return a
        if "__dict__" in node:
            items = node["__dict__"]
            if not isinstance(items, list) or not all(
                isinstance(e, list) and len(e) == 2 and isinstance(e[0], (str, int)) for e in items
            ):
                raise CheckpointError(f"checkpoint {path!r} is corrupt: a dict node is not a list of [key, value]")
            return {k: _decode(v, entries, backend, memo) for k, v in items}
        if "__list__" in node:
            if not isinstance(node["__list__"], list):
                raise CheckpointError(f"checkpoint {path!r} is corrupt: a list node does not hold a list")
            items = [_decode(v, entries, backend, memo) for v in node["__list__"]]
            return tuple(items) if node.get("tuple") else items
        if "__float__" in node:
            text = node["__float__"]
            if text not in ("nan", "inf", "-inf"):
                raise CheckpointError(f"checkpoint {path!r} is corrupt: bad float {text!r}")
            return float(text)
        raise CheckpointError(f"checkpoint {path!r} is corrupt: unknown node {sorted(node)}")
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    raise CheckpointError(f"checkpoint {path!r} is corrupt: a bare {type(node).__name__} in its tree")


def _load_gpunn(raw: bytes, path: str, backend):
    entries = _Entries(raw, path)
    if "__gpunn__" not in entries.infos:
        raise CheckpointError(f"checkpoint {path!r} is not a gpunn checkpoint (no __gpunn__ header)")
    meta = json.loads(entries.array("__gpunn__").tobytes().decode())
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path!r} is not a gpunn checkpoint (bad header)")
    if meta.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {path!r} has format version {meta.get('version')}, this gpunn reads version {VERSION}"
        )
    return _decode(meta.get("tree"), entries, backend, {})


def _detect(raw: bytes, path: str) -> str:
    """'gpunn', 'torch' or 'safetensors' from the file's first bytes (and a zip's entry names)."""
    if raw[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            names = z.namelist()
        if "__gpunn__.npy" not in names and any(n.endswith("data.pkl") for n in names):
            return "torch"
        return "gpunn"  # which says what is wrong with a zip that is neither
    if len(raw) >= 9 and raw[8:9] == b"{":
        return "safetensors"
    if raw[:1] == b"\x80" or raw[:2] == b"\x8a\x0a":
        raise CheckpointError(
            f"checkpoint {path!r} is in PyTorch's legacy (pre-1.6, non-zip) pickle format, "
            "which gpunn does not read; re-save it with a current torch.save"
        )
    raise CheckpointError(f"checkpoint {path!r} is not a gpunn, PyTorch or safetensors checkpoint")


def load(path, backend=None, *, map_location=None, weights_only=None, mmap=None):
    """Read a checkpoint written by ``gpunn.save``, by ``torch.save`` (the zip format), or a safetensors
    file; tensors come back on ``backend`` (or ``map_location``: 'cpu', 'cuda', a device; default: current).

    PyTorch files go through a restricted unpickler: tensors, storages of known dtypes and plain
    containers only, never code (so ``weights_only`` is always in effect). Raises ``FileNotFoundError``
    for a missing file and ``CheckpointError`` (a ValueError) for a file that is truncated, tampered with,
    crafted, or not a checkpoint. Every array's declared size is checked against the file before it is
    allocated, and the arrays together never decode to more bytes than the file holds."""
    if weights_only is False:
        raise ValueError(
            "load(): weights_only=False (arbitrary unpickling) is not supported: gpunn never runs "
            "code from a checkpoint file"
        )
    if map_location is not None and not isinstance(map_location, str) and type(map_location).__name__ != "device":
        raise TypeError(
            f"load(): map_location must be a device or a device string such as 'cpu', got {type(map_location).__name__}"
        )
    if map_location is not None and backend is None:
        from gpunn.device import backend_of

        backend = backend_of(map_location)  # an unavailable device raises here, before reading anything
    if hasattr(path, "read"):
        raw, path = path.read(), getattr(path, "name", "<file object>")
        if not isinstance(raw, bytes):
            raise TypeError("load(): the file object must be opened in binary mode")
    else:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"load(): no checkpoint file at {path!r}")
        with open(path, "rb") as f:
            raw = f.read()
    try:
        kind = _detect(raw, path)
        if kind == "gpunn":
            return _load_gpunn(raw, path, backend)
        from gpunn import interop
        from gpunn.factories import as_tensor

        def convert(a):
            return as_tensor(a, backend=backend)

        if kind == "torch":
            return interop.read_torch(raw, path, convert)
        return interop.read_safetensors(raw, path, convert)
    except CheckpointError:
        raise
    except RecursionError as exc:
        raise CheckpointError(f"checkpoint {path!r} is malformed: its structure is nested too deeply") from exc
    except Exception as exc:  # anything else a damaged or crafted file raises: say so, one type
        raise CheckpointError(f"checkpoint {path!r} is truncated or corrupt ({type(exc).__name__}: {exc})") from exc
