"""``MultiheadAttention``, ``TransformerEncoderLayer`` and ``TransformerEncoder`` with PyTorch's parameter names,
initialisation, masks and math (its reference path: projections, per-head softmax(q k^T / sqrt(d) + mask) v,
the output projection), composed from gpunn ops so autograd differentiates them.

Masks follow PyTorch's MultiheadAttention convention: a bool ``attn_mask`` or ``key_padding_mask`` is True where
attention is NOT allowed; a float mask is added to the scores. Not supported (they raise): ``add_bias_kv``,
``add_zero_attn``, ``kdim``/``vdim`` different from ``embed_dim``. Where PyTorch's ``TransformerEncoder`` takes its
nested-tensor inference path (eval, no autograd, batch_first, a key padding mask, ...), its output is 0 at the
padded positions: gpunn zeroes them under the same conditions."""

from __future__ import annotations

import copy
import math

import gpunn.nn.functional as F
from gpunn.nn import init
from gpunn.nn.container import ModuleList
from gpunn.nn.dropout import Dropout
from gpunn.nn.linear import Linear, _empty
from gpunn.nn.module import Module
from gpunn.nn.normalization import LayerNorm
from gpunn.nn.parameter import Parameter
from gpunn.ops.shape import where
from gpunn.tensor import Tensor

__all__ = ["MultiheadAttention", "TransformerEncoderLayer", "TransformerEncoder"]


def _float_mask(mask, like: Tensor):
    """A bool mask (True = blocked) as an additive -inf/0 float mask; a float mask as it is."""
    if mask is None:
        return None
    if mask.dtype.kind == "b":
        return where(mask, float("-inf"), 0.0).astype(like.dtype)
    return mask.astype(like.dtype)


class NonDynamicallyQuantizableLinear(Linear):
    """A Linear under PyTorch's name for MultiheadAttention's output projection (so the module prints alike)."""


