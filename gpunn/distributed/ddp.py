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
from gpunn.tensor import Tensor, is_grad_enabled


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
    Every parameter that needs a gradient must receive one in each backward, or the next forward raises
    naming it; with ``find_unused_parameters=True`` each forward searches its graph for the parameters it
    does not reach, which then count as ready (their buckets carry a used-flag per parameter).
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
        object.__setattr__(self, "find_unused_parameters", bool(find_unused_parameters))
        object.__setattr__(self, "_unused", set())  # ids of the parameters this forward did not reach

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
        out = self.module(*args, **kwargs)
        if self.find_unused_parameters and self._require_sync and is_grad_enabled():
            reached = _reachable(out)
            unused = {id(p) for b in self._buckets for p in b.params if id(p) not in reached}
            object.__setattr__(self, "_unused", unused)
            for b in self._buckets:  # ready now: they contribute zeros (or their earlier gradient)
                for p in b.params:
                    if id(p) in unused:
                        self._mark_ready(p)
        return out

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
                "parameter that requires grad must be used in the loss, or pass "
                "find_unused_parameters=True (or freeze unused ones with requires_grad_(False) before "
                "wrapping)"
            )

    # -- backward --------------------------------------------------------------------------------
    def _on_grad(self, p) -> None:
        if not self._require_sync:
            return
        if id(p) in self._unused:
            raise RuntimeError(
                f"DistributedDataParallel: parameter {self._names.get(id(p), '?')!r} was not used by "
                "the forward (find_unused_parameters=True marked it unused) but received a gradient "
                "in backward: use parameters only inside the wrapped module's forward"
            )
        self._mark_ready(p)

    def _mark_ready(self, p) -> None:
        bucket = self._buckets[self._bucket_of[id(p)]]
        bucket.got.add(id(p))
        # reduce ready buckets in their fixed order: every rank issues the same collectives
        while self._next < len(self._buckets) and self._buckets[self._next].ready():
            self._reduce(self._buckets[self._next])
            object.__setattr__(self, "_next", self._next + 1)
        if self._next == len(self._buckets):  # this backward is done: ready for the next
            for b in self._buckets:
                b.got = set()
            object.__setattr__(self, "_next", 0)  # (_unused stays until the next forward: a late gradient raises)

    def _reduce(self, bucket: _Bucket) -> None:
        params = bucket.params
        if self.find_unused_parameters:
            self._reduce_with_mask(params)
            return
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

    def _reduce_with_mask(self, params: list) -> None:
        """One collective over the gradients and a used-flag per parameter: a parameter some rank used gets
        the average (ranks that did not use it add zeros, or the gradient it already had); one that no rank
        used keeps ``.grad`` as it was (None after zero_grad), so the optimizer skips it, as in PyTorch."""
        be = params[0]._backend
        xp = be.xp
        dtype = params[0]._data.dtype
        parts = [p.grad._data.reshape(-1) if p.grad is not None else xp.zeros(p._data.size, dtype) for p in params]
        used = xp.asarray([0.0 if id(p) in self._unused else 1.0 for p in params], dtype=dtype)
        flat = xp.concatenate([*parts, used])
        self._group.all_reduce(flat, ReduceOp.SUM)
        flags = be.to_numpy(flat[-len(params) :])
        offset = 0
        for p, flag in zip(params, flags):
            n = p._data.size
            if flag > 0 or p.grad is not None:
                avg = flat[offset : offset + n].reshape(p.shape) / self._group.size
                if p.grad is not None:
                    p.grad._data[...] = avg
                elif p._grad_view is not None and tuple(p._grad_view.shape) == p.shape:
                    p._grad_view[...] = avg  # into the optimizer's flat gradient buffer, as backward would
                    p.grad = Tensor._wrap(p._grad_view, be)
                else:
                    p.grad = Tensor._wrap(avg.astype(dtype, copy=False), be)
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


def _reachable(out) -> set:
    """Ids of every tensor the autograd graph of ``out`` (a Tensor, or tuples/lists/dicts of them) reaches."""
    stack, seen = [], set()
    todo = [out]
    while todo:
        o = todo.pop()
        if isinstance(o, Tensor):
            stack.append(o)
        elif isinstance(o, (tuple, list)):
            todo.extend(o)
        elif isinstance(o, dict):
            todo.extend(o.values())
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        stack.extend(q for q in t._parents if q is not None and q.requires_grad)
    return seen
