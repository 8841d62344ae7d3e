import importlib
import sys

import numpy as np

LIB = sys.argv[1] if len(sys.argv) > 1 else "torch"
torch = importlib.import_module(LIB)


def init_(model, seed=0):
    """Deterministic init from NumPy (the two libraries' RNGs differ)."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for _name, p in model.named_parameters():
            fan = p.shape[-1] if p.dim() > 1 else p.shape[0]
            if p.dim() > 2:
                fan = int(np.prod(p.shape[1:]))
            p.copy_(torch.from_numpy((rng.standard_normal(tuple(p.shape)) / np.sqrt(fan)).astype(np.float32)))
    return model
