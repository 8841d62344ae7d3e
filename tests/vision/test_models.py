"""gpunn.vision.models' ResNets against torchvision's architecture, written here as plain torch.nn code (torchvision
is not installed): the same state_dict keys, shapes and order, the same outputs, running statistics and gradients
with the torch model's weights loaded (relative error against float64), torchvision's initialisation and
constructor options, the weights enums (never a download), and the surgery pytorch/examples' siamese_network does."""

from __future__ import annotations

import copy
import hashlib
import math
import warnings

import numpy as np
import pytest

import gpunn
from gpunn import nn
from gpunn.vision import models
from tests.helpers import rel_err, torch_or_skip

# float32 through 20-50 layers with batch norm over few values (layer4 sees 2x2 pixels per image at 64x64) against
# float64: the error grows with depth, so the bound is looser than one op's 2e-5.
TOL = 2e-4


def torch_resnet(torch, bottleneck: bool, layers, num_classes=1000, groups=1, width_per_group=64, dilate=None):
    """torchvision's ResNet as plain torch.nn: the module names, order and shapes of its state_dict, the stride on
    the 3x3 convolution, a 1x1 projection shortcut when the stride or the width changes, dilation replacing the
    stride of layers 2-4 where ``dilate`` says (the first block of a stage keeps the previous dilation)."""
    tnn = torch.nn
    expansion = 4 if bottleneck else 1

    def conv(cin, cout, k, stride=1, dilation=1, groups=1):
        return tnn.Conv2d(cin, cout, k, stride, padding=dilation * (k // 2), dilation=dilation, groups=groups,
                          bias=False)  # fmt: skip

    class Block(tnn.Module):
        def __init__(self, cin, planes, stride, dilation, shortcut):
            super().__init__()
            if bottleneck:
                width = int(planes * width_per_group / 64) * groups
                self.conv1, self.bn1 = conv(cin, width, 1), tnn.BatchNorm2d(width)
                self.conv2, self.bn2 = conv(width, width, 3, stride, dilation, groups), tnn.BatchNorm2d(width)
                self.conv3, self.bn3 = conv(width, planes * 4, 1), tnn.BatchNorm2d(planes * 4)
                self.relu = tnn.ReLU(inplace=True)
            else:
                self.conv1, self.bn1 = conv(cin, planes, 3, stride), tnn.BatchNorm2d(planes)
                self.relu = tnn.ReLU(inplace=True)
                self.conv2, self.bn2 = conv(planes, planes, 3), tnn.BatchNorm2d(planes)
            self.downsample = shortcut

        def forward(self, x):
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            if bottleneck:
                y = self.bn3(self.conv3(self.relu(y)))
            return self.relu(y + (x if self.downsample is None else self.downsample(x)))

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False), tnn.BatchNorm2d(64)
            self.relu, self.maxpool = tnn.ReLU(inplace=True), tnn.MaxPool2d(3, 2, 1)
            cin, dilation = 64, 1
            for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
                stride, first_dilation = (1 if i == 0 else 2), dilation
                if i > 0 and dilate and dilate[i - 1]:
                    dilation, stride = dilation * 2, 1
                shortcut = None
                if stride != 1 or cin != planes * expansion:
                    shortcut = tnn.Sequential(conv(cin, planes * expansion, 1, stride),
                                              tnn.BatchNorm2d(planes * expansion))  # fmt: skip
                blocks = [Block(cin, planes, stride, first_dilation, shortcut)]
                cin = planes * expansion
                blocks += [Block(cin, planes, 1, dilation, None) for _ in range(n - 1)]
                setattr(self, f"layer{i + 1}", tnn.Sequential(*blocks))
            self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
            self.fc = tnn.Linear(512 * expansion, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return Net()


CONFIGS = {
    "resnet18": (False, [2, 2, 2, 2], {}),
    "resnet50": (True, [3, 4, 6, 3], {}),
    "grouped-dilated": (True, [1, 2, 2, 2], {"groups": 2, "width_per_group": 16, "dilate": [False, True, True]}),
}


def _pair(name: str, num_classes: int = 1000, seed: int = 0):
    """gpunn's model and the torch reference for one configuration."""
    torch = torch_or_skip()
    torch.manual_seed(seed)  # the reference's weights, whatever ran before
    bottleneck, layers, opts = CONFIGS[name]
    theirs = torch_resnet(torch, bottleneck, layers, num_classes, **opts)
    if name.startswith("resnet"):
        ours = getattr(models, name)(num_classes=num_classes)
    else:
        ours = models.ResNet(models.Bottleneck, layers, num_classes, groups=opts["groups"],
                             width_per_group=opts["width_per_group"],
                             replace_stride_with_dilation=opts["dilate"])  # fmt: skip
    return torch, ours, theirs


def _shapes(state):
    return [(k, tuple(v.shape)) for k, v in state.items()]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_state_dict_keys_shapes_and_order_are_torchvisions(name):
    _, ours, theirs = _pair(name)
    assert _shapes(ours.state_dict()) == _shapes(theirs.state_dict())
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]
    assert [type(m).__name__ for m in ours.modules()][1:] == [
        {"Block": "Bottleneck" if CONFIGS[name][0] else "BasicBlock"}.get(type(m).__name__, type(m).__name__)
        for m in theirs.modules()
    ][1:]
    block = "Bottleneck" if CONFIGS[name][0] else "BasicBlock"
    assert repr(ours) == repr(theirs).replace("Block(", block + "(").replace("Net(", "ResNet(", 1)  # every option


