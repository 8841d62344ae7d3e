"""gpunn.backend.kernel_table: the committed default per op, use_version and the environment override."""

import pytest

from gpunn.backend import kernel_table as KT
from gpunn.backend import kernels as K

OPS = ("softmax_cross_entropy", "sgd_step", "adam_step", "linear_act")


def test_table_shape_and_defaults():
    assert set(KT.VERSIONS) == set(OPS) == set(KT.DEFAULTS)
    for op in OPS:
        assert KT.VERSIONS[op] == tuple(sorted(KT.VERSIONS[op])) and 1 in KT.VERSIONS[op]
        assert KT.DEFAULTS[op] in KT.VERSIONS[op]
        assert KT.version(op) == KT.DEFAULTS[op]
    # promoted by the H200 bench of 2026-11-30 (bench/results/gpu-20261130-nvidia-h200.md)
    assert KT.DEFAULTS == {"softmax_cross_entropy": 1, "sgd_step": 2, "adam_step": 2, "linear_act": 2}


def test_every_listed_version_exists_in_the_sources():
    # one entry point that only version v defines, per op and version
    probe = {
        ("softmax_cross_entropy", 1): "sce_block_v1_f32",
        ("softmax_cross_entropy", 2): "sce_block_v2_f32",
        ("sgd_step", 1): "sgd_step_v1_f32",
        ("sgd_step", 2): "sgd_step_v2_f32",
        ("adam_step", 1): "adam_step_v1_f32",
        ("adam_step", 2): "adam_step_v2_f32",
        ("linear_act", 1): "linear_act_forward_v1_f32",
        ("linear_act", 2): "gemm_splitk_nt_v2_f32",
    }
    files = {
        "softmax_cross_entropy": "softmax_cross_entropy",
        "sgd_step": "optim",
        "adam_step": "optim",
        "linear_act": "linear_act",
    }
    for op, name in files.items():
        declared = K.declared_entry_points(K.kernel_source(name))
        for v in KT.VERSIONS[op]:
            assert probe[op, v] in declared, f"{op} v{v}: {probe[op, v]} missing from {name}.cu"


def test_use_version_nests_and_restores():
    with KT.use_version("softmax_cross_entropy", 2) as v:
        assert v == 2 and KT.version("softmax_cross_entropy") == 2 and KT.version("adam_step") == 2
        with KT.use_version("softmax_cross_entropy", 1):
            assert KT.version("softmax_cross_entropy") == 1
        assert KT.version("softmax_cross_entropy") == 2
    assert KT.version("softmax_cross_entropy") == 1
    with pytest.raises(RuntimeError), KT.use_version("adam_step", 1):
        raise RuntimeError("boom")
    assert KT.version("adam_step") == 2


@pytest.mark.parametrize(
    "op,v,err,match",
    [
        ("nope", 1, ValueError, "unknown kernel op 'nope'"),
        ("sgd_step", 9, ValueError, r"no kernel version 9; available: \(1, 2\)"),
        ("sgd_step", "2", TypeError, "must be an int"),
        ("sgd_step", True, TypeError, "must be an int"),
    ],
)
def test_use_version_validates(op, v, err, match):
    with pytest.raises(err, match=match), KT.use_version(op, v):
        pass
    assert KT.version("sgd_step") == KT.DEFAULTS["sgd_step"]


def test_environment_override(monkeypatch):
    monkeypatch.setenv(KT.ENV_VAR, "sgd_step=1, softmax_cross_entropy=2")
    assert KT.version("sgd_step") == 1 and KT.version("softmax_cross_entropy") == 2 and KT.version("adam_step") == 2
    with KT.use_version("sgd_step", 2):  # use_version beats the environment
        assert KT.version("sgd_step") == 2
    assert KT.selected() == {"softmax_cross_entropy": 2, "sgd_step": 1, "adam_step": 2, "linear_act": 2}
    for bad, match in (
        ("sgd_step", "expected entries like"),
        ("sgd_step=x", "expected entries like"),
        ("sgd_step=7", "no kernel version 7"),
        ("foo=1", "unknown kernel op"),
    ):
        monkeypatch.setenv(KT.ENV_VAR, bad)
        with pytest.raises(ValueError, match=match):
            KT.version("adam_step")
