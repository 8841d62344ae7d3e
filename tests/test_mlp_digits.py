"""Acceptance test: a PyTorch training script runs unchanged on gpunn (only the imports differ).

An MLP 64-200-200-10 (ReLU, Kaiming init) is trained with SGD + momentum and cross-entropy on
scikit-learn's 8x8 digits (1797 images; pixels / 16; 80/20 stratified split, fixed seed) and must
reach >= 95% test accuracy. The same script text also runs on PyTorch when it is installed.
"""

import numpy as np
import pytest

TORCH_IMPORTS = "import torch\nfrom torch import nn, optim\n"
GPUNN_IMPORTS = "import gpunn as torch\nfrom gpunn import nn, optim\n"

# The script below is plain PyTorch; {imports} is the only thing that changes.
SCRIPT = """
{imports}
torch.manual_seed(0)

model = nn.Sequential(
    nn.Linear(64, 200), nn.ReLU(),
    nn.Linear(200, 200), nn.ReLU(),
    nn.Linear(200, 10),
)
for m in model.modules():
    if isinstance(m, nn.Linear):
        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        nn.init.zeros_(m.bias)

criterion = nn.CrossEntropyLoss()
optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

x_test = torch.tensor(X_test, dtype=torch.float32)
y_test = torch.tensor(y_test_np, dtype=torch.int64)
order = np.random.default_rng(0)
losses = []
for epoch in range(EPOCHS):
    model.train()
    perm = order.permutation(len(X_train))
    for start in range(0, len(perm), BATCH):
        idx = perm[start:start + BATCH]
        xb = torch.tensor(X_train[idx], dtype=torch.float32)
        yb = torch.tensor(y_train[idx], dtype=torch.int64)
        optimizer.zero_grad()
        loss = criterion(model(xb), yb)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

model.eval()
with torch.no_grad():
    pred = model(x_test).argmax(dim=1)
accuracy = (pred == y_test).float().mean().item()
"""


@pytest.fixture(scope="module")
def digits():
    datasets = pytest.importorskip("sklearn.datasets")
    model_selection = pytest.importorskip("sklearn.model_selection")
    X, y = datasets.load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    X_train, X_test, y_train, y_test = model_selection.train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)
    return X_train, X_test, y_train.astype(np.int64), y_test.astype(np.int64)


def _run(imports: str, digits) -> dict:
    threadpoolctl = pytest.importorskip("threadpoolctl")  # a scikit-learn dependency
    X_train, X_test, y_train, y_test = digits
    ns = {
        "np": np,
        "X_train": X_train,
        "y_train": y_train,
        "X_test": X_test,
        "y_test_np": y_test,
        "EPOCHS": 12,
        "BATCH": 32,
    }
    # one BLAS thread: these matrices are tiny, and on a busy machine a thread pool per matmul makes
    # the run many times slower (this is about test time only; nothing here is timed)
    with threadpoolctl.threadpool_limits(1):
        exec(compile(SCRIPT.format(imports=imports), "<digits_mlp_script>", "exec"), ns)
    return ns


def test_pytorch_script_trains_on_gpunn(digits):
    ns = _run(GPUNN_IMPORTS, digits)
    assert type(ns["model"]).__module__.startswith("gpunn")  # it really ran on gpunn
    losses = ns["losses"]
    assert np.mean(losses[-20:]) < 0.2 * np.mean(losses[:20]), "the training loss did not fall"
    assert ns["accuracy"] >= 0.95, f"test accuracy {ns['accuracy']:.4f} < 0.95"


@pytest.mark.torch
def test_same_script_on_pytorch(digits):
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ns = _run(TORCH_IMPORTS, digits)
    finally:
        torch.set_num_threads(threads)
    assert type(ns["model"]).__module__.startswith("torch")
    assert ns["accuracy"] >= 0.95, f"test accuracy {ns['accuracy']:.4f} < 0.95"
