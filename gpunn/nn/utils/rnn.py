"""``torch.nn.utils.rnn``: ``pad_sequence`` (a list of variable-length sequences to one padded tensor). Packed
sequences (``pack_padded_sequence`` and friends) are not supported by gpunn: they raise; pass the padded
tensor (and mask the padding) instead."""

from __future__ import annotations

from gpunn.tensor import Tensor

__all__ = ["pad_sequence", "pack_padded_sequence", "pad_packed_sequence", "pack_sequence"]


def pad_sequence(sequences, batch_first: bool = False, padding_value: float = 0.0, padding_side: str = "right"):
    """Stack tensors of shape (L_i, *) into (L_max, B, *) (``batch_first``: (B, L_max, *)), each padded with
    ``padding_value`` on the ``padding_side`` ('right' or 'left'); gradients flow to the sequences."""
    from gpunn.nn.functional import pad
    from gpunn.ops.shape import stack

    seqs = list(sequences)
    if not seqs:
        raise RuntimeError("received an empty list of sequences")
    if padding_side not in ("left", "right"):
        raise ValueError(f"Expected padding_side to be one of left or right, but got {padding_side}.")
    for s in seqs:
        if not isinstance(s, Tensor):
            raise TypeError(f"pad_sequence: expected a list of gpunn Tensors, got {type(s).__name__}")
        if s.ndim == 0 or s.shape[1:] != seqs[0].shape[1:]:
            raise RuntimeError("pad_sequence: every sequence needs the same trailing dims (L_i, *)")
    longest = max(s.shape[0] for s in seqs)
    padded = []
    for s in seqs:
        extra = longest - s.shape[0]
        widths = [0, 0] * (s.ndim - 1) + ([0, extra] if padding_side == "right" else [extra, 0])
        padded.append(pad(s, tuple(widths), value=padding_value) if extra else s)
    out = stack(padded, 0)
    return out if batch_first else out.transpose(0, 1)


def _packed(*args, **kwargs):
    raise NotImplementedError(
        "packed sequences (pack_padded_sequence, pack_sequence, pad_packed_sequence) are not supported by gpunn: "
        "pass the padded batch to the RNN and mask or index the padding"
    )


pack_padded_sequence = pad_packed_sequence = pack_sequence = _packed
