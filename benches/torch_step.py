#!/usr/bin/env python3
"""The PyTorch CPU baseline for the MiniLM training step of `overhead --model minilm`.

all-MiniLM-L6-v2 (the same model.safetensors, Hugging Face's BertModel architecture written
out in torch), mean pooling under the mask, a linear spam/ham head, cross-entropy, Adam at lr
5e-5: one step on a batch of 16 mails of 64 tokens (the bench's batches are 16 mails cut at 64
tokens; SpamAssassin mails are nearly all longer). Prints the median time of a step.

    python3 benches/torch_step.py [MODEL_DIR] [--threads N] [--steps N]

MODEL_DIR defaults to target/data/all-MiniLM-L6-v2 (scripts/fetch-minilm). Needs torch
(`python3 -m pip install torch`; the CPU is enough) and numpy.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# The numpy reference's reader (float64 arrays), made f32 torch parameters below.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from minilm_reference import read_safetensors  # noqa: E402


def parameters(path):
    return {k: torch.nn.Parameter(torch.tensor(v.astype(np.float32))) for k, v in read_safetensors(path).items()}


class MailClassifier(torch.nn.Module):
    def __init__(self, config, weights):
        super().__init__()
        self.config = config
        self.w = torch.nn.ParameterDict({k.replace(".", "__"): v for k, v in weights.items()})
        self.head = torch.nn.Linear(config["hidden_size"], 2)

    def p(self, name):
        return self.w[name.replace(".", "__")]

    def linear(self, x, name):
        return F.linear(x, self.p(f"{name}.weight"), self.p(f"{name}.bias"))

    def norm(self, x, name):
        d = self.config["hidden_size"]
        eps = self.config["layer_norm_eps"]
        return F.layer_norm(x, (d,), self.p(f"{name}.weight"), self.p(f"{name}.bias"), eps)

    def forward(self, ids, mask):
        c = self.config
        n, length = ids.shape
        heads, d = c["num_attention_heads"], c["hidden_size"]
        dh = d // heads
        x = (
            F.embedding(ids, self.p("embeddings.word_embeddings.weight"))
            + self.p("embeddings.position_embeddings.weight")[:length][None]
            + self.p("embeddings.token_type_embeddings.weight")[0][None, None]
        )
        x = self.norm(x, "embeddings.LayerNorm")
        bias = (1.0 - mask)[:, None, None, :] * torch.finfo(torch.float32).min
        for i in range(c["num_hidden_layers"]):
            p = f"encoder.layer.{i}"

            def split(y):
                return y.reshape(n, length, heads, dh).transpose(1, 2)

            q = split(self.linear(x, f"{p}.attention.self.query"))
            k = split(self.linear(x, f"{p}.attention.self.key"))
            v = split(self.linear(x, f"{p}.attention.self.value"))
            probs = torch.softmax(q @ k.transpose(2, 3) / dh**0.5 + bias, dim=-1)
            context = (probs @ v).transpose(1, 2).reshape(n, length, d)
            x = self.norm(self.linear(context, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
            inner = F.gelu(self.linear(x, f"{p}.intermediate.dense"))
            x = self.norm(self.linear(inner, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
        pooled = (x * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)
        return self.head(pooled)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", default="target/data/all-MiniLM-L6-v2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = json.load(open(f"{args.model}/config.json"))
    model = MailClassifier(config, parameters(f"{args.model}/model.safetensors"))
    optim = torch.optim.Adam(model.parameters(), lr=5e-5)
    g = torch.Generator().manual_seed(0)
    times = []
    for step in range(args.steps + 2):
        ids = torch.randint(1000, config["vocab_size"], (16, 64), generator=g)
        mask = torch.ones(16, 64)
        labels = torch.randint(0, 2, (16,), generator=g)
        start = time.perf_counter()
        loss = F.cross_entropy(model(ids, mask), labels)
        optim.zero_grad()
        loss.backward()
        optim.step()
        if step >= 2:  # two warm-up steps
            times.append(time.perf_counter() - start)
    print(
        f"pytorch {torch.__version__} CPU, {args.threads} threads: MiniLM training step (batch 16 x 64 tokens, Adam) "
        f"median {1000 * statistics.median(times):.0f} ms over {len(times)} steps "
        f"(min {1000 * min(times):.0f}, max {1000 * max(times):.0f})"
    )


if __name__ == "__main__":
    main()
