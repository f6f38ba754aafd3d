"""The models of models/*.kiln written in PyTorch, layer for layer, for
side-by-side measurements (bench/memory.py).  Run with Debian's python3,
which sees Debian's python3-torch.

Each entry: build() -> nn.Module, batch(n) -> (inputs, labels), the loss, and
the optimizer of the model's `train` section.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.h1, self.h2, self.logits = nn.Linear(784, 256), nn.Linear(256, 128), nn.Linear(128, 10)

    def forward(self, x):
        return self.logits(F.relu(self.h2(F.relu(self.h1(x)))))


class Autoencoder(nn.Module):
    """models/autoencoder.kiln: 784-256-32-256-784, ReLU, logits out."""

    def __init__(self):
        super().__init__()
        self.enc, self.z = nn.Linear(784, 256), nn.Linear(256, 32)
        self.dec, self.logits = nn.Linear(32, 256), nn.Linear(256, 784)

    def forward(self, x):
        return self.logits(F.relu(self.dec(self.z(F.relu(self.enc(x))))))


class VAE(nn.Module):
    """models/vae.kiln: 784-400-(20, 20), z = mu + exp(logvar / 2) eps, 20-400-784;
    the loss the negative ELBO per example, mean over the batch."""

    def __init__(self):
        super().__init__()
        self.enc, self.mu, self.logvar = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.dec, self.logits = nn.Linear(20, 400), nn.Linear(400, 784)

    def loss(self, x):
        h = F.relu(self.enc(x))
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        logits = self.logits(F.relu(self.dec(z)))
        n = x.shape[0]
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / n
        return rec - 0.5 * torch.sum(1 + logvar - mu * mu - torch.exp(logvar)) / n


class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c3 = nn.Conv2d(1, 6, 5, padding=2), nn.Conv2d(6, 16, 5)
        self.f5, self.f6, self.logits = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = (x - 0.2860) / 0.3530
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c3(x)), 2)
        x = F.relu(self.f5(x.flatten(1)))
        return self.logits(F.relu(self.f6(x)))


class Basic(nn.Module):
    def __init__(self, cin, width, stride):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(cin, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width))
        self.b = nn.Sequential(nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width))
        self.s = None
        if stride != 1 or cin != width:
            self.s = nn.Sequential(nn.Conv2d(cin, width, 1, stride, bias=False), nn.BatchNorm2d(width))

    def forward(self, x):
        s = x if self.s is None else self.s(x)
        return F.relu(self.b(F.relu(self.a(x))) + s)


class ResNetSmall(nn.Module):
    def __init__(self, blocks=2):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16))
        layers, cin = [], 16
        for stage, width in enumerate([16, 32, 64]):
            for i in range(blocks):
                layers.append(Basic(cin, width, 2 if stage > 0 and i == 0 else 1))
                cin = width
        self.layers = nn.Sequential(*layers)
        self.logits = nn.Linear(64, 10)

    def forward(self, x):
        h = self.layers(F.relu(self.stem(x)))
        return self.logits(h.mean((2, 3)))


class Attention(nn.Module):
    """kiln's prelude attention: q, k, v, proj dense layers, causal=false."""

    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        n, t, d = x.shape
        hd = d // self.heads
        split = lambda y: y.reshape(n, t, self.heads, hd).transpose(1, 2)
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(n, t, d))


class Encoder(nn.Module):
    def __init__(self, d, heads, hidden):
        super().__init__()
        self.ln1, self.att, self.ln2 = nn.LayerNorm(d), Attention(d, heads), nn.LayerNorm(d)
        self.f, self.out = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x):
        a = x + self.att(self.ln1(x))
        return a + self.out(F.gelu(F.relu(self.f(self.ln2(a)))))


class TinyTransformer(nn.Module):
    def __init__(self, t=16, d=32, heads=4, vocab=100, layers=2, classes=5):
        super().__init__()
        self.emb, self.pos = nn.Embedding(vocab, d), nn.Parameter(torch.randn(t, d) * 0.02)
        self.layers = nn.Sequential(*[Encoder(d, heads, 4 * d) for _ in range(layers)])
        self.ln, self.logits = nn.LayerNorm(d), nn.Linear(d, classes)

    def forward(self, tokens):
        h = self.layers(self.emb(tokens) + self.pos)
        return self.logits(self.ln(h).mean(1))


MODELS = {
    "mlp": (MLP, lambda n: (torch.rand(n, 784), torch.randint(0, 10, (n,))),
            lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
    "lenet5": (LeNet5, lambda n: (torch.rand(n, 1, 28, 28), torch.randint(0, 10, (n,))),
               lambda p: torch.optim.Adam(p, lr=0.002)),
    "resnet_small": (ResNetSmall, lambda n: (torch.randn(n, 3, 32, 32), torch.randint(0, 10, (n,))),
                     lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4)),
    "attention": (TinyTransformer, lambda n: (torch.randint(0, 100, (n, 16)), torch.randint(0, 5, (n,))),
                  lambda p: torch.optim.Adam(p, lr=0.001)),
}


def param_count(name):
    return sum(p.numel() for p in MODELS[name][0]().parameters())
