"""Checkpoint files other tools read and write: PyTorch's ``torch.save`` zip format and safetensors.

PyTorch format (what ``torch.save`` writes since 1.6): a zip archive, entries stored uncompressed under
one folder ``<stem>/``: ``data.pkl`` (a pickle of the object, protocol 2), ``data/<key>`` (one raw
little-endian storage per key), ``version``, ``byteorder``. In the pickle a tensor is
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`` and a storage a
persistent id ``('storage', torch.<Type>Storage, key, location, numel)``.

- ``read_torch`` unpickles with an allow-list: those rebuild functions (and ``_rebuild_parameter``), the
  storage types of known dtypes and ``collections.OrderedDict``; every other global is refused, so no
  code runs. Every storage's size, and every tensor's extent within its storage, is checked before use.
- ``write_torch`` emits the pickle opcodes itself (PyTorch need not be installed): dicts, lists, tuples,
  str, int, float, bool, None and tensors/arrays of the dtypes below.

safetensors: an 8-byte little-endian header length N, N bytes of JSON ``{name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {...}}``, then the raw little-endian data. A flat dict of
tensors only.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zipfile
from collections import OrderedDict

import numpy as np

from gpunn._io import atomic_path
from gpunn.checkpoint import CheckpointError

# torch storage class name <-> NumPy dtype (bfloat16 is read as float32: NumPy has no bfloat16)
_STORAGES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
    "BFloat16Storage": "bfloat16",
    "UntypedStorage": np.uint8,
}
_STORAGE_OF = {np.dtype(v): k for k, v in _STORAGES.items() if k not in ("BFloat16Storage", "UntypedStorage")}
_ST_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": "bfloat16",
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
_ST_NAME = {np.dtype(v): k for k, v in _ST_DTYPES.items() if k != "BF16"}
_MAX_HEADER = 100 << 20


def _itemsize(dt) -> int:
    return 2 if isinstance(dt, str) else np.dtype(dt).itemsize


def _from_bytes(buf, dt, count: int, byteorder: str = "little") -> np.ndarray:
    """``count`` elements of ``dt`` from ``buf`` (a copy); bfloat16 widened to float32 exactly."""
    if isinstance(dt, str):  # bfloat16: the high half of a float32
        raw = np.frombuffer(buf, dtype="<u2" if byteorder == "little" else ">u2", count=count)
        return (raw.astype(np.uint32) << 16).view(np.float32)
    d = np.dtype(dt).newbyteorder("<" if byteorder == "little" else ">")
    return np.frombuffer(buf, dtype=d, count=count).astype(np.dtype(dt), copy=True)


def _host(value, where: str):
    """A tensor or array as a C-contiguous NumPy array (None if ``value`` is neither)."""
    from gpunn.tensor import Tensor

    if isinstance(value, Tensor):
        return np.asarray(value._backend.to_numpy(value._data), order="C")
    if isinstance(value, np.ndarray):
        return np.asarray(value, order="C")
    if type(value).__module__.startswith("cupy"):
        return np.asarray(value.get(), order="C")
    return None


def _to_tensors(obj, convert, depth: int = 0, memo: dict | None = None):
    """Replace every loaded array in a tree of dicts/lists/tuples by ``convert(array)``; refuse anything else.
    Shared objects (a pickle may reference one object many times) are converted once, so a crafted
    "billion laughs" structure costs time linear in the file, and stay shared, as in PyTorch."""
    if depth > 200:
        raise CheckpointError("the checkpoint's structure is nested too deeply")
    memo = {} if memo is None else memo
    key = id(obj)
    if key in memo:
        return memo[key][1]
    if isinstance(obj, _Loaded):
        a = obj.array
        if type(a) is not np.ndarray or a.dtype.kind not in "biuf":
            raise CheckpointError("the checkpoint's pickle altered a tensor into something else")
        out = convert(a)
    elif isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, type(None))):
                raise CheckpointError(f"the checkpoint has a dict key of type {type(k).__name__}")
            items.append((k, _to_tensors(v, convert, depth + 1, memo)))
        out = OrderedDict(items) if isinstance(obj, OrderedDict) else dict(items)
    elif isinstance(obj, list):
        out = [_to_tensors(v, convert, depth + 1, memo) for v in obj]
    elif isinstance(obj, tuple):
        out = tuple(_to_tensors(v, convert, depth + 1, memo) for v in obj)
    elif obj is None or isinstance(obj, (str, int, float, bool, bytes)):
        return obj
    else:
        raise CheckpointError(f"the checkpoint holds an object of type {type(obj).__name__}, which gpunn does not load")
    memo[key] = (obj, out)  # obj kept alive so its id is not reused while converting
    return out


# ------------------------------------------------------------------------------------------------
# PyTorch zip format: reading
# ------------------------------------------------------------------------------------------------
class _Loaded:
    """A tensor rebuilt from the pickle (kept opaque until the whole pickle is read)."""

    __slots__ = ("array",)

    def __init__(self, array) -> None:
        self.array = array


class _StorageType:
    __slots__ = ("name", "dtype")

    def __init__(self, name: str) -> None:
        self.name, self.dtype = name, _STORAGES[name]


class _Storage:
    __slots__ = ("data", "dtype")

    def __init__(self, data: np.ndarray, dtype) -> None:
        self.data, self.dtype = data, dtype


def _int(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise CheckpointError(f"the checkpoint's {what} is not an int ({type(v).__name__})")
    return v


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored, reserve=None) -> _Loaded:
    """torch._utils._rebuild_tensor(_v2): a view (offset, size, stride) of a storage, copied out;
    ``reserve(nbytes)`` is told the copy's size before it is made (and may refuse it)."""
    if not isinstance(storage, _Storage):
        raise CheckpointError("the checkpoint rebuilds a tensor from something that is not a storage")
    if not isinstance(size, tuple) or not isinstance(stride, tuple) or len(size) != len(stride) or len(size) > 64:
        raise CheckpointError("the checkpoint has a tensor with a malformed size/stride")
    offset = _int(storage_offset, "storage offset")
    size = tuple(_int(s, "tensor size") for s in size)
    stride = tuple(_int(s, "tensor stride") for s in stride)
    n = storage.data.size
    if reserve is not None:
        count = 1
        for d in size:
            count *= max(d, 0)
        reserve(count * storage.data.itemsize)
    if offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise CheckpointError("the checkpoint has a tensor with a negative size, stride or offset")
    if 0 not in size:
        last = offset + sum((s - 1) * st for s, st in zip(size, stride))
        if last >= n:
            raise CheckpointError(f"the checkpoint has a tensor reaching element {last} of a storage of {n}")
        base = storage.data
        view = np.lib.stride_tricks.as_strided(
            base[offset:], shape=size, strides=tuple(st * base.itemsize for st in stride), writeable=False
        )
        return _Loaded(np.array(view, copy=True))
    return _Loaded(np.zeros(size, dtype=storage.data.dtype))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None) -> _Loaded:
    if not isinstance(data, _Loaded):
        raise CheckpointError("the checkpoint rebuilds a parameter from something that is not a tensor")
    return data


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the allow-listed globals; storages come from the archive, size-checked."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, byteorder: str, path: str) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.byteorder, self.path = archive, prefix, byteorder, path
        self.storages: dict = {}
        self.loaded_bytes = 0
        self.tensor_bytes = 0
        self.tensor_budget = 8 * archive.fp.getbuffer().nbytes + (1 << 20)  # shared storages: a few x at most

    def find_class(self, module, name):
        if module == "torch" and name in _STORAGES:
            return _StorageType(name)
        fn = _ALLOWED.get((module, name))
        if fn is None:
            raise CheckpointError(
                f"checkpoint {self.path!r} refers to {module}.{name}, which the restricted "
                "reader does not allow (it loads tensors and plain containers only, and never "
                "runs code from a file)"
            )
        if fn is _rebuild_tensor:
            return self._counted_rebuild
        return fn

    def _counted_rebuild(self, *args) -> _Loaded:
        """_rebuild_tensor, with the tensors' total size capped: many tensors viewing one storage (or a
        stride-0 view) could otherwise decode a small file into far more memory than it holds."""
        return _rebuild_tensor(*args, reserve=self._reserve)

    def _reserve(self, nbytes: int) -> None:
        self.tensor_bytes += nbytes
        if self.tensor_bytes > self.tensor_budget:
            raise CheckpointError(
                f"checkpoint {self.path!r} decodes to more than {self.tensor_budget} bytes of "
                "tensors, far more than the file holds (overlapping views): refused"
            )

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage" or not isinstance(pid[1], _StorageType):
            raise CheckpointError(f"checkpoint {self.path!r} has an unknown persistent id {pid!r:.80}")
        _, stype, key, _location, numel = pid
        if not isinstance(key, str) or not key.isalnum():
            raise CheckpointError(f"checkpoint {self.path!r} has a bad storage key {key!r:.40}")
        numel = _int(numel, "storage size")
        if key in self.storages:
            return self.storages[key]
        name = f"{self.prefix}data/{key}"
        try:
            info = self.archive.getinfo(name)
        except KeyError:
            raise CheckpointError(f"checkpoint {self.path!r} is corrupt: storage {name} is missing") from None
        nbytes = numel * _itemsize(stype.dtype)
        if numel < 0 or info.file_size != nbytes:
            raise CheckpointError(
                f"checkpoint {self.path!r} is corrupt: storage {name} holds {info.file_size} "
                f"bytes, its {stype.name} of {numel} elements needs {nbytes}"
            )
        data = self.archive.read(name)  # checks the entry's CRC
        self.loaded_bytes += len(data)
        st = _Storage(_from_bytes(data, stype.dtype, numel, self.byteorder), stype.dtype)
        self.storages[key] = st
        return st


