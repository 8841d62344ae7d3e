"""``Parameter``: a leaf Tensor that a Module registers as one of its learnable weights."""

from __future__ import annotations

from gpunn.backend import get_backend
from gpunn.tensor import Tensor


class Parameter(Tensor):
    """A leaf Tensor with ``requires_grad=True`` that ``Module.__setattr__`` registers.

    ``Parameter(t)`` shares ``t``'s storage (no copy); a NumPy array is shared on the numpy backend.
    >>> w = nn.Parameter(gpunn.zeros(3, 2)); w.requires_grad
    True
    """

    def __init__(self, data=None, requires_grad: bool = True) -> None:
        if data is None:
            be = get_backend()
            self._init(be.xp.empty((0,), dtype="float32"), be)
        elif isinstance(data, Tensor):
            self._init(data._data, data._backend)  # shares the storage and its version counter
            self._vc = data._vc
        else:
            be = get_backend()
            if not be.is_array(data):
                from gpunn.factories import tensor

                data = tensor(data, backend=be)._data  # Python floats -> float32, as gpunn.tensor
            self._init(data, be)
        self.requires_grad_(requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

    def __deepcopy__(self, memo):
        # a copy of the array on the same backend object (the Backend itself is never copied)
        if id(self) in memo:
            return memo[id(self)]
        out = Parameter(Tensor._wrap(self._data.copy(), self._backend), self.requires_grad)
        if self.grad is not None:
            out.grad = Tensor._wrap(self.grad._data.copy(), self._backend)
        memo[id(self)] = out
        return out

    def __reduce_ex__(self, protocol):
        # pickle as (array, requires_grad); the backend is looked up again by name on load
        host = self._backend.to_numpy(self._data)
        return (_rebuild_parameter, (host, self.requires_grad, self._backend.name))


def _rebuild_parameter(array, requires_grad: bool, backend_name: str) -> Parameter:
    from gpunn.backend import backend_for

    be = backend_for(backend_name)
    return Parameter(Tensor._wrap(be.asarray(array), be), requires_grad)