@pytest.mark.parametrize(
    "builder, count",
    [("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032), ("resnet101", 44_549_160),
     ("resnet152", 60_192_808)],
)  # fmt: skip
def test_parameter_counts_are_torchvisions(builder, count):
    model = getattr(models, builder)()
    assert sum(p.numel() for p in model.parameters()) == count
    enum = getattr(models, builder.replace("resnet", "ResNet") + "_Weights")
    assert all(w.meta["num_params"] == count for w in enum)


def _randomized(torch, theirs, rng):
    """Non-trivial batch-norm parameters and running statistics (fresh ones are 1, 0, 0, 1), float32-rounded values
    in a float64 model, and the same values for gpunn as NumPy arrays."""
    with torch.no_grad():
        for m in theirs.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, c)))
                m.bias.copy_(torch.from_numpy(rng.normal(0, 0.2, c)))
                m.running_mean.copy_(torch.from_numpy(rng.normal(0, 0.2, c)))
                m.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, c)))
        state = {k: v.numpy().astype(np.float32) if v.dtype.is_floating_point else v.numpy()
                 for k, v in theirs.state_dict().items()}  # fmt: skip
    theirs.double().load_state_dict({k: torch.from_numpy(v.astype(np.float64)) if v.dtype == np.float32 else
                                     torch.from_numpy(v) for k, v in state.items()})  # fmt: skip
    return state


def _one_channel(torch, ours, theirs):
    """The siamese script's first surgery on both: conv1 replaced by a 1-channel 7x7 stride-2 convolution."""
    ours.conv1 = nn.Conv2d(1, 64, kernel_size=(7, 7), stride=(2, 2), padding=(3, 3), bias=False)
    theirs.conv1 = torch.nn.Conv2d(1, 64, kernel_size=(7, 7), stride=(2, 2), padding=(3, 3), bias=False)


def _torch_run(torch, model, x, w):
    """model(x), d(sum(w * model(x)))/d(x and each parameter), the state after the forward, all as NumPy."""
    xt = torch.from_numpy(x).requires_grad_(True)
    out = model(xt)
    (out * torch.from_numpy(w.astype(x.dtype))).sum().backward()
    grads = {"input": xt.grad.numpy()} | {k: p.grad.numpy() for k, p in model.named_parameters()}
    return out.detach().numpy(), grads, {k: v.numpy() for k, v in model.state_dict().items()}


