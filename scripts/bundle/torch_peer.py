#!/usr/bin/env python3
"""The cuBLAS peer of the matmul ratio benchmark: torch.matmul in f16 (what a PyTorch user
would otherwise run) on the shapes the benchmark timed, against our W8 and W4 from its CSV.

    python3 torch_peer.py matmul-cuda.csv peer.md

The CSV is what `matmul_ratio --csv` writes (times in microseconds). Inputs are random f16 on
the GPU, [M, K] @ [K, N]; each time is the median over 7 rounds of enough calls for about 50 ms,
timed with CUDA events after a warm-up, as the benchmark itself does. The markdown table goes
to the second file (written whole) and to stdout.
"""

import csv
import os
import statistics
import sys


def time_us(torch, f):
    f()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    f()
    end.record()
    torch.cuda.synchronize()
    once_ms = max(start.elapsed_time(end), 1e-4)
    calls = int(min(max(50.0 / once_ms, 3), 10_000))
    rounds = []
    for _ in range(7):
        start.record()
        for _ in range(calls):
            f()
        end.record()
        torch.cuda.synchronize()
        rounds.append(start.elapsed_time(end) * 1e3 / calls)
    return statistics.median(rounds)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: torch_peer.py MATMUL.csv OUT.md")
    import torch

    if not torch.cuda.is_available():
        sys.exit("torch_peer.py: PyTorch sees no CUDA device")
    with open(sys.argv[1], newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"torch_peer.py: {sys.argv[1]} holds no times")
    torch.manual_seed(0)
    lines = [
        f"## cuBLAS peer: torch.matmul f16 (PyTorch {torch.__version__}, "
        f"{torch.cuda.get_device_name(0)})",
        "",
        "| K×N | M | torch f16 | burn f16 | W8 | W4 | torch/burn f16 | torch/W8 | torch/W4 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    weights = {}
    for row in rows:
        k, n, m = int(row["k"]), int(row["n"]), int(row["m"])
        if (k, n) not in weights:
            weights = {(k, n): torch.randn(k, n, dtype=torch.float16, device="cuda") * 0.05}
        w = weights[(k, n)]
        x = torch.randn(m, k, dtype=torch.float16, device="cuda")
        t = time_us(torch, lambda: torch.matmul(x, w))
        f16, w8, w4 = (float(row[c]) for c in ("f16", "w8", "w4"))
        lines.append(
            f"| {k}×{n} | {m} | {t:.1f} µs | {f16:.1f} µs | {w8:.1f} µs | {w4:.1f} µs "
            f"| {t / f16:.2f} | {t / w8:.2f} | {t / w4:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    tmp = sys.argv[2] + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, sys.argv[2])
    print(text, end="")


if __name__ == "__main__":
    main()
