"""Drives a robustd server with the official Open Inference Protocol client (tritonclient),
unchanged: health, metadata, and inference with JSON and with binary tensors.

Usage: oip_client.py HOST:PORT DIGITS.safetensors; prints one JSON line with what it saw.
"""

import json
import sys

import numpy as np
import tritonclient.http as http
from safetensors.numpy import load_file


def main():
    url, data = sys.argv[1], sys.argv[2]
    client = http.InferenceServerClient(url=url)
    digits = load_file(data)
    x, y = digits["x"][:16].astype(np.float32), digits["y"][:16]

    seen = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready("digits_cnn"),
        "metadata_inputs": client.get_model_metadata("digits_cnn")["inputs"],
    }
    for binary in (False, True):
        inp = http.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        out = http.InferRequestedOutput("output", binary_data=binary)
        result = client.infer("digits_cnn", [inp], outputs=[out], request_id=f"req-{binary}")
        logits = result.as_numpy("output")
        seen[f"binary={binary}"] = {
            "shape": list(logits.shape),
            "accuracy": float((logits.argmax(1) == y).mean()),
            "id": result.get_response()["id"],
        }
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