def _gpunn_run(model, x, w):
    xg = gpunn.tensor(x, requires_grad=True)
    out = model(xg)
    (out * gpunn.tensor(w.astype(x.dtype))).sum().backward()
    grads = {"input": xg.grad.numpy()} | {k: p.grad.numpy() for k, p in model.named_parameters()}
    return out.detach().numpy(), grads, {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("train", [True, False])
def test_forward_running_stats_and_gradients_match_torch(name, channels, train):
    """gpunn in float64 equals the float64 torch model to rounding: the architecture and every op's semantics,
    gradients included. gpunn in float32 is within TOL of it: the outputs and running statistics, and in eval mode
    the gradients. Training-mode gradients through a whole float32 network are not comparable at batch 2: relu and
    batch-norm decisions on values within float32's forward error of a kink move the early layers' gradients by
    0.5-7%, PyTorch's float32 as much as gpunn's (PyTorch's float32 block fed gpunn's float32 activation and gpunn's
    block fed PyTorch's give each other's error exactly); test_each_block_in_float32_training_mode checks those
    gradients block by block instead."""
    rng = np.random.default_rng([len(name), channels, train])
    torch, ours, theirs = _pair(name, num_classes=10)
    if channels == 1:
        _one_channel(torch, ours, theirs)
    state = _randomized(torch, theirs, rng)
    x = rng.standard_normal((2, channels, 64, 64)).astype(np.float32)
    w = rng.standard_normal((2, 10))
    ours.load_state_dict(state)
    for m in (ours, theirs):
        m.train(train)
    ref = _torch_run(torch, theirs, x.astype(np.float64), w)
    ours64 = copy.deepcopy(ours).double()
    out32 = _gpunn_run(ours, x, w)
    out64 = _gpunn_run(ours64, x.astype(np.float64), w)
    assert out64[0].shape == out32[0].shape == ref[0].shape == (2, 10)
    assert rel_err(out64[0], ref[0]) < 1e-10
    assert rel_err(out32[0], ref[0]) < TOL
    assert list(out32[1]) == list(ref[1])  # every parameter got a gradient, as in torch
    for k, g in ref[1].items():
        assert rel_err(out64[1][k], g) < 1e-10, k
        if not train:
            assert rel_err(out32[1][k], g) < TOL, k
    for k, v in ref[2].items():  # running statistics moved (train) or stayed (eval) alike
        if "running" in k:
            assert rel_err(out64[2][k], v) < 1e-10 and rel_err(out32[2][k], v) < 1e-5, k
        elif "num_batches_tracked" in k:
            assert int(out64[2][k]) == int(out32[2][k]) == int(v) == int(train), k


def _stages(model, flatten):
    """The model as a chain of stages, each a function of the previous one's output: the stem, every block, the
    head. Batch norm's statistics depend on a stage's own input only, so each stage can run alone."""
    stem = [lambda x: model.maxpool(model.relu(model.bn1(model.conv1(x))))]
    blocks = [block for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for block in layer]
    return stem + blocks + [lambda x: model.fc(flatten(model.avgpool(x), 1))]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_each_block_in_float32_training_mode_matches_float64(name):
    """Training mode, float32, one stage at a time: each stage gets the float64 model's activation (rounded to
    float32) and its float64 upstream gradient; its output is within TOL of the float64 torch stage on the same
    input, its input and parameter gradients within TOL plus PyTorch's own float32 error on that stage (a relu or
    batch-norm decision that float32 rounding changes costs both alike: up to 1% on some blocks, where gpunn's error
    equals PyTorch's to three digits)."""
    rng = np.random.default_rng([len(name), 7])
    torch, ours, theirs = _pair(name, num_classes=10)
    ours.load_state_dict(_randomized(torch, theirs, rng))
    x = rng.standard_normal((2, 3, 64, 64)).astype(np.float32)
    acts = [torch.from_numpy(x.astype(np.float64))]
    for stage in _stages(theirs, torch.flatten):  # the float64 model, for the inputs and upstream gradients
        acts.append(stage(acts[-1]))
        acts[-1].retain_grad()
    (acts[-1] * torch.from_numpy(rng.standard_normal((2, 10)))).sum().backward()
    refs = {np.float64: copy.deepcopy(theirs), np.float32: copy.deepcopy(theirs).float()}
    grads = {}
    for i, ours_stage in enumerate(_stages(ours, gpunn.flatten)):
        xin = acts[i].detach().numpy().astype(np.float32)
        gout = acts[i + 1].grad.numpy()
        for dtype, model in refs.items():
            model.zero_grad()
            xt = torch.from_numpy(xin.astype(dtype)).requires_grad_(True)
            ref = _stages(model, torch.flatten)[i](xt)
            (ref * torch.from_numpy(gout.astype(dtype))).sum().backward()
            grads[dtype] = {"input": xt.grad.numpy()} | {k: p.grad.numpy() for k, p in model.named_parameters()
                                                          if p.grad is not None}  # fmt: skip
            if dtype == np.float64:
                expected = ref.detach().numpy()
        xg = gpunn.tensor(xin, requires_grad=True)
        ours.zero_grad()
        out = ours_stage(xg)
        (out * gpunn.tensor(gout.astype(np.float32))).sum().backward()
        assert rel_err(out.detach(), expected) < TOL, i
        mine = {"input": xg.grad.numpy()} | {
            k: p.grad.numpy() for k, p in ours.named_parameters() if p.grad is not None
        }
        assert list(mine) == list(grads[np.float64]), i
        for k, g in grads[np.float64].items():
            assert rel_err(mine[k], g) < TOL + rel_err(grads[np.float32][k], g), (i, k)


def test_a_pytorch_checkpoint_loads_from_torch_hubs_cache(tmp_path, monkeypatch):
    """weights= reads the checkpoint torch.hub would have cached (here one torch.save wrote, named by its sha256 as
    torchvision's files are); a file whose hash does not match its name is refused."""
    torch, ours, theirs = _pair("resnet18")
    rng = np.random.default_rng(3)
    _randomized(torch, theirs, rng)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    raw = cache / "raw.pth"
    torch.save(theirs.float().state_dict(), raw)
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()[:8]
    raw.rename(cache / f"resnet18-{digest}.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(models.ResNet18_Weights.IMAGENET1K_V1.value, "url", f"https://x/resnet18-{digest}.pth")
    model = models.resnet18(weights=models.ResNet18_Weights.DEFAULT)
    for k, v in theirs.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[k].numpy(), v.numpy(), err_msg=k)
    (cache / f"resnet18-{digest}.pth").rename(cache / "resnet18-00000000.pth")
    monkeypatch.setattr(models.ResNet18_Weights.IMAGENET1K_V1.value, "url", "https://x/resnet18-00000000.pth")
    with pytest.raises(RuntimeError, match="invalid hash value"):
        models.resnet18(weights="DEFAULT")


def test_pretrained_weights_are_never_downloaded_nor_replaced_by_random_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache
    for call in (
        lambda: models.resnet18(weights=models.ResNet18_Weights.IMAGENET1K_V1),
        lambda: models.resnet50(weights="IMAGENET1K_V2"),
        lambda: models.resnet34(weights="ResNet34_Weights.DEFAULT"),
        lambda: models.resnet101(pretrained=True),
        lambda: models.resnet152(True),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(RuntimeError, match="does not download") as info:
                call()
        assert "https://download.pytorch.org/models/resnet" in str(info.value)
        assert str(tmp_path) in str(info.value)


def test_weights_enums_and_their_errors():
    W = models.ResNet50_Weights
    assert W.DEFAULT is W.IMAGENET1K_V2 and W.verify("IMAGENET1K_V1") is W.IMAGENET1K_V1
    assert W.verify(None) is None and repr(W.DEFAULT) == "ResNet50_Weights.IMAGENET1K_V2"
    assert models.ResNet18_Weights.DEFAULT is models.ResNet18_Weights.IMAGENET1K_V1
    assert W.IMAGENET1K_V1.url.endswith("resnet50-0676ba61.pth")
    with pytest.raises(TypeError, match="expected ResNet18_Weights but received ResNet50_Weights"):
        models.resnet18(weights=W.DEFAULT)
    with pytest.raises(ValueError, match="has no weights 'IMAGENET22K'"):
        models.resnet50(weights="IMAGENET22K")
    with pytest.raises(ValueError, match="'num_classes' expected value 1000 but got 10"):
        models.resnet50(weights=W.DEFAULT, num_classes=10)
    with pytest.raises(NotImplementedError, match="ImageClassification"):
        W.DEFAULT.transforms()


def test_deprecated_pretrained_false_warns_as_torchvision_and_builds_a_random_model():
    with pytest.warns(UserWarning) as record:
        model = models.resnet18(pretrained=False, num_classes=7)
    messages = [str(r.message) for r in record]
    assert any("The parameter 'pretrained' is deprecated" in m for m in messages)
    assert any("equivalent to passing `weights=None`" in m for m in messages)
    assert model.fc.out_features == 7
    with pytest.warns(UserWarning) as record:
        models.resnet18(False, num_classes=3)
    assert [str(r.message).split(" ")[1] for r in record] == ["'weights'", "other"]  # positional, then a bool
    with pytest.raises(TypeError, match="unexpected keyword argument 'pretraind'"):
        models.resnet18(pretraind=False)
    with pytest.raises(TypeError, match="not both"):
        models.resnet18(weights="DEFAULT", pretrained=True)


def _std(t) -> float:
    return float(np.std(t.detach().numpy()))


def test_initialisation_is_torchvisions():
    gpunn.manual_seed(0)
    model = models.resnet50(num_classes=10)
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):  # kaiming_normal_(mode="fan_out", nonlinearity="relu")
            o, _, kh, kw = m.weight.shape
            expected = math.sqrt(2.0 / (o * kh * kw))
            assert abs(_std(m.weight) / expected - 1) < (0.1 if m.weight.numel() > 4000 else 0.5), name
            assert abs(float(m.weight.detach().numpy().mean())) < 0.2 * expected, name
        elif isinstance(m, nn.BatchNorm2d):
            assert np.all(m.weight.detach().numpy() == 1) and np.all(m.bias.detach().numpy() == 0), name
    bound = 1 / math.sqrt(2048)  # Linear's default
    assert np.abs(model.fc.weight.detach().numpy()).max() <= bound and _std(model.fc.weight) > 0.5 * bound / 3**0.5
    assert np.abs(model.fc.bias.detach().numpy()).max() <= bound


@pytest.mark.parametrize("builder, last", [("resnet18", "bn2"), ("resnet50", "bn3")])
def test_zero_init_residual_zeroes_each_blocks_last_norm(builder, last):
    model = getattr(models, builder)(zero_init_residual=True)
    for name, m in model.named_modules():
        if isinstance(m, (models.BasicBlock, models.Bottleneck)):
            assert np.all(getattr(m, last).weight.detach().numpy() == 0), name
            assert np.all(m.bn1.weight.detach().numpy() == 1), name
    assert np.all(model.bn1.weight.detach().numpy() == 1)
    x = gpunn.randn(2, 3, 32, 32)
    model.eval()
    # every block starts as relu(shortcut(x)): one without a projection passes its (nonnegative) input through
    with gpunn.no_grad():
        h = model.layer1[0](model.maxpool(model.relu(model.bn1(model.conv1(x)))))
        assert model.layer1[1].downsample is None and np.any(h.numpy() > 0)
        np.testing.assert_array_equal(model.layer1[1](h).numpy(), h.numpy())


def test_constructor_options_and_their_errors():
    with pytest.raises(ValueError, match="BasicBlock only supports groups=1 and base_width=64"):
        models.resnet18(groups=2)
    with pytest.raises(NotImplementedError, match="Dilation > 1 not supported in BasicBlock"):
        models.resnet34(replace_stride_with_dilation=[False, False, True])
    with pytest.raises(ValueError, match="3-element"):
        models.resnet50(replace_stride_with_dilation=[True, True])
    model = models.resnet50(replace_stride_with_dilation=[False, True, True])  # stride 8 overall
    assert model.layer4[0].conv2.dilation == (2, 2) and model.layer4[1].conv2.dilation == (4, 4)
    assert model.layer4[0].downsample[0].stride == (1, 1)
    wide = models.resnet50(width_per_group=128)  # wide_resnet50_2's shape
    assert wide.layer1[0].conv1.weight.shape == (128, 64, 1, 1)
    assert sum(p.numel() for p in wide.parameters()) == 68_883_240
    gn = models.ResNet(models.BasicBlock, [1, 1, 1, 1], num_classes=4, norm_layer=lambda c: nn.GroupNorm(8, c))
    assert isinstance(gn.layer2[0].downsample[1], nn.GroupNorm)
    assert np.all(gn.layer2[0].bn1.weight.detach().numpy() == 1)
    assert gn(gpunn.randn(2, 3, 40, 24)).shape == (2, 4)
    assert models.resnet18().eval()(gpunn.randn(1, 3, 1, 1)).shape == (1, 1000)  # adaptive pooling: any size


def test_siamese_networks_surgery():
    """pytorch/examples' siamese_network: a 1-channel conv1, fc.in_features read, the model without fc as a
    Sequential of its children, then init applied; the cut model gives fc's input."""
    gpunn.manual_seed(1)
    resnet = models.resnet18(weights=None)
    resnet.conv1 = nn.Conv2d(1, 64, kernel_size=(7, 7), stride=(2, 2), padding=(3, 3), bias=False)
    assert resnet.fc.in_features == 512
    children = list(resnet.children())
    assert [type(c).__name__ for c in children] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Sequential",
                                                    "Sequential", "Sequential", "Sequential", "AdaptiveAvgPool2d",
                                                    "Linear"]  # fmt: skip
    features = nn.Sequential(*children[:-1])
    index = {name: str(i) for i, (name, _) in enumerate(resnet.named_children())}
    expected = [index[k.split(".")[0]] + k[k.index(".") :] for k in resnet.state_dict() if not k.startswith("fc.")]
    assert list(features.state_dict()) == expected
    resnet.eval()
    x = gpunn.rand(3, 1, 28, 28)
    y = features(x)
    assert y.shape == (3, 512, 1, 1)
    np.testing.assert_allclose(resnet.fc(y.view(3, -1)).detach().numpy(), resnet(x).detach().numpy(), rtol=1e-6,
                               atol=1e-6)  # fmt: skip
    features.train()
    features(x).sum().backward()
    assert resnet.conv1.weight.grad is not None and resnet.layer4[1].bn2.weight.grad is not None


def test_the_names_torchvision_scripts_import():
    import gpunn.vision as torchvision
    from gpunn.vision.models.resnet import BasicBlock, Bottleneck, ResNet  # noqa: F401

    assert torchvision.models.resnet18 is models.resnet18
    assert models.BasicBlock.expansion == 1 and models.Bottleneck.expansion == 4
