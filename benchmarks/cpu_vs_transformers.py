"""Side-by-side CPU benchmark: tokenmill and transformers on the same workload, in one process.

Usage: python benchmarks/cpu_vs_transformers.py [--dtype float32] [--quantization auto] [--skip-batch] [--skip-single]
Prints output tokens/s for the 64-prompt batch (128 new tokens each, greedy, EOS ignored) and
single-stream decode tokens/s (256 new tokens), for both engines, and their ratios.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

WORKLOAD = os.path.join(os.path.dirname(__file__), "workload.json")


def tokenmill_figures(dtype: str, quantization: str, batch: bool, single: bool) -> tuple[dict, object]:
    from tokenmill.bench.offline import run_batch, run_single
    from tokenmill.bench.workload import chat_workload
    from tokenmill.config import EngineArgs
    from tokenmill.engine.core import EngineCore

    engine = EngineCore(EngineArgs(dtype=dtype, quantization=quantization))
    figures = {}
    if batch:
        figures["batch_output_tok_s"] = run_batch(engine, chat_workload(WORKLOAD, "batch", engine.tokenizer))["output_tokens_per_s"]
    if single:
        work = chat_workload(WORKLOAD, "single", engine.tokenizer)
        figures["single_decode_tok_s"] = run_single(engine, work.prompts[0], work.output_lens[0])["decode_tokens_per_s"]
    return figures, engine


def transformers_figures(engine, dtype: str, batch: bool, single: bool) -> dict:
    """transformers generate on the same dequantized weights (the GGUF loaded by transformers)."""
    from transformers import AutoModelForCausalLM

    from tokenmill.bench.workload import chat_workload

    path = engine.bundle.source
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                 torch_dtype=getattr(torch, dtype)).eval()
    tok = engine.tokenizer
    figures = {}
    if batch:
        work = chat_workload(WORKLOAD, "batch", tok)
        figures["batch_output_tok_s"] = _hf_batch(model, tok, work.prompts, 128)
    if single:
        work = chat_workload(WORKLOAD, "single", tok)
        figures["single_decode_tok_s"] = _hf_single(model, work.prompts[0], 256)
    return figures


@torch.inference_mode()
def _hf_batch(model, tok, prompts: list[list[int]], new: int) -> float:
    width = max(len(p) for p in prompts)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])  # left-padded [B, L]
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    start = time.perf_counter()
    model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False)
    return len(prompts) * new / (time.perf_counter() - start)


@torch.inference_mode()
def _hf_single(model, prompt: list[int], new: int) -> float:
    ids = torch.tensor([prompt])
    mask = torch.ones_like(ids)
    start = time.perf_counter()
    model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=1, do_sample=False)
    first = time.perf_counter() - start
    start = time.perf_counter()
    model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False)
    return (new - 1) / (time.perf_counter() - start - first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--quantization", default="auto", help="tokenmill's --quantization (transformers runs dense)")
    parser.add_argument("--skip-batch", action="store_true")
    parser.add_argument("--skip-single", action="store_true")
    args = parser.parse_args()
    batch, single = not args.skip_batch, not args.skip_single
    ours, engine = tokenmill_figures(args.dtype, args.quantization, batch, single)
    theirs = transformers_figures(engine, args.dtype, batch, single)
    print(f"{'figure':<24}{'tokenmill':>12}{'transformers':>14}{'ratio':>8}   (dtype {args.dtype}, "
          f"tokenmill packed layers {engine.bundle.packed_layers or 'none'}, {torch.get_num_threads()} threads)")
    for key in ours:
        print(f"{key:<24}{ours[key]:>12.1f}{theirs[key]:>14.1f}{ours[key] / theirs[key]:>8.2f}")


if __name__ == "__main__":
    main()
