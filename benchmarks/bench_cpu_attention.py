"""Micro-benchmark of the CPU plugin's paged attention (print-only): decode batches and prefill chunks.

Shapes follow SmolLM2-135M (Hq=9, Hkv=3, D=64, 30 layers). Run: python benchmarks/bench_cpu_attention.py
"""

from __future__ import annotations

import argparse
import time

import torch

from tokenmill.interfaces import AttentionBatch, AttentionSpec
from tokenmill_cpu.attention import CpuAttentionBackend

NUM_LAYERS = 30  # per-step numbers are per-layer times this


def make_batch(query_lens: list[int], seq_lens: list[int], block_size: int, gen: torch.Generator):
    """A random-block-table AttentionBatch and the number of blocks it uses."""
    tables, slots, next_free = [], [], 0
    order = torch.randperm(sum(-(-n // block_size) for n in seq_lens), generator=gen).tolist()
    for q, s in zip(query_lens, seq_lens):
        count = -(-s // block_size)
        table = order[next_free : next_free + count]
        next_free += count
        tables.append(table)
        slots += [table[p // block_size] * block_size + p % block_size for p in range(s - q, s)]
    width = max(len(t) for t in tables)
    starts = [0]
    for q in query_lens:
        starts.append(starts[-1] + q)
    batch = AttentionBatch(
        query_start_loc=torch.tensor(starts, dtype=torch.int32),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
        block_tables=torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32),
        slot_mapping=torch.tensor(slots, dtype=torch.int64),
        query_lens_cpu=list(query_lens),
        seq_lens_cpu=list(seq_lens),
        max_query_len=max(query_lens),
        max_seq_len=max(seq_lens),
    )
    return batch, len(order)


def time_case(name: str, query_lens: list[int], seq_lens: list[int], dtype: torch.dtype, repeats: int) -> None:
    """Print the median step (build_metadata once, then forward on NUM_LAYERS caches) and its parts."""
    spec = AttentionSpec(9, 3, 64, 16, dtype)
    backend = CpuAttentionBackend(spec)
    gen = torch.Generator().manual_seed(0)
    batch, num_blocks = make_batch(query_lens, seq_lens, spec.block_size, gen)
    caches = [torch.randn(backend.kv_cache_shape(num_blocks), generator=gen).to(dtype) for _ in range(NUM_LAYERS)]
    tokens = sum(query_lens)
    q = torch.randn(tokens, 9, 64, generator=gen).to(dtype)
    k = torch.randn(tokens, 3, 64, generator=gen).to(dtype)
    v = torch.randn(tokens, 3, 64, generator=gen).to(dtype)
    meta_times, step_times = [], []
    for _ in range(repeats + 2):
        t0 = time.perf_counter()
        meta = backend.build_metadata(batch)
        t1 = time.perf_counter()
        for cache in caches:
            backend.forward(q, k, v, cache, meta, 0.125)
        meta_times.append(t1 - t0)
        step_times.append(time.perf_counter() - t0)
    meta_ms = sorted(meta_times[2:])[repeats // 2] * 1e3
    step_ms = sorted(step_times[2:])[repeats // 2] * 1e3
    layer_ms = (step_ms - meta_ms) / NUM_LAYERS
    print(f"{name:<44} {str(dtype).removeprefix('torch.'):<9} metadata {meta_ms:7.3f} ms  "
          f"forward/layer {layer_ms:8.3f} ms  step ({NUM_LAYERS} layers) {step_ms:8.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for dtype in (getattr(torch, d) for d in args.dtypes.split(",")):
        time_case("decode B=64 ctx 256", [1] * 64, [256] * 64, dtype, args.repeats)
        time_case("decode B=64 ctx 128..256 (ragged)", [1] * 64, [128 + 2 * i for i in range(64)], dtype, args.repeats)
        for ctx in (100, 256, 350):
            time_case(f"decode B=1 ctx {ctx}", [1], [ctx], dtype, args.repeats)
        time_case("prefill 1 x 512 (no cache)", [512], [512], dtype, args.repeats)
        time_case("mixed: 63 decodes ctx 256 + chunk 128 on 128", [1] * 63 + [128], [256] * 63 + [256], dtype, args.repeats)


if __name__ == "__main__":
    main()
