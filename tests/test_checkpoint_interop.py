"""gpunn.save / gpunn.load with PyTorch's zip format and safetensors, both directions, and the
restricted reader against crafted files (code-running pickles, lying sizes, truncations)."""

from __future__ import annotations

import os
import pickle
import struct
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

import gpunn
from gpunn import nn
from gpunn.checkpoint import CheckpointError
from tests.helpers import randn

torch = pytest.importorskip("torch")


def cnn(lib):
    return lib.nn.Sequential(
        lib.nn.Conv2d(1, 3, 3), lib.nn.BatchNorm2d(3), lib.nn.ReLU(), lib.nn.Flatten(), lib.nn.Linear(3 * 5 * 5, 4)
    )


def _np(v):
    return v.detach().numpy() if hasattr(v, "detach") else np.asarray(v)


def assert_same_state(ours, theirs):
    assert list(ours) == list(theirs)
    for k in theirs:
        a, b = _np(ours[k]), _np(theirs[k])
        assert a.shape == b.shape and a.dtype == b.dtype, k
        np.testing.assert_array_equal(a, b, err_msg=k)


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_gpunn_state_dict_loads_in_torch(tmp_path, rng, suffix):
    model = cnn(gpunn)
    model(gpunn.tensor(randn(rng, 8, 1, 7, 7)))  # moves the BatchNorm running stats
    path = tmp_path / f"mnist_cnn{suffix}"
    gpunn.save(model.state_dict(), path)  # torch.save's call shape
    assert zipfile.is_zipfile(path)
    for weights_only in (True, False):
        sd = torch.load(path, weights_only=weights_only)
        assert isinstance(sd, OrderedDict)
        assert_same_state(model.state_dict(), sd)
    tmodel = cnn(torch)
    tmodel.load_state_dict(torch.load(path, weights_only=True))
    model.eval()
    tmodel.eval()
    x = randn(rng, 2, 1, 7, 7)
    np.testing.assert_allclose(
        model(gpunn.tensor(x)).detach().numpy(), tmodel(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6
    )
    # gpunn reads its own .pt back the same
    assert_same_state(gpunn.load(path), model.state_dict())


def test_torch_state_dict_loads_in_gpunn(tmp_path, rng):
    tmodel = cnn(torch)
    tmodel(torch.randn(8, 1, 7, 7))
    path = tmp_path / "theirs.pth"
    torch.save(tmodel.state_dict(), path)
    sd = gpunn.load(path)
    assert all(isinstance(v, gpunn.Tensor) for v in sd.values())
    assert_same_state(sd, tmodel.state_dict())
    model = cnn(gpunn)
    model.load_state_dict(sd)
    model.eval()
    tmodel.eval()
    x = randn(rng, 2, 1, 7, 7)
    np.testing.assert_allclose(
        model(gpunn.tensor(x)).detach().numpy(), tmodel(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6
    )
    with open(path, "rb") as f:  # a binary file object, as torch.load takes
        assert_same_state(gpunn.load(f, map_location="cpu"), tmodel.state_dict())


def test_nested_objects_dtypes_and_views_from_torch(tmp_path):
    base = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    obj = {
        "view_t": base.t(),
        "slice": base[1:3, ::2],
        "shared": base,
        "i8": torch.tensor([-3, 4], dtype=torch.int8),
        "bool": torch.tensor([True, False]),
        "half": torch.tensor([1.5, -2.0], dtype=torch.float16),
        "bf16": torch.tensor([1.5, -2.25, 3e38], dtype=torch.bfloat16),
        "scalar": torch.tensor(7),
        "empty": torch.zeros(0, 3),
        "param": torch.nn.Parameter(torch.ones(2, 2)),
        "meta": {
            "epoch": 3,
            "lr": 0.5,
            "name": "x",
            "none": None,
            "nan": float("nan"),
            "big": 2**70,
            "list": [1, (2.5, "a")],
            7: "int key",
        },
    }
    path = tmp_path / "nested.pt"
    torch.save(obj, path)
    got = gpunn.load(path)
    for k in ("view_t", "slice", "shared", "i8", "bool", "half", "scalar", "empty", "param"):
        assert got[k].shape == tuple(obj[k].shape), k
        np.testing.assert_array_equal(got[k].detach().numpy(), obj[k].detach().numpy(), err_msg=k)
    np.testing.assert_array_equal(got["bf16"].numpy(), obj["bf16"].float().numpy())
    assert got["bf16"].dtype == np.float32
    meta = got["meta"]
    assert meta["epoch"] == 3 and meta["lr"] == 0.5 and meta["none"] is None and np.isnan(meta["nan"])
    assert meta["big"] == 2**70 and meta["list"] == [1, (2.5, "a")] and meta[7] == "int key"


def test_optimizer_checkpoint_round_trips_through_torch_format(tmp_path, rng):
    model = cnn(gpunn)
    opt = gpunn.optim.Adadelta(model.parameters())
    sched = gpunn.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    for _ in range(2):
        opt.zero_grad()
        model(gpunn.tensor(randn(rng, 4, 1, 7, 7))).sum().backward()
        opt.step()
        sched.step()
    path = tmp_path / "ckpt.pt"
    gpunn.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "epoch": 2}, path)
    theirs = torch.load(path, weights_only=True)
    assert theirs["epoch"] == 2 and sorted(theirs["opt"]["state"][0]) == ["acc_delta", "square_avg", "step"]
    back = gpunn.load(path)
    opt2 = gpunn.optim.Adadelta(cnn(gpunn).parameters())
    opt2.load_state_dict(back["opt"])
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.49)
    np.testing.assert_array_equal(
        to_np(opt2.state_dict()["state"][0]["square_avg"]), to_np(opt.state_dict()["state"][0]["square_avg"])
    )


