from common import init_, np, torch

nn, F = torch.nn, torch.nn.functional
B, T, C = 2, 5, 8
rng = np.random.default_rng(7)
x = torch.from_numpy(rng.standard_normal((B, T, C)).astype(np.float32))


class Head(nn.Module):
    def __init__(self, head_size):
        super().__init__()
        self.key = nn.Linear(C, head_size, bias=False)
        self.query = nn.Linear(C, head_size, bias=False)
        self.value = nn.Linear(C, head_size, bias=False)
        self.register_buffer("tril", torch.tril(torch.ones(T, T)))

    def forward(self, x):
        B, T, C = x.shape
        k = self.key(x)
        q = self.query(x)
        wei = q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5
        wei = wei.masked_fill(self.tril[:T, :T] == 0, float("-inf"))
        wei = F.softmax(wei, dim=-1)
        return wei @ self.value(x)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.heads = nn.ModuleList([Head(4) for _ in range(2)])
        self.proj = nn.Linear(8, C)
        self.ln1 = nn.LayerNorm(C)
        self.ln2 = nn.LayerNorm(C)
        self.ffwd = nn.Sequential(nn.Linear(C, 4 * C), nn.GELU(), nn.Linear(4 * C, C), nn.Dropout(0.0))

    def forward(self, x):
        x = x + self.proj(torch.cat([h(self.ln1(x)) for h in self.heads], dim=-1))
        return x + self.ffwd(self.ln2(x))


blk = init_(Block())
out = blk(x)
print(out.shape, round(out.sum().item(), 4), round(out.std().item(), 4))
loss = out.pow(2).mean()
loss.backward()
print(round(blk.ln1.weight.grad.sum().item(), 5), round(blk.heads[0].key.weight.grad.abs().sum().item(), 5))
print(list(blk.state_dict().keys())[:4])
att = torch.einsum("btc,bsc->bts", x, x).softmax(-1)
print(round(att[0, 0].sum().item(), 5), att.shape)
opt = torch.optim.AdamW(blk.parameters(), lr=1e-2)
for _ in range(5):
    opt.zero_grad(set_to_none=True)
    l = blk(x).pow(2).mean()
    l.backward()
    torch.nn.utils.clip_grad_norm_(blk.parameters(), 1.0)
    opt.step()
print("adamw", round(l.item(), 5))
