"""This CPU's roofline for the peer workload: its peak rates per instruction, its bandwidth, and the
tokens/s no engine could beat at those rates.

Measures, in this process and with `--threads` threads:
- the vector units' peaks (cpu_peaks.cpp, compiled here): float32 FMA, bfloat16 dot (vdpbf16ps)
  and int8 dot (vpdpbusd with AVX-512 VNNI, else vpmaddubsw), each with no memory traffic;
- the best bfloat16 and float32 GEMM rates torch reaches (oneDNN, which runs bf16 on AMX tiles
  where the CPU has them) on large squares and on the model's own shapes at 64 rows;
- read bandwidth twice: over 400 MB (DRAM) and over a buffer the size of one token's weights,
  re-read back to back as decode re-reads the model (on CPUs whose last-level cache holds much of
  the model, this is the rate single-stream decode actually sees).
Then prints the batch workload's matrix work against the GEMM rates (an upper bound on output
tokens/s), and single-stream decode's weight bytes per token against the bandwidth (an upper bound
on decode tokens/s with SmolLM2's Q4_1 layers and Q8_0 head). Print-only; nothing here is a test.

    python benchmarks/cpu_roofline.py [--threads 2]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import tempfile
import time

import torch
from bench_cpu_linear import timed  # a sibling script: this directory is on sys.path when run as one

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOAD = os.path.join(HERE, "workload.json")
PEAK_NAMES = ("float32 FMA", "bfloat16 dot", "int8 dot")
MODEL_SHAPES = [(64, 576, 960), (64, 576, 576), (64, 576, 3072), (64, 1536, 576), (64, 576, 49152)]  # M, K, N


def load_peaks() -> ctypes.CDLL:
    """cpu_peaks.cpp built into a temporary library (no -march: each function names its target)."""
    from tokenmill_cpu.native_build import compiler

    target = os.path.join(tempfile.mkdtemp(prefix="tokenmill-peaks-"), "cpu_peaks.so")
    flags = ["-O2", "-fopenmp", "-shared", "-fPIC", "-std=c++17"]
    subprocess.run([compiler() or "g++", *flags, os.path.join(HERE, "cpu_peaks.cpp"), "-o", target], check=True)
    lib = ctypes.CDLL(target)
    lib.tm_peak.argtypes, lib.tm_peak.restype = [ctypes.c_int, ctypes.c_int64, ctypes.c_int], ctypes.c_double
    lib.tm_peak_form.argtypes, lib.tm_peak_form.restype = [ctypes.c_int], ctypes.c_char_p
    return lib


def peak_gops(lib: ctypes.CDLL, name: int, threads: int, iters: int = 20_000_000) -> float:
    """Best of 3 runs, in G operations/s (a multiply-accumulate is 2); 0 where the CPU lacks it."""
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        ops = lib.tm_peak(name, iters, threads)
        if ops < 0:
            return 0.0
        best = max(best, ops / (time.perf_counter() - start) / 1e9)
    return best


def gemm_gflops(dtype: torch.dtype, m: int, k: int, n: int) -> float:
    a, b = torch.randn(m, k).to(dtype), torch.randn(n, k).to(dtype)
    return 2 * m * k * n / 1e9 / timed(lambda: torch.nn.functional.linear(a, b), 5)


def read_bandwidth(nbytes: float) -> float:
    """GB/s of summing a float32 buffer of `nbytes`, best of 5 back-to-back passes."""
    data = torch.ones(int(nbytes) // 4)
    return data.numel() * 4 / 1e9 / timed(data.sum, 5)


def workload_figures() -> dict[str, float]:
    """The batch workload's matrix GFLOP and output tokens, and single decode's weight MB per token."""
    from tokenmill.bench.workload import chat_workload
    from tokenmill.loaders.default_model import default_model_path
    from tokenmill.loaders.gguf_checkpoint import GGUFCheckpoint
    from tokenmill.tokenizer import load_tokenizer

    config = GGUFCheckpoint(default_model_path()).config
    work = chat_workload(WORKLOAD, "batch", load_tokenizer(default_model_path()))
    hidden, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    head_dim = hidden // config["num_attention_heads"]
    weights = layers * (hidden * (hidden + 2 * config["num_key_value_heads"] * head_dim) + hidden * hidden
                        + 3 * hidden * inter)  # decoder linears
    head = hidden * config["vocab_size"]  # only for rows that sample
    prompt_tokens = sum(len(p) for p in work.prompts)  # the peer bench runs without prefix caching
    output_tokens = sum(work.output_lens)
    flops = 2 * (prompt_tokens * weights + output_tokens * (weights + head))
    return {"gflop": flops / 1e9, "output_tokens": output_tokens, "prompt_tokens": prompt_tokens,
            "decode_mb": (weights * 20 / 32 + head * 34 / 32) / 1e6}  # Q4_1 layers, Q8_0 head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lib = load_peaks()
    print(f"this machine, {args.threads} threads (shared machines: figures move 10-20% between runs)")
    for i, name in enumerate(PEAK_NAMES):
        print(f"  {name:<13} peak {peak_gops(lib, i, args.threads):8.0f} GOP/s  ({lib.tm_peak_form(i).decode()})")
    gemm = {}
    for dtype in (torch.float32, torch.bfloat16):
        squares = max(gemm_gflops(dtype, n, n, n) for n in (1024, 2048))
        model = sum(2 * m * k * n for m, k, n in MODEL_SHAPES) / 1e9 / sum(
            2 * m * k * n / 1e9 / gemm_gflops(dtype, m, k, n) for m, k, n in MODEL_SHAPES)
        gemm[dtype] = model
        print(f"  {str(dtype)[6:]:<9} GEMM {squares:8.0f} GFLOP/s on squares, "
              f"{model:6.0f} on the model's shapes at 64 rows")
    bandwidth = read_bandwidth(400e6)
    work = workload_figures()
    resident = read_bandwidth(work["decode_mb"] * 1e6)
    print(f"  memory read {bandwidth:6.1f} GB/s over 400 MB, {resident:6.1f} GB/s over "
          f"{work['decode_mb']:.0f} MB (one token's weights) re-read")
    print(f"batch workload: {work['prompt_tokens']} prompt + {work['output_tokens']} output tokens, "
          f"{work['gflop']:.0f} GFLOP of matrix work")
    for dtype, rate in gemm.items():
        print(f"  bound at the {str(dtype)[6:]} GEMM rate, zero other work: "
              f"{work['output_tokens'] / (work['gflop'] / rate):.0f} output tok/s")
    print(f"single-stream decode: {work['decode_mb']:.0f} MB of weights a token -> at most "
          f"{bandwidth * 1e3 / work['decode_mb']:.0f} tok/s at the DRAM bandwidth, "
          f"{resident * 1e3 / work['decode_mb']:.0f} at the model-sized one")


if __name__ == "__main__":
    main()
