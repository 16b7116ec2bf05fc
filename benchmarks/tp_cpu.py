"""Tensor parallelism on the CPU (print-only): tokens/s at -tp 1 and -tp 2, and rank 0's collective time per step.

One command writes a random-weight Llama (about 100M parameters, float32, GQA 16 heads over 4 KV
heads) to a temporary directory, then generates the same greedy batch with one rank and with
two (gloo, spawned process), in this process one after the other. Rank 0's all-reduces (two per
layer, plus the embedding's) and the logits all-gather are timed by wrapping the communicator
calls the transform bound. The time includes waiting for rank 1, so it is the whole price of the
collectives, skew included. On a 2-core machine, expect no speed-up: the figure shows the
overhead. Run: python benchmarks/tp_cpu.py [--batch 8] [--tokens 64] [--layers 8]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from tokenmill import LLM
from tokenmill.parallel.tp_layers import GatheredHead, RowParallel, VocabParallelEmbedding
from tokenmill.sampling.params import SamplingParams
from tokenmill.testing.tiny_model import write_tiny_llama


def write_model(directory: Path, layers: int) -> str:
    """A Llama checkpoint: H=1024, I=2816, 16 heads over 4 KV heads of 64, V=8192, `layers` layers."""
    write_tiny_llama(directory)  # the byte tokenizer; config and weights replaced
    c = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 1024,
         "intermediate_size": 2816, "num_hidden_layers": layers, "num_attention_heads": 16,
         "num_key_value_heads": 4, "head_dim": 64, "vocab_size": 8192, "max_position_embeddings": 512,
         "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False,
         "bos_token_id": 256, "eos_token_id": 257, "torch_dtype": "float32"}
    (directory / "config.json").write_text(json.dumps(c))
    gen = torch.Generator().manual_seed(0)
    h, i, kv = c["hidden_size"], c["intermediate_size"], c["num_key_value_heads"] * c["head_dim"]
    shapes = {"model.embed_tokens.weight": (8192, h), "model.norm.weight": (h,), "lm_head.weight": (8192, h)}
    for n in range(layers):
        p = f"model.layers.{n}."
        shapes.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                       p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
                       p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
                       p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h),
                       p + "mlp.down_proj.weight": (h, i)})
    weights = {name: torch.ones(s) if "norm" in name else 0.03 * torch.randn(s, generator=gen)
               for name, s in shapes.items()}
    save_file(weights, str(directory / "model.safetensors"))
    return str(directory)


class CollectiveClock:
    """Wraps the bound collectives of rank 0's modules and sums their wall time."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.all_reduce_s = self.all_gather_s = 0.0
        self.calls = 0
        for module in model.modules():
            if isinstance(module, (RowParallel, VocabParallelEmbedding)):
                module._all_reduce = self._timed(module._all_reduce, "all_reduce_s")
            elif isinstance(module, GatheredHead):
                module._all_gather = self._timed(module._all_gather, "all_gather_s")

    def _timed(self, fn, field: str):
        def call(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            setattr(self, field, getattr(self, field) + time.perf_counter() - start)
            self.calls += field == "all_reduce_s"
            return out
        return call

    def reset(self) -> None:
        self.all_reduce_s = self.all_gather_s = 0.0
        self.calls = 0


def run(model: str, tp: int, threads: int, batch: int, tokens: int) -> dict[str, float]:
    llm = LLM(model, dtype="float32", quantization="none", tensor_parallel_size=tp, kv_cache_memory="256MiB",
              max_model_len=512, num_threads=threads)
    engine = llm.engine
    clock = CollectiveClock(engine.bundle.model) if tp > 1 else None
    prompts = [f"prompt number {n} about tensor parallelism" for n in range(batch)]
    params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)
    llm.generate(prompts, SamplingParams(max_tokens=4, temperature=0.0), use_tqdm=False)  # warm-up
    if clock:
        clock.reset()
    steps0 = engine.stats().num_steps
    start = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    wall = time.perf_counter() - start
    steps = engine.stats().num_steps - steps0
    generated = sum(len(o.outputs[0].token_ids) for o in outs)
    result = {"tok_s": generated / wall, "steps": steps, "wall_s": wall,
              "tokens": [o.outputs[0].token_ids for o in outs]}
    if clock:
        result.update(all_reduce_ms=1e3 * clock.all_reduce_s / steps, all_gather_ms=1e3 * clock.all_gather_s / steps,
                      all_reduces_per_step=clock.calls / steps)
    engine.shutdown()
    return result


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return " ".join(f for f in wanted if f in flags)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # both ranks on this host
    with tempfile.TemporaryDirectory() as tmp:
        model = write_model(Path(tmp), args.layers)
        load_before = os.getloadavg()
        cores = os.cpu_count() or 1
        half = max(1, cores // 2)
        base = run(model, 1, cores, args.batch, args.tokens)
        one = run(model, 1, half, args.batch, args.tokens)
        two = run(model, 2, half, args.batch, args.tokens)
        load_after = os.getloadavg()
    print(f"CPU: {cores} cores, flags {cpu_flags()}; load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after")
    print(f"batch {args.batch} x {args.tokens} greedy tokens, {args.layers} layers, float32")
    for label, r in ((f"tp=1, {cores} threads", base), (f"tp=1, {half} threads", one),
                     (f"tp=2, {half} threads/rank", two)):
        print(f"{label:24s} {r['tok_s']:8.1f} tok/s  ({r['steps']} steps, {1e3 * r['wall_s'] / r['steps']:.1f} ms/step)"
              f"  ratio to tp=1/{cores} threads {r['tok_s'] / base['tok_s']:.2f}")
    print(f"tp=2 rank 0 collectives per step: all-reduce {two['all_reduce_ms']:.2f} ms "
          f"({two['all_reduces_per_step']:.0f} calls), logits all-gather {two['all_gather_ms']:.2f} ms")
    print(f"greedy tokens identical at tp=1 and tp=2: {base['tokens'] == one['tokens'] == two['tokens']}")


if __name__ == "__main__":
    main()
