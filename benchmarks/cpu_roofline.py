"""What this CPU can do at best on the batch workload: measured peak rates against the work it needs.

Counts the batch workload's matrix arithmetic (SmolLM2-135M's linears and output head, prompt
tokens after the shared chat-template prefix, which prefix caching computes once, plus every
generated token), measures this machine's fastest float32 and bfloat16 matmul rates and its memory
read bandwidth in this process, and prints the output tokens/s no engine could beat at those
rates, next to the peers' figures quoted in issue 4. Print-only; nothing here is a test.

    python benchmarks/cpu_roofline.py [--threads 2]
"""

from __future__ import annotations

import argparse
import os

import torch
from bench_cpu_linear import timed  # a sibling script: this directory is on sys.path when run as one

WORKLOAD = os.path.join(os.path.dirname(__file__), "workload.json")
PEERS = {"vLLM CPU (bf16)": 463.0, "llama.cpp BF16 GGUF": 348.0, "transformers (bf16)": 216.0}


def best_rate(fn, work: float, repeats: int = 5) -> float:
    """`work` units per second of the fastest of `repeats` calls (after one warm-up call)."""
    return work / timed(fn, repeats)


def matmul_gflops(dtype: torch.dtype, m: int, k: int, n: int) -> float:
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    return best_rate(lambda: a @ b, 2 * m * k * n / 1e9)


# square ones, and the model's own gate/up and head shapes at prefill-sized row counts
SHAPES = [(1024, 1024, 1024), (2048, 2048, 2048), (256, 576, 3072), (512, 576, 3072), (1024, 576, 3072),
          (512, 1536, 576), (256, 576, 49152)]


def workload_flops() -> tuple[float, int, int, int]:
    """(matrix GFLOP of the batch workload, output tokens, computed prompt tokens, shared prefix)."""
    from tokenmill.bench.workload import chat_workload
    from tokenmill.loaders.default_model import default_model_path
    from tokenmill.loaders.gguf_checkpoint import GGUFCheckpoint
    from tokenmill.tokenizer import load_tokenizer

    config = GGUFCheckpoint(default_model_path()).config
    work = chat_workload(WORKLOAD, "batch", load_tokenizer(default_model_path()))
    hidden, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    head_dim = hidden // config["num_attention_heads"]
    qkv = hidden * (hidden + 2 * config["num_key_value_heads"] * head_dim)
    per_token = 2 * layers * (qkv + hidden * hidden + 3 * hidden * inter)  # decoder linears
    head = 2 * hidden * config["vocab_size"]  # only for rows that sample
    prefix = len(os.path.commonprefix(work.prompts))
    prompt_tokens = sum(len(p) for p in work.prompts) - (len(work.prompts) - 1) * prefix
    output_tokens = sum(work.output_lens)
    flops = prompt_tokens * per_token + output_tokens * (per_token + head)
    return flops / 1e9, output_tokens, prompt_tokens, prefix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gflop, output_tokens, prompt_tokens, prefix = workload_flops()
    fp32 = max(matmul_gflops(torch.float32, *shape) for shape in SHAPES)
    bf16 = matmul_gflops(torch.bfloat16, 512, 512, 512)
    data = torch.ones(50_000_000)
    bandwidth = best_rate(data.sum, data.numel() * 4 / 1e9)
    print(f"batch workload: {prompt_tokens} computed prompt tokens (shared prefix {prefix}), "
          f"{output_tokens} output tokens, {gflop:.0f} GFLOP of matrix work")
    print(f"this machine ({args.threads} threads): float32 matmul {fp32:.0f} GFLOP/s (best of {len(SHAPES)} shapes), bfloat16 matmul "
          f"{bf16:.2f} GFLOP/s, memory read {bandwidth:.1f} GB/s")
    bound = output_tokens / (gflop / fp32)
    print(f"upper bound at the float32 peak, with zero other work: {bound:.0f} output tok/s")
    for name, figure in PEERS.items():
        verdict = "above" if figure > bound else "below"
        print(f"  {name}: {figure:.0f} tok/s quoted, {verdict} that bound (needs {gflop / (output_tokens / figure):.0f} GFLOP/s)")


if __name__ == "__main__":
    main()
