"""``DistributedDataParallel``: every rank holds the same model; gradients are averaged in backward.

At wrap time the ranks all-gather a signature of the model (names, shapes, dtypes of parameters and
buffers) and every rank raises the same error if they differ; then rank 0's parameters and buffers are
broadcast. Gradients travel in buckets: the parameters that need grad, in reverse order (the order
backward produces them), cut every ``bucket_cap_mb``. A bucket is all-reduced (averaged) as soon as all
of its gradients have landed -- while backward is still running -- and buckets go in a fixed order, so
every rank issues the same collectives. When the optimizer already packed the bucket's gradients into
its flat gradient buffer (``gpunn/optim/optimizer.py``), the collective runs in place on that slice:
for a model that fits one bucket that is ONE collective per step over the whole flat gradient buffer
and no copies. Otherwise the bucket is packed into a contiguous array and unpacked after.

Per step the wire carries 2(N-1)/N of the gradient bytes per rank (ring all-reduce).
"""

from __future__ import annotations

import contextlib

from gpunn.distributed import _default
from gpunn.distributed._groups import CollectiveError, ReduceOp
from gpunn.nn.module import Module


def _signature(module: Module, bucket_cap_mb) -> list:
    sig = [
        ("parameter", name, tuple(p.shape), str(p.dtype), bool(p.requires_grad))
        for name, p in module.named_parameters()
    ]
    sig += [("buffer", name, tuple(b.shape), str(b.dtype), False) for name, b in module.named_buffers()]
    return [("bucket_cap_mb", float(bucket_cap_mb)), *sig]


def _first_difference(mine: list, other: list) -> str:
    n_mine = sum(1 for e in mine if e[0] == "parameter")
    n_other = sum(1 for e in other if e[0] == "parameter")
    if n_mine != n_other:
        return f"{n_other} parameters vs rank 0's {n_mine}"
    for a, b in zip(other, mine):
        if a != b:
            if a[0] == "bucket_cap_mb":
                return f"bucket_cap_mb={a[1]:g} vs rank 0's {b[1]:g}"
            return (
                f"{a[0]} {a[1]!r}: shape {a[2]}, dtype {a[3]}, requires_grad={a[4]} vs rank 0's "
                f"{b[0]} {b[1]!r}: shape {b[2]}, dtype {b[3]}, requires_grad={b[4]}"
            )
    return f"{len(other)} entries vs rank 0's {len(mine)}"


class _Bucket:
    def __init__(self, params: list) -> None:
        self.params = params  # ascending model order (the flat-buffer order)
        self.got: set = set()  # ids of the parameters whose gradient landed in this backward

    def ready(self) -> bool:
        return len(self.got) == len(self.params)


