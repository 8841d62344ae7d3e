"""Per-op benchmarks: gpunn's public ops against PyTorch's, across sizes from the MNIST models' shapes
up to large ones.

Groups (each parametrized by size and by implementation, gpunn or the PyTorch peer):
    linear_relu_fwd      F.linear(x, W, b, activation="relu")            vs relu(F.linear(x, W, b))
    linear_relu_fwdbwd   the same, then y.backward(dy)                   (dx, dW, db)
    cross_entropy        F.cross_entropy(logits, t) + backward           (loss, dlogits)
    sgd_momentum_step    optim.SGD(lr, momentum=0.9, weight_decay).step()
    adam_step            optim.Adam(lr).step()
    conv2d_fwdbwd        F.conv2d(x, W, b, padding=1) + backward         (y, dx, dW, db)
    max_pool2d_fwdbwd    F.max_pool2d(x, 2) + backward                   (y, dx)

Each test validates against a float64 reference computed with the backend's array module (NumPy or
CuPy) before it times anything. The bytes and FLOPs an op moves are counted by the formula in the
comment next to them: the minimum traffic of a fused implementation (every input read once, every
output written once), so GB/s is comparable across implementations.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import gpunn
import gpunn.nn.functional as F
from bench.conftest import (
    GPUNN_IMPL,
    ON_GPU,
    PEER_IMPL,
    check,
    impls,
    rotation_count,
    sync_gpunn,
    sync_torch,
    to_host,
    torch,
)
from gpunn import nn, optim

IMPLS = impls()  # gpunn and the peer; impls(op) adds one gpunn-v<N> per other version of kernel op
F32 = 4  # bytes per float32


def _sizes(cpu: list, gpu_extra: list) -> list:
    """The CPU sweep; the GPU suite adds larger sizes (and drops none, so the two can be compared)."""
    out = cpu + (gpu_extra if ON_GPU else [])
    return [pytest.param(s, id=s[0]) for s in out]


def _rng(*key) -> np.random.Generator:
    """A generator seeded from ``key`` the same way in every process (so gpunn and the peer see the same
    data, run after run)."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _gt(a, requires_grad=False):
    """A gpunn tensor on the backend under test holding a copy of host array ``a``."""
    return gpunn.tensor(a, requires_grad=requires_grad)


def _tt(a, device, requires_grad=False):
    return torch.from_numpy(np.ascontiguousarray(a)).to(device).requires_grad_(requires_grad)


def _xp64(backend, a):
    """Host array ``a`` as a float64 array of the backend's array module (for references)."""
    return backend.xp.asarray(np.asarray(a, dtype=np.float64))


# ------------------------------------------------------------------------------------------------
# fused linear + ReLU
# ------------------------------------------------------------------------------------------------
# (label, N, K, M): x (N, K), W (M, K) -> y (N, M)
LINEAR_SIZES = _sizes(
    [
        ("mlp-l1 200x784->200", 200, 784, 200),
        ("mlp-l2 200x200->200", 200, 200, 200),
        ("1024x1024->1024", 1024, 1024, 1024),
        ("2048x2048->2048", 2048, 2048, 2048),
    ],
    [("4096x4096->4096", 4096, 4096, 4096)],
)


def _linear_data(size):
    _, n, k, m = size
    rng = _rng("linear", n, k, m)
    x = rng.standard_normal((n, k), dtype=np.float32)
    W = rng.standard_normal((m, k), dtype=np.float32) / np.float32(np.sqrt(k))
    b = rng.standard_normal(m, dtype=np.float32) * np.float32(0.1)
    dy = rng.standard_normal((n, m), dtype=np.float32)
    return x, W, b, dy


def _linear_ref(backend, x, W, b, dy, y_mask=None):
    """float64: y = relu(x W^T + b); with dy: dx, dW, db. ``y_mask`` (the implementation's own y > 0)
    decides the ReLU derivative where z is within rounding of 0, where float32 and float64 disagree."""
    xp = backend.xp
    x64, W64, b64 = _xp64(backend, x), _xp64(backend, W), _xp64(backend, b)
    z = x64 @ W64.T + b64
    out = {"y": xp.maximum(z, 0)}
    if dy is not None:
        mask = xp.asarray(y_mask) if y_mask is not None else z > 0
        dz = _xp64(backend, dy) * mask
        out.update({"dx": dz @ W64, "dW": dz.T @ x64, "db": dz.sum(axis=0)})
    return {k: to_host(v) for k, v in out.items()}


