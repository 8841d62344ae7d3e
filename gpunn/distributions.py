"""``torch.distributions`` for the distributions training scripts use: ``Normal``, ``Uniform``, ``Bernoulli``,
``Categorical`` and ``kl_divergence`` between two of the same kind. Samples come from the backend's seeded
generator (``gpunn.manual_seed``); ``rsample`` is reparameterised (differentiable in the parameters);
``log_prob`` and ``entropy`` are gpunn ops, so they differentiate. Parameters are validated as PyTorch's
``validate_args`` does (a ValueError naming the constraint). Other distributions raise by name."""

from __future__ import annotations

import math

import numpy as np

from gpunn.tensor import Tensor

__all__ = ["Distribution", "Normal", "Uniform", "Bernoulli", "Categorical", "kl_divergence"]


def _as_tensor(v, like: Tensor | None = None) -> Tensor:
    if isinstance(v, Tensor):
        return v
    from gpunn.factories import tensor

    if like is not None:
        return Tensor._wrap(like._backend.xp.asarray(v, dtype=like.dtype), like._backend)
    return tensor(float(v) if isinstance(v, (int, float)) else v)


def _shape(sample_shape) -> tuple:
    return (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)


class Distribution:
    """The shared interface: ``sample``, ``rsample``, ``log_prob``, ``entropy``, ``batch_shape``."""

    has_rsample = False

    def __init__(self, batch_shape: tuple) -> None:
        self.batch_shape = tuple(batch_shape)
        self.event_shape = ()

    def rsample(self, sample_shape=()):
        raise NotImplementedError(f"{type(self).__name__} has no reparameterised rsample()")

    def _extended(self, sample_shape) -> tuple:
        return _shape(sample_shape) + self.batch_shape

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Normal(Distribution):
    """N(loc, scale^2) (broadcast); ``rsample`` = loc + scale * eps."""

    has_rsample = True

    def __init__(self, loc, scale, validate_args=None) -> None:
        self.loc = _as_tensor(loc, scale if isinstance(scale, Tensor) else None)
        self.scale = _as_tensor(scale, self.loc)
        if validate_args is not False and not bool((self.scale._data > 0).all()):
            raise ValueError(
                "Expected parameter scale of Normal to satisfy the constraint GreaterThan(lower_bound=0.0), "
                f"but found invalid values:\n{self.scale}"
            )
        shape = tuple(np.broadcast_shapes(self.loc.shape, self.scale.shape))
        self.loc, self.scale = self.loc.expand(*shape), self.scale.expand(*shape)
        super().__init__(shape)

    @property
    def mean(self) -> Tensor:
        return self.loc

    @property
    def stddev(self) -> Tensor:
        return self.scale

    @property
    def variance(self) -> Tensor:
        return self.scale * self.scale

    def rsample(self, sample_shape=()) -> Tensor:
        be = self.loc._backend
        eps = Tensor._wrap(be.randn(self._extended(sample_shape), self.loc.dtype), be)
        return self.loc + eps * self.scale

    def sample(self, sample_shape=()) -> Tensor:
        return self.rsample(sample_shape).detach()

    def log_prob(self, value) -> Tensor:
        value = _as_tensor(value, self.loc)
        return -((value - self.loc) ** 2) / (2 * self.variance) - self.scale.log() - math.log(math.sqrt(2 * math.pi))

    def entropy(self) -> Tensor:
        return 0.5 + 0.5 * math.log(2 * math.pi) + self.scale.log()

    def cdf(self, value) -> Tensor:
        value = _as_tensor(value, self.loc)
        return 0.5 * (1 + ((value - self.loc) / (self.scale * math.sqrt(2))).erf())

    def __repr__(self) -> str:
        return f"Normal(loc: {_param_str(self.loc)}, scale: {_param_str(self.scale)})"


