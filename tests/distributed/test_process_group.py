"""In-process tests: a world of one (no launcher), argument errors, the nccl path's messages without a GPU,
DistributedDataParallel's bookkeeping, and the engine hook it starts from. Real ranks: test_mpi.py."""

from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest

import gpunn
import gpunn.distributed as dist
from gpunn import nn, optim
from gpunn.distributed import DistributedDataParallel as DDP


@pytest.fixture(autouse=True)
def no_launcher(monkeypatch):
    for key in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    yield
    dist.destroy_process_group()


def test_import_gpunn_loads_neither_mpi4py_nor_cupy():
    code = (
        "import sys, gpunn, gpunn.distributed, gpunn.data; gpunn.distributed.init_process_group('mpi'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mpi4py', 'cupy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_world_of_one_without_a_launcher():
    assert not dist.is_initialized()
    with pytest.raises(ValueError, match="has not been initialized"):
        dist.get_rank()
    dist.init_process_group("auto")
    assert (dist.get_rank(), dist.get_world_size(), dist.get_backend()) == (0, 1, "mpi")
    t = gpunn.tensor([1.5, -2.0])
    for op in (dist.ReduceOp.SUM, dist.ReduceOp.AVG, dist.ReduceOp.MAX):
        dist.all_reduce(t, op=op)
    assert t.tolist() == [1.5, -2.0]
    dist.broadcast(t, src=0)
    out = [gpunn.zeros(2)]
    assert dist.all_gather(out, t) is None and out[0].tolist() == [1.5, -2.0]
    assert dist.all_reduce(t, async_op=True).wait()
    dist.barrier()
    with pytest.raises(RuntimeError, match="twice"):
        dist.init_process_group("mpi")


def test_argument_errors():
    with pytest.raises(ValueError, match="unknown backend 'tcp'"):
        dist.init_process_group("tcp")
    with pytest.raises(ValueError, match="init_method='tcp://"):
        dist.init_process_group("mpi", init_method="tcp://10.0.0.1:23456")
    with pytest.raises(ValueError, match="world_size=4 but the launcher started this process as size 1"):
        dist.init_process_group("mpi", world_size=4, rank=0)
    with pytest.raises(ValueError, match="timeout must be positive"):
        dist.init_process_group("mpi", timeout=0)
    dist.init_process_group("mpi")
    t = gpunn.tensor([1, 2])
    with pytest.raises(TypeError, match="AVG needs a floating-point"):
        dist.all_reduce(t, op=dist.ReduceOp.AVG)
    with pytest.raises(ValueError, match="unsupported op 'xor'"):
        dist.all_reduce(t, op="xor")
    with pytest.raises(ValueError, match="src=1 is not a rank"):
        dist.broadcast(t, src=1)
    with pytest.raises(ValueError, match="list of world_size=1"):
        dist.all_gather([], t)
    with pytest.raises(ValueError, match=r"tensor_list\[0\] has shape \(3,\)"):
        dist.all_gather([gpunn.zeros(3)], gpunn.zeros(2))
    with pytest.raises(TypeError, match="expected a gpunn Tensor"):
        dist.all_reduce(np.zeros(2))


def test_torchrun_environment_is_refused_clearly(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="start the ranks with mpiexec"):
        dist.init_process_group("mpi")


def test_nccl_without_cupy_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    with pytest.raises(RuntimeError, match="backend 'nccl' needs CuPy built with NCCL"):
        dist.init_process_group("nccl")
    assert not dist.is_initialized()


def test_nccl_without_a_gpu_says_so(monkeypatch):
    # a CuPy that imports but whose runtime sees no device (a CPU-only machine with CuPy installed)
    runtime = types.SimpleNamespace(getDeviceCount=lambda: 0)
    fake = types.ModuleType("cupy")
    fake.cuda = types.ModuleType("cupy.cuda")
    fake.cuda.runtime = runtime
    fake.cuda.nccl = types.ModuleType("cupy.cuda.nccl")
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setitem(sys.modules, "cupy.cuda", fake.cuda)
    monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", fake.cuda.nccl)
    with pytest.raises(RuntimeError, match="needs a CUDA GPU and this process sees none; use backend='mpi'"):
        dist.init_process_group("nccl")


def mlp(seed=0):
    gpunn.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).double()