def to_np(v):
    return v.numpy() if isinstance(v, gpunn.Tensor) else np.asarray(v)


def test_safetensors_both_directions(tmp_path, rng):
    st_torch = pytest.importorskip("safetensors.torch")
    st_numpy = pytest.importorskip("safetensors.numpy")
    model = cnn(gpunn)
    path = tmp_path / "model.safetensors"
    gpunn.save(model.state_dict(), path)
    assert_same_state(st_torch.load_file(str(path)), model.state_dict())
    assert set(st_numpy.load_file(str(path))) == set(model.state_dict())
    gpunn.save(
        {"w": gpunn.tensor(randn(rng, 3, 2))}, tmp_path / "x.bin", format="safetensors", metadata={"format": "pt"}
    )
    assert st_numpy.load_file(str(tmp_path / "x.bin"))["w"].shape == (3, 2)
    tmodel = cnn(torch)
    tpath = tmp_path / "theirs.safetensors"
    st_torch.save_file(tmodel.state_dict(), str(tpath))
    assert_same_state(
        {k: v for k, v in gpunn.load(tpath).items()}, {k: tmodel.state_dict()[k] for k in gpunn.load(tpath)}
    )
    st_torch.save_file({"bf": torch.tensor([1.0, -3.5], dtype=torch.bfloat16)}, str(tpath))
    np.testing.assert_array_equal(gpunn.load(tpath)["bf"].numpy(), [1.0, -3.5])
    with pytest.raises(TypeError, match="tensors only"):
        gpunn.save({"opt": {"nested": 1}}, tmp_path / "bad.safetensors")


def test_gpunn_format_still_default_and_zero_d_tensors_keep_their_shape(tmp_path):
    bn = nn.BatchNorm1d(3)
    gpunn.save(bn.state_dict(), tmp_path / "bn.npz")
    back = gpunn.load(tmp_path / "bn.npz")
    assert back["num_batches_tracked"].shape == ()
    nn.BatchNorm1d(3).load_state_dict(back)
    with pytest.raises(ValueError, match="format"):
        gpunn.save({}, tmp_path / "a.pt", format="pickle")


# ------------------------------------------------------------------------------------------------
# crafted files: never run code, always CheckpointError
# ------------------------------------------------------------------------------------------------
def torch_zip(path, pkl: bytes, extra=None):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/version", "3\n")
        for name, data in (extra or {}).items():
            z.writestr(f"archive/{name}", data)


class _System:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


class _Eval:
    def __reduce__(self):
        return (eval, ("__import__('os').system('touch PWNED')",))


MARKER = "PWNED"

