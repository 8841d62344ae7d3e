from common import init_, np, torch

nn, F = torch.nn, torch.nn.functional
rng = np.random.default_rng(2)
X = rng.standard_normal((200, 2)).astype(np.float32)
Y = (X[:, 0] + 2 * X[:, 1] > 0.3).astype(np.float32)
X, Y = torch.tensor(X), torch.tensor(Y).unsqueeze(1)


class LogReg(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, x):
        return torch.sigmoid(self.linear(x))


model = init_(LogReg())
crit = nn.BCELoss()
opt = torch.optim.SGD(model.parameters(), lr=0.5)
for epoch in range(100):
    opt.zero_grad()
    out = model(X)
    loss = crit(out, Y)
    loss.backward()
    opt.step()
    if (epoch + 1) % 25 == 0:
        pred = (out > 0.5).float()
        acc = (pred == Y).sum().item() / Y.size(0)
        print(f"Epoch [{epoch + 1}/{100}], Loss: {loss.item():.4f}, Acc: {acc:.3f}")
m2 = init_(nn.Linear(2, 1), 3)
opt2 = torch.optim.Adam(m2.parameters(), lr=0.05)
for _ in range(50):
    opt2.zero_grad()
    l = F.binary_cross_entropy_with_logits(m2(X), Y, pos_weight=torch.tensor([2.0]))
    l.backward()
    opt2.step()
print("bce logits", round(l.item(), 4), torch.round(m2.weight.detach() * 1000) / 1000)
print(torch.where(m2(X[:5]) > 0, 1, 0).squeeze().tolist())
