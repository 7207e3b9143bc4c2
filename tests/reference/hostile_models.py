"""Model files built to attack the server, for tests/security.rs.

Usage: hostile_models.py OUT_DIR. Writes into OUT_DIR:

- climb.pt, absolute.pt: zip archives with an entry named "../..." or "/...";
- bomb.pt: an archive whose one deflated entry inflates a thousandfold (a zip bomb);
- lying.pt: a TorchScript file whose central directory claims an entry larger than the file;
- not_torchscript.pt: a well-formed zip that lacks the entries every TorchScript file has;
- memory_hog.pt and memory_hog.json: a real TorchScript model for 8x8 digits whose forward pass
  holds about 1.5 GiB before it answers, to run past a worker's memory limit.
"""

import json
import struct
import sys
import zipfile
from pathlib import Path

import torch
from torch import nn


def write_zip(path, entries, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in entries:
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=compression)


class MemoryHog(nn.Module):
    def forward(self, x):
        held = []
        for _ in range(24):
            held.append(torch.rand(16 << 20))
        # Keep holding it a few seconds, as a real runaway model would.
        total = torch.zeros(1)
        for i in range(240):
            total = total + held[i % 24].sum() * 0.0
        total = total + torch.stack([h[:1] for h in held]).sum()
        return x.reshape(x.shape[0], -1)[:, :10] * 0.0 + total


def lying(path, source):
    data = bytearray(Path(source).read_bytes())
    end = data.rfind(b"PK\x05\x06")
    directory = struct.unpack_from("<I", data, end + 16)[0]
    if directory == 0xFFFFFFFF:
        locator = data.rfind(b"PK\x06\x07")
        record = struct.unpack_from("<Q", data, locator + 8)[0]
        directory = struct.unpack_from("<Q", data, record + 48)[0]
    # The first entry now claims 1 GiB compressed and uncompressed.
    struct.pack_into("<II", data, directory + 20, 1 << 30, 1 << 30)
    Path(path).write_bytes(bytes(data))


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    write_zip(out / "climb.pt", [("m/data.pkl", b"x"), ("m/version", b"3"), ("../../etc/cron.d/x", b"x")])
    write_zip(out / "absolute.pt", [("m/data.pkl", b"x"), ("m/version", b"3"), ("/etc/passwd", b"x")])
    write_zip(out / "bomb.pt", [("m/data.pkl", b"\0" * (64 << 20)), ("m/version", b"3")], zipfile.ZIP_DEFLATED)
    write_zip(out / "not_torchscript.pt", [("docs/readme.txt", b"hello")])

    torch.manual_seed(0)
    hog = torch.jit.script(MemoryHog())
    hog.save(str(out / "memory_hog.pt"))
    lying(out / "lying.pt", out / "memory_hog.pt")
    card = {
        "name": "memory_hog",
        "task": "classification",
        "input": {"shape": [1, 8, 8], "datatype": "FP32", "domain": [0.0, 1.0]},
        "num_classes": 10,
        "training": "not trained: a forward pass that holds about 1.5 GiB",
    }
    (out / "memory_hog.json").write_text(json.dumps(card))


if __name__ == "__main__":
    main()