MALICIOUS = {
    "reduce_os_system": pickle.dumps(_System(), protocol=2),
    "reduce_eval": pickle.dumps({"a": _Eval()}, protocol=2),
    "global_builtins_exec": b"\x80\x02cbuiltins\nexec\nX\x1c\x00\x00\x00__import__('os').system('x')\x85R.",
    "stack_global": b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system\x93\x8c\x01x\x85R.",
    "inst_opcode": b"(S'touch PWNED'\nios\nsystem\n.",
    "obj_opcode": b"\x80\x02(cos\nsystem\nX\x01\x00\x00\x00xo.",
    "newobj_subprocess": b"\x80\x02csubprocess\nPopen\n]\x85\x81.",
    "numpy_reconstruct": b"\x80\x02cnumpy.core.multiarray\n_reconstruct\n.",
    "torch_global_not_allowed": b"\x80\x02ctorch\nload\n.",
    "build_on_dict": b"\x80\x02}(X\x01\x00\x00\x00aK\x01u}X\x08\x00\x00\x00__dict__}sb.",
    "ext_opcode": b"\x80\x02\x82\x01.",
    "persid_not_storage": b"\x80\x02X\x03\x00\x00\x00abcQ.",
}


@pytest.mark.parametrize("name", list(MALICIOUS))
def test_malicious_pickles_are_refused(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch_zip(path, MALICIOUS[name])
    with pytest.raises(CheckpointError):
        gpunn.load(path)
    assert not (tmp_path / MARKER).exists()


def _tensor_pickle(numel: int, key="0", size=(2, 3), stride=(3, 1), offset=0, storage="FloatStorage") -> bytes:
    from gpunn.interop import _PickleWriter

    w = _PickleWriter()
    w.out.write(b"\x80\x02")
    w._global("torch._utils", "_rebuild_tensor_v2")
    w.out.write(b"((")
    for v in ("storage",):
        w.write(v, "", 0)
    w._global("torch", storage)
    for v in (key, "cpu", numel):
        w.write(v, "", 0)
    w.out.write(b"tQ")
    for v in (offset, size, stride, False):
        w.write(v, "", 0)
    w._ordered_dict()
    w.out.write(b"tR.")
    return w.out.getvalue()


@pytest.mark.parametrize(
    "case,match",
    [
        (dict(numel=6, data=b"\x00" * 20), "holds 20 bytes"),  # storage shorter than declared
        (dict(numel=10**12, data=b"\x00" * 24), "holds 24 bytes"),  # a huge declared storage: refused before allocating
        (dict(numel=6, data=b"\x00" * 24, stride=(4, 1)), "reaching element"),  # view past the storage's end
        (dict(numel=6, data=b"\x00" * 24, offset=5), "reaching element"),
        (dict(numel=6, data=b"\x00" * 24, stride=(-3, 1)), "negative"),
        (dict(numel=6, data=b"\x00" * 24, key="../x"), "storage key"),
        (dict(numel=6, data=None), "missing"),
        (dict(numel=6, data=b"\x00" * 24, storage="ComplexFloatStorage"), "does not allow"),
        (dict(numel=6, data=b"\x00" * 24, size=(10**5, 10**4), stride=(0, 0)), "more than"),  # a stride-0 bomb
    ],
)
def test_lying_sizes_are_refused(tmp_path, case, match):
    case = dict(case)
    data = case.pop("data")
    path = tmp_path / "lie.pt"
    torch_zip(path, _tensor_pickle(**case), {} if data is None else {"data/0": data})
    with pytest.raises(CheckpointError, match=match):
        gpunn.load(path)


def test_damaged_files_are_refused(tmp_path):
    good = tmp_path / "good.pt"
    gpunn.save({"w": gpunn.tensor(np.arange(50, dtype=np.float32))}, good)
    raw = good.read_bytes()
    for cut in (10, len(raw) // 2, len(raw) - 30):
        bad = tmp_path / f"cut{cut}.pt"
        bad.write_bytes(raw[:cut])
        with pytest.raises(CheckpointError):
            gpunn.load(bad)
    flipped = bytearray(raw)
    i = raw.index(np.arange(50, dtype=np.float32)[7:8].tobytes())
    flipped[i] ^= 0xFF
    (tmp_path / "flip.pt").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="CRC|corrupt"):
        gpunn.load(tmp_path / "flip.pt")
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="legacy"):
        gpunn.load(legacy)
    compressed = tmp_path / "deflate.pt"
    with zipfile.ZipFile(compressed, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02}.")
    with pytest.raises(CheckpointError, match="compressed"):
        gpunn.load(compressed)
    with pytest.raises(ValueError, match="weights_only=False"):
        gpunn.load(good, weights_only=False)