def _check_entries(archive: zipfile.ZipFile, path: str, size: int) -> None:
    total = 0
    for info in archive.infolist():
        if info.flag_bits & 0x1:
            raise CheckpointError(f"checkpoint {path!r} has encrypted entries")
        if info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(
                f"checkpoint {path!r} has compressed entries; torch.save stores them "
                "uncompressed (refused: a compressed entry could decode to far more than the file)"
            )
        total += info.file_size
    if total > size:
        raise CheckpointError(f"checkpoint {path!r} is corrupt: its entries claim more bytes than the file holds")


def read_torch(raw: bytes, path: str, convert):
    """The object in a ``torch.save`` zip archive, tensors passed through ``convert(ndarray)``."""
    archive = zipfile.ZipFile(io.BytesIO(raw))
    _check_entries(archive, path, len(raw))
    pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") <= 1]
    if len(pickles) != 1:
        raise CheckpointError(
            f"checkpoint {path!r} is not a PyTorch archive (expected one <name>/data.pkl, found {len(pickles)})"
        )
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = "little"
    if f"{prefix}byteorder" in archive.namelist():
        byteorder = archive.read(f"{prefix}byteorder").decode(errors="replace").strip()
        if byteorder not in ("little", "big"):
            raise CheckpointError(f"checkpoint {path!r} has an unknown byte order {byteorder!r:.20}")
    unpickler = _RestrictedUnpickler(archive.read(pickles[0]), archive, prefix, byteorder, path)
    obj = unpickler.load()
    return _to_tensors(obj, convert)


