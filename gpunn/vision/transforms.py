"""torchvision's image transforms: ``Compose``, ``ToTensor``, ``Normalize``, ``Pad``, ``RandomCrop``,
``RandomHorizontalFlip``, ``RandomAffine``, ``Lambda``.

A transform takes one image and returns one: a PIL image (when Pillow is installed), a NumPy array
``(H, W)`` or ``(H, W, C)``, or a gpunn Tensor ``(C, H, W)`` (or ``(H, W)``). The geometric ones give
back the kind they got (PIL in, PIL out), so ``Compose([RandomCrop(28, padding=2), ToTensor(), ...])``
works as in torchvision. ``ToTensor`` makes a float32 ``(C, H, W)`` Tensor, scaled to [0, 1] from uint8.

Every transform but ``Lambda`` also works on a whole batch ``(N, C, H, W)`` of backend arrays, each image
with its own random draw: that is how ``DataLoader`` batches a ``gpunn.vision`` data set by slicing
(``Compose`` of such transforms). Called directly on a 4-d Tensor, the random transforms likewise draw
per image (torchvision would use one draw for the whole batch). Random numbers come from the global
generator (``gpunn.manual_seed``).

>>> t = Compose([ToTensor(), Normalize((0.1307,), (0.3081,))])
>>> x = t(img)            # Tensor (1, 28, 28), float32
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from gpunn.data.transforms import _backend_of, _windows
from gpunn.tensor import Tensor

__all__ = ["Compose", "ToTensor", "Normalize", "Pad", "RandomCrop", "RandomHorizontalFlip", "RandomAffine", "Lambda"]


def _pil_image_type():
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image.Image


def _to_batch(img):
    """``img`` as an ``(N, C, H, W)`` backend array, and a function giving a result back in ``img``'s kind."""
    pil = _pil_image_type()
    if pil is not None and isinstance(img, pil):
        from PIL import Image

        a = np.asarray(img)  # the same dtype comes back, so Image.fromarray gives the same mode
        if a.ndim == 2:
            return a[None, None], lambda out: Image.fromarray(np.ascontiguousarray(out[0, 0]))
        return a.transpose(2, 0, 1)[None], lambda out: Image.fromarray(np.ascontiguousarray(out[0].transpose(1, 2, 0)))
    if isinstance(img, Tensor):
        be = img._backend
        inner, back = _to_batch_array(img._data, channels_last=False)
        return inner, lambda out: Tensor._wrap(back(out), be)
    if isinstance(img, np.ndarray) or type(img).__module__.startswith("cupy"):
        return _to_batch_array(img, channels_last=True)
    raise TypeError(f"img should be a PIL Image, a NumPy array or a gpunn Tensor, got {type(img).__name__}")


def _to_batch_array(a, channels_last: bool):
    """Array layouts: (H, W); (H, W, C) for NumPy images, (C, H, W) for Tensors; (N, C, H, W) batches."""
    if a.ndim == 2:
        return a[None, None], lambda out: out[0, 0]
    if a.ndim == 3:
        if channels_last:
            return a.transpose(2, 0, 1)[None], lambda out: out[0].transpose(1, 2, 0)
        return a[None], lambda out: out[0]
    if a.ndim == 4 and not channels_last:
        return a, lambda out: out
    raise ValueError(
        f"expected an image (H, W), {'(H, W, C)' if channels_last else '(C, H, W)'} or a batch "
        f"(N, C, H, W), got shape {tuple(a.shape)}"
    )


def _size_pair(size, name: str) -> tuple[int, int]:
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (size, size)
    if isinstance(size, (tuple, list)) and len(size) == 1:
        size = (size[0], size[0])
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise ValueError(f"{name}: size must be a positive int or a sequence of 2 positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def _padding4(padding) -> tuple[int, int, int, int]:
    """torchvision's padding: int (all sides), (left/right, top/bottom) or (left, top, right, bottom)."""
    if isinstance(padding, numbers.Integral) and not isinstance(padding, bool):
        p = (padding,) * 4
    elif isinstance(padding, (tuple, list)) and len(padding) in (1, 2, 4):
        p = tuple(padding)
        p = p * 4 if len(p) == 1 else (p[0], p[1], p[0], p[1]) if len(p) == 2 else p
    else:
        raise ValueError(
            "Padding must be an int or a 1, 2, or 4 element tuple, not a "
            f"{len(padding) if isinstance(padding, (tuple, list)) else type(padding).__name__}"
        )
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0 for v in p):
        raise ValueError(f"padding must be non-negative ints, got {padding!r}")
    return tuple(int(v) for v in p)


