"""Real-world PyTorch idioms, each written once and run under PyTorch and under gpunn (``import gpunn as
torch``); the results (numbers, arrays, printed strings) must agree. The course notes' MNIST evaluation
loop is here verbatim."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
import gpunn.nn.functional as gF
from gpunn import nn as gnn
from gpunn import optim as goptim
from tests.helpers import torch_or_skip

RNG = np.random.default_rng(7)
X = RNG.standard_normal((12, 6)).astype(np.float32)
Y = RNG.integers(0, 4, size=12).astype(np.int64)
W1 = (RNG.standard_normal((5, 6)) * 0.4).astype(np.float32)
B1 = (RNG.standard_normal(5) * 0.1).astype(np.float32)
W2 = (RNG.standard_normal((4, 5)) * 0.4).astype(np.float32)
B2 = (RNG.standard_normal(4) * 0.1).astype(np.float32)


def _libs():
    torch = torch_or_skip()
    import torch.nn.functional as tF

    return {"torch": (torch, torch.nn, tF, torch.optim), "gpunn": (gpunn, gnn, gF, goptim)}


def _model(torch, nn):
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4))
    with torch.no_grad():
        for p, v in zip(model.parameters(), (W1, B1, W2, B2)):
            p.copy_(torch.from_numpy(v.copy()))
    return model


def course_evaluation_loop(torch, nn, F, optim):
    model = _model(torch, nn)
    criteon = nn.CrossEntropyLoss()
    batches = [(torch.from_numpy(X[i : i + 4]), torch.from_numpy(Y[i : i + 4])) for i in range(0, 12, 4)]
    test_loss = 0
    correct = 0
    for data, target in batches:
        logits = model(data)
        test_loss += criteon(logits, target).item()
        pred = logits.data.max(1)[1]
        correct += pred.eq(target.data).sum()
    test_loss /= len(batches)
    n = 12
    return "\nTest set: Average loss: {:.4f}, Accuracy: {}/{} ({:.0f}%)\n".format(  # noqa: UP032  (verbatim)
        test_loss, correct, n, 100.0 * correct / n
    )


def hand_written_sgd(torch, nn, F, optim):
    model = _model(torch, nn)
    x, y = torch.from_numpy(X), torch.from_numpy(Y)
    lr = 0.1
    for _ in range(3):
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad
                p.grad.zero_()
    return [p.detach().numpy().copy() for p in model.parameters()]


def training_loop_with_optimizer(torch, nn, F, optim):
    model = _model(torch, nn)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.from_numpy(X), torch.from_numpy(Y)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = nn.CrossEntropyLoss()(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def param_data_normal_init(torch, nn, F, optim):
    torch.manual_seed(0)
    model = _model(torch, nn)
    for param in model.parameters():
        param.data.normal_(0, 0.01)
    stats = []
    for p in model.parameters():
        v = p.detach().numpy()
        stats.append((p.is_leaf, p.requires_grad, bool(np.abs(v).max() < 0.06), bool(v.std() > 0.001)))
    return stats


def model_to_device(torch, nn, F, optim):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = _model(torch, nn).to(device)
    x = torch.from_numpy(X).to(device)
    out = model(x)
    return str(device), out.device.type, out.detach().cpu().numpy()


def accelerator_device(torch, nn, F, optim):
    device = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else "cpu"
    x = torch.ones(2, 3, device=device)
    return str(x.device), x.sum().item()


def relu_by_max(torch, nn, F, optim):
    Xt = torch.from_numpy(X)
    return torch.max(Xt, torch.zeros_like(Xt)).numpy()


def accuracy_idioms(torch, nn, F, optim):
    logits = _model(torch, nn)(torch.from_numpy(X))
    y = torch.from_numpy(Y)
    pred = torch.argmax(logits, dim=1)
    acc = (pred == y).float().mean().item()
    _, top = logits.max(dim=1)
    probs = F.softmax(logits, dim=1)
    return acc, top.tolist(), probs.sum(1).detach().numpy(), logits.size(0), logits.shape[1]


def tensor_basics(torch, nn, F, optim):
    x = torch.tensor([[1.0, -2.0, 3.0], [4.0, 5.0, -6.0]])
    return [
        x.view(-1).numpy(),
        x.t().numpy(),
        x.sum(0).numpy(),
        x.mean(axis=1, keepdims=True).numpy(),
        x.std().item(),
        x.var(dim=0).numpy(),
        x.norm().item(),
        x.abs().max().item(),
        x.numel(),
        x.dim(),
        x.clamp(min=0).numpy(),
        x.prod().item(),
        x.cumsum(1).numpy(),
        x.argmax().item(),
        x.sort(dim=1, descending=True).values.numpy(),
        x.topk(2, dim=1).indices.numpy(),
        x.gather(1, torch.tensor([[0], [2]])).numpy(),
        x.masked_fill(x < 0, 0.0).numpy(),
        [c.numpy() for c in x.chunk(3, dim=1)],
        [s.numpy() for s in x.split(1)],
        (x > 0).any().item(),
        (x > 0).all(dim=1).tolist(),
        x.double().dtype == torch.float64,
        x.long().tolist(),
        x.type(torch.int64).sum().item(),
        str(x.dtype).split(".")[-1],
        torch.linspace(0, 1, 5).numpy(),
        torch.exp(x).numpy(),
        x.sign().tolist(),
        x.floor().tolist(),
        x.unsqueeze(0).shape == (1, 2, 3),
        x.reshape(3, 2).shape[0],
        torch.cat([x, x], 0).shape[0],
        torch.stack([x, x]).shape[0],
        x.expand(2, 2, 3).shape[0],
        x.view_as(x.t()).shape[0],
        x.flatten().tolist(),
        torch.where(x > 0, x, torch.zeros_like(x)).tolist(),
        torch.maximum(x, torch.zeros(3)).tolist(),
        torch.sum(x).item(),
        torch.mean(x, dim=0).tolist(),
        "{:.2f}".format(x.sum()),  # noqa: UP032  (the str.format idiom is what is tested)
        "{}".format(x.max()),  # noqa: UP032
        float(x[0, 2]),
        int(x.argmax()),
        x.eq(3).sum().item(),
        x.ne(3).sum().item(),
        x.ge(0).sum().item(),
        x.lt(0).sum().item(),
    ]


def typed_constructors(torch, nn, F, optim):
    a = torch.FloatTensor([1, 2, 3])
    b = torch.LongTensor([1, 2])
    c = torch.Tensor([1, 2])
    d = torch.Tensor(2, 3)
    return [
        str(a.dtype).split(".")[-1],
        str(b.dtype).split(".")[-1],
        str(c.dtype).split(".")[-1],
        tuple(d.shape),
        a.type().split(".")[-1],
        a.tolist(),
        isinstance(a, torch.FloatTensor),
    ]


def autograd_idioms(torch, nn, F, optim):
    x = torch.tensor([0.5, -1.5, 2.0], requires_grad=True)
    y = x * 2
    y.retain_grad()
    z = (y.sigmoid() * x).sum()
    z.backward()
    leafs = (x.is_leaf, y.is_leaf, y.grad_fn is not None, x.grad_fn is None)
    w = torch.zeros(3)
    w.requires_grad_()
    (w * torch.tensor([1.0, 2.0, 3.0])).sum().backward()

    @torch.no_grad()
    def evaluate(t):
        return t * 2

    return [
        x.grad.numpy(),
        y.grad.numpy(),
        leafs,
        w.grad.numpy(),
        evaluate(x).requires_grad,
        x.detach().requires_grad,
        x.data.requires_grad,
    ]


def inplace_relu_and_residual(torch, nn, F, optim):
    x = torch.from_numpy(X.copy()).requires_grad_()
    lin = _model(torch, nn)[0]
    identity = lin(x)
    out = identity * 2
    out += identity  # a ResNet block's residual add, then the in-place ReLU
    out = F.relu(out, inplace=True)
    out = nn.ReLU(inplace=True)(out - 0.1)
    out.sum().backward()
    return out.detach().numpy(), x.grad.numpy()


def tutorial_polynomial_autograd(torch, nn, F, optim):
    """PyTorch's "Learning PyTorch with Examples", the autograd version (fewer steps)."""
    import math

    dtype = torch.float
    device = torch.device("cpu")
    x = torch.linspace(-math.pi, math.pi, 200, device=device, dtype=dtype)
    y = torch.sin(x)
    torch.manual_seed(0)
    a, b, c, d = (torch.tensor(v, device=device, dtype=dtype, requires_grad=True) for v in (0.1, -0.2, 0.3, 0.05))
    learning_rate = 1e-5
    losses = []
    for t in range(60):
        y_pred = a + b * x + c * x**2 + d * x**3
        loss = (y_pred - y).pow(2).sum()
        if t % 20 == 19:
            losses.append(loss.item())
        loss.backward()
        with torch.no_grad():
            a -= learning_rate * a.grad
            b -= learning_rate * b.grad
            c -= learning_rate * c.grad
            d -= learning_rate * d.grad
            a.grad = None
            b.grad = None
            c.grad = None
            d.grad = None
    return losses, f"Result: y = {a.item():.5f} + {b.item():.5f} x + {c.item():.5f} x^2 + {d.item():.5f} x^3"