@pytest.mark.parametrize("impl", impls("linear_act"))
@pytest.mark.parametrize("size", LINEAR_SIZES)
def test_linear_relu_fwd(benchmark, measure, backend, ceilings, torch_device, size, impl):
    label, n, k, m = size
    benchmark.group = f"linear_relu_fwd {label}"
    x, W, b, _ = _linear_data(size)
    # bytes = 4 (N K + M K + M + N M): read x, W, b, write y
    nbytes = F32 * (n * k + m * k + m + n * m)
    # flops = 2 N K M (the GEMM) + 2 N M (bias add, ReLU)
    flops = 2 * n * k * m + 2 * n * m
    copies = rotation_count(nbytes, ceilings)
    if impl.startswith("gpunn"):
        sets = [(_gt(x), _gt(W), _gt(b)) for _ in range(copies)]

        def fn(xt, Wt, bt):
            with gpunn.no_grad():
                return F.linear(xt, Wt, bt, activation="relu")

        sync = lambda: sync_gpunn(backend)  # noqa: E731
        name = GPUNN_IMPL
    else:
        sets = [(_tt(x, torch_device), _tt(W, torch_device), _tt(b, torch_device)) for _ in range(copies)]

        def fn(xt, Wt, bt):
            with torch.no_grad():
                return torch.relu(torch.nn.functional.linear(xt, Wt, bt))

        sync, name = sync_torch, PEER_IMPL
    err = check({"y": fn(*sets[0])}, _linear_ref(backend, x, W, b, None), tol=1e-4)
    measure(
        fn,
        sets,
        op="linear_relu_fwd",
        size=label,
        impl=name,
        bytes_moved=nbytes,
        flops=flops,
        sync=sync,
        bound="compute",
        max_rel_err=err,
        bytes_formula="4(NK + MK + M + NM)",
        flops_formula="2NKM + 2NM",
    )


@pytest.mark.parametrize("impl", impls("linear_act"))
@pytest.mark.parametrize("size", LINEAR_SIZES)
def test_linear_relu_fwdbwd(benchmark, measure, backend, ceilings, torch_device, size, impl):
    label, n, k, m = size
    benchmark.group = f"linear_relu_fwdbwd {label}"
    x, W, b, dy = _linear_data(size)
    # bytes = 4 (NK + MK + M + NM)   forward: read x, W, b, write y
    #       + 4 (2NM + MK + NK)      dx = dz W: read dy, y (the ReLU mask), W, write dx
    #       + 4 (NK + MK + M)        dW = dz^T x, db = sum dz: read x, write dW, db (dz reused)
    nbytes = F32 * ((n * k + m * k + m + n * m) + (2 * n * m + m * k + n * k) + (n * k + m * k + m))
    # flops = 2NKM (forward) + 2NKM (dx) + 2NKM (dW) + 4NM (bias, ReLU, mask, db)
    flops = 6 * n * k * m + 4 * n * m
    copies = rotation_count(nbytes, ceilings)
    if impl.startswith("gpunn"):
        sets = [(_gt(x, True), _gt(W, True), _gt(b, True), _gt(dy)) for _ in range(copies)]

        def fn(xt, Wt, bt, dyt):
            xt.grad = Wt.grad = bt.grad = None
            y = F.linear(xt, Wt, bt, activation="relu")
            y.backward(dyt)
            return y

        sync, name = (lambda: sync_gpunn(backend)), GPUNN_IMPL
    else:
        sets = [
            (_tt(x, torch_device, True), _tt(W, torch_device, True), _tt(b, torch_device, True), _tt(dy, torch_device))
            for _ in range(copies)
        ]

        def fn(xt, Wt, bt, dyt):
            xt.grad = Wt.grad = bt.grad = None
            y = torch.relu(torch.nn.functional.linear(xt, Wt, bt))
            y.backward(dyt)
            return y

        sync, name = sync_torch, PEER_IMPL
    xt, Wt, bt, dyt = sets[0]
    y = fn(*sets[0])
    got = {"y": y, "dx": xt.grad, "dW": Wt.grad, "db": bt.grad}
    err = check(got, _linear_ref(backend, x, W, b, dy, y_mask=to_host(y) > 0), tol=1e-4)
    measure(
        fn,
        sets,
        op="linear_relu_fwdbwd",
        size=label,
        impl=name,
        bytes_moved=nbytes,
        flops=flops,
        sync=sync,
        bound="compute",
        max_rel_err=err,
        bytes_formula="4(NK+MK+M+NM) + 4(2NM+MK+NK) + 4(NK+MK+M)",
        flops_formula="6NKM + 4NM",
    )


