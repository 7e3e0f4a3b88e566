#!/usr/bin/env python3
"""onnxruntime's MatMulNBits, the weight-only low-bit CPU matmul peer of moq's CPU kernel.

A one-node ONNX graph (com.microsoft MatMulNBits: `Y = A · dequant(B)ᵀ`, symmetric blocks of
`--block` along K, the default zero point 2^(bits−1)) is built for each shape, run on
onnxruntime's CPU provider, and timed warm (one session called again and again: its weight
stays in cache) and from DRAM (a stack of sessions, each with its own copy of the weight,
together at least `--stack-bytes`, called in turn as a decoder step calls its layers, so each
call finds its weight evicted; the same stack as cpu_matmul builds for the other contenders).
Prints one JSON line per shape: median seconds warm and from DRAM, the relative error against
numpy's f32 `A @ W` with the dequantized weight, and what ran.

    python3 benches/ort_matmul_nbits.py --bits 4 --level 4 --shape 4096,4096,1

`--level` is onnxruntime's accuracy_level: 1 multiplies in f32, 4 quantizes the activations to
int8 per block and uses integer dot products (VNNI where the CPU has it). Exits 3 with the
reason on stderr when onnxruntime or onnx is not installed (`pip install onnxruntime onnx`).
Unset OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for this command alone if your environment sets
them (they only slow numpy's reference here, not what is timed).
"""

import argparse
import json
import sys
import time

try:
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper
except ImportError as err:  # the caller prints the reason and skips this peer
    print(f"onnxruntime peer unavailable: {err} (pip install onnxruntime onnx numpy)", file=sys.stderr)
    sys.exit(3)

def quantize(w, bits, block):
    """W [K, N] as MatMulNBits' B [N, K/block, block·bits/8] (uint8), scales [N·K/block] and
    the dequantized weight, symmetric per block of K."""
    k, n = w.shape
    blocks = k // block
    qmax = (1 << (bits - 1)) - 1
    wt = w.T.reshape(n, blocks, block)
    scales = np.abs(wt).max(axis=2) / qmax
    scales[scales == 0] = 1.0
    q = np.clip(np.rint(wt / scales[..., None]), -qmax - 1, qmax).astype(np.int32)
    dequant = (q * scales[..., None]).reshape(n, k).T.astype(np.float32)
    u = (q + (1 << (bits - 1))).astype(np.uint8)
    if bits == 4:
        u = u[..., 0::2] | (u[..., 1::2] << 4)  # two codes a byte, the first in the low nibble
    return u.reshape(n, blocks, block * bits // 8), scales.astype(np.float32).reshape(-1), dequant


def session(k, n, bits, block, level, b, scales, threads):
    node = helper.make_node(
        "MatMulNBits", ["A", "B", "scales"], ["Y"], domain="com.microsoft",
        K=k, N=n, bits=bits, block_size=block, accuracy_level=level,
    )
    graph = helper.make_graph(
        [node], "matmul_nbits",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["M", k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", n])],
        initializer=[
            helper.make_tensor("B", TensorProto.UINT8, b.shape, b.tobytes(), raw=True),
            helper.make_tensor("scales", TensorProto.FLOAT, scales.shape, scales.tobytes(), raw=True),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    # Each session has its own thread pool; spinning threads of the sessions a stack has just
    # run would take the cores from the next one (a stack of 16 ran 8x slower). Threads that
    # sleep at once, in every session, warm and from DRAM alike.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def median_time(runs, rounds):
    """The median over `rounds` calls of `runs` in turn, after one untimed pass over them."""
    for run in runs:
        run()
    times = []
    for i in range(rounds):
        start = time.perf_counter()
        runs[i % len(runs)]()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, choices=[4, 8], default=4)
    parser.add_argument("--block", type=int, default=128)
    parser.add_argument("--level", type=int, choices=[1, 4], default=4)
    parser.add_argument("--shape", action="append", required=True, help="K,N,M (repeatable)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="0: onnxruntime's default")
    parser.add_argument("--stack-bytes", type=int, default=128 << 20,
                        help="the from-DRAM stack's weights hold at least this many bytes")
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    for shape in args.shape:
        k, n, m = (int(v) for v in shape.split(","))
        if k % args.block:
            sys.exit(f"K = {k} is not a multiple of the block {args.block}")
        w = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
        x = rng.standard_normal((m, k)).astype(np.float32)
        b, scales, dequant = quantize(w, args.bits, args.block)
        copies = max(2, -(-args.stack_bytes // (b.nbytes + scales.nbytes)))
        runs = [
            (lambda s: lambda: s.run(None, {"A": x})[0])(
                session(k, n, args.bits, args.block, args.level, b.copy(), scales.copy(), args.threads))
            for _ in range(copies)
        ]
        y = runs[0]()
        reference = x @ dequant
        error = float(np.linalg.norm(y - reference) / np.linalg.norm(reference))
        warm = median_time(runs[:1], args.rounds)
        dram = median_time(runs, args.rounds)
        print(json.dumps({
            "k": k, "n": n, "m": m, "bits": args.bits, "block": args.block,
            "accuracy_level": args.level, "warm_s": warm, "dram_s": dram, "rel_error": error,
            "copies": copies,
            "onnxruntime": ort.__version__,
        }))


if __name__ == "__main__":
    main()
