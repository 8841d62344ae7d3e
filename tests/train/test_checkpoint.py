"""gpunn.save / gpunn.load: round trip, atomic writes, and the errors damaged files get."""

import io
import os
import zipfile

import numpy as np
import pytest

import gpunn
from gpunn.checkpoint import CheckpointError


def _obj(rng):
    return {
        "model": {"w": gpunn.tensor(rng.standard_normal((3, 4)).astype(np.float32)), "b": gpunn.tensor([1.5, -2.0])},
        "optimizer": {
            "state": {0: {"step": 3, "exp_avg": rng.standard_normal(5)}},
            "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0]}],
        },
        "epoch": 7,
        "name": "mlp",
        "none": None,
        "nan": float("nan"),
        "flag": True,
        "ints": np.arange(4, dtype=np.int64),
    }


def test_round_trip(tmp_path, rng):
    obj = _obj(rng)
    path = tmp_path / "ckpt.npz"
    gpunn.save(obj, path)
    back = gpunn.load(path)
    assert isinstance(back["model"]["w"], gpunn.Tensor) and back["model"]["w"].dtype == np.float32
    assert np.array_equal(back["model"]["w"].numpy(), obj["model"]["w"].numpy())
    assert np.array_equal(back["optimizer"]["state"][0]["exp_avg"], obj["optimizer"]["state"][0]["exp_avg"])
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert 0 in back["optimizer"]["state"]  # int keys survive
    assert back["epoch"] == 7 and back["name"] == "mlp" and back["none"] is None and back["flag"] is True
    assert np.isnan(back["nan"])
    assert back["ints"].dtype == np.int64


