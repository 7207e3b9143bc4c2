"""Models built to trip robustd's sanity checks, each a wrapper around the shipped digits_cnn.

Usage: trip_models.py MODELS_DIR OUT_DIR. Writes NAME.pt and NAME.json (digits_cnn's card under
the new name) into OUT_DIR:

- digits_step: the input rounded to a coarse grid before the network; every input gradient is
  zero (a non-differentiable step), so gradient attacks cannot move it (gradient masking).
- digits_random: Gaussian noise added to the input on every forward pass (a randomised model).
- digits_softmax: softmax probabilities instead of logits.
- digits_reversed: the same outputs as digits_cnn, but the gradient points the other way
  (value y, gradient -dy): attacks climb the wrong way and random noise beats them.
"""

import json
import sys
from pathlib import Path

import torch
from torch import nn


class Step(nn.Module):
    def __init__(self, base):
        super().__init__()
        self.base = base

    def forward(self, x):
        return self.base(torch.round(x * 2.0) / 2.0)


class Random(nn.Module):
    def __init__(self, base):
        super().__init__()
        self.base = base

    def forward(self, x):
        return self.base(x + 0.5 * torch.randn_like(x))


class Softmax(nn.Module):
    def __init__(self, base):
        super().__init__()
        self.base = base

    def forward(self, x):
        return torch.softmax(self.base(x), dim=1)


class Reversed(nn.Module):
    def __init__(self, base):
        super().__init__()
        self.base = base

    def forward(self, x):
        y = self.base(x)
        return 2.0 * y.detach() - y


def main():
    models, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    card = json.loads((models / "digits_cnn.json").read_text())
    for name, wrapper in [
        ("digits_step", Step),
        ("digits_random", Random),
        ("digits_softmax", Softmax),
        ("digits_reversed", Reversed),
    ]:
        base = torch.jit.load(str(models / "digits_cnn.pt"))
        scripted = torch.jit.script(wrapper(base).eval())
        scripted.save(str(out / f"{name}.pt"))
        mine = dict(card, name=name, training=f"digits_cnn wrapped: {wrapper.__name__}")
        for key in [k for k in mine if k.startswith(("clean_accuracy", "robust_accuracy"))]:
            del mine[key]
        (out / f"{name}.json").write_text(json.dumps(mine, indent=2))


if __name__ == "__main__":
    main()
