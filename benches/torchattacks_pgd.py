"""The Python peer of `cargo bench --bench attack_cost`: torchattacks' PGD on the same TorchScript
files, the same inputs and the same libtorch settings as the Rust side.

It stays up for the whole benchmark so that its runs interleave with the others. It reads one JSON
command per line on stdin and answers each with one JSON line on stdout:

    {"op": "setup", "threads": 2, "device": "cpu", "optimize": false}
        -> {"torch": "...", "torchattacks": "...", "threads": 2}
    {"op": "load", "name": "digits_cnn", "model": path, "card": path, "data": path}
        (data: a safetensors file with `x` and `y`)  -> {"loaded": "digits_cnn"}
    {"op": "pgd", "name": "digits_cnn", "batch": 32, "eps": 0.1, "alpha": 0.0125, "steps": 20}
        -> {"seconds": 0.0123}   (one call of torchattacks' PGD on the first `batch` samples)
    {"op": "quit"}

As for the other contenders: eval mode, parameters frozen (the attack needs gradients with respect
to the input only), the card's normalisation inside the model, random start on.
"""

import json
import sys
import time

import torch
import torchattacks
from safetensors.torch import load_file


class Normalized(torch.nn.Module):
    """The model with its card's normalisation inside, as robustd attacks it."""

    def __init__(self, model, norm):
        super().__init__()
        self.model = model
        shape = (1, len(norm["mean"]), 1, 1)
        self.register_buffer("mean", torch.tensor(norm["mean"]).view(shape))
        self.register_buffer("std", torch.tensor(norm["std"]).view(shape))

    def forward(self, x):
        return self.model((x - self.mean) / self.std)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    device = torch.device("cpu")
    optimize = True
    models = {}
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        if op == "setup":
            torch.set_num_threads(command["threads"])
            optimize = command["optimize"]
            device = torch.device(command["device"])
            answer = {
                "torch": torch.__version__,
                "torchattacks": torchattacks.__version__,
                "threads": torch.get_num_threads(),
            }
        elif op == "load":
            card = json.load(open(command["card"]))
            model = torch.jit.load(command["model"], map_location=device)
            for parameter in model.parameters():
                parameter.requires_grad_(False)
            norm = card.get("normalization")
            if norm:
                model = Normalized(model, norm)
            model = model.to(device).eval()
            data = load_file(command["data"])
            models[command["name"]] = (model, data["x"].to(device), data["y"].to(device))
            answer = {"loaded": command["name"]}
        elif op == "pgd":
            model, x, y = models[command["name"]]
            n = command["batch"]
            attack = torchattacks.PGD(model, eps=command["eps"], alpha=command["alpha"],
                                      steps=command["steps"], random_start=True)
            images, labels = x[:n], y[:n]
            synchronize(device)
            started = time.perf_counter()
            with torch.jit.optimized_execution(optimize):
                attack(images, labels)
            synchronize(device)
            answer = {"seconds": time.perf_counter() - started}
        elif op == "quit":
            return
        else:
            answer = {"error": f"unknown op {op!r}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
