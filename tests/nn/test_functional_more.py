"""More of torch.nn.functional, each against PyTorch 2.13 (values and gradients, odd shapes, float32 and
float64): smooth_l1_loss / huber_loss, pad in its four modes (negative amounts crop), normalize,
cosine_similarity, pairwise_distance, conv_transpose2d; their modules (SmoothL1Loss, HuberLoss,
CosineSimilarity, PairwiseDistance, ConvTranspose2d) and nn.Unflatten."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
from tests.helpers import parity, torch_or_skip

torch = torch_or_skip()
DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]
S = (9, 7, 5)

CASES = {
    "smooth_l1": (lambda L, x, y: L.nn.functional.smooth_l1_loss(x, y), [S, S]),
    "smooth_l1_beta_sum": (lambda L, x, y: L.nn.functional.smooth_l1_loss(x, y, reduction="sum", beta=0.4), [S, S]),
    "smooth_l1_beta0_none": (lambda L, x, y: L.nn.functional.smooth_l1_loss(x, y, reduction="none", beta=0.0), [S, S]),
    "huber": (lambda L, x, y: L.nn.functional.huber_loss(x, y), [S, S]),
    "huber_delta_none": (lambda L, x, y: L.nn.functional.huber_loss(x, y, reduction="none", delta=0.3), [S, S]),
    "pad_constant": (lambda L, x: L.nn.functional.pad(x, (1, 2, 0, 3)), [S]),
    "pad_constant_value_crop": (lambda L, x: L.nn.functional.pad(x, (-1, 2, 2, -3), value=0.5), [S]),
    "pad_three_dims": (lambda L, x: L.nn.functional.pad(x, (1, 0, 0, 1, 2, 2)), [S]),
    "pad_reflect": (lambda L, x: L.nn.functional.pad(x, (2, 3, 1, 0), mode="reflect"), [(2, 3, 6, 5)]),
    "pad_replicate": (lambda L, x: L.nn.functional.pad(x, (2, 3, 1, -1), mode="replicate"), [(2, 3, 6, 5)]),
    "pad_circular": (lambda L, x: L.nn.functional.pad(x, (2, 3), mode="circular"), [(2, 3, 5)]),
    "normalize": (lambda L, x: L.nn.functional.normalize(x), [S]),
    "normalize_p1_dim": (lambda L, x: L.nn.functional.normalize(x, p=1.0, dim=-1), [S]),
    "cosine_similarity": (lambda L, x, y: L.nn.functional.cosine_similarity(x, y), [S, S]),
    "cosine_similarity_broadcast": (lambda L, x, y: L.nn.functional.cosine_similarity(x, y, dim=-1), [S, (7, 5)]),
    "conv_transpose2d": (
        lambda L, x, w, b: L.nn.functional.conv_transpose2d(x, w, b),
        [(2, 4, 5, 6), (4, 3, 3, 3), (3,)],
    ),
    "conv_transpose2d_dcgan": (
        lambda L, x, w: L.nn.functional.conv_transpose2d(x, w, stride=2, padding=1),
        [(2, 4, 7, 7), (4, 3, 4, 4)],
    ),
    "conv_transpose2d_all_options": (
        lambda L, x, w, b: L.nn.functional.conv_transpose2d(x, w, b, (2, 3), (1, 0), (1, 2), 2, (1, 2)),
        [(2, 4, 5, 6), (4, 3, 3, 2), (6,)],
    ),
    "conv_transpose2d_unbatched": (
        lambda L, x, w: L.nn.functional.conv_transpose2d(x, w, padding=2),
        [(4, 5, 6), (4, 2, 5, 5)],
    ),  # fmt: skip
    "interpolate_nearest_scale": (lambda L, x: L.nn.functional.interpolate(x, scale_factor=2), [(2, 3, 5, 7)]),
    "interpolate_nearest_size": (lambda L, x: L.nn.functional.interpolate(x, size=(8, 4)), [(2, 3, 5, 7)]),
    "interpolate_nearest_exact": (
        lambda L, x: L.nn.functional.interpolate(x, size=(8, 13), mode="nearest-exact"),
        [(2, 3, 5, 7)],
    ),
    "interpolate_bilinear": (
        lambda L, x: L.nn.functional.interpolate(x, scale_factor=2, mode="bilinear"),
        [(2, 3, 5, 7)],
    ),
    "interpolate_bilinear_corners": (
        lambda L, x: L.nn.functional.interpolate(x, size=(3, 11), mode="bilinear", align_corners=True),
        [(2, 3, 5, 7)],
    ),
    "interpolate_linear_fraction": (
        lambda L, x: L.nn.functional.interpolate(x, scale_factor=1.7, mode="linear"),
        [(2, 3, 9)],
    ),
    "interpolate_trilinear": (
        lambda L, x: L.nn.functional.interpolate(x, scale_factor=(2, 1.5, 0.5), mode="trilinear"),
        [(1, 2, 3, 4, 5)],
    ),
    "pixel_shuffle": (lambda L, x: L.nn.functional.pixel_shuffle(x, 3), [(2, 18, 3, 4)]),
    "pixel_unshuffle": (lambda L, x: L.nn.functional.pixel_unshuffle(x, 2), [(2, 3, 4, 6)]),
    "group_norm": (lambda L, x, w, b: L.nn.functional.group_norm(x, 3, w, b), [(2, 6, 5, 4), (6,), (6,)]),
    "conv1d": (lambda L, x, w, b: L.nn.functional.conv1d(x, w, b), [(2, 4, 11), (6, 4, 3), (6,)]),
    "conv1d_options": (
        lambda L, x, w: L.nn.functional.conv1d(x, w, stride=2, padding=2, dilation=2, groups=2),
        [(2, 4, 11), (6, 2, 3)],
    ),
    "conv1d_same_unbatched": (lambda L, x, w: L.nn.functional.conv1d(x, w, padding="same"), [(4, 9), (3, 4, 5)]),
    "max_pool1d": (lambda L, x: L.nn.functional.max_pool1d(x, 3, 2, 1), [(2, 4, 11)]),
    "max_pool1d_ceil": (lambda L, x: L.nn.functional.max_pool1d(x, 3, ceil_mode=True), [(2, 4, 11)]),
    "avg_pool1d": (lambda L, x: L.nn.functional.avg_pool1d(x, 4, 3, 2, count_include_pad=False), [(2, 4, 11)]),
    "adaptive_avg_pool1d": (lambda L, x: L.nn.functional.adaptive_avg_pool1d(x, 4), [(2, 4, 11)]),
    "pairwise_distance": (lambda L, x, y: L.nn.functional.pairwise_distance(x, y), [(9, 7), (9, 7)]),
    "pairwise_distance_p1_keepdim": (
        lambda L, x, y: L.nn.functional.pairwise_distance(x, y, p=1.0, keepdim=True),
        [(9, 7), (9, 7)],
    ),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_torch(rng, case, dtype):
    fn, shapes = CASES[case]
    parity(rng, fn, [rng.standard_normal(s) for s in shapes], dtype)


def test_normalize_of_a_zero_vector_is_zero_like_torch():
    for L in (gpunn, torch):
        x = L.zeros(2, 3, requires_grad=True)
        y = L.nn.functional.normalize(x, dim=1)
        y.sum().backward()
        assert not y.detach().numpy().any() and np.isfinite(x.grad.numpy()).all()


MODULES = [
    ("SmoothL1Loss", {"beta": 0.5}, 2),
    ("HuberLoss", {"delta": 0.7, "reduction": "sum"}, 2),
    ("CosineSimilarity", {"dim": 2}, 2),
    ("PairwiseDistance", {"p": 3.0}, 2),
    ("Unflatten", {"dim": 1, "unflattened_size": (7, 1)}, 1),
    ("Conv1d", {"in_channels": 7, "out_channels": 5, "kernel_size": 2, "padding": 1, "bias": False}, 1),
    ("MaxPool1d", {"kernel_size": 2}, 1),
    ("AvgPool1d", {"kernel_size": 2, "stride": 1}, 1),
    ("AdaptiveAvgPool1d", {"output_size": 2}, 1),
    ("ZeroPad2d", {"padding": (1, 2, 0, 3)}, 1),
    ("ConstantPad2d", {"padding": 2, "value": 0.5}, 1),
    ("ConstantPad1d", {"padding": (2, 0), "value": -1.0}, 1),
    ("ReflectionPad2d", {"padding": 1}, 1),
    ("ReflectionPad1d", {"padding": (2, 1)}, 1),
    ("ReplicationPad2d", {"padding": (0, 1, 2, 1)}, 1),
    ("ReplicationPad1d", {"padding": 2}, 1),
    ("PixelShuffle", {"upscale_factor": 2}, 1),
    ("PixelUnshuffle", {"downscale_factor": 2}, 1),
    ("Upsample", {"scale_factor": 2, "mode": "bilinear"}, 1),
    ("UpsamplingNearest2d", {"size": (5, 9)}, 1),
    ("UpsamplingBilinear2d", {"scale_factor": 3}, 1),
    ("ConvTranspose2d", {"in_channels": 7, "out_channels": 4, "kernel_size": 2, "stride": 2, "bias": False}, 1),
]


@pytest.mark.parametrize("name, kwargs, n_in", MODULES)
def test_modules_like_torch(rng, name, kwargs, n_in):
    xs = [rng.standard_normal((4, 7, 3)).astype(np.float32) for _ in range(n_in)]
    if name == "Unflatten":
        xs = [xs[0].reshape(4, 21)[:, :7]]
    if name == "ConvTranspose2d" or name.startswith("Upsampl") or name.endswith("2d"):
        xs = [xs[0].reshape(1, 7, 4, 3)]
    if name.endswith("1d"):
        xs = [xs[0].reshape(1, 7, 12)]
    if name.startswith("Pixel"):
        xs = [xs[0].reshape(1, 4, 7, 3)[:, :, :6, :2]]
    w = rng.standard_normal((7, 4, 2, 2) if name == "ConvTranspose2d" else (5, 7, 2)).astype(np.float32)
    res = []
    for L in (gpunn, torch):
        m = getattr(L.nn, name)(**kwargs)
        if name in ("ConvTranspose2d", "Conv1d"):
            with L.no_grad():
                m.weight.copy_(L.tensor(w))
        res.append((repr(m), m(*[L.tensor(x) for x in xs]).detach().numpy()))
    assert res[0][0] == res[1][0]
    np.testing.assert_allclose(res[0][1], res[1][1], rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize(
    "fn, exc",
    [
        (lambda L: L.nn.functional.pad(L.ones(2, 3), (1, 2, 3)), RuntimeError),
        (lambda L: L.nn.functional.pad(L.ones(1, 2, 3), (3, 0), mode="reflect"), RuntimeError),
        (lambda L: L.nn.functional.smooth_l1_loss(L.ones(3), L.ones(3), beta=-1.0), RuntimeError),
        (lambda L: L.nn.functional.pad(L.ones(2, 5), (-10, 0)), RuntimeError),
        (lambda L: L.nn.functional.pad(L.ones(2, 5), (-2, -3), mode="replicate"), RuntimeError),
        (lambda L: L.nn.functional.interpolate(L.ones(1, 1, 4), size=0), RuntimeError),
        (lambda L: L.nn.functional.interpolate(L.ones(1, 1, 4), scale_factor=0.1), RuntimeError),
    ],
)
def test_errors_like_torch(fn, exc):
    for L in (gpunn, torch):
        with pytest.raises(exc):
            fn(L)


def _pm1(rng, shape):
    return np.where(rng.random(shape) > 0.5, 1.0, -1.0)


LOSSES = {
    "margin_ranking": lambda L, a, b, c, r: L.nn.functional.margin_ranking_loss(a[:, 0], b[:, 0], r["y"], margin=0.3),
    "hinge_embedding": lambda L, a, b, c, r: L.nn.functional.hinge_embedding_loss(a, r["ye"], 0.5, reduction="sum"),
    "soft_margin": lambda L, a, b, c, r: L.nn.functional.soft_margin_loss(a * 30, r["ye"]),
    "cosine_embedding": lambda L, a, b, c, r: L.nn.functional.cosine_embedding_loss(a, b, r["y"], margin=0.1),
    "triplet": lambda L, a, b, c, r: L.nn.functional.triplet_margin_loss(a, b, c, margin=2.0, reduction="none"),
    "triplet_swap_p1": lambda L, a, b, c, r: L.nn.functional.triplet_margin_loss(a, b, c, swap=True, p=1),
    "multilabel_soft_margin": lambda L, a, b, c, r: L.nn.functional.multilabel_soft_margin_loss(a, r["yl"], r["w"]),
    "poisson_nll": lambda L, a, b, c, r: L.nn.functional.poisson_nll_loss(a, r["counts"]),
    "poisson_nll_full": lambda L, a, b, c, r: L.nn.functional.poisson_nll_loss(
        a.abs(), r["counts"], log_input=False, full=True
    ),
    "gaussian_nll": lambda L, a, b, c, r: L.nn.functional.gaussian_nll_loss(a, b, c.abs() + 0.1),
    "gaussian_nll_shared_var_full": lambda L, a, b, c, r: L.nn.functional.gaussian_nll_loss(
        a, b, c.abs()[:, :1] * 1e-9, full=True
    ),  # var below eps: clamped, its gradient passed straight through (as torch)
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(LOSSES))
def test_more_losses_match_torch(rng, case, dtype):
    extras = {
        "y": _pm1(rng, 6),
        "ye": _pm1(rng, (6, 5)),
        "yl": (rng.random((6, 5)) > 0.5) * 1.0,
        "w": rng.random(5),
        "counts": rng.integers(0, 5, (6, 5)) * 1.0,
    }

    def fn(L, a, b, c):
        return LOSSES[case](L, a, b, c, {k: L.tensor(v.astype(dtype)) for k, v in extras.items()})

    parity(rng, fn, [rng.standard_normal((6, 5)) for _ in range(3)], dtype)


@pytest.mark.parametrize(
    "name, kwargs, n_in",
    [
        ("MarginRankingLoss", {"margin": 0.2}, 3),
        ("HingeEmbeddingLoss", {"margin": 2.0}, 2),
        ("SoftMarginLoss", {}, 2),
        ("CosineEmbeddingLoss", {"margin": 0.5, "reduction": "sum"}, 3),
        ("TripletMarginLoss", {"margin": 0.5, "p": 3}, 3),
        ("MultiLabelSoftMarginLoss", {}, 2),
        ("PoissonNLLLoss", {"log_input": False}, 2),
        ("GaussianNLLLoss", {"full": True}, 3),
    ],
)
def test_more_loss_modules_like_torch(rng, name, kwargs, n_in):
    x = [rng.standard_normal((4, 3)).astype(np.float32) for _ in range(3)]
    if name in ("MarginRankingLoss", "CosineEmbeddingLoss"):
        x[2 if name == "MarginRankingLoss" else 2] = _pm1(rng, 4 if name == "CosineEmbeddingLoss" else (4, 3))
        x[2] = x[2].astype(np.float32)
        if name == "MarginRankingLoss":
            x = [x[0][:, 0], x[1][:, 0], x[2][:, 0]]
    if name in ("HingeEmbeddingLoss", "SoftMarginLoss"):
        x[1] = _pm1(rng, (4, 3)).astype(np.float32)
    if name in ("PoissonNLLLoss", "GaussianNLLLoss"):
        x = [np.abs(v) for v in x]
    if name == "MultiLabelSoftMarginLoss":
        x[1] = (x[1] > 0).astype(np.float32)
    res = []
    for L in (gpunn, torch):
        m = getattr(L.nn, name)(**kwargs)
        res.append((repr(m), m(*[L.tensor(v) for v in x[:n_in]]).item()))
    assert res[0][0] == res[1][0]
    np.testing.assert_allclose(res[0][1], res[1][1], rtol=2e-6)
