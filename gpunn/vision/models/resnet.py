"""torchvision's ResNets: ``ResNet`` over ``BasicBlock`` (resnet18/34) or ``Bottleneck`` (resnet50/101/152) blocks.

The modules, their names and registration order, parameter shapes (so the state_dict keys) and the initialisation
are torchvision's, so a checkpoint saved from a torchvision ResNet loads, and a script's surgery on
``conv1`` / ``fc`` / ``list(model.children())`` sees the same modules:

    conv1 (7x7, stride 2) -> bn1 -> relu -> maxpool (3x3, stride 2) -> layer1 .. layer4 -> avgpool -> flatten -> fc

layer k is a Sequential of blocks; its first block changes the stride (2 in layers 2-4, unless that layer's
stride is replaced by dilation) and carries ``downsample`` = Sequential(1x1 conv, norm) when the stride or the
channel count changes. A block computes relu(F(x) + shortcut(x)).

>>> models.resnet18(num_classes=10)(gpunn.randn(2, 3, 64, 64)).shape
(2, 10)
"""

from __future__ import annotations

import enum
import hashlib
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import gpunn
from gpunn import nn

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "Weights", "WeightsEnum", "resnet18", "resnet34", "resnet50"]
__all__ += ["resnet101", "resnet152"]
__all__ += ["ResNet18_Weights", "ResNet34_Weights", "ResNet50_Weights", "ResNet101_Weights", "ResNet152_Weights"]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    """A bias-free 3x3 convolution whose padding keeps the size at stride 1 (padding = dilation)."""
    return nn.Conv2d(
        in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation, groups=groups, bias=False,
        dilation=dilation,
    )  # fmt: skip


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """A bias-free 1x1 convolution (a per-pixel linear map of the channels, optionally strided)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)) with two 3x3 convolutions (conv1 strided);
    shortcut = ``downsample`` or the identity. Output channels = planes (``expansion`` 1).
    Only groups=1, base_width=64 and dilation=1, as torchvision."""

    expansion: int = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, groups: int = 1,
        base_width: int = 64, dilation: int = 1, norm_layer=None,
    ) -> None:  # fmt: skip
        super().__init__()
        norm_layer = nn.BatchNorm2d if norm_layer is None else norm_layer
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        if dilation > 1:
            raise NotImplementedError("Dilation > 1 not supported in BasicBlock")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x)): 1x1 down to
    width = int(planes * base_width / 64) * groups, a 3x3 (strided, grouped, dilated) at that width, 1x1 up to
    planes * 4 (``expansion``). The stride sits on the 3x3, as torchvision's "ResNet V1.5"."""

    expansion: int = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, groups: int = 1,
        base_width: int = 64, dilation: int = 1, norm_layer=None,
    ) -> None:  # fmt: skip
        super().__init__()
        norm_layer = nn.BatchNorm2d if norm_layer is None else norm_layer
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride, groups, dilation)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """A ResNet of ``block`` (BasicBlock or Bottleneck) with ``layers[k]`` blocks in stage k+1, for
    (N, 3, H, W) images -> (N, num_classes) logits (any H, W >= 1: the pooling before ``fc`` is adaptive).

    ``zero_init_residual``: each block's last norm starts with weight 0 (the block starts as the identity).
    ``groups`` / ``width_per_group``: the 3x3 convolutions of Bottleneck blocks (ResNeXt, wide ResNets).
    ``replace_stride_with_dilation``: three bools, for layers 2-4: keep the resolution and dilate instead.
    ``norm_layer``: a callable channels -> norm module (default ``nn.BatchNorm2d``).
    Convolutions start from kaiming_normal_(mode="fan_out", nonlinearity="relu"), norms from weight 1, bias 0,
    ``fc`` from Linear's default, as torchvision."""

    def __init__(
        self, block: type[BasicBlock | Bottleneck], layers: list[int], num_classes: int = 1000,
        zero_init_residual: bool = False, groups: int = 1, width_per_group: int = 64,
        replace_stride_with_dilation: list[bool] | None = None, norm_layer=None,
    ) -> None:  # fmt: skip
        super().__init__()
        self._norm_layer = nn.BatchNorm2d if norm_layer is None else norm_layer
        self.inplanes = 64
        self.dilation = 1
        if replace_stride_with_dilation is None:
            replace_stride_with_dilation = [False, False, False]
        if len(replace_stride_with_dilation) != 3:
            raise ValueError(
                f"replace_stride_with_dilation should be None or a 3-element tuple, got {replace_stride_with_dilation}"
            )
        if len(layers) != 4:
            raise ValueError(f"ResNet: layers must give the number of blocks of the 4 stages, got {layers}")
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = self._norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2, dilate=replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2, dilate=replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2, dilate=replace_stride_with_dilation[2])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                last_norm = m.bn3 if isinstance(m, Bottleneck) else m.bn2 if isinstance(m, BasicBlock) else None
                if last_norm is not None and last_norm.weight is not None:
                    nn.init.constant_(last_norm.weight, 0)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:
        """One stage: ``blocks`` blocks of ``planes`` (x expansion) output channels; the first one strides (or,
        with ``dilate``, the stage's dilation grows by the stride instead) and carries the projection shortcut."""
        norm_layer = self._norm_layer
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride), norm_layer(planes * block.expansion)
            )
        layers = [
            block(
                self.inplanes, planes, stride, downsample, self.groups, self.base_width, previous_dilation, norm_layer
            )
        ]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):  # the stage's dilation from the second block on
            kwargs = {"groups": self.groups, "base_width": self.base_width, "dilation": self.dilation}
            layers.append(block(self.inplanes, planes, norm_layer=norm_layer, **kwargs))
        return nn.Sequential(*layers)

    def _forward_impl(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = gpunn.flatten(self.avgpool(x), 1)
        return self.fc(x)

    def forward(self, x):
        return self._forward_impl(x)


# -- pretrained weights: named as torchvision's, never downloaded --------------------------------------------------


@dataclass(eq=True)
class Weights:
    """What a weights enum member describes: the checkpoint's ``url`` and its ``meta`` data."""

    url: str
    transforms: Any = None
    meta: dict = field(default_factory=dict)


def _torch_hub_checkpoints() -> str:
    """Where torch.hub keeps downloaded checkpoints: $TORCH_HOME/hub/checkpoints (TORCH_HOME defaults to
    $XDG_CACHE_HOME/torch, or ~/.cache/torch)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "torch"
    )
    return os.path.join(home, "hub", "checkpoints")


def load_cached_state_dict(url: str, check_hash: bool = True) -> dict:
    """The state dict of ``url``'s checkpoint from torch.hub's cache directory, as torch.hub would find it there;
    gpunn never downloads it. ``check_hash``: the file's sha256 must start with the hex digits after the last '-'
    of its name (torchvision's naming). Raises RuntimeError naming the URL and the path when the file is missing
    or its hash differs."""
    filename = os.path.basename(url)
    path = os.path.join(_torch_hub_checkpoints(), filename)
    if not os.path.isfile(path):
        raise RuntimeError(
            f"pretrained weights are not available: gpunn does not download them (no network access), and "
            f"{path} does not exist. Download {url} on a machine with network access and put it there "
            f"(TORCH_HOME sets the directory), or build the model with weights=None and load a checkpoint you "
            f"have with model.load_state_dict(gpunn.load(path))."
        )
    if check_hash:
        expected = os.path.splitext(filename)[0].rsplit("-", 1)[-1]
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        if not digest.hexdigest().startswith(expected):
            raise RuntimeError(
                f'invalid hash value for {path}: its sha256 is {digest.hexdigest()}, expected one starting with "'
                f'{expected}" (a truncated or different file)'
            )
    return gpunn.load(path)


class WeightsEnum(enum.Enum):
    """torchvision's weights enum: each member is one published checkpoint of a model; ``DEFAULT`` is the best."""

    @classmethod
    def verify(cls, obj):
        """``obj`` as a member of this enum: None, a member, or its name as a string (``"DEFAULT"``,
        ``"IMAGENET1K_V1"``, ``"ResNet18_Weights.IMAGENET1K_V1"``). Raises TypeError for another model's weights
        or another type, ValueError for an unknown name."""
        if obj is None or isinstance(obj, cls):
            return obj
        if isinstance(obj, str):
            name = obj.replace(cls.__name__ + ".", "")
            if name not in cls.__members__:
                raise ValueError(f"{cls.__name__} has no weights {obj!r}; it has {', '.join(cls.__members__)}")
            return cls[name]
        raise TypeError(f"Invalid Weight class provided; expected {cls.__name__} but received {type(obj).__name__}.")

    def get_state_dict(self, progress: bool = True, check_hash: bool = True, *args, **kwargs) -> dict:
        """The checkpoint's state dict, from torch.hub's cache directory only (see ``load_cached_state_dict``)."""
        return load_cached_state_dict(self.url, check_hash=check_hash)

    def __repr__(self) -> str:
        return f"{type(self).__name__}.{self._name_}"

    @property
    def url(self) -> str:
        return self.value.url

    @property
    def meta(self) -> dict:
        return self.value.meta

    @property
    def transforms(self):
        def unsupported(*args, **kwargs):
            raise NotImplementedError(
                f"{self!r}.transforms: torchvision's ImageClassification preset (resize, center crop, normalize) "
                "is not in gpunn.vision"
            )

        return unsupported


def _imagenet(file: str, num_params: int) -> Weights:
    return Weights(
        url=f"https://download.pytorch.org/models/{file}", meta={"num_params": num_params, "min_size": (1, 1)}
    )


class ResNet18_Weights(WeightsEnum):  # noqa: N801 (torchvision's name)
    IMAGENET1K_V1 = _imagenet("resnet18-f37072fd.pth", 11689512)
    DEFAULT = IMAGENET1K_V1


class ResNet34_Weights(WeightsEnum):  # noqa: N801
    IMAGENET1K_V1 = _imagenet("resnet34-b627a593.pth", 21797672)
    DEFAULT = IMAGENET1K_V1


class ResNet50_Weights(WeightsEnum):  # noqa: N801
    IMAGENET1K_V1 = _imagenet("resnet50-0676ba61.pth", 25557032)
    IMAGENET1K_V2 = _imagenet("resnet50-11ad3fa6.pth", 25557032)
    DEFAULT = IMAGENET1K_V2


class ResNet101_Weights(WeightsEnum):  # noqa: N801
    IMAGENET1K_V1 = _imagenet("resnet101-63fe2227.pth", 44549160)
    IMAGENET1K_V2 = _imagenet("resnet101-cd907fc2.pth", 44549160)
    DEFAULT = IMAGENET1K_V2


class ResNet152_Weights(WeightsEnum):  # noqa: N801
    IMAGENET1K_V1 = _imagenet("resnet152-394f9c45.pth", 60192808)
    IMAGENET1K_V2 = _imagenet("resnet152-f82ba261.pth", 60192808)
    DEFAULT = IMAGENET1K_V2


_UNSET = object()


def _legacy_weights(weights_enum, args: tuple, weights, kwargs: dict):
    """The ``weights`` a builder call means, with torchvision's deprecated spellings: positional arguments
    (weights, progress), ``pretrained=True/False`` and ``weights=True/False`` (True: the enum's IMAGENET1K_V1,
    False: None), each with torchvision's UserWarning. Returns (weights or a bool's meaning, progress or _UNSET)."""
    if len(args) > 2:
        raise TypeError(f"at most 2 positional arguments (weights, progress), got {len(args)}")
    progress = _UNSET
    if args:
        names = ("weights", "progress")[: len(args)]
        if weights is not None:
            raise TypeError(f"got multiple values for {', '.join(names)}")
        warnings.warn(
            f"Using {', '.join(repr(n) for n in names)} as positional parameter(s) is deprecated since 0.13 and may be "
            f"removed in the future. Please use keyword parameter(s) instead.",
            UserWarning,
            stacklevel=4,
        )
        weights = args[0]
        if len(args) == 2:
            progress = args[1]
    legacy = None  # the bool given in place of a weights enum, if any
    if "pretrained" in kwargs:
        if weights is not None:
            raise TypeError("give either weights= or the deprecated pretrained=, not both")
        legacy = kwargs.pop("pretrained")
        warnings.warn(
            "The parameter 'pretrained' is deprecated since 0.13 and may be removed in the future, please use "
            "'weights' instead.",
            UserWarning,
            stacklevel=4,
        )
    elif weights is not None and not isinstance(weights, (str, WeightsEnum)):
        legacy, weights = weights, None
    if legacy is None:
        return weights, progress
    meaning = weights_enum.IMAGENET1K_V1 if legacy else None
    msg = (
        "Arguments other than a weight enum or `None` for 'weights' are deprecated since 0.13 and may be removed in "
        f"the future. The current behavior is equivalent to passing `weights={meaning!r}`."
    )
    if legacy:
        msg += f" You can also use `weights={weights_enum.__name__}.DEFAULT` to get the most up-to-date weights."
    warnings.warn(msg, UserWarning, stacklevel=4)
    return meaning, progress


def _resnet(block, layers, weights_enum, args, weights, progress, kwargs) -> ResNet:
    weights, positional_progress = _legacy_weights(weights_enum, args, weights, kwargs)
    progress = progress if positional_progress is _UNSET else positional_progress
    weights = weights_enum.verify(weights)
    state = None
    if weights is not None:
        num_classes = kwargs.setdefault("num_classes", 1000)  # ImageNet's classes, as the checkpoint's fc
        if num_classes != 1000:
            raise ValueError(f"The parameter 'num_classes' expected value 1000 but got {num_classes} instead.")
        state = weights.get_state_dict(progress=progress, check_hash=True)  # raises unless it is in the cache
    model = ResNet(block, layers, **kwargs)
    if state is not None:
        model.load_state_dict(state)
    return model


def resnet18(*args, weights=None, progress: bool = True, **kwargs) -> ResNet:
    """ResNet-18 (BasicBlock, [2, 2, 2, 2]; 11,689,512 parameters with 1000 classes). ``weights``: None (random
    init) or a ``ResNet18_Weights``, read from torch.hub's cache only; ``**kwargs`` go to ``ResNet``."""
    return _resnet(BasicBlock, [2, 2, 2, 2], ResNet18_Weights, args, weights, progress, kwargs)


def resnet34(*args, weights=None, progress: bool = True, **kwargs) -> ResNet:
    """ResNet-34 (BasicBlock, [3, 4, 6, 3]; 21,797,672 parameters). See ``resnet18``."""
    return _resnet(BasicBlock, [3, 4, 6, 3], ResNet34_Weights, args, weights, progress, kwargs)


def resnet50(*args, weights=None, progress: bool = True, **kwargs) -> ResNet:
    """ResNet-50 (Bottleneck, [3, 4, 6, 3]; 25,557,032 parameters). See ``resnet18``."""
    return _resnet(Bottleneck, [3, 4, 6, 3], ResNet50_Weights, args, weights, progress, kwargs)


def resnet101(*args, weights=None, progress: bool = True, **kwargs) -> ResNet:
    """ResNet-101 (Bottleneck, [3, 4, 23, 3]; 44,549,160 parameters). See ``resnet18``."""
    return _resnet(Bottleneck, [3, 4, 23, 3], ResNet101_Weights, args, weights, progress, kwargs)


def resnet152(*args, weights=None, progress: bool = True, **kwargs) -> ResNet:
    """ResNet-152 (Bottleneck, [3, 8, 36, 3]; 60,192,808 parameters). See ``resnet18``."""
    return _resnet(Bottleneck, [3, 8, 36, 3], ResNet152_Weights, args, weights, progress, kwargs)
