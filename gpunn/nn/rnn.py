"""Recurrent layers with PyTorch's equations, parameter names, shapes and initialisation: ``RNN``, ``LSTM``,
``GRU`` (multi-layer, ``batch_first``, inter-layer ``dropout``, ``bidirectional``) and their cells.

Each step is composed from gpunn ops (``F.linear``, the gate nonlinearities), so autograd differentiates
it: the input projection of a whole sequence is one GEMM per layer and direction, then one small GEMM per
time step. Gates, as in PyTorch (W_ih (G H, in), W_hh (G H, H), both biases (G H,)):

    RNN   h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)                 (or relu)
    LSTM  i, f, g, o = chunks of (x W_ih^T + b_ih + h W_hh^T + b_hh);  c' = s(f) c + s(i) tanh(g);  h' = s(o) tanh(c')
    GRU   r = s(a_r + b_r), z = s(a_z + b_z), n = tanh(a_n + r b_n), h' = (1 - z) n + z h
          with a = x W_ih^T + b_ih and b = h W_hh^T + b_hh
"""

from __future__ import annotations

import math

import gpunn.nn.functional as F
from gpunn.nn import init
from gpunn.nn.linear import _empty
from gpunn.nn.module import Module
from gpunn.nn.parameter import Parameter
from gpunn.ops.shape import cat, stack
from gpunn.tensor import Tensor

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"]

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _cell(mode: str, x_proj: Tensor, h, w_hh: Tensor, b_hh):
    """One time step from the input's projection ``x_proj`` (= x W_ih^T + b_ih) and the state ``h``
    (``(h, c)`` for an LSTM); returns the new state."""
    if mode == "LSTM":
        h, c = h
        i, f, g, o = (x_proj + F.linear(h, w_hh, b_hh)).chunk(4, -1)
        c = F.sigmoid(f) * c + F.sigmoid(i) * F.tanh(g)
        return F.sigmoid(o) * F.tanh(c), c
    if mode == "GRU":
        a_r, a_z, a_n = x_proj.chunk(3, -1)
        b_r, b_z, b_n = F.linear(h, w_hh, b_hh).chunk(3, -1)
        r, z = F.sigmoid(a_r + b_r), F.sigmoid(a_z + b_z)
        n = F.tanh(a_n + r * b_n)
        return (1 - z) * n + z * h
    pre = x_proj + F.linear(h, w_hh, b_hh)
    return F.tanh(pre) if mode == "RNN_TANH" else F.relu(pre)


