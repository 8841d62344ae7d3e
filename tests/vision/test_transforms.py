"""gpunn.vision.transforms: per image and per batch, against NumPy computations of the same maps."""

import numpy as np
import pytest

import gpunn
from gpunn.vision import transforms as T

rng = np.random.default_rng(0)


def _img(h=9, w=7, dtype=np.uint8):
    return rng.integers(1, 256, (h, w)).astype(dtype)


def test_to_tensor_scales_uint8_and_moves_channels_first():
    a = _img()
    x = T.ToTensor()(a)
    assert isinstance(x, gpunn.Tensor) and tuple(x.shape) == (1, 9, 7) and x.dtype == gpunn.float32
    np.testing.assert_allclose(x.numpy()[0], a / 255.0, rtol=1e-6)
    rgb = rng.integers(0, 256, (5, 6, 3)).astype(np.uint8)
    np.testing.assert_allclose(T.ToTensor()(rgb).numpy(), rgb.transpose(2, 0, 1) / 255.0, rtol=1e-6)
    f = rng.standard_normal((4, 3)).astype(np.float64)
    np.testing.assert_array_equal(T.ToTensor()(f).numpy()[0], f)  # other dtypes keep their values
    with pytest.raises(TypeError, match="pic should be PIL Image or ndarray"):
        T.ToTensor()([[1, 2]])


def test_to_tensor_takes_pil_images():
    Image = pytest.importorskip("PIL.Image")
    a = _img()
    np.testing.assert_allclose(T.ToTensor()(Image.fromarray(a)).numpy()[0], a / 255.0, rtol=1e-6)


def test_normalize_per_channel():
    x = gpunn.tensor(rng.standard_normal((3, 5, 4)).astype(np.float32))
    mean, std = (0.1, -0.2, 0.3), (0.5, 2.0, 1.5)
    want = (x.numpy() - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    np.testing.assert_allclose(T.Normalize(mean, std)(x).numpy(), want, rtol=1e-5)
    with pytest.raises(TypeError, match="float tensor"):
        T.Normalize((0.5,), (0.5,))(gpunn.tensor(np.ones((1, 2, 2), np.uint8)))
    with pytest.raises(ValueError, match="division by zero"):
        T.Normalize((0.5,), (0.0,))
    with pytest.raises(ValueError, match="2 values for an image of 3 channels"):
        T.Normalize((0.5, 0.1), (1.0, 1.0))(x)


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "symmetric"])
@pytest.mark.parametrize("padding", [2, (1, 3), (1, 2, 3, 4)])
def test_pad_matches_numpy(mode, padding):
    a = _img()
    p = (padding,) * 4 if isinstance(padding, int) else (padding * 2 if len(padding) == 2 else padding)
    left, top, right, bottom = p
    kw = {"constant_values": 7} if mode == "constant" else {}
    want = np.pad(a, ((top, bottom), (left, right)), mode=mode, **kw)
    np.testing.assert_array_equal(T.Pad(padding, fill=7, padding_mode=mode)(a), want)


def test_random_crop_takes_windows_of_the_padded_image():
    a = _img(8, 8)
    padded = np.pad(a, 2)
    seen = set()
    for _ in range(40):
        out = T.RandomCrop(8, padding=2)(a)
        assert out.shape == (8, 8)
        hits = [(i, j) for i in range(5) for j in range(5) if np.array_equal(padded[i : i + 8, j : j + 8], out)]
        assert hits
        seen.add(hits[0])
    assert len(seen) > 5  # offsets vary
    with pytest.raises(ValueError, match="larger than input image size"):
        T.RandomCrop(10)(a)
    assert T.RandomCrop(10, pad_if_needed=True)(a).shape == (10, 10)


def test_random_horizontal_flip():
    a = _img()
    assert np.array_equal(T.RandomHorizontalFlip(p=1.0)(a), a[:, ::-1])
    assert np.array_equal(T.RandomHorizontalFlip(p=0.0)(a), a)
    batch = np.stack([a] * 200)[:, None]
    out = T.RandomHorizontalFlip().batch(batch)
    flipped = np.array([np.array_equal(o[0], a[:, ::-1]) for o in out])
    kept = np.array([np.array_equal(o[0], a) for o in out])
    assert np.all(flipped | kept) and 60 < flipped.sum() < 140  # each image draws its own coin


def test_random_affine_geometry():
    img = np.zeros((9, 9), np.uint8)
    img[4, 7] = 200  # right of the centre
    assert np.argwhere(T.RandomAffine((90, 90))(img)).tolist() == [[7, 4]]  # clockwise, as F.affine
    assert np.argwhere(T.RandomAffine((-90, -90))(img)).tolist() == [[1, 4]]
    assert np.array_equal(T.RandomAffine(0)(img), img)
    shifts = set()
    img = np.zeros((9, 9), np.uint8)
    img[4, 5] = 200
    for _ in range(30):
        ((r, c),) = np.argwhere(T.RandomAffine(0, translate=(0.25, 0.25))(img)).tolist()
        assert abs(r - 4) <= 2 and abs(c - 5) <= 2
        shifts.add((r, c))
    assert len(shifts) > 3
    # small rotations keep the digit's mass near where it was; fill outside
    out = T.RandomAffine(10, fill=5)(np.full((9, 9), 100, np.uint8))
    assert set(np.unique(out).tolist()) <= {5, 100} and out[4, 4] == 100
    with pytest.raises(ValueError, match="translate"):
        T.RandomAffine(0, translate=(2, 0))


def test_batch_and_item_agree_for_deterministic_transforms():
    imgs = rng.integers(0, 256, (6, 1, 9, 7)).astype(np.uint8)
    t = T.Compose([T.Pad(1), T.ToTensor(), T.Normalize((0.5,), (0.25,))])
    assert t.batchable
    batch = t.batch(imgs)
    for i in range(6):
        np.testing.assert_allclose(batch[i], t(imgs[i, 0]).numpy(), rtol=1e-6)


def test_lambda_and_compose():
    t = T.Compose([T.ToTensor(), T.Lambda(lambda x: x * 2)])
    assert not t.batchable
    np.testing.assert_allclose(t(np.full((2, 2), 255, np.uint8)).numpy(), 2.0)
    with pytest.raises(TypeError, match="lambd should be callable"):
        T.Lambda(3)