# ------------------------------------------------------------------------------------------------
# softmax cross-entropy, forward + backward
# ------------------------------------------------------------------------------------------------
# (label, N, C): logits (N, C), targets (N,)
CE_SIZES = _sizes(
    [("mlp 200x10", 200, 10), ("2048x1000", 2048, 1000), ("8192x1000", 8192, 1000), ("4096x8192", 4096, 8192)],
    [("65536x1000", 65536, 1000), ("8192x32768", 8192, 32768)],
)


def _ce_ref(backend, logits, target):
    """float64 mean cross-entropy and its gradient (softmax - onehot) / N."""
    xp = backend.xp
    z = _xp64(backend, logits)
    t = xp.asarray(target)
    n = z.shape[0]
    shifted = z - z.max(axis=1, keepdims=True)
    logp = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    loss = -logp[xp.arange(n), t].mean()
    d = xp.exp(logp)
    d[xp.arange(n), t] -= 1
    return {"loss": to_host(loss), "dlogits": to_host(d / n)}


@pytest.mark.parametrize("impl", impls("softmax_cross_entropy"))
@pytest.mark.parametrize("size", CE_SIZES)
def test_cross_entropy(benchmark, measure, backend, ceilings, torch_device, size, impl):
    label, n, c = size
    benchmark.group = f"cross_entropy {label}"
    rng = _rng("ce", n, c)
    logits = rng.standard_normal((n, c), dtype=np.float32) * np.float32(3)
    target = rng.integers(0, c, n).astype(np.int64)
    # bytes = 4 NC + 8 N + 4 NC: read the logits and the int64 targets once, write dlogits once (the
    # fused minimum; the loss is one number)
    nbytes = 2 * F32 * n * c + 8 * n
    # flops ~ 6 NC: max, subtract, exp, sum, scale, subtract-onehot per logit (exp counted as one)
    flops = 6 * n * c
    copies = rotation_count(nbytes, ceilings)
    if impl.startswith("gpunn"):
        sets = [(_gt(logits, True), _gt(target)) for _ in range(copies)]

        def fn(z, t):
            z.grad = None
            loss = F.cross_entropy(z, t)
            loss.backward()
            return loss

        sync, name = (lambda: sync_gpunn(backend)), GPUNN_IMPL
    else:
        sets = [(_tt(logits, torch_device, True), _tt(target, torch_device)) for _ in range(copies)]

        def fn(z, t):
            z.grad = None
            loss = torch.nn.functional.cross_entropy(z, t)
            loss.backward()
            return loss

        sync, name = sync_torch, PEER_IMPL
    loss = fn(*sets[0])
    err = check({"loss": loss, "dlogits": sets[0][0].grad}, _ce_ref(backend, logits, target), tol=1e-5)
    measure(
        fn,
        sets,
        op="cross_entropy",
        size=label,
        impl=name,
        bytes_moved=nbytes,
        flops=flops,
        sync=sync,
        bound="memory",
        max_rel_err=err,
        bytes_formula="4NC + 8N + 4NC",
        flops_formula="6NC",
    )


# ------------------------------------------------------------------------------------------------
# optimizer steps over a model's parameters
# ------------------------------------------------------------------------------------------------
MLP_SHAPES = [(200, 784), (200,), (200, 200), (200,), (10, 200), (10,)]  # 199,210 parameters
# (label, parameter shapes)
OPT_SIZES = _sizes(
    [
        ("mlp 199k", MLP_SHAPES),
        ("2.1M (2x 1024x1024)", [(1024, 1024), (1024,)] * 2),
        ("16.8M (4096x4096)", [(4096, 4096), (4096,)]),
    ],
    [("67M (4x 4096x4096)", [(4096, 4096), (4096,)] * 4)],
)
SGD_HYPER = {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}  # gpunn train's SGD defaults
ADAM_HYPER = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}


def _opt_data(label, shapes):
    rng = _rng("opt", label)
    params = [rng.standard_normal(s, dtype=np.float32) * np.float32(0.1) for s in shapes]
    grads = [rng.standard_normal(s, dtype=np.float32) * np.float32(0.01) for s in shapes]
    return params, grads


