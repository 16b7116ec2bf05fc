"""Batch-1 linears of Llama-3-8B on one GPU: cuBLAS, cuBLASLt and Triton GEMV configs, as weight GB/s.

Run: python benchmarks/cuda/bench_gemv.py [--json out.json]. Each variant is captured in a CUDA
graph that walks enough distinct weight copies (>= 256 MB) that L2 never holds them, then replayed;
the figure is weight bytes read per second, to compare with the HBM copy rate. The Triton GEMVs
launch with programmatic dependent launch where the GPU has it, as they do in the engine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_kernels import copy_bandwidth  # noqa: E402

from tokenmill_triton.gemv import gemv  # noqa: E402

SHAPES = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336),
          "lm_head": (128256, 4096)}
CONFIGS = [(1, 1024, 4), (2, 1024, 4), (2, 2048, 8), (4, 1024, 4), (4, 512, 4), (8, 512, 4), (8, 1024, 8),
           (16, 1024, 8)]


def _graph_seconds(fn, reps: int = 20) -> float:
    """Seconds of one call of `fn` replayed in a CUDA graph (after a warm-up outside it)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e-3 / reps


def bench_shape(n: int, k: int) -> dict:
    """GB/s of each variant for an [n, k] bf16 weight and one input row."""
    nbytes = n * k * 2
    copies = max(2, -(-(256 << 20) // nbytes))
    weights = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    ref = F.linear(x.float(), weights[0].float())  # [rows, n]
    result = {}

    def run(fn):
        secs = _graph_seconds(lambda: [fn(w) for w in weights])
        return round(copies * nbytes / secs / 1e9, 1)

    result["cublas"] = run(lambda w: F.linear(x, w))
    torch.backends.cuda.preferred_blas_library("cublaslt")
    result["cublaslt"] = run(lambda w: F.linear(x, w))
    torch.backends.cuda.preferred_blas_library("cublas")
    for cfg in CONFIGS:
        err = ((gemv(x, weights[0], config=cfg).float() - ref).abs().max() / ref.abs().max()).item()
        result["triton" + "x".join(map(str, cfg))] = run(lambda w, c=cfg: gemv(x, w, config=c)) if err < 1e-2 else f"err {err}"
    del weights
    torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    result = {"device": torch.cuda.get_device_name(), "copy_bandwidth_GBs": round(copy_bandwidth() / 1e9, 1)}
    for name, (n, k) in SHAPES.items():
        result[name] = bench_shape(n, k)
        print(json.dumps({name: result[name]}), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
