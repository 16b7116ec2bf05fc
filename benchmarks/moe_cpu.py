"""CPU: a small random Qwen3-MoE-shaped model against the same model dense at equal active parameters.

Usage: python benchmarks/moe_cpu.py [--dtype float32] [--threads N] [--op]
The dense twin has the MoE's attention, embeddings and depth, and one MLP as wide as the top_k
routed experts together (intermediate = K * moe_intermediate), so a token reads and multiplies
the same number of weights in both (the MoE adds only its router). Prints single-stream decode
and 16-prompt batch output tokens/s for both, and MoE / dense. --op also times the fused_moe op
alone: the CPU plugin's grouped-GEMM override against the core reference, per batch size.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "cuda"))
import random_llama  # noqa: E402  (its word-level tokenizer writer)

SHAPE = dict(vocab_size=4096, hidden_size=512, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
             head_dim=64, max_position_embeddings=1024, rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False,
             bos_token_id=1, eos_token_id=2)
EXPERTS, TOP_K, EXPERT_WIDTH = 32, 4, 256


def write_models(root: Path) -> dict[str, Path]:
    """The MoE and its dense twin as transformers writes them, with random weights."""
    from transformers import AutoModelForCausalLM, Qwen3Config, Qwen3MoeConfig

    configs = {
        "moe": Qwen3MoeConfig(**SHAPE, intermediate_size=TOP_K * EXPERT_WIDTH, moe_intermediate_size=EXPERT_WIDTH,
                              num_experts=EXPERTS, num_experts_per_tok=TOP_K, norm_topk_prob=True),
        "dense": Qwen3Config(**SHAPE, intermediate_size=TOP_K * EXPERT_WIDTH),
    }
    configs["moe"].architectures, configs["dense"].architectures = ["Qwen3MoeForCausalLM"], ["Qwen3ForCausalLM"]
    out = {}
    for name, cfg in configs.items():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        with torch.no_grad():
            for param in model.parameters():
                param.normal_(0.0, param.shape[-1] ** -0.5) if param.dim() > 1 else param.fill_(1.0)
        model.save_pretrained(root / name, safe_serialization=True)
        random_llama.write_tokenizer(root / name, SHAPE["vocab_size"])
        out[name] = root / name
    return out


def _rate(llm, prompts: list[list[int]], new: int) -> float:
    from tokenmill import SamplingParams

    params = SamplingParams(max_tokens=new, ignore_eos=True, temperature=0.0)
    start = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - start
    return sum(len(o.outputs[0].token_ids) for o in outs) / seconds


def model_figures(path: Path, dtype: str) -> dict[str, float]:
    """Single-stream decode tok/s (64 new tokens after 1 and after 65: the difference) and batch-16 tok/s."""
    from tokenmill import LLM

    llm = LLM(model=str(path), dtype=dtype, device="cpu")
    gen = torch.Generator().manual_seed(0)
    prompt = lambda n: torch.randint(3, SHAPE["vocab_size"], (n,), generator=gen).tolist()  # noqa: E731
    _rate(llm, [prompt(32)], 8)  # warm-up (native kernels build, allocator settles)
    from tokenmill import SamplingParams

    times = []
    for new in (1, 65):
        start = time.perf_counter()
        llm.generate([prompt(32)], SamplingParams(max_tokens=new, ignore_eos=True, temperature=0.0), use_tqdm=False)
        times.append(time.perf_counter() - start)
    return {"single_tok_s": 64 / (times[1] - times[0]), "batch16_tok_s": _rate(llm, [prompt(64) for _ in range(16)], 64)}


def op_figures(dtype: torch.dtype) -> None:
    """fused_moe alone on this benchmark's expert shapes: the CPU override against the core reference."""
    from tokenmill.ops import fused_moe as reference
    from tokenmill.testing.moe_cases import make_moe_case
    from tokenmill.plugin_manager import load_plugins

    plugins = load_plugins()
    override = plugins.op_overrides(plugins.select("cpu"))["fused_moe"]  # as the engine gets it
    print(f"fused_moe, E={EXPERTS} K={TOP_K} H={SHAPE['hidden_size']} I={EXPERT_WIDTH}, {dtype}: ms per call")
    for tokens in (1, 4, 16, 64, 256):
        case = make_moe_case(tokens, EXPERTS, SHAPE["hidden_size"], EXPERT_WIDTH, TOP_K, dtype, num_empty=0)
        args = (case.x, case.w13, case.w2, case.topk_weights, case.topk_ids)
        ms = [_op_ms(fn, args) for fn in (reference.fused_moe, override)]
        print(f"  T={tokens:4d}  reference {ms[0]:7.3f}  cpu override {ms[1]:7.3f}  reference / override {ms[0] / ms[1]:.2f}")


def _op_ms(fn, args, reps: int = 10) -> float:
    for _ in range(3):
        fn(*args)
    start = time.perf_counter()
    for _ in range(reps):
        fn(*args)
    return (time.perf_counter() - start) / reps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--op", action="store_true", help="also time fused_moe alone")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    flags = sorted(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in Path("/proc/cpuinfo").read_text())
    print(f"CPU flags: {' '.join(flags)}; threads {torch.get_num_threads()}; dtype {args.dtype}")
    if args.op:
        op_figures(getattr(torch, args.dtype))
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_models(Path(tmp))
        figures = {name: model_figures(path, args.dtype) for name, path in paths.items()}
    for key in ("single_tok_s", "batch16_tok_s"):
        moe, dense = figures["moe"][key], figures["dense"][key]
        print(f"{key:14s} moe {moe:8.1f}  dense (equal active) {dense:8.1f}  moe / dense {moe / dense:.2f}")


if __name__ == "__main__":
    main()
