"""PyTorch twins of kiln's convolutional models (models/*.kiln).

Each twin is the same network as its .kiln file, written independently in
PyTorch (Debian's python3-torch), with state_dict() names and shapes equal
to kiln's parameter names (`kiln init MODEL.kiln -o W.safetensors`), so
kiln's initial parameters load into it with load_state_dict(strict=True)
(num_batches_tracked aside).

    MODELS = {name: spec}, name = the models/NAME.kiln stem; spec:
      "module":  zero-argument callable -> nn.Module; its forward(**inputs)
                 takes kiln's inputs by name and returns
                 {output: tensor, "loss": scalar}, the loss being what the
                 model's train section minimizes;
      "defines": -D values for small fixture sizes;
      "inputs":  kiln input name -> ("f32" | "i32", shape) at those sizes;
      "ranges":  i32 input name -> (lo, hi), hi exclusive;
      "output":  the output compared;
      "grads":   a few parameter names whose loss gradients are compared
                 (first convolution, one in the middle, the classifier).

Forward fixtures run module.eval() (batchnorm's running statistics),
gradient fixtures module.train() (batch statistics).  Dropout (vgg11) is
disabled at the fixture sizes (-D p_drop=0) so both sides compute the same
function.

`/usr/bin/python3 tests/reference/zoo_conv.py [NAME...]` checks every twin's
names and shapes against `kiln init`, its eval output against `kiln run`
and its gradients against `kiln run --grad` (needs build/kiln), from the
repository root.  make_fixtures.py reads MODELS like every zoo_*.py's.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def _head(logits, y, output="probs"):
    """The models' common ending: softmax probabilities and the mean
    cross-entropy of the logits."""
    out = {output: torch.softmax(logits, dim=1)}
    if y is not None:
        out["loss"] = F.cross_entropy(logits, y.long())
    return out


def conv(cin, cout, k, stride=1, pad=0, groups=1, bias=False):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=pad, groups=groups, bias=bias)


# ----------------------------------------------------------------------------- VGG-11
class VGG11(nn.Module):
    """models/vgg11.kiln: torchvision's vgg11 without its adaptive average
    pooling (the identity at 224; kiln's classifier input follows H)."""

    def __init__(self, H=224, width=64, hidden=4096, classes=1000, p_drop=0.5):
        super().__init__()
        layers, cin = [], 3
        for n, mult in [(1, 1), (1, 2), (2, 4), (2, 8), (2, 8)]:
            for _ in range(n):
                layers += [nn.Conv2d(cin, width * mult, 3, padding=1), nn.ReLU()]
                cin = width * mult
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        feat = cin * (H // 32) ** 2
        self.classifier = nn.Sequential(
            nn.Linear(feat, hidden), nn.ReLU(), nn.Dropout(p_drop),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(p_drop),
            nn.Linear(hidden, classes))

    def forward(self, x, y=None):
        return _head(self.classifier(torch.flatten(self.features(x), 1)), y)


# ----------------------------------------------------------------------------- small VGG
class ConvBnRelu(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = conv(cin, cout, 3, pad=1)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class VGGSmall(nn.Module):
    """models/vgg_small.kiln (the peers' SmallVGG, named per block)."""

    def __init__(self, width=64, classes=10):
        super().__init__()
        self.block1 = nn.Sequential(ConvBnRelu(3, width), ConvBnRelu(width, width))
        self.block2 = nn.Sequential(ConvBnRelu(width, 2 * width), ConvBnRelu(2 * width, 2 * width))
        self.fc = nn.Linear(2 * width * 8 * 8, classes)

    def forward(self, x, y=None):
        h = F.max_pool2d(self.block1(x), 2, 2)
        h = F.max_pool2d(self.block2(h), 2, 2)
        return _head(self.fc(torch.flatten(h, 1)), y)


# ----------------------------------------------------------------------------- ResNets
class BasicBlock(nn.Module):
    """torchvision's BasicBlock; se_reduction adds the SE module (se.fc1/fc2)
    to the residual branch before the addition."""

    def __init__(self, cin, cout, stride, se_reduction=None):
        super().__init__()
        self.conv1 = conv(cin, cout, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = conv(cout, cout, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.se = SqueezeExcite(cout, se_reduction) if se_reduction else None
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))

    def forward(self, x):
        u = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.se is not None:
            u = self.se(u)
        s = x if self.downsample is None else self.downsample(x)
        return F.relu(u + s)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (v1.5: the stride on the 3x3)."""

    def __init__(self, cin, width, stride, expansion=4):
        super().__init__()
        cout = width * expansion
        self.conv1 = conv(cin, width, 1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv(width, width, 3, stride, 1)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv(width, cout, 1)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        s = x if self.downsample is None else self.downsample(x)
        return F.relu(h + s)


class SqueezeExcite(nn.Module):
    """Hu et al.: average-pool squeeze, FC-ReLU-FC-sigmoid excitation."""

    def __init__(self, c, reduction):
        super().__init__()
        hidden = max(1, c // reduction)
        self.fc1 = nn.Linear(c, hidden)
        self.fc2 = nn.Linear(hidden, c)

    def forward(self, u):
        z = u.mean(dim=(2, 3))
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(z))))
        return u * s[:, :, None, None]


class ResNet(nn.Module):
    """resnet18 (CIFAR: 3x3 stem, basic blocks), resnet50 (ImageNet: 7x7/2
    stem + 3x3/2 max pool, bottlenecks) and se_resnet (CIFAR, SE basic
    blocks, three stages)."""

    def __init__(self, kind, blocks, width=64, classes=10, reduction=16):
        super().__init__()
        self.kind = kind
        if kind == "resnet50":
            self.conv1 = conv(3, width, 7, 2, 3)
        else:
            self.conv1 = conv(3, width, 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(width)
        cin = width
        for stage, n in enumerate(blocks):
            w = width * 2 ** stage
            layer = []
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                if kind == "resnet50":
                    layer.append(Bottleneck(cin, w, stride))
                    cin = 4 * w
                else:
                    layer.append(BasicBlock(cin, w, stride,
                                            reduction if kind == "se_resnet" else None))
                    cin = w
            setattr(self, "layer%d" % (stage + 1), nn.Sequential(*layer))
        self.n_stages = len(blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x, y=None):
        h = F.relu(self.bn1(self.conv1(x)))
        if self.kind == "resnet50":
            h = F.max_pool2d(h, 3, 2, 1)
        for stage in range(self.n_stages):
            h = getattr(self, "layer%d" % (stage + 1))(h)
        return _head(self.fc(h.mean(dim=(2, 3))), y)


# ----------------------------------------------------------------------------- MobileNetV2
class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, t):
        super().__init__()
        hid = cin * t
        if t != 1:
            self.expand = conv(cin, hid, 1)
            self.expand_bn = nn.BatchNorm2d(hid)
        else:
            self.expand = None
        self.depthwise = conv(hid, hid, 3, stride, 1, groups=hid)
        self.depthwise_bn = nn.BatchNorm2d(hid)
        self.project = conv(hid, cout, 1)
        self.project_bn = nn.BatchNorm2d(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        h = x
        if self.expand is not None:
            h = F.relu6(self.expand_bn(self.expand(h)))
        h = F.relu6(self.depthwise_bn(self.depthwise(h)))
        h = self.project_bn(self.project(h))
        return x + h if self.residual else h


class MobileNetV2(nn.Module):
    CONFIG = [(1, 16, 1), (6, 24, 2), (6, 24, 1), (6, 32, 2), (6, 32, 1), (6, 64, 2)]

    def __init__(self, classes=10):
        super().__init__()
        self.stem = conv(3, 32, 3, 1, 1)
        self.stem_bn = nn.BatchNorm2d(32)
        blocks, cin = [], 32
        for t, c, s in self.CONFIG:
            blocks.append(InvertedResidual(cin, c, s, t))
            cin = c
        self.blocks = nn.Sequential(*blocks)
        self.head = conv(cin, 256, 1)
        self.head_bn = nn.BatchNorm2d(256)
        self.fc = nn.Linear(256, classes)

    def forward(self, x, y=None):
        h = self.blocks(F.relu6(self.stem_bn(self.stem(x))))
        h = F.relu6(self.head_bn(self.head(h)))
        return _head(self.fc(h.mean(dim=(2, 3))), y)


# ----------------------------------------------------------------------------- DenseNet
class DenseLayer(nn.Module):
    def __init__(self, cin, growth, bn_size=4):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.conv1 = conv(cin, bn_size * growth, 1)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.conv2 = conv(bn_size * growth, growth, 3, 1, 1)

    def forward(self, x):
        return self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm1(x))))))


class Transition(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.conv = conv(cin, cout, 1)

    def forward(self, x):
        return F.avg_pool2d(self.conv(F.relu(self.norm(x))), 2, 2)


class DenseNet(nn.Module):
    def __init__(self, growth=12, layers=6, classes=10):
        super().__init__()
        c = 2 * growth
        self.conv0 = conv(3, c, 3, 1, 1)
        self.denseblock1 = nn.Module()
        for i in range(layers):
            self.denseblock1.add_module("denselayer%d" % (i + 1), DenseLayer(c, growth))
            c += growth
        self.transition1 = Transition(c, c // 2)
        self.norm5 = nn.BatchNorm2d(c // 2)
        self.classifier = nn.Linear(c // 2, classes)

    def forward(self, x, y=None):
        h = self.conv0(x)
        for layer in self.denseblock1.children():
            h = torch.cat([h, layer(h)], dim=1)
        h = F.relu(self.norm5(self.transition1(h)))
        return _head(self.classifier(h.mean(dim=(2, 3))), y)


# ----------------------------------------------------------------------------- the table
def _spec(module, defines, image, classes, grads):
    n = defines.get("N", 2)
    return {
        "module": module,
        "defines": defines,
        "inputs": {"x": ("f32", (n, 3, image, image)), "y": ("i32", (n,))},
        "ranges": {"y": (0, classes)},
        "output": "probs",
        "grads": grads,
    }


MODELS = {
    "vgg11": _spec(
        lambda: VGG11(H=32, width=4, hidden=32, classes=10, p_drop=0.0),
        {"N": 2, "H": 32, "width": 4, "fc_width": 32, "classes": 10, "p_drop": 0}, 32, 10,
        ["features.0.weight", "features.11.weight", "classifier.0.weight",
         "classifier.6.weight"]),
    "vgg_small": _spec(
        lambda: VGGSmall(width=8, classes=10), {"N": 2, "width": 8}, 32, 10,
        ["block1.0.conv.weight", "block2.0.conv.weight", "block2.0.bn.weight", "fc.weight"]),
    "resnet18": _spec(
        lambda: ResNet("resnet18", [2, 2, 2, 2], width=8, classes=10), {"N": 2, "width": 8},
        32, 10,
        ["conv1.weight", "layer2.0.conv1.weight", "layer3.0.downsample.0.weight",
         "layer4.1.bn2.weight", "fc.weight"]),
    # depth 14: one bottleneck per stage (depth 50's 16 take 3.5x as long to
    # compile in tests/zoo.sh; test_models.c counts depth 50's parameters);
    # a batch of 8, as the last stage is 1x1 at H = 32 and batchnorm
    # normalizes over the batch there
    "resnet50": _spec(
        lambda: ResNet("resnet50", [1, 1, 1, 1], width=4, classes=10),
        {"N": 8, "H": 32, "width": 4, "depth": 14, "classes": 10}, 32, 10,
        ["conv1.weight", "layer3.0.conv2.weight", "layer2.0.downsample.0.weight",
         "layer4.0.bn3.weight", "fc.weight"]),
    "mobilenet_v2": _spec(
        lambda: MobileNetV2(classes=10), {"N": 2}, 32, 10,
        ["stem.weight", "blocks.3.depthwise.weight", "blocks.3.project.weight",
         "fc.weight"]),
    "densenet": _spec(
        lambda: DenseNet(growth=6, layers=4, classes=10),
        {"N": 2, "growth": 6, "layers": 4}, 32, 10,
        ["conv0.weight", "denseblock1.denselayer3.conv2.weight", "transition1.conv.weight",
         "classifier.weight"]),
    "se_resnet": _spec(
        lambda: ResNet("se_resnet", [1, 1, 1], width=16, classes=10, reduction=4),
        {"N": 2, "width": 16, "blocks": 1, "reduction": 4}, 32, 10,
        ["conv1.weight", "layer2.0.se.fc1.weight", "layer2.0.conv2.weight", "fc.weight"]),
}


# ----------------------------------------------------------------------------- self-check
def read_safetensors(path):
    """{name: tensor} from a safetensors file (F32/I32 only; no dependency)."""
    import json
    import struct

    import numpy as np

    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = {"F32": np.float32, "I32": np.int32}[info["dtype"]]
        a, b = info["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(data[a:b], dtype=dt).reshape(info["shape"]).copy())
    return out


def load_kiln_weights(module, path):
    """Loads kiln's parameters into module (every name must match)."""
    state = read_safetensors(path)
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError("names differ: missing %s, unexpected %s" % (missing, unexpected))
    return module


def _self_check(names, kiln="build/kiln", grads=True):
    import os
    import subprocess
    import tempfile

    import numpy as np

    worst = 0.0
    for name in names:
        spec = MODELS[name]
        d = tempfile.mkdtemp(prefix="zoo_conv_")
        defs = sum((["-D", "%s=%s" % kv] for kv in spec["defines"].items()), [])
        model = os.path.join("models", name + ".kiln")
        w = os.path.join(d, "w.safetensors")
        subprocess.run([kiln, "init", model, "-o", w] + defs, check=True, stdout=subprocess.DEVNULL)
        m = load_kiln_weights(spec["module"](), w)
        g = torch.Generator().manual_seed(1)
        inputs, args = {}, []
        for k, (dt, shape) in spec["inputs"].items():
            if dt == "f32":
                v = torch.randn(shape, generator=g)
            else:
                lo, hi = spec["ranges"][k]
                v = torch.randint(lo, hi, shape, generator=g).int()
            inputs[k] = v
            np.save(os.path.join(d, k + ".npy"), v.numpy())
            args += ["--input", "%s=%s" % (k, os.path.join(d, k + ".npy"))]
        out = spec["output"]
        # eval forward
        m.eval()
        with torch.no_grad():
            ref = m(**inputs)[out].numpy()
        o = os.path.join(d, "out.npy")
        subprocess.run([kiln, "run", model, "--weights", w, "--output", "%s=%s" % (out, o)]
                       + args + defs, check=True)
        got = np.load(o)
        err = float(np.max(np.abs(got - ref) / (np.abs(ref) + 1e-6)))
        line = "%-14s params %8d  forward max rel err %.2e" % (
            name, sum(p.numel() for p in m.parameters()), err)
        worst = max(worst, err)
        # training-mode gradients
        if grads:
            m.train()
            m.zero_grad()
            res = m(**inputs)
            res["loss"].backward()
            params = dict(m.named_parameters())
            gargs = []
            for p in spec["grads"]:
                gargs += ["--grad", "%s=%s" % (p, os.path.join(d, p + ".npy"))]
            r = subprocess.run([kiln, "run", model, "--weights", w] + args + defs + gargs,
                               check=True, capture_output=True, text=True)
            gerr = 0.0
            for p in spec["grads"]:
                a = np.load(os.path.join(d, p + ".npy"))
                b = params[p].grad.numpy()
                gerr = max(gerr, float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12)))
            line += "  grads max err / max |grad| %.2e  (loss torch %.6f, kiln: %s)" % (
                gerr, res["loss"].item(), r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "")
        print(line)
    return worst


if __name__ == "__main__":
    import sys

    torch.set_num_threads(1)
    sys.exit(0 if _self_check(sys.argv[1:] or list(MODELS)) < 1e-4 else 1)
