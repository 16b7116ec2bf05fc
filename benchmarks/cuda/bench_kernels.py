"""Kernel micro-benchmarks on one GPU: decode attention bandwidth against the measured HBM copy rate,
prefill attention TFLOP/s, and the Triton op overrides against the plain-torch references.

Run: python benchmarks/cuda/bench_kernels.py [--json out.json]. Shapes are Llama-3-8B's
(32 query heads, 8 KV heads, head size 128, block size 16, bf16). Every time is the median of
triton.testing.do_bench (CUDA events, warm-up excluded); decode is timed as CUDA-graph replays
(do_bench_cudagraph), since the engine replays decode steps, so Triton's host-side launch cost
(~20-40 us a launch) is left out there and included everywhere else.
"""

from __future__ import annotations

import argparse
import json

import torch
from triton.testing import do_bench, do_bench_cudagraph

from tokenmill.interfaces import AttentionBatch, AttentionSpec
from tokenmill.ops import reference
from tokenmill_triton.backend import TritonAttentionBackend
from tokenmill_triton.decode_attention import decode_attention
from tokenmill_triton.op_table import triton_ops
from tokenmill_triton.prefill_attention import prefill_attention

HQ, HKV, D, S, DTYPE = 32, 8, 128, 16, torch.bfloat16