class _RNNBase(Module):
    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 device=None, dtype=None) -> None:  # fmt: skip
        super().__init__()
        if proj_size:
            raise NotImplementedError(f"{type(self).__name__}(proj_size=...) is not supported by gpunn")
        if not isinstance(hidden_size, int) or hidden_size <= 0:
            raise ValueError(f"hidden_size must be a positive int, got {hidden_size!r}")
        if not isinstance(num_layers, int) or num_layers <= 0:
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        if isinstance(dropout, bool) or not 0 <= dropout <= 1:
            raise ValueError("dropout should be a number in range [0, 1] representing the probability of an element "
                             "being zeroed")  # fmt: skip
        if dropout > 0 and num_layers == 1:
            import warnings

            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero dropout expects "
                f"num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
                UserWarning,
                stacklevel=3,
            )
        self.mode, self.input_size, self.hidden_size = mode, input_size, hidden_size
        self.num_layers, self.bias, self.batch_first = num_layers, bias, batch_first
        self.dropout, self.bidirectional, self.proj_size = float(dropout), bidirectional, proj_size
        gate = _GATES[mode] * hidden_size
        dirs = 2 if bidirectional else 1
        for layer in range(num_layers):
            for d in range(dirs):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                in_size = input_size if layer == 0 else hidden_size * dirs
                setattr(self, "weight_ih" + sfx, Parameter(_empty((gate, in_size), dtype)))
                setattr(self, "weight_hh" + sfx, Parameter(_empty((gate, hidden_size), dtype)))
                if bias:
                    setattr(self, "bias_ih" + sfx, Parameter(_empty((gate,), dtype)))
                    setattr(self, "bias_hh" + sfx, Parameter(_empty((gate,), dtype)))
        self.reset_parameters()
        if device is not None:
            self.to(device)

    def reset_parameters(self) -> None:
        """Every weight and bias ~ U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), as in PyTorch."""
        bound = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def flatten_parameters(self) -> None:
        """Accepted (a cuDNN memory-layout hint in PyTorch; nothing to do here)."""

    def _weights(self, layer: int, d: int):
        sfx = f"_l{layer}" + ("_reverse" if d else "")
        get = self._parameters.get
        return get("weight_ih" + sfx), get("weight_hh" + sfx), get("bias_ih" + sfx), get("bias_hh" + sfx)

    def forward(self, input, hx=None):  # noqa: A002
        name = type(self).__name__
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: expected a gpunn Tensor input (PackedSequence is not supported by gpunn), "
                            f"got {type(input).__name__}")  # fmt: skip
        if input.ndim not in (2, 3):
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.ndim}D instead")
        unbatched = input.ndim == 2
        x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)  # (T, N, C)
        if x.shape[-1] != self.input_size:
            raise RuntimeError(f"{name}: input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                               f"got {x.shape[-1]}")  # fmt: skip
        dirs = 2 if self.bidirectional else 1
        n = x.shape[1]
        state_shape = (self.num_layers * dirs, n, self.hidden_size)
        lstm = self.mode == "LSTM"
        if hx is None:
            zeros = x.new_zeros(state_shape)
            h0 = (zeros, zeros) if lstm else zeros
        else:
            h0 = tuple(h.unsqueeze(1) for h in hx) if (unbatched and lstm) else (hx.unsqueeze(1) if unbatched else hx)
            for h in h0 if lstm else (h0,):
                if h.shape != state_shape:
                    raise RuntimeError(f"{name}: Expected hidden size {state_shape}, got {tuple(h.shape)}")
        finals_h, finals_c = [], []
        layer_in = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                w_ih, w_hh, b_ih, b_hh = self._weights(layer, d)
                k = layer * dirs + d
                h = (h0[0][k], h0[1][k]) if lstm else h0[k]
                proj = F.linear(layer_in, w_ih, b_ih)  # (T, N, G H): the whole sequence at once
                steps = range(proj.shape[0] - 1, -1, -1) if d else range(proj.shape[0])
                seq = [None] * proj.shape[0]
                for t in steps:
                    h = _cell(self.mode, proj[t], h, w_hh, b_hh)
                    seq[t] = h[0] if lstm else h
                outs.append(stack(seq) if seq else proj[:, :, : self.hidden_size] * 0)
                finals_h.append(h[0] if lstm else h)
                if lstm:
                    finals_c.append(h[1])
            layer_in = outs[0] if dirs == 1 else cat(outs, -1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_in = F.dropout(layer_in, self.dropout, True)
        out = layer_in
        h_n = stack(finals_h)
        if unbatched:
            out, h_n = out.squeeze(1), h_n.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        if lstm:
            c_n = stack(finals_c)
            return out, (h_n, c_n.squeeze(1) if unbatched else c_n)
        return out, h_n

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        return s


class RNN(_RNNBase):
    """Elman RNN: h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (``nonlinearity='relu'``: relu).
    ``rnn(x, h0=None) -> (output, h_n)``; x (T, N, input_size) (``batch_first``: (N, T, ...)) or (T, input_size)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None) -> None:  # fmt: skip
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size, num_layers,
                         bias, batch_first, dropout, bidirectional, 0, device, dtype)  # fmt: skip


class LSTM(_RNNBase):
    """Long short-term memory: ``lstm(x, (h0, c0)=None) -> (output, (h_n, c_n))`` (gates i, f, g, o)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 device=None, dtype=None) -> None:  # fmt: skip
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, device, dtype)  # fmt: skip


class GRU(_RNNBase):
    """Gated recurrent unit: ``gru(x, h0=None) -> (output, h_n)`` (gates r, z, n)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None) -> None:  # fmt: skip
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, 0,
                         device, dtype)  # fmt: skip


class _CellBase(Module):
    def __init__(self, mode: str, input_size: int, hidden_size: int, bias: bool, device, dtype) -> None:
        super().__init__()
        self.mode, self.input_size, self.hidden_size, self.bias = mode, input_size, hidden_size, bias
        gate = _GATES[mode] * hidden_size
        self.weight_ih = Parameter(_empty((gate, input_size), dtype))
        self.weight_hh = Parameter(_empty((gate, hidden_size), dtype))
        if bias:
            self.bias_ih = Parameter(_empty((gate,), dtype))
            self.bias_hh = Parameter(_empty((gate,), dtype))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()
        if device is not None:
            self.to(device)

    reset_parameters = _RNNBase.reset_parameters

    def forward(self, input, hx=None):  # noqa: A002
        name = type(self).__name__
        if input.ndim not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.ndim}D instead")
        unbatched = input.ndim == 1
        x = input.unsqueeze(0) if unbatched else input
        lstm = self.mode == "LSTM"
        if hx is None:
            zeros = x.new_zeros((x.shape[0], self.hidden_size))
            hx = (zeros, zeros) if lstm else zeros
        elif unbatched:
            hx = tuple(h.unsqueeze(0) for h in hx) if lstm else hx.unsqueeze(0)
        out = _cell(self.mode, F.linear(x, self.weight_ih, self.bias_ih), hx, self.weight_hh, self.bias_hh)
        if unbatched:
            out = tuple(o.squeeze(0) for o in out) if lstm else out.squeeze(0)
        return out

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        return s


class RNNCell(_CellBase):
    """One Elman step: ``cell(x, h=None) -> h'``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 device=None, dtype=None) -> None:  # fmt: skip
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity: {nonlinearity}")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size, bias, device,
                         dtype)  # fmt: skip


class LSTMCell(_CellBase):
    """One LSTM step: ``cell(x, (h, c)=None) -> (h', c')``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__("LSTM", input_size, hidden_size, bias, device, dtype)


class GRUCell(_CellBase):
    """One GRU step: ``cell(x, h=None) -> h'``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__("GRU", input_size, hidden_size, bias, device, dtype)
