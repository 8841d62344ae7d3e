import numpy as np
import pytest

import gpunn
from gpunn.data.transforms import (
    Compose,
    GaussianNoise,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomShift,
    shift,
)


def _roll_shift(imgs, dy, dx):
    """Independent reference: np.roll along (H, W), then zero the rows/columns that wrapped around."""
    out = np.roll(imgs, (dy, dx), axis=(-2, -1)).copy()
    if dy > 0:
        out[..., :dy, :] = 0
    elif dy < 0:
        out[..., dy:, :] = 0
    if dx > 0:
        out[..., :, :dx] = 0
    elif dx < 0:
        out[..., :, dx:] = 0
    return out


@pytest.fixture
def images(rng):
    return rng.random((6, 2, 7, 5)).astype(np.float32) + 0.5  # no zero pixels: zero fill is visible


@pytest.mark.parametrize("dy, dx", [(0, 0), (2, -1), (-3, 4), (1, 0), (0, -2), (7, 0)])
def test_shift_matches_roll_reference(images, dy, dx):
    out = shift(images, dy, dx)
    np.testing.assert_array_equal(out, _roll_shift(images, dy, dx))


def test_shift_flattened_and_per_sample(images, rng):
    one = images[:, :1]  # (N, 1, 7, 5)
    flat = one.reshape(6, 35)
    dys = np.array([0, 1, -1, 2, -2, 3])
    dxs = np.array([1, 0, -1, 0, 2, -2])
    out = shift(flat, dys, dxs, image_shape=(7, 5))
    assert out.shape == (6, 35)
    for i in range(6):
        np.testing.assert_array_equal(out[i].reshape(7, 5), _roll_shift(one[i, 0], dys[i], dxs[i]))
    # (N, H, W) layout too
    np.testing.assert_array_equal(shift(one[:, 0], 2, 1), _roll_shift(one[:, 0], 2, 1))


def test_random_shift_moves_pixels_by_at_most_k(images):
    k = 2
    t = RandomShift(k)
    out = t(images)
    assert out.shape == images.shape and out.dtype == images.dtype
    candidates = [(dy, dx) for dy in range(-k, k + 1) for dx in range(-k, k + 1)]
    used = []
    for i in range(len(images)):
        match = [s for s in candidates if np.array_equal(out[i], _roll_shift(images[i], *s))]
        assert match, f"sample {i} is not a shift of its input by at most {k} pixels"
        used.append(match[0])
    assert any(s != (0, 0) for s in used)  # it really moved something
    assert len(set(used)) > 1  # and not all by the same amount


def test_random_shift_flattened_square_default(rng):
    x = rng.random((50, 64)).astype(np.float32) + 0.1
    out = RandomShift(1)(x)
    assert out.shape == (50, 64)
    assert not np.array_equal(out, x)
    assert np.isclose(out, 0).any()  # zero fill came in
    x_before = x.copy()
    RandomShift(1)(x)
    np.testing.assert_array_equal(x, x_before)


def test_random_transforms_reproducible_under_manual_seed(images):
    gpunn.manual_seed(7)
    a = RandomShift(2)(images)
    b = GaussianNoise(0.1)(images)
    gpunn.manual_seed(7)
    np.testing.assert_array_equal(RandomShift(2)(images), a)
    np.testing.assert_array_equal(GaussianNoise(0.1)(images), b)


def test_eval_mode_is_identity_for_random_but_not_normalize(images):
    t = Compose([RandomShift(2), GaussianNoise(0.5), Normalize(0.5, 0.25)])
    expected = (images - 0.5) / 0.25
    np.testing.assert_allclose(t(images, training=False), expected, rtol=1e-6)
    t.eval()
    assert all(not s.training for s in t.transforms)
    np.testing.assert_allclose(t(images), expected, rtol=1e-6)
    t.train()
    assert not np.allclose(t(images), expected, atol=1e-3)


