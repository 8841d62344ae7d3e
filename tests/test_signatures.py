"""Signature parity with PyTorch 2.13: every public callable of gpunn.nn (module constructors),
gpunn.nn.functional, gpunn.optim (optimizers), gpunn.optim.lr_scheduler and the top-level functions that
torch also has takes PyTorch's parameters -- the positional names in PyTorch's order, PyTorch's defaults,
and every PyTorch keyword -- so a script that calls them positionally or by keyword binds the same meaning.

Rules checked for each pair (gpunn, torch):
- ``pos``: gpunn's positional parameters are PyTorch's, in its order. A shorter list is allowed (more
  positional arguments then raise TypeError); a longer one only where the extra slots are keywords of
  PyTorch's with the same name (``gpunn.full(size, 1.0, gpunn.float64)``: PyTorch raises, gpunn means the
  same dtype), never a slot PyTorch gives another meaning.
- ``kw``: every PyTorch parameter name is accepted by gpunn (honoured, or rejected with an error naming it).
- ``default``: where both have a default written as a literal, they are equal.
PyTorch's C builtins have no ``inspect.signature``: their documented signature (the docstring's first line)
is parsed; a few Python functions declared ``(*args, **kwargs)`` get their documented signature below.
Deliberate differences are in ALLOWED, each with its reason; an entry that no longer differs fails too,
so the list stays true.
"""

from __future__ import annotations

import ast
import inspect
import re
from dataclasses import dataclass

import pytest

import gpunn
import gpunn.nn.functional as gF
from gpunn import nn as gnn
from gpunn import optim as goptim
from gpunn.optim import lr_scheduler as glr

torch = pytest.importorskip("torch")
tF = torch.nn.functional

POS, KW, VARPOS, VARKW = "pos", "kw", "varpos", "varkw"
NO_DEFAULT = object()


@dataclass(frozen=True)
class Param:
    name: str
    kind: str
    default: object = NO_DEFAULT  # a Python value where the default is a literal, else NO_DEFAULT


def _from_inspect(sig: inspect.Signature) -> list[Param]:
    kinds = {
        inspect.Parameter.POSITIONAL_ONLY: POS,
        inspect.Parameter.POSITIONAL_OR_KEYWORD: POS,
        inspect.Parameter.KEYWORD_ONLY: KW,
        inspect.Parameter.VAR_POSITIONAL: VARPOS,
        inspect.Parameter.VAR_KEYWORD: VARKW,
    }
    out = []
    for p in sig.parameters.values():
        if p.name == "self":
            continue
        d = p.default
        literal = d is not inspect.Parameter.empty and (d is None or isinstance(d, (bool, int, float, str, tuple)))
        out.append(Param(p.name, kinds[p.kind], d if literal else NO_DEFAULT))
    return out


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p.strip() for p in parts + [cur] if p.strip()]


def _from_doc(name: str, doc: str) -> list[Param] | None:
    """PyTorch's documented signature, ``zeros(*size, *, out=None, dtype=None, ...) -> Tensor``."""
    first = " ".join((doc or "").strip().splitlines()[:3])
    m = re.match(rf"{re.escape(name)}\((.*?)\)\s*->", first)
    if not m:
        return None
    params, kind = [], POS
    for raw in _split_top(m.group(1).replace("\\*", "*")):
        if raw == "*":
            kind = KW
            continue
        if raw.startswith("**"):
            params.append(Param(raw[2:], VARKW))
            continue
        if raw.startswith("*"):
            params.append(Param(raw[1:].split(":")[0].strip(), VARPOS))
            kind = KW
            continue
        pname, _, default = raw.partition("=")
        pname = pname.split(":")[0].strip()
        value = NO_DEFAULT
        if default.strip():
            try:
                value = ast.literal_eval(default.strip())
            except (ValueError, SyntaxError):
                value = NO_DEFAULT
        params.append(Param(pname, kind, value))
    return params


