#!/usr/bin/env python3
"""An independent reference for the MiniLM port: Hugging Face's BertModel forward pass and
sentence-transformers' pooling, written in numpy (float64) over the same model.safetensors.

    python3 scripts/minilm_reference.py MODEL_DIR < batch.json > embeddings.json

stdin: {"ids": [[int]], "mask": [[0|1]]} (token ids from tokenizer.json, padded);
stdout: [[float]], one L2-normalised embedding per row. Needs numpy only.
"""
import json
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        array = np.frombuffer(data[start:end], dtype=DTYPES[info["dtype"]])
        tensors[name] = array.reshape(info["shape"]).astype(np.float64)
    return tensors


def layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def erf(x):
    # math.erf element-wise: numpy has no erf, and the exact GELU needs it.
    from math import erf as scalar_erf

    return np.vectorize(scalar_erf)(x)


def gelu(x):
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def main():
    model_dir = sys.argv[1]
    config = json.load(open(f"{model_dir}/config.json"))
    t = read_safetensors(f"{model_dir}/model.safetensors")
    batch = json.load(sys.stdin)
    ids = np.array(batch["ids"], dtype=np.int64)
    mask = np.array(batch["mask"], dtype=np.float64)
    n, length = ids.shape
    eps = config["layer_norm_eps"]
    heads = config["num_attention_heads"]
    d = config["hidden_size"]
    dh = d // heads

    def linear(x, name):
        return x @ t[f"{name}.weight"].T + t[f"{name}.bias"]

    def norm(x, name):
        return layer_norm(x, t[f"{name}.weight"], t[f"{name}.bias"], eps)

    x = (
        t["embeddings.word_embeddings.weight"][ids]
        + t["embeddings.position_embeddings.weight"][np.arange(length)][None]
        + t["embeddings.token_type_embeddings.weight"][0][None, None]
    )
    x = norm(x, "embeddings.LayerNorm")
    bias = (1.0 - mask)[:, None, None, :] * np.finfo(np.float64).min
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}"

        def split(y):
            return y.reshape(n, length, heads, dh).transpose(0, 2, 1, 3)

        q = split(linear(x, f"{p}.attention.self.query"))
        k = split(linear(x, f"{p}.attention.self.key"))
        v = split(linear(x, f"{p}.attention.self.value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh) + bias
        scores -= scores.max(-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(n, length, d)
        x = norm(linear(context, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
        inner = gelu(linear(x, f"{p}.intermediate.dense"))
        x = norm(linear(inner, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
    pooled = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    json.dump(pooled.tolist(), sys.stdout)


if __name__ == "__main__":
    main()
