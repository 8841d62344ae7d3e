"""Per-batch transforms for image data, run on the backend's arrays (``xp``), so GPU batches stay on
the GPU.

A transform takes a batch array and returns a new array; it never writes into its input (the batch
may be a view of the loader's data set). A gpunn ``Tensor`` is accepted too and gives a ``Tensor``
back (no gradient flows through a transform). Image batches may be ``(N, C, H, W)``, ``(N, H, W)`` or
flattened ``(N, C*H*W)``; for flattened batches pass ``image_shape`` ((H, W) or (C, H, W); square
single-channel images are inferred). The output keeps the input's layout.

Random transforms (``RandomShift``, ``RandomCrop``, ``RandomHorizontalFlip``, ``GaussianNoise``) draw from
the backend's generator, so ``gpunn.manual_seed`` makes them reproducible. They honour a training
flag: ``t(x, training=False)`` (or ``t.eval()``) returns ``x`` unchanged, while deterministic ones
(``Normalize``) always apply. The ``DataLoader`` passes ``training=loader.augment``; so an evaluation
loader (``augment=False``, the default when ``shuffle=False``) normalizes but does not augment.

>>> t = Compose([RandomShift(2, image_shape=(28, 28)), Normalize(0.1307, 0.3081)])
>>> xb = t(xb)                      # augmented and normalized
>>> xb = t(xb, training=False)      # normalized only
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "Transform",
    "Compose",
    "Normalize",
    "RandomShift",
    "RandomCrop",
    "RandomHorizontalFlip",
    "GaussianNoise",
    "shift",
]


def _backend_of(x):
    """The backend whose array module made ``x``."""
    from gpunn.backend import backend_for, get_backend

    be = get_backend()
    if be.is_array(x):
        return be
    if isinstance(x, np.ndarray):
        return backend_for("numpy")
    if type(x).__module__.startswith("cupy"):
        return backend_for("cupy")
    raise TypeError(f"transforms take backend arrays or gpunn Tensors, got {type(x).__name__}")


def _pair(v, name: str) -> tuple[int, int]:
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        v = (v, v)
    if (
        not isinstance(v, (tuple, list))
        or len(v) != 2
        or not all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in v)
    ):
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return int(v[0]), int(v[1])


def _as_images(x, image_shape):
    """``x`` as an ``(N, C, H, W)`` view, and a function putting a result back into ``x``'s layout."""
    if x.ndim == 4:
        return x, lambda out: out
    if x.ndim == 3:
        return x[:, None], lambda out: out[:, 0]
    if x.ndim != 2:
        raise ValueError(f"expected an image batch (N, C, H, W), (N, H, W) or (N, D), got shape {x.shape}")
    n, d = x.shape
    if image_shape is None:
        side = int(round(d**0.5))
        if side * side != d:
            raise ValueError(f"flattened batch of {d} features is not a square image; pass image_shape")
        shape = (1, side, side)
    else:
        shape = tuple(int(s) for s in image_shape)
        shape = (1, *shape) if len(shape) == 2 else shape
        if len(shape) != 3 or int(np.prod(shape)) != d:
            raise ValueError(f"image_shape={tuple(image_shape)} does not match {d} features per sample")
    return x.reshape((n, *shape)), lambda out: out.reshape(n, -1)