# PyTorch functions declared (*args, **kwargs) (boolean dispatch, RNN argument parsing, Parameter's __new__):
# their documented signatures, written out as PyTorch's docs give them.
TORCH_DOCUMENTED = {
    "nn.RNN": "(input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True, batch_first=False, "
    "dropout=0.0, bidirectional=False, device=None, dtype=None)",
    "nn.LSTM": "(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0, "
    "bidirectional=False, proj_size=0, device=None, dtype=None)",
    "nn.GRU": "(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0, "
    "bidirectional=False, device=None, dtype=None)",
    "nn.Parameter": "(data=None, requires_grad=True)",
    "F.max_pool1d": "(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False)",
    "F.max_pool2d": "(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False)",
    # overloaded: the docstring's first line is the tensor overload (mean, std, *, generator, out); this is
    # the number overload, whose keywords are the union
    "torch.normal": "(mean, std, size, *, generator=None, out=None, dtype=None, layout=None, device=None, "
    "requires_grad=False, pin_memory=False)",
    # overloaded reductions: the docstring's first line is the whole-tensor overload (input only); these are
    # the overloads with a dim, from the same docstrings. std/var: PyTorch's unbiased/correction overloads
    # in one (no default written for unbiased and correction: gpunn's None means PyTorch's default, 1).
    "torch.sum": "(input, dim, keepdim=False, *, dtype=None)",
    "torch.nansum": "(input, dim, keepdim=False, *, dtype=None)",
    "torch.mean": "(input, dim, keepdim=False, *, dtype=None, out=None)",
    "torch.prod": "(input, dim, keepdim=False, *, dtype=None)",
    "torch.max": "(input, dim, keepdim=False, *, out=None)",
    "torch.min": "(input, dim, keepdim=False, *, out=None)",
    "torch.all": "(input, dim, keepdim=False, *, out=None)",
    "torch.any": "(input, dim, keepdim=False, *, out=None)",
    "torch.argmax": "(input, dim, keepdim=False)",
    "torch.median": "(input, dim, keepdim=False, *, out=None)",
    "torch.std": "(input, dim=None, unbiased, keepdim=False, *, correction, out=None)",
    "torch.var": "(input, dim=None, unbiased, keepdim=False, *, correction, out=None)",
    "torch.std_mean": "(input, dim=None, unbiased, keepdim=False, *, correction, out=None)",
    "torch.var_mean": "(input, dim=None, unbiased, keepdim=False, *, correction, out=None)",
    "torch.bernoulli": "(input, p, *, generator=None, out=None)",
    # scatter(input, dim, index, src) and scatter(input, dim, index, value): a number in the fourth slot
    # is the value in both libraries
    "torch.scatter": "(input, dim, index, src, *, value=None, reduce=None)",
    # where the docstring's names are not the ones PyTorch's argument parser takes (its TypeError lists
    # those): the parser's
    "torch.true_divide": "(input, other, *, out=None)",
    "F.one_hot": "(input, num_classes=-1)",
    "torch.broadcast_to": "(input, size)",
    "torch.searchsorted": "(sorted_sequence, input, *, out_int32=False, right=False, side=None, out=None, sorter=None)",
    # C builtins without a docstring signature, as PyTorch's docs give them
    "torch.relu": "(input)",
    "torch.log_softmax": "(input, dim, dtype=None)",
    "torch.logsumexp": "(input, dim, keepdim=False, *, out=None)",
    "torch.lerp": "(input, end, weight, *, out=None)",
    "torch.masked_fill": "(input, mask, value)",
    "torch.multiply": "(input, other, *, out=None)",
    "torch.clamp_min": "(input, min)",
    "torch.clamp_max": "(input, max)",
    "torch.unique": "(input, sorted=True, return_inverse=False, return_counts=False, dim=None)",
}

