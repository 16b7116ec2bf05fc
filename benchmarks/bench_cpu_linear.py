"""Dense float32 and bfloat16 GEMMs vs the CPU plugin's packed linears (native blocks on every
instruction-set path this CPU runs, and torch's kernels), on SmolLM2-135M's shapes.

Each layer gets its own weights, so a pass streams ~0.5 GB of float32 from memory as a real
decode step does (one layer's weights would sit in cache and flatter float32). Prints ms per
pass over all 30 layers and the head for each row count, and the ratio to float32, measured in this
process. Decoder layers run int4 and the head int8, as the default model does: "avx512_vnni",
"avx2" and "portable" are the plugin's Q4_1/Q8_0 block kernels on that path, "torch" is torch's
packed kernels (the no-compiler fallback; above 24 rows they hand over to the float32 weight).
The block kernels are timed alone, at every row count (no dense weight kept). "bf16 pre" is the
bf16 weight prepacked for oneDNN (tokenmill_cpu.dense_gemm, what a bf16 model's wide steps run).

    python benchmarks/bench_cpu_linear.py [--rows 1 8 32 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from tokenmill_cpu.dense_gemm import DenseGemm, prepacking_available
from tokenmill_cpu.linear_methods import BlockLinearMethod, Int4LinearMethod, Int8LinearMethod
from tokenmill_cpu.quant_matmul import available_isas, quant_matmul

LAYERS = 30
SHAPES = [(960, 576), (576, 576), (3072, 576), (576, 1536)]  # qkv, o, gate_up, down: [N, K]
HEAD = (49152, 576)  # the tied output head


def timed(fn, repeats: int) -> float:
    """Best-of-`repeats` seconds for one call (the best is the least disturbed by other work)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4, 8, 16, 24, 32, 64])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weights = [[torch.randn(n, k) * 0.02 for n, k in SHAPES] for _ in range(LAYERS)]
    head = torch.randn(*HEAD) * 0.02
    kinds = {"torch": (Int4LinearMethod(), Int8LinearMethod())}
    never = {torch.float32: None, torch.bfloat16: None}  # blocks at every width: no dense weight kept
    for isa in available_isas()[::-1]:
        kinds[isa] = (BlockLinearMethod("int4", quant_matmul("q4_1", isa), never),
                      BlockLinearMethod("int8", quant_matmul("q8_0", isa), never))
    packed = {kind: [(int4, int4.pack(w), w.shape[1]) for layer in weights for w in layer]
              + [(int8, int8.pack(head), HEAD[1])] for kind, (int4, int8) in kinds.items()}
    dense16 = [w.bfloat16() for layer in weights for w in layer] + [head.bfloat16()]
    prepacked = [DenseGemm(w) for w in dense16] if prepacking_available() else []
    header = f"{'rows':>5} {'float32 ms':>11} {'bf16 ms':>8} {'x':>6} {'bf16 pre ms':>12} {'x':>6}"
    print(header + "".join(f" {kind + ' ms':>14} {'x':>6}" for kind in packed))
    with torch.inference_mode():
        for rows in args.rows:
            inputs = {k: torch.randn(rows, k) for k in {k for _, k in SHAPES}}

            def dense() -> None:
                for w in [w for layer in weights for w in layer] + [head]:
                    F.linear(inputs[w.shape[1]], w)

            def dense_bf16() -> None:
                for w in dense16:
                    F.linear(inputs[w.shape[1]].bfloat16(), w)

            def dense_prepacked() -> None:
                for gemm in prepacked:
                    gemm(inputs[gemm.shape[1]].bfloat16())

            def run(kind: str) -> None:
                for method, state, cols in packed[kind]:
                    method.apply(state, inputs[cols])

            base = timed(dense, args.repeats)
            bf16 = timed(dense_bf16, args.repeats)
            line = f"{rows:>5} {base * 1e3:>11.1f} {bf16 * 1e3:>8.1f} {base / bf16:>6.2f}"
            pre = timed(dense_prepacked, args.repeats) if prepacked else float("nan")
            line += f" {pre * 1e3:>12.1f} {base / pre:>6.2f}"
            for kind in packed:
                took = timed(lambda: run(kind), args.repeats)
                line += f" {took * 1e3:>14.1f} {base / took:>6.2f}"
            print(line)


if __name__ == "__main__":
    main()