class DistributedDataParallel(Module):
    """Wrap ``module`` for data-parallel training: ``DDP(model)(x)`` runs ``model(x)``; ``backward()``
    leaves every rank with the gradients averaged over all ranks. Create the optimizer over
    ``ddp.parameters()`` (or the module's) as usual, after wrapping.

    ``no_sync()``: a context in which backward does not communicate (gradient accumulation); the first
    backward after it averages everything accumulated. ``bucket_cap_mb``: largest bucket (MB).
    ``broadcast_buffers``: rank 0's buffers are sent to every rank at each training forward.
    Every parameter that needs a gradient must receive one in each backward (as in PyTorch without
    ``find_unused_parameters``); otherwise the next forward raises.
    >>> model = DistributedDataParallel(nn.Sequential(nn.Linear(784, 10)))
    """

    def __init__(
        self,
        module: Module,
        device_ids=None,
        output_device=None,
        dim: int = 0,
        broadcast_buffers: bool = True,
        process_group=None,
        bucket_cap_mb: float | None = 25,
        find_unused_parameters: bool = False,
        check_reduction: bool = False,
        gradient_as_bucket_view: bool = False,
        static_graph: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel wraps a gpunn.nn.Module, got {type(module).__name__}")
        if find_unused_parameters:
            raise NotImplementedError(
                "DistributedDataParallel(find_unused_parameters=True) is not supported: "
                "every parameter that requires grad must get a gradient in each backward "
                "(freeze the others with requires_grad_(False) before wrapping)"
            )
        if device_ids is not None and len(list(device_ids)) > 1:
            raise ValueError("DistributedDataParallel: one device per process; pass device_ids=[local_rank] or None")
        cap = 25.0 if bucket_cap_mb is None else float(bucket_cap_mb)
        if not cap > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be positive, got {bucket_cap_mb!r}")
        group = _default(process_group)
        self.module = module
        object.__setattr__(self, "_group", group)
        object.__setattr__(self, "broadcast_buffers", bool(broadcast_buffers))
        object.__setattr__(self, "_require_sync", True)

        # 1. the same model everywhere, or one clear error on every rank (never a hang)
        mine = _signature(module, cap)
        signatures = group.all_gather_object(mine)
        for r, sig in enumerate(signatures):
            if sig != signatures[0]:
                raise CollectiveError(
                    f"DistributedDataParallel: the ranks were given different models; rank {r} differs from "
                    f"rank 0: {_first_difference(signatures[0], sig)}"
                )

        # 2. rank 0's weights and buffers everywhere
        for p in module.parameters():
            group.broadcast(p._data, 0)
        for b in module.buffers():
            group.broadcast(b._data, 0)

        # 3. buckets over the parameters that need grad, in the order backward produces them
        params = [p for p in module.parameters() if p.requires_grad]
        order = {id(p): i for i, p in enumerate(params)}
        buckets, current, size, key = [], [], 0, None
        for p in reversed(params):
            k = (id(p._backend), str(p.dtype))
            nbytes = int(p._data.nbytes)
            if current and (k != key or size + nbytes > cap * 2**20):
                buckets.append(current)
                current, size = [], 0
            current.append(p)
            size, key = size + nbytes, k
        if current:
            buckets.append(current)
        object.__setattr__(self, "_buckets", [_Bucket(sorted(b, key=lambda p: order[id(p)])) for b in buckets])
        object.__setattr__(self, "_bucket_of", {id(p): i for i, b in enumerate(self._buckets) for p in b.params})
        object.__setattr__(self, "_next", 0)  # the next bucket to reduce this backward
        object.__setattr__(self, "_names", {id(p): n for n, p in module.named_parameters()})
        object.__setattr__(self, "_hooks", [p.register_post_accumulate_grad_hook(self._on_grad) for p in params])

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        self._check_finished()
        if self.broadcast_buffers and self.training and self._group.size > 1:
            for b in self.module.buffers():
                self._group.broadcast(b._data, 0)
        return self.module(*args, **kwargs)

    def _check_finished(self) -> None:
        """The previous backward must have reduced every bucket; if not, ranks may disagree: say so."""
        if not self._require_sync:
            return
        if self._next > 0 or any(b.got for b in self._buckets):
            missing = [
                self._names.get(id(p), "?") for b in self._buckets[self._next :] for p in b.params if id(p) not in b.got
            ]
            raise RuntimeError(
                "DistributedDataParallel: the previous backward did not finish reducing "
                f"gradients: these parameters received no gradient: {', '.join(missing)}. Every "
                "parameter that requires grad must be used in the loss (freeze unused ones with "
                "requires_grad_(False) before wrapping)"
            )

    # -- backward --------------------------------------------------------------------------------
    def _on_grad(self, p) -> None:
        if not self._require_sync:
            return
        bucket = self._buckets[self._bucket_of[id(p)]]
        bucket.got.add(id(p))
        # reduce ready buckets in their fixed order: every rank issues the same collectives
        while self._next < len(self._buckets) and self._buckets[self._next].ready():
            self._reduce(self._buckets[self._next])
            object.__setattr__(self, "_next", self._next + 1)
        if self._next == len(self._buckets):  # this backward is done: ready for the next
            for b in self._buckets:
                b.got = set()
            object.__setattr__(self, "_next", 0)

    def _reduce(self, bucket: _Bucket) -> None:
        params = bucket.params
        owner = params[0]._grad_owner
        region = None
        if owner is not None and all(p._grad_owner is owner for p in params):
            region = owner.grad_region(params)
        if region is not None:  # the optimizer's flat gradient buffer: in place, no copy
            self._group.all_reduce(region, ReduceOp.AVG)
            return
        xp = params[0]._backend.xp
        flat = xp.concatenate([p.grad._data.reshape(-1) for p in params])
        self._group.all_reduce(flat, ReduceOp.AVG)
        offset = 0
        for p in params:
            n = p.grad._data.size
            p.grad._data[...] = flat[offset : offset + n].reshape(p.grad._data.shape)
            offset += n

    # -- gradient accumulation -------------------------------------------------------------------
    @contextlib.contextmanager
    def no_sync(self):
        """Backward inside this context only accumulates local gradients; the first backward after it
        averages the accumulated sum across ranks."""
        previous = self._require_sync
        object.__setattr__(self, "_require_sync", False)
        try:
            yield
        finally:
            object.__setattr__(self, "_require_sync", previous)

    def extra_repr(self) -> str:
        return f"world_size={self._group.size}, buckets={len(self._buckets)}"
