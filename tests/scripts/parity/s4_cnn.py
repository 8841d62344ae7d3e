from common import init_, np, torch

nn, F = torch.nn, torch.nn.functional
rng = np.random.default_rng(4)
X = torch.from_numpy(rng.standard_normal((64, 1, 12, 12)).astype(np.float32))
Y = torch.from_numpy(rng.integers(0, 10, 64)).long()


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, 1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, 1, padding=1)
        self.dropout1 = nn.Dropout(0.0)
        self.fc1 = nn.Linear(16 * 5 * 5, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.bn(self.conv1(x)))
        x = self.conv2(x)
        x = F.max_pool2d(F.relu(x), 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return F.log_softmax(self.fc2(x), dim=1)


model = init_(Net())
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)
for epoch in range(5):
    model.train()
    for i in range(0, 64, 16):
        opt.zero_grad()
        out = model(X[i : i + 16])
        loss = F.nll_loss(out, Y[i : i + 16])
        loss.backward()
        opt.step()
    sched.step()
    model.eval()
    with torch.no_grad():
        out = model(X)
        pred = out.argmax(dim=1, keepdim=True)
        correct = pred.eq(Y.view_as(pred)).sum().item()
        tl = F.nll_loss(out, Y, reduction="sum").item() / 64
    print(f"epoch {epoch} loss {loss.item():.4f} test {tl:.4f} acc {correct}/64 lr {opt.param_groups[0]['lr']:.5f}")
print(model.bn.running_mean[:3], model.bn.num_batches_tracked)
print(torch.max(out, 1)[1][:8])
