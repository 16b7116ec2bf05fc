"""MoE figures on one GPU: a random-weight Qwen3-30B-A3B-shaped model in bf16 (issue 19).

Phases: `op` the Triton fused_moe on one layer's experts against the core reference (decode:
weight bandwidth of the 8 routed experts; prefill: TFLOP/s); `startup` LLM(...) with every CUDA
graph captured; `single` single-stream decode at a 1k context against the bandwidth roofline of
the bytes one token reads (attention, router, the 8 routed experts of every layer, the head, the
KV cache); `throughput` the 500-request workload of bench_e2e.py. --layers trims the depth (the
lent machine's disk and time); the roofline is computed for the depth that ran.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import random_moe  # noqa: E402
from bench_e2e import _generate, _tokens, bench_throughput, start_llm  # noqa: E402
from bench_kernels import copy_bandwidth  # noqa: E402


def _time_ms(fn, reps: int = 20) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def bench_op(cfg: dict) -> dict:
    """One layer's fused_moe: Triton vs the core reference, decode (T=1) and prefill (T=2048)."""
    from tokenmill.ops import fused_moe as reference
    from tokenmill.ops.fused_moe import route
    from tokenmill_triton.fused_moe import fused_moe

    e, h, i, k = cfg["num_experts"], cfg["hidden_size"], cfg["moe_intermediate_size"], cfg["num_experts_per_tok"]
    w13 = torch.randn(e, 2 * i, h, device="cuda", dtype=torch.bfloat16) * h**-0.5
    w2 = torch.randn(e, h, i, device="cuda", dtype=torch.bfloat16) * i**-0.5
    out = {}
    for tokens in (1, 16, 2048):
        x = torch.randn(tokens, h, device="cuda", dtype=torch.bfloat16)
        weights, ids = route(torch.randn(tokens, e, device="cuda"), k, True)
        got, want = fused_moe(x, w13, w2, weights, ids), reference.fused_moe(x, w13, w2, weights, ids)
        ms = _time_ms(lambda: fused_moe(x, w13, w2, weights, ids))
        ref_ms = _time_ms(lambda: reference.fused_moe(x, w13, w2, weights, ids), reps=5)
        active = torch.unique(ids).numel()
        out[f"op_T{tokens}"] = {"triton_ms": ms, "reference_ms": ref_ms, "speedup": ref_ms / ms,
                                "max_err": (got.float() - want.float()).abs().max().item(),
                                "weight_GBs": active * 3 * h * i * 2 / ms / 1e6,
                                "TFLOPs": tokens * k * 6 * h * i / ms / 1e9}
    return out


def bench_single(llm, cfg: dict, rng: torch.Generator, bandwidth: float) -> dict:
    """Decode rate of one stream at a 1k prompt, 256 / (t(1 + 256 tokens) - t(1 token)), median of 3."""
    _generate(llm, [_tokens(rng, 1024, 128256)], 2, temperature=0.0)
    decode = []
    for _ in range(3):
        first = _generate(llm, [_tokens(rng, 1024, 128256)], 1, temperature=0.0)
        full = _generate(llm, [_tokens(rng, 1024, 128256)], 257, temperature=0.0)
        decode.append(256 / (full - first))
    bytes_ = random_moe.active_bytes(cfg)
    kv = cfg["num_hidden_layers"] * 2 * cfg["num_key_value_heads"] * cfg["head_dim"] * 2 * (1024 + 128)
    median = sorted(decode)[1]
    roofline = bandwidth / (bytes_["active"] + kv)
    return {"single_tok_s": median, "single_runs": decode, "roofline_tok_s": roofline,
            "single_of_roofline": median / roofline, "active_GB_per_token": (bytes_["active"] + kv) / 1e9,
            "all_weights_GB": bytes_["all_weights"] / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="/tmp/qwen3-moe-random")
    parser.add_argument("--layers", type=int, default=48, help="decoder layers (48 in the real model)")
    parser.add_argument("--phases", default="op,startup,single,throughput")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    phases, folder = args.phases.split(","), Path(args.model_dir)
    shape = random_moe.fit_layers(dict(random_moe.QWEN3_30B_A3B, num_hidden_layers=args.layers), folder)
    cfg = random_moe.config_dict(shape)
    result: dict = {"device": torch.cuda.get_device_name(), "layers": shape["num_hidden_layers"]}
    result["copy_bandwidth_TBs"] = (bandwidth := copy_bandwidth()) / 1e12
    if "op" in phases:
        result.update(bench_op(cfg))
        print(json.dumps(result), flush=True)
    if not {"startup", "single", "throughput"} & set(phases):
        return print(json.dumps(result, indent=1))
    if not (folder / "config.json").exists():
        start = time.perf_counter()
        random_moe.write_model(folder, shape, device="cuda")
        result["write_model_s"] = time.perf_counter() - start
    rng = torch.Generator().manual_seed(0)
    llm, startup = start_llm(folder)
    result.update(startup)
    print(json.dumps(result), flush=True)
    _generate(llm, [_tokens(rng, 64, 128256) for _ in range(8)], 8, temperature=0.0)  # warm-up
    if "single" in phases:
        result.update(bench_single(llm, cfg, rng, bandwidth))
        print(json.dumps(result), flush=True)
    if "throughput" in phases:
        result.update(bench_throughput(llm, rng, 0.0))
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    os._exit(0)


if __name__ == "__main__":
    main()
