"""gpunn.nn.functional against PyTorch's CPU build: forward values and gradients, float32 and float64,
on random irregular shapes; and the errors bad input gets."""

import numpy as np
import pytest

import gpunn
import gpunn.nn.functional as F
from tests.helpers import assert_close
from tests.helpers import parity as check_parity

torch = pytest.importorskip("torch")
TF = torch.nn.functional
DTYPES = [np.float32, np.float64]


def parity(gfn, tfn, arrays, dtype, rng, tol=None, **kwargs):
    """tests.helpers.parity with separately spelled gpunn and torch functions (torch run in ``dtype``: the
    torch functions here build their constant tensors in it)."""
    return check_parity(
        rng,
        lambda L, *xs: gfn(*xs),
        arrays,
        dtype,
        torch_fn=lambda L, *xs: tfn(*xs),
        tol=tol,
        reference=dtype,
        **kwargs,
    )


ACTS = {"relu": TF.relu, "leaky_relu": TF.leaky_relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, None: lambda z: z}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("shape", [(9, 41, 7), (1, 1, 1), (3, 2, 13, 5)])
def test_linear_fused_activation(rng, dtype, act, shape):
    *lead, k, m = shape
    x, W, b = rng.standard_normal((*lead, k)), rng.standard_normal((m, k)), rng.standard_normal(m)
    parity(
        lambda x, W, b: F.linear(x, W, b, activation=act),
        lambda x, W, b: ACTS[act](TF.linear(x, W, b)),
        [x, W, b],
        dtype,
        rng,
    )


def test_linear_without_bias_and_negative_slope(rng):
    x, W = rng.standard_normal((5, 6)), rng.standard_normal((3, 6))
    parity(lambda x, W: F.linear(x, W), lambda x, W: TF.linear(x, W), [x, W], np.float64, rng)
    parity(
        lambda x, W: F.linear(x, W, activation="leaky_relu", negative_slope=-0.3),
        lambda x, W: TF.leaky_relu(TF.linear(x, W), -0.3),
        [x, W],
        np.float64,
        rng,
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_and_softmax(rng, dtype):
    x = rng.standard_normal((9, 7, 41)) * 3
    parity(F.relu, TF.relu, [x], dtype, rng)
    parity(lambda x: F.leaky_relu(x, 0.2), lambda x: TF.leaky_relu(x, 0.2), [x], dtype, rng)
    parity(F.sigmoid, torch.sigmoid, [x], dtype, rng)
    parity(F.tanh, torch.tanh, [x], dtype, rng)
    for dim in (0, 1, -1):
        parity(lambda x: F.softmax(x, dim), lambda x: TF.softmax(x, dim), [x], dtype, rng)
        parity(lambda x: F.log_softmax(x, dim), lambda x: TF.log_softmax(x, dim), [x], dtype, rng)


def test_softmax_is_stable_for_huge_logits():
    x = gpunn.tensor([[1000.0, 0.0, -1000.0]])
    assert np.isfinite(F.softmax(x, 1).numpy()).all()
    assert np.isfinite(F.log_softmax(x, 1).numpy()).all()
    assert np.isfinite(F.sigmoid(gpunn.tensor([-1000.0, 1000.0])).numpy()).all()


def test_implicit_softmax_dim_warns_like_torch(rng):
    x = rng.standard_normal((4, 5))
    with pytest.warns(UserWarning, match="Implicit dimension"):
        out = F.softmax(gpunn.tensor(x))
    assert_close(out.numpy(), TF.softmax(torch.tensor(x), 1).numpy(), np.float64)


def test_entropy_matches_definition(rng):
    logits = rng.standard_normal((6, 5))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert_close(F.entropy(gpunn.tensor(logits)).numpy(), -(p * np.log(p)).sum(1), np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1), ((1, 2), (2, 0))])
def test_conv2d(rng, dtype, stride, padding):
    x, w, b = rng.standard_normal((3, 2, 11, 9)), rng.standard_normal((4, 2, 3, 2)), rng.standard_normal(4)
    parity(
        lambda x, w, b: F.conv2d(x, w, b, stride, padding),
        lambda x, w, b: TF.conv2d(x, w, b, stride, padding),
        [x, w, b],
        dtype,
        rng,
    )


def test_conv2d_unbatched_and_no_bias(rng):
    x, w = rng.standard_normal((2, 7, 6)), rng.standard_normal((3, 2, 2, 2))
    parity(lambda x, w: F.conv2d(x, w), lambda x, w: TF.conv2d(x, w), [x, w], np.float64, rng)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,s,p", [(2, None, 0), (3, 2, 1), ((3, 2), (1, 2), (1, 0))])
