"""GPU check: tiny windowed models (Mistral, Phi-3: every layer windowed; Gemma 2/3: local + global,
Gemma 2 soft-capped) through
the real engine on CUDA (Triton kernels, CUDA graphs), greedy tokens against transformers on the
same GPU, and the KV blocks a long Mistral request holds. Prints one line per model.

Run from the repository root with the tests/core/models helpers importable:
    PYTHONPATH=...:tests/core/models python benchmarks/cuda/check_windowed_models.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from tiny_models import write_tiny_model
from tokenmill.config import EngineArgs
from tokenmill.engine.core import EngineCore
from tokenmill.sampling.params import SamplingParams

PROMPT_LEN, NEW = 40, 48


def _engine_tokens(path: Path, eager: bool) -> tuple[list[int], list[int]]:
    args = EngineArgs(model=str(path), dtype="float32", device="cuda", block_size=16, kv_cache_memory=64 << 20,
                      enable_prefix_caching=False, enforce_eager=eager,
                      max_model_len=128 if path.name == "phi3" else None)  # longrope's short factors, as HF here
    engine = EngineCore(args)
    prompt = torch.randint(0, 256, (PROMPT_LEN,), generator=torch.Generator().manual_seed(5)).tolist()
    engine.add_request("r", prompt, SamplingParams(temperature=0.0, max_tokens=NEW, ignore_eos=True))
    held, tokens = [], []
    while engine.has_unfinished_requests():
        for out in engine.step():
            tokens = list(out.outputs[0].token_ids)
        held.append(engine.kv.num_used_blocks)
    return tokens, held


def _hf_tokens(path: Path) -> list[int]:
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").cuda().eval()
    config = hf.generation_config
    config.eos_token_id, config.pad_token_id, config.do_sample, config.max_new_tokens = None, 0, False, NEW
    prompt = torch.randint(0, 256, (PROMPT_LEN,), generator=torch.Generator().manual_seed(5)).tolist()
    ids = torch.tensor([prompt], device="cuda")
    with torch.no_grad():
        return hf.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)[0, PROMPT_LEN:].tolist()


def main() -> int:
    print(torch.cuda.get_device_name(), "torch", torch.__version__)
    failures = 0
    with tempfile.TemporaryDirectory() as root:
        for family in ("mistral", "gemma2", "gemma3", "phi3"):
            path = write_tiny_model(family, Path(root) / family, seed=3)
            want = _hf_tokens(path)
            for eager in (True, False):
                got, held = _engine_tokens(path, eager)
                same = sum(a == b for a, b in zip(got, want))
                ok = got == want
                failures += not ok
                print(f"{family} {'eager' if eager else 'graphs'}: {same}/{NEW} tokens equal to transformers "
                      f"({'OK' if ok else 'DIFFER'}); blocks held per step max {max(held[1:])}, at prefill {held[0]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
