"""Micro-benchmark of the CPU plugin's paged attention (print-only): native kernel vs gather + SDPA.

Shapes follow SmolLM2-135M (Hq=9, Hkv=3, D=64, 30 layers): decode batches of 1, 16 and 64 requests at
100 to 400 tokens of context, prefill chunks and a mixed step. Each line is the median time of a
whole step (metadata once, then 30 layers, each with its own cache) of both decode paths, measured
in the same process. For bfloat16 on a CPU with AVX-512 BF16, "native" is the kernel's
avx512_bf16 path and "native generic" its generic path pinned (paged_decode.use_isa).
`--cache-dtypes` instead times float32 activations over float32, float16 and bfloat16 caches (the
CPU's `--dtype auto` takes float16 on AVX-512 BF16), each pinned path the CPU has, decode steps only.
Run: python benchmarks/bench_cpu_attention.py [--dtypes float32] [--threads 1] [--cache-dtypes]
"""

from __future__ import annotations

import argparse
import time

import torch

from tokenmill.interfaces import AttentionBatch, AttentionSpec
from tokenmill_cpu import paged_decode
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
    """Print the median step (build_metadata once, then forward on NUM_LAYERS caches) of each backend.

    The native-kernel backend and the gather + SDPA fallback run interleaved, repeat by repeat, so that
    load from other processes on the machine hits both alike.
    """
    spec = AttentionSpec(9, 3, 64, 16, dtype)
    backends = {"native": CpuAttentionBackend(spec), "gather+sdpa": CpuAttentionBackend(spec, native=False)}
    paths = paged_decode.available_isas()  # empty without the kernel
    if dtype == torch.bfloat16 and len(paths) > 1:  # the native kernel's generic path too
        backends["native generic"] = backends["native"]
    gen = torch.Generator().manual_seed(0)
    batch, num_blocks = make_batch(query_lens, seq_lens, spec.block_size, gen)
    shape = backends["native"].kv_cache_shape(num_blocks)
    caches = [torch.randn(shape, generator=gen).to(dtype) for _ in range(NUM_LAYERS)]
    tokens = sum(query_lens)
    q, k, v = (torch.randn(tokens, heads, 64, generator=gen).to(dtype) for heads in (9, 3, 3))
    times: dict[str, list[float]] = {label: [] for label in backends}
    for _ in range(repeats + 1):  # the first round warms up
        for label, backend in backends.items():
            default = paged_decode.use_isa() if paths else None
            if label == "native generic":
                paged_decode.use_isa("generic")
            t0 = time.perf_counter()
            meta = backend.build_metadata(batch)
            for cache in caches:
                backend.forward(q, k, v, cache, meta, 0.125)
            times[label].append(time.perf_counter() - t0)
            if paths:
                paged_decode.use_isa(default)
    step = {label: sorted(t[1:])[repeats // 2] * 1e3 for label, t in times.items()}
    parts = "  ".join(f"{label} {ms:8.2f} ms" for label, ms in step.items())
    speedup = step["gather+sdpa"] / step["native"]
    generic = f"  generic/native x{step['native generic'] / step['native']:4.2f}" if "native generic" in step else ""
    print(f"{name:<46} {str(dtype).removeprefix('torch.'):<9} step ({NUM_LAYERS} layers): {parts}  x{speedup:4.2f}{generic}")


def time_caches(name: str, query_lens: list[int], seq_lens: list[int], repeats: int) -> None:
    """Print the median step of float32 queries over each cache dtype, on each kernel path here."""
    gen = torch.Generator().manual_seed(0)
    batch, num_blocks = make_batch(query_lens, seq_lens, 16, gen)
    tokens = sum(query_lens)
    q, k, v = (torch.randn(tokens, heads, 64, generator=gen) for heads in (9, 3, 3))
    default, step = paged_decode.use_isa(), {}
    for cache_dtype in (torch.float32, torch.float16, torch.bfloat16):
        backend = CpuAttentionBackend(AttentionSpec(9, 3, 64, 16, torch.float32, cache_dtype))
        caches = [torch.randn(backend.kv_cache_shape(num_blocks), generator=gen).to(cache_dtype) for _ in range(NUM_LAYERS)]
        for isa in paged_decode.available_isas():
            paged_decode.use_isa(isa)
            times = []
            for _ in range(repeats + 1):
                t0 = time.perf_counter()
                meta = backend.build_metadata(batch)
                for cache in caches:
                    backend.forward(q, k, v, cache, meta, 0.125)
                times.append(time.perf_counter() - t0)
            step[f"{str(cache_dtype)[6:]}/{isa}"] = sorted(times[1:])[repeats // 2] * 1e3
        paged_decode.use_isa(default)
    base = step[f"float32/{default_isa()}"]
    parts = "  ".join(f"{label} {ms:7.2f} ms (x{base / ms:4.2f})" for label, ms in step.items())
    print(f"{name:<30} float32 queries, cache/path: {parts}")


def default_isa() -> str:
    return paged_decode.available_isas()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--cache-dtypes", action="store_true", help="float32 queries over each cache dtype instead")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.cache_dtypes:
        if not paged_decode.available_isas():
            raise SystemExit("the native paged decode kernel did not build here (no C++ compiler)")
        for batch, ctx in ((1, 350), (16, 250), (64, 250), (64, 400)):
            time_caches(f"decode B={batch} ctx {ctx}", [1] * batch, [ctx] * batch, args.repeats)
        return
    for dtype in (getattr(torch, d) for d in args.dtypes.split(",")):
        for batch in (1, 16, 64):
            for ctx in (100, 250, 400):
                time_case(f"decode B={batch} ctx {ctx}", [1] * batch, [ctx] * batch, dtype, args.repeats)
            ragged = [100 + (300 * i) // max(batch - 1, 1) for i in range(batch)]
            time_case(f"decode B={batch} ctx 100..400 (ragged)", [1] * batch, ragged, dtype, args.repeats)
        time_case("prefill 1 x 512 (no cache)", [512], [512], dtype, args.repeats)
        time_case("prefill chunk 128 on 128 cached", [128], [256], dtype, args.repeats)
        time_case("mixed: 63 decodes ctx 256 + chunk 128 on 128", [1] * 63 + [128], [256] * 64, dtype, args.repeats)


if __name__ == "__main__":
    main()