def test_pooling(rng, dtype, k, s, p):
    x = rng.standard_normal((3, 2, 11, 9))
    parity(lambda x: F.max_pool2d(x, k, s, p), lambda x: TF.max_pool2d(x, k, s, p), [x], dtype, rng)
    parity(lambda x: F.avg_pool2d(x, k, s, p), lambda x: TF.avg_pool2d(x, k, s, p), [x], dtype, rng)
    parity(
        lambda x: F.avg_pool2d(x, k, s, p, count_include_pad=False),
        lambda x: TF.avg_pool2d(x, k, s, p, count_include_pad=False),
        [x],
        dtype,
        rng,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.25])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy(rng, dtype, reduction, smoothing, weighted):
    logits, y = rng.standard_normal((13, 7)) * 2, rng.integers(0, 7, 13)
    y[[2, 9]] = -100  # ignore_index rows
    w = rng.random(7) + 0.1 if weighted else None
    gw, tw = (None, None) if w is None else (gpunn.tensor(w.astype(dtype)), torch.tensor(w.astype(dtype)))
    parity(
        lambda l: F.cross_entropy(l, gpunn.tensor(y), weight=gw, reduction=reduction, label_smoothing=smoothing),
        lambda l: TF.cross_entropy(l, torch.tensor(y), weight=tw, reduction=reduction, label_smoothing=smoothing),
        [logits],
        dtype,
        rng,
    )


def test_cross_entropy_large_vocab_and_spatial(rng):
    logits, y = rng.standard_normal((3, 4230)) * 4, rng.integers(0, 4230, 3)
    parity(
        lambda l: F.cross_entropy(l, gpunn.tensor(y)),
        lambda l: TF.cross_entropy(l, torch.tensor(y)),
        [logits],
        np.float32,
        rng,
    )
    l4, y4 = rng.standard_normal((3, 5, 4, 2)), rng.integers(0, 5, (3, 4, 2))
    parity(
        lambda l: F.cross_entropy(l, gpunn.tensor(y4), label_smoothing=0.1, reduction="none"),
        lambda l: TF.cross_entropy(l, torch.tensor(y4), label_smoothing=0.1, reduction="none"),
        [l4],
        np.float64,
        rng,
    )
    parity(
        lambda l: F.cross_entropy(l, gpunn.tensor(2)),
        lambda l: TF.cross_entropy(l, torch.tensor(2)),
        [rng.standard_normal(5)],
        np.float64,
        rng,
    )


def test_cross_entropy_calls_the_fused_primitive_once(rng, monkeypatch):
    be = gpunn.get_backend()
    calls = []
    original = be.softmax_cross_entropy_fwd  # (loss, backward): the cupy backend's backward is a second kernel
    monkeypatch.setattr(be, "softmax_cross_entropy_fwd", lambda *a, **k: calls.append(1) or original(*a, **k))
    logits = gpunn.tensor(rng.standard_normal((5, 3)), requires_grad=True)
    F.cross_entropy(logits, gpunn.tensor([0, 1, 2, 1, 0])).backward()
    assert len(calls) == 1 and logits.grad is not None


def test_cross_entropy_all_ignored_is_nan_like_torch():
    out = F.cross_entropy(gpunn.tensor([[1.0, 2.0]]), gpunn.tensor([-100]))
    assert np.isnan(out.item())


@pytest.mark.parametrize("fn", ["cross_entropy", "cross_entropy_smoothed", "nll_loss"])
@pytest.mark.parametrize(("target", "weight"), [([-100, -100, -100], None), ([0, 1, 1], [0.0, 0.0, 1.0, 1.0])])
def test_mean_over_no_weight_gradient_matches_torch(rng, fn, target, weight):
    """'mean' with every row ignored: NaN loss, zero gradient (a batch of padding must not poison the
    weights); valid rows whose weights sum to 0: NaN loss and NaN gradient, as in PyTorch."""
    if gpunn.get_backend().name != "numpy" and weight is not None and "smoothed" in fn:
        pytest.skip("known gap: the cupy backend's smoothed zero-weight 'mean' loss is nonzero / 0 = inf, not NaN")
    x = rng.standard_normal((3, 4)).astype(np.float32)

    def run(L, F_):
        t = L.tensor(x, requires_grad=True)
        kw = {"weight": None if weight is None else L.tensor(weight)}
        if fn == "nll_loss":
            loss = F_.nll_loss(F_.log_softmax(t, dim=1), L.tensor(target), **kw)
        else:
            loss = F_.cross_entropy(t, L.tensor(target), label_smoothing=0.1 if "smoothed" in fn else 0.0, **kw)
        loss.backward()
        return loss.item(), t.grad.numpy()

    (got_loss, got), (ref_loss, ref) = run(gpunn, F), run(torch, TF)
    assert np.isnan(got_loss) and np.isnan(ref_loss)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_array_equal(np.nan_to_num(got), np.nan_to_num(ref))