# Deliberate differences: (qualified name) -> {problem kind: reason}. Problem kinds: "pos", "kw:<name>",
# "default:<name>". Every entry must still be a real difference (the test fails on stale entries).
ALLOWED: dict[str, dict[str, str]] = {
    "torch.kthvalue": {"default:dim": "PyTorch documents dim=None, meaning the last dim: gpunn writes it -1"},
    "torch.topk": {"default:dim": "PyTorch documents dim=None, meaning the last dim: gpunn writes it -1"},
    "torch.relu": {
        "pos": "gpunn.relu is F.relu (one definition), with F's inplace slot: PyTorch's torch.relu "
        "has no second argument, so no PyTorch call binds differently"
    },
}
# Tensor operations reached as gpunn.<op> (not the factories above) do not take PyTorch's out=: gpunn's ops
# return new tensors, and an out= raises TypeError naming it ("unexpected keyword argument 'out'").
OPS_WITHOUT_OUT = "kw:out"


def _signature_of(qualname: str, obj, is_class: bool) -> list[Param] | None:
    if qualname in TORCH_DOCUMENTED:
        return _from_doc("f", "f" + TORCH_DOCUMENTED[qualname] + " -> X")
    if is_class and obj.__init__ is torch.nn.Module.__init__:
        return []  # a module that takes no arguments (nn.Sigmoid, nn.Tanh, ...)
    target = obj.__init__ if is_class else obj
    try:
        params = _from_inspect(inspect.signature(target))
    except (TypeError, ValueError):
        doc = getattr(obj, "__doc__", "") or ""
        return _from_doc(qualname.split(".")[-1], doc) or _from_doc(getattr(obj, "__name__", ""), doc)
    if [p.kind for p in params] == [VARPOS, VARKW]:
        return None
    return params


def problems(ours: list[Param], ref: list[Param]) -> list[str]:
    """The rule violations of gpunn's parameters ``ours`` against PyTorch's ``ref`` (see the module docstring)."""
    out = []
    has_varpos = any(p.kind == VARPOS for p in ours)
    has_varkw = any(p.kind == VARKW for p in ours)
    o_pos = [p.name for p in ours if p.kind == POS]
    r_pos = [p.name for p in ref if p.kind == POS]
    r_kw = {p.name for p in ref if p.kind == KW}
    if not has_varpos:
        common = min(len(o_pos), len(r_pos))
        if o_pos[:common] != r_pos[:common] or any(n not in r_kw for n in o_pos[common:]):
            out.append("pos")
    names = {p.name for p in ours}
    for p in ref:
        if p.kind in (POS, KW) and p.name not in names and not has_varkw:
            out.append(f"kw:{p.name}")
    defaults = {p.name: p.default for p in ours}
    for p in ref:
        d = defaults.get(p.name, NO_DEFAULT)
        if p.default is NO_DEFAULT or d is NO_DEFAULT:
            continue
        if type(d) is not type(p.default) and not (isinstance(d, (int, float)) and isinstance(p.default, (int, float))):
            out.append(f"default:{p.name}")
        elif d != p.default:
            out.append(f"default:{p.name}")
    return out


def _public(module, predicate):
    return sorted(n for n in dir(module) if not n.startswith("_") and predicate(getattr(module, n)))


def _pairs():
    """(qualified name, gpunn object, torch object, is_class) for every callable both have."""
    out = []
    for n in _public(torch.nn, inspect.isclass):
        if hasattr(gnn, n) and inspect.isclass(getattr(gnn, n)):
            out.append((f"nn.{n}", getattr(gnn, n), getattr(torch.nn, n), True))
    for n in _public(tF, callable):
        if hasattr(gF, n) and callable(getattr(gF, n)) and not inspect.isclass(getattr(tF, n)):
            out.append((f"F.{n}", getattr(gF, n), getattr(tF, n), False))
    for prefix, gmod, tmod in (("optim", goptim, torch.optim), ("lr_scheduler", glr, torch.optim.lr_scheduler)):
        for n in _public(tmod, inspect.isclass):
            if hasattr(gmod, n) and inspect.isclass(getattr(gmod, n)):
                out.append((f"{prefix}.{n}", getattr(gmod, n), getattr(tmod, n), True))
    for n in _public(gpunn, callable):
        ours, ref = getattr(gpunn, n), getattr(torch, n, None)
        if ref is None or inspect.isclass(ours) or inspect.ismodule(ours) or not callable(ref):
            continue
        out.append((f"torch.{n}", ours, ref, False))
    return out


