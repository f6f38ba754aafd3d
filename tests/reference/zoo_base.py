"""PyTorch twins of the first four models of the zoo: models/mlp.kiln,
lenet5.kiln, resnet_small.kiln and attention.kiln (make_fixtures.py reads
MODELS; the contract is in docs/zoo.md).

Each module's state_dict() names are kiln's parameter names, so kiln's
weights load into it strictly: a kiln name is the block-call scopes joined
by dots (`layer1.0.a.conv2d.weight`), and a PyTorch module gets the same
name when its attribute path spells those scopes.  `Scope` is a bare
container for that; `scoped("a.b", m)` nests m under a and b.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Scope(nn.Module):
    """A name scope: holds child modules (given by name) and no code."""

    def __init__(self, **children):
        super().__init__()
        for name, m in children.items():
            self.add_module(name, m)


def result(output_name, output, logits, y):
    """The dict a twin returns: the compared output and the training loss."""
    return {output_name: output, "loss": F.cross_entropy(logits, y)}


# --- mlp ------------------------------------------------------------------------------
class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.h1, self.h2, self.logits = nn.Linear(784, 256), nn.Linear(256, 128), nn.Linear(128, 10)

    def forward(self, x, y):
        logits = self.logits(F.relu(self.h2(F.relu(self.h1(x)))))
        return result("probs", torch.softmax(logits, dim=1), logits, y)


# --- lenet5 ---------------------------------------------------------------------------
class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c3 = nn.Conv2d(1, 6, 5, padding=2), nn.Conv2d(6, 16, 5)
        self.f5, self.f6, self.logits = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x, y):
        x = (x - 0.2860) / 0.3530
        x = F.max_pool2d(F.relu(self.c1(x)), 2, 2)
        x = F.max_pool2d(F.relu(self.c3(x)), 2, 2)
        x = F.relu(self.f5(x.flatten(1)))
        logits = self.logits(F.relu(self.f6(x)))
        return result("probs", torch.softmax(logits, dim=1), logits, y)


# --- resnet_small ---------------------------------------------------------------------
def conv_bn(cin, cout, kernel, stride):
    """`batchnorm(conv2d(...))` in one statement: scopes conv2d and batchnorm."""
    return Scope(conv2d=nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                 batchnorm=nn.BatchNorm2d(cout))


def run_conv_bn(s, x):
    return s.batchnorm(s.conv2d(x))


class Basic(nn.Module):
    def __init__(self, cin, width, stride):
        super().__init__()
        self.a = conv_bn(cin, width, 3, stride)
        self.b = conv_bn(width, width, 3, 1)
        if stride != 1 or cin != width:
            self.s = conv_bn(cin, width, 1, stride)
        else:
            self.s = None

    def forward(self, x):
        s = x if self.s is None else run_conv_bn(self.s, x)
        return F.relu(run_conv_bn(self.b, F.relu(run_conv_bn(self.a, x))) + s)


class ResNetSmall(nn.Module):
    def __init__(self, blocks=2):
        super().__init__()
        self.h = conv_bn(3, 16, 3, 1)
        cin = 16
        self.stages = []
        for stage, width in enumerate([16, 32, 64]):
            layer = Scope()
            for i in range(blocks):
                layer.add_module(str(i), Basic(cin, width, 2 if stage > 0 and i == 0 else 1))
                cin = width
            self.add_module("layer%d" % (stage + 1), layer)
            self.stages.append(layer)
        self.logits = nn.Linear(64, 10)

    def forward(self, x, y):
        h = F.relu(run_conv_bn(self.h, x))
        for layer in self.stages:
            for block in layer.children():
                h = block(h)
        logits = self.logits(h.mean((2, 3)))
        return result("probs", torch.softmax(logits, dim=1), logits, y)


# --- attention ------------------------------------------------------------------------
class SelfAttention(nn.Module):
    """The prelude's attention(x, heads): q, k, v, proj dense layers."""

    def __init__(self, d, heads, causal=False):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.q, self.k, self.v, self.proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        n, t, d = x.shape
        hd = d // self.heads
        split = lambda z: z.reshape(n, t, self.heads, hd).transpose(1, 2)
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = q @ k.transpose(-1, -2) * (1.0 / math.sqrt(hd))
        if self.causal:
            later = torch.arange(t).reshape(1, t) > torch.arange(t).reshape(t, 1)
            scores = torch.where(later, torch.full_like(scores, -1e9), scores)
        o = torch.softmax(scores, dim=-1) @ v
        return self.proj(o.transpose(1, 2).reshape(n, t, d))