def test_cross_entropy_nan_logits_propagate():
    out = F.cross_entropy(gpunn.tensor([[np.nan, 1.0], [0.5, 1.0]]), gpunn.tensor([0, 1]))
    assert np.isnan(out.item())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss(rng, reduction):
    logp = np.log(rng.dirichlet(np.ones(6), 13))
    y, w = rng.integers(0, 6, 13), rng.random(6) + 0.1
    y[4] = -100
    parity(
        lambda l: F.nll_loss(l, gpunn.tensor(y), weight=gpunn.tensor(w), reduction=reduction),
        lambda l: TF.nll_loss(l, torch.tensor(y), weight=torch.tensor(w), reduction=reduction),
        [logp],
        np.float64,
        rng,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_regression_and_binary_losses(rng, dtype, reduction):
    a, t = rng.standard_normal((9, 7, 4)), rng.random((9, 7, 4))
    parity(
        lambda a, t: F.mse_loss(a, t, reduction=reduction),
        lambda a, t: TF.mse_loss(a, t, reduction=reduction),
        [a, t],
        dtype,
        rng,
    )
    parity(
        lambda a, t: F.l1_loss(a, t, reduction=reduction),
        lambda a, t: TF.l1_loss(a, t, reduction=reduction),
        [a, t],
        dtype,
        rng,
    )
    probs = rng.random((9, 7, 4)) * 0.98 + 0.01
    w = rng.random((7, 4)) + 0.5
    parity(
        lambda p, t: F.binary_cross_entropy(p, t, weight=gpunn.tensor(w.astype(dtype)), reduction=reduction),
        lambda p, t: TF.binary_cross_entropy(
            p, t, weight=torch.tensor(w.astype(dtype)).expand(9, 7, 4), reduction=reduction
        ),
        [probs, t],
        dtype,
        rng,
    )
    pw = rng.random(4) + 0.5
    gpw, tpw = gpunn.tensor(pw.astype(dtype)), torch.tensor(pw.astype(dtype))
    parity(
        lambda x, t: F.binary_cross_entropy_with_logits(x, t, reduction=reduction, pos_weight=gpw),
        lambda x, t: TF.binary_cross_entropy_with_logits(x, t, reduction=reduction, pos_weight=tpw),
        [a * 4, t],
        dtype,
        rng,
    )


def test_bce_with_logits_is_stable_for_huge_logits():
    out = F.binary_cross_entropy_with_logits(gpunn.tensor([1000.0, -1000.0]), gpunn.tensor([0.0, 1.0]))
    assert np.isfinite(out.item()) and out.item() == pytest.approx(1000.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_multi_margin_loss(rng, dtype, p, reduction):
    x, y, w = rng.standard_normal((13, 6)), rng.integers(0, 6, 13), rng.random(6) + 0.1
    parity(
        lambda x: F.multi_margin_loss(
            x, gpunn.tensor(y), p=p, margin=0.7, weight=gpunn.tensor(w.astype(dtype)), reduction=reduction
        ),
        lambda x: TF.multi_margin_loss(
            x, torch.tensor(y), p=p, margin=0.7, weight=torch.tensor(w.astype(dtype)), reduction=reduction
        ),
        [x],
        dtype,
        rng,
    )


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning")
@pytest.mark.parametrize("reduction", ["batchmean", "sum", "mean", "none"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div(rng, reduction, log_target):
    logq = np.log(rng.dirichlet(np.ones(6), 13))
    p = rng.dirichlet(np.ones(6), 13)
    p[0, 0] = 0.0  # 0 * log 0 = 0
    target = np.log(p + 1e-3) if log_target else p
    with np.errstate(divide="ignore"):
        parity(
            lambda a, t: F.kl_div(a, t, reduction=reduction, log_target=log_target),
            lambda a, t: TF.kl_div(a, t, reduction=reduction, log_target=log_target),
            [logq, target],
            np.float64,
            rng,
            nonfinite_grads_may_differ=True,
        )  # d/dt t log t at t = 0


def test_dropout_semantics():
    x = gpunn.ones(200, 300)
    y = F.dropout(x, p=0.3, training=True).numpy()
    dropped = (y == 0).mean()
    assert abs(dropped - 0.3) < 0.01
    assert np.allclose(y[y != 0], 1 / 0.7)
    assert F.dropout(x, p=0.3, training=False) is x
    assert (F.dropout(x, p=1.0).numpy() == 0).all()
    assert F.dropout(x, p=0.0) is x
    xg = gpunn.ones(50, 40, requires_grad=True)
    out = F.dropout(xg, 0.5)
    out.sum().backward()
    assert np.array_equal(xg.grad.numpy(), out.detach().numpy())  # grad = mask * scale = output for x = 1


def test_dropout_is_reproducible_under_manual_seed():
    gpunn.manual_seed(7)
    a = F.dropout(gpunn.ones(30, 30), 0.5).numpy()
    gpunn.manual_seed(7)
    b = F.dropout(gpunn.ones(30, 30), 0.5).numpy()
    assert np.array_equal(a, b)


# ---- bad input ----------------------------------------------------------------------------------
def test_cross_entropy_errors(rng):
    logits = gpunn.tensor(rng.standard_normal((4, 3)))
    with pytest.raises(TypeError, match="integer tensor of class indices"):
        F.cross_entropy(logits, gpunn.tensor([0.0, 1.0, 2.0, 1.0]))
    # .item(): on the GPU the label check is a device flag raised where the loss is read (as in PyTorch)
    with pytest.raises(ValueError, match="label 3 is out of range for 3 classes"):
        F.cross_entropy(logits, gpunn.tensor([0, 1, 3, 1])).item()
    with pytest.raises(ValueError, match="label -1 is out of range"):
        F.cross_entropy(logits, gpunn.tensor([0, 1, -1, 1])).item()
    with pytest.raises(ValueError, match="target shape"):
        F.cross_entropy(logits, gpunn.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="reduction must be one of"):
        F.cross_entropy(logits, gpunn.tensor([0, 1, 2, 1]), reduction="avg")
    with pytest.raises(ValueError, match="weight must have shape"):
        F.cross_entropy(logits, gpunn.tensor([0, 1, 2, 1]), weight=gpunn.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="label_smoothing"):
        F.cross_entropy(logits, gpunn.tensor([0, 1, 2, 1]), label_smoothing=1.5)
    with pytest.raises(TypeError, match="floating-point"):
        F.cross_entropy(gpunn.tensor([[1, 2]]), gpunn.tensor([0]))


def test_shape_and_argument_errors(rng):
    x = gpunn.tensor(rng.standard_normal((4, 5)))
    with pytest.raises(ValueError, match=r"last dimension \(5\) must equal in_features \(6\)"):
        F.linear(x, gpunn.tensor(rng.standard_normal((3, 6))))
    with pytest.raises(ValueError, match="bias must have shape"):
        F.linear(x, gpunn.tensor(rng.standard_normal((3, 5))), gpunn.tensor(rng.standard_normal(4)))
    with pytest.raises(ValueError, match="activation must be one of"):
        F.linear(x, gpunn.tensor(rng.standard_normal((3, 5))), activation="gelu")
    with pytest.warns(UserWarning, match="different to the input size"):
        with pytest.raises(
            RuntimeError, match=r"tensor a \(5\) must match the size of tensor b \(4\) at non-singleton"
        ):
            F.mse_loss(x, gpunn.tensor(rng.standard_normal((4, 4))))
    with pytest.raises(ValueError, match="probabilities in"):
        F.binary_cross_entropy(x, gpunn.tensor(rng.random((4, 5))))
    with pytest.raises(ValueError, match="p \\(drop probability\\) must be in"):
        F.dropout(x, p=1.5)
    img = gpunn.tensor(rng.standard_normal((2, 3, 8, 8)))
    with pytest.raises(ValueError, match="input has 3 channels but weight expects 2"):
        F.conv2d(img, gpunn.tensor(rng.standard_normal((4, 2, 3, 3))))
    with pytest.raises(ValueError, match="expected a 4-D input"):
        F.conv2d(gpunn.tensor(rng.standard_normal((8, 8))), gpunn.tensor(rng.standard_normal((4, 3, 3, 3))))
    with pytest.raises(ValueError, match="kernel size 9 is larger"):
        F.conv2d(img, gpunn.tensor(rng.standard_normal((4, 3, 9, 9))))
    with pytest.raises(ValueError, match="padding must be"):
        F.max_pool2d(img, 2, padding=2)
    with pytest.raises(ValueError, match="only p == 1 and p == 2"):
        F.multi_margin_loss(x, gpunn.tensor([0, 1, 2, 3]), p=3)


def test_entropy_with_masked_classes_is_finite():
    out = F.entropy(gpunn.tensor([[0.0, -np.inf, 1.0]]))
    p = np.exp([0.0, 1.0]) / np.exp([0.0, 1.0]).sum()
    assert np.isclose(out.item(), -(p * np.log(p)).sum())


def test_conv2d_and_linear_reject_mixed_dtypes(rng):
    x32 = gpunn.tensor(rng.standard_normal((1, 2, 5, 5)).astype(np.float32))
    w64 = gpunn.tensor(rng.standard_normal((3, 2, 3, 3)))
    with pytest.raises(TypeError, match="dtype"):
        F.conv2d(x32, w64)
    with pytest.raises(TypeError, match="bias"):
        F.conv2d(x32, w64.float(), gpunn.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="dtypes differ"):
        F.linear(gpunn.ones(2, 3), gpunn.ones(4, 3), gpunn.ones(4, dtype=np.float64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan, "all -inf"])
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1}, {"weight": True}])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_ignored_rows_with_non_finite_logits_match_torch(dtype, bad, options, reduction):
    """An ignored row takes no part in the loss even with an inf or NaN logit (PyTorch's loss stays finite);
    its gradient is PyTorch's: NaN where its log-softmax is NaN, else 0. (It was a NaN loss.)"""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((13, 9)).astype(dtype)
    t = rng.integers(0, 9, 13)
    t[[0, 5]] = -100
    if bad == "all -inf":
        x[0] = -np.inf
    else:
        x[0, 2] = x[5, 8] = bad
    kw = dict(options, reduction=reduction)
    if "weight" in kw:
        kw["weight"] = rng.random(9).astype(dtype) + 0.5
    gx, tx = gpunn.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    gk = {k: gpunn.tensor(v) if k == "weight" else v for k, v in kw.items()}
    tk = {k: torch.tensor(v) if k == "weight" else v for k, v in kw.items()}
    gl, tl = F.cross_entropy(gx, gpunn.tensor(t), **gk), torch.nn.functional.cross_entropy(tx, torch.tensor(t), **tk)
    gl.sum().backward()
    tl.sum().backward()
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(gl.detach().numpy(), tl.detach().numpy(), rtol=tol)
    np.testing.assert_allclose(gx.grad.numpy(), tx.grad.numpy(), rtol=tol, atol=tol)  # NaN where torch's is


@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "kl_div"])
@pytest.mark.parametrize("shapes", [((9, 1), (9,)), ((7,), ()), ((4, 1, 3), (2, 1)), ((3, 5), (3, 5))])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_pointwise_losses_broadcast_a_target_of_another_shape_as_pytorch(rng, name, shapes, reduction):
    """A (N, 1) prediction against a (N,) target: PyTorch broadcasts (an (N, N) grid of differences) and
    warns (kl_div silently); values, gradients of both arguments and the warning as PyTorch's."""
    import warnings

    a = rng.standard_normal(shapes[0]).astype(np.float32)
    b = (rng.random(shapes[1]) + 0.1).astype(np.float32)  # (kl_div: a probability target)
    ga, gb = gpunn.tensor(a, requires_grad=True), gpunn.tensor(b, requires_grad=True)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        got = getattr(F, name)(ga, gb, reduction=reduction)
    with warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        want = getattr(torch.nn.functional, name)(ta, tb, reduction=reduction)
    assert [type(w.message) for w in ours] == [type(w.message) for w in theirs]
    assert any("different to the input size" in str(w.message) for w in ours) == (
        name != "kl_div" and shapes[0] != shapes[1]
    )
    assert got.shape == tuple(want.shape)
    assert_close(got.detach().numpy(), want.detach().numpy())
    (got * got).sum().backward()
    (want * want).sum().backward()
    assert_close(ga.grad.numpy(), ta.grad.numpy())
    assert_close(gb.grad.numpy(), tb.grad.numpy())


def test_arithmetic_on_shapes_that_do_not_broadcast_raises_pytorchs_error():
    cases = [
        ((2, 3), (4, 5), r"\(3\) must match the size of tensor b \(5\) at non-singleton dimension 1"),
        ((2, 3), (4,), r"\(3\) must match the size of tensor b \(4\) at non-singleton dimension 1"),
        ((2, 1, 3), (5, 3, 3), r"\(2\) must match the size of tensor b \(5\) at non-singleton dimension 0"),
    ]
    for sa, sb, msg in cases:
        for op in (lambda x, y: x + y, lambda x, y: x * y, lambda x, y: x - y, lambda x, y: x / y):
            with pytest.raises(RuntimeError, match=msg):
                op(gpunn.ones(sa), gpunn.ones(sb))
            with pytest.raises(RuntimeError, match=msg):
                op(torch.ones(sa), torch.ones(sb))
