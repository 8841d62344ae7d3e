"""``Backend``: what an array library must provide to run gpunn.

A backend owns its array module ``xp``, its device, host/device copies, its random generator and the
fused primitives (see ``gpunn.backend.reference`` for their contract). The methods here are written
once over ``xp``; a backend overrides a primitive only where it has a faster kernel of its own.
"""

from __future__ import annotations

import numpy as np

from gpunn.backend import reference


class Backend:
    name: str = "base"
    xp = np

    def __init__(self) -> None:
        self._seed: int | None = None
        self._rng = None

    # -- identity --------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        return "cpu"

    def __repr__(self) -> str:
        return f"<gpunn backend {self.name!r} on {self.device}>"

    # a backend is a per-process singleton: copies and pickles refer back to the same object
    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self

    def __reduce__(self):
        from gpunn.backend import backend_for

        return (backend_for, (self.name,))

    def is_array(self, a) -> bool:
        """True when ``a`` is an array of this backend's array module."""
        return isinstance(a, self.xp.ndarray)

    # -- copies ----------------------------------------------------------------------------------
    def asarray(self, data, dtype=None):
        """``data`` (nested lists, scalars, NumPy arrays) as an array of this backend."""
        return self.xp.asarray(data, dtype=dtype)

    def to_numpy(self, a) -> np.ndarray:
        """A host (NumPy) copy or view of one of this backend's arrays."""
        return np.asarray(a)

    def synchronize(self) -> None:
        """Wait for queued device work (no-op on the CPU)."""

    # -- randomness --------------------------------------------------------------------------------
    def seed(self, seed: int) -> None:
        self._seed = int(seed)
        self._rng = self._make_rng(self._seed)

    def _make_rng(self, seed):
        return np.random.default_rng(seed)

    @property
    def rng(self):
        if self._rng is None:
            self._rng = self._make_rng(self._seed)
        return self._rng

    def get_rng_state(self) -> dict:
        """The generator's state as a JSON-able dict (for checkpoints)."""
        return self.rng.bit_generator.state

    def set_rng_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    def randn(self, shape, dtype=np.float32):
        return self.rng.standard_normal(
            shape, dtype=np.dtype(dtype).type if np.dtype(dtype).kind == "f" else np.float64
        )

    def rand(self, shape, dtype=np.float32):
        return self.rng.random(shape, dtype=np.dtype(dtype).type)

    def uniform(self, shape, low, high, dtype=np.float32):
        u = self.rand(shape, dtype)
        return (u * (high - low) + low).astype(dtype, copy=False)

    def normal(self, shape, mean, std, dtype=np.float32):
        z = self.randn(shape, dtype)
        return (z * std + mean).astype(dtype, copy=False)

    def permutation(self, n: int):
        return self.rng.permutation(n)

    def randint(self, low, high, shape):
        return self.rng.integers(low, high, size=shape, dtype=np.int64)

    # -- scatter ----------------------------------------------------------------------------------
    def index_add(self, target, index, values) -> None:
        """target[index] += values, accumulating repeated indices (np.add.at)."""
        self.xp.add.at(target, index, values)

    # -- dropout and accuracy (the cupy backend: kernels/dropout.cu and a Numba kernel) ------------
    def dropout(self, x, p: float):
        """y = x * keep / (1 - p) with keep ~ Bernoulli(1 - p); returns (y, backward) where backward(dy)
        applies the same mask. Here the mask is drawn from the seeded generator and kept."""
        # half precision draws in float32 (the generators have no float16; the mask is cast below)
        u = self.rand(x.shape, np.float32 if x.dtype.itemsize < 4 else x.dtype)
        keep = u >= u.dtype.type(p)
        mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))
        return x * mask, lambda g: g * mask

    # -- ReLU (Tensor.relu / F.relu; the numpy backend runs them as Numba kernels on all cores) -------
    def relu(self, x):
        """PyTorch's ReLU: 0 where x < 0, else x (NaN and -0.0 kept), in x's dtype."""
        return reference.zero_where(self.xp, x, x < 0, out=self.xp.empty_like(x))

    def relu_backward(self, g, y):
        """ReLU's gradient read off its output y, PyTorch's rule: 0 where y <= 0, else g (a NaN output passes g;
        a selection, so an inf or NaN g where y <= 0 gives 0, not inf * 0)."""
        return reference.activation_backward(self.xp, g, y, "relu")

    def accuracy_count(self, logits, target):
        """How many rows of logits (N, C) have their argmax equal to target (N,); a 0-d device array."""
        return (logits.argmax(axis=1) == target).sum()

    # -- fused primitives (reference implementations; kernels override) ---------------------------
    def matmul(self, a, b, out=None):
        """a @ b with NumPy's semantics (``xp.matmul``), into ``out`` when given."""
        return self.xp.matmul(a, b) if out is None else self.xp.matmul(a, b, out=out)

    def linear_act(self, x, W, b, act="none", negative_slope=0.01):
        return reference.linear_act(self.xp, x, W, b, act, negative_slope, matmul=self.matmul)

    def linear_act_backward(
        self, dy, x, W, y, act="none", negative_slope=0.01, need_dx=True, need_dW=True, need_db=True
    ):
        return reference.linear_act_backward(
            self.xp, dy, x, W, y, act, negative_slope, need_dx, need_dW, need_db, matmul=self.matmul
        )

    def softmax_cross_entropy(
        self, logits, target, weight=None, reduction="mean", ignore_index=-100, label_smoothing=0.0
    ):
        return reference.softmax_cross_entropy(
            self.xp, logits, target, weight, reduction, ignore_index, label_smoothing
        )

    def softmax_cross_entropy_fwd(
        self, logits, target, weight=None, reduction="mean", ignore_index=-100, label_smoothing=0.0
    ):
        """(loss, backward) where backward(g) = dlogits scaled by the upstream gradient g (a scalar, or one
        value per row for 'none'). Here: the eager primitive, then ``dlogits * g``; the cupy backend folds
        g into its gradient kernel instead."""
        loss, dlogits = self.softmax_cross_entropy(logits, target, weight, reduction, ignore_index, label_smoothing)
        if reduction == "none":
            return loss, lambda g: dlogits * g.reshape(-1, 1)
        return loss, lambda g: dlogits * g

    def sgd_step(self, param, grad, momentum_buf, **hyper):
        reference.sgd_step(self.xp, param, grad, momentum_buf, **hyper)

    def adam_step(self, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, **hyper):
        reference.adam_step(self.xp, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, **hyper)

    def conv2d_forward(
        self, x, weight, bias, stride=(1, 1), padding=(0, 0), act="none", negative_slope=0.01, need_grad=True
    ):
        return reference.conv2d_forward(self.xp, x, weight, bias, stride, padding, act, negative_slope, need_grad)

    def conv2d_backward(self, dy, saved, need_dx=True, need_dW=True, need_db=True):
        return reference.conv2d_backward(self.xp, dy, saved, need_dx, need_dW, need_db)

    def pool2d_forward(self, x, mode, kernel_size, stride, padding=(0, 0), count_include_pad=True, need_grad=True):
        return reference.pool2d_forward(self.xp, x, mode, kernel_size, stride, padding, count_include_pad, need_grad)

    def pool2d_backward(self, dy, saved):
        return reference.pool2d_backward(self.xp, dy, saved)

    def adagrad_step(self, param, grad, state_sum, **hyper):
        reference.adagrad_step(self.xp, param, grad, state_sum, **hyper)

    def adadelta_step(self, param, grad, square_avg, acc_delta, **hyper):
        reference.adadelta_step(self.xp, param, grad, square_avg, acc_delta, **hyper)

    def rmsprop_step(self, param, grad, square_avg, momentum_buf=None, grad_avg=None, **hyper):
        reference.rmsprop_step(self.xp, param, grad, square_avg, momentum_buf, grad_avg, **hyper)
