"""Dense float32 vs the CPU plugin's packed int4/int8 linears, on SmolLM2-135M's 30 layers of shapes.

Each layer gets its own weights, so a pass streams ~0.5 GB of float32 from memory as a real
decode step does (one layer's weights would sit in cache and flatter float32). Prints ms per
pass over all 30 layers for each row count, and the ratio to float32, measured in this process.

    python benchmarks/bench_cpu_linear.py [--rows 1 8 32 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from tokenmill_cpu.linear_methods import Int4LinearMethod, Int8LinearMethod

LAYERS = 30
SHAPES = [(1728, 576), (576, 576), (3072, 576), (576, 1536)]  # qkv, o, gate_up, down: [N, K]
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
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weights = [[torch.randn(n, k) * 0.02 for n, k in SHAPES] for _ in range(LAYERS)] + [[torch.randn(*HEAD) * 0.02]]
    int4, int8 = Int4LinearMethod(), Int8LinearMethod()
    packed = {
        "int4": [[(int4, int4.pack(w)) for w in layer] for layer in weights[:-1]] + [[(int8, int8.pack(weights[-1][0]))]],
        "int8": [[(int8, int8.pack(w)) for w in layer] for layer in weights],
    }
    print(f"{'rows':>5} {'float32 ms':>11} {'int4 ms':>9} {'x':>6} {'int8 ms':>9} {'x':>6}")
    with torch.inference_mode():
        for rows in args.rows:
            inputs = {k: torch.randn(rows, k) for k in {k for _, k in SHAPES}}

            def dense() -> None:
                for layer in weights:
                    for w in layer:
                        F.linear(inputs[w.shape[1]], w)

            def run(kind: str) -> None:
                for layer in packed[kind]:
                    for method, state in layer:
                        method.apply(state, inputs[state.codes.shape[1] * (2 if method.scheme == "int4" else 1)])

            base = timed(dense, args.repeats)
            t4, t8 = timed(lambda: run("int4"), args.repeats), timed(lambda: run("int8"), args.repeats)
            print(f"{rows:>5} {base * 1e3:>11.1f} {t4 * 1e3:>9.1f} {base / t4:>6.2f} {t8 * 1e3:>9.1f} {base / t8:>6.2f}")


if __name__ == "__main__":
    main()