class MultiheadAttention(Module):
    """attn(q, k, v) = concat_h softmax(q W_q^h (k W_k^h)^T / sqrt(d) + mask) v W_v^h, then ``out_proj``.
    Inputs (L, N, E) ((N, L, E) with ``batch_first``, or unbatched (L, E)); returns (output, weights) with
    weights (N, L, S) averaged over heads (``average_attn_weights=False``: (N, H, L, S)), or None when
    ``need_weights=False``."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim=None, vdim=None,
                 batch_first: bool = False, device=None, dtype=None) -> None:  # fmt: skip
        super().__init__()
        if add_bias_kv or add_zero_attn or (kdim not in (None, embed_dim)) or (vdim not in (None, embed_dim)):
            raise NotImplementedError(
                "MultiheadAttention: add_bias_kv, add_zero_attn and kdim/vdim != embed_dim are not supported by gpunn"
            )
        if embed_dim % num_heads:
            raise AssertionError("embed_dim must be divisible by num_heads")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.head_dim, self.batch_first = embed_dim // num_heads, batch_first
        self.kdim = self.vdim = embed_dim
        self._qkv_same_embed_dim = True
        self.in_proj_weight = Parameter(_empty((3 * embed_dim, embed_dim), dtype))
        if bias:
            self.in_proj_bias = Parameter(_empty((3 * embed_dim,), dtype))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = NonDynamicallyQuantizableLinear(embed_dim, embed_dim, bias=bias, dtype=dtype)
        self.bias_k = self.bias_v = None
        self.add_zero_attn = False
        self._reset_parameters()
        if device is not None:
            self.to(device)

    def _reset_parameters(self) -> None:
        init.xavier_uniform_(self.in_proj_weight)
        if self.in_proj_bias is not None:
            init.constant_(self.in_proj_bias, 0.0)
            init.constant_(self.out_proj.bias, 0.0)

    def forward(self, query, key, value, key_padding_mask=None, need_weights: bool = True, attn_mask=None,
                average_attn_weights: bool = True, is_causal: bool = False):  # fmt: skip
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint.")
        unbatched = query.ndim == 2
        if unbatched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        tgt_len, bsz, e = query.shape
        src_len = key.shape[0]
        if e != self.embed_dim:
            raise AssertionError(f"was expecting embedding dimension of {self.embed_dim}, but got {e}")
        h, d = self.num_heads, self.head_dim
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
        q = F.linear(query, w_q, b_q).reshape(tgt_len, bsz * h, d).transpose(0, 1)  # (N H, L, d)
        k = F.linear(key, w_k, b_k).reshape(src_len, bsz * h, d).transpose(0, 1)
        v = F.linear(value, w_v, b_v).reshape(src_len, bsz * h, d).transpose(0, 1)
        mask = _float_mask(attn_mask, q)
        if mask is not None:
            if mask.ndim == 2:
                if mask.shape != (tgt_len, src_len):
                    raise RuntimeError(f"The shape of the 2D attn_mask is {mask.shape}, but should be "
                                       f"{(tgt_len, src_len)}.")  # fmt: skip
                mask = mask.unsqueeze(0)
            elif mask.shape != (bsz * h, tgt_len, src_len):
                raise RuntimeError(f"The shape of the 3D attn_mask is {mask.shape}, but should be "
                                   f"{(bsz * h, tgt_len, src_len)}.")  # fmt: skip
        if key_padding_mask is not None:
            if key_padding_mask.shape != (bsz, src_len):
                raise AssertionError(f"expecting key_padding_mask shape of {(bsz, src_len)}, but got "
                                     f"{key_padding_mask.shape}")  # fmt: skip
            kpm = _float_mask(key_padding_mask, q).reshape(bsz, 1, 1, src_len).expand(bsz, h, 1, src_len)
            kpm = kpm.reshape(bsz * h, 1, src_len)
            mask = kpm if mask is None else mask + kpm
        scores = (q * math.sqrt(1.0 / d)) @ k.transpose(-2, -1)
        if mask is not None:
            scores = scores + mask
        weights = F.softmax(scores, dim=-1)
        if self.dropout > 0.0 and self.training:
            weights = F.dropout(weights, self.dropout, True)
        out = (weights @ v).transpose(0, 1).reshape(tgt_len * bsz, e)
        out = self.out_proj(out).reshape(tgt_len, bsz, e)
        if unbatched:
            out = out.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        w = weights.reshape(bsz, h, tgt_len, src_len)
        if average_attn_weights:
            w = w.mean(1)
        return out, (w.squeeze(0) if unbatched else w)


def _activation(act):
    if callable(act):
        return act
    if act == "relu":
        return F.relu
    if act == "gelu":
        return F.gelu
    raise RuntimeError(f"activation should be relu/gelu, not {act}")


class TransformerEncoderLayer(Module):
    """Self-attention then a feed-forward block, each with a residual connection and LayerNorm (after by
    default, before with ``norm_first``), PyTorch's submodule names (self_attn, linear1, dropout, linear2,
    norm1, norm2, dropout1, dropout2)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation="relu", layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, device=None, dtype=None) -> None:  # fmt: skip
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first,
                                            dtype=dtype)  # fmt: skip
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, dtype=dtype)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.activation = _activation(activation)
        if device is not None:
            self.to(device)

    def _sa_block(self, x, attn_mask, key_padding_mask):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False)[0]
        return self.dropout1(x)

    def _ff_block(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal: bool = False):
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask)
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask))
        return self.norm2(x + self._ff_block(x))


class TransformerEncoder(Module):
    """``num_layers`` copies of ``encoder_layer`` (deep copies, as PyTorch), then ``norm`` if given."""

    def __init__(self, encoder_layer, num_layers: int, norm=None, enable_nested_tensor: bool = True,
                 mask_check: bool = True) -> None:  # fmt: skip
        super().__init__()
        self.layers = ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers, self.norm = num_layers, norm
        layer = encoder_layer
        attn = getattr(layer, "self_attn", None)
        self.enable_nested_tensor = bool(
            enable_nested_tensor
            and isinstance(layer, TransformerEncoderLayer)
            and not layer.norm_first
            and attn.batch_first
            and attn.in_proj_bias is not None
            and layer.activation in (F.relu, F.gelu)
            and layer.norm1.eps == layer.norm2.eps
            and attn.num_heads % 2 == 0
        )

    def _nested_path(self, src, mask, src_key_padding_mask) -> bool:
        """PyTorch's conditions for its nested-tensor inference path (its padded outputs are 0)."""
        from gpunn.grad_mode import is_grad_enabled

        needs_grad = is_grad_enabled() and (src.requires_grad or any(p.requires_grad for p in self.parameters()))
        return (self.enable_nested_tensor and not self.layers[0].training and not needs_grad and src.ndim == 3
                and mask is None and src_key_padding_mask is not None
                and src_key_padding_mask.dtype.kind == "b")  # fmt: skip

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        out = src
        for layer in self.layers:
            out = layer(out, src_mask=mask, src_key_padding_mask=src_key_padding_mask)
        if self._nested_path(src, mask, src_key_padding_mask):
            out = out.masked_fill(src_key_padding_mask.unsqueeze(-1), 0.0)
        return self.norm(out) if self.norm is not None else out