_PAD_MODES = {"constant": "constant", "edge": "edge", "reflect": "reflect", "symmetric": "symmetric"}


def _pad_batch(xp, x, pad4, fill, mode: str):
    left, top, right, bottom = pad4
    widths = ((0, 0), (0, 0), (top, bottom), (left, right))
    if mode == "constant":
        return xp.pad(x, widths, mode="constant", constant_values=fill)
    return xp.pad(x, widths, mode=_PAD_MODES[mode])


class _Transform:
    """A transform of one image (any kind, see the module) that also runs on ``(N, C, H, W)`` batches."""

    batchable = True

    def __call__(self, img):
        x, back = _to_batch(img)
        return back(self.batch(x))

    def batch(self, x):
        """The transform of every image of the backend array ``x`` (N, C, H, W), each with its own draw."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Compose:
    """Apply ``transforms`` in order."""

    def __init__(self, transforms) -> None:
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose: every transform must be callable, got {type(t).__name__}")

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img

    @property
    def batchable(self) -> bool:
        return all(getattr(t, "batchable", False) for t in self.transforms)

    def batch(self, x):
        for t in self.transforms:
            x = t.batch(x)
        return x

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}" for t in self.transforms)
        return f"Compose({inner}\n)"


class ToTensor(_Transform):
    """A PIL image or NumPy array ``(H, W[, C])`` -> float32 Tensor ``(C, H, W)``; uint8 is divided by 255,
    other dtypes keep their values (as torchvision). A uint8 ``(H, W)`` Tensor (what a gpunn.vision data
    set yields without Pillow) is taken like an array."""

    def __call__(self, pic):
        pil = _pil_image_type()
        if pil is not None and isinstance(pic, pil):
            pic = np.asarray(pic)
        from gpunn.backend import backend_for

        if isinstance(pic, Tensor):
            if pic._data.dtype != np.uint8 or pic.ndim not in (2, 3):
                raise TypeError(
                    f"ToTensor: a Tensor input must be a uint8 image (H, W) or (H, W, C), got "
                    f"{pic.dtype} of shape {tuple(pic.shape)}"
                )
            be, a = pic._backend, pic._data
        elif isinstance(pic, np.ndarray):
            be, a = backend_for("numpy"), pic
        else:
            raise TypeError(f"pic should be PIL Image or ndarray. Got {type(pic)}")
        if a.ndim not in (2, 3):
            raise ValueError(f"pic should be 2/3 dimensional. Got {a.ndim} dimensions.")
        a = a[:, :, None] if a.ndim == 2 else a
        return Tensor._wrap(self.batch(be.xp.ascontiguousarray(a.transpose(2, 0, 1))[None])[0], be)

    def batch(self, x):
        if x.dtype == np.uint8:
            return x.astype(np.float32) / np.float32(255.0)
        return x

    def __repr__(self) -> str:
        return "ToTensor()"


class Normalize(_Transform):
    """``(x - mean[c]) / std[c]`` per channel of a float image (``mean``/``std``: one value per channel)."""

    def __init__(self, mean, std, inplace: bool = False) -> None:
        self.mean = tuple(float(m) for m in np.atleast_1d(np.asarray(mean, dtype=np.float64)))
        self.std = tuple(float(s) for s in np.atleast_1d(np.asarray(std, dtype=np.float64)))
        self.inplace = inplace
        if any(s == 0 for s in self.std):
            raise ValueError(
                f"std evaluated to zero after conversion to float32, leading to division by zero (std={self.std})"
            )

    def __call__(self, tensor):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"img should be Tensor Image. Got {type(tensor)}")
        if tensor._data.dtype.kind != "f":
            raise TypeError(f"Input tensor should be a float tensor. Got {tensor.dtype}.")
        if tensor.ndim < 3:
            raise ValueError(
                f"Expected tensor to be a tensor image of size (..., C, H, W). Got "
                f"tensor.size() = {tuple(tensor.shape)}"
            )
        return super().__call__(tensor)

    def batch(self, x):
        if x.dtype.kind != "f":
            raise TypeError(f"Normalize: input should be a float tensor (put ToTensor() first), got {x.dtype}")
        c = x.shape[1]
        for name, v in (("mean", self.mean), ("std", self.std)):
            if len(v) not in (1, c):
                raise ValueError(f"Normalize: {name} has {len(v)} values for an image of {c} channels")
        xp = _backend_of(x).xp
        mean = xp.asarray(self.mean, dtype=x.dtype).reshape(1, -1, 1, 1)
        std = xp.asarray(self.std, dtype=x.dtype).reshape(1, -1, 1, 1)
        return (x - mean) / std


class Pad(_Transform):
    """Pad every side: ``padding`` int, (left/right, top/bottom) or (left, top, right, bottom); modes
    ``constant`` (with ``fill``), ``edge``, ``reflect``, ``symmetric``."""

    def __init__(self, padding, fill=0, padding_mode: str = "constant") -> None:
        self.padding = padding
        self._pad4 = _padding4(padding)
        if not isinstance(fill, numbers.Real):
            raise TypeError(f"Pad: fill must be a number, got {type(fill).__name__}")
        if padding_mode not in _PAD_MODES:
            raise ValueError("Padding mode should be either constant, edge, reflect or symmetric")
        self.fill, self.padding_mode = fill, padding_mode

    def batch(self, x):
        return _pad_batch(_backend_of(x).xp, x, self._pad4, self.fill, self.padding_mode)


class RandomCrop(_Transform):
    """Pad (optional) and crop a random ``size`` window of each image; ``pad_if_needed`` pads an image
    smaller than ``size`` first."""

    def __init__(self, size, padding=None, pad_if_needed: bool = False, fill=0, padding_mode: str = "constant"):
        self.size = _size_pair(size, "RandomCrop")
        self.padding = padding
        self._pad = None if padding is None else Pad(padding, fill, padding_mode)
        self.pad_if_needed, self.fill, self.padding_mode = pad_if_needed, fill, padding_mode

    def batch(self, x):
        be = _backend_of(x)
        if self._pad is not None:
            x = self._pad.batch(x)
        th, tw = self.size
        h, w = x.shape[2:]
        if self.pad_if_needed and (h < th or w < tw):
            dh, dw = max(th - h, 0), max(tw - w, 0)
            x = _pad_batch(be.xp, x, (dw, dh, dw, dh), self.fill, self.padding_mode)
            h, w = x.shape[2:]
        if h < th or w < tw:
            raise ValueError(f"Required crop size {(th, tw)} is larger than input image size {(h, w)}")
        n = x.shape[0]
        top = be.randint(0, h - th + 1, (n,))
        left = be.randint(0, w - tw + 1, (n,))
        return _windows(be.xp, x, top, left, th, tw, 0)


class RandomHorizontalFlip(_Transform):
    """Mirror each image left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = float(p)

    def batch(self, x):
        be = _backend_of(x)
        flip = be.rand((x.shape[0],), np.float32) < self.p
        return be.xp.where(flip[:, None, None, None], x[..., ::-1], x)