def test_load_never_unpickles(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(
        path,
        __gpunn__=np.frombuffer(
            b'{"format": "gpunn-checkpoint", "version": 1, "tree": '
            b'{"__array__": "a0", "kind": "ndarray", "sha256": "x"}}',
            np.uint8,
        ),
        a0=np.array([{"a": 1}], dtype=object),
    )
    with pytest.raises(CheckpointError, match="corrupt"):
        gpunn.load(path)


def test_truncated_file(tmp_path, rng):
    path = tmp_path / "ckpt.npz"
    gpunn.save(_obj(rng), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        gpunn.load(path)


def test_tampered_array_is_detected(tmp_path, rng):
    path = tmp_path / "ckpt.npz"
    gpunn.save(_obj(rng), path)
    # rewrite one array entry with different values but keep the header (and its checksums)
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    buf = io.BytesIO()
    np.save(buf, np.zeros((3, 4), np.float32))
    entries["a0.npy"] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as z:
        for n, b in entries.items():
            z.writestr(n, b)
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        gpunn.load(path)


def test_flipped_byte_is_detected(tmp_path, rng):
    path = tmp_path / "ckpt.npz"
    gpunn.save({"w": gpunn.tensor(rng.standard_normal(1000))}, path)
    data = bytearray(path.read_bytes())
    data[400] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        gpunn.load(path)


def test_not_a_gpunn_checkpoint(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, x=np.ones(3))
    with pytest.raises(CheckpointError, match="not a gpunn checkpoint"):
        gpunn.load(path)
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(CheckpointError):
        gpunn.load(tmp_path / "text.npz")
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        gpunn.load(tmp_path / "missing.npz")


def test_failed_write_leaves_the_old_file_intact(tmp_path, rng, monkeypatch):
    path = tmp_path / "ckpt.npz"
    gpunn.save({"v": gpunn.tensor([1.0, 2.0])}, path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        gpunn.save({"v": gpunn.tensor([3.0])}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.npz"]  # no temporary file left behind


def test_unsupported_objects_are_refused(tmp_path):
    with pytest.raises(TypeError, match="can't be saved without pickle"):
        gpunn.save({"f": lambda x: x}, tmp_path / "x.npz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gpunn.save({"a": 1}, tmp_path / "no" / "x.npz")


def test_saved_files_get_normal_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        gpunn.save({"a": 1}, tmp_path / "c.npz")
        assert (tmp_path / "c.npz").stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600
    finally:
        os.umask(mask)


def test_compressed_nested_and_non_numeric_files_are_refused(tmp_path):
    meta = b'{"format": "gpunn-checkpoint", "version": 1, "tree": {"__array__": "a0", "kind": "ndarray"}}'
    np.savez_compressed(tmp_path / "bomb.npz", __gpunn__=np.frombuffer(meta, np.uint8), a0=np.zeros(10**6))
    with pytest.raises(CheckpointError, match="compressed entries"):
        gpunn.load(tmp_path / "bomb.npz")
    deep = (
        b'{"format": "gpunn-checkpoint", "version": 1, "tree": ' + b'{"__list__": [' * 5000 + b"1" + b"]}" * 5000 + b"}"
    )
    np.savez(tmp_path / "deep.npz", __gpunn__=np.frombuffer(deep, np.uint8))
    with pytest.raises(CheckpointError):
        gpunn.load(tmp_path / "deep.npz")
    strings = np.array(["ab", "cd"])
    import hashlib

    digest = hashlib.sha256(strings.view(np.uint8).reshape(-1).data).hexdigest()
    meta = (
        '{"format": "gpunn-checkpoint", "version": 1, "tree": {"__array__": "a0", "kind": "tensor", '
        f'"sha256": "{digest}"}}}}'
    ).encode()
    np.savez(tmp_path / "str.npz", __gpunn__=np.frombuffer(meta, np.uint8), a0=strings)
    with pytest.raises(CheckpointError, match="numeric arrays only"):
        gpunn.load(tmp_path / "str.npz")


def _crafted(path, tree, entries):
    """A zip with gpunn's header for ``tree`` and the given raw ``.npy`` entries (name -> bytes)."""
    import json

    meta = json.dumps({"format": "gpunn-checkpoint", "version": 1, "tree": tree}).encode()
    buf = io.BytesIO()
    np.save(buf, np.frombuffer(meta, np.uint8))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("__gpunn__.npy", buf.getvalue())
        for name, data in entries.items():
            z.writestr(name + ".npy", data)


def _npy(a):
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _ref(a, key="a0"):
    import hashlib

    return {
        "__array__": key,
        "kind": "ndarray",
        "sha256": hashlib.sha256(np.ascontiguousarray(a).view(np.uint8).reshape(-1).data).hexdigest(),
    }


def test_a_huge_declared_array_is_refused_before_it_is_allocated(tmp_path):
    # a .npy header that declares 10**13 float64s over a few bytes: np.load would try to allocate 80 TB
    small = _npy(np.zeros(4))
    forged = small.replace(b"'shape': (4,), }" + b" " * 13, b"'shape': (10000000000000,), }")
    assert len(forged) == len(small) and b"10000000000000" in forged
    _crafted(tmp_path / "big.npz", _ref(np.zeros(4)), {"a0": forged})
    with pytest.raises(CheckpointError, match="declares shape"):
        gpunn.load(tmp_path / "big.npz")


def test_encrypted_and_unknown_compression_entries_are_checkpoint_errors(tmp_path):
    path = tmp_path / "c.npz"
    gpunn.save({"w": np.arange(6.0)}, path)
    data = bytearray(path.read_bytes())
    # set the "encrypted" flag bit in every local and central header (zipfile raises RuntimeError)
    enc = bytearray(data)
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = enc.find(sig)
        while i >= 0:
            enc[i + off] |= 1
            i = enc.find(sig, i + 4)
    (tmp_path / "enc.npz").write_bytes(bytes(enc))
    with pytest.raises(CheckpointError, match="encrypted"):
        gpunn.load(tmp_path / "enc.npz")
    # compression method 99 (AES) in the headers: zipfile raises NotImplementedError
    odd = bytearray(data)
    for sig, off in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        i = odd.find(sig)
        while i >= 0:
            odd[i + off] = 99
            i = odd.find(sig, i + 4)
    (tmp_path / "odd.npz").write_bytes(bytes(odd))
    with pytest.raises(CheckpointError):
        gpunn.load(tmp_path / "odd.npz")


def test_an_array_named_many_times_is_decoded_once(tmp_path):
    a = np.arange(1000.0)
    _crafted(tmp_path / "many.npz", {"__list__": [_ref(a)] * 5000}, {"a0": _npy(a)})
    back = gpunn.load(tmp_path / "many.npz")
    assert len(back) == 5000 and np.array_equal(back[0], a)
    assert len({id(x) for x in back}) == 1  # one array in memory, not 5000 copies (40 MB from 8 KB)


@pytest.mark.parametrize(
    "tree",
    [
        [1, 2],  # a bare JSON list
        {"__dict__": 5},  # a dict node that is not a list of pairs
        {"__dict__": [[1]]},
        {"__list__": {"a": 1}},
        {"__float__": "1e999999"},
        {"__array__": "a0", "kind": "pickle"},
        {"__array__": ["a0"], "kind": "ndarray"},
    ],
)
def test_malformed_trees_are_checkpoint_errors(tmp_path, tree):
    _crafted(tmp_path / "t.npz", tree, {"a0": _npy(np.zeros(2))})
    with pytest.raises(CheckpointError):
        gpunn.load(tmp_path / "t.npz")


def test_resaving_keeps_the_files_permission_bits(tmp_path):
    path = tmp_path / "c.npz"
    gpunn.save({"a": 1}, path)
    os.chmod(path, 0o600)
    gpunn.save({"a": 2}, path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert gpunn.load(path)["a"] == 2


def test_saving_through_a_symlink_writes_its_target(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "c.npz"
    gpunn.save({"a": 1}, target)
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    gpunn.save({"a": 2}, link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert gpunn.load(target)["a"] == 2
    dangling = tmp_path / "dangling.npz"
    dangling.symlink_to(tmp_path / "real" / "new.npz")
    gpunn.save({"a": 3}, dangling)
    assert dangling.is_symlink() and gpunn.load(tmp_path / "real" / "new.npz")["a"] == 3