def _sgd_ref(params, grads, steps, lr, momentum, weight_decay):
    """float64 PyTorch SGD (momentum buffer = first gradient), ``steps`` steps with fixed gradients."""
    out = []
    for p, g in zip(params, grads):
        p, g = p.astype(np.float64), g.astype(np.float64)
        buf = None
        for _ in range(steps):
            d = g + weight_decay * p
            buf = d if buf is None else momentum * buf + d
            p = p - lr * buf
        out.append(p)
    return out


def _adam_ref(params, grads, steps, lr, betas, eps):
    """float64 PyTorch Adam, ``steps`` steps with fixed gradients."""
    out = []
    b1, b2 = betas
    for p, g in zip(params, grads):
        p, g = p.astype(np.float64), g.astype(np.float64)
        m, v = np.zeros_like(p), np.zeros_like(p)
        for t in range(1, steps + 1):
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            p = p - lr / (1 - b1**t) * m / (np.sqrt(v) / np.sqrt(1 - b2**t) + eps)
        out.append(p)
    return out


def _make_opt(impl, kind, params, grads, device):
    """An optimizer over fresh copies of ``params`` with ``grads`` attached, and the parameter list."""
    if impl.startswith("gpunn"):
        ps = [nn.Parameter(_gt(p)) for p in params]
        for p, g in zip(ps, grads):
            p.grad = _gt(g)
        opt = optim.SGD(ps, **SGD_HYPER) if kind == "sgd" else optim.Adam(ps, **ADAM_HYPER)
    else:  # torch (its default: a for-loop on the CPU), torch-foreach, torch-fused
        ps = [_tt(p, device, True) for p in params]
        for p, g in zip(ps, grads):
            p.grad = _tt(g, device)
        flags = {"torch": {}, "torch-foreach": {"foreach": True}, "torch-fused": {"fused": True}}[impl]
        opt = (
            torch.optim.SGD(ps, **SGD_HYPER, **flags) if kind == "sgd" else torch.optim.Adam(ps, **ADAM_HYPER, **flags)
        )
    return opt, ps


def _bench_optimizer(kind, benchmark, measure, backend, ceilings, torch_device, size, impl):
    label, shapes = size
    benchmark.group = f"{kind}_step {label}"
    params, grads = _opt_data(label, shapes)
    total = sum(p.size for p in params)
    if kind == "sgd":
        # bytes = 4 P (read param, grad, momentum) + 4 P (write param, momentum) = 20 P
        nbytes = 5 * F32 * total
        # flops = 6 P: g + wd p (2), mu buf + g (2), p - lr buf (2)
        flops = 6 * total
        ref = _sgd_ref(params, grads, 2, **SGD_HYPER)
        bytes_formula, flops_formula = "4P (read p, g, buf) + 4P (write p, buf) = 20P", "6P"
    else:
        # bytes = 4 P (read param, grad, m, v) + 4 P (write param, m, v) = 28 P
        nbytes = 7 * F32 * total
        # flops ~ 13 P: m (3), v (4), sqrt (1), bias corrections and eps (3), update (2)
        flops = 13 * total
        ref = _adam_ref(params, grads, 2, **ADAM_HYPER)
        bytes_formula, flops_formula = "4P (read p, g, m, v) + 4P (write p, m, v) = 28P", "13P"
    # validate: two steps from fresh state (the first initialises the state, the second uses it)
    opt, ps = _make_opt(impl, kind, params, grads, torch_device)
    opt.step()
    opt.step()
    err = check({f"p{i}": p for i, p in enumerate(ps)}, {f"p{i}": r for i, r in enumerate(ref)}, tol=1e-5)
    copies = rotation_count(nbytes, ceilings, limit=16)
    sets = [(_make_opt(impl, kind, params, grads, torch_device)[0],) for _ in range(copies)]
    sync = (lambda: sync_gpunn(backend)) if impl.startswith("gpunn") else sync_torch
    name = GPUNN_IMPL if impl.startswith("gpunn") else PEER_IMPL + impl[len("torch") :]  # torch-cpu(-foreach|-fused)
    measure(
        lambda o: o.step(),
        sets,
        op=f"{kind}_step",
        size=label,
        impl=name,
        bytes_moved=nbytes,
        flops=flops,
        sync=sync,
        bound="memory",
        max_rel_err=err,
        bytes_formula=bytes_formula,
        flops_formula=flops_formula,
        extra={"params": int(total)},
    )