class Encoder(nn.Module):
    """block encoder: a = x + attention(layernorm(x)) (scope a: layernorm,
    attention); f = relu(dense(layernorm(a))) (scope f); a + proj(gelu(f))."""

    def __init__(self, d, heads, hidden):
        super().__init__()
        self.a = Scope(layernorm=nn.LayerNorm(d), attention=SelfAttention(d, heads))
        self.f = Scope(layernorm=nn.LayerNorm(d), dense=nn.Linear(d, hidden))
        self.proj = nn.Linear(hidden, d)

    def forward(self, x):
        a = x + self.a.attention(self.a.layernorm(x))
        f = F.relu(self.f.dense(self.f.layernorm(a)))
        return a + self.proj(F.gelu(f))


class TinyTransformer(nn.Module):
    def __init__(self, T=16, D=32, heads=4, vocab=100, layers=2, classes=5):
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(T, D))
        # `h = embedding(...) + pos` names the table h.weight; the loop's
        # `h = encoder(h, ...)` names the blocks h.0, h.1, ...
        self.h = Scope(**{str(i): Encoder(D, heads, 4 * D) for i in range(layers)})
        self.h.weight = nn.Parameter(torch.zeros(vocab, D))
        self.pooled = nn.LayerNorm(D)
        self.logits = nn.Linear(D, classes)

    def forward(self, tokens, y):
        h = F.embedding(tokens, self.h.weight) + self.pos
        for block in self.h.children():
            h = block(h)
        logits = self.logits(self.pooled(h).mean(1))
        return result("probs", torch.softmax(logits, dim=-1), logits, y)


MODELS = {
    "mlp": {
        "module": MLP,
        "defines": {"N": 2},
        "inputs": {"x": ("f32", (2, 784)), "y": ("i32", (2,))},
        "ranges": {"y": (0, 10)},
        "output": "probs",
        "grads": ["h1.bias", "h2.weight", "logits.weight"],
    },
    "lenet5": {
        "module": LeNet5,
        "defines": {"N": 2},
        "inputs": {"x": ("f32", (2, 1, 28, 28)), "y": ("i32", (2,))},
        "ranges": {"x": (0, 1), "y": (0, 10)},
        "output": "probs",
        "grads": ["c1.weight", "c3.bias", "f6.weight", "logits.bias"],
    },
    "resnet_small": {
        "module": ResNetSmall,
        "defines": {"N": 2},
        "inputs": {"x": ("f32", (2, 3, 32, 32)), "y": ("i32", (2,))},
        "ranges": {"y": (0, 10)},
        "output": "probs",
        "grads": ["h.conv2d.weight", "h.batchnorm.weight", "layer2.0.s.conv2d.weight",
                  "layer3.1.b.batchnorm.bias", "logits.weight"],
    },
    "attention": {
        "module": TinyTransformer,
        "defines": {"N": 2},
        "inputs": {"tokens": ("i32", (2, 16)), "y": ("i32", (2,))},
        "ranges": {"tokens": (0, 100), "y": (0, 5)},
        "output": "probs",
        "grads": ["pos", "h.weight", "h.0.a.attention.q.weight", "h.1.f.layernorm.weight",
                  "pooled.bias", "logits.weight"],
    },
}