# ------------------------------------------------------------------------------------------------
# PyTorch zip format: writing (the pickle opcodes, emitted directly)
# ------------------------------------------------------------------------------------------------
class _PickleWriter:
    """Protocol-2 opcodes for plain containers and tensors (as torch._utils._rebuild_tensor_v2)."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.storages: list[np.ndarray] = []

    def _global(self, module: str, name: str) -> None:
        self.out.write(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def _ordered_dict(self) -> None:
        self._global("collections", "OrderedDict")
        self.out.write(b")R")  # OrderedDict()

    def dump(self, obj) -> bytes:
        self.out.write(b"\x80\x02")
        self.write(obj, "obj", 0)
        self.out.write(b".")
        return self.out.getvalue()

    def write(self, obj, where: str, depth: int) -> None:
        w = self.out.write
        if depth > 200:
            raise ValueError(f"save(): {where}: nested too deeply")
        host = _host(obj, where)
        if host is not None:
            return self._tensor(host, where)
        if obj is None:
            w(b"N")
        elif obj is True or obj is np.True_:
            w(b"\x88")
        elif obj is False or obj is np.False_:
            w(b"\x89")
        elif isinstance(obj, (int, np.integer)):
            v = int(obj)
            if -(2**31) <= v < 2**31:
                w(b"J" + struct.pack("<i", v))
            else:
                b = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
                if len(b) > 255:
                    raise ValueError(f"save(): {where}: integer too large")
                w(b"\x8a" + bytes([len(b)]) + b)
        elif isinstance(obj, (float, np.floating)):
            w(b"G" + struct.pack(">d", float(obj)))
        elif isinstance(obj, str):
            b = obj.encode("utf-8", "surrogatepass")
            w(b"X" + struct.pack("<I", len(b)) + b)
        elif isinstance(obj, dict):
            if isinstance(obj, OrderedDict) or type(obj) is not dict:
                self._ordered_dict()
            else:
                w(b"}")
            if obj:
                w(b"(")
                for k, v in obj.items():
                    if not isinstance(k, (str, int)) or isinstance(k, bool):
                        raise TypeError(f"save(): {where}: dict keys must be str or int, got {type(k).__name__}")
                    self.write(k, where, depth + 1)
                    self.write(v, f"{where}.{k}", depth + 1)
                w(b"u")
        elif isinstance(obj, list):
            w(b"]")
            if obj:
                w(b"(")
                for i, v in enumerate(obj):
                    self.write(v, f"{where}[{i}]", depth + 1)
                w(b"e")
        elif isinstance(obj, tuple):
            if not obj:
                w(b")")
            else:
                w(b"(")
                for i, v in enumerate(obj):
                    self.write(v, f"{where}[{i}]", depth + 1)
                w(b"t")
        else:
            raise TypeError(
                f"save(): {where}: objects of type {type(obj).__name__} can't be saved in PyTorch's "
                "format (tensors, arrays, numbers, strings, None and dicts/lists/tuples of them)"
            )

    def _tensor(self, a: np.ndarray, where: str) -> None:
        name = _STORAGE_OF.get(a.dtype)
        if name is None:
            raise TypeError(f"save(): {where}: arrays of dtype {a.dtype} have no PyTorch storage type")
        key = str(len(self.storages))
        self.storages.append(a)
        self._global("torch._utils", "_rebuild_tensor_v2")
        self.out.write(b"((")  # the args tuple, then the persistent id tuple
        self.write("storage", where, 0)
        self._global("torch", name)
        self.write(key, where, 0)
        self.write("cpu", where, 0)
        self.write(int(a.size), where, 0)
        self.out.write(b"tQ")
        self.write(0, where, 0)  # storage offset
        self.write(tuple(int(s) for s in a.shape), where, 0)
        strides, acc = [], 1
        for s in reversed(a.shape):
            strides.append(acc)
            acc *= int(s)
        self.write(tuple(reversed(strides)), where, 0)
        self.out.write(b"\x89")  # requires_grad=False
        self._ordered_dict()  # backward hooks
        self.out.write(b"tR")


def _aligned_entry(archive: zipfile.ZipFile, name: str, data: bytes, align: int = 64) -> None:
    """A stored entry whose data starts at a multiple of ``align`` in the file (as torch.save aligns),
    padded through the local header's extra field."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    start = archive.fp.tell() + 30 + len(name.encode())
    pad = (-(start + 4)) % align
    info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # extra field id "FB", as PyTorch writes
    archive.writestr(info, data)


