"""gpunn.gradcheck (float64 central differences vs backward) for every differentiable op of
gpunn.nn.functional, on random irregular shapes away from kinks. Random targets are drawn once, as
default arguments, so every evaluation of a case sees the same ones."""

import numpy as np
import pytest

import gpunn
import gpunn.nn.functional as F


def t(rng, *shape, scale=1.0, positive=False):
    x = rng.standard_normal(shape) * scale
    if positive:
        x = np.abs(x) + 0.1
    return gpunn.tensor(x, requires_grad=True)


def labels(rng, n, c, ignore=()):
    y = rng.integers(0, c, n)
    y[list(ignore)] = -100
    return gpunn.tensor(y)


def probs(rng, *shape):
    return gpunn.tensor(rng.random(shape) * 0.9 + 0.05, requires_grad=True)


CASES = {
    "linear": lambda r: (lambda x, W, b: F.linear(x, W, b), (t(r, 5, 7), t(r, 3, 7), t(r, 3))),
    "linear_relu": lambda r: (lambda x, W, b: F.linear(x, W, b, activation="relu"), (t(r, 5, 7), t(r, 3, 7), t(r, 3))),
    "linear_leaky": lambda r: (
        lambda x, W: F.linear(x, W, activation="leaky_relu", negative_slope=0.1),
        (t(r, 2, 4, 7), t(r, 3, 7)),
    ),
    "linear_sigmoid": lambda r: (
        lambda x, W, b: F.linear(x, W, b, activation="sigmoid"),
        (t(r, 5, 7), t(r, 3, 7), t(r, 3)),
    ),
    "linear_tanh": lambda r: (lambda x, W, b: F.linear(x, W, b, activation="tanh"), (t(r, 5, 7), t(r, 3, 7), t(r, 3))),
    "relu": lambda r: (F.relu, (t(r, 4, 6),)),
    "leaky_relu": lambda r: (lambda x: F.leaky_relu(x, 0.2), (t(r, 4, 6),)),
    "sigmoid": lambda r: (F.sigmoid, (t(r, 4, 6, scale=3),)),
    "tanh": lambda r: (F.tanh, (t(r, 4, 6),)),
    "softmax": lambda r: (lambda x: F.softmax(x, 1), (t(r, 3, 5, 2),)),
    "log_softmax": lambda r: (lambda x: F.log_softmax(x, -1), (t(r, 3, 5, 2),)),
    "entropy": lambda r: (F.entropy, (t(r, 4, 6),)),
    "dropout": lambda r: (lambda x: (gpunn.manual_seed(5), F.dropout(x, 0.4))[1], (t(r, 6, 5),)),
    "flatten": lambda r: (lambda x: F.flatten(x, 1), (t(r, 2, 3, 4),)),
    "conv2d": lambda r: (
        lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1),
        (t(r, 2, 3, 7, 6), t(r, 4, 3, 3, 2), t(r, 4)),
    ),
    "max_pool2d": lambda r: (lambda x: F.max_pool2d(x, 3, 2, 1), (t(r, 2, 3, 7, 6),)),
    "avg_pool2d": lambda r: (lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False), (t(r, 2, 3, 7, 6),)),
    "cross_entropy": lambda r: (
        lambda x, y=labels(r, 9, 5, ignore=[3]), w=gpunn.tensor(r.random(5) + 0.2): F.cross_entropy(
            x, y, weight=w.double(), label_smoothing=0.15
        ),
        (t(r, 9, 5),),
    ),
    "cross_entropy_none": lambda r: (
        lambda x, y=labels(r, 9, 5): F.cross_entropy(x, y, reduction="none"),
        (t(r, 9, 5),),
    ),
    "nll_loss": lambda r: (lambda x, y=labels(r, 9, 5, ignore=[1]): F.nll_loss(x, y), (t(r, 9, 5),)),
    "mse_loss": lambda r: (F.mse_loss, (t(r, 4, 5), t(r, 4, 5))),
    "l1_loss": lambda r: (F.l1_loss, (t(r, 4, 5), t(r, 4, 5))),
    "binary_cross_entropy": lambda r: (F.binary_cross_entropy, (probs(r, 4, 5), probs(r, 4, 5))),
    "bce_with_logits": lambda r: (
        lambda x, y, pw=gpunn.tensor(r.random(5) + 0.5, dtype=np.float64): F.binary_cross_entropy_with_logits(
            x, y, pos_weight=pw
        ),
        (t(r, 4, 5, scale=2), probs(r, 4, 5)),
    ),
    "multi_margin_loss_p1": lambda r: (
        lambda x, y=labels(r, 8, 5): F.multi_margin_loss(x, y, margin=0.6),
        (t(r, 8, 5),),
    ),
    "multi_margin_loss_p2": lambda r: (lambda x, y=labels(r, 8, 5): F.multi_margin_loss(x, y, p=2), (t(r, 8, 5),)),
    "kl_div": lambda r: (lambda x, y: F.kl_div(x, y, reduction="batchmean"), (t(r, 4, 5), probs(r, 4, 5))),
    "kl_div_log_target": lambda r: (
        lambda x, y: F.kl_div(x, y, reduction="sum", log_target=True),
        (t(r, 4, 5), t(r, 4, 5)),
    ),
    "elu": lambda r: (lambda x: F.elu(x, 0.7), (t(r, 4, 6, scale=2),)),
    "gelu": lambda r: (F.gelu, (t(r, 4, 6, scale=2),)),
    "gelu_tanh": lambda r: (lambda x: F.gelu(x, approximate="tanh"), (t(r, 4, 6, scale=2),)),
    "softplus": lambda r: (lambda x: F.softplus(x, beta=2.0, threshold=3.0), (t(r, 4, 6, scale=2),)),
    "silu": lambda r: (F.silu, (t(r, 4, 6, scale=2),)),
    "batch_norm_train": lambda r: (
        lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
        (t(r, 5, 3, 4, 2), t(r, 3), t(r, 3)),
    ),
    "batch_norm_eval": lambda r: (
        lambda x, w, b, m=gpunn.tensor(r.standard_normal(3)), v=gpunn.tensor(r.random(3) + 0.5): F.batch_norm(
            x, m, v, w, b, training=False, eps=1e-3
        ),
        (t(r, 5, 3, 7), t(r, 3), t(r, 3)),
    ),
    "dropout2d": lambda r: (lambda x: (gpunn.manual_seed(5), F.dropout2d(x, 0.4))[1], (t(r, 3, 4, 5, 2),)),
    "adaptive_avg_pool2d": lambda r: (lambda x: F.adaptive_avg_pool2d(x, (3, 4)), (t(r, 2, 3, 7, 6),)),
    "conv2d_dilated_grouped": lambda r: (
        lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1, dilation=2, groups=2),
        (t(r, 2, 4, 7, 6), t(r, 4, 2, 2, 3), t(r, 4)),
    ),
    "max_pool2d_ceil_mode": lambda r: (lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True), (t(r, 2, 3, 8, 6),)),
    "embedding": lambda r: (lambda w: F.embedding(gpunn.tensor(np.array([[1, 4, 1], [0, 4, 2]])), w), (t(r, 6, 3),)),
    "layer_norm": lambda r: (lambda x, w, b: F.layer_norm(x, (4, 5), w, b), (t(r, 3, 4, 5), t(r, 4, 5), t(r, 4, 5))),
    "hardtanh": lambda r: (lambda x: F.hardtanh(x, -0.5, 0.7), (t(r, 4, 6),)),
    "relu6": lambda r: (F.relu6, (t(r, 4, 6, scale=4),)),
    "selu": lambda r: (F.selu, (t(r, 4, 6),)),
    "celu": lambda r: (lambda x: F.celu(x, 0.6), (t(r, 4, 6),)),
    "mish": lambda r: (F.mish, (t(r, 4, 6, scale=3),)),
    "hardswish": lambda r: (F.hardswish, (t(r, 4, 6, scale=3),)),
    "hardsigmoid": lambda r: (F.hardsigmoid, (t(r, 4, 6, scale=3),)),
    "softshrink": lambda r: (lambda x: F.softshrink(x, 0.3), (t(r, 4, 6),)),
    "hardshrink": lambda r: (lambda x: F.hardshrink(x, 0.3), (t(r, 4, 6),)),
    "threshold": lambda r: (lambda x: F.threshold(x, 0.2, -1.0), (t(r, 4, 6),)),
    "logsigmoid": lambda r: (F.logsigmoid, (t(r, 4, 6, scale=3),)),
    "softsign": lambda r: (F.softsign, (t(r, 4, 6),)),
    "tanhshrink": lambda r: (F.tanhshrink, (t(r, 4, 6),)),
    "softmin": lambda r: (lambda x: F.softmin(x, 1), (t(r, 3, 5),)),
    "glu": lambda r: (lambda x: F.glu(x, 1), (t(r, 3, 4, 2),)),
    "prelu": lambda r: (F.prelu, (t(r, 3, 4, 2), t(r, 4))),
    "smooth_l1_loss": lambda r: (lambda x, y=t(r, 4, 6).detach(): F.smooth_l1_loss(x, y, beta=0.7), (t(r, 4, 6),)),
    "huber_loss": lambda r: (lambda x, y=t(r, 4, 6).detach(): F.huber_loss(x, y, delta=0.7), (t(r, 4, 6),)),
    "pad": lambda r: (lambda x: F.pad(x, (1, -1, 2, 0), value=0.3), (t(r, 2, 3, 4),)),
    "pad_reflect": lambda r: (lambda x: F.pad(x, (2, 1, 1, 2), mode="reflect"), (t(r, 2, 3, 4),)),
    "normalize": lambda r: (lambda x: F.normalize(x, dim=-1), (t(r, 3, 4),)),
    "cosine_similarity": lambda r: (lambda a, b: F.cosine_similarity(a, b), (t(r, 3, 4, 2), t(r, 3, 4, 2))),
    "pairwise_distance": lambda r: (lambda a, b: F.pairwise_distance(a, b), (t(r, 3, 4), t(r, 3, 4))),
    "conv_transpose2d": lambda r: (
        lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1, groups=2),
        (t(r, 2, 4, 3, 4), t(r, 4, 1, 3, 3), t(r, 2)),
    ),
    "interpolate": lambda r: (lambda x: F.interpolate(x, scale_factor=1.5, mode="bilinear"), (t(r, 2, 3, 4, 5),)),
    "interpolate_nearest": lambda r: (lambda x: F.interpolate(x, size=(7, 3)), (t(r, 2, 3, 4, 5),)),
    "pixel_shuffle": lambda r: (lambda x: F.pixel_shuffle(x, 2), (t(r, 2, 8, 3, 2),)),
    "pixel_unshuffle": lambda r: (lambda x: F.pixel_unshuffle(x, 2), (t(r, 2, 2, 4, 6),)),
    "group_norm": lambda r: (lambda x, w, b: F.group_norm(x, 2, w, b), (t(r, 2, 4, 3, 2), t(r, 4), t(r, 4))),
    "instance_norm": lambda r: (lambda x, w: F.instance_norm(x, weight=w), (t(r, 2, 3, 5), t(r, 3))),
    "conv1d": lambda r: (
        lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=1, groups=2),
        (t(r, 2, 4, 7), t(r, 4, 2, 3), t(r, 4)),
    ),
    "max_pool1d": lambda r: (lambda x: F.max_pool1d(x, 3, 2, 1), (t(r, 2, 3, 9),)),
    "avg_pool1d": lambda r: (lambda x: F.avg_pool1d(x, 3, 2, 1), (t(r, 2, 3, 9),)),
    "adaptive_avg_pool1d": lambda r: (lambda x: F.adaptive_avg_pool1d(x, 4), (t(r, 2, 3, 9),)),
    "scaled_dot_product_attention": lambda r: (
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        (t(r, 2, 4, 3), t(r, 2, 4, 3), t(r, 2, 4, 2)),
    ),
    "margin_ranking_loss": lambda r: (
        lambda a, b, y=gpunn.tensor([1.0, -1.0, 1.0, -1.0]): F.margin_ranking_loss(a, b, y, 0.1),
        (t(r, 4), t(r, 4)),
    ),
    "hinge_embedding_loss": lambda r: (
        lambda a, y=gpunn.tensor([[1.0, -1.0], [-1.0, 1.0]]): F.hinge_embedding_loss(a, y, 3.0),
        (t(r, 2, 2),),
    ),
    "soft_margin_loss": lambda r: (
        lambda a, y=gpunn.tensor([[1.0, -1.0], [-1.0, 1.0]]): F.soft_margin_loss(a, y),
        (t(r, 2, 2),),
    ),
    "cosine_embedding_loss": lambda r: (
        lambda a, b, y=gpunn.tensor([1.0, -1.0, 1.0]): F.cosine_embedding_loss(a, b, y, -1.0),
        (t(r, 3, 4), t(r, 3, 4)),
    ),
    "triplet_margin_loss": lambda r: (
        lambda a, p, n: F.triplet_margin_loss(a, p, n, margin=5.0),
        (t(r, 3, 4), t(r, 3, 4), t(r, 3, 4)),
    ),
    "multilabel_soft_margin_loss": lambda r: (
        lambda a, y=gpunn.tensor([[1.0, 0.0], [0.0, 1.0]]): F.multilabel_soft_margin_loss(a, y),
        (t(r, 2, 2),),
    ),
    "poisson_nll_loss": lambda r: (
        lambda a, y=gpunn.tensor([[1.0, 0.0], [3.0, 2.0]]): F.poisson_nll_loss(a, y, full=True),
        (t(r, 2, 2),),
    ),
    "gaussian_nll_loss": lambda r: (
        lambda a, b, v: F.gaussian_nll_loss(a, b, v),
        (t(r, 3, 2), t(r, 3, 2), t(r, 3, 2, positive=True)),
    ),
    "avg_pool2d_ceil_mode": lambda r: (
        lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
        (t(r, 2, 3, 8, 6),),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradcheck(name):
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    fn, inputs = CASES[name](rng)
    assert gpunn.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_every_differentiable_function_is_checked():
    from gpunn.nn import functional

    covered = set(CASES) | {"binary_cross_entropy_with_logits"}  # checked as "bce_with_logits"
    covered |= {"one_hot"}  # integer in, integer out: nothing to differentiate
    missing = [n for n in functional.__all__ if not any(c == n or c.startswith(n + "_") for c in covered)]
    assert not missing, f"no gradcheck for {missing}"
