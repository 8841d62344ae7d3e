"""docs/pytorch-compat.md's vision section: every `vision.*` name it lists exists in gpunn.vision (the
page's own test checks the `gpunn.*` names, and torchvision is not installed to compare with)."""

import re
from pathlib import Path

import pytest

import gpunn.vision

DOC = Path(__file__).resolve().parents[2] / "docs" / "pytorch-compat.md"
NAMES = sorted(set(re.findall(r"`vision\.((?:[A-Za-z_][A-Za-z0-9_]*\.?)+)`", DOC.read_text())))


def test_the_section_lists_the_issue_names():
    for name in (
        "datasets.MNIST",
        "datasets.FashionMNIST",
        "transforms.Compose",
        "transforms.ToTensor",
        "transforms.Normalize",
        "transforms.Pad",
        "transforms.RandomCrop",
        "transforms.RandomHorizontalFlip",
        "transforms.RandomAffine",
        "transforms.Lambda",
        "models.resnet18",
        "models.resnet152",
        "models.ResNet",
        "models.ResNet18_Weights",
    ):
        assert name in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_every_listed_vision_name_exists(name):
    obj = gpunn.vision
    for part in name.split("."):
        obj = getattr(obj, part)