def write_torch(obj, path: str) -> None:
    """``obj`` in PyTorch's zip format, readable by ``torch.load`` (``weights_only=True`` too)."""
    writer = _PickleWriter()
    pkl = writer.dump(obj)
    stem = os.path.splitext(os.path.basename(path))[0] or "archive"
    stem = "".join(c if c.isalnum() or c in "_-." else "_" for c in stem)
    with atomic_path(path) as tmp, open(tmp, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as archive:
        _aligned_entry(archive, f"{stem}/data.pkl", pkl)
        _aligned_entry(archive, f"{stem}/.format_version", b"1")
        _aligned_entry(archive, f"{stem}/.storage_alignment", b"64")
        _aligned_entry(archive, f"{stem}/byteorder", b"little")
        for key, a in enumerate(writer.storages):
            _aligned_entry(archive, f"{stem}/data/{key}", a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())
        _aligned_entry(archive, f"{stem}/version", b"3\n")


# ------------------------------------------------------------------------------------------------
# safetensors
# ------------------------------------------------------------------------------------------------
def read_safetensors(raw: bytes, path: str, convert) -> dict:
    """The tensors of a safetensors file, in header order, each through ``convert(ndarray)``."""
    if len(raw) < 8:
        raise CheckpointError(f"checkpoint {path!r} is truncated (no safetensors header)")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > min(len(raw) - 8, _MAX_HEADER):
        raise CheckpointError(
            f"checkpoint {path!r} is corrupt or truncated: its safetensors header claims {n} "
            f"bytes, the file has {len(raw) - 8} after the length"
        )
    try:
        header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path!r} has a corrupt safetensors header ({exc})") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"checkpoint {path!r} has a safetensors header that is not a JSON object")
    data = memoryview(raw)[8 + n :]
    out, spans = {}, []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or entry.get("dtype") not in _ST_DTYPES:
            raise CheckpointError(
                f"checkpoint {path!r}: tensor {name!r} has an unknown dtype "
                f"{entry.get('dtype') if isinstance(entry, dict) else entry!r:.40}"
            )
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if (
            not isinstance(shape, list)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
            or not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        ):
            raise CheckpointError(f"checkpoint {path!r}: tensor {name!r} has a malformed shape or data_offsets")
        dt = _ST_DTYPES[entry["dtype"]]
        begin, end = offsets
        count = int(np.prod(shape, dtype=object))
        if not 0 <= begin <= end <= len(data) or end - begin != count * _itemsize(dt):
            raise CheckpointError(
                f"checkpoint {path!r} is corrupt: tensor {name!r} ({entry['dtype']} {shape}) has "
                f"data_offsets {offsets} in a data section of {len(data)} bytes"
            )
        spans.append((begin, end, name))
        out[name] = (begin, dt, count, shape)
    spans.sort()
    for (_, e0, n0), (b1, _, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise CheckpointError(f"checkpoint {path!r} is corrupt: tensors {n0!r} and {n1!r} overlap")
    return {
        name: convert(_from_bytes(data[b : b + c * _itemsize(dt)], dt, c).reshape(shape))
        for name, (b, dt, c, shape) in out.items()
    }


def write_safetensors(obj, path: str, metadata: dict | None = None) -> None:
    """A flat ``{name: tensor or array}`` dict as a safetensors file (numeric dtypes PyTorch has)."""
    if not isinstance(obj, dict):
        raise TypeError(
            f"save(format='safetensors'): expected a dict of name -> tensor (e.g. model.state_dict()), "
            f"got {type(obj).__name__}"
        )
    header: dict = {}
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise TypeError("save(format='safetensors'): metadata must be a dict of str -> str")
        header["__metadata__"] = dict(metadata)
    blobs, offset = [], 0
    for name, value in obj.items():
        if not isinstance(name, str):
            raise TypeError(f"save(format='safetensors'): keys must be str, got {type(name).__name__}")
        a = _host(value, name)
        if a is None:
            raise TypeError(
                f"save(format='safetensors'): {name!r} is a {type(value).__name__}; safetensors holds "
                "tensors only (save nested state such as an optimizer's in gpunn's or PyTorch's format)"
            )
        if a.dtype not in _ST_NAME:
            raise TypeError(f"save(format='safetensors'): {name!r} has dtype {a.dtype}, which safetensors can't hold")
        b = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {
            "dtype": _ST_NAME[a.dtype],
            "shape": [int(s) for s in a.shape],
            "data_offsets": [offset, offset + len(b)],
        }
        blobs.append(b)
        offset += len(b)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((-len(text)) % 8)  # the data section starts 8-byte aligned
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