def copy_bandwidth(num_bytes: int = 4 << 30) -> float:
    """Bytes read + written per second by a large device-to-device copy."""
    src = torch.empty(num_bytes, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    ms = do_bench(lambda: dst.copy_(src), warmup=50, rep=300, return_mode="median")
    del src, dst
    return 2 * num_bytes / (ms * 1e-3)


def _batch(query_lens: list[int], seq_lens: list[int], gen: torch.Generator) -> tuple[AttentionBatch, int]:
    blocks = [-(-s // S) for s in seq_lens]
    perm = torch.randperm(sum(blocks), generator=gen)
    width, start, rows, slots = max(blocks), 0, [], []
    for q, s, n in zip(query_lens, seq_lens, blocks):
        ids = perm[start:start + n].tolist()
        start += n
        rows.append(ids + [0] * (width - n))
        slots += [ids[p // S] * S + p % S for p in range(s - q, s)]
    qsl = [0]
    for q in query_lens:
        qsl.append(qsl[-1] + q)
    batch = AttentionBatch(
        torch.tensor(qsl, dtype=torch.int32, device="cuda"), torch.tensor(seq_lens, dtype=torch.int32, device="cuda"),
        torch.tensor(rows, dtype=torch.int32, device="cuda"), torch.tensor(slots, dtype=torch.int64, device="cuda"),
        list(query_lens), list(seq_lens), max(query_lens), max(seq_lens))
    return batch, sum(blocks)


def bench_decode(bandwidth: float) -> list[dict]:
    """Decode attention alone (cache write excluded), replayed in a CUDA graph as the engine runs it:
    KV bytes read per second vs the copy rate."""
    backend = TritonAttentionBackend(AttentionSpec(HQ, HKV, D, S, DTYPE), "cuda")
    gen, rows = torch.Generator().manual_seed(0), []
    for batch_size, ctx in [(1, 1024), (1, 8192), (1, 32768), (8, 4096), (32, 2048), (64, 1024), (128, 1024), (256, 512)]:
        batch, num_blocks = _batch([1] * batch_size, [ctx] * batch_size, gen)
        cache = torch.randn((2, num_blocks, S, HKV, D), device="cuda", dtype=DTYPE)
        q = torch.randn((batch_size, HQ, D), device="cuda", dtype=DTYPE)
        out = torch.empty_like(q)
        md = backend.build_metadata(batch)
        decode_attention(q, cache, out, md, D**-0.5)  # compile before the graph capture
        ms = do_bench_cudagraph(lambda: decode_attention(q, cache, out, md, D**-0.5), rep=200, return_mode="median")
        kv_bytes = 2 * batch_size * ctx * HKV * D * 2
        rows.append(dict(kernel="decode", batch=batch_size, context=ctx, splits=md.num_splits, us=ms * 1e3,
                         gbps=kv_bytes / (ms * 1e-3) / 1e9, of_copy_bw=kv_bytes / (ms * 1e-3) / bandwidth))
        del cache
    return rows


def bench_prefill() -> list[dict]:
    """Prefill attention (causal, prefix in cache): useful TFLOP/s = 4 * D * Hq * visible pairs."""
    backend = TritonAttentionBackend(AttentionSpec(HQ, HKV, D, S, DTYPE), "cuda")
    gen, rows = torch.Generator().manual_seed(1), []
    for qlens, slens in [([2048], [2048]), ([512] * 4, [512] * 4), ([1024], [4096]), ([256] * 8, [1280] * 8)]:
        batch, num_blocks = _batch(qlens, slens, gen)
        cache = torch.randn((2, num_blocks, S, HKV, D), device="cuda", dtype=DTYPE)
        q = torch.randn((sum(qlens), HQ, D), device="cuda", dtype=DTYPE)
        out = torch.empty_like(q)
        md = backend.build_metadata(batch)
        ms = do_bench(lambda: prefill_attention(q, cache, out, md, D**-0.5), warmup=25, rep=200, return_mode="median")
        pairs = sum(ql * (sl - ql) + ql * (ql + 1) // 2 for ql, sl in zip(qlens, slens))
        rows.append(dict(kernel="prefill", query_lens=qlens[0], requests=len(qlens), context=slens[0], us=ms * 1e3,
                         tflops=4 * D * HQ * pairs / (ms * 1e-3) / 1e12))
    return rows


def bench_ops() -> list[dict]:
    """Each override against its reference at a decode-sized (T = 1) and a prefill-sized step."""
    ops, rows = triton_ops(), []
    cos_sin = torch.randn((8192, D), device="cuda")
    for tokens in (1, 64, 2048):
        x = torch.randn((tokens, 4096), device="cuda", dtype=DTYPE)
        res, w = torch.randn_like(x), torch.randn(4096, device="cuda", dtype=DTYPE)
        gate_up = torch.randn((tokens, 2 * 14336), device="cuda", dtype=DTYPE)
        qkv = torch.randn((tokens, 6144), device="cuda", dtype=DTYPE)
        q, k = qkv[:, :4096], qkv[:, 4096:5120]
        pos = torch.randint(0, 8192, (tokens,), device="cuda")
        cases = {
            "fused_add_rms_norm": lambda f: f(x, res, w, 1e-5),
            "silu_and_mul": lambda f: f(gate_up),
            "rotary": lambda f: f(pos, q, k, cos_sin, D),
        }
        for name, call in cases.items():
            ours = do_bench(lambda: call(ops[name]), warmup=25, rep=100, return_mode="median")
            ref = do_bench(lambda: call(getattr(reference, name)), warmup=25, rep=100, return_mode="median")
            rows.append(dict(kernel=name, tokens=tokens, us=ours * 1e3, reference_us=ref * 1e3, speedup=ref / ours))
    logits = torch.randn((128, 128256), device="cuda") * 3
    top_k = torch.full((128,), 50, device="cuda")
    top_p = torch.full((128,), 0.9, device="cuda")
    ours = do_bench(lambda: ops["top_k_top_p"](logits, top_k, top_p), warmup=10, rep=100, return_mode="median")
    ref = do_bench(lambda: reference.top_k_top_p(logits, top_k, top_p), warmup=10, rep=100, return_mode="median")
    rows.append(dict(kernel="top_k_top_p", tokens=128, us=ours * 1e3, reference_us=ref * 1e3, speedup=ref / ours))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None, help="write every row here")
    args = parser.parse_args()
    bandwidth = copy_bandwidth()
    print(f"device {torch.cuda.get_device_name()}: copy bandwidth {bandwidth / 1e12:.2f} TB/s (read + write)")
    rows = bench_decode(bandwidth) + bench_prefill() + bench_ops()
    for row in rows:
        print("  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": torch.cuda.get_device_name(), "copy_bandwidth": bandwidth, "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
