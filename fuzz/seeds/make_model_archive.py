"""Writes fuzz/seeds/model_archive/tiny_linear.pt: the smallest TorchScript archive worth starting
from (a 4-to-2 linear layer, 3.7 KB, stored and deflated entries), so that a fuzzing run spends
its mutations on the zip's structure rather than on the weights of a shipped model.

    .venv/bin/python fuzz/seeds/make_model_archive.py
"""

from pathlib import Path

import torch


class TinyLinear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


if __name__ == "__main__":
    torch.manual_seed(0)
    out = Path(__file__).resolve().parent / "model_archive" / "tiny_linear.pt"
    torch.jit.script(TinyLinear().eval()).save(str(out))
    print(f"{out}: {out.stat().st_size} bytes")