def step(model, opt, x, y):
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def test_ddp_in_a_world_of_one_is_the_plain_model(rng):
    dist.init_process_group("mpi")
    x, y = gpunn.tensor(rng.standard_normal((6, 5))), gpunn.tensor(rng.integers(0, 3, 6))
    plain, wrapped = mlp(), DDP(mlp())
    o1, o2 = optim.Adam(plain.parameters(), lr=0.01), optim.Adam(wrapped.parameters(), lr=0.01)
    for _ in range(3):
        step(plain, o1, x, y)
        step(wrapped, o2, x, y)
    assert list(wrapped.state_dict()) == [f"module.{k}" for k in plain.state_dict()]  # PyTorch's keys
    for (k, a), b in zip(plain.state_dict().items(), wrapped.module.state_dict().values()):
        assert np.array_equal(a.numpy(), b.numpy()), k
    assert "world_size=1" in repr(wrapped)


def test_ddp_buckets_follow_backward_order_and_the_cap():
    dist.init_process_group("mpi")
    model = mlp()
    ddp = DDP(model, bucket_cap_mb=(8 * 3 + 3) * 8 / 2**20)  # the last layer's bytes: one bucket for it
    names = {id(p): n for n, p in model.named_parameters()}
    # backward's order (last layer first), each bucket in the flat buffer's order; 0.weight alone is over
    assert [[names[id(p)] for p in b.params] for b in ddp._buckets] == [
        ["2.weight", "2.bias"],
        ["0.bias"],
        ["0.weight"],
    ]
    assert len(DDP(mlp())._buckets) == 1  # the default 25 MB: one collective for the whole model
    with pytest.raises(ValueError, match="bucket_cap_mb must be positive"):
        DDP(mlp(), bucket_cap_mb=0)
    with pytest.raises(TypeError, match="wraps a gpunn.nn.Module"):
        DDP(lambda x: x)


def test_ddp_names_a_parameter_that_got_no_gradient(rng):
    dist.init_process_group("mpi")

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 2), nn.Linear(4, 2)

        def forward(self, x):
            return self.a(x)

    ddp = DDP(TwoHeads())
    x = gpunn.tensor(rng.standard_normal((3, 4)).astype(np.float32))
    ddp(x).sum().backward()
    with pytest.raises(RuntimeError, match="received no gradient: b.weight, b.bias"):
        ddp(x)

    # find_unused_parameters=True: b counts as ready at forward; its grad stays None (the optimizer skips it)
    model = TwoHeads()
    ddp = DDP(model, find_unused_parameters=True)
    for _ in range(2):
        model.zero_grad()
        ddp(x).sum().backward()
        assert model.b.weight.grad is None and model.a.weight.grad is not None
    np.testing.assert_allclose(model.a.bias.grad.numpy(), [3.0, 3.0])
    # a parameter used outside the wrapped forward is an error, not a silently unreduced gradient
    with pytest.raises(RuntimeError, match="'b.weight' was not used by the forward"):
        (ddp(x).sum() + model.b.weight.sum()).backward()


def test_ddp_without_a_process_group_says_so():
    with pytest.raises(ValueError, match="has not been initialized"):
        DDP(mlp())


def test_post_accumulate_grad_hook_sees_the_accumulated_grad():
    w = gpunn.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    handle = w.register_post_accumulate_grad_hook(lambda p: seen.append(p.grad.tolist()))
    (w * w).sum().backward()
    (w * 3).sum().backward()
    assert seen == [[2.0, 4.0], [5.0, 7.0]]
    handle.remove()
    (w * 3).sum().backward()
    assert len(seen) == 2
    with pytest.raises(RuntimeError, match="non-leaf"):
        (w * 2).register_post_accumulate_grad_hook(print)


def test_flat_gradient_region_is_the_optimizers_buffer():
    model = mlp()
    opt = optim.SGD(model.parameters(), lr=0.1)
    params = list(model.parameters())
    x = gpunn.tensor(np.ones((2, 5)))
    nn.functional.cross_entropy(model(x), gpunn.tensor([0, 1])).backward()
    buf = params[0]._grad_owner
    region = buf.grad_region(params[2:])
    assert region.size == 8 * 3 + 3
    region[...] = 7.0  # the region is the buffer the grads are views of
    assert np.all(params[2].grad.numpy() == 7.0)
    assert buf.grad_region(params[::-1]) is None  # not the buffer's order
    assert buf.grad_region([params[0], params[2]]) is None  # not consecutive
    opt.zero_grad()
    assert buf.grad_region(params) is None  # no grads


def test_pytorch_import_paths():
    from gpunn.nn.parallel import DistributedDataParallel

    assert DistributedDataParallel is DDP and gpunn.distributed.DistributedDataParallel is DDP
    from gpunn.data import DistributedSampler

    assert dist.DistributedSampler is DistributedSampler