def tutorial_two_layer_tensors(torch, nn, F, optim):
    """The same tutorial's manual-backward two-layer net on tensors (mm, clamp, t(), masked assignment)."""
    device, dtype = torch.device("cpu"), torch.float
    x = torch.from_numpy(X).to(device)
    y = torch.from_numpy(X[:, :4] * 2).to(device=device, dtype=dtype)
    w1, w2 = torch.from_numpy(W1.T.copy()), torch.from_numpy(W2.T.copy())
    for _ in range(5):
        h = x.mm(w1)
        h_relu = h.clamp(min=0)
        y_pred = h_relu.mm(w2)
        grad_y_pred = 2.0 * (y_pred - y)
        grad_w2 = h_relu.t().mm(grad_y_pred)
        grad_h_relu = grad_y_pred.mm(w2.t())
        grad_h = grad_h_relu.clone()
        grad_h[h < 0] = 0
        grad_w1 = x.t().mm(grad_h)
        w1 -= 1e-3 * grad_w1
        w2 -= 1e-3 * grad_w2
    return w1.numpy(), w2.numpy()


def mnist_example_test_loop(torch, nn, F, optim):
    """pytorch/examples mnist: argmax(keepdim=True), eq(view_as), sum(reduction='sum').item()."""
    model = _model(torch, nn)
    model.eval()
    test_loss, correct = 0, 0
    with torch.no_grad():
        for i in range(0, 12, 6):
            data, target = torch.from_numpy(X[i : i + 6]), torch.from_numpy(Y[i : i + 6])
            output = F.log_softmax(model(data), dim=1)
            test_loss += F.nll_loss(output, target, reduction="sum").item()
            pred = output.argmax(dim=1, keepdim=True)
            correct += pred.eq(target.view_as(pred)).sum().item()
    test_loss /= 12
    return "\nTest set: Average loss: {:.4f}, Accuracy: {}/{} ({:.0f}%)\n".format(  # noqa: UP032
        test_loss, correct, 12, 100.0 * correct / 12
    )