# The top-level factories and joins a script builds tensors with: every PyTorch keyword, out= included
# (refused by name where gpunn cannot honour it). The other top-level functions are ops (OPS_WITHOUT_OUT).
TOP_LEVEL = [
    "zeros", "ones", "full", "empty", "eye", "arange", "linspace", "logspace", "rand", "randn", "randint",
    "randperm", "normal", "multinomial", "tensor", "as_tensor", "from_numpy", "zeros_like", "ones_like",
    "full_like", "empty_like", "rand_like", "randn_like", "randint_like", "cat", "concat", "concatenate",
    "stack", "manual_seed",
]  # fmt: skip

PAIRS = _pairs()


def test_the_sweep_covers_the_namespaces():
    kinds = {q.split(".")[0] for q, *_ in PAIRS}
    assert kinds == {"nn", "F", "optim", "lr_scheduler", "torch"}
    assert {f"torch.{n}" for n in TOP_LEVEL} <= {q for q, *_ in PAIRS}
    assert len(PAIRS) > 400


@pytest.mark.parametrize("qualname, ours, ref, is_class", PAIRS, ids=[p[0] for p in PAIRS])
def test_signature_matches_torch(qualname, ours, ref, is_class):
    ref_params = _signature_of(qualname, ref, is_class)
    if ref_params is None:
        pytest.skip(f"{qualname}: no documented signature to compare")
    our_params = _from_inspect(inspect.signature(ours.__init__ if is_class else ours))
    found = problems(our_params, ref_params)
    allowed = ALLOWED.get(qualname, {})
    is_op = qualname.startswith("torch.") and qualname.removeprefix("torch.") not in TOP_LEVEL
    unexpected = [p for p in found if p not in allowed and not (is_op and p == OPS_WITHOUT_OUT)]
    assert not unexpected, f"{qualname}: {unexpected}\n  gpunn {our_params}\n  torch {ref_params}"
    stale = [k for k in allowed if k not in found]
    assert not stale, f"{qualname}: ALLOWED lists {stale}, which no longer differ"


def test_the_rules_catch_what_they_should():
    """The checker itself: a renamed, reordered, missing or re-defaulted parameter is reported."""

    def sig(f):
        return _from_inspect(inspect.signature(f))

    def ref(a, b=1, c=None, *, d=None): ...

    assert problems(sig(ref), sig(ref)) == []
    assert problems(sig(lambda a, b=1: 0), sig(ref)) == ["kw:c", "kw:d"]  # prefix fine, keywords missing
    assert "pos" in problems(sig(lambda a, c=None, b=1, *, d=None: 0), sig(ref))  # reordered
    assert "pos" in problems(sig(lambda a, b=1, c=None, e=None, *, d=None: 0), sig(ref))  # extra meaning
    assert problems(sig(lambda a, b=1, c=None, d=None: 0), sig(ref)) == []  # a keyword also positional
    assert problems(sig(lambda a, b=2, c=None, *, d=None: 0), sig(ref)) == ["default:b"]
    assert problems(sig(lambda *args, **kwargs: 0), sig(ref)) == []
    parsed = _from_doc("zeros", torch.zeros.__doc__)
    assert [p.name for p in parsed][:3] == ["size", "out", "dtype"] and parsed[0].kind == VARPOS