def _range(value, name: str, center: float = 0.0) -> tuple[float, float]:
    """A number v -> (center - v, center + v); a pair -> itself."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"If {name} is a single number, it must be positive.")
        return center - float(value), center + float(value)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return float(value[0]), float(value[1])
    raise ValueError(f"{name} should be a number or a sequence of 2 numbers, got {value!r}")


class RandomAffine(_Transform):
    """Rotate by an angle drawn from ``degrees``, shift by up to ``translate`` (fractions of width, height),
    scale by a factor from ``scale`` and shear by angles from ``shear``, about the image centre; nearest
    pixel, ``fill`` outside. The angle is clockwise as in torchvision's ``F.affine``.

    ``RandomAffine(10, translate=(0.1, 0.1))``: up to +-10 degrees and +-10% shifts.
    """

    def __init__(
        self, degrees, translate=None, scale=None, shear=None, interpolation=None, fill=0, center=None
    ) -> None:
        self.degrees = _range(degrees, "degrees")
        if translate is not None:
            if len(translate) != 2 or not all(0.0 <= t <= 1.0 for t in translate):
                raise ValueError("translate should be a sequence of 2 values, each between 0 and 1")
            translate = (float(translate[0]), float(translate[1]))
        if scale is not None:
            if len(scale) != 2 or not all(s > 0 for s in scale):
                raise ValueError("scale values should be positive")
            scale = (float(scale[0]), float(scale[1]))
        self.translate, self.scale = translate, scale
        if shear is None:
            self.shear = None
        elif isinstance(shear, (tuple, list)) and len(shear) == 4:
            self.shear = (float(shear[0]), float(shear[1]), float(shear[2]), float(shear[3]))
        else:
            self.shear = (*_range(shear, "shear"), 0.0, 0.0)
        if interpolation not in (None, "nearest") and getattr(interpolation, "value", None) != "nearest":
            raise NotImplementedError(f"RandomAffine: only nearest interpolation is supported, got {interpolation}")
        if not isinstance(fill, numbers.Real):
            raise TypeError(f"RandomAffine: fill must be a number, got {type(fill).__name__}")
        self.fill = fill
        self.center = None if center is None else (float(center[0]), float(center[1]))

    def _uniform(self, be, lo: float, hi: float, n: int):
        return lo + (hi - lo) * be.rand((n,), np.float64)

    def batch(self, x):
        be = _backend_of(x)
        xp = be.xp
        n, _, h, w = x.shape
        angle = self._uniform(be, *self.degrees, n)
        if self.translate is not None:
            tx = xp.round(self._uniform(be, -self.translate[0] * w, self.translate[0] * w, n))
            ty = xp.round(self._uniform(be, -self.translate[1] * h, self.translate[1] * h, n))
        else:
            tx = ty = xp.zeros(n)
        s = self._uniform(be, *self.scale, n) if self.scale is not None else xp.ones(n)
        if self.shear is not None:
            shx = self._uniform(be, self.shear[0], self.shear[1], n)
            shy = self._uniform(be, self.shear[2], self.shear[3], n) if self.shear[2:] != (0.0, 0.0) else xp.zeros(n)
        else:
            shx = shy = xp.zeros(n)
        cx, cy = ((w - 1) * 0.5, (h - 1) * 0.5) if self.center is None else self.center
        rot, sx, sy = angle * (math.pi / 180), shx * (math.pi / 180), shy * (math.pi / 180)
        # forward map: rotation with shear (RSS), then scale, about (cx, cy), then the shift (tx, ty);
        # its inverse takes each output pixel back to the input pixel it samples
        a = xp.cos(rot - sy) / xp.cos(sy)
        b = -xp.cos(rot - sy) * xp.tan(sx) / xp.cos(sy) - xp.sin(rot)
        c = xp.sin(rot - sy) / xp.cos(sy)
        d = -xp.sin(rot - sy) * xp.tan(sx) / xp.cos(sy) + xp.cos(rot)
        ys, xs = xp.meshgrid(xp.arange(h, dtype=np.float64), xp.arange(w, dtype=np.float64), indexing="ij")
        u = xs[None] - (cx + tx)[:, None, None]  # (N, H, W) output position relative to the moved centre
        v = ys[None] - (cy + ty)[:, None, None]
        inv = 1.0 / s
        src_x = (d * inv)[:, None, None] * u + (-b * inv)[:, None, None] * v + cx
        src_y = (-c * inv)[:, None, None] * u + (a * inv)[:, None, None] * v + cy
        ix = xp.floor(src_x + 0.5).astype(np.int64)
        iy = xp.floor(src_y + 0.5).astype(np.int64)
        inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
        ix, iy = xp.clip(ix, 0, w - 1), xp.clip(iy, 0, h - 1)
        out = x[xp.arange(n)[:, None, None, None], xp.arange(x.shape[1])[None, :, None, None], iy[:, None], ix[:, None]]
        return xp.where(inside[:, None], out, xp.asarray(self.fill, dtype=x.dtype))


class Lambda:
    """A user function as a transform (per image only: a data set using it is batched item by item)."""

    batchable = False

    def __init__(self, lambd) -> None:
        if not callable(lambd):
            raise TypeError(f"Argument lambd should be callable, got {type(lambd).__name__!r}")
        self.lambd = lambd

    def __call__(self, img):
        return self.lambd(img)

    def __repr__(self) -> str:
        return "Lambda()"
