"""GPTQ-style int4 (Triton) and fp8 (torch._scaled_mm) linears against the bf16 dense matmul, on Llama-3-8B shapes.

Run: python benchmarks/cuda/bench_quant_linear.py [--json out.json] [--sweep]. Each variant runs in a
CUDA graph over enough distinct weight copies (>= 256 MB) that L2 never holds them; the figure is
microseconds per call and the speed-up over bf16 F.linear at the same shape and row count (> 1 is
faster); "dq+mm" is the dequantize-then-GEMM path at every row count. --sweep also times the int4
GEMM's other tile configurations (each checked against the dense result first).
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from tokenmill.interfaces import StoredFp8
from tokenmill_cuda.fp8_linear import Fp8Method
from tokenmill_triton.int4_matmul import dequantize, int4_matmul, pack_int4

SHAPES = {"o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336)}
ROWS = (1, 2, 4, 16, 64, 256, 1024)
GROUP = 128
GEMM_SWEEP = [(16, 64, 128, 4), (16, 128, 128, 4), (32, 64, 64, 4), (32, 128, 128, 8), (64, 64, 64, 4),
              (64, 128, 64, 4), (16, 32, 256, 4), (64, 128, 128, 8)]


def graph_seconds(fns, reps: int = 10) -> float:
    """Seconds per call of each of `fns` (one per weight copy), replayed in a CUDA graph."""
    def run():
        for fn in fns:
            fn()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e-3 / reps / len(fns)


def weights(n: int, k: int, copies: int):
    out = []
    for _ in range(copies):
        codes = torch.randint(0, 16, (n, k), dtype=torch.uint8, device="cuda")
        scales = torch.rand(n, k // GROUP, device="cuda") * 0.01 + 0.001
        zeros = torch.randint(0, 16, (n, k // GROUP), device="cuda").float()
        dense = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
        fp8 = Fp8Method(rowwise=torch.cuda.get_device_capability() >= (9, 0)).pack_stored(
            StoredFp8((dense.float() * 64).to(torch.float8_e4m3fn), torch.tensor([1 / 64], device="cuda")), dense)
        out.append((pack_int4(codes, scales, zeros, GROUP), dense, fp8))
    return out


def bench(name: str, n: int, k: int, sweep: bool) -> list[dict]:
    copies = max(1, -(-(256 << 20) // (n * k * 2)))  # bf16 bytes
    ws = weights(n, k, copies)
    fp8 = Fp8Method(rowwise=torch.cuda.get_device_capability() >= (9, 0))
    rows_out = []
    for rows in ROWS:
        x = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
        base = graph_seconds([lambda d=d: F.linear(x, d) for _, d, _ in ws])
        row = {"shape": name, "n": n, "k": k, "rows": rows, "bf16_us": base * 1e6}
        row["int4_us"] = graph_seconds([lambda q=q: int4_matmul(x, q) for q, _, _ in ws]) * 1e6
        row["dequant_linear_us"] = graph_seconds([lambda q=q: int4_matmul(x, q, dequant_rows=0) for q, _, _ in ws]) * 1e6
        row["fp8_us"] = graph_seconds([lambda f=f: fp8.apply(f, x) for _, _, f in ws]) * 1e6
        if sweep and rows <= 256:
            configs, key = GEMM_SWEEP, "gemm_config"
            want = F.linear(x.float(), dequantize(ws[0][0], torch.float32))
            row["sweep"] = {}
            for c in configs:
                got = int4_matmul(x, ws[0][0], **{key: c}, dequant_rows=1 << 30).float()
                ok = bool((got - want).abs().max() <= 2e-2 * want.abs().max())
                row["sweep"][str(c)] = graph_seconds([lambda q=q, c=c: int4_matmul(x, q, **{key: c}, dequant_rows=1 << 30)
                                                      for q, _, _ in ws]) * 1e6 if ok else float("inf")
        rows_out.append(row)
        print(f"{name:8s} rows {rows:5d}: bf16 {row['bf16_us']:8.1f} us | int4 {row['int4_us']:8.1f} us "
              f"({row['bf16_us'] / row['int4_us']:.2f}x) | dq+mm {row['dequant_linear_us']:8.1f} us | fp8 {row['fp8_us']:8.1f} us "
              f"({row['bf16_us'] / row['fp8_us']:.2f}x)"
              + (f" | sweep {min(row['sweep'], key=row['sweep'].get)} {min(row['sweep'].values()):.1f} us "
                 f"{' '.join(f'{v:.0f}' for v in row['sweep'].values())}" if "sweep" in row else ""),
              flush=True)
    return rows_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json")
    parser.add_argument("--sweep", action="store_true")
    args = parser.parse_args()
    print(torch.cuda.get_device_name(), "torch", torch.__version__)
    results = [r for name, (n, k) in SHAPES.items() for r in bench(name, n, k, args.sweep)]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