def _windows(xp, imgs, top, left, h: int, w: int, pad: int):
    """Per-sample ``h x w`` windows of the zero-padded images, at offsets ``top[i], left[i]`` (N,) in the
    padded image: out[i, c, y, x] = padded[i, c, top[i] + y, left[i] + x]. One gather, no loop."""
    if pad:
        imgs = xp.pad(imgs, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, c = imgs.shape[:2]
    rows = top[:, None] + xp.arange(h)  # (N, h)
    cols = left[:, None] + xp.arange(w)  # (N, w)
    return imgs[
        xp.arange(n)[:, None, None, None],
        xp.arange(c)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def _shift_images(xp, imgs, dy, dx, k: int):
    """out[i, :, y, x] = imgs[i, :, y - dy[i], x - dx[i]], zero where that falls outside; |dy|, |dx| <= k."""
    h, w = imgs.shape[2:]
    return _windows(xp, imgs, k - dy, k - dx, h, w, k)


def shift(x, dy, dx, image_shape=None):
    """Move every image down by ``dy`` and right by ``dx`` pixels (ints, or one per sample), zero fill.

    Like ``np.roll`` along (H, W) but without wrap-around: out[..., y, x] = x[..., y - dy, x - dx].
    """
    from gpunn.tensor import Tensor

    if isinstance(x, Tensor):
        return Tensor._wrap(shift(x._data, dy, dx, image_shape), x._backend)
    xp = _backend_of(x).xp
    imgs, restore = _as_images(x, image_shape)
    n = imgs.shape[0]
    dy = xp.broadcast_to(xp.asarray(dy, dtype=xp.int64), (n,))
    dx = xp.broadcast_to(xp.asarray(dx, dtype=xp.int64), (n,))
    k = int(max(int(xp.abs(dy).max()), int(xp.abs(dx).max()))) if n else 0
    k = min(k, max(imgs.shape[2], imgs.shape[3]))  # a shift past the edge is all zeros anyway
    dy, dx = xp.clip(dy, -k, k), xp.clip(dx, -k, k)
    return restore(_shift_images(xp, imgs, dy, dx, k))


class Transform:
    """Base class: subclasses implement ``apply(x, backend)``; ``random = True`` marks augmentations."""

    random = False

    def __init__(self) -> None:
        self.training = True

    def __call__(self, x, training: bool | None = None):
        from gpunn.tensor import Tensor

        if isinstance(x, Tensor):
            return Tensor._wrap(self(x._data, training), x._backend)
        training = self.training if training is None else bool(training)
        if self.random and not training:
            return x
        return self.apply(x, _backend_of(x))

    def apply(self, x, backend):
        raise NotImplementedError

    def train(self, mode: bool = True) -> Transform:
        self.training = bool(mode)
        return self

    def eval(self) -> Transform:
        return self.train(False)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "training")
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    """Apply transforms in order: ``Compose([RandomShift(2), Normalize(0.5, 0.5)])``. Plain callables
    (``lambda x: ...``) are allowed and always run."""

    def __init__(self, transforms) -> None:
        super().__init__()
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose: {t!r} is not callable")

    @property
    def random(self) -> bool:  # type: ignore[override]
        return any(getattr(t, "random", False) for t in self.transforms)

    def __call__(self, x, training: bool | None = None):
        training = self.training if training is None else bool(training)
        for t in self.transforms:
            x = t(x, training=training) if isinstance(t, Transform) else t(x)
        return x

    def train(self, mode: bool = True) -> Compose:
        super().train(mode)
        for t in self.transforms:
            if isinstance(t, Transform):
                t.train(mode)
        return self

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


class Normalize(Transform):
    """``(x - mean) / std``, with scalar, per-channel (axis 1 of an image batch, or of flattened images
    given ``image_shape``) or per-feature (length D for an (N, D) batch) statistics."""

    def __init__(self, mean, std, image_shape=None) -> None:
        super().__init__()
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        if self.mean.ndim > 1 or self.std.ndim > 1:
            raise ValueError("Normalize: mean and std must be scalars or 1-D sequences")
        if not np.all(np.isfinite(self.mean)):
            raise ValueError(f"Normalize: mean must be finite, got {self.mean.tolist()}")
        with np.errstate(over="ignore", under="ignore"):
            std32 = self.std.astype(np.float32)
        # the division runs in float32: a std that underflows there (0 or subnormal) or overflows would
        # turn every value into inf or NaN
        usable = np.isfinite(self.std) & np.isfinite(std32) & (std32 >= np.finfo(np.float32).tiny)
        if not np.all(usable):
            raise ValueError(
                f"Normalize: std must be finite, positive and at least float32's smallest normal "
                f"number ({np.finfo(np.float32).tiny:.3g}), got {self.std.tolist()}"
            )
        self.image_shape = image_shape

    def _stat(self, xp, v, x):
        v = xp.asarray(v, dtype=x.dtype if x.dtype.kind == "f" else np.float32)
        if v.ndim == 0:
            return v
        k = v.shape[0]
        if x.ndim >= 3 and x.shape[1] == k:
            return v.reshape((1, k) + (1,) * (x.ndim - 2))
        if x.ndim == 2 and x.shape[1] == k:
            return v.reshape(1, k)
        if (
            x.ndim == 2
            and self.image_shape is not None
            and len(self.image_shape) == 3
            and self.image_shape[0] == k
            and x.shape[1] == int(np.prod(self.image_shape))
        ):
            per_pixel = int(np.prod(self.image_shape[1:]))
            return xp.repeat(v, per_pixel).reshape(1, -1)
        raise ValueError(
            f"Normalize: {k} statistics do not match a batch of shape {x.shape} "
            "(per-channel needs axis 1 of that size, or image_shape for flattened images)"
        )

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"

    def apply(self, x, backend):
        xp = backend.xp
        return (x - self._stat(xp, self.mean, x)) / self._stat(xp, self.std, x)


class RandomShift(Transform):
    """Shift each image by its own random (dy, dx), each uniform in [-max_shift, max_shift], zero fill."""

    random = True

    def __init__(self, max_shift: int, image_shape=None) -> None:
        super().__init__()
        if isinstance(max_shift, bool) or not isinstance(max_shift, numbers.Integral) or max_shift < 0:
            raise ValueError(f"RandomShift: max_shift must be a non-negative int, got {max_shift!r}")
        self.max_shift = int(max_shift)
        self.image_shape = image_shape

    def apply(self, x, backend):
        k = self.max_shift
        if k == 0:
            return x.copy()
        imgs, restore = _as_images(x, self.image_shape)
        n = imgs.shape[0]
        dy = backend.randint(-k, k + 1, (n,))
        dx = backend.randint(-k, k + 1, (n,))
        return restore(_shift_images(backend.xp, imgs, dy, dx, k))


class RandomCrop(Transform):
    """Zero-pad by ``padding`` on every side, then crop a random ``size`` window per image (as in
    torchvision). ``RandomCrop(28, padding=2)`` on 28x28 images is a random shift by up to 2 pixels."""

    random = True

    def __init__(self, size, padding: int = 0, image_shape=None) -> None:
        super().__init__()
        self.size = _pair(size, "RandomCrop: size")
        if min(self.size) < 1:
            raise ValueError(f"RandomCrop: size must be positive, got {self.size}")
        if isinstance(padding, bool) or not isinstance(padding, numbers.Integral) or padding < 0:
            raise ValueError(f"RandomCrop: padding must be a non-negative int, got {padding!r}")
        self.padding = int(padding)
        self.image_shape = image_shape

    def apply(self, x, backend):
        imgs, restore = _as_images(x, self.image_shape)
        n, _, H, W = imgs.shape
        h, w = self.size
        p = self.padding
        if h > H + 2 * p or w > W + 2 * p:
            raise ValueError(f"RandomCrop: crop {h}x{w} is larger than the padded image {H + 2 * p}x{W + 2 * p}")
        top = backend.randint(0, H + 2 * p - h + 1, (n,))
        left = backend.randint(0, W + 2 * p - w + 1, (n,))
        return restore(_windows(backend.xp, imgs, top, left, h, w, p))


class RandomHorizontalFlip(Transform):
    """Mirror each image left-right with probability ``p``."""

    random = True

    def __init__(self, p: float = 0.5, image_shape=None) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = float(p)
        self.image_shape = image_shape

    def apply(self, x, backend):
        imgs, restore = _as_images(x, self.image_shape)
        flip = backend.rand((imgs.shape[0],), np.float32) < self.p
        return restore(backend.xp.where(flip[:, None, None, None], imgs[..., ::-1], imgs))


class GaussianNoise(Transform):
    """Add N(0, std^2) noise to every element: ``x + std * randn(x.shape)``."""

    random = True

    def __init__(self, std: float) -> None:
        super().__init__()
        if not std >= 0:
            raise ValueError(f"GaussianNoise: std must be >= 0, got {std}")
        self.std = float(std)

    def apply(self, x, backend):
        dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
        noise = backend.randn(x.shape, dtype) * self.std
        return (x + noise).astype(dtype, copy=False)
