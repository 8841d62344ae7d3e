from common import np, torch

nn, F = torch.nn, torch.nn.functional
words = ["emma", "olivia", "ava", "isabella", "sophia", "mia", "amelia", "harper", "evelyn", "abigail"]
chars = sorted(list(set("".join(words))))
stoi = {s: i + 1 for i, s in enumerate(chars)}
stoi["."] = 0
itos = {i: s for s, i in stoi.items()}
N = torch.zeros((len(stoi), len(stoi)), dtype=torch.int32)
for w in words:
    chs = ["."] + list(w) + ["."]
    for ch1, ch2 in zip(chs, chs[1:]):
        N[stoi[ch1], stoi[ch2]] += 1
P = (N + 1).float()
P /= P.sum(1, keepdims=True)
log_likelihood, n = 0.0, 0
for w in words:
    chs = ["."] + list(w) + ["."]
    for ch1, ch2 in zip(chs, chs[1:]):
        log_likelihood += torch.log(P[stoi[ch1], stoi[ch2]])
        n += 1
print(f"{log_likelihood=}".split("(")[1][:8], f"{-log_likelihood / n:.4f}")
xs, ys = [], []
for w in words:
    chs = ["."] + list(w) + ["."]
    for ch1, ch2 in zip(chs, chs[1:]):
        xs.append(stoi[ch1])
        ys.append(stoi[ch2])
xs, ys = torch.tensor(xs), torch.tensor(ys)
V = len(stoi)
W = torch.from_numpy(np.random.default_rng(5).standard_normal((V, V)).astype(np.float32)).requires_grad_()
for _k in range(30):
    xenc = F.one_hot(xs, num_classes=V).float()
    logits = xenc @ W
    counts = logits.exp()
    probs = counts / counts.sum(1, keepdims=True)
    loss = -probs[torch.arange(len(ys)), ys].log().mean() + 0.01 * (W**2).mean()
    W.grad = None
    loss.backward()
    W.data += -10 * W.grad
print("loss", round(loss.item(), 4))
# MLP with embeddings
block = 3
X, Yt = [], []
for w in words:
    context = [0] * block
    for ch in w + ".":
        ix = stoi[ch]
        X.append(context)
        Yt.append(ix)
        context = context[1:] + [ix]
X, Yt = torch.tensor(X), torch.tensor(Yt)
rng = np.random.default_rng(6)
C = torch.tensor(rng.standard_normal((V, 4)).astype(np.float32), requires_grad=True)
W1 = torch.tensor((rng.standard_normal((12, 50)) * 0.2).astype(np.float32), requires_grad=True)
b1 = torch.zeros(50, requires_grad=True)
W2 = torch.tensor((rng.standard_normal((50, V)) * 0.1).astype(np.float32), requires_grad=True)
b2 = torch.zeros(V, requires_grad=True)
parameters = [C, W1, b1, W2, b2]
print(sum(p.nelement() for p in parameters))
for i in range(100):
    emb = C[X]
    h = torch.tanh(emb.view(-1, 12) @ W1 + b1)
    logits = h @ W2 + b2
    loss = F.cross_entropy(logits, Yt)
    for p in parameters:
        p.grad = None
    loss.backward()
    lr = 0.1 if i < 50 else 0.01
    for p in parameters:
        p.data += -lr * p.grad
print("mlp loss", round(loss.item(), 4))
emb_layer = nn.Embedding(V, 4)
with torch.no_grad():
    emb_layer.weight.copy_(C)
print(torch.allclose(emb_layer(X[:4]), C[X[:4]]))
g = torch.Generator().manual_seed(2147483647)
print(torch.multinomial(torch.tensor([0.0, 1.0, 0.0]), num_samples=1, replacement=True).item())
