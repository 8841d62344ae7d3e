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
        "optimizer": {"state": {0: {"step": 3, "exp_avg": rng.standard_normal(5)}}, "param_groups": [
            {"lr": 0.1, "betas": (0.9, 0.999), "params": [0]}]},
        "epoch": 7, "name": "mlp", "none": None, "nan": float("nan"), "flag": True,
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
    np.savez(path, __gpunn__=np.frombuffer(b'{"format": "gpunn-checkpoint", "version": 1, "tree": '
                                           b'{"__array__": "a0", "kind": "ndarray", "sha256": "x"}}', np.uint8),
             a0=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
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
    deep = b'{"format": "gpunn-checkpoint", "version": 1, "tree": ' + b'{"__list__": [' * 5000 + b"1" + \
        b"]}" * 5000 + b"}"
    np.savez(tmp_path / "deep.npz", __gpunn__=np.frombuffer(deep, np.uint8))
    with pytest.raises(CheckpointError):
        gpunn.load(tmp_path / "deep.npz")
    strings = np.array(["ab", "cd"])
    import hashlib
    digest = hashlib.sha256(strings.view(np.uint8).reshape(-1).data).hexdigest()
    meta = ('{"format": "gpunn-checkpoint", "version": 1, "tree": {"__array__": "a0", "kind": "tensor", '
            f'"sha256": "{digest}"}}}}').encode()
    np.savez(tmp_path / "str.npz", __gpunn__=np.frombuffer(meta, np.uint8), a0=strings)
    with pytest.raises(CheckpointError, match="numeric arrays only"):
        gpunn.load(tmp_path / "str.npz")
