from common import init_, np, torch

nn = torch.nn
rng = np.random.default_rng(1)
X = torch.from_numpy(rng.standard_normal((100, 3)).astype(np.float32))
true_w = torch.tensor([[2.0, -3.4, 1.5]])
y = X @ true_w.T + 4.2 + 0.01 * torch.from_numpy(rng.standard_normal((100, 1)).astype(np.float32))
model = init_(nn.Linear(3, 1))
loss_fn = nn.MSELoss()
opt = torch.optim.SGD(model.parameters(), lr=0.03)
for epoch in range(30):
    for i in range(0, 100, 10):
        xb, yb = X[i : i + 10], y[i : i + 10]
        l = loss_fn(model(xb), yb)
        opt.zero_grad()
        l.backward()
        opt.step()
    with torch.no_grad():
        train_l = loss_fn(model(X), y)
    if epoch % 10 == 9:
        print(f"epoch {epoch + 1}, loss {train_l.item():f}")
w = model.weight.data
print("error in estimating w:", (true_w - w.reshape(true_w.shape)).abs().max().item() < 0.05)
print("b", round(model.bias.data.item(), 3))
print(model.weight.grad.shape, model.weight.requires_grad, model.bias.grad is not None)
