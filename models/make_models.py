"""Make robustd's example models, their model cards and the digits test split.

Everything here is deterministic (fixed seeds, one thread), so running it again reproduces the
committed files up to libtorch's own float rounding. Run it from the repository root with the
project's virtual environment:

    .venv/bin/python models/make_models.py

Models:
- digits_cnn: a small CNN trained on scikit-learn's bundled digits (8x8 grey images, 10 classes).
- digits_cnn_at: the same architecture adversarially trained with PGD (Madry et al., 2018).
- digits_parity: one logit, "is the digit odd?" (a binary model trained with BCE with logits, as a
  GAN discriminator is).
- digits_value: regression, predicts the digit's value as a float (trained with MSE).
- cifar_resnet: a CIFAR-sized (3x32x32) ResNet with seeded, untrained weights, for benchmarks.
"""

import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from sklearn.datasets import load_digits

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 0
TEST_SIZE = 360
# The eps the adversarially trained model is trained for and the cards report robustness at.
EPS = 0.1

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


def digits_split():
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(SEED))
    test, train = order[:TEST_SIZE], order[TEST_SIZE:]
    return (x[train], y[train]), (x[test], y[test])


class DigitsNet(nn.Module):
    def __init__(self, outputs=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, outputs)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-14 layout (three stages of two basic blocks), 16/32/64 channels."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16))
        self.stages = nn.Sequential(
            Block(16, 16, 1), Block(16, 16, 1),
            Block(16, 32, 2), Block(32, 32, 1),
            Block(32, 64, 2), Block(64, 64, 1),
        )
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.stages(F.relu(self.stem(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def normalise(x, mean, std):
    return (x - mean) / std


def pgd(model, x, y, mean, std, eps, alpha, steps):
    """PGD Linf with a random start, in input space [0, 1]; the model sees normalised input."""
    delta = torch.empty_like(x).uniform_(-eps, eps)
    adv = (x + delta).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(normalise(adv, mean, std)), y)
        (grad,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() + alpha * grad.sign()
        adv = (x + (adv - x).clamp(-eps, eps)).clamp(0, 1).detach()
    return adv


def train(model, x, y, loss_fn, epochs, mean, std, adversarial=False):
    torch.manual_seed(SEED)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            xb, yb = x[order[i:i + 64]], y[order[i:i + 64]]
            if adversarial:
                model.eval()
                xb = pgd(model, xb, yb, mean, std, EPS, EPS / 4, 7)
                model.train()
            opt.zero_grad()
            loss_fn(model(normalise(xb, mean, std)), yb).backward()
            opt.step()
    model.eval()
    return model


def accuracy(model, x, y, mean, std):
    with torch.no_grad():
        return (model(normalise(x, mean, std)).argmax(1) == y).float().mean().item()


def robust_accuracy(model, x, y, mean, std):
    torch.manual_seed(SEED)
    adv = pgd(model, x, y, mean, std, EPS, EPS / 8, 20)
    return accuracy(model, adv, y, mean, std)


def save(model, name, example, card):
    scripted = torch.jit.trace(model.eval(), example)
    scripted.save(os.path.join(HERE, f"{name}.pt"))
    with open(os.path.join(HERE, f"{name}.json"), "w") as f:
        json.dump({"name": name, **card}, f, indent=2)
        f.write("\n")
    print(f"{name}: {json.dumps({k: v for k, v in card.items() if 'accuracy' in k or k == 'mse'})}")


def main():
    (xtr, ytr), (xte, yte) = digits_split()
    os.makedirs(os.path.join(HERE, "datasets"), exist_ok=True)
    save_file({"x": xte.contiguous(), "y": yte.contiguous()},
              os.path.join(HERE, "datasets", "digits_test.safetensors"))

    mean = round(xtr.mean().item(), 4)
    std = round(xtr.std().item(), 4)
    norm = {"mean": [mean], "std": [std]}
    digits_input = {"shape": [1, 8, 8], "datatype": "FP32", "domain": [0.0, 1.0]}
    classes = [str(d) for d in range(10)]
    example = torch.zeros(1, 1, 8, 8)
    data = "scikit-learn digits, pixels scaled to [0, 1], 1437 train / 360 test (seed 0)"

    for name, adversarial, epochs in [("digits_cnn", False, 40), ("digits_cnn_at", True, 60)]:
        torch.manual_seed(SEED)
        model = train(DigitsNet(), xtr, ytr, F.cross_entropy, epochs, mean, std, adversarial)
        how = (f"Adam lr 2e-3, batch 64, {epochs} epochs"
               + (f", on PGD Linf examples (eps {EPS}, step {EPS / 4}, 7 steps, random start)"
                  if adversarial else ", clean examples"))
        save(model, name, example, {
            "task": "classification",
            "input": digits_input,
            "num_classes": 10,
            "class_names": classes,
            "normalization": norm,
            "dataset": "digits_test",
            "training": f"{data}; {how}",
            "clean_accuracy": round(accuracy(model, xte, yte, mean, std), 4),
            "robust_accuracy_pgd20_linf_eps0.1": round(
                robust_accuracy(model, xte, yte, mean, std), 4),
        })

    torch.manual_seed(SEED)
    odd = (ytr % 2).float().unsqueeze(1)
    parity = train(DigitsNet(1), xtr, odd, F.binary_cross_entropy_with_logits, 30, mean, std)
    with torch.no_grad():
        logits = parity(normalise(xte, mean, std)).squeeze(1)
        acc = ((logits > 0).long() == yte % 2).float().mean().item()
    save(parity, "digits_parity", example, {
        "task": "binary",
        "input": digits_input,
        "num_classes": 2,
        "class_names": ["even", "odd"],
        "normalization": norm,
        "dataset": "digits_test",
        "labels": "y % 2",
        "training": f"{data}; one logit, BCE with logits, Adam lr 2e-3, batch 64, 30 epochs",
        "clean_accuracy": round(acc, 4),
    })

    torch.manual_seed(SEED)
    value = train(DigitsNet(1), xtr, ytr.float().unsqueeze(1), F.mse_loss, 30, mean, std)
    with torch.no_grad():
        mse = F.mse_loss(value(normalise(xte, mean, std)).squeeze(1), yte.float()).item()
    save(value, "digits_value", example, {
        "task": "regression",
        "input": digits_input,
        "normalization": norm,
        "dataset": "digits_test",
        "labels": "y as a float",
        "training": f"{data}; one output, MSE, Adam lr 2e-3, batch 64, 30 epochs",
        "mse": round(mse, 4),
    })

    torch.manual_seed(SEED)
    resnet = CifarResNet().eval()
    save(resnet, "cifar_resnet", torch.zeros(1, 3, 32, 32), {
        "task": "classification",
        "input": {"shape": [3, 32, 32], "datatype": "FP32", "domain": [0.0, 1.0]},
        "num_classes": 10,
        "class_names": [f"class_{i}" for i in range(10)],
        "training": "none: seeded initial weights (seed 0); for measuring attack cost only",
        "clean_accuracy": None,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