def opt_impls(op: str) -> list:
    """Each peer at its best: gpunn's kernel versions, and PyTorch's default (a for-loop on the CPU),
    foreach=True and fused=True."""
    return impls(op) + [
        pytest.param(f"torch-{v}", id=f"torch-{v}", marks=pytest.mark.peer) for v in ("foreach", "fused")
    ]


@pytest.mark.parametrize("impl", opt_impls("sgd_step"))
@pytest.mark.parametrize("size", OPT_SIZES)
def test_sgd_momentum_step(benchmark, measure, backend, ceilings, torch_device, size, impl):
    _bench_optimizer("sgd", benchmark, measure, backend, ceilings, torch_device, size, impl)


@pytest.mark.parametrize("impl", opt_impls("adam_step"))
@pytest.mark.parametrize("size", OPT_SIZES)
def test_adam_step(benchmark, measure, backend, ceilings, torch_device, size, impl):
    _bench_optimizer("adam", benchmark, measure, backend, ceilings, torch_device, size, impl)


# ------------------------------------------------------------------------------------------------
# conv2d (3x3, padding 1) and max_pool2d (2x2), forward + backward
# ------------------------------------------------------------------------------------------------
# (label, N, C, H, OC): x (N, C, H, H), W (OC, C, 3, 3), stride 1, padding 1 -> y (N, OC, H, H)
CONV_SIZES = _sizes(
    [
        ("cnn-conv1 200x1x28x28->16", 200, 1, 28, 16),
        ("cnn-conv2 200x16x14x14->32", 200, 16, 14, 32),
        ("32x64x32x32->64", 32, 64, 32, 64),
    ],
    [("64x128x56x56->128", 64, 128, 56, 128)],
)


def _conv_ref(backend, x, W, b, dy):
    """float64 3x3 / stride 1 / padding 1 cross-correlation and its gradients, one tensordot per tap."""
    xp = backend.xp
    x64, W64, dy64 = _xp64(backend, x), _xp64(backend, W), _xp64(backend, dy)
    n, c, h, w = x64.shape
    xpad = xp.pad(x64, ((0, 0), (0, 0), (1, 1), (1, 1)))
    y = xp.zeros((n, W64.shape[0], h, w)) + _xp64(backend, b).reshape(1, -1, 1, 1)
    dW = xp.zeros_like(W64)
    dxpad = xp.zeros_like(xpad)
    for i in range(3):
        for j in range(3):
            tap = xpad[:, :, i : i + h, j : j + w]  # (N, C, H, W)
            y += xp.einsum("nchw,oc->nohw", tap, W64[:, :, i, j])
            dW[:, :, i, j] = xp.tensordot(dy64, tap, axes=([0, 2, 3], [0, 2, 3]))
            dxpad[:, :, i : i + h, j : j + w] += xp.einsum("nohw,oc->nchw", dy64, W64[:, :, i, j])
    out = {"y": y, "dx": dxpad[:, :, 1:-1, 1:-1], "dW": dW, "db": dy64.sum(axis=(0, 2, 3))}
    return {k: to_host(v) for k, v in out.items()}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("size", CONV_SIZES)