def cifar_tutorial_accuracy(torch, nn, F, optim):
    """The CIFAR-10 tutorial's accuracy loop: torch.max(outputs.data, 1) unpacked."""
    net = _model(torch, nn)
    correct, total = 0, 0
    with torch.no_grad():
        images, labels = torch.from_numpy(X), torch.from_numpy(Y)
        outputs = net(images)
        _, predicted = torch.max(outputs.data, 1)
        total += labels.size(0)
        correct += (predicted == labels).sum().item()
    return f"Accuracy of the network: {100 * correct // total} %", total


def promotion_with_bools_and_0dim(torch, nn, F, optim):
    """Type promotion real scripts lean on: counting with bool masks, and 0-dim tensors (a loss, a
    float64 constant) beside dimensioned ones, which PyTorch lets the dimensioned tensor's dtype win."""
    x = torch.from_numpy(X[:, 0].copy())
    mask = x > 0
    f64 = torch.tensor(0.1, dtype=torch.float64)
    outs = [
        mask + 2,
        mask * 3,
        mask / 2,
        x + f64,
        x == torch.tensor(float(X[0, 0]), dtype=torch.float64),
        torch.tensor([7, -7], dtype=torch.int32) // torch.tensor(2),
        torch.tensor([250], dtype=torch.uint8) + torch.tensor(10),
        torch.tensor([1, 2]) + torch.tensor(1.5, dtype=torch.float64),
        torch.where(mask, x, torch.tensor(0.0, dtype=torch.float64)),
    ]
    return [(o.numpy(), str(o.dtype).split(".")[-1]) for o in outs]