class Uniform(Distribution):
    """U[low, high) (broadcast); ``rsample`` = low + (high - low) * u."""

    has_rsample = True

    def __init__(self, low, high, validate_args=None) -> None:
        self.low = _as_tensor(low, high if isinstance(high, Tensor) else None)
        self.high = _as_tensor(high, self.low)
        if validate_args is not False and not bool((self.low._data < self.high._data).all()):
            raise ValueError("Expected parameter low of Uniform to satisfy the constraint LessThan(high)")
        shape = tuple(np.broadcast_shapes(self.low.shape, self.high.shape))
        self.low, self.high = self.low.expand(*shape), self.high.expand(*shape)
        super().__init__(shape)

    @property
    def mean(self) -> Tensor:
        return (self.low + self.high) / 2

    def rsample(self, sample_shape=()) -> Tensor:
        be = self.low._backend
        u = Tensor._wrap(be.rand(self._extended(sample_shape), self.low.dtype), be)
        return self.low + u * (self.high - self.low)

    def sample(self, sample_shape=()) -> Tensor:
        return self.rsample(sample_shape).detach()

    def log_prob(self, value) -> Tensor:
        from gpunn.ops.shape import where

        value = _as_tensor(value, self.low)
        inside = (value >= self.low) & (value < self.high)
        _support(bool(inside.all()), value, self, "Interval(low, high)")
        return where(inside, -(self.high - self.low).log(), float("-inf"))

    def entropy(self) -> Tensor:
        return (self.high - self.low).log()

    def __repr__(self) -> str:
        return f"Uniform(low: {_param_str(self.low)}, high: {_param_str(self.high)})"


def _logits_probs(probs, logits, name: str):

    if (probs is None) == (logits is None):
        raise ValueError("Either `probs` or `logits` must be specified, but not both.")
    if probs is not None:
        return _as_tensor(probs), None
    return None, _as_tensor(logits)


class Bernoulli(Distribution):
    """1 with probability ``probs`` (or sigmoid(``logits``)), else 0."""

    def __init__(self, probs=None, logits=None, validate_args=None) -> None:
        p, lg = _logits_probs(probs, logits, "Bernoulli")
        if p is not None and validate_args is not False and not bool(((p._data >= 0) & (p._data <= 1)).all()):
            raise ValueError(
                "Expected parameter probs of Bernoulli to satisfy the constraint Interval(lower_bound=0.0, "
                "upper_bound=1.0)"
            )
        self._probs, self._logits = p, lg
        super().__init__((p if p is not None else lg).shape)

    @property
    def probs(self) -> Tensor:
        return self._probs if self._probs is not None else self._logits.sigmoid()

    @property
    def logits(self) -> Tensor:
        if self._logits is not None:
            return self._logits
        eps = float(np.finfo(self._probs.dtype).eps)
        p = self._probs.clamp(eps, 1 - eps)
        return p.log() - (1 - p).log()

    @property
    def mean(self) -> Tensor:
        return self.probs

    def sample(self, sample_shape=()) -> Tensor:
        from gpunn.factories import bernoulli

        p = self.probs.detach().expand(*self._extended(sample_shape))
        return bernoulli(p.float() if p.dtype.kind != "f" else p)

    def log_prob(self, value) -> Tensor:
        from gpunn.nn import functional as F

        value = _as_tensor(value, self.logits)
        _support(bool(((value == 0) | (value == 1)).all()), value, self, "Boolean()")
        return -F.binary_cross_entropy_with_logits(self.logits.expand(*value.shape), value, reduction="none")

    def entropy(self) -> Tensor:
        from gpunn.nn import functional as F

        return F.binary_cross_entropy_with_logits(self.logits, self.probs, reduction="none")


