"""Which numbered version of each handwritten CUDA kernel the cupy backend launches.

Every op below has numbered versions beside each other in its ``kernels/<file>.cu`` (llm.c style: v1
the first, later ones the candidates a GPU run may promote); each file's header describes them. This
is the one committed table of the default per op: a GPU bench result that shows a later version
faster (and equally correct) updates ``DEFAULTS`` here, nowhere else.

    >>> from gpunn.backend import kernel_table
    >>> kernel_table.version("softmax_cross_entropy")
    1
    >>> with kernel_table.use_version("softmax_cross_entropy", 2):
    ...     kernel_table.version("softmax_cross_entropy")
    2

Selection, strongest first: ``use_version`` (innermost wins; process-wide, not per thread), then the
environment variable ``GPUNN_KERNEL_VERSIONS`` (``"sgd_step=2,linear_act=2"``, read at each launch),
then ``DEFAULTS``. The backend reads ``version(op)`` at every launch, so a change applies to the next
launch. Versions compute the same function: tests/kernels/test_cupy_kernels.py runs every version
against the float64 reference.
"""

from __future__ import annotations

import contextlib
import os

# op -> available versions (what kernels/*.cu defines and the cupy backend can launch)
VERSIONS: dict[str, tuple[int, ...]] = {
    "softmax_cross_entropy": (1, 2),  # v2: pass 1 with 4 independent loads in flight per thread
    "sgd_step": (1, 2),  # v2: 16-byte vector loads/stores, scalar head and tail
    "adam_step": (1, 2),  # v2: 16-byte vector loads/stores, scalar head and tail (Adam and AdamW)
    "linear_act": (1, 2),  # v2: split-K for small GEMMs (too few output tiles to fill the GPU)
}
# op -> the version launched unless told otherwise: v1 until a GPU bench result (bench/results/gpu-*.json)
# shows a later version faster. bench/results/gpu-20261130-nvidia-h200-3.json (H200, min / median us, v1 -> v2;
# the summary and run 4 with these defaults: gpu-20261130-nvidia-h200.md):
# sgd_step 44.5/49.0 -> 39.6/43.0 (199k) and 130.7/160.4 -> 118.8/123.3 (16.8M); adam_step 67.6/72.5 ->
# 61.3/67.7 and 201.5/251.2 -> 168.0/174.2; linear_act even at 2048 and 338/395 -> 271/460 on the MLP layer
# (host-bound noise), but v1's one block per output tile took 23 ms for a conv's weight gradient (16 x 9 over
# K = 156,800) that v2 splits; softmax_cross_entropy v2 was slower (183/228 vs 190/206, 294/318 vs 241/256).
DEFAULTS: dict[str, int] = {
    "softmax_cross_entropy": 1,
    "sgd_step": 2,
    "adam_step": 2,
    "linear_act": 2,
}
ENV_VAR = "GPUNN_KERNEL_VERSIONS"

_overrides: list[tuple[str, int]] = []  # the use_version stack


def _check(op: str, v) -> int:
    if op not in VERSIONS:
        raise ValueError(f"unknown kernel op {op!r}; expected one of {sorted(VERSIONS)}")
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"kernel version for {op!r} must be an int, got {type(v).__name__} {v!r}")
    if v not in VERSIONS[op]:
        raise ValueError(f"{op!r} has no kernel version {v}; available: {VERSIONS[op]}")
    return v


def _from_env() -> dict[str, int]:
    """{op: version} from GPUNN_KERNEL_VERSIONS ("op=v,op=v"); malformed entries raise ValueError."""
    text = os.environ.get(ENV_VAR, "").strip()
    out: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        op, sep, v = item.partition("=")
        op, v = op.strip(), v.strip()
        if not sep or not v.lstrip("-").isdigit():
            raise ValueError(f"{ENV_VAR}: expected entries like 'sgd_step=2', got {item!r}")
        out[op] = _check(op, int(v))
    return out


def version(op: str) -> int:
    """The version of ``op`` the next launch uses."""
    if op not in VERSIONS:
        raise ValueError(f"unknown kernel op {op!r}; expected one of {sorted(VERSIONS)}")
    for o, v in reversed(_overrides):
        if o == op:
            return v
    return _from_env().get(op, DEFAULTS[op])


def state() -> tuple:
    """What ``version`` decides from (the environment variable, the ``use_version`` stack, the defaults):
    equal states select equal versions. Cheap: a captured CUDA graph compares it before each launch."""
    return (os.environ.get(ENV_VAR, ""), tuple(_overrides), tuple(DEFAULTS.items()))


def selected() -> dict[str, int]:
    """{op: version} as the next launches would use them (for bench records)."""
    return {op: version(op) for op in VERSIONS}


@contextlib.contextmanager
def use_version(op: str, v: int):
    """Launch version ``v`` of ``op`` inside the ``with`` block (for this process)."""
    entry = (op, _check(op, v))
    _overrides.append(entry)
    try:
        yield v
    finally:
        # remove this very entry (blocks normally nest; tolerate out-of-order exits of generators)
        for i in range(len(_overrides) - 1, -1, -1):
            if _overrides[i] is entry:
                del _overrides[i]
                break


# the defaults must name existing versions (a bad edit of the table fails at import)
if set(DEFAULTS) != set(VERSIONS):
    raise RuntimeError("kernel_table: DEFAULTS and VERSIONS must list the same ops")
for _op, _v in DEFAULTS.items():
    _check(_op, _v)
