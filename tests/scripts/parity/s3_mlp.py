from importlib import import_module

from common import LIB, init_, np, torch

nn, F = torch.nn, torch.nn.functional
data = import_module(LIB + ".utils.data")
rng = np.random.default_rng(3)
X = torch.from_numpy(rng.standard_normal((512, 784)).astype(np.float32))
w = rng.standard_normal((784, 10)).astype(np.float32)
Y = torch.from_numpy((X.numpy() @ w).argmax(1)).long()
train = data.TensorDataset(X[:384], Y[:384])
test = data.TensorDataset(X[384:], Y[384:])
train_loader = data.DataLoader(train, batch_size=64, shuffle=False)
test_loader = data.DataLoader(test, batch_size=100)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(
            nn.Linear(784, 200),
            nn.LeakyReLU(inplace=True),
            nn.Linear(200, 200),
            nn.LeakyReLU(inplace=True),
            nn.Linear(200, 10),
            nn.LeakyReLU(inplace=True),
        )

    def forward(self, x):
        return self.model(x)


net = init_(MLP())
optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
criteon = nn.CrossEntropyLoss()
for epoch in range(4):
    net.train()
    for batch_idx, (data_, target) in enumerate(train_loader):
        data_ = data_.view(-1, 28 * 28)
        logits = net(data_)
        loss = criteon(logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if batch_idx % 3 == 0:
            print(
                f"Train Epoch: {epoch} [{batch_idx * len(data_)}/{len(train_loader.dataset)} "
                f"({100.0 * batch_idx / len(train_loader):.0f}%)]\tLoss: {loss.item():.6f}"
            )
    scheduler.step()
    net.eval()
    test_loss, correct = 0, 0
    with torch.no_grad():
        for data_, target in test_loader:
            logits = net(data_.view(-1, 784))
            test_loss += criteon(logits, target).item()
            pred = logits.argmax(dim=1)
            correct += pred.eq(target).float().sum().item()
    test_loss /= len(test_loader.dataset)
    n_test = len(test_loader.dataset)
    print(
        f"\nTest set: Average loss: {test_loss:.4f}, Accuracy: {int(correct)}/{n_test} "
        f"({100.0 * correct / n_test:.0f}%) lr {scheduler.get_last_lr()}\n"
    )
torch.save(net.state_dict(), f"mlp_{LIB}.pt")
net2 = MLP()
net2.load_state_dict(torch.load(f"mlp_{LIB}.pt"))
net2.eval()
with torch.no_grad():
    print("reloaded equal:", torch.equal(net2(X[:5]), net(X[:5])), net2(X[:2]).argmax(1).tolist())
print(sum(p.numel() for p in net.parameters() if p.requires_grad))
