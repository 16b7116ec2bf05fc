"""GPTQ/AWQ-style int4 layers (groups of 128) on the CPU plugin: its two int4_groups paths against
dequantize-then-matmul and the dense float32 GEMM, on a 1B-class model's shapes.

"blocks" is the native Q4_1 block kernel fed the checkpoint's own codes (quant_matmul.cpp, best
instruction set here), "torch" torch's int4 kernel at the checkpoint's group size, "dq+mm"
dequantizes the stored codes to float32 every call and runs torch's GEMM (what a loader that
keeps only the codes would do), "dense" the float32 GEMM on a weight dequantized once (the memory
cost int4 avoids). Several copies of each weight are cycled so the caches do not hold them.
Prints ms per call and the ratio to dense, measured in this process; say the load average with it.

    python benchmarks/bench_cpu_int4_groups.py [--rows 1 8 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from tokenmill.interfaces import StoredInt4
from tokenmill.loaders.int4_formats import dequantize_int4
from tokenmill_cpu.linear_methods import Int4GroupsLinearMethod, linear_method

SHAPES = {"qkv 2560x2048": (2560, 2048), "gate_up 11264x2048": (11264, 2048), "down 2048x5632": (2048, 5632)}
GROUP, COPIES = 128, 4


def stored(n: int, k: int, gen: torch.Generator) -> StoredInt4:
    return StoredInt4(torch.randint(0, 16, (n, k), generator=gen).to(torch.uint8),
                      (torch.rand(n, k // GROUP, generator=gen) * 0.01 + 1e-3).half().float(),
                      torch.randint(0, 16, (n, k // GROUP), generator=gen).float(), GROUP)


def seconds(fns, reps: int) -> float:
    for fn in fns:
        fn()
    start = time.perf_counter()
    for _ in range(reps):
        for fn in fns:
            fn()
    return (time.perf_counter() - start) / reps / len(fns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    blocks, torch_int4 = linear_method("int4_groups"), Int4GroupsLinearMethod()
    print(f"threads {args.threads}, load average {os.getloadavg()[0]:.1f}, blocks: {type(blocks).__name__}")
    for label, (n, k) in SHAPES.items():
        weights = [stored(n, k, gen) for _ in range(COPIES)]
        dense = [dequantize_int4(w) for w in weights]
        # crossover pinned out of the way so each path is timed alone at every row count
        packed = [(blocks.pack_stored(w, d), torch_int4.pack_stored(w, d.bfloat16()))
                  for w, d in zip(weights, dense)]
        for p, _ in packed:
            p.max_packed_rows = 1 << 30
        for _, p in packed:
            p.max_packed_rows, p.dense = 1 << 30, None
        for rows in args.rows:
            x = torch.randn(rows, k, generator=gen)
            xb = x.bfloat16()
            base = seconds([lambda d=d: F.linear(x, d) for d in dense], args.reps)
            times = {"blocks": seconds([lambda p=p: blocks.apply(p, x) for p, _ in packed], args.reps),
                     "torch": seconds([lambda p=p: torch_int4.apply(p, xb) for _, p in packed], args.reps),
                     "dq+mm": seconds([lambda w=w: F.linear(x, dequantize_int4(w)) for w in weights], args.reps)}
            cells = " | ".join(f"{name} {t * 1e3:7.2f} ms ({base / t:4.2f}x)" for name, t in times.items())
            print(f"{label:20s} rows {rows:3d}: dense fp32 {base * 1e3:7.2f} ms | {cells}", flush=True)


if __name__ == "__main__":
    main()
