"""The NCCL path on a GPU: a world of one (one GPU, no launcher) runs every collective through
``cupy.cuda.nccl`` on device arrays, and a DistributedDataParallel step on the cupy backend equals the
plain step. Marked ``gpu``: skipped without a usable GPU (the messages without one: test_process_group.py)."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
import gpunn.distributed as dist
from gpunn import nn, optim

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def nccl_world_of_one(monkeypatch):
    for key in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    with gpunn.use_backend("cupy"):
        dist.init_process_group("nccl")
        yield
        dist.destroy_process_group()


def test_collectives_run_through_nccl_on_device_arrays():
    import cupy

    assert dist.get_backend() == "nccl" and dist.get_world_size() == 1
    for dtype in (np.float32, np.float64, np.int64):
        base = np.arange(1, 7, dtype=dtype).reshape(2, 3)
        t = gpunn.tensor(base)
        assert isinstance(t._data, cupy.ndarray)
        ops = (dist.ReduceOp.SUM, dist.ReduceOp.MAX, dist.ReduceOp.MIN, dist.ReduceOp.PRODUCT)
        for op in ops + ((dist.ReduceOp.AVG,) if dtype != np.int64 else ()):
            dist.all_reduce(t, op=op)
            assert np.array_equal(t.numpy(), base), (dtype, op)
        dist.broadcast(t, src=0)
        out = [gpunn.zeros(2, 3, dtype=dtype)]
        dist.all_gather(out, t)
        assert np.array_equal(out[0].numpy(), base)
    dist.barrier()


def test_ddp_step_on_the_gpu_equals_the_plain_step():
    def net():
        gpunn.manual_seed(0)
        return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 5))

    rng = np.random.default_rng(0)
    x = gpunn.tensor(rng.standard_normal((9, 12)).astype(np.float32))
    y = gpunn.tensor(rng.integers(0, 5, 9))
    plain, ddp = net(), dist.DistributedDataParallel(net())
    for model in (plain, ddp):
        opt = optim.Adam(model.parameters(), lr=0.01)
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for (k, a), b in zip(plain.state_dict().items(), ddp.module.state_dict().values()):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-6, atol=1e-7, err_msg=k)