class Categorical(Distribution):
    """One of K categories (the last dim of ``probs``, normalised, or softmax(``logits``))."""

    def __init__(self, probs=None, logits=None, validate_args=None) -> None:
        p, lg = _logits_probs(probs, logits, "Categorical")
        if p is not None:
            if validate_args is not False and (bool((p._data < 0).any()) or not bool((p._data.sum(-1) > 0).all())):
                raise ValueError("Expected parameter probs of Categorical to satisfy the constraint Simplex()")
            self._probs = p / p.sum(-1, keepdim=True)
            self._logits = None
        else:
            self._probs, self._logits = None, lg - lg.logsumexp(-1, keepdim=True)
        src = self._probs if self._probs is not None else self._logits
        self._num_events = src.shape[-1]
        super().__init__(src.shape[:-1])

    @property
    def probs(self) -> Tensor:
        return self._probs if self._probs is not None else self._logits.exp()

    @property
    def logits(self) -> Tensor:
        if self._logits is not None:
            return self._logits
        eps = float(np.finfo(self._probs.dtype).eps)
        return self._probs.clamp(eps, 1 - eps).log()

    @property
    def param_shape(self) -> tuple:
        return self.batch_shape + (self._num_events,)

    def sample(self, sample_shape=()) -> Tensor:
        from gpunn.factories import multinomial

        probs = self.probs.detach().reshape(-1, self._num_events)
        n = int(np.prod(_shape(sample_shape))) if _shape(sample_shape) else 1
        draws = multinomial(probs, n, replacement=True)  # (batch, n)
        out = draws.transpose(0, 1).reshape(_shape(sample_shape) + self.batch_shape)
        return out

    def log_prob(self, value) -> Tensor:
        value = _as_tensor(value)
        ok = value.dtype.kind in "iu" or bool((value == value.round()).all())
        _support(ok and bool(((value >= 0) & (value < self._num_events)).all()), value, self,
                 f"IntegerInterval(lower_bound=0, upper_bound={self._num_events - 1})")  # fmt: skip
        value = value.long()
        logits = self.logits
        shape = tuple(np.broadcast_shapes(value.shape, self.batch_shape))
        lg = logits.expand(*shape, self._num_events)
        return lg.gather(-1, value.expand(*shape).unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> Tensor:
        from gpunn.ops.shape import where

        logits, probs = self.logits, self.probs
        return -where(probs > 0, probs * logits, 0.0).sum(-1)

    def __repr__(self) -> str:
        return f"Categorical(probs: {_param_str(self.probs)})" if self._probs is not None else (
            f"Categorical(logits: {_param_str(self.logits)})")  # fmt: skip


def _support(ok: bool, value: Tensor, dist: Distribution, support: str) -> None:
    if not ok:
        raise ValueError(
            f"Expected value argument (Tensor of shape {tuple(value.shape)}) to be within the support ({support}) "
            f"of the distribution {dist!r}, but found invalid values:\n{value}"
        )


def _param_str(t: Tensor) -> str:
    return str(t.item()) if t.numel() == 1 else f"{t.shape}"


def kl_divergence(p: Distribution, q: Distribution) -> Tensor:
    """KL(p || q) for two Normals, two Categoricals, two Bernoullis or two Uniforms."""
    if isinstance(p, Normal) and isinstance(q, Normal):
        var_ratio = (p.scale / q.scale) ** 2
        t1 = ((p.loc - q.loc) / q.scale) ** 2
        return 0.5 * (var_ratio + t1 - 1 - var_ratio.log())
    if isinstance(p, Categorical) and isinstance(q, Categorical):
        from gpunn.ops.shape import where

        t = p.probs * (p.logits - q.logits)
        return where(p.probs > 0, t, 0.0).sum(-1)
    if isinstance(p, Bernoulli) and isinstance(q, Bernoulli):
        from gpunn.nn import functional as F

        return F.binary_cross_entropy_with_logits(
            q.logits, p.probs, reduction="none"
        ) - F.binary_cross_entropy_with_logits(p.logits, p.probs, reduction="none")
    if isinstance(p, Uniform) and isinstance(q, Uniform):
        from gpunn.ops.shape import where

        inside = (q.low <= p.low) & (p.high <= q.high)
        return where(inside, ((q.high - q.low) / (p.high - p.low)).log(), float("inf"))
    raise NotImplementedError(f"kl_divergence({type(p).__name__}, {type(q).__name__}) is not supported by gpunn")


def __getattr__(name):
    raise AttributeError(f"module 'gpunn.distributions' has no attribute {name!r} (gpunn has {', '.join(__all__)})")
