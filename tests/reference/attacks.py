"""Reference attacks for robustd's differential tests.

Reads a JSON job on stdin:
    {"model": path, "card": path, "data": path, "n": int, "seed": int, "out": path,
     "attacks": [{"name": str, "kind": "fgsm" | "pgd" | "pgdl2" | "apgd" | "apgdt", ...settings}]}
runs each attack with torchattacks on the first n samples (one at a time with
"per_sample": true) of the data set, and writes a
safetensors file holding, per attack name, the adversarial examples (`NAME`) and whether each
sample is still classified correctly (`NAME.robust`, 0 or 1).
"""

import json
import sys

import torch
import torchattacks
from safetensors.torch import load_file, save_file


class Normalized(torch.nn.Module):
    """The model with its card's normalisation inside, as robustd attacks it."""

    def __init__(self, model, norm):
        super().__init__()
        self.model = model
        channels = len(norm["mean"]) if norm else 1
        shape = (1, channels, 1, 1)
        self.register_buffer("mean", torch.tensor(norm["mean"] if norm else [0.0]).view(shape))
        self.register_buffer("std", torch.tensor(norm["std"] if norm else [1.0]).view(shape))

    def forward(self, x):
        return self.model((x - self.mean) / self.std)


def build(kind, model, s, num_classes):
    if kind == "fgsm":
        return torchattacks.FGSM(model, eps=s["eps"])
    if kind == "pgd":
        return torchattacks.PGD(model, eps=s["eps"], alpha=s["alpha"], steps=s["steps"],
                                random_start=s["random_start"])
    if kind == "pgdl2":
        return torchattacks.PGDL2(model, eps=s["eps"], alpha=s["alpha"], steps=s["steps"],
                                  random_start=s["random_start"])
    if kind == "apgd":
        return torchattacks.APGD(model, norm=s["norm"], eps=s["eps"], steps=s["steps"],
                                 n_restarts=s.get("restarts", 1), loss=s["loss"], seed=s["seed"])
    if kind == "apgdt":
        return torchattacks.APGDT(model, norm=s["norm"], eps=s["eps"], steps=s["steps"],
                                  n_restarts=s.get("restarts", 1), seed=s["seed"],
                                  n_classes=num_classes)
    raise ValueError(f"unknown attack kind {kind}")


def main():
    job = json.load(sys.stdin)
    torch.set_num_threads(1)
    torch.manual_seed(job["seed"])
    card = json.load(open(job["card"]))
    model = Normalized(torch.jit.load(job["model"]), card.get("normalization")).eval()
    data = load_file(job["data"])
    x, y = data["x"][: job["n"]], data["y"][: job["n"]]
    out = {}
    for attack in job["attacks"]:
        atk = build(attack["kind"], model, attack, card.get("num_classes", 2))
        if attack.get("per_sample"):
            # torchattacks averages the loss over the batch, which shrinks each sample's
            # gradient by the batch size; one sample at a time, its steps are per-sample exact.
            adv = torch.cat([atk(x[i:i + 1], y[i:i + 1]) for i in range(len(y))])
        else:
            adv = atk(x, y)
        with torch.no_grad():
            logits = model(adv)
        out[attack["name"]] = adv.contiguous()
        out[attack["name"] + ".robust"] = (logits.argmax(1) == y).to(torch.int64)
    save_file(out, job["out"])


if __name__ == "__main__":
    main()