def test_normalize_math(images):
    out = Normalize(0.1307, 0.3081)(images)
    np.testing.assert_allclose(out, (images.astype(np.float64) - 0.1307) / 0.3081, rtol=1e-6)
    assert out.dtype == np.float32
    mean, std = [0.2, 0.7], [0.5, 2.0]
    out = Normalize(mean, std)(images)  # per channel, axis 1
    ref = (images - np.array(mean)[None, :, None, None]) / np.array(std)[None, :, None, None]
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
    flat = images.reshape(6, -1)
    out = Normalize(mean, std, image_shape=(2, 7, 5))(flat)
    np.testing.assert_allclose(out, ref.reshape(6, -1), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="std must be finite, positive"):
        Normalize(0.0, 0.0)
    with pytest.raises(ValueError, match="do not match"):
        Normalize([0.1, 0.2, 0.3], [1, 1, 1])(images)


def test_gaussian_noise_std(rng):
    x = np.full((200, 500), 0.5, dtype=np.float32)
    out = GaussianNoise(0.2)(x)
    noise = out - x
    assert out.dtype == np.float32 and out.shape == x.shape
    assert abs(noise.std() - 0.2) < 0.01
    assert abs(noise.mean()) < 0.01
    np.testing.assert_array_equal(x, 0.5)  # input not modified


def test_random_crop_shapes_and_content(images):
    out = RandomCrop(4, padding=0)(images)
    assert out.shape == (6, 2, 4, 4)
    for i in range(6):  # every crop is a window of the original
        found = any(np.array_equal(out[i], images[i, :, t : t + 4, l : l + 4]) for t in range(4) for l in range(2))
        assert found
    padded = RandomCrop((7, 5), padding=2)(images)
    assert padded.shape == images.shape
    # with padding, same-size crops are shifts by at most 2
    for i in range(6):
        assert any(
            np.array_equal(padded[i], _roll_shift(images[i], dy, dx)) for dy in range(-2, 3) for dx in range(-2, 3)
        )
    flat = RandomCrop(3, image_shape=(2, 7, 5))(images.reshape(6, -1))
    assert flat.shape == (6, 18)
    with pytest.raises(ValueError, match="larger than the padded image"):
        RandomCrop(10, padding=1)(images)


def test_horizontal_flip(images):
    out = RandomHorizontalFlip(1.0)(images)
    np.testing.assert_array_equal(out, images[..., ::-1])
    np.testing.assert_array_equal(RandomHorizontalFlip(0.0)(images), images)
    gpunn.manual_seed(3)
    some = RandomHorizontalFlip(0.5)(np.repeat(images, 10, axis=0))
    flipped = [np.array_equal(s, images[i // 10][..., ::-1]) for i, s in enumerate(some)]
    kept = [np.array_equal(s, images[i // 10]) for i, s in enumerate(some)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 10 < sum(flipped) < 50


def test_tensor_in_tensor_out(images):
    t = gpunn.from_numpy(images)
    out = Normalize(1.0, 2.0)(t)
    assert isinstance(out, gpunn.Tensor)
    np.testing.assert_allclose(out.numpy(), (images - 1.0) / 2.0, rtol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_shift"):
        RandomShift(-1)
    with pytest.raises(ValueError, match="not a square image"):
        RandomShift(1)(np.zeros((2, 10), dtype=np.float32))
    with pytest.raises(ValueError, match="image_shape"):
        RandomShift(1, image_shape=(3, 3))(np.zeros((2, 10), dtype=np.float32))
    with pytest.raises(TypeError, match="not callable"):
        Compose([1])


@pytest.mark.parametrize(
    "std", [0.0, -1.0, float("nan"), float("inf"), 1e-45, 1e-50, [0.5, 0.0], [0.5, float("nan")], 1e39]
)
def test_normalize_refuses_a_std_that_would_make_nan_or_inf(std):
    with pytest.raises(ValueError, match="Normalize: std must be finite, positive"):
        Normalize(0.5, std)


@pytest.mark.parametrize("mean", [float("nan"), float("inf"), [0.1, float("-inf")]])
def test_normalize_refuses_a_non_finite_mean(mean):
    with pytest.raises(ValueError, match="Normalize: mean must be finite"):
        Normalize(mean, 0.5)
