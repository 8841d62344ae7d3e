"""``repr(tensor)`` in PyTorch's layout: ``tensor([1.5000, 2.0000], dtype=gpunn.float64, requires_grad=True)``."""

from __future__ import annotations

import math

import numpy as np

from gpunn.dtypes import bool_, dtype_name, float32, int64

# gpunn.set_printoptions: PyTorch's defaults and meanings (precision, summarization, line width, sci_mode)
PRINT_OPTIONS = {"precision": 4, "threshold": 1000, "edgeitems": 3, "linewidth": 80, "sci_mode": None}
_PROFILES = {
    "default": {"precision": 4, "threshold": 1000, "edgeitems": 3, "linewidth": 80},
    "short": {"precision": 2, "threshold": 1000, "edgeitems": 2, "linewidth": 80},
    "full": {"precision": 4, "threshold": float("inf"), "edgeitems": 3, "linewidth": 80},
}


def set_printoptions(precision=None, threshold=None, edgeitems=None, linewidth=None, profile=None, sci_mode=None):
    """How tensors print (``torch.set_printoptions``): ``precision`` digits after the point (4), ``threshold``
    elements before the middle is elided (1000), ``edgeitems`` kept at each end (3), ``linewidth`` (80),
    ``profile`` 'default' / 'short' / 'full', ``sci_mode`` True / False (None: chosen per tensor)."""
    if profile is not None:
        if profile not in _PROFILES:
            raise ValueError(f"set_printoptions: profile must be one of {sorted(_PROFILES)}, got {profile!r}")
        PRINT_OPTIONS.update(_PROFILES[profile])
    for key, value in (("precision", precision), ("threshold", threshold), ("edgeitems", edgeitems),
                       ("linewidth", linewidth)):  # fmt: skip
        if value is not None:
            PRINT_OPTIONS[key] = value
    PRINT_OPTIONS["sci_mode"] = sci_mode


def _summarized(a: np.ndarray, edge: int) -> np.ndarray:
    """The first and last ``edge`` entries along every long dim: what a summarized print shows."""
    for axis, n in enumerate(a.shape):
        if n > 2 * edge:
            a = np.concatenate([a.take(range(edge), axis), a.take(range(n - edge, n), axis)], axis=axis)
    return a


class _Formatter:
    """PyTorch's element formatter, chosen from the values shown: integers as they are; floats from their
    nonzero finite values -- integral ones as ``3.``, else ``precision`` decimals, scientific notation when
    max / min > 1000, max > 1e8 or min < 1e-4 (or as ``sci_mode`` says) -- right-aligned to the widest
    nonzero finite value (zeros and non-finite values do not widen the column)."""

    def __init__(self, shown: np.ndarray) -> None:
        prec = PRINT_OPTIONS["precision"]
        self.floating = shown.dtype.kind == "f"
        self.int_mode, self.sci_mode, self.width = True, False, 1
        if not self.floating:
            self.width = max([1] + [len(self._plain(v)) for v in shown.ravel().tolist()])
            return
        values = shown.astype(np.float64, copy=False).ravel()
        nz = values[np.isfinite(values) & (values != 0)]
        if nz.size == 0:
            return
        big, small = np.max(np.abs(nz)), np.min(np.abs(nz))
        self.int_mode = bool(np.all(nz == np.ceil(nz)))
        auto = bool(big / small > 1000.0 or big > 1.0e8 or small < 1.0e-4)
        self.sci_mode = auto if PRINT_OPTIONS["sci_mode"] is None else bool(PRINT_OPTIONS["sci_mode"])
        nzl = nz.tolist()
        if self.sci_mode:
            self.width = max(len(f"{v:.{prec}e}") for v in nzl)
        elif self.int_mode:
            self.width = max(len(f"{v:.0f}") + 1 for v in nzl)
        else:
            self.width = max(len(f"{v:.{prec}f}") for v in nzl)

    @staticmethod
    def _plain(v) -> str:
        return str(v) if not isinstance(v, bool) else ("True" if v else "False")

    def format(self, v) -> str:
        prec = PRINT_OPTIONS["precision"]
        if not self.floating:
            ret = self._plain(v)
        elif self.sci_mode:
            ret = f"{v:{self.width}.{prec}e}"
        elif self.int_mode:
            ret = f"{v:.0f}" + ("." if math.isfinite(v) else "")
        else:
            ret = f"{v:.{prec}f}"
        return " " * (self.width - len(ret)) + ret


def _vector_str(a: np.ndarray, indent: int, summarize: bool, fmt: _Formatter) -> str:
    edge, per_line = PRINT_OPTIONS["edgeitems"], max(1, (PRINT_OPTIONS["linewidth"] - indent) // (fmt.width + 2))
    if summarize and not edge:
        data = ["..."]
    elif summarize and a.shape[0] > 2 * edge:
        data = [fmt.format(v) for v in a[:edge].tolist()] + [" ..."] + [fmt.format(v) for v in a[-edge:].tolist()]
    else:
        data = [fmt.format(v) for v in a.tolist()]
    lines = [", ".join(data[i : i + per_line]) for i in range(0, len(data), per_line)]
    return "[" + ("," + "\n" + " " * (indent + 1)).join(lines) + "]"


def _nested_str(a: np.ndarray, indent: int, summarize: bool, fmt: _Formatter) -> str:
    if a.ndim == 0:
        return fmt.format(a.item())
    if a.ndim == 1:
        return _vector_str(a, indent, summarize, fmt)
    edge = PRINT_OPTIONS["edgeitems"]
    if summarize and a.shape[0] > 2 * edge:
        rows = list(range(edge)) + [None] + list(range(a.shape[0] - edge, a.shape[0]))
    else:
        rows = list(range(a.shape[0]))
    slices = ["..." if i is None else _nested_str(a[i], indent + 1, summarize, fmt) for i in rows]
    return "[" + ("," + "\n" * (a.ndim - 1) + " " * (indent + 1)).join(slices) + "]"


def array_body(a: np.ndarray, prefix: str = "tensor(") -> str:
    """The bracketed values as PyTorch prints them after ``prefix`` (``torch._tensor_str``'s layout)."""
    if a.size == 0:
        return "[]"
    summarize = a.size > PRINT_OPTIONS["threshold"]
    fmt = _Formatter(_summarized(a, PRINT_OPTIONS["edgeitems"]) if summarize else a)
    return _nested_str(a, len(prefix), summarize, fmt)


def tensor_repr(t) -> str:
    a = t._backend.to_numpy(t._data)
    body = array_body(a)
    extra = ""
    if t._backend.name != "numpy":
        extra += f", device='{t.device}'"
    if t.dtype not in (float32, int64, bool_) or a.size == 0:
        extra += f", size={tuple(a.shape)}" if a.size == 0 and a.ndim > 1 else ""
        if t.dtype not in (float32, int64, bool_):
            extra += f", dtype={dtype_name(t.dtype)}"
    if t.requires_grad:
        extra += f", grad_fn=<{t._op}>" if t._op else ", requires_grad=True"
    return f"tensor({body}{extra})"