def amp_training_recipe(torch, nn, F, optim):
    """PyTorch's AMP recipe as device-agnostic scripts write it (cudnn.benchmark, autocast and GradScaler on when
    CUDA is there; here both libraries warn and disable them, float32), then an enabled CPU GradScaler."""
    import warnings

    torch.backends.cudnn.benchmark = True
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = _model(torch, nn).to(device)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.from_numpy(X).to(device), torch.from_numpy(Y).to(device)
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for scaler, amp_device in ((torch.cuda.amp.GradScaler(), "cuda"), (torch.amp.GradScaler("cpu", 1024.0), None)):
            for _ in range(3):
                with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp_device == "cuda"):
                    loss = F.cross_entropy(model(x), y)
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                results.append((loss.item(), scaler.get_scale(), scaler.is_enabled(), scaler.state_dict()))
    torch.backends.cudnn.benchmark = False
    return results, [p.detach().numpy() for p in model.parameters()]


IDIOMS = [
    promotion_with_bools_and_0dim,
    tutorial_polynomial_autograd,
    tutorial_two_layer_tensors,
    mnist_example_test_loop,
    cifar_tutorial_accuracy,
    course_evaluation_loop,
    hand_written_sgd,
    training_loop_with_optimizer,
    param_data_normal_init,
    model_to_device,
    accelerator_device,
    relu_by_max,
    accuracy_idioms,
    tensor_basics,
    typed_constructors,
    autograd_idioms,
    inplace_relu_and_residual,
    amp_training_recipe,
]


def _same(a, b, where=""):
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: {a!r} vs {b!r}"
        for i, (u, v) in enumerate(zip(a, b)):
            _same(u, v, f"{where}[{i}]")
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        np.testing.assert_allclose(
            np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=2e-5, atol=1e-6, err_msg=where
        )
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=2e-5, abs=1e-6), where
    else:
        assert a == b, f"{where}: gpunn {a!r} != torch {b!r}"


@pytest.mark.parametrize("idiom", IDIOMS, ids=[f.__name__ for f in IDIOMS])
def test_idiom_gives_pytorchs_answer(idiom):
    if gpunn.get_backend().name != "numpy" and idiom in (model_to_device, accelerator_device, amp_training_recipe):
        pytest.skip("compares the cpu device with CPU PyTorch")
    libs = _libs()
    expected = idiom(*libs["torch"])
    with gpunn.backend("numpy"):
        got = idiom(*libs["gpunn"])
    _same(got, expected, idiom.__name__)


def test_course_loop_prints_the_numbers():
    msg = course_evaluation_loop(gpunn, gnn, gF, goptim)
    assert "Accuracy: " in msg and "tensor" not in msg


@pytest.mark.parametrize(
    "fn",
    [
        lambda L: L.arange(6).reshape(2, 3).t().view(-1),
        lambda L: L.arange(12).reshape(3, 4)[:, :2].view(6),
        lambda L: L.zeros(3, 1).expand(3, 4).view(12),
        lambda L: L.tensor([True]) - 1,
        lambda L: 2 - L.tensor([True]),
    ],
    ids=["view_transposed", "view_sliced", "view_expanded", "bool_minus_int", "int_minus_bool"],
)
def test_raises_where_pytorch_raises(fn):
    """view on a layout that needs a copy, and subtraction with a bool tensor, raise in PyTorch: here too
    (a view that silently copied would drop the writes made through it)."""
    torch = torch_or_skip()
    with pytest.raises(RuntimeError):
        fn(torch)
    with pytest.raises(RuntimeError, match="view size is not compatible|bool tensor"):
        fn(gpunn)


def test_view_where_the_layout_allows_shares_storage():
    for make in (
        lambda L: L.zeros(1, 3).expand(4, 3).view(4, 1, 3),
        lambda L: L.arange(24).reshape(2, 3, 4).permute(1, 0, 2).view(3, 2, 2, 2),
        lambda L: L.arange(24).reshape(2, 3, 4)[1, 1:].view(2, 2, 2),
        lambda L: L.tensor(3.0).view(1),
        lambda L: L.zeros(0, 3).t().view(-1),
    ):
        assert tuple(make(gpunn).shape) == tuple(make(torch_or_skip()).shape)
    t = gpunn.arange(24).reshape(2, 3, 4)
    v = t[1, 1:].view(8)
    v[0] = 100
    assert int(t[1, 1, 0]) == 100