def test_conv2d_fwdbwd(benchmark, measure, backend, ceilings, torch_device, size, impl):
    label, n, c, h, oc = size
    benchmark.group = f"conv2d_fwdbwd {label}"
    rng = _rng("conv", n, c, h, oc)
    x = rng.standard_normal((n, c, h, h), dtype=np.float32)
    W = rng.standard_normal((oc, c, 3, 3), dtype=np.float32) / np.float32(np.sqrt(9 * c))
    b = rng.standard_normal(oc, dtype=np.float32) * np.float32(0.1)
    dy = rng.standard_normal((n, oc, h, h), dtype=np.float32)
    sx, sw, sy = n * c * h * h, oc * c * 9, n * oc * h * h
    # bytes = 4 (x + W + b + y)               forward: read x, W, b, write y
    #       + 4 (dy + x + W + dx + dW + db)   backward: read dy, x, W, write dx, dW, db
    nbytes = F32 * ((sx + sw + oc + sy) + (sy + sx + sw + sx + sw + oc))
    # flops = 3 * 2 N OC H W C 9: the forward GEMM, dx and dW each (bias and db not counted)
    flops = 3 * 2 * n * oc * h * h * c * 9
    copies = rotation_count(nbytes, ceilings, limit=8)
    if impl.startswith("gpunn"):
        sets = [(_gt(x, True), _gt(W, True), _gt(b, True), _gt(dy)) for _ in range(copies)]

        def fn(xt, Wt, bt, dyt):
            xt.grad = Wt.grad = bt.grad = None
            y = F.conv2d(xt, Wt, bt, padding=1)
            y.backward(dyt)
            return y

        sync, name = (lambda: sync_gpunn(backend)), GPUNN_IMPL
    else:
        sets = [
            (_tt(x, torch_device, True), _tt(W, torch_device, True), _tt(b, torch_device, True), _tt(dy, torch_device))
            for _ in range(copies)
        ]

        def fn(xt, Wt, bt, dyt):
            xt.grad = Wt.grad = bt.grad = None
            y = torch.nn.functional.conv2d(xt, Wt, bt, padding=1)
            y.backward(dyt)
            return y

        sync, name = sync_torch, PEER_IMPL
    xt, Wt, bt, _ = sets[0]
    y = fn(*sets[0])
    err = check({"y": y, "dx": xt.grad, "dW": Wt.grad, "db": bt.grad}, _conv_ref(backend, x, W, b, dy), tol=1e-4)
    measure(
        fn,
        sets,
        op="conv2d_fwdbwd",
        size=label,
        impl=name,
        bytes_moved=nbytes,
        flops=flops,
        sync=sync,
        bound="compute",
        max_rel_err=err,
        bytes_formula="4(x+W+b+y) + 4(dy+x+W+dx+dW+db)",
        flops_formula="3 * 2 N OC H W C KH KW",
    )


# (label, N, C, H): x (N, C, H, H) -> y (N, C, H/2, H/2), kernel 2, stride 2
POOL_SIZES = _sizes(
    [("cnn-pool1 200x16x28x28", 200, 16, 28), ("cnn-pool2 200x32x14x14", 200, 32, 14), ("32x64x112x112", 32, 64, 112)],
    [("128x64x112x112", 128, 64, 112)],
)


def _pool_ref(backend, x, dy):
    """float64 2x2/stride-2 max pool and its gradient (to the first maximum of each window)."""
    xp = backend.xp
    x64 = _xp64(backend, x)
    n, c, h, w = x64.shape
    win = x64.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
    arg = win.argmax(axis=-1)
    y = xp.take_along_axis(win, arg[..., None], axis=-1)[..., 0]
    dwin = (xp.arange(4) == arg[..., None]) * _xp64(backend, dy)[..., None]
    dx = dwin.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h, w)
    return {"y": to_host(y), "dx": to_host(dx)}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("size", POOL_SIZES)
def test_max_pool2d_fwdbwd(benchmark, measure, backend, ceilings, torch_device, size, impl):
    label, n, c, h = size
    benchmark.group = f"max_pool2d_fwdbwd {label}"
    rng = _rng("pool", n, c, h)
    x = rng.standard_normal((n, c, h, h), dtype=np.float32)
    dy = rng.standard_normal((n, c, h // 2, h // 2), dtype=np.float32)
    sx, sy = x.size, dy.size
    # bytes = 4 (x + y)    forward: read x, write y
    #       + 4 (y + x)    backward: read dy, write dx (the argmax, kept as small indices, not counted)
    nbytes = F32 * 2 * (sx + sy)
    # flops = x: one comparison per input element
    flops = sx
    copies = rotation_count(nbytes, ceilings, limit=16)
    if impl.startswith("gpunn"):
        sets = [(_gt(x, True), _gt(dy)) for _ in range(copies)]

        def fn(xt, dyt):
            xt.grad = None
            y = F.max_pool2d(xt, 2)
            y.backward(dyt)
            return y

        sync, name = (lambda: sync_gpunn(backend)), GPUNN_IMPL
    else:
        sets = [(_tt(x, torch_device, True), _tt(dy, torch_device)) for _ in range(copies)]

        def fn(xt, dyt):
            xt.grad = None
            y = torch.nn.functional.max_pool2d(xt, 2)
            y.backward(dyt)
            return y

        sync, name = sync_torch, PEER_IMPL
    y = fn(*sets[0])
    err = check({"y": y, "dx": sets[0][0].grad}, _pool_ref(backend, x, dy), tol=1e-6)
    measure(
        fn,
        sets,
        op="max_pool2d_fwdbwd",
        size=label,
        impl=name,
        bytes_moved=nbytes,
        flops=flops,
        sync=sync,
        bound="memory",
        max_rel_err=err,
        bytes_formula="4(x + y) + 4(y + x)",
        flops_formula="x",
    )