@pytest.mark.parametrize(
    "header,match",
    [
        (b'{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,8]}}', "data_offsets"),
        (
            b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"v":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}',
            "overlap",
        ),
        (b'{"w":{"dtype":"O","shape":[2],"data_offsets":[0,8]}}', "dtype"),
        (b'{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}', "malformed"),
        (b"[1, 2]", "not a gpunn, PyTorch or safetensors"),
        (b" [1, 2]", "not a gpunn, PyTorch or safetensors"),
        (b'{"w": bad json', "corrupt"),
    ],
)
def test_crafted_safetensors_are_refused(tmp_path, header, match):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 16)
    with pytest.raises(CheckpointError, match=match):
        gpunn.load(path)
    path.write_bytes(struct.pack("<Q", 10**15) + b"{" + b"\x00" * 16)
    with pytest.raises(CheckpointError):
        gpunn.load(path)


def test_pickle_module_alone_would_have_run_the_payload(tmp_path, monkeypatch):
    """The payloads above are live: plain pickle runs them (so the refusals are meaningful)."""
    calls = []
    module = __import__(os.system.__module__)  # posix on Linux: what the pickle names
    monkeypatch.setattr(module, "system", lambda cmd: calls.append(cmd))
    pickle.loads(MALICIOUS["reduce_os_system"])
    assert calls == ["touch PWNED"]


MNIST_NET = """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)
"""


def _net(lib):
    ns = {"nn": lib.nn, "F": lib.nn.functional, "torch": lib}
    exec(MNIST_NET, ns)
    return ns["Net"]()


def test_mnist_example_model_trains_saves_and_loads_in_torch(tmp_path, rng, monkeypatch):
    """pytorch/examples mnist/main.py's model, optimizer and schedule (Adadelta lr=1, StepLR gamma=0.7),
    a few steps on random 28x28 images, then torch.save's call shape: the file loads in PyTorch."""
    monkeypatch.chdir(tmp_path)
    torch_ = gpunn
    model = _net(gpunn)
    optimizer = gpunn.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = gpunn.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    x, y = gpunn.tensor(randn(rng, 8, 1, 28, 28)), gpunn.tensor(rng.integers(0, 10, 8))
    losses = []
    for _ in range(2):
        model.train()
        for _ in range(3):
            optimizer.zero_grad()
            loss = gpunn.nn.functional.nll_loss(model(x), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        scheduler.step()
    assert losses[-1] < losses[0] and optimizer.param_groups[0]["lr"] == pytest.approx(0.49)
    torch_.save(model.state_dict(), "mnist_cnn.pt")
    tmodel = _net(torch)
    tmodel.load_state_dict(torch.load("mnist_cnn.pt", weights_only=True))
    model.eval()
    tmodel.eval()
    np.testing.assert_allclose(
        model(x).detach().numpy(), tmodel(torch.from_numpy(x.numpy())).detach().numpy(), rtol=1e-4, atol=1e-5
    )


def test_shared_references_cost_linear_time(tmp_path):
    """l0 = [t]; l_k = [l_{k-1}, l_{k-1}] for 80 levels: 2^80 leaves if walked naively, a few bytes of pickle."""
    from gpunn.interop import _PickleWriter

    w = _PickleWriter()
    w.out.write(b"\x80\x02")
    w._tensor(np.arange(3, dtype=np.float32), "t")
    w.out.write(b"\x85q\x00")  # (t,) memoised as 0
    for k in range(80):
        w.out.write(b"h" + bytes([k]) + b"h" + bytes([k]) + b"\x86q" + bytes([k + 1]))
    w.out.write(b".")
    path = tmp_path / "laughs.pt"
    torch_zip(path, w.out.getvalue(), {"data/0": np.arange(3, dtype=np.float32).tobytes()})
    got = gpunn.load(path)
    leaf = got
    for _ in range(80):
        assert leaf[0] is leaf[1]
        leaf = leaf[0]
    np.testing.assert_array_equal(leaf[0].numpy(), [0, 1, 2])
